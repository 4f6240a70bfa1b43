//! End-to-end: the agent names why an upstream could not be connected. One agent
//! serves three endpoints: a working echo upstream, one where nothing listens
//! (refused) and one whose host name cannot resolve. Each failed stream is logged as
//! `upstream connect failed` with its `cause` (`refused`, `dns`) and counted in
//! `sluice_agent_upstream_failures_total{cause}`, consistent with the per-endpoint
//! `upstream_failed` stream counts; the client is closed, and the echo endpoint on the
//! same agent keeps working throughout.
//!
//! The unresolvable name has a label longer than DNS allows (63 bytes), so the
//! resolver refuses it locally: no query leaves the machine.

use std::{
    io::{Read, Write},
    net::SocketAddr,
    time::{Duration, Instant},
};

use sluice_tests::{
    admin::Admin,
    client, faults,
    fixture::{self, Fixture},
    process::Sluice,
    upstream::Echo,
    DRIVERS,
};

const ECHO: &str = "tcp://echo.internal:7";
const REFUSED: &str = "tcp://refused.internal:1";
const UNRESOLVABLE: &str = "tcp://nowhere.internal:2";
/// Clients sent to each failing endpoint.
const PER_FAULT: usize = 3;

/// Stands in for the unresolvable upstream in the generated config until it is
/// replaced by [`unresolvable_host`] (the fixture takes socket addresses).
const PLACEHOLDER: &str = "127.0.0.3:9";

fn unresolvable_host() -> String {
    format!("{}.invalid:80", "x".repeat(70))
}

struct Setup {
    _fx: Fixture,
    _edge: Sluice,
    agent: Sluice,
    _echo: Echo,
    /// Public address per endpoint: echo, refused, unresolvable.
    public: Vec<SocketAddr>,
    metrics: SocketAddr,
}

fn start(driver: &str, transport: &str) -> Setup {
    let fx = Fixture::new();
    let echo = Echo::start();
    let urls = [ECHO, REFUSED, UNRESOLVABLE];
    let endpoints: Vec<(&str, String)> = urls
        .iter()
        .map(|u| ("127.0.0.1:0", fixture::forward_all(u)))
        .collect();
    let mut edge = Sluice::edge(
        &fx.write("edge.yml", &fx.edge_yaml("127.0.0.1:0", &endpoints)),
        driver,
    );
    let (agent_addr, public) = edge.edge_addrs(urls.len());
    let upstreams = [echo.addr, faults::gone_addr(), PLACEHOLDER.parse().unwrap()];
    let pairs: Vec<(&str, SocketAddr)> = urls.iter().copied().zip(upstreams).collect();
    // No health checks: every connect the agent makes is a stream's.
    let agent_yaml = fx
        .agent_yaml(&fx.token, agent_addr, transport, &pairs)
        .replace("\" }", "\", health_check: { enabled: false } }")
        .replace(PLACEHOLDER, &unresolvable_host())
        .replace(
            "  workers: 2\n",
            "  workers: 2\n  metrics_listen: 127.0.0.1:0\n",
        );
    assert!(agent_yaml.contains(".invalid:80"), "{agent_yaml}");
    let mut agent = Sluice::agent(&fx.write("agent.yml", &agent_yaml), driver);
    let metrics = sluice_tests::admin::metrics_listening(&mut agent);
    agent.wait_for_n("all endpoints bound", urls.len(), |v| {
        v["message"] == "endpoint bound"
    });
    Setup {
        _fx: fx,
        _edge: edge,
        agent,
        _echo: echo,
        public,
        metrics,
    }
}

/// A client of a failing endpoint: the tunnel closes it (FIN or reset) without a byte.
fn closed_without_data(target: SocketAddr, what: &str) {
    let mut s = match client::connect_from(None, target) {
        Ok(s) => s,
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return,
        Err(e) => panic!("{what}: connect: {e}"),
    };
    // The write may fail when the close was quick; only the close matters.
    let _ = s.write_all(b"hello?");
    let mut buf = [0u8; 64];
    match s.read(&mut buf) {
        Ok(0) => {}
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
        Ok(n) => panic!("{what}: {n} unexpected bytes"),
        Err(e) => panic!("{what}: read: {e}"),
    }
}

