//! End-to-end: traffic policy semantics enforced by a real edge at accept — deny
//! lists, deny winning over allow, `enforce: false`, IPv6 and IPv4-mapped clients, and
//! a policy swapped through the admin API while many clients connect at once. Every
//! refusal is paired with a client that gets through the same endpoint.

use std::{
    net::{IpAddr, SocketAddr},
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Mutex,
    },
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
    DRIVERS,
};

const URL: &str = "tcp://echo.internal:7";
const KEY: &str = "test-admin-key-policy-e2e";

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

/// `restrict-ips` with the given lists and `enforce`, then forward to [`URL`].
fn restrict(allow: &[&str], deny: &[&str], enforce: bool) -> String {
    let list = |l: &[&str]| {
        l.iter()
            .map(|c| format!("\"{c}\""))
            .collect::<Vec<_>>()
            .join(", ")
    };
    format!(
        "{{ on_tcp_connect: [ {{ actions: [ {{ type: restrict-ips, config: {{ enforce: {enforce}, \
         allow: [{}], deny: [{}] }} }}, {{ type: forward-internal, config: {{ url: \"{URL}\" }} }} ] }} ] }}",
        list(allow),
        list(deny)
    )
}

struct Edge {
    _fx: Fixture,
    echo: Echo,
    edge: Sluice,
    _agent: Sluice,
    admin: Admin,
    public: Vec<SocketAddr>,
}

/// An edge with the admin API and `endpoints` (listen, policy), an agent serving
/// [`URL`] with an echo upstream.
fn start(driver: &str, endpoints: &[(&str, String)]) -> Edge {
    let fx = Fixture::new();
    let echo = Echo::start();
    let mut yaml = fx.edge_yaml("127.0.0.1:0", endpoints);
    if endpoints.is_empty() {
        yaml = yaml.replace("endpoints:\n", "endpoints: []\n");
    }
    yaml.push_str(&format!(
        "admin:\n  listen: 127.0.0.1:0\n  api_keys: [\"{}\"]\nstate_dir: state\n",
        fixture::token_hash(KEY)
    ));
    let mut edge = Sluice::edge(&fx.write("edge.yml", &yaml), driver);
    let (agent_addr, public) = edge.edge_addrs(endpoints.len());
    let (admin_addr, _) = admin::listening(&mut edge);
    let agent_cfg = fx.write(
        "agent.yml",
        &fx.agent_yaml(&fx.token, agent_addr, "tcp", &[(URL, echo.addr)]),
    );
    let mut agent = Sluice::agent(&agent_cfg, driver);
    agent.wait_for("endpoint bound");
    Edge {
        _fx: fx,
        echo,
        edge,
        _agent: agent,
        admin: Admin::new(admin_addr, KEY),
        public,
    }
}

/// Connections of the endpoint configured as `url` with `outcome`, from a scrape.
fn outcomes(metrics: &str, url: &str, outcome: &str) -> f64 {
    prom::sum(
        metrics,
        "sluice_edge_connections_total",
        &[
            &format!("endpoint=\"{url}\""),
            &format!("outcome=\"{outcome}\""),
        ],
    )
}

/// Asserts `source` is refused by `public` without reaching the upstream.
fn assert_refused(e: &Edge, source: &str, public: SocketAddr, what: &str) {
    refused_by(&e.echo, source, public, what);
}

/// Asserts `source` is refused by `public` without reaching `echo`.
fn refused_by(echo: &Echo, source: &str, public: SocketAddr, what: &str) {
    let before = echo.accepted();
    assert!(
        client::is_refused(Some(ip(source)), public),
        "{what}: {source} got through"
    );
    assert_eq!(
        echo.accepted(),
        before,
        "{what}: {source} reached the upstream"
    );
}

fn assert_passes(source: &str, public: SocketAddr, what: &str) {
    client::echo_ok(Some(ip(source)), public, what.as_bytes())
        .unwrap_or_else(|e| panic!("{what}: {source} was not let through: {e}"));
}

