//! One public connection at the edge, as a pipeline of named phases, read top to
//! bottom in [`forward`]:
//!
//! 1. **admit** ([`admit`]): the endpoint's connection limits, then its traffic policy
//!    on the client address; the policy names the target (an internal URL).
//! 2. **route** ([`route`]): who serves the target: the local session pool bound to the
//!    URL ([`Route::Local`]), else another edge of the fleet that holds a session for
//!    it ([`Route::Peer`], over a peer link: edge/peer_out.rs).
//! 3. **terminate** ([`client_side`]): the client's TLS is finished at the edge when
//!    the policy reached a `terminate-tls` action or the endpoint says `terminate_tls`
//!    (edge/terminate.rs).
//! 4. **open** (edge/open.rs): a data channel of a pool member, the stream announced on
//!    it (with the bytes a plain client has already sent: [`EARLY_READ`]), the agent's
//!    status; another member while the stream is replayable, and another edge of the
//!    fleet when no local member could take it.
//! 5. **pump** ([`pump`]): bytes both ways over the data channel (edge/datachan.rs
//!    decides splice or copy, and parks the channel again when both sides kept it),
//!    until both sides end, the idle timeout, or the agent session is kicked.
//! 6. **account** (edge/account.rs): each phase's result is an
//!    [`Outcome`](super::account::Outcome) value, logged and counted in one place.
//!
//! Connections on the shared `tls://` port first have their endpoint picked by the
//! ClientHello's SNI (edge/tls_port.rs).

use std::{
    future::Future,
    net::SocketAddr,
    os::fd::{AsRawFd, RawFd},
    pin::{pin, Pin},
    sync::Arc,
};

use monoio::net::TcpStream;
use sluice_policy::{Cause, CompiledPolicy, ConnInfo, Outcome as Verdict, Why};

use super::{
    account::{Conn, Outcome, StreamEnd},
    conn_facts::{decide, PublicConn},
    conn_limits::IpSlot,
    datachan::{DataChannel, ParkedChannel},
    open, peer_out,
    pool::Pool,
    session_handle::SessionHandle,
    EdgeShared, LiveEndpoint,
};
use crate::{
    fleet::PeerRoutes,
    io::{
        self,
        idle::{until_idle, Progress},
        maybe_tls::MaybeTls,
        sockets,
    },
    wire::{Frame, StreamStart},
};

/// The client, plain or with its TLS terminated at the edge.
type Client = MaybeTls<rustls::ServerConnection>;

/// At most this many bytes a plain client already sent travel with the stream header
/// (kept for a replay on another pool member), so a client that speaks first reaches
/// its upstream without waiting for the agent's status.
const EARLY_READ: usize = 16 * 1024;

