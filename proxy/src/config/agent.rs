//! The agent's configuration file, in the shape of ngrok's v3 agent file.
//!
//! ```yaml
//! version: 3
//! agent:
//!   authtoken: "slt_…"
//!   connect_url: edge.example.com:4443
//!   connect_cas: /etc/sluice/ca.pem      # optional, default: webpki roots
//!   server_name: edge.example.com        # optional, default: host of connect_url
//!   transport: tls                       # tls | tcp
//!   data_channels: 8
//!   heartbeat_interval: 10s
//!   heartbeat_tolerance: 15s
//! endpoints:
//!   - name: db
//!     url: tcp://db.internal:5432
//!     agent_tls_termination:              # optional: the agent terminates TLS
//!       server_certificate: /etc/sluice/db.crt
//!       server_private_key: /etc/sluice/db.key
//!       mutual_tls_certificate_authorities: [/etc/sluice/clients-ca.pem]
//!     pooling_enabled: true                # optional: share the URL with other agents
//!     weight: 100                          # optional: share of new connections in a pool
//!     upstream:
//!       url: 10.0.0.5:5432
//!       tls: { ca: /etc/sluice/db-ca.pem, server_name: db.lan }   # optional
//!       health_check: { interval: 5s, timeout: 2s, healthy_threshold: 2, unhealthy_threshold: 2 }
//! ```

use std::{path::Path, sync::Arc, time::Duration};

use rustls::ClientConfig;
use rustls_pki_types::ServerName;
use serde::Deserialize;

use super::{duration, parse_yaml, read_file, relative_to, ConfigError};
use crate::{tls, token::Secret};

/// How data channels travel from agent to edge.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Transport {
    /// Encrypted and authenticated; channels are reused across streams (default).
    #[default]
    Tls,
    /// Plain TCP, one stream per channel, moved with splice; for private links.
    Tcp,
}

/// `agent.yml` as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentFile {
    /// Must be 3.
    pub version: u32,
    /// How to reach and authenticate to the edge.
    pub agent: AgentSection,
    /// Internal endpoints to bind.
    #[serde(default)]
    pub endpoints: Vec<EndpointSection>,
}

/// The `agent:` section.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentSection {
    /// The authtoken issued for this agent's service user.
    pub authtoken: Secret,
    /// `host:port` of the edge's agent listener.
    pub connect_url: String,
    /// PEM bundle of CAs that may sign the edge's certificate.
    pub connect_cas: Option<std::path::PathBuf>,
    /// Name to verify in the edge's certificate (default: host of `connect_url`).
    pub server_name: Option<String>,
    /// Data channel transport.
    #[serde(default)]
    pub transport: Transport,
    /// Idle data channels kept open at the edge.
    #[serde(default = "default_data_channels")]
    pub data_channels: usize,
    /// Interval between heartbeats.
    #[serde(
        default = "default_heartbeat_interval",
        deserialize_with = "duration::human"
    )]
    pub heartbeat_interval: Duration,
    /// Silence after which the connection to the edge is considered dead.
    #[serde(
        default = "default_heartbeat_tolerance",
        deserialize_with = "duration::human"
    )]
    pub heartbeat_tolerance: Duration,
    /// Worker threads (default: number of cores).
    pub workers: Option<usize>,
    /// Serve Prometheus metrics (`GET /metrics`) here; off when absent. Use a
    /// loopback address: the listener has no authentication.
    pub metrics_listen: Option<std::net::SocketAddr>,
    /// On SIGTERM, how long in-flight streams may take to finish. Default 30s.
    #[serde(
        default = "super::edge::default_drain_timeout",
        deserialize_with = "duration::human"
    )]
    pub drain_timeout: Duration,
}

/// One entry of `endpoints:`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EndpointSection {
    /// Optional label for logs.
    pub name: Option<String>,
    /// The internal URL to bind (`tcp://db.internal:5432`).
    pub url: sluice_policy::InternalUrl,
    /// Join a pool with other agents binding the same URL.
    #[serde(default)]
    pub pooling_enabled: bool,
    /// This member's share of new connections within a pool (1..=1000, default 100).
    pub weight: Option<u16>,
    /// Where connections go on the agent's network.
    pub upstream: UpstreamSection,
    /// Terminate the client's TLS here (and check its certificate when CAs are given).
    pub agent_tls_termination: Option<AgentTlsTerminationSection>,
}

