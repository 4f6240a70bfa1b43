//! The agent's configuration file, in the shape of ngrok's v3 agent file.
//!
//! ```yaml
//! version: 3
//! agent:
//!   authtoken: "slt_…"
//!   connect_url: edge.example.com:4443   # or a list: [edge-a.example.com:4443, …]
//!   edge_connections: 2                  # sessions to that many distinct edges (default 2)
//!   connect_cas: /etc/sluice/ca.pem      # optional, default: webpki roots
//!   server_name: edge.example.com        # optional, default: host of each connect_url
//!   transport: tls                       # tls | tcp
//!   data_channels: 8
//!   heartbeat_interval: 10s
//!   heartbeat_tolerance: 15s
//!   connect_timeout: 10s                 # session set-up (TCP, TLS, welcome)
//!   log: stderr                          # stdout | stderr | false | a file path
//!   log_level: info                      # trace | debug | info | warn | error | crit
//!   log_format: json                     # json | logfmt | term
//!   proxy_url: http://proxy.corp:3128    # or socks5://user:pass@host:port
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

use std::{sync::Arc, time::Duration};

use rustls::ClientConfig;
use rustls_pki_types::ServerName;
use serde::Deserialize;

use super::duration;
use crate::token::Secret;

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
    /// `host:port` of the edge's agent listener, or a list of them (a fleet's edges; a
    /// name with several addresses counts as several edges).
    #[serde(deserialize_with = "one_or_many")]
    pub connect_url: Vec<String>,
    /// Sessions to keep, each with a distinct edge (capped by the edges known).
    #[serde(default = "default_edge_connections")]
    pub edge_connections: usize,
    /// PEM bundle of CAs that may sign the edge's certificate; `trusted` (the public
    /// roots sluice carries, as when unset) or `host` (the OS bundle), as ngrok says.
    /// `root_cas` is ngrok v2's name for it.
    #[serde(alias = "root_cas")]
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
    /// How long reaching an edge and setting a session up (TCP, TLS, welcome) may take
    /// before the next attempt (ngrok's `connect_timeout`). Default 10s.
    #[serde(
        default = "default_connect_timeout",
        deserialize_with = "duration::human"
    )]
    pub connect_timeout: Duration,
    /// Where the agent logs (ngrok's `log`): `stderr` (default), `stdout`, `false`
    /// (nowhere) or a file, appended to.
    #[serde(default)]
    pub log: Option<LogSetting>,
    /// `trace`, `debug`, `info`, `warn`, `error` or `crit` (ngrok's names; `crit` is
    /// `error`). `--log-level` and `SLUICE_LOG` take precedence.
    pub log_level: Option<LogLevel>,
    /// `json`, `logfmt` or `term` (ngrok's names). A `--log-format` other than `auto`
    /// takes precedence.
    pub log_format: Option<FileLogFormat>,
    /// Reach the edge through this HTTP (`CONNECT`) or SOCKS5 proxy:
    /// `http://[user:pass@]host:port` or `socks5://[user:pass@]host:port`.
    pub proxy_url: Option<String>,
    /// Free text about this agent (often JSON), shown by the edge's `/v1/sessions`
    /// and in its session events; at most [`MAX_LABEL_BYTES`].
    pub metadata: Option<String>,
}

/// Longest `metadata` or `description` (what the protocol carries in one field).
pub const MAX_LABEL_BYTES: usize = 4096;

/// `log:` of the agent file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogSetting(pub crate::logging::LogTarget);

impl<'de> Deserialize<'de> for LogSetting {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use crate::logging::LogTarget;
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = LogSetting;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("stdout, stderr, false or a file path")
            }
            fn visit_bool<E: serde::de::Error>(self, v: bool) -> Result<LogSetting, E> {
                if v {
                    Err(E::custom(
                        "`log: true`: give stdout, stderr, false (no log) or a file path",
                    ))
                } else {
                    Ok(LogSetting(LogTarget::Off))
                }
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<LogSetting, E> {
                Ok(LogSetting(match v {
                    "stdout" => LogTarget::Stdout,
                    "stderr" => LogTarget::Stderr,
                    "false" => LogTarget::Off,
                    "" => {
                        return Err(E::custom(
                            "`log:` is empty: give stdout, stderr, false or a file path",
                        ))
                    }
                    path => LogTarget::File(path.into()),
                }))
            }
        }
        d.deserialize_any(V)
    }
}

