//! End-to-end: `upstream.protocol: http2` (ngrok's agent file key). An HTTP/2-only
//! upstream (h2c, prior knowledge) behind an `http://` agent endpoint: the edge speaks
//! HTTP/2 to it through the tunnel whatever the client speaks, every request on one
//! multiplexed connection per member and worker, bodies both ways intact, and a pool
//! member speaking HTTP/1.1 beside it keeps getting HTTP/1.1. Over `upstream.tls`,
//! HTTP/2 is negotiated by ALPN with an upstream that accepts nothing else, and an
//! HTTP/1.1 upstream is relayed by the agent inside the edge's multiplexed stream.

use std::net::SocketAddr;

use sluice_tests::{
    fixture::Fixture,
    http::{curl, HttpEcho},
    http2::Http2Echo,
    pki::{self, Ca},
    process::Sluice,
    wait_until,
};

const HOST: &str = "api.example.com";

fn edge(fx: &Fixture) -> (Sluice, SocketAddr, SocketAddr) {
    let yaml = fx.tls_edge_head().replace(
        "tls_endpoints:\n  listen: 127.0.0.1:0\n",
        "http_endpoints:\n  listen: 127.0.0.1:0\n",
    ) + &format!(
        "  - url: http://{HOST}\n    traffic_policy:\n      on_http_request:\n        - actions:\n            - type: forward-internal\n              config: {{ url: \"http://api.internal\" }}\n"
    );
    let mut edge = Sluice::edge(&fx.write("edge.yml", &yaml), "uring");
    let (agent_addr, _) = edge.edge_addrs(0);
    let http = edge.http_endpoints_addr();
    (edge, agent_addr, http)
}

fn agent(
    fx: &Fixture,
    name: &str,
    edge: SocketAddr,
    upstream: SocketAddr,
    protocol: &str,
) -> Sluice {
    agent_with(fx, name, edge, upstream, &format!("protocol: {protocol}"))
}

/// An agent whose `upstream:` has `url` and `fields` (YAML flow style).
fn agent_with(
    fx: &Fixture,
    name: &str,
    edge: SocketAddr,
    upstream: SocketAddr,
    fields: &str,
) -> Sluice {
    let mut yaml = fx.agent_yaml(&fx.token, edge, "tcp", &[]);
    yaml.push_str(&format!(
        "  - url: http://api.internal\n    pooling_enabled: true\n    upstream: {{ url: \"http://{upstream}\", {fields}, health_check: {{ enabled: false }} }}\n"
    ));
    let mut agent = Sluice::agent(&fx.write(name, &yaml), "uring");
    agent.wait_for_n("the endpoint bound", 1, |v| {
        v["message"] == "endpoint bound"
    });
    agent
}

fn urls(http: SocketAddr, paths: &[&str]) -> Vec<String> {
    paths
        .iter()
        .map(|p| format!("http://{HOST}:{}{p}", http.port()))
        .collect()
}

