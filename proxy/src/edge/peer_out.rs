//! A public connection carried to another edge of the fleet: the route phase found no
//! local session for its URL, but the fleet's routes (crate::fleet) name edges that
//! hold one. The policy was decided here, on the real client address; the connection
//! goes over a peer link to one of those edges, which hands it to its session
//! (edge/peer_in.rs).
//!
//! A peer link is a TCP connection to the other edge's agent port:
//! [`PEER_STREAM_MAGIC`], a [`Frame::PeerStream`] (the stream header, proven with the
//! fleet key) and the client's early bytes as one chunk, then the other edge's
//! [`Frame::StreamStatus`] once its agent connected the upstream. From there it is a
//! `tcp` data channel carrying one stream: chunk-framed both ways, spliced here. Until
//! that status, nothing has reached an upstream, so a failed attempt moves on to the
//! next route (at most [`MAX_ATTEMPTS`] edges), invisibly to the client.

use std::{sync::Arc, time::Duration};

use bytes::BufMut;
use monoio::{io::AsyncWriteRentExt, net::TcpStream};

use super::{
    datachan::{DataChannel, OpenError, STATUS_WAIT},
    open::NoMember,
    pool::MAX_ATTEMPTS,
    EdgeShared,
};
use crate::{
    fleet::{proof, PeerRoute},
    io::{framed::FrameReader, idle},
    wire::{self, Frame, StreamCode, StreamStart, PEER_STREAM_MAGIC},
};

/// Longest wait for another edge to accept a peer link.
pub const PEER_CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

/// A stream the other edge's agent accepted.
pub struct PeerOpened {
    /// The peer link, ready for the pump (the next byte is the upstream's).
    pub channel: DataChannel,
    /// The edge that took it.
    pub edge: Arc<str>,
    /// Edges that failed first.
    pub failovers: usize,
}

/// Opens `start` (with the client's `early` bytes) on one of `routes`, trying the next
/// while nothing reached an upstream.
pub async fn open(
    shared: &EdgeShared,
    routes: &[PeerRoute],
    start: &StreamStart,
    early: &[u8],
) -> Result<PeerOpened, NoMember> {
    let Some(key) = shared.peers.key() else {
        crate::log_throttled!(warn, url = %start.internal_url,
            "another edge holds the URL, but the fleet peer key is not loaded yet (etcd away since start); closed");
        return Err(NoMember {
            tried: 0,
            last: None,
        });
    };
    let first = rand::random_range(0..routes.len());
    let mut last = None;
    let attempts = routes.len().min(MAX_ATTEMPTS);
    for i in 0..attempts {
        let route = &routes[(first + i) % routes.len()];
        match attempt(shared, &key, route, start, early).await {
            Ok(channel) => {
                shared.peers.stats.out_opened.inc();
                return Ok(PeerOpened {
                    channel,
                    edge: route.edge.clone(),
                    failovers: i,
                });
            }
            Err(why) => {
                shared.peers.stats.out_failed.inc();
                crate::log_throttled!(info, url = %start.internal_url, peer_edge = %route.edge,
                    addr = %route.addr, reason = why.as_str(), "peer link failed; trying the next route");
                last = Some(why.open_error());
            }
        }
    }
    Err(NoMember {
        tried: attempts,
        last,
    })
}

/// Why one peer link failed.
#[derive(Debug, Clone, Copy)]
enum PeerFailure {
    Connect,
    ConnectTimeout,
    Broke,
    NoStatus,
    NoSession,
    UpstreamFailed,
    Refused,
    Unexpected,
}

impl PeerFailure {
    fn as_str(self) -> &'static str {
        match self {
            PeerFailure::Connect => "connect to the other edge failed",
            PeerFailure::ConnectTimeout => "connect to the other edge timed out",
            PeerFailure::Broke => "peer link broke before the status",
            PeerFailure::NoStatus => "no status from the other edge in time",
            PeerFailure::NoSession => "the other edge has no session for the URL any more",
            PeerFailure::UpstreamFailed => "no member of the other edge could take it",
            PeerFailure::Refused => {
                "the other edge refused the opening (another fleet key, or clocks apart)"
            }
            PeerFailure::Unexpected => "unexpected frame instead of a status",
        }
    }

    /// The nearest pool open error, for the connection's account.
    fn open_error(self) -> OpenError {
        match self {
            PeerFailure::Connect | PeerFailure::ConnectTimeout | PeerFailure::Broke => {
                OpenError::Broke
            }
            PeerFailure::NoStatus => OpenError::NoStatus,
            PeerFailure::NoSession => OpenError::UnknownUrl,
            PeerFailure::UpstreamFailed => OpenError::UpstreamFailed,
            PeerFailure::Refused | PeerFailure::Unexpected => OpenError::UnexpectedFrame,
        }
    }
}

async fn attempt(
    shared: &EdgeShared,
    key: &[u8; 32],
    route: &PeerRoute,
    start: &StreamStart,
    early: &[u8],
) -> Result<DataChannel, PeerFailure> {
    let mut tcp = idle::within(PEER_CONNECT_TIMEOUT, TcpStream::connect_addr(route.addr))
        .await
        .map_err(|_| PeerFailure::ConnectTimeout)?
        .map_err(|_| PeerFailure::Connect)?;
    let _ = tcp.set_nodelay(true);
    crate::fleet::keep_link_alive(std::os::fd::AsRawFd::as_raw_fd(&tcp));
    let at_ms = crate::clock::wall_ms().max(0) as u64;
    let nonce: u64 = rand::random();
    let proven = proof::Opening {
        from: &shared.edge_id,
        to: &route.edge,
        to_boot: route.boot,
        at_ms,
        nonce,
        start,
    };
    let opening = Frame::PeerStream {
        edge: shared.edge_id.clone(),
        at_ms,
        nonce,
        proof: proof::prove(key, &proven),
        start: start.clone(),
    };
    let mut first = bytes::BytesMut::with_capacity(128 + early.len());
    first.extend_from_slice(&PEER_STREAM_MAGIC);
    wire::encode(&opening, &mut first);
    if !early.is_empty() {
        first.put_u32(early.len() as u32);
        first.extend_from_slice(early);
    }
    let (res, _) = tcp.write_all(first).await;
    res.map_err(|_| PeerFailure::Broke)?;
    let mut reader = FrameReader::new();
    match idle::within(STATUS_WAIT, reader.next(&mut tcp)).await {
        Err(_) => Err(PeerFailure::NoStatus),
        Ok(Err(_)) | Ok(Ok(None)) => Err(PeerFailure::Broke),
        Ok(Ok(Some(Frame::StreamStatus { code }))) => match code {
            StreamCode::Ok => Ok(DataChannel::Plain(tcp, reader)),
            StreamCode::UnknownEndpoint => Err(PeerFailure::NoSession),
            StreamCode::UpstreamFailed => Err(PeerFailure::UpstreamFailed),
            StreamCode::PeerRefused => Err(PeerFailure::Refused),
        },
        Ok(Ok(Some(_))) => Err(PeerFailure::Unexpected),
    }
}
