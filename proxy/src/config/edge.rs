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

use std::{net::SocketAddr, path::Path, sync::Arc};

use rustls::ServerConfig;
use serde::Deserialize;
use sluice_policy::{CompiledPolicy, TrafficPolicy};

use super::{parse_yaml, read_file, relative_to, ConfigError};
use crate::{tls, token::TokenHash};

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
}

/// `tls_endpoints:`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsEndpointsSection {
    /// Address every `tls://` endpoint shares.
    pub listen: SocketAddr,
}

/// A certificate chain and its key, as PEM files.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsFiles {
    /// PEM certificate chain.
    pub cert: std::path::PathBuf,
    /// PEM private key.
    pub key: std::path::PathBuf,
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

/// Everything the edge runs with, validated and loaded.
pub struct EdgeSettings {
    /// Worker threads.
    pub workers: usize,
    /// Agent listener address.
    pub agent_listen: SocketAddr,
    /// TLS for the agent listener.
    pub agent_tls: Arc<ServerConfig>,
    /// Service users and their token hashes.
    pub users: Vec<ServiceUser>,
    /// Cloud endpoints.
    pub endpoints: Vec<CloudEndpoint>,
    /// The shared port of `tls://` endpoints.
    pub tls_listen: Option<SocketAddr>,
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
}

/// A service user, resolved.
#[derive(Debug, Clone)]
pub struct ServiceUser {
    /// Name for logs.
    pub name: String,
    /// Accepted token hashes.
    pub token_hashes: Vec<TokenHash>,
}

/// Where a cloud endpoint receives connections.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EndpointAddr {
    /// Its own TCP listener.
    Tcp(SocketAddr),
    /// The shared TLS port, for ClientHellos naming this host (or wildcard pattern).
    Tls(String),
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
    /// Connection limits.
    pub limits: crate::edge::conn_limits::LimitSettings,
    /// The traffic policy as JSON (shown by the admin API).
    pub policy_json: String,
    /// TLS the edge terminates for this endpoint (`terminate_tls`), if any.
    pub terminate_tls: Option<Arc<ServerConfig>>,
}

impl EdgeSettings {
    /// Reads, parses and validates an edge config file.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        Self::from_yaml(&read_file(path)?, path)
    }

    /// Parses and validates edge config text; relative paths resolve against `path`.
    pub fn from_yaml(text: &str, path: &Path) -> Result<Self, ConfigError> {
        let file: EdgeFile = parse_yaml(text, path)?;
        let err = |m: String| ConfigError::new(path, m);
        if file.version != 1 {
            return Err(err(format!("version: expected 1, found {}", file.version)));
        }
        let cert_path = relative_to(path, &file.agents.tls.cert);
        let key_path = relative_to(path, &file.agents.tls.key);
        let certs =
            tls::load_certs(&cert_path).map_err(|e| err(format!("agents.tls.cert: {e}")))?;
        let key = tls::load_key(&key_path).map_err(|e| err(format!("agents.tls.key: {e}")))?;
        let agent_tls = tls::server_config(certs, key, &cert_path)
            .map_err(|e| err(format!("agents.tls: {e}")))?;
        let mut users: Vec<ServiceUser> = Vec::new();
        for (i, u) in file.service_users.into_iter().enumerate() {
            if users.iter().any(|x| x.name == u.name) {
                return Err(err(format!(
                    "service_users[{i}].name: `{}` is listed twice",
                    u.name
                )));
            }
            users.push(ServiceUser {
                name: u.name,
                token_hashes: u.authtokens,
            });
        }
        let tls_listen = file.tls_endpoints.map(|t| t.listen);
        let mut sni_names = crate::sni::SniRouter::new();
        let mut endpoints: Vec<CloudEndpoint> = Vec::new();
        for (i, ep) in file.endpoints.into_iter().enumerate() {
            let addr =
                parse_endpoint_url(&ep.url).map_err(|m| err(format!("endpoints[{i}].url: {m}")))?;
            if let EndpointAddr::Tls(host) = &addr {
                if tls_listen.is_none() {
                    return Err(err(format!(
                        "endpoints[{i}].url: `{}` needs `tls_endpoints: {{ listen: ADDR:PORT }}`",
                        ep.url
                    )));
                }
                match sni_names.insert(host, ()) {
                    Err(e) => return Err(err(format!("endpoints[{i}].url: `{}`: {e}", ep.url))),
                    Ok(Some(())) => {
                        return Err(err(format!(
                            "endpoints[{i}].url: `{}` is listed twice",
                            ep.url
                        )))
                    }
                    Ok(None) => {}
                }
            }
            let duplicate_port = matches!(addr, EndpointAddr::Tcp(a) if a.port() != 0)
                && endpoints.iter().any(|e| e.addr == addr);
            if duplicate_port {
                return Err(err(format!(
                    "endpoints[{i}].url: `{}` is listed twice",
                    ep.url
                )));
            }
            let policy = ep
                .traffic_policy
                .compile()
                .map_err(|e| err(format!("endpoints[{i}].traffic_policy: {e}")))?;
            let terminate_tls = match &ep.terminate_tls {
                Some(files) => Some(
                    tls::server_config_from_files(
                        &relative_to(path, &files.cert),
                        &relative_to(path, &files.key),
                        None,
                    )
                    .map_err(|e| err(format!("endpoints[{i}].terminate_tls: {e}")))?,
                ),
                None => None,
            };
            let limits = crate::edge::conn_limits::LimitSettings {
                max_connections: ep.max_connections.filter(|n| *n > 0),
                // An explicit 0 turns the edge-wide default off for this endpoint.
                max_connections_per_ip: match ep.max_connections_per_ip {
                    Some(0) => Some(u32::MAX),
                    other => other,
                },
            };
            endpoints.push(CloudEndpoint {
                limits,
                policy_json: serde_json::to_string(&ep.traffic_policy).unwrap_or_default(),
                url: ep.url,
                addr,
                policy,
                idle_timeout: (!ep.idle_timeout.is_zero()).then_some(ep.idle_timeout),
                terminate_tls,
            });
        }
        let admin = match file.admin {
            None => None,
            Some(a) => Some(super::admin::resolve(a, path).map_err(err)?),
        };
        Ok(Self {
            workers: file
                .workers
                .unwrap_or_else(crate::runtime::default_workers)
                .max(1),
            agent_listen: file.agents.listen,
            agent_tls,
            users,
            endpoints,
            tls_listen,
            drain_timeout: file.drain_timeout,
            pump: crate::io::Pump::default(),
            admin,
            default_max_connections_per_ip: file.limits.max_connections_per_ip.filter(|n| *n > 0),
            state_dir: file.state_dir.map(|d| relative_to(path, &d)),
        })
    }
}

/// Parses `tcp://ADDR:PORT` (its own listener) or `tls://HOST` (SNI on the TLS port).
pub(crate) fn parse_endpoint_url(url: &str) -> Result<EndpointAddr, String> {
    if let Some(host) = url.strip_prefix("tls://") {
        if host.is_empty() || host.contains(['/', ':']) {
            return Err(format!(
                "`{url}`: expected tls://HOST or tls://*.DOMAIN (the port is tls_endpoints.listen)"
            ));
        }
        return Ok(EndpointAddr::Tls(host.to_ascii_lowercase()));
    }
    let rest = url
        .strip_prefix("tcp://")
        .ok_or_else(|| format!("`{url}`: expected tcp://ADDR:PORT or tls://HOST"))?;
    rest.parse()
        .map(EndpointAddr::Tcp)
        .map_err(|_| format!("`{url}`: expected tcp://ADDR:PORT with an IP address and a port"))
}
