//! End-to-end: TLS terminated somewhere other than the upstream. At the agent
//! (`agent_tls_termination`, with mTLS: the edge only routes by SNI and never holds
//! the key), at the edge (`terminate_tls`, plaintext into the tunnel), and towards an
//! upstream that speaks TLS itself (`upstream.tls`). Certificates come from test CAs
//! generated here; `openssl s_client` is one of the clients.

use std::net::SocketAddr;

use sluice_tests::{
    client::echo_ok,
    fixture::{self, Fixture},
    openssl,
    pki::{self, client_config, server_config, Ca},
    process::{config_check, Sluice},
    tls_peers::{tls_echo, TlsEcho},
    upstream::{Capture, Relay},
    DRIVERS,
};

const TRANSPORTS: [&str; 2] = ["tcp", "tls"];

fn edge_head(fx: &Fixture) -> String {
    fx.tls_edge_head()
}

fn agent_head(fx: &Fixture, edge: SocketAddr, transport: &str) -> String {
    format!(
        "version: 3\nagent:\n  authtoken: \"{}\"\n  connect_url: \"{edge}\"\n  connect_cas: edge.crt\n  \
         server_name: localhost\n  transport: {transport}\n  data_channels: 2\n  workers: 2\n  \
         heartbeat_interval: 1s\n  heartbeat_tolerance: 3s\nendpoints:\n",
        fx.token
    )
}

/// Starts the edge; its agent address, TLS port and TCP endpoint addresses.
fn start_edge(
    fx: &Fixture,
    yaml: &str,
    tcp_endpoints: usize,
) -> (Sluice, SocketAddr, SocketAddr, Vec<SocketAddr>) {
    let mut edge = Sluice::edge(&fx.write("edge.yml", yaml), DRIVERS[0]);
    let (agent_addr, tcp) = edge.edge_addrs(tcp_endpoints);
    let tls_port = edge.tls_endpoints_addr();
    (edge, agent_addr, tls_port, tcp)
}

fn start_agent(fx: &Fixture, yaml: &str, endpoints: usize) -> Sluice {
    let mut agent = Sluice::agent(&fx.write("agent.yml", yaml), DRIVERS[0]);
    agent.wait_for_n("endpoints bound", endpoints, |v| {
        v["message"] == "endpoint bound"
    });
    agent
}

/// A `tls://db.acme.example` endpoint passed through by the edge to an agent that
/// terminates TLS with `db.crt` and requires client certificates from `clients-ca.pem`.
struct AgentMtls {
    fx: Fixture,
    _edge: Sluice,
    /// Between the agent and the edge's agent port: what the edge sent the agent.
    relay: Relay,
    agent: Sluice,
    tls_port: SocketAddr,
    server_ca: Ca,
    clients_ca: Ca,
    upstream: Capture,
}

fn agent_mtls(transport: &str) -> AgentMtls {
    let fx = Fixture::new();
    let server_ca = Ca::new("db server CA");
    let clients_ca = Ca::new("clients CA");
    let db = server_ca.server(&["db.acme.example"]);
    fx.write("db.crt", &db.cert_pem);
    fx.write("db.key", &db.key_pem);
    fx.write("server-ca.pem", &server_ca.pem());
    fx.write("clients-ca.pem", &clients_ca.pem());
    let upstream = Capture::start();
    let edge_yaml = format!(
        "{}  - url: tls://db.acme.example\n    traffic_policy: {}\n",
        edge_head(&fx),
        fixture::forward_all("tls://db.internal:5432")
    );
    let (edge, agent_addr, tls_port, _) = start_edge(&fx, &edge_yaml, 0);
    let relay = Relay::start(agent_addr);
    let agent_yaml = format!(
        "{}  - url: tls://db.internal:5432\n    agent_tls_termination:\n      \
         server_certificate: db.crt\n      server_private_key: db.key\n      \
         mutual_tls_certificate_authorities: [clients-ca.pem]\n    upstream: {{ url: \"{}\" }}\n",
        agent_head(&fx, relay.addr, transport),
        upstream.addr
    );
    let agent = start_agent(&fx, &agent_yaml, 1);
    AgentMtls {
        fx,
        _edge: edge,
        relay,
        agent,
        tls_port,
        server_ca,
        clients_ca,
        upstream,
    }
}

