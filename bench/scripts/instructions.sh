#!/usr/bin/env bash
# Instructions per request or per connection, edge and agent apart, counted by
# callgrind: repeatable for one binary whatever else the machine is doing, so a change to
# sluice's own code can be weighed on a shared machine where wall-clock figures move by
# 10% between runs. Counts user space only (the kernel's TCP work, most of a connection's
# cost, is not in them): pair them with a side-by-side run of `compare` or http.sh.
#
#   bash bench/scripts/instructions.sh [--workload http|https|connect] [--transport tcp|tls]
#                                      [--small N] [--large N]
#
# http:    N keep-alive `GET /` requests over one curl connection to an http:// endpoint
#          (upstream: `sluice-load serve --mode http`).
# https:   the same over one HTTP/1.1 connection to an https:// endpoint (TLS ended at
#          the edge with a self-signed certificate).
# connect: N connections to a tcp:// endpoint, each opening, echoing 64 bytes and closing
#          (upstream: `sluice-load serve --mode echo`), from one Python client.
# Edge and agent run under valgrind with the epoll driver (valgrind does not follow
# io_uring's completions), over `tcp` data channels unless --transport says `tls`. Each is run twice, with --small and
# --large requests; the difference divided by (large - small) is the figure, so start-up
# and shut-down cancel out. SLUICE_BIN=path weighs another build with the same harness.
# Needs valgrind and curl; every process it starts is stopped by PID; loopback only.
set -euo pipefail
cd "$(dirname "$0")/../.."

WORKLOAD=http
TRANSPORT=tcp
SMALL=500
LARGE=2500
while [ $# -gt 0 ]; do
  case "$1" in
    --workload) WORKLOAD="$2"; shift 2 ;;
    --transport) TRANSPORT="$2"; shift 2 ;;
    --small) SMALL="$2"; shift 2 ;;
    --large) LARGE="$2"; shift 2 ;;
    *) echo "unknown argument $1" >&2; exit 2 ;;
  esac
done
case "$WORKLOAD" in http|https|connect) ;; *) echo "--workload is http, https or connect" >&2; exit 2 ;; esac
case "$TRANSPORT" in tcp|tls) ;; *) echo "--transport is tcp or tls" >&2; exit 2 ;; esac
[ "$LARGE" -gt "$SMALL" ] || { echo "--large must exceed --small" >&2; exit 2; }
command -v valgrind >/dev/null || { echo "valgrind missing: apt-get install valgrind" >&2; exit 2; }

source bench/scripts/common.sh

wait_log() { # file pattern
  for _ in $(seq 1 600); do
    grep -q "$2" "$1" 2>/dev/null && return 0
    sleep 0.1
  done
  echo "never saw '$2' in $1" >&2; cat "$1" >&2; exit 1
}

# The instruction total of a callgrind output file.
total() { callgrind_annotate "$1" 2>/dev/null | awk '/PROGRAM TOTALS/ && !seen {gsub(",", "", $1); print $1; seen = 1}'; }

