//! Endpoint pools: the live sessions bound to one internal URL, each member's health,
//! and the choice of member for a new connection.
//!
//! # Health
//!
//! A member is *usable* when its agent last reported the upstream healthy (the agent's
//! own checks, [`crate::wire::Frame::EndpointHealth`]) and the edge has not marked it
//! *suspect*: a member whose data channel failed to arrive, broke, or answered a stream
//! with "upstream connect failed" is skipped for [`SUSPECT_FOR`]. A session silent past
//! its heartbeat tolerance is dropped altogether (edge/control.rs), which removes it
//! from every pool. When no untried member is usable the pick falls back to suspect
//! but healthy members, then to any member (fail open: a wrong health report must not
//! black-hole a URL; a member whose upstream really is down answers "failed" at once
//! and the connection moves on).
//!
//! A member that has left a connection waiting [`STARVED_AFTER`] for a data channel
//! with none arriving meanwhile is *starved*: its agent cannot open channels (out of
//! descriptors, its data path to the edge broken) or not fast enough, and a new
//! connection given to it would wait up to [`super::CHANNEL_WAIT`] for nothing. Starved
//! candidates are left out of the draw while any other candidate remains; the first
//! channel the member parks ends it. (Its agent also reports itself unhealthy after a
//! few failed channels, but a starved member is skipped before that report arrives.)
//! An ordinary burst, refilled within milliseconds, starves nobody, so weights and
//! load decide as usual.
//!
//! # Balancing: weighted power of two choices
//!
//! Two distinct members are drawn at random, each with probability proportional to
//! its `weight`, and the one with fewer streams in flight *per unit of weight* wins
//! (`in_flight_a * weight_b < in_flight_b * weight_a`; ties go to the first draw). Why
//! this rather than round robin or global least-connections:
//! - it needs no shared cursor or lock: every worker picks from the same immutable
//!   snapshot plus per-session atomic counters, in O(1);
//! - a slow member (its upstream accepts or answers late) holds its streams longer,
//!   its in-flight count grows and it loses most comparisons, so it gets fewer new
//!   connections without any latency measurement;
//! - unlike global least-in-flight, two random draws do not make every worker (whose
//!   view of the counters is a little stale) herd onto the same momentarily idle
//!   member;
//! - at low load (all counts equal) the first draw wins, so connections split in
//!   proportion to the weights.
//!
//! Streams count against a member from the moment it is picked (while its data channel
//! is taken and its upstream connects) until the stream ends, so slow opens count too.
//!
//! A pool is an immutable snapshot; membership changes publish a new one. Members are
//! shared between snapshots, so health and weight changes need no republish.

use std::sync::{
    atomic::{AtomicBool, AtomicU16, AtomicU64, Ordering},
    Arc,
};

use rand::Rng;

use super::{
    bind_error::BindError, datachan::OpenError, endpoint_policy::BoundPolicy,
    session_handle::SessionHandle,
};
use crate::wire::UpstreamProtocol;

/// How long a member the edge saw fail (no data channel in time, a broken channel, an
/// upstream that refused) is skipped while others are usable.
pub const SUSPECT_FOR: std::time::Duration = std::time::Duration::from_secs(2);

/// Most members one connection tries before giving up.
pub const MAX_ATTEMPTS: usize = 3;

/// Highest weight a member can have; an agent asking for more gets this (a member
/// must not be able to take nearly all of a pool's connections by its own say).
pub const MAX_WEIGHT: u16 = 1000;

/// Default weight of a member whose agent sent none.
pub const DEFAULT_WEIGHT: u16 = 100;

/// One session serving one pooled URL.
pub struct Member {
    /// The agent session.
    pub session: Arc<SessionHandle>,
    /// The URL, for logs.
    pub url: String,
    /// What the agent's upstream checks last said.
    healthy: AtomicBool,
    /// Relative share of new connections.
    weight: AtomicU16,
    /// Skipped until this instant (ms on [`crate::clock::mono_ms`]); 0: not suspect.
    suspect_until: AtomicU64,
    /// Streams that could not be opened on it (each tried on another member while one
    /// was left).
    open_failures: AtomicU64,
    /// The HTTP version its upstream speaks (`upstream.protocol`).
    pub upstream: UpstreamProtocol,
}

