//! End-to-end: the admin API's transport, against a real `sluice edge`: per-phase
//! timeouts (a header drip, a body drip, an idle keep-alive connection), the connection
//! cap, the hold-off on wrong keys and its audit aggregation, the refusal of a plain
//! HTTP listener beyond loopback, and HTTPS with `admin.tls`. Small limits set under
//! `admin:` keep each test within seconds.

use std::{
    io::{Read, Write},
    net::TcpStream,
    path::PathBuf,
    process::Command,
    sync::{
        atomic::{AtomicBool, AtomicUsize, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use serde_json::Value;
use sluice_tests::{
    admin::{self, sample, Admin},
    fixture::{self, Fixture},
    pki::{self, Ca},
    process::{config_check, Sluice},
    wait_until,
};

const DRIVER: &str = "uring";
const API_KEY: &str = "test-admin-key-0123456789";
/// Slack on top of a limit for the edge to act and the test to see it.
const MARGIN: Duration = Duration::from_secs(2);

/// An edge config with the admin API on `listen` plus `admin_extra` (YAML lines of the
/// `admin:` section, indented by two).
fn edge_config(fx: &Fixture, listen: &str, admin_extra: &str) -> PathBuf {
    let mut yaml = fx
        .edge_yaml("127.0.0.1:0", &[])
        .replace("endpoints:\n", "endpoints: []\n");
    yaml.push_str(&format!(
        "admin:\n  listen: {listen}\n  api_keys: [\"{}\"]\n{admin_extra}",
        fixture::token_hash(API_KEY)
    ));
    fx.write("edge.yml", &yaml)
}

/// Starts an edge whose loopback admin API has `admin_extra`; the edge and a client.
fn start_edge(fx: &Fixture, admin_extra: &str) -> (Sluice, Admin) {
    let mut edge = Sluice::edge(&edge_config(fx, "127.0.0.1:0", admin_extra), DRIVER);
    let (addr, _) = admin::listening(&mut edge);
    (edge, Admin::new(addr, API_KEY))
}

/// Reads `stream` until the edge closes it, at most `limit`: how long that took from
/// `since` (None: still open) and the bytes that came.
fn wait_closed(
    stream: &mut TcpStream,
    since: Instant,
    limit: Duration,
) -> (Option<Duration>, Vec<u8>) {
    let end = Instant::now() + limit;
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let left = end.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return (None, got);
        }
        stream.set_read_timeout(Some(left)).unwrap();
        match stream.read(&mut buf) {
            Ok(0) => return (Some(since.elapsed()), got),
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                return (None, got)
            }
            Err(_) => return (Some(since.elapsed()), got),
        }
    }
}

/// Writes `bytes` one at a time every `every` on a clone of `stream`, until a write
/// fails, they are all sent or `stop` is set; counts the bytes sent in `sent`.
fn drip(
    stream: &TcpStream,
    bytes: Vec<u8>,
    every: Duration,
    stop: Arc<AtomicBool>,
    sent: Arc<AtomicUsize>,
) -> std::thread::JoinHandle<()> {
    let mut w = stream.try_clone().unwrap();
    std::thread::spawn(move || {
        for b in bytes {
            if stop.load(Ordering::Relaxed) || w.write_all(&[b]).is_err() {
                return;
            }
            sent.fetch_add(1, Ordering::Relaxed);
            // Pacing of the drip itself, not a wait for the edge.
            std::thread::sleep(every);
        }
    })
}

fn request_head(method: &str, path: &str, extra: &str) -> String {
    format!("{method} {path} HTTP/1.1\r\nHost: admin\r\nAuthorization: Bearer {API_KEY}\r\n{extra}")
}

