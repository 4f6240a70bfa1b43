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
//! `tcp` data channel: chunk-framed both ways, spliced here, and kept for the next
//! stream to the same edge once both ended cleanly (edge/peer_links.rs; no magic then).
//! Until that status, nothing has reached an upstream, so a failed attempt moves on to
//! the next route (at most [`MAX_ATTEMPTS`] edges), invisibly to the client.
//!
//! Which edge first: of two routes drawn at random, the one with less load per unit of
//! capacity, as each edge publishes it (its members' weights, the streams on them) and
//! as this worker sees it (its streams open there: [`PeerLoad`]).

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
    /// The edge that took it, the stream counted against it while it flows.
    pub load: PeerLoad,
    /// Edges that failed first.
    pub failovers: usize,
}

/// Opens `start` (with the client's `early` bytes) on one of `routes`, the least
/// loaded of two drawn first, trying the next while nothing reached an upstream.
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
    let first = first_choice(
        routes,
        rand::random::<u32>() as usize,
        rand::random::<u32>() as usize,
    );
    let mut last = None;
    let attempts = routes.len().min(MAX_ATTEMPTS);
    for i in 0..attempts {
        let route = &routes[(first + i) % routes.len()];
        match attempt(shared, &key, route, start, early).await {
            Ok(channel) => {
                shared.peers.stats.out_opened.inc();
                return Ok(PeerOpened {
                    channel,
                    load: PeerLoad::new(route),
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

/// The route tried first: of two drawn at random (`draw_a`, `draw_b`), the one with
/// less load per unit of capacity (power of two choices, as local pools do). An edge's
/// load is at least what it last published (at most [`crate::fleet::routes::LOAD_CHECK`]
/// old, this worker's streams there included once published) and at least the streams
/// this worker has open there now, so a burst is spread before the next publication
/// and nothing is counted twice after it.
fn first_choice(routes: &[PeerRoute], draw_a: usize, draw_b: usize) -> usize {
    let n = routes.len();
    if n < 2 {
        return 0;
    }
    let a = draw_a % n;
    let b = (a + 1 + draw_b % (n - 1)) % n;
    OUTSTANDING.with_borrow(|outstanding| {
        let load = |r: &PeerRoute| {
            u64::from(r.load.active).max(u64::from(outstanding.get(&r.edge).copied().unwrap_or(0)))
        };
        let capacity = |r: &PeerRoute| u64::from(r.load.capacity.max(1));
        let (ra, rb) = (&routes[a], &routes[b]);
        if load(rb) * capacity(ra) < load(ra) * capacity(rb) {
            b
        } else {
            a
        }
    })
}

thread_local! {
    /// Streams this worker has open on each other edge.
    static OUTSTANDING: std::cell::RefCell<std::collections::HashMap<Arc<str>, u32>> =
        Default::default();
}

/// Counts a stream against the edge carrying it (in this worker) until dropped, and
/// knows where its link may wait for the next stream.
pub struct PeerLoad {
    /// The edge.
    pub edge: Arc<str>,
    boot: u64,
    reuses_links: bool,
}

impl PeerLoad {
    fn new(route: &PeerRoute) -> Self {
        OUTSTANDING.with_borrow_mut(|o| *o.entry(route.edge.clone()).or_default() += 1);
        Self {
            edge: route.edge.clone(),
            boot: route.boot,
            reuses_links: route.reuses_links,
        }
    }

    /// The load of a stream on a connection kept alive through `route`'s edge (HTTP
    /// keep-alive over a peer link), counted like a new one.
    pub fn reused(route: &PeerRoute) -> Self {
        Self::new(route)
    }

    /// Keeps the link of a stream both edges ended cleanly for the next stream to the
    /// same edge, if that edge keeps its end too (otherwise it is closed).
    pub fn keep_link(&self, link: std::net::TcpStream) {
        if self.reuses_links {
            super::peer_links::put(self.edge.clone(), self.boot, link);
        }
    }
}

impl Drop for PeerLoad {
    fn drop(&mut self) {
        OUTSTANDING.with_borrow_mut(|o| {
            if let Some(n) = o.get_mut(&self.edge) {
                *n -= 1;
                if *n == 0 {
                    o.remove(&self.edge);
                }
            }
        });
    }
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
    Denied,
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
            PeerFailure::Denied => "the agent endpoint's traffic policy refused the client",
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
            PeerFailure::Refused | PeerFailure::Denied | PeerFailure::Unexpected => {
                OpenError::UnexpectedFrame
            }
        }
    }
}

/// One edge: on a link kept from an earlier stream when this worker has one (a link
/// that broke meanwhile is replaced by a fresh one), else on a new link.
async fn attempt(
    shared: &EdgeShared,
    key: &[u8; 32],
    route: &PeerRoute,
    start: &StreamStart,
    early: &[u8],
) -> Result<DataChannel, PeerFailure> {
    if route.reuses_links {
        if let Some(link) = super::peer_links::take(&route.edge, route.boot) {
            if let Ok(tcp) = TcpStream::from_std(link) {
                match announce(shared, key, route, start, early, tcp, false).await {
                    Ok(channel) => {
                        shared.peers.stats.links_reused.inc();
                        return Ok(channel);
                    }
                    Err(PeerFailure::Broke) => {}
                    Err(other) => return Err(other),
                }
            }
        }
    }
    let tcp = idle::within(PEER_CONNECT_TIMEOUT, TcpStream::connect_addr(route.addr))
        .await
        .map_err(|_| PeerFailure::ConnectTimeout)?
        .map_err(|_| PeerFailure::Connect)?;
    let _ = tcp.set_nodelay(true);
    let fd = std::os::fd::AsRawFd::as_raw_fd(&tcp);
    crate::fleet::keep_link_alive(fd);
    // Non-blocking for good: the splice pump needs it, and sets it no more per stream.
    crate::io::sockets::set_nonblocking(fd).map_err(|_| PeerFailure::Connect)?;
    shared.peers.stats.links_connected.inc();
    announce(shared, key, route, start, early, tcp, true).await
}

/// Sends the proven opening (after the magic on a new link) and the client's early
/// bytes, and reads the other edge's status.
async fn announce(
    shared: &EdgeShared,
    key: &[u8; 32],
    route: &PeerRoute,
    start: &StreamStart,
    early: &[u8],
    mut tcp: TcpStream,
    new_link: bool,
) -> Result<DataChannel, PeerFailure> {
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
    if new_link {
        first.extend_from_slice(&PEER_STREAM_MAGIC);
    }
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
            StreamCode::Denied => Err(PeerFailure::Denied),
        },
        Ok(Ok(Some(_))) => Err(PeerFailure::Unexpected),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fleet::UrlLoad;

    fn route(edge: &str, capacity: u32, active: u32) -> PeerRoute {
        PeerRoute {
            edge: Arc::from(edge),
            addr: "127.0.0.2:4443".parse().unwrap(),
            boot: 1,
            load: UrlLoad { capacity, active },
            reuses_links: true,
        }
    }

    #[test]
    fn the_lighter_of_two_edges_is_tried_first_per_unit_of_capacity() {
        let routes = [route("edge-a", 1, 10), route("edge-b", 1, 2)];
        for draws in [(0, 0), (1, 0), (0, 7), (1, 3)] {
            assert_eq!(first_choice(&routes, draws.0, draws.1), 1, "{draws:?}");
        }
        // Twice the capacity carries twice the load before it loses.
        let routes = [route("edge-a", 2, 10), route("edge-b", 1, 6)];
        assert_eq!(first_choice(&routes, 1, 0), 0);
        // Equal loads: the first draw, so idle edges share evenly.
        let routes = [route("edge-a", 1, 0), route("edge-b", 1, 0)];
        assert_eq!(first_choice(&routes, 0, 0), 0);
        assert_eq!(first_choice(&routes, 1, 0), 1);
        assert_eq!(first_choice(&routes[..1], 5, 5), 0);
    }

    #[test]
    fn streams_this_worker_opened_count_until_they_end() {
        let routes = [route("edge-x", 1, 0), route("edge-y", 1, 0)];
        let held: Vec<PeerLoad> = (0..3).map(|_| PeerLoad::new(&routes[0])).collect();
        assert_eq!(first_choice(&routes, 0, 0), 1, "x has 3 of ours open");
        let on_y: Vec<PeerLoad> = (0..4).map(|_| PeerLoad::new(&routes[1])).collect();
        assert_eq!(first_choice(&routes, 1, 0), 0, "now y has more");
        drop(held);
        drop(on_y);
        assert!(OUTSTANDING.with_borrow(|o| o.is_empty()));
        assert_eq!(first_choice(&routes, 1, 0), 1);

        // Once y has published our 4 streams (and x its 5 of others'), ours are not
        // counted again on top: y (4) is still lighter than x (5).
        let routes = [route("edge-x", 1, 5), route("edge-y", 1, 4)];
        let _on_y: Vec<PeerLoad> = (0..4).map(|_| PeerLoad::new(&routes[1])).collect();
        assert_eq!(first_choice(&routes, 0, 0), 1);
    }
}
