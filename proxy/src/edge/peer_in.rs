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

use std::{net::SocketAddr, os::fd::AsRawFd, pin::pin, sync::Arc, time::Instant};

use monoio::{io::AsyncWriteRentExt, net::TcpStream};

use super::{
    datachan::DataChannel, open, pipeline::unless_kicked, preauth::PreAuthSlot, EdgeShared,
};
use crate::{
    fleet::proof,
    io::{self, framed, idle, idle::Progress, sockets},
    wire::{self, Frame, StreamCode, StreamStart},
};

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
    let left = deadline.saturating_duration_since(Instant::now());
    let opening = match idle::within(left, framed::read_exact_frame(&mut link)).await {
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
    let opened = match open::open(&pool, &shared.registry, &stream, &[], &to).await {
        Ok(opened) => opened,
        Err(failure) => {
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
    if !proof::verify(&key, edge, at_ms, nonce, start, mac) {
        return Err("wrong proof (not this fleet's key)");
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
    let result = match channel {
        DataChannel::Plain(tcp, reader) => {
            head.extend_from_slice(&reader.into_leftover());
            let (res, _) = link.write_all(head).await;
            match res {
                Ok(_) => io::copy::forward_returning(link, tcp, progress).await.0,
                Err(e) => {
                    sockets::reset_on_close(tcp.as_raw_fd());
                    return tracing::debug!(client = %start.client, error = %e, "peer link: sending the status failed");
                }
            }
        }
        DataChannel::Tls(tls, reader) => {
            head.extend_from_slice(&reader.into_leftover());
            let (res, _) = link.write_all(head).await;
            match res {
                Ok(_) => {
                    Box::pin(io::copy::forward_returning(link, *tls, progress))
                        .await
                        .0
                }
                Err(e) => {
                    sockets::reset_on_close(tls.as_raw_fd());
                    return tracing::debug!(client = %start.client, error = %e, "peer link: sending the status failed");
                }
            }
        }
    };
    if let Err(e) = result {
        tracing::debug!(client = %start.client, error = %e, "peer link: stream ended with an error");
    }
}
