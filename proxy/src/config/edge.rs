//! The edge's configuration file.
//!
//! ```yaml
//! version: 1
//! workers: 2
//! agents:
//!   listen: 0.0.0.0:4443
//!   tls: { cert: /etc/sluice/edge.crt, key: /etc/sluice/edge.key }
//! service_users:
//!   - name: clinic-agent
//!     authtokens: ["sha256:…"]
//! endpoints:
//!   - url: tcp://0.0.0.0:21001
//!     traffic_policy: { on_tcp_connect: [ … ] }
//! ```
//!
//! This module owns the file's types as written ([`EdgeFile`]) and as resolved
//! ([`EdgeSettings`]); reading and validating a file is `edge_load` and
//! `edge_validate`.

use std::{net::SocketAddr, sync::Arc};

use rustls::ServerConfig;
use serde::Deserialize;
use sluice_policy::{CompiledPolicy, TrafficPolicy};

use crate::{listeners::Listener, token::TokenHash};

/// The `{ cert, key }` pair, shared with the admin section (it lives in `config`).
pub use super::TlsFiles;

/// `edge.yml` as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EdgeFile {
    /// Must be 1.
    pub version: u32,
    /// Worker threads (default: number of cores).
    pub workers: Option<usize>,
    /// The listener agents dial.
    pub agents: AgentsSection,
    /// The shared port of `tls://` cloud endpoints (routed by SNI).
    pub tls_endpoints: Option<TlsEndpointsSection>,
    /// The shared port of `http://` cloud endpoints (routed by the `Host` header).
    pub http_endpoints: Option<HttpEndpointsSection>,
    /// Identities that own authtokens.
    #[serde(default)]
    pub service_users: Vec<ServiceUserSection>,
    /// Cloud endpoints.
    #[serde(default)]
    pub endpoints: Vec<CloudEndpointSection>,
    /// On SIGTERM, how long established connections may take to finish. Default 30s.
    #[serde(
        default = "default_drain_timeout",
        deserialize_with = "super::duration::human"
    )]
    pub drain_timeout: std::time::Duration,
    /// The admin API (off unless this section is present).
    pub admin: Option<super::admin::AdminSection>,
    /// Edge-wide connection limits.
    #[serde(default)]
    pub limits: LimitsSection,
    /// Where the control plane keeps API-made changes (SQLite). Without it they live in
    /// memory and are lost on restart.
    pub state_dir: Option<std::path::PathBuf>,
    /// State shared by a fleet of edges (`state: { etcd: … }`), instead of `state_dir`.
    pub state: Option<super::fleet::StateSection>,
    /// This edge's name in logs, metrics, events and the API. Default: the host name.
    pub edge_id: Option<String>,
    /// The IP this edge's `tcp://` cloud endpoints bind, in place of the host in their
    /// URLs, so every edge of a fleet serves every endpoint on its own address.
    pub public_address: Option<std::net::IpAddr>,
    /// The country database policies read `conn.geo.country_code` from.
    pub geoip: Option<GeoIpSection>,
}

/// `geoip:`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GeoIpSection {
    /// A MaxMind-format country (or city) database, e.g. GeoLite2-Country.mmdb.
    pub database: std::path::PathBuf,
}

/// `limits:`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitsSection {
    /// Default `max_connections_per_ip` of every endpoint that sets none (0: none).
    pub max_connections_per_ip: Option<u32>,
}

pub(crate) fn default_drain_timeout() -> std::time::Duration {
    std::time::Duration::from_secs(30)
}

/// `agents:`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentsSection {
    /// Address of the agent listener.
    pub listen: SocketAddr,
    /// Certificate and key the agent listener presents.
    pub tls: TlsFiles,
    /// Accept plain-TCP data channels (agents with `transport: tcp`). Off by default:
    /// their bytes cross the network in clear, so turn it on only where the path
    /// between agent and edge is private (a VPN, a private link).
    #[serde(default)]
    pub plain_channels: bool,
    /// Agent-port connections that have not authenticated yet, at most, edge-wide.
    /// Default 1024.
    pub max_unauthenticated: Option<usize>,
    /// Of those, from one source IP. Default 64.
    pub max_unauthenticated_per_ip: Option<u32>,
    /// TLS handshakes per second a source IP with no live session may start on the
    /// agent port (bursts of twice as many). Default 20.
    pub handshakes_per_ip_per_sec: Option<u32>,
    /// How long a connection to the agent port may take from accept to its hello,
    /// TLS handshake included. Default 10s.
    #[serde(default, deserialize_with = "super::duration::human_opt")]
    pub handshake_timeout: Option<std::time::Duration>,
}

