//! `http://` cloud endpoints: one shared port (`http_endpoints.listen`) where hyper
//! serves HTTP/1.1 with keep-alive on the edge's workers, each request routed by its
//! `Host` to an endpoint and forwarded on a stream of its own (forward.rs), with the
//! edge's own pages for what it refuses (page.rs) and the forwarding headers
//! (headers.rs). Reads of a request head are bounded in size ([`MAX_HEAD_BYTES`]) and
//! time ([`HEAD_TIMEOUT`], which also closes a keep-alive connection left idle).

mod forward;
mod headers;
mod page;
mod rt;

use std::{convert::Infallible, net::SocketAddr, rc::Rc, sync::Arc, time::Duration};

use monoio::net::TcpStream;

use super::EdgeShared;

/// Longest a client may take to send a request head (and longest a kept-alive
/// connection may wait for its next request).
pub const HEAD_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest request head read (hyper answers 431 beyond it).
pub const MAX_HEAD_BYTES: usize = 64 * 1024;

/// Serves one connection accepted on the HTTP port.
pub async fn serve(stream: TcpStream, peer: SocketAddr, shared: Arc<EdgeShared>) {
    let _in_flight = shared.in_flight.enter();
    let server = stream.local_addr().unwrap_or(peer);
    let conn = Rc::new(forward::ConnInfo {
        peer,
        server,
        shared: shared.clone(),
    });
    let service = hyper::service::service_fn(move |req| {
        let conn = conn.clone();
        async move { Ok::<_, Infallible>(forward::request(req, &conn).await) }
    });
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(rt::Timer)
        .header_read_timeout(HEAD_TIMEOUT)
        .max_buf_size(MAX_HEAD_BYTES)
        .keep_alive(true);
    if let Err(e) = http.serve_connection(rt::io(stream), service).await {
        tracing::debug!(%peer, error = %e, "http connection ended with an error");
    }
}
