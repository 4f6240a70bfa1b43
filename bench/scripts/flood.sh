#!/usr/bin/env bash
# A connection flood from sources the endpoint's policy denies, against an allowed
# client's latency, in one run: an edge and an agent with one endpoint that allows only
# 127.0.0.1; `sluice-load rr` from 127.0.0.1 (64-byte ping-pong on 4 connections,
# open loop at --rate) first alone, then while `sluice-load connect --size 0` from
# 127.0.0.2 (denied, closed at accept) opens and closes connections at --flood-rate per
# second (open loop, paced; `max`: as fast as it can). Prints the flood's rate, the
# edge's CPU during each phase and per denied attempt, and the allowed client's latency
# percentiles without and with the flood.
#
#   bash bench/scripts/flood.sh [--seconds 10] [--rate 2000] [--flood-rate 5000|max]
#                               [--flood-concurrency 16]
#
# Builds sluice and sluice-load in release mode; stops every process it starts by PID.
set -euo pipefail
cd "$(dirname "$0")/../.."

SECS=10
RATE=2000
FLOOD_CONC=16
FLOOD_RATE=5000
while [ $# -gt 0 ]; do
  case "$1" in
    --seconds) SECS="$2"; shift 2 ;;
    --rate) RATE="$2"; shift 2 ;;
    --flood-concurrency) FLOOD_CONC="$2"; shift 2 ;;
    --flood-rate) FLOOD_RATE="$2"; shift 2 ;;
    *) echo "unknown argument $1" >&2; exit 2 ;;
  esac
done

source bench/scripts/common.sh
HZ=$(getconf CLK_TCK)

ECHO_PORT=$(free_port); AGENT_PORT=$(free_port); PUB=$(free_port)
"$BIN"/sluice-load serve --listen 127.0.0.1:"$ECHO_PORT" --mode echo >/dev/null 2>&1 & PIDS+=($!)
wait_port "$ECHO_PORT"
cat > "$WORK/edge.yml" <<YML
version: 1
agents: { listen: 127.0.0.1:$AGENT_PORT, tls: { cert: edge.crt, key: edge.key }, plain_channels: true }
service_users: [ { name: flood, authtokens: ["$HASH"] } ]
endpoints:
  - url: tcp://127.0.0.1:$PUB
    traffic_policy:
      on_tcp_connect:
        - actions:
            - type: restrict-ips
              config: { allow: [127.0.0.1/32] }
            - type: forward-internal
              config: { url: tcp://echo.internal:7 }
YML
cat > "$WORK/agent.yml" <<YML
version: 3
agent: { authtoken: "$TOKEN", connect_url: "127.0.0.1:$AGENT_PORT", connect_cas: edge.crt, server_name: localhost, transport: tcp, data_channels: 16 }
endpoints: [ { url: tcp://echo.internal:7, upstream: { url: "127.0.0.1:$ECHO_PORT" } } ]
YML
"$SLUICE" --log-level warn edge --config "$WORK/edge.yml" 2>"$WORK/edge.log" & EDGE=$!; PIDS+=($EDGE)
wait_port "$AGENT_PORT"
"$SLUICE" --log-level warn agent --config "$WORK/agent.yml" 2>"$WORK/agent.log" & AGENT=$!; PIDS+=($AGENT)
for _ in $(seq 1 200); do
  "$BIN"/sluice-load rr --target 127.0.0.1:"$PUB" --size 16 --connections 1 --duration 0.2s >/dev/null 2>&1 && break
  sleep 0.05
done

printf "machine: %s, %s cores, kernel %s; %ss per phase, allowed rr at %s/s, flood at %s/s\n" \
  "$(awk -F': ' '/model name/ {print $2; exit}' /proc/cpuinfo)" "$(nproc)" "$(uname -r)" "$SECS" "$RATE" "$FLOOD_RATE"
rr() {
  "$BIN"/sluice-load rr --target 127.0.0.1:"$PUB" --bind 127.0.0.1 --size 64 --connections 4 \
      --rate "$RATE" --threads 1 --duration "${SECS}s" --warmup 1s --quiet --json "$WORK/$1.json" >/dev/null
}

c0=$(cpu_ticks $EDGE)
rr alone
c1=$(cpu_ticks $EDGE)
FLOOD_PACE=()
[ "$FLOOD_RATE" = max ] || FLOOD_PACE=(--rate "$FLOOD_RATE")
"$BIN"/sluice-load connect --target 127.0.0.1:"$PUB" --bind 127.0.0.2 --size 0 --concurrency "$FLOOD_CONC" \
    ${FLOOD_PACE[@]+"${FLOOD_PACE[@]}"} --threads 1 --duration "$((SECS + 2))s" --quiet --json "$WORK/flood.json" >/dev/null 2>&1 & FLOOD=$!; PIDS+=($FLOOD)
sleep 1
c2=$(cpu_ticks $EDGE)
rr flooded
c3=$(cpu_ticks $EDGE)
wait $FLOOD || true

python3 - "$WORK" "$SECS" "$HZ" "$c0" "$c1" "$c2" "$c3" <<'PY'
import json, sys
work, secs, hz = sys.argv[1], float(sys.argv[2]), int(sys.argv[3])
c0, c1, c2, c3 = map(int, sys.argv[4:])
flood = json.load(open(f"{work}/flood.json"))
t = flood["totals"]
e = flood["errors"]
attempts = t["ops"] + e["total"]
print(f"flood: {attempts} denied connection attempts in {t['measured_s']:.1f} s = "
      f"{attempts / t['measured_s']:.0f}/s; as the flooder saw them: {t['ops']} connected and "
      f"closed, {e['refused']} refused, {e['reset']} reset, {e['timeout']} timed out, "
      f"{e['total'] - e['refused'] - e['reset'] - e['timeout']} other")
for sample in flood["error_samples"][:3]:
    print(f"  flooder error sample: {sample}")
lag = flood.get("schedule_lag_us")
if lag:
    print(f"flood schedule lag (paced): p50 {lag['p50']:.0f} us, p99 {lag['p99']:.0f} us, max {lag['max']:.0f} us")
rate = attempts / t["measured_s"]
print(f"{'phase':10} {'edge CPU':>9} {'p50 us':>8} {'p90 us':>8} {'p99 us':>8} {'p99.9 us':>9} {'max us':>8} {'errors':>6}")
cpu = {}
for name, ticks in (("alone", c1 - c0), ("flooded", c3 - c2)):
    r = json.load(open(f"{work}/{name}.json"))
    l = r["latency_us"]
    wall = r["totals"]["wall_s"]
    cpu[name] = ticks / hz / wall
    print(f"{name:10} {cpu[name] * 100:8.0f}% {l['p50']:8.0f} {l['p90']:8.0f} {l['p99']:8.0f} "
          f"{l['p999']:9.0f} {l['max']:8.0f} {r['errors']['total']:6}")
extra = cpu["flooded"] - cpu["alone"]
print(f"edge CPU per denied attempt: {extra / rate * 1e6:.1f} us "
      f"({extra * 100:.0f}% of a core for {rate:.0f} attempts/s; kernel time charged to the "
      f"edge included, a lower bound: on loopback some of the kernel's work on each "
      f"connection is charged to the flooder)")
PY
