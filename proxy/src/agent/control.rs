//! The agent's control loops, one per edge it holds a session with: connect,
//! authenticate, bind, heartbeat; on any failure, reconnect (to another edge when one
//! is free) after a capped exponential backoff with jitter.

use std::{
    sync::{atomic::Ordering, Arc},
    time::Duration,
};

use monoio::{
    io::{AsyncWriteRent, Splitable},
    net::TcpStream,
};
use rand::Rng;

use super::{edges::Edge, AgentShared, LiveSession, SessionTicket};
use crate::{
    io::{
        framed::{self, FrameReader},
        tls_stream,
    },
    wire::{ErrorCode, Frame, PROTOCOL_VERSION},
};

const FIRST_BACKOFF: Duration = Duration::from_millis(500);
const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// Most data channels opened for one `NeedChannels` request.
const MAX_CHANNELS_PER_REQUEST: u32 = 256;

/// The edge refused this agent at its hello, or its configuration cannot work with
/// this edge. `fatal`: retrying cannot help (a wrong token, a transport the edge
/// refuses), so an agent that never had a session exits instead of retrying forever.
#[derive(Debug)]
struct Refused {
    message: String,
    fatal: bool,
}

impl Refused {
    fn new(message: String, fatal: bool) -> Self {
        Self { message, fatal }
    }
}

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Refused {}

/// Exit status of an agent that can never serve (see [`Refused`]).
pub const EXIT_REFUSED: i32 = 2;

/// Keeps the agent's sessions: one slot per edge it should hold
/// (`edge_connections`, capped by the edges known), each running sessions one after
/// another, forever (see [`run_slot`]).
pub async fn run_forever(shared: Arc<AgentShared>) {
    for slot in 1..shared.edge_slots.initial() {
        monoio::spawn(run_slot(shared.clone(), slot, None));
    }
    run_slot(shared, 0, None).await;
}

