#!/usr/bin/env bash
# A bounded mixed soak through one edge and one agent: bulk throughput (one stream,
# both directions, verified), request/response (4 connections, 64 bytes), connection
# churn (connect, echo, close; 4 at a time) and a policy swap every second (edge.yml
# rewritten, then SIGHUP), all at once for --duration. Prints resident memory and
# open descriptors of the edge and the agent over time, then each workload's operations
# and errors and every warning or error the edge and agent logged, and exits 1 if there
# was any. Not part of the test run.
#
#   bash bench/scripts/soak.sh [--duration 10m] [--transport tls|tcp] [--sample 30]
#
# Builds sluice and sluice-load in release mode; stops every process it starts by PID.
set -euo pipefail
cd "$(dirname "$0")/../.."

DURATION=10m
TRANSPORT=tls
SAMPLE=30
while [ $# -gt 0 ]; do
  case "$1" in
    --duration) DURATION="$2"; shift 2 ;;
    --transport) TRANSPORT="$2"; shift 2 ;;
    --sample) SAMPLE="$2"; shift 2 ;;
    *) echo "unknown argument $1" >&2; exit 2 ;;
  esac
done
case "$DURATION" in
  *m) SECS=$(( ${DURATION%m} * 60 )) ;;
  *s) SECS=${DURATION%s} ;;
  *) SECS=$DURATION ;;
esac

source bench/scripts/common.sh

rss_kib() { awk '/^VmRSS:/ {print $2}' "/proc/$1/status"; }
fds() { ls "/proc/$1/fd" | wc -l; }

ECHO_PORT=$(free_port); AGENT_PORT=$(free_port); PUB=$(free_port)
"$BIN"/sluice-load serve --listen 127.0.0.1:"$ECHO_PORT" --mode echo >/dev/null 2>&1 & PIDS+=($!)
wait_port "$ECHO_PORT"

