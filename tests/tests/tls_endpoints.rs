//! End-to-end: `tls://` cloud endpoints share one port and are routed by the SNI of
//! the ClientHello, which the edge reads without terminating TLS: the client's TLS
//! session reaches the upstream untouched (the client trusts only the upstream's
//! certificate, never the edge's).

use sluice_tests::{
    fixture::{self, Fixture},
    process::Sluice,
    tls_peers::{client_config, tls_echo, TlsEcho},
    DRIVERS,
};

struct TlsTunnel {
    _fx: Fixture,
    edge: Sluice,
    _agent: Sluice,
    tls_port: std::net::SocketAddr,
    exact: TlsEcho,
    wild: TlsEcho,
}

fn start(driver: &str, transport: &str) -> TlsTunnel {
    let fx = Fixture::new();
    let exact = TlsEcho::start(&["db.acme.example"]);
    let wild = TlsEcho::start(&["*.acme.example"]);
    let edge_yaml = format!(
        "{}  - url: tls://db.acme.example\n    traffic_policy: {}\n  - url: tls://*.acme.example\n    traffic_policy: {}\n",
        fx.tls_edge_head(),
        fixture::forward_all("tls://db.internal:443"),
        fixture::forward_all("tls://wild.internal:443"),
    );
    let mut edge = Sluice::edge(&fx.write("edge.yml", &edge_yaml), driver);
    let (agent_addr, _) = edge.edge_addrs(0);
    let tls_port = edge.tls_endpoints_addr();
    let agent_yaml = fx.agent_yaml(
        &fx.token,
        agent_addr,
        transport,
        &[
            ("tls://db.internal:443", exact.addr),
            ("tls://wild.internal:443", wild.addr),
        ],
    );
    let mut agent = Sluice::agent(&fx.write("agent.yml", &agent_yaml), driver);
    agent.wait_for_n("two endpoints bound", 2, |v| {
        v["message"] == "endpoint bound"
    });
    TlsTunnel {
        _fx: fx,
        edge,
        _agent: agent,
        tls_port,
        exact,
        wild,
    }
}

#[test]
fn sni_routes_to_the_exact_name_before_the_wildcard_and_tls_passes_through() {
    for driver in DRIVERS {
        for transport in ["tcp", "tls"] {
            let t = start(driver, transport);
            let trust_both = client_config(&[&t.exact.cert, &t.wild.cert]);
            tls_echo(
                t.tls_port,
                trust_both.clone(),
                "db.acme.example",
                4096,
                b"exact",
            )
            .unwrap_or_else(|e| panic!("{driver}/{transport}: {e}"));
            assert_eq!(
                (t.exact.accepted(), t.wild.accepted()),
                (1, 0),
                "{driver}/{transport}"
            );
            tls_echo(
                t.tls_port,
                trust_both,
                "api.acme.example",
                4096,
                b"wildcard",
            )
            .unwrap_or_else(|e| panic!("{driver}/{transport}: {e}"));
            assert_eq!(
                (t.exact.accepted(), t.wild.accepted()),
                (1, 1),
                "{driver}/{transport}"
            );
            // End-to-end TLS: a client that trusts only the upstream's certificate
            // completes its handshake, so nothing in between terminated it.
            let only_upstream = client_config(&[&t.exact.cert]);
            tls_echo(
                t.tls_port,
                only_upstream,
                "db.acme.example",
                4096,
                b"passthrough",
            )
            .unwrap();
        }
    }
}

#[test]
fn a_client_hello_split_into_tiny_segments_still_routes() {
    let t = start(DRIVERS[0], "tls");
    let config = client_config(&[&t.exact.cert]);
    tls_echo(
        t.tls_port,
        config,
        "db.acme.example",
        7,
        &vec![42u8; 100_000],
    )
    .unwrap();
    assert_eq!(t.exact.accepted(), 1);
}

#[test]
fn unknown_and_missing_sni_are_closed_and_counted_without_reaching_an_upstream() {
    let mut t = start(DRIVERS[0], "tls");
    let config = client_config(&[&t.exact.cert, &t.wild.cert]);
    assert!(tls_echo(t.tls_port, config.clone(), "db.other.example", 4096, b"x").is_err());
    t.edge.wait_for("tls endpoint: unknown SNI; closed");
    // An IP address as server name makes the client send no SNI at all.
    assert!(tls_echo(t.tls_port, config.clone(), "127.0.0.1", 4096, b"x").is_err());
    t.edge.wait_for_n("no-SNI close", 1, |v| {
        v["message"] == "tls endpoint: connection closed"
            && v["reason"] == "ClientHello without SNI"
    });
    assert_eq!((t.exact.accepted(), t.wild.accepted()), (0, 0));
    tls_echo(t.tls_port, config, "db.acme.example", 4096, b"still fine").unwrap();
}
