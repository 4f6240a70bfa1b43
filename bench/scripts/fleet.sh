#!/usr/bin/env bash
# Fleet benchmark on one host: a real etcd, edges A (127.0.0.1) and B (127.0.0.2)
# sharing their state in it, and edge S on SQLite, each with an agent and one echo
# upstream. Measured in one run:
#   - propagation: 100 policy changes made through A's API, each timed from A's 2xx to
#     the first connection B serves under the new policy (p50, p99, max), on idle
#     edges and again while a load generator opens connections through A and B;
#   - revocation: tokens made through B, each used by an agent holding its session on
#     A with a stream flowing through A, revoked through B: timed from B's 2xx to the
#     stream's cut on A (p50, p99, max), while the same load runs;
#   - admin writes per second through A (etcd) and S (SQLite), one client at a time
#     and four at once;
#   - the accept path with etcd configured (A) against without (S), both on 127.0.0.1:
#     connections per second (32 concurrent) and the 64 B round trip, side by side,
#     alternating;
#   - the peer hop: edge C (127.0.0.3, on etcd, no agent) forwards to A or B over a peer
#     link; direct, through A (its own session) and through C (forwarded) side by side:
#     connections per second, the 64 B round trip and one stream's throughput.
#
#   bash bench/scripts/fleet.sh [--changes N] [--revocations N] [--writes N] [--seconds N]
#
# Needs etcd (Debian's etcd-server) and python3. Every process it starts is stopped by
# PID on exit; all traffic stays on 127.0.0.0/8.
set -euo pipefail
cd "$(dirname "$0")/../.."

CHANGES=100
REVOCATIONS=20
WRITES=200
SECONDS_PER_RUN=4
while [ $# -gt 0 ]; do
  case "$1" in
    --changes) CHANGES="$2"; shift 2 ;;
    --revocations) REVOCATIONS="$2"; shift 2 ;;
    --writes) WRITES="$2"; shift 2 ;;
    --seconds) SECONDS_PER_RUN="$2"; shift 2 ;;
    *) echo "unknown argument $1" >&2; exit 2 ;;
  esac
done
command -v etcd >/dev/null || { echo "etcd missing: apt-get install etcd-server" >&2; exit 2; }

source bench/scripts/common.sh

KEY=bench-admin-key-0123456789
KEY_HASH=$(python3 -c "import hashlib,sys; print('sha256:'+hashlib.sha256(sys.argv[1].encode()).hexdigest())" "$KEY")
ETCD_CLIENT=$(free_port); ETCD_PEER=$(free_port); ECHO_PORT=$(free_port)
etcd --name bench --data-dir "$WORK/etcd" \
  --listen-client-urls http://127.0.0.1:"$ETCD_CLIENT" --advertise-client-urls http://127.0.0.1:"$ETCD_CLIENT" \
  --listen-peer-urls http://127.0.0.1:"$ETCD_PEER" --initial-advertise-peer-urls http://127.0.0.1:"$ETCD_PEER" \
  --initial-cluster bench=http://127.0.0.1:"$ETCD_PEER" --log-level error >/dev/null 2>&1 & PIDS+=($!)
"$BIN"/sluice-load serve --listen 127.0.0.1:"$ECHO_PORT" --mode echo >/dev/null 2>&1 & PIDS+=($!)
wait_port "$ETCD_CLIENT"; wait_port "$ECHO_PORT"

