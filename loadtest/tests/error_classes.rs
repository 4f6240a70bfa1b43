//! Each error class, produced by a server that misbehaves on purpose.
mod common;

use std::{io::Write, net::TcpListener, time::Duration};

use common::{cert, read_n, short, start, TestServer};
use sluice_loadtest::{
    connect::{self, ConnectOptions},
    rr::{self, RrOptions},
    throughput::{self, ThroughputOptions},
    tls::{self, Roots},
    Direction, ErrorClass, RunResult, ServeMode,
};

const SIZE: usize = 64;

fn rr_against(server: &TestServer) -> RunResult {
    let client = short(server.addr, 300).timeout(Duration::from_millis(150));
    rr::run(&RrOptions::new(client).size(SIZE)).unwrap()
}

fn only(r: &RunResult, class: ErrorClass) {
    assert!(
        r.errors.get(class) > 0,
        "no {class:?} in {:?} ({:?})",
        r.errors,
        r.samples
    );
    assert_eq!(
        r.errors.get(class),
        r.errors.total(),
        "other classes too: {:?} ({:?})",
        r.errors,
        r.samples
    );
}

#[test]
fn closes_early_is_short_read() {
    let server = TestServer::start(|mut c| {
        // Half of the echo, then close.
        let req = read_n(&mut c, SIZE);
        let _ = c.write_all(&req[..req.len() / 2]);
    });
    let r = rr_against(&server);
    only(&r, ErrorClass::ShortRead);
    assert_eq!(r.ops, 0);
}

#[test]
fn reset_is_reset() {
    let server = TestServer::start(|mut c| {
        let _ = read_n(&mut c, SIZE);
        socket2::SockRef::from(&c)
            .set_linger(Some(Duration::ZERO))
            .unwrap();
    });
    let r = rr_against(&server);
    only(&r, ErrorClass::Reset);
}

#[test]
fn corrupted_byte_is_data_mismatch() {
    let server = TestServer::start(|mut c| loop {
        let mut req = read_n(&mut c, SIZE);
        if req.len() < SIZE {
            return;
        }
        req[SIZE / 2] ^= 0x40;
        if c.write_all(&req).is_err() {
            return;
        }
    });
    let r = rr_against(&server);
    only(&r, ErrorClass::DataMismatch);
    assert_eq!(r.ops, 0);
}

#[test]
fn stall_is_timeout() {
    let server = TestServer::start(|mut c| {
        let _ = read_n(&mut c, SIZE);
        // Never answer; wait for the client to give up and close.
        let _ = read_n(&mut c, 1);
    });
    let r = rr_against(&server);
    only(&r, ErrorClass::Timeout);
}

#[test]
fn nobody_listening_is_refused() {
    let addr = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let r = connect::run(&ConnectOptions::new(short(addr, 100))).unwrap();
    only(&r, ErrorClass::Refused);
    assert_eq!(r.conns.failed, r.conns.attempted);
}

#[test]
fn tls_against_plain_echo_is_tls() {
    let server = start(ServeMode::Echo, 1, common::drivers()[0]);
    let client_tls = tls::client_options(Roots::Insecure, "localhost").unwrap();
    let r = connect::run(&ConnectOptions::new(
        short(server.local_addr(), 100).tls(Some(client_tls)),
    ))
    .unwrap();
    only(&r, ErrorClass::Tls);
    server.stop().unwrap();
}

#[test]
fn untrusted_certificate_is_tls() {
    let (chain, key) = cert();
    let config = tls::server_config(chain, key).unwrap();
    let server = sluice_loadtest::serve(
        sluice_loadtest::ServeOptions::new("127.0.0.1:0".parse().unwrap()).tls(Some(config)),
        sluice_loadtest::Shutdown::new(),
    )
    .unwrap();
    let (other, _) = cert();
    let client_tls = tls::client_options(Roots::Certs(other), "localhost").unwrap();
    let r = connect::run(&ConnectOptions::new(
        short(server.local_addr(), 100).tls(Some(client_tls)),
    ))
    .unwrap();
    only(&r, ErrorClass::Tls);
    assert!(
        r.samples.iter().any(|s| s.contains("certificate")),
        "{:?}",
        r.samples
    );
    server.stop().unwrap();
}

#[test]
fn source_that_stops_is_short_read_and_wrong_bytes_mismatch() {
    let server = TestServer::start(|mut c| {
        let _ = c.write_all(&sluice_loadtest::pattern::buffer(10_000)[..10_000]);
    });
    let o = ThroughputOptions::new(short(server.addr, 200)).direction(Direction::Down);
    only(&throughput::run(&o).unwrap(), ErrorClass::ShortRead);

    let garbage = TestServer::start(|mut c| {
        let _ = c.write_all(&[7u8; 4096]);
        let _ = read_n(&mut c, 1);
    });
    let o = ThroughputOptions::new(short(garbage.addr, 200)).direction(Direction::Down);
    only(&throughput::run(&o).unwrap(), ErrorClass::DataMismatch);
    // Unless verification is off: then the bytes count.
    let o = ThroughputOptions::new(short(garbage.addr, 200).timeout(Duration::from_millis(50)))
        .direction(Direction::Down)
        .verify(false);
    let r = throughput::run(&o).unwrap();
    assert!(
        r.errors.get(ErrorClass::DataMismatch) == 0 && r.bytes_received > 0,
        "{:?}",
        r.errors
    );
}