/// `log_level:` of the agent file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogLevel {
    /// Everything.
    Trace,
    /// Per-connection detail.
    Debug,
    /// The default.
    Info,
    /// Problems the agent works around.
    Warn,
    /// Failures.
    Error,
    /// ngrok's name for the most severe: `error` here.
    Crit,
}

impl LogLevel {
    /// The `tracing` filter it stands for.
    pub fn filter(self) -> &'static str {
        match self {
            LogLevel::Trace => "trace",
            LogLevel::Debug => "debug",
            LogLevel::Info => "info",
            LogLevel::Warn => "warn",
            LogLevel::Error | LogLevel::Crit => "error",
        }
    }
}

/// `log_format:` of the agent file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FileLogFormat {
    /// One JSON object a line.
    Json,
    /// `key=value` lines.
    Logfmt,
    /// Human-readable lines (colours on a terminal).
    Term,
}

impl FileLogFormat {
    /// The format it stands for.
    pub fn format(self) -> crate::logging::LogFormat {
        match self {
            FileLogFormat::Json => crate::logging::LogFormat::Json,
            FileLogFormat::Logfmt => crate::logging::LogFormat::Logfmt,
            FileLogFormat::Term => crate::logging::LogFormat::Text,
        }
    }
}

/// How the agent logs, from its file (the command line may override each part).
#[derive(Debug, Clone, Default)]
pub struct AgentLogging {
    /// `log:`.
    pub target: crate::logging::LogTarget,
    /// `log_level:`.
    pub level: Option<LogLevel>,
    /// `log_format:`.
    pub format: Option<FileLogFormat>,
}

fn default_connect_timeout() -> Duration {
    Duration::from_secs(10)
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
    /// Free text for people, shown by the edge's `/v1/sessions`.
    pub description: Option<String>,
    /// Free text for tools (often JSON), shown by the edge's `/v1/sessions`.
    pub metadata: Option<String>,
    /// ngrok's `bindings`: `[internal]` (what every agent endpoint is here); `public`
    /// is refused (public endpoints are the edge's `endpoints:`).
    pub bindings: Option<Vec<String>>,
    /// Rules the edge enforces on every connection to this endpoint (`on_tcp_connect`:
    /// restrict, close, log, set variables).
    pub traffic_policy: Option<sluice_policy::EndpointPolicy>,
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
#[derive(Debug, Default, Deserialize)]
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
    /// The HTTP version the upstream of an `http://` endpoint speaks: `http1` (the
    /// default) or `http2`.
    pub protocol: Option<String>,
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

fn default_edge_connections() -> usize {
    2
}

/// Most `edge_connections`.
pub const MAX_EDGE_CONNECTIONS: usize = 16;

/// `connect_url`: one `host:port`, or a list of them.
fn one_or_many<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    struct Urls;
    impl<'de> serde::de::Visitor<'de> for Urls {
        type Value = Vec<String>;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("host:port, or a list of host:port")
        }
        fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Self::Value, E> {
            Ok(vec![v.to_string()])
        }
        fn visit_seq<A: serde::de::SeqAccess<'de>>(
            self,
            mut seq: A,
        ) -> Result<Self::Value, A::Error> {
            let mut out = Vec::new();
            while let Some(url) = seq.next_element::<String>()? {
                out.push(url);
            }
            Ok(out)
        }
    }
    d.deserialize_any(Urls)
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
pub const MAX_DATA_CHANNELS: usize = 1024;

