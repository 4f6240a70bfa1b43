//! End-to-end: agents holding sessions with several edges of a fleet. Three edges on
//! one host (127.0.0.1, .2, .3) share their state in a real etcd; an agent lists all
//! three in `connect_url` and keeps `edge_connections` sessions, each with a distinct
//! edge, each binding its endpoint. An edge killed with `kill -9` costs the agent that
//! session only: the slot moves to a free edge, and connections through the other
//! edges never notice.

use std::{
    net::SocketAddr,
    sync::atomic::{AtomicBool, AtomicUsize, Ordering},
    time::{Duration, Instant},
};

use serde_json::json;
use sluice_tests::{
    admin::{metrics_listening, scrape},
    client,
    etcd::Etcd,
    fixture::{self, Fixture},
    fleet::{agent_yaml_on, listen_addr, on, three_edges, Edge, DRIVER, NAMES, PROPAGATION},
    process::Sluice,
    prom,
    upstream::Echo,
    wait_until,
};

const URL: &str = "tcp://db.internal:5432";
/// An agent serving [`URL`] with `upstream`, listing every edge of `edges`, keeping
/// `k` sessions; its metrics address.
fn fleet_agent(
    fx: &Fixture,
    edges: &[Edge],
    k: usize,
    upstream: SocketAddr,
) -> (Sluice, SocketAddr) {
    let ports: Vec<SocketAddr> = edges.iter().map(|e| e.agent_addr).collect();
    let yaml = agent_yaml_on(fx, &ports, k, "tcp", &[(URL, upstream)]).replace(
        "  workers: 2\n",
        "  workers: 2\n  metrics_listen: 127.0.0.1:0\n",
    );
    let mut agent = Sluice::agent(&fx.write("agent.yml", &yaml), DRIVER);
    let metrics = metrics_listening(&mut agent);
    (agent, metrics)
}

/// Which of `edges` (by index) hold a session now, by their own account.
fn holding(edges: &[Edge], alive: &[usize]) -> Vec<usize> {
    alive
        .iter()
        .copied()
        .filter(|&i| {
            let sessions = edges[i]
                .admin
                .get(&format!("/v1/sessions?edge={}", NAMES[i]));
            let n = sessions["items"].as_array().unwrap().len();
            assert!(
                n <= 1,
                "edge {i} holds {n} sessions of one agent: {sessions}"
            );
            n == 1
        })
        .collect()
}

/// The `tcp://` endpoint forwarding to [`URL`], made through edge 0: its port.
fn endpoint(edges: &[Edge]) -> u16 {
    let created = edges[0].admin.create(
        "/v1/endpoints",
        json!({ "url": "tcp://127.0.0.1:0", "traffic_policy": fixture::forward_all(URL) }),
    );
    listen_addr(&created).unwrap().port()
}

