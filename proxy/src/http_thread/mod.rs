//! HTTP servers off the data path (the edge's admin API, the agent's metrics): the
//! listener is bound on the calling thread, so a busy port is an error at once, without
//! SO_REUSEPORT, so no other socket can share it (`io::sockets::exclusive_listener`), and an
//! axum app is served on a thread of its own with a single-threaded tokio runtime.
//!
//! Connections are served with hyper directly (`axum::serve` exposes no timeouts):
//! each one is bounded per phase (request head, request, keep-alive idle: [`phase`]),
//! the number open at once is capped (over the cap a new connection is closed at once,
//! counted and logged, throttled), and TLS is terminated when configured
//! ([`ServeOptions`]).

mod conn;
pub mod options;
pub mod phase;

use std::{future::Future, net::SocketAddr, sync::Arc, time::Duration};

pub use options::{ConnStats, ServeOptions};

/// Pause after a failed accept (e.g. out of descriptors), so the loop does not spin.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(50);

/// Binds `listen`, serves `app` on a new thread named `thread` with `options`, counting
/// into `stats`; logs the `listening` event with `kind`, and returns the bound address.
pub fn serve(
    listen: SocketAddr,
    thread: &str,
    kind: &'static str,
    app: axum::Router,
    options: ServeOptions,
    stats: Arc<ConnStats>,
) -> std::io::Result<SocketAddr> {
    serve_with(
        listen,
        thread,
        kind,
        app,
        options,
        stats,
        std::future::pending(),
    )
}

/// [`serve`], with `background` running on the same runtime as long as the listener
/// (e.g. a periodic sweep of the app's state).
pub fn serve_with(
    listen: SocketAddr,
    thread: &str,
    kind: &'static str,
    app: axum::Router,
    options: ServeOptions,
    stats: Arc<ConnStats>,
    background: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<SocketAddr> {
    let listener = crate::io::sockets::exclusive_listener(listen)?;
    let addr = listener
        .local_addr()
        .map_err(|e| crate::io::sockets::listen_error(listen, e))?;
    let tls = options.tls.is_some();
    let options = Arc::new(options);
    std::thread::Builder::new()
        .name(thread.to_string())
        .spawn(move || {
            let runtime = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(r) => r,
                Err(e) => {
                    tracing::error!(kind, error = %e, "HTTP runtime failed to start");
                    return;
                }
            };
            runtime.block_on(async move {
                tokio::spawn(background);
                match tokio::net::TcpListener::from_std(listener) {
                    Ok(l) => accept_loop(l, kind, app, options, stats).await,
                    Err(e) => tracing::error!(kind, error = %e, "HTTP listener unusable"),
                }
            });
        })?;
    tracing::info!(kind, %addr, tls, "listening");
    Ok(addr)
}

/// Accepts for ever; each connection gets a slot under the cap and a task of its own.
async fn accept_loop(
    listener: tokio::net::TcpListener,
    kind: &'static str,
    app: axum::Router,
    options: Arc<ServeOptions>,
    stats: Arc<ConnStats>,
) {
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                crate::log_throttled!(warn, kind, error = %e, "HTTP listener: accept failed");
                tokio::time::sleep(ACCEPT_ERROR_PAUSE).await;
                continue;
            }
        };
        let Some(slot) = stats.enter(options.max_connections) else {
            stats.count_refused();
            crate::log_throttled!(warn, kind, client = %peer, max_connections = options.max_connections,
                refused_total = stats.refused(), "HTTP listener: connection cap reached; closed");
            drop(stream);
            continue;
        };
        let _ = stream.set_nodelay(true);
        let (app, options, stats) = (app.clone(), options.clone(), stats.clone());
        tokio::spawn(async move {
            let _slot = slot;
            conn::serve(stream, peer, kind, app, options, stats).await;
        });
    }
}
