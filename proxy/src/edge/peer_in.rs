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
//! are joined: both carry chunk-framed streams, so the chunks are relayed as they are,
//! in both directions, until both directions ended (io/chunked_relay.rs) or the session
//! is cut. The data channel is parked with its session again and the link waits for the
//! sending edge's next opening (each proven on its own), when their far ends keep them.

use std::{
    net::SocketAddr,
    os::fd::AsRawFd,
    pin::pin,
    sync::Arc,
    time::{Duration, Instant},
};

use monoio::{io::AsyncWriteRentExt, net::TcpStream};

use super::{
    datachan::{DataChannel, ParkedChannel},
    open,
    pipeline::unless_kicked,
    preauth::PreAuthSlot,
    EdgeShared,
};
use crate::{
    fleet::proof,
    io::{chunked_relay, chunked_splice, framed, idle, idle::Progress, sockets},
    wire::{self, Frame, StreamCode, StreamStart},
};

/// How long the stream may take to open here: less than the sending edge waits for
/// the status ([`super::datachan::STATUS_WAIT`]).
const PEER_OPEN_WAIT: Duration = Duration::from_secs(10);

/// How long a link whose stream ended waits for the next opening from its edge: longer
/// than that edge keeps it idle ([`super::peer_links::REUSE_WITHIN`]), so it is the
/// sending edge that stops using a link, not this one that closes it under a stream.
pub const LINK_IDLE: Duration = Duration::from_secs(30);

/// Serves one peer link whose magic the agent port has read, by `deadline` for its
/// opening; `preauth` (its place among unauthenticated connections) is released once
/// the opening is proven. The link then carries stream after stream from that edge,
/// each opening proven on its own, while both edges keep it.
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
    let Some((edge, start)) = proven(&shared, from, opening, None) else {
        return refuse(&shared, link).await;
    };
    drop(preauth);
    crate::fleet::keep_link_alive(link.as_raw_fd());
    let mut reader = framed::FrameReader::new();
    let mut start = start;
    loop {
        let Some(kept) = carry(&shared, &edge, link, &mut reader, &start).await else {
            return;
        };
        link = kept;
        if shared.leaving.load(std::sync::atomic::Ordering::Relaxed) {
            return;
        }
        // The next opening from the same edge, or the link's end (that edge closed it,
        // or kept it idle past its reuse window).
        let next = match idle::within(LINK_IDLE, reader.next(&mut link)).await {
            Ok(Ok(Some(frame))) => frame,
            Ok(Ok(None)) | Err(_) => return,
            Ok(Err(e)) => {
                crate::log_throttled!(info, %from, peer_edge = %edge, error = %e,
                    "peer link: unreadable opening after a stream; closed");
                return;
            }
        };
        match proven(&shared, from, next, Some(&edge)) {
            Some((_, next_start)) => start = next_start,
            None => return refuse(&shared, link).await,
        }
    }
}

/// The opening's edge and stream when it is a [`Frame::PeerStream`] with a valid proof
/// (from `edge` on a link that already carried its streams); logged otherwise.
fn proven(
    shared: &EdgeShared,
    from: SocketAddr,
    opening: Frame,
    edge_of_link: Option<&str>,
) -> Option<(String, StreamStart)> {
    let Frame::PeerStream {
        edge,
        at_ms,
        nonce,
        proof: mac,
        start,
    } = opening
    else {
        crate::log_throttled!(info, %from, frame = opening.name(), "peer link: unexpected opening frame; closed");
        return None;
    };
    if edge_of_link.is_some_and(|e| e != edge) {
        crate::log_throttled!(warn, %from, peer_edge = %edge, "peer link refused: an opening from another edge than the link's");
        return None;
    }
    if let Err(why) = admit(shared, &edge, at_ms, nonce, &start, &mac) {
        crate::log_throttled!(warn, %from, peer_edge = %edge, reason = why, "peer link refused");
        return None;
    }
    Some((edge, start))
}

