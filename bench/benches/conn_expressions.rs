//! The cost of `on_tcp_connect` per accepted connection, `restrict-ips` alone against
//! the shapes of `expressions` ngrok's documentation writes: the same client-address
//! test written as an expression (folded into the lookup table: the same one lookup),
//! a country test (one lookup in a MaxMind-format database), and expressions CEL runs
//! per connection (the client's port; the SNI).
//!
//! `cargo bench -p sluice-bench --bench conn_expressions`

use std::{
    hint::black_box,
    net::{IpAddr, Ipv4Addr, SocketAddr},
};

use criterion::{criterion_group, criterion_main, Criterion};
use sluice_policy::{ConnInfo, TrafficPolicy};
use sluice_proxy::geo::GeoDb;

const OFFICES: &str = "['10.0.0.0/8', '192.168.0.0/16', '203.0.113.0/24', '2001:db8::/32']";

fn restrict_alone() -> String {
    "
on_tcp_connect:
  - actions:
      - type: restrict-ips
        config: { allow: [10.0.0.0/8, 192.168.0.0/16, 203.0.113.0/24, 2001:db8::/32] }
      - type: forward-internal
        config: { url: tcp://db.internal:5432 }
"
    .to_owned()
}

fn rule(expression: &str) -> String {
    format!(
        "
on_tcp_connect:
  - expressions: [\"{expression}\"]
    actions:
      - type: forward-internal
        config: {{ url: tcp://db.internal:5432 }}
  - actions:
      - type: close-connection
"
    )
}

/// What the edge knows of a connection; the country from a real database.
struct Facts<'a> {
    geo: &'a GeoDb,
}

impl ConnInfo for Facts<'_> {
    fn server(&self) -> Option<SocketAddr> {
        Some(SocketAddr::from(([192, 0, 2, 10], 5432)))
    }
    fn sni(&self) -> Option<String> {
        Some("billing.example.com".to_owned())
    }
    fn country_code(&self, ip: IpAddr) -> Option<String> {
        self.geo.country_code(ip)
    }
}

/// A database of a few thousand networks (a country database has ~400k; its tree is
/// deeper by a few nodes, not more).
fn database() -> GeoDb {
    let mut networks = Vec::new();
    let codes = ["NL", "BE", "DE", "FR", "US", "CA", "JP", "BR"];
    for i in 0..4096u32 {
        let net = Ipv4Addr::from(0x0100_0000 + i * 0x0003_1000);
        networks.push((net, 20, codes[i as usize % codes.len()]));
    }
    networks.push((Ipv4Addr::new(203, 0, 113, 0), 24, "NL"));
    let dir = std::env::temp_dir().join(format!("sluice-bench-geo-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("countries.mmdb");
    std::fs::write(&path, sluice_tests::mmdb::country_database(&networks)).unwrap();
    let db = GeoDb::open(&path).unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
    db
}

fn bench(c: &mut Criterion) {
    let geo = database();
    let facts = Facts { geo: &geo };
    let client = SocketAddr::from(([203, 0, 113, 9], 40000));
    let mut group = c.benchmark_group("on_tcp_connect per connection");
    for (name, yaml) in [
        ("restrict-ips alone", restrict_alone()),
        (
            "inCidrRanges(conn.client_ip) (in the table)",
            rule(&format!("inCidrRanges(conn.client_ip, {OFFICES})")),
        ),
        (
            "conn.geo.country_code in [...] (database)",
            rule("conn.geo.country_code in ['NL', 'BE']"),
        ),
        (
            "conn.client_port >= 1024 (CEL)",
            rule("conn.client_port >= 1024"),
        ),
        (
            "conn.tls.sni == '...' (CEL)",
            rule("conn.tls.sni == 'billing.example.com'"),
        ),
    ] {
        let policy = TrafficPolicy::from_yaml(&yaml).unwrap().compile().unwrap();
        assert!(policy.evaluate_conn(client, &facts).is_allowed(), "{name}");
        group.bench_function(name, |b| {
            b.iter(|| policy.evaluate_conn(black_box(client), &facts).is_allowed())
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
