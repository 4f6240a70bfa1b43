#!/usr/bin/env bash
# Endpoint pools on loopback, in one run (issue 5):
#  1. distribution: three agents pool one URL whose upstreams answer after 0 ms, 0 ms
#     and SLOW_MS; `sluice-load connect` at a fixed concurrency; connections per member;
#  2. kill -9: three agents pool another URL; `sluice-load connect` runs at a fixed
#     concurrency (closed loop; the rate it reached is printed) while one agent is
#     killed with SIGKILL; failed connections, and the time from the kill until the
#     edge drops the member (its `pool member left` log line).
#
#   bash bench/scripts/pool_failover.sh [--seconds N] [--slow-ms MS] [--concurrency C] [--transport tls|tcp]
#
# Needs python3 (the counting upstreams). Builds sluice and sluice-load in release
# mode. Every process it starts is stopped by PID on exit.
set -euo pipefail
cd "$(dirname "$0")/../.."

SECONDS_PER_RUN=6
SLOW_MS=20
CONC=16
TRANSPORT=tls
while [ $# -gt 0 ]; do
  case "$1" in
    --seconds) SECONDS_PER_RUN="$2"; shift 2 ;;
    --slow-ms) SLOW_MS="$2"; shift 2 ;;
    --concurrency) CONC="$2"; shift 2 ;;
    --transport) TRANSPORT="$2"; shift 2 ;;
    *) echo "unknown argument $1" >&2; exit 2 ;;
  esac
done

source bench/scripts/common.sh

# A threaded echo upstream that answers after a delay and counts connections that
# brought bytes (health checks only connect) into a file.
cat > "$WORK/upstream.py" <<'PY'
import socket, socketserver, sys, threading, time
port, delay, out = int(sys.argv[1]), float(sys.argv[2]) / 1000, sys.argv[3]
count, lock = 0, threading.Lock()
class H(socketserver.BaseRequestHandler):
    def handle(self):
        global count
        try:
            data = self.request.recv(65536)
            if not data:
                return
            with lock:
                count += 1
                open(out, "w").write(str(count))
            if delay:
                time.sleep(delay)
            while data:
                self.request.sendall(data)
                data = self.request.recv(65536)
        except OSError:
            pass  # a reset from a killed agent
class S(socketserver.ThreadingTCPServer):
    allow_reuse_address = True
    daemon_threads = True
    request_queue_size = 1024
open(out, "w").write("0")
S(("127.0.0.1", port), H).serve_forever()
PY

AGENT_PORT=$(free_port); PUB_DIST=$(free_port); PUB_KILL=$(free_port)
declare -a DIST_UP KILL_UP AGENT_PIDS
DELAYS=(0 0 "$SLOW_MS")
for i in 0 1 2; do
  DIST_UP[$i]=$(free_port); KILL_UP[$i]=$(free_port)
  python3 "$WORK/upstream.py" "${DIST_UP[$i]}" "${DELAYS[$i]}" "$WORK/dist-$i.count" & PIDS+=($!)
  python3 "$WORK/upstream.py" "${KILL_UP[$i]}" 0 "$WORK/kill-$i.count" & PIDS+=($!)
done
for i in 0 1 2; do wait_port "${DIST_UP[$i]}"; wait_port "${KILL_UP[$i]}"; done

