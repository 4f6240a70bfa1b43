//! The accept side of the shared `tls://` port: a connection's ClientHello (read by
//! edge/tls_port.rs) names its endpoint by SNI; a `tls://` endpoint's connection goes
//! through the stream pipeline (edge/pipeline.rs), an `https://` endpoint's to the HTTP
//! server (edge/http), which ends its TLS.

/// A connection on the shared `tls://` port: its ClientHello picks the endpoint by
/// SNI, then it is forwarded like any other, the ClientHello bytes first (or, for an
/// `https://` endpoint, its TLS ended and its requests served: edge/http).
pub(super) async fn serve(
    mut client: monoio::net::TcpStream,
    peer: std::net::SocketAddr,
    shared: std::sync::Arc<super::EdgeShared>,
) {
    use super::account::{self, Unrouted};
    let hello = match super::tls_port::client_hello(&mut client).await {
        Ok(hello) => hello,
        Err(e) => return account::unrouted(&shared.stats, peer, Unrouted::Hello(e)),
    };
    let Some(endpoint) = shared.endpoints.route_sni(&hello.name) else {
        return account::unrouted(&shared.stats, peer, Unrouted::UnknownSni(&hello.name));
    };
    if endpoint.is_https() {
        return Box::pin(super::http::serve_tls(
            client,
            peer,
            endpoint,
            shared,
            hello.bytes,
        ))
        .await;
    }
    super::pipeline::forward(client, peer, endpoint, shared, hello.bytes).await;
}
