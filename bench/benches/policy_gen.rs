//! Shared by the policy benches: deterministic BGP-like prefix sets, probe
//! addresses, and the sluice policy built from a prefix set.

#![allow(dead_code)]

use std::net::{Ipv4Addr, Ipv6Addr};

use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use sluice_policy::{Action, Cidr, ForwardInternal, InternalUrl, RestrictIps, Rule, TrafficPolicy};

/// xorshift64: small, deterministic, good enough for benchmark inputs.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(0x9e37_79b9_7f4a_7c15 ^ seed.wrapping_mul(0x2545_f491_4f6c_dd1d))
    }
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn pick(&mut self, table: &[(u8, u32)]) -> u8 {
        let total: u32 = table.iter().map(|t| t.1).sum();
        let mut r = (self.next() % u64::from(total)) as u32;
        for &(len, w) in table {
            if r < w {
                return len;
            }
            r -= w;
        }
        table[0].0
    }
}

/// IPv4 prefix lengths roughly as in a BGP table (weights per mille).
const V4_LENS: &[(u8, u32)] = &[
    (24, 600),
    (23, 100),
    (22, 130),
    (21, 50),
    (20, 45),
    (19, 25),
    (18, 10),
    (17, 6),
    (16, 12),
    (15, 1),
    (14, 1),
];
/// IPv6 prefix lengths roughly as in a BGP table.
const V6_LENS: &[(u8, u32)] = &[
    (48, 45),
    (32, 15),
    (44, 10),
    (40, 10),
    (36, 5),
    (29, 5),
    (56, 5),
    (64, 5),
];

/// `n` BGP-like IPv4 prefixes with networks in 1.0.0.0-223.255.255.255.
pub fn v4_prefixes(n: usize, seed: u64) -> Vec<Ipv4Net> {
    let mut rng = Rng::new(seed);
    (0..n)
        .map(|_| {
            let len = rng.pick(V4_LENS);
            let a = 0x0100_0000 + (rng.next() % (0xe000_0000 - 0x0100_0000)) as u32;
            Ipv4Net::new(Ipv4Addr::from(a), len).unwrap().trunc()
        })
        .collect()
}

/// `n` BGP-like IPv6 prefixes inside 2000::/3.
pub fn v6_prefixes(n: usize, seed: u64) -> Vec<Ipv6Net> {
    let mut rng = Rng::new(seed);
    (0..n)
        .map(|_| {
            let len = rng.pick(V6_LENS);
            let a = (0x2u128 << 124) | (u128::from(rng.next()) << 64 | u128::from(rng.next())) >> 3;
            Ipv6Net::new(Ipv6Addr::from(a), len).unwrap().trunc()
        })
        .collect()
}

/// Uniformly random IPv4 addresses over the whole space.
pub fn v4_probes(n: usize, seed: u64) -> Vec<Ipv4Addr> {
    let mut rng = Rng::new(seed ^ 0xabcd);
    (0..n).map(|_| Ipv4Addr::from(rng.next() as u32)).collect()
}

/// IPv6 probes: half inside a random listed prefix, half uniform in 2000::/3
/// (uniform addresses alone would almost never land in a prefix).
pub fn v6_probes(n: usize, prefixes: &[Ipv6Net], seed: u64) -> Vec<Ipv6Addr> {
    let mut rng = Rng::new(seed ^ 0xdcba);
    (0..n)
        .map(|i| {
            let host = u128::from(rng.next()) << 64 | u128::from(rng.next());
            if i % 2 == 0 && !prefixes.is_empty() {
                let p = prefixes[(rng.next() % prefixes.len() as u64) as usize];
                let mask = u128::MAX
                    .checked_shr(u32::from(p.prefix_len()))
                    .unwrap_or(0);
                Ipv6Addr::from(u128::from(p.network()) | (host & mask))
            } else {
                Ipv6Addr::from((0x2u128 << 124) | host >> 3)
            }
        })
        .collect()
}

/// `restrict-ips allow: <nets>` then `forward-internal`, built in code.
pub fn allow_policy(nets: impl IntoIterator<Item = IpNet>) -> TrafficPolicy {
    TrafficPolicy {
        on_tcp_connect: vec![Rule {
            name: Some("bench".into()),
            expressions: Vec::new(),
            actions: vec![
                Action::RestrictIps(RestrictIps {
                    enforce: true,
                    allow: nets.into_iter().map(Cidr::new).collect(),
                    deny: Vec::new(),
                }),
                Action::ForwardInternal(ForwardInternal {
                    url: InternalUrl::parse("tcp://db.internal:5432").unwrap(),
                }),
            ],
        }],
        ..Default::default()
    }
}

/// Machine facts printed with the results.
pub fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    format!("{cpu}, {cores} cores, Linux {}", kernel.trim())
}
