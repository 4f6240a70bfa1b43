//! Every command against the library's own `serve`, on both drivers, plain and TLS.
mod common;

use std::{sync::Arc, time::Duration};

use common::{cert, drivers, short, start};
use sluice_loadtest::{
    connect::{self, ConnectOptions},
    rr::{self, RrOptions},
    serve,
    throughput::{self, ThroughputOptions},
    tls::{self, Roots},
    Direction, ServeMode, ServeOptions, Shutdown,
};

#[test]
fn rr_closed_loop_on_both_drivers() {
    for d in drivers() {
        let server = start(ServeMode::Echo, 1, d);
        let o = RrOptions::new(short(server.local_addr(), 300).driver(d))
            .connections(4)
            .size(100);
        let r = rr::run(&o).unwrap();
        assert_eq!(r.errors.total(), 0, "{d:?}: {:?}", r.samples);
        assert!(r.ops > 10, "{d:?}: only {} requests", r.ops);
        assert_eq!(r.latency.len(), r.ops);
        assert_eq!(r.conns.opened, 4);
        assert_eq!(r.conns.held, 4);
        server.stop().unwrap();
    }
}

#[test]
fn rr_open_loop_keeps_the_rate() {
    let server = start(ServeMode::Echo, 1, common::drivers()[0]);
    let client = short(server.local_addr(), 2000).warmup(Duration::from_millis(200));
    let o = RrOptions::new(client).connections(2).rate(Some(400.0));
    let r = rr::run(&o).unwrap();
    assert_eq!(r.errors.total(), 0, "{:?}", r.samples);
    assert_open_loop_count(&r, 400);
    assert_eq!(r.service.len(), r.ops);
    server.stop().unwrap();
}

/// The count of an open-loop run of `rate`/s over a 2 s window follows from the
/// schedule (loadtest/src/pace.rs), not from the machine's speed: slots are absolute,
/// a late one is sent late rather than dropped, and an operation counts in the
/// second its slot was intended for. The second second is entirely after the
/// schedule began (the worker may start late, into the first second at worst), so it
/// holds exactly `rate` slots, give or take the one straddling each edge; the whole
/// window can hold no more than twice that.
fn assert_open_loop_count(r: &sluice_loadtest::RunResult, rate: u64) {
    assert_eq!(r.timeline.len(), 2, "{:?}", r.timeline);
    let second = r.timeline[1].ops;
    assert!(
        (rate - 1..=rate + 1).contains(&second),
        "{second} operations in the second second at {rate}/s"
    );
    assert!(
        r.ops <= 2 * rate + 1,
        "{} operations in 2 s at {rate}/s",
        r.ops
    );
}

#[test]
fn rr_from_a_bound_source_address() {
    let server = start(ServeMode::Echo, 1, drivers()[0]);
    for d in drivers() {
        let client = short(server.local_addr(), 200)
            .driver(d)
            .bind(Some("127.0.0.1".parse().unwrap()));
        let r = rr::run(&RrOptions::new(client)).unwrap();
        assert_eq!(r.errors.total(), 0, "{d:?}: {:?}", r.samples);
        assert!(r.ops > 2, "only {} requests", r.ops);
    }
    server.stop().unwrap();
}

#[test]
fn connect_cycles_and_verifies() {
    for d in drivers() {
        let server = start(ServeMode::Echo, 1, d);
        let o = ConnectOptions::new(short(server.local_addr(), 300).driver(d)).concurrency(4);
        let r = connect::run(&o).unwrap();
        assert_eq!(r.errors.total(), 0, "{d:?}: {:?}", r.samples);
        assert!(r.ops > 8, "{d:?}: only {} connections", r.ops);
        assert!(r.conns.opened >= r.ops);
        server.stop().unwrap();
    }
}