#[test]
fn agent_terminates_mtls_and_refuses_clients_without_a_trusted_certificate() {
    for transport in TRANSPORTS {
        let mut t = agent_mtls(transport);
        let app = t.clients_ca.client("saas-app");
        let trusted = client_config(&[&t.server_ca], Some(&app));
        // Several streams in a row: on `tls` channels each one reuses a channel.
        let mut expected = Vec::new();
        for i in 0..4 {
            let payload = format!("SELECT {i}; -- {transport}").into_bytes();
            tls_echo(
                t.tls_port,
                trusted.clone(),
                "db.acme.example",
                4096,
                &payload,
            )
            .unwrap_or_else(|e| panic!("{transport}: trusted client {i}: {e}"));
            expected.extend_from_slice(&payload);
        }
        let big: Vec<u8> = (0..1_000_000u32).map(|i| (i % 251) as u8).collect();
        tls_echo(t.tls_port, trusted.clone(), "db.acme.example", 4096, &big)
            .unwrap_or_else(|e| panic!("{transport}: 1 MB: {e}"));
        expected.extend_from_slice(&big);
        // The upstream got plaintext: exactly the bytes the clients sent.
        assert!(t.upstream.received() == expected, "{transport}");

        let no_cert = client_config(&[&t.server_ca], None);
        let err = tls_echo(t.tls_port, no_cert, "db.acme.example", 4096, b"let me in").unwrap_err();
        let intruder = Ca::new("other CA").client("saas-app");
        let foreign = client_config(&[&t.server_ca], Some(&intruder));
        let err2 = tls_echo(t.tls_port, foreign, "db.acme.example", 4096, b"me too").unwrap_err();
        let refusals = t.agent.wait_for_n("two refusals", 2, |v| {
            v["message"] == "client TLS handshake failed; stream closed"
        });
        assert_eq!(refusals["refused"], 2, "{transport}: {err} / {err2}");
        assert!(
            t.upstream.received() == expected,
            "{transport}: refused bytes leaked"
        );
        // Refusals leave the endpoint healthy.
        tls_echo(t.tls_port, trusted, "db.acme.example", 4096, b"after")
            .unwrap_or_else(|e| panic!("{transport}: after refusals: {e}"));

        // The edge routes by SNI only and passes the client's TLS through: what it
        // sent the agent holds the client's ClientHello (the SNI in clear) but none
        // of the plaintext the upstream received. Only `tcp` data channels are
        // plain between edge and agent, so only there can the relay see this.
        if transport == "tcp" {
            let relayed = t.relay.from_target();
            let holds = |needle: &[u8]| relayed.windows(needle.len()).any(|w| w == needle);
            assert!(
                holds(b"db.acme.example"),
                "{transport}: the client's ClientHello did not cross the edge as is"
            );
            for i in 0..4 {
                let payload = format!("SELECT {i}; -- {transport}").into_bytes();
                assert!(
                    !holds(&payload),
                    "{transport}: the edge sent plaintext to the agent: {:?}",
                    String::from_utf8_lossy(&payload)
                );
            }
            assert!(
                !holds(&big[1000..1064]),
                "{transport}: the edge sent plaintext"
            );
        }
    }
}

#[test]
fn openssl_s_client_with_and_without_a_client_certificate_at_the_agent() {
    let mut t = agent_mtls("tls");
    let app = t.clients_ca.client("saas-app");
    let cert = t.fx.write("app.crt", &app.cert_pem);
    let key = t.fx.write("app.key", &app.key_pem);
    let ca = t.fx.path("server-ca.pem");
    openssl::echo_line(
        t.tls_port,
        "db.acme.example",
        &ca,
        Some((&cert, &key)),
        "hello from s_client",
    )
    .unwrap();
    assert!(openssl::echo_line(t.tls_port, "db.acme.example", &ca, None, "no cert").is_err());
    t.agent
        .wait_for("client TLS handshake failed; stream closed");
    assert_eq!(t.upstream.received(), b"hello from s_client\n");
}

