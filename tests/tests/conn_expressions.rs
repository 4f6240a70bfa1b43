//! End-to-end: `on_tcp_connect` rules with `expressions` and the `log` and
//! `close-connection` actions, enforced by a real edge: a client's country from a
//! MaxMind-format database the edge loads (`geoip.database`), its address (folded into
//! the lookup table) together with the edge's port (CEL per connection), and the SNI
//! of a `tls://` wildcard endpoint's ClientHello. Every refusal is paired with a client
//! that gets through, and every route with the upstream that saw it.

use std::net::{IpAddr, Ipv4Addr};

use sluice_tests::{
    client,
    fixture::Fixture,
    mmdb,
    process::Sluice,
    tls_peers::{client_config, tls_echo, TlsEcho},
    upstream::Echo,
    DRIVERS,
};

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

#[test]
fn country_address_and_port_expressions_route_log_and_close() {
    let fx = Fixture::new();
    let main = Echo::start();
    let second = Echo::start();
    std::fs::write(
        fx.path("countries.mmdb"),
        mmdb::country_database(&[
            (Ipv4Addr::new(127, 0, 0, 0), 8, "US"),
            (Ipv4Addr::new(127, 0, 0, 2), 32, "NL"),
        ]),
    )
    .unwrap();
    let policy = "{ on_tcp_connect: [ \
        { name: blocked-country, expressions: [\"conn.geo.country_code in ['NL', 'BE']\"], actions: [ \
            { type: log, config: { metadata: { reason: \"country ${conn.geo.country_code}\", client: \"${conn.client_ip}\" } } }, \
            { type: close-connection } ] }, \
        { name: second, expressions: [\"conn.client_ip == '127.0.0.3'\", \"conn.server_port > 1023\"], actions: [ \
            { type: forward-internal, config: { url: \"tcp://second.internal:7\" } } ] }, \
        { actions: [ { type: forward-internal, config: { url: \"tcp://echo.internal:7\" } } ] } ] }"
        .to_owned();
    let mut yaml = fx.edge_yaml("127.0.0.1:0", &[("127.0.0.1:0", policy)]);
    yaml.push_str("geoip:\n  database: countries.mmdb\n");
    let mut edge = Sluice::edge(&fx.write("edge.yml", &yaml), DRIVERS[0]);
    edge.wait_for("country database loaded");
    let (agent_addr, public) = edge.edge_addrs(1);
    let agent_yaml = fx.agent_yaml(
        &fx.token,
        agent_addr,
        "tcp",
        &[
            ("tcp://echo.internal:7", main.addr),
            ("tcp://second.internal:7", second.addr),
        ],
    );
    let mut agent = Sluice::agent(&fx.write("agent.yml", &agent_yaml), DRIVERS[0]);
    agent.wait_for_n("both endpoints bound", 2, |v| {
        v["message"] == "endpoint bound"
    });
    let public = public[0];

    client::echo_ok(Some(ip("127.0.0.1")), public, b"from the US").unwrap();
    assert_eq!((main.accepted(), second.accepted()), (1, 0));
    client::echo_ok(Some(ip("127.0.0.3")), public, b"to the second").unwrap();
    assert_eq!((main.accepted(), second.accepted()), (1, 1));

    assert!(
        client::is_refused(Some(ip("127.0.0.2")), public),
        "a client from a blocked country got through"
    );
    assert_eq!(
        (main.accepted(), second.accepted()),
        (1, 1),
        "it reached an upstream"
    );
    let logged = edge.wait_for("traffic policy log");
    assert_eq!(logged["policy"], "endpoint", "{logged}");
    assert_eq!(
        (&logged["phase"], &logged["rule"], &logged["rule_name"]),
        (
            &serde_json::json!("on_tcp_connect"),
            &serde_json::json!(1),
            &serde_json::json!("blocked-country")
        ),
        "{logged}"
    );
    let metadata: serde_json::Value =
        serde_json::from_str(logged["metadata"].as_str().unwrap()).unwrap();
    assert_eq!(
        metadata,
        serde_json::json!({ "reason": "country NL", "client": "127.0.0.2" })
    );
    let denied = edge.wait_for("denied by traffic policy");
    assert_eq!(denied["cause"], "close-connection");
    // The clients that pass are not logged by the `log` action.
    assert_eq!(edge.count(|v| v["message"] == "traffic policy log"), 1);
}

#[test]
fn a_wildcard_tls_endpoint_routes_by_the_sni_its_expressions_read() {
    let fx = Fixture::new();
    let billing = TlsEcho::start(&["billing.acme.example"]);
    let rest = TlsEcho::start(&["*.acme.example"]);
    let policy = "{ on_tcp_connect: [ \
        { expressions: [\"conn.tls.sni == 'billing.acme.example'\"], actions: [ \
            { type: forward-internal, config: { url: \"tls://billing.internal:443\" } } ] }, \
        { expressions: [\"conn.tls.sni.startsWith('blocked.')\"], actions: [ { type: deny } ] }, \
        { actions: [ { type: forward-internal, config: { url: \"tls://rest.internal:443\" } } ] } ] }";
    let yaml = format!(
        "{}  - url: tls://*.acme.example\n    traffic_policy: {policy}\n",
        fx.tls_edge_head()
    );
    let mut edge = Sluice::edge(&fx.write("edge.yml", &yaml), DRIVERS[0]);
    let (agent_addr, _) = edge.edge_addrs(0);
    let tls_port = edge.tls_endpoints_addr();
    let agent_yaml = fx.agent_yaml(
        &fx.token,
        agent_addr,
        "tls",
        &[
            ("tls://billing.internal:443", billing.addr),
            ("tls://rest.internal:443", rest.addr),
        ],
    );
    let mut agent = Sluice::agent(&fx.write("agent.yml", &agent_yaml), DRIVERS[0]);
    agent.wait_for_n("both endpoints bound", 2, |v| {
        v["message"] == "endpoint bound"
    });

    let config = client_config(&[&billing.cert, &rest.cert]);
    tls_echo(
        tls_port,
        config.clone(),
        "billing.acme.example",
        4096,
        b"invoice",
    )
    .unwrap();
    assert_eq!((billing.accepted(), rest.accepted()), (1, 0));
    tls_echo(tls_port, config.clone(), "www.acme.example", 4096, b"page").unwrap();
    assert_eq!((billing.accepted(), rest.accepted()), (1, 1));
    assert!(tls_echo(tls_port, config, "blocked.acme.example", 4096, b"x").is_err());
    assert_eq!((billing.accepted(), rest.accepted()), (1, 1));
    assert_eq!(
        edge.wait_for("denied by traffic policy")["cause"],
        "deny-action"
    );
}
