//! End-to-end: the edge's agent port against outsiders and network observers. A
//! plain-TCP data channel's hello seen on the wire cannot be replayed; plain channels
//! are refused unless the edge allows them; the pre-authentication phase has one
//! deadline however slowly a peer drips it; unauthenticated connections are capped per
//! source; a flood of bad tokens leaves one audit event per source, not one each.

use std::{
    io::{Read, Write},
    net::{IpAddr, SocketAddr, TcpListener, TcpStream},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use rustls_pki_types::{pem::PemObject, CertificateDer, ServerName};
use sluice_tests::{
    admin::Admin,
    client,
    fixture::{self, Fixture},
    process::Sluice,
    upstream::Echo,
    wait_until,
};

const URL: &str = "tcp://db.internal:5432";
const DRIVER: &str = "uring";
const API_KEY: &str = "test-admin-key-agent-port-01";

/// An edge config: one user (the fixture's token), one endpoint to [`URL`], `agents`
/// settings appended to the `agents:` section.
fn edge_yaml(fx: &Fixture, agents_extra: &str) -> String {
    fx.edge_yaml("127.0.0.1:0", &[("127.0.0.1:0", fixture::forward_all(URL))])
        .replace("  plain_channels: true\n", agents_extra)
}

/// A TCP relay in front of `target` that records the first 59 bytes of every
/// connection opening with `SLDC` (a plain data channel's hello): what an observer on
/// the path between agent and edge sees.
struct Observer {
    addr: SocketAddr,
    seen: Arc<Mutex<Vec<Vec<u8>>>>,
}

impl Observer {
    fn start(target: SocketAddr) -> Observer {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let seen: Arc<Mutex<Vec<Vec<u8>>>> = Arc::default();
        let record = seen.clone();
        std::thread::spawn(move || {
            for inbound in listener.incoming() {
                let Ok(mut inbound) = inbound else { return };
                let Ok(mut outbound) = TcpStream::connect(target) else {
                    continue;
                };
                let record = record.clone();
                let (mut in2, mut out2) =
                    (inbound.try_clone().unwrap(), outbound.try_clone().unwrap());
                std::thread::spawn(move || {
                    let _ = std::io::copy(&mut out2, &mut in2);
                    let _ = in2.shutdown(std::net::Shutdown::Write);
                });
                std::thread::spawn(move || {
                    let mut head = [0u8; 59];
                    let mut got = 0;
                    while got < head.len() {
                        match inbound.read(&mut head[got..]) {
                            Ok(0) | Err(_) => break,
                            Ok(n) => got += n,
                        }
                        if got >= 4 && &head[..4] != b"SLDC" {
                            break;
                        }
                    }
                    if got == head.len() && &head[..4] == b"SLDC" {
                        record.lock().unwrap().push(head.to_vec());
                    }
                    if outbound.write_all(&head[..got]).is_ok() {
                        let _ = std::io::copy(&mut inbound, &mut outbound);
                    }
                    let _ = outbound.shutdown(std::net::Shutdown::Write);
                });
            }
        });
        Observer { addr, seen }
    }
}

#[test]
fn a_plain_channel_hello_seen_on_the_wire_cannot_be_replayed() {
    let fx = Fixture::new();
    let mut edge = Sluice::edge(
        &fx.write("edge.yml", &edge_yaml(&fx, "  plain_channels: true\n")),
        DRIVER,
    );
    let (agent_addr, public) = edge.edge_addrs(1);
    let observer = Observer::start(agent_addr);
    let upstream = Echo::start();
    let yaml = fx.agent_yaml(&fx.token, observer.addr, "tcp", &[(URL, upstream.addr)]);
    let mut agent = Sluice::agent(&fx.write("agent.yml", &yaml), DRIVER);
    agent.wait_for("endpoint bound");
    client::wait_until_echo(public[0], Duration::from_secs(10)).unwrap();
    wait_until("a channel hello observed", Duration::from_secs(10), || {
        !observer.seen.lock().unwrap().is_empty()
    });
    let hello = observer.seen.lock().unwrap()[0].clone();
    let session_id = u64::from_be_bytes(hello[11..19].try_into().unwrap());

    // Replayed from another address, straight to the edge: refused and closed.
    for _ in 0..3 {
        let mut replay =
            client::connect_from(Some("127.0.0.2".parse().unwrap()), agent_addr).unwrap();
        replay.write_all(&hello).unwrap();
        assert!(
            client::closed_within(&mut replay, Duration::from_secs(5)),
            "a replayed channel hello was parked"
        );
    }
    edge.wait_for_n("replay refused", 1, |v| {
        v["message"] == "data channel refused; closed"
            && v["reason"] == "replayed channel hello"
            && v["session"] == session_id
    });
    // Nothing the observer saw reveals the session secret: the welcome went over TLS
    // and a hello carries only a number and a MAC; the tunnel keeps working.
    for i in 0..20 {
        client::echo_ok(None, public[0], format!("after replay {i}").as_bytes()).unwrap();
    }
}

#[test]
fn plain_channels_are_refused_unless_the_edge_allows_them() {
    let fx = Fixture::new();
    // Default: no plain_channels key.
    let mut edge = Sluice::edge(&fx.write("edge.yml", &edge_yaml(&fx, "")), DRIVER);
    let (agent_addr, public) = edge.edge_addrs(1);
    let upstream = Echo::start();
    let tcp_yaml = fx.agent_yaml(&fx.token, agent_addr, "tcp", &[(URL, upstream.addr)]);
    let mut tcp_agent = Sluice::agent(&fx.write("tcp.yml", &tcp_yaml), DRIVER);
    let (code, log) = tcp_agent.wait_exit_and_log();
    assert_eq!(
        code,
        Some(2),
        "a configuration that can never work ends the agent: {log}"
    );
    assert!(
        log.contains("does not accept plain-TCP data channels"),
        "{log}"
    );
    let mut raw = client::connect_from(None, agent_addr).unwrap();
    raw.write_all(b"SLDC").unwrap();
    assert!(client::closed_within(&mut raw, Duration::from_secs(5)));
    edge.wait_for("plain-TCP data channel refused: this edge does not accept them (agents.plain_channels: false)");
    // The same edge serves a tls agent.
    let tls_yaml = fx.agent_yaml(&fx.token, agent_addr, "tls", &[(URL, upstream.addr)]);
    let mut tls_agent = Sluice::agent(&fx.write("tls.yml", &tls_yaml), DRIVER);
    tls_agent.wait_for("endpoint bound");
    client::wait_until_echo(public[0], Duration::from_secs(10)).unwrap();
}

#[test]
fn a_dripped_handshake_is_cut_at_one_deadline() {
    let fx = Fixture::new();
    let extra = "  plain_channels: true\n  handshake_timeout: 3s\n";
    let mut edge = Sluice::edge(&fx.write("edge.yml", &edge_yaml(&fx, extra)), DRIVER);
    let (agent_addr, public) = edge.edge_addrs(1);
    let started = Instant::now();
    let mut drip = client::connect_from(None, agent_addr).unwrap();
    // Silent for 2 s (within the first-byte wait), then a TLS record header announcing
    // a large ClientHello, then one byte every 200 ms.
    std::thread::sleep(Duration::from_secs(2));
    drip.write_all(&[0x16, 0x03, 0x01, 0x02, 0x00]).unwrap();
    drip.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let mut buf = [0u8; 64];
    let closed_after = loop {
        if drip.write_all(&[0x01]).is_err() {
            break started.elapsed();
        }
        match drip.read(&mut buf) {
            Ok(0) => break started.elapsed(),
            Ok(_) => {}
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(_) => break started.elapsed(),
        }
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "the drip was never cut"
        );
    };
    // One 3 s deadline from accept; separate first-byte and handshake limits would
    // have allowed 2 s + 3 s.
    assert!(
        closed_after < Duration::from_millis(4_500),
        "dripping peer held for {closed_after:?}"
    );
    // An agent still connects.
    let upstream = Echo::start();
    let yaml = fx.agent_yaml(&fx.token, agent_addr, "tls", &[(URL, upstream.addr)]);
    let mut agent = Sluice::agent(&fx.write("agent.yml", &yaml), DRIVER);
    agent.wait_for("endpoint bound");
    client::wait_until_echo(public[0], Duration::from_secs(10)).unwrap();
}

