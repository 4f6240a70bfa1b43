//! End-to-end: slow and stalling peers are closed at their timeouts and hold nothing
//! others need. At once, against one edge: public clients that send their ClientHello
//! one byte a second on the `tls://` port; on the agent port, connections that say
//! nothing, that trickle a TLS handshake, that finish TLS but never send Hello, and
//! plain data channels that stop inside their header. Meanwhile ordinary clients keep
//! being served through the same edge with low latency. The edge's timeouts are 10 s
//! (`tls_port::HELLO_TIMEOUT`, `AGENT_HANDSHAKE_TIMEOUT`); every case runs
//! concurrently, both drivers too, so the test takes about that long once.

use std::{
    io::{Read, Write},
    net::SocketAddr,
    sync::{
        atomic::{AtomicBool, AtomicUsize, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use rustls::{ClientConnection, StreamOwned};
use rustls_pki_types::{pem::PemObject, CertificateDer, ServerName};
use sluice_tests::{
    client,
    fixture::{self, Fixture},
    process::Sluice,
    tls_peers::{client_config, tls_echo, TlsEcho},
    upstream::Echo,
    wait_until, DRIVERS,
};

const TIMEOUT: Duration = Duration::from_secs(10);
/// Closing may come this much late on a loaded machine (timers, scheduling).
const LATE: Duration = Duration::from_secs(3);
/// Peers of each slow kind per edge.
const EACH: usize = 8;

struct Edge {
    fx: Fixture,
    edge: Sluice,
    _agent: Sluice,
    agent_port: SocketAddr,
    tls_port: SocketAddr,
    tcp_public: SocketAddr,
    tls_up: TlsEcho,
    _echo: Echo,
}

fn start(driver: &str) -> Edge {
    let fx = Fixture::new();
    let tls_up = TlsEcho::start(&["app.acme.example"]);
    let echo = Echo::start();
    let edge_yaml = format!(
        "{}  - url: tls://app.acme.example\n    traffic_policy: {}\n  - url: tcp://127.0.0.1:0\n    traffic_policy: {}\n",
        fx.tls_edge_head(),
        fixture::forward_all("tls://app.internal:443"),
        fixture::forward_all("tcp://echo.internal:7"),
    );
    let mut edge = Sluice::edge(&fx.write("edge.yml", &edge_yaml), driver);
    let (agent_port, eps) = edge.edge_addrs(1);
    let tls_port = edge.tls_endpoints_addr();
    let agent_yaml = fx.agent_yaml(
        &fx.token,
        agent_port,
        "tls",
        &[
            ("tls://app.internal:443", tls_up.addr),
            ("tcp://echo.internal:7", echo.addr),
        ],
    );
    let mut agent = Sluice::agent(&fx.write("agent.yml", &agent_yaml), driver);
    agent.wait_for_n("both endpoints bound", 2, |v| {
        v["message"] == "endpoint bound"
    });
    Edge {
        fx,
        edge,
        _agent: agent,
        agent_port,
        tls_port,
        tcp_public: eps[0],
        tls_up,
        _echo: echo,
    }
}

/// A ClientHello as rustls would send it for `name`.
fn client_hello(name: &str) -> Vec<u8> {
    let config = client_config(&[]);
    let mut conn =
        ClientConnection::new(config, ServerName::try_from(name.to_string()).unwrap()).unwrap();
    let mut hello = Vec::new();
    conn.write_tls(&mut hello).unwrap();
    hello
}

/// Connects, writes `prefix` at once and then `trickle` one byte a second, until the
/// peer closes; returns how long after connecting it closed (or panics after
/// `TIMEOUT + LATE`).
fn stall(
    target: SocketAddr,
    prefix: &[u8],
    trickle: Vec<u8>,
    ready: Arc<AtomicUsize>,
    what: String,
) -> Duration {
    let started = Instant::now();
    let mut s = client::connect_from(None, target).unwrap();
    s.set_read_timeout(Some(TIMEOUT + LATE)).unwrap();
    if !prefix.is_empty() {
        s.write_all(prefix).unwrap();
    }
    ready.fetch_add(1, Ordering::SeqCst);
    let closed = Arc::new(AtomicBool::new(false));
    let writer = {
        let mut w = s.try_clone().unwrap();
        let closed = closed.clone();
        std::thread::spawn(move || {
            for b in trickle {
                if closed.load(Ordering::Relaxed) || w.write_all(&[b]).is_err() {
                    return;
                }
                std::thread::sleep(Duration::from_secs(1));
            }
        })
    };
    let mut buf = [0u8; 4096];
    let result = loop {
        match s.read(&mut buf) {
            Ok(0) => break Ok(started.elapsed()),
            Ok(_) => continue, // e.g. the edge's TLS handshake messages
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {
                break Ok(started.elapsed())
            }
            Err(e) => break Err(e),
        }
    };
    closed.store(true, Ordering::Relaxed);
    writer.join().unwrap();
    result.unwrap_or_else(|e| panic!("{what}: not closed after {:?}: {e}", started.elapsed()))
}

/// Finishes a TLS handshake with the edge's agent port and then says nothing.
fn silent_after_tls(
    target: SocketAddr,
    ca: CertificateDer<'static>,
    ready: Arc<AtomicUsize>,
    what: String,
) -> Duration {
    let started = Instant::now();
    let tcp = client::connect_from(None, target).unwrap();
    tcp.set_read_timeout(Some(TIMEOUT + LATE)).unwrap();
    let conn = ClientConnection::new(
        client_config(&[&ca]),
        ServerName::try_from("localhost").unwrap(),
    )
    .unwrap();
    let mut tls = StreamOwned::new(conn, tcp);
    while tls.conn.is_handshaking() {
        tls.conn
            .complete_io(&mut tls.sock)
            .unwrap_or_else(|e| panic!("{what}: handshake: {e}"));
    }
    ready.fetch_add(1, Ordering::SeqCst);
    let mut buf = [0u8; 64];
    match tls.read(&mut buf) {
        Ok(0) => {}
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::ConnectionReset | std::io::ErrorKind::UnexpectedEof
            ) => {}
        other => panic!("{what}: expected a close, got {other:?}"),
    }
    started.elapsed()
}

/// Runs ordinary clients (TCP echo and TLS through SNI) until `stop`; when each round
/// (one of each) started and ended.
fn ordinary_clients(
    e: &Edge,
    stop: Arc<AtomicBool>,
    what: String,
) -> std::thread::JoinHandle<Vec<(Instant, Instant)>> {
    let (tcp, tls_port) = (e.tcp_public, e.tls_port);
    let config = client_config(&[&e.tls_up.cert]);
    std::thread::spawn(move || {
        let mut rounds = Vec::new();
        while !stop.load(Ordering::Relaxed) {
            let t = Instant::now();
            client::echo_ok(None, tcp, b"ordinary")
                .unwrap_or_else(|err| panic!("{what}: tcp: {err}"));
            tls_echo(
                tls_port,
                config.clone(),
                "app.acme.example",
                4096,
                b"ordinary",
            )
            .unwrap_or_else(|err| panic!("{what}: tls: {err}"));
            rounds.push((t, Instant::now()));
            // Pacing of the ordinary clients, not a wait for the edge.
            std::thread::sleep(Duration::from_millis(100));
        }
        rounds
    })
}

fn check(times: &[Duration], what: &str) -> Duration {
    for t in times {
        assert!(
            *t >= TIMEOUT - Duration::from_millis(300) && *t <= TIMEOUT + LATE,
            "{what}: closed after {t:?}, timeout {TIMEOUT:?}"
        );
    }
    *times.iter().max().unwrap()
}

fn run(driver: &'static str) {
    let mut e = start(driver);
    let ca = CertificateDer::from_pem_file(e.fx.path("edge.crt")).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let ordinary = ordinary_clients(&e, stop.clone(), format!("{driver}: ordinary"));

    let hello = client_hello("app.acme.example");
    let (agent, tls) = (e.agent_port, e.tls_port);
    // Slow peers connected (and past what they send at once).
    let ready = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let mut kinds: Vec<(&str, Vec<std::thread::JoinHandle<Duration>>)> = Vec::new();
    let spawn_each = |f: &dyn Fn(usize) -> Box<dyn FnOnce() -> Duration + Send>| {
        (0..EACH)
            .map(|i| std::thread::spawn(f(i)))
            .collect::<Vec<_>>()
    };
    kinds.push((
        "ClientHello one byte a second on the tls port",
        spawn_each(&|i| {
            let (hello, ready) = (hello.clone(), ready.clone());
            Box::new(move || stall(tls, &[], hello, ready, format!("{driver}: slow hello {i}")))
        }),
    ));
    kinds.push((
        "silent connection on the agent port",
        spawn_each(&|i| {
            let ready = ready.clone();
            Box::new(move || {
                stall(
                    agent,
                    &[],
                    Vec::new(),
                    ready,
                    format!("{driver}: silent {i}"),
                )
            })
        }),
    ));
    kinds.push((
        "TLS handshake one byte a second on the agent port",
        spawn_each(&|i| {
            let (hello, ready) = (hello.clone(), ready.clone());
            Box::new(move || {
                stall(
                    agent,
                    &[],
                    hello,
                    ready,
                    format!("{driver}: slow agent tls {i}"),
                )
            })
        }),
    ));
    kinds.push((
        "data channel stopping inside its header",
        // Magic, then 3 of the frame length's 4 bytes.
        spawn_each(&|i| {
            let ready = ready.clone();
            Box::new(move || {
                stall(
                    agent,
                    b"SLDC\x00\x00\x00",
                    Vec::new(),
                    ready,
                    format!("{driver}: data channel {i}"),
                )
            })
        }),
    ));
    kinds.push((
        "control channel: TLS done, no Hello",
        spawn_each(&|i| {
            let (ca, ready) = (ca.clone(), ready.clone());
            Box::new(move || silent_after_tls(agent, ca, ready, format!("{driver}: no hello {i}")))
        }),
    ));

    let slow_peers = kinds.iter().map(|k| k.1.len()).sum::<usize>();
    wait_until("every slow peer connected", TIMEOUT, || {
        ready.load(Ordering::SeqCst) == slow_peers
    });
    let all_stalling = Instant::now();
    let mut report = Vec::new();
    let mut first_close = None::<Duration>;
    for (kind, handles) in kinds {
        let times: Vec<Duration> = handles.into_iter().map(|h| h.join().unwrap()).collect();
        let slowest = check(&times, &format!("{driver}: {kind}"));
        let earliest = *times.iter().min().unwrap();
        first_close = Some(first_close.map_or(earliest, |f| f.min(earliest)));
        report.push(format!(
            "{kind}: {EACH} closed by {:.2} s",
            slowest.as_secs_f64()
        ));
    }
    stop.store(true, Ordering::Relaxed);
    let rounds = ordinary.join().unwrap();
    let served = rounds.len();
    // Every slow peer was closed at least this long after the earliest connected (each
    // measures from its own connect, which came after `started`).
    let first_close = started + first_close.unwrap();
    // Ordering, not speed: ordinary clients were served whole while every slow peer
    // was connected and not yet closed. Had the slow peers held anything ordinary
    // clients need, no round could finish before the edge's timeouts closed them.
    let inside = rounds
        .iter()
        .filter(|(from, to)| *from >= all_stalling && *to <= first_close)
        .count();
    assert!(
        inside >= 2,
        "{driver}: {inside} ordinary rounds served while the slow peers stalled ({served} in all)"
    );
    let slowest = rounds.iter().map(|(f, t)| *t - *f).max().unwrap();
    for (message, n) in [
        ("tls endpoint: no ClientHello in time; closed", EACH),
        (
            "agent connection silent past the handshake timeout; closed",
            EACH,
        ),
        ("agent TLS handshake timed out", EACH),
        (
            "data channel silent past the handshake timeout; closed",
            EACH,
        ),
        ("agent sent no hello in time; closed", EACH),
    ] {
        e.edge.wait_for_n(message, n, |v| v["message"] == message);
    }
    assert!(e.edge.is_running());
    println!(
        "slow_peers/{driver}: {}; meanwhile {served} ordinary tcp+tls rounds, slowest {:.0} ms",
        report.join("; "),
        slowest.as_secs_f64() * 1e3
    );
}

#[test]
fn slow_and_stalled_peers_are_closed_at_their_timeouts_while_others_are_served() {
    let runs: Vec<_> = DRIVERS
        .iter()
        .map(|d| std::thread::spawn(move || run(d)))
        .collect();
    let mut failed = None;
    for r in runs {
        if let Err(p) = r.join() {
            failed.get_or_insert(p);
        }
    }
    if let Some(p) = failed {
        std::panic::resume_unwind(p);
    }
}
