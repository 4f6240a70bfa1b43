//! Live agent sessions and which session serves which internal URL.
//!
//! Binds and session changes are rare and go through a mutex; the map the data path
//! reads (internal URL -> session) is an immutable snapshot published with `arc-swap`,
//! so a public connection finds its session without taking any lock.
//!
//! Parked data channels wait in a bounded `async-channel` per session: its storage is
//! `concurrent-queue`'s lock-free array queue (the same design as crossbeam's
//! `ArrayQueue`), and unlike a bare crossbeam queue it can wake a task on another
//! worker's runtime when a channel arrives, which a public connection waiting for a
//! refill needs.

use std::{
    collections::HashMap,
    net::SocketAddr,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc, Mutex,
    },
    time::Duration,
};

use arc_swap::ArcSwap;

use super::datachan::ParkedChannel;
use super::{
    auth::Identity,
    ownership::{BindRight, Owner, OwnerSource, Ownership},
    pool::{clock_ms, Pool, PoolStats},
};
use crate::{
    io::sockets,
    wire::{
        channel_proof::{self, Replay, ReplayWindow},
        Frame,
    },
};

/// Most idle data channels parked per session; more are closed on arrival.
pub const MAX_IDLE_CHANNELS: usize = 4096;

/// One authenticated agent connection and its parked data channels.
pub struct SessionHandle {
    /// Session id (quoted by data channels).
    pub id: u64,
    secret: [u8; 32],
    /// Channel numbers already used.
    replay: Mutex<ReplayWindow>,
    /// Who the agent authenticated as (user, token, bind rules).
    pub identity: Arc<Identity>,
    /// The agent's address.
    pub peer: SocketAddr,
    /// The agent's version string.
    pub agent_version: String,
    /// When the session started (ms since the epoch).
    pub started_at: i64,
    /// Last control-channel round trip measured by the edge, in microseconds (0: none yet).
    pub rtt_us: AtomicU64,
    idle_tx: async_channel::Sender<ParkedChannel>,
    idle_rx: async_channel::Receiver<ParkedChannel>,
    /// Since when (ms on [`clock_ms`]) a connection has been waiting for a data
    /// channel with none parked since; 0: none waiting, or a channel came.
    starved_since: AtomicU64,
    control_tx: async_channel::Sender<Frame>,
    /// Streams forwarded through this session right now (pool balancing).
    pub in_flight: std::sync::atomic::AtomicUsize,
    /// Fired when the session ends, to wake waiters.
    ended: Signal,
    /// Fired when the session is kicked, to cut its streams.
    kicked: Signal,
    /// Why it was kicked (the session's end is reported with this reason).
    kick_reason: Mutex<Option<String>>,
}

impl Drop for SessionHandle {
    fn drop(&mut self) {
        zeroize::Zeroize::zeroize(&mut self.secret);
    }
}

/// A one-time event any number of tasks, on any worker, can wait for: a channel that
/// never carries a message, closed to fire (which wakes every waiter, and answers later
/// ones at once).
struct Signal {
    rx: async_channel::Receiver<()>,
    tx: async_channel::Sender<()>,
}

impl Signal {
    fn new() -> Self {
        let (tx, rx) = async_channel::bounded(1);
        Self { rx, tx }
    }

    fn fire(&self) {
        self.tx.close();
    }

    async fn fired(&self) {
        let _ = self.rx.recv().await;
    }
}

/// Why no data channel could be had.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TakeError {
    /// The session ended.
    SessionGone,
    /// None arrived in time.
    Timeout,
}

