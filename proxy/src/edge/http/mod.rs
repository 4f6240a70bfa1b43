//! `http://` and `https://` cloud endpoints. `http://`: one shared port
//! (`http_endpoints.listen`) where hyper serves HTTP/1.1 with keep-alive on the edge's
//! workers, each request routed by its `Host` to an endpoint. `https://`: on the shared
//! TLS port, routed by SNI like `tls://` (edge/tls_port.rs), TLS ended here with the
//! endpoint's certificate, then HTTP/2 or HTTP/1.1 as ALPN chose. Each request is
//! forwarded on a stream of its own (forward.rs), with the edge's own pages for what
//! it refuses (page.rs) and the forwarding headers (headers.rs). Reads of a request head are bounded in size ([`MAX_HEAD_BYTES`]) and
//! time ([`HEAD_TIMEOUT`], which also closes a keep-alive connection left idle).

mod forward;
mod headers;
mod multiplexed;
mod page;
mod rt;
mod stall;
mod upstreams;

use std::{net::SocketAddr, rc::Rc, sync::Arc, time::Duration};

use monoio::net::TcpStream;

use super::{EdgeShared, LiveEndpoint};

/// Longest a client may take to send a request head (and longest a kept-alive
/// connection may wait for its next request).
pub const HEAD_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest request head read (hyper answers 431 beyond it).
pub const MAX_HEAD_BYTES: usize = 64 * 1024;
/// Requests one HTTP/2 connection may have open at once.
pub const MAX_STREAMS: u32 = 100;
/// Most response bytes one HTTP/2 stream buffers for a client that does not read them
/// (hyper's default, 400 KiB, lets one connection hold 40 MiB of the edge's memory).
pub const STREAM_SEND_BUFFER: usize = 64 * 1024;

/// Serves one connection accepted on the HTTP port.
pub async fn serve(stream: TcpStream, peer: SocketAddr, shared: Arc<EdgeShared>) {
    let _in_flight = shared.in_flight.enter();
    let server = stream.local_addr().unwrap_or(peer);
    let conn = forward::ConnInfo {
        peer,
        client_value: headers::client_value(peer.ip()),
        server,
        shared: shared.clone(),
        endpoint: None,
        proto: "http",
        kept_peer: Default::default(),
    };
    if let Err(e) = serve_http1(rt::io(stream), conn).await {
        tracing::debug!(%peer, error = %e, "http connection ended with an error");
    }
}

/// Serves one connection on the TLS port whose ClientHello (`hello`, already read)
/// named `https://` `endpoint`: its TLS ended here with the endpoint's certificate,
/// then HTTP/2 or HTTP/1.1 as ALPN chose.
pub async fn serve_tls(
    stream: TcpStream,
    peer: SocketAddr,
    endpoint: Arc<LiveEndpoint>,
    shared: Arc<EdgeShared>,
    hello: Vec<u8>,
) {
    let _in_flight = shared.in_flight.enter();
    let Some(config) = endpoint.terminate_tls.clone() else {
        return;
    };
    let server = stream.local_addr().unwrap_or(peer);
    let tls = match super::terminate::handshake(stream, hello, config).await {
        Ok(tls) => tls,
        Err(reason) => {
            return super::account::Conn {
                edge: &shared.stats,
                endpoint: &endpoint,
                peer,
            }
            .account(super::account::Outcome::TlsHandshakeFailed { reason })
        }
    };
    let h2 = tls.conn().alpn_protocol() == Some(b"h2".as_slice());
    let conn = forward::ConnInfo {
        peer,
        client_value: headers::client_value(peer.ip()),
        server,
        shared: shared.clone(),
        endpoint: Some(endpoint),
        proto: "https",
        kept_peer: Default::default(),
    };
    let served = if h2 {
        serve_http2(rt::io(tls), conn).await
    } else {
        serve_http1(rt::io(tls), conn).await
    };
    if let Err(e) = served {
        tracing::debug!(%peer, h2, error = %e, "https connection ended with an error");
    }
}

/// HTTP/1.1 with keep-alive on `io`.
async fn serve_http1<T>(io: rt::Io<T>, conn: forward::ConnInfo) -> Result<(), hyper::Error>
where
    T: monoio::io::AsyncReadRent + monoio::io::AsyncWriteRent + Unpin + 'static,
{
    let conn = Rc::new(conn);
    let service = hyper::service::service_fn(move |req| {
        let conn = conn.clone();
        async move { forward::request(req, &conn).await }
    });
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(rt::Timer)
        .header_read_timeout(HEAD_TIMEOUT)
        .max_buf_size(MAX_HEAD_BYTES)
        .keep_alive(true);
    http.serve_connection(io, service).with_upgrades().await
}

/// HTTP/2 on `io`: each stream's request handled as a task of this worker.
async fn serve_http2<T>(io: rt::Io<T>, conn: forward::ConnInfo) -> Result<(), hyper::Error>
where
    T: monoio::io::AsyncReadRent + monoio::io::AsyncWriteRent + Unpin + 'static,
{
    let conn = Rc::new(conn);
    let service = hyper::service::service_fn(move |req| {
        let conn = conn.clone();
        async move { forward::request(req, &conn).await }
    });
    let mut http = hyper::server::conn::http2::Builder::new(rt::Exec);
    http.timer(rt::Timer)
        .max_header_list_size(MAX_HEAD_BYTES as u32)
        .max_concurrent_streams(MAX_STREAMS)
        .max_send_buf_size(STREAM_SEND_BUFFER)
        .keep_alive_interval(Some(HEAD_TIMEOUT))
        .keep_alive_timeout(HEAD_TIMEOUT);
    http.serve_connection(io, service).await
}
