//! End-to-end: a reset on either end reaches the other end as a reset.

mod common;

use std::{
    io::{Read, Write},
    time::Duration,
};

use sluice_tests::{
    client,
    fixture::{self, Fixture},
    process::Sluice,
    upstream::{Ending, Recorder},
    DRIVERS,
};

const TRANSPORTS: [&str; 2] = ["tcp", "tls"];

fn tunnel_to(
    upstream: std::net::SocketAddr,
    driver: &str,
    transport: &str,
) -> (Fixture, Sluice, Sluice, std::net::SocketAddr) {
    let fx = Fixture::new();
    let edge_cfg = fx.write(
        "edge.yml",
        &fx.edge_yaml(
            "127.0.0.1:0",
            &[("127.0.0.1:0", fixture::forward_all(common::ECHO_URL))],
        ),
    );
    let mut edge = Sluice::edge(&edge_cfg, driver);
    let (agent_addr, eps) = edge.edge_addrs(1);
    let agent_cfg = fx.write(
        "agent.yml",
        &fx.agent_yaml(
            &fx.token,
            agent_addr,
            transport,
            &[(common::ECHO_URL, upstream)],
        ),
    );
    let mut agent = Sluice::agent(&agent_cfg, driver);
    agent.wait_for("endpoint bound");
    (fx, edge, agent, eps[0])
}

#[test]
fn a_client_reset_reaches_the_upstream_as_a_reset() {
    for driver in DRIVERS {
        for transport in TRANSPORTS {
            let upstream = Recorder::start(None);
            let (_fx, _edge, _agent, public) = tunnel_to(upstream.addr, driver, transport);
            let mut s = client::connect_from(None, public).unwrap();
            s.write_all(b"abc").unwrap();
            let mut buf = [0u8; 3];
            s.read_exact(&mut buf).unwrap();
            socket2::SockRef::from(&s)
                .set_linger(Some(Duration::ZERO))
                .unwrap();
            drop(s);
            let ending = upstream
                .endings
                .recv_timeout(Duration::from_secs(20))
                .unwrap();
            assert_eq!(ending, Ending::Reset, "{driver}/{transport}");
        }
    }
}

#[test]
fn an_upstream_reset_reaches_the_client_as_a_reset() {
    for driver in DRIVERS {
        for transport in TRANSPORTS {
            let upstream = Recorder::start(Some(3));
            let (_fx, _edge, _agent, public) = tunnel_to(upstream.addr, driver, transport);
            let mut s = client::connect_from(None, public).unwrap();
            s.write_all(b"abc").unwrap();
            let mut got = Vec::new();
            let err = s.read_to_end(&mut got).expect_err(&format!(
                "{driver}/{transport}: the stream must end in a reset, not EOF"
            ));
            assert_eq!(
                err.kind(),
                std::io::ErrorKind::ConnectionReset,
                "{driver}/{transport}"
            );
        }
    }
}