/// Runs sessions on slot `slot` one after another, forever, each with an edge no other
/// slot holds; a lost session is re-established on another edge when one is free. An
/// agent whose very first session is refused for good (a wrong token, a transport the
/// edge refuses, every endpoint refused by the token's bind rules) logs why and exits
/// with [`EXIT_REFUSED`]: that is a configuration mistake to show at once. Once it has
/// had a session, it keeps retrying with backoff whatever happens (a revoked token
/// included), as a daemon should.
///
/// A slot started to replace a session whose edge is leaving gets `moved`: it says so
/// there once its first session has every endpoint bound (and the fleet has had a
/// moment to learn its routes), and the old session ends then. A slot whose edge said
/// it is leaving retires when that session ends.
async fn run_slot(shared: Arc<AgentShared>, slot: usize, mut moved: Option<Moved>) {
    let mut backoff = FIRST_BACKOFF;
    let mut turn = 0;
    let mut last_edge = None;
    loop {
        if shared.draining.load(Ordering::Acquire) {
            return;
        }
        let first = shared.stats.sessions.get() == 0;
        let Some(edge) = shared.edge_slots.choose(slot, turn, last_edge) else {
            tracing::debug!(slot, "no free edge for this session slot; waiting");
            let jitter = rand::rng().random_range(0.0..0.25);
            monoio::time::sleep(MAX_BACKOFF.min(FIRST_BACKOFF * 4).mul_f64(1.0 + jitter)).await;
            continue;
        };
        let outcome = run_session(&shared, slot, &edge, &mut moved).await;
        shared.edge_slots.release(slot);
        if let Ok(SessionEnd::Moved(reason)) = &outcome {
            tracing::info!(edge = %edge.addr, %reason, "session moved off a leaving edge");
            shared.edge_slots.retire(slot);
            return;
        }
        if let Ok(SessionEnd::SameEdge(edge_id)) = &outcome {
            // Another address of an edge already held (a name with several addresses
            // for one edge): try again rarely, in case that session goes.
            tracing::debug!(edge = %edge.addr, %edge_id, "this address reaches an edge the agent already holds a session with; not a second session");
            shared.edge_slots.mark_leaving(edge.addr);
            let jitter = rand::rng().random_range(0.0..0.25);
            monoio::time::sleep(MAX_BACKOFF.mul_f64(1.0 + jitter)).await;
            continue;
        }
        last_edge = Some(edge.addr);
        turn += 1;
        match outcome {
            Ok(SessionEnd::Moved(_)) | Ok(SessionEnd::SameEdge(_)) => {
                unreachable!("handled above")
            }
            Ok(SessionEnd::Fatal(reason)) if first => give_up(&reason),
            Ok(SessionEnd::Fatal(reason)) | Ok(SessionEnd::Lost(reason)) => {
                tracing::warn!(%reason, edge = %edge.addr, "session with the edge ended; reconnecting");
                backoff = FIRST_BACKOFF;
            }
            Err(e) => {
                if first && e.downcast_ref::<Refused>().is_some_and(|r| r.fatal) {
                    give_up(&e.to_string());
                }
                tracing::warn!(error = %e, edge = %edge.addr, retry_in = ?backoff, "cannot establish a session with the edge");
            }
        }
        let jitter = rand::rng().random_range(0.0..0.25);
        monoio::time::sleep(backoff.mul_f64(1.0 + jitter)).await;
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

/// Tells a session whose edge is leaving that its replacement is in place.
type Moved = async_channel::Sender<()>;

/// How long a replacement session waits, once bound, before the old one ends: time for
/// its edge to publish the routes and the fleet to learn them.
const MOVE_SETTLE: Duration = Duration::from_millis(250);

/// How an established session ended.
enum SessionEnd {
    /// Lost or ended by the edge: reconnect.
    Lost(String),
    /// Its edge said it is leaving and the session ended (replaced, or the edge went):
    /// the slot retires.
    Moved(String),
    /// The address led to an edge (this `edge_id`) the agent already holds a session
    /// with: no second session there.
    SameEdge(String),
    /// Nothing this agent binds can ever be served by this token.
    Fatal(String),
}

fn give_up(reason: &str) -> ! {
    tracing::error!(%reason, status = EXIT_REFUSED, "the edge refuses this agent for good; exiting (fix the configuration, then start it again)");
    eprintln!("sluice: {reason}");
    std::process::exit(EXIT_REFUSED)
}

/// One session with `edge` on slot `slot`: returns how an established session ended,
/// `Err` when it could not be established.
async fn run_session(
    shared: &Arc<AgentShared>,
    slot: usize,
    edge: &Edge,
    moved: &mut Option<Moved>,
) -> anyhow::Result<SessionEnd> {
    let edge_addr = edge.addr;
    let connect_timeout = shared.settings.connect_timeout;
    let proxy = shared.settings.proxy.as_deref();
    let tcp = monoio::time::timeout(connect_timeout, super::egress::dial(edge_addr, proxy))
        .await
        .map_err(|_| match proxy {
            Some(p) => anyhow::anyhow!(
                "connecting to {edge_addr} through proxy {} timed out",
                p.addr
            ),
            None => anyhow::anyhow!("connecting to {edge_addr} timed out"),
        })??;
    let _ = tcp.set_nodelay(true);
    established(shared, tcp, slot, edge, moved).await
}

/// The part of a session after the TCP connection: TLS, hello, binds, heartbeats.
async fn established(
    shared: &Arc<AgentShared>,
    tcp: TcpStream,
    slot: usize,
    edge: &Edge,
    moved: &mut Option<Moved>,
) -> anyhow::Result<SessionEnd> {
    let settings = &shared.settings;
    let edge_addr = edge.addr;
    let handshake = tls_stream::connect(tcp, settings.tls.clone(), edge.server_name.clone());
    let mut tls = monoio::time::timeout(settings.connect_timeout, handshake)
        .await
        .map_err(|_| anyhow::anyhow!("TLS handshake with {edge_addr} timed out"))?
        .map_err(|e| {
            anyhow::anyhow!(
                "TLS handshake with {edge_addr} failed: {}",
                crate::tls::explain(&e.to_string())
            )
        })?;
    let hello = Frame::Hello {
        version: PROTOCOL_VERSION,
        authtoken: settings.authtoken.expose().to_string(),
        agent_version: concat!("sluice ", env!("CARGO_PKG_VERSION")).to_string(),
        heartbeat_tolerance_ms: settings
            .heartbeat_tolerance
            .as_millis()
            .min(u32::MAX as u128) as u32,
        metadata: Some(settings.metadata.clone()),
    };
    framed::write_frame(&mut tls, &hello).await?;
    let mut reader = FrameReader::new();
    let (id, secret, edge_id) =
        match monoio::time::timeout(settings.connect_timeout, reader.next(&mut tls)).await {
            Err(_) => anyhow::bail!("edge sent no welcome in time"),
            Ok(Ok(Some(Frame::Welcome {
                session_id,
                secret,
                plain_channels,
                edge_id,
            }))) => {
                if shared.live_sessions().iter().any(|s| s.edge_id == edge_id) {
                    return Ok(SessionEnd::SameEdge(edge_id));
                }
                if settings.transport == crate::config::agent::Transport::Tcp && !plain_channels {
                    return Err(Refused::new(
                    "this agent uses transport: tcp, but the edge does not accept plain-TCP data \
                     channels (agents.plain_channels is off there); use transport: tls, or turn \
                     plain_channels on at the edge if the path to it is private"
                        .into(),
                    true,
                )
                .into());
                }
                (session_id, secret, edge_id)
            }
            Ok(Ok(Some(Frame::Error { code, message, .. }))) => {
                if code == ErrorCode::SessionEnding {
                    // A fleet edge on its way out: prefer the others for a while.
                    shared.edge_slots.mark_leaving(edge_addr);
                }
                return Err(Refused::new(
                    format!("edge refused the agent ({code:?}): {message}"),
                    code == ErrorCode::Unauthorized,
                )
                .into());
            }
            Ok(Ok(Some(other))) => anyhow::bail!("edge sent {} instead of welcome", other.name()),
            Ok(Ok(None)) => anyhow::bail!("edge closed the connection during hello"),
            Ok(Err(e)) => anyhow::bail!("reading welcome: {e}"),
        };
    tracing::info!(session = id, edge = %edge_addr, transport = ?settings.transport, "session established");
    shared.stats.sessions.inc();
    let ticket = Arc::new(SessionTicket {
        id,
        secret,
        next_channel: 1.into(),
        edge_addr,
        proxy: shared.settings.proxy.clone(),
        server_name: edge.server_name.clone(),
        alive: true.into(),
        idle: 0.into(),
        opening: 0.into(),
        channel_health: Default::default(),
    });
    let (control_tx, control_rx) = async_channel::bounded::<Frame>(1024);
    let (mut rd, mut wr) = tls.into_split();
    monoio::spawn(async move {
        while let Ok(frame) = control_rx.recv().await {
            if framed::write_frame(&mut wr, &frame).await.is_err() {
                return;
            }
        }
        // The queue closed: the session ended, or a drain asked to leave the edge
        // (`AgentHandle::leave_edge`). Closing our side makes the edge end the session
        // and unbind our endpoints at once; its close then ends our reader.
        let _ = wr.shutdown().await;
    });
    {
        // Binds, then each endpoint's health as it stands; later changes go through
        // the same queue (set under the lock, so none falls between the two).
        let mut live = shared.live_sessions();
        for (i, ep) in settings.endpoints.iter().enumerate() {
            let _ = control_tx.try_send(Frame::Bind {
                request_id: i as u32 + 1,
                url: ep.url.clone(),
                pooling: ep.pooling,
                labels: ep.labels.clone(),
                traffic_policy: ep.traffic_policy.clone(),
                upstream_protocol: ep.bind_protocol(),
            });
            let _ = control_tx.try_send(super::health::report(shared, i, &ticket));
        }
        live.push(LiveSession {
            slot,
            edge: edge_addr,
            ticket: ticket.clone(),
            edge_id: edge_id.clone(),
            control: control_tx.clone(),
        });
        if shared.draining.load(Ordering::Acquire) {
            // A drain began during the handshake: leave at once.
            control_tx.close();
        }
    }
    shared.request_channels(&ticket, settings.data_channels);
    let heartbeat_tx = control_tx.clone();
    let interval = settings.heartbeat_interval;
    let (topped_up, target) = (ticket.clone(), settings.data_channels);
    let refill = shared.clone();
    monoio::spawn(async move {
        loop {
            monoio::time::sleep(interval).await;
            let nonce = crate::clock::mono_us();
            if heartbeat_tx.send(Frame::Ping { nonce }).await.is_err() {
                break;
            }
            // Channels that could not be opened (edge unreachable for data, out of
            // descriptors) are retried here, once per heartbeat, not in a loop; while
            // they fail, at least one is tried (the edge sends an unhealthy member no
            // streams, so nothing else would).
            let failing = topped_up.channel_health.failing();
            let wanted = topped_up.deficit(target).max(usize::from(failing));
            refill.request_channels(&topped_up, wanted);
        }
    });
    let tolerance = settings.heartbeat_tolerance;
    let mut binds = BindRetries::new(settings.endpoints.len());
    let mut bound = vec![false; settings.endpoints.len()];
    // Set once this edge said it is leaving: the replacement's word that it is in place.
    let mut replaced: Option<async_channel::Receiver<()>> = None;
    let end = loop {
        let next = monoio::time::timeout(tolerance, reader.next(&mut rd));
        let read = match &replaced {
            None => next.await,
            Some(rx) => monoio::select! {
                read = next => read,
                Ok(()) = rx.recv() => {
                    break SessionEnd::Moved("the replacement session is in place".into())
                }
            },
        };
        let frame = match read {
            Err(_) => break SessionEnd::Lost(format!("no answer from the edge for {tolerance:?}")),
            Ok(Ok(None)) => break SessionEnd::Lost("edge closed the control channel".to_string()),
            Ok(Err(e)) => break SessionEnd::Lost(format!("control channel error: {e}")),
            Ok(Ok(Some(frame))) => frame,
        };
        match frame {
            Frame::Pong { nonce } => {
                let rtt = Duration::from_micros(crate::clock::mono_us().saturating_sub(nonce));
                tracing::trace!(?rtt, "heartbeat");
            }
            Frame::Ping { nonce } => {
                let _ = control_tx.try_send(Frame::Pong { nonce });
            }
            Frame::BindOk { request_id } => {
                let index = request_id.checked_sub(1).map(|i| i as usize);
                if let Some((i, ep)) = index.and_then(|i| Some((i, settings.endpoints.get(i)?))) {
                    tracing::info!(url = %ep.url, upstream = %ep.upstream,
                        upstream_protocol = ep.bind_protocol().as_str(), "endpoint bound");
                    bound[i] = true;
                    if bound.iter().all(|b| *b) {
                        if let Some(tell) = moved.take() {
                            monoio::spawn(async move {
                                monoio::time::sleep(MOVE_SETTLE).await;
                                let _ = tell.send(()).await;
                            });
                        }
                    }
                    if binds.bound(i) {
                        // A retried bind: the health report sent with the first try
                        // found no binding at the edge.
                        let _ = control_tx.try_send(super::health::report(shared, i, &ticket));
                    }
                }
            }
            Frame::Error {
                request_id,
                code,
                message,
            } => {
                let index = request_id.checked_sub(1).map(|i| i as usize);
                let endpoint = index.and_then(|i| Some((i, settings.endpoints.get(i)?)));
                let url = endpoint.map_or("-", |(_, e)| e.url.as_str());
                tracing::error!(%url, code = code.name(), code_number = code.to_u16(), detail = %message, "edge reported an error");
                if code == ErrorCode::Unauthorized || code == ErrorCode::Malformed {
                    break SessionEnd::Lost(format!("edge error {}: {message}", code.name()));
                }
                let Some((i, ep)) = endpoint else { continue };
                match BindVerdict::of(code) {
                    BindVerdict::Retry => {
                        let wait = binds.refused(i);
                        tracing::warn!(url = %ep.url, code = code.name(), retry_in = ?wait, "bind refused; retrying");
                        let (tx, bind) = (
                            control_tx.clone(),
                            Frame::Bind {
                                request_id,
                                url: ep.url.clone(),
                                pooling: ep.pooling,
                                labels: ep.labels.clone(),
                                traffic_policy: ep.traffic_policy.clone(),
                                upstream_protocol: ep.bind_protocol(),
                            },
                        );
                        monoio::spawn(async move {
                            monoio::time::sleep(wait).await;
                            let _ = tx.send(bind).await;
                        });
                    }
                    BindVerdict::Settled => {
                        tracing::info!(url = %ep.url, code = code.name(), "bind answered without a retry to make");
                    }
                    BindVerdict::Final => {
                        if binds.refused_for_good(i) {
                            break SessionEnd::Fatal(format!(
                                "the edge refuses every endpoint of this agent; last: {message}"
                            ));
                        }
                    }
                }
            }
            Frame::Drain { grace_ms } => {
                if replaced.is_none() {
                    shared.edge_slots.mark_leaving(edge_addr);
                    let (tell, told) = async_channel::bounded(1);
                    let next = shared.edge_slots.add_slot();
                    // Other sessions bind every endpoint too: nothing is lost by ending
                    // this one now (the replacement comes when an edge is free).
                    let covered = shared.live_sessions().iter().any(|s| s.slot != slot);
                    tracing::info!(edge = %edge_addr, grace_ms, covered, "the edge is leaving: moving this session to another edge");
                    monoio::spawn(run_slot(shared.clone(), next, (!covered).then_some(tell)));
                    if covered {
                        break SessionEnd::Moved("other sessions serve the endpoints".into());
                    }
                    replaced = Some(told);
                }
            }
            Frame::NeedChannels { count } => {
                let count = count.min(MAX_CHANNELS_PER_REQUEST) as usize;
                shared.request_channels_for_waiters(&ticket, count);
            }
            other => {
                break SessionEnd::Lost(format!("unexpected {} frame from the edge", other.name()))
            }
        }
    };
    ticket.alive.store(false, Ordering::Release);
    shared.live_sessions().retain(|s| s.slot != slot);
    control_tx.close();
    // A session whose edge said it is leaving is not re-established by this slot: its
    // replacement is (or will be, once an edge is free).
    Ok(match end {
        SessionEnd::Lost(reason) | SessionEnd::Fatal(reason) if replaced.is_some() => {
            SessionEnd::Moved(reason)
        }
        end => end,
    })
}

/// What a refused bind calls for, by the edge's code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum BindVerdict {
    /// Ask again later, with backoff: what refused it may change (another agent holding
    /// the URL leaves, an admin transfers it, a pool's members change their
    /// `pooling_enabled` in a rolling update). Codes this build does not know are
    /// retried too: a newer edge's refusal must not make this agent give up.
    Retry,
    /// Nothing to retry in this session: it is ending (the next session binds again),
    /// or this session holds the URL already.
    Settled,
    /// No retry can change it during this token's life (its bind rules refuse the URL,
    /// the URL is invalid, or the edge failed in a way it did not name).
    Final,
}

impl BindVerdict {
    fn of(code: ErrorCode) -> Self {
        match code {
            ErrorCode::AlreadyBound
            | ErrorCode::NotOwner
            | ErrorCode::PoolingMismatch
            | ErrorCode::PolicyMismatch
            | ErrorCode::Unknown(_) => Self::Retry,
            ErrorCode::SessionEnding | ErrorCode::AlreadyBoundHere => Self::Settled,
            ErrorCode::BindForbidden
            | ErrorCode::InvalidPolicy
            | ErrorCode::BadRequest
            | ErrorCode::Internal
            | ErrorCode::Unauthorized
            | ErrorCode::VersionMismatch
            | ErrorCode::Malformed
            | ErrorCode::UnknownSession => Self::Final,
        }
    }
}

/// Where each endpoint's bind stands within one session: refused binds are retried
/// with a doubling wait (1 s up to 30 s); endpoints refused for good are counted.
struct BindRetries {
    wait: Vec<Option<Duration>>,
    refused_for_good: Vec<bool>,
}

impl BindRetries {
    const FIRST: Duration = Duration::from_secs(1);
    const MAX: Duration = Duration::from_secs(30);

    fn new(endpoints: usize) -> Self {
        Self {
            wait: vec![None; endpoints],
            refused_for_good: vec![false; endpoints],
        }
    }

    /// Endpoint `i` was refused for now: how long to wait before asking again.
    fn refused(&mut self, i: usize) -> Duration {
        let next = self.wait[i].map_or(Self::FIRST, |w| (w * 2).min(Self::MAX));
        self.wait[i] = Some(next);
        next
    }

    /// Endpoint `i` is bound; whether it had been refused before (a retry).
    fn bound(&mut self, i: usize) -> bool {
        self.wait[i].take().is_some()
    }

    /// Endpoint `i` can never be bound with this token; whether that now holds for
    /// every endpoint.
    fn refused_for_good(&mut self, i: usize) -> bool {
        self.refused_for_good[i] = true;
        self.refused_for_good.iter().all(|r| *r)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refused_binds_wait_longer_each_time_and_start_over_once_bound() {
        let mut b = BindRetries::new(2);
        assert_eq!(b.refused(0), Duration::from_secs(1));
        assert_eq!(b.refused(0), Duration::from_secs(2));
        for _ in 0..10 {
            b.refused(0);
        }
        assert_eq!(b.refused(0), Duration::from_secs(30));
        assert!(b.bound(0), "a retried bind");
        assert!(!b.bound(1), "a first-time bind");
        assert_eq!(b.refused(0), Duration::from_secs(1));
        assert!(!b.refused_for_good(0));
        assert!(b.refused_for_good(1), "every endpoint refused for good");
    }

    #[test]
    fn bind_refusals_that_may_change_are_retried_and_unknown_codes_too() {
        use BindVerdict::*;
        for (code, verdict) in [
            (ErrorCode::AlreadyBound, Retry),
            (ErrorCode::NotOwner, Retry),
            (ErrorCode::PoolingMismatch, Retry),
            (ErrorCode::from_u16(4242), Retry),
            (ErrorCode::SessionEnding, Settled),
            (ErrorCode::AlreadyBoundHere, Settled),
            (ErrorCode::BindForbidden, Final),
            (ErrorCode::BadRequest, Final),
            (ErrorCode::Internal, Final),
        ] {
            assert_eq!(BindVerdict::of(code), verdict, "{}", code.name());
        }
    }
}
