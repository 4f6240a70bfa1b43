# Shared by the bench scripts (source it after `cd` to the repository root): builds
# sluice and sluice-load, makes a scratch directory with a self-signed edge certificate
# and a fresh token, and stops every process listed in PIDS on exit (by PID).
#   KEEP_BENCH_DIR=1  keeps the scratch directory (configs, logs, JSON) for a look.
#   SLUICE_BIN=PATH   the sluice binary to measure (default: this tree's release build).

cargo build --release -q -p sluice-proxy -p sluice-loadtest
BIN=${CARGO_TARGET_DIR:-target}/release
# SLUICE_BIN=path runs another build of sluice (say, a commit before a change) with
# this tree's sluice-load, so two builds are measured with one harness.
SLUICE=${SLUICE_BIN:-$BIN/sluice}
WORK=$(mktemp -d /tmp/sluice-bench.XXXXXX)
PIDS=()
cleanup() {
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  if [ -n "${KEEP_BENCH_DIR:-}" ]; then echo "kept $WORK"; else rm -rf "$WORK"; fi
}
trap cleanup EXIT

# CPU time (user + system, in clock ticks) the processes with these PIDs have used.
cpu_ticks() { local t=0 pid; for pid in "$@"; do t=$((t + $(awk '{ print $14 + $15 }' "/proc/$pid/stat"))); done; echo "$t"; }
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_port() {
  for _ in $(seq 1 200); do
    (exec 3<>/dev/tcp/127.0.0.1/"$1") 2>/dev/null && return 0
    sleep 0.05
  done
  echo "port $1 never opened" >&2; exit 1
}

( cd "$WORK" && openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
    -keyout edge.key -out edge.crt -days 2 -subj /CN=localhost \
    -addext subjectAltName=DNS:localhost -addext basicConstraints=critical,CA:FALSE 2>/dev/null )
TOKEN_LINES=$("$SLUICE" token new)
TOKEN=$(echo "$TOKEN_LINES" | sed -n 1p); HASH=$(echo "$TOKEN_LINES" | sed -n 2p)

# An edge and an agent on loopback with one tcp:// endpoint forwarding to the echo
# upstream on port $1 over `$2` (tcp or tls) data channels (64 kept open), logs in
# $WORK/{edge,agent}-$2.log. Sets EDGE and AGENT (their PIDs, also in PIDS) and PUB (the
# endpoint's port); returns once an echo goes through (or after 10 s of trying).
start_echo_tunnel() {
  local echo_port=$1 transport=$2 agent_port
  agent_port=$(free_port); PUB=$(free_port)
  cat > "$WORK/edge-$transport.yml" <<YML
version: 1
agents: { listen: 127.0.0.1:$agent_port, tls: { cert: $WORK/edge.crt, key: $WORK/edge.key }, plain_channels: true }
service_users: [ { name: bench, authtokens: ["$HASH"] } ]
endpoints:
  - url: tcp://127.0.0.1:$PUB
    traffic_policy: { on_tcp_connect: [ { actions: [ { type: forward-internal, config: { url: tcp://echo.internal:7 } } ] } ] }
YML
  cat > "$WORK/agent-$transport.yml" <<YML
version: 3
agent: { authtoken: "$TOKEN", connect_url: "127.0.0.1:$agent_port", connect_cas: $WORK/edge.crt, server_name: localhost, transport: $transport, data_channels: 64 }
endpoints: [ { url: tcp://echo.internal:7, upstream: { url: "127.0.0.1:$echo_port" } } ]
YML
  "$SLUICE" --log-level warn edge --config "$WORK/edge-$transport.yml" 2>"$WORK/edge-$transport.log" & EDGE=$!; PIDS+=($EDGE)
  wait_port "$agent_port"
  "$SLUICE" --log-level warn agent --config "$WORK/agent-$transport.yml" 2>"$WORK/agent-$transport.log" & AGENT=$!; PIDS+=($AGENT)
  for _ in $(seq 1 200); do
    "$BIN"/sluice-load rr --target 127.0.0.1:"$PUB" --size 16 --connections 1 --duration 0.2s >/dev/null 2>&1 && break
    sleep 0.05
  done
}