impl SessionHandle {
    /// Admits data channel `seq` of this session if `proof` is its proof and the
    /// number was not used before ([`crate::wire::channel_proof`]); else says why not.
    pub fn admit_channel(&self, seq: u64, proof: &[u8; 32]) -> Result<(), &'static str> {
        if !channel_proof::verify(&self.secret, self.id, seq, proof) {
            return Err("wrong proof");
        }
        let mut window = self.replay.lock().unwrap_or_else(|p| p.into_inner());
        window.accept(seq).map_err(|r| match r {
            Replay::Seen => "replayed channel hello",
            Replay::TooOld => "channel number too old",
        })
    }

    /// Parks an authenticated idle data channel; closes it if the pool is full or the
    /// session is gone.
    pub fn park(&self, channel: ParkedChannel) {
        match self.idle_tx.try_send(channel) {
            Ok(()) => self.starved_since.store(0, Ordering::Relaxed),
            Err(e) => tracing::debug!(session = self.id, "idle data channel dropped: {e}"),
        }
    }

    /// Whether a connection has been waiting at least `for_at_least` for a data
    /// channel of this session with none arriving meanwhile: its agent cannot open
    /// them (out of descriptors, data path broken) or not fast enough.
    pub fn starved(&self, for_at_least: Duration) -> bool {
        let since = self.starved_since.load(Ordering::Relaxed);
        since != 0 && clock_ms() >= since + for_at_least.as_millis() as u64
    }

    /// Takes an idle data channel, skipping ones whose agent side already closed. When
    /// none is parked, asks the agent for more and waits up to `wait`.
    /// Cancel-safe: a channel is either returned or stays parked.
    pub async fn take_channel(&self, wait: Duration) -> Result<ParkedChannel, TakeError> {
        let deadline = std::time::Instant::now() + wait;
        loop {
            let channel = match self.idle_rx.try_recv() {
                Ok(c) => c,
                Err(async_channel::TryRecvError::Closed) => return Err(TakeError::SessionGone),
                Err(async_channel::TryRecvError::Empty) => {
                    let _ = self.starved_since.compare_exchange(
                        0,
                        clock_ms(),
                        Ordering::Relaxed,
                        Ordering::Relaxed,
                    );
                    let _ = self.control_tx.try_send(Frame::NeedChannels { count: 1 });
                    let left = deadline.saturating_duration_since(std::time::Instant::now());
                    match monoio::time::timeout(left, self.idle_rx.recv()).await {
                        Ok(Ok(c)) => c,
                        Ok(Err(_)) => return Err(TakeError::SessionGone),
                        Err(_) => return Err(TakeError::Timeout),
                    }
                }
            };
            if !sockets::peer_closed(std::os::fd::AsRawFd::as_raw_fd(&channel)) {
                return Ok(channel);
            }
        }
    }

    /// Resolves when the session has ended (at once if it already has).
    pub async fn ended(&self) {
        self.ended.fired().await;
    }

    /// Whether the session ended or is ending.
    pub fn is_closed(&self) -> bool {
        self.control_tx.is_closed()
    }

    /// Queues a frame for the control channel; false if the session is ending.
    pub fn send_control(&self, frame: Frame) -> bool {
        self.control_tx.try_send(frame).is_ok()
    }

    /// Ends the session from outside (token revoked, user deactivated): queues an error
    /// frame saying why, then closes the control queue; the control channel's writer
    /// sends what is queued and shuts the connection, which ends the session loop.
    /// Streams flowing through the session are cut ([`Self::kicked`]).
    pub fn kick(&self, code: crate::wire::ErrorCode, message: String) {
        *self.kick_reason.lock().unwrap_or_else(|p| p.into_inner()) = Some(message.clone());
        let _ = self.control_tx.try_send(Frame::Error {
            request_id: 0,
            code,
            message,
        });
        self.control_tx.close();
        self.kicked.fire();
    }

    /// Why the session was kicked, if it was.
    pub fn kick_reason(&self) -> Option<String> {
        self.kick_reason
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Resolves when the session has been kicked (at once if it has): its agent's
    /// authority is gone, so the streams it carries must end. A session that ends any
    /// other way (its control channel lost) leaves flowing streams alone: their data
    /// channels are connections of their own.
    pub async fn kicked(&self) {
        self.kicked.fired().await;
    }

    /// Data channels parked at the edge now.
    pub fn idle_channels(&self) -> usize {
        self.idle_rx.len()
    }

    /// A session with no agent behind it, carrying `in_flight` streams (unit tests).
    #[cfg(test)]
    pub(crate) fn for_tests(in_flight: usize) -> Arc<SessionHandle> {
        static NEXT: AtomicU64 = AtomicU64::new(1);
        let (idle_tx, idle_rx) = async_channel::bounded(1);
        let (control_tx, _) = async_channel::bounded(1);
        Arc::new(SessionHandle {
            id: NEXT.fetch_add(1, Ordering::Relaxed),
            secret: [0; 32],
            replay: Default::default(),
            identity: Arc::new(Identity {
                user_id: String::new(),
                user_name: String::new(),
                token_id: String::new(),
                acl: Vec::new(),
            }),
            peer: "127.0.0.1:1".parse().unwrap(),
            agent_version: String::new(),
            started_at: 0,
            rtt_us: AtomicU64::new(0),
            idle_tx,
            idle_rx,
            starved_since: AtomicU64::new(0),
            control_tx,
            in_flight: in_flight.into(),
            ended: Signal::new(),
            kicked: Signal::new(),
            kick_reason: Mutex::new(None),
        })
    }

    /// Marks the session as having left a connection waiting for `ms_ago` ms.
    #[cfg(test)]
    pub(crate) fn starve_for_tests(&self, ms_ago: u64) {
        self.starved_since
            .store(clock_ms() - ms_ago, Ordering::Relaxed);
    }

    /// Ends the session's queues: parked channels are closed, waiters see `SessionGone`.
    fn close(&self) {
        self.idle_rx.close();
        while self.idle_rx.try_recv().is_ok() {}
        self.control_tx.close();
        self.ended.fire();
    }
}

