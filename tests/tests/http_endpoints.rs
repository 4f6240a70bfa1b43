//! End-to-end: `http://` cloud endpoints. A real edge and agents (separate processes),
//! HTTP upstreams that echo each request, and `curl` as the client: requests routed by
//! `Host`, the forwarding headers the upstream sees, the edge's own pages for what it
//! refuses (policy, unknown host, agent offline), bodies both ways, keep-alive, and a
//! pool balanced per request that survives one agent's `kill -9`, and a kept-alive
//! upstream connection that breaks under a request: sent again when that is safe.

use sluice_tests::{
    fixture::{self, Fixture},
    http::{curl, HttpEcho, Transfer, DROP_ON_REUSE},
    process::Sluice,
    prom, wait_until,
};

const API: &str = "http://api.internal";
const ADMIN: &str = "http://admin.internal";
/// The seed's shape: `https://api.acme.com` forwards to an internal `https://` endpoint.
const SECURE_API: &str = "https://api.internal";
/// The edge's admin API key, for `/metrics`.
const ADMIN_KEY: &str = "http-test-admin-key-0123456789";

/// The edge's `admin:` section (loopback, [`ADMIN_KEY`]).
fn admin_yaml() -> String {
    format!(
        "admin:\n  listen: 127.0.0.1:0\n  api_keys: [\"{}\"]\n",
        fixture::token_hash(ADMIN_KEY)
    )
}

/// The edge's `/metrics` text.
fn metrics(edge: &mut Sluice) -> String {
    sluice_tests::admin::Admin::new(sluice_tests::admin::listening(edge).0, ADMIN_KEY)
        .call("GET", "/metrics", None)
        .text
}

/// The edge: the shared HTTP port, `http://api.example.com` forwarding to [`API`] and
/// `http://admin.example.com` to [`ADMIN`] for 127.0.0.5 only.
fn edge(fx: &Fixture) -> (Sluice, std::net::SocketAddr, std::net::SocketAddr) {
    edge_with(fx, "")
}

/// [`edge`], with `api_extra` (YAML lines) added to `http://api.example.com`.
fn edge_with(
    fx: &Fixture,
    api_extra: &str,
) -> (Sluice, std::net::SocketAddr, std::net::SocketAddr) {
    let yaml = fx.tls_edge_head().replace(
        "tls_endpoints:\n  listen: 127.0.0.1:0\n",
        "http_endpoints:\n  listen: 127.0.0.1:0\n",
    ) + &format!(
        "  - url: http://api.example.com\n{api_extra}    traffic_policy: {}\n\
             \x20 - url: http://admin.example.com\n    traffic_policy: {}\n{}",
        fixture::forward_all(API),
        fixture::allow_only(&["127.0.0.5/32"], ADMIN),
        admin_yaml(),
    );
    let mut edge = Sluice::edge(&fx.write("edge.yml", &yaml), "uring");
    let (agent_addr, _) = edge.edge_addrs(0);
    let http = edge.http_endpoints_addr();
    (edge, agent_addr, http)
}

/// An agent binding `endpoints` (`(internal URL, upstream)`), with pooling on.
fn agent(
    fx: &Fixture,
    name: &str,
    edge: std::net::SocketAddr,
    endpoints: &[(&str, String)],
) -> Sluice {
    let mut yaml = fx.agent_yaml(&fx.token, edge, "tcp", &[]);
    for (url, upstream) in endpoints {
        yaml.push_str(&format!(
            "  - url: {url}\n    pooling_enabled: true\n    upstream: {{ url: \"{upstream}\" }}\n"
        ));
    }
    let mut agent = Sluice::agent(&fx.write(name, &yaml), "uring");
    agent.wait_for_n("every endpoint bound", endpoints.len(), |v| {
        v["message"] == "endpoint bound"
    });
    agent
}

fn url(http: std::net::SocketAddr, host: &str, path: &str) -> String {
    format!("http://{host}:{}{path}", http.port())
}

/// `clients` curl runs at once, client `c` from `source(c)` sending `requests`
/// requests (`/c{c}/r{r}` to `api.example.com`) on one connection; each run's
/// transfers, by client.
fn clients_at_once(
    fx: &Fixture,
    http: std::net::SocketAddr,
    requests: usize,
    source: impl Fn(usize) -> Option<String>,
    clients: usize,
) -> Vec<Vec<Transfer>> {
    let runs: Vec<_> = (0..clients)
        .map(|c| {
            // (curl writes each transfer to files of its own: one directory per client)
            let dir = fx.dir().join(format!("client-{c}"));
            std::fs::create_dir(&dir).unwrap();
            let urls: Vec<String> = (0..requests)
                .map(|r| url(http, "api.example.com", &format!("/c{c}/r{r}")))
                .collect();
            let source = source(c);
            std::thread::spawn(move || {
                curl(http, "api.example.com", &urls, source.as_deref(), &[], &dir)
            })
        })
        .collect();
    runs.into_iter().map(|run| run.join().unwrap()).collect()
}

fn one(
    fx: &Fixture,
    http: std::net::SocketAddr,
    host: &str,
    path: &str,
    source: Option<&str>,
    extra: &[&str],
) -> Transfer {
    curl(
        http,
        host,
        &[url(http, host, path)],
        source,
        extra,
        fx.dir(),
    )
    .pop()
    .unwrap()
}