/// Forwards one accepted public connection through every phase. `early` holds bytes
/// already read from the client (a `tls://` endpoint's ClientHello); they reach the
/// upstream first.
#[allow(
    clippy::manual_async_fn,
    reason = "an async block keeps its arguments once; an async fn, twice"
)]
pub(super) fn forward(
    client: TcpStream,
    peer: SocketAddr,
    endpoint: Arc<LiveEndpoint>,
    shared: Arc<EdgeShared>,
    early: Vec<u8>,
) -> impl Future<Output = ()> {
    async move {
        let accepted_at = std::time::Instant::now();
        let _in_flight = shared.in_flight.enter();
        let _active = endpoint.stats.active.track();
        endpoint.stats.connections.inc();
        // The account phase for this connection. Built at each use rather than kept in a
        // local: a local would live across every await below and grow each connection's
        // task (2568 bytes with the macro and the destructuring below, by
        // `rustc -Zprint-type-sizes`).
        macro_rules! account {
            ($outcome:expr) => {
                Conn {
                    edge: &shared.stats,
                    endpoint: &endpoint,
                    peer,
                }
                .account($outcome)
            };
        }

        let (_ip_slot, target, policy_tls) = {
            let policy = endpoint.policy.load();
            let facts = PublicConn {
                server: || server_address(&client, endpoint.addr),
                hello: &early,
            };
            match admit(&endpoint, peer, &policy, &facts) {
                Ok(Admitted {
                    ip_slot,
                    target: Some(target),
                    would_deny,
                    terminate_tls,
                }) => {
                    if let Some(why) = would_deny {
                        account!(Outcome::WouldDeny(why));
                    }
                    (ip_slot, target, terminate_tls)
                }
                // A policy that decides only per request (config validation keeps it
                // off byte endpoints): nothing to forward to.
                Ok(_) => {
                    sockets::reset_on_close(client.as_raw_fd());
                    return account!(Outcome::Denied(policy.evaluate(peer).why()));
                }
                Err(refusal) => {
                    sockets::reset_on_close(client.as_raw_fd());
                    return account!(refusal);
                }
            }
        };

        let route = match route(&shared, &target) {
            Ok(route) => route,
            Err(refusal) => return account!(refusal),
        };
        if let Route::Local(pool) = &route {
            let facts = PublicConn {
                server: || server_address(&client, endpoint.addr),
                hello: &early,
            };
            if let Some(policy) = &pool.policy {
                if let Err(why) = policy.check(&endpoint.url, peer, &facts) {
                    sockets::reset_on_close(client.as_raw_fd());
                    return account!(Outcome::DeniedAtEndpoint {
                        target: &target,
                        why
                    });
                }
            }
        }

        // TCP_NODELAY comes from the listener (io/sockets.rs).
        let server = server_address(&client, endpoint.addr);
        let tls = policy_tls.or_else(|| endpoint.terminate_tls.clone());
        let (client, mut early) = match client_side(client, early, tls).await {
            Ok(client) => client,
            Err(reason) => return account!(Outcome::TlsHandshakeFailed { reason }),
        };
        if let MaybeTls::Plain(plain) = &client {
            sockets::read_ready::<EARLY_READ>(plain.as_raw_fd(), &mut early);
        }

        // Nothing has reached an upstream until the agent's status says so: a member that
        // fails before that is skipped for another one, invisibly to the client.
        let opening = Box::pin(open_phase(
            &shared, &endpoint, route, early, peer, server, &target, false,
        ));
        let (
            Carried {
                via,
                channel,
                failovers,
            },
            early_bytes,
        ) = match opening.await {
            Ok(opened) => opened,
            Err(failure) => {
                // Like a refused connection: the client sees a reset, not an empty stream.
                sockets::reset_on_close(client.as_raw_fd());
                return account!(Outcome::NoMember {
                    target: &target,
                    failure,
                });
            }
        };
        account!(Outcome::Forwarded {
            failovers,
            open_latency: accepted_at.elapsed(),
        });

        let keeper = match &via {
            Via::Member(load) => Keeper::Session(&load.0.session),
            Via::Peer(load) => Keeper::PeerLink(load),
        };
        let mut end = pump(&endpoint, shared.pump, client, channel, keeper).await;
        if let StreamEnd::Closed(bytes) = &mut end {
            bytes.inbound_to_outbound += early_bytes;
        }
        account!(Outcome::Ended(end));
    }
}

/// Who carries an opened stream.
pub(super) enum Via {
    /// A local pool member (its load guard, held while the stream flows).
    Member(super::pool::MemberLoad),
    /// Another edge of the fleet, over a peer link (the stream counted against it).
    Peer(peer_out::PeerLoad),
}

/// An opened stream: who carries it, the channel ready for the pump, and how many
/// members (or edges) failed first.
pub(super) struct Carried {
    pub(super) via: Via,
    pub(super) channel: DataChannel,
    pub(super) failovers: usize,
}

/// The open phase (edge/open.rs, or edge/peer_out.rs for another edge), boxed by the
/// caller so that the stream header and the client's early bytes take room only while
/// it runs: the stream announced with those bytes, and how many there were (the pump
/// never sees them). `http_requests`: as [`open::open`]'s.
#[allow(
    clippy::too_many_arguments,
    reason = "the open phase's inputs, each named"
)]
pub(super) async fn open_phase(
    shared: &EdgeShared,
    endpoint: &LiveEndpoint,
    route: Route,
    early: Vec<u8>,
    peer: SocketAddr,
    server: SocketAddr,
    target: &str,
    http_requests: bool,
) -> Result<(Carried, u64), open::NoMember> {
    let start = StreamStart {
        client: peer,
        server,
        internal_url: target.to_owned(),
    };
    let carried = match route {
        Route::Local(pool) => {
            let to = open::Target {
                endpoint: &endpoint.url,
                peer,
                url: target,
            };
            let stream = Frame::Stream(start);
            match open::open(&pool, &shared.registry, &stream, &early, &to, http_requests).await {
                Ok(opened) => Carried {
                    via: Via::Member(opened.load),
                    channel: opened.channel,
                    failovers: opened.failovers,
                },
                // Nothing reached an upstream: another edge of the fleet holding the URL
                // may still take it (the local sessions ended meanwhile, say moved off
                // this edge as it leaves its fleet).
                Err(failure) => {
                    let routes = arc_swap::Guard::into_inner(shared.peers.routes());
                    let Frame::Stream(start) = stream else {
                        unreachable!("built above")
                    };
                    if routes.lookup(target).is_none() {
                        return Err(failure);
                    }
                    carry_to_peer(shared, endpoint, &routes, &start, &early).await?
                }
            }
        }
        Route::Peer(routes) => carry_to_peer(shared, endpoint, &routes, &start, &early).await?,
    };
    Ok((carried, early.len() as u64))
}

