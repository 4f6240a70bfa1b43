//! The admin API: JSON over HTTP/1.1 (HTTPS with `admin.tls`) on `admin.listen`
//! (loopback by default; beyond loopback TLS is required), bearer API keys checked
//! against `admin.api_keys` hashes, served by hyper and axum on a tokio runtime of its
//! own thread — never on a data-path worker. Handlers call the [`ControlPlane`]; every
//! change is committed before a 2xx answer.
//!
//! Transport limits (per-phase timeouts, connection cap) are the HTTP thread's
//! ([`crate::http_thread`]).
//!
//! Routes: `/healthz`, `/readyz` (no key), and under `/v1`: `endpoints`,
//! `reserved_addrs`, `service_users`, `service_users/{id}/authtokens`, `sessions`,
//! `events` (docs/admin-api.md).

mod auth;
mod error;
mod metrics;
mod routes;

use std::{net::SocketAddr, sync::Arc};

use crate::{
    config::admin::AdminSettings,
    control_plane::ControlPlane,
    http_thread::{ConnStats, ServeOptions},
};

/// Largest request body accepted (a traffic policy with a few thousand CIDRs fits).
pub const MAX_BODY: usize = 4 * 1024 * 1024;

/// Binds the admin listener now (a busy port is an error here) and serves it on a
/// thread of its own. Returns the bound address.
pub fn start(settings: AdminSettings, plane: Arc<ControlPlane>) -> std::io::Result<SocketAddr> {
    let conns = Arc::new(ConnStats::default());
    let app = routes::router(auth::ApiKeys::new(settings.api_keys), plane, conns.clone());
    let options = ServeOptions::new()
        .limits(settings.limits)
        .max_connections(settings.max_connections)
        .tls(settings.tls);
    crate::http_thread::serve(
        settings.listen,
        "sluice-admin",
        "admin",
        app,
        options,
        conns,
    )
}