/// All live sessions and the URL bindings.
#[derive(Default)]
pub struct Registry {
    sessions: Mutex<HashMap<u64, Arc<SessionHandle>>>,
    /// Who owns which URL; locked only while the sessions lock is held.
    owners: Mutex<Ownership>,
    /// Live sessions per agent address (the agent port's pre-auth limits spare them).
    agent_ips: Mutex<HashMap<std::net::IpAddr, u32>>,
    bindings: ArcSwap<HashMap<String, Arc<Pool>>>,
    next_id: AtomicU64,
    /// Pool membership and health events.
    pub pool_stats: PoolStats,
}

/// A bind that succeeded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bound {
    /// Members of the URL's pool after the bind.
    pub members: usize,
    /// The bind claimed the URL for the session's user (nobody owned it).
    pub claimed: bool,
}

/// Why a bind was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BindRefusal {
    /// The session is ending.
    SessionEnding,
    /// Another service user owns the URL.
    NotOwner(Owner),
    /// The URL's pool does not take this session.
    Pool(super::pool::PoolRefusal),
}

impl From<super::pool::PoolRefusal> for BindRefusal {
    fn from(r: super::pool::PoolRefusal) -> Self {
        Self::Pool(r)
    }
}

impl BindRefusal {
    /// The agent protocol's code for this refusal.
    pub fn code(&self) -> crate::wire::ErrorCode {
        match self {
            Self::SessionEnding | Self::Pool(_) => crate::wire::ErrorCode::AlreadyBound,
            Self::NotOwner(_) => crate::wire::ErrorCode::NotOwner,
        }
    }

    /// A sentence about `url` for the agent, logs and audit events.
    pub fn message(&self, url: &str) -> String {
        match self {
            Self::SessionEnding => format!("{url}: the session is ending"),
            Self::NotOwner(o) => format!(
                "{url} belongs to another service user ({}); only its sessions may bind it",
                o.user_name
            ),
            Self::Pool(r) => r.message(url),
        }
    }
}

/// One URL a session serves, as the admin API shows it.
#[derive(Debug, Clone)]
pub struct BindingState {
    /// The internal URL.
    pub url: String,
    /// Members of its pool.
    pub pool_members: usize,
    /// The agent's last upstream health report.
    pub healthy: bool,
    /// Skipped by the edge for now (a recent failure it saw).
    pub suspect: bool,
    /// Pool weight.
    pub weight: u16,
}