# Two policies that both admit loopback clients; they differ in the other CIDRs, so each
# swap is a real recompile and publish.
edge_yml() {
  cat > "$WORK/edge.yml.new" <<YML
version: 1
agents: { listen: 127.0.0.1:$AGENT_PORT, tls: { cert: edge.crt, key: edge.key }, plain_channels: true }
service_users: [ { name: soak, authtokens: ["$HASH"] } ]
endpoints:
  - url: tcp://127.0.0.1:$PUB
    traffic_policy:
      on_tcp_connect:
        - actions:
            - type: restrict-ips
              config: { allow: [127.0.0.0/8, $1], deny: [$2] }
            - type: forward-internal
              config: { url: tcp://echo.internal:7 }
YML
  mv "$WORK/edge.yml.new" "$WORK/edge.yml"
}
edge_yml 198.51.100.0/24 203.0.113.0/24
cat > "$WORK/agent.yml" <<YML
version: 3
agent: { authtoken: "$TOKEN", connect_url: "127.0.0.1:$AGENT_PORT", connect_cas: edge.crt, server_name: localhost, transport: $TRANSPORT, data_channels: 16 }
endpoints: [ { url: tcp://echo.internal:7, upstream: { url: "127.0.0.1:$ECHO_PORT" } } ]
YML
"$SLUICE" --log-level info --log-format json edge --config "$WORK/edge.yml" 2>"$WORK/edge.log" & EDGE=$!; PIDS+=($EDGE)
wait_port "$AGENT_PORT"
"$SLUICE" --log-level info --log-format json agent --config "$WORK/agent.yml" 2>"$WORK/agent.log" & AGENT=$!; PIDS+=($AGENT)
for _ in $(seq 1 200); do
  "$BIN"/sluice-load rr --target 127.0.0.1:"$PUB" --size 16 --connections 1 --duration 0.2s >/dev/null 2>&1 && break
  sleep 0.05
done

printf "machine: %s, %s cores, kernel %s; transport %s; %ss\n" \
  "$(awk -F': ' '/model name/ {print $2; exit}' /proc/cpuinfo)" "$(nproc)" "$(uname -r)" "$TRANSPORT" "$SECS"
common=(--duration "${SECS}s" --threads 1 --quiet)
"$BIN"/sluice-load throughput --target 127.0.0.1:"$PUB" --direction both --streams 1 "${common[@]}" \
    --json "$WORK/bulk.json" >/dev/null 2>"$WORK/bulk.err" & BULK=$!; PIDS+=($BULK)
"$BIN"/sluice-load rr --target 127.0.0.1:"$PUB" --size 64 --connections 4 "${common[@]}" \
    --json "$WORK/rr.json" >/dev/null 2>"$WORK/rr.err" & RR=$!; PIDS+=($RR)
"$BIN"/sluice-load connect --target 127.0.0.1:"$PUB" --concurrency 4 --size 32 "${common[@]}" \
    --json "$WORK/churn.json" >/dev/null 2>"$WORK/churn.err" & CHURN=$!; PIDS+=($CHURN)

printf "%8s %12s %12s %9s %9s %8s\n" elapsed "edge RSS KiB" "agent RSS KiB" "edge fds" "agent fds" swaps
start=$(date +%s); swaps=0; next_sample=0
while kill -0 $BULK 2>/dev/null || kill -0 $RR 2>/dev/null || kill -0 $CHURN 2>/dev/null; do
  now=$(( $(date +%s) - start ))
  if [ $(( swaps % 2 )) -eq 0 ]; then edge_yml 192.0.2.0/24 198.18.0.0/15; else edge_yml 198.51.100.0/24 203.0.113.0/24; fi
  kill -HUP $EDGE; swaps=$(( swaps + 1 ))
  if [ "$now" -ge "$next_sample" ]; then
    printf "%7ss %12s %12s %9s %9s %8s\n" "$now" "$(rss_kib $EDGE)" "$(rss_kib $AGENT)" "$(fds $EDGE)" "$(fds $AGENT)" "$swaps"
    next_sample=$(( next_sample + SAMPLE ))
  fi
  sleep 1
done
wait $BULK $RR $CHURN || true
now=$(( $(date +%s) - start ))
printf "%7ss %12s %12s %9s %9s %8s   (load stopped)\n" "$now" "$(rss_kib $EDGE)" "$(rss_kib $AGENT)" "$(fds $EDGE)" "$(fds $AGENT)" "$swaps"

reloaded=$(grep -c '"config reloaded"' "$WORK/edge.log" || true)
rejected=$(grep -c 'config reload rejected' "$WORK/edge.log" || true)
python3 - "$WORK" "$swaps" "$reloaded" "$rejected" <<'PY'
import json, sys
work, swaps, reloaded, rejected = sys.argv[1], *map(int, sys.argv[2:])
total = 0
for name, what in [("bulk", ""), ("rr", "ops/s"), ("churn", "conn/s")]:
    try:
        r = json.load(open(f"{work}/{name}.json"))
    except Exception as e:
        print(f"{name:6} no report: {e}")
        total += 1
        continue
    t, e = r["totals"], r["errors"]
    if name == "bulk":
        moved = (t["bytes_sent"] + t["bytes_received"]) / 1e9
        print(f"{name:6} {moved:10.1f} GB moved  {t['gbit_per_s']:8.2f} Gbit/s          errors {e['total']} {e}")
    else:
        p99 = (r["latency_us"] or {}).get("p99")
        print(f"{name:6} {t['ops']:10} ops  {t['ops_per_s']:10.1f} {what:7} p99 {p99:.0f} us  errors {e['total']} {e}")
    for s in r["error_samples"]:
        print(f"         sample: {s}")
    total += e["total"]
print(f"policy swaps: {swaps} written, {reloaded} reloads logged, {rejected} rejected")
# Warnings and errors the edge and the agent logged, by message (expected: none).
for role in ("edge", "agent"):
    tally = {}
    for line in open(f"{work}/{role}.log"):
        try:
            v = json.loads(line)
        except ValueError:
            continue
        if v.get("level") in ("WARN", "ERROR"):
            tally[v.get("message")] = tally.get(v.get("message"), 0) + 1
    print(f"{role} warnings/errors logged: {tally if tally else 'none'}")
    total += sum(tally.values())
total += rejected
print("result:", "ok, 0 errors" if total == 0 else f"{total} errors")
sys.exit(0 if total == 0 else 1)
PY
