//! End-to-end: SIGTERM drains. The edge stops accepting but lets established
//! connections finish; the agent leaves the edge (its endpoint is unbound, new
//! connections are closed) but finishes its streams; a second signal ends at once.

mod common;

use std::io::{Read, Write};

use common::Tunnel;
use sluice_tests::{client, DRIVERS};

const TRANSPORTS: [&str; 2] = ["tcp", "tls"];

fn round_trip(s: &mut std::net::TcpStream, msg: &[u8]) {
    s.write_all(msg).unwrap();
    let mut got = vec![0u8; msg.len()];
    s.read_exact(&mut got).unwrap();
    assert_eq!(got, msg);
}

#[test]
fn sigterm_to_the_edge_refuses_new_connections_and_finishes_open_ones() {
    for driver in DRIVERS {
        for transport in TRANSPORTS {
            let mut t = Tunnel::start(driver, transport);
            let mut open = client::connect_from(None, t.public).unwrap();
            round_trip(&mut open, b"before");
            t.edge.terminate();
            t.edge.wait_for("draining: public listeners closed");
            assert!(
                client::is_refused(None, t.public),
                "{driver}/{transport}: new connection accepted while draining"
            );
            round_trip(&mut open, b"still served while draining");
            assert!(
                t.edge.is_running(),
                "{driver}/{transport}: edge left before its connection ended"
            );
            drop(open);
            assert_eq!(t.edge.wait_exit(), Some(0), "{driver}/{transport}");
            let stopped = t.edge.wait_for("edge stopped");
            assert_eq!(stopped["end"], "Drained", "{driver}/{transport}: {stopped}");
        }
    }
}

#[test]
fn sigterm_to_the_agent_unbinds_first_and_finishes_its_streams() {
    for driver in DRIVERS {
        for transport in TRANSPORTS {
            let mut t = Tunnel::start(driver, transport);
            let mut open = client::connect_from(None, t.public).unwrap();
            round_trip(&mut open, b"before");
            t.agent.terminate();
            t.agent.wait_for("draining: left the edge");
            t.edge.wait_for("agent session ended");
            assert!(
                client::is_refused(None, t.public),
                "{driver}/{transport}: a draining agent got a new connection"
            );
            round_trip(&mut open, b"in flight survives");
            drop(open);
            assert_eq!(t.agent.wait_exit(), Some(0), "{driver}/{transport}");
            assert!(t.edge.is_running());
        }
    }
}

#[test]
fn a_second_sigterm_ends_the_drain_at_once() {
    let mut t = Tunnel::start(DRIVERS[0], "tcp");
    let mut open = client::connect_from(None, t.public).unwrap();
    round_trip(&mut open, b"held open");
    t.edge.terminate();
    t.edge.wait_for("draining: public listeners closed");
    t.edge.terminate();
    assert_eq!(t.edge.wait_exit(), Some(0));
    let stopped = t.edge.wait_for("edge stopped");
    assert!(
        stopped["end"].as_str().unwrap().starts_with("Interrupted"),
        "{stopped}"
    );
    drop(open);
}

#[test]
fn a_drain_that_runs_out_of_time_ends_the_remaining_streams() {
    use sluice_tests::{
        fixture::{self, Fixture},
        process::Sluice,
        upstream::Echo,
    };
    let fx = Fixture::new();
    let echo = Echo::start();
    let yaml = fx
        .edge_yaml(
            "127.0.0.1:0",
            &[("127.0.0.1:0", fixture::forward_all(common::ECHO_URL))],
        )
        .replacen("version: 1\n", "version: 1\ndrain_timeout: 1s\n", 1);
    let mut edge = Sluice::edge(&fx.write("edge.yml", &yaml), DRIVERS[0]);
    let (agent_addr, public) = edge.edge_addrs(1);
    let agent_yaml = fx.agent_yaml(
        &fx.token,
        agent_addr,
        "tcp",
        &[(common::ECHO_URL, echo.addr)],
    );
    let mut agent = Sluice::agent(&fx.write("agent.yml", &agent_yaml), DRIVERS[0]);
    agent.wait_for("endpoint bound");
    let mut open = client::connect_from(None, public[0]).unwrap();
    round_trip(&mut open, b"held open past the drain");
    let started = std::time::Instant::now();
    edge.terminate();
    // The held stream does not keep the edge up: after drain_timeout the edge exits and
    // the stream ends with it.
    assert_eq!(edge.wait_exit(), Some(0));
    let stopped = edge.wait_for("edge stopped");
    assert_eq!(stopped["end"], "TimedOut(1)", "{stopped}");
    assert!(
        started.elapsed() >= std::time::Duration::from_secs(1),
        "left before drain_timeout"
    );
    assert!(client::closed_within(
        &mut open,
        std::time::Duration::from_secs(5)
    ));
}
