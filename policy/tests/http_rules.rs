//! The HTTP phases: an ngrok-style policy parses, bad ones are refused with where and
//! why, and each action does what it says on a request (and response).

use sluice_policy::{
    Conn, Effects, OnError, Refusal, RequestVerdict, ResponseVerdict, Resume, TrafficPolicy,
};

const POLICY: &str = r#"
on_tcp_connect:
  - actions:
      - type: restrict-ips
        config:
          deny: [192.0.2.0/24]
on_http_request:
  - name: office only for admin
    expressions:
      - "req.url.path.startsWith('/admin')"
    actions:
      - type: restrict-ips
        config:
          allow: [203.0.113.0/24]
  - name: health
    expressions: ["req.url.path == '/healthz'"]
    actions:
      - type: custom-response
        config:
          status_code: 200
          body: "ok from ${conn.client_ip}"
          headers:
            content-type: text/plain
  - name: no deletes
    expressions: ["req.method == 'DELETE'"]
    actions:
      - type: deny
        config:
          status_code: 405
  - name: limit
    actions:
      - type: rate-limit
        config:
          name: per client
          algorithm: sliding_window
          capacity: 3
          rate: 60s
          bucket_key: ["conn.client_ip"]
  - name: shape
    actions:
      - type: add-headers
        config:
          headers:
            x-client: "${conn.client_ip}"
            x-edge: sluice
      - type: remove-headers
        config:
          headers: [cookie]
      - type: url-rewrite
        config:
          from: "^/v1/(.*)$"
          to: "/api/v1/$1"
  - name: canary
    expressions: ["'x-canary' in req.headers"]
    actions:
      - type: forward-internal
        config:
          url: http://canary.internal
          on_error: continue
  - actions:
      - type: forward-internal
        config:
          url: http://api.internal
on_http_response:
  - expressions: ["res.status_code >= 500"]
    actions:
      - type: custom-response
        config:
          status_code: 503
          content: "try again later"
  - actions:
      - type: add-headers
        config:
          headers:
            x-served-path: "${req.url.path}"
      - type: remove-headers
        config:
          headers: [server]
"#;

fn conn(client: &str) -> Conn<'static> {
    Conn {
        client: client.parse().unwrap(),
        server: "127.0.0.1:8080".parse().unwrap(),
        scheme: "http",
        country: None,
    }
}

fn request(method: &str, path: &str, headers: &[(&str, &str)]) -> http::request::Parts {
    let mut b = http::Request::builder()
        .method(method)
        .uri(path)
        .header("host", "api.example.com");
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    b.body(()).unwrap().into_parts().0
}

#[test]
fn an_ngrok_style_policy_parses_and_serializes_back() {
    let p = TrafficPolicy::from_yaml(POLICY).unwrap();
    assert_eq!(p.on_http_request.len(), 7);
    assert_eq!(p.on_http_response.len(), 2);
    assert!(!p.decides_at_connect());
    let json = serde_json::to_value(&p).unwrap();
    assert_eq!(
        json["on_http_request"][0]["expressions"][0],
        "req.url.path.startsWith('/admin')"
    );
    assert_eq!(
        json["on_http_request"][4]["actions"][0]["config"]["headers"]["x-edge"],
        "sluice"
    );
    assert_eq!(
        json["on_http_request"][3]["actions"][0]["config"]["rate"],
        "60s"
    );
    // What the admin API shows parses back to the same policy.
    let again = TrafficPolicy::from_yaml(&serde_json::to_string(&json).unwrap()).unwrap();
    assert_eq!(again, p);
}

