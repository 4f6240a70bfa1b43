//! A connection another edge of the fleet carried here (edge/peer_out.rs), handed to a
//! local session as if this edge had accepted it. Its policy was decided by the edge
//! that accepted it, on the real client address, which travels in the opening (PROXY
//! headers and the agent's logs show the real client).
//!
//! The opening ([`Frame::PeerStream`] after [`PEER_STREAM_MAGIC`]) must carry a valid
//! proof with the fleet key, a time within the window and a nonce not seen before
//! (crate::fleet::proof); only local sessions are considered (a peer link is never
//! forwarded again, so no loop can form). The stream is opened on the URL's pool as
//! for a local connection (failing over between members), with the status sent back
//! once an agent connected the upstream. Then the link and the agent's data channel
//! are joined: both carry the same chunk-framed stream, so the bytes are relayed as
//! they are, in both directions, until the sending edge closes the link (it does once
//! both directions ended) or the session is cut.

use std::{
    net::SocketAddr,
    os::fd::AsRawFd,
    pin::pin,
    sync::Arc,
    time::{Duration, Instant},
};

use monoio::{io::AsyncWriteRentExt, net::TcpStream};

use super::{
    datachan::DataChannel, open, pipeline::unless_kicked, preauth::PreAuthSlot, EdgeShared,
};
use crate::{
    fleet::proof,
    io::{self, framed, idle, idle::Progress, sockets},
    wire::{self, Frame, StreamCode, StreamStart},
};

/// How long the stream may take to open here: less than the sending edge waits for
/// the status ([`super::datachan::STATUS_WAIT`]).
const PEER_OPEN_WAIT: Duration = Duration::from_secs(10);

/// Serves one peer link whose magic the agent port has read, by `deadline` for its
/// opening; `preauth` (its place among unauthenticated connections) is released once
/// the opening is proven.
pub async fn serve(
    mut link: TcpStream,
    from: SocketAddr,
    deadline: Instant,
    shared: Arc<EdgeShared>,
    preauth: PreAuthSlot<'_>,
) {
    if shared.peers.key().is_none() {
        // Not in a fleet (or its key not loaded yet): nothing to check an opening
        // against, so nothing is read.
        crate::log_throttled!(info, %from, "peer link refused: this edge has no fleet peer key");
        return refuse(&shared, link).await;
    }
    let left = deadline.saturating_duration_since(Instant::now());
    let opening = match idle::within(left, read_opening(&mut link)).await {
        Ok(Ok(frame)) => frame,
        Ok(Err(e)) => {
            crate::log_throttled!(info, %from, error = %e, "peer link: unreadable opening; closed");
            return refuse(&shared, link).await;
        }
        Err(_) => {
            crate::log_throttled!(info, %from, "peer link: no opening in time; closed");
            return refuse(&shared, link).await;
        }
    };
    let Frame::PeerStream {
        edge,
        at_ms,
        nonce,
        proof: mac,
        start,
    } = opening
    else {
        crate::log_throttled!(info, %from, frame = opening.name(), "peer link: unexpected opening frame; closed");
        return refuse(&shared, link).await;
    };
    if let Err(why) = admit(&shared, &edge, at_ms, nonce, &start, &mac) {
        crate::log_throttled!(warn, %from, peer_edge = %edge, reason = why, "peer link refused");
        return refuse(&shared, link).await;
    }
    drop(preauth);
    // A drain waits for it like for a connection accepted here; a sending edge that
    // vanishes without closing is noticed by keepalive.
    let _in_flight = shared.in_flight.enter();
    crate::fleet::keep_link_alive(link.as_raw_fd());
    let url = start.internal_url.clone();
    let Some(pool) = shared.registry.lookup(&url) else {
        shared.peers.stats.in_failed.inc();
        crate::log_throttled!(info, peer_edge = %edge, client = %start.client, url = %url,
            "peer link: no local session for the URL (any more)");
        return status(link, StreamCode::UnknownEndpoint).await;
    };
    let to = open::Target {
        endpoint: "peer link",
        peer: start.client,
        url: &url,
    };
    let stream = Frame::Stream(start.clone());
    // Within the sending edge's wait for the status, so it never gives up on an
    // opening this edge then completes.
    let opening = open::open(&pool, &shared.registry, &stream, &[], &to);
    let opened = match idle::within(PEER_OPEN_WAIT, opening).await {
        Ok(Ok(opened)) => opened,
        Err(_) => {
            shared.peers.stats.in_failed.inc();
            crate::log_throttled!(info, peer_edge = %edge, client = %start.client, url = %url,
                "peer link: no pool member took the connection in time");
            return status(link, StreamCode::UpstreamFailed).await;
        }
        Ok(Err(failure)) => {
            shared.peers.stats.in_failed.inc();
            crate::log_throttled!(info, peer_edge = %edge, client = %start.client, url = %url,
                tried = failure.tried, last = failure.last.map_or("", |e| e.as_str()),
                "peer link: no pool member could take the connection");
            return status(link, StreamCode::UpstreamFailed).await;
        }
    };
    shared.peers.stats.in_opened.inc();
    tracing::debug!(peer_edge = %edge, client = %start.client, url = %url, "peer link: stream handed to a local session");
    let session = &opened.load.0.session;
    let link_fd = link.as_raw_fd();
    let channel_fd = opened.channel.as_raw_fd();
    let progress = Progress::default();
    let work = pin!(join(link, opened.channel, &start, &progress));
    if unless_kicked(session, [link_fd, channel_fd], work)
        .await
        .is_none()
    {
        crate::log_throttled!(info, peer_edge = %edge, client = %start.client, session = session.id,
            "peer link cut: its agent session was ended (token revoked or user deactivated)");
    }
}