#[test]
fn edge_terminates_tls_and_the_upstream_receives_plaintext() {
    for transport in TRANSPORTS {
        let fx = Fixture::new();
        let ca = Ca::new("public CA");
        let app = ca.server(&["app.acme.example"]);
        fx.write("app.crt", &app.cert_pem);
        fx.write("app.key", &app.key_pem);
        let ca_file = fx.write("ca.pem", &ca.pem());
        let upstream = Capture::start();
        // A tls:// endpoint and a tcp:// endpoint, both terminated at the edge.
        let edge_yaml = format!(
            "{}  - url: tls://app.acme.example\n    terminate_tls: {{ cert: app.crt, key: app.key }}\n    \
             traffic_policy: {}\n  - url: tcp://127.0.0.1:0\n    terminate_tls: {{ cert: app.crt, key: app.key }}\n    \
             traffic_policy: {}\n",
            edge_head(&fx),
            fixture::forward_all("tcp://app.internal:80"),
            fixture::forward_all("tcp://app.internal:80"),
        );
        let (mut edge, agent_addr, tls_port, tcp) = start_edge(&fx, &edge_yaml, 1);
        let agent_yaml = format!(
            "{}  - url: tcp://app.internal:80\n    upstream: {{ url: \"{}\" }}\n",
            agent_head(&fx, agent_addr, transport),
            upstream.addr
        );
        let _agent = start_agent(&fx, &agent_yaml, 1);
        let trusted = client_config(&[&ca], None);
        let mut expected = Vec::new();
        for (port, payload) in [
            (tls_port, &b"GET / via sni"[..]),
            (tcp[0], b"GET / via tcp"),
        ] {
            tls_echo(port, trusted.clone(), "app.acme.example", 4096, payload)
                .unwrap_or_else(|e| panic!("{transport}: {e}"));
            expected.extend_from_slice(payload);
        }
        let big: Vec<u8> = (0..2_000_000u32).map(|i| (i % 253) as u8).collect();
        tls_echo(tls_port, trusted, "app.acme.example", 4096, &big)
            .unwrap_or_else(|e| panic!("{transport}: 2 MB: {e}"));
        expected.extend_from_slice(&big);
        openssl::echo_line(
            tls_port,
            "app.acme.example",
            &ca_file,
            None,
            "s_client line",
        )
        .unwrap_or_else(|e| panic!("{transport}: {e}"));
        expected.extend_from_slice(b"s_client line\n");
        assert!(
            upstream.received() == expected,
            "{transport}: upstream saw other bytes"
        );

        // A client that does not trust the edge's certificate fails; counted and logged.
        let other = client_config(&[&Ca::new("unrelated")], None);
        assert!(tls_echo(tls_port, other, "app.acme.example", 4096, b"x").is_err());
        edge.wait_for("tls handshake with the client failed; closed");
        assert!(upstream.received() == expected);

        // A reload of the unchanged file leaves both endpoints alone: nothing removed
        // and re-added, the tcp:// one keeps the port it was given.
        edge.hangup();
        let reloaded = edge.wait_for_n("reload", 1, |v| {
            v["message"] == "config reloaded" && v["trigger"] == "SIGHUP"
        });
        assert_eq!(reloaded["removed"], "[]", "{transport}: {reloaded}");
        assert_eq!(reloaded["added"], "[]", "{transport}: {reloaded}");
        tls_echo(
            tcp[0],
            client_config(&[&ca], None),
            "app.acme.example",
            4096,
            b"same port",
        )
        .unwrap_or_else(|e| panic!("{transport}: after reload: {e}"));
    }
}

