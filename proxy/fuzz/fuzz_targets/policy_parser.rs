//! Traffic policy YAML (what an operator, or a control plane acting for a customer,
//! hands the edge): parse, compile, evaluate a few clients. Never panics.
#![no_main]

use std::net::SocketAddr;

use libfuzzer_sys::fuzz_target;
use sluice_policy::TrafficPolicy;

/// Clients on both families, at boundaries and inside the documentation ranges the
/// seeds use, plus an IPv4-mapped IPv6 client.
const CLIENTS: &[&str] = &[
    "0.0.0.0:1",
    "203.0.113.7:40000",
    "10.1.2.3:5432",
    "255.255.255.255:65535",
    "[::]:1",
    "[2001:db8::1]:443",
    "[::ffff:203.0.113.9]:80",
    "[ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff]:65535",
];

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(policy) = TrafficPolicy::from_yaml(text) else {
        return;
    };
    let _ = policy.unreachable();
    let Ok(compiled) = policy.compile() else {
        return;
    };
    for c in CLIENTS {
        let client: SocketAddr = c.parse().expect("literal");
        let d = compiled.evaluate(client);
        let _ = (d.outcome(), d.is_allowed(), d.target(), d.why().cidr());
    }
    // Two clients taken from the input's own bytes, so lookups land near its CIDRs.
    let mut v6 = [0u8; 16];
    for (i, b) in data.iter().rev().take(16).enumerate() {
        v6[i] = *b;
    }
    let v4 = [v6[0], v6[1], v6[2], v6[3]];
    for ip in [std::net::IpAddr::from(v4), std::net::IpAddr::from(v6)] {
        let _ = compiled.evaluate(SocketAddr::new(ip, 443)).outcome();
    }
});
