//! Endpoint pools: the live sessions bound to one internal URL, and the choice of
//! member for a new connection — the less loaded of two random members (by streams in
//! flight), skipping members a connection already failed on. A pool is an immutable
//! snapshot; membership changes publish a new one.

use std::sync::{atomic::Ordering, Arc};

use rand::Rng;

use super::registry::SessionHandle;

/// The sessions serving one internal URL.
pub struct Pool {
    /// Live members (one unless every member bound with `pooling_enabled`).
    pub members: Vec<Arc<SessionHandle>>,
    /// Whether the members bound with `pooling_enabled: true`.
    pub pooling: bool,
}

impl Pool {
    /// Picks a member for a new connection: among the members not in `tried`, the one
    /// with fewer streams in flight of two chosen at random. `None` when every member
    /// was tried.
    pub fn pick(&self, tried: &[u64]) -> Option<Arc<SessionHandle>> {
        let candidates: Vec<&Arc<SessionHandle>> = self
            .members
            .iter()
            .filter(|m| !tried.contains(&m.id))
            .collect();
        match candidates.len() {
            0 => None,
            1 => Some(candidates[0].clone()),
            n => {
                let mut rng = rand::rng();
                let a = rng.random_range(0..n);
                let b = (a + rng.random_range(1..n)) % n;
                let (x, y) = (candidates[a], candidates[b]);
                let load = |s: &SessionHandle| s.in_flight.load(Ordering::Relaxed);
                Some(if load(y) < load(x) { y } else { x }.clone())
            }
        }
    }

    /// A pool with `session` added (when allowed): a URL held without pooling accepts
    /// no second member, and every member of a pool must ask for pooling.
    pub fn with_member(
        &self,
        url: &str,
        session: &Arc<SessionHandle>,
        pooling: bool,
    ) -> Result<Pool, String> {
        if self.members.iter().any(|m| m.id == session.id) {
            return Err(format!("{url} is already bound by this session"));
        }
        if !self.pooling && !pooling {
            return Err(format!("{url} is already bound by another agent session"));
        }
        if self.pooling != pooling {
            return Err(format!(
                "{url} is bound by agents with pooling_enabled: {}; every member of a pool must set pooling_enabled: true",
                self.pooling
            ));
        }
        let mut members = self.members.clone();
        members.push(session.clone());
        Ok(Pool { members, pooling })
    }

    /// The pool without `session_id`; `None` when nobody is left.
    pub fn without(&self, session_id: u64) -> Option<Pool> {
        let members: Vec<_> = self
            .members
            .iter()
            .filter(|m| m.id != session_id)
            .cloned()
            .collect();
        (!members.is_empty()).then_some(Pool {
            members,
            pooling: self.pooling,
        })
    }
}

/// Most members one connection tries before giving up.
pub const MAX_ATTEMPTS: usize = 3;

/// Counts a stream against its member's load until dropped.
pub struct MemberLoad(pub Arc<SessionHandle>);

impl MemberLoad {
    /// Starts counting a stream on `session`.
    pub fn new(session: Arc<SessionHandle>) -> Self {
        session.in_flight.fetch_add(1, Ordering::Relaxed);
        Self(session)
    }
}

impl Drop for MemberLoad {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}
