#!/usr/bin/env bash
# Memory a connection keeps while it idles after a burst: N connections held through one
# edge and one agent, each first echoing 16 bytes, then moving a burst (1 MiB by default)
# out and back one connection at a time, then idling. Prints the edge's and the agent's
# resident memory per connection (RSS minus RSS before) after the small echo and after
# the bursts, per transport. A pump that keeps its largest buffers for the connection's
# life shows here, where hold.sh (small messages only) does not.
#
#   bash bench/scripts/burst_hold.sh [--connections 200] [--burst BYTES] [--transport tcp|tls]
#
# Builds sluice and sluice-load in release mode (SLUICE_BIN=path measures another build);
# the client is Python on loopback; every process it starts is stopped by PID.
set -euo pipefail
cd "$(dirname "$0")/../.."

CONNECTIONS=200
BURST=1048576
TRANSPORTS="tcp tls"
while [ $# -gt 0 ]; do
  case "$1" in
    --connections) CONNECTIONS="$2"; shift 2 ;;
    --burst) BURST="$2"; shift 2 ;;
    --transport) TRANSPORTS="$2"; shift 2 ;;
    *) echo "unknown argument $1" >&2; exit 2 ;;
  esac
done

source bench/scripts/common.sh
ulimit -n "$(ulimit -Hn)"

ECHO_PORT=$(free_port)
"$BIN"/sluice-load serve --listen 127.0.0.1:"$ECHO_PORT" --mode echo >/dev/null 2>&1 & PIDS+=($!)
wait_port "$ECHO_PORT"
echo "$SLUICE: $CONNECTIONS connections, a $BURST-byte burst each way per connection"
printf "%-9s %22s %22s %22s %22s\n" transport "edge B/conn, echoed" "agent B/conn, echoed" "edge B/conn, burst" "agent B/conn, burst"
for transport in $TRANSPORTS; do
  start_echo_tunnel "$ECHO_PORT" "$transport"
  python3 - "$transport" "$PUB" "$CONNECTIONS" "$EDGE" "$AGENT" "$BURST" <<'PY'
import socket, sys, threading
transport = sys.argv[1]
port, n, edge, agent, burst = map(int, sys.argv[2:7])
def rss(pid):
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
def per_conn(now, before):
    return f"{(now - before) / n:22.0f}"
e0, a0 = rss(edge), rss(agent)
conns = []
for _ in range(n):
    s = socket.create_connection(("127.0.0.1", port), timeout=30)
    s.sendall(b"x" * 16)
    got = 0
    while got < 16:
        chunk = s.recv(64)
        if not chunk:
            raise SystemExit("closed before the echo")
        got += len(chunk)
    conns.append(s)
e1, a1 = rss(edge), rss(agent)
payload = b"y" * burst
for s in conns:
    def drain(s=s):
        got = 0
        while got < burst:
            chunk = s.recv(1 << 20)
            if not chunk:
                raise SystemExit("closed during the burst")
            got += len(chunk)
    reader = threading.Thread(target=drain)
    reader.start()
    s.sendall(payload)
    reader.join()
e2, a2 = rss(edge), rss(agent)
print(f"{transport:9s} {per_conn(e1, e0)} {per_conn(a1, a0)} {per_conn(e2, e0)} {per_conn(a2, a0)}")
for s in conns:
    s.close()
PY
  kill "$AGENT" "$EDGE"; wait "$AGENT" "$EDGE" 2>/dev/null || true
done
