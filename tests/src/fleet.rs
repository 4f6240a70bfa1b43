//! A fleet on one host for the end-to-end tests: edges sharing their state in a real
//! etcd ([`crate::etcd`]), each on its own loopback address (127.0.0.1, 127.0.0.2, …,
//! its `public_address`), with an admin API the tests drive.

use std::{
    net::{IpAddr, SocketAddr},
    path::PathBuf,
    time::Duration,
};

use serde_json::Value;

use crate::{
    admin::Admin,
    etcd::Etcd,
    fixture::{self, Fixture},
    process::Sluice,
};

/// The monoio driver the fleet's processes run on.
pub const DRIVER: &str = "uring";
/// The admin API key of every edge of the fleet.
pub const API_KEY: &str = "fleet-admin-key-0123456789";
/// How long a change may take to reach the other edge before the test fails (the
/// target is far lower: docs/fleet.md has the measured delays).
pub const PROPAGATION: Duration = Duration::from_secs(5);

/// An edge of the fleet.
pub struct Edge {
    /// Its process.
    pub process: Sluice,
    /// Its agent port.
    pub agent_addr: SocketAddr,
    /// Its admin API.
    pub admin: Admin,
    /// Its `http://` endpoints' port (the fleet's edges have one).
    pub http_addr: Option<SocketAddr>,
}

/// An edge named `name` on loopback address `ip` (its `http://` endpoints' port there
/// too), its state in `etcd` under `prefix`, with `statics` as edge.yml's own
/// endpoints (`(listen, policy)`).
pub fn edge_config(
    fx: &Fixture,
    name: &str,
    ip: &str,
    etcd: &Etcd,
    prefix: &str,
    statics: &[(&str, String)],
) -> PathBuf {
    let mut yaml = fx.edge_yaml(&format!("{ip}:0"), statics);
    if statics.is_empty() {
        yaml = yaml.replace("endpoints:\n", "endpoints: []\n");
    }
    yaml.push_str(&format!(
        "http_endpoints:\n  listen: {ip}:0\n\
         admin:\n  listen: {ip}:0\n  api_keys: [\"{}\"]\nedge_id: {name}\npublic_address: {ip}\n\
         state:\n  etcd:\n    endpoints: {}\n    prefix: {prefix}\n",
        fixture::token_hash(API_KEY),
        serde_json::to_string(&etcd.urls()).unwrap()
    ));
    fx.write(&format!("{name}.yml"), &yaml)
}

/// [`start_edge_with`] with no static endpoints.
pub fn start_edge(fx: &Fixture, name: &str, ip: &str, etcd: &Etcd, prefix: &str) -> Edge {
    start_edge_with(fx, name, ip, etcd, prefix, &[])
}

/// Starts the edge [`edge_config`] writes.
pub fn start_edge_with(
    fx: &Fixture,
    name: &str,
    ip: &str,
    etcd: &Etcd,
    prefix: &str,
    statics: &[(&str, String)],
) -> Edge {
    run_edge(&edge_config(fx, name, ip, etcd, prefix, statics))
}

/// Starts the edge of config `cfg`; its agent port and admin API.
pub fn run_edge(cfg: &std::path::Path) -> Edge {
    let mut process = Sluice::edge(cfg, DRIVER);
    let (agent_addr, _) = process.edge_addrs(0);
    let (addr, _) = crate::admin::listening(&mut process);
    let declares_http = std::fs::read_to_string(cfg).is_ok_and(|c| c.contains("http_endpoints:"));
    let http_addr = declares_http.then(|| process.http_endpoints_addr());
    Edge {
        process,
        agent_addr,
        admin: Admin::new(addr, API_KEY),
        http_addr,
    }
}

/// A fresh key prefix: each test's fleet on its own.
pub fn fresh_prefix() -> String {
    format!("/sluice-test-{:08x}", rand::random::<u32>())
}

/// Two edges on one fresh prefix of `etcd`.
pub fn fleet(fx: &Fixture, etcd: &Etcd) -> (Edge, Edge) {
    let prefix = fresh_prefix();
    let a = start_edge(fx, "edge-a", "127.0.0.1", etcd, &prefix);
    let b = start_edge(fx, "edge-b", "127.0.0.2", etcd, &prefix);
    (a, b)
}

/// The address an endpoint as the API shows it listens on.
pub fn listen_addr(endpoint: &Value) -> Option<SocketAddr> {
    endpoint["listen_addr"].as_str()?.parse().ok()
}

/// The loopback addresses of a three-edge fleet, in order.
pub const IPS: [&str; 3] = ["127.0.0.1", "127.0.0.2", "127.0.0.3"];
/// Their `edge_id`s.
pub const NAMES: [&str; 3] = ["edge-a", "edge-b", "edge-c"];

/// Three edges on one fresh prefix of `etcd`, named [`NAMES`], on [`IPS`].
pub fn three_edges(fx: &Fixture, etcd: &Etcd) -> Vec<Edge> {
    let prefix = fresh_prefix();
    NAMES
        .iter()
        .zip(IPS)
        .map(|(name, ip)| start_edge(fx, name, ip, etcd, &prefix))
        .collect()
}

/// Port `port` on the address of edge `edge` of [`IPS`].
pub fn on(edge: usize, port: u16) -> SocketAddr {
    SocketAddr::new(IPS[edge].parse::<IpAddr>().unwrap(), port)
}

/// An agent file ([`Fixture::agent_yaml`] on `transport`, serving `endpoints`) whose
/// `connect_url` lists the agent ports `edges` and that keeps `k` sessions.
pub fn agent_yaml_on(
    fx: &Fixture,
    edges: &[SocketAddr],
    k: usize,
    transport: &str,
    endpoints: &[(&str, SocketAddr)],
) -> String {
    let first = edges[0];
    let all: Vec<String> = edges.iter().map(|a| format!("\"{a}\"")).collect();
    fx.agent_yaml(&fx.token, first, transport, endpoints)
        .replace(
            &format!("connect_url: \"{first}\""),
            &format!("connect_url: [{}]\n  edge_connections: {k}", all.join(", ")),
        )
}
