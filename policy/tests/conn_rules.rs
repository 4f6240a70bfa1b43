//! `on_tcp_connect` rules with `expressions` and the actions beyond restrict, deny and
//! forward (`close-connection`, `log`, `set-vars`), as ngrok's documentation writes
//! them: what each decides for connections with different facts, that the
//! client-address shapes are folded into the lookup table (nothing runs per
//! connection), and what is refused, with where.

use std::net::{IpAddr, SocketAddr};

use sluice_policy::{Cause, ConnInfo, NoConnInfo, Outcome, TrafficPolicy};

/// What the edge would know of a connection.
#[derive(Default)]
struct Known {
    server: Option<SocketAddr>,
    sni: Option<&'static str>,
    countries: Vec<(&'static str, &'static str)>,
}

impl ConnInfo for Known {
    fn server(&self) -> Option<SocketAddr> {
        self.server
    }
    fn sni(&self) -> Option<String> {
        self.sni.map(str::to_owned)
    }
    fn country_code(&self, ip: IpAddr) -> Option<String> {
        self.countries
            .iter()
            .find(|(addr, _)| addr.parse::<IpAddr>().unwrap() == ip)
            .map(|(_, code)| (*code).to_owned())
    }
}

fn sa(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

fn target(policy: &TrafficPolicy, client: &str, info: &dyn ConnInfo) -> Option<String> {
    let compiled = policy.compile().unwrap();
    let d = compiled.evaluate_conn(sa(client), info);
    match d.outcome() {
        Outcome::Forward(t) => Some(t.host().to_owned()),
        Outcome::Deny => None,
    }
}

#[test]
fn client_address_expressions_live_in_the_table() {
    let p = TrafficPolicy::from_yaml(
        "
on_tcp_connect:
  - name: office
    expressions:
      - \"inCidrRanges(conn.client_ip, ['203.0.113.0/24', '2001:db8::/32'])\"
      - \"conn.client_ip != '203.0.113.7'\"
    actions:
      - type: forward-internal
        config: { url: tcp://db.internal:5432 }
  - expressions: [\"conn.client_ip in ['198.51.100.1', '198.51.100.2']\"]
    actions:
      - type: forward-internal
        config: { url: tcp://replica.internal:5432 }
  - actions:
      - type: close-connection
",
    )
    .unwrap();
    let c = p.compile().unwrap();
    assert!(!c.reads_more_than_the_address());
    for (client, expected) in [
        ("203.0.113.9:4000", Some("db.internal")),
        ("[2001:db8::1]:4000", Some("db.internal")),
        ("[::ffff:203.0.113.9]:4000", Some("db.internal")),
        ("203.0.113.7:4000", None),
        ("198.51.100.2:4000", Some("replica.internal")),
        ("198.51.100.3:4000", None),
    ] {
        assert_eq!(
            target(&p, client, &NoConnInfo).as_deref(),
            expected,
            "{client}"
        );
    }
    let d = c.evaluate(sa("192.0.2.1:1"));
    assert_eq!(d.why().cause(), Cause::CloseAction);
    assert_eq!(d.why().rule(), 2);
}

#[test]
fn other_facts_are_read_per_connection() {
    let p = TrafficPolicy::from_yaml(
        "
on_tcp_connect:
  - name: geo-block
    expressions: [\"conn.geo.country_code in ['KP', 'IR']\"]
    actions: [{ type: deny }]
  - expressions: [\"conn.tls.sni == 'billing.example.com'\"]
    actions:
      - type: forward-internal
        config: { url: tls://billing.internal:443 }
  - expressions: [\"conn.client_port >= 1024 && conn.server_port == 5432\"]
    actions:
      - type: forward-internal
        config: { url: tcp://db.internal:5432 }
  - actions: [{ type: close-connection }]
",
    )
    .unwrap();
    let c = p.compile().unwrap();
    assert!(c.reads_more_than_the_address());
    let db = Known {
        server: Some(sa("192.0.2.10:5432")),
        countries: vec![("198.51.100.9", "IR"), ("203.0.113.1", "NL")],
        ..Known::default()
    };
    assert_eq!(
        target(&p, "203.0.113.1:40000", &db).as_deref(),
        Some("db.internal")
    );
    assert_eq!(
        target(&p, "203.0.113.1:80", &db),
        None,
        "a privileged source port"
    );
    assert_eq!(
        target(&p, "198.51.100.9:40000", &db),
        None,
        "a blocked country"
    );
    let d = c.evaluate_conn(sa("198.51.100.9:40000"), &db);
    assert_eq!(
        (d.why().rule_name(), d.why().cause()),
        (Some("geo-block"), Cause::DenyAction)
    );
    let tls = Known {
        sni: Some("billing.example.com"),
        ..Known::default()
    };
    assert_eq!(
        target(&p, "203.0.113.1:40000", &tls).as_deref(),
        Some("billing.internal")
    );
    // Nothing known: the expressions that read it do not hold.
    assert_eq!(target(&p, "203.0.113.1:40000", &NoConnInfo), None);
}

#[test]
fn set_vars_are_read_by_later_expressions_and_logs_render_their_metadata() {
    let p = TrafficPolicy::from_yaml(
        "
on_tcp_connect:
  - actions:
      - type: set-vars
        config:
          vars:
            - office: \"${inCidrRange(conn.client_ip, '10.0.0.0/8')}\"
            - tier: 2
  - expressions: [\"vars.office == 'true' && vars.tier == 2\"]
    actions:
      - type: log
        config:
          metadata:
            message: office connection
            client: \"${conn.client_ip}\"
      - type: forward-internal
        config: { url: tcp://office.internal:22 }
  - actions:
      - type: log
        config: { metadata: { message: \"refused ${conn.client_ip}\" } }
      - type: close-connection
",
    )
    .unwrap();
    let c = p.compile().unwrap();
    let office = sa("10.1.2.3:5000");
    let d = c.evaluate(office);
    assert_eq!(d.target().unwrap().host(), "office.internal");
    let logs = c.log_events(&d, office, &NoConnInfo);
    assert_eq!(logs.len(), 1);
    assert_eq!(logs[0].rule, 1);
    assert_eq!(
        logs[0].metadata,
        vec![
            ("client", "10.1.2.3".to_owned()),
            ("message", "office connection".to_owned())
        ]
    );
    let outsider = sa("192.0.2.1:5000");
    let d = c.evaluate(outsider);
    assert!(!d.is_allowed());
    let logs = c.log_events(&d, outsider, &NoConnInfo);
    assert_eq!(
        logs[0].metadata,
        vec![("message", "refused 192.0.2.1".to_owned())]
    );
}

#[test]
fn conditional_rules_only_are_a_policy_and_a_connection_none_takes_is_closed() {
    let p = TrafficPolicy::from_yaml(
        "
on_tcp_connect:
  - expressions: [\"conn.tls.sni == 'a.example.com'\"]
    actions: [{ type: forward-internal, config: { url: tls://a.internal:443 } }]
",
    )
    .unwrap();
    assert!(p.decides_at_connect());
    assert!(p.unreachable().is_empty());
    let c = p.compile().unwrap();
    let d = c.evaluate(sa("192.0.2.1:1"));
    assert_eq!(d.why().cause(), Cause::NoDecision);
    assert!(!d.is_allowed());
}

#[test]
fn the_new_shapes_serialize_back_to_what_parses() {
    let text = "
on_tcp_connect:
  - name: tagged
    expressions: [\"conn.client_port > 1024\"]
    actions:
      - type: set-vars
        config: { vars: { team: ops, on_call: true } }
      - type: log
        config: { metadata: { who: \"${conn.client_ip}\" } }
      - type: close-connection
";
    let p = TrafficPolicy::from_yaml(text).unwrap();
    let json = serde_json::to_string(&p).unwrap();
    assert!(
        json.contains("\"expressions\":[\"conn.client_port > 1024\"]"),
        "{json}"
    );
    assert!(json.contains("{\"type\":\"close-connection\"}"), "{json}");
    let back = TrafficPolicy::from_yaml(&json).unwrap();
    assert_eq!(back, p);
}

fn refused(yaml: &str, needles: &[&str]) {
    let msg = TrafficPolicy::from_yaml(yaml).unwrap_err().to_string();
    for n in needles {
        assert!(msg.contains(n), "expected `{n}` in:\n{msg}");
    }
}

#[test]
fn bad_rules_are_refused_with_where_and_why() {
    refused(
        "on_tcp_connect:\n  - expressions: [\"inCidrRange(conn.client_ip, '10.0.0.0/33')\"]\n    actions: [{ type: deny }]\n",
        &["line 2", "10.0.0.0/33"],
    );
    refused(
        "on_tcp_connect:\n  - expressions: [\"conn.client_ip ==\"]\n    actions: [{ type: deny }]\n",
        &["line 2", "invalid expression"],
    );
    refused(
        "on_tcp_connect:\n  - actions:\n      - type: set-vars\n        config: { vars: [] }\n      - type: deny\n",
        &["line 4", "sets nothing"],
    );
    refused(
        "on_tcp_connect:\n  - actions:\n      - type: set-vars\n        config: { vars: { 9lives: 1 } }\n      - type: deny\n",
        &["9lives", "not a variable name"],
    );
    refused(
        "on_tcp_connect:\n  - actions:\n      - type: close-connection\n        config: { url: tcp://a.internal:1 }\n",
        &["line 4"],
    );
    refused(
        "on_tcp_connect:\n  - actions:\n      - type: log\n        config: { metadata: { m: x }, level: warn }\n      - type: deny\n",
        &["level"],
    );
    refused(
        "on_tcp_connect:\n  - actions: [{ type: terminate-tcp }]\n",
        &["line 2", "terminate-tcp", "close-connection"],
    );
    let many_logs = format!(
        "on_tcp_connect:\n  - actions:\n{}      - type: deny\n",
        "      - type: log\n".repeat(65)
    );
    refused(&many_logs, &["65 `log` actions", "at most 64"]);
}