/// `tls_endpoints:`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsEndpointsSection {
    /// Address every `tls://` endpoint shares.
    pub listen: SocketAddr,
}

/// `http_endpoints:`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpEndpointsSection {
    /// Address every `http://` endpoint shares.
    pub listen: SocketAddr,
}

/// One entry of `service_users:`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceUserSection {
    /// The user's name, shown in logs.
    pub name: String,
    /// `sha256:` hashes of the user's authtokens.
    #[serde(default)]
    pub authtokens: Vec<TokenHash>,
    /// `bind:PATTERN` rules for every token of the user (empty: any URL another user
    /// does not own).
    #[serde(default)]
    pub acl: Vec<String>,
    /// Internal URLs this user owns: only its sessions may bind them.
    #[serde(default)]
    pub owns: Vec<String>,
}

/// One entry of `endpoints:`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CloudEndpointSection {
    /// `tcp://ADDR:PORT`, or `tls://HOST` / `tls://*.DOMAIN` (routed by SNI on the
    /// `tls_endpoints` port, passed through untouched).
    pub url: String,
    /// What to do with each connection.
    pub traffic_policy: TrafficPolicy,
    /// A forwarded connection with no bytes either way for this long is closed
    /// (`0s` disables). Default 1h.
    #[serde(
        default = "default_idle_timeout",
        deserialize_with = "super::duration::human"
    )]
    pub idle_timeout: std::time::Duration,
    /// `http://` and `https://` endpoints: how long an upstream may take to start its
    /// response (counted from when the request starts going upstream, its body's upload
    /// included) before the client gets `504` (whole seconds, 1s to 24h). Default 60s.
    #[serde(default, deserialize_with = "super::duration::human_opt")]
    pub response_timeout: Option<std::time::Duration>,
    /// Most connections at once through this endpoint (0 or absent: unlimited).
    pub max_connections: Option<usize>,
    /// Most connections at once from one client IP (0: unlimited; absent: the
    /// edge-wide `limits.max_connections_per_ip`).
    pub max_connections_per_ip: Option<u32>,
    /// Terminate TLS here with this certificate and key and forward plaintext
    /// (default: `tls://` endpoints pass the client's TLS through untouched).
    pub terminate_tls: Option<TlsFiles>,
}

fn default_idle_timeout() -> std::time::Duration {
    std::time::Duration::from_secs(3600)
}

/// How long an upstream may take to start its response when the endpoint does not say.
pub const DEFAULT_RESPONSE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);
/// The range `response_timeout` may take.
pub const RESPONSE_TIMEOUT_RANGE: std::ops::RangeInclusive<std::time::Duration> =
    std::time::Duration::from_secs(1)..=std::time::Duration::from_secs(24 * 3600);

/// Whether an endpoint's URL names an HTTP endpoint (`http://` or `https://`).
pub fn serves_http(url: &str) -> bool {
    url.starts_with("http://") || url.starts_with("https://")
}

/// Checks an endpoint's `response_timeout` against its URL: only HTTP endpoints have
/// responses to wait for, and the wait is bounded both ways.
pub fn check_response_timeout(
    url: &str,
    timeout: Option<std::time::Duration>,
) -> Result<std::time::Duration, String> {
    let Some(timeout) = timeout else {
        return Ok(DEFAULT_RESPONSE_TIMEOUT);
    };
    if !serves_http(url) {
        return Err(format!(
            "`{url}`: response_timeout applies to http:// and https:// endpoints only"
        ));
    }
    if !RESPONSE_TIMEOUT_RANGE.contains(&timeout) || timeout.subsec_nanos() != 0 {
        return Err(format!(
            "response_timeout must be whole seconds from 1s to 24h, not {}s",
            timeout.as_secs_f64()
        ));
    }
    Ok(timeout)
}

