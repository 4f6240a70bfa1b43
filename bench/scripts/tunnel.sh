#!/usr/bin/env bash
# Side-by-side tunnel benchmark on loopback: iperf3 throughput, sluice-load
# request/response latency and connection rate, measured direct and through sluice
# (tcp and tls data-channel transports) in one run, printed as ratios to direct.
#
#   bash bench/scripts/tunnel.sh [--seconds N] [--pump splice|copy]
#
# Needs iperf3 (apt-get install iperf3) and python3. Builds sluice and sluice-load in
# release mode. Every process it starts is stopped by PID on exit.
set -euo pipefail
cd "$(dirname "$0")/../.."

SECONDS_PER_RUN=5
PUMP=splice
while [ $# -gt 0 ]; do
  case "$1" in
    --seconds) SECONDS_PER_RUN="$2"; shift 2 ;;
    --pump) PUMP="$2"; shift 2 ;;
    *) echo "unknown argument $1" >&2; exit 2 ;;
  esac
done
command -v iperf3 >/dev/null || { echo "iperf3 missing: apt-get install iperf3" >&2; exit 2; }

source bench/scripts/common.sh

IPERF_PORT=$(free_port); ECHO_PORT=$(free_port)
iperf3 -s -B 127.0.0.1 -p "$IPERF_PORT" >/dev/null 2>&1 & PIDS+=($!)
"$BIN"/sluice-load serve --listen 127.0.0.1:"$ECHO_PORT" --mode echo >/dev/null 2>&1 & PIDS+=($!)
wait_port "$IPERF_PORT"; wait_port "$ECHO_PORT"

start_tunnel() { # name transport -> sets PUB_IPERF PUB_ECHO
  local name=$1 transport=$2
  local agent_port pub_iperf pub_echo
  agent_port=$(free_port); PUB_IPERF=$(free_port); PUB_ECHO=$(free_port)
  cat > "$WORK/$name-edge.yml" <<YML
version: 1
agents: { listen: 127.0.0.1:$agent_port, tls: { cert: edge.crt, key: edge.key }, plain_channels: true }
service_users: [ { name: bench, authtokens: ["$HASH"] } ]
endpoints:
  - url: tcp://127.0.0.1:$PUB_IPERF
    traffic_policy: { on_tcp_connect: [ { actions: [ { type: forward-internal, config: { url: tcp://iperf.internal:5201 } } ] } ] }
  - url: tcp://127.0.0.1:$PUB_ECHO
    traffic_policy: { on_tcp_connect: [ { actions: [ { type: forward-internal, config: { url: tcp://echo.internal:7 } } ] } ] }
YML
  cat > "$WORK/$name-agent.yml" <<YML
version: 3
agent: { authtoken: "$TOKEN", connect_url: "127.0.0.1:$agent_port", connect_cas: edge.crt, server_name: localhost, transport: $transport, data_channels: 64 }
endpoints:
  - { url: tcp://iperf.internal:5201, upstream: { url: "127.0.0.1:$IPERF_PORT" } }
  - { url: tcp://echo.internal:7, upstream: { url: "127.0.0.1:$ECHO_PORT" } }
YML
  "$SLUICE" --log-level warn --pump "$PUMP" edge --config "$WORK/$name-edge.yml" 2>"$WORK/$name-edge.log" & PIDS+=($!)
  wait_port "$agent_port"
  "$SLUICE" --log-level warn --pump "$PUMP" agent --config "$WORK/$name-agent.yml" 2>"$WORK/$name-agent.log" & PIDS+=($!)
  # Usable once an echo goes through.
  for _ in $(seq 1 200); do
    "$BIN"/sluice-load rr --target 127.0.0.1:"$PUB_ECHO" --size 16 --connections 1 --duration 0.2s --warmup 0s >/dev/null 2>&1 && return 0
    sleep 0.05
  done
  echo "tunnel $name never became usable" >&2; cat "$WORK/$name-agent.log" >&2; exit 1
}

declare -A IPERF ECHO
IPERF[direct]=$IPERF_PORT; ECHO[direct]=$ECHO_PORT
start_tunnel tcp tcp; IPERF[tcp]=$PUB_IPERF; ECHO[tcp]=$PUB_ECHO
start_tunnel tls tls; IPERF[tls]=$PUB_IPERF; ECHO[tls]=$PUB_ECHO

RESULTS="$WORK/results.jsonl"
for path in direct tcp tls; do
  iperf3 -c 127.0.0.1 -p "${IPERF[$path]}" -t "$SECONDS_PER_RUN" -J > "$WORK/iperf-$path.json"
  "$BIN"/sluice-load rr --target 127.0.0.1:"${ECHO[$path]}" --size 64 --connections 1 \
      --duration "${SECONDS_PER_RUN}s" --warmup 1s --json "$WORK/rr-$path.json" >/dev/null 2>&1
  "$BIN"/sluice-load connect --target 127.0.0.1:"${ECHO[$path]}" --concurrency 32 \
      --duration "${SECONDS_PER_RUN}s" --warmup 1s --json "$WORK/connect-$path.json" >/dev/null 2>&1
done

python3 - "$WORK" "$PUMP" <<'PY'
import json, sys, platform, os
d, pump = sys.argv[1], sys.argv[2]
def iperf(p): return json.load(open(f"{d}/iperf-{p}.json"))["end"]["sum_received"]["bits_per_second"] / 1e9
def load(kind, p): return json.load(open(f"{d}/{kind}-{p}.json"))
def p50(p): return load("rr", p)["latency_us"]["p50"]
def p99(p): return load("rr", p)["latency_us"]["p99"]
def cps(p): return load("connect", p)["totals"]["ops_per_s"]
cpu = next((l.split(":",1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
print(f"machine: {cpu}, {os.cpu_count()} cores, kernel {platform.release()}, pump {pump}")
print(f"{'path':8} {'iperf3 Gbit/s':>14} {'ratio':>6} {'rr p50 us':>10} {'+p50 us':>8} {'rr p99 us':>10} {'conn/s':>9} {'ratio':>6}")
base_bw, base_p50, base_cps = iperf("direct"), p50("direct"), cps("direct")
for p in ["direct","tcp","tls"]:
    print(f"{p:8} {iperf(p):14.2f} {iperf(p)/base_bw:6.2f} {p50(p):10.1f} {p50(p)-base_p50:8.1f} {p99(p):10.1f} {cps(p):9.0f} {cps(p)/base_cps:6.2f}")
PY