# One run of `count` requests or connections: the edge's and the agent's totals in
# TOTALS. (Not run in a command substitution: its processes must be in this shell's PIDS.)
TOTALS=()
run() { # count
  local count=$1 dir up agent_port public edge agent
  dir=$(mktemp -d "$WORK/run.XXXXXX")
  up=$(free_port); agent_port=$(free_port); public=$(free_port)
  local mode=http internal="http://api.internal" upstream="http://127.0.0.1:$up"
  local endpoint="http_endpoints: { listen: 127.0.0.1:$public }
service_users: [ { name: bench, authtokens: [\"$HASH\"] } ]
endpoints:
  - url: http://bench.example"
  if [ "$WORKLOAD" = https ]; then
    endpoint="tls_endpoints: { listen: 127.0.0.1:$public }
service_users: [ { name: bench, authtokens: [\"$HASH\"] } ]
endpoints:
  - url: https://localhost
    terminate_tls: { cert: $WORK/edge.crt, key: $WORK/edge.key }"
  fi
  if [ "$WORKLOAD" = connect ]; then
    mode=echo internal="tcp://echo.internal:7" upstream="127.0.0.1:$up"
    endpoint="service_users: [ { name: bench, authtokens: [\"$HASH\"] } ]
endpoints:
  - url: tcp://127.0.0.1:$public"
  fi
  "$BIN/sluice-load" serve --listen "127.0.0.1:$up" --mode "$mode" >/dev/null & PIDS+=($!)
  wait_port "$up"
  cat > "$dir/edge.yml" <<YML
version: 1
agents: { listen: 127.0.0.1:$agent_port, tls: { cert: $WORK/edge.crt, key: $WORK/edge.key }, plain_channels: true }
$endpoint
    traffic_policy: { on_tcp_connect: [ { actions: [ { type: forward-internal, config: { url: $internal } } ] } ] }
YML
  cat > "$dir/agent.yml" <<YML
version: 3
agent: { authtoken: "$TOKEN", connect_url: "127.0.0.1:$agent_port", connect_cas: $WORK/edge.crt, server_name: localhost, transport: $TRANSPORT, data_channels: 8 }
endpoints:
  - { url: $internal, upstream: { url: "$upstream" } }
YML
  valgrind --tool=callgrind --callgrind-out-file="$dir/edge.cg" \
    "$SLUICE" --driver legacy --log-level info edge --config "$dir/edge.yml" 2>"$dir/edge.log" &
  edge=$!; PIDS+=($edge)
  wait_port "$agent_port"
  valgrind --tool=callgrind --callgrind-out-file="$dir/agent.cg" \
    "$SLUICE" --driver legacy --log-level info agent --config "$dir/agent.yml" 2>"$dir/agent.log" &
  agent=$!; PIDS+=($agent)
  wait_log "$dir/agent.log" "endpoint bound"
  if [ "$WORKLOAD" = http ]; then
    curl -sf -o /dev/null --retry 20 --retry-all-errors --retry-delay 1 \
      -H 'Host: bench.example' "http://127.0.0.1:$public/"
    curl -sf -o /dev/null -H 'Host: bench.example' "http://127.0.0.1:$public/[1-$count]"
  elif [ "$WORKLOAD" = https ]; then
    local tls=(--http1.1 --cacert "$WORK/edge.crt" --resolve "localhost:$public:127.0.0.1")
    curl -sf -o /dev/null "${tls[@]}" --retry 20 --retry-all-errors --retry-delay 1 \
      "https://localhost:$public/"
    curl -sf -o /dev/null "${tls[@]}" "https://localhost:$public/[1-$count]"
  else
    python3 - "$public" "$count" <<'PY'
import socket, sys, time
port, count = int(sys.argv[1]), int(sys.argv[2])
def one():
    with socket.create_connection(("127.0.0.1", port), timeout=30) as s:
        s.sendall(b"x" * 64)
        got = b""
        while len(got) < 64:
            chunk = s.recv(64 - len(got))
            if not chunk:
                raise RuntimeError("closed before the echo")
            got += chunk
for attempt in range(100):
    try:
        one()
        break
    except (OSError, RuntimeError):
        if attempt == 99:
            raise
        time.sleep(0.2)
for _ in range(count):
    one()
PY
  fi
  kill "$agent"; wait "$agent" || true
  kill "$edge"; wait "$edge" || true
  TOTALS=("$(total "$dir/edge.cg")" "$(total "$dir/agent.cg")")
}

# The warm-up request or connection is the same in both runs, so it cancels out too.
run "$SMALL"; edge_small=${TOTALS[0]}; agent_small=${TOTALS[1]}
run "$LARGE"; edge_large=${TOTALS[0]}; agent_large=${TOTALS[1]}
python3 - "$WORKLOAD/$TRANSPORT" "$SMALL" "$LARGE" "$edge_small" "$edge_large" "$agent_small" "$agent_large" "$SLUICE" <<'PY'
import sys
workload, small, large = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
es, el, as_, al = map(int, sys.argv[4:8])
unit = "request" if workload.startswith("http") else "connection"
n = large - small
print(f"{sys.argv[8]}: instructions per {unit} ({workload}, {small} and {large} runs, callgrind, epoll driver)")
print(f"edge  {(el - es) / n:10.0f}")
print(f"agent {(al - as_) / n:10.0f}")
PY
