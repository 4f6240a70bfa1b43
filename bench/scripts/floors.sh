#!/usr/bin/env bash
# The floors #21's goals are measured against: what one pass of a message through one
# process costs on this machine, and how many connections per second a path can carry
# when the client and the upstream share the machine's cores with the proxies. Direct,
# through HAProxy (one hop and chained twice) and through sluice (`tcp` and `tls`
# transports), interleaved in each round.
#
# Round trips: a 64-byte `sluice-load rr` ping-pong on one connection, measured twice:
#   - as the scheduler places the processes (how `compare` measures), and
#   - with every process (client, proxies, upstream) pinned to one CPU, so that no
#     wake-up crosses CPUs: what remains is each pass's own cost (a wake-up on the same
#     CPU, the reads and writes, the kernel's loopback TCP), free of the cross-CPU
#     wake-ups whose cost on a virtual machine moves with the scheduler's placement.
# A round trip through a chain of P proxy processes makes 2P more passes than direct,
# so "added per pass" is the added p50 over 2P. The direct path itself is two passes
# (the client's and the upstream's): its "per pass" is their mean.
#
# Connections: `sluice-load connect --concurrency 32` (open, 64 B each way, close), placed
# by the scheduler, as a ratio to direct in the same round. One HAProxy hop is the
# cheapest shape a proxy can have (one process, one extra TCP connection per client
# connection): what it reaches bounds what a two-process path can.
#
# CPU per connection: the same cycle from 32 blocking client threads (`--model
# blocking`), with the CPU time (user + system, from /proc) each path's proxy processes
# spent, per connection. On the direct path the figure is what the two ends of one TCP
# connection cost together: the client's (`/usr/bin/time`) and the echo server's. A
# one-hop proxy (HAProxy, and nginx's stream proxy when nginx and its stream module are
# installed: `apt-get install nginx-light libnginx-mod-stream`) accepts one connection
# and opens another, which is the least a tunnel's edge and agent together must do too.
#
#   bash bench/scripts/floors.sh [--seconds N] [--rounds R] [--cpu C]
#
# Bounded: each measurement runs --seconds (default 2) after a 0.3 s warm-up, ROUNDS
# (default 3) times. Needs haproxy and python3. Every process it starts is stopped by
# PID on exit (common.sh).
set -euo pipefail
cd "$(dirname "$0")/../.."

SECONDS_PER_RUN=2
ROUNDS=3
CPU=0
while [ $# -gt 0 ]; do
  case "$1" in
    --seconds) SECONDS_PER_RUN="$2"; shift 2 ;;
    --rounds) ROUNDS="$2"; shift 2 ;;
    --cpu) CPU="$2"; shift 2 ;;
    *) echo "unknown argument $1" >&2; exit 2 ;;
  esac
done
command -v haproxy >/dev/null || { echo "haproxy missing: apt-get install haproxy" >&2; exit 2; }

source bench/scripts/common.sh

# Every process this script starts; pinned or unpinned per measurement.
ALL=()
started() { PIDS+=("$1"); ALL+=("$1"); }

ECHO_PORT=$(free_port)
"$BIN"/sluice-load serve --listen 127.0.0.1:"$ECHO_PORT" --mode echo >/dev/null 2>&1 & started $!
wait_port "$ECHO_PORT"

declare -A PORT HOPS
PORT[direct]=$ECHO_PORT; HOPS[direct]=0

# The processes of each path whose CPU counts as the path's (for direct: the echo
# server's, one end of the connection; the client's is timed apart).
declare -A PROCS
PROCS[direct]=${PIDS[-1]}

haproxy_hop() { # name listen-port target-port
  printf 'global\n    maxconn 1000\n\ndefaults\n    mode tcp\n    option splice-auto\n    timeout connect 5s\n    timeout client 120s\n    timeout server 120s\n\nlisten hop\n    bind 127.0.0.1:%s\n    server s 127.0.0.1:%s\n' \
    "$2" "$3" > "$WORK/$1.cfg"
  haproxy -f "$WORK/$1.cfg" -db >/dev/null 2>&1 & started $!
  HAPROXY_PID=$!
  wait_port "$2"
}
one=$(free_port); haproxy_hop haproxy-1 "$one" "$ECHO_PORT"
PORT[haproxy-1]=$one; HOPS[haproxy-1]=1; PROCS[haproxy-1]=$HAPROXY_PID
first=$(free_port); second=$(free_port)
haproxy_hop haproxy-x2-b "$second" "$ECHO_PORT"; PROCS[haproxy-x2]=$HAPROXY_PID
haproxy_hop haproxy-x2-a "$first" "$second"; PROCS[haproxy-x2]+=" $HAPROXY_PID"
PORT[haproxy-x2]=$first; HOPS[haproxy-x2]=2

