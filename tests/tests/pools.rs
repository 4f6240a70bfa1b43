//! End-to-end: several agents binding one internal URL with `pooling_enabled: true`
//! form a pool. Connections spread over its members (fewer to a slow one); a member
//! killed, drained, or whose upstream stops, stops receiving them with no
//! client-visible error (the edge fails over before any byte reaches an upstream);
//! members must agree on pooling.

use std::{
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use sluice_tests::{
    client,
    fixture::{self, Fixture},
    load::Load,
    process::Sluice,
    upstream::Echo,
    wait_until, DRIVERS,
};

const URL: &str = "tcp://db.internal:5432";
/// The fixture's agents: `heartbeat_tolerance: 3s`.
const TOLERANCE: Duration = Duration::from_secs(3);
/// Fast upstream checks, so tests see transitions quickly.
const FAST_CHECKS: &str =
    "health_check: { interval: 100ms, timeout: 100ms, healthy_threshold: 2, unhealthy_threshold: 2 }";

fn agent_yaml(
    fx: &Fixture,
    edge: std::net::SocketAddr,
    upstream: std::net::SocketAddr,
    pooling: bool,
) -> String {
    let yaml = fx.agent_yaml(&fx.token, edge, "tcp", &[(URL, upstream)]);
    if pooling {
        fixture::pooled(&yaml, URL)
    } else {
        yaml
    }
}

/// A pool member's config: `transport`, pooling on, fast health checks.
fn member_yaml(
    fx: &Fixture,
    edge: std::net::SocketAddr,
    upstream: std::net::SocketAddr,
    transport: &str,
) -> String {
    fixture::pooled(
        &fx.agent_yaml(&fx.token, edge, transport, &[(URL, upstream)]),
        URL,
    )
    .replace(
        &format!("upstream: {{ url: \"{upstream}\" }}"),
        &format!("upstream: {{ url: \"{upstream}\", {FAST_CHECKS} }}"),
    )
}

/// An edge with one public endpoint forwarding to [`URL`].
fn pool_edge(fx: &Fixture, driver: &str) -> (Sluice, std::net::SocketAddr, std::net::SocketAddr) {
    let cfg = fx.write(
        "edge.yml",
        &fx.edge_yaml("127.0.0.1:0", &[("127.0.0.1:0", fixture::forward_all(URL))]),
    );
    let mut edge = Sluice::edge(&cfg, driver);
    let (agent_addr, eps) = edge.edge_addrs(1);
    (edge, agent_addr, eps[0])
}

/// Starts one member per upstream and waits until the pool has them all; returns the
/// agents and their session ids.
fn start_members(
    fx: &Fixture,
    edge: &mut Sluice,
    agent_addr: std::net::SocketAddr,
    upstreams: &[Echo],
    transport: &str,
    driver: &str,
) -> (Vec<Sluice>, Vec<u64>) {
    let mut agents = Vec::new();
    let mut sessions = Vec::new();
    for (i, up) in upstreams.iter().enumerate() {
        let path = fx.write(
            &format!("member{i}.yml"),
            &member_yaml(fx, agent_addr, up.addr, transport),
        );
        let mut agent = Sluice::agent(&path, driver);
        let established = agent.wait_for("session established");
        sessions.push(established["session"].as_u64().unwrap());
        agent.wait_for("endpoint bound");
        agents.push(agent);
    }
    let n = upstreams.len();
    edge.wait_for_n("full pool", 1, |v| {
        v["message"] == "endpoint bound" && v["members"] == n
    });
    (agents, sessions)
}

#[test]
fn a_pool_of_three_shares_connections_and_survives_a_dead_member() {
    for driver in DRIVERS {
        let fx = Fixture::new();
        let cfg = fx.write(
            "edge.yml",
            &fx.edge_yaml("127.0.0.1:0", &[("127.0.0.1:0", fixture::forward_all(URL))]),
        );
        let mut edge = Sluice::edge(&cfg, driver);
        let (agent_addr, eps) = edge.edge_addrs(1);
        let upstreams: Vec<Echo> = (0..3).map(|_| Echo::start()).collect();
        let mut agents: Vec<Sluice> = upstreams
            .iter()
            .enumerate()
            .map(|(i, up)| {
                let path = fx.write(
                    &format!("agent{i}.yml"),
                    &agent_yaml(&fx, agent_addr, up.addr, true),
                );
                Sluice::agent(&path, driver)
            })
            .collect();
        for a in &mut agents {
            a.wait_for("endpoint bound");
        }
        edge.wait_for_n("three members", 1, |v| {
            v["message"] == "endpoint bound" && v["members"] == 3
        });

        for i in 0..300u64 {
            client::echo_ok(None, eps[0], &i.to_be_bytes()).unwrap();
        }
        let counts: Vec<usize> = upstreams.iter().map(Echo::accepted).collect();
        assert_eq!(counts.iter().sum::<usize>(), 300, "{driver}: {counts:?}");
        assert!(
            counts.iter().all(|&c| c >= 60),
            "{driver}: unfair spread (each should get >= 20%) {counts:?}"
        );

        agents[1].kill();
        edge.wait_for_n("member left", 1, |v| {
            v["message"] == "pool member left" && v["members"] == 2
        });
        let dead_before = upstreams[1].accepted();
        for i in 0..100u64 {
            client::echo_ok(None, eps[0], &i.to_be_bytes())
                .unwrap_or_else(|e| panic!("{driver}: connection {i} after a member died: {e}"));
        }
        assert_eq!(
            upstreams[1].accepted(),
            dead_before,
            "{driver}: the dead member got traffic"
        );
    }
}

#[test]
fn a_slow_member_gets_fewer_connections() {
    for transport in ["tcp", "tls"] {
        let driver = DRIVERS[0];
        let fx = Fixture::new();
        let (mut edge, agent_addr, public) = pool_edge(&fx, driver);
        let upstreams = vec![
            Echo::start(),
            Echo::start(),
            Echo::start_slow(Duration::from_millis(50)),
        ];
        let _members = start_members(&fx, &mut edge, agent_addr, &upstreams, transport, driver);
        // 300 connections from 12 concurrent clients.
        let next = Arc::new(AtomicUsize::new(0));
        let clients: Vec<_> = (0..12)
            .map(|_| {
                let next = next.clone();
                std::thread::spawn(move || {
                    while next.fetch_add(1, Ordering::Relaxed) < 300 {
                        client::echo_ok(None, public, b"how fast are you").unwrap();
                    }
                })
            })
            .collect();
        for c in clients {
            c.join().unwrap();
        }
        let counts: Vec<usize> = upstreams.iter().map(Echo::accepted).collect();
        assert_eq!(counts.iter().sum::<usize>(), 300, "{transport}: {counts:?}");
        assert!(
            counts[2] * 4 < counts[0].min(counts[1]),
            "{transport}: the slow member got too many: {counts:?}"
        );
        assert!(
            counts[0].min(counts[1]) >= 100,
            "{transport}: fast members unbalanced: {counts:?}"
        );
        eprintln!("{transport}: fast, fast, slow (50 ms) = {counts:?}");
    }
}

#[test]
fn kill_9_of_a_member_under_load_fails_only_its_streams_and_is_detected_in_time() {
    for (driver, transport) in [(DRIVERS[0], "tcp"), (DRIVERS[1], "tls")] {
        let fx = Fixture::new();
        let (mut edge, agent_addr, public) = pool_edge(&fx, driver);
        let upstreams: Vec<Echo> = (0..3).map(|_| Echo::start()).collect();
        let (mut agents, sessions) =
            start_members(&fx, &mut edge, agent_addr, &upstreams, transport, driver);
        let load = Load::start(public, 8);
        load.wait_for_more(200, "before the kill");
        let in_flight_before = upstreams[1].active();
        let killed_at = Instant::now();
        agents[1].kill();
        let dead_at = Instant::now();
        let in_flight_after = upstreams[1].active();
        let dead = sessions[1];
        edge.wait_for_n("dead member removed", 1, |v| {
            v["message"] == "pool member left" && v["session"] == dead
        });
        let detected = killed_at.elapsed();
        let dead_picks = |edge: &Sluice| {
            edge.count(|v| {
                v["message"] == "pool member unusable; failing over" && v["session"] == dead
            })
        };
        // Let attempts that picked it before it left finish (and log), then check that
        // no new connection picks it any more.
        load.wait_for_more(50, "after detection");
        let picks_after_detection = dead_picks(&edge);
        let accepted_dead = upstreams[1].accepted();
        load.wait_for_more(300, "after the kill");
        let (ok, failures) = load.finish();
        assert_eq!(upstreams[1].accepted(), accepted_dead, "{transport}");
        assert_eq!(
            dead_picks(&edge),
            picks_after_detection,
            "{transport}: the dead member was chosen after it left"
        );
        // Only connections already running when the member died may fail (those it
        // carried); with 8 clients over 3 members that is a few at most.
        let late: Vec<_> = failures.iter().filter(|(t, _)| *t > dead_at).collect();
        assert!(
            late.is_empty() && failures.len() <= 4,
            "{transport}: {} failed ({} started after the kill; {in_flight_before}/{in_flight_after} connections open at its upstream before/after): {failures:?}",
            failures.len(),
            late.len()
        );
        assert!(
            detected <= TOLERANCE + Duration::from_secs(2),
            "{transport}: detection took {detected:?}"
        );
        eprintln!(
            "{driver}/{transport}: kill -9: {ok} ok, {} failed (open at its upstream: {in_flight_before}), dead member dropped after {detected:?}",
            failures.len()
        );
    }
}

#[test]
fn a_member_that_goes_silent_is_dropped_within_its_heartbeat_tolerance() {
    for (driver, transport) in [(DRIVERS[1], "tcp"), (DRIVERS[0], "tls")] {
        let fx = Fixture::new();
        let (mut edge, agent_addr, public) = pool_edge(&fx, driver);
        let upstreams: Vec<Echo> = (0..3).map(|_| Echo::start()).collect();
        let (mut agents, sessions) =
            start_members(&fx, &mut edge, agent_addr, &upstreams, transport, driver);
        let load = Load::start(public, 8);
        load.wait_for_more(200, "before the freeze");
        // SIGSTOP: no FIN, no RST; only the missing heartbeats tell.
        let freeze_sent = Instant::now();
        agents[0].freeze();
        // Connections started before every agent thread stopped may still have been
        // accepted by it: only those started after can be required to fail over.
        let frozen_at = Instant::now();
        let silent = sessions[0];
        edge.wait_for_n("silent member removed", 1, |v| {
            v["message"] == "pool member left" && v["session"] == silent
        });
        let detected = freeze_sent.elapsed();
        load.wait_for_more(300, "after the silent member left");
        // Its streams in flight cannot finish; ending the process closes them.
        agents[0].kill();
        let (ok, failures) = load.finish();
        let late: Vec<_> = failures.iter().filter(|(t, _)| *t > frozen_at).collect();
        assert!(
            late.is_empty(),
            "{transport}: connections started after the freeze failed: {late:?}"
        );
        // The edge counts the tolerance from the last heartbeat (1 s interval).
        assert!(
            detected >= TOLERANCE - Duration::from_millis(1500)
                && detected <= TOLERANCE + Duration::from_millis(1500),
            "{transport}: silent member dropped after {detected:?}"
        );
        eprintln!(
            "{driver}/{transport}: SIGSTOP: {ok} ok, {} failed (all in flight on it), dropped after {detected:?}",
            failures.len()
        );
    }
}

#[test]
fn a_member_whose_upstream_stops_turns_unhealthy_loses_no_connection_and_rejoins() {
    for (driver, transport) in [(DRIVERS[1], "tcp"), (DRIVERS[0], "tls")] {
        let fx = Fixture::new();
        let (mut edge, agent_addr, public) = pool_edge(&fx, driver);
        let mut upstreams: Vec<Echo> = (0..3).map(|_| Echo::start()).collect();
        let (_agents, sessions) =
            start_members(&fx, &mut edge, agent_addr, &upstreams, transport, driver);
        let load = Load::start(public, 6);
        load.wait_for_more(100, "before the upstream stops");
        let member = sessions[2];
        let stop_began = Instant::now();
        upstreams[2].stop();
        let stop_ended = Instant::now();
        edge.wait_for_n("member unhealthy", 1, |v| {
            v["message"] == "pool member unhealthy" && v["session"] == member
        });
        load.wait_for_more(200, "while a member is unhealthy");
        let while_down = upstreams[2].accepted();
        upstreams[2].restart();
        edge.wait_for_n("member healthy again", 1, |v| {
            v["message"] == "pool member healthy" && v["session"] == member
        });
        let rejoined = &upstreams[2];
        wait_until(
            "the member gets connections again",
            Duration::from_secs(20),
            || rejoined.accepted() >= while_down + 20,
        );
        let (ok, failures) = load.finish();
        // A connection the kernel completed for the listener just as it closed is
        // reset after the agent reported it connected: in flight at the stop, nothing
        // can replay it. Only such connections may fail.
        let (at_stop, others): (Vec<_>, Vec<_>) = failures.iter().partition(|(t, e)| {
            *t >= stop_began - Duration::from_millis(500) && *t <= stop_ended && e.contains("reset")
        });
        assert!(
            others.is_empty() && at_stop.len() <= 2,
            "{driver}/{transport}: {} of {} failed: {failures:?}",
            failures.len(),
            ok + failures.len()
        );
        // Suspicion (edge/open.rs) follows a failed attempt on a member: only the
        // member whose upstream stopped is ever suspect, each mark after one of its
        // failovers, and every failover went to another member (none lost, above).
        let suspect = edge.count(|v| v["message"] == "pool member suspect");
        let suspect_member =
            edge.count(|v| v["message"] == "pool member suspect" && v["session"] == member);
        let failovers = edge.count(|v| {
            v["message"] == "pool member unusable; failing over" && v["session"] == member
        });
        let other_failovers = edge.count(|v| {
            v["message"] == "pool member unusable; failing over" && v["session"] != member
        });
        assert_eq!(
            suspect, suspect_member,
            "{driver}/{transport}: a member whose upstream was fine was marked suspect"
        );
        assert!(
            suspect <= failovers,
            "{driver}/{transport}: {suspect} suspect marks after {failovers} failed attempts"
        );
        assert_eq!(
            other_failovers, 0,
            "{driver}/{transport}: attempts failed on healthy members"
        );
        eprintln!(
            "{driver}/{transport}: upstream stop/start: {ok} ok, {} failed (in flight at the stop), suspect marks {suspect}",
            at_stop.len()
        );
    }
}

#[test]
fn a_rolling_restart_of_every_member_under_load_fails_nothing() {
    for (driver, transport) in [(DRIVERS[0], "tcp"), (DRIVERS[1], "tls")] {
        let fx = Fixture::new();
        let (mut edge, agent_addr, public) = pool_edge(&fx, driver);
        let upstreams: Vec<Echo> = (0..3).map(|_| Echo::start()).collect();
        let (mut agents, _) =
            start_members(&fx, &mut edge, agent_addr, &upstreams, transport, driver);
        let load = Load::start(public, 6);
        load.wait_for_more(100, "before the restarts");
        for (i, agent) in agents.iter_mut().enumerate() {
            let left = |v: &serde_json::Value| v["message"] == "pool member left";
            let left_before = edge.count(left);
            agent.terminate();
            assert_eq!(agent.wait_exit(), Some(0), "{transport}: member {i}");
            // The edge learns of the exit from its control channel's end, a moment
            // later; the replacement then joins a pool of two and makes it three.
            edge.wait_for_n("member gone", left_before + 1, left);
            let full =
                |v: &serde_json::Value| v["message"] == "pool member joined" && v["members"] == 3;
            let full_before = edge.count(full);
            let path = fx.path(&format!("member{i}.yml"));
            *agent = Sluice::agent(&path, driver);
            agent.wait_for("endpoint bound");
            edge.wait_for_n("member back", full_before + 1, full);
            load.wait_for_more(100, "after a restart");
        }
        let (ok, failures) = load.finish();
        assert!(
            failures.is_empty(),
            "{driver}/{transport}: {} of {} failed: {failures:?}",
            failures.len(),
            ok + failures.len()
        );
        eprintln!("{driver}/{transport}: rolling restart: {ok} ok, 0 failed");
    }
}

#[test]
fn weights_split_connections_in_proportion() {
    let driver = DRIVERS[0];
    let fx = Fixture::new();
    let (mut edge, agent_addr, public) = pool_edge(&fx, driver);
    let upstreams = [Echo::start(), Echo::start()];
    let mut agents = Vec::new();
    for (i, (up, weight)) in upstreams.iter().zip([300, 100]).enumerate() {
        let yaml = member_yaml(&fx, agent_addr, up.addr, "tcp").replace(
            "    pooling_enabled: true\n",
            &format!("    pooling_enabled: true\n    weight: {weight}\n"),
        );
        let mut agent = Sluice::agent(&fx.write(&format!("w{i}.yml"), &yaml), driver);
        agent.wait_for("endpoint bound");
        agents.push(agent);
    }
    edge.wait_for_n("weights known", 2, |v| v["message"] == "endpoint bound");
    for i in 0..400u64 {
        client::echo_ok(None, public, &i.to_be_bytes()).unwrap();
    }
    let (heavy, light) = (upstreams[0].accepted(), upstreams[1].accepted());
    assert_eq!(heavy + light, 400);
    // Idle members: the first draw, weighted 3:1, wins.
    assert!(
        (240..=360).contains(&heavy),
        "weight 300 vs 100: {heavy} vs {light}"
    );
}

#[test]
fn a_tls_connection_is_replayed_on_another_member_when_an_upstream_refuses() {
    for (driver, transport) in [(DRIVERS[0], "tcp"), (DRIVERS[1], "tls")] {
        let fx = Fixture::new();
        let good = sluice_tests::tls_peers::TlsEcho::start(&["db.acme.example"]);
        // A port nobody listens on: connecting is refused.
        let refused = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        let edge_yaml = format!(
            "{}  - url: tls://db.acme.example\n    traffic_policy: {}\n",
            fx.tls_edge_head(),
            fixture::forward_all("tls://db.internal:443"),
        );
        let mut edge = Sluice::edge(&fx.write("edge.yml", &edge_yaml), driver);
        let (agent_addr, _) = edge.edge_addrs(0);
        let tls_port: std::net::SocketAddr = edge.tls_endpoints_addr();
        // The broken member has no health checks and a far larger weight, so the
        // edge picks it first and only the failover saves the connection.
        let mut agents = Vec::new();
        for (name, upstream, extra) in [
            ("broken", refused, "weight: 1000\n    "),
            ("good", good.addr, "weight: 1\n    "),
        ] {
            let yaml = fx
                .agent_yaml(
                    &fx.token,
                    agent_addr,
                    transport,
                    &[("tls://db.internal:443", upstream)],
                )
                .replace(
                    "    upstream: {",
                    &format!("    pooling_enabled: true\n    {extra}upstream: {{"),
                )
                .replace(
                    &format!("url: \"{upstream}\" }}"),
                    &format!("url: \"{upstream}\", health_check: {{ enabled: false }} }}"),
                );
            let mut agent = Sluice::agent(&fx.write(&format!("{name}.yml"), &yaml), driver);
            agent.wait_for("endpoint bound");
            agents.push(agent);
        }
        let trust = sluice_tests::tls_peers::client_config(&[&good.cert]);
        for i in 0..20 {
            sluice_tests::tls_peers::tls_echo(
                tls_port,
                trust.clone(),
                "db.acme.example",
                4096,
                format!("hello {i}").as_bytes(),
            )
            .unwrap_or_else(|e| panic!("{driver}/{transport}: connection {i}: {e}"));
        }
        let moved = edge.count(|v| {
            v["message"] == "pool member unusable; failing over"
                && v["reason"] == "upstream connect failed"
        });
        assert!(moved >= 1, "{driver}/{transport}: no failover happened");
        assert_eq!(good.accepted(), 20, "{driver}/{transport}");
        agents[0].wait_for("upstream connect failed");
    }
}

#[test]
fn when_every_member_refuses_the_client_is_reset() {
    for transport in ["tcp", "tls"] {
        let driver = DRIVERS[1];
        let fx = Fixture::new();
        let (mut edge, agent_addr, public) = pool_edge(&fx, driver);
        let refused = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        let yaml = fx.agent_yaml(&fx.token, agent_addr, transport, &[(URL, refused)]);
        let mut agent = Sluice::agent(&fx.write("agent.yml", &yaml), driver);
        agent.wait_for("endpoint bound");
        // The reset can come so fast that `connect` itself reports it.
        let err = client::connect_from(None, public)
            .and_then(|s| client::exchange(s, b"anyone?"))
            .expect_err("an upstream that refuses must not look like an empty answer");
        assert_eq!(
            err.kind(),
            std::io::ErrorKind::ConnectionReset,
            "{transport}: {err}"
        );
        edge.wait_for("no pool member could take the connection");
    }
}

#[test]
fn members_must_all_enable_pooling() {
    let fx = Fixture::new();
    let cfg = fx.write(
        "edge.yml",
        &fx.edge_yaml("127.0.0.1:0", &[("127.0.0.1:0", fixture::forward_all(URL))]),
    );
    let mut edge = Sluice::edge(&cfg, DRIVERS[0]);
    let (agent_addr, eps) = edge.edge_addrs(1);
    let (a_up, b_up) = (Echo::start(), Echo::start());
    let mut a = Sluice::agent(
        &fx.write("a.yml", &agent_yaml(&fx, agent_addr, a_up.addr, true)),
        DRIVERS[0],
    );
    a.wait_for("endpoint bound");
    let mut b = Sluice::agent(
        &fx.write("b.yml", &agent_yaml(&fx, agent_addr, b_up.addr, false)),
        DRIVERS[0],
    );
    let refused = b.wait_for("edge reported an error");
    let detail = refused["detail"].as_str().unwrap();
    assert!(
        detail.contains(URL) && detail.contains("pooling_enabled"),
        "{detail}"
    );
    for i in 0..20u64 {
        client::echo_ok(None, eps[0], &i.to_be_bytes()).unwrap();
    }
    assert_eq!((a_up.accepted(), b_up.accepted()), (20, 0));
}