#[test]
fn deny_lists_refuse_their_sources_and_deny_wins_over_allow() {
    for driver in DRIVERS {
        // Distinct listen IPs, so each endpoint's metrics are told apart by URL.
        let deny_only = restrict(&[], &["127.0.0.9/32"], true);
        let both = restrict(&["127.0.0.2/32", "127.0.0.9/32"], &["127.0.0.9/32"], true);
        let e = start(driver, &[("127.0.1.1:0", deny_only), ("127.0.1.2:0", both)]);
        let before = e.admin.call("GET", "/metrics", None).text;

        // A deny list alone: the listed source is refused, everyone else passes.
        assert_passes("127.0.0.2", e.public[0], "deny list, unlisted source");
        assert_passes("127.0.0.5", e.public[0], "deny list, unlisted source");
        assert_refused(&e, "127.0.0.9", e.public[0], "deny list");
        // 127.0.0.9 is in both lists: deny wins. 127.0.0.2 (allow only) passes, and
        // 127.0.0.5 (in neither) fails the non-empty allow list.
        assert_passes("127.0.0.2", e.public[1], "allow and deny, allowed source");
        assert_refused(&e, "127.0.0.9", e.public[1], "in both lists");
        assert_refused(&e, "127.0.0.5", e.public[1], "in neither list");
        // Still served after the refusals.
        assert_passes("127.0.0.2", e.public[1], "after refusals");

        // Counted per endpoint as the edge decided them.
        let after = admin_metrics_settled(&e, &before, 4.0, 3.0);
        let delta = |url: &str, outcome: &str| {
            outcomes(&after, url, outcome) - outcomes(&before, url, outcome)
        };
        assert_eq!(delta("tcp://127.0.1.1:0", "denied"), 1.0, "{driver}");
        assert_eq!(delta("tcp://127.0.1.1:0", "forwarded"), 2.0, "{driver}");
        assert_eq!(delta("tcp://127.0.1.2:0", "denied"), 2.0, "{driver}");
        assert_eq!(delta("tcp://127.0.1.2:0", "forwarded"), 2.0, "{driver}");
    }
}

/// Scrapes until `forwarded` and `denied` connections (over all endpoints) have been
/// counted since `before`: the edge accounts a connection as it ends.
fn admin_metrics_settled(e: &Edge, before: &str, forwarded: f64, denied: f64) -> String {
    let total = |text: &str, outcome: &str| {
        prom::sum(
            text,
            "sluice_edge_connections_total",
            &[&format!("outcome=\"{outcome}\"")],
        )
    };
    let mut last = String::new();
    let settled = (0..500).any(|_| {
        last = e.admin.call("GET", "/metrics", None).text;
        let done = total(&last, "forwarded") - total(before, "forwarded") >= forwarded
            && total(&last, "denied") - total(before, "denied") >= denied;
        if !done {
            std::thread::sleep(Duration::from_millis(10));
        }
        done
    });
    assert!(settled, "connections not counted:\n{last}");
    last
}

#[test]
fn enforce_false_logs_the_would_be_refusal_and_forwards() {
    const WOULD: &str = "would be denied by traffic policy (enforce: false); forwarded";
    let mut e = start(
        DRIVERS[0],
        &[
            ("127.0.1.1:0", restrict(&["127.0.0.2/32"], &[], false)),
            ("127.0.1.2:0", restrict(&["127.0.0.2/32"], &[], true)),
        ],
    );
    let before = e.admin.call("GET", "/metrics", None).text;
    // The same source is forwarded by the log-only endpoint and refused by the
    // enforcing one with the same rule.
    let accepted = e.echo.accepted();
    assert_passes("127.0.0.9", e.public[0], "enforce: false");
    assert_eq!(e.echo.accepted(), accepted + 1, "the upstream served it");
    assert_refused(&e, "127.0.0.9", e.public[1], "the same rule enforced");
    let logged = e
        .edge
        .wait_for_n("the log-only refusal", 1, |v| v["message"] == WOULD);
    assert_eq!(logged["endpoint"], "tcp://127.0.1.1:0", "{logged}");
    assert!(
        logged["peer"].as_str().unwrap().starts_with("127.0.0.9:"),
        "{logged}"
    );
    // An allowed source on the log-only endpoint is not logged as a would-be refusal.
    assert_passes("127.0.0.2", e.public[0], "allowed on the log-only endpoint");
    let text = admin_metrics_settled(&e, &before, 2.0, 1.0);
    assert_eq!(
        e.edge.count(|v| v["message"] == WOULD),
        1,
        "only 127.0.0.9 would have been denied:\n{}",
        e.edge.log_text()
    );
    let delta =
        |url: &str, outcome: &str| outcomes(&text, url, outcome) - outcomes(&before, url, outcome);
    assert_eq!(delta("tcp://127.0.1.1:0", "forwarded"), 2.0, "{text}");
    assert_eq!(delta("tcp://127.0.1.1:0", "denied"), 0.0, "{text}");
    assert_eq!(delta("tcp://127.0.1.2:0", "denied"), 1.0, "{text}");
}

