#!/usr/bin/env bash
# TLS endpoints on loopback: TLS handshakes per second and bulk throughput, direct TLS to
# the upstream vs through a `tls://` endpoint passed through (the upstream terminates)
# vs terminated at the edge (`terminate_tls`, plaintext upstream), on both data-channel
# transports, in one run, printed as ratios to direct.
#
#   bash bench/scripts/tls_modes.sh [--seconds N] [--rounds N]
#
# Clients and upstreams are sluice-load (`connect --tls`: connect, full TLS handshake,
# 32-byte echo, close, 32 concurrent; `throughput --tls --direction both`: one stream,
# echoed and verified). Every process it starts is stopped by PID on exit; every load
# run is bounded by --seconds; all traffic stays on 127.0.0.1.
set -euo pipefail
cd "$(dirname "$0")/../.."

SECONDS_PER_RUN=4
ROUNDS=1
while [ $# -gt 0 ]; do
  case "$1" in
    --seconds) SECONDS_PER_RUN="$2"; shift 2 ;;
    --rounds) ROUNDS="$2"; shift 2 ;;
    *) echo "unknown argument $1" >&2; exit 2 ;;
  esac
done
command -v openssl >/dev/null || { echo "openssl missing: apt-get install openssl" >&2; exit 2; }

source bench/scripts/common.sh

# One CA and one certificate naming every host: the upstream presents it for direct and
# passthrough, the edge for termination; clients verify it against the CA either way.
(
  cd "$WORK"
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout ca.key \
    -out ca.crt -days 2 -subj /CN=bench-ca -addext basicConstraints=critical,CA:TRUE 2>/dev/null
  openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout app.key -out app.csr \
    -subj /CN=app.bench.example 2>/dev/null
  printf 'subjectAltName=DNS:app.bench.example,DNS:pass.bench.example,DNS:term.bench.example\nbasicConstraints=critical,CA:FALSE\n' > app.ext
  openssl x509 -req -in app.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 2 \
    -extfile app.ext -out app.crt 2>/dev/null
)

TLS_UP=$(free_port); PLAIN_UP=$(free_port)
"$BIN"/sluice-load serve --listen 127.0.0.1:"$TLS_UP" --mode echo \
  --tls-cert "$WORK/app.crt" --tls-key "$WORK/app.key" >/dev/null 2>&1 & PIDS+=($!)
"$BIN"/sluice-load serve --listen 127.0.0.1:"$PLAIN_UP" --mode echo >/dev/null 2>&1 & PIDS+=($!)
wait_port "$TLS_UP"; wait_port "$PLAIN_UP"

TLS_ARGS=(--tls --ca "$WORK/ca.crt")

