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
    // Control: the same requests made by a plain blocking client against the same
    // server right after, i.e. what a request takes on this machine now (the server's
    // sleep overshoots under load, and so does scheduling), without the harness.
    let control = control_latencies_ms(server.addr, 2, 15);
    let at = |q: f64| control[((control.len() - 1) as f64 * q).round() as usize];
    let control_max = *control.last().unwrap();
    // The lower bound is exact. Above, the harness may only differ from the control by
    // less than one more delay: a harness that counts a request twice or charges it
    // its neighbour's wait adds at least that (p50 near 40 ms). The median compares
    // with the control's median; the tail with the control's worst (single spikes).
    for (q, limit) in [
        (0.5, at(0.5) + DELAY_MS as f64),
        (0.9, control_max + DELAY_MS as f64),
        (0.99, control_max + DELAY_MS as f64),
    ] {
        let v = ms(q);
        assert!(
            (DELAY_MS as f64..limit).contains(&v),
            "p{} = {v} ms, control {control:?} ms",
            q * 100.0
        );
    }
    assert!(r.latency.min() as f64 / 1e6 >= DELAY_MS as f64);
}

/// `per_connection` requests of 64 bytes on each of `connections` blocking std
/// connections at once; every round trip in ms, sorted.
fn control_latencies_ms(
    addr: std::net::SocketAddr,
    connections: usize,
    per_connection: usize,
) -> Vec<f64> {
    use std::io::{Read, Write};
    let threads: Vec<_> = (0..connections)
        .map(|_| {
            std::thread::spawn(move || {
                let mut c = std::net::TcpStream::connect(addr).unwrap();
                c.set_nodelay(true).unwrap();
                c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
                let (req, mut resp) = ([7u8; 64], [0u8; 64]);
                (0..per_connection)
                    .map(|_| {
                        let t = std::time::Instant::now();
                        c.write_all(&req).unwrap();
                        c.read_exact(&mut resp).unwrap();
                        t.elapsed().as_secs_f64() * 1e3
                    })
                    .collect::<Vec<f64>>()
            })
        })
        .collect();
    let mut all: Vec<f64> = threads
        .into_iter()
        .flat_map(|t| t.join().unwrap())
        .collect();
    all.sort_by(f64::total_cmp);
    all
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
    let control = control_latencies_ms(server.addr, 1, 15);
    let control_p50 = control[control.len() / 2];
    assert!(
        (DELAY_MS as f64..control_p50 + DELAY_MS as f64).contains(&service_p50),
        "service p50 {service_p50} ms, control {control:?} ms"
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
    let p50 = r.latency.value_at_quantile(0.5) as f64 / 1e6;
    // Charged for the timer or for queueing, the typical request would count at least
    // one more delay than the same machine's own round trip (control: plain clients,
    // same server). The median, not a tail: a stall of this shared machine during one
    // run and not the other moves the tails of either.
    let control = control_latencies_ms(server.addr, 8, 5);
    let control_p50 = control[control.len() / 2];
    assert!(
        (DELAY_MS as f64..control_p50 + DELAY_MS as f64 / 2.0).contains(&p50),
        "corrected p50 {p50} ms, control {control:?} ms"
    );
}