#[test]
fn a_header_drip_is_closed_at_the_header_timeout_while_other_connections_are_served() {
    const HEADER: Duration = Duration::from_secs(3);
    let fx = Fixture::new();
    let (mut edge, admin) = start_edge(&fx, "  header_timeout: 3s\n");

    let opened = Instant::now();
    let mut dripping = TcpStream::connect(admin.addr).unwrap();
    let mut silent = TcpStream::connect(admin.addr).unwrap();
    let (stop, sent) = (
        Arc::new(AtomicBool::new(false)),
        Arc::new(AtomicUsize::new(0)),
    );
    // A head that would take ~40 s at one byte a second.
    let head = request_head("GET", "/v1/endpoints", "X-Padding: slow\r\n\r\n");
    let dripper = drip(
        &dripping,
        head.into_bytes(),
        Duration::from_secs(1),
        stop.clone(),
        sent.clone(),
    );
    let closer = std::thread::spawn(move || wait_closed(&mut dripping, opened, HEADER + MARGIN));

    // Positive control: meanwhile, normal requests on other connections are answered.
    let mut answered = 0;
    while !closer.is_finished() {
        assert_eq!(
            admin.with_key(None).call("GET", "/healthz", None).status,
            200
        );
        assert_eq!(admin.call("GET", "/v1/endpoints", None).status, 200);
        answered += 1;
        // Pacing of the control requests, not a wait for the edge.
        std::thread::sleep(Duration::from_millis(200));
    }
    let (closed, got) = closer.join().unwrap();
    stop.store(true, Ordering::Relaxed);
    dripper.join().unwrap();
    let closed = closed.unwrap_or_else(|| {
        panic!(
            "a header drip ({} bytes sent) was still open {:?} after connecting\n{}",
            sent.load(Ordering::Relaxed),
            HEADER + MARGIN,
            edge.log_text()
        )
    });
    assert!(
        closed >= HEADER - Duration::from_millis(100),
        "closed early: {closed:?}"
    );
    assert!(
        got.is_empty(),
        "no answer to a partial head: {:?}",
        String::from_utf8_lossy(&got)
    );
    assert!(
        sent.load(Ordering::Relaxed) >= 3,
        "bytes kept coming and did not extend the deadline"
    );
    assert!(
        answered >= 5,
        "control requests answered during the drip: {answered}"
    );

    // A connection that sent nothing is bound by the same deadline.
    let (silent_closed, _) = wait_closed(&mut silent, opened, HEADER + MARGIN);
    assert!(silent_closed.is_some(), "a silent connection stayed open");

    let metrics = admin.call("GET", "/metrics", None).text;
    assert_eq!(
        sample(
            &metrics,
            "sluice_admin_connections_timed_out_total{phase=\"header\"}"
        ),
        2.0,
        "{metrics}"
    );
    let logged = edge.wait_for("HTTP connection too slow; closed");
    assert_eq!(logged["phase"], "header");
    assert!(
        logged["client"].as_str().unwrap().starts_with("127.0.0.1:"),
        "{logged}"
    );
}

#[test]
fn a_body_drip_is_closed_at_the_request_timeout_and_changes_nothing() {
    const REQUEST: Duration = Duration::from_secs(2);
    let fx = Fixture::new();
    let (_edge, admin) = start_edge(&fx, "  request_timeout: 2s\n");
    let mut s = TcpStream::connect(admin.addr).unwrap();
    let body = br#"{"url": "tcp://127.0.0.1:0", "traffic_policy": "on_tcp_connect: []"}"#.to_vec();
    let head = request_head(
        "POST",
        "/v1/endpoints",
        &format!(
            "Content-Type: application/json\r\nContent-Length: {}\r\n\r\n",
            body.len()
        ),
    );
    s.write_all(head.as_bytes()).unwrap();
    let started = Instant::now();
    let (stop, sent) = (
        Arc::new(AtomicBool::new(false)),
        Arc::new(AtomicUsize::new(0)),
    );
    let dripper = drip(&s, body, Duration::from_millis(250), stop.clone(), sent);
    let (closed, got) = wait_closed(&mut s, started, REQUEST + MARGIN);
    stop.store(true, Ordering::Relaxed);
    dripper.join().unwrap();
    let closed = closed.expect("a body drip outlived request_timeout");
    assert!(
        closed >= REQUEST - Duration::from_millis(100),
        "closed early: {closed:?}"
    );
    assert!(got.is_empty(), "{:?}", String::from_utf8_lossy(&got));
    assert_eq!(admin.get("/v1/endpoints")["items"], Value::Array(vec![]));
    let metrics = admin.call("GET", "/metrics", None).text;
    assert_eq!(
        sample(
            &metrics,
            "sluice_admin_connections_timed_out_total{phase=\"request\"}"
        ),
        1.0,
        "{metrics}"
    );
}