#[test]
fn requests_reach_the_upstream_with_forwarding_headers_and_refusals_get_pages() {
    let fx = Fixture::new();
    let (mut edge, agent_addr, http) = edge(&fx);
    let api = HttpEcho::start("api");
    let admin = HttpEcho::start("admin");
    let _agent = agent(
        &fx,
        "agent.yml",
        agent_addr,
        &[
            (API, format!("http://{}", api.addr)),
            (ADMIN, format!("http://{}", admin.addr)),
        ],
    );

    // Through the tunnel: the request line and Host as the client sent them, and the
    // forwarding headers naming the client.
    let got = one(&fx, http, "api.example.com", "/hello?x=1", None, &[]);
    assert_eq!(got.status, 200, "{got:?}");
    assert_eq!(got.header("x-upstream"), Some("api"));
    let seen = got.text().to_ascii_lowercase();
    let host = format!("api.example.com:{}", http.port());
    for line in [
        "get /hello?x=1 http/1.1\r\n".to_string(),
        format!("host: {host}\r\n"),
        "x-forwarded-for: 127.0.0.1\r\n".to_string(),
        "x-forwarded-proto: http\r\n".to_string(),
        format!("x-forwarded-host: {host}\r\n"),
    ] {
        assert!(
            seen.contains(&line),
            "the upstream saw no `{}`:\n{seen}",
            line.trim()
        );
    }

    // A megabyte up and (echoed) a megabyte down, intact.
    let payload = sluice_tests::client::payload(7, 1 << 20);
    let file = fx.dir().join("payload");
    std::fs::write(&file, &payload).unwrap();
    let posted = one(
        &fx,
        http,
        "api.example.com",
        "/upload",
        None,
        &[
            "--data-binary",
            &format!("@{}", file.display()),
            "-H",
            "Content-Type: application/octet-stream",
        ],
    );
    assert_eq!(posted.status, 200);
    assert!(
        posted.body.ends_with(&payload),
        "{} bytes came back for a 1 MiB body",
        posted.body.len()
    );

    // Keep-alive: curl's second and third requests reuse its connection.
    let urls: Vec<String> = (0..3)
        .map(|i| url(http, "api.example.com", &format!("/k{i}")))
        .collect();
    let kept = curl(http, "api.example.com", &urls, None, &[], fx.dir());
    assert!(kept.iter().all(|t| t.status == 200), "{kept:?}");
    assert_eq!(
        kept.iter().map(|t| t.connects).collect::<Vec<_>>(),
        [1, 0, 0],
        "one connection for three requests"
    );

    // The policy decides on the client's address: a page, not a reset.
    let denied = one(&fx, http, "admin.example.com", "/", None, &[]);
    assert_eq!(denied.status, 403, "{denied:?}");
    assert_eq!(
        denied.header("sluice-error-code"),
        Some("ERR_SLUICE_DENIED")
    );
    assert!(denied.text().contains("denied"), "{}", denied.text());
    assert_eq!(admin.requests.load(std::sync::atomic::Ordering::Relaxed), 0);
    let allowed = one(&fx, http, "admin.example.com", "/", Some("127.0.0.5"), &[]);
    assert_eq!(allowed.status, 200, "{allowed:?}");
    assert_eq!(allowed.header("x-upstream"), Some("admin"));

    // A host no endpoint serves.
    let unknown = one(&fx, http, "nobody.example.com", "/", None, &[]);
    assert_eq!(unknown.status, 404);
    assert_eq!(
        unknown.header("sluice-error-code"),
        Some("ERR_SLUICE_NO_ENDPOINT")
    );

    // The edge's own answers are logged with their request line and code.
    let logged = edge.wait_for_n("the refusal's log line", 1, |v| {
        v["message"] == "http request answered by the edge" && v["code"] == "ERR_SLUICE_DENIED"
    });
    assert_eq!(logged["method"], "GET", "{logged}");
    assert_eq!(logged["uri"], "/", "{logged}");
    assert_eq!(logged["status"], 403, "{logged}");

    // Every response counted by class.
    let metrics = metrics(&mut edge);
    let count = |class: &str| {
        prom::sum(
            &metrics,
            "sluice_edge_http_responses_total",
            &[&format!("class=\"{class}\"")],
        )
    };
    assert_eq!(count("2xx"), 6.0, "{metrics}");
    assert_eq!(
        count("4xx"),
        1.0,
        "the 403 (the 404 has no endpoint to count it)"
    );
}

#[test]
fn a_pool_is_balanced_per_request_and_survives_one_agents_kill() {
    let fx = Fixture::new();
    let (_edge, agent_addr, http) = edge(&fx);
    let one_up = HttpEcho::start("one");
    let two_up = HttpEcho::start("two");
    let mut first = agent(
        &fx,
        "one.yml",
        agent_addr,
        &[(API, format!("http://{}", one_up.addr))],
    );
    let _second = agent(
        &fx,
        "two.yml",
        agent_addr,
        &[(API, format!("http://{}", two_up.addr))],
    );

    // Twenty requests on one kept-alive connection: both members serve some.
    let urls: Vec<String> = (0..20)
        .map(|i| url(http, "api.example.com", &format!("/r{i}")))
        .collect();
    let served = curl(http, "api.example.com", &urls, None, &[], fx.dir());
    assert!(served.iter().all(|t| t.status == 200), "{served:?}");
    assert_eq!(served.iter().map(|t| t.connects).sum::<u32>(), 1);
    let by = |name: &str| {
        served
            .iter()
            .filter(|t| t.header("x-upstream") == Some(name))
            .count()
    };
    assert!(
        by("one") > 0 && by("two") > 0,
        "one: {}, two: {}",
        by("one"),
        by("two")
    );

    // One agent dies: requests go on being answered by the other, none failed.
    first.kill();
    let after = curl(http, "api.example.com", &urls, None, &[], fx.dir());
    let failed: Vec<_> = after.iter().filter(|t| t.status != 200).collect();
    assert!(failed.is_empty(), "{failed:?}");
    assert!(after.iter().all(|t| t.header("x-upstream") == Some("two")));
    wait_until(
        "the dead agent's requests stopped",
        std::time::Duration::from_secs(5),
        || one_up.requests.load(std::sync::atomic::Ordering::Relaxed) == by("one"),
    );
}