/// Longest opening accepted: a PeerStream frame with an edge id and a URL of sensible
/// length (both far below the codec's 4 KiB string limit).
pub const MAX_OPENING: usize = 1024;

/// Reads the opening frame, at most [`MAX_OPENING`] bytes, and nothing past it (the
/// bytes after it are the stream's).
async fn read_opening(link: &mut TcpStream) -> Result<Frame, framed::FrameError> {
    use monoio::io::AsyncReadRentExt;
    let (res, head) = link.read_exact(vec![0u8; 4]).await;
    res.map_err(framed::FrameError::Io)?;
    let len = u32::from_be_bytes(head[..4].try_into().expect("4 bytes")) as usize;
    if len == 0 || len > MAX_OPENING {
        return Err(wire::WireError::BadLength(len).into());
    }
    let (res, body) = link.read_exact(vec![0u8; len]).await;
    res.map_err(framed::FrameError::Io)?;
    let mut whole = head;
    whole.extend_from_slice(&body);
    match wire::decode(&whole)? {
        Some((frame, used)) if used == whole.len() => Ok(frame),
        _ => Err(framed::FrameError::TruncatedEof),
    }
}

/// Checks the opening's proof, time and nonce; why not, for the log.
fn admit(
    shared: &EdgeShared,
    edge: &str,
    at_ms: u64,
    nonce: u64,
    start: &StreamStart,
    mac: &[u8; 32],
) -> Result<(), &'static str> {
    let Some(key) = shared.peers.key() else {
        return Err("the fleet peer key is not loaded yet");
    };
    let opening = proof::Opening {
        from: edge,
        to: &shared.edge_id,
        to_boot: shared.peers.boot,
        at_ms,
        nonce,
        start,
    };
    if !proof::verify(&key, &opening, mac) {
        return Err("wrong proof (another fleet's key, meant for another edge, or from before this edge restarted)");
    }
    let now = crate::clock::wall_ms().max(0) as u64;
    shared
        .peers
        .replay
        .admit(edge, nonce, at_ms, now)
        .map_err(proof::Stale::as_str)
}

async fn refuse(shared: &EdgeShared, link: TcpStream) {
    shared.peers.stats.in_refused.inc();
    status(link, StreamCode::PeerRefused).await;
}

/// Sends a failure status and closes the link.
async fn status(mut link: TcpStream, code: StreamCode) {
    let mut out = bytes::BytesMut::with_capacity(8);
    wire::encode(&Frame::StreamStatus { code }, &mut out);
    let _ = link.write_all(out).await;
}

/// The status `Ok` and whatever the agent sent after its own, to the sending edge;
/// then the two streams joined until both directions end.
async fn join(mut link: TcpStream, channel: DataChannel, start: &StreamStart, progress: &Progress) {
    let mut head = bytes::BytesMut::with_capacity(64);
    wire::encode(
        &Frame::StreamStatus {
            code: StreamCode::Ok,
        },
        &mut head,
    );
    let mut channel = channel;
    let (DataChannel::Plain(_, reader) | DataChannel::Tls(_, reader)) = &mut channel;
    head.extend_from_slice(&reader.buffer_mut().split());
    let (res, _) = link.write_all(head).await;
    if let Err(e) = res {
        sockets::reset_on_close(channel.as_raw_fd());
        return tracing::debug!(client = %start.client, error = %e, "peer link: sending the status failed");
    }
    let result = match channel {
        DataChannel::Plain(tcp, _) => io::copy::forward_returning(link, tcp, progress).await.0,
        DataChannel::Tls(tls, _) => {
            Box::pin(io::copy::forward_returning(link, *tls, progress))
                .await
                .0
        }
    };
    if let Err(e) = result {
        tracing::debug!(client = %start.client, error = %e, "peer link: stream ended with an error");
    }
}
