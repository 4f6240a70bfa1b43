//! The semantics of issue 2 on hand-written policies, the decision's
//! explanations, and the hot-swap handle under concurrent readers.

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Arc;

use sluice_policy::{Cause, Outcome, PolicyHandle, Scheme, TrafficPolicy};

fn sa(s: &str) -> SocketAddr {
    SocketAddr::new(s.parse::<IpAddr>().unwrap(), 40_000)
}

const ISSUE_EXAMPLE: &str = r#"
on_tcp_connect:
  - name: office and partners only
    actions:
      - type: restrict-ips
        config:
          enforce: true
          allow: [203.0.113.0/24, "2001:db8::/32"]
          deny:  [203.0.113.7/32]
      - type: forward-internal
        config:
          url: tcp://db.internal:5432
  - actions:
      - type: deny
"#;

#[test]
fn issue_example() {
    let c = TrafficPolicy::from_yaml(ISSUE_EXAMPLE)
        .unwrap()
        .compile()
        .unwrap();
    let d = c.evaluate(sa("203.0.113.9"));
    let t = d.target().unwrap();
    assert_eq!(
        (t.scheme(), t.host(), t.port(), t.as_str()),
        (Scheme::Tcp, "db.internal", 5432, "tcp://db.internal:5432")
    );
    assert_eq!(
        (d.why().rule(), d.why().action(), d.why().cause()),
        (0, 1, Cause::Forward)
    );
    assert_eq!(d.why().rule_name(), Some("office and partners only"));
    assert_eq!(d.why().cidr().unwrap().to_string(), "203.0.113.0/24");
    assert!(!d.is_log_only());

    // Deny wins over allow.
    let d = c.evaluate(sa("203.0.113.7"));
    assert_eq!(d.outcome(), Outcome::Deny);
    assert_eq!(d.why().cause(), Cause::DeniedByCidr);
    assert_eq!(d.why().cidr().unwrap().to_string(), "203.0.113.7/32");

    // Not in allow: the failed restrict-ips decides (the trailing deny never runs).
    let d = c.evaluate(sa("198.51.100.1"));
    assert_eq!(
        (d.outcome(), d.why().rule(), d.why().cause()),
        (Outcome::Deny, 0, Cause::NotInAllowList)
    );
    assert_eq!(d.why().cidr(), None);

    // IPv6 allow, and IPv4-mapped IPv6 checked as IPv4.
    assert!(c.evaluate(sa("2001:db8::42")).is_allowed());
    assert!(!c.evaluate(sa("2001:db9::42")).is_allowed());
    let d = c.evaluate(sa("::ffff:203.0.113.9"));
    assert!(d.is_allowed());
    assert_eq!(d.client(), "203.0.113.9".parse::<IpAddr>().unwrap());
    assert_eq!(
        c.evaluate(sa("::ffff:203.0.113.7")).why().cause(),
        Cause::DeniedByCidr
    );

    assert_eq!(c.forward_targets().len(), 1);
    let shown = c.evaluate(sa("203.0.113.7")).to_string();
    assert!(
        shown.contains("deny") && shown.contains("203.0.113.7/32"),
        "{shown}"
    );
}

#[test]
fn enforce_false_logs_and_forwards() {
    let c = TrafficPolicy::from_yaml(
        "
on_tcp_connect:
  - actions:
      - type: restrict-ips
        config:
          enforce: false
          deny: [10.0.0.0/8]
      - type: forward-internal
        config:
          url: tls://api.internal
",
    )
    .unwrap()
    .compile()
    .unwrap();
    let d = c.evaluate(sa("10.1.2.3"));
    assert!(d.is_allowed() && d.is_log_only());
    let w = d.would_deny().unwrap();
    assert_eq!(
        (w.rule(), w.action(), w.cause()),
        (0, 0, Cause::DeniedByCidr)
    );
    assert_eq!(w.cidr().unwrap().to_string(), "10.0.0.0/8");
    assert_eq!(d.target().unwrap().port(), 443);
    let d = c.evaluate(sa("11.1.2.3"));
    assert!(d.is_allowed() && !d.is_log_only() && d.would_deny().is_none());
}

#[test]
fn rules_run_in_order_and_first_terminating_action_decides() {
    let c = TrafficPolicy::from_yaml(
        "
on_tcp_connect:
  - name: blocklist
    actions:
      - type: restrict-ips
        config:
          deny: [192.0.2.0/24]
  - name: partners
    actions:
      - type: restrict-ips
        config:
          allow: [10.0.0.1/8]
      - type: forward-internal
        config:
          url: tcp://a.internal:1
  - name: never
    actions:
      - type: forward-internal
        config:
          url: tcp://b.internal:2
",
    )
    .unwrap()
    .compile()
    .unwrap();
    let d = c.evaluate(sa("192.0.2.5"));
    assert_eq!(
        (d.outcome(), d.why().rule_name()),
        (Outcome::Deny, Some("blocklist"))
    );
    let d = c.evaluate(sa("10.9.9.9"));
    assert_eq!(d.target().unwrap().host(), "a.internal");
    // Non-canonical 10.0.0.1/8 was normalised to 10.0.0.0/8.
    assert_eq!(d.why().cidr().unwrap().to_string(), "10.0.0.0/8");
    let d = c.evaluate(sa("172.16.0.1"));
    assert_eq!(
        (d.outcome(), d.why().rule_name(), d.why().cause()),
        (Outcome::Deny, Some("partners"), Cause::NotInAllowList)
    );
    let hosts: Vec<_> = c.forward_targets().iter().map(|t| t.host()).collect();
    assert_eq!(hosts, ["a.internal", "b.internal"]);
}

