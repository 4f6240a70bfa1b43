//! End-to-end: half-close in the directions and on the paths `tunnel.rs` does not
//! cover — the upstream closing first (its FIN reaches the client, which keeps
//! sending), and a client half-closing through TLS terminated at the edge
//! (`terminate_tls`) and at the agent (`agent_tls_termination`).

use std::{
    io::{Read, Write},
    net::{Shutdown, SocketAddr},
    time::Duration,
};

use sluice_tests::{
    client,
    fixture::{self, Fixture},
    pki::{client_config, Ca},
    probes::{tls_half_close_exchange, ClosesFirst, ReplyAfterEof, TlsEnd},
    process::Sluice,
    DRIVERS,
};

const TRANSPORTS: [&str; 2] = ["tcp", "tls"];
const URL: &str = "tcp://svc.internal:1";
const WAIT: Duration = Duration::from_secs(20);

#[test]
fn the_upstream_closing_first_reaches_the_client_which_can_still_send() {
    for driver in DRIVERS {
        for transport in TRANSPORTS {
            let what = format!("{driver}/{transport}");
            let greeting = client::payload(1, 200_000);
            let upstream = ClosesFirst::start(greeting.clone());
            let fx = Fixture::new();
            let edge_cfg = fx.write(
                "edge.yml",
                &fx.edge_yaml("127.0.0.1:0", &[("127.0.0.1:0", fixture::forward_all(URL))]),
            );
            let mut edge = Sluice::edge(&edge_cfg, driver);
            let (agent_addr, eps) = edge.edge_addrs(1);
            // No health checks: this upstream speaks first, so it cannot tell a
            // check's bare connect from a client's.
            let agent_cfg = fx.write(
                "agent.yml",
                &fx.agent_yaml(&fx.token, agent_addr, transport, &[(URL, upstream.addr)])
                    .replace(
                        "    upstream: {",
                        "    upstream: { health_check: { enabled: false },",
                    ),
            );
            let mut agent = Sluice::agent(&agent_cfg, driver);
            agent.wait_for("endpoint bound");

            let mut s = client::connect_from(None, eps[0]).unwrap();
            // The upstream speaks first: the client only connects, then reads the
            // whole greeting and the upstream's FIN (EOF, not a reset).
            let mut got = Vec::new();
            s.read_to_end(&mut got)
                .unwrap_or_else(|e| panic!("{what}: reading the greeting: {e}"));
            assert!(got == greeting, "{what}: greeting of {} bytes", got.len());
            // The way in is still open: what the client sends now reaches the
            // upstream whole, and the client's own FIN ends it there.
            let request = client::payload(2, 300_000);
            s.write_all(&request)
                .unwrap_or_else(|e| panic!("{what}: sending after the upstream's FIN: {e}"));
            s.shutdown(Shutdown::Write).unwrap();
            let received = upstream
                .received
                .recv_timeout(WAIT)
                .unwrap_or_else(|_| panic!("{what}: the upstream never saw the client's EOF"))
                .unwrap_or_else(|e| panic!("{what}: upstream read failed: {e}"));
            assert_eq!(received.len(), request.len(), "{what}: bytes after the FIN");
            assert!(received == request, "{what}: content after the FIN");
            assert!(
                client::closed_within(&mut s, WAIT),
                "{what}: the connection did not end after both FINs"
            );
        }
    }
}

/// An edge terminating TLS for `tls://app.acme.example` (to a plain upstream) and
/// routing `tls://db.acme.example` to an agent that terminates it; both upstreams
/// answer only after the client's EOF.
struct Terminated {
    _fx: Fixture,
    _edge: Sluice,
    _agent: Sluice,
    tls_port: SocketAddr,
    ca: Ca,
    at_edge: ReplyAfterEof,
    at_agent: ReplyAfterEof,
}