#[test]
fn an_idle_keep_alive_connection_lasts_the_idle_timeout_not_the_header_timeout() {
    const IDLE: Duration = Duration::from_secs(3);
    let fx = Fixture::new();
    let (_edge, admin) = start_edge(&fx, "  header_timeout: 1s\n  idle_timeout: 3s\n");
    let mut conn = admin.keep_alive().unwrap();
    assert_eq!(conn.get("/v1/endpoints").unwrap().status, 200);
    assert_eq!(
        conn.get("/healthz").unwrap().status,
        200,
        "the connection is reused"
    );
    let answered = Instant::now();
    let (closed, got) = wait_closed(&mut conn.stream, answered, IDLE + MARGIN);
    let closed = closed.expect("an idle keep-alive connection outlived idle_timeout");
    assert!(got.is_empty());
    assert!(
        closed >= IDLE - Duration::from_millis(100),
        "closed after {closed:?}: the 1 s header timeout must not cap the idle wait"
    );
}

#[test]
fn connections_over_the_cap_are_closed_at_once_while_open_ones_keep_working() {
    let fx = Fixture::new();
    let (mut edge, admin) = start_edge(&fx, "  max_connections: 3\n");
    let mut held: Vec<admin::KeepAlive> = (0..3)
        .map(|i| {
            let mut c = admin.keep_alive().unwrap();
            assert_eq!(c.get("/healthz").unwrap().status, 200, "connection {i}");
            c
        })
        .collect();

    let mut over = TcpStream::connect(admin.addr).unwrap();
    let tried = Instant::now();
    // Sent before the close may land or be refused; either way no answer comes.
    let _ = over.write_all(request_head("GET", "/v1/endpoints", "\r\n").as_bytes());
    let (closed, got) = wait_closed(&mut over, tried, MARGIN);
    let closed = closed.expect("a connection over the cap was left open");
    assert!(got.is_empty(), "{:?}", String::from_utf8_lossy(&got));
    assert!(
        closed < Duration::from_secs(1),
        "closed at once, not after {closed:?}"
    );

    for (i, c) in held.iter_mut().enumerate() {
        assert_eq!(
            c.get("/v1/endpoints").unwrap().status,
            200,
            "connection {i}"
        );
    }
    let metrics = held[0].get("/metrics").unwrap().text;
    assert_eq!(
        sample(&metrics, "sluice_admin_connections_refused_total"),
        1.0,
        "{metrics}"
    );
    assert_eq!(
        sample(&metrics, "sluice_admin_connections"),
        3.0,
        "{metrics}"
    );
    let logged = edge.wait_for("HTTP listener: connection cap reached; closed");
    assert!(
        logged["client"].as_str().unwrap().starts_with("127.0.0.1:"),
        "{logged}"
    );

    // A freed slot is taken again.
    drop(held.pop());
    wait_until(
        "a new connection served once a slot is free",
        MARGIN,
        || {
            admin
                .keep_alive()
                .and_then(|mut c| c.get("/healthz"))
                .is_ok_and(|a| a.status == 200)
        },
    );
}