#[test]
fn a_kept_alive_upstream_connection_that_breaks_under_a_request_is_retried_only_when_safe() {
    let fx = Fixture::new();
    let (_edge, agent_addr, http) = edge(&fx);
    let up = HttpEcho::start("api");
    let _agent = agent(
        &fx,
        "agent.yml",
        agent_addr,
        &[(API, format!("http://{}", up.addr))],
    );
    let paths = |prefix: &str| -> Vec<String> {
        std::iter::once("/warm".to_owned())
            .chain((0..5).map(|i| format!("{DROP_ON_REUSE}{prefix}{i}")))
            .collect()
    };
    let times_seen = |path: &str| {
        up.seen
            .lock()
            .unwrap()
            .iter()
            .filter(|p| *p == path)
            .count()
    };

    // GETs: a request the upstream dropped on a kept-alive connection is sent again on
    // a new one, and the client never sees the failure.
    let gets = paths("get");
    let urls: Vec<String> = gets
        .iter()
        .map(|p| url(http, "api.example.com", p))
        .collect();
    let served = curl(http, "api.example.com", &urls, None, &[], fx.dir());
    assert!(served.iter().all(|t| t.status == 200), "{served:?}");
    let dropped: Vec<String> = up.dropped.lock().unwrap().clone();
    assert!(
        !dropped.is_empty(),
        "no request went on a kept-alive upstream connection: {:?}",
        up.seen.lock().unwrap()
    );
    for path in &dropped {
        assert_eq!(times_seen(path), 2, "{path}: dropped, then sent again");
    }

    // POSTs with a body are not sent twice: the one dropped gets the edge's 502.
    let posts = paths("post");
    let urls: Vec<String> = posts
        .iter()
        .map(|p| url(http, "api.example.com", p))
        .collect();
    let answered = curl(
        http,
        "api.example.com",
        &urls,
        None,
        &["-X", "POST", "--data-binary", "order=1"],
        fx.dir(),
    );
    let dropped_posts: Vec<String> = up
        .dropped
        .lock()
        .unwrap()
        .iter()
        .filter(|p| p.contains("post"))
        .cloned()
        .collect();
    assert!(!dropped_posts.is_empty(), "{:?}", up.seen.lock().unwrap());
    for (path, transfer) in posts.iter().zip(&answered) {
        if dropped_posts.contains(path) {
            assert_eq!(transfer.status, 502, "{path}: {transfer:?}");
            assert_eq!(
                transfer.header("sluice-error-code"),
                Some("ERR_SLUICE_UPSTREAM_FAILED")
            );
            assert_eq!(times_seen(path), 1, "{path}: not sent again");
        } else {
            assert_eq!(transfer.status, 200, "{path}: {transfer:?}");
        }
    }
}

#[test]
fn an_https_endpoint_ends_tls_at_the_edge_and_speaks_http2_or_http1() {
    let fx = Fixture::new();
    let api = HttpEcho::start("api");
    let ca = sluice_tests::pki::Ca::new("sluice test CA");
    let leaf = ca.server(&["api.example.com"]);
    fx.write("api.crt", &leaf.cert_pem);
    fx.write("api.key", &leaf.key_pem);
    let ca_file = fx.write("ca.crt", &ca.pem());
    let yaml = fx.tls_edge_head()
        + &format!(
            "  - url: https://api.example.com\n    terminate_tls: {{ cert: api.crt, key: api.key }}\n    traffic_policy: {}\n{}",
            fixture::forward_all(SECURE_API),
            admin_yaml(),
        );
    let mut edge = Sluice::edge(&fx.write("edge.yml", &yaml), "uring");
    let (agent_addr, _) = edge.edge_addrs(0);
    let tls = edge.tls_endpoints_addr();
    let _agent = agent(
        &fx,
        "agent.yml",
        agent_addr,
        &[(SECURE_API, format!("http://{}", api.addr))],
    );
    let ca_file = ca_file.to_str().unwrap();
    let urls: Vec<String> = (0..3)
        .map(|i| format!("https://api.example.com:{}/s{i}", tls.port()))
        .collect();
    for (flag, version) in [("--http2", "2"), ("--http1.1", "1.1")] {
        let got = curl(
            tls,
            "api.example.com",
            &urls,
            None,
            &["--cacert", ca_file, flag],
            fx.dir(),
        );
        for t in &got {
            assert_eq!(t.status, 200, "{flag}: {t:?}");
            assert_eq!(t.version, version, "{flag}");
            let seen = t.text().to_ascii_lowercase();
            assert!(seen.contains("x-forwarded-proto: https\r\n"), "{seen}");
            assert!(seen.contains("x-forwarded-for: 127.0.0.1\r\n"), "{seen}");
            assert!(
                seen.contains(&format!("host: api.example.com:{}\r\n", tls.port())),
                "{flag}: the upstream gets the host the client asked for:\n{seen}"
            );
        }
        assert_eq!(
            got.iter().map(|t| t.connects).sum::<u32>(),
            1,
            "{flag}: one connection"
        );
    }

    // Its responses are counted by class in /metrics, as an http:// endpoint's are.
    let metrics = metrics(&mut edge);
    let ok = prom::sum(
        &metrics,
        "sluice_edge_http_responses_total",
        &["endpoint=\"https://api.example.com\"", "class=\"2xx\""],
    );
    assert_eq!(
        ok, 6.0,
        "three requests over HTTP/2, three over HTTP/1.1:\n{metrics}"
    );
}

