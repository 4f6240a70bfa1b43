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
