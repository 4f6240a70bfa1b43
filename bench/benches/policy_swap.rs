//! Reader throughput while policies are hot-swapped, against no swaps.
//!
//! One reader thread per core evaluates random addresses through a
//! per-thread `PolicyReader` for a fixed time. Modes (each run three times,
//! interleaved, median reported):
//! - `no swaps`;
//! - `swap every 10 ms`: another thread publishes a prepared 100k-prefix
//!   policy every 10 ms (`store_shared`), so only the publication costs;
//! - `compile+swap every 10 ms`: the swapping thread also compiles each
//!   100k-prefix policy, so on a 2-core machine it competes for a core.
//!
//! `cargo bench -p sluice-bench --bench policy_swap`

#[path = "policy_gen.rs"]
mod gen;

use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ipnet::IpNet;
use sluice_policy::{PolicyHandle, TrafficPolicy};

const RUN: Duration = Duration::from_millis(1500);

#[derive(Clone, Copy, PartialEq)]
enum Mode {
    NoSwaps,
    Swap,
    CompileSwap,
}

fn run(
    mode: Mode,
    policies: &[TrafficPolicy],
    prepared: &[Arc<sluice_policy::CompiledPolicy>],
) -> (f64, u64) {
    let handle = PolicyHandle::new(policies[0].compile().unwrap());
    let stop = Arc::new(AtomicBool::new(false));
    let readers = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    let threads: Vec<_> = (0..readers)
        .map(|t| {
            let handle = handle.clone();
            let stop = stop.clone();
            std::thread::spawn(move || {
                let probes: Vec<IpAddr> = gen::v4_probes(4096, 10 + t as u64)
                    .into_iter()
                    .map(IpAddr::V4)
                    .collect();
                let mut reader = handle.reader();
                let mut lookups = 0u64;
                let mut allowed = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    for &ip in &probes {
                        allowed += u64::from(reader.load().evaluate_ip(ip).is_allowed());
                    }
                    lookups += probes.len() as u64;
                }
                std::hint::black_box(allowed);
                lookups
            })
        })
        .collect();
    let started = Instant::now();
    let mut swaps = 0u64;
    let mut next = started;
    while started.elapsed() < RUN {
        if mode != Mode::NoSwaps {
            let i = swaps as usize % policies.len();
            match mode {
                Mode::Swap => handle.store_shared(prepared[i].clone()),
                _ => handle.store(policies[i].compile().unwrap()),
            };
            swaps += 1;
        }
        // Pacing the writer, not synchronising anything.
        next += Duration::from_millis(10);
        if let Some(wait) = next.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
    }
    stop.store(true, Ordering::Relaxed);
    let elapsed = started.elapsed().as_secs_f64();
    let total: u64 = threads.into_iter().map(|t| t.join().unwrap()).sum();
    (total as f64 / elapsed, swaps)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    eprintln!("machine: {}", gen::machine());
    let policies: Vec<TrafficPolicy> = (0..2)
        .map(|s| {
            gen::allow_policy(
                gen::v4_prefixes(100_000, 100 + s)
                    .into_iter()
                    .map(IpNet::V4),
            )
        })
        .collect();
    let prepared: Vec<_> = policies
        .iter()
        .map(|p| Arc::new(p.compile().unwrap()))
        .collect();
    let mut results: Vec<(Mode, &str, Vec<f64>, u64)> = vec![
        (Mode::NoSwaps, "no swaps", vec![], 0),
        (Mode::Swap, "swap 100k every 10 ms", vec![], 0),
        (
            Mode::CompileSwap,
            "compile+swap 100k every 10 ms",
            vec![],
            0,
        ),
    ];
    for _ in 0..3 {
        for r in results.iter_mut() {
            let (rate, swaps) = run(r.0, &policies, &prepared);
            r.2.push(rate);
            r.3 += swaps;
        }
    }
    let base = median(results[0].2.clone());
    for (_, name, rates, swaps) in &results {
        let m = median(rates.clone());
        println!(
            "policy_swap: {name:<32} {:>8.1} M lookups/s ({:.3}x of no swaps, {swaps} swaps)",
            m / 1e6,
            m / base
        );
    }
}
