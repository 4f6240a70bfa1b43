#!/usr/bin/env bash
# A TLS handshake flood on the agent port against an allowed agent's tunneled
# connections, in one run, with the edge's pre-authentication limits in force and with
# them relaxed. For each setting: an edge and a `transport: tcp` agent (every tunneled
# connection costs a new data channel on the agent port, so the flood and the agent
# compete there); `sluice-load connect` through the tunnel from 127.0.0.1 (64 B echo
# per connection, 8 loops, closed loop) first alone, then while `sluice-load connect
# --tls --size 0` from 127.0.0.2 runs TLS handshakes against the agent port at
# --flood-rate per second (paced, 16 loops). Prints the tunneled connection rate and
# its latency percentiles in each phase, the edge's CPU, and what the flooder saw.
#
#   bash bench/scripts/handshake_flood.sh [--seconds 10] [--flood-rate 1500|max]
#
# Builds sluice and sluice-load in release mode; stops every process it starts by PID.
set -euo pipefail
cd "$(dirname "$0")/../.."

SECS=10
FLOOD_RATE=1500
while [ $# -gt 0 ]; do
  case "$1" in
    --seconds) SECS="$2"; shift 2 ;;
    --flood-rate) FLOOD_RATE="$2"; shift 2 ;;
    *) echo "unknown argument $1" >&2; exit 2 ;;
  esac
done

source bench/scripts/common.sh
HZ=$(getconf CLK_TCK)

ECHO_PORT=$(free_port)
"$BIN"/sluice-load serve --listen 127.0.0.1:"$ECHO_PORT" --mode echo >/dev/null 2>&1 & PIDS+=($!)
wait_port "$ECHO_PORT"
printf "machine: %s, %s cores, kernel %s; %ss per phase, flood at %s handshakes/s from 127.0.0.2\n" \
  "$(awk -F': ' '/model name/ {print $2; exit}' /proc/cpuinfo)" "$(nproc)" "$(uname -r)" "$SECS" "$FLOOD_RATE"

# run NAME EXTRA_AGENTS_KEYS: one edge + agent, the two phases; JSON into $WORK/NAME-*.
run() {
  local name=$1 extra=$2
  local agent_port pub
  agent_port=$(free_port); pub=$(free_port)
  cat > "$WORK/edge-$name.yml" <<YML
version: 1
agents: { listen: 127.0.0.1:$agent_port, tls: { cert: edge.crt, key: edge.key }, plain_channels: true$extra }
service_users: [ { name: flood, authtokens: ["$HASH"] } ]
endpoints:
  - url: tcp://127.0.0.1:$pub
    traffic_policy: { on_tcp_connect: [ { actions: [ { type: forward-internal, config: { url: tcp://echo.internal:7 } } ] } ] }
YML
  cat > "$WORK/agent-$name.yml" <<YML
version: 3
agent: { authtoken: "$TOKEN", connect_url: "127.0.0.1:$agent_port", connect_cas: edge.crt, server_name: localhost, transport: tcp, data_channels: 16 }
endpoints: [ { url: tcp://echo.internal:7, upstream: { url: "127.0.0.1:$ECHO_PORT" } } ]
YML
  "$SLUICE" --log-level warn edge --config "$WORK/edge-$name.yml" 2>"$WORK/edge-$name.log" & local edge=$!; PIDS+=($edge)
  wait_port "$agent_port"
  "$SLUICE" --log-level warn agent --config "$WORK/agent-$name.yml" 2>"$WORK/agent-$name.log" & local agent=$!; PIDS+=($agent)
  for _ in $(seq 1 200); do
    "$BIN"/sluice-load connect --target 127.0.0.1:"$pub" --size 16 --concurrency 1 --duration 0.2s >/dev/null 2>&1 && break
    sleep 0.05
  done
  tunnel() {
    "$BIN"/sluice-load connect --target 127.0.0.1:"$pub" --bind 127.0.0.1 --size 64 --concurrency 8 \
        --threads 1 --duration "${SECS}s" --warmup 1s --quiet --json "$WORK/$name-$1.json" >/dev/null
  }
  local c0 c1 c2 c3 flood
  c0=$(cpu_ticks "$edge"); tunnel alone; c1=$(cpu_ticks "$edge")
  local pace=()
  [ "$FLOOD_RATE" = max ] || pace=(--rate "$FLOOD_RATE")
  "$BIN"/sluice-load connect --target 127.0.0.1:"$agent_port" --bind 127.0.0.2 --tls --insecure --sni localhost \
      --size 0 --concurrency 16 ${pace[@]+"${pace[@]}"} --threads 1 --duration "$((SECS + 3))s" --quiet \
      --json "$WORK/$name-flood.json" >/dev/null 2>&1 & flood=$!; PIDS+=($flood)
  sleep 1.5
  c2=$(cpu_ticks "$edge"); tunnel flooded; c3=$(cpu_ticks "$edge")
  wait "$flood" || true
  echo "$c0 $c1 $c2 $c3" > "$WORK/$name-cpu"
  kill "$agent" "$edge" 2>/dev/null || true
}

run limits ""
run relaxed ", max_unauthenticated: 100000, max_unauthenticated_per_ip: 100000, handshakes_per_ip_per_sec: 1000000"

python3 - "$WORK" "$HZ" <<'PY'
import json, sys
work, hz = sys.argv[1], int(sys.argv[2])
print(f"{'edge limits':12} {'phase':8} {'tunnel conn/s':>13} {'p50 us':>8} {'p99 us':>8} {'p99.9 us':>9} {'errors':>6} {'edge CPU':>9}  flooder saw")
for name, label in (("limits", "default"), ("relaxed", "relaxed")):
    c0, c1, c2, c3 = map(int, open(f"{work}/{name}-cpu").read().split())
    fl = json.load(open(f"{work}/{name}-flood.json"))
    ft, fe = fl["totals"], fl["errors"]
    seen = (f"{ft['ops'] / ft['measured_s']:.0f}/s handshakes completed, "
            f"{fe['total'] / ft['measured_s']:.0f}/s refused or reset")
    for phase, ticks in (("alone", c1 - c0), ("flooded", c3 - c2)):
        r = json.load(open(f"{work}/{name}-{phase}.json"))
        l, t = r["latency_us"], r["totals"]
        cpu = ticks / hz / t["wall_s"] * 100
        print(f"{label:12} {phase:8} {t['ops'] / t['measured_s']:13.0f} {l['p50']:8.0f} {l['p99']:8.0f} "
              f"{l['p999']:9.0f} {r['errors']['total']:6} {cpu:8.0f}%  {seen if phase == 'flooded' else ''}")
PY