#[test]
fn a_websocket_upgrade_passes_through_and_then_flows_both_ways() {
    use std::io::{BufRead, BufReader, Read, Write};
    let fx = Fixture::new();
    let (_edge, agent_addr, http) = edge_with(&fx, "    idle_timeout: 2s\n");
    let api = HttpEcho::start("ws");
    let _agent = agent(
        &fx,
        "agent.yml",
        agent_addr,
        &[(API, format!("http://{}", api.addr))],
    );

    let stream = std::net::TcpStream::connect(http).unwrap();
    stream
        .set_read_timeout(Some(std::time::Duration::from_secs(10)))
        .unwrap();
    let mut writer = stream.try_clone().unwrap();
    write!(
        writer,
        "GET /chat HTTP/1.1\r\nHost: api.example.com\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
         Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
    )
    .unwrap();
    let mut reader = BufReader::new(stream);
    let mut head = String::new();
    loop {
        let mut line = String::new();
        reader.read_line(&mut line).unwrap();
        head.push_str(&line);
        if line == "\r\n" || line.is_empty() {
            break;
        }
    }
    let lower = head.to_ascii_lowercase();
    assert!(lower.starts_with("http/1.1 101"), "{head}");
    assert!(lower.contains("upgrade: websocket\r\n"), "{head}");
    assert!(lower.contains("x-upstream: ws\r\n"), "{head}");

    // After the switch, messages both ways, many times, on the same connection.
    for i in 0..50 {
        let message = format!("message {i} {}", "x".repeat(i * 100));
        writer.write_all(message.as_bytes()).unwrap();
        let mut back = vec![0u8; message.len()];
        reader.read_exact(&mut back).unwrap();
        assert_eq!(back, message.as_bytes(), "message {i}");
    }
    // The client ends: the upstream's end comes back.
    writer.shutdown(std::net::Shutdown::Write).unwrap();
    let mut rest = Vec::new();
    reader.read_to_end(&mut rest).unwrap();
    assert!(rest.is_empty(), "{} unexpected bytes", rest.len());

    // A switched connection on which nothing moves for the endpoint's idle timeout
    // (2 s here) is closed, both sides.
    let stream = std::net::TcpStream::connect(http).unwrap();
    stream
        .set_read_timeout(Some(std::time::Duration::from_secs(20)))
        .unwrap();
    let mut writer = stream.try_clone().unwrap();
    write!(
        writer,
        "GET /idle HTTP/1.1\r\nHost: api.example.com\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n"
    )
    .unwrap();
    let mut reader = BufReader::new(stream);
    let mut head = String::new();
    while !head.ends_with("\r\n\r\n") {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap() == 0 {
            break;
        }
        head.push_str(&line);
    }
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    let open = api.open.load(std::sync::atomic::Ordering::SeqCst);
    assert!(open >= 1);
    let idle_since = std::time::Instant::now();
    let mut rest = Vec::new();
    let _ = reader.read_to_end(&mut rest);
    let closed = idle_since.elapsed();
    assert!(rest.is_empty(), "{} unexpected bytes", rest.len());
    assert!(
        closed >= std::time::Duration::from_secs(2) && closed < std::time::Duration::from_secs(15),
        "closed after {closed:?} idle"
    );
    wait_until(
        "the upstream's side of the idle tunnel closed",
        std::time::Duration::from_secs(10),
        || api.open.load(std::sync::atomic::Ordering::SeqCst) < open,
    );
}

