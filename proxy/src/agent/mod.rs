//! The agent: dials the edge, authenticates, binds its internal endpoints, keeps a
//! heartbeat, and keeps `data_channels` idle data channels parked at the edge. Each
//! channel waits for a stream header, connects to the endpoint's upstream and forwards
//! bytes; when a channel is spent the agent opens a replacement, and opens more when
//! the edge asks. Losing the edge means reconnecting with capped, jittered backoff.
//!
//! Worker 0 runs the control loop and the upstream health checks (agent/health.rs);
//! every worker opens and serves data channels, taking open requests from one shared
//! queue. Each stream is answered with a status (upstream connected or not) before any
//! upstream byte, so the edge can fail over to another pool member.
//!
//! One stream's path is `pipeline.rs` (accept channel, read stream header, connect
//! upstream, status, pump); `datachan.rs` owns the data channel and the one choice
//! between `tcp` (`datachan/plain.rs`) and `tls` (`datachan/tls.rs`) channels;
//! `upstream.rs` the connect and its typed failures. Counters live in
//! [`crate::metrics::agent`], which reads this agent through
//! [`crate::metrics::agent::AgentReadout`].

mod control;
mod datachan;
mod edges;
pub mod egress;
mod health;
mod mux_relay;
mod pipeline;
mod terminate;
mod upstream;

use std::{
    collections::HashMap,
    net::SocketAddr,
    sync::{
        atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering},
        Arc,
    },
    thread::JoinHandle,
};

use crate::{
    config::agent::{AgentEndpoint, AgentSettings},
    metrics::agent::{AgentReadout, AgentStats},
    runtime::{self, Driver},
};

/// How long dialing the edge (a data channel) or an upstream may take.
pub(crate) const CONNECT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// What a data channel needs to know about the session it belongs to.
pub(crate) struct SessionTicket {
    pub id: u64,
    pub secret: [u8; 32],
    /// Sequence number of the next data channel's proof (`wire::channel_proof`).
    pub next_channel: std::sync::atomic::AtomicU64,
    pub edge_addr: SocketAddr,
    /// The egress proxy the session goes through, if any (its data channels too).
    pub proxy: Option<Arc<egress::EgressProxy>>,
    /// The name the edge's certificate shows (for `tls` data channels).
    pub server_name: rustls_pki_types::ServerName<'static>,
    pub alive: AtomicBool,
    /// Data channels of this session currently parked at the edge, waiting.
    pub idle: AtomicUsize,
    /// Data channels requested for the pool of `data_channels` and not yet parked
    /// (queued, dialing, handshaking). Channels the edge asked for (NeedChannels) are
    /// not counted: each is for a connection already waiting, not for the pool.
    pub opening: AtomicUsize,
    /// Whether data channels to this session's edge can be opened.
    pub channel_health: health::ChannelHealth,
}

impl Drop for SessionTicket {
    fn drop(&mut self) {
        zeroize::Zeroize::zeroize(&mut self.secret);
    }
}

impl SessionTicket {
    pub fn is_alive(&self) -> bool {
        self.alive.load(Ordering::Acquire)
    }

    /// Whether fewer than `target` channels are parked. Channels on their way are not
    /// counted here: a channel handed a stream is replaced while the pool is short,
    /// even in a burst, since the edge may hand the channels on their way to
    /// connections that are already waiting for them.
    pub fn below(&self, target: usize) -> bool {
        self.idle.load(Ordering::Relaxed) < target
    }

    /// How many pool channels are missing for `target`, counting those on their way
    /// (for the periodic top-up, which must not pile requests on a slow dial).
    pub fn deficit(&self, target: usize) -> usize {
        target.saturating_sub(
            self.idle.load(Ordering::Relaxed) + self.opening.load(Ordering::Relaxed),
        )
    }
}

/// One requested data channel on its way; dropping it (parked, or given up) takes a
/// pool channel off the ticket's `opening` count.
pub(crate) struct Opening {
    pub ticket: Arc<SessionTicket>,
    for_pool: bool,
}

