//! A whole tunnel on loopback: echo upstream, edge process, agent process.
// Each test binary uses a different subset of these helpers.
#![allow(dead_code)]

use std::net::SocketAddr;

use sluice_tests::{
    fixture::{self, Fixture},
    process::Sluice,
    upstream::Echo,
};

/// Internal URL every test tunnel binds.
pub const ECHO_URL: &str = "tcp://echo.internal:7";

pub struct Tunnel {
    pub fx: Fixture,
    pub echo: Echo,
    pub edge: Sluice,
    pub agent: Sluice,
    pub agent_addr: SocketAddr,
    pub public: SocketAddr,
}

impl Tunnel {
    /// Starts a tunnel whose one endpoint applies `policy` (YAML flow style).
    pub fn with_policy(driver: &str, transport: &str, policy: String) -> Tunnel {
        Tunnel::build(driver, transport, policy, "")
    }

    /// Like `with_policy`, with extra keys (YAML, indented for an endpoint entry)
    /// added to the endpoint, e.g. `"    idle_timeout: 500ms\n"`.
    pub fn build(driver: &str, transport: &str, policy: String, endpoint_extra: &str) -> Tunnel {
        let fx = Fixture::new();
        let echo = Echo::start();
        let edge_yaml = fx
            .edge_yaml("127.0.0.1:0", &[("127.0.0.1:0", policy)])
            .replace(
                "    traffic_policy:",
                &format!("{endpoint_extra}    traffic_policy:"),
            );
        let edge_cfg = fx.write("edge.yml", &edge_yaml);
        let mut edge = Sluice::edge(&edge_cfg, driver);
        let (agent_addr, eps) = edge.edge_addrs(1);
        let agent_cfg = fx.write(
            "agent.yml",
            &fx.agent_yaml(&fx.token, agent_addr, transport, &[(ECHO_URL, echo.addr)]),
        );
        let mut agent = Sluice::agent(&agent_cfg, driver);
        agent.wait_for("endpoint bound");
        Tunnel {
            fx,
            echo,
            edge,
            agent,
            agent_addr,
            public: eps[0],
        }
    }

    /// Starts a tunnel that forwards everything to the echo upstream.
    pub fn start(driver: &str, transport: &str) -> Tunnel {
        Tunnel::with_policy(driver, transport, fixture::forward_all(ECHO_URL))
    }
}

/// Deterministic pseudo-random bytes (xorshift), distinct per seed.
pub fn payload(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}
