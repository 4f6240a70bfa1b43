//! The cost of `on_http_request` per request, against the same request with no HTTP
//! rules: a policy of ngrok's everyday shape (a path-gated restrict-ips, a health
//! answer, a canary header check, then headers added and removed and a forward), and
//! the same rules with their expressions removed, to show what CEL costs.
//!
//! `cargo bench -p sluice-bench --bench http_policy`

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion};
use sluice_policy::{Conn, Effects, RequestVerdict, Resume, TrafficPolicy};

const WITH_EXPRESSIONS: &str = r#"
on_http_request:
  - expressions: ["req.url.path.startsWith('/admin')"]
    actions:
      - type: restrict-ips
        config: { allow: [10.0.0.0/8] }
  - expressions: ["req.url.path == '/healthz'"]
    actions:
      - type: custom-response
        config: { status_code: 200, body: ok }
  - expressions: ["'x-canary' in req.headers && req.method == 'GET'"]
    actions:
      - type: forward-internal
        config: { url: "http://canary.internal", on_error: continue }
  - actions:
      - type: add-headers
        config: { headers: { x-client-ip: "${conn.client_ip}", x-edge: sluice } }
      - type: remove-headers
        config: { headers: [cookie] }
      - type: forward-internal
        config: { url: "http://api.internal" }
"#;

const WITHOUT_EXPRESSIONS: &str = r#"
on_http_request:
  - actions:
      - type: add-headers
        config: { headers: { x-edge: sluice } }
      - type: remove-headers
        config: { headers: [cookie] }
      - type: forward-internal
        config: { url: "http://api.internal" }
"#;

fn request() -> http::request::Parts {
    http::Request::builder()
        .method("GET")
        .uri("/api/v2/orders?limit=5")
        .header("host", "api.example.com")
        .header("user-agent", "bench/1.0")
        .header("accept", "*/*")
        .header("cookie", "session=secret")
        .body(())
        .unwrap()
        .into_parts()
        .0
}

fn bench(c: &mut Criterion) {
    let conn = Conn {
        client: "203.0.113.7:40000".parse().unwrap(),
        server: "127.0.0.1:80".parse().unwrap(),
        scheme: "http",
        country: None,
    };
    let mut group = c.benchmark_group("on_http_request");
    for (name, yaml) in [
        ("everyday rules with CEL", WITH_EXPRESSIONS),
        ("header rules, no CEL", WITHOUT_EXPRESSIONS),
    ] {
        let compiled = TrafficPolicy::from_yaml(yaml).unwrap().compile().unwrap();
        group.bench_function(name, |b| {
            b.iter_batched_ref(
                request,
                |req| {
                    let verdict = compiled.http().on_request(
                        req,
                        conn,
                        Resume::default(),
                        &mut Effects::default(),
                    );
                    assert!(matches!(verdict, RequestVerdict::Forward { .. }));
                    black_box(verdict);
                },
                criterion::BatchSize::SmallInput,
            )
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