#[test]
fn hostile_clients_get_their_error_or_timeout_and_others_are_still_served() {
    use std::io::{Read, Write};
    use std::time::{Duration, Instant};
    let fx = Fixture::new();
    let (_edge, agent_addr, http) = edge(&fx);
    let api = HttpEcho::start("api");
    let _agent = agent(
        &fx,
        "agent.yml",
        agent_addr,
        &[(API, format!("http://{}", api.addr))],
    );
    let answer = |request: &[u8]| -> String {
        let mut s = std::net::TcpStream::connect(http).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        // The edge may answer and close before it has read everything: a write error
        // then is part of the answer, not a failure of the test.
        let _ = s.write_all(request);
        let mut got = Vec::new();
        let _ = s.read_to_end(&mut got);
        String::from_utf8_lossy(&got).into_owned()
    };

    // A head over the limit: 431, and nothing reaches the upstream.
    let huge = format!(
        "GET / HTTP/1.1\r\nHost: api.example.com\r\nX-Big: {}\r\n\r\n",
        "a".repeat(80 * 1024)
    );
    let got = answer(huge.as_bytes());
    assert!(got.starts_with("HTTP/1.1 431"), "{got:.200}");
    // Not HTTP at all: 400.
    let got = answer(b"THIS IS NOT HTTP\r\n\r\n");
    assert!(got.starts_with("HTTP/1.1 400"), "{got:.200}");
    assert_eq!(api.requests.load(std::sync::atomic::Ordering::Relaxed), 0);

    // A head sent a byte at a time, slower than the head timeout allows: the edge closes
    // it, while a normal client is served meanwhile.
    let mut slow = std::net::TcpStream::connect(http).unwrap();
    slow.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let started = Instant::now();
    let head = b"GET /slow HTTP/1.1\r\nHost: api.example.com\r\nX-Drip: ";
    slow.write_all(head).unwrap();
    let served = one(&fx, http, "api.example.com", "/meanwhile", None, &[]);
    assert_eq!(served.status, 200);
    let closed = loop {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "a dripping head was kept open for {:?}",
            started.elapsed()
        );
        if slow.write_all(b"x").is_err() {
            break started.elapsed();
        }
        let mut buf = [0u8; 512];
        match slow.read(&mut buf) {
            Ok(0) => break started.elapsed(),
            Ok(_) => break started.elapsed(),
            Err(e)
                if e.kind() == std::io::ErrorKind::WouldBlock
                    || e.kind() == std::io::ErrorKind::TimedOut => {}
            Err(_) => break started.elapsed(),
        }
    };
    assert!(
        closed >= Duration::from_secs(9),
        "closed after {closed:?}, before the 10 s head timeout"
    );
    assert_eq!(
        api.requests.load(std::sync::atomic::Ordering::Relaxed),
        1,
        "only the normal request reached the upstream"
    );
}

#[test]
fn an_http2_client_that_reads_none_of_its_streams_has_them_cut_and_others_are_served() {
    use std::{sync::atomic::Ordering, time::Duration};
    let fx = Fixture::new();
    let api = HttpEcho::start("api");
    let ca = sluice_tests::pki::Ca::new("sluice test CA");
    let leaf = ca.server(&["api.example.com"]);
    fx.write("api.crt", &leaf.cert_pem);
    fx.write("api.key", &leaf.key_pem);
    let ca_file = fx.write("ca.crt", &ca.pem());
    let yaml = fx.tls_edge_head()
        + &format!(
            "  - url: https://api.example.com\n    idle_timeout: 2s\n    terminate_tls: {{ cert: api.crt, key: api.key }}\n    traffic_policy: {}\n{}",
            fixture::forward_all(API),
            admin_yaml(),
        );
    let mut edge = Sluice::edge(&fx.write("edge.yml", &yaml), "uring");
    let (agent_addr, _) = edge.edge_addrs(0);
    let tls = edge.tls_endpoints_addr();
    let _agent = agent(
        &fx,
        "agent.yml",
        agent_addr,
        &[(API, format!("http://{}", api.addr))],
    );

    // 100 streams (the most one connection may open) for 1 MiB each, none of them read:
    // each holds an upstream connection behind a full window.
    let config = sluice_tests::pki::client_config(&[&ca], None);
    let streams = 100;
    let stalled = sluice_tests::http2::Stalled::open(
        tls,
        "api.example.com",
        config.clone(),
        "/bytes/1048576",
        streams,
    );
    assert_eq!(stalled.statuses, vec![200; streams]);
    // And an HTTP/1.1 client that asks for 64 MiB (more than the sockets on the way hold) and reads no more than the head.
    let mut reader = {
        let name = rustls_pki_types::ServerName::try_from("api.example.com").unwrap();
        let conn = rustls::ClientConnection::new(config.clone(), name).unwrap();
        rustls::StreamOwned::new(conn, std::net::TcpStream::connect(tls).unwrap())
    };
    std::io::Write::write_all(
        &mut reader,
        b"GET /bytes/67108864 HTTP/1.1\r\nHost: api.example.com\r\n\r\n",
    )
    .unwrap();
    let mut head = [0u8; 12];
    std::io::Read::read_exact(&mut reader, &mut head).unwrap();
    assert_eq!(&head, b"HTTP/1.1 200");
    wait_until(
        "every stalled response holds an upstream connection",
        Duration::from_secs(10),
        || api.open.load(Ordering::SeqCst) > streams,
    );

    // Meanwhile another client is served, whole.
    let url = format!("https://api.example.com:{}/bytes/300000", tls.port());
    let got = curl(
        tls,
        "api.example.com",
        &[url],
        None,
        &["--cacert", ca_file.to_str().unwrap(), "--http2"],
        fx.dir(),
    );
    assert_eq!(got[0].status, 200, "{:?}", got[0]);
    assert_eq!(got[0].version, "2");
    assert_eq!(got[0].body.len(), 300_000);

    // After the endpoint's idle timeout the stalled responses are cut: every upstream
    // connection they held is closed (the one curl used was kept alive: at most one
    // stays).
    wait_until(
        "the stalled streams' upstream connections closed",
        Duration::from_secs(15),
        || api.open.load(Ordering::SeqCst) <= 1,
    );
    let metrics = metrics(&mut edge);
    let cut = prom::sum(
        &metrics,
        "sluice_edge_connections_total",
        &["outcome=\"idle_timeout\""],
    );
    assert_eq!(cut, (streams + 1) as f64, "{metrics}");
    assert!(
        edge.count(|v| v["message"]
            .as_str()
            .is_some_and(|m| m.starts_with("http: a response cut")))
            >= 1,
        "{}",
        edge.log_text()
    );
    // When the clients read at last, each stream ends in an error, none with its whole
    // body.
    let mut body = Vec::new();
    let _ = std::io::Read::read_to_end(&mut reader, &mut body);
    assert!(body.len() < 64 << 20, "the HTTP/1.1 response was not cut");
    for (i, outcome) in stalled.read_all().into_iter().enumerate() {
        match outcome {
            Err(e) => assert!(e.contains("after"), "stream {i}: {e}"),
            Ok(n) => panic!("stream {i} ended cleanly with {n} bytes after its cut"),
        }
    }
}