#[test]
fn each_action_does_what_it_says() {
    let compiled = TrafficPolicy::from_yaml(POLICY).unwrap().compile().unwrap();
    let http = compiled.http();
    let mut logged = Effects::default();
    let run = |req: &mut http::request::Parts, client: &str| {
        format!(
            "{:?}",
            http.on_request(
                req,
                conn(client),
                Resume::default(),
                &mut Effects::default()
            )
        )
    };

    // restrict-ips under an expression: /admin only from the office.
    let mut req = request("GET", "/admin/users", &[]);
    let out = run(&mut req, "198.51.100.1:1000");
    assert!(
        out.contains("status: 403") && out.contains("Restricted"),
        "{out}"
    );
    let mut req = request("GET", "/admin/users", &[]);
    assert!(run(&mut req, "203.0.113.9:1000").contains("api.internal"));

    // custom-response with a template.
    let mut req = request("GET", "/healthz", &[]);
    match http.on_request(
        &mut req,
        conn("198.51.100.1:1000"),
        Resume::default(),
        &mut logged,
    ) {
        RequestVerdict::Answer(a) => {
            assert_eq!(a.status, 200);
            assert_eq!(a.body, "ok from 198.51.100.1");
            assert_eq!(a.refusal, None);
            assert_eq!(a.headers[0].1, "text/plain");
        }
        other => panic!("{other:?}"),
    }

    // deny with its status.
    let mut req = request("DELETE", "/orders/1", &[]);
    match http.on_request(
        &mut req,
        conn("198.51.100.1:1000"),
        Resume::default(),
        &mut logged,
    ) {
        RequestVerdict::Answer(a) => {
            assert_eq!(a.status, 405);
            assert_eq!(a.refusal, Some(Refusal::Denied));
            assert!(a.rule.contains("no deletes"), "{}", a.rule);
        }
        other => panic!("{other:?}"),
    }

    // Headers added and removed, the URL rewritten, then forwarded.
    let mut req = request(
        "GET",
        "/v1/orders?x=1",
        &[("cookie", "secret"), ("x-edge", "client's")],
    );
    match http.on_request(
        &mut req,
        conn("198.51.100.2:1000"),
        Resume::default(),
        &mut logged,
    ) {
        RequestVerdict::Forward { url, on_error, .. } => {
            assert_eq!(url.host(), "api.internal");
            assert_eq!(on_error, OnError::Halt);
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(req.uri, "/api/v1/orders?x=1");
    assert_eq!(req.headers["x-client"], "198.51.100.2");
    assert_eq!(req.headers["x-edge"], "sluice");
    assert!(!req.headers.contains_key("cookie"));

    // rate-limit: 3 per minute per client, then 429 with Retry-After; others go on.
    for _ in 0..2 {
        let mut req = request("GET", "/", &[]);
        assert!(run(&mut req, "198.51.100.2:1000").contains("Forward"));
    }
    let mut req = request("GET", "/", &[]);
    match http.on_request(
        &mut req,
        conn("198.51.100.2:1000"),
        Resume::default(),
        &mut logged,
    ) {
        RequestVerdict::Answer(a) => {
            assert_eq!(a.status, 429);
            assert_eq!(a.refusal, Some(Refusal::RateLimited));
            let retry: u64 = a.headers[0].1.to_str().unwrap().parse().unwrap();
            assert!((1..=60).contains(&retry), "{retry}");
        }
        other => panic!("{other:?}"),
    }
    let mut req = request("GET", "/", &[]);
    assert!(run(&mut req, "198.51.100.3:1000").contains("Forward"));

    // on_error: continue — the canary first, then from where it stopped, the default.
    let mut req = request("GET", "/", &[("x-canary", "1")]);
    let resume = match http.on_request(
        &mut req,
        conn("198.51.100.4:1000"),
        Resume::default(),
        &mut logged,
    ) {
        RequestVerdict::Forward {
            url,
            on_error,
            resume,
        } => {
            assert_eq!(url.host(), "canary.internal");
            assert_eq!(on_error, OnError::Continue);
            resume
        }
        other => panic!("{other:?}"),
    };
    match http.on_request(&mut req, conn("198.51.100.4:1000"), resume, &mut logged) {
        RequestVerdict::Forward { url, .. } => assert_eq!(url.host(), "api.internal"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn the_response_phase_changes_or_replaces_the_response() {
    let compiled = TrafficPolicy::from_yaml(POLICY).unwrap().compile().unwrap();
    let req = request("GET", "/orders", &[]);
    let mut ok = http::Response::builder()
        .status(200)
        .header("server", "upstream/1.0")
        .body(())
        .unwrap()
        .into_parts()
        .0;
    assert!(matches!(
        compiled.http().on_response(
            &req,
            &mut ok,
            conn("198.51.100.1:1"),
            &mut Effects::default()
        ),
        ResponseVerdict::Send
    ));
    assert_eq!(ok.headers["x-served-path"], "/orders");
    assert!(!ok.headers.contains_key("server"));

    let mut failed = http::Response::builder()
        .status(502)
        .body(())
        .unwrap()
        .into_parts()
        .0;
    let ResponseVerdict::Answer(answer) = compiled.http().on_response(
        &req,
        &mut failed,
        conn("198.51.100.1:1"),
        &mut Effects::default(),
    ) else {
        panic!("no answer");
    };
    assert_eq!(answer.status, 503);
    assert_eq!(answer.body, "try again later");
}

fn err(yaml: &str) -> String {
    TrafficPolicy::from_yaml(yaml).unwrap_err().to_string()
}

#[test]
fn bad_http_rules_are_refused_with_where_and_why() {
    let rule = |action: &str| format!("on_http_request:\n  - actions:\n      - {action}\n");
    for (yaml, needles) in [
        (
            "on_http_request:\n  - expressions: [\"req.method ==\"]\n    actions:\n      - type: deny\n".to_owned(),
            &["line 2", "invalid expression", "req.method =="][..],
        ),
        (rule("type: teleport"), &["line 3", "unknown action type `teleport`"]),
        (
            rule("type: deny\n        config: { status_code: 200 }"),
            &["status_code 200 is out of range"],
        ),
        (
            rule("type: forward-internal\n        config: { url: \"tcp://db.internal:5432\" }"),
            &["http:// or https:// internal endpoints"],
        ),
        (
            rule("type: add-headers\n        config: { headers: [x-a] }"),
            &["map of name: value"],
        ),
        (
            rule("type: add-headers\n        config: { headers: { \"bad header\": x } }"),
            &["`bad header` is not a valid header name"],
        ),
        (
            rule("type: url-rewrite\n        config: { from: \"(\", to: x }"),
            &["not a valid regular expression"],
        ),
        (
            rule("type: rate-limit\n        config: { capacity: 5, rate: soon }"),
            &["`soon` is not a duration"],
        ),
        (
            rule("type: deny\n        config: { url: \"http://a.internal\" }"),
            &["unknown field `url` in the config of `deny`"],
        ),
        (
            "on_http_response:\n  - actions:\n      - type: forward-internal\n        config: { url: \"http://a.internal\" }\n".to_owned(),
            &["cannot run in `on_http_response`"],
        ),
        (
            rule("type: add-headers\n        config: { headers: { x-a: b } }"),
            &["no reachable decision", "on_http_request"],
        ),
    ] {
        let msg = err(&yaml);
        for n in needles {
            assert!(msg.contains(n), "expected `{n}` in:\n{msg}\nfor:\n{yaml}");
        }
    }
}

const EFFECTS: &str = r#"
on_http_request:
  - name: tag
    actions:
      - type: set-vars
        config:
          vars:
            - tier: "${req.headers['x-tier'][0]}"
            - trusted: true
      - type: log
        config:
          metadata:
            path: "${req.url.path}"
            tier: "${vars.tier}"
  - name: gold
    expressions: ["vars.tier == 'gold' && vars.trusted"]
    actions:
      - type: custom-response
        config: { status_code: 200, body: "gold from ${conn.geo.country_code}" }
  - name: blocked
    expressions: ["conn.geo.country_code == 'CN'"]
    actions:
      - type: close-connection
  - actions:
      - type: forward-internal
        config: { url: "http://api.internal" }
on_http_response:
  - expressions: ["res.status_code == 500"]
    actions:
      - type: log
        config: { metadata: { status: "${string(res.status_code)}" } }
      - type: close-connection
"#;

fn from(client: &str, country: Option<&'static str>) -> Conn<'static> {
    Conn {
        country,
        ..conn(client)
    }
}

#[test]
fn set_vars_log_close_connection_and_the_country_in_http_phases() {
    let policy = TrafficPolicy::from_yaml(EFFECTS).unwrap();
    let compiled = policy.compile().unwrap();
    let http = compiled.http();
    assert!(http.reads_country() && compiled.reads_country());
    assert!(!TrafficPolicy::from_yaml(POLICY)
        .unwrap()
        .compile()
        .unwrap()
        .reads_country());

    // set-vars read by a later rule's expression; log's metadata rendered after it.
    let mut req = request("GET", "/reports", &[("x-tier", "gold")]);
    let mut effects = Effects::default();
    match http.on_request(
        &mut req,
        from("198.51.100.1:1", Some("NL")),
        Resume::default(),
        &mut effects,
    ) {
        RequestVerdict::Answer(a) => assert_eq!(a.body, "gold from NL"),
        other => panic!("{other:?}"),
    }
    assert_eq!(effects.logs.len(), 1);
    let logged = &effects.logs[0];
    assert_eq!(
        (logged.phase, logged.rule, logged.rule_name.as_deref()),
        ("on_http_request", 0, Some("tag"))
    );
    assert_eq!(
        effects.logs[0].metadata,
        vec![
            ("path".to_owned(), "/reports".to_owned()),
            ("tier".to_owned(), "gold".to_owned())
        ]
    );

    // close-connection: no answer.
    let mut req = request("GET", "/", &[]);
    match http.on_request(
        &mut req,
        from("198.51.100.2:1", Some("CN")),
        Resume::default(),
        &mut Effects::default(),
    ) {
        RequestVerdict::Close { rule } => assert_eq!(rule, "rule 3 (`blocked`)"),
        other => panic!("{other:?}"),
    }
    // Unknown country: neither rule holds; forwarded.
    let mut req = request("GET", "/", &[("x-tier", "silver")]);
    match http.on_request(
        &mut req,
        from("198.51.100.3:1", None),
        Resume::default(),
        &mut Effects::default(),
    ) {
        RequestVerdict::Forward { url, .. } => assert_eq!(url.host(), "api.internal"),
        other => panic!("{other:?}"),
    }

    // The response phase logs and closes on a 500, leaves a 200 alone.
    let req = request("GET", "/", &[]);
    let parts = |status: u16| {
        http::Response::builder()
            .status(status)
            .body(())
            .unwrap()
            .into_parts()
            .0
    };
    let mut effects = Effects::default();
    let verdict = http.on_response(&req, &mut parts(500), conn("198.51.100.1:1"), &mut effects);
    assert!(
        matches!(verdict, ResponseVerdict::Close { .. }),
        "{verdict:?}"
    );
    assert_eq!(
        effects.logs[0].metadata,
        vec![("status".to_owned(), "500".to_owned())]
    );
    assert_eq!(effects.logs[0].phase, "on_http_response");
    let mut effects = Effects::default();
    let verdict = http.on_response(&req, &mut parts(200), conn("198.51.100.1:1"), &mut effects);
    assert!(matches!(verdict, ResponseVerdict::Send), "{verdict:?}");
    assert!(effects.logs.is_empty());

    // What the admin API shows parses back to the same policy.
    let json = serde_json::to_string(&policy).unwrap();
    assert_eq!(TrafficPolicy::from_yaml(&json).unwrap(), policy);
}

#[test]
fn bad_log_set_vars_and_close_connection_configs_are_refused() {
    let rule = |action: &str| format!("on_http_request:\n  - actions:\n      - {action}\n");
    for (yaml, needle) in [
        (
            rule("type: close-connection\n        config: { status_code: 403 }"),
            "unknown field `status_code` in the config of `close-connection`",
        ),
        (rule("type: set-vars"), "`set-vars` needs `vars`"),
        (
            rule("type: set-vars\n        config: { vars: [{ \"not a name\": 1 }] }"),
            "is not a variable name",
        ),
        (
            rule("type: log\n        config: { metadata: { a: \"${req.\" } }"),
            "without its closing",
        ),
    ] {
        let e = err(&yaml);
        assert!(e.contains(needle), "{yaml}\n=> {e}");
    }
}