impl Member {
    fn new(session: Arc<SessionHandle>, url: &str, upstream: UpstreamProtocol) -> Self {
        Self {
            session,
            url: url.to_string(),
            healthy: AtomicBool::new(true),
            weight: AtomicU16::new(DEFAULT_WEIGHT),
            suspect_until: AtomicU64::new(0),
            open_failures: AtomicU64::new(0),
            upstream,
        }
    }

    /// Counts a stream that could not be opened on it.
    pub fn note_open_failure(&self) {
        self.open_failures.fetch_add(1, Ordering::Relaxed);
    }

    /// Streams that could not be opened on it since it joined.
    pub fn open_failures(&self) -> u64 {
        self.open_failures.load(Ordering::Relaxed)
    }

    /// The session id.
    pub fn id(&self) -> u64 {
        self.session.id
    }

    /// Whether the agent reports the upstream healthy.
    pub fn healthy(&self) -> bool {
        self.healthy.load(Ordering::Relaxed)
    }

    /// The member's weight.
    pub fn weight(&self) -> u16 {
        self.weight.load(Ordering::Relaxed).max(1)
    }

    /// Whether the edge skips this member for now.
    pub fn suspect(&self) -> bool {
        self.suspect_at(crate::clock::mono_ms())
    }

    /// Whether the edge skips this member at `now_ms` on the crate clock.
    pub fn suspect_at(&self, now_ms: u64) -> bool {
        self.suspect_until.load(Ordering::Relaxed) > now_ms
    }

    /// Records the agent's report; returns whether `healthy` changed.
    pub fn report(&self, healthy: bool, weight: u16) -> bool {
        self.weight
            .store(weight.clamp(1, MAX_WEIGHT), Ordering::Relaxed);
        self.healthy.swap(healthy, Ordering::Relaxed) != healthy
    }

    /// Marks the member suspect for [`SUSPECT_FOR`]; returns whether it was not
    /// suspect before (so the caller logs once per transition).
    pub fn mark_suspect(&self) -> bool {
        self.mark_suspect_at(crate::clock::mono_ms())
    }

    /// [`Self::mark_suspect`] at `now_ms` on the crate clock.
    pub fn mark_suspect_at(&self, now_ms: u64) -> bool {
        let until = now_ms + SUSPECT_FOR.as_millis() as u64;
        self.suspect_until.swap(until, Ordering::Relaxed) <= now_ms
    }

    fn load(&self) -> u64 {
        self.session.in_flight.load(Ordering::Relaxed) as u64
    }
}

/// How long a member may leave a connection without a data channel before new
/// connections avoid it (see the module doc).
pub const STARVED_AFTER: std::time::Duration = std::time::Duration::from_millis(250);

/// The sessions serving one internal URL.
#[derive(Clone)]
pub struct Pool {
    /// Live members (one unless every member bound with `pooling_enabled`).
    pub members: Vec<Arc<Member>>,
    /// Whether the members bound with `pooling_enabled: true`.
    pub pooling: bool,
    /// The endpoint's traffic policy, which every member bound with (`None`: none).
    pub policy: Option<Arc<BoundPolicy>>,
}

impl Pool {
    /// Whether a member's agent last reported its upstream reachable.
    pub fn any_healthy(&self) -> bool {
        self.members.iter().any(|m| m.healthy())
    }

    /// The pool's load as another edge of a fleet weighs it: its healthy members'
    /// summed weights, and the streams open on their sessions.
    pub fn load(&self) -> crate::fleet::UrlLoad {
        let healthy = self.members.iter().filter(|m| m.healthy());
        let (capacity, active) = healthy.fold((0u32, 0u32), |(c, a), m| {
            (
                c.saturating_add(u32::from(m.weight())),
                a.saturating_add(m.load().min(u64::from(u32::MAX)) as u32),
            )
        });
        crate::fleet::UrlLoad { capacity, active }
    }

    /// A pool of one.
    pub fn first(
        url: &str,
        session: &Arc<SessionHandle>,
        pooling: bool,
        policy: Option<Arc<BoundPolicy>>,
        upstream: UpstreamProtocol,
    ) -> Pool {
        Pool {
            members: vec![Arc::new(Member::new(session.clone(), url, upstream))],
            pooling,
            policy,
        }
    }

    /// The member for `session_id`, if it is one.
    pub fn member(&self, session_id: u64) -> Option<&Arc<Member>> {
        self.members.iter().find(|m| m.id() == session_id)
    }

