#!/usr/bin/env bash
# HTTP endpoints side by side: wrk (a real HTTP/1.1 load generator, when installed) and
# `sluice-load http` (a second client model: io_uring, one task per connection) against one upstream
# (HAProxy answering a 64-byte body itself, `http-request return`) reached directly,
# through sluice (an http:// endpoint, `tcp` data channels) and through HAProxy
# chained twice in `mode http` (the two-hop HTTP peer), and nginx as a one-hop reverse
# proxy when installed, interleaved in each round. Two connection models: keep-alive
# connections (32), and a new connection per request (`Connection: close`, 32 at once).
# Prints requests/s, the ratio to direct in the same round, and the latency percentiles
# each client reports.
#
#   bash bench/scripts/http.sh [--seconds N] [--rounds N] [--connections N]
#
# Needs haproxy (Debian package); wrk and nginx (nginx-light) optional. Builds sluice in release mode; every
# process it starts is stopped by PID on exit; all traffic stays on 127.0.0.1.
set -euo pipefail
cd "$(dirname "$0")/../.."

SECONDS_PER_RUN=5
ROUNDS=3
CONNECTIONS=32
while [ $# -gt 0 ]; do
  case "$1" in
    --seconds) SECONDS_PER_RUN="$2"; shift 2 ;;
    --rounds) ROUNDS="$2"; shift 2 ;;
    --connections) CONNECTIONS="$2"; shift 2 ;;
    *) echo "unknown argument $1" >&2; exit 2 ;;
  esac
done
command -v haproxy >/dev/null || { echo "haproxy missing: apt-get install haproxy" >&2; exit 2; }

source bench/scripts/common.sh

haproxy_cfg() { # name, body of the proxy section
  cat > "$WORK/haproxy-$1.cfg" <<CFG
global
    maxconn 8000
defaults
    mode http
    timeout connect 5s
    timeout client 60s
    timeout server 60s
    option http-keep-alive
$2
CFG
  haproxy -f "$WORK/haproxy-$1.cfg" -db >/dev/null 2>&1 & PIDS+=($!)
}

UP=$(free_port)
BODY=$(printf 'x%.0s' $(seq 1 64))
haproxy_cfg upstream "frontend up
    bind 127.0.0.1:$UP
    http-request return status 200 content-type text/plain string $BODY"
wait_port "$UP"