/// The open phase over a peer link to one of the edges `routes` names for the stream's
/// URL (edge/peer_out.rs).
async fn carry_to_peer(
    shared: &EdgeShared,
    endpoint: &LiveEndpoint,
    routes: &PeerRoutes,
    start: &StreamStart,
    early: &[u8],
) -> Result<Carried, open::NoMember> {
    let Some(edges) = routes.lookup(&start.internal_url) else {
        return Err(open::NoMember {
            tried: 0,
            last: None,
        });
    };
    let opened = peer_out::open(shared, edges, start, early).await?;
    tracing::debug!(endpoint = %endpoint.url, peer = %start.client, url = %start.internal_url,
        peer_edge = %opened.load.edge, "forwarded to the edge holding the URL's session");
    Ok(Carried {
        via: Via::Peer(opened.load),
        channel: opened.channel,
        failovers: opened.failovers,
    })
}

/// The address the client connected to (the PROXY protocol's destination): the
/// endpoint's own bound address, unless it listens on a wildcard, which takes a
/// `getsockname` to resolve.
pub(super) fn server_address(client: &TcpStream, bound: SocketAddr) -> SocketAddr {
    if bound.ip().is_unspecified() {
        client.local_addr().unwrap_or(bound)
    } else {
        bound
    }
}

/// An admitted connection.
pub(super) struct Admitted<'e, 'p> {
    /// Its place in the per-address table, held until the connection ends.
    pub(super) ip_slot: Option<IpSlot<'e>>,
    /// The internal URL the policy forwards it to (canonical form); `None` when
    /// `on_tcp_connect` only restricts and the HTTP phases pick a target per request.
    pub(super) target: Option<String>,
    /// The `enforce: false` restriction that would have denied it, if any.
    pub(super) would_deny: Option<Why<'p>>,
    /// The policy's `terminate-tls`, if the connection reached one.
    pub(super) terminate_tls: Option<Arc<rustls::ServerConfig>>,
}

/// The admit phase: the endpoint's connection limits (before the policy is even
/// evaluated), then the traffic policy on the client address (and, for expressions
/// that read them, what `facts` tells: edge/conn_facts.rs). A refusal is
/// [`Outcome::OverLimit`] or [`Outcome::Denied`]; the client is then reset.
pub(super) fn admit<'e, 'p>(
    endpoint: &'e LiveEndpoint,
    peer: SocketAddr,
    policy: &'p CompiledPolicy,
    facts: &dyn ConnInfo,
) -> Result<Admitted<'e, 'p>, Outcome<'p>> {
    let ip_slot = endpoint
        .limits
        .admit(peer.ip(), endpoint.in_flight())
        .map_err(Outcome::OverLimit)?;
    let decision = decide(
        &endpoint.url,
        super::policy_log::ENDPOINT_POLICY,
        policy,
        peer,
        facts,
    );
    match decision.outcome() {
        Verdict::Deny
            if decision.why().cause() == Cause::NoDecision && !policy.decides_at_connect() =>
        {
            Ok(Admitted {
                ip_slot,
                target: None,
                would_deny: decision.is_log_only().then(|| decision.why()),
                terminate_tls: None,
            })
        }
        Verdict::Deny => Err(Outcome::Denied(decision.why())),
        Verdict::Forward(target) => Ok(Admitted {
            ip_slot,
            target: Some(target.canonical()),
            would_deny: decision.is_log_only().then(|| decision.why()),
            terminate_tls: decision.terminate_tls().cloned(),
        }),
    }
}

/// Who serves a target.
pub(super) enum Route {
    /// The pool of local agent sessions bound to the URL.
    Local(Arc<Pool>),
    /// Other edges of the fleet hold sessions for it (the routes snapshot in force).
    Peer(Arc<PeerRoutes>),
}