/// Everything the edge runs with, validated and loaded.
pub struct EdgeSettings {
    /// Worker threads.
    pub workers: usize,
    /// Agent listener address.
    pub agent_listen: SocketAddr,
    /// TLS for the agent listener.
    pub agent_tls: Arc<ServerConfig>,
    /// When the agent port's certificate expires (if it parsed).
    pub agent_cert_not_after: Option<std::time::SystemTime>,
    /// Whether plain-TCP data channels are accepted.
    pub plain_channels: bool,
    /// Limits of the agent port before authentication.
    pub preauth: crate::edge::preauth::PreAuthSettings,
    /// Service users and their token hashes.
    pub users: Vec<ServiceUser>,
    /// Cloud endpoints.
    pub endpoints: Vec<CloudEndpoint>,
    /// The shared port of `tls://` endpoints.
    pub tls_listen: Option<SocketAddr>,
    /// The shared port of `http://` endpoints.
    pub http_listen: Option<SocketAddr>,
    /// Graceful drain limit on SIGTERM.
    pub drain_timeout: std::time::Duration,
    /// How plain-TCP hops move bytes (command line, not the file).
    pub pump: crate::io::Pump,
    /// The admin API, when configured.
    pub admin: Option<super::admin::AdminSettings>,
    /// Per-IP connection limit of endpoints that set none.
    pub default_max_connections_per_ip: Option<u32>,
    /// The state directory (resolved against the config file), if any.
    pub state_dir: Option<std::path::PathBuf>,
    /// The etcd cluster holding a fleet's shared state, if the state is there.
    pub etcd: Option<super::fleet::EtcdSettings>,
    /// This edge's name.
    pub edge_id: String,
    /// The IP `tcp://` endpoints bind (the URL's host otherwise).
    pub public_address: Option<std::net::IpAddr>,
    /// The country database (`geoip.database`), read.
    pub geo: Option<Arc<crate::geo::GeoDb>>,
}

/// A service user, resolved.
#[derive(Debug, Clone)]
pub struct ServiceUser {
    /// Name for logs.
    pub name: String,
    /// Accepted token hashes.
    pub token_hashes: Vec<TokenHash>,
    /// Bind rules of every token of the user.
    pub acl: Vec<crate::edge::auth::BindRule>,
    /// Internal URLs (canonical) the user owns.
    pub owns: Vec<String>,
}

/// Where a cloud endpoint receives connections.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EndpointAddr {
    /// Its own TCP listener.
    Tcp(SocketAddr),
    /// The shared TLS port, for ClientHellos naming this host (or wildcard pattern).
    Tls(String),
    /// The shared HTTP port, for requests whose `Host` names this host (or pattern).
    Http(String),
    /// The shared TLS port, for ClientHellos naming this host: TLS ended at the edge
    /// (`terminate_tls`), then HTTP/1.1 or HTTP/2 as ALPN says.
    Https(String),
}

impl EndpointAddr {
    /// Whether `policy` can run on this endpoint: the HTTP phases only on `http://` and
    /// `https://` endpoints, and on `tcp://` and `tls://` ones an `on_tcp_connect` that
    /// forwards or denies every connection (nothing after it could); `terminate-tls`
    /// only on `tcp://` and `tls://` ones.
    pub fn check_policy(&self, policy: &CompiledPolicy) -> Result<(), String> {
        match self {
            EndpointAddr::Http(_) if policy.terminates_tls() => Err(
                "`terminate-tls` on an http:// endpoint: its clients speak plain HTTP".to_owned(),
            ),
            EndpointAddr::Https(_) if policy.terminates_tls() => Err(
                "`terminate-tls` on an https:// endpoint: its TLS is ended with the \
                 endpoint's `terminate_tls` certificate before any rule runs; use the \
                 action on tls:// endpoints"
                    .to_owned(),
            ),
            EndpointAddr::Tcp(_) | EndpointAddr::Tls(_) => {
                if !policy.http().is_empty() {
                    return Err(
                        "`on_http_request` and `on_http_response` run only on http:// \
                         and https:// endpoints; this endpoint carries bytes, which \
                         `on_tcp_connect` decides on"
                            .to_owned(),
                    );
                }
                if !policy.decides_at_connect() {
                    return Err("no reachable decision: `on_tcp_connect` needs a rule that \
                         forwards, denies or closes"
                        .to_owned());
                }
                Ok(())
            }
            EndpointAddr::Http(_) | EndpointAddr::Https(_) => Ok(()),
        }
    }
}

/// A policy that reads `conn.geo` needs a country database, or it would never know a
/// country (and an `in [...]` block would block no one).
pub fn check_country_source(policy: &CompiledPolicy, has_database: bool) -> Result<(), String> {
    if policy.reads_country() && !has_database {
        return Err(
            "the policy reads `conn.geo`, but this edge has no country database: set \
             `geoip: { database: FILE }` in edge.yml (a MaxMind-format .mmdb)"
                .to_owned(),
        );
    }
    Ok(())
}