#[test]
fn wrong_keys_hold_the_client_off_with_429_growing_until_a_right_key_and_are_audited_per_window() {
    let fx = Fixture::new();
    let (mut edge, admin) = start_edge(
        &fx,
        "  auth_backoff: { failures: 3, window: 5s, initial: 1s, max: 2s }\n",
    );
    let wrong = admin.with_key(Some("not-the-admin-key"));
    let no_key = admin.with_key(None);
    let get = |a: &Admin| a.call("GET", "/v1/endpoints", None);

    let first_failure_sent = Instant::now();
    for i in 0..2 {
        assert_eq!(get(&wrong).status, 401, "wrong key {i}");
    }
    let third = Instant::now();
    assert_eq!(get(&wrong).status, 401);
    // Held off: even the right key is refused, in the documented error shape.
    let a = get(&admin);
    assert_eq!(a.status, 429, "{}", a.text);
    assert_eq!(a.header("retry-after"), Some("1"));
    assert_eq!(
        a.body["error"]["code"], "too_many_auth_failures",
        "{}",
        a.text
    );
    assert_eq!(get(&wrong).status, 429);
    // Health needs no key and is never held off.
    assert_eq!(no_key.call("GET", "/healthz", None).status, 200);
    // A request without a key shows when the hold-off is over (401, not 429); missing
    // keys neither hold off nor reset.
    wait_until(
        "the first hold-off ends",
        Duration::from_secs(1) + MARGIN,
        || get(&no_key).status == 401,
    );
    assert!(
        third.elapsed() >= Duration::from_secs(1),
        "{:?}",
        third.elapsed()
    );

    // One more wrong key before any right one: held off again, twice as long.
    let fourth = Instant::now();
    assert_eq!(get(&wrong).status, 401);
    let a = get(&admin);
    assert_eq!(a.status, 429, "{}", a.text);
    assert_eq!(a.header("retry-after"), Some("2"));
    wait_until(
        "the right key is served after the second hold-off",
        Duration::from_secs(2) + MARGIN,
        || get(&admin).status == 200,
    );
    assert!(
        fourth.elapsed() >= Duration::from_secs(2),
        "{:?}",
        fourth.elapsed()
    );
    // That success reset the count: a wrong key is a plain 401 again, no hold-off.
    assert_eq!(get(&wrong).status, 401);
    let failures_span = first_failure_sent.elapsed();
    assert_eq!(get(&admin).status, 200);

    let total = sample(
        &admin.call("GET", "/metrics", None).text,
        "sluice_admin_auth_failures_total",
    );
    assert!(total >= 6.0, "{total}");
    // Every failure is logged (a few a second: under the throttle) with the client.
    let failed = |v: &Value| v["message"] == "admin API: authentication failed";
    edge.wait_for_n("a log line per failure", total as usize, failed);
    let with_client = edge.count(|v| {
        failed(v)
            && v["client"]
                .as_str()
                .is_some_and(|c| c.starts_with("127.0.0.1:"))
    });
    assert_eq!(with_client as f64, total, "{}", edge.log_text());

    // Audit: every failure counted, at most one stored event per client per 5 s window.
    let events = || -> Vec<Value> {
        admin.get("/v1/events?type=admin.auth_failed&limit=1000")["items"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["detail"]["client"] == "127.0.0.1")
            .cloned()
            .collect()
    };
    let counted = |events: &[Value]| -> f64 {
        events
            .iter()
            .map(|e| e["detail"]["failures"].as_f64().unwrap())
            .sum()
    };
    wait_until(
        "every failure audited",
        Duration::from_secs(5) + MARGIN,
        || counted(&events()) == total,
    );
    // admin/backoff.rs: the first failure is stored at once, alone; the ones after it
    // are summed until a window (5 s) has passed since the last stored event. Failures
    // spanning less than a window therefore make exactly two events; a slower run may
    // make one more per further window it spans.
    let events = events();
    let oldest = events.last().unwrap();
    assert_eq!(oldest["detail"]["failures"], 1, "{events:?}");
    let windows = failures_span.as_secs() as usize / 5;
    assert!(
        (2..=2 + windows).contains(&events.len()),
        "{} events for failures spanning {failures_span:?}: {events:?}",
        events.len()
    );
    let times: Vec<i64> = events.iter().map(|e| e["at"].as_i64().unwrap()).collect();
    for pair in times.windows(2) {
        assert!(
            pair[0] - pair[1] >= 4_900,
            "two events within a window: {times:?}"
        );
    }
}

/// `sluice_tests::pki` material for HTTPS on the admin listener, written into `fx`:
/// `ca.pem`, `admin.crt`, `admin.key`.
fn admin_pki(fx: &Fixture) -> Ca {
    let ca = Ca::new("sluice admin test CA");
    let leaf = ca.server(&["localhost"]);
    fx.write("ca.pem", &ca.pem());
    fx.write("admin.crt", &leaf.cert_pem);
    fx.write("admin.key", &leaf.key_pem);
    ca
}

