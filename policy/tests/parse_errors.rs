//! Every kind of bad input is rejected with a message naming the line, the
//! column and the offending value, standalone and embedded in a larger document.

use serde::Deserialize;
use sluice_policy::{Action, TrafficPolicy};

fn err(yaml: &str) -> String {
    TrafficPolicy::from_yaml(yaml).unwrap_err().to_string()
}

fn assert_err(yaml: &str, line: u32, column: u32, needles: &[&str]) {
    let msg = err(yaml);
    let place = format!("line {line} column {column}");
    assert!(msg.contains(&place), "expected `{place}` in:\n{msg}");
    for n in needles {
        assert!(msg.contains(n), "expected `{n}` in:\n{msg}");
    }
}

const GOOD: &str = "\
on_tcp_connect:
  - name: office
    actions:
      - type: restrict-ips
        config:
          allow: [203.0.113.0/24, \"2001:db8::/32\"]
          deny: [203.0.113.7/32]
      - type: forward-internal
        config:
          url: tcp://db.internal:5432
  - actions:
      - type: deny
";

#[test]
fn good_policy_parses() {
    let p = TrafficPolicy::from_yaml(GOOD).unwrap();
    assert_eq!(p.on_tcp_connect.len(), 2);
    // The trailing deny rule is a harmless belt-and-braces rule: a warning, not an error.
    assert_eq!(p.unreachable().len(), 1);
}

#[test]
fn bad_cidr_names_place_and_value() {
    let y = GOOD.replace("203.0.113.0/24", "203.0.113.0/33");
    assert_err(&y, 6, 19, &["203.0.113.0/33", "exceeds 32"]);
    let y = GOOD.replace("203.0.113.7/32", "not-an-ip");
    assert_err(&y, 7, 18, &["not-an-ip", "CIDR"]);
    let y = GOOD.replace("\"2001:db8::/32\"", "\"2001:zz8::/32\"");
    assert_err(&y, 6, 35, &["2001:zz8::/32"]);
}

#[test]
fn unknown_key_names_place_and_key() {
    let y = GOOD.replace("          deny:", "          blocklist:");
    assert_err(&y, 7, 11, &["blocklist"]);
    let y = GOOD.replace("  - name: office", "  - nam: office");
    assert_err(&y, 2, 5, &["nam"]);
    let y = format!("{GOOD}on_http_requests: []\n");
    assert_err(&y, 13, 1, &["on_http_requests"]);
    let y = GOOD.replace("url: tcp", "port: 5\n          url: tcp");
    assert_err(&y, 10, 11, &["port"]);
}

#[test]
fn unknown_action_type_names_place_and_type() {
    let y = GOOD.replace("type: deny", "type: rate-limit");
    assert_err(&y, 12, 15, &["rate-limit", "unknown action type"]);
}

#[test]
fn forward_url_must_be_internal() {
    let y = GOOD.replace("tcp://db.internal:5432", "tcp://db.example.com:5432");
    assert_err(&y, 10, 16, &["tcp://db.example.com:5432", ".internal"]);
    let y = GOOD.replace("tcp://db.internal:5432", "tcp://db.internal");
    assert_err(&y, 10, 16, &["tcp://db.internal", "needs a port"]);
}

#[test]
fn no_reachable_decision() {
    let y = "\
on_tcp_connect:
  - actions:
      - type: restrict-ips
        config:
          allow: [10.0.0.0/8]
";
    assert_err(y, 2, 3, &["no reachable decision", "on_tcp_connect"]);
    assert_err("on_tcp_connect: []\n", 1, 17, &["no reachable decision"]);
}

#[test]
fn unreachable_rules_and_actions_are_warnings() {
    let y = format!("{GOOD}  - name: late\n    actions:\n      - type: deny\n");
    let w = TrafficPolicy::from_yaml(&y).unwrap().unreachable();
    assert_eq!(w.len(), 2, "{w:?}");
    assert!(w[1].contains("rule 3 (`late`) can never run"), "{w:?}");
    let y = "on_tcp_connect:\n  - actions:\n      - type: deny\n      - type: forward-internal\n        config:\n          url: tls://api.internal\n";
    let w = TrafficPolicy::from_yaml(y).unwrap().unreachable();
    assert!(
        w[0].contains("`forward-internal` to tls://api.internal) can never run"),
        "{w:?}"
    );
}

#[test]
fn structural_errors() {
    let y = GOOD.replace(
        "allow: [203.0.113.0/24, \"2001:db8::/32\"]\n          deny: [203.0.113.7/32]",
        "enforce: false",
    );
    assert_err(&y, 6, 11, &["restricts nothing"]);
    let y = GOOD.replace(
        "      - type: deny\n",
        "      - type: deny\n        config:\n          url: tcp://x.internal:1\n",
    );
    assert_err(&y, 14, 11, &["url"]);
    let y = GOOD.replace("  - actions:\n      - type: deny\n", "  - actions: []\n");
    assert!(err(&y).contains("at least one action"), "{}", err(&y));
    let y = GOOD.replace(
        "          deny: [203.0.113.7/32]\n",
        "          enforce: maybe\n",
    );
    assert!(err(&y).contains("line 7"), "{}", err(&y));
}

#[test]
fn config_before_type_still_validates_with_location() {
    let y = "\
on_tcp_connect:
  - actions:
      - config:
          url: tcp://db.internal:5432
        type: forward-internal
  - actions:
      - config:
          allow: [10.0.0.0/8]
        type: restrict-ips
";
    let p = TrafficPolicy::from_yaml(y).unwrap();
    assert!(matches!(
        p.on_tcp_connect[0].actions[0],
        Action::ForwardInternal(_)
    ));
    assert!(matches!(
        p.on_tcp_connect[1].actions[0],
        Action::RestrictIps(_)
    ));
    let y = "\
on_tcp_connect:
  - actions:
      - config:
          allow: [10.0.0.0/88]
        type: restrict-ips
      - type: deny
";
    assert_err(y, 4, 19, &["10.0.0.0/88"]);
    let y = "\
on_tcp_connect:
  - actions:
      - config:
          allow: [10.0.0.0/8]
        type: forward-internal
";
    assert!(
        err(y).contains("`allow`") && err(y).contains("forward-internal"),
        "{}",
        err(y)
    );
}

#[test]
fn embedded_in_a_larger_document() {
    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Endpoint {
        url: String,
        traffic_policy: TrafficPolicy,
    }
    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct EdgeConfig {
        listen: String,
        endpoints: Vec<Endpoint>,
    }
    let doc = "\
listen: 0.0.0.0:443
endpoints:
  - url: tcp://0.0.0.0:21001
    traffic_policy:
      on_tcp_connect:
        - actions:
            - type: restrict-ips
              config:
                allow: [10.0.0.0/8, 10.0.0.300/8]
            - type: forward-internal
              config:
                url: tcp://db.internal:5432
";
    let msg = serde_saphyr::from_str::<EdgeConfig>(doc)
        .unwrap_err()
        .to_string();
    assert!(
        msg.contains("line 9 column 37") && msg.contains("10.0.0.300/8"),
        "{msg}"
    );

    let bad_url = doc
        .replace(", 10.0.0.300/8", "")
        .replace("tcp://db.internal:5432", "tcp://db.corp:5432");
    let msg = serde_saphyr::from_str::<EdgeConfig>(&bad_url)
        .unwrap_err()
        .to_string();
    assert!(
        msg.contains("line 12 column 22") && msg.contains("tcp://db.corp:5432"),
        "{msg}"
    );

    let ok = doc.replace(", 10.0.0.300/8", "");
    let cfg: EdgeConfig = serde_saphyr::from_str(&ok).unwrap();
    let p = &cfg.endpoints[0].traffic_policy;
    assert!(matches!(
        p.on_tcp_connect[0].actions[1],
        Action::ForwardInternal(_)
    ));
    p.compile().unwrap();
}
