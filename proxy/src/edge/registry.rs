//! Live agent sessions and which session serves which internal URL.
//!
//! Binds and session changes are rare and go through a mutex; the map the data path
//! reads (internal URL -> session) is an immutable snapshot published with `arc-swap`,
//! so a public connection finds its session without taking any lock. A session itself
//! is a [`SessionHandle`] (`session_handle.rs`); a URL's members are a [`Pool`].

use std::{
    collections::HashMap,
    net::SocketAddr,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc, Mutex,
    },
};

use arc_swap::ArcSwap;

use super::{
    auth::Identity,
    bind_error::BindError,
    ownership::{BindRight, Owner, OwnerSource, Ownership},
    pool::{Pool, PoolStats},
    session_handle::SessionHandle,
};
use crate::wire::Frame;

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
    /// Bumped by every change of the sessions or their bindings (a fleet republishes
    /// this edge's routes and sessions when it moves).
    generation: AtomicU64,
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
    /// Streams that could not be opened on it since it joined.
    pub open_failures: u64,
}

impl Registry {
    /// Creates a session for an authenticated agent; returns it and the receiving end
    /// of its control queue.
    pub fn open_session(
        &self,
        identity: Arc<Identity>,
        peer: SocketAddr,
        agent_version: String,
        metadata: String,
    ) -> (Arc<SessionHandle>, async_channel::Receiver<Frame>) {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed) + 1;
        let (session, control_rx) =
            SessionHandle::open(id, identity, peer, agent_version, metadata);
        self.lock_sessions().insert(id, session.clone());
        *self.lock_agent_ips().entry(peer.ip()).or_insert(0) += 1;
        self.changed();
        (session, control_rx)
    }

    /// The session's secret, to hand to the agent once.
    pub fn secret_of(session: &SessionHandle) -> [u8; 32] {
        session.secret()
    }

    /// Whether a live session's agent connects from `ip`.
    pub fn has_session_from(&self, ip: std::net::IpAddr) -> bool {
        self.lock_agent_ips().contains_key(&ip)
    }

    /// Counts a change of sessions or bindings.
    fn changed(&self) {
        self.generation.fetch_add(1, Ordering::Relaxed);
    }

    /// A number that moves whenever sessions or bindings change.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Relaxed)
    }

    /// The internal URLs bound here now with at least one healthy member, sorted, with
    /// their loads (what this edge publishes as its routes to a fleet).
    pub fn bound_urls(&self) -> Vec<(String, crate::fleet::UrlLoad)> {
        let mut urls: Vec<_> = self
            .bindings
            .load()
            .iter()
            .filter(|(_, pool)| pool.any_healthy())
            .map(|(url, pool)| (url.clone(), pool.load()))
            .collect();
        urls.sort_by(|a, b| a.0.cmp(&b.0));
        urls
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
        policy: Option<Arc<super::endpoint_policy::BoundPolicy>>,
        upstream: crate::wire::UpstreamProtocol,
    ) -> Result<Bound, BindError> {
        let _guard = self.lock_sessions();
        if session.is_closed() {
            return Err(BindError::SessionEnding);
        }
        let mut owners = self.lock_owners();
        let right = owners.right(url, &session.identity);
        if let BindRight::Foreign(owner) = right {
            return Err(BindError::NotOwner(owner));
        }
        let current = self.bindings.load();
        let pool = match current.get(url) {
            Some(pool) => pool.with_member(url, session, pooling, policy, upstream)?,
            None => Pool::first(url, session, pooling, policy, upstream),
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
        self.changed();
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
            self.changed();
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
            self.changed();
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
                    open_failures: m.open_failures(),
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
        self.changed();
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
            self.changed();
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
