//! The admin API: JSON over HTTP/1.1 on `admin.listen` (loopback by default), bearer
//! API keys checked against `admin.api_keys` hashes, served by axum on a tokio runtime
//! of its own thread — never on a data-path worker. Handlers call the
//! [`ControlPlane`]; every change is committed before a 2xx answer.
//!
//! Routes: `/healthz`, `/readyz` (no key), and under `/v1`: `endpoints`,
//! `reserved_addrs`, `service_users`, `service_users/{id}/authtokens`, `sessions`,
//! `events` (docs/admin-api.md).

mod auth;
mod error;
mod routes;

use std::{net::SocketAddr, sync::Arc};

use crate::{config::edge::AdminSettings, control_plane::ControlPlane};

/// Largest request body accepted (a traffic policy with a few thousand CIDRs fits).
pub const MAX_BODY: usize = 4 * 1024 * 1024;

/// Binds the admin listener now (a busy port is an error here) and serves it on a
/// thread of its own. Returns the bound address.
pub fn start(settings: AdminSettings, plane: Arc<ControlPlane>) -> std::io::Result<SocketAddr> {
    let listener = std::net::TcpListener::bind(settings.listen)?;
    listener.set_nonblocking(true)?;
    let addr = listener.local_addr()?;
    let app = routes::router(auth::ApiKeys::new(settings.api_keys), plane);
    std::thread::Builder::new()
        .name("sluice-admin".into())
        .spawn(move || {
            let runtime = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(r) => r,
                Err(e) => {
                    tracing::error!(error = %e, "admin API runtime failed to start");
                    return;
                }
            };
            runtime.block_on(async move {
                match tokio::net::TcpListener::from_std(listener) {
                    Ok(l) => {
                        if let Err(e) = axum::serve(l, app).await {
                            tracing::error!(error = %e, "admin API stopped");
                        }
                    }
                    Err(e) => tracing::error!(error = %e, "admin listener unusable"),
                }
            });
        })?;
    tracing::info!(kind = "admin", %addr, "listening");
    Ok(addr)
}
