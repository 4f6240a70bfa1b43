#!/usr/bin/env bash
# A raw SYN flood (half-open connections from spoofed sources) against an edge's public
# endpoint, and what an allowed client sees meanwhile, in one run. Everything runs in a
# network namespace of its own whose only interface is lo: a `sluice-load serve` echo
# upstream, an edge with one endpoint tcp://127.0.0.1:PUB (policy: 127.0.0.0/8 only), an
# agent (tcp transport), the allowed client, and bench/scripts/synflood.py, which sends
# bare SYNs to 127.0.0.1:PUB from random 10.78.0.0/16 addresses and ports. Three phases
# of --seconds each: (a) alone, (b) during a flood paced at --syn-rate SYNs/s, (c) during
# an unpaced flood (`max`). In each, the allowed client runs two loads side by side from
# 127.0.0.1: `sluice-load connect` (new 32-byte echo connections, open loop at 500/s on
# 4 loops: new connections are what a SYN flood hurts) and `sluice-load rr` (64-byte
# ping-pong at 2,000/s on 4 held connections). Prints the kernel limits in force, then
# per phase: SYNs sent and their rate, the allowed client's latency and errors, the
# edge's and the flooder's CPU, and the namespace's TCP counter deltas (SYN cookies sent
# and validated, listen queue overflows and drops, half-open requests mid-phase).
#
#   bash bench/scripts/synflood.sh [--seconds 8] [--syn-rate 5000]
#
# Needs root (network namespace, raw socket) and the release binaries (it does not build:
# cargo build --release -p sluice-proxy -p sluice-loadtest). Stops every process it starts
# by PID and deletes the namespace on exit. KEEP_BENCH_DIR=1 keeps the scratch directory.
#
# Where the SYN-ACKs go: the namespace routes 10.78.0.0/16 to lo, so each SYN-ACK to a
# spoofed source loops back into the namespace, finds no socket there and is dropped
# without a reset (its route is not a local one). Nothing can leave: lo is the only
# interface, and synflood.py refuses to run anywhere else. A blackhole (or unreachable,
# or missing) route for 10.78.0.0/16 would not do: the kernel routes the SYN-ACK before
# it queues a SYN, and a SYN it cannot answer is dropped on the spot (ListenDrops,
# IpOutNoRoutes) without taking a slot in the SYN queue or a SYN cookie, so such a
# flood would never fill the queue. A listener's half-open requests outlive their phase
# (until the SYN-ACK retries run out, about a minute), so the `max` phase starts with
# the queue the paced phase filled. No sysctl needs changing for the spoofed SYNs to be
# accepted: a packet sent on lo keeps the route it was sent with, so rp_filter and the
# martian-source checks never see it.
set -euo pipefail
cd "$(dirname "$0")/../.."

SECS=8
SYN_RATE=5000
while [ $# -gt 0 ]; do
  case "$1" in
    --seconds) SECS="$2"; shift 2 ;;
    --syn-rate) SYN_RATE="$2"; shift 2 ;;
    *) echo "unknown argument $1" >&2; exit 2 ;;
  esac
done
[[ "$SECS" =~ ^[1-9][0-9]?$ ]] || { echo "--seconds: a whole number from 1 to 99" >&2; exit 2; }
[[ "$SYN_RATE" =~ ^([1-9][0-9]*|max)$ ]] || { echo "--syn-rate: SYNs per second, or max" >&2; exit 2; }
[ "$(id -u)" = 0 ] || { echo "synflood.sh needs root (network namespace, raw socket)" >&2; exit 1; }
BIN=${CARGO_TARGET_DIR:-target}/release
for b in sluice sluice-load; do
  [ -x "$BIN/$b" ] || { echo "$BIN/$b is missing: run cargo build --release -p sluice-proxy -p sluice-loadtest" >&2; exit 1; }
done