#[test]
fn unauthenticated_connections_are_capped_per_source() {
    let fx = Fixture::new();
    let extra = "  plain_channels: true\n  max_unauthenticated_per_ip: 4\n";
    let mut edge = Sluice::edge(&fx.write("edge.yml", &edge_yaml(&fx, extra)), DRIVER);
    let (agent_addr, public) = edge.edge_addrs(1);
    let squatter: IpAddr = "127.0.0.3".parse().unwrap();
    // The edge accepts them on two workers in any order: one of the five, whichever
    // came last, is closed at once; the other four wait for their deadline (10 s).
    // The one over the cap may be reset before `connect` has even returned.
    let mut conns = Vec::new();
    let mut reset_while_connecting = 0;
    for _ in 0..5 {
        match client::connect_from(Some(squatter), agent_addr) {
            Ok(c) => conns.push(c),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {
                reset_while_connecting += 1
            }
            Err(e) => panic!("connect to the agent port: {e}"),
        }
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut closed = vec![false; conns.len()];
    closed.extend(std::iter::repeat_n(true, reset_while_connecting));
    while Instant::now() < deadline && !closed.iter().any(|c| *c) {
        for (i, c) in conns.iter_mut().enumerate() {
            closed[i] |= client::closed_within(c, Duration::from_millis(50));
        }
    }
    for (i, c) in conns.iter_mut().enumerate() {
        closed[i] |= client::closed_within(c, Duration::from_millis(200));
    }
    assert_eq!(
        closed.iter().filter(|c| **c).count(),
        1,
        "one silent connection over the cap of 4 from one source is closed at once: {closed:?}"
    );
    edge.wait_for_n("refused over the cap", 1, |v| {
        v["message"] == "agent port connection refused before authentication"
            && v["limit"] == "max_unauthenticated_per_ip"
    });
    // Another source (the agent) is not affected, and its many data channels are not
    // held to the per-source cap once its session is up.
    let upstream = Echo::start();
    let yaml = fx
        .agent_yaml(&fx.token, agent_addr, "tcp", &[(URL, upstream.addr)])
        .replace("data_channels: 4", "data_channels: 32");
    let mut agent = Sluice::agent(&fx.write("agent.yml", &yaml), DRIVER);
    agent.wait_for("endpoint bound");
    for i in 0..50 {
        client::echo_ok(None, public[0], format!("{i}").as_bytes()).unwrap();
    }
    drop(conns);
}

/// A `Hello` frame of the current protocol, encoded independently of sluice.
fn hello_frame(token: &str) -> Vec<u8> {
    let mut body = vec![1u8];
    body.extend_from_slice(&sluice_tests::PROTOCOL_VERSION.to_be_bytes());
    for s in [token, "flood"] {
        body.extend_from_slice(&(s.len() as u16).to_be_bytes());
        body.extend_from_slice(s.as_bytes());
    }
    body.extend_from_slice(&15_000u32.to_be_bytes());
    let mut frame = (body.len() as u32).to_be_bytes().to_vec();
    frame.extend_from_slice(&body);
    frame
}

/// Sends a hello with a wrong token over TLS from `source`; true if the edge answered
/// (with its refusal) and closed.
fn bad_hello(agent_addr: SocketAddr, source: IpAddr, config: Arc<rustls::ClientConfig>) -> bool {
    let Ok(tcp) = client::connect_from(Some(source), agent_addr) else {
        return false;
    };
    let name = ServerName::try_from("localhost").unwrap();
    let conn = rustls::ClientConnection::new(config, name).unwrap();
    let mut tls = rustls::StreamOwned::new(conn, tcp);
    if tls.write_all(&hello_frame("slt_not-a-real-token")).is_err() {
        return false;
    }
    let mut answer = Vec::new();
    let _ = tls.read_to_end(&mut answer);
    !answer.is_empty()
}

#[test]
fn a_flood_of_bad_tokens_leaves_one_audit_event_per_source_and_the_history_intact() {
    let fx = Fixture::new();
    let extra = "  plain_channels: true\n  handshakes_per_ip_per_sec: 10000\n";
    let yaml = format!(
        "{}admin:\n  listen: 127.0.0.1:0\n  api_keys: [\"{}\"]\nstate_dir: state\n",
        edge_yaml(&fx, extra),
        fixture::token_hash(API_KEY)
    );
    let mut edge = Sluice::edge(&fx.write("edge.yml", &yaml), DRIVER);
    let (agent_addr, public) = edge.edge_addrs(1);
    let admin = edge.wait_for_n("admin listener", 1, |v| {
        v["message"] == "listening" && v["kind"] == "admin"
    });
    let admin = Admin::new(admin["addr"].as_str().unwrap().parse().unwrap(), API_KEY);
    // Real history first: an agent's session.
    let upstream = Echo::start();
    let agent_yaml = fx.agent_yaml(&fx.token, agent_addr, "tls", &[(URL, upstream.addr)]);
    let mut agent = Sluice::agent(&fx.write("agent.yml", &agent_yaml), DRIVER);
    agent.wait_for("endpoint bound");
    client::wait_until_echo(public[0], Duration::from_secs(10)).unwrap();

    let cert = CertificateDer::from_pem_file(fx.path("edge.crt")).unwrap();
    let config = sluice_tests::tls_peers::client_config(&[&cert]);
    let flooder: IpAddr = "127.0.0.7".parse().unwrap();
    let answered = (0..300)
        .filter(|_| bad_hello(agent_addr, flooder, config.clone()))
        .count();
    assert!(
        answered >= 290,
        "the edge answered {answered} of 300 bad hellos"
    );
    let types = |query: &str| -> Vec<serde_json::Value> {
        admin.get(&format!("/v1/events?{query}&limit=1000"))["items"]
            .as_array()
            .unwrap()
            .clone()
    };
    // A second session after the flood: once its event is stored, every failure
    // queued before it has been through the audit writer too.
    let second = Sluice::agent(&fx.write("agent.yml", &agent_yaml), DRIVER);
    wait_until(
        "the second session's audit event",
        Duration::from_secs(10),
        || types("type=session.started").len() >= 2,
    );
    // Counted while the second agent still runs: killing it may cut a data channel in
    // its handshake, which the edge rightly counts as a refusal of its own.
    let metrics = admin.call("GET", "/metrics", None).text;
    drop(second);
    let failures = types("type=session.auth_failed");
    assert_eq!(
        failures.len(),
        1,
        "one event per source and window: {failures:?}"
    );
    assert_eq!(failures[0]["subject"], "127.0.0.7");
    assert!(
        !types("type=session.started").is_empty(),
        "the real session's history is still there"
    );
    // Every answered bad hello is counted under its own cause, and nothing else was
    // refused.
    let refused = |reason: &str| {
        sluice_tests::prom::sample(
            &metrics,
            &format!("sluice_edge_agents_refused_total{{reason=\"{reason}\"}}"),
        )
    };
    assert!(
        refused("unknown_token") >= answered as f64 && refused("unknown_token") <= 300.0,
        "unknown_token {} for {answered} answered bad hellos",
        refused("unknown_token")
    );
    assert_eq!(
        sluice_tests::prom::sum(&metrics, "sluice_edge_agents_refused_total", &[]),
        refused("unknown_token"),
        "{metrics}"
    );
}

/// A certificate set for `localhost` made by `sluice certs new --days DAYS` in
/// `fx`'s directory `dir`: (edge certificate PEM, edge key PEM, CA certificate PEM).
fn cert_valid_for(fx: &Fixture, dir: &str, days: i64) -> (String, String, String) {
    let out = std::process::Command::new(sluice_tests::process::sluice_bin())
        .args([
            "certs",
            "new",
            "--name",
            "localhost",
            "--days",
            &days.to_string(),
            "--dir",
        ])
        .arg(fx.path(dir))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let read = |f: &str| std::fs::read_to_string(fx.path(dir).join(f)).unwrap();
    (read("edge.crt"), read("edge.key"), read("ca.crt"))
}

/// Whether a TLS 1.3 handshake with the agent port succeeds trusting only `cert_pem`.
fn handshake_trusting(agent_addr: SocketAddr, cert_pem: &str) -> bool {
    let cert = CertificateDer::from_pem_slice(cert_pem.as_bytes()).unwrap();
    let config = sluice_tests::tls_peers::client_config(&[&cert]);
    let tcp = client::connect_from(None, agent_addr).unwrap();
    let conn =
        rustls::ClientConnection::new(config, ServerName::try_from("localhost").unwrap()).unwrap();
    let mut tls = rustls::StreamOwned::new(conn, tcp);
    while tls.conn.is_handshaking() {
        if tls.conn.complete_io(&mut tls.sock).is_err() {
            return false;
        }
    }
    true
}

#[test]
fn the_agent_port_certificate_is_reloaded_and_its_expiry_announced() {
    let fx = Fixture::new();
    let (old_cert, old_key, old_ca) = cert_valid_for(&fx, "old", 5);
    fx.write("edge.crt", &old_cert);
    fx.write("edge.key", &old_key);
    let mut edge = Sluice::edge(&fx.write("edge.yml", &edge_yaml(&fx, "")), DRIVER);
    let (agent_addr, _) = edge.edge_addrs(1);
    let soon = edge.wait_for("certificate expires soon: replace it and reload (SIGHUP)");
    assert_eq!(soon["days"], 4, "{soon}");
    assert!(handshake_trusting(agent_addr, &old_ca));

    let (new_cert, new_key, new_ca) = cert_valid_for(&fx, "new", 365);
    fx.write("edge.crt", &new_cert);
    fx.write("edge.key", &new_key);
    edge.hangup();
    edge.wait_for("certificate valid");
    wait_until(
        "the new certificate is presented",
        Duration::from_secs(10),
        || handshake_trusting(agent_addr, &new_ca),
    );
    assert!(
        !handshake_trusting(agent_addr, &old_ca),
        "the old certificate is still presented"
    );
}