/// Everything the agent runs with, validated and loaded.
#[derive(Debug, Clone)]
pub struct AgentSettings {
    /// What the file's validation warned about (valid, but probably not meant, or
    /// ignored), for the agent to log once its logging is up.
    pub warnings: Vec<String>,
    /// Worker threads for data channels.
    pub workers: usize,
    /// The edges to hold sessions with, in the order given.
    pub edges: Vec<EdgeTarget>,
    /// Sessions to keep, each with a distinct edge.
    pub edge_connections: usize,
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
    /// How long setting a session up with an edge may take.
    pub connect_timeout: Duration,
    /// Where and how the agent logs.
    pub logging: AgentLogging,
    /// `agent.metadata`, sent in the Hello.
    pub metadata: String,
    /// The egress proxy to the edges, if any.
    pub proxy: Option<Arc<crate::agent::egress::EgressProxy>>,
}

/// One entry of `connect_url`.
#[derive(Debug, Clone)]
pub struct EdgeTarget {
    /// `host:port` (a name may resolve to several edges).
    pub addr: String,
    /// Name checked in the edge's certificate (`server_name`, or the host of `addr`).
    pub server_name: ServerName<'static>,
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
    /// `description` and `metadata`, sent with the bind.
    pub labels: crate::wire::Labels,
    /// `traffic_policy` as JSON, sent with the bind (empty: none).
    pub traffic_policy: String,
    /// The HTTP version the upstream speaks (`upstream.protocol`), sent with the bind.
    pub upstream_protocol: crate::wire::UpstreamProtocol,
}

impl AgentEndpoint {
    /// What its Bind tells the edge about the upstream: an `http://`/`https://`
    /// endpoint whose HTTP/1.1 upstream needs nothing per client connection (no PROXY
    /// header, no client TLS the agent ends) is [`UpstreamProtocol::Http1Multiplexed`]:
    /// the edge's connections to it share one stream per edge worker (io/mux.rs).
    /// Otherwise the upstream's own protocol.
    ///
    /// [`UpstreamProtocol::Http1Multiplexed`]: crate::wire::UpstreamProtocol::Http1Multiplexed
    pub fn bind_protocol(&self) -> crate::wire::UpstreamProtocol {
        use crate::wire::UpstreamProtocol;
        let http = self.url.starts_with("http://") || self.url.starts_with("https://");
        match self.upstream_protocol {
            UpstreamProtocol::Http1
                if http && self.proxy_protocol.is_none() && self.tls_termination.is_none() =>
            {
                UpstreamProtocol::Http1Multiplexed
            }
            protocol => protocol,
        }
    }
}

/// How the agent speaks TLS to an upstream.
#[derive(Debug, Clone)]
pub struct UpstreamTls {
    /// Trust store and protocol settings.
    pub config: Arc<ClientConfig>,
    /// Name verified in the upstream's certificate.
    pub server_name: ServerName<'static>,
}

/// The schemes an `upstream.url` may have, with the port each implies and whether the
/// agent speaks TLS to the upstream (`upstream.tls` then only refines it).
const UPSTREAM_SCHEMES: [(&str, Option<u16>, bool); 4] = [
    ("tcp", None, false),
    ("tls", Some(443), true),
    ("http", Some(80), false),
    ("https", Some(443), true),
];

/// The address an `upstream.url` is dialed at: `host:port` as written, a bare port as
/// `localhost:PORT` (as ngrok reads it), or `scheme://host[:port]` as `host:port`, the
/// scheme picking the default port (`tcp` has none; `tls` and `https` 443, `http` 80;
/// the edge speaks HTTP over the stream, the agent dials TCP, then TLS for `tls` and
/// `https`: [`upstream_speaks_tls`]). `None` for anything else.
pub(crate) fn upstream_dial_addr(url: &str) -> Option<String> {
    if !url.is_empty() && url.bytes().all(|b| b.is_ascii_digit()) {
        // A bare port, as ngrok reads it: that port on this host.
        return url
            .parse::<u16>()
            .ok()
            .filter(|p| *p > 0)
            .map(|p| format!("localhost:{p}"));
    }
    let addr = match url.split_once("://") {
        Some((scheme, rest)) => {
            let (_, default_port, _) = UPSTREAM_SCHEMES
                .iter()
                .find(|(s, _, _)| s.eq_ignore_ascii_case(scheme))?;
            let rest = rest.strip_suffix('/').unwrap_or(rest);
            if connect_host(rest).is_some() {
                rest.to_owned()
            } else if rest.contains(':') && !rest.starts_with('[') {
                return None;
            } else {
                format!("{rest}:{}", (*default_port)?)
            }
        }
        None => url.to_owned(),
    };
    connect_host(&addr).is_some().then_some(addr)
}