#[test]
fn ipv6_and_ipv4_mapped_clients_are_checked_through_the_edge() {
    // A v6 socket bound to an IPv4-mapped address: IPv4 clients arrive as
    // ::ffff:127.0.0.x, and must be checked against IPv4 CIDRs (and mapped CIDRs of
    // /96 or longer, which the policy rewrites to IPv4).
    let mapped_policy = restrict(
        &["127.0.0.2/32", "127.0.0.3/32"],
        &["::ffff:127.0.0.3/128"],
        true,
    );
    let e = start(DRIVERS[0], &[("[::ffff:127.0.0.1]:0", mapped_policy)]);
    let mapped = e.public[0];
    let v4_target = SocketAddr::new(ip("127.0.0.1"), mapped.port());
    assert_passes(
        "127.0.0.2",
        v4_target,
        "mapped client in the IPv4 allow list",
    );
    assert_refused(
        &e,
        "127.0.0.9",
        v4_target,
        "mapped client outside the allow list",
    );
    assert_refused(
        &e,
        "127.0.0.3",
        v4_target,
        "mapped client in a mapped deny CIDR",
    );
    assert_passes("127.0.0.2", v4_target, "mapped client after refusals");

    // IPv6: an endpoint on [::1], with the policy swapped through the admin API so
    // the same endpoint and the same client are let through and refused.
    let made = e.admin.create(
        "/v1/endpoints",
        json!({ "url": "tcp://[::1]:0",
                "traffic_policy": restrict(&["::1/128"], &["127.0.0.0/8"], true) }),
    );
    let id = made["id"].as_str().unwrap().to_string();
    let v6: SocketAddr = made["listen_addr"].as_str().unwrap().parse().unwrap();
    assert!(v6.is_ipv6(), "{made}");
    assert_passes("::1", v6, "::1 in the IPv6 allow list");
    for (allow, deny, what) in [
        (&["::/0"][..], &["::1/128"][..], "::1 in the IPv6 deny list"),
        (
            &["127.0.0.1/32"][..],
            &[][..],
            "::1 against an IPv4-only allow list",
        ),
        (&["::2/127"][..], &[][..], "::1 outside the IPv6 allow list"),
        (&["::1/128"][..], &["::1/128"][..], "::1 in both lists"),
    ] {
        let patched = e.admin.call(
            "PATCH",
            &format!("/v1/endpoints/{id}"),
            Some(json!({ "traffic_policy": restrict(allow, deny, true) })),
        );
        assert_eq!(patched.status, 200, "{}", patched.text);
        assert_refused(&e, "::1", v6, what);
    }
    let patched = e.admin.call(
        "PATCH",
        &format!("/v1/endpoints/{id}"),
        Some(json!({ "traffic_policy": restrict(&["::1/128"], &["::2/128"], true) })),
    );
    assert_eq!(patched.status, 200, "{}", patched.text);
    assert_passes("::1", v6, "::1 allowed again");
}

/// One client connection: when it started and ended, its source, and whether the
/// echo came back whole.
#[derive(Clone, Copy)]
struct Attempt {
    started: Instant,
    ended: Instant,
    source: IpAddr,
    ok: bool,
}

