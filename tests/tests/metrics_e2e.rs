//! End-to-end: the edge metrics `admin_api.rs` does not watch move when they should —
//! policy swaps (admin API and SIGHUP reload, not a rejected policy), the control
//! channel's RTT (it measures a real delay: an agent frozen with SIGSTOP), and the
//! per-session level of idle data channels (spent by streams while the agent cannot
//! refill, refilled after).

use std::{
    io::{Read, Write},
    net::SocketAddr,
    time::{Duration, Instant},
};

use serde_json::json;
use sluice_tests::{
    admin::{self, Admin},
    client,
    fixture::{self, Fixture},
    process::Sluice,
    prom,
    upstream::Echo,
    wait_until, DRIVERS,
};

const URL: &str = "tcp://echo.internal:7";
const KEY: &str = "test-admin-key-metrics-e2e";
const DEADLINE: Duration = Duration::from_secs(20);

fn edge_yaml(fx: &Fixture, static_policy: &str) -> String {
    let mut yaml = fx.edge_yaml("127.0.0.1:0", &[("127.0.0.1:0", static_policy.to_string())]);
    yaml.push_str(&format!(
        "admin:\n  listen: 127.0.0.1:0\n  api_keys: [\"{}\"]\nstate_dir: state\n",
        fixture::token_hash(KEY)
    ));
    yaml
}

fn scrape(admin: &Admin) -> String {
    let answer = admin.call("GET", "/metrics", None);
    assert_eq!(answer.status, 200, "{}", answer.text);
    answer.text
}

fn swaps(admin: &Admin, id: &str) -> f64 {
    let text = scrape(admin);
    assert!(
        text.contains("sluice_edge_policy_swaps_total{endpoint="),
        "{text}"
    );
    prom::sum(
        &text,
        "sluice_edge_policy_swaps_total",
        &[&format!("id=\"{id}\"")],
    )
}