/// Whether an `upstream.url`'s scheme says the upstream speaks TLS (`tls://`,
/// `https://`).
pub(crate) fn upstream_speaks_tls(url: &str) -> bool {
    url.split_once("://").is_some_and(|(scheme, _)| {
        UPSTREAM_SCHEMES
            .iter()
            .any(|(s, _, tls)| *tls && s.eq_ignore_ascii_case(scheme))
    })
}

/// The host part of `host:port` (brackets stripped for IPv6), if the port parses.
pub(crate) fn connect_host(addr: &str) -> Option<&str> {
    let (host, port) = addr.rsplit_once(':')?;
    port.parse::<u16>().ok()?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    (!host.is_empty() && !host.contains('/')).then_some(host)
}

#[cfg(test)]
mod tests {
    use std::path::Path;

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
    fn connect_cas_takes_ngroks_words_and_root_cas_is_its_alias() {
        let with = |line: &str| {
            let yaml = format!(
                "version: 3\nagent:\n  authtoken: tok\n  connect_url: edge.example.com:4443\n  {line}\n\
                 endpoints:\n  - url: tcp://db.internal:5432\n    upstream: {{ url: \"5432\" }}\n"
            );
            AgentSettings::from_yaml(&yaml, Path::new("/nonexistent/agent.yml"))
                .map_err(|e| e.to_string())
        };
        let trusted = with("connect_cas: trusted").unwrap();
        assert_eq!(
            trusted.endpoints[0].upstream, "localhost:5432",
            "a bare port"
        );
        let os_bundle = std::path::Path::new("/etc/ssl/certs/ca-certificates.crt");
        match with("connect_cas: host") {
            Ok(_) => {
                assert!(os_bundle.is_file() || std::path::Path::new("/etc/ssl/cert.pem").is_file())
            }
            Err(e) => assert!(e.contains("no CA bundle of the operating system"), "{e}"),
        }
        // ngrok v2's name reads as connect_cas: its file is what is looked for.
        let e = with("root_cas: missing-ca.pem").unwrap_err();
        assert!(
            e.contains("agent.connect_cas") && e.contains("missing-ca.pem"),
            "{e}"
        );
    }

    #[test]
    fn an_http_upstream_is_dialed_at_its_host_and_port() {
        for (url, addr) in [
            ("http://localhost:8080", Some("localhost:8080")),
            ("http://localhost:8080/", Some("localhost:8080")),
            ("http://api.lan", Some("api.lan:80")),
            ("http://[::1]", Some("[::1]:80")),
            ("10.0.0.5:5432", Some("10.0.0.5:5432")),
            ("http://api.lan:http", None),
            ("5432", Some("localhost:5432")),
            ("0", None),
            ("70000", None),
            ("http://api.lan/v1", None),
            ("https://api.lan", Some("api.lan:443")),
            ("https://api.lan:8443/", Some("api.lan:8443")),
            ("tls://db.lan", Some("db.lan:443")),
            ("tcp://10.0.0.5:5432", Some("10.0.0.5:5432")),
            ("tcp://10.0.0.5", None),
            ("udp://10.0.0.5:53", None),
        ] {
            assert_eq!(upstream_dial_addr(url).as_deref(), addr, "{url}");
        }
        assert!(upstream_speaks_tls("https://api.lan") && upstream_speaks_tls("TLS://db.lan:5432"));
        assert!(!upstream_speaks_tls("http://api.lan") && !upstream_speaks_tls("tcp://db:1"));
        assert!(!upstream_speaks_tls("localhost:443"));
    }

