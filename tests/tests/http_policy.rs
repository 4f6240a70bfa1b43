//! End-to-end: the HTTP phases of a traffic policy on an `http://` endpoint, with a real
//! edge and agents (separate processes), echoing HTTP upstreams and `curl`: CEL
//! expressions pick the rules; `restrict-ips`, `custom-response`, `rate-limit`,
//! `add-headers`, `remove-headers`, `url-rewrite` and `forward-internal` (with
//! `on_error: continue`) act on requests, `on_http_response` on responses; a policy that
//! cannot run where it is put is refused by the admin API.

use sluice_tests::{
    admin::{listening, Admin},
    fixture::Fixture,
    http::{curl, HttpEcho, Transfer},
    process::Sluice,
};

const ADMIN_KEY: &str = "http-policy-admin-key-0123456789";

const POLICY: &str = r#"
    traffic_policy:
      on_tcp_connect:
        - actions:
            - type: restrict-ips
              config: { deny: [127.0.0.9/32] }
      on_http_request:
        - name: admin from the office
          expressions: ["req.url.path.startsWith('/admin')"]
          actions:
            - type: restrict-ips
              config: { allow: [127.0.0.5/32] }
        - name: health
          expressions: ["req.url.path == '/healthz'"]
          actions:
            - type: custom-response
              config:
                status_code: 200
                body: "edge ok for ${conn.client_ip}"
                headers: { content-type: text/plain }
        - name: limited
          expressions: ["req.url.path.startsWith('/limited')"]
          actions:
            - type: rate-limit
              config: { name: per client, algorithm: sliding_window, capacity: 3, rate: 60s, bucket_key: ["conn.client_ip"] }
        - name: canary
          expressions: ["'x-canary' in req.headers"]
          actions:
            - type: forward-internal
              config: { url: "http://canary.internal", on_error: continue }
        - name: default
          actions:
            - type: add-headers
              config: { headers: { x-client-ip: "${conn.client_ip}", x-method: "${req.method}" } }
            - type: remove-headers
              config: { headers: [cookie] }
            - type: url-rewrite
              config: { from: "^/v1/(.*)$", to: "/api/v1/$1" }
            - type: forward-internal
              config: { url: "http://api.internal" }
      on_http_response:
        - actions:
            - type: add-headers
              config: { headers: { x-policy: "applied to ${req.url.path}" } }
            - type: remove-headers
              config: { headers: [content-type] }
"#;

fn edge(fx: &Fixture) -> (Sluice, std::net::SocketAddr, std::net::SocketAddr) {
    let yaml = fx.tls_edge_head().replace(
        "tls_endpoints:\n  listen: 127.0.0.1:0\n",
        "http_endpoints:\n  listen: 127.0.0.1:0\n",
    ) + &format!(
        "  - url: http://api.example.com\n{}admin:\n  listen: 127.0.0.1:0\n  api_keys: [\"{}\"]\n",
        POLICY.trim_start_matches('\n'),
        sluice_tests::fixture::token_hash(ADMIN_KEY),
    );
    let mut edge = Sluice::edge(&fx.write("edge.yml", &yaml), "uring");
    let (agent_addr, _) = edge.edge_addrs(0);
    let http = edge.http_endpoints_addr();
    (edge, agent_addr, http)
}

fn agent(fx: &Fixture, name: &str, edge: std::net::SocketAddr, url: &str, up: &HttpEcho) -> Sluice {
    let mut yaml = fx.agent_yaml(&fx.token, edge, "tcp", &[]);
    yaml.push_str(&format!(
        "  - url: {url}\n    upstream: {{ url: \"http://{}\" }}\n",
        up.addr
    ));
    let mut agent = Sluice::agent(&fx.write(name, &yaml), "uring");
    agent.wait_for_n("the endpoint bound", 1, |v| {
        v["message"] == "endpoint bound"
    });
    agent
}

fn get(
    fx: &Fixture,
    http: std::net::SocketAddr,
    paths: &[&str],
    source: Option<&str>,
    extra: &[&str],
) -> Vec<Transfer> {
    let urls: Vec<String> = paths
        .iter()
        .map(|p| format!("http://api.example.com:{}{p}", http.port()))
        .collect();
    curl(http, "api.example.com", &urls, source, extra, fx.dir())
}

