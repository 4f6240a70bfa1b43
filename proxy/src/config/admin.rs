//! The edge's `admin:` section: where the admin API listens, its keys, its transport
//! (TLS, per-phase timeouts, connection cap) and the back-off on failed keys.
//!
//! ```yaml
//! admin:
//!   listen: 127.0.0.1:9440
//!   api_keys: ["sha256:…"]
//!   tls: { cert: admin.crt, key: admin.key }   # required beyond loopback
//!   header_timeout: 10s
//!   request_timeout: 30s
//!   idle_timeout: 60s
//!   max_connections: 256
//!   auth_backoff: { failures: 5, window: 60s, initial: 1s, max: 60s }
//! ```

use std::{net::SocketAddr, path::Path, sync::Arc, time::Duration};

use rustls::ServerConfig;
use serde::Deserialize;

use super::{edge::TlsFiles, problems::Problems, validate::cert_and_key};
use crate::{
    admin::BackoffSettings,
    http_thread::{options as http, phase::PhaseLimits},
    tls,
    token::TokenHash,
};

/// `admin:` as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminSection {
    /// Where the admin API listens. Default 127.0.0.1:9440 (loopback only).
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    /// `sha256:` hashes of the bearer keys the API accepts (`sluice token new` makes
    /// one). At least one.
    #[serde(default)]
    pub api_keys: Vec<TokenHash>,
    /// Serve HTTPS with this certificate and key. Required when `listen` is not a
    /// loopback address (unless `allow_plaintext_remote`).
    pub tls: Option<TlsFiles>,
    /// Accept a non-loopback `listen` without `tls` (keys then cross the network in
    /// clear: only behind a TLS-terminating proxy on a trusted link). Warned about.
    #[serde(default)]
    pub allow_plaintext_remote: bool,
    /// A connection must finish its TLS handshake and send complete request headers
    /// within this, from accept or from the first byte of a later request. Default 10s.
    #[serde(
        default = "header_timeout",
        deserialize_with = "super::duration::human"
    )]
    pub header_timeout: Duration,
    /// From complete headers to the answer handed over: the body must arrive within
    /// it. Default 30s.
    #[serde(
        default = "request_timeout",
        deserialize_with = "super::duration::human"
    )]
    pub request_timeout: Duration,
    /// A keep-alive connection idle this long is closed. Default 60s.
    #[serde(default = "idle_timeout", deserialize_with = "super::duration::human")]
    pub idle_timeout: Duration,
    /// Most admin connections at once; more are closed at accept. Default 256.
    #[serde(default = "max_connections")]
    pub max_connections: usize,
    /// Hold-off of clients sending wrong keys.
    #[serde(default)]
    pub auth_backoff: AuthBackoffSection,
}

/// `admin.auth_backoff:`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthBackoffSection {
    /// Wrong keys from one client within `window` before it is held off. Default 5.
    #[serde(default = "backoff_failures")]
    pub failures: u32,
    /// How long failures are remembered; also the interval of the per-client audit
    /// summary. Default 60s.
    #[serde(
        default = "backoff_window",
        deserialize_with = "super::duration::human"
    )]
    pub window: Duration,
    /// First hold-off; doubles with each further wrong key. Default 1s.
    #[serde(
        default = "backoff_initial",
        deserialize_with = "super::duration::human"
    )]
    pub initial: Duration,
    /// Longest hold-off. Default 60s.
    #[serde(default = "backoff_max", deserialize_with = "super::duration::human")]
    pub max: Duration,
}

impl Default for AuthBackoffSection {
    fn default() -> Self {
        let d = BackoffSettings::default();
        Self {
            failures: d.failures,
            window: d.window,
            initial: d.initial,
            max: d.max,
        }
    }
}

pub(crate) fn default_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 9440))
}
fn header_timeout() -> Duration {
    http::DEFAULT_HEADER_TIMEOUT
}
fn request_timeout() -> Duration {
    http::DEFAULT_REQUEST_TIMEOUT
}
fn idle_timeout() -> Duration {
    http::DEFAULT_IDLE_TIMEOUT
}
fn max_connections() -> usize {
    http::DEFAULT_MAX_CONNECTIONS
}
fn backoff_failures() -> u32 {
    BackoffSettings::default().failures
}
fn backoff_window() -> Duration {
    BackoffSettings::default().window
}
fn backoff_initial() -> Duration {
    BackoffSettings::default().initial
}
fn backoff_max() -> Duration {
    BackoffSettings::default().max
}