#[test]
fn an_upstream_slower_than_its_endpoints_response_timeout_gets_a_504_set_in_edge_yml_or_the_api() {
    let fx = Fixture::new();
    let (mut edge, agent_addr, http) = edge_with(&fx, "    response_timeout: 1s\n");
    // Accepts, reads the request, never answers.
    let silent = sluice_tests::faults::Silent::start();
    let _agent = agent(
        &fx,
        "agent.yml",
        agent_addr,
        &[(API, format!("http://{}", silent.addr))],
    );

    // curl gives up after 20 s: the default 60 s would fail this, not answer it.
    let got = one(&fx, http, "api.example.com", "/slow", None, &[]);
    assert_eq!(got.status, 504, "{got:?}");
    assert_eq!(
        got.header("sluice-error-code"),
        Some("ERR_SLUICE_UPSTREAM_TIMEOUT")
    );
    let logged = edge.wait_for_n("the timeout's log line", 1, |v| {
        v["message"] == "http: no response from the upstream in time"
    });
    assert_eq!(logged["timeout_s"], 1, "{logged}");

    // Through the admin API: per endpoint, HTTP endpoints only, bounded.
    let admin =
        sluice_tests::admin::Admin::new(sluice_tests::admin::listening(&mut edge).0, ADMIN_KEY);
    let policy = fixture::forward_all(API);
    for (url, secs) in [
        ("tcp://127.0.0.1:0", 5),
        ("http://slow.example.com", 0),
        ("http://slow.example.com", 86_401),
    ] {
        let refused = admin.call(
            "POST",
            "/v1/endpoints",
            Some(serde_json::json!({
                "url": url, "traffic_policy": policy, "response_timeout_secs": secs,
            })),
        );
        assert_eq!(refused.status, 400, "{url} {secs}: {}", refused.text);
        assert_eq!(
            refused.body["error"]["code"], "invalid_timeout",
            "{}",
            refused.text
        );
    }
    let made = admin.create(
        "/v1/endpoints",
        serde_json::json!({
            "url": "http://slow.example.com", "traffic_policy": policy, "response_timeout_secs": 2,
        }),
    );
    assert_eq!(made["response_timeout_secs"], 2, "{made}");
    let got = one(&fx, http, "slow.example.com", "/slow", None, &[]);
    assert_eq!(got.status, 504, "{got:?}");
    edge.wait_for_n("the API endpoint's timeout logged", 1, |v| {
        v["message"] == "http: no response from the upstream in time" && v["timeout_s"] == 2
    });

    // Listed: edge.yml's 1 s, the API's 2 s, the default 60 s.
    let listed = admin.get("/v1/endpoints");
    let timeout_of = |url: &str| {
        listed["items"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["url"] == url)
            .unwrap_or_else(|| panic!("{url} not listed: {listed}"))["response_timeout_secs"]
            .clone()
    };
    assert_eq!(timeout_of("http://api.example.com"), 1);
    assert_eq!(timeout_of("http://slow.example.com"), 2);
    assert_eq!(timeout_of("http://admin.example.com"), 60);
}

#[test]
fn a_kept_upstream_connection_that_stops_answering_gets_the_504_too() {
    use std::io::{Read, Write};
    use std::sync::atomic::{AtomicUsize, Ordering};
    let fx = Fixture::new();
    let (mut edge, agent_addr, http) = edge_with(&fx, "    response_timeout: 1s\n");
    // Answers the first request of each connection; a later one on the same connection
    // (one the edge kept alive) is counted and never answered.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let upstream = listener.local_addr().unwrap();
    let stalled = std::sync::Arc::new(AtomicUsize::new(0));
    let counter = stalled.clone();
    std::thread::spawn(move || {
        for mut conn in listener.incoming().flatten() {
            let counter = counter.clone();
            std::thread::spawn(move || {
                let mut buf = [0u8; 4096];
                let mut seen = Vec::new();
                let mut answered = false;
                while let Ok(n @ 1..) = conn.read(&mut buf) {
                    seen.extend_from_slice(&buf[..n]);
                    let Some(end) = seen.windows(4).position(|w| w == b"\r\n\r\n") else {
                        continue;
                    };
                    seen.drain(..end + 4);
                    if answered {
                        counter.fetch_add(1, Ordering::SeqCst);
                    } else {
                        answered = true;
                        let _ = conn.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok");
                    }
                }
            });
        }
    });
    let _agent = agent(
        &fx,
        "agent.yml",
        agent_addr,
        &[(API, format!("http://{upstream}"))],
    );

    // Requests one after another on one client connection: each goes on the upstream
    // connection the one before left kept alive when it is ready by then, else on a new
    // stream (answered). Every request sent on a kept one gets the 504.
    let urls: Vec<String> = (0..5)
        .map(|i| url(http, "api.example.com", &format!("/r{i}")))
        .collect();
    let got = curl(http, "api.example.com", &urls, None, &[], fx.dir());
    assert_eq!(got[0].status, 200, "{:?}", got[0]);
    let timed_out: Vec<&Transfer> = got.iter().filter(|t| t.status == 504).collect();
    let on_kept = stalled.load(Ordering::SeqCst);
    assert!(
        on_kept >= 1,
        "no request went on a kept connection: {got:?}"
    );
    assert_eq!(timed_out.len(), on_kept, "{got:?}");
    assert!(timed_out
        .iter()
        .all(|t| t.header("sluice-error-code") == Some("ERR_SLUICE_UPSTREAM_TIMEOUT")));
    assert!(
        got.iter().all(|t| t.status == 200 || t.status == 504),
        "{got:?}"
    );
    let logged = edge.wait_for_n("the timeouts' log lines", on_kept, |v| {
        v["message"] == "http: no response from the upstream in time"
    });
    assert_eq!(logged["timeout_s"], 1, "{logged}");
}