    /// Picks a member for a new connection among those not in `tried` (session ids):
    /// weighted power of two choices over the usable ones, falling back as the module
    /// doc says. `None` when every member was tried.
    pub fn pick(&self, tried: &[u64]) -> Option<Arc<Member>> {
        self.pick_at(tried, crate::clock::mono_ms(), &mut rand::rng())
    }

    /// [`Self::pick`] at `now_ms` on the crate clock, drawing from `rng`: no clock and
    /// no global state, so tests decide both.
    pub fn pick_at(&self, tried: &[u64], now_ms: u64, rng: &mut impl Rng) -> Option<Arc<Member>> {
        let mut untried = self.members.iter().filter(|m| !tried.contains(&m.id()));
        if self.members.len() == 1 {
            return untried.next().cloned();
        }
        // One pass, each member ranked once (its health can change meanwhile): lower is
        // better; usable, then healthy but suspect, then any; fed before starved
        // within each. The candidates are the members of the best rank.
        let rank = |m: &Member| {
            let tier = if !m.healthy() {
                2
            } else if m.suspect_at(now_ms) {
                1
            } else {
                0
            };
            tier * 2 + u8::from(m.session.starved_at(STARVED_AFTER, now_ms))
        };
        let mut candidates: Vec<&Arc<Member>> = Vec::with_capacity(self.members.len());
        let mut best = u8::MAX;
        for member in untried {
            let r = rank(member);
            if r < best {
                best = r;
                candidates.clear();
            }
            if r == best {
                candidates.push(member);
            }
        }
        two_choices(&candidates, rng).cloned()
    }

    /// A pool with `session` added (when allowed): a URL held without pooling accepts
    /// no second member, and every member of a pool must ask for pooling.
    pub fn with_member(
        &self,
        url: &str,
        session: &Arc<SessionHandle>,
        pooling: bool,
        policy: Option<Arc<BoundPolicy>>,
        upstream: UpstreamProtocol,
    ) -> Result<Pool, BindError> {
        if self.member(session.id).is_some() {
            return Err(BindError::AlreadyBoundHere);
        }
        if !self.pooling && !pooling {
            return Err(BindError::AlreadyBound);
        }
        if self.pooling != pooling {
            return Err(BindError::PoolingMismatch {
                pool_pooling: self.pooling,
            });
        }
        if self.policy != policy {
            return Err(BindError::PolicyMismatch);
        }
        let mut members = self.members.clone();
        members.push(Arc::new(Member::new(session.clone(), url, upstream)));
        Ok(Pool {
            members,
            pooling,
            policy: self.policy.clone(),
        })
    }

    /// The pool without `session_id`; `None` when nobody is left.
    pub fn without(&self, session_id: u64) -> Option<Pool> {
        let members: Vec<_> = self
            .members
            .iter()
            .filter(|m| m.id() != session_id)
            .cloned()
            .collect();
        (!members.is_empty()).then_some(Pool {
            members,
            pooling: self.pooling,
            policy: self.policy.clone(),
        })
    }
}

/// Weighted power of two choices (see the module doc).
fn two_choices<'a>(candidates: &[&'a Arc<Member>], rng: &mut impl Rng) -> Option<&'a Arc<Member>> {
    match candidates.len() {
        0 => None,
        1 => Some(candidates[0]),
        _ => {
            let total: u64 = candidates.iter().map(|m| u64::from(m.weight())).sum();
            let a = draw(candidates, total, None, rng);
            let rest = total - u64::from(candidates[a].weight());
            let b = draw(candidates, rest, Some(a), rng);
            let (x, y) = (candidates[a], candidates[b]);
            let (wx, wy) = (u64::from(x.weight()), u64::from(y.weight()));
            Some(if y.load() * wx < x.load() * wy { y } else { x })
        }
    }
}

/// Index drawn with probability proportional to weight, skipping `except`.
fn draw(
    candidates: &[&Arc<Member>],
    total: u64,
    except: Option<usize>,
    rng: &mut impl Rng,
) -> usize {
    let mut ticket = rng.random_range(0..total.max(1));
    let mut last = 0;
    for (i, m) in candidates.iter().enumerate() {
        if Some(i) == except {
            continue;
        }
        last = i;
        let w = u64::from(m.weight());
        if ticket < w {
            return i;
        }
        ticket -= w;
    }
    last
}

/// Counts a stream against its member's load until dropped.
pub struct MemberLoad(pub Arc<Member>);

impl MemberLoad {
    /// Starts counting a stream on `member`'s session.
    pub fn new(member: Arc<Member>) -> Self {
        member.session.in_flight.fetch_add(1, Ordering::Relaxed);
        Self(member)
    }
}

