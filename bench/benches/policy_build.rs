//! Build time and memory per prefix: the compiled policy against peers.
//!
//! Memory is measured with a counting global allocator (heap bytes live
//! after the build, minus the input). Printed as `bytes/prefix` lines
//! before the timings.
//! `cargo bench -p sluice-bench --bench policy_build`

#[path = "policy_gen.rs"]
mod gen;

use std::alloc::{GlobalAlloc, Layout, System};
use std::hint::black_box;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::sync::atomic::{AtomicIsize, Ordering};
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion};
use ip_network::{Ipv4Network, Ipv6Network};
use ip_network_table::IpNetworkTable;
use ip_network_table_deps_treebitmap::IpLookupTable;
use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use iprange::IpRange;
use prefix_trie::PrefixSet;
use sluice_policy::TrafficPolicy;

struct Counting;
static LIVE: AtomicIsize = AtomicIsize::new(0);

// SAFETY: forwards to the system allocator unchanged and only counts sizes.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        LIVE.fetch_add(l.size() as isize, Ordering::Relaxed);
        // SAFETY: same contract as the caller's.
        unsafe { System.alloc(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        LIVE.fetch_sub(l.size() as isize, Ordering::Relaxed);
        // SAFETY: same contract as the caller's.
        unsafe { System.dealloc(p, l) }
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, new: usize) -> *mut u8 {
        LIVE.fetch_add(new as isize - l.size() as isize, Ordering::Relaxed);
        // SAFETY: same contract as the caller's.
        unsafe { System.realloc(p, l, new) }
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

/// Heap bytes held by what `build` returns.
fn held<T>(build: impl FnOnce() -> T) -> (T, isize) {
    let before = LIVE.load(Ordering::Relaxed);
    let t = build();
    (t, LIVE.load(Ordering::Relaxed) - before)
}

fn v4_builders(nets: &[Ipv4Net]) -> Vec<(&'static str, isize)> {
    let policy = gen::allow_policy(nets.iter().map(|&n| IpNet::V4(n)));
    let (c, _) = held(|| policy.compile().unwrap());
    let s = *c.stats();
    let (_, trie) = held(|| {
        nets.iter().fold(PrefixSet::<Ipv4Net>::new(), |mut t, &n| {
            t.insert(n);
            t
        })
    });
    let (_, table) = held(|| {
        let mut t = IpNetworkTable::new();
        for &n in nets {
            t.insert(Ipv4Network::new(n.network(), n.prefix_len()).unwrap(), ());
        }
        t
    });
    let (_, tbm) = held(|| {
        let mut t = IpLookupTable::<Ipv4Addr, ()>::new();
        for &n in nets {
            t.insert(n.network(), u32::from(n.prefix_len()), ());
        }
        t
    });
    let (_, range) = held(|| {
        let mut r = IpRange::<Ipv4Net>::new();
        for &n in nets {
            r.add(n);
        }
        r.simplify();
        r
    });
    vec![
        ("sluice table", s.table_bytes_v4 as isize),
        (
            "sluice table+provenance",
            (s.table_bytes_v4 + s.provenance_bytes) as isize,
        ),
        ("prefix_trie", trie),
        ("ip_network_table", table),
        ("treebitmap", tbm),
        ("iprange", range),
    ]
}

fn v6_builders(nets: &[Ipv6Net]) -> Vec<(&'static str, isize)> {
    let policy = gen::allow_policy(nets.iter().map(|&n| IpNet::V6(n)));
    let c = policy.compile().unwrap();
    let s = *c.stats();
    let (_, trie) = held(|| {
        nets.iter().fold(PrefixSet::<Ipv6Net>::new(), |mut t, &n| {
            t.insert(n);
            t
        })
    });
    let (_, table) = held(|| {
        let mut t = IpNetworkTable::new();
        for &n in nets {
            t.insert(Ipv6Network::new(n.network(), n.prefix_len()).unwrap(), ());
        }
        t
    });
    let (_, tbm) = held(|| {
        let mut t = IpLookupTable::<Ipv6Addr, ()>::new();
        for &n in nets {
            t.insert(n.network(), u32::from(n.prefix_len()), ());
        }
        t
    });
    vec![
        ("sluice table", s.table_bytes_v6 as isize),
        (
            "sluice table+provenance",
            (s.table_bytes_v6 + s.provenance_bytes) as isize,
        ),
        ("prefix_trie", trie),
        ("ip_network_table", table),
        ("treebitmap", tbm),
    ]
}

fn memory() {
    eprintln!("machine: {}", gen::machine());
    for n in [1_000usize, 100_000, 1_000_000] {
        let nets = gen::v4_prefixes(n, 1);
        for (name, bytes) in v4_builders(&nets) {
            eprintln!(
                "bytes/prefix v4 n={n:>8} {name:<24} {:>7.2}",
                bytes as f64 / n as f64
            );
        }
        let nets6 = gen::v6_prefixes(n, 3);
        for (name, bytes) in v6_builders(&nets6) {
            eprintln!(
                "bytes/prefix v6 n={n:>8} {name:<24} {:>7.2}",
                bytes as f64 / n as f64
            );
        }
    }
}

fn build(c: &mut Criterion) {
    memory();
    for n in [1_000usize, 100_000, 1_000_000] {
        let nets = gen::v4_prefixes(n, 1);
        let policy: TrafficPolicy = gen::allow_policy(nets.iter().map(|&n| IpNet::V4(n)));
        let mut g = c.benchmark_group(format!("build_v4/{n}"));
        g.bench_function("sluice", |b| {
            b.iter(|| black_box(policy.compile().unwrap()))
        });
        g.bench_function("prefix_trie", |b| {
            b.iter(|| {
                black_box(nets.iter().fold(PrefixSet::<Ipv4Net>::new(), |mut t, &n| {
                    t.insert(n);
                    t
                }))
            })
        });
        g.bench_function("ip_network_table", |b| {
            b.iter_batched(
                IpNetworkTable::<()>::new,
                |mut t| {
                    for &n in &nets {
                        t.insert(Ipv4Network::new(n.network(), n.prefix_len()).unwrap(), ());
                    }
                    t
                },
                BatchSize::PerIteration,
            )
        });
        g.finish();

        let nets6 = gen::v6_prefixes(n, 3);
        let policy6 = gen::allow_policy(nets6.iter().map(|&n| IpNet::V6(n)));
        let mut g = c.benchmark_group(format!("build_v6/{n}"));
        g.bench_function("sluice", |b| {
            b.iter(|| black_box(policy6.compile().unwrap()))
        });
        g.bench_function("prefix_trie", |b| {
            b.iter(|| {
                black_box(nets6.iter().fold(PrefixSet::<Ipv6Net>::new(), |mut t, &n| {
                    t.insert(n);
                    t
                }))
            })
        });
        g.finish();
    }
}

fn config() -> Criterion {
    Criterion::default()
        .sample_size(10)
        .warm_up_time(Duration::from_millis(200))
        .measurement_time(Duration::from_secs(1))
        .without_plots()
}

criterion_group! { name = benches; config = config(); targets = build }
criterion_main!(benches);