#[test]
fn the_requests_of_many_client_connections_share_one_multiplexed_stream_per_edge_worker() {
    let fx = Fixture::new();
    // Two edge workers, each keeping one link to the member: the clients' first
    // requests arrive at once, and those not opening their worker's link wait for it.
    let yaml = fx.tls_edge_head().replace(
        "tls_endpoints:\n  listen: 127.0.0.1:0\n",
        "http_endpoints:\n  listen: 127.0.0.1:0\n",
    ) + &format!(
        "  - url: http://api.example.com\n    traffic_policy: {}\n",
        fixture::forward_all(API)
    );
    let mut edge = Sluice::edge(&fx.write("edge.yml", &yaml), "uring");
    let (agent_addr, _) = edge.edge_addrs(0);
    let http = edge.http_endpoints_addr();
    let up = HttpEcho::start("api");
    let agent_yaml = fx.agent_yaml(&fx.token, agent_addr, "tcp", &[]).replace(
        "  workers: 2\n",
        "  workers: 2\n  metrics_listen: 127.0.0.1:0\n",
    ) + &format!(
        "  - url: {API}\n    upstream: {{ url: \"http://{}\" }}\n",
        up.addr
    );
    let mut agent = Sluice::agent(&fx.write("agent.yml", &agent_yaml), "uring");
    let agent_metrics: std::net::SocketAddr = sluice_tests::admin::metrics_listening(&mut agent);
    agent.wait_for("endpoint bound");
    // Eight clients at once, each from an address of its own on one kept-alive
    // connection: every request reaches the upstream as its own client sent it.
    const CLIENTS: usize = 8;
    const REQUESTS: usize = 10;
    let sources: Vec<String> = (0..CLIENTS)
        .map(|c| format!("127.0.0.{}", 10 + c))
        .collect();
    let runs = clients_at_once(&fx, http, REQUESTS, |c| Some(sources[c].clone()), CLIENTS);
    for (c, (source, served)) in sources.iter().zip(runs).enumerate() {
        assert_eq!(served.len(), REQUESTS);
        assert_eq!(
            served.iter().map(|t| t.connects).sum::<u32>(),
            1,
            "{served:?}"
        );
        for (r, transfer) in served.iter().enumerate() {
            assert_eq!(transfer.status, 200, "{transfer:?}");
            let seen = transfer.text().to_ascii_lowercase();
            let line = format!("get /c{c}/r{r} http/1.1\r\n");
            assert!(
                seen.starts_with(&line),
                "expected {line:?}, the upstream saw:\n{seen}"
            );
            assert!(
                seen.contains(&format!("x-forwarded-for: {source}\r\n")),
                "{seen}"
            );
        }
    }

    // The agent was handed a stream per edge worker at most for all of them: the links,
    // whose sub-streams it relayed each to an upstream connection of its own, several
    // at once.
    let text = sluice_tests::admin::scrape(agent_metrics);
    let streams = prom::sample(
        &text,
        &format!("sluice_agent_streams_total{{endpoint=\"{API}:80\",outcome=\"assigned\"}}"),
    );
    let substreams = prom::sample(
        &text,
        &format!("sluice_agent_substreams_total{{endpoint=\"{API}:80\"}}"),
    );
    assert!(
        (1.0..=2.0).contains(&streams),
        "{streams} streams for {CLIENTS} clients at once on 2 edge workers\n{text}"
    );
    assert!(
        substreams >= 2.0,
        "the clients' connections never overlapped: {substreams} sub-stream(s)\n{text}"
    );
    // (The upstream also counts the agent's health probes.)
    let connections = up.accepted.load(std::sync::atomic::Ordering::Relaxed);
    assert!(
        connections as f64 >= substreams,
        "{connections} < {substreams}"
    );
    assert_eq!(
        up.requests.load(std::sync::atomic::Ordering::Relaxed),
        CLIENTS * REQUESTS
    );
}