#[test]
fn connect_open_loop_keeps_the_rate() {
    for d in drivers() {
        let server = start(ServeMode::Echo, 1, d);
        // The warm-up lets the schedule start before the measured second, however late
        // the worker thread starts.
        let client = short(server.local_addr(), 2000)
            .driver(d)
            .warmup(Duration::from_millis(200));
        let o = ConnectOptions::new(client)
            .concurrency(8)
            .size(0)
            .rate(Some(500.0));
        let r = connect::run(&o).unwrap();
        assert_eq!(r.errors.total(), 0, "{d:?}: {:?}", r.samples);
        // A closed loop of 8 would run thousands a second.
        assert_open_loop_count(&r, 500);
        assert_eq!(r.service.len(), r.ops);
        server.stop().unwrap();
    }
}

#[test]
fn throughput_in_every_direction() {
    for d in drivers() {
        for (dir, mode) in [
            (Direction::Up, ServeMode::Sink),
            (Direction::Down, ServeMode::Source),
            (Direction::Both, ServeMode::Echo),
        ] {
            let server = start(mode, 1, d);
            let o = ThroughputOptions::new(short(server.local_addr(), 300).driver(d))
                .direction(dir)
                .streams(2);
            let r = throughput::run(&o).unwrap();
            assert_eq!(r.errors.total(), 0, "{d:?} {dir:?}: {:?}", r.samples);
            match dir {
                Direction::Up => assert!(r.bytes_sent > 1 << 20 && r.bytes_received == 0),
                Direction::Down => assert!(r.bytes_received > 1 << 20 && r.bytes_sent == 0),
                Direction::Both => assert!(r.bytes_sent > 1 << 20 && r.bytes_received > 1 << 20),
            }
            let timeline: u64 = r
                .timeline
                .iter()
                .map(|b| b.bytes_sent + b.bytes_received)
                .sum();
            assert_eq!(timeline, r.bytes_sent + r.bytes_received);
            server.stop().unwrap();
        }
    }
}

#[test]
fn tls_rr_connect_and_throughput() {
    let (chain, key) = cert();
    let config = tls::server_config(chain.clone(), key).unwrap();
    for d in drivers() {
        let server = serve(
            ServeOptions::new("127.0.0.1:0".parse().unwrap())
                .driver(d)
                .tls(Some(Arc::clone(&config))),
            Shutdown::new(),
        )
        .unwrap();
        let client_tls = tls::client_options(Roots::Certs(chain.clone()), "localhost").unwrap();
        let base = short(server.local_addr(), 300)
            .driver(d)
            .tls(Some(client_tls));
        let r = rr::run(&RrOptions::new(base.clone()).connections(2).size(3000)).unwrap();
        assert_eq!(r.errors.total(), 0, "{d:?}: {:?}", r.samples);
        assert!(r.ops > 4, "{d:?}: only {} requests", r.ops);
        let r = connect::run(&ConnectOptions::new(base.clone()).concurrency(2)).unwrap();
        assert_eq!(r.errors.total(), 0, "{d:?}: {:?}", r.samples);
        assert!(r.ops > 2, "{d:?}: only {} connections", r.ops);
        let r = throughput::run(&ThroughputOptions::new(base).direction(Direction::Both)).unwrap();
        assert_eq!(r.errors.total(), 0, "{d:?}: {:?}", r.samples);
        assert!(r.bytes_received > 1 << 20);
        server.stop().unwrap();
    }
}

#[test]
fn serve_reports_its_port_and_stops() {
    let server = start(ServeMode::Echo, 2, drivers()[0]);
    assert_ne!(server.local_addr().port(), 0);
    let r = rr::run(&RrOptions::new(short(server.local_addr(), 100)).connections(8)).unwrap();
    assert_eq!(r.errors.total(), 0, "{:?}", r.samples);
    assert!(common::wait_for(Duration::from_secs(2), || server
        .counters()
        .accepted
        .load(std::sync::atomic::Ordering::Relaxed)
        == 8));
    let addr = server.local_addr();
    server.stop().unwrap();
    // Nobody listens any more.
    assert!(std::net::TcpStream::connect(addr).is_err());
}