    #[test]
    fn the_upstream_urls_scheme_picks_the_protocol() {
        let yaml = |url: &str, extra: &str| {
            format!(
                "version: 3\nagent:\n  authtoken: tok\n  connect_url: edge.example.com:4443\n\
                 endpoints:\n  - url: tcp://db.internal:5432\n    upstream: {{ url: \"{url}\"{extra} }}\n"
            )
        };
        let load = |url: &str, extra: &str| {
            AgentSettings::from_yaml(&yaml(url, extra), Path::new("agent.yml"))
                .map(|s| s.endpoints.into_iter().next().unwrap())
        };
        let tls = load("https://db.lan:8443", "").unwrap();
        assert_eq!(tls.upstream, "db.lan:8443");
        let verified = tls
            .upstream_tls
            .expect("https:// speaks TLS to the upstream");
        assert_eq!(verified.server_name.to_str(), "db.lan");
        let named = load("tls://10.0.0.5:5432", ", tls: { server_name: db.lan }").unwrap();
        assert_eq!(named.upstream, "10.0.0.5:5432");
        assert_eq!(named.upstream_tls.unwrap().server_name.to_str(), "db.lan");
        let plain = load("tcp://10.0.0.5:5432", "").unwrap();
        assert_eq!(plain.upstream, "10.0.0.5:5432");
        assert!(plain.upstream_tls.is_none());
        for bad in ["udp://10.0.0.5:53", "tcp://10.0.0.5", "https://api.lan/v1"] {
            let err = load(bad, "").unwrap_err().to_string();
            assert!(
                err.contains("upstream.url") && err.contains(bad),
                "{bad}: {err}"
            );
        }
    }

    fn with_connect(connect: &str) -> Result<AgentSettings, String> {
        let yaml = format!(
            "version: 3\nagent:\n  authtoken: tok\n{connect}\nendpoints:\n  - url: tcp://db.internal:5432\n    \
             upstream: {{ url: \"10.0.0.5:5432\" }}\n"
        );
        AgentSettings::from_yaml(&yaml, Path::new("agent.yml")).map_err(|e| e.to_string())
    }

    #[test]
    fn connect_url_names_one_edge_or_a_list_each_checked_by_its_own_name() {
        let one = with_connect("  connect_url: edge.example.com:4443").unwrap();
        assert_eq!(one.edges.len(), 1);
        assert_eq!(one.edges[0].server_name.to_str(), "edge.example.com");
        assert_eq!(one.edge_connections, 2);
        let fleet = with_connect(
            "  connect_url: [edge-a.example.com:4443, \"10.0.0.2:4443\"]\n  edge_connections: 3",
        )
        .unwrap();
        let names: Vec<_> = fleet.edges.iter().map(|e| e.server_name.to_str()).collect();
        assert_eq!(names, ["edge-a.example.com", "10.0.0.2"]);
        assert_eq!(fleet.edge_connections, 3);
        let named = with_connect(
            "  connect_url: [\"10.0.0.1:4443\", \"10.0.0.2:4443\"]\n  server_name: edge.example.com",
        )
        .unwrap();
        assert!(named
            .edges
            .iter()
            .all(|e| e.server_name.to_str() == "edge.example.com"));
        for (connect, at) in [
            ("  connect_url: []", "agent.connect_url"),
            (
                "  connect_url: [a.example.com:1, nope]",
                "agent.connect_url[1]",
            ),
            (
                "  connect_url: [a.example.com:1, a.example.com:1]",
                "listed twice",
            ),
            (
                "  connect_url: a.example.com:1\n  edge_connections: 0",
                "agent.edge_connections",
            ),
            ("  connect_url: { host: a }", "agent.connect_url"),
        ] {
            let e = with_connect(connect).unwrap_err();
            assert!(e.contains(at), "{connect}: {e}");
        }
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
