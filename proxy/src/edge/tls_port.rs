//! The shared port of `tls://` cloud endpoints: read the client's ClientHello (bounded
//! in size and time) without terminating TLS, pick the endpoint by its SNI host name
//! (exact names before wildcards), then forward like any public connection, the
//! ClientHello bytes first — the client's TLS session reaches the upstream untouched.

use std::{net::SocketAddr, sync::Arc, time::Duration};

use monoio::{buf::IoBufMut, io::AsyncReadRent, net::TcpStream};

use super::{public, stats::EdgeStats, EdgeShared};
use crate::sni::{peek_sni, SniPeek, MAX_CLIENT_HELLO};

/// How long a client may take to send its whole ClientHello.
pub const HELLO_TIMEOUT: Duration = Duration::from_secs(10);

/// Reads the ClientHello, picks the endpoint by SNI and forwards the connection.
pub async fn route(mut client: TcpStream, peer: SocketAddr, shared: Arc<EdgeShared>) {
    let hello = match monoio::time::timeout(HELLO_TIMEOUT, read_client_hello(&mut client)).await {
        Ok(Ok(hello)) => hello,
        Ok(Err(reason)) => {
            crate::log_throttled!(info, %peer, %reason, "tls endpoint: connection closed");
            EdgeStats::bump(&shared.stats.no_route);
            return;
        }
        Err(_) => {
            crate::log_throttled!(info, %peer, "tls endpoint: no ClientHello in time; closed");
            EdgeStats::bump(&shared.stats.no_route);
            return;
        }
    };
    let Some(endpoint) = shared.endpoints.route_sni(&hello.name) else {
        crate::log_throttled!(info, %peer, sni = %hello.name, "tls endpoint: unknown SNI; closed");
        EdgeStats::bump(&shared.stats.no_route);
        return;
    };
    public::forward(client, peer, endpoint, shared, hello.bytes).await;
}

struct ClientHello {
    name: String,
    bytes: Vec<u8>,
}

/// Reads until the ClientHello is complete; its SNI host name and every byte read.
/// Not cancel-safe (bytes read are lost); dropped only on timeout, which closes.
async fn read_client_hello(client: &mut TcpStream) -> Result<ClientHello, String> {
    let mut buf: Vec<u8> = Vec::with_capacity(2048);
    loop {
        match peek_sni(&buf) {
            Ok(SniPeek::Found(name)) => {
                let name = name.into_owned();
                return Ok(ClientHello { name, bytes: buf });
            }
            Ok(SniPeek::NoSni) => return Err("ClientHello without SNI".into()),
            Ok(SniPeek::NeedMore) => {}
            Err(e) => return Err(format!("bad ClientHello: {e}")),
        }
        if buf.len() >= MAX_CLIENT_HELLO {
            return Err("ClientHello too large".into());
        }
        if buf.capacity() == buf.len() {
            buf.reserve((buf.len()).clamp(2048, MAX_CLIENT_HELLO - buf.len()));
        }
        let (len, cap) = (buf.len(), buf.capacity().min(MAX_CLIENT_HELLO));
        let (res, back) = client.read(buf.slice_mut(len..cap)).await;
        buf = back.into_inner();
        match res {
            Ok(0) => return Err("client closed before its ClientHello was complete".into()),
            Ok(_) => {}
            Err(e) => return Err(format!("read failed: {e}")),
        }
    }
}
