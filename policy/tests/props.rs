//! Property tests: compiled policies decide exactly like the naive reference
//! evaluator, for random CIDR sets (both families, /0 to /32 and /128,
//! overlaps, nesting, IPv4-mapped), random policies and random addresses,
//! including every CIDR's first and last address and its neighbours.

mod common;

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::IpNet;
use proptest::prelude::*;
use sluice_policy::{
    Action, Cidr, Expression, ForwardInternal, InternalUrl, Log, RestrictIps, Rule, TrafficPolicy,
};

use common::{observed, observed_logs, reference, reference_conn};

fn v4() -> impl Strategy<Value = u32> {
    prop_oneof![
        any::<u32>(),
        (0..4u32, any::<u16>()).prop_map(|(hi, lo)| [0x0a00_0000, 0xc0a8_0000, 0, 0xffff_0000]
            [hi as usize]
            | u32::from(lo)),
    ]
}

fn v6() -> impl Strategy<Value = u128> {
    prop_oneof![
        any::<u128>(),
        any::<u64>().prop_map(|lo| 0x2001_0db8_u128 << 96 | u128::from(lo)),
        any::<u16>().prop_map(|lo| 0x2001_0db8_u128 << 96 | u128::from(lo) << 64),
        v4().prop_map(|a| 0xffff_u128 << 32 | u128::from(a)),
        Just(0u128),
        Just(u128::MAX),
    ]
}

fn cidr() -> impl Strategy<Value = Cidr> {
    prop_oneof![
        (
            v4(),
            prop_oneof![0..=32u8, 16..=32u8, Just(32u8), Just(0u8)]
        )
            .prop_map(|(a, l)| Cidr::new(IpNet::new(Ipv4Addr::from(a).into(), l).unwrap())),
        (
            v6(),
            prop_oneof![0..=128u8, 96..=128u8, Just(128u8), Just(0u8)]
        )
            .prop_map(|(a, l)| Cidr::new(IpNet::new(Ipv6Addr::from(a).into(), l).unwrap())),
    ]
}

fn addr() -> impl Strategy<Value = IpAddr> {
    prop_oneof![
        v4().prop_map(|a| IpAddr::V4(a.into())),
        v6().prop_map(|a| IpAddr::V6(a.into())),
    ]
}

fn url() -> impl Strategy<Value = InternalUrl> {
    (0..3u8).prop_map(|i| {
        InternalUrl::parse(&format!("tcp://svc{i}.internal:{}", 5000 + u16::from(i))).unwrap()
    })
}

fn action() -> impl Strategy<Value = Action> {
    prop_oneof![
        4 => (any::<bool>(), prop::collection::vec(cidr(), 0..6), prop::collection::vec(cidr(), 0..6))
            .prop_map(|(enforce, allow, mut deny)| {
                if allow.is_empty() && deny.is_empty() {
                    deny.push(Cidr::parse("10.0.0.0/8").unwrap());
                }
                Action::RestrictIps(RestrictIps { enforce, allow, deny })
            }),
        1 => Just(Action::Deny),
        1 => Just(Action::CloseConnection),
        1 => Just(Action::Log(Log::default())),
        2 => url().prop_map(|url| Action::ForwardInternal(ForwardInternal { url })),
    ]
}

/// What the reference evaluator knows: a client-address shape (folded into the
/// table) or a port test (CEL per connection), either negated.
fn expression() -> impl Strategy<Value = Expression> {
    let cidrs = prop::collection::vec(cidr(), 1..5).prop_map(|list| {
        let list: Vec<String> = list.iter().map(|c| format!("'{c}'")).collect();
        format!("inCidrRanges(conn.client_ip, [{}])", list.join(", "))
    });
    let port = (1..65535u16).prop_map(|n| format!("conn.client_port < {n}"));
    (prop_oneof![3 => cidrs, 1 => port], any::<bool>()).prop_map(|(e, negate)| {
        Expression::parse(&if negate { format!("!({e})") } else { e }).unwrap()
    })
}

fn policy() -> impl Strategy<Value = TrafficPolicy> {
    let rule = (
        prop::option::of("[a-z]{1,6}"),
        prop::collection::vec(expression(), 0..3),
        prop::collection::vec(action(), 1..4),
    )
        .prop_map(|(name, expressions, actions)| Rule {
            name,
            expressions,
            actions,
        });
    prop::collection::vec(rule, 1..5).prop_map(|mut rules| {
        if !rules
            .iter()
            .any(|r| r.actions.iter().any(Action::always_decides))
        {
            rules.push(Rule {
                name: None,
                expressions: Vec::new(),
                actions: vec![Action::Deny],
            });
        }
        TrafficPolicy {
            on_tcp_connect: rules,
            ..Default::default()
        }
    })
}

