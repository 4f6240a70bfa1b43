//! End-to-end: bad agents, bad targets, bad bytes and a lost edge, each handled with a
//! clear error while everything else keeps working.

mod common;

use std::io::Write;

use common::{Tunnel, ECHO_URL};
use sluice_tests::{
    client,
    fixture::{self, Fixture},
    process::Sluice,
    upstream::Echo,
    DRIVERS,
};

#[test]
fn a_bad_token_is_refused_with_a_clear_error_and_disturbs_nobody() {
    for driver in DRIVERS {
        let mut t = Tunnel::start(driver, "tcp");
        let cfg = t.fx.write(
            "intruder.yml",
            &t.fx.agent_yaml(
                "slt_not_a_real_token",
                t.agent_addr,
                "tcp",
                &[("tcp://other.internal:1", t.echo.addr)],
            ),
        );
        // A wrong token at start can never work: the agent says why and exits
        // (status 2) instead of retrying forever.
        let mut intruder = Sluice::agent(&cfg, driver);
        let refused = intruder.wait_for(
            "the edge refuses this agent for good; exiting (fix the configuration, then start it again)",
        );
        let error = refused["reason"].as_str().unwrap();
        assert!(
            error.contains("Unauthorized") && error.contains("authtoken"),
            "{error}"
        );
        let (code, _) = intruder.wait_exit_and_log();
        assert_eq!(code, Some(2));
        t.edge.wait_for("agent refused: unknown authtoken");
        client::echo_ok(None, t.public, b"still fine").unwrap();
        assert!(t.agent.is_running());
    }
}

#[test]
fn a_target_no_agent_serves_is_closed_at_once() {
    for driver in DRIVERS {
        // Two endpoints on one edge and one agent: one forwards to the URL the agent
        // serves, one to a URL nobody serves. The first is the positive control: the
        // same client, at the same moment, through the same edge, gets through.
        let fx = Fixture::new();
        let echo = Echo::start();
        let cfg = fx.write(
            "edge.yml",
            &fx.edge_yaml(
                "127.0.0.1:0",
                &[
                    ("127.0.0.1:0", fixture::forward_all(ECHO_URL)),
                    (
                        "127.0.0.2:0",
                        fixture::forward_all("tcp://nobody.internal:9"),
                    ),
                ],
            ),
        );
        let mut edge = Sluice::edge(&cfg, driver);
        let (agent_addr, eps) = edge.edge_addrs(2);
        let (served, unserved) = if eps[0].ip().to_string() == "127.0.0.1" {
            (eps[0], eps[1])
        } else {
            (eps[1], eps[0])
        };
        let mut agent = Sluice::agent(
            &fx.write(
                "agent.yml",
                &fx.agent_yaml(&fx.token, agent_addr, "tcp", &[(ECHO_URL, echo.addr)]),
            ),
            driver,
        );
        agent.wait_for("endpoint bound");
        for i in 0..3u64 {
            client::echo_ok(None, served, &sluice_tests::client::payload(i, 100)).unwrap();
            assert!(client::is_refused(None, unserved), "{driver}: served");
        }
        // The refusals are the missing agent's, as the edge says, and nothing reached
        // the one upstream.
        edge.wait_for_n("the reason logged", 1, |v| {
            v["message"] == "no agent serves the target"
                && v["endpoint"] == "tcp://127.0.0.2:0"
                && v["internal_url"] == "tcp://nobody.internal:9"
        });
        assert_eq!(echo.accepted(), 3, "{driver}");
    }
}

#[test]
fn a_duplicate_bind_is_refused_by_url_and_the_first_agent_keeps_serving() {
    for driver in DRIVERS {
        let mut t = Tunnel::start(driver, "tcp");
        let other = Echo::start();
        let cfg = t.fx.write(
            "second.yml",
            &t.fx
                .agent_yaml(&t.fx.token, t.agent_addr, "tcp", &[(ECHO_URL, other.addr)]),
        );
        let mut second = Sluice::agent(&cfg, driver);
        let err = second.wait_for("edge reported an error");
        assert_eq!(err["url"], ECHO_URL);
        assert!(
            err["detail"].as_str().unwrap().contains("already bound"),
            "{err}"
        );
        for i in 0..20u64 {
            client::echo_ok(None, t.public, &sluice_tests::client::payload(i, 100)).unwrap();
        }
        assert_eq!(
            other.accepted(),
            0,
            "the second agent must not receive traffic"
        );
        assert!(t.agent.is_running() && second.is_running());
        t.edge.wait_for("bind refused: already bound");
        // The refused agent keeps asking, with backoff, and takes over once the first
        // one leaves.
        second.wait_for_n("a retry scheduled", 1, |v| {
            v["message"] == "bind refused; retrying" && v["url"] == ECHO_URL
        });
        t.agent.kill();
        second.wait_for("endpoint bound");
        client::wait_until_echo(t.public, std::time::Duration::from_secs(10)).unwrap();
        assert!(other.accepted() >= 1, "the second agent took over");
    }
}