/// A wildcard `tls://` endpoint whose policy ends TLS at the edge for some names only:
/// `a.` with an inline certificate and TLS 1.3 only, `m.` with files and client
/// certificates from a CA, and `b.` not at all (its TLS goes through to an upstream
/// that holds its own certificate).
#[test]
fn a_policys_terminate_tls_action_ends_tls_at_the_edge_for_the_connections_it_names() {
    let fx = Fixture::new();
    let ca = Ca::new("public CA");
    let app = ca.server(&["a.acme.example", "m.acme.example"]);
    let cert_file = fx.write("app.crt", &app.cert_pem);
    let key_file = fx.write("app.key", &app.key_pem);
    let clients_ca = Ca::new("clients CA");
    let upstream_ca = Ca::new("upstream CA");
    let b_leaf = upstream_ca.server(&["b.acme.example"]);
    let b_echo = TlsEcho::start_with(server_config(&b_leaf), b_leaf.cert.clone());
    let upstream = Capture::start();
    let forward =
        |url: &str| serde_json::json!({ "type": "forward-internal", "config": { "url": url } });
    let policy = serde_json::json!({ "on_tcp_connect": [
        { "name": "a: ours, TLS 1.3 only",
          "expressions": ["conn.tls.sni == 'a.acme.example'"],
          "actions": [
            { "type": "terminate-tls", "config": {
                "server_certificate": app.cert_pem, "server_private_key": app.key_pem,
                "min_version": "1.3" } },
            forward("tcp://app.internal:80") ] },
        { "name": "m: client certificates",
          "expressions": ["conn.tls.sni == 'm.acme.example'"],
          "actions": [
            { "type": "terminate-tls", "config": {
                "server_certificate": cert_file, "server_private_key": key_file,
                "mutual_tls_certificate_authorities": [clients_ca.pem()] } },
            forward("tcp://app.internal:80") ] },
        { "actions": [forward("tls://b.internal:443")] },
    ] });
    let edge_yaml = format!(
        "{}  - url: tls://*.acme.example\n    traffic_policy: {policy}\n",
        edge_head(&fx)
    );
    let (mut edge, agent_addr, tls_port, _) = start_edge(&fx, &edge_yaml, 0);
    let agent_yaml = format!(
        "{}  - url: tcp://app.internal:80\n    upstream: {{ url: \"{}\" }}\n  \
         - url: tls://b.internal:443\n    upstream: {{ url: \"{}\" }}\n",
        agent_head(&fx, agent_addr, "tcp"),
        upstream.addr,
        b_echo.addr
    );
    let _agent = start_agent(&fx, &agent_yaml, 2);

    // a.: ended at the edge with the inline certificate; plaintext reaches the upstream.
    let public = client_config(&[&ca], None);
    tls_echo(tls_port, public.clone(), "a.acme.example", 4096, b"to a")
        .unwrap_or_else(|e| panic!("a: {e}"));
    assert_eq!(upstream.received(), b"to a");
    // A client offering only TLS 1.2 is refused there: counted, logged, nothing sent on.
    let old = pki::client_config_offering(&[ca.der()], None, &[&rustls::version::TLS12]);
    assert!(tls_echo(tls_port, old, "a.acme.example", 4096, b"old").is_err());
    edge.wait_for("tls handshake with the client failed; closed");

    // m.: ended with the files named, and only for clients the clients' CA vouches for.
    assert!(tls_echo(tls_port, public.clone(), "m.acme.example", 4096, b"no cert").is_err());
    let strange = client_config(&[&ca], Some(&Ca::new("other CA").client("app")));
    assert!(tls_echo(tls_port, strange, "m.acme.example", 4096, b"foreign").is_err());
    let vouched = client_config(&[&ca], Some(&clients_ca.client("app")));
    tls_echo(tls_port, vouched, "m.acme.example", 4096, b"to m")
        .unwrap_or_else(|e| panic!("m: {e}"));
    assert_eq!(
        upstream.received(),
        b"to ato m",
        "refused clients' bytes leaked"
    );

    // b.: not reached by any terminate-tls: the client's TLS goes through untouched to
    // the upstream that holds b.'s certificate (the edge's would not be trusted).
    let private = client_config(&[&upstream_ca], None);
    tls_echo(
        tls_port,
        private,
        "b.acme.example",
        4096,
        b"to b, end to end",
    )
    .unwrap_or_else(|e| panic!("b: {e}"));
    assert_eq!(b_echo.accepted(), 1);
    assert!(tls_echo(tls_port, public.clone(), "b.acme.example", 4096, b"x").is_err());
    assert_eq!(upstream.received(), b"to ato m");

    // m.'s files replaced with a certificate from another CA: a reload of the unchanged
    // edge.yml reads them again (the policy's text did not change, its material did).
    let renewed_ca = Ca::new("renewed CA");
    let renewed = renewed_ca.server(&["m.acme.example"]);
    fx.write("app.crt", &renewed.cert_pem);
    fx.write("app.key", &renewed.key_pem);
    edge.hangup();
    let reloaded = edge.wait_for_n("reload", 1, |v| v["message"] == "config reloaded");
    assert!(
        reloaded["changed"].to_string().contains("acme.example"),
        "{reloaded}"
    );
    let vouched = client_config(&[&renewed_ca], Some(&clients_ca.client("app")));
    tls_echo(tls_port, vouched, "m.acme.example", 4096, b"; renewed")
        .unwrap_or_else(|e| panic!("m after the renewal: {e}"));
    tls_echo(tls_port, public, "a.acme.example", 4096, b"; a unchanged")
        .unwrap_or_else(|e| panic!("a after the renewal: {e}"));
}