/// Every CIDR's edges and their neighbours, as v4, v6 and IPv4-mapped v6 (the CIDRs
/// of `restrict-ips` lists and of client-address expressions).
fn edges(p: &TrafficPolicy) -> Vec<IpAddr> {
    let mut listed: Vec<Cidr> = Vec::new();
    for rule in &p.on_tcp_connect {
        for e in &rule.expressions {
            listed.extend(common::expression_cidrs(e.as_str()).unwrap_or_default());
        }
        for action in &rule.actions {
            if let Action::RestrictIps(r) = action {
                listed.extend(r.allow.iter().chain(&r.deny));
            }
        }
    }
    let mut out = Vec::new();
    for c in &listed {
        match c.net() {
            IpNet::V4(n) => {
                let (lo, hi) = (u32::from(n.network()), u32::from(n.broadcast()));
                for a in [lo, hi, lo.wrapping_sub(1), hi.wrapping_add(1)] {
                    out.push(IpAddr::V4(a.into()));
                    out.push(IpAddr::V6(Ipv4Addr::from(a).to_ipv6_mapped()));
                }
            }
            IpNet::V6(n) => {
                let (lo, hi) = (u128::from(n.network()), u128::from(n.broadcast()));
                for a in [lo, hi, lo.wrapping_sub(1), hi.wrapping_add(1)] {
                    out.push(IpAddr::V6(a.into()));
                }
            }
        }
    }
    out
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    /// One restrict-ips (allow and deny sets) then forward: a pure set-membership check.
    #[test]
    fn membership_matches_reference(
        allow in prop::collection::vec(cidr(), 0..40),
        deny in prop::collection::vec(cidr(), 0..40),
        probes in prop::collection::vec(addr(), 0..64),
    ) {
        prop_assume!(!allow.is_empty() || !deny.is_empty());
        let p = TrafficPolicy { on_tcp_connect: vec![Rule { name: None, expressions: Vec::new(), actions: vec![
            Action::RestrictIps(RestrictIps { enforce: true, allow, deny }),
            Action::ForwardInternal(ForwardInternal { url: InternalUrl::parse("tls://a.internal").unwrap() }),
        ]}], ..Default::default() };
        let c = p.compile().unwrap();
        for ip in probes.into_iter().chain(edges(&p)) {
            prop_assert_eq!(observed(&c.evaluate_ip(ip)), reference(&p, ip), "ip {}", ip);
        }
    }

    /// Random whole policies: several rules, with and without expressions (client
    /// address shapes folded into the table, port tests run per connection), enforce
    /// true/false, deny, close-connection, log, forwards.
    #[test]
    fn policies_match_reference(
        p in policy(),
        probes in prop::collection::vec(addr(), 0..64),
        ports in prop::collection::vec(any::<u16>(), 1..4),
    ) {
        let c = p.compile().unwrap();
        for ip in probes.into_iter().chain(edges(&p)) {
            for &port in &ports {
                let client = std::net::SocketAddr::new(ip, port);
                let d = c.evaluate(client);
                prop_assert_eq!(
                    observed_logs(&d, Some((&c, client))),
                    reference_conn(&p, ip, port),
                    "client {}", client
                );
            }
        }
    }
}

/// A small deterministic generator for the large-table test.
struct XorShift(u64);
impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