start_tunnel() { # transport -> sets TLS_PORT
  local transport=$1 agent_port
  agent_port=$(free_port); TLS_PORT=$(free_port)
  cat > "$WORK/$transport-edge.yml" <<YML
version: 1
agents: { listen: 127.0.0.1:$agent_port, tls: { cert: edge.crt, key: edge.key }, plain_channels: true }
tls_endpoints: { listen: 127.0.0.1:$TLS_PORT }
service_users: [ { name: bench, authtokens: ["$HASH"] } ]
endpoints:
  - url: tls://pass.bench.example
    traffic_policy: { on_tcp_connect: [ { actions: [ { type: forward-internal, config: { url: tls://pass.internal:443 } } ] } ] }
  - url: tls://term.bench.example
    terminate_tls: { cert: app.crt, key: app.key }
    traffic_policy: { on_tcp_connect: [ { actions: [ { type: forward-internal, config: { url: tcp://term.internal:80 } } ] } ] }
YML
  cat > "$WORK/$transport-agent.yml" <<YML
version: 3
agent: { authtoken: "$TOKEN", connect_url: "127.0.0.1:$agent_port", connect_cas: edge.crt, server_name: localhost, transport: $transport, data_channels: 64 }
endpoints:
  - { url: tls://pass.internal:443, upstream: { url: "127.0.0.1:$TLS_UP" } }
  - { url: tcp://term.internal:80, upstream: { url: "127.0.0.1:$PLAIN_UP" } }
YML
  "$SLUICE" --log-level warn edge --config "$WORK/$transport-edge.yml" 2>"$WORK/$transport-edge.log" & PIDS+=($!)
  wait_port "$agent_port"
  "$SLUICE" --log-level warn agent --config "$WORK/$transport-agent.yml" 2>"$WORK/$transport-agent.log" & PIDS+=($!)
  # Usable once a TLS echo goes through both routes (bounded: 200 tries).
  local name
  for name in pass term; do
    for i in $(seq 1 200); do
      "$BIN"/sluice-load rr --target 127.0.0.1:"$TLS_PORT" "${TLS_ARGS[@]}" --sni "$name.bench.example" \
        --size 16 --connections 1 --duration 0.2s --warmup 0s >/dev/null 2>&1 && break
      [ "$i" = 200 ] && { echo "tunnel $transport/$name never became usable" >&2; cat "$WORK/$transport-edge.log" >&2; exit 1; }
      sleep 0.05
    done
  done
}

start_tunnel tcp; PORT_tcp=$TLS_PORT
start_tunnel tls; PORT_tls=$TLS_PORT

target_of() { # path -> "addr sni"
  case "$1" in
    direct) echo "127.0.0.1:$TLS_UP app.bench.example" ;;
    pass-tcp) echo "127.0.0.1:$PORT_tcp pass.bench.example" ;;
    term-tcp) echo "127.0.0.1:$PORT_tcp term.bench.example" ;;
    pass-tls) echo "127.0.0.1:$PORT_tls pass.bench.example" ;;
    term-tls) echo "127.0.0.1:$PORT_tls term.bench.example" ;;
  esac
}

PATHS=(direct pass-tcp term-tcp pass-tls term-tls)
for round in $(seq 1 "$ROUNDS"); do
  for path in "${PATHS[@]}"; do
    read -r addr sni < <(target_of "$path")
    "$BIN"/sluice-load connect --target "$addr" "${TLS_ARGS[@]}" --sni "$sni" --concurrency 32 --size 32 \
      --duration "${SECONDS_PER_RUN}s" --warmup 1s --json "$WORK/connect-$path-$round.json" >/dev/null 2>&1
    "$BIN"/sluice-load throughput --target "$addr" "${TLS_ARGS[@]}" --sni "$sni" --streams 1 --direction both \
      --duration "${SECONDS_PER_RUN}s" --warmup 1s --json "$WORK/throughput-$path-$round.json" >/dev/null 2>&1
  done
done

python3 - "$WORK" "$ROUNDS" "${PATHS[@]}" <<'PY'
import json, sys, platform, os
d, rounds, paths = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
def load(kind, p, r): return json.load(open(f"{d}/{kind}-{p}-{r}.json"))
def hs(p, r): return load("connect", p, r)["totals"]["ops_per_s"]
def gbit(p, r): return load("throughput", p, r)["totals"]["gbit_per_s"]
def errs(p, r): return load("connect", p, r)["errors"]["total"] + load("throughput", p, r)["errors"]["total"]
names = {"direct": "direct TLS to the upstream", "pass-tcp": "passthrough, tcp channels",
         "term-tcp": "edge termination, tcp channels", "pass-tls": "passthrough, tls channels",
         "term-tls": "edge termination, tls channels"}
cpu = next((l.split(":",1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
print(f"machine: {cpu}, {os.cpu_count()} cores, kernel {platform.release()}, {rounds} round(s)")
print(f"{'path':34} {'handshakes/s':>13} {'ratio':>6} {'Gbit/s (both)':>14} {'ratio':>6} {'errors':>6}")
for r in range(1, rounds + 1):
    for p in paths:
        print(f"{names[p]:34} {hs(p, r):13.0f} {hs(p, r)/hs('direct', r):6.2f} "
              f"{gbit(p, r):14.2f} {gbit(p, r)/gbit('direct', r):6.2f} {errs(p, r):6d}")
PY