#[test]
fn requests_fail_over_unseen_when_a_members_upstream_goes_down_under_its_kept_link() {
    let fx = Fixture::new();
    let (_edge, agent_addr, http) = edge(&fx);
    let one_up = HttpEcho::start("one");
    let two_up = HttpEcho::start("two");
    // Member one's agent does not probe its upstream: it stays in the pool after the
    // upstream goes down, and the edge learns of it from the agent's refusals.
    let mut yaml = fx.agent_yaml(&fx.token, agent_addr, "tcp", &[]);
    yaml.push_str(&format!(
        "  - url: {API}\n    pooling_enabled: true\n    upstream: {{ url: \"http://{}\", health_check: {{ enabled: false }} }}\n",
        one_up.addr
    ));
    let mut one = Sluice::agent(&fx.write("one.yml", &yaml), "uring");
    one.wait_for("endpoint bound");
    let _two = agent(
        &fx,
        "two.yml",
        agent_addr,
        &[(API, format!("http://{}", two_up.addr))],
    );
    let urls: Vec<String> = (0..20)
        .map(|i| url(http, "api.example.com", &format!("/r{i}")))
        .collect();
    let served = curl(http, "api.example.com", &urls, None, &[], fx.dir());
    assert!(served.iter().all(|t| t.status == 200), "{served:?}");
    assert!(
        served.iter().any(|t| t.header("x-upstream") == Some("one")),
        "member one served nothing: no link to it to test"
    );

    // Member one's upstream goes down: its kept connections close, and new ones are
    // refused. Every request is still answered, by member two.
    one_up.stop();
    let before = one_up.requests.load(std::sync::atomic::Ordering::SeqCst);
    for round in 0..3 {
        let after = curl(http, "api.example.com", &urls, None, &[], fx.dir());
        let failed: Vec<_> = after.iter().filter(|t| t.status != 200).collect();
        assert!(failed.is_empty(), "round {round}: {failed:?}");
        assert!(after.iter().all(|t| t.header("x-upstream") == Some("two")));
    }
    assert_eq!(
        one_up.requests.load(std::sync::atomic::Ordering::SeqCst),
        before
    );
    // The edge did try member one meanwhile: its agent was refused by its upstream.
    one.wait_for("upstream connect failed");
}

#[test]
fn revoking_a_token_closes_the_upstream_connections_its_multiplexed_links_kept() {
    let fx = Fixture::new();
    let (mut edge, agent_addr, http) = edge(&fx);
    let admin =
        sluice_tests::admin::Admin::new(sluice_tests::admin::listening(&mut edge).0, ADMIN_KEY);
    let user = admin.create("/v1/service_users", serde_json::json!({ "name": "clinic" }));
    let user_id = user["id"].as_str().unwrap();
    let token = admin.create(
        &format!("/v1/service_users/{user_id}/authtokens"),
        serde_json::json!({ "description": "api" }),
    );
    let up = HttpEcho::start("api");
    let mut yaml = fx.agent_yaml(token["token"].as_str().unwrap(), agent_addr, "tcp", &[]);
    yaml.push_str(&format!(
        "  - url: {API}\n    upstream: {{ url: \"http://{}\" }}\n",
        up.addr
    ));
    let mut agent = Sluice::agent(&fx.write("agent.yml", &yaml), "uring");
    agent.wait_for("endpoint bound");

    // Four clients at once; the upstream connections their requests used stay open,
    // kept alive as sub-streams of the edge's links.
    for served in clients_at_once(&fx, http, 5, |_| None, 4) {
        assert!(served.iter().all(|t| t.status == 200), "{served:?}");
    }
    assert!(up.open.load(std::sync::atomic::Ordering::SeqCst) >= 1);

    let answer = admin.call(
        "DELETE",
        &format!(
            "/v1/service_users/{user_id}/authtokens/{}",
            token["id"].as_str().unwrap()
        ),
        None,
    );
    assert!(matches!(answer.status, 200 | 204), "{}", answer.text);
    wait_until(
        "the revoked agent's upstream connections to close",
        std::time::Duration::from_secs(5),
        || up.open.load(std::sync::atomic::Ordering::SeqCst) == 0,
    );
    // Nothing more reaches the upstream through the revoked agent.
    let served = up.requests.load(std::sync::atomic::Ordering::SeqCst);
    let refused = one(&fx, http, "api.example.com", "/after", None, &[]);
    assert_ne!(refused.status, 200, "{refused:?}");
    assert_eq!(
        up.requests.load(std::sync::atomic::Ordering::SeqCst),
        served
    );
}

#[test]
fn a_draining_agent_finishes_the_requests_under_way_and_exits_with_keep_alives_idle() {
    let fx = Fixture::new();
    let (_edge, agent_addr, http) = edge(&fx);
    let up = HttpEcho::start("api");
    // A drain shorter than the 15 s an idle upstream connection is kept.
    let yaml = fx
        .agent_yaml(&fx.token, agent_addr, "tcp", &[])
        .replace("  workers: 2\n", "  workers: 2\n  drain_timeout: 5s\n")
        + &format!(
            "  - url: {API}\n    upstream: {{ url: \"http://{}\" }}\n",
            up.addr
        );
    let mut agent = Sluice::agent(&fx.write("agent.yml", &yaml), "uring");
    agent.wait_for("endpoint bound");
    let urls: Vec<String> = (0..3)
        .map(|r| url(http, "api.example.com", &format!("/r{r}")))
        .collect();
    let served = curl(http, "api.example.com", &urls, None, &[], fx.dir());
    assert!(served.iter().all(|t| t.status == 200), "{served:?}");
    // The request's upstream connection stays, kept alive as an idle sub-stream.
    assert!(up.open.load(std::sync::atomic::Ordering::SeqCst) >= 1);

    // Idle keep-alives are nothing under way: the drain ends without running out of
    // time, and the upstream connections close.
    agent.terminate();
    agent.wait_for("draining: left the edge");
    assert_eq!(agent.wait_exit(), Some(0));
    let stopped = agent.wait_for("agent stopped");
    assert_eq!(stopped["end"], "Drained", "{stopped}");
    wait_until(
        "the agent's upstream connections to close",
        std::time::Duration::from_secs(5),
        || up.open.load(std::sync::atomic::Ordering::SeqCst) == 0,
    );
}