#[test]
fn a_plain_http_admin_listener_beyond_loopback_is_refused_by_config_check_and_at_start() {
    let fx = Fixture::new();
    let cfg = edge_config(&fx, "0.0.0.0:0", "");
    let (ok, text) = config_check(&cfg);
    assert!(!ok, "{text}");
    let line = text
        .lines()
        .find(|l| l.contains("admin.listen"))
        .unwrap_or_else(|| panic!("no admin.listen problem: {text}"));
    assert!(line.contains("edge.yml:"), "{text}");
    assert!(
        line.contains("not a loopback address") && line.contains("admin.tls"),
        "{text}"
    );
    assert!(text.contains("1 problem(s)"), "{text}");

    let mut edge = Sluice::edge(&cfg, DRIVER);
    let code = edge.wait_exit();
    assert_ne!(code, Some(0));
    edge.wait_for_n("the refusal on stderr", 1, |v| {
        v["message"]
            .as_str()
            .is_some_and(|m| m.contains("not a loopback address"))
    });
    let log = edge.log_text();
    assert_eq!(edge.count(|v| v["message"] == "listening"), 0, "{log}");

    // The explicit escape hatch passes, with a warning.
    let cfg = edge_config(&fx, "0.0.0.0:0", "  allow_plaintext_remote: true\n");
    let (ok, text) = config_check(&cfg);
    assert!(ok, "{text}");
    assert!(
        text.contains("warning:") && text.contains("plain HTTP beyond loopback"),
        "{text}"
    );

    // With TLS it is a valid config and nothing to warn about.
    admin_pki(&fx);
    let cfg = edge_config(
        &fx,
        "0.0.0.0:0",
        "  tls: { cert: admin.crt, key: admin.key }\n",
    );
    let (ok, text) = config_check(&cfg);
    assert!(ok && !text.contains("warning:"), "{text}");
}

/// One HTTPS request with a rustls client trusting `ca`; the answer's raw text.
fn rustls_get(addr: std::net::SocketAddr, ca: &Ca, path: &str) -> String {
    let config = pki::client_config(&[ca], None);
    let name = rustls_pki_types::ServerName::try_from("localhost").unwrap();
    let conn = rustls::ClientConnection::new(config, name).unwrap();
    let tcp = TcpStream::connect(addr).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut tls = rustls::StreamOwned::new(conn, tcp);
    let head = request_head("GET", path, "Connection: close\r\n\r\n");
    tls.write_all(head.as_bytes()).unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match tls.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => got.extend_from_slice(&buf[..n]),
            // A peer that closes without close_notify ends the stream here.
            Err(e) if !got.is_empty() && e.kind() == std::io::ErrorKind::UnexpectedEof => break,
            Err(e) => panic!("HTTPS read: {e}"),
        }
    }
    String::from_utf8_lossy(&got).into_owned()
}

#[test]
fn admin_api_over_tls_answers_curl_and_a_rustls_client_and_refuses_plain_http() {
    let fx = Fixture::new();
    let ca = admin_pki(&fx);
    let cfg = edge_config(
        &fx,
        "127.0.0.1:0",
        "  tls: { cert: admin.crt, key: admin.key }\n",
    );
    let mut edge = Sluice::edge(&cfg, DRIVER);
    let (addr, listening) = admin::listening(&mut edge);
    assert_eq!(listening["tls"], true, "{listening}");

    let url = format!("https://localhost:{}/v1/endpoints", addr.port());
    let resolve = format!("localhost:{}:127.0.0.1", addr.port());
    let curl = |extra: &[&str]| {
        Command::new("curl")
            .args(["-sS", "--max-time", "10", "--resolve", &resolve])
            .args(["-H", &format!("Authorization: Bearer {API_KEY}")])
            .args(["-w", "\n%{http_code}"])
            .args(extra)
            .arg(&url)
            .output()
            .expect("run curl (Debian's `curl`; .ci/run installs it)")
    };
    let ca_file = fx.path("ca.pem");
    let out = curl(&["--cacert", ca_file.to_str().unwrap()]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (body, code) = stdout.rsplit_once('\n').unwrap();
    assert_eq!(code, "200", "{stdout}");
    let body: Value = serde_json::from_str(body).unwrap();
    assert_eq!(body["items"], Value::Array(vec![]), "{body}");
    // Without the CA the edge's certificate is not trusted.
    let untrusted = curl(&[]);
    assert!(!untrusted.status.success());

    let answer = rustls_get(addr, &ca, "/v1/sessions");
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");

    // Plain HTTP on the TLS port gets no HTTP answer.
    let mut plain = TcpStream::connect(addr).unwrap();
    plain
        .write_all(request_head("GET", "/healthz", "\r\n").as_bytes())
        .unwrap();
    let (closed, got) = wait_closed(&mut plain, Instant::now(), Duration::from_secs(10) + MARGIN);
    assert!(closed.is_some(), "plain HTTP left open");
    assert!(
        !got.starts_with(b"HTTP/"),
        "{:?}",
        String::from_utf8_lossy(&got)
    );
    let logged = edge.wait_for("HTTP listener: TLS handshake failed; closed");
    assert!(
        logged["client"].as_str().unwrap().starts_with("127.0.0.1:"),
        "{logged}"
    );
}