/// One sample of the agent's metrics, 0 when absent.
fn sample(text: &str, series: &str) -> u64 {
    let prefix = format!("{series} ");
    text.lines()
        .find_map(|l| l.strip_prefix(prefix.as_str()))
        .map_or(0, |v| v.trim().parse().unwrap())
}

fn scrape(s: &Setup) -> String {
    Admin::new(s.metrics, "")
        .with_key(None)
        .call("GET", "/metrics", None)
        .text
}

fn by_cause(cause: &str) -> String {
    format!("sluice_agent_upstream_failures_total{{cause=\"{cause}\"}}")
}

fn endpoint_failed(url: &str) -> String {
    format!("sluice_agent_streams_total{{endpoint=\"{url}\",outcome=\"upstream_failed\"}}")
}

/// Polls the metrics until `done` holds for them; the last scrape.
fn scrape_until(s: &Setup, what: &str, done: impl Fn(&str) -> bool) -> String {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let text = scrape(s);
        if done(&text) {
            return text;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: metrics never showed it:\n{text}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn refused_and_unresolvable_upstreams_are_reported_with_distinct_causes() {
    for driver in DRIVERS {
        for transport in ["tcp", "tls"] {
            let what = format!("{driver}/{transport}");
            let mut s = start(driver, transport);
            client::echo_ok(None, s.public[0], b"before the faults")
                .unwrap_or_else(|e| panic!("{what}: echo before: {e}"));
            for i in 0..PER_FAULT {
                closed_without_data(s.public[1], &format!("{what}: refused #{i}"));
                closed_without_data(s.public[2], &format!("{what}: unresolvable #{i}"));
                // The good endpoint of the same agent is not disturbed.
                client::echo_ok(None, s.public[0], format!("between {i}").as_bytes())
                    .unwrap_or_else(|e| panic!("{what}: echo between faults: {e}"));
            }

            // The log line names the endpoint and the cause.
            for (url, cause) in [(REFUSED, "refused"), (UNRESOLVABLE, "dns")] {
                let line = s
                    .agent
                    .wait_for_n(&format!("{cause} failure logged"), 1, |v| {
                        v["message"] == "upstream connect failed" && v["url"] == url
                    });
                assert_eq!(line["cause"], cause, "{what}: {line}");
                assert!(
                    line["error"].as_str().is_some_and(|e| !e.is_empty()),
                    "{what}: {line}"
                );
            }
            let lines = s.agent.count(|v| v["message"] == "upstream connect failed");
            let named = s.agent.count(|v| {
                v["message"] == "upstream connect failed"
                    && (v["cause"] == "refused" || v["cause"] == "dns")
            });
            assert_eq!(lines, named, "{what}: a failure logged without its cause");

            // The counters by cause match the per-endpoint stream counts, and no other
            // cause was counted. The edge may try a member more than once per client,
            // so each is at least the number of clients.
            let text = scrape_until(&s, &what, |t| {
                sample(t, &by_cause("refused")) >= PER_FAULT as u64
                    && sample(t, &by_cause("dns")) >= PER_FAULT as u64
            });
            assert_eq!(
                sample(&text, &by_cause("refused")),
                sample(&text, &endpoint_failed(REFUSED)),
                "{what}:\n{text}"
            );
            assert_eq!(
                sample(&text, &by_cause("dns")),
                sample(&text, &endpoint_failed(UNRESOLVABLE)),
                "{what}:\n{text}"
            );
            assert_eq!(sample(&text, &endpoint_failed(ECHO)), 0, "{what}:\n{text}");
            for cause in [
                "unreachable",
                "timeout",
                "connect",
                "proxy_header",
                "tls",
                "tls_timeout",
            ] {
                assert!(
                    text.contains(&by_cause(cause)),
                    "{what}: cause {cause} not exported:\n{text}"
                );
                assert_eq!(
                    sample(&text, &by_cause(cause)),
                    0,
                    "{what}: {cause}\n{text}"
                );
            }

            client::echo_ok(None, s.public[0], b"after the faults")
                .unwrap_or_else(|e| panic!("{what}: echo after: {e}"));
        }
    }
}