#[test]
fn the_agent_heals_by_itself_after_the_edge_is_killed_and_restarted() {
    for driver in DRIVERS {
        let mut t = Tunnel::start(driver, "tcp");
        client::echo_ok(None, t.public, b"before").unwrap();
        t.edge.kill();
        t.agent
            .wait_for("session with the edge ended; reconnecting");
        // Same ports as before, so the agent's config still points at the edge.
        let mut edge = t.restart_edge_on_same_ports(driver);
        edge.wait_for("endpoint bound");
        client::wait_until_echo(t.public, std::time::Duration::from_secs(20)).unwrap();
        client::echo_ok(None, t.public, &sluice_tests::client::payload(1, 100_000)).unwrap();
        t.edge = edge;
    }
}

#[test]
fn garbage_on_the_agent_port_and_on_a_data_channel_is_closed_and_the_edge_keeps_serving() {
    for driver in DRIVERS {
        let mut t = Tunnel::start(driver, "tcp");
        // Not TLS and not a data channel.
        let mut junk = client::connect_from(None, t.agent_addr).unwrap();
        junk.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            .unwrap();
        assert!(
            client::closed_within(&mut junk, std::time::Duration::from_secs(5)),
            "garbage connection must be closed"
        );
        t.edge.wait_for("garbage on the agent port; closed");
        // Data channel magic, then a frame with an absurd length.
        let mut dc = client::connect_from(None, t.agent_addr).unwrap();
        dc.write_all(b"SLDC\xff\xff\xff\xff junk").unwrap();
        assert!(
            client::closed_within(&mut dc, std::time::Duration::from_secs(5)),
            "bad data channel must be closed"
        );
        t.edge.wait_for("bad data channel hello; closed");
        // Data channel hello for a session that does not exist.
        let mut forged = client::connect_from(None, t.agent_addr).unwrap();
        let mut hello = b"SLDC".to_vec();
        // kind 9 (ChannelHello), this protocol version, an unknown session, channel 1.
        let body: Vec<u8> = [9u8]
            .into_iter()
            .chain(sluice_tests::PROTOCOL_VERSION.to_be_bytes())
            .chain(424242u64.to_be_bytes())
            .chain(1u64.to_be_bytes())
            .chain([0u8; 32])
            .collect();
        hello.extend_from_slice(&(body.len() as u32).to_be_bytes());
        hello.extend_from_slice(&body);
        forged.write_all(&hello).unwrap();
        assert!(
            client::closed_within(&mut forged, std::time::Duration::from_secs(5)),
            "forged data channel must be closed"
        );
        t.edge
            .wait_for("data channel for an unknown session; closed");
        client::echo_ok(None, t.public, b"unaffected").unwrap();
        assert!(t.edge.is_running());
    }
}

#[test]
fn a_bad_config_exits_at_once_naming_file_line_and_key() {
    let fx = Fixture::new();
    let cfg = fx.write(
        "edge.yml",
        "version: 1\nagents:\n  listen: 127.0.0.1:0\n  tls: { cert: edge.crt, key: edge.key }\n  colour: blue\n",
    );
    let out = std::process::Command::new(sluice_tests::process::sluice_bin())
        .args(["edge", "--config", cfg.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("edge.yml"), "{err}");
    assert!(err.contains("colour"), "{err}");
    assert!(
        err.contains("line 5") || err.contains(":5:") || err.contains("5:3"),
        "{err}"
    );
}

#[test]
fn sighup_to_the_agent_says_it_does_not_reload_and_changes_nothing() {
    let mut t = Tunnel::start(DRIVERS[0], "tcp");
    client::echo_ok(None, t.public, b"before").unwrap();
    t.agent.hangup();
    t.agent
        .wait_for("SIGHUP: the agent does not reload agent.yml; restart it to apply changes");
    assert!(t.agent.is_running());
    client::echo_ok(None, t.public, b"after").unwrap();
}