#[test]
fn an_http2_upstream_gets_http2_on_one_multiplexed_connection() {
    let fx = Fixture::new();
    let (_edge, agent_addr, http) = edge(&fx);
    let upstream = Http2Echo::start("h2");
    let _agent = agent(&fx, "agent.yml", agent_addr, upstream.addr, "http2");

    // Six requests on one client connection (HTTP/1.1 from the client).
    let paths = ["/a", "/b?x=1", "/c", "/d", "/e", "/f"];
    let transfers = curl(http, HOST, &urls(http, &paths), None, &[], fx.dir());
    for (t, path) in transfers.iter().zip(paths) {
        assert_eq!(t.status, 200, "{path}: {}", t.text());
        assert_eq!(t.header("x-upstream"), Some("h2"), "{path}");
        let text = t.text();
        assert!(
            text.starts_with(&format!(
                "HTTP/2.0 GET http://{HOST}:{}{path}\n",
                http.port()
            )),
            "{path}: the upstream saw\n{text}"
        );
        assert!(text.contains("x-forwarded-for: 127.0.0.1"), "{text}");
        assert!(!text.contains("connection:"), "{text}");
    }
    assert_eq!(upstream.requests(), paths.len());
    assert_eq!(
        upstream.connections(),
        1,
        "every request of one worker goes on its one HTTP/2 connection"
    );

    // A 1 MiB body up and back.
    let body: String = (0..1024 * 1024)
        .map(|i| (b'a' + (i % 26) as u8) as char)
        .collect();
    std::fs::write(fx.path("upload"), &body).unwrap();
    let sent = curl(
        http,
        HOST,
        &urls(http, &["/upload"]),
        None,
        &[
            "--data-binary",
            &format!("@{}", fx.path("upload").display()),
        ],
        fx.dir(),
    );
    assert_eq!(sent[0].status, 200, "{}", sent[0].text());
    let text = sent[0].text();
    assert!(
        text.starts_with("HTTP/2.0 POST "),
        "{}",
        &text[..200.min(text.len())]
    );
    assert!(text.ends_with(&body), "the body did not come back whole");

    // A websocket upgrade has no HTTP/2 upstream to switch (no extended CONNECT through
    // the tunnel): the edge answers 502 with its code, and the upstream sees nothing.
    let before = upstream.requests();
    let upgrade = curl(
        http,
        HOST,
        &urls(http, &["/ws"]),
        None,
        &[
            "-H",
            "Connection: Upgrade",
            "-H",
            "Upgrade: websocket",
            "-H",
            "Sec-WebSocket-Version: 13",
            "-H",
            "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==",
        ],
        fx.dir(),
    );
    assert_eq!(upgrade[0].status, 502, "{}", upgrade[0].text());
    assert!(
        upgrade[0].header("sluice-error-code").is_some(),
        "{:?}",
        upgrade[0]
    );
    assert_eq!(upstream.requests(), before);
}

#[test]
fn a_pool_mixing_http2_and_http1_members_speaks_each_ones_version() {
    let fx = Fixture::new();
    let (_edge, agent_addr, http) = edge(&fx);
    let h2 = Http2Echo::start("h2");
    let h1 = HttpEcho::start("h1");
    let _a = agent(&fx, "a.yml", agent_addr, h2.addr, "http2");
    let _b = agent(&fx, "b.yml", agent_addr, h1.addr, "http1");
    let mut seen_h1 = 0;
    wait_until(
        "both members answered",
        std::time::Duration::from_secs(20),
        || {
            let t = &curl(http, HOST, &urls(http, &["/which"]), None, &[], fx.dir())[0];
            assert_eq!(t.status, 200, "{}", t.text());
            match t.header("x-upstream") {
                Some("h1") => {
                    assert!(t.text().starts_with("GET /which HTTP/1.1"), "{}", t.text());
                    seen_h1 += 1;
                }
                Some("h2") => assert!(t.text().starts_with("HTTP/2.0 GET"), "{}", t.text()),
                other => panic!("{other:?}"),
            }
            seen_h1 > 0 && h2.requests() > 0
        },
    );
}

#[test]
fn over_upstream_tls_http2_is_negotiated_by_alpn() {
    let fx = Fixture::new();
    let (_edge, agent_addr, http) = edge(&fx);
    let ca = Ca::new("upstream CA");
    std::fs::write(fx.path("upstream-ca.pem"), ca.pem()).unwrap();
    // It closes any connection that did not negotiate `h2`.
    let upstream = Http2Echo::start_tls("h2-tls", pki::server_config(&ca.server(&["api.lan"])));
    let _agent = agent_with(
        &fx,
        "agent.yml",
        agent_addr,
        upstream.addr,
        "protocol: http2, tls: { ca: upstream-ca.pem, server_name: api.lan }",
    );
    let transfers = curl(
        http,
        HOST,
        &urls(http, &["/over-tls", "/again"]),
        None,
        &[],
        fx.dir(),
    );
    for t in &transfers {
        assert_eq!(t.status, 200, "{}", t.text());
        assert_eq!(t.header("x-upstream"), Some("h2-tls"));
        assert!(t.text().starts_with("HTTP/2.0 GET"), "{}", t.text());
    }
    assert_eq!(
        upstream.connections(),
        1,
        "both requests on one TLS connection"
    );
}

