//! HTTP servers off the data path (the edge's admin API, the agent's metrics): the
//! listener is bound on the calling thread, so a busy port is an error at once, without
//! SO_REUSEPORT, so no other socket can share it (`io::sockets::exclusive_listener`),
//! and an axum app is served on a thread of its own with a single-threaded tokio
//! runtime.

use std::net::SocketAddr;

/// Binds `listen`, serves `app` on a new thread named `thread`, logs the `listening`
/// event with `kind`, and returns the bound address.
pub fn serve(
    listen: SocketAddr,
    thread: &str,
    kind: &'static str,
    app: axum::Router,
) -> std::io::Result<SocketAddr> {
    let listener = crate::io::sockets::exclusive_listener(listen)?;
    let addr = listener
        .local_addr()
        .map_err(|e| crate::io::sockets::listen_error(listen, e))?;
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
                match tokio::net::TcpListener::from_std(listener) {
                    Ok(l) => {
                        if let Err(e) = axum::serve(l, app).await {
                            tracing::error!(kind, error = %e, "HTTP listener stopped");
                        }
                    }
                    Err(e) => tracing::error!(kind, error = %e, "HTTP listener unusable"),
                }
            });
        })?;
    tracing::info!(kind, %addr, "listening");
    Ok(addr)
}
