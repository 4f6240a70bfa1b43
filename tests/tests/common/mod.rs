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
    /// The agent's metrics listener, when started with one ([`Tunnel::with_agent_metrics`]).
    pub agent_metrics: Option<SocketAddr>,
}

impl Tunnel {
    /// Starts a tunnel whose one endpoint applies `policy` (YAML flow style).
    pub fn with_policy(driver: &str, transport: &str, policy: String) -> Tunnel {
        Tunnel::build(driver, transport, policy, "")
    }

    /// Like `with_policy`, with extra keys (YAML, indented for an endpoint entry)
    /// added to the endpoint, e.g. `"    idle_timeout: 500ms\n"`.
    pub fn build(driver: &str, transport: &str, policy: String, endpoint_extra: &str) -> Tunnel {
        Tunnel::build_full(driver, transport, policy, endpoint_extra, false)
    }

    /// Like `start`, with the agent serving its metrics on a loopback listener of its
    /// own (`agent_metrics`).
    pub fn with_agent_metrics(driver: &str, transport: &str) -> Tunnel {
        Tunnel::build_full(driver, transport, fixture::forward_all(ECHO_URL), "", true)
    }

    fn build_full(
        driver: &str,
        transport: &str,
        policy: String,
        endpoint_extra: &str,
        metrics: bool,
    ) -> Tunnel {
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
        let mut agent_yaml =
            fx.agent_yaml(&fx.token, agent_addr, transport, &[(ECHO_URL, echo.addr)]);
        if metrics {
            agent_yaml = agent_yaml.replace(
                "  workers: 2\n",
                "  workers: 2\n  metrics_listen: 127.0.0.1:0\n",
            );
        }
        let agent_cfg = fx.write("agent.yml", &agent_yaml);
        let mut agent = Sluice::agent(&agent_cfg, driver);
        let agent_metrics = metrics.then(|| sluice_tests::admin::metrics_listening(&mut agent));
        agent.wait_for("endpoint bound");
        Tunnel {
            fx,
            echo,
            edge,
            agent,
            agent_addr,
            public: eps[0],
            agent_metrics,
        }
    }

    /// Starts a new edge on this tunnel's agent port and public port (the old edge
    /// must be gone), forwarding everything to the echo upstream, so the running
    /// agent's config still points at it; retried while a port is taken meanwhile
    /// ([`Sluice::edge_on_fixed_ports`]). Returns the new edge, its listeners up.
    pub fn restart_edge_on_same_ports(&self, driver: &str) -> Sluice {
        let cfg = self.fx.write(
            "edge-restarted.yml",
            &self.fx.edge_yaml(
                &self.agent_addr.to_string(),
                &[(&self.public.to_string(), fixture::forward_all(ECHO_URL))],
            ),
        );
        let (edge, agent_addr, eps) = Sluice::edge_on_fixed_ports(&cfg, driver, 1);
        assert_eq!((agent_addr, eps[0]), (self.agent_addr, self.public));
        edge
    }

    /// Starts a tunnel that forwards everything to the echo upstream.
    pub fn start(driver: &str, transport: &str) -> Tunnel {
        Tunnel::with_policy(driver, transport, fixture::forward_all(ECHO_URL))
    }
}