#[test]
fn http_rules_pick_answer_limit_rewrite_and_forward_requests() {
    let fx = Fixture::new();
    let (mut edge, agent_addr, http) = edge(&fx);
    let api = HttpEcho::start("api");
    let _api_agent = agent(&fx, "api.yml", agent_addr, "http://api.internal", &api);

    // The default rule: headers added and removed, the URL rewritten, then forwarded;
    // the response phase adds its header and removes the upstream's content type.
    let t = get(
        &fx,
        http,
        &["/v1/orders?page=2"],
        None,
        &["-H", "Cookie: session=secret"],
    )
    .remove(0);
    assert_eq!(t.status, 200, "{t:?}");
    let seen = t.text();
    assert!(
        seen.starts_with("GET /api/v1/orders?page=2 HTTP/1.1\r\n"),
        "{seen}"
    );
    let lower = seen.to_ascii_lowercase();
    assert!(lower.contains("x-client-ip: 127.0.0.1\r\n"), "{seen}");
    assert!(lower.contains("x-method: get\r\n"), "{seen}");
    assert!(!lower.contains("cookie"), "{seen}");
    assert_eq!(t.header("x-policy"), Some("applied to /api/v1/orders"));
    assert_eq!(t.header("content-type"), None, "{t:?}");
    assert_eq!(t.header("x-upstream"), Some("api"));

    // custom-response: the edge answers; the upstream never sees the request.
    let before = api.requests.load(std::sync::atomic::Ordering::Relaxed);
    let t = get(&fx, http, &["/healthz"], None, &[]).remove(0);
    assert_eq!(
        (t.status, t.text().as_str()),
        (200, "edge ok for 127.0.0.1")
    );
    assert_eq!(t.header("sluice-error-code"), None);
    assert_eq!(
        api.requests.load(std::sync::atomic::Ordering::Relaxed),
        before
    );

    // restrict-ips under an expression: /admin only from 127.0.0.5.
    let t = get(&fx, http, &["/admin/users"], None, &[]).remove(0);
    assert_eq!(t.status, 403, "{t:?}");
    assert_eq!(t.header("sluice-error-code"), Some("ERR_SLUICE_DENIED"));
    let t = get(&fx, http, &["/admin/users"], Some("127.0.0.5"), &[]).remove(0);
    assert_eq!(t.status, 200, "{t:?}");

    // on_tcp_connect still refuses its denied address, with a page.
    let t = get(&fx, http, &["/v1/x"], Some("127.0.0.9"), &[]).remove(0);
    assert_eq!(t.status, 403, "{t:?}");

    // rate-limit: 3 per minute per client address, then 429 with Retry-After; another
    // address has its own bucket.
    let limited = get(
        &fx,
        http,
        &["/limited", "/limited", "/limited", "/limited"],
        None,
        &[],
    );
    let statuses: Vec<u16> = limited.iter().map(|t| t.status).collect();
    assert_eq!(statuses, [200, 200, 200, 429], "{limited:?}");
    assert_eq!(
        limited[3].header("sluice-error-code"),
        Some("ERR_SLUICE_RATE_LIMITED")
    );
    let retry: u64 = limited[3].header("retry-after").unwrap().parse().unwrap();
    assert!((1..=60).contains(&retry), "{retry}");
    let other = get(&fx, http, &["/limited"], Some("127.0.0.5"), &[]).remove(0);
    assert_eq!(other.status, 200, "{other:?}");

    // forward-internal with on_error: continue: no canary agent yet, so the default rule
    // takes the request; once one binds, requests asking for it go there.
    let t = get(&fx, http, &["/v1/x"], None, &["-H", "X-Canary: 1"]).remove(0);
    assert_eq!(
        (t.status, t.header("x-upstream")),
        (200, Some("api")),
        "{t:?}"
    );
    let canary = HttpEcho::start("canary");
    let _canary_agent = agent(
        &fx,
        "canary.yml",
        agent_addr,
        "http://canary.internal",
        &canary,
    );
    let t = get(&fx, http, &["/v1/x"], None, &["-H", "X-Canary: 1"]).remove(0);
    assert_eq!(
        (t.status, t.header("x-upstream")),
        (200, Some("canary")),
        "{t:?}"
    );
    // The canary rule forwards as it is: the default rule's rewrite never ran.
    assert!(
        t.text().starts_with("GET /v1/x HTTP/1.1\r\n"),
        "{}",
        t.text()
    );

    // The admin API refuses HTTP rules where they cannot run, and a policy whose
    // expression does not parse, saying why.
    let admin = Admin::new(listening(&mut edge).0, ADMIN_KEY);
    let refused = admin.call(
        "POST",
        "/v1/endpoints",
        Some(serde_json::json!({
            "url": "tcp://127.0.0.1:0",
            "traffic_policy": "on_http_request:\n  - actions:\n      - type: forward-internal\n        config: { url: \"http://api.internal\" }\n",
        })),
    );
    assert_eq!(refused.status, 400, "{}", refused.text);
    assert!(refused.text.contains("only on http://"), "{}", refused.text);
    let refused = admin.call(
        "POST",
        "/v1/endpoints",
        Some(serde_json::json!({
            "url": "http://other.example.com",
            "traffic_policy": "on_http_request:\n  - expressions: [\"req.method ==\"]\n    actions:\n      - type: deny\n",
        })),
    );
    assert_eq!(refused.status, 400, "{}", refused.text);
    assert!(
        refused.text.contains("invalid expression"),
        "{}",
        refused.text
    );
}
