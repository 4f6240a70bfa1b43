//! Latency figures against servers with a known delay: closed-loop percentiles sit at
//! the delay, and the open loop charges queueing to the server (coordinated omission).
mod common;

use std::time::Duration;

use common::{delayed_echo, short};
use sluice_loadtest::rr::{self, RrOptions};

const DELAY_MS: u64 = 20;

#[test]
fn closed_loop_percentiles_match_a_known_delay() {
    let server = delayed_echo(64, Duration::from_millis(DELAY_MS));
    let r = rr::run(&RrOptions::new(short(server.addr, 600)).connections(2)).unwrap();
    assert_eq!(r.errors.total(), 0, "{:?}", r.samples);
    let ms = |q: f64| r.latency.value_at_quantile(q) as f64 / 1e6;
    // 2 connections for 0.6 s at 20 ms each: at most 60 requests (fewer on a busy machine).
    assert!((20..=60).contains(&r.ops), "{} requests", r.ops);
    // The lower bound is exact. The upper slack allows for a loaded 2-core CI machine
    // (scheduling delays of tens of ms happen there) while still catching a harness
    // that counts a request twice (p50 at 40 ms) or charges it its neighbour's wait.
    for (q, slack) in [(0.5, 15.0), (0.9, 30.0), (0.99, 60.0)] {
        let v = ms(q);
        assert!(
            (DELAY_MS as f64..DELAY_MS as f64 + slack).contains(&v),
            "p{} = {v} ms",
            q * 100.0
        );
    }
    assert!(r.latency.min() as f64 / 1e6 >= DELAY_MS as f64);
}

#[test]
fn open_loop_charges_queueing_to_the_server() {
    // One connection asked for 100 requests/s against a server that manages 50/s:
    // every request waits longer than the one before; a closed-loop view would see 20 ms.
    let server = delayed_echo(64, Duration::from_millis(DELAY_MS));
    let r = rr::run(&RrOptions::new(short(server.addr, 600)).rate(Some(100.0))).unwrap();
    assert_eq!(r.errors.total(), 0, "{:?}", r.samples);
    let service_p50 = r.service.value_at_quantile(0.5) as f64 / 1e6;
    let corrected_max = r.latency.max() as f64 / 1e6;
    assert!(
        (DELAY_MS as f64..DELAY_MS as f64 + 15.0).contains(&service_p50),
        "service p50 {service_p50} ms"
    );
    // After ~0.3 s of 10 ms intervals served at 20 ms, the backlog is ~150 ms or more.
    assert!(corrected_max > 150.0, "corrected max {corrected_max} ms");
    assert!(r.latency.value_at_quantile(0.5) > r.service.value_at_quantile(0.5) * 2);
}

#[test]
fn open_loop_under_capacity_is_not_charged_for_the_timer() {
    // 200/s against a 20 ms server over 8 connections (25/s each, 40 ms apart):
    // never queued, so latency must stay at the delay, not the timer's lateness.
    let server = delayed_echo(64, Duration::from_millis(DELAY_MS));
    let r = rr::run(
        &RrOptions::new(short(server.addr, 500))
            .connections(8)
            .rate(Some(200.0)),
    )
    .unwrap();
    assert_eq!(r.errors.total(), 0, "{:?}", r.samples);
    let p99 = r.latency.value_at_quantile(0.99) as f64 / 1e6;
    assert!(
        (DELAY_MS as f64..DELAY_MS as f64 + 40.0).contains(&p99),
        "corrected p99 {p99} ms"
    );
}