/// `agent_tls_termination:` of an endpoint, as in ngrok's agent file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentTlsTerminationSection {
    /// PEM certificate chain presented to clients.
    pub server_certificate: std::path::PathBuf,
    /// PEM private key of that certificate.
    pub server_private_key: std::path::PathBuf,
    /// PEM CA bundles; when any is given, clients must present a certificate that
    /// chains to one of them.
    #[serde(default)]
    pub mutual_tls_certificate_authorities: Vec<std::path::PathBuf>,
}

/// `upstream.tls:`: the agent speaks TLS to the upstream.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamTlsSection {
    /// PEM CA bundle for the upstream's certificate (default: webpki roots).
    pub ca: Option<std::path::PathBuf>,
    /// Name to verify in the upstream's certificate (default: host of `upstream.url`).
    pub server_name: Option<String>,
}

/// `upstream:` of an endpoint.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamSection {
    /// `host:port` reachable from the agent.
    pub url: String,
    /// Send a PROXY protocol header (version 1 or 2) with the public client's address
    /// before any other byte.
    pub proxy_protocol: Option<u8>,
    /// Re-encrypt towards an upstream that speaks TLS.
    pub tls: Option<UpstreamTlsSection>,
    /// How the agent checks that the upstream accepts connections (default: a TCP
    /// connect every 5 s).
    pub health_check: Option<HealthCheckSection>,
}

/// `upstream.health_check:`: a TCP connect to the upstream on an interval; the result
/// flips after `*_threshold` checks in a row agree, and is reported to the edge.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HealthCheckSection {
    /// `false` turns checks off (the member then always reports healthy).
    #[serde(default = "yes")]
    pub enabled: bool,
    /// Time between checks.
    #[serde(
        default = "default_check_interval",
        deserialize_with = "duration::human"
    )]
    pub interval: Duration,
    /// How long one connect may take.
    #[serde(
        default = "default_check_timeout",
        deserialize_with = "duration::human"
    )]
    pub timeout: Duration,
    /// Successful checks in a row that make an unhealthy upstream healthy.
    #[serde(default = "default_threshold")]
    pub healthy_threshold: u32,
    /// Failed checks in a row that make a healthy upstream unhealthy.
    #[serde(default = "default_threshold")]
    pub unhealthy_threshold: u32,
}

fn yes() -> bool {
    true
}
fn default_check_interval() -> Duration {
    Duration::from_secs(5)
}
fn default_check_timeout() -> Duration {
    Duration::from_secs(2)
}
fn default_threshold() -> u32 {
    2
}

/// The upstream health check an endpoint runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HealthCheck {
    /// Time between checks.
    pub interval: Duration,
    /// Bound on one connect.
    pub timeout: Duration,
    /// Successes in a row to become healthy.
    pub healthy_threshold: u32,
    /// Failures in a row to become unhealthy.
    pub unhealthy_threshold: u32,
}

impl Default for HealthCheck {
    fn default() -> Self {
        Self {
            interval: default_check_interval(),
            timeout: default_check_timeout(),
            healthy_threshold: default_threshold(),
            unhealthy_threshold: default_threshold(),
        }
    }
}

/// Default pool weight of a member.
pub const DEFAULT_WEIGHT: u16 = 100;
/// Largest pool weight.
pub const MAX_WEIGHT: u16 = 1000;

/// Validates `upstream.health_check`; `None` when checks are off.
fn health_check(h: Option<&HealthCheckSection>) -> Result<Option<HealthCheck>, String> {
    let Some(h) = h else {
        return Ok(Some(HealthCheck::default()));
    };
    if !h.enabled {
        return Ok(None);
    }
    if h.interval < Duration::from_millis(50) {
        return Err(format!("interval: at least 50ms, found {:?}", h.interval));
    }
    if h.timeout.is_zero() || h.timeout > h.interval {
        return Err("timeout: must be non-zero and at most the interval".into());
    }
    if !(1..=100).contains(&h.healthy_threshold) || !(1..=100).contains(&h.unhealthy_threshold) {
        return Err("healthy_threshold and unhealthy_threshold: must be 1..=100".into());
    }
    Ok(Some(HealthCheck {
        interval: h.interval,
        timeout: h.timeout,
        healthy_threshold: h.healthy_threshold,
        unhealthy_threshold: h.unhealthy_threshold,
    }))
}

