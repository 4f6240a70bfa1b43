//! End-to-end: an agent that runs out of file descriptors (its soft open-files limit
//! lowered from outside with prlimit(2) below the numbers of all its connections, so
//! it can open none, however many close). It keeps its session and the streams it forwards; new
//! connections it cannot take are closed promptly (the upstream connect fails at once,
//! or the edge's 5 s wait for a data channel runs out) rather than left hanging; it
//! idles instead of retrying in a loop, says why in its log, and serves again by itself
//! once descriptors are back (alone, the edge's next NeedChannels brings a channel at
//! once). In a pool, the other member takes every connection meanwhile (the exhausted
//! agent reports itself unhealthy, the edge skips a member that leaves connections
//! waiting for a channel) and the exhausted one rejoins afterwards: nothing asks it
//! for channels then, so that takes the agent's own retry, once per heartbeat.

mod common;

use std::{
    net::TcpStream,
    time::{Duration, Instant},
};

use common::Tunnel;
use sluice_tests::{
    admin, client,
    faults::{self, lowest_connection_fd, set_soft_nofile},
    fixture::{self, Fixture},
    load::Load,
    process::Sluice,
    upstream::Echo,
    wait_until, DRIVERS,
};

/// The edge's wait for a data channel before it gives up on a connection.
const CHANNEL_WAIT: Duration = Duration::from_secs(5);
/// How long the exhausted agent is watched.
const WINDOW: Duration = Duration::from_secs(2);
/// New clients tried against the exhausted agent at once.
const REFUSED_CLIENTS: usize = 12;
/// The agents' `data_channels` and `heartbeat_interval` (fixture's agent_yaml).
const DATA_CHANNELS: usize = 4;
const HEARTBEAT_SECS: usize = 1;

#[test]
fn out_of_descriptors_the_agent_keeps_its_streams_closes_new_ones_promptly_and_recovers() {
    for (driver, transport) in [(DRIVERS[0], "tcp"), (DRIVERS[1], "tls")] {
        let mut t = Tunnel::with_agent_metrics(driver, transport);
        let agent_metrics = t.agent_metrics.unwrap();
        let channel_failures = || {
            admin::sample(
                &admin::scrape(agent_metrics),
                "sluice_agent_data_channel_failures_total",
            ) as usize
        };
        let mut held: Vec<TcpStream> = (0..3)
            .map(|i| {
                let mut s = client::connect_from(None, t.public).unwrap();
                assert!(client::echoes(
                    &mut s,
                    format!("held {i}").as_bytes(),
                    Duration::from_secs(10)
                ));
                s
            })
            .collect();
        let pid = t.agent.pid();
        let sessions_ended = t.edge.count(|v| v["message"] == "agent session ended");
        // Scraped while the agent can still accept a connection.
        let failures_before = channel_failures();
        let old_soft = set_soft_nofile(pid, lowest_connection_fd(pid));

        // New connections: every one is closed, none hangs past the edge's channel wait.
        let exhausted_at = Instant::now();
        let closers: Vec<_> = (0..REFUSED_CLIENTS)
            .map(|_| {
                let public = t.public;
                std::thread::spawn(move || {
                    client::closed_unanswered(public, b"probe", CHANNEL_WAIT * 2).unwrap_or_else(
                        |e| panic!("a new connection while the agent had no descriptors: {e}"),
                    )
                })
            })
            .collect();
        let slowest = closers
            .into_iter()
            .map(|c| c.join().expect("client"))
            .max()
            .unwrap();
        assert!(
            slowest < CHANNEL_WAIT + Duration::from_secs(3),
            "{driver}/{transport}: a refused connection took {slowest:?} to close"
        );
        let cause = t.agent.wait_for_n("the cause logged", 1, |v| {
            v.to_string().contains("Too many open files")
        });

        // Exhausted: the held streams still flow, and the agent idles.
        let faults::HeldEchoes {
            cpu,
            window,
            rounds,
        } = faults::echo_held(
            pid,
            &mut held,
            WINDOW,
            &format!("{driver}/{transport}, the agent out of descriptors"),
        );
        assert!(
            cpu < window / 4,
            "{driver}/{transport}: the exhausted agent used {cpu:?} of CPU in {window:?}: spinning"
        );
        assert_eq!(
            t.edge.count(|v| v["message"] == "agent session ended"),
            sessions_ended,
            "{driver}/{transport}: the session ended while the agent was out of descriptors"
        );

        // Descriptors back: served again with no restart.
        set_soft_nofile(pid, old_soft);
        let restored = Instant::now();
        client::wait_until_echo(t.public, Duration::from_secs(15)).unwrap();
        let recovered = restored.elapsed();
        // Every data channel dial that failed meanwhile had a cause (agent/control.rs,
        // agent/datachan.rs, edge/registry.rs): each refused client makes the edge ask
        // for one channel (NeedChannels) and, if it was handed a parked channel, the
        // agent asks for one replacement; besides those, only the heartbeat's top-up
        // dials, once per heartbeat interval, at most `data_channels` at a time. A
        // retry loop would fail thousands of times in these seconds.
        let failures = channel_failures() - failures_before;
        let exhausted_for = exhausted_at.elapsed();
        let heartbeats = exhausted_for.as_secs() as usize / HEARTBEAT_SECS + 2;
        let bound = 2 * REFUSED_CLIENTS + DATA_CHANNELS * heartbeats;
        assert!(
            (1..=bound).contains(&failures),
            "{driver}/{transport}: {failures} data channel dials failed in {exhausted_for:?} \
             (at most {bound}: {REFUSED_CLIENTS} clients, {heartbeats} heartbeats)"
        );
        let channel_lines = failures;
        client::echo_ok(None, t.public, &sluice_tests::client::payload(3, 200_000)).unwrap();
        for (i, s) in held.iter_mut().enumerate() {
            assert!(client::echoes(
                s,
                format!("after {i}").as_bytes(),
                Duration::from_secs(5)
            ));
        }
        println!(
            "agent_fd_exhaustion/{driver}/{transport}: {REFUSED_CLIENTS} new connections all closed, \
             slowest after {:.0} ms; over {:.1} s exhausted: {rounds} echo rounds on 3 held \
             streams, agent CPU {} ms, {channel_lines} failed data channel dials \
             (cause: {}); served again {:.0} ms after the limit was restored",
            slowest.as_secs_f64() * 1e3,
            window.as_secs_f64(),
            cpu.as_millis(),
            cause["error"].as_str().unwrap_or("?"),
            recovered.as_secs_f64() * 1e3
        );
    }
}