/// One proven stream: opened on the URL's local pool, its status sent back, then
/// relayed until both directions end; the link back when both edges keep it.
async fn carry(
    shared: &EdgeShared,
    edge: &str,
    link: TcpStream,
    reader: &mut framed::FrameReader,
    start: &StreamStart,
) -> Option<TcpStream> {
    // A drain waits for it like for a connection accepted here; a sending edge that
    // vanishes without closing is noticed by keepalive.
    let _in_flight = shared.in_flight.enter();
    let url = &start.internal_url;
    let Some(pool) = shared.registry.lookup(url) else {
        shared.peers.stats.in_failed.inc();
        crate::log_throttled!(info, peer_edge = %edge, client = %start.client, url = %url,
            "peer link: no local session for the URL (any more)");
        status(link, StreamCode::UnknownEndpoint).await;
        return None;
    };
    if pool
        .members
        .iter()
        .any(|m| m.upstream == crate::wire::UpstreamProtocol::Http2)
    {
        // The sending edge speaks HTTP/1.1 into the stream; an HTTP/2 upstream is
        // spoken to only by an edge holding one of its agents' sessions.
        shared.peers.stats.in_failed.inc();
        crate::log_throttled!(warn, peer_edge = %edge, client = %start.client, url = %url,
            "peer link: refused: the URL's upstream speaks HTTP/2, which only an edge holding the agent's session speaks to");
        status(link, StreamCode::Denied).await;
        return None;
    }
    if let Some(policy) = &pool.policy {
        // The rules of an http:// agent endpoint run on each request, which only the
        // edge that parses the requests sees; this edge only carries the stream on.
        // Refused rather than let them be skipped.
        if !policy.compiled.http().is_empty() {
            shared.peers.stats.in_failed.inc();
            crate::log_throttled!(warn, peer_edge = %edge, client = %start.client, url = %url,
                "peer link: refused: the agent endpoint's policy has HTTP rules, which run only on the edge holding the agent's session (the client's edge does not hold one)");
            status(link, StreamCode::Denied).await;
            return None;
        }
        let facts = super::conn_facts::ForwardedConn;
        if let Err(why) = policy.check(url, start.client, &facts) {
            shared.peers.stats.in_failed.inc();
            crate::log_throttled!(info, peer_edge = %edge, client = %start.client, url = %url,
                rule = why.rule(), cause = why.cause().as_str(),
                "peer link: denied by the agent endpoint's traffic policy");
            status(link, StreamCode::Denied).await;
            return None;
        }
    }
    let to = open::Target {
        endpoint: "peer link",
        peer: start.client,
        url,
    };
    let stream = Frame::Stream(start.clone());
    // Within the sending edge's wait for the status, so it never gives up on an
    // opening this edge then completes.
    let opening = open::open(&pool, &shared.registry, &stream, &[], &to, false);
    let opened = match idle::within(PEER_OPEN_WAIT, opening).await {
        Ok(Ok(opened)) => opened,
        Err(_) => {
            shared.peers.stats.in_failed.inc();
            crate::log_throttled!(info, peer_edge = %edge, client = %start.client, url = %url,
                "peer link: no pool member took the connection in time");
            status(link, StreamCode::UpstreamFailed).await;
            return None;
        }
        Ok(Err(failure)) => {
            shared.peers.stats.in_failed.inc();
            crate::log_throttled!(info, peer_edge = %edge, client = %start.client, url = %url,
                tried = failure.tried, last = failure.last.map_or("", |e| e.as_str()),
                "peer link: no pool member could take the connection");
            status(link, StreamCode::UpstreamFailed).await;
            return None;
        }
    };
    shared.peers.stats.in_opened.inc();
    tracing::debug!(peer_edge = %edge, client = %start.client, url = %url, "peer link: stream handed to a local session");
    let session = &opened.load.0.session;
    let link_fd = link.as_raw_fd();
    let channel_fd = opened.channel.as_raw_fd();
    let progress = Progress::default();
    let work = pin!(join(link, reader, opened.channel, start, &progress));
    match unless_kicked(session, [link_fd, channel_fd], work).await {
        None => {
            crate::log_throttled!(info, peer_edge = %edge, client = %start.client, session = session.id,
                "peer link cut: its agent session was ended (token revoked or user deactivated)");
            None
        }
        Some(Joined { link, channel }) => {
            if let Some(channel) = channel {
                session.park(channel);
            }
            link
        }
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

/// What a joined stream leaves: the link and the agent's data channel, each when both
/// its ends kept it.
struct Joined {
    link: Option<TcpStream>,
    channel: Option<ParkedChannel>,
}

/// The status `Ok` to the sending edge; then the stream (the agent's first chunks
/// may already be in its channel's reader) relayed chunk by chunk until both directions end: spliced from a
/// `tcp` data channel, copied from a `tls` one.
async fn join(
    mut link: TcpStream,
    link_reader: &mut framed::FrameReader,
    channel: DataChannel,
    start: &StreamStart,
    progress: &Progress,
) -> Joined {
    let mut head = bytes::BytesMut::with_capacity(64);
    wire::encode(
        &Frame::StreamStatus {
            code: StreamCode::Ok,
        },
        &mut head,
    );
    let (res, _) = link.write_all(head).await;
    if let Err(e) = res {
        sockets::reset_on_close(channel.as_raw_fd());
        tracing::debug!(client = %start.client, error = %e, "peer link: sending the status failed");
        return Joined {
            link: None,
            channel: None,
        };
    }
    let (result, link, channel) = match channel {
        DataChannel::Plain(tcp, mut reader) => {
            let relayed =
                chunked_splice::relay(link, link_reader, tcp, &mut reader, progress).await;
            (
                relayed.result,
                relayed.a_again,
                relayed.b_again.map(ParkedChannel::plain),
            )
        }
        DataChannel::Tls(tls, mut reader) => {
            let relayed = Box::pin(chunked_relay::relay(
                link,
                link_reader,
                *tls,
                &mut reader,
                progress,
            ))
            .await;
            (
                relayed.result,
                relayed.a_again,
                relayed.b_again.and_then(ParkedChannel::tls),
            )
        }
    };
    if let Err(e) = result {
        tracing::debug!(client = %start.client, error = %e, "peer link: stream ended with an error");
    }
    Joined { link, channel }
}
