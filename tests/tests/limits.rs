//! End-to-end: connection limits per endpoint and per client IP, and rate-limited
//! connection-level logs under a flood.

use std::{
    io::{Read, Write},
    net::{IpAddr, TcpStream},
    time::Duration,
};

use sluice_tests::{
    client,
    fixture::{self, Fixture},
    process::Sluice,
    upstream::Echo,
};

const URL: &str = "tcp://db.internal:5432";

fn ip(s: &str) -> Option<IpAddr> {
    Some(s.parse().unwrap())
}

/// An established, echoing connection (kept open).
fn open_echo(source: Option<IpAddr>, target: std::net::SocketAddr) -> std::io::Result<TcpStream> {
    let mut s = client::connect_from(source, target)?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    s.write_all(b"hi")?;
    let mut got = [0u8; 2];
    s.read_exact(&mut got)?;
    Ok(s)
}

#[test]
fn endpoint_and_per_ip_limits_close_the_excess_and_count_it() {
    let fx = Fixture::new();
    let yaml = fx
        .edge_yaml("127.0.0.1:0", &[("0.0.0.0:0", fixture::forward_all(URL))])
        .replace(
            "    traffic_policy:",
            "    max_connections: 3\n    max_connections_per_ip: 2\n    traffic_policy:",
        );
    let mut edge = Sluice::edge(&fx.write("edge.yml", &yaml), "uring");
    let (agent_addr, eps) = edge.edge_addrs(1);
    let public = std::net::SocketAddr::from(([127, 0, 0, 1], eps[0].port()));
    let upstream = Echo::start();
    let mut agent = Sluice::agent(
        &fx.write(
            "agent.yml",
            &fx.agent_yaml(&fx.token, agent_addr, "tcp", &[(URL, upstream.addr)]),
        ),
        "uring",
    );
    agent.wait_for("endpoint bound");

    let a1 = open_echo(ip("127.0.0.1"), public).unwrap();
    let a2 = open_echo(ip("127.0.0.1"), public).unwrap();
    assert!(
        client::is_refused(ip("127.0.0.1"), public),
        "third from one IP was served"
    );
    let b1 = open_echo(ip("127.0.0.2"), public).unwrap();
    assert!(
        client::is_refused(ip("127.0.0.3"), public),
        "fourth on the endpoint was served"
    );
    edge.wait_for_n("limit logs", 2, |v| {
        v["message"] == "connection limit reached; closed"
    });
    assert_eq!(
        edge.count(|v| v["message"] == "connection limit reached; closed"
            && v["limit"] == "max_connections_per_ip"),
        1
    );
    // Places free up when connections close.
    drop(a1);
    client::wait_until_echo(public, Duration::from_secs(5)).unwrap();
    drop((a2, b1));
}

#[test]
fn a_flood_of_denied_connections_is_logged_at_a_bounded_rate() {
    let fx = Fixture::new();
    let cfg = fx.write(
        "edge.yml",
        &fx.edge_yaml(
            "127.0.0.1:0",
            &[
                ("127.0.0.1:0", fixture::allow_only(&["10.0.0.0/8"], URL)),
                ("127.0.0.1:0", fixture::forward_all(URL)),
            ],
        ),
    );
    let mut edge = Sluice::edge(&cfg, "uring");
    let (agent_addr, eps) = edge.edge_addrs(2);
    // Positive control: the agent serves the URL, and the same client gets through
    // the endpoint whose policy lets it; the refusals below are the policy's.
    let upstream = Echo::start();
    let mut agent = Sluice::agent(
        &fx.write(
            "agent.yml",
            &fx.agent_yaml(&fx.token, agent_addr, "tcp", &[(URL, upstream.addr)]),
        ),
        "uring",
    );
    agent.wait_for("endpoint bound");
    // Both endpoints listen on 127.0.0.1:0; which port is which is found by trying.
    let (allowed, denied) = if client::echo_ok(None, eps[0], b"probe").is_ok() {
        (eps[0], eps[1])
    } else {
        (eps[1], eps[0])
    };
    client::echo_ok(None, allowed, b"control").unwrap();
    let flood_started = std::time::Instant::now();
    let attempts = 300;
    for _ in 0..attempts {
        assert!(client::is_refused(None, denied));
    }
    edge.wait_for_n("first denials", 1, |v| {
        v["message"] == "denied by traffic policy"
    });
    let first = edge.wait_for_n("a denial", 1, |v| {
        v["message"] == "denied by traffic policy"
    });
    assert!(first["rule"].is_number(), "the rule is named: {first}");
    // One more denial after the flood carries the count of those suppressed (the
    // throttle reports on the next event it lets through, in a later second).
    let end = std::time::Instant::now() + Duration::from_secs(10);
    while edge.count(|v| v["message"] == "similar events suppressed (log rate limit)") == 0 {
        assert!(std::time::Instant::now() < end, "no suppression report");
        assert!(client::is_refused(None, denied));
        std::thread::sleep(Duration::from_millis(100));
    }
    // The limiter lets at most 10 lines a second through: bound the count by the
    // seconds the denials spanned, not by a fraction of the attempts.
    let seconds = flood_started.elapsed().as_secs() + 2;
    let logged = edge.count(|v| v["message"] == "denied by traffic policy");
    assert!(
        logged as u64 <= 10 * seconds,
        "{logged} denials logged in under {seconds} s"
    );
    let suppressed: u64 = edge
        .log_text()
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["message"] == "similar events suppressed (log rate limit)")
        .filter_map(|v| v["suppressed"].as_u64())
        .sum();
    assert!(suppressed > 0);
}
