//! Public listeners: the accept loop of TCP endpoints and of the shared `tls://` port.
//! Each accepted connection is counted and handed to the stream pipeline
//! (edge/pipeline.rs) in a task of its own.

use std::{net::SocketAddr, sync::Arc};

use monoio::net::{TcpListener, TcpStream};

use super::{stats::EdgeStats, EdgeShared};

/// Accepts public connections; each is counted and handled by `handle` in its own task.
/// Used by TCP endpoints (`handle` = `pipeline::forward`) and the TLS port
/// (`pipeline::from_tls_port`: SNI routing first);
/// ends when a drain, or the endpoint's removal (`closed`), shuts the listener down.
pub async fn accept_loop<C, F, Fut>(
    listener: TcpListener,
    name: String,
    shared: Arc<EdgeShared>,
    closed: C,
    handle: F,
) where
    C: Fn() -> bool,
    F: Fn(TcpStream, SocketAddr) -> Fut,
    Fut: std::future::Future<Output = ()> + 'static,
{
    loop {
        match listener.accept().await {
            Ok((stream, peer)) => {
                EdgeStats::bump(&shared.stats.accepted);
                monoio::spawn(handle(stream, peer));
            }
            Err(_) if shared.draining.load(std::sync::atomic::Ordering::Acquire) || closed() => {
                return
            }
            Err(e) => super::accept_backoff(&name, &e).await,
        }
    }
}
