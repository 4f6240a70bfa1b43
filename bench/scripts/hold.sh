#!/usr/bin/env bash
# Many held connections through one edge and one agent: how many were opened and held,
# and the resident memory the edge and the agent add per connection (peak RSS during the
# hold minus RSS before), for the tcp and tls transports. Prints the open-files limits in
# force and the peak descriptor counts: the edge holds two descriptors per tunneled
# connection (the client's and its data channel), the agent two (the data channel and
# the upstream), so a limit L carries about (L - ~40) / 2 connections.
#
#   bash bench/scripts/hold.sh [--connections 10000] [--seconds 12] [--transport tcp|tls]
#
# Builds sluice and sluice-load in release mode; stops every process it starts by PID.
set -euo pipefail
cd "$(dirname "$0")/../.."

CONNECTIONS=10000
SECONDS_HOLD=12
TRANSPORTS="tcp tls"
while [ $# -gt 0 ]; do
  case "$1" in
    --connections) CONNECTIONS="$2"; shift 2 ;;
    --seconds) SECONDS_HOLD="$2"; shift 2 ;;
    --transport) TRANSPORTS="$2"; shift 2 ;;
    *) echo "unknown argument $1" >&2; exit 2 ;;
  esac
done

source bench/scripts/common.sh
ulimit -n "$(cat /proc/sys/fs/nr_open)" 2>/dev/null || ulimit -n "$(ulimit -Hn)"

rss_kib() { awk '/^VmRSS:/ {print $2}' "/proc/$1/status"; }
fd_count() { ls "/proc/$1/fd" | wc -l; }
nofile() { awk '/^Max open files/ {print $4}' "/proc/$1/limits"; }

ECHO_PORT=$(free_port)
"$BIN"/sluice-load serve --listen 127.0.0.1:"$ECHO_PORT" --mode echo >/dev/null 2>&1 & PIDS+=($!)
wait_port "$ECHO_PORT"
printf "machine: %s, %s cores, kernel %s; %s connections held %ss\n" \
  "$(awk -F': ' '/model name/ {print $2; exit}' /proc/cpuinfo)" "$(nproc)" "$(uname -r)" "$CONNECTIONS" "$SECONDS_HOLD"
cap_sys_resource=no
(( 0x$(awk '/^CapEff:/ {print $2}' /proc/self/status) >> 24 & 1 )) && cap_sys_resource=yes
printf "limits: fs.nr_open %s; this shell's open files soft/hard %s/%s; CAP_SYS_RESOURCE (to raise a hard limit): %s\n" \
  "$(cat /proc/sys/fs/nr_open)" "$(ulimit -Sn)" "$(ulimit -Hn)" "$cap_sys_resource"
printf "%-9s %8s %8s %8s %14s %14s %15s %15s\n" transport opened held failed "edge B/conn" "agent B/conn" "edge fds/limit" "agent fds/limit"
for transport in $TRANSPORTS; do
  start_echo_tunnel "$ECHO_PORT" "$transport"
  EDGE0=$(rss_kib $EDGE); AGENT0=$(rss_kib $AGENT)
  "$BIN"/sluice-load hold --target 127.0.0.1:"$PUB" --connections "$CONNECTIONS" --interval 3s \
      --duration "${SECONDS_HOLD}s" --json "$WORK/hold-$transport.json" >/dev/null 2>&1 & HOLD=$!
  EDGE_PEAK=$EDGE0; AGENT_PEAK=$AGENT0; EDGE_FDS=0; AGENT_FDS=0
  while kill -0 $HOLD 2>/dev/null; do
    e=$(rss_kib $EDGE); a=$(rss_kib $AGENT)
    [ "$e" -gt "$EDGE_PEAK" ] && EDGE_PEAK=$e
    [ "$a" -gt "$AGENT_PEAK" ] && AGENT_PEAK=$a
    e=$(fd_count $EDGE); a=$(fd_count $AGENT)
    [ "$e" -gt "$EDGE_FDS" ] && EDGE_FDS=$e
    [ "$a" -gt "$AGENT_FDS" ] && AGENT_FDS=$a
    sleep 0.5
  done
  wait $HOLD || true
  python3 - "$WORK/hold-$transport.json" "$transport" "$EDGE0" "$EDGE_PEAK" "$AGENT0" "$AGENT_PEAK" \
      "$EDGE_FDS/$(nofile $EDGE)" "$AGENT_FDS/$(nofile $AGENT)" <<'PY'
import json, sys
path, transport = sys.argv[1], sys.argv[2]
e0, e1, a0, a1 = map(int, sys.argv[3:7])
edge_fds, agent_fds = sys.argv[7], sys.argv[8]
c = json.load(open(path))["connections"]
held = max(c["held"], 1)
print(f"{transport:9} {c['opened']:8} {c['held']:8} {c['failed']:8} {(e1-e0)*1024/held:14.0f} "
      f"{(a1-a0)*1024/held:14.0f} {edge_fds:>15} {agent_fds:>15}")
PY
  kill $EDGE $AGENT; wait $EDGE $AGENT 2>/dev/null || true
done