/// The admin API's settings, validated.
#[derive(Debug, Clone)]
pub struct AdminSettings {
    /// Listen address.
    pub listen: SocketAddr,
    /// Accepted bearer key hashes.
    pub api_keys: Vec<TokenHash>,
    /// HTTPS, when configured.
    pub tls: Option<Arc<ServerConfig>>,
    /// Per-phase connection limits.
    pub limits: PhaseLimits,
    /// Connection cap.
    pub max_connections: usize,
    /// Hold-off on wrong keys.
    pub backoff: BackoffSettings,
}

/// Why a plain-HTTP admin listener is refused: `Some(message)` when `listen` is not
/// loopback, there is no TLS and no explicit `allow_plaintext_remote`.
fn plaintext_problem(listen: SocketAddr, tls: bool, allow: bool) -> Option<String> {
    (!listen.ip().is_loopback() && !tls && !allow).then(|| {
        format!(
            "`{listen}` is not a loopback address and admin.tls is not set: the API keys \
             would cross the network in clear. Add `admin.tls: {{ cert: …, key: … }}`, \
             listen on 127.0.0.1, or (behind a TLS-terminating proxy only) set \
             `admin.allow_plaintext_remote: true`"
        )
    })
}

/// The warning for an accepted plain-HTTP, non-loopback listener.
fn plaintext_warning(listen: SocketAddr) -> String {
    format!(
        "admin.listen: `{listen}` serves the admin API in plain HTTP beyond loopback \
         (allow_plaintext_remote): API keys cross the network in clear"
    )
}

/// Values serde cannot check: each `(key, message)`.
fn value_problems(a: &AdminSection) -> Vec<(&'static str, String)> {
    let mut out = Vec::new();
    if a.api_keys.is_empty() {
        out.push((
            "admin.api_keys",
            "at least one `sha256:` key hash is required (make one with `sluice token new`)"
                .to_string(),
        ));
    }
    if let Some(m) = plaintext_problem(a.listen, a.tls.is_some(), a.allow_plaintext_remote) {
        out.push(("admin.listen", m));
    }
    for (key, d) in [
        ("admin.header_timeout", a.header_timeout),
        ("admin.request_timeout", a.request_timeout),
        ("admin.idle_timeout", a.idle_timeout),
        ("admin.auth_backoff.window", a.auth_backoff.window),
        ("admin.auth_backoff.initial", a.auth_backoff.initial),
    ] {
        if d.is_zero() {
            out.push((key, "must be more than 0s".to_string()));
        }
    }
    if a.max_connections == 0 {
        out.push(("admin.max_connections", "must be at least 1".to_string()));
    }
    if a.auth_backoff.failures == 0 {
        out.push((
            "admin.auth_backoff.failures",
            "must be at least 1".to_string(),
        ));
    }
    if a.auth_backoff.max < a.auth_backoff.initial {
        out.push((
            "admin.auth_backoff.max",
            "must be at least admin.auth_backoff.initial".to_string(),
        ));
    }
    out
}

/// Checks `admin:` (every problem at its key, into `p`) and loads its TLS files
/// (relative to the config file `file`); `None` when it is invalid.
pub(crate) fn resolve(
    a: AdminSection,
    file: &Path,
    p: &mut Problems,
    warnings: &mut Vec<String>,
) -> Option<AdminSettings> {
    let values = value_problems(&a);
    let values_ok = values.is_empty();
    for (key, message) in values {
        p.at(key, message);
    }
    let tls = match &a.tls {
        None => Some(None),
        Some(files) => cert_and_key(file, "admin.tls", files, p)
            .and_then(|ck| {
                tls::server_config_with(ck.certs, ck.key, &ck.cert_path, &ck.key_path, None)
                    .map_err(|e| p.at("admin.tls", e))
                    .ok()
            })
            .map(|config| {
                let mut config = (*config).clone();
                config.alpn_protocols = vec![b"http/1.1".to_vec()];
                Some(Arc::new(config))
            }),
    };
    // Without `allow_plaintext_remote` this is a problem (above), not a warning.
    if a.tls.is_none() && a.allow_plaintext_remote && !a.listen.ip().is_loopback() {
        warnings.push(plaintext_warning(a.listen));
        if values_ok {
            tracing::warn!("{}", plaintext_warning(a.listen));
        }
    }
    if !values_ok {
        return None;
    }
    Some(AdminSettings {
        listen: a.listen,
        api_keys: a.api_keys,
        tls: tls?,
        limits: PhaseLimits {
            header: a.header_timeout,
            request: a.request_timeout,
            idle: a.idle_timeout,
        },
        max_connections: a.max_connections,
        backoff: BackoffSettings {
            failures: a.auth_backoff.failures,
            window: a.auth_backoff.window,
            initial: a.auth_backoff.initial,
            max: a.auth_backoff.max,
        },
    })
}