#[test]
fn an_agent_keeps_k_sessions_on_distinct_edges_and_moves_a_lost_one_to_a_free_edge() {
    let etcd = Etcd::start();
    let fx = Fixture::new();
    let mut edges = three_edges(&fx, &etcd);
    let upstream = Echo::start();
    let (mut agent, metrics) = fleet_agent(&fx, &edges, 2, upstream.addr);
    agent.wait_for_n("two sessions", 2, |v| v["message"] == "session established");
    let port = endpoint(&edges);

    // Two sessions, on two distinct edges; both serve the endpoint into the agent.
    let mut held = Vec::new();
    wait_until("two edges hold a session each", PROPAGATION, || {
        held = holding(&edges, &[0, 1, 2]);
        held.len() == 2
    });
    for &i in &held {
        client::wait_until_echo(on(i, port), PROPAGATION)
            .unwrap_or_else(|e| panic!("edge {i} holds a session but does not serve: {e}"));
    }
    let scraped = scrape(metrics);
    assert_eq!(prom::sample(&scraped, "sluice_agent_edge_sessions"), 2.0);
    assert_eq!(
        prom::sample(&scraped, "sluice_agent_edge_sessions_wanted"),
        2.0
    );
    for &i in &held {
        let series = format!(
            "sluice_agent_edge_session_up{{edge=\"{}\"}}",
            edges[i].agent_addr
        );
        assert_eq!(prom::sample(&scraped, &series), 1.0, "{scraped}");
    }

    // The first edge holding a session dies: the agent re-establishes that session on
    // the edge it did not hold, which then serves the endpoint too.
    let (lost, kept) = (held[0], held[1]);
    let free = (0..3).find(|i| !held.contains(i)).unwrap();
    edges[lost].process.kill();
    let killed_at = Instant::now();
    let mut survivors = vec![kept, free];
    survivors.sort();
    wait_until(
        "the agent holds a session on the free edge",
        PROPAGATION * 2,
        || holding(&edges, &survivors) == survivors,
    );
    eprintln!(
        "edge {lost} killed; the agent held sessions on edges {kept} and {free} after {:?}",
        killed_at.elapsed()
    );
    for i in [kept, free] {
        client::wait_until_echo(on(i, port), PROPAGATION)
            .unwrap_or_else(|e| panic!("edge {i} after the loss: {e}"));
    }
    let scraped = scrape(metrics);
    assert_eq!(
        prom::sample(&scraped, "sluice_agent_edge_sessions"),
        2.0,
        "{scraped}"
    );
    let gone = format!(
        "sluice_agent_edge_session_up{{edge=\"{}\"}}",
        edges[lost].agent_addr
    );
    assert!(!scraped.contains(&gone), "{scraped}");
}

#[test]
fn with_a_session_on_every_edge_connections_through_the_others_survive_an_edge_killed() {
    let etcd = Etcd::start();
    let fx = Fixture::new();
    let mut edges = three_edges(&fx, &etcd);
    let upstream = Echo::start();
    let (mut agent, metrics) = fleet_agent(&fx, &edges, 3, upstream.addr);
    agent.wait_for_n("three sessions", 3, |v| {
        v["message"] == "session established"
    });
    let port = endpoint(&edges);
    for i in 0..3 {
        client::wait_until_echo(on(i, port), PROPAGATION)
            .unwrap_or_else(|e| panic!("edge {i} does not serve: {e}"));
    }

    // A connection loop over edges 0 and 1 while edge 2 is killed.
    let stop = AtomicBool::new(false);
    let made = AtomicUsize::new(0);
    let (served, failures) = std::thread::scope(|s| {
        let looping = s.spawn(|| {
            let (mut served, mut failures) = (0usize, Vec::new());
            let end = Instant::now() + Duration::from_secs(30);
            while !stop.load(Ordering::Relaxed) && Instant::now() < end {
                let n = made.fetch_add(1, Ordering::Relaxed);
                let target = on(n % 2, port);
                match client::echo_ok(None, target, format!("loop {n}").as_bytes()) {
                    Ok(()) => served += 1,
                    Err(e) => failures.push(format!("{target}: {e}")),
                }
            }
            (served, failures)
        });
        let past = |count: usize| {
            wait_until("the loop makes connections", PROPAGATION, || {
                made.load(Ordering::Relaxed) > count || looping.is_finished()
            })
        };
        past(20);
        edges[2].process.kill();
        wait_until("the agent notices the loss", PROPAGATION * 2, || {
            prom::sample(&scrape(metrics), "sluice_agent_edge_sessions") == 2.0
        });
        // Keep the loop going a little past the loss, then stop it.
        past(made.load(Ordering::Relaxed) + 20);
        stop.store(true, Ordering::Relaxed);
        looping.join().unwrap()
    });
    assert!(
        failures.is_empty(),
        "{} of {} connections through the surviving edges failed: {failures:?}",
        failures.len(),
        served + failures.len()
    );
    assert!(served > 40, "only {served} connections made");
    assert_eq!(holding(&edges, &[0, 1]), [0, 1]);
}