#[test]
fn edges_of_the_address_space() {
    let c = TrafficPolicy::from_yaml(
        "
on_tcp_connect:
  - actions:
      - type: restrict-ips
        config:
          allow: [0.0.0.0/0, '::/0']
          deny: [255.255.255.255/32, 0.0.0.0/32, 'ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff/128', '::/128']
      - type: forward-internal
        config:
          url: tcp://x.internal:9
",
    )
    .unwrap()
    .compile()
    .unwrap();
    for (ip, allowed) in [
        ("0.0.0.0", false),
        ("0.0.0.1", true),
        ("255.255.255.254", true),
        ("255.255.255.255", false),
        ("::", false),
        ("::1", true),
        ("ffff:ffff:ffff:ffff:ffff:ffff:ffff:fffe", true),
        ("ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", false),
        ("::ffff:255.255.255.255", false),
    ] {
        assert_eq!(c.evaluate(sa(ip)).is_allowed(), allowed, "{ip}");
    }
}

/// Readers on several threads never see a half-built table: every decision
/// they get is consistent with one whole generation, and generations only
/// move forward. No sleeps: the writer publishes as fast as it can and the
/// readers run until they have seen the last generation.
#[test]
fn hot_swap_readers_see_whole_policies() {
    const GENERATIONS: u32 = 40;
    let build = |g: u32| {
        // Generation g allows exactly 10.0.<g>.0/24 plus 1000 decoys, and
        // forwards to g<g>.internal.
        let mut allow: Vec<String> = (0..1000)
            .map(|i| format!("172.{}.{}.0/24", 16 + i / 256, i % 256))
            .collect();
        allow.push(format!("10.0.{g}.0/24"));
        let yaml = format!(
            "on_tcp_connect:\n  - actions:\n      - type: restrict-ips\n        config:\n          allow: [{}]\n      - type: forward-internal\n        config:\n          url: tcp://g{g}.internal:1\n",
            allow.join(", ")
        );
        TrafficPolicy::from_yaml(&yaml).unwrap().compile().unwrap()
    };
    let handle = PolicyHandle::new(build(0));
    let done = Arc::new(AtomicBool::new(false));
    // The newest generation any reader has seen: the writer stores the next one only
    // once a reader has seen the last, so readers and writer overlap on every
    // generation whatever the scheduling (no sleeps: each side waits on the other).
    // It holds generation + 1, so 0 means no reader has seen generation 0 yet.
    let newest_seen = Arc::new(AtomicU32::new(0));
    let readers: Vec<_> = (0..3)
        .map(|_| {
            let handle = handle.clone();
            let done = done.clone();
            let newest_seen = newest_seen.clone();
            std::thread::spawn(move || {
                let mut reader = handle.reader();
                let mut last = 0u32;
                let mut seen = std::collections::BTreeSet::new();
                loop {
                    let finished = done.load(Ordering::Acquire);
                    let p = reader.load();
                    let d = p.evaluate(sa("172.17.3.9"));
                    let g: u32 = d.target().unwrap().host()[1..]
                        .trim_end_matches(".internal")
                        .parse()
                        .unwrap();
                    assert!(g >= last, "generation went back from {last} to {g}");
                    last = g;
                    assert!(p.evaluate(sa(&format!("10.0.{g}.1"))).is_allowed());
                    assert!(!p.evaluate(sa(&format!("10.0.{}.1", g + 1))).is_allowed());
                    seen.insert(g);
                    newest_seen.fetch_max(g + 1, Ordering::AcqRel);
                    if finished && last == GENERATIONS {
                        return seen;
                    }
                    assert!(
                        !finished || last == GENERATIONS,
                        "reader stuck on {last} after the last store"
                    );
                }
            })
        })
        .collect();
    for g in 1..=GENERATIONS {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while newest_seen.load(Ordering::Acquire) < g {
            assert!(
                std::time::Instant::now() < deadline,
                "no reader saw generation {} within 30 s",
                g - 1
            );
            std::thread::yield_now();
        }
        let report = handle.store(build(g));
        assert_eq!(report.generation, u64::from(g));
        assert!(report.build.duration > std::time::Duration::ZERO);
    }
    done.store(true, Ordering::Release);
    // Every generation was seen whole by some reader while the writer was running:
    // the checks above ran against each of the 41 tables, not only the last.
    let mut seen = std::collections::BTreeSet::new();
    for r in readers {
        seen.extend(r.join().unwrap());
    }
    assert_eq!(
        seen,
        (0..=GENERATIONS).collect(),
        "generations no reader checked"
    );
    assert_eq!(handle.generation(), u64::from(GENERATIONS));
    assert_eq!(
        handle
            .load()
            .evaluate(sa("172.16.0.1"))
            .target()
            .unwrap()
            .host(),
        "g40.internal"
    );
}

#[test]
fn a_broken_policy_leaves_the_old_one() {
    let handle = PolicyHandle::new(
        TrafficPolicy::from_yaml(ISSUE_EXAMPLE)
            .unwrap()
            .compile()
            .unwrap(),
    );
    let err = handle
        .store_yaml(&ISSUE_EXAMPLE.replace("203.0.113.0/24", "203.0.113.0/24x"))
        .unwrap_err();
    assert!(err.to_string().contains("line 8"), "{err}");
    assert_eq!(handle.generation(), 0);
    assert!(handle.load().evaluate(sa("203.0.113.9")).is_allowed());
    handle
        .store_yaml(&ISSUE_EXAMPLE.replace("203.0.113.0/24", "198.51.100.0/24"))
        .unwrap();
    assert!(!handle.load().evaluate(sa("203.0.113.9")).is_allowed());
    assert!(handle.load().evaluate(sa("198.51.100.9")).is_allowed());
}