#[test]
fn terminate_tls_actions_are_checked_where_they_cannot_work() {
    let fx = Fixture::new();
    let ca = Ca::new("ca");
    let leaf = ca.server(&["app.acme.example"]);
    fx.write("app.crt", &leaf.cert_pem);
    fx.write("app.key", &leaf.key_pem);
    let action = |cert: &str, key: &str| {
        format!(
            "{{ on_tcp_connect: [ {{ actions: [ {{ type: terminate-tls, config: {{ \
             server_certificate: \"{cert}\", server_private_key: \"{key}\" }} }}, \
             {{ type: forward-internal, config: {{ url: \"tcp://app.internal:80\" }} }} ] }} ] }}"
        )
    };
    let cert = fx.path("app.crt").display().to_string();
    let key = fx.path("app.key").display().to_string();
    let cases = [
        (
            format!("  - url: https://app.acme.example\n    terminate_tls: {{ cert: app.crt, key: app.key }}\n    traffic_policy: {}\n", action(&cert, &key)),
            vec!["endpoints[0].traffic_policy", "https:// endpoint", "use the action on tls:// endpoints"],
        ),
        (
            format!("  - url: tls://app.acme.example\n    traffic_policy: {}\n", action("app.crt", &key)),
            vec!["server_certificate", "absolute path"],
        ),
        (
            format!("  - url: tls://app.acme.example\n    traffic_policy: {}\n", action(&cert, &cert)),
            vec!["rule 1, action 1 (`terminate-tls`)", "server_private_key"],
        ),
    ];
    for (i, (endpoint, wanted)) in cases.iter().enumerate() {
        let yaml = format!("{}{endpoint}", edge_head(&fx));
        let (passed, out) = config_check(&fx.write(&format!("edge{i}.yml"), &yaml));
        assert!(!passed, "case {i} passed:\n{yaml}");
        for w in wanted {
            assert!(out.contains(w), "case {i}: `{w}` missing from: {out}");
        }
    }
    let good = format!(
        "{}  - url: tls://app.acme.example\n    traffic_policy: {}\n",
        edge_head(&fx),
        action(&cert, &key)
    );
    let (passed, out) = config_check(&fx.write("edge-good.yml", &good));
    assert!(passed, "{out}");
}