/// A cloud endpoint, resolved.
pub struct CloudEndpoint {
    /// The URL as configured (for logs and metrics).
    pub url: String,
    /// Where connections arrive.
    pub addr: EndpointAddr,
    /// Its compiled traffic policy.
    pub policy: CompiledPolicy,
    /// Idle timeout of forwarded connections (`None`: never).
    pub idle_timeout: Option<std::time::Duration>,
    /// How long an upstream may take to start its response (HTTP endpoints).
    pub response_timeout: std::time::Duration,
    /// Connection limits.
    pub limits: crate::edge::conn_limits::LimitSettings,
    /// The traffic policy as JSON (shown by the admin API).
    pub policy_json: String,
    /// TLS the edge terminates for this endpoint (`terminate_tls`), if any.
    pub terminate_tls: Option<Arc<ServerConfig>>,
    /// SHA-256 of the `terminate_tls` certificate and key files as loaded, so a reload
    /// can tell an unchanged endpoint from one whose certificate was replaced.
    pub terminate_tls_digest: Option<[u8; 32]>,
    /// SHA-256 of the policy's `terminate-tls` certificates and keys as loaded (the
    /// JSON above never shows an inline key, and a file can change under its name).
    pub policy_tls_digest: [u8; 32],
}

/// Parses `tcp://ADDR:PORT` (its own listener), `tls://HOST` (SNI on the TLS port),
/// `http://HOST` (the `Host` header on the HTTP port) or `https://HOST` (SNI on the
/// TLS port, HTTP inside).
pub(crate) fn parse_endpoint_url(url: &str) -> Result<EndpointAddr, String> {
    if let Some(host) = url.strip_prefix("https://") {
        if host.is_empty() || host.contains(['/', ':', '?', '#', '@']) {
            return Err(format!(
                "`{url}`: expected https://HOST or https://*.DOMAIN (the port is tls_endpoints.listen)"
            ));
        }
        return Ok(EndpointAddr::Https(host.to_ascii_lowercase()));
    }
    if let Some(host) = url.strip_prefix("http://") {
        if host.is_empty() || host.contains(['/', ':', '?', '#', '@']) {
            return Err(format!(
                "`{url}`: expected http://HOST or http://*.DOMAIN (the port is http_endpoints.listen)"
            ));
        }
        return Ok(EndpointAddr::Http(host.to_ascii_lowercase()));
    }
    if let Some(host) = url.strip_prefix("tls://") {
        if host.is_empty() || host.contains(['/', ':']) {
            return Err(format!(
                "`{url}`: expected tls://HOST or tls://*.DOMAIN (the port is tls_endpoints.listen)"
            ));
        }
        return Ok(EndpointAddr::Tls(host.to_ascii_lowercase()));
    }
    let rest = url.strip_prefix("tcp://").ok_or_else(|| {
        format!("`{url}`: expected tcp://ADDR:PORT, tls://HOST, http://HOST or https://HOST")
    })?;
    rest.parse()
        .map(EndpointAddr::Tcp)
        .map_err(|_| format!("`{url}`: expected tcp://ADDR:PORT with an IP address and a port"))
}

/// The listeners an edge file declares, named by their keys, in the order a clash is
/// reported against: `agents.listen`, `tls_endpoints.listen`, `http_endpoints.listen`,
/// `admin.listen`, then each `tcp://` endpoint as `(index, address)`. They must not share a port
/// ([`crate::listeners::clashes`]).
pub(crate) fn declared_listeners(
    agents: Option<SocketAddr>,
    tls_endpoints: Option<SocketAddr>,
    http_endpoints: Option<SocketAddr>,
    admin: Option<SocketAddr>,
    tcp_endpoints: impl IntoIterator<Item = (usize, SocketAddr)>,
) -> Vec<Listener> {
    let own = [
        ("agents.listen", agents),
        ("tls_endpoints.listen", tls_endpoints),
        ("http_endpoints.listen", http_endpoints),
        ("admin.listen", admin),
    ];
    own.into_iter()
        .filter_map(|(key, addr)| Some(Listener::new(key, addr?)))
        .chain(
            tcp_endpoints
                .into_iter()
                .map(|(i, addr)| Listener::new(format!("endpoints[{i}].url"), addr)),
        )
        .collect()
}