# nginx's stream proxy, one hop, when nginx and its stream module are installed.
NGINX_PATH=""
STREAM_MODULE=/usr/lib/nginx/modules/ngx_stream_module.so
if command -v nginx >/dev/null && [ -f "$STREAM_MODULE" ]; then
  ng=$(free_port); mkdir -p "$WORK/nginx"
  cat > "$WORK/nginx/nginx.conf" <<NGINX
load_module $STREAM_MODULE;
worker_processes 2;
daemon off;
pid $WORK/nginx/nginx.pid;
error_log $WORK/nginx/error.log;
events { worker_connections 4096; }
stream { server { listen 127.0.0.1:$ng; proxy_pass 127.0.0.1:$ECHO_PORT; } }
NGINX
  nginx -c "$WORK/nginx/nginx.conf" -p "$WORK/nginx" >/dev/null 2>&1 & started $!
  NGINX_PID=$!
  wait_port "$ng"
  # The workers are the master's children; pinning follows them (taskset -a below
  # covers only threads, so they are listed too).
  workers=$(ps -o pid= --ppid "$NGINX_PID" | tr '\n' ' ')
  for child in $workers; do ALL+=("$child"); done
  PORT[nginx-1]=$ng; HOPS[nginx-1]=1; PROCS[nginx-1]="$NGINX_PID $workers"
  NGINX_PATH=nginx-1
else
  echo "nginx or its stream module is missing: no nginx-1 path (apt-get install nginx-light libnginx-mod-stream)" >&2
fi