impl Drop for MemberLoad {
    fn drop(&mut self) {
        self.0.session.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Pool events since the edge started (for logs, the admin API and metrics).
#[derive(Default, Debug)]
pub struct PoolStats {
    /// Members that joined a URL.
    pub joined: AtomicU64,
    /// Members that left a URL (session ended or drained).
    pub left: AtomicU64,
    /// Agent-reported transitions to unhealthy.
    pub became_unhealthy: AtomicU64,
    /// Agent-reported transitions back to healthy.
    pub became_healthy: AtomicU64,
    /// Members the edge marked suspect (channel failed or upstream refused).
    pub marked_suspect: AtomicU64,
    /// Connections moved to another member before any byte reached an upstream.
    pub failovers: AtomicU64,
    /// Connections that found no member able to take them.
    pub exhausted: AtomicU64,
    /// Failed attempts to open a stream on a member, by cause
    /// ([`OpenError::index`]).
    pub open_failures: [AtomicU64; OpenError::ALL.len()],
}

impl PoolStats {
    /// Adds one.
    pub fn bump(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(weight: u16, in_flight: usize) -> Arc<Member> {
        let session = SessionHandle::for_tests(in_flight);
        let m = Member::new(session, "tcp://x.internal:1", UpstreamProtocol::Http1);
        m.report(true, weight);
        Arc::new(m)
    }

    fn shares(members: &[Arc<Member>], rounds: usize) -> Vec<usize> {
        let refs: Vec<&Arc<Member>> = members.iter().collect();
        let mut rng = rand::rng();
        let mut counts = vec![0; members.len()];
        for _ in 0..rounds {
            let m = two_choices(&refs, &mut rng).unwrap();
            let i = members.iter().position(|x| Arc::ptr_eq(x, m)).unwrap();
            counts[i] += 1;
        }
        counts
    }

    #[test]
    fn idle_members_split_by_weight() {
        let members = vec![member(100, 0), member(100, 0), member(200, 0)];
        let c = shares(&members, 40_000);
        // 25% / 25% / 50%, within a few percent.
        assert!((9_000..11_000).contains(&c[0]), "{c:?}");
        assert!((9_000..11_000).contains(&c[1]), "{c:?}");
        assert!((19_000..21_000).contains(&c[2]), "{c:?}");
    }

    #[test]
    fn an_agent_cannot_give_itself_more_than_the_maximum_weight() {
        let members = vec![member(100, 0), member(100, 0)];
        members[1].report(true, u16::MAX);
        assert_eq!(members[1].weight(), MAX_WEIGHT);
        members[1].report(true, 0);
        assert_eq!(members[1].weight(), 1);
        members[1].report(true, u16::MAX);
        let c = shares(&members, 20_000);
        // 100 vs 1000 (not 100 vs 65,535): the greedy member gets about 10/11.
        assert!((1_400..2_300).contains(&c[0]), "{c:?}");
    }

    #[test]
    fn the_busier_member_per_weight_loses() {
        // Two members: the draw always compares both, so the less loaded one wins.
        let members = vec![member(100, 10), member(100, 2)];
        assert_eq!(shares(&members, 1000), vec![0, 1000]);
        // Twice the weight carries twice the load before losing.
        let members = vec![member(200, 10), member(100, 6)];
        assert_eq!(shares(&members, 1000), vec![1000, 0]);
    }

    #[test]
    fn unhealthy_and_suspect_members_are_skipped_while_others_are_usable() {
        let members = vec![member(100, 0), member(100, 0), member(100, 0)];
        members[0].report(false, 100);
        assert!(members[1].mark_suspect());
        assert!(
            !members[1].mark_suspect(),
            "second mark is not a transition"
        );
        let pool = Pool {
            members: members.clone(),
            pooling: true,
            policy: None,
        };
        for _ in 0..200 {
            assert!(Arc::ptr_eq(&pool.pick(&[]).unwrap(), &members[2]));
        }
        // Only unusable ones left: suspect-but-healthy first, then anyone.
        let id2 = members[2].id();
        assert!(Arc::ptr_eq(&pool.pick(&[id2]).unwrap(), &members[1]));
        let id1 = members[1].id();
        assert!(Arc::ptr_eq(&pool.pick(&[id1, id2]).unwrap(), &members[0]));
        assert!(pool.pick(&[members[0].id(), id1, id2]).is_none());
    }

    #[test]
    fn on_a_fake_clock_suspicion_lasts_suspect_for_and_failover_goes_usable_suspect_unhealthy() {
        use rand::SeedableRng;
        let mut rng = rand::rngs::StdRng::seed_from_u64(15);
        let t0 = 50_000_000;
        let (usable, suspect, unhealthy) = (member(100, 0), member(100, 0), member(100, 0));
        unhealthy.report(false, 100);
        assert!(suspect.mark_suspect_at(t0));
        assert!(!suspect.mark_suspect_at(t0 + 1), "not a new transition");
        let pool = Pool {
            members: vec![unhealthy.clone(), suspect.clone(), usable.clone()],
            pooling: true,
            policy: None,
        };
        let order = |now: u64, rng: &mut rand::rngs::StdRng| {
            let mut tried = Vec::new();
            while let Some(m) = pool.pick_at(&tried, now, rng) {
                tried.push(m.id());
            }
            tried
        };
        let expected = vec![usable.id(), suspect.id(), unhealthy.id()];
        let until = t0 + 1 + SUSPECT_FOR.as_millis() as u64;
        assert_eq!(order(t0 + 10, &mut rng), expected);
        assert_eq!(order(until - 1, &mut rng), expected);
        // Suspicion over: the two healthy members share first place.
        let firsts: std::collections::HashSet<u64> =
            (0..100).map(|_| order(until, &mut rng)[0]).collect();
        assert_eq!(firsts, [usable.id(), suspect.id()].into());
        assert!(!suspect.suspect_at(until));
    }

    #[test]
    fn on_a_fake_clock_a_starved_member_is_skipped_once_starved_after_has_passed() {
        use rand::SeedableRng;
        let mut rng = rand::rngs::StdRng::seed_from_u64(15);
        let members = vec![member(100, 0), member(100, 0)];
        let pool = Pool {
            members: members.clone(),
            pooling: true,
            policy: None,
        };
        members[0].session.starve_for_tests(0);
        let now = crate::clock::mono_ms();
        let picked = |now: u64, rng: &mut rand::rngs::StdRng| -> std::collections::HashSet<u64> {
            (0..100)
                .map(|_| pool.pick_at(&[], now, rng).unwrap().id())
                .collect()
        };
        assert_eq!(picked(now, &mut rng).len(), 2, "a burst being refilled");
        let later = now + STARVED_AFTER.as_millis() as u64;
        assert_eq!(picked(later, &mut rng), [members[1].id()].into());
    }

    #[test]
    fn weights_decide_the_split_with_a_seeded_draw() {
        use rand::SeedableRng;
        let mut rng = rand::rngs::StdRng::seed_from_u64(15);
        let members = vec![member(300, 0), member(100, 0)];
        let pool = Pool {
            members: members.clone(),
            pooling: true,
            policy: None,
        };
        let heavy = (0..4000)
            .filter(|_| Arc::ptr_eq(&pool.pick_at(&[], 0, &mut rng).unwrap(), &members[0]))
            .count();
        assert!((2800..3200).contains(&heavy), "about 3/4: {heavy}");
    }

    #[test]
    fn starved_members_are_skipped_until_a_channel_arrives() {
        let members = vec![member(100, 0), member(100, 0)];
        let pool = Pool {
            members: members.clone(),
            pooling: true,
            policy: None,
        };
        let picked = |pool: &Pool| -> std::collections::HashSet<u64> {
            (0..200).map(|_| pool.pick(&[]).unwrap().id()).collect()
        };
        // A connection waiting only briefly (a burst being refilled): both stay.
        members[0].session.starve_for_tests(10);
        assert_eq!(picked(&pool).len(), 2);
        // Waiting past STARVED_AFTER: the other member takes every connection...
        members[0].session.starve_for_tests(1_000);
        assert_eq!(picked(&pool), [members[1].id()].into());
        // ...unless it was tried already: the starved one is better than none.
        assert!(Arc::ptr_eq(
            &pool.pick(&[members[1].id()]).unwrap(),
            &members[0]
        ));
        // A channel parks: starved no more.
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let channel = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        members[0]
            .session
            .park(super::super::datachan::ParkedChannel::Plain(channel));
        assert_eq!(picked(&pool).len(), 2);
        // Everyone starved: everyone stays in the draw.
        members[0].session.starve_for_tests(1_000);
        members[1].session.starve_for_tests(1_000);
        assert_eq!(picked(&pool).len(), 2);
    }
}
