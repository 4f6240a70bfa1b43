//! `terminate_tls` on a cloud endpoint: the edge finishes the client's TLS handshake
//! itself (the ClientHello the SNI router already read is fed to rustls first) and
//! forwards plaintext into the tunnel. The handshake is bounded in time.

use std::{sync::Arc, time::Duration};

use monoio::net::TcpStream;
use rustls::{ServerConfig, ServerConnection};

use crate::io::tls_stream::TlsStream;

/// How long a client may take to complete its TLS handshake.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Completes the server side of the handshake; `early` is ciphertext already read
/// from `client`. The error says why the client was refused.
pub async fn handshake(
    client: TcpStream,
    early: Vec<u8>,
    config: Arc<ServerConfig>,
) -> Result<TlsStream<ServerConnection>, String> {
    let conn = ServerConnection::new(config).map_err(|e| e.to_string())?;
    let mut tls = TlsStream::from_parts(client, conn).with_early(early);
    match monoio::time::timeout(HANDSHAKE_TIMEOUT, tls.handshake()).await {
        Ok(Ok(())) => Ok(tls),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err(format!(
            "handshake not complete within {}s",
            HANDSHAKE_TIMEOUT.as_secs()
        )),
    }
}
