//! Lookup cost of the compiled policy against peers, IPv4 and IPv6, at 10
//! to 1M BGP-like prefixes, on random addresses (see `policy_gen.rs`).
//!
//! Each iteration looks up a batch of 1024 addresses; criterion reports the
//! batch time and elements/s (ns per lookup = batch time / 1024).
//! `cargo bench -p sluice-bench --bench policy_lookup`

#[path = "policy_gen.rs"]
mod gen;

use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::Duration;

use criterion::measurement::WallTime;
use criterion::{criterion_group, criterion_main, BenchmarkGroup, Criterion, Throughput};
use ip_network::{Ipv4Network, Ipv6Network};
use ip_network_table::IpNetworkTable;
use ip_network_table_deps_treebitmap::IpLookupTable;
use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use iprange::IpRange;
use prefix_trie::PrefixSet;

const BATCH: usize = 1024;

fn batch<A: Copy>(
    g: &mut BenchmarkGroup<'_, WallTime>,
    name: &str,
    probes: &[A],
    f: impl Fn(A) -> bool,
) {
    g.bench_function(name, |b| {
        b.iter(|| {
            let mut hits = 0usize;
            for &a in probes {
                hits += usize::from(f(black_box(a)));
            }
            hits
        })
    });
}

fn v4(c: &mut Criterion) {
    eprintln!("machine: {}", gen::machine());
    for n in [10usize, 1_000, 100_000, 1_000_000] {
        let nets = gen::v4_prefixes(n, 1);
        let probes = gen::v4_probes(BATCH, 2);
        let mut g = c.benchmark_group(format!("lookup_v4/{n}"));
        g.throughput(Throughput::Elements(BATCH as u64));

        let policy = gen::allow_policy(nets.iter().map(|&n| IpNet::V4(n)))
            .compile()
            .unwrap();
        batch(&mut g, "sluice", &probes, |a| {
            policy.evaluate_ip(IpAddr::V4(a)).is_allowed()
        });

        if n <= 1_000 {
            batch(&mut g, "linear_ipnet", &probes, |a| {
                nets.iter().any(|net| net.contains(&a))
            });
        }

        let mut trie = PrefixSet::<Ipv4Net>::new();
        for &net in &nets {
            trie.insert(net);
        }
        batch(&mut g, "prefix_trie", &probes, |a| {
            trie.get_lpm(&Ipv4Net::from(a)).is_some()
        });

        let mut table = IpNetworkTable::new();
        for &net in &nets {
            table.insert(
                Ipv4Network::new(net.network(), net.prefix_len()).unwrap(),
                (),
            );
        }
        batch(&mut g, "ip_network_table", &probes, |a| {
            table.longest_match_ipv4(a).is_some()
        });

        let mut tbm = IpLookupTable::<Ipv4Addr, ()>::new();
        for &net in &nets {
            tbm.insert(net.network(), u32::from(net.prefix_len()), ());
        }
        batch(&mut g, "treebitmap", &probes, |a| {
            tbm.longest_match(a).is_some()
        });

        let mut range = IpRange::<Ipv4Net>::new();
        for &net in &nets {
            range.add(net);
        }
        range.simplify();
        batch(&mut g, "iprange", &probes, |a| range.contains(&a));
        g.finish();
    }
}

fn v6(c: &mut Criterion) {
    for n in [10usize, 1_000, 100_000, 1_000_000] {
        let nets = gen::v6_prefixes(n, 3);
        let probes = gen::v6_probes(BATCH, &nets, 4);
        let mut g = c.benchmark_group(format!("lookup_v6/{n}"));
        g.throughput(Throughput::Elements(BATCH as u64));

        let policy = gen::allow_policy(nets.iter().map(|&n| IpNet::V6(n)))
            .compile()
            .unwrap();
        batch(&mut g, "sluice", &probes, |a| {
            policy.evaluate_ip(IpAddr::V6(a)).is_allowed()
        });

        if n <= 1_000 {
            batch(&mut g, "linear_ipnet", &probes, |a| {
                nets.iter().any(|net| net.contains(&a))
            });
        }

        let mut trie = PrefixSet::<Ipv6Net>::new();
        for &net in &nets {
            trie.insert(net);
        }
        batch(&mut g, "prefix_trie", &probes, |a| {
            trie.get_lpm(&Ipv6Net::from(a)).is_some()
        });

        let mut table = IpNetworkTable::new();
        for &net in &nets {
            table.insert(
                Ipv6Network::new(net.network(), net.prefix_len()).unwrap(),
                (),
            );
        }
        batch(&mut g, "ip_network_table", &probes, |a| {
            table.longest_match_ipv6(a).is_some()
        });

        let mut tbm = IpLookupTable::<Ipv6Addr, ()>::new();
        for &net in &nets {
            tbm.insert(net.network(), u32::from(net.prefix_len()), ());
        }
        batch(&mut g, "treebitmap", &probes, |a| {
            tbm.longest_match(a).is_some()
        });

        let mut range = IpRange::<Ipv6Net>::new();
        for &net in &nets {
            range.add(net);
        }
        range.simplify();
        batch(&mut g, "iprange", &probes, |a| range.contains(&a));
        g.finish();
    }
}

fn config() -> Criterion {
    Criterion::default()
        .sample_size(10)
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_millis(800))
        .without_plots()
}

criterion_group! { name = benches; config = config(); targets = v4, v6 }
criterion_main!(benches);