#[test]
fn policy_swaps_count_each_published_policy_and_nothing_else() {
    let fx = Fixture::new();
    let cfg = fx.write("edge.yml", &edge_yaml(&fx, &fixture::forward_all(URL)));
    let mut edge = Sluice::edge(&cfg, DRIVERS[0]);
    let (_, statics) = edge.edge_addrs(1);
    let (admin_addr, _) = admin::listening(&mut edge);
    let admin = Admin::new(admin_addr, KEY);
    let made = admin.create(
        "/v1/endpoints",
        json!({ "url": "tcp://127.0.0.1:0", "traffic_policy": fixture::forward_all(URL) }),
    );
    let id = made["id"].as_str().unwrap().to_string();
    let static_id = admin.get("/v1/endpoints")["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["listen_addr"] == statics[0].to_string())
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    // A new endpoint has published its first policy only.
    assert_eq!(swaps(&admin, &id), 0.0);
    assert_eq!(swaps(&admin, &static_id), 0.0);

    for n in 1..=3 {
        let cidr = format!("10.0.0.{n}/32");
        let patched = admin.call(
            "PATCH",
            &format!("/v1/endpoints/{id}"),
            Some(json!({ "traffic_policy": fixture::allow_only(&[&cidr], URL) })),
        );
        assert_eq!(patched.status, 200, "{}", patched.text);
        assert_eq!(swaps(&admin, &id), n as f64, "after PATCH {n}");
    }
    // A policy the edge rejects is not published: no swap.
    let bad = admin.call(
        "PATCH",
        &format!("/v1/endpoints/{id}"),
        Some(
            json!({ "traffic_policy": "{ on_tcp_connect: [ { actions: [ { type: nope } ] } ] }" }),
        ),
    );
    assert_eq!(bad.status, 400, "{}", bad.text);
    assert_eq!(swaps(&admin, &id), 3.0, "a rejected policy counted");
    // Each endpoint counts its own: the static one saw none of the above.
    assert_eq!(swaps(&admin, &static_id), 0.0);

    // A static endpoint's policy changed in the file and reloaded (SIGHUP) is a swap.
    std::fs::write(
        &cfg,
        edge_yaml(&fx, &fixture::allow_only(&["10.9.0.0/16"], URL)),
    )
    .unwrap();
    edge.hangup();
    edge.wait_for_n("reload", 1, |v| {
        v["message"] == "config reloaded" && v["trigger"] == "SIGHUP"
    });
    wait_until("the reload's swap counted", DEADLINE, || {
        swaps(&admin, &static_id) == 1.0
    });
    assert_eq!(
        swaps(&admin, &id),
        3.0,
        "the reload touched the API endpoint"
    );
}

/// The edge's RTT sample and idle-channel level for the one session, if any.
fn session_gauges(admin: &Admin) -> (Option<f64>, Option<f64>) {
    let text = scrape(admin);
    let one = |name: &str| {
        let all: Vec<f64> = prom::samples(&text, name).map(|(_, v)| v).collect();
        assert!(all.len() <= 1, "{name}: more than one session:\n{text}");
        all.first().copied()
    };
    (
        one("sluice_edge_session_rtt_seconds"),
        one("sluice_edge_idle_data_channels"),
    )
}

#[test]
fn rtt_measures_a_frozen_agent_and_the_idle_channel_level_follows_spending_and_refills() {
    // How long the agent stays frozen: longer than the edge's ping period
    // (heartbeat_tolerance / 2 = 3 s here), so at least one ping waits out a second
    // of it or more; shorter than the tolerance, so the session survives.
    const FREEZE: Duration = Duration::from_secs(4);
    let fx = Fixture::new();
    let echo = Echo::start();
    let cfg = fx.write("edge.yml", &edge_yaml(&fx, &fixture::forward_all(URL)));
    let mut edge = Sluice::edge(&cfg, DRIVERS[0]);
    let (agent_addr, eps) = edge.edge_addrs(1);
    let public: SocketAddr = eps[0];
    let (admin_addr, _) = admin::listening(&mut edge);
    let admin = Admin::new(admin_addr, KEY);
    let agent_yaml = fx
        .agent_yaml(&fx.token, agent_addr, "tcp", &[(URL, echo.addr)])
        .replace("heartbeat_interval: 1s", "heartbeat_interval: 200ms")
        .replace("heartbeat_tolerance: 3s", "heartbeat_tolerance: 6s");
    let mut agent = Sluice::agent(&fx.write("agent.yml", &agent_yaml), DRIVERS[0]);
    agent.wait_for("endpoint bound");

    // Up: an RTT has been measured, and the pool is at the agent's 4 channels.
    wait_until(
        "an RTT sample and 4 idle channels",
        DEADLINE,
        || matches!(session_gauges(&admin), (Some(rtt), Some(level)) if rtt > 0.0 && level == 4.0),
    );
    let (before, _) = session_gauges(&admin);
    let before = before.unwrap();

    agent.freeze();
    let frozen_at = Instant::now();
    // Four clients each take a channel (a `tcp` channel carries one stream); the
    // frozen agent cannot replace them, so the level drops. (Not necessarily to
    // zero: a channel the agent had sent just before the freeze may still be parked.)
    let mut held: Vec<_> = (0..4)
        .map(|i| {
            let mut s = client::connect_from(None, public).unwrap();
            s.write_all(format!("held {i}\n").as_bytes()).unwrap();
            s
        })
        .collect();
    wait_until("the level to drop by two or more", DEADLINE, || {
        session_gauges(&admin).1.is_some_and(|level| level <= 2.0)
    });
    std::thread::sleep(FREEZE.saturating_sub(frozen_at.elapsed()));
    // SAFETY: kill(2) on the PID of the agent this test started and has not reaped.
    unsafe { libc::kill(agent.pid() as libc::pid_t, libc::SIGCONT) };

    // A ping sent during the freeze was answered only after it: the RTT reports at
    // least the part of the freeze it waited: the edge pings every 3 s, so the first
    // ping sent during the 4 s freeze waited about a second or more.
    let mut frozen_rtt = 0.0;
    wait_until("the RTT to show the freeze", DEADLINE, || {
        frozen_rtt = session_gauges(&admin).0.unwrap_or(0.0);
        frozen_rtt >= 0.5
    });
    // The held streams were served after the thaw, and the agent refilled the pool.
    for (i, s) in held.iter_mut().enumerate() {
        let want = format!("held {i}\n");
        let mut got = vec![0u8; want.len()];
        s.read_exact(&mut got).unwrap();
        assert_eq!(got, want.as_bytes());
    }
    wait_until("the level back at 4", DEADLINE, || {
        session_gauges(&admin).1 == Some(4.0)
    });
    // And the next ping after the thaw, not held up, measures less again.
    wait_until("the RTT to recover", DEADLINE, || {
        session_gauges(&admin).0.is_some_and(|rtt| rtt < frozen_rtt)
    });
    eprintln!("rtt before the freeze {before} s, during it {frozen_rtt} s");
    // A session that ends takes its gauges with it.
    drop(held);
    agent.kill();
    wait_until("the session's gauges gone", DEADLINE, || {
        session_gauges(&admin) == (None, None)
    });
}