/// Tables large enough for the dense IPv4 layout (>= 32k boundaries) and a
/// big IPv6 index, against the reference on random and edge addresses.
#[test]
fn large_tables_match_reference() {
    for seed in [1u64, 2] {
        let mut rng = XorShift(0x9e37_79b9_7f4a_7c15 ^ seed);
        let mut allow = Vec::new();
        let mut deny = Vec::new();
        for i in 0..60_000 {
            let r = rng.next();
            let c = if i % 4 == 3 {
                let a = 0x2001_0db8_u128 << 96 | u128::from(r) << 32;
                Cidr::new(IpNet::new(Ipv6Addr::from(a).into(), 40 + (r % 89) as u8).unwrap())
            } else {
                let a = (r >> 32) as u32 & 0x3fff_ffff;
                Cidr::new(IpNet::new(Ipv4Addr::from(a).into(), 20 + (r % 13) as u8).unwrap())
            };
            if i % 10 == 0 {
                deny.push(c)
            } else {
                allow.push(c)
            }
        }
        let p = TrafficPolicy {
            on_tcp_connect: vec![Rule {
                name: Some("big".into()),
                expressions: Vec::new(),
                actions: vec![
                    Action::RestrictIps(RestrictIps {
                        enforce: true,
                        allow,
                        deny,
                    }),
                    Action::ForwardInternal(ForwardInternal {
                        url: InternalUrl::parse("tcp://db.internal:1").unwrap(),
                    }),
                ],
            }],
            ..Default::default()
        };
        let c = p.compile().unwrap();
        assert!(c.stats().boundaries_v4 >= 32 * 1024, "{:?}", c.stats());
        let mut probes = edges(&p);
        probes.truncate(1_000);
        for _ in 0..500 {
            let r = rng.next();
            probes.push(IpAddr::V4(((r as u32) & 0x3fff_ffff).into()));
            probes.push(IpAddr::V6(
                (0x2001_0db8_u128 << 96 | u128::from(r) << 24).into(),
            ));
        }
        for ip in probes {
            assert_eq!(
                observed(&c.evaluate_ip(ip)),
                reference(&p, ip),
                "seed {seed} ip {ip}"
            );
        }
    }
}

/// Tables whose boundaries crowd into a few first-level buckets, so lookups
/// take the bisection paths: IPv4 /16s holding hundreds of boundaries (dense
/// layout, runs far beyond one 32-key window) and an IPv6 /48 holding
/// thousands of /64s (runs far beyond the 8-key scan), against the reference.
#[test]
fn clustered_tables_match_reference() {
    let mut rng = XorShift(0x2545_f491_4f6c_dd1d);
    let mut allow = Vec::new();
    let mut deny = Vec::new();
    for i in 0..48_000u32 {
        let r = rng.next();
        let c = match i % 8 {
            // Spread out, so the dense IPv4 layout is used.
            0..=3 => {
                let a = (r >> 32) as u32 & 0x3fff_ffff;
                Cidr::new(IpNet::new(Ipv4Addr::from(a).into(), 22 + (r % 11) as u8).unwrap())
            }
            // Crowded into 10.0.0.0/14: ~1,500 boundaries per /16.
            4 | 5 => {
                let a = 0x0a00_0000 | ((r >> 32) as u32 & 0x0003_ffff);
                Cidr::new(IpNet::new(Ipv4Addr::from(a).into(), 26 + (r % 7) as u8).unwrap())
            }
            // Crowded into one /48, plus a few spread /32s for the span.
            6 => {
                let a = 0x2001_0db8_0042_u128 << 80 | u128::from(r & 0xffff) << 64;
                Cidr::new(IpNet::new(Ipv6Addr::from(a).into(), 64).unwrap())
            }
            _ => {
                let a = 0x2000_u128 << 112 | u128::from(r) << 48;
                Cidr::new(IpNet::new(Ipv6Addr::from(a).into(), 32 + (r % 33) as u8).unwrap())
            }
        };
        if i % 7 == 0 {
            deny.push(c)
        } else {
            allow.push(c)
        }
    }
    let p = TrafficPolicy {
        on_tcp_connect: vec![Rule {
            name: Some("clustered".into()),
            expressions: Vec::new(),
            actions: vec![
                Action::RestrictIps(RestrictIps {
                    enforce: true,
                    allow,
                    deny,
                }),
                Action::ForwardInternal(ForwardInternal {
                    url: InternalUrl::parse("tcp://db.internal:1").unwrap(),
                }),
            ],
        }],
        ..Default::default()
    };
    let c = p.compile().unwrap();
    assert!(c.stats().boundaries_v4 >= 32 * 1024, "{:?}", c.stats());
    let all = edges(&p);
    // Every 53rd edge (both families, mapped too) and random probes in the
    // crowded regions.
    let mut probes: Vec<IpAddr> = all.iter().step_by(53).copied().collect();
    for _ in 0..1_000 {
        let r = rng.next();
        probes.push(IpAddr::V4((0x0a00_0000 | (r as u32 & 0x0003_ffff)).into()));
        probes.push(IpAddr::V6(
            (0x2001_0db8_0042_u128 << 80 | u128::from(r) << 32).into(),
        ));
    }
    for ip in probes {
        assert_eq!(observed(&c.evaluate_ip(ip)), reference(&p, ip), "ip {ip}");
    }
}
