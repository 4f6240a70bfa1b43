//! The admin API: JSON over HTTP/1.1 (HTTPS with `admin.tls`) on `admin.listen`
//! (loopback by default; beyond loopback TLS is required), bearer API keys checked
//! against `admin.api_keys` hashes, served by hyper and axum on a tokio runtime of its
//! own thread — never on a data-path worker. Handlers call the [`ControlPlane`]; every
//! change is committed before a 2xx answer.
//!
//! Transport limits (per-phase timeouts, connection cap) are the HTTP thread's
//! ([`crate::http_thread`]); clients sending wrong keys are held off ([`backoff`],
//! applied in `auth`).
//!
//! Routes: `/healthz`, `/readyz` and the console's page, `/console` (no key), and
//! under `/v1`: `endpoints`, `reserved_addrs`, `service_users`,
//! `service_users/{id}/authtokens`, `sessions`, `events`, `console/*`
//! (docs/admin-api.md, docs/console.md).

mod app_state;
mod auth;
pub mod backoff;
pub mod console;
mod error;
mod freshness;
mod metrics;
mod routes;

use std::{net::SocketAddr, sync::Arc, time::Duration};

pub use backoff::BackoffSettings;

use crate::{
    config::admin::AdminSettings,
    control_plane::ControlPlane,
    http_thread::{ConnStats, ServeOptions},
};

/// Largest request body accepted (a traffic policy with a few thousand CIDRs fits).
pub const MAX_BODY: usize = 4 * 1024 * 1024;

/// How often due `admin.auth_failed` summaries are stored and quiet clients forgotten.
const SWEEP_EVERY: Duration = Duration::from_secs(1);

/// Binds the admin listener now (a busy port is an error here) and serves it on a
/// thread of its own. Returns the bound address.
pub fn start(settings: AdminSettings, plane: Arc<ControlPlane>) -> std::io::Result<SocketAddr> {
    let conns = Arc::new(ConnStats::default());
    let guard = Arc::new(auth::Guard::new(
        auth::ApiKeys::new(settings.api_keys),
        settings.backoff,
    ));
    let history = console::SharedHistory::default();
    let app = routes::router(guard.clone(), plane.clone(), conns.clone(), history.clone());
    let options = ServeOptions::new()
        .limits(settings.limits)
        .max_connections(settings.max_connections)
        .tls(settings.tls);
    let sweeper = async move {
        let mut tick = tokio::time::interval(SWEEP_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut sampled: Option<std::time::Instant> = None;
        loop {
            tick.tick().await;
            guard.sweep(&plane);
            if sampled.is_none_or(|at| at.elapsed() >= console::history::SAMPLE_EVERY) {
                sampled = Some(std::time::Instant::now());
                let mut history = history.lock().unwrap_or_else(|p| p.into_inner());
                history.sample(plane.edge());
            }
        }
    };
    crate::http_thread::serve_with(
        settings.listen,
        "sluice-admin",
        "admin",
        app,
        options,
        conns,
        sweeper,
    )
}