impl Registry {
    /// Creates a session for an authenticated agent; returns it and the receiving end
    /// of its control queue.
    pub fn open_session(
        &self,
        identity: Arc<Identity>,
        peer: SocketAddr,
        agent_version: String,
    ) -> (Arc<SessionHandle>, async_channel::Receiver<Frame>) {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed) + 1;
        let mut secret = [0u8; 32];
        rand::RngCore::fill_bytes(&mut rand::rng(), &mut secret);
        let (idle_tx, idle_rx) = async_channel::bounded(MAX_IDLE_CHANNELS);
        let (control_tx, control_rx) = async_channel::bounded(1024);
        let session = Arc::new(SessionHandle {
            id,
            secret,
            replay: Default::default(),
            identity,
            peer,
            agent_version,
            started_at: crate::state::now_ms(),
            rtt_us: AtomicU64::new(0),
            idle_tx,
            idle_rx,
            starved_since: AtomicU64::new(0),
            control_tx,
            in_flight: Default::default(),
            ended: Signal::new(),
            kicked: Signal::new(),
            kick_reason: Mutex::new(None),
        });
        self.lock_sessions().insert(id, session.clone());
        *self.lock_agent_ips().entry(peer.ip()).or_insert(0) += 1;
        (session, control_rx)
    }

    /// The session's secret, to hand to the agent once.
    pub fn secret_of(session: &SessionHandle) -> [u8; 32] {
        session.secret
    }

    /// Whether a live session's agent connects from `ip`.
    pub fn has_session_from(&self, ip: std::net::IpAddr) -> bool {
        self.lock_agent_ips().contains_key(&ip)
    }

    /// Looks up a session by id (data channel authentication).
    pub fn session(&self, id: u64) -> Option<Arc<SessionHandle>> {
        self.lock_sessions().get(&id).cloned()
    }

    /// Binds `url` to `session` if the session's user owns the URL or nobody does (the
    /// bind then claims it), joining the URL's pool when every member asks for
    /// pooling; otherwise refused while another live session holds it.
    pub fn bind(
        &self,
        url: &str,
        session: &Arc<SessionHandle>,
        pooling: bool,
    ) -> Result<Bound, BindRefusal> {
        let _guard = self.lock_sessions();
        if session.control_tx.is_closed() {
            return Err(BindRefusal::SessionEnding);
        }
        let mut owners = self.lock_owners();
        let right = owners.right(url, &session.identity);
        if let BindRight::Foreign(owner) = right {
            return Err(BindRefusal::NotOwner(owner));
        }
        let current = self.bindings.load();
        let pool = match current.get(url) {
            Some(pool) => pool.with_member(url, session, pooling)?,
            None => Pool::first(url, session, pooling),
        };
        let claimed = right == BindRight::Claim;
        if claimed {
            owners.set(
                url.to_string(),
                Owner {
                    user_id: session.identity.user_id.clone(),
                    user_name: session.identity.user_name.clone(),
                    source: OwnerSource::FirstBind,
                },
            );
        }
        let members = pool.members.len();
        let mut next = HashMap::clone(&current);
        next.insert(url.to_string(), Arc::new(pool));
        self.bindings.store(Arc::new(next));
        PoolStats::bump(&self.pool_stats.joined);
        if pooling {
            tracing::info!(%url, session = session.id, members, "pool member joined");
        }
        Ok(Bound { members, claimed })
    }

    /// Replaces the whole ownership table (start-up, config reload) and unbinds every
    /// session bound to a URL its user no longer owns. Returns the URLs unbound, with
    /// the sessions that lost them.
    pub fn set_ownership(&self, table: Ownership) -> Vec<(String, u64)> {
        let _guard = self.lock_sessions();
        *self.lock_owners() = table;
        self.unbind_foreign()
    }

    /// Makes `owner` the owner of `url` (API assign or transfer); sessions of other
    /// users bound to it are unbound. Returns the URLs unbound, with their sessions.
    pub fn set_owner(&self, url: &str, owner: Owner) -> Vec<(String, u64)> {
        let _guard = self.lock_sessions();
        self.lock_owners().set(url.to_string(), owner);
        self.unbind_foreign()
    }

    /// Forgets the owner of `url` unless a live session holds it (then the owner
    /// stays, and the sessions holding it are returned as the reason).
    pub fn release_owner(&self, url: &str) -> Result<Option<Owner>, Vec<u64>> {
        let _guard = self.lock_sessions();
        if let Some(pool) = self.bindings.load().get(url) {
            return Err(pool.members.iter().map(|m| m.id()).collect());
        }
        Ok(self.lock_owners().remove(url))
    }

    /// The ownership table as it stands.
    pub fn ownership(&self) -> Ownership {
        let _guard = self.lock_sessions();
        self.lock_owners().clone()
    }

    /// Removes members whose user does not own their URL (caller holds the sessions
    /// lock) and tells each session which URL it lost.
    fn unbind_foreign(&self) -> Vec<(String, u64)> {
        let owners = self.lock_owners();
        let current = self.bindings.load();
        let mut lost = Vec::new();
        let mut next = HashMap::with_capacity(current.len());
        for (url, pool) in current.iter() {
            let Some(owner) = owners.owner(url) else {
                next.insert(url.clone(), pool.clone());
                continue;
            };
            let mut kept = Some(Pool::clone(pool));
            for m in &pool.members {
                if m.session.identity.user_id != owner.user_id {
                    lost.push((url.clone(), m.id()));
                    kept = kept.and_then(|p| p.without(m.id()));
                    m.session.send_control(Frame::Error {
                        request_id: 0,
                        code: crate::wire::ErrorCode::NotOwner,
                        message: format!(
                            "{url} now belongs to service user {}; unbound",
                            owner.user_name
                        ),
                    });
                    PoolStats::bump(&self.pool_stats.left);
                    tracing::warn!(%url, session = m.id(), owner = %owner.user_name, "unbound: the URL belongs to another service user");
                }
            }
            if let Some(p) = kept {
                next.insert(url.clone(), Arc::new(p));
            }
        }
        if !lost.is_empty() {
            self.bindings.store(Arc::new(next));
        }
        lost
    }

    /// Records an agent's health report for one of its URLs; logs and counts a change
    /// of health. `false` when the session does not serve `url`.
    pub fn report_health(&self, session_id: u64, url: &str, healthy: bool, weight: u16) -> bool {
        let current = self.bindings.load();
        let Some(member) = current.get(url).and_then(|p| p.member(session_id)) else {
            return false;
        };
        if member.report(healthy, weight) {
            let members = current.get(url).map_or(0, |p| p.members.len());
            if healthy {
                PoolStats::bump(&self.pool_stats.became_healthy);
                tracing::info!(%url, session = session_id, weight, members, "pool member healthy");
            } else {
                PoolStats::bump(&self.pool_stats.became_unhealthy);
                tracing::warn!(%url, session = session_id, members, why = "its agent cannot reach the upstream", "pool member unhealthy");
            }
        }
        true
    }

    /// The pool serving `url`, if any. Lock-free.
    pub fn lookup(&self, url: &str) -> Option<Arc<Pool>> {
        self.bindings.load().get(url).cloned()
    }

    /// Every bound URL with its pool's size.
    pub fn pools(&self) -> Vec<(String, usize)> {
        let mut all: Vec<_> = self
            .bindings
            .load()
            .iter()
            .map(|(url, p)| (url.clone(), p.members.len()))
            .collect();
        all.sort();
        all
    }

    /// Every pool member: (url, session id, agent-reported healthy, suspect).
    pub fn pool_members(&self) -> Vec<(String, u64, bool, bool)> {
        let mut all: Vec<_> = self
            .bindings
            .load()
            .iter()
            .flat_map(|(url, p)| {
                p.members
                    .iter()
                    .map(|m| (url.clone(), m.id(), m.healthy(), m.suspect()))
            })
            .collect();
        all.sort_by(|a, b| a.0.cmp(&b.0).then(a.1.cmp(&b.1)));
        all
    }

    /// Every live session.
    pub fn sessions(&self) -> Vec<Arc<SessionHandle>> {
        let mut all: Vec<_> = self.lock_sessions().values().cloned().collect();
        all.sort_by_key(|s| s.id);
        all
    }

    /// The URLs a session is bound to, each with its pool's size and the member's
    /// health.
    pub fn bindings_of(&self, session_id: u64) -> Vec<BindingState> {
        let mut urls: Vec<_> = self
            .bindings
            .load()
            .iter()
            .filter_map(|(url, p)| {
                let m = p.member(session_id)?;
                Some(BindingState {
                    url: url.clone(),
                    pool_members: p.members.len(),
                    healthy: m.healthy(),
                    suspect: m.suspect(),
                    weight: m.weight(),
                })
            })
            .collect();
        urls.sort_by(|a, b| a.url.cmp(&b.url));
        urls
    }

    /// Unbinds every URL of the sessions `doomed` selects right away (no new
    /// connections reach them) and kicks them; returns how many.
    pub fn kick_where(
        &self,
        doomed: impl Fn(&SessionHandle) -> bool,
        code: crate::wire::ErrorCode,
        reason: &str,
    ) -> usize {
        let victims: Vec<_> = self
            .lock_sessions()
            .values()
            .filter(|s| doomed(s))
            .cloned()
            .collect();
        for s in &victims {
            tracing::info!(session = s.id, user = %s.identity.user_name, token = %s.identity.token_id, %reason, "ending agent session");
            self.unbind_all(s);
            s.kick(code, reason.to_string());
        }
        victims.len()
    }

    /// Removes a session and every binding it held; closes its parked channels.
    /// Returns the URLs it held.
    pub fn close_session(&self, session: &SessionHandle) -> Vec<String> {
        let mut sessions = self.lock_sessions();
        if sessions.remove(&session.id).is_some() {
            let mut ips = self.lock_agent_ips();
            if let Some(n) = ips.get_mut(&session.peer.ip()) {
                *n -= 1;
                if *n == 0 {
                    ips.remove(&session.peer.ip());
                }
            }
        }
        drop(sessions);
        let urls = self.unbind_all(session);
        session.close();
        urls
    }

    fn unbind_all(&self, session: &SessionHandle) -> Vec<String> {
        let _guard = self.lock_sessions();
        let mut urls = Vec::new();
        let current = self.bindings.load();
        if current.values().any(|p| p.member(session.id).is_some()) {
            let next: HashMap<_, _> = current
                .iter()
                .filter_map(|(url, pool)| {
                    if pool.member(session.id).is_none() {
                        return Some((url.clone(), pool.clone()));
                    }
                    urls.push(url.clone());
                    let left = pool.without(session.id);
                    PoolStats::bump(&self.pool_stats.left);
                    tracing::info!(%url, session = session.id, members = left.as_ref().map_or(0, |p| p.members.len()), "pool member left");
                    left.map(|p| (url.clone(), Arc::new(p)))
                })
                .collect();
            self.bindings.store(Arc::new(next));
        }
        urls
    }

    fn lock_agent_ips(&self) -> std::sync::MutexGuard<'_, HashMap<std::net::IpAddr, u32>> {
        self.agent_ips.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn lock_owners(&self) -> std::sync::MutexGuard<'_, Ownership> {
        self.owners.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn lock_sessions(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Arc<SessionHandle>>> {
        // A panic while holding this lock cannot leave the maps inconsistent (every
        // update is a single insert/remove or an atomic snapshot swap).
        self.sessions.lock().unwrap_or_else(|p| p.into_inner())
    }
}