policy() { echo "{ on_tcp_connect: [ { actions: [ { type: forward-internal, config: { url: $1 } } ] } ] }"; }
cat > "$WORK/edge.yml" <<YML
version: 1
agents: { listen: 127.0.0.1:$AGENT_PORT, tls: { cert: edge.crt, key: edge.key }, plain_channels: true }
service_users: [ { name: bench, authtokens: ["$HASH"] } ]
endpoints:
  - { url: "tcp://127.0.0.1:$PUB_DIST", traffic_policy: $(policy tcp://dist.internal:7) }
  - { url: "tcp://127.0.0.1:$PUB_KILL", traffic_policy: $(policy tcp://kill.internal:7) }
YML
"$SLUICE" --log-format json --log-level info edge --config "$WORK/edge.yml" 2>"$WORK/edge.log" & PIDS+=($!)
wait_port "$AGENT_PORT"
for i in 0 1 2; do
  cat > "$WORK/agent-$i.yml" <<YML
version: 3
agent: { authtoken: "$TOKEN", connect_url: "127.0.0.1:$AGENT_PORT", connect_cas: edge.crt, server_name: localhost,
         transport: $TRANSPORT, data_channels: 32, heartbeat_interval: 1s, heartbeat_tolerance: 3s }
endpoints:
  - { url: tcp://dist.internal:7, pooling_enabled: true, upstream: { url: "127.0.0.1:${DIST_UP[$i]}" } }
  - { url: tcp://kill.internal:7, pooling_enabled: true, upstream: { url: "127.0.0.1:${KILL_UP[$i]}" } }
YML
  "$SLUICE" --log-format json --log-level info agent --config "$WORK/agent-$i.yml" 2>"$WORK/agent-$i.log" & AGENT_PIDS[$i]=$!; PIDS+=($!)
done
# Ready once the edge logged both pools at three members.
for _ in $(seq 1 200); do
  [ "$(grep -c '"message":"pool member joined".*"members":3' "$WORK/edge.log" || true)" -ge 2 ] && break
  sleep 0.05
done
[ "$(grep -c '"message":"pool member joined".*"members":3' "$WORK/edge.log" || true)" -ge 2 ] \
  || { echo "pools never formed" >&2; cat "$WORK/edge.log" >&2; exit 1; }

# 1. Distribution over members of different speed.
"$BIN"/sluice-load connect --target 127.0.0.1:"$PUB_DIST" --concurrency "$CONC" --size 32 \
    --duration "${SECONDS_PER_RUN}s" --warmup 0s --json "$WORK/dist.json" >/dev/null 2>&1

# 2. kill -9 of one member under load.
"$BIN"/sluice-load connect --target 127.0.0.1:"$PUB_KILL" --concurrency "$CONC" --size 32 \
    --duration "${SECONDS_PER_RUN}s" --warmup 0s --json "$WORK/kill.json" >/dev/null 2>&1 & LOAD=$!
sleep "$(python3 -c "print($SECONDS_PER_RUN / 3)")"
KILLED_AT=$(date +%s.%N)
kill -9 "${AGENT_PIDS[1]}"
wait "${AGENT_PIDS[1]}" 2>/dev/null || true
wait "$LOAD"

python3 - "$WORK" "$KILLED_AT" "$SLOW_MS" "$CONC" "$TRANSPORT" <<'PY'
import json, sys, datetime
d, killed_at, slow_ms, conc, transport = sys.argv[1], float(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5]
def count(name): return int(open(f"{d}/{name}.count").read() or 0)
dist = [count(f"dist-{i}") for i in range(3)]
total = sum(dist) or 1
dj = json.load(open(f"{d}/dist.json"))
kj = json.load(open(f"{d}/kill.json"))
left = None
for line in open(f"{d}/edge.log"):
    try: v = json.loads(line)
    except ValueError: continue
    if v.get("message") == "pool member left" and v.get("url") == "tcp://kill.internal:7":
        t = datetime.datetime.fromisoformat(v["timestamp"].replace("Z", "+00:00")).timestamp()
        if t >= killed_at - 0.001: left = t; break
failovers = sum(1 for line in open(f"{d}/edge.log") if '"pool member unusable; failing over"' in line)
print(f"## pools ({transport} data channels, sluice-load connect --concurrency {conc}, 32-byte echo)\n")
print("| member upstream | connections | share |\n| --- | ---: | ---: |")
for label, c in zip(["0 ms", "0 ms", f"{slow_ms} ms"], dist):
    print(f"| {label} | {c} | {100 * c / total:.1f}% |")
print(f"\ndistribution run: {dj['totals']['ops']} connections, {dj['totals']['ops_per_s']:.0f}/s, {dj['errors']['total']} errors\n")
k = kj["totals"]; e = kj["errors"]
print("| kill -9 of 1 of 3 members | value |\n| --- | ---: |")
print(f"| connections | {k['ops']} at {k['ops_per_s']:.0f}/s |")
print(f"| failed | {e['total']} (reset {e['reset']}, short read {e['short_read']}, timeout {e['timeout']}, other {e['other']}) |")
print(f"| kill -> member dropped | {'%.1f ms' % ((left - killed_at) * 1000) if left else 'not seen'} |")
print(f"| attempts moved to another member | {failovers} |")
PY