/// The route phase: who serves `target`: local sessions with a healthy member first,
/// then another edge of the fleet that announces healthy ones, then a local pool whose
/// members all report their upstream down (the open phase tries them anyway).
/// [`Outcome::NoAgent`] when nobody does (the client is closed).
pub(super) fn route<'t>(shared: &EdgeShared, target: &'t str) -> Result<Route, Outcome<'t>> {
    let local = shared.registry.lookup(target);
    if let Some(pool) = local.as_ref().filter(|p| p.any_healthy()) {
        return Ok(Route::Local(pool.clone()));
    }
    let routes = shared.peers.routes();
    if routes.lookup(target).is_some() {
        return Ok(Route::Peer(arc_swap::Guard::into_inner(routes)));
    }
    match local {
        Some(pool) => Ok(Route::Local(pool)),
        None => Err(Outcome::NoAgent { target }),
    }
}

/// The terminate phase: the client as the pump sees it; with `tls` (the policy's
/// `terminate-tls`, else the endpoint's `terminate_tls`) the edge completes the
/// client's handshake first (`early` is then its ClientHello, fed to rustls, and no
/// early bytes are left for the upstream). The error says why the handshake failed.
async fn client_side(
    client: TcpStream,
    early: Vec<u8>,
    tls: Option<Arc<rustls::ServerConfig>>,
) -> Result<(Client, Vec<u8>), String> {
    match tls {
        None => Ok((MaybeTls::Plain(client), early)),
        Some(config) => {
            let tls = Box::pin(super::terminate::handshake(client, early, config)).await?;
            Ok((MaybeTls::Tls(Box::new(tls)), Vec::new()))
        }
    }
}

/// Who takes a channel back when its stream left it reusable.
enum Keeper<'a> {
    /// A local member's session: the channel is parked with it again.
    Session(&'a SessionHandle),
    /// Another edge: the peer link waits for the next stream to it.
    PeerLink(&'a peer_out::PeerLoad),
}

/// The pump phase: the stream's bytes both ways until both directions end, the
/// endpoint's idle timeout, or (a local member's) session is kicked; a channel left
/// reusable goes back to its `keeper`.
#[allow(
    clippy::manual_async_fn,
    reason = "an async block keeps its arguments once; an async fn, twice"
)]
fn pump<'a>(
    endpoint: &'a LiveEndpoint,
    how: io::Pump,
    client: Client,
    channel: DataChannel,
    keeper: Keeper<'a>,
) -> impl Future<Output = StreamEnd> + 'a {
    async move {
        let progress = Progress::default();
        let fds = [client.as_raw_fd(), channel.as_raw_fd()];
        let work = pin!(channel.pump(client, how, &progress));
        let work = pin!(until_idle(endpoint.idle_timeout, &progress, work));
        let ended = match keeper {
            Keeper::Session(session) => unless_kicked(session, fds, work).await,
            Keeper::PeerLink(_) => Some(work.await),
        };
        match ended {
            None => StreamEnd::Cut {
                session: match keeper {
                    Keeper::Session(s) => s.id,
                    Keeper::PeerLink(_) => 0,
                },
            },
            Some(None) => StreamEnd::IdleTimeout,
            Some(Some(pumped)) => {
                match (pumped.again, keeper) {
                    (Some(channel), Keeper::Session(session)) => session.park(channel),
                    (Some(ParkedChannel::Plain(link)), Keeper::PeerLink(load)) => {
                        load.keep_link(link)
                    }
                    _ => {}
                }
                match pumped.result {
                    Ok(bytes) => StreamEnd::Closed(bytes),
                    Err(e) => StreamEnd::Failed(e),
                }
            }
        }
    }
}

/// Runs `work` (one stream's pumps, which own the client and the data channel whose
/// descriptors are `fds`) unless `session` is kicked first. Then both sockets are set
/// to reset on close before `work` is dropped, so the client and the agent see the cut
/// at once; `None`.
pub(super) async fn unless_kicked<F: Future>(
    session: &SessionHandle,
    fds: [RawFd; 2],
    work: Pin<&mut F>,
) -> Option<F::Output> {
    let cut = async {
        session.kicked().await;
        for fd in fds {
            sockets::reset_on_close(fd);
        }
    };
    monoio::select! {
        output = work => Some(output),
        _ = cut => None,
    }
}
