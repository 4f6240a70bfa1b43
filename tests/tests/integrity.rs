//! End-to-end: 64 MiB each way arrive unchanged (SHA-256 of what the echo sends
//! back) on the paths `tunnel.rs` does not cover: the user-space copy pump
//! (`--pump copy`, chosen by the global flag of edge and agent), and TLS terminated at
//! the edge (`terminate_tls`, where the edge copies between rustls and the channel).

use std::{net::SocketAddr, time::Duration};

use sha2::{Digest, Sha256};
use sluice_tests::{
    client,
    fixture::{self, Fixture},
    pki::{client_config, Ca},
    probes::tls_half_close_exchange,
    process::Sluice,
    upstream::Echo,
    DRIVERS,
};

const URL: &str = "tcp://echo.internal:7";
const SIZE: usize = 64 << 20;

/// Starts `sluice <flags…> <role> --config <cfg>`.
fn start(role: &str, flags: &[&str], cfg: &std::path::Path, driver: &str) -> Sluice {
    let args: Vec<&str> = flags
        .iter()
        .copied()
        .chain([role, "--config", cfg.to_str().unwrap()])
        .collect();
    Sluice::start(role, &args, driver)
}

#[test]
fn sixty_four_mebibytes_each_way_arrive_unchanged_through_the_copy_pump() {
    let data = client::payload(11, SIZE);
    let sent_hash = Sha256::digest(&data);
    for driver in DRIVERS {
        let fx = Fixture::new();
        let echo = Echo::start();
        let edge_cfg = fx.write(
            "edge.yml",
            &fx.edge_yaml("127.0.0.1:0", &[("127.0.0.1:0", fixture::forward_all(URL))]),
        );
        let mut edge = start("edge", &["--pump", "copy"], &edge_cfg, driver);
        let (agent_addr, eps) = edge.edge_addrs(1);
        let agent_cfg = fx.write(
            "agent.yml",
            &fx.agent_yaml(&fx.token, agent_addr, "tcp", &[(URL, echo.addr)]),
        );
        let mut agent = start("agent", &["--pump", "copy"], &agent_cfg, driver);
        agent.wait_for("endpoint bound");
        // The flag took: both processes report the copy pump on their plain-TCP hops
        // (the default would be splice).
        let edge_path = edge.wait_for("data path public client <-> data channel");
        assert_eq!(
            edge_path["tcp_channels"], "copy (user space)",
            "{edge_path}"
        );
        let agent_path = agent.wait_for("data path data channel <-> upstream");
        assert_eq!(agent_path["edge_hop"], "copy (user space)", "{agent_path}");
        assert_eq!(
            agent_path["upstream_hop"], "copy (user space)",
            "{agent_path}"
        );

        let stream = client::connect_from(None, eps[0]).unwrap();
        let got = client::exchange(stream, &data).unwrap_or_else(|e| panic!("{driver}: {e}"));
        assert_eq!(got.len(), data.len(), "{driver}: length");
        assert_eq!(Sha256::digest(&got), sent_hash, "{driver}: content hash");
    }
}

#[test]
fn sixty_four_mebibytes_each_way_arrive_unchanged_through_tls_terminated_at_the_edge() {
    let data = client::payload(12, SIZE);
    let sent_hash = Sha256::digest(&data);
    for transport in ["tcp", "tls"] {
        let fx = Fixture::new();
        let ca = Ca::new("integrity CA");
        let app = ca.server(&["app.acme.example"]);
        fx.write("app.crt", &app.cert_pem);
        fx.write("app.key", &app.key_pem);
        let echo = Echo::start();
        let yaml = fx
            .edge_yaml("127.0.0.1:0", &[("127.0.0.1:0", fixture::forward_all(URL))])
            .replace(
                "    traffic_policy:",
                "    terminate_tls: { cert: app.crt, key: app.key }\n    traffic_policy:",
            );
        let mut edge = Sluice::edge(&fx.write("edge.yml", &yaml), DRIVERS[0]);
        let (agent_addr, eps) = edge.edge_addrs(1);
        let public: SocketAddr = eps[0];
        let agent_cfg = fx.write(
            "agent.yml",
            &fx.agent_yaml(&fx.token, agent_addr, transport, &[(URL, echo.addr)]),
        );
        let mut agent = Sluice::agent(&agent_cfg, DRIVERS[0]);
        agent.wait_for("endpoint bound");

        let (got, _) = tls_half_close_exchange(
            public,
            client_config(&[&ca], None),
            "app.acme.example",
            &data,
            Duration::from_secs(120),
        )
        .unwrap_or_else(|e| panic!("{transport}: {e}"));
        assert_eq!(got.len(), data.len(), "{transport}: length");
        assert_eq!(Sha256::digest(&got), sent_hash, "{transport}: content hash");
        assert_eq!(echo.accepted(), 1, "{transport}");
    }
}
