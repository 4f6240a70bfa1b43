//! The pool-of-blocking-clients model (`--model blocking`): `connect` and `rr` on OS
//! threads against the library's own `serve`, plain and TLS; one thread is one
//! connection at a time; failures are classified as in the async model; every run
//! ends by itself at the end of its window; the binary accepts and reports the model.
mod common;

use std::{
    io::Write,
    process::Command,
    sync::Arc,
    time::{Duration, Instant},
};

use common::{cert, drivers, short, start, TestServer};
use sluice_loadtest::{
    connect::{self, ConnectOptions},
    rr::{self, RrOptions},
    runtime::DriverKind,
    serve,
    tls::{self, Roots},
    ClientModel, ErrorClass, ServeMode, ServeOptions, Shutdown,
};

const BIN: &str = env!("CARGO_BIN_EXE_sluice-load");

#[test]
fn connect_on_a_pool_of_threads_cycles_and_verifies() {
    let server = start(ServeMode::Echo, 1, drivers()[0]);
    let o = ConnectOptions::new(short(server.local_addr(), 1000))
        .concurrency(8)
        .size(64)
        .model(ClientModel::Blocking);
    let r = connect::run(&o).unwrap();
    assert_eq!(r.errors.total(), 0, "{:?}", r.samples);
    assert_eq!(r.driver, DriverKind::Blocking);
    // More connections than threads: the threads cycle (not a rate; CI is noisy).
    assert!(r.ops > 16, "only {} connections", r.ops);
    assert!(r.conns.opened >= r.ops);
    assert_eq!(r.latency.len(), r.ops);
    assert!(r.conns.peak_open <= 8, "peak {}", r.conns.peak_open);
    assert_eq!(r.conns.held, 0, "connect holds nothing at the end");
    server.stop().unwrap();
}

#[test]
fn one_thread_is_one_connection_at_a_time() {
    let server = start(ServeMode::Echo, 1, drivers()[0]);
    for size in [0, 64] {
        let o = ConnectOptions::new(short(server.local_addr(), 1500))
            .concurrency(1)
            .size(size)
            .model(ClientModel::Blocking);
        let r = connect::run(&o).unwrap();
        assert_eq!(r.errors.total(), 0, "size {size}: {:?}", r.samples);
        // Connections one after another on the one thread (not a rate: a connect that
        // waits for a SYN retransmission takes 1 s of the window).
        assert!(r.ops >= 2, "size {size}: only {} connections", r.ops);
        assert_eq!(r.conns.peak_open, 1, "size {size}");
    }
    server.stop().unwrap();
}

#[test]
fn rr_on_a_pool_of_threads_keeps_its_connections() {
    let server = start(ServeMode::Echo, 1, drivers()[0]);
    let o = RrOptions::new(short(server.local_addr(), 1000))
        .connections(4)
        .size(100)
        .model(ClientModel::Blocking);
    let r = rr::run(&o).unwrap();
    assert_eq!(r.errors.total(), 0, "{:?}", r.samples);
    assert!(r.ops > 16, "only {} requests", r.ops);
    assert_eq!(r.conns.opened, 4);
    assert_eq!(r.conns.held, 4);
    server.stop().unwrap();
}

#[test]
fn tls_connect_and_rr_on_a_pool_of_threads() {
    let (chain, key) = cert();
    let config = tls::server_config(chain.clone(), key).unwrap();
    let server = serve(
        ServeOptions::new("127.0.0.1:0".parse().unwrap()).tls(Some(Arc::clone(&config))),
        Shutdown::new(),
    )
    .unwrap();
    let client_tls = tls::client_options(Roots::Certs(chain), "localhost").unwrap();
    let base = short(server.local_addr(), 1000).tls(Some(client_tls));
    let r = connect::run(
        &ConnectOptions::new(base.clone())
            .concurrency(2)
            .model(ClientModel::Blocking),
    )
    .unwrap();
    assert_eq!(r.errors.total(), 0, "{:?}", r.samples);
    assert!(r.ops > 2, "only {} connections", r.ops);
    let r = rr::run(
        &RrOptions::new(base)
            .connections(2)
            .size(3000)
            .model(ClientModel::Blocking),
    )
    .unwrap();
    assert_eq!(r.errors.total(), 0, "{:?}", r.samples);
    assert!(r.ops > 4, "only {} requests", r.ops);
    server.stop().unwrap();
}