fn default_data_channels() -> usize {
    8
}
fn default_heartbeat_interval() -> Duration {
    Duration::from_secs(10)
}
fn default_heartbeat_tolerance() -> Duration {
    Duration::from_secs(15)
}

/// Upper bound on `data_channels`, so a typo cannot open thousands of sockets.
const MAX_DATA_CHANNELS: usize = 1024;

/// Everything the agent runs with, validated and loaded.
#[derive(Debug, Clone)]
pub struct AgentSettings {
    /// Worker threads for data channels.
    pub workers: usize,
    /// `host:port` of the edge.
    pub connect_addr: String,
    /// Name checked in the edge's certificate.
    pub server_name: ServerName<'static>,
    /// TLS client configuration for the control (and TLS data) channels.
    pub tls: Arc<ClientConfig>,
    /// The authtoken.
    pub authtoken: Secret,
    /// Data channel transport.
    pub transport: Transport,
    /// Idle data channels to keep at the edge.
    pub data_channels: usize,
    /// Heartbeat interval.
    pub heartbeat_interval: Duration,
    /// Heartbeat tolerance.
    pub heartbeat_tolerance: Duration,
    /// Endpoints to bind.
    pub endpoints: Vec<AgentEndpoint>,
    /// Graceful drain limit on SIGTERM.
    pub drain_timeout: Duration,
    /// Where the metrics listener listens, if anywhere.
    pub metrics_listen: Option<std::net::SocketAddr>,
    /// How plain-TCP hops move bytes (command line, not the file).
    pub pump: crate::io::Pump,
}

/// One internal endpoint and its upstream.
#[derive(Debug, Clone)]
pub struct AgentEndpoint {
    /// Label for logs.
    pub name: String,
    /// Canonical internal URL.
    pub url: String,
    /// Pool membership wanted.
    pub pooling: bool,
    /// Upstream `host:port`.
    pub upstream: String,
    /// PROXY protocol header towards the upstream, if any.
    pub proxy_protocol: Option<crate::proxy_protocol::Version>,
    /// TLS the agent terminates for this endpoint (`agent_tls_termination`), if any.
    pub tls_termination: Option<Arc<rustls::ServerConfig>>,
    /// TLS towards the upstream (`upstream.tls`), if any.
    pub upstream_tls: Option<UpstreamTls>,
    /// Pool weight (`weight`).
    pub weight: u16,
    /// Upstream health check (`upstream.health_check`); `None`: off.
    pub health_check: Option<HealthCheck>,
}

/// How the agent speaks TLS to an upstream.
#[derive(Debug, Clone)]
pub struct UpstreamTls {
    /// Trust store and protocol settings.
    pub config: Arc<ClientConfig>,
    /// Name verified in the upstream's certificate.
    pub server_name: ServerName<'static>,
}