declare -A ADMIN AGENT
start_edge() { # name ip state-yaml [no-agent]
  local name=$1 ip=$2 state=$3 no_agent=${4:-}
  AGENT[$name]=$(free_port); ADMIN[$name]=$(free_port)
  cat > "$WORK/$name-edge.yml" <<YML
version: 1
edge_id: $name
public_address: $ip
agents: { listen: $ip:${AGENT[$name]}, tls: { cert: edge.crt, key: edge.key }, plain_channels: true }
service_users: [ { name: bench, authtokens: ["$HASH"] } ]
endpoints: []
admin: { listen: "$ip:${ADMIN[$name]}", api_keys: ["$KEY_HASH"] }
$state
YML
  "$SLUICE" --log-level warn edge --config "$WORK/$name-edge.yml" 2>"$WORK/$name-edge.log" & PIDS+=($!)
  for _ in $(seq 1 200); do
    (exec 3<>/dev/tcp/"$ip"/"${ADMIN[$name]}") 2>/dev/null && break
    sleep 0.05
  done
  [ -n "$no_agent" ] && return 0
  cat > "$WORK/$name-agent.yml" <<YML
version: 3
agent: { authtoken: "$TOKEN", connect_url: "$ip:${AGENT[$name]}", connect_cas: edge.crt, server_name: localhost, transport: tcp, data_channels: 64 }
endpoints:
  - { url: tcp://echo.internal:7, upstream: { url: "127.0.0.1:$ECHO_PORT" } }
YML
  "$SLUICE" --log-level warn agent --config "$WORK/$name-agent.yml" 2>"$WORK/$name-agent.log" & PIDS+=($!)
}
ETCD_STATE="state: { etcd: { endpoints: [\"http://127.0.0.1:$ETCD_CLIENT\"], prefix: /bench } }"
start_edge a 127.0.0.1 "$ETCD_STATE"
start_edge b 127.0.0.2 "$ETCD_STATE"
start_edge s 127.0.0.1 "state_dir: $WORK/sqlite"
start_edge c 127.0.0.3 "$ETCD_STATE" no-agent

python3 - "$WORK" "$KEY" "${ADMIN[a]}" "${ADMIN[b]}" "${ADMIN[s]}" "$CHANGES" "$REVOCATIONS" "$WRITES" "$SECONDS_PER_RUN" "$BIN" "$SLUICE" "${AGENT[a]}" "$ECHO_PORT" <<'PY'
import http.client, json, os, socket, statistics, subprocess, sys, threading, time
work, key, admin_a, admin_b, admin_s, changes, revocations, writes, seconds, bin_dir, sluice, agent_a, echo_port = sys.argv[1:]
changes, revocations, writes, seconds = int(changes), int(revocations), int(writes), int(seconds)

def api(ip, port, method, path, body=None):
    c = http.client.HTTPConnection(ip, int(port), timeout=10)
    c.request(method, path, body=json.dumps(body) if body is not None else None,
              headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"})
    r = c.getresponse(); data = r.read(); c.close()
    return r.status, (json.loads(data) if data else None)

ALLOW = "{ on_tcp_connect: [ { actions: [ { type: forward-internal, config: { url: tcp://echo.internal:7 } } ] } ] }"
DENY = "{ on_tcp_connect: [ { actions: [ { type: restrict-ips, config: { allow: [10.0.0.0/8] } }, { type: forward-internal, config: { url: tcp://echo.internal:7 } } ] } ] }"

def echoes(addr):
    try:
        s = socket.create_connection(addr, timeout=1)
        s.settimeout(1); s.sendall(b"ping")
        got = s.recv(4); s.close()
        return got == b"ping"
    except OSError:
        return False

def wait(cond, what, limit=20):
    end = time.monotonic() + limit
    while not cond():
        if time.monotonic() > end: sys.exit(f"{what}: not within {limit} s")
        time.sleep(0.001)

# Endpoints: one made through A (served by A and B), one on S.
st, ep = api("127.0.0.1", admin_a, "POST", "/v1/endpoints", {"url": "tcp://127.0.0.1:0", "traffic_policy": ALLOW})
assert st == 201, (st, ep)
port = int(ep["listen_addr"].rsplit(":", 1)[1])
on_b = ("127.0.0.2", port)
st, eps = api("127.0.0.1", admin_s, "POST", "/v1/endpoints", {"url": "tcp://127.0.0.1:0", "traffic_policy": ALLOW})
assert st == 201, (st, eps)
on_s = ("127.0.0.1", int(eps["listen_addr"].rsplit(":", 1)[1]))
wait(lambda: echoes(on_b), "B serves the endpoint")
wait(lambda: echoes(on_s), "S serves its endpoint")

# 1. Propagation: A's 2xx -> first connection B serves under the new policy.
def propagation():
    delays = []
    for i in range(changes):
        deny = i % 2 == 0
        st, _ = api("127.0.0.1", admin_a, "PATCH", f"/v1/endpoints/{ep['id']}", {"traffic_policy": DENY if deny else ALLOW})
        assert st == 200, st
        t0 = time.monotonic()
        end = t0 + 5
        while echoes(on_b) == deny:
            if time.monotonic() > end: sys.exit(f"change {i} not in force on B within 5 s")
        delays.append((time.monotonic() - t0) * 1000)
    # Leave the endpoint open for what follows.
    st, _ = api("127.0.0.1", admin_a, "PATCH", f"/v1/endpoints/{ep['id']}", {"traffic_policy": ALLOW})
    assert st == 200, st
    wait(lambda: echoes(on_b), "B serves the endpoint again")
    return sorted(delays)
def pct(xs, p): return xs[min(len(xs) - 1, int(len(xs) * p))]

class Load:
    """sluice-load opening connections (16 at a time) through A and through B, bounded
    by --duration and stopped (by PID) when the measurement under it is done."""
    def __enter__(self):
        self.procs = [subprocess.Popen([f"{bin_dir}/sluice-load", "connect", "--target", f"{ip}:{port}",
                                        "--concurrency", "16", "--duration", "120s", "--json", f"{work}/load-{ip}-{time.monotonic_ns()}.json"],
                                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                      for ip in ("127.0.0.1", "127.0.0.2")]
        time.sleep(1)  # let the generators reach full rate before measuring under them
        return self
    def __exit__(self, *exc):
        running = [p.poll() is None for p in self.procs]
        for p in self.procs:
            p.terminate(); p.wait()
        if not all(running): sys.exit("a load generator stopped before the measurement under it ended")

delays_idle = propagation()
with Load():
    delays_loaded = propagation()

# 2. Revocation: a token made through B, an agent holding its session on A with a
# stream flowing through A, the token revoked through B -> the stream cut on A.
def revocation(i):
    st, user = api("127.0.0.2", admin_b, "POST", "/v1/service_users", {"name": f"rev-{i}"})
    assert st == 201, (st, user)
    st, tok = api("127.0.0.2", admin_b, "POST", f"/v1/service_users/{user['id']}/authtokens", {"description": "revocation bench"})
    assert st == 201, (st, tok)
    url = f"tcp://rev-{i}.internal:7"
    cfg = f"{work}/rev-{i}-agent.yml"
    with open(cfg, "w") as f:
        f.write(f'version: 3\nagent: {{ authtoken: "{tok["token"]}", connect_url: "127.0.0.1:{agent_a}", connect_cas: edge.crt, '
                f'server_name: localhost, transport: tcp, data_channels: 4 }}\n'
                f'endpoints:\n  - {{ url: {url}, upstream: {{ url: "127.0.0.1:{echo_port}" }} }}\n')
    agent = subprocess.Popen([sluice, "--log-level", "warn", "agent", "--config", cfg],
                             stdout=subprocess.DEVNULL, stderr=open(f"{cfg}.log", "w"))
    try:
        policy = "{ on_tcp_connect: [ { actions: [ { type: forward-internal, config: { url: %s } } ] } ] }" % url
        st, rep = api("127.0.0.2", admin_b, "POST", "/v1/endpoints", {"url": "tcp://127.0.0.1:0", "traffic_policy": policy})
        assert st == 201, (st, rep)
        on_a = ("127.0.0.1", int(rep["listen_addr"].rsplit(":", 1)[1]))
        wait(lambda: echoes(on_a), f"A serves rev-{i} through its agent")
        flowing = socket.create_connection(on_a, timeout=5)
        flowing.sendall(b"ping"); assert flowing.recv(4) == b"ping"
        st, _ = api("127.0.0.2", admin_b, "DELETE", f"/v1/service_users/{user['id']}/authtokens/{tok['id']}")
        assert st == 200, st
        t0 = time.monotonic()
        try:
            got = flowing.recv(1)
            assert got == b"", got
        except ConnectionResetError:
            pass
        except socket.timeout:
            sys.exit(f"revocation {i}: the stream through A outlived it by 5 s")
        delay = (time.monotonic() - t0) * 1000
        flowing.close()
        st, _ = api("127.0.0.2", admin_b, "DELETE", f"/v1/endpoints/{rep['id']}")
        assert st in (200, 204), st
        return delay
    finally:
        agent.terminate(); agent.wait()

with Load():
    revoked = sorted(revocation(i) for i in range(revocations))

# 3. Admin write rate, etcd (A) and SQLite (S).
def write_rate(port, tag, threads):
    per = writes // threads
    def run(t):
        for i in range(per):
            st, body = api("127.0.0.1", port, "POST", "/v1/service_users", {"name": f"{tag}-{threads}-{t}-{i}"})
            assert st == 201, (st, body)
    started = time.monotonic()
    ts = [threading.Thread(target=run, args=(t,)) for t in range(threads)]
    for t in ts: t.start()
    for t in ts: t.join()
    return per * threads / (time.monotonic() - started)
rates = {}
for threads in (1, 4):
    rates[("etcd", threads)] = write_rate(admin_a, "e", threads)
    rates[("sqlite", threads)] = write_rate(admin_s, "s", threads)

# 4. Accept path: A (etcd configured) against S (SQLite), both on 127.0.0.1,
# alternating, same harness.
on_a = ("127.0.0.1", port)
def load(kind, addr, extra):
    out = f"{work}/{kind}-{addr[1]}-{time.monotonic_ns()}.json"
    subprocess.run([f"{bin_dir}/sluice-load", kind, "--target", f"{addr[0]}:{addr[1]}", "--duration", f"{seconds}s",
                    "--warmup", "1s", "--json", out] + extra, check=True, capture_output=True)
    return json.load(open(out))
conn = {"etcd": [], "sqlite": []}; rr = {"etcd": [], "sqlite": []}
for round_ in range(4):
    order = (("etcd", on_a), ("sqlite", on_s))
    for name, addr in order if round_ % 2 == 0 else order[::-1]:
        c = load("connect", addr, ["--concurrency", "32"])
        conn[name].append(c["totals"]["ops_per_s"])
        r = load("rr", addr, ["--size", "64", "--connections", "1"])
        rr[name].append(r["latency_us"]["p50"])

# 5. The peer hop: direct, through A (local session), through C (forwarded to A or B).
on_c = ("127.0.0.3", port)
direct = ("127.0.0.1", int(echo_port))
wait(lambda: echoes(on_c), "C forwards the endpoint")
hop = {"direct": {"conn": [], "rr": [], "bulk": []}, "local": {"conn": [], "rr": [], "bulk": []},
       "forwarded": {"conn": [], "rr": [], "bulk": []}}
paths = (("direct", direct), ("local", on_a), ("forwarded", on_c))
for round_ in range(3):
    for name, addr in paths if round_ % 2 == 0 else paths[::-1]:
        hop[name]["conn"].append(load("connect", addr, ["--concurrency", "32"])["totals"]["ops_per_s"])
        hop[name]["rr"].append(load("rr", addr, ["--size", "64", "--connections", "1"])["latency_us"]["p50"])
        hop[name]["bulk"].append(load("throughput", addr, ["--direction", "both", "--streams", "1", "--threads", "1"])["totals"]["gbit_per_s"])

print(f"## Fleet: propagation, admin writes, accept path, peer hop ({time.strftime('%Y-%m-%d')})\n")
print("| from a 2xx on one edge to in force on the other (ms) | p50 | p99 | max |\n| --- | ---: | ---: | ---: |")
for what, xs in ((f"{changes} policy changes through A, first connection B decides under it; idle", delays_idle),
                 (f"the same, while 2 x 16 concurrent clients open connections through A and B", delays_loaded),
                 (f"{revocations} tokens revoked through B, stream cut on A; under the same load", revoked)):
    print(f"| {what} | {pct(xs, 0.5):.1f} | {pct(xs, 0.99):.1f} | {xs[-1]:.1f} |")
print()
print("| admin writes/s | etcd | SQLite | etcd / SQLite |\n| --- | ---: | ---: | ---: |")
for threads in (1, 4):
    e, s = rates[("etcd", threads)], rates[("sqlite", threads)]
    print(f"| {threads} client{'s' if threads > 1 else ''} | {e:.0f} | {s:.0f} | {e / s:.2f}x |")
print("\n| accept path | etcd (edge A) | SQLite (edge S) | etcd / SQLite |\n| --- | ---: | ---: | ---: |")
ce, cs = statistics.median(conn["etcd"]), statistics.median(conn["sqlite"])
print(f"| conn/s, 32 concurrent | {ce:.0f} | {cs:.0f} | {ce / cs:.2f}x |")
re_, rs = statistics.median(rr["etcd"]), statistics.median(rr["sqlite"])
print(f"| 64 B round trip p50 (µs) | {re_:.1f} | {rs:.1f} | {re_ / rs:.2f}x |")
med = {n: {k: statistics.median(v) for k, v in m.items()} for n, m in hop.items()}
print("\n| the peer hop | direct | through A (local session) | through C (forwarded) | forwarded / local |\n| --- | ---: | ---: | ---: | ---: |")
print(f"| conn/s, 32 concurrent | {med['direct']['conn']:.0f} | {med['local']['conn']:.0f} ({med['local']['conn'] / med['direct']['conn']:.2f}x) | {med['forwarded']['conn']:.0f} ({med['forwarded']['conn'] / med['direct']['conn']:.2f}x) | {med['forwarded']['conn'] / med['local']['conn']:.2f}x |")
print(f"| 64 B round trip p50 (µs) | {med['direct']['rr']:.1f} | {med['local']['rr']:.1f} (+{med['local']['rr'] - med['direct']['rr']:.1f}) | {med['forwarded']['rr']:.1f} (+{med['forwarded']['rr'] - med['direct']['rr']:.1f}) | +{med['forwarded']['rr'] - med['local']['rr']:.1f} µs |")
print(f"| one stream, both ways (Gbit/s) | {med['direct']['bulk']:.2f} | {med['local']['bulk']:.2f} ({med['local']['bulk'] / med['direct']['bulk']:.2f}x) | {med['forwarded']['bulk']:.2f} ({med['forwarded']['bulk'] / med['direct']['bulk']:.2f}x) | {med['forwarded']['bulk'] / med['local']['bulk']:.2f}x |")
print(f"\nPeer hop: medians of 3 rounds, the order reversed every other round. conn/s per round: "
      f"{ {n: [round(x) for x in m['conn']] for n, m in hop.items()} }; round trip p50: "
      f"{ {n: [round(x, 1) for x in m['rr']] for n, m in hop.items()} }; Gbit/s: "
      f"{ {n: [round(x, 2) for x in m['bulk']] for n, m in hop.items()} }.")
print(f"\nMedians of {len(conn['etcd'])} rounds, the order swapped every round. conn/s per round: etcd "
      f"{[round(x) for x in conn['etcd']]}, SQLite {[round(x) for x in conn['sqlite']]}; "
      f"round trip p50 (µs): etcd {[round(x, 1) for x in rr['etcd']]}, SQLite {[round(x, 1) for x in rr['sqlite']]}.")
PY