const URL: &str = "tcp://db.internal:5432";

#[test]
fn a_pool_member_out_of_descriptors_loses_no_connection_and_rejoins() {
    let driver = DRIVERS[0];
    let fx = Fixture::new();
    let cfg = fx.write(
        "edge.yml",
        &fx.edge_yaml("127.0.0.1:0", &[("127.0.0.1:0", fixture::forward_all(URL))]),
    );
    let mut edge = Sluice::edge(&cfg, driver);
    let (agent_addr, eps) = edge.edge_addrs(1);
    let public = eps[0];
    let upstreams: Vec<Echo> = (0..2).map(|_| Echo::start()).collect();
    let mut agents: Vec<Sluice> = upstreams
        .iter()
        .enumerate()
        .map(|(i, up)| {
            let yaml = fixture::pooled(
                &fx.agent_yaml(&fx.token, agent_addr, "tcp", &[(URL, up.addr)]),
                URL,
            );
            let mut agent = Sluice::agent(&fx.write(&format!("member{i}.yml"), &yaml), driver);
            agent.wait_for("endpoint bound");
            agent
        })
        .collect();
    edge.wait_for_n("full pool", 1, |v| {
        v["message"] == "endpoint bound" && v["members"] == 2
    });

    // A connection handed to the exhausted member waits the edge's whole channel wait
    // for a channel that never comes: that is what "slow" means here.
    let mut load = Load::start_with_slow(public, 4, CHANNEL_WAIT);
    wait_until("both members serve", Duration::from_secs(20), || {
        upstreams.iter().all(|u| u.accepted() > 5)
    });

    // Member 0 runs out of descriptors under load.
    let pid = agents[0].pid();
    let old_soft = set_soft_nofile(pid, lowest_connection_fd(pid));
    // Its agent reports the endpoint unhealthy by whichever sees the exhaustion first:
    // the data channels it cannot open, or the health check's connect to the upstream
    // (with channels reused, a full pool may need no new channel for a while).
    const NO_CHANNELS: &str =
        "data channels cannot be opened; reporting every endpoint unhealthy until one opens";
    const CHECK_FAILED: &str = "upstream unhealthy";
    let report = agents[0].wait_for_n("the exhaustion reported", 1, |v| {
        v["message"] == NO_CHANNELS || v["message"] == CHECK_FAILED
    });
    let recovery = if report["message"] == NO_CHANNELS {
        "data channels open again; endpoint health restored"
    } else {
        "upstream healthy"
    };
    // The edge has taken the report in: from here on it must not pick member 0.
    edge.wait_for_n("member 0 unhealthy at the edge", 1, |v| {
        v["message"] == "pool member unhealthy"
    });
    let reported = Instant::now();
    let served0 = upstreams[0].accepted();
    load.wait_for_more(200, "200 connections while member 0 is exhausted");
    let reached_exhausted = upstreams[0].accepted() - served0;

    // Descriptors back: member 0 serves again by itself.
    set_soft_nofile(pid, old_soft);
    let restored = Instant::now();
    agents[0].wait_for(recovery);
    let back = upstreams[0].accepted();
    wait_until("member 0 serves again", Duration::from_secs(20), || {
        upstreams[0].accepted() >= back + 20
    });
    let rejoined = restored.elapsed();

    load.stop();
    let waited = load.slow_started_after(reported);
    let (served, failures) = load.finish();
    assert!(
        failures.is_empty(),
        "{} client failures: {failures:?}",
        failures.len()
    );
    assert_eq!(
        reached_exhausted, 0,
        "the exhausted member's upstream got connections"
    );
    // Once the edge marked the member unhealthy, no connection waits on it for a
    // channel (which would take the edge's whole channel wait).
    assert!(
        waited.is_empty(),
        "connections waited on the exhausted member: {waited:?}"
    );
    println!(
        "agent_fd_exhaustion/pool: member 0 out of descriptors: 200 connections, all served \
         by member 1; member 0 back to 20 connections {:.0} ms after its limit was restored; \
         {} connections in all, 0 failed",
        rejoined.as_secs_f64() * 1e3,
        served
    );
    drop(agents);
}
