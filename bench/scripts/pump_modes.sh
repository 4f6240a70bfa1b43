#!/usr/bin/env bash
# Side-by-side comparison of the plain-TCP pumps (`--pump splice|copy`) on the
# `tcp` transport, on loopback: one edge + agent per pump, all started up front, then
# ROUNDS rounds that each measure every path in turn (direct first), so machine noise
# hits all variants alike. Per path: a 64-byte `sluice-load rr` ping-pong on one
# connection (p50/p99) and iperf3 single-stream throughput. Prints medians over the
# rounds, as added microseconds and as ratios to direct in the same round.
#
#   bash bench/scripts/pump_modes.sh [--seconds N] [--rounds R] [--pumps "splice copy"]
#                                    [--driver auto|uring|legacy] [--no-iperf]
#
# Bounded: every measurement runs for --seconds (default 3), ROUNDS (default 3) times.
# Needs iperf3 (unless --no-iperf) and python3. Every process it starts is stopped by
# PID on exit (common.sh).
set -euo pipefail
cd "$(dirname "$0")/../.."

SECONDS_PER_RUN=3
ROUNDS=3
PUMPS="splice copy"
DRIVER=auto
IPERF=1
while [ $# -gt 0 ]; do
  case "$1" in
    --seconds) SECONDS_PER_RUN="$2"; shift 2 ;;
    --rounds) ROUNDS="$2"; shift 2 ;;
    --pumps) PUMPS="$2"; shift 2 ;;
    --driver) DRIVER="$2"; shift 2 ;;
    --no-iperf) IPERF=0; shift ;;
    *) echo "unknown argument $1" >&2; exit 2 ;;
  esac
done
[ "$IPERF" = 0 ] || command -v iperf3 >/dev/null || { echo "iperf3 missing: apt-get install iperf3 (or --no-iperf)" >&2; exit 2; }

source bench/scripts/common.sh

ECHO_PORT=$(free_port)
"$BIN"/sluice-load serve --listen 127.0.0.1:"$ECHO_PORT" --mode echo >/dev/null 2>&1 & PIDS+=($!)
wait_port "$ECHO_PORT"
IPERF_PORT=$ECHO_PORT
if [ "$IPERF" = 1 ]; then
  IPERF_PORT=$(free_port)
  iperf3 -s -B 127.0.0.1 -p "$IPERF_PORT" >/dev/null 2>&1 & PIDS+=($!)
  wait_port "$IPERF_PORT"
fi

declare -A ECHO IPERFP
ECHO[direct]=$ECHO_PORT; IPERFP[direct]=$IPERF_PORT

start_tunnel() { # pump
  local pump=$1 agent_port pub_iperf pub_echo
  agent_port=$(free_port); pub_iperf=$(free_port); pub_echo=$(free_port)
  cat > "$WORK/$pump-edge.yml" <<YML
version: 1
agents: { listen: 127.0.0.1:$agent_port, tls: { cert: edge.crt, key: edge.key }, plain_channels: true }
service_users: [ { name: bench, authtokens: ["$HASH"] } ]
endpoints:
  - url: tcp://127.0.0.1:$pub_iperf
    traffic_policy: { on_tcp_connect: [ { actions: [ { type: forward-internal, config: { url: tcp://iperf.internal:5201 } } ] } ] }
  - url: tcp://127.0.0.1:$pub_echo
    traffic_policy: { on_tcp_connect: [ { actions: [ { type: forward-internal, config: { url: tcp://echo.internal:7 } } ] } ] }
YML
  cat > "$WORK/$pump-agent.yml" <<YML
version: 3
agent: { authtoken: "$TOKEN", connect_url: "127.0.0.1:$agent_port", connect_cas: edge.crt, server_name: localhost, transport: tcp, data_channels: 8 }
endpoints:
  - { url: tcp://iperf.internal:5201, upstream: { url: "127.0.0.1:$IPERF_PORT" } }
  - { url: tcp://echo.internal:7, upstream: { url: "127.0.0.1:$ECHO_PORT" } }
YML
  "$SLUICE" --log-level warn --driver "$DRIVER" --pump "$pump" edge --config "$WORK/$pump-edge.yml" 2>"$WORK/$pump-edge.log" & PIDS+=($!)
  wait_port "$agent_port"
  "$SLUICE" --log-level warn --driver "$DRIVER" --pump "$pump" agent --config "$WORK/$pump-agent.yml" 2>"$WORK/$pump-agent.log" & PIDS+=($!)
  for _ in $(seq 1 200); do
    if "$BIN"/sluice-load rr --target 127.0.0.1:"$pub_echo" --size 16 --connections 1 --duration 0.2s --warmup 0s >/dev/null 2>&1; then
      ECHO[$pump]=$pub_echo; IPERFP[$pump]=$pub_iperf; return 0
    fi
    sleep 0.05
  done
  echo "tunnel with --pump $pump never became usable" >&2; cat "$WORK/$pump-edge.log" "$WORK/$pump-agent.log" >&2; exit 1
}

for pump in $PUMPS; do start_tunnel "$pump"; done

for round in $(seq 1 "$ROUNDS"); do
  for path in direct $PUMPS; do
    "$BIN"/sluice-load rr --target 127.0.0.1:"${ECHO[$path]}" --size 64 --connections 1 \
        --duration "${SECONDS_PER_RUN}s" --warmup 0.5s --json "$WORK/rr-$path-$round.json" >/dev/null 2>&1
    if [ "$IPERF" = 1 ]; then
      iperf3 -c 127.0.0.1 -p "${IPERFP[$path]}" -t "$SECONDS_PER_RUN" -J > "$WORK/iperf-$path-$round.json"
    fi
  done
done

python3 - "$WORK" "$ROUNDS" "$IPERF" "$DRIVER" direct $PUMPS <<'PY'
import json, sys, os, platform, statistics as st
d, rounds, iperf, driver, paths = sys.argv[1], int(sys.argv[2]), sys.argv[3] == "1", sys.argv[4], sys.argv[5:]
def rr(p, r): return json.load(open(f"{d}/rr-{p}-{r}.json"))["latency_us"]
def bw(p, r): return json.load(open(f"{d}/iperf-{p}-{r}.json"))["end"]["sum_received"]["bits_per_second"] / 1e9
R = range(1, rounds + 1)
cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
print(f"machine: {cpu}, {os.cpu_count()} cores, kernel {platform.release()}, driver {driver}, {rounds} rounds, medians")
hdr = f"{'path':8} {'p50 us':>8} {'+p50 us':>8} {'p99 us':>8} {'+p99 us':>8}"
if iperf: hdr += f" {'Gbit/s':>8} {'x direct':>9}"
print(hdr)
for p in paths:
    p50 = st.median(rr(p, r)["p50"] for r in R)
    p99 = st.median(rr(p, r)["p99"] for r in R)
    a50 = st.median(rr(p, r)["p50"] - rr("direct", r)["p50"] for r in R)
    a99 = st.median(rr(p, r)["p99"] - rr("direct", r)["p99"] for r in R)
    line = f"{p:8} {p50:8.1f} {a50:+8.1f} {p99:8.1f} {a99:+8.1f}"
    if iperf:
        line += f" {st.median(bw(p, r) for r in R):8.2f} {st.median(bw(p, r) / bw('direct', r) for r in R):9.2f}"
    print(line)
PY