#[test]
fn agent_reencrypts_towards_a_tls_upstream() {
    for transport in TRANSPORTS {
        let fx = Fixture::new();
        let upstream_ca = Ca::new("upstream CA");
        let echo_leaf = upstream_ca.server(&["echo.lan"]);
        let echo = TlsEcho::start_with(server_config(&echo_leaf), echo_leaf.cert.clone());
        fx.write("upstream-ca.pem", &upstream_ca.pem());
        let front_ca = Ca::new("front CA");
        let front = front_ca.server(&["db.acme.example"]);
        fx.write("front.crt", &front.cert_pem);
        fx.write("front.key", &front.key_pem);
        let edge_yaml = format!(
            "{}  - url: tcp://127.0.0.1:0\n    traffic_policy: {}\n  - url: tcp://127.0.0.2:0\n    \
             traffic_policy: {}\n  - url: tls://db.acme.example\n    traffic_policy: {}\n  \
             - url: tcp://127.0.0.3:0\n    traffic_policy: {}\n",
            edge_head(&fx),
            fixture::forward_all("tcp://plain.internal:1"),
            fixture::forward_all("tcp://wrongname.internal:1"),
            fixture::forward_all("tls://db.internal:443"),
            fixture::forward_all("tcp://by-scheme.internal:1"),
        );
        let (_edge, agent_addr, tls_port, tcp) = start_edge(&fx, &edge_yaml, 3);
        let agent_yaml = format!(
            "{head}  - url: tcp://plain.internal:1\n    upstream: {{ url: \"{up}\", tls: {{ ca: upstream-ca.pem, server_name: echo.lan }} }}\n\
             \x20 - url: tcp://wrongname.internal:1\n    upstream: {{ url: \"{up}\", tls: {{ ca: upstream-ca.pem, server_name: other.lan }} }}\n\
             \x20 - url: tls://db.internal:443\n    agent_tls_termination: {{ server_certificate: front.crt, server_private_key: front.key }}\n    \
             upstream: {{ url: \"{up}\", tls: {{ ca: upstream-ca.pem, server_name: echo.lan }} }}\n\
             \x20 - url: tcp://by-scheme.internal:1\n    upstream: {{ url: \"tls://{up}\", tls: {{ ca: upstream-ca.pem, server_name: echo.lan }} }}\n",
            head = agent_head(&fx, agent_addr, transport),
            up = echo.addr,
        );
        let mut agent = start_agent(&fx, &agent_yaml, 4);
        // Plain TCP from the client, TLS from the agent to the upstream.
        echo_ok(None, tcp[0], &vec![7u8; 300_000]).unwrap_or_else(|e| panic!("{transport}: {e}"));
        assert_eq!(echo.accepted(), 1, "{transport}");
        // The upstream's certificate does not name `other.lan`: refused by the agent.
        assert!(echo_ok(None, tcp[1], b"x").is_err(), "{transport}");
        agent.wait_for("upstream TLS handshake failed");
        // TLS from the client ends at the agent, and new TLS goes to the upstream.
        let config = client_config(&[&front_ca], None);
        tls_echo(
            tls_port,
            config,
            "db.acme.example",
            4096,
            b"twice encrypted",
        )
        .unwrap_or_else(|e| panic!("{transport}: {e}"));
        assert_eq!(echo.accepted(), 3, "{transport}");
        // `tls://` in the upstream URL: TLS from the agent (the name to verify refined
        // by `upstream.tls`).
        echo_ok(None, tcp[2], b"tls by scheme").unwrap_or_else(|e| panic!("{transport}: {e}"));
        assert_eq!(echo.accepted(), 4, "{transport}");
    }
}