#[test]
fn over_upstream_tls_an_http1_upstream_is_multiplexed_and_kept_alive() {
    let fx = Fixture::new();
    let (_edge, agent_addr, http) = edge(&fx);
    let ca = Ca::new("upstream CA");
    std::fs::write(fx.path("upstream-ca.pem"), ca.pem()).unwrap();
    let upstream =
        Http2Echo::start_tls_http1("h1-tls", pki::server_config(&ca.server(&["api.lan"])));
    let mut agent = agent_with(
        &fx,
        "agent.yml",
        agent_addr,
        upstream.addr,
        "tls: { ca: upstream-ca.pem, server_name: api.lan }",
    );
    let transfers = curl(
        http,
        HOST,
        &urls(http, &["/one", "/two", "/three"]),
        None,
        &[],
        fx.dir(),
    );
    for t in &transfers {
        assert_eq!(t.status, 200, "{}", t.text());
        assert_eq!(t.header("x-upstream"), Some("h1-tls"));
        assert!(t.text().starts_with("HTTP/1.1 GET"), "{}", t.text());
    }
    assert_eq!(upstream.connections(), 1, "one kept-alive TLS connection");
    // The agent relayed it as a sub-stream of the edge's link, not a stream of its own.
    let bound = agent.wait_for("endpoint bound");
    assert_eq!(bound["upstream_protocol"], "http1_multiplexed", "{bound}");
}

#[test]
fn a_grpc_style_call_keeps_te_trailers_and_gets_its_trailers_back() {
    let fx = Fixture::new();
    let ca = Ca::new("sluice test CA");
    let leaf = ca.server(&[HOST]);
    fx.write("api.crt", &leaf.cert_pem);
    fx.write("api.key", &leaf.key_pem);
    let yaml = fx.tls_edge_head()
        + &format!(
            "  - url: https://{HOST}\n    terminate_tls: {{ cert: api.crt, key: api.key }}\n    traffic_policy:\n      on_http_request:\n        - actions:\n            - type: forward-internal\n              config: {{ url: \"http://api.internal\" }}\n"
        );
    let mut edge = Sluice::edge(&fx.write("edge.yml", &yaml), "uring");
    let (agent_addr, _) = edge.edge_addrs(0);
    let tls = edge.tls_endpoints_addr();
    let upstream = Http2Echo::start("grpc");
    let _agent = agent(&fx, "agent.yml", agent_addr, upstream.addr, "http2");

    // HTTP/2 from the client to the edge, and from the edge to the upstream.
    let got = sluice_tests::http2::exchange(
        tls,
        HOST,
        pki::client_config(&[&ca], None),
        "/trailers",
        &[("te", "trailers"), ("content-type", "application/grpc")],
        b"\0\0\0\0\x05hello",
    );
    assert_eq!(got.status, 200, "{got:?}");
    let seen = String::from_utf8_lossy(&got.body);
    assert!(seen.starts_with("HTTP/2.0 POST "), "{seen}");
    assert!(
        seen.contains("\nte: trailers\n"),
        "the upstream did not get `te: trailers`:\n{seen}"
    );
    assert!(seen.contains("content-type: application/grpc\n"), "{seen}");
    assert!(seen.ends_with("\0\0\0\0\x05hello"), "{seen}");
    let trailers = got.trailers.expect("the response's trailers");
    assert_eq!(trailers["grpc-status"], "0");
    assert_eq!(trailers["grpc-message"], "done");
}
