//! `agent_tls_termination`: the agent finishes the client's TLS handshake on a stream
//! the data channel delivered (its ClientHello is the stream's first bytes), checking
//! the client's certificate when the endpoint lists CAs, before anything connects to
//! the upstream. A client that fails the handshake gets rustls's alert and is closed,
//! logged and counted. The edge never sees this key.

use std::{sync::atomic::Ordering, sync::Arc, time::Duration};

use monoio::io::{AsyncReadRent, AsyncWriteRent};
use rustls::{ServerConfig, ServerConnection};

use super::AgentShared;
use crate::{
    io::{readiness::Readiness, tls_stream::TlsStream},
    wire::StreamStart,
};

/// How long a client may take to complete its TLS handshake.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Runs the server side of the handshake over `io`, `early` (ciphertext read with the
/// stream header) first. On failure the stream comes back so the caller can end it.
pub async fn accept<IO: AsyncReadRent + AsyncWriteRent + Readiness>(
    io: IO,
    early: Vec<u8>,
    config: Arc<ServerConfig>,
    start: &StreamStart,
    shared: &AgentShared,
) -> Result<TlsStream<ServerConnection, IO>, Option<TlsStream<ServerConnection, IO>>> {
    let conn = match ServerConnection::new(config) {
        Ok(conn) => conn,
        Err(e) => {
            tracing::warn!(url = %start.internal_url, error = %e, "cannot start TLS termination");
            return Err(None);
        }
    };
    let mut tls = TlsStream::from_parts(io, conn).with_early(early);
    let reason = match monoio::time::timeout(HANDSHAKE_TIMEOUT, tls.handshake()).await {
        Ok(Ok(())) => {
            tracing::debug!(url = %start.internal_url, client = %start.client,
                client_cert = tls.conn().peer_certificates().is_some(), "client TLS accepted");
            return Ok(tls);
        }
        Ok(Err(e)) => e.to_string(),
        Err(_) => format!(
            "handshake not complete within {}s",
            HANDSHAKE_TIMEOUT.as_secs()
        ),
    };
    let refused = shared.tls_refused.fetch_add(1, Ordering::Relaxed) + 1;
    crate::log_throttled!(warn, url = %start.internal_url, client = %start.client, %reason, refused,
        "client TLS handshake failed; stream closed");
    Err(Some(tls))
}