impl AgentSettings {
    /// Reads, parses and validates an agent config file.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        Self::from_yaml(&read_file(path)?, path)
    }

    /// Parses and validates agent config text; `path` is used for messages and for
    /// resolving relative file names.
    pub fn from_yaml(text: &str, path: &Path) -> Result<Self, ConfigError> {
        let file: AgentFile = parse_yaml(text, path)?;
        Self::resolve(file, path)
    }

    fn resolve(file: AgentFile, path: &Path) -> Result<Self, ConfigError> {
        let err = |m: String| ConfigError::new(path, m);
        if file.version != 3 {
            return Err(err(format!("version: expected 3, found {}", file.version)));
        }
        let a = file.agent;
        if a.authtoken.expose().trim().is_empty() {
            return Err(err("agent.authtoken: must not be empty".into()));
        }
        let host = connect_host(&a.connect_url).ok_or_else(|| {
            err(format!(
                "agent.connect_url: expected host:port, found `{}`",
                a.connect_url
            ))
        })?;
        let name = a.server_name.clone().unwrap_or_else(|| host.to_string());
        let server_name = ServerName::try_from(name.clone()).map_err(|_| {
            err(format!(
                "agent.server_name: `{name}` is not a valid DNS name or IP"
            ))
        })?;
        if a.data_channels == 0 || a.data_channels > MAX_DATA_CHANNELS {
            return Err(err(format!(
                "agent.data_channels: must be 1..={MAX_DATA_CHANNELS}, found {}",
                a.data_channels
            )));
        }
        if a.heartbeat_interval.is_zero() || a.heartbeat_tolerance <= a.heartbeat_interval {
            return Err(err(
                "agent.heartbeat_tolerance: must be longer than a non-zero heartbeat_interval"
                    .into(),
            ));
        }
        let cas = match &a.connect_cas {
            Some(p) => Some(
                tls::load_certs(&relative_to(path, p))
                    .map_err(|e| err(format!("agent.connect_cas: {e}")))?,
            ),
            None => None,
        };
        let tls = tls::client_config(cas).map_err(|e| err(e.to_string()))?;
        let mut endpoints = Vec::with_capacity(file.endpoints.len());
        for (i, ep) in file.endpoints.into_iter().enumerate() {
            let url = ep.url.canonical();
            if endpoints.iter().any(|e: &AgentEndpoint| e.url == url) {
                return Err(err(format!("endpoints[{i}].url: `{url}` is listed twice")));
            }
            if connect_host(&ep.upstream.url).is_none() {
                return Err(err(format!(
                    "endpoints[{i}].upstream.url: expected host:port, found `{}`",
                    ep.upstream.url
                )));
            }
            let proxy_protocol = match ep.upstream.proxy_protocol {
                None => None,
                Some(1) => Some(crate::proxy_protocol::Version::V1),
                Some(2) => Some(crate::proxy_protocol::Version::V2),
                Some(other) => {
                    return Err(err(format!(
                        "endpoints[{i}].upstream.proxy_protocol: expected 1 or 2, found {other}"
                    )))
                }
            };
            let tls_termination = match &ep.agent_tls_termination {
                Some(t) => Some(
                    termination_config(t, path)
                        .map_err(|m| err(format!("endpoints[{i}].agent_tls_termination: {m}")))?,
                ),
                None => None,
            };
            let upstream_tls = match &ep.upstream.tls {
                Some(t) => Some(
                    upstream_tls(t, &ep.upstream.url, path)
                        .map_err(|m| err(format!("endpoints[{i}].upstream.tls: {m}")))?,
                ),
                None => None,
            };
            let weight = ep.weight.unwrap_or(DEFAULT_WEIGHT);
            if !(1..=MAX_WEIGHT).contains(&weight) {
                return Err(err(format!(
                    "endpoints[{i}].weight: must be 1..={MAX_WEIGHT}, found {weight}"
                )));
            }
            let health_check = health_check(ep.upstream.health_check.as_ref())
                .map_err(|m| err(format!("endpoints[{i}].upstream.health_check.{m}")))?;
            endpoints.push(AgentEndpoint {
                name: ep.name.unwrap_or_else(|| url.clone()),
                url,
                pooling: ep.pooling_enabled,
                upstream: ep.upstream.url,
                proxy_protocol,
                tls_termination,
                upstream_tls,
                weight,
                health_check,
            });
        }
        Ok(Self {
            workers: a
                .workers
                .unwrap_or_else(crate::runtime::default_workers)
                .max(1),
            connect_addr: a.connect_url,
            server_name,
            tls,
            authtoken: a.authtoken,
            transport: a.transport,
            data_channels: a.data_channels,
            heartbeat_interval: a.heartbeat_interval,
            heartbeat_tolerance: a.heartbeat_tolerance,
            endpoints,
            drain_timeout: a.drain_timeout,
            metrics_listen: a.metrics_listen,
            pump: crate::io::Pump::default(),
        })
    }
}