start_tunnel() { # transport
  local transport=$1 agent_port pub
  agent_port=$(free_port); pub=$(free_port)
  cat > "$WORK/$transport-edge.yml" <<YML
version: 1
agents: { listen: 127.0.0.1:$agent_port, tls: { cert: edge.crt, key: edge.key }, plain_channels: true }
service_users: [ { name: bench, authtokens: ["$HASH"] } ]
endpoints:
  - url: tcp://127.0.0.1:$pub
    traffic_policy: { on_tcp_connect: [ { actions: [ { type: forward-internal, config: { url: tcp://echo.internal:7 } } ] } ] }
YML
  cat > "$WORK/$transport-agent.yml" <<YML
version: 3
agent: { authtoken: "$TOKEN", connect_url: "127.0.0.1:$agent_port", connect_cas: edge.crt, server_name: localhost, transport: $transport, data_channels: 64 }
endpoints:
  - { url: tcp://echo.internal:7, upstream: { url: "127.0.0.1:$ECHO_PORT" } }
YML
  "$SLUICE" --log-level warn edge --config "$WORK/$transport-edge.yml" 2>"$WORK/$transport-edge.log" >/dev/null & started $!
  PROCS[sluice-$transport]=$!
  wait_port "$agent_port"
  "$SLUICE" --log-level warn agent --config "$WORK/$transport-agent.yml" 2>"$WORK/$transport-agent.log" >/dev/null & started $!
  PROCS[sluice-$transport]+=" $!"
  for _ in $(seq 1 200); do
    if "$BIN"/sluice-load rr --target 127.0.0.1:"$pub" --size 16 --connections 1 --duration 0.2s --warmup 0s >/dev/null 2>&1; then
      PORT[sluice-$transport]=$pub; HOPS[sluice-$transport]=2; return 0
    fi
    sleep 0.05
  done
  echo "sluice $transport tunnel never became usable" >&2; cat "$WORK/$transport-edge.log" "$WORK/$transport-agent.log" >&2; exit 1
}
start_tunnel tcp
start_tunnel tls

PATHS="direct haproxy-1 $NGINX_PATH haproxy-x2 sluice-tcp sluice-tls"
ALL_CPUS=$(python3 -c 'import os; print(",".join(map(str, sorted(os.sched_getaffinity(0)))))')
place() { # cpu-list: every thread of every process started here
  for pid in "${ALL[@]}"; do taskset -a -p -c "$1" "$pid" >/dev/null; done
}

for round in $(seq 1 "$ROUNDS"); do
  for mode in free pinned; do
    if [ "$mode" = pinned ]; then place "$CPU"; cpus=$CPU; else place "$ALL_CPUS"; cpus=$ALL_CPUS; fi
    for path in $PATHS; do
      taskset -c "$cpus" "$BIN"/sluice-load rr --target 127.0.0.1:"${PORT[$path]}" --size 64 --connections 1 \
        --duration "${SECONDS_PER_RUN}s" --warmup 0.3s --json "$WORK/rr-$mode-$path-$round.json" >/dev/null
    done
  done
  for path in $PATHS; do
    "$BIN"/sluice-load connect --target 127.0.0.1:"${PORT[$path]}" --concurrency 32 \
      --duration "${SECONDS_PER_RUN}s" --warmup 0.3s --json "$WORK/conn-$path-$round.json" >/dev/null
  done
  for path in $PATHS; do
    before=$(cpu_ticks ${PROCS[$path]})
    /usr/bin/time -f "%U %S" -o "$WORK/client-$path-$round.time" \
      "$BIN"/sluice-load connect --target 127.0.0.1:"${PORT[$path]}" --concurrency 32 --model blocking \
      --duration "${SECONDS_PER_RUN}s" --json "$WORK/cpu-$path-$round.json" >/dev/null
    echo $(( $(cpu_ticks ${PROCS[$path]}) - before )) > "$WORK/cpu-$path-$round.ticks"
  done
done
place "$ALL_CPUS"

hops=""; for p in $PATHS; do hops="$hops $p=${HOPS[$p]}"; done
python3 - "$WORK" "$ROUNDS" "$CPU" $hops <<'PY'
import json, sys, os, platform, statistics as st
d, rounds, cpu = sys.argv[1], int(sys.argv[2]), sys.argv[3]
paths = [a.split("=") for a in sys.argv[4:]]
R = range(1, rounds + 1)
def p50(mode, p, r): return json.load(open(f"{d}/rr-{mode}-{p}-{r}.json"))["latency_us"]["p50"]
name = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
print(f"machine: {name}, {os.cpu_count()} cores, kernel {platform.release()}; {rounds} rounds, medians of p50")
print("64 B round trip, one connection; free = placed by the scheduler, pinned = every process on CPU " + cpu)
print(f"{'path':12} {'proxies':>7} | {'free p50':>9} {'added':>8} {'per pass':>9} | {'pinned p50':>10} {'added':>8} {'per pass':>9}")
for p, hops in paths:
    hops = int(hops)
    row = f"{p:12} {hops:7d} |"
    for mode in ("free", "pinned"):
        v = st.median(p50(mode, p, r) for r in R)
        added = st.median(p50(mode, p, r) - p50(mode, "direct", r) for r in R)
        # The direct path's own two passes (client and upstream), or the proxies' 2P.
        per = v / 2 if hops == 0 else added / (2 * hops)
        w = 10 if mode == "pinned" else 9
        row += f" {v:{w}.1f} {added:+8.1f} {per:9.1f} |"
    print(row.rstrip(" |"))
def conn(p, r): return json.load(open(f"{d}/conn-{p}-{r}.json"))["totals"]["ops_per_s"]
print()
print("connections, 32 concurrent (open, 64 B each way, close), placed by the scheduler")
print(f"{'path':12} {'proxies':>7} | {'conn/s':>8} {'x direct':>9} {'(min-max)':>12}")
for p, hops in paths:
    ratios = [conn(p, r) / conn("direct", r) for r in R]
    print(f"{p:12} {int(hops):7d} | {st.median(conn(p, r) for r in R):8.0f} {st.median(ratios):8.2f}x  ({min(ratios):.2f}-{max(ratios):.2f})")
hz = os.sysconf("SC_CLK_TCK")
def cpu_us(p, r):
    n = json.load(open(f"{d}/cpu-{p}-{r}.json"))["totals"]["ops"]
    return int(open(f"{d}/cpu-{p}-{r}.ticks").read()) / hz * 1e6 / n
def client_us(p, r):
    n = json.load(open(f"{d}/cpu-{p}-{r}.json"))["totals"]["ops"]
    return sum(map(float, open(f"{d}/client-{p}-{r}.time").read().split())) * 1e6 / n
print()
print("CPU per connection, 32 blocking client threads (open, 64 B each way, close); direct: the two ends of one TCP connection")
print(f"{'path':12} {'proxies':>7} | {'proxy CPU us':>12} {'(min-max)':>14} | {'client us':>9} {'echo server us':>14}")
for p, hops in paths:
    if int(hops) == 0:
        both = [client_us(p, r) + cpu_us(p, r) for r in R]
        print(f"{p:12} {0:7d} | {st.median(both):12.1f} {f'({min(both):.0f}-{max(both):.0f})':>14} | {st.median(client_us(p, r) for r in R):9.1f} {st.median(cpu_us(p, r) for r in R):14.1f}")
    else:
        v = [cpu_us(p, r) for r in R]
        print(f"{p:12} {int(hops):7d} | {st.median(v):12.1f} {f'({min(v):.0f}-{max(v):.0f})':>14} | {st.median(client_us(p, r) for r in R):9.1f} {'':>14}")
PY