#[test]
fn a_policy_swapped_under_concurrent_load_never_fails_a_client_both_policies_allow() {
    const STAYS: &str = "127.0.0.2";
    const FLIPS: &str = "127.0.0.3";
    let e = start(DRIVERS[0], &[]);
    let open = restrict(&["127.0.0.2/32", "127.0.0.3/32"], &[], true);
    let closed = restrict(&["127.0.0.2/32"], &["127.0.0.3/32"], true);
    let made = e.admin.create(
        "/v1/endpoints",
        json!({ "url": "tcp://127.0.0.1:0", "traffic_policy": open }),
    );
    let id = made["id"].as_str().unwrap().to_string();
    let public: SocketAddr = made["listen_addr"].as_str().unwrap().parse().unwrap();

    // 24 clients connecting in a loop, bounded in count and time: 18 from a source
    // both policies allow, 6 from one only the open policy allows.
    let stop = Arc::new(AtomicBool::new(false));
    let attempts = Arc::new(Mutex::new(Vec::<Attempt>::new()));
    let clients: Vec<_> = (0..24)
        .map(|i| {
            let source = ip(if i % 4 == 3 { FLIPS } else { STAYS });
            let (stop, attempts) = (stop.clone(), attempts.clone());
            std::thread::spawn(move || {
                let give_up = Instant::now() + Duration::from_secs(60);
                for n in 0..5_000u32 {
                    if stop.load(Ordering::Relaxed) || Instant::now() > give_up {
                        return;
                    }
                    let payload = format!("client {i} connection {n}");
                    let started = Instant::now();
                    let ok = client::echo_ok(Some(source), public, payload.as_bytes()).is_ok();
                    attempts.lock().unwrap().push(Attempt {
                        started,
                        ended: Instant::now(),
                        source,
                        ok,
                    });
                }
            })
        })
        .collect();
    let count = |pred: &dyn Fn(&Attempt) -> bool| {
        attempts.lock().unwrap().iter().filter(|a| pred(a)).count()
    };
    sluice_tests::wait_until("load before the swaps", Duration::from_secs(20), || {
        count(&|a| a.ok && a.source == ip(FLIPS)) >= 10 && count(&|a| a.ok) >= 100
    });

    // Swap back and forth under the load; record when each PATCH was sent and when
    // it answered (the swap takes effect somewhere in between).
    let mut windows = Vec::new(); // (sent, answered, open?)
    for round in 0..10 {
        for (policy, is_open) in [(&closed, false), (&open, true)] {
            let sent = Instant::now();
            let swap = e.admin.call(
                "PATCH",
                &format!("/v1/endpoints/{id}"),
                Some(json!({ "traffic_policy": policy })),
            );
            assert_eq!(swap.status, 200, "round {round}: {}", swap.text);
            windows.push((sent, Instant::now(), is_open));
            let mark = Instant::now();
            sluice_tests::wait_until(
                "connections under the new policy",
                Duration::from_secs(20),
                || count(&|a| a.started > mark) >= 24,
            );
        }
    }
    // End closed: from its answer on, the flipping source must be refused.
    let sent = Instant::now();
    let swap = e.admin.call(
        "PATCH",
        &format!("/v1/endpoints/{id}"),
        Some(json!({ "traffic_policy": closed })),
    );
    assert_eq!(swap.status, 200, "{}", swap.text);
    windows.push((sent, Instant::now(), false));
    let final_swap = windows.last().unwrap().1;
    sluice_tests::wait_until(
        "connections after the last swap",
        Duration::from_secs(20),
        || {
            count(&|a| a.started > final_swap && a.source == ip(FLIPS)) >= 20
                && count(&|a| a.started > final_swap && a.ok) >= 100
        },
    );
    stop.store(true, Ordering::Relaxed);
    for c in clients {
        c.join().unwrap();
    }
    let attempts = attempts.lock().unwrap().clone();

    // A source both policies allow never failed, across 21 swaps.
    let stayed: Vec<&Attempt> = attempts.iter().filter(|a| a.source == ip(STAYS)).collect();
    let failed = stayed.iter().filter(|a| !a.ok).count();
    assert_eq!(
        failed,
        0,
        "{failed} of {} allowed connections failed",
        stayed.len()
    );
    // The flipping source: a connection that lay wholly inside one policy's reign got
    // that policy's answer.
    let mut judged = 0;
    for a in attempts.iter().filter(|a| a.source == ip(FLIPS)) {
        let reign = windows.iter().enumerate().find(|(i, w)| {
            let next_sent = windows.get(i + 1).map(|n| n.0);
            a.started > w.1 && next_sent.is_none_or(|s| a.ended < s)
        });
        let before_any = a.ended < windows[0].0;
        let expected = match reign {
            Some((_, w)) => w.2,
            None if before_any => true,
            None => continue, // spans a swap in flight: either answer is right
        };
        judged += 1;
        assert_eq!(
            a.ok,
            expected,
            "a {FLIPS} connection inside a reign of the {} policy was {}",
            if expected { "open" } else { "closed" },
            if a.ok { "served" } else { "refused" }
        );
    }
    eprintln!(
        "{} connections, {} from {STAYS}, {judged} from {FLIPS} judged against a policy",
        attempts.len(),
        stayed.len()
    );
    assert!(judged >= 50, "only {judged} flipping connections judged");
    let after_last = attempts
        .iter()
        .filter(|a| a.source == ip(FLIPS) && a.started > final_swap)
        .count();
    assert!(after_last >= 20);
    // Generation 0 at creation, then 21 swaps.
    let metrics = e.admin.call("GET", "/metrics", None).text;
    let swaps = prom::sum(
        &metrics,
        "sluice_edge_policy_swaps_total",
        &[&format!("id=\"{id}\"")],
    );
    assert_eq!(swaps, 21.0, "policy swaps counted\n{metrics}");
}