impl Drop for Opening {
    fn drop(&mut self) {
        if self.for_pool {
            self.ticket.opening.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

/// State shared by the agent's workers.
pub(crate) struct AgentShared {
    pub settings: AgentSettings,
    /// internal URL -> its endpoint (upstream address, PROXY protocol).
    pub upstreams: HashMap<String, AgentEndpoint>,
    pub open_tx: async_channel::Sender<Opening>,
    pub open_rx: async_channel::Receiver<Opening>,
    /// Streams being forwarded right now.
    pub in_flight: crate::drain::InFlight,
    /// Set by a drain: no reconnect after the current session.
    pub draining: AtomicBool,
    /// Client TLS handshakes refused by `agent_tls_termination` (bad or missing
    /// client certificate, timeout).
    pub tls_refused: AtomicU64,
    /// Counters (per worker; summed on scrape).
    pub stats: AgentStats,
    /// Upstream health per endpoint (same order as `settings.endpoints`).
    pub health: Vec<health::EndpointHealth>,
    /// The edges the agent holds sessions with, one per slot.
    pub edge_slots: edges::EdgeSlots,
    /// The live sessions' control queues, for frames sent from outside the control
    /// loops (health changes, a drain's goodbye).
    pub sessions: std::sync::Mutex<Vec<LiveSession>>,
}

/// A session that is up: its slot, its edge and its control queue.
pub(crate) struct LiveSession {
    pub slot: usize,
    pub edge: SocketAddr,
    /// Its ticket (its data channels' health among the rest).
    pub ticket: Arc<SessionTicket>,
    /// The edge's `edge_id`, from its welcome.
    pub edge_id: String,
    pub control: async_channel::Sender<crate::wire::Frame>,
}

impl AgentShared {
    /// The sessions up now.
    pub(crate) fn live_sessions(&self) -> std::sync::MutexGuard<'_, Vec<LiveSession>> {
        self.sessions.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Asks some worker to open `n` data channels for `ticket`'s pool (counted in
    /// `opening` until parked).
    pub fn request_channels(&self, ticket: &Arc<SessionTicket>, n: usize) {
        self.open_channels(ticket, n, true);
    }

    /// Asks some worker to open `n` data channels the edge asked for: one per public
    /// connection waiting for one, whatever the pool holds.
    pub fn request_channels_for_waiters(&self, ticket: &Arc<SessionTicket>, n: usize) {
        self.open_channels(ticket, n, false);
    }

    fn open_channels(&self, ticket: &Arc<SessionTicket>, n: usize, for_pool: bool) {
        for _ in 0..n {
            if for_pool {
                ticket.opening.fetch_add(1, Ordering::Relaxed);
            }
            let opening = Opening {
                ticket: ticket.clone(),
                for_pool,
            };
            if self.open_tx.try_send(opening).is_err() {
                break;
            }
        }
    }
}

impl AgentReadout for AgentShared {
    fn stats(&self) -> &AgentStats {
        &self.stats
    }

    fn session_up(&self) -> bool {
        !self.live_sessions().is_empty()
    }

    fn edges_held(&self) -> Vec<SocketAddr> {
        let mut edges: Vec<SocketAddr> = self.live_sessions().iter().map(|s| s.edge).collect();
        edges.sort();
        edges
    }

    fn edge_sessions_wanted(&self) -> usize {
        self.edge_slots.slots()
    }

    fn active_streams(&self) -> usize {
        self.in_flight.get()
    }

    fn client_tls_refused(&self) -> u64 {
        self.tls_refused.load(Ordering::Relaxed)
    }
}

/// A running agent.
pub struct AgentHandle {
    /// Worker threads (they run until the process exits).
    pub workers: Vec<JoinHandle<std::io::Result<()>>>,
    shared: Arc<AgentShared>,
}

impl AgentHandle {
    /// Starts a drain: ends the session with the edge (which unbinds this agent's
    /// endpoints and closes its idle data channels) and does not reconnect. Streams
    /// in flight carry on.
    pub fn leave_edge(&self) {
        // SeqCst: pairs with `InFlight::enter` then the flag's load in the pipeline.
        self.shared.draining.store(true, Ordering::SeqCst);
        let sessions = self.shared.live_sessions();
        for session in sessions.iter() {
            // The control channel's writer sends what is queued, then closes our side.
            session.control.close();
        }
        tracing::info!(
            in_flight = self.shared.in_flight.get(),
            edges = sessions.len(),
            "draining: left the edge"
        );
    }

    /// Streams being forwarded right now.
    pub fn in_flight(&self) -> &crate::drain::InFlight {
        &self.shared.in_flight
    }
}

/// Starts the agent's workers; returns at once.
pub fn start(settings: AgentSettings, driver: Driver) -> std::io::Result<AgentHandle> {
    let upstreams = settings
        .endpoints
        .iter()
        .map(|e| (e.url.clone(), e.clone()))
        .collect();
    crate::datapath::log_agent(settings.transport, settings.pump);
    crate::limits::raise_and_log("agent");
    let (open_tx, open_rx) = async_channel::bounded(64 * 1024);
    let workers = settings.workers;
    let endpoints = settings.endpoints.len();
    let agent_stats = AgentStats::new(
        settings.endpoints.iter().map(|e| e.url.as_str()),
        &upstream::UpstreamError::LABELS,
    );
    let edge_slots = edges::EdgeSlots::new(settings.edges.clone(), settings.edge_connections);
    let shared = Arc::new(AgentShared {
        edge_slots,
        settings,
        upstreams,
        open_tx,
        open_rx,
        in_flight: Default::default(),
        draining: AtomicBool::new(false),
        tls_refused: AtomicU64::new(0),
        stats: agent_stats,
        health: (0..endpoints).map(|_| Default::default()).collect(),
        sessions: Default::default(),
    });
    if let Some(listen) = shared.settings.metrics_listen {
        crate::metrics::agent::serve(listen, shared.clone())
            .map_err(|e| std::io::Error::new(e.kind(), format!("agent.metrics_listen: {e}")))?;
    }
    let worker_shared = shared.clone();
    let threads = runtime::spawn_workers("agent", workers, driver, move |i| {
        let shared = worker_shared.clone();
        async move {
            if i == 0 {
                monoio::spawn(control::run_forever(shared.clone()));
                health::spawn_checkers(&shared);
            }
            pipeline::open_loop(shared).await;
        }
    })?;
    Ok(AgentHandle {
        workers: threads,
        shared,
    })
}