fn terminated(transport: &str) -> Terminated {
    let fx = Fixture::new();
    let ca = Ca::new("half-close CA");
    let app = ca.server(&["app.acme.example"]);
    let db = ca.server(&["db.acme.example"]);
    fx.write("app.crt", &app.cert_pem);
    fx.write("app.key", &app.key_pem);
    fx.write("db.crt", &db.cert_pem);
    fx.write("db.key", &db.key_pem);
    let (at_edge, at_agent) = (ReplyAfterEof::start(), ReplyAfterEof::start());
    let edge_yaml = format!(
        "version: 1\nworkers: 2\nagents:\n  listen: 127.0.0.1:0\n  tls: {{ cert: edge.crt, key: edge.key }}\n  \
         plain_channels: true\ntls_endpoints:\n  listen: 127.0.0.1:0\n\
         service_users:\n  - name: t\n    authtokens: [\"{}\"]\nendpoints:\n\
         \x20 - url: tls://app.acme.example\n    terminate_tls: {{ cert: app.crt, key: app.key }}\n    traffic_policy: {}\n\
         \x20 - url: tls://db.acme.example\n    traffic_policy: {}\n",
        fx.token_hash,
        fixture::forward_all("tcp://app.internal:80"),
        fixture::forward_all("tls://db.internal:443"),
    );
    let mut edge = Sluice::edge(&fx.write("edge.yml", &edge_yaml), DRIVERS[0]);
    let (agent_addr, _) = edge.edge_addrs(0);
    let tls_port = edge.wait_for_n("tls listener", 1, |v| {
        v["message"] == "listening" && v["kind"] == "tls-endpoints"
    })["addr"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    let agent_yaml = format!(
        "version: 3\nagent:\n  authtoken: \"{}\"\n  connect_url: \"{agent_addr}\"\n  connect_cas: edge.crt\n  \
         server_name: localhost\n  transport: {transport}\n  data_channels: 2\n  workers: 2\n  \
         heartbeat_interval: 1s\n  heartbeat_tolerance: 3s\nendpoints:\n\
         \x20 - url: tcp://app.internal:80\n    upstream: {{ url: \"{}\" }}\n\
         \x20 - url: tls://db.internal:443\n    agent_tls_termination: {{ server_certificate: db.crt, server_private_key: db.key }}\n    \
         upstream: {{ url: \"{}\" }}\n",
        fx.token, at_edge.addr, at_agent.addr
    );
    let mut agent = Sluice::agent(&fx.write("agent.yml", &agent_yaml), DRIVERS[0]);
    agent.wait_for_n("both endpoints bound", 2, |v| {
        v["message"] == "endpoint bound"
    });
    Terminated {
        _fx: fx,
        _edge: edge,
        _agent: agent,
        tls_port,
        ca,
        at_edge,
        at_agent,
    }
}

#[test]
fn a_client_half_close_crosses_tls_termination_at_the_edge_and_at_the_agent() {
    for transport in TRANSPORTS {
        let t = terminated(transport);
        let config = client_config(&[&t.ca], None);
        for (name, upstream) in [
            ("app.acme.example", &t.at_edge),
            ("db.acme.example", &t.at_agent),
        ] {
            let what = format!("{transport}/{name}");
            let request = client::payload(3, 300_000);
            // The client sends, then half-closes (close_notify and FIN) and reads:
            // the upstream replies only once that EOF has reached it in plaintext.
            let (got, end) =
                tls_half_close_exchange(t.tls_port, config.clone(), name, &request, WAIT)
                    .unwrap_or_else(|e| panic!("{what}: {e}"));
            let seen = upstream
                .received
                .recv_timeout(WAIT)
                .unwrap_or_else(|_| panic!("{what}: the upstream never saw EOF"));
            assert_eq!(
                seen,
                request.len(),
                "{what}: bytes before EOF at the upstream"
            );
            assert_eq!(
                got.len(),
                request.len(),
                "{what}: reply after the half-close"
            );
            assert!(got == request, "{what}: reply content");
            // The terminating side ends its TLS cleanly once the upstream closed.
            assert_eq!(end, TlsEnd::CloseNotify, "{what}");
        }
    }
}
