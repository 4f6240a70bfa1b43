//! The agent port: one listener for control channels (TLS) and plain-TCP data
//! channels, told apart by the first byte (0x16 starts a TLS handshake; plain data
//! channels start with [`DATA_CHANNEL_MAGIC`]). Anything else is closed and counted.

use std::{net::SocketAddr, os::fd::AsRawFd, sync::Arc, time::Instant};

use monoio::{
    io::AsyncReadRentExt,
    net::{TcpListener, TcpStream},
};

use super::{
    agent_refusal::AgentRefusal, channel_auth, control, datachan::ParkedChannel, EdgeShared,
};
use crate::{
    io::{framed, idle, sockets},
    wire::{Frame, CHANNEL_HELLO_FRAME_LEN, DATA_CHANNEL_MAGIC, PROTOCOL_VERSION},
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
    let gate = shared.clone();
    let has_session = shared.registry.has_session_from(peer.ip());
    let _slot = match gate.preauth.admit(peer.ip(), has_session) {
        Ok(slot) => slot,
        Err(refusal) => {
            AgentRefusal::PreAuthLimit(refusal.as_str()).account(&shared, peer);
            sockets::reset_on_close(stream.as_raw_fd());
            return;
        }
    };
    // TCP_NODELAY comes from the listener (io/sockets.rs).
    let limit = shared.preauth.handshake_timeout();
    let deadline = Instant::now() + limit;
    let first = match idle::within(limit, first_byte(&stream)).await {
        Ok(Ok(b)) => b,
        Ok(Err(e)) => {
            tracing::debug!(%peer, error = %e, "agent connection closed before speaking");
            return;
        }
        Err(_) => return AgentRefusal::Silent.account(&shared, peer),
    };
    match first {
        TLS_HANDSHAKE_RECORD => {
            if let Err(refusal) = shared.preauth.allow_handshake(peer.ip(), has_session) {
                AgentRefusal::HandshakeRate(refusal.as_str()).account(&shared, peer);
                sockets::reset_on_close(stream.as_raw_fd());
                return;
            }
            // Boxed: a control channel's TLS handshake and session would otherwise
            // size every connection's task, data channels' included (6.4 KB against
            // 1.4 KB for a plain channel's hello).
            Box::pin(control::handle_tls(stream, peer, deadline, shared)).await
        }
        b if b == DATA_CHANNEL_MAGIC[0] => {
            if !shared.plain_channels {
                return AgentRefusal::PlainChannelsOff.account(&shared, peer);
            }
            plain_data_channel(stream, peer, deadline, shared).await
        }
        other => AgentRefusal::Garbage(other).account(&shared, peer),
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

/// Authenticates a plain-TCP data channel and parks it with its session. Its opening
/// is the magic and one ChannelHello frame, always [`CHANNEL_HELLO_FRAME_LEN`] long:
/// nothing longer is read or allocated.
async fn plain_data_channel(
    mut stream: TcpStream,
    peer: SocketAddr,
    deadline: Instant,
    shared: Arc<EdgeShared>,
) {
    let left = deadline.saturating_duration_since(Instant::now());
    let hello = idle::within(left, async {
        // The magic and the length prefix first, so a wrong length is refused at once.
        let head_len = DATA_CHANNEL_MAGIC.len() + 4;
        let (res, head) = stream.read_exact(vec![0u8; head_len]).await;
        res.map_err(framed::FrameError::Io)?;
        if head[..DATA_CHANNEL_MAGIC.len()] != DATA_CHANNEL_MAGIC {
            return Err(framed::FrameError::Wire(
                crate::wire::WireError::UnknownKind(head[0]),
            ));
        }
        let len = u32::from_be_bytes(
            head[DATA_CHANNEL_MAGIC.len()..]
                .try_into()
                .expect("4 bytes"),
        );
        if len as usize != CHANNEL_HELLO_FRAME_LEN - 4 {
            return Err(crate::wire::WireError::BadLength(len as usize).into());
        }
        let (res, rest) = stream
            .read_exact(vec![0u8; CHANNEL_HELLO_FRAME_LEN - 4])
            .await;
        res.map_err(framed::FrameError::Io)?;
        let mut frame = head[DATA_CHANNEL_MAGIC.len()..].to_vec();
        frame.extend_from_slice(&rest);
        match crate::wire::decode(&frame)? {
            Some((frame, used)) if used == CHANNEL_HELLO_FRAME_LEN => Ok(frame),
            _ => Err(framed::FrameError::TruncatedEof),
        }
    })
    .await;
    let (session_id, seq, proof) = match hello {
        Ok(Ok(Frame::ChannelHello {
            version: PROTOCOL_VERSION,
            session_id,
            seq,
            proof,
        })) => (session_id, seq, proof),
        Ok(Ok(other)) => {
            let frame = other.name();
            return AgentRefusal::UnexpectedFrame {
                channel: "data",
                frame,
            }
            .account(&shared, peer);
        }
        Ok(Err(e)) => return AgentRefusal::BadChannelHello(&e).account(&shared, peer),
        Err(_) => return AgentRefusal::ChannelSilent.account(&shared, peer),
    };
    let Some(session) = channel_auth::authenticate_channel(&shared, peer, session_id, seq, &proof)
    else {
        return;
    };
    tracing::debug!(
        session = session.id,
        transport = "tcp",
        "new data channel parked"
    );
    session.park(ParkedChannel::plain(stream));
}