#[test]
fn config_check_names_the_file_and_the_problem_of_bad_tls_material() {
    let fx = Fixture::new();
    let ca = Ca::new("ca");
    let good = ca.server(&["db.acme.example"]);
    let other = ca.server(&["db.acme.example"]);
    fx.write("db.crt", &good.cert_pem);
    fx.write("db.key", &good.key_pem);
    fx.write("other.key", &other.key_pem);
    fx.write("ca.pem", &ca.pem());
    fx.write(
        "garbage.pem",
        "-----BEGIN CERTIFICATE-----\nnot base64 at all!\n",
    );
    let agent = |termination: &str, upstream_tls: &str| {
        format!(
            "version: 3\nagent:\n  authtoken: \"slt_x\"\n  connect_url: \"127.0.0.1:4443\"\nendpoints:\n  \
             - url: tls://db.internal:443\n    agent_tls_termination: {termination}\n    \
             upstream: {{ url: \"127.0.0.1:5432\"{upstream_tls} }}\n"
        )
    };
    let ok = fx.write(
        "ok.yml",
        &agent(
            "{ server_certificate: db.crt, server_private_key: db.key, mutual_tls_certificate_authorities: [ca.pem] }",
            ", tls: { ca: ca.pem, server_name: db.lan }",
        ),
    );
    let (passed, out) = config_check(&ok);
    assert!(passed, "{out}");
    let cases = [
        (
            agent("{ server_certificate: db.crt, server_private_key: other.key }", ""),
            vec!["endpoints[0].agent_tls_termination", "other.key", "does not match the certificate"],
        ),
        (
            agent("{ server_certificate: db.crt, server_private_key: db.crt }", ""),
            vec!["db.crt", "no PRIVATE KEY"],
        ),
        (
            agent(
                "{ server_certificate: db.crt, server_private_key: db.key, mutual_tls_certificate_authorities: [missing.pem] }",
                "",
            ),
            vec!["mutual_tls_certificate_authorities", "missing.pem", "cannot read"],
        ),
        (
            agent("{ server_certificate: garbage.pem, server_private_key: db.key }", ""),
            vec!["garbage.pem", "not valid PEM"],
        ),
        (
            agent(
                "{ server_certificate: db.crt, server_private_key: db.key }",
                ", tls: { ca: db.key }",
            ),
            vec!["endpoints[0].upstream.tls", "ca", "db.key", "no CERTIFICATE"],
        ),
    ];
    for (i, (yaml, wanted)) in cases.iter().enumerate() {
        let file = fx.write(&format!("bad{i}.yml"), yaml);
        let (passed, out) = config_check(&file);
        assert!(!passed, "case {i} passed:\n{yaml}");
        for w in wanted {
            assert!(out.contains(w), "case {i}: `{w}` missing from: {out}");
        }
    }
    // The edge's terminate_tls is checked the same way.
    let edge = format!(
        "{}  - url: tls://db.acme.example\n    terminate_tls: {{ cert: db.crt, key: nope.key }}\n    traffic_policy: {}\n",
        edge_head(&fx),
        fixture::forward_all("tcp://db.internal:1")
    );
    let (passed, out) = config_check(&fx.write("edge-bad.yml", &edge));
    assert!(!passed);
    for w in ["endpoints[0].terminate_tls", "nope.key", "cannot read"] {
        assert!(out.contains(w), "`{w}` missing from: {out}");
    }
}

