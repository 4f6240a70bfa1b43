#!/usr/bin/env bash
# A real client through the tunnel: PostgreSQL's pgbench, select-only (`-S`), against
# one local PostgreSQL server reached directly, through sluice (`tcp` and `tls` data
# channels) and through HAProxy chained twice (mode tcp, splice-auto: the two-hop
# peer closest to sluice's connection rate), interleaved in each round. Two client
# models: persistent connections (8 clients), and a new connection per transaction
# (`-C`, 8 clients), the way a connection-per-request application uses a database.
# Prints transactions/s per path and as a ratio to direct in the same round.
#
#   bash bench/scripts/pgbench.sh [--seconds N] [--rounds N] [--clients N]
#
# Needs PostgreSQL (initdb, pg_ctl: Debian's postgresql), pgbench and haproxy; runs the
# server as the `postgres` user when started as root. Builds sluice in release mode;
# every process it starts is stopped by PID on exit.
set -euo pipefail
cd "$(dirname "$0")/../.."

SECONDS_PER_RUN=8
ROUNDS=3
CLIENTS=8
while [ $# -gt 0 ]; do
  case "$1" in
    --seconds) SECONDS_PER_RUN="$2"; shift 2 ;;
    --rounds) ROUNDS="$2"; shift 2 ;;
    --clients) CLIENTS="$2"; shift 2 ;;
    *) echo "unknown argument $1" >&2; exit 2 ;;
  esac
done
PGBIN=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)
[ -x "$PGBIN/initdb" ] || { echo "PostgreSQL missing: apt-get install postgresql" >&2; exit 2; }
command -v pgbench >/dev/null || { echo "pgbench missing: apt-get install postgresql-client" >&2; exit 2; }
command -v haproxy >/dev/null || { echo "haproxy missing: apt-get install haproxy" >&2; exit 2; }

source bench/scripts/common.sh

# The server: a throwaway cluster on loopback, trusted local connections.
PGDATA="$WORK/pgdata"
as_pg() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }
mkdir -p "$PGDATA"
[ "$(id -u)" = 0 ] && chown postgres "$WORK" "$PGDATA"
as_pg "$PGBIN/initdb" -D "$PGDATA" -A trust -U bench >/dev/null
PG_PORT=$(free_port)
as_pg "$PGBIN/pg_ctl" -D "$PGDATA" -l "$PGDATA/log" -w \
  -o "-k $PGDATA -h 127.0.0.1 -p $PG_PORT -c max_connections=200" start >/dev/null
stop_pg() { as_pg "$PGBIN/pg_ctl" -D "$PGDATA" -m fast stop >/dev/null 2>&1 || true; }
trap 'stop_pg; cleanup' EXIT
pgbench -h 127.0.0.1 -p "$PG_PORT" -U bench -i -s 1 postgres >/dev/null 2>&1

start_sluice() { # transport -> PUB
  local transport=$1 agent_port
  agent_port=$(free_port); PUB=$(free_port)
  cat > "$WORK/$transport-edge.yml" <<YML
version: 1
agents: { listen: 127.0.0.1:$agent_port, tls: { cert: edge.crt, key: edge.key }, plain_channels: true }
service_users: [ { name: bench, authtokens: ["$HASH"] } ]
endpoints:
  - url: tcp://127.0.0.1:$PUB
    traffic_policy: { on_tcp_connect: [ { actions: [ { type: forward-internal, config: { url: tcp://db.internal:5432 } } ] } ] }
YML
  cat > "$WORK/$transport-agent.yml" <<YML
version: 3
agent: { authtoken: "$TOKEN", connect_url: "127.0.0.1:$agent_port", connect_cas: edge.crt, server_name: localhost, transport: $transport, data_channels: 64 }
endpoints:
  - { url: tcp://db.internal:5432, upstream: { url: "127.0.0.1:$PG_PORT" } }
YML
  "$SLUICE" --log-level warn edge --config "$WORK/$transport-edge.yml" 2>"$WORK/$transport-edge.log" & PIDS+=($!)
  wait_port "$agent_port"
  "$SLUICE" --log-level warn agent --config "$WORK/$transport-agent.yml" 2>"$WORK/$transport-agent.log" & PIDS+=($!)
  for _ in $(seq 1 200); do
    pgbench -h 127.0.0.1 -p "$PUB" -U bench -S -t 1 postgres >/dev/null 2>&1 && return 0
    sleep 0.05
  done
  echo "sluice $transport never became usable" >&2; cat "$WORK/$transport-agent.log" >&2; exit 1
}

start_haproxy() { # -> PUB
  local mid; mid=$(free_port); PUB=$(free_port)
  for hop in "$PUB $mid" "$mid $PG_PORT"; do
    set -- $hop
    cat > "$WORK/haproxy-$1.cfg" <<CFG
global
    maxconn 4000
defaults
    mode tcp
    option splice-auto
    timeout connect 5s
    timeout client 120s
    timeout server 120s
listen hop
    bind 127.0.0.1:$1
    server s 127.0.0.1:$2
CFG
    haproxy -f "$WORK/haproxy-$1.cfg" -db >/dev/null 2>&1 & PIDS+=($!)
  done
  wait_port "$PUB"
}

declare -A PORT
PORT[direct]=$PG_PORT
start_sluice tcp; PORT[sluice-tcp]=$PUB
start_sluice tls; PORT[sluice-tls]=$PUB
start_haproxy; PORT[haproxy-x2]=$PUB
PATHS="direct sluice-tcp sluice-tls haproxy-x2"

tps() { # port, extra pgbench flags -> transactions/s
  pgbench -h 127.0.0.1 -p "$1" -U bench -S -c "$CLIENTS" -j 2 -T "$SECONDS_PER_RUN" "${@:2}" postgres 2>/dev/null \
    | awk '/^tps = /{print $3; exit}'
}

RESULTS="$WORK/results.txt"
for round in $(seq 1 "$ROUNDS"); do
  for mode in persistent per-transaction; do
    flags=(); [ "$mode" = per-transaction ] && flags=(-C)
    for path in $PATHS; do
      echo "$round $mode $path $(tps "${PORT[$path]}" "${flags[@]}")" >> "$RESULTS"
    done
  done
done

python3 - "$RESULTS" "$CLIENTS" "$SECONDS_PER_RUN" <<'PY'
import sys, statistics, os, platform
rows = [l.split() for l in open(sys.argv[1])]
clients, secs = sys.argv[2], sys.argv[3]
cpu = next((l.split(":",1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
rounds = sorted({int(r[0]) for r in rows})
print(f"machine: {cpu}, {os.cpu_count()} cores, kernel {platform.release()}; pgbench -S, {clients} clients, {secs} s per figure, {len(rounds)} rounds")
for mode in ["persistent", "per-transaction"]:
    print(f"\n{mode} connections" + (" (-C)" if mode == "per-transaction" else ""))
    print(f"{'path':12} {'tps (median)':>13} {'vs direct (median, min-max)':>30}")
    for path in ["direct", "sluice-tcp", "sluice-tls", "haproxy-x2"]:
        tps, ratio = [], []
        for r in rounds:
            get = lambda p: float(next(x[3] for x in rows if int(x[0]) == r and x[1] == mode and x[2] == p))
            tps.append(get(path)); ratio.append(get(path) / get("direct"))
        print(f"{path:12} {statistics.median(tps):13.0f} {statistics.median(ratio):17.2f}x ({min(ratio):.2f}-{max(ratio):.2f})")
PY
