//! The shared port of `tls://` cloud endpoints, before the pipeline: read the client's
//! ClientHello (bounded in size and time) without terminating TLS, so the endpoint can
//! be picked by its SNI host name (exact names before wildcards; edge/pipeline.rs),
//! then forwarded like any public connection, the ClientHello bytes first — the
//! client's TLS session reaches the upstream untouched (edge/tls_front.rs). An
//! `https://` endpoint's connections go to edge/http instead, which ends their TLS.

use std::time::Duration;

use monoio::{buf::IoBufMut, io::AsyncReadRent, net::TcpStream};

use crate::sni::{peek_sni, SniError, SniPeek, MAX_CLIENT_HELLO};

/// How long a client may take to send its whole ClientHello.
pub const HELLO_TIMEOUT: Duration = Duration::from_secs(10);

/// A complete ClientHello: its SNI host name and every byte read.
pub struct ClientHello {
    /// The SNI host name.
    pub name: String,
    /// The bytes read (the ClientHello and anything the client sent with it).
    pub bytes: Vec<u8>,
}

/// Why no ClientHello with a host name was read.
#[derive(Debug, thiserror::Error)]
pub enum HelloError {
    /// A well-formed ClientHello without SNI.
    #[error("ClientHello without SNI")]
    NoSni,
    /// Not a ClientHello a TLS server would accept.
    #[error("bad ClientHello: {0}")]
    Bad(#[from] SniError),
    /// Over [`MAX_CLIENT_HELLO`].
    #[error("ClientHello too large")]
    TooLarge,
    /// End of stream first.
    #[error("client closed before its ClientHello was complete")]
    Closed,
    /// The read failed.
    #[error("read failed: {0}")]
    Read(std::io::Error),
    /// Not complete within [`HELLO_TIMEOUT`].
    #[error("no ClientHello within {}s", HELLO_TIMEOUT.as_secs())]
    Timeout,
}

/// Reads the client's ClientHello within [`HELLO_TIMEOUT`].
pub async fn client_hello(client: &mut TcpStream) -> Result<ClientHello, HelloError> {
    crate::io::idle::within(HELLO_TIMEOUT, read_client_hello(client))
        .await
        .unwrap_or(Err(HelloError::Timeout))
}

/// Reads until the ClientHello is complete.
/// Not cancel-safe (bytes read are lost); dropped only on timeout, which closes.
async fn read_client_hello(client: &mut TcpStream) -> Result<ClientHello, HelloError> {
    let mut buf: Vec<u8> = Vec::with_capacity(2048);
    loop {
        match peek_sni(&buf)? {
            SniPeek::Found(name) => {
                let name = name.into_owned();
                return Ok(ClientHello { name, bytes: buf });
            }
            SniPeek::NoSni => return Err(HelloError::NoSni),
            SniPeek::NeedMore => {}
        }
        if buf.len() >= MAX_CLIENT_HELLO {
            return Err(HelloError::TooLarge);
        }
        if buf.capacity() == buf.len() {
            buf.reserve((buf.len()).clamp(2048, MAX_CLIENT_HELLO - buf.len()));
        }
        let (len, cap) = (buf.len(), buf.capacity().min(MAX_CLIENT_HELLO));
        let (res, back) = client.read(buf.slice_mut(len..cap)).await;
        buf = back.into_inner();
        match res {
            Ok(0) => return Err(HelloError::Closed),
            Ok(_) => {}
            Err(e) => return Err(HelloError::Read(e)),
        }
    }
}