#[test]
fn failures_are_classified_and_runs_end_on_time() {
    // Refused: nobody listens on a port that was just freed.
    let freed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let t0 = Instant::now();
    let o = ConnectOptions::new(short(freed, 200))
        .concurrency(2)
        .model(ClientModel::Blocking);
    let r = connect::run(&o).unwrap();
    assert!(r.errors.get(ErrorClass::Refused) > 0, "{:?}", r.samples);
    assert_eq!(r.ops, 0);
    assert!(t0.elapsed() < Duration::from_secs(3), "{:?}", t0.elapsed());

    // Timeout: a server that reads and never answers; the run still ends within its
    // window plus one timeout.
    let silent = TestServer::start(|mut c| {
        let _ = common::read_n(&mut c, 1 << 20);
    });
    let t0 = Instant::now();
    let client = short(silent.addr, 200).timeout(Duration::from_millis(300));
    let o = ConnectOptions::new(client)
        .concurrency(2)
        .model(ClientModel::Blocking);
    let r = connect::run(&o).unwrap();
    assert!(r.errors.get(ErrorClass::Timeout) > 0, "{:?}", r.samples);
    assert!(t0.elapsed() < Duration::from_secs(3), "{:?}", t0.elapsed());

    // Data mismatch: a server that answers with the wrong bytes.
    let liar = TestServer::start(|mut c| {
        let req = common::read_n(&mut c, 32);
        let _ = c.write_all(&vec![0xAA; req.len()]);
    });
    let o = ConnectOptions::new(short(liar.addr, 200))
        .concurrency(1)
        .model(ClientModel::Blocking);
    let r = connect::run(&o).unwrap();
    assert!(
        r.errors.get(ErrorClass::DataMismatch) > 0,
        "{:?}",
        r.samples
    );
    assert_eq!(r.ops, 0);
}

#[test]
fn open_loop_and_oversized_pools_are_refused() {
    let addr = "127.0.0.1:9".parse().unwrap();
    let o = ConnectOptions::new(short(addr, 100))
        .concurrency(2)
        .rate(Some(100.0))
        .model(ClientModel::Blocking);
    assert!(connect::run(&o).is_err());
    let o = ConnectOptions::new(short(addr, 100))
        .concurrency(5000)
        .model(ClientModel::Blocking);
    let e = connect::run(&o).unwrap_err().to_string();
    assert!(e.contains("--concurrency"), "{e}");
}

#[test]
fn the_binary_runs_the_blocking_model_and_says_so() {
    let server = start(ServeMode::Echo, 1, drivers()[0]);
    let addr = server.local_addr().to_string();
    let bad = |args: &[&str], needle: &str| {
        let out = Command::new(BIN).args(args).output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains(needle), "{args:?}: {stderr}");
    };
    bad(
        &[
            "connect", "--target", &addr, "--model", "blocking", "--rate", "10",
        ],
        "--model async",
    );
    bad(
        &[
            "connect",
            "--target",
            &addr,
            "--model",
            "blocking",
            "--concurrency",
            "4",
            "--threads",
            "2",
        ],
        "one thread per client",
    );
    bad(
        &["connect", "--target", &addr, "--model", "fibers"],
        "fibers",
    );

    let out = Command::new(BIN)
        .args([
            "connect",
            "--target",
            &addr,
            "--model",
            "blocking",
            "--concurrency",
            "3",
            "--size",
            "64",
            "--duration",
            "300ms",
            "--quiet",
            "--json",
            "-",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["command"], "connect");
    assert_eq!(v["machine"]["driver"], "blocking");
    assert_eq!(v["settings"]["threads"], 3);
    assert_eq!(v["settings"]["concurrency"], 3);
    assert_eq!(v["errors"]["total"], 0);
    assert!(v["totals"]["ops"].as_u64().unwrap() > 10);
    server.stop().unwrap();
}