#[test]
fn a_policy_changed_through_the_api_is_enforced_after_a_restart_and_after_kill_9() {
    // admin_api.rs checks that the API lists the changed policy after a restart and a
    // kill -9; this checks that the data path enforces it.
    let fx = Fixture::new();
    let echo = Echo::start();
    let yaml = format!(
        "{}admin:\n  listen: 127.0.0.1:0\n  api_keys: [\"{}\"]\nstate_dir: state\n",
        fx.edge_yaml("127.0.0.1:0", &[])
            .replace("endpoints:\n", "endpoints: []\n"),
        fixture::token_hash(KEY)
    );
    let cfg = fx.write("edge.yml", &yaml);
    let up = |fx: &Fixture| {
        let mut edge = Sluice::edge(&cfg, DRIVERS[0]);
        let (agent_addr, _) = edge.edge_addrs(0);
        let (admin_addr, _) = admin::listening(&mut edge);
        let agent_cfg = fx.write(
            "agent.yml",
            &fx.agent_yaml(&fx.token, agent_addr, "tcp", &[(URL, echo.addr)]),
        );
        let agent = Sluice::agent(&agent_cfg, DRIVERS[0]);
        (edge, agent, Admin::new(admin_addr, KEY))
    };
    let (mut edge, mut agent, admin) = up(&fx);
    agent.wait_for("endpoint bound");
    let made = admin.create(
        "/v1/endpoints",
        json!({ "url": "tcp://127.0.0.1:0", "traffic_policy": fixture::forward_all(URL) }),
    );
    let id = made["id"].as_str().unwrap().to_string();
    let public: SocketAddr = made["listen_addr"].as_str().unwrap().parse().unwrap();
    let mut admin = admin;
    // Each round refuses the source the other round lets through, so a restart that
    // fell back to an older policy (or to none) is caught either way.
    for (round, (allowed, denied), hard) in [
        (1, ("127.0.0.2", "127.0.0.9"), false),
        (2, ("127.0.0.9", "127.0.0.2"), true),
    ] {
        let patched = admin.call(
            "PATCH",
            &format!("/v1/endpoints/{id}"),
            Some(json!({ "traffic_policy": restrict(&[allowed], &[denied], true) })),
        );
        assert_eq!(patched.status, 200, "{}", patched.text);
        if hard {
            edge.kill();
        } else {
            edge.terminate();
            assert_eq!(edge.wait_exit(), Some(0));
        }
        agent.kill();
        let (new_edge, new_agent, new_admin) = up(&fx);
        (edge, agent, admin) = (new_edge, new_agent, new_admin);
        agent.wait_for("endpoint bound");
        let what = format!(
            "round {round} ({})",
            if hard { "kill -9" } else { "SIGTERM" }
        );
        // Wait on the allowed source (the endpoint is restored and the agent bound),
        // then the denied one must be refused on the same port.
        sluice_tests::wait_until(
            &format!("{what}: {allowed} served"),
            Duration::from_secs(20),
            || client::echo_ok(Some(ip(allowed)), public, b"after the restart").is_ok(),
        );
        refused_by(&echo, denied, public, &what);
    }
}
