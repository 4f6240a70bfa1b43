#!/usr/bin/env bash
# Side-by-side check that sluice-load is not the bottleneck, on loopback, in one run:
#   throughput: `sluice-load throughput` + `serve --mode sink`  vs  iperf3 client + server
#   rr:         `sluice-load rr` (1 connection, 64 B) + `serve`  vs  sockperf ping-pong client + server
#   connect:    `sluice-load connect --size 0`                  vs  nping --tcp-connect, same server
# Each pair runs ROUNDS times, interleaved, T seconds each; the medians and their
# ratios are printed (ratio > 1: sluice-load is faster). Needs iperf3, sockperf and
# nping (Debian: apt-get install -y iperf3 sockperf nmap); CI does not run this.
set -euo pipefail
B=${SLUICE_LOAD:-target/release/sluice-load}
T=${T:-3}
ROUNDS=${ROUNDS:-3}
# nping fails most attempts when asked for much more than it can do; 3000/s is near its best here.
NPING_RATE=${NPING_RATE:-3000}
for tool in iperf3 sockperf nping python3; do
    command -v "$tool" >/dev/null || { echo "missing $tool" >&2; exit 1; }
done
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; }
trap cleanup EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
serve() { # mode file: starts a server (in this shell, so that its PID is kept)
    "$B" serve --listen 127.0.0.1:0 --threads 1 --mode "$1" >"$2" & PIDS+=($!)
    for _ in $(seq 100); do grep -q listening "$2" && break; sleep 0.05; done
}
json() { python3 -c "import json,sys; d=json.load(sys.stdin); print($1)"; }
median() { tr ' ' '\n' | grep -v '^$' | sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }

TMP=$(mktemp -d)
serve sink "$TMP/sink"; serve echo "$TMP/echo"
SINK=$(awk '{print $3}' "$TMP/sink"); ECHO=$(awk '{print $3}' "$TMP/echo")
IPORT=$(free_port); iperf3 -s -p "$IPORT" >/dev/null 2>&1 & PIDS+=($!)
SPORT=$(free_port); sockperf sr --tcp -i 127.0.0.1 -p "$SPORT" >/dev/null 2>&1 & PIDS+=($!)
python3 - "$IPORT" "$SPORT" <<'PY'
import socket, sys, time
for port in map(int, sys.argv[1:]):
    deadline = time.time() + 5
    while time.time() < deadline:
        try: socket.create_connection(("127.0.0.1", port)).close(); break
        except OSError: time.sleep(0.05)
PY

tp_s=""; tp_i=""; rr_s=""; rr_p=""; cn_s=""; cn_n=""
for r in $(seq "$ROUNDS"); do
    tp_i+=" $(iperf3 -c 127.0.0.1 -p "$IPORT" -t "$T" -J | json "d['end']['sum_sent']['bits_per_second']/1e9")"
    tp_s+=" $("$B" throughput --target "$SINK" --duration "$T" --threads 1 --quiet --json - 2>/dev/null | json "d['totals']['gbit_per_s']")"
    rr_p+=" $(sockperf pp --tcp -i 127.0.0.1 -p "$SPORT" -m 64 -t "$T" 2>&1 | sed -n 's/.*Valid Duration\] RunTime=\([0-9.]*\) sec.*ReceivedMessages=\([0-9]*\).*/\2 \1/p' | awk '{printf "%.0f", $1/$2}')"
    rr_s+=" $("$B" rr --target "$ECHO" --duration "$T" --threads 1 --connections 1 --size 64 --quiet --json - 2>/dev/null | json "d['totals']['ops_per_s']")"
    cn_n+=" $(nping --tcp-connect -p "${ECHO##*:}" --rate "$NPING_RATE" -c $((NPING_RATE * T)) 127.0.0.1 -q 2>&1 | awk '/Successful connections/ {ok=$8} /Nping done/ {t=$(NF-1)} END {printf "%.0f", ok/t}')"
    cn_s+=" $("$B" connect --target "$ECHO" --size 0 --duration "$T" --threads 1 --concurrency 1 --quiet --json - 2>/dev/null | json "d['totals']['ops_per_s']")"
    echo "round $r done" >&2
done
report() { # name unit ours theirs tool
    local a b; a=$(echo "$3" | median); b=$(echo "$4" | median)
    printf '%-10s sluice-load %10.2f %-8s %-9s %10.2f  ratio %.2f   (runs: ours%s; theirs%s)\n' "$1" "$a" "$2" "$5" "$b" "$(python3 -c "print($a/$b)")" "$3" "$4"
}
echo "machine: $(nproc) CPUs, kernel $(uname -r); T=${T}s, ROUNDS=$ROUNDS, medians"
report throughput Gbit/s "$tp_s" "$tp_i" iperf3
report rr req/s "$rr_s" "$rr_p" sockperf
report connect conn/s "$cn_s" "$cn_n" nping
