//! The agent port: one listener for control channels (TLS) and plain-TCP data
//! channels, told apart by the first byte (0x16 starts a TLS handshake; plain data
//! channels start with [`DATA_CHANNEL_MAGIC`]). Anything else is closed and counted.

use std::{net::SocketAddr, os::fd::AsRawFd, sync::Arc};

use monoio::{
    io::AsyncReadRentExt,
    net::{TcpListener, TcpStream},
};

use super::{
    control,
    registry::{ParkedChannel, SessionHandle},
    stats::EdgeStats,
    EdgeShared, AGENT_HANDSHAKE_TIMEOUT,
};
use crate::{
    io::{framed, sockets},
    wire::{Frame, DATA_CHANNEL_MAGIC, PROTOCOL_VERSION},
};

const TLS_HANDSHAKE_RECORD: u8 = 0x16;

/// Accepts agent connections forever. Each is handled in its own task.
pub async fn accept_loop(listener: TcpListener, shared: Arc<EdgeShared>) {
    loop {
        match listener.accept().await {
            Ok((stream, peer)) => {
                monoio::spawn(handle(stream, peer, shared.clone()));
            }
            Err(e) => super::accept_backoff("agents", &e).await,
        }
    }
}

async fn handle(stream: TcpStream, peer: SocketAddr, shared: Arc<EdgeShared>) {
    let _ = stream.set_nodelay(true);
    let first = match monoio::time::timeout(AGENT_HANDSHAKE_TIMEOUT, first_byte(&stream)).await {
        Ok(Ok(b)) => b,
        Ok(Err(e)) => {
            tracing::debug!(%peer, error = %e, "agent connection closed before speaking");
            return;
        }
        Err(_) => {
            crate::log_throttled!(info, %peer, "agent connection silent past the handshake timeout; closed");
            EdgeStats::bump(&shared.stats.agents_refused);
            return;
        }
    };
    match first {
        TLS_HANDSHAKE_RECORD => control::handle_tls(stream, peer, shared).await,
        b if b == DATA_CHANNEL_MAGIC[0] => plain_data_channel(stream, peer, shared).await,
        other => {
            crate::log_throttled!(warn, %peer, first_byte = other, "garbage on the agent port; closed");
            EdgeStats::bump(&shared.stats.agents_refused);
        }
    }
}

async fn first_byte(stream: &TcpStream) -> std::io::Result<u8> {
    loop {
        if let Some(b) = sockets::peek_first_byte(stream.as_raw_fd())? {
            return Ok(b);
        }
        stream.readable(false).await?;
    }
}

/// Authenticates a plain-TCP data channel and parks it with its session.
async fn plain_data_channel(mut stream: TcpStream, peer: SocketAddr, shared: Arc<EdgeShared>) {
    let hello = monoio::time::timeout(AGENT_HANDSHAKE_TIMEOUT, async {
        let (res, magic) = stream.read_exact(vec![0u8; DATA_CHANNEL_MAGIC.len()]).await;
        res?;
        if magic[..] != DATA_CHANNEL_MAGIC {
            return Err(framed::FrameError::Wire(
                crate::wire::WireError::UnknownKind(magic[0]),
            ));
        }
        framed::read_exact_frame(&mut stream).await
    })
    .await;
    let (session_id, secret) = match hello {
        Ok(Ok(Frame::ChannelHello {
            version: PROTOCOL_VERSION,
            session_id,
            secret,
        })) => (session_id, secret),
        Ok(Ok(other)) => {
            crate::log_throttled!(warn, %peer, frame = other.name(), "unexpected first frame on a data channel; closed");
            EdgeStats::bump(&shared.stats.agents_refused);
            return;
        }
        Ok(Err(e)) => {
            crate::log_throttled!(warn, %peer, error = %e, "bad data channel hello; closed");
            EdgeStats::bump(&shared.stats.agents_refused);
            return;
        }
        Err(_) => {
            crate::log_throttled!(info, %peer, "data channel silent past the handshake timeout; closed");
            EdgeStats::bump(&shared.stats.agents_refused);
            return;
        }
    };
    let Some(session) = authenticate_channel(&shared, peer, session_id, &secret) else {
        return;
    };
    use std::os::fd::{FromRawFd, IntoRawFd};
    let fd = stream.into_raw_fd();
    // SAFETY: `into_raw_fd` handed us sole ownership of this open socket.
    let std_stream = unsafe { std::net::TcpStream::from_raw_fd(fd) };
    tracing::debug!(
        session = session.id,
        transport = "tcp",
        "new data channel parked"
    );
    session.park(ParkedChannel::Plain(std_stream));
}

/// The session a data channel claims, if it exists and the secret is right.
pub(super) fn authenticate_channel(
    shared: &EdgeShared,
    peer: SocketAddr,
    session_id: u64,
    secret: &[u8; 32],
) -> Option<Arc<SessionHandle>> {
    let Some(session) = shared.registry.session(session_id) else {
        crate::log_throttled!(info, %peer, session = session_id, "data channel for an unknown session; closed");
        return None;
    };
    if !session.secret_matches(secret) {
        crate::log_throttled!(warn, %peer, session = session_id, "data channel with a wrong session secret; closed");
        EdgeStats::bump(&shared.stats.agents_refused);
        return None;
    }
    Some(session)
}