AGENT_PORT=$(free_port); HTTP_PORT=$(free_port)
cat > "$WORK/edge.yml" <<YML
version: 1
agents: { listen: 127.0.0.1:$AGENT_PORT, tls: { cert: edge.crt, key: edge.key }, plain_channels: true }
http_endpoints: { listen: 127.0.0.1:$HTTP_PORT }
service_users: [ { name: bench, authtokens: ["$HASH"] } ]
endpoints:
  - url: http://bench.example
    traffic_policy: { on_tcp_connect: [ { actions: [ { type: forward-internal, config: { url: http://api.internal } } ] } ] }
YML
cat > "$WORK/agent.yml" <<YML
version: 3
agent: { authtoken: "$TOKEN", connect_url: "127.0.0.1:$AGENT_PORT", connect_cas: edge.crt, server_name: localhost, transport: tcp, data_channels: 64 }
endpoints:
  - { url: http://api.internal, upstream: { url: "http://127.0.0.1:$UP" } }
YML
"$SLUICE" --log-level warn edge --config "$WORK/edge.yml" 2>"$WORK/edge.log" & PIDS+=($!)
wait_port "$AGENT_PORT"
"$SLUICE" --log-level warn agent --config "$WORK/agent.yml" 2>"$WORK/agent.log" & PIDS+=($!)
for _ in $(seq 1 200); do
  curl -sf -H 'Host: bench.example' "http://127.0.0.1:$HTTP_PORT/" >/dev/null && break
  sleep 0.05
done
curl -sf -H 'Host: bench.example' "http://127.0.0.1:$HTTP_PORT/" >/dev/null \
  || { echo "sluice never served" >&2; cat "$WORK/agent.log" "$WORK/edge.log" >&2; exit 1; }

MID=$(free_port); FRONT=$(free_port)
haproxy_cfg hop2 "listen hop2
    bind 127.0.0.1:$MID
    server s 127.0.0.1:$UP"
haproxy_cfg hop1 "listen hop1
    bind 127.0.0.1:$FRONT
    server s 127.0.0.1:$MID"
wait_port "$FRONT"

declare -A PORT
PORT[direct]=$UP
PORT[sluice]=$HTTP_PORT
PORT[haproxy-x2]=$FRONT
PATHS="direct sluice haproxy-x2"

if command -v nginx >/dev/null; then
  NGINX=$(free_port)
  mkdir -p "$WORK/nginx"
  cat > "$WORK/nginx.conf" <<CFG
worker_processes auto;
daemon off;
pid $WORK/nginx/nginx.pid;
error_log $WORK/nginx/error.log warn;
events { worker_connections 4096; }
http {
    access_log off;
    client_body_temp_path $WORK/nginx;
    proxy_temp_path $WORK/nginx;
    fastcgi_temp_path $WORK/nginx;
    uwsgi_temp_path $WORK/nginx;
    scgi_temp_path $WORK/nginx;
    upstream up { server 127.0.0.1:$UP; keepalive 64; }
    server {
        listen 127.0.0.1:$NGINX;
        keepalive_requests 1000000;
        location / {
            proxy_pass http://up;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host \$host;
        }
    }
}
CFG
  nginx -c "$WORK/nginx.conf" -p "$WORK/nginx" & PIDS+=($!)
  wait_port "$NGINX"
  PORT[nginx]=$NGINX
  PATHS="$PATHS nginx"
fi

LOAD=$BIN/sluice-load
CLIENTS="sluice-load"
command -v wrk >/dev/null && CLIENTS="wrk sluice-load"

# One figure: requests/s, p50 ms, p99 ms, errors (connect/read/write/timeout errors and
# non-2xx/3xx answers).
measure() { # client mode port
  local client=$1 mode=$2 port=$3
  if [ "$client" = wrk ]; then
    local extra=(); [ "$mode" = new-connection ] && extra=(-H "Connection: close")
    wrk -t 2 -c "$CONNECTIONS" -d "${SECONDS_PER_RUN}s" --latency -H "Host: bench.example" \
      "${extra[@]}" "http://127.0.0.1:$port/" | python3 -c '
import sys, re
t = sys.stdin.read()
def ms(v):
    n, u = re.match(r"([\d.]+)(\w+)", v).groups()
    return float(n) * {"us": 0.001, "ms": 1, "s": 1000}[u]
rps = re.search(r"Requests/sec:\s+([\d.]+)", t).group(1)
p50 = ms(re.search(r"^\s+50%\s+(\S+)", t, re.M).group(1)); p99 = ms(re.search(r"^\s+99%\s+(\S+)", t, re.M).group(1))
errors = sum(int(x) for x in re.findall(r"(?:connect|read|write|timeout) (\d+)", t))
non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", t)
print(rps, p50, p99, errors + (int(non2xx.group(1)) if non2xx else 0))
'
  else
    local extra=(); [ "$mode" = new-connection ] && extra=(--new-connection)
    "$LOAD" http --target "127.0.0.1:$port" --host bench.example --connections "$CONNECTIONS" \
      --threads 2 --duration "${SECONDS_PER_RUN}s" --quiet --json - "${extra[@]}" 2>/dev/null | python3 -c '
import sys, json
d = json.load(sys.stdin)
print(d["totals"]["ops_per_s"], d["latency_us"]["p50"] / 1000, d["latency_us"]["p99"] / 1000, d["errors"]["total"])
'
  fi
}

RESULTS="$WORK/results.txt"
for round in $(seq 1 "$ROUNDS"); do
  for mode in keep-alive new-connection; do
    for client in $CLIENTS; do
      for path in $PATHS; do
        echo "$round $mode $client $path $(measure "$client" "$mode" "${PORT[$path]}")" >> "$RESULTS"
      done
    done
  done
done

python3 - "$RESULTS" "$CONNECTIONS" "$SECONDS_PER_RUN" $PATHS <<'PY'
import sys, statistics, os, platform
rows = [l.split() for l in open(sys.argv[1])]
conns, secs, paths = sys.argv[2], sys.argv[3], sys.argv[4:]
cpu = next((l.split(":",1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
rounds = sorted({int(r[0]) for r in rows})
clients = list(dict.fromkeys(r[2] for r in rows))
print(f"machine: {cpu}, {os.cpu_count()} cores, kernel {platform.release()}; {conns} connections, 2 client threads, {secs} s per figure, {len(rounds)} rounds, medians")
print("clients: " + ", ".join({"wrk": "wrk (C, event loop)", "sluice-load": "sluice-load http (Rust, io_uring)"}[c] for c in clients))
for mode in ["keep-alive", "new-connection"]:
    print(f"\n{mode}" + (" (Connection: close)" if mode == "new-connection" else " connections"))
    print("| path | client | requests/s | vs direct (min-max) | p50 ms | p99 ms | errors |\n| --- | --- | ---: | ---: | ---: | ---: | ---: |")
    for path in paths:
        for client in clients:
            get = lambda r, p, i: float(next(x[i] for x in rows if int(x[0]) == r and x[1] == mode and x[2] == client and x[3] == p))
            rps = [get(r, path, 4) for r in rounds]
            ratio = [get(r, path, 4) / get(r, "direct", 4) for r in rounds]
            p50 = [get(r, path, 5) for r in rounds]; p99 = [get(r, path, 6) for r in rounds]
            errs = sum(int(get(r, path, 7)) for r in rounds)
            name = {"nginx": "nginx (one hop)"}.get(path, path)
            print(f"| {name} | {client} | {statistics.median(rps):.0f} | {statistics.median(ratio):.2f}x ({min(ratio):.2f}-{max(ratio):.2f}) | {statistics.median(p50):.2f} | {statistics.median(p99):.2f} | {errs} |")
PY