/// Loads `agent_tls_termination`: the server certificate and key, and a client
/// certificate verifier when CAs are listed.
fn termination_config(
    t: &AgentTlsTerminationSection,
    path: &Path,
) -> Result<Arc<rustls::ServerConfig>, String> {
    let verifier = if t.mutual_tls_certificate_authorities.is_empty() {
        None
    } else {
        let cas: Vec<_> = t
            .mutual_tls_certificate_authorities
            .iter()
            .map(|p| relative_to(path, p))
            .collect();
        let refs: Vec<&Path> = cas.iter().map(|p| p.as_path()).collect();
        let roots = tls::load_roots(&refs)
            .map_err(|e| format!("mutual_tls_certificate_authorities: {e}"))?;
        Some(tls::client_verifier(roots, refs[0]).map_err(|e| e.to_string())?)
    };
    tls::server_config_from_files(
        &relative_to(path, &t.server_certificate),
        &relative_to(path, &t.server_private_key),
        verifier,
    )
    .map_err(|e| e.to_string())
}

/// Loads `upstream.tls`: the CA (or webpki roots) and the name to verify.
fn upstream_tls(
    t: &UpstreamTlsSection,
    upstream: &str,
    path: &Path,
) -> Result<UpstreamTls, String> {
    let config = match &t.ca {
        Some(ca) => {
            let ca = relative_to(path, ca);
            let certs = tls::load_certs(&ca).map_err(|e| format!("ca: {e}"))?;
            tls::client_config_named(Some(certs), &ca).map_err(|e| format!("ca: {e}"))?
        }
        None => tls::client_config(None).map_err(|e| e.to_string())?,
    };
    let name = match &t.server_name {
        Some(n) => n.clone(),
        None => connect_host(upstream).unwrap_or_default().to_string(),
    };
    let server_name = ServerName::try_from(name.clone())
        .map_err(|_| format!("server_name: `{name}` is not a valid DNS name or IP"))?;
    Ok(UpstreamTls {
        config,
        server_name,
    })
}

/// The host part of `host:port` (brackets stripped for IPv6), if the port parses.
pub(crate) fn connect_host(addr: &str) -> Option<&str> {
    let (host, port) = addr.rsplit_once(':')?;
    port.parse::<u16>().ok()?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    (!host.is_empty()).then_some(host)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(endpoint_extra: &str, upstream_extra: &str) -> Result<AgentSettings, String> {
        let yaml = format!(
            "version: 3\nagent:\n  authtoken: tok\n  connect_url: edge.example.com:4443\n\
             endpoints:\n  - url: tcp://db.internal:5432\n{endpoint_extra}    \
             upstream: {{ url: \"10.0.0.5:5432\"{upstream_extra} }}\n"
        );
        AgentSettings::from_yaml(&yaml, Path::new("agent.yml")).map_err(|e| e.to_string())
    }

    #[test]
    fn health_checks_and_weight_have_defaults_and_bounds() {
        let ep = &load("", "").unwrap().endpoints[0];
        assert_eq!(ep.health_check, Some(HealthCheck::default()));
        assert_eq!(ep.weight, DEFAULT_WEIGHT);
        let ep = &load(
            "    weight: 7\n",
            ", health_check: { interval: 250ms, timeout: 100ms, unhealthy_threshold: 3 }",
        )
        .unwrap()
        .endpoints[0];
        assert_eq!(ep.weight, 7);
        assert_eq!(
            ep.health_check,
            Some(HealthCheck {
                interval: Duration::from_millis(250),
                timeout: Duration::from_millis(100),
                healthy_threshold: 2,
                unhealthy_threshold: 3,
            })
        );
        let off = load("", ", health_check: { enabled: false }").unwrap();
        assert_eq!(off.endpoints[0].health_check, None);
        let e = load("    weight: 0\n", "").unwrap_err();
        assert!(e.contains("endpoints[0].weight"), "{e}");
        let e = load("", ", health_check: { interval: 1s, timeout: 2s }").unwrap_err();
        assert!(
            e.contains("endpoints[0].upstream.health_check.timeout"),
            "{e}"
        );
        let e = load("", ", health_check: { healthy_threshold: 0 }").unwrap_err();
        assert!(e.contains("threshold"), "{e}");
    }
}
