//! The agent port: one listener for control channels (TLS), plain-TCP data channels
//! and a fleet's peer links, told apart by the first bytes (0x16 starts a TLS
//! handshake; plain data channels start with [`DATA_CHANNEL_MAGIC`], peer links with
//! [`PEER_STREAM_MAGIC`]: edge/peer_in.rs). Anything else is closed and counted.

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
    wire::{
        Frame, CHANNEL_HELLO_FRAME_LEN, DATA_CHANNEL_MAGIC, PEER_STREAM_MAGIC, PROTOCOL_VERSION,
    },
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

async fn handle(mut stream: TcpStream, peer: SocketAddr, shared: Arc<EdgeShared>) {
    let gate = shared.clone();
    let has_session = shared.registry.has_session_from(peer.ip());
    let slot = match gate.preauth.admit(peer.ip(), has_session) {
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
            let left = deadline.saturating_duration_since(Instant::now());
            let magic = match idle::within(left, read_magic(&mut stream)).await {
                Ok(Ok(magic)) => magic,
                Ok(Err(e)) => {
                    let e = framed::FrameError::Io(e);
                    return AgentRefusal::BadChannelHello(&e).account(&shared, peer);
                }
                Err(_) => return AgentRefusal::ChannelSilent.account(&shared, peer),
            };
            if magic == PEER_STREAM_MAGIC {
                // The slot goes once the opening is proven: a stream may last long.
                return Box::pin(super::peer_in::serve(stream, peer, deadline, shared, slot)).await;
            }
            if !shared.plain_channels {
                return AgentRefusal::PlainChannelsOff.account(&shared, peer);
            }
            if magic != DATA_CHANNEL_MAGIC {
                return AgentRefusal::Garbage(magic[1]).account(&shared, peer);
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

/// The 4-byte magic of a plain connection: a data channel's or a peer link's.
async fn read_magic(stream: &mut TcpStream) -> std::io::Result<[u8; 4]> {
    let (res, magic) = stream.read_exact(vec![0u8; 4]).await;
    res?;
    Ok(magic[..4].try_into().expect("4 bytes"))
}

/// Authenticates a plain-TCP data channel whose magic was read and parks it with its
/// session. The rest of its opening is one ChannelHello frame, always
/// [`CHANNEL_HELLO_FRAME_LEN`] long: nothing longer is read or allocated.
async fn plain_data_channel(
    mut stream: TcpStream,
    peer: SocketAddr,
    deadline: Instant,
    shared: Arc<EdgeShared>,
) {
    let left = deadline.saturating_duration_since(Instant::now());
    let hello = idle::within(left, async {
        // The length prefix first, so a wrong length is refused at once.
        let (res, head) = stream.read_exact(vec![0u8; 4]).await;
        res.map_err(framed::FrameError::Io)?;
        let len = u32::from_be_bytes(head[..4].try_into().expect("4 bytes"));
        if len as usize != CHANNEL_HELLO_FRAME_LEN - 4 {
            return Err(crate::wire::WireError::BadLength(len as usize).into());
        }
        let (res, rest) = stream
            .read_exact(vec![0u8; CHANNEL_HELLO_FRAME_LEN - 4])
            .await;
        res.map_err(framed::FrameError::Io)?;
        let mut frame = head[..4].to_vec();
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
    // Non-blocking for good: the splice pump needs it, and sets it no more per stream.
    if crate::io::sockets::set_nonblocking(std::os::fd::AsRawFd::as_raw_fd(&stream)).is_err() {
        return;
    }
    session.park(ParkedChannel::plain(stream));
}