#[test]
fn an_endpoint_made_through_the_admin_api_can_terminate_tls_and_keeps_it_across_a_restart() {
    use serde_json::json;
    const KEY: &str = "test-admin-key-terminate-tls";
    let fx = Fixture::new();
    let ca = Ca::new("public CA");
    let app = ca.server(&["app.acme.example"]);
    let cert = fx.write("app.crt", &app.cert_pem);
    let key = fx.write("app.key", &app.key_pem);
    let yaml = format!(
        "{}endpoints: []\nadmin:\n  listen: 127.0.0.1:0\n  api_keys: [\"{}\"]\nstate_dir: state\n",
        edge_head(&fx).strip_suffix("endpoints:\n").unwrap(),
        fixture::token_hash(KEY)
    );
    let cfg = fx.write("edge.yml", &yaml);
    let start = |fx: &Fixture| {
        let mut edge = Sluice::edge(&cfg, DRIVERS[0]);
        let (agent_addr, _) = edge.edge_addrs(0);
        let admin = sluice_tests::admin::Admin::new(
            edge.wait_for_n("admin listener", 1, |v| {
                v["message"] == "listening" && v["kind"] == "admin"
            })["addr"]
                .as_str()
                .unwrap()
                .parse()
                .unwrap(),
            KEY,
        );
        let upstream = Capture::start();
        let agent_yaml = format!(
            "{}  - url: tcp://app.internal:80\n    upstream: {{ url: \"{}\" }}\n",
            agent_head(fx, agent_addr, "tls"),
            upstream.addr
        );
        let agent = start_agent(fx, &agent_yaml, 1);
        (edge, admin, upstream, agent)
    };
    let (mut edge, admin, upstream, agent) = start(&fx);
    let bad = admin.call(
        "POST",
        "/v1/endpoints",
        Some(json!({ "url": "tcp://127.0.0.1:0",
                     "traffic_policy": fixture::forward_all("tcp://app.internal:80"),
                     "terminate_tls": { "cert": "app.crt", "key": key.to_str().unwrap() } })),
    );
    assert_eq!(bad.status, 400, "{}", bad.text);
    assert_eq!(bad.body["error"]["code"], "invalid_tls", "{}", bad.text);
    let made = admin.call(
        "POST",
        "/v1/endpoints",
        Some(json!({ "url": "tcp://127.0.0.1:0",
                     "traffic_policy": fixture::forward_all("tcp://app.internal:80"),
                     "terminate_tls": { "cert": cert.to_str().unwrap(), "key": key.to_str().unwrap() } })),
    );
    assert_eq!(made.status, 201, "{}", made.text);
    let port: SocketAddr = made.body["listen_addr"].as_str().unwrap().parse().unwrap();
    let trusted = client_config(&[&ca], None);
    tls_echo(
        port,
        trusted.clone(),
        "app.acme.example",
        4096,
        b"through the api",
    )
    .unwrap_or_else(|e| panic!("{e}"));
    assert!(
        upstream.received() == b"through the api",
        "the upstream gets plaintext"
    );

    // The same through a policy's `terminate-tls`: the key as a file on the edge host;
    // as PEM text in the policy it is refused (the API would store it and show it back).
    let by_policy = |key: &str| {
        json!({ "url": "tcp://127.0.0.1:0", "traffic_policy": { "on_tcp_connect": [{ "actions": [
            { "type": "terminate-tls", "config": {
                "server_certificate": cert.to_str().unwrap(), "server_private_key": key } },
            { "type": "forward-internal", "config": { "url": "tcp://app.internal:80" } } ] }] } })
    };
    let inline = admin.call("POST", "/v1/endpoints", Some(by_policy(&app.key_pem)));
    assert_eq!(inline.status, 400, "{}", inline.text);
    assert_eq!(
        inline.body["error"]["code"], "inline_private_key",
        "{}",
        inline.text
    );
    assert!(!inline.text.contains("PRIVATE KEY-----"), "{}", inline.text);
    let made = admin.call(
        "POST",
        "/v1/endpoints",
        Some(by_policy(key.to_str().unwrap())),
    );
    assert_eq!(made.status, 201, "{}", made.text);
    let by_action: SocketAddr = made.body["listen_addr"].as_str().unwrap().parse().unwrap();
    tls_echo(
        by_action,
        trusted.clone(),
        "app.acme.example",
        4096,
        b" by action",
    )
    .unwrap_or_else(|e| panic!("{e}"));
    assert!(
        upstream.received() == b"through the api by action",
        "the upstream gets plaintext"
    );

    // Restarted, the stored endpoint terminates TLS again on the same port.
    drop(agent);
    edge.terminate();
    assert_eq!(edge.wait_exit(), Some(0));
    let (_edge, admin, upstream, _agent) = start(&fx);
    let items = admin.get("/v1/endpoints")["items"].clone();
    let listed = items
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["listen_addr"] == port.to_string())
        .unwrap()
        .clone();
    assert_eq!(
        listed["terminate_tls"]["cert"],
        cert.to_str().unwrap(),
        "{listed}"
    );
    sluice_tests::wait_until(
        "the restored endpoint terminates TLS",
        std::time::Duration::from_secs(10),
        || {
            tls_echo(
                port,
                trusted.clone(),
                "app.acme.example",
                4096,
                b"after restart",
            )
            .is_ok()
        },
    );
    assert!(upstream.received().ends_with(b"after restart"));
    tls_echo(
        by_action,
        trusted,
        "app.acme.example",
        4096,
        b" and by action",
    )
    .unwrap_or_else(|e| panic!("the policy's terminate-tls after a restart: {e}"));
    assert!(upstream
        .received()
        .ends_with(b"after restart and by action"));
}