NS=sluice-syn-$$
WORK=$(mktemp -d /tmp/sluice-synflood.XXXXXX)
PIDS=()
NS_CREATED=
cleanup() {
  local pid _
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  # A namespace this run did not create (ip netns add failed) is not ours to empty.
  if [ -z "$NS_CREATED" ]; then
    wait 2>/dev/null || true
    rm -rf "$WORK"
    return
  fi
  # Anything still in the namespace was started in it by this script; give it 5 s.
  for _ in $(seq 1 50); do
    [ -z "$(ip netns pids "$NS" 2>/dev/null)" ] && break
    sleep 0.1
  done
  for pid in $(ip netns pids "$NS" 2>/dev/null); do kill -9 "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  ip netns delete "$NS" 2>/dev/null || true
  if [ -n "${KEEP_BENCH_DIR:-}" ]; then echo "kept $WORK"; else rm -rf "$WORK"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# Foreground commands in the namespace: inns CMD. Background ones: "${IN_NS[@]}" CMD &,
# not through the function (its subshell would be $!): `ip netns exec` execs CMD, so $!
# is CMD's own PID, the one to kill and to read CPU time from.
IN_NS=(ip netns exec "$NS")
inns() { "${IN_NS[@]}" "$@"; }
wait_port() {
  for _ in $(seq 1 200); do
    inns bash -c "exec 3<>/dev/tcp/127.0.0.1/$1" 2>/dev/null && return 0
    sleep 0.05
  done
  echo "port $1 never opened" >&2; exit 1
}
# After a child is waited for, drop its PID so cleanup never signals a recycled one.
forget() { local keep=() p; for p in "${PIDS[@]}"; do [ "$p" = "$1" ] || keep+=("$p"); done; PIDS=("${keep[@]}"); }
cpu_ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat"; }
now_ns() { date +%s%N; }
HZ=$(getconf CLK_TCK)

ip netns add "$NS"
NS_CREATED=1
inns ip link set lo up
inns ip route add 10.78.0.0/16 dev lo
# The namespace is fresh, so fixed ports are free.
AGENT_PORT=7000; ECHO_PORT=7001; PUB=7002

( cd "$WORK" && openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
    -keyout edge.key -out edge.crt -days 2 -subj /CN=localhost \
    -addext subjectAltName=DNS:localhost -addext basicConstraints=critical,CA:FALSE 2>/dev/null )
TOKEN_LINES=$("$BIN"/sluice token new)
TOKEN=$(echo "$TOKEN_LINES" | sed -n 1p); HASH=$(echo "$TOKEN_LINES" | sed -n 2p)

"${IN_NS[@]}" "$BIN"/sluice-load serve --listen 127.0.0.1:"$ECHO_PORT" --mode echo >/dev/null 2>&1 & PIDS+=($!)
wait_port "$ECHO_PORT"
cat > "$WORK/edge.yml" <<YML
version: 1
agents: { listen: 127.0.0.1:$AGENT_PORT, tls: { cert: edge.crt, key: edge.key }, plain_channels: true }
service_users: [ { name: synflood, authtokens: ["$HASH"] } ]
endpoints:
  - url: tcp://127.0.0.1:$PUB
    traffic_policy:
      on_tcp_connect:
        - actions:
            - type: restrict-ips
              config: { allow: [127.0.0.0/8] }
            - type: forward-internal
              config: { url: tcp://echo.internal:7 }
YML
cat > "$WORK/agent.yml" <<YML
version: 3
agent: { authtoken: "$TOKEN", connect_url: "127.0.0.1:$AGENT_PORT", connect_cas: edge.crt, server_name: localhost, transport: tcp, data_channels: 16 }
endpoints: [ { url: tcp://echo.internal:7, upstream: { url: "127.0.0.1:$ECHO_PORT" } } ]
YML
"${IN_NS[@]}" "$BIN"/sluice --log-level warn edge --config "$WORK/edge.yml" 2>"$WORK/edge.log" & EDGE=$!; PIDS+=($EDGE)
wait_port "$AGENT_PORT"
[ "$(cat /proc/"$EDGE"/comm)" = sluice ] || { echo "PID $EDGE is not the edge" >&2; exit 1; }
"${IN_NS[@]}" "$BIN"/sluice --log-level warn agent --config "$WORK/agent.yml" 2>"$WORK/agent.log" & PIDS+=($!)
up=
for _ in $(seq 1 200); do
  inns "$BIN"/sluice-load rr --target 127.0.0.1:"$PUB" --size 16 --connections 1 --duration 0.2s >/dev/null 2>&1 && { up=1; break; }
  sleep 0.05
done
[ -n "$up" ] || { echo "the tunnel never came up; edge log:" >&2; cat "$WORK/edge.log" >&2; exit 1; }

printf "machine: %s, %s cores, kernel %s; %ss per phase, SYN flood at %s/s then max, from 10.78.0.0/16\n" \
  "$(awk -F': ' '/model name/ {print $2; exit}' /proc/cpuinfo)" "$(nproc)" "$(uname -r)" "$SECS" "$SYN_RATE"
printf "limits in the namespace: tcp_syncookies %s, tcp_max_syn_backlog %s, somaxconn %s, tcp_synack_retries %s, tcp_timestamps %s\n" \
  "$(inns sysctl -n net.ipv4.tcp_syncookies)" "$(inns sysctl -n net.ipv4.tcp_max_syn_backlog)" \
  "$(inns sysctl -n net.core.somaxconn)" "$(inns sysctl -n net.ipv4.tcp_synack_retries)" \
  "$(inns sysctl -n net.ipv4.tcp_timestamps)"
# One SO_REUSEPORT listener per edge worker; ss shows a listener's backlog as Send-Q.
# With SYN cookies on, each listener's SYN queue holds up to backlog + 1 half-open
# requests and every further SYN is answered with a cookie instead.
printf "edge listeners on :%s: %s, listen backlog (ss Send-Q) %s\n" "$PUB" \
  "$(inns ss -Hltn "sport = :$PUB" | wc -l)" \
  "$(inns ss -Hltn "sport = :$PUB" | awk '{print $3}' | sort -u | paste -sd/)"

# One phase: optionally a flood (started 1 s ahead, lasting until the clients are done),
# then both allowed clients side by side (1 s warm-up + SECS measured), a mid-phase count
# of half-open requests, the edge's CPU over the clients' run, and the namespace's TCP
# counters before and after.
phase() {
  local name=$1 rate=$2 flood= c r t0 t1 k0 k1
  inns nstat -asz > "$WORK/$name.nstat0"
  if [ "$rate" != none ]; then
    "${IN_NS[@]}" python3 bench/scripts/synflood.py --dport "$PUB" --src-cidr 10.78.0.0/16 --rate "$rate" \
        --duration "$((SECS + 3))" --count 20000000 > "$WORK/$name.syn.json" & flood=$!; PIDS+=($flood)  # count: a cap only
    sleep 1
  fi
  t0=$(now_ns); k0=$(cpu_ticks "$EDGE")
  "${IN_NS[@]}" "$BIN"/sluice-load connect --target 127.0.0.1:"$PUB" --bind 127.0.0.1 --size 32 --concurrency 4 \
      --rate 500 --threads 1 --warmup 1s --duration "${SECS}s" --quiet --json "$WORK/$name.connect.json" \
      >/dev/null 2>&1 & c=$!; PIDS+=($c)
  "${IN_NS[@]}" "$BIN"/sluice-load rr --target 127.0.0.1:"$PUB" --bind 127.0.0.1 --size 64 --connections 4 \
      --rate 2000 --threads 1 --warmup 1s --duration "${SECS}s" --quiet --json "$WORK/$name.rr.json" \
      >/dev/null 2>&1 & r=$!; PIDS+=($r)
  sleep "$((SECS / 2 + 1))"
  inns ss -Htn state syn-recv "sport = :$PUB" | wc -l > "$WORK/$name.synrecv"
  wait "$c" || echo "connect client exited with $? in phase $name" >&2; forget "$c"
  wait "$r" || echo "rr client exited with $? in phase $name" >&2; forget "$r"
  t1=$(now_ns); k1=$(cpu_ticks "$EDGE")
  echo "$((k1 - k0)) $((t1 - t0))" > "$WORK/$name.cpu"
  if [ -n "$flood" ]; then
    wait "$flood" || echo "synflood.py exited with $? in phase $name" >&2; forget "$flood"
  fi
  inns nstat -asz > "$WORK/$name.nstat1"
}
phase alone none
phase paced "$SYN_RATE"
phase max max

python3 - "$WORK" "$HZ" <<'PY'
import json, os, sys
work, hz = sys.argv[1], int(sys.argv[2])
phases = ("alone", "paced", "max")

def load(path):
    try:
        return json.load(open(path))
    except (OSError, ValueError):
        return None

def counters(path):
    out = {}
    for line in open(path):
        f = line.split()
        if len(f) >= 2 and f[1].isdigit():
            out[f[0]] = int(f[1])
    return out

def lat(r, key):
    l = r and r.get("latency_us")
    return l[key] if l else float("nan")

print(f"{'phase':6} {'SYNs sent':>10} {'SYN/s':>8} {'flooder CPU':>11} {'edge CPU':>8} | "
      f"{'connect p50/p99/max us':>24} {'conn/s':>6} {'errs':>5} | {'rr p50/p99 us':>14} {'errs':>5}")
for p in phases:
    syn = load(f"{work}/{p}.syn.json")
    c = load(f"{work}/{p}.connect.json")
    r = load(f"{work}/{p}.rr.json")
    ticks, ns = map(int, open(f"{work}/{p}.cpu").read().split())
    edge_cpu = ticks / hz / (ns / 1e9)
    sent = f"{syn['sent']:,}" if syn else "-"
    rate = f"{syn['rate_pps']:,.0f}" if syn else "-"
    fcpu = f"{syn['cpu_s'] / syn['elapsed_s'] * 100:.0f}%" if syn else "-"
    conn = (f"{lat(c, 'p50'):.0f} / {lat(c, 'p99'):.0f} / {lat(c, 'max'):.0f}" if c else "missing")
    cps = f"{c['totals']['ops_per_s']:.0f}" if c else "-"
    cerr = c["errors"]["total"] if c else "-"
    rr = f"{lat(r, 'p50'):.0f} / {lat(r, 'p99'):.0f}" if r else "missing"
    rerr = r["errors"]["total"] if r else "-"
    print(f"{p:6} {sent:>10} {rate:>8} {fcpu:>11} {edge_cpu * 100:7.0f}% | {conn:>24} {cps:>6} {cerr:>5} | "
          f"{rr:>14} {rerr:>5}")
    if syn and syn["send_errors"]:
        print(f"       flooder send errors: {syn['send_errors']} {syn['error_kinds']}")
    for name, rep in (("connect", c), ("rr", r)):
        for sample in (rep or {}).get("error_samples", [])[:3]:
            print(f"       {name} error sample: {sample}")

names = [("TcpExtSyncookiesSent", "cookies sent"), ("TcpExtSyncookiesRecv", "cookies ok"),
         ("TcpExtSyncookiesFailed", "cookies bad"), ("TcpExtTCPReqQFullDoCookies", "ReqQFullDoCookies"),
         ("TcpExtTCPReqQFullDrop", "ReqQFullDrop"), ("TcpExtListenOverflows", "ListenOverflows"),
         ("TcpExtListenDrops", "ListenDrops"), ("TcpPassiveOpens", "PassiveOpens"),
         ("TcpRetransSegs", "RetransSegs"), ("TcpOutRsts", "OutRsts"), ("IpOutNoRoutes", "OutNoRoutes"),
         ("IpExtInNoRoutes", "InNoRoutes")]
print("namespace TCP counters, delta over each phase (from before the flood starts to after it ends);"
      " syn-recv: half-open requests on the endpoint mid-phase")
print(f"{'phase':6} {'syn-recv':>8} " + " ".join(f"{label:>{max(len(label), 6)}}" for _, label in names))
for p in phases:
    a, b = counters(f"{work}/{p}.nstat0"), counters(f"{work}/{p}.nstat1")
    synrecv = open(f"{work}/{p}.synrecv").read().strip()
    print(f"{p:6} {synrecv:>8} " + " ".join(
        f"{b.get(k, 0) - a.get(k, 0):>{max(len(label), 6)}}" for k, label in names))
print("cookies sent: SYNs answered with a SYN cookie because the SYN queue was full (the flood's and the"
      " allowed client's alike); cookies ok: handshakes completed on a cookie (the allowed client's, the"
      " flood never ACKs); RetransSegs: mostly SYN-ACK retransmits to half-open requests; flooder CPU:"
      " synflood.py's user+sys time, which on lo includes most of the kernel's work on the SYNs")
PY
