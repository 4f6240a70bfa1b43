//! Stores the data path's session happenings ([`AuditEvent`]) as audit events, on a
//! thread of its own, and records when each API-made token was last used.
//!
//! Failed agent authentications come from outsiders, as fast as they like; each would
//! be a row. They are aggregated per source address and [`AUTH_FAILURE_WINDOW`]: the
//! first failure of a source in a window is stored at once, the rest of the window as
//! one event with their count when it closes. At most [`MAX_FAILING_SOURCES`] sources
//! are tracked per window; past that, failures share one "other sources" count.

use std::{
    collections::HashMap,
    net::IpAddr,
    sync::{
        mpsc::{Receiver, RecvTimeoutError},
        Arc,
    },
    time::{Duration, Instant},
};

use super::ControlPlane;
use crate::{edge::audit::AuditEvent, state::NewEvent};

/// Window over which one source's failed authentications become one event.
pub const AUTH_FAILURE_WINDOW: Duration = Duration::from_secs(60);
/// Sources tracked per window.
pub const MAX_FAILING_SOURCES: usize = 1024;

/// Failed authentications of the current window, per source (None: the rest).
#[derive(Default)]
struct AuthFailures {
    since: Option<Instant>,
    by_source: HashMap<Option<IpAddr>, u64>,
}

impl AuthFailures {
    /// Counts a failure; true when it is its source's first in this window (store it
    /// at once).
    fn count(&mut self, ip: IpAddr) -> bool {
        self.since.get_or_insert_with(Instant::now);
        let key = if self.by_source.len() < MAX_FAILING_SOURCES
            || self.by_source.contains_key(&Some(ip))
        {
            Some(ip)
        } else {
            None
        };
        let n = self.by_source.entry(key).or_insert(0);
        *n += 1;
        *n == 1 && key.is_some()
    }

    /// When the window closes: the counts not yet stored (beyond each source's first).
    fn close_if_due(&mut self, now: Instant) -> Vec<(Option<IpAddr>, u64)> {
        match self.since {
            Some(since) if now.duration_since(since) >= AUTH_FAILURE_WINDOW => {
                self.since = None;
                self.by_source
                    .drain()
                    .filter_map(|(ip, n)| {
                        let unstored = if ip.is_some() { n - 1 } else { n };
                        (unstored > 0).then_some((ip, unstored))
                    })
                    .collect()
            }
            _ => Vec::new(),
        }
    }
}

impl ControlPlane {
    /// Starts the thread that drains `events` into the store until the edge exits.
    pub fn spawn_audit_writer(
        self: &Arc<Self>,
        events: Receiver<AuditEvent>,
    ) -> std::io::Result<()> {
        let plane = self.clone();
        std::thread::Builder::new()
            .name("sluice-audit".into())
            .spawn(move || {
                let mut failures = AuthFailures::default();
                loop {
                    match events.recv_timeout(Duration::from_secs(1)) {
                        Ok(AuditEvent::AuthFailed { peer }) => {
                            if failures.count(peer.ip()) {
                                plane.record(auth_failed(
                                    Some(peer.ip()),
                                    1,
                                    "first in its window",
                                ));
                            }
                        }
                        Ok(AuditEvent::Flush(done)) => {
                            let _ = done.try_send(());
                        }
                        Ok(event) => plane.store_audit(event),
                        Err(RecvTimeoutError::Timeout) => {}
                        Err(RecvTimeoutError::Disconnected) => break,
                    }
                    for (ip, n) in failures.close_if_due(Instant::now()) {
                        plane.record(auth_failed(ip, n, "the rest of the window"));
                    }
                }
            })
            .map(drop)
    }

    fn store_audit(&self, event: AuditEvent) {
        let actor = |i: &crate::edge::auth::Identity| format!("user:{}", i.user_id);
        let new = match event {
            AuditEvent::SessionStarted {
                session,
                identity,
                peer,
                agent_version,
                metadata,
            } => {
                if identity.token_id.starts_with("tok_") {
                    if let Err(e) = self
                        .store()
                        .touch_token(&identity.token_id, crate::clock::wall_ms())
                    {
                        tracing::warn!(error = %e, "token last-used time not stored");
                    }
                }
                NewEvent::now(
                    "session.started",
                    &actor(&identity),
                    session.to_string(),
                    serde_json::json!({
                        "user": identity.user_name, "token_id": identity.token_id,
                        "peer": peer.to_string(), "agent_version": agent_version,
                        "metadata": metadata,
                    }),
                )
            }
            AuditEvent::SessionEnded {
                session,
                identity,
                reason,
                unbound,
            } => NewEvent::now(
                "session.ended",
                &actor(&identity),
                session.to_string(),
                serde_json::json!({
                    "user": identity.user_name, "token_id": identity.token_id,
                    "reason": reason, "unbound": unbound,
                }),
            ),
            AuditEvent::Bound {
                session,
                identity,
                url,
                members,
            } => NewEvent::now(
                "endpoint.bound",
                &actor(&identity),
                url,
                serde_json::json!({ "session": session, "pool_members": members, "token_id": identity.token_id }),
            ),
            AuditEvent::BindRefused {
                session,
                identity,
                url,
                reason,
                owner: Some(owner),
            } => NewEvent::now(
                "internal_url.foreign_bind_refused",
                &actor(&identity),
                url,
                serde_json::json!({
                    "session": session, "reason": reason, "token_id": identity.token_id,
                    "user_id": identity.user_id, "user": identity.user_name,
                    "owner_user_id": owner.user_id, "owner": owner.user_name,
                }),
            ),
            AuditEvent::BindRefused {
                session,
                identity,
                url,
                reason,
                owner: None,
            } => NewEvent::now(
                "endpoint.bind_refused",
                &actor(&identity),
                url,
                serde_json::json!({ "session": session, "reason": reason, "token_id": identity.token_id }),
            ),
            AuditEvent::UrlClaimed {
                session,
                identity,
                url,
            } => {
                self.persist_claim(&url, &identity, session);
                return;
            }
            AuditEvent::AuthFailed { peer } => {
                auth_failed(Some(peer.ip()), 1, "first in its window")
            }
            AuditEvent::Flush(done) => {
                let _ = done.try_send(());
                return;
            }
        };
        self.record(new);
    }
}

/// A `session.auth_failed` event for `count` failures from `source` (None: several
/// sources past the tracking limit).
fn auth_failed(source: Option<IpAddr>, count: u64, which: &str) -> NewEvent {
    NewEvent::now(
        "session.auth_failed",
        "agent",
        source.map_or_else(|| "other sources".to_string(), |ip| ip.to_string()),
        serde_json::json!({
            "reason": "authtoken not recognised", "count": count, "which": which,
            "window_secs": AUTH_FAILURE_WINDOW.as_secs(),
        }),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_are_stored_once_per_source_and_window_then_summed() {
        let mut f = AuthFailures::default();
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "192.0.2.2".parse().unwrap();
        assert!(f.count(a));
        for _ in 0..299 {
            assert!(!f.count(a));
        }
        assert!(f.count(b));
        assert!(
            f.close_if_due(Instant::now()).is_empty(),
            "window still open"
        );
        let mut closed = f.close_if_due(Instant::now() + AUTH_FAILURE_WINDOW);
        closed.sort();
        assert_eq!(closed, vec![(Some(a), 299)]);
        assert!(f.count(a), "a new window stores the first failure again");
    }

    #[test]
    fn sources_past_the_limit_share_one_count() {
        let mut f = AuthFailures::default();
        for i in 0..MAX_FAILING_SOURCES as u32 + 10 {
            f.count(IpAddr::from(std::net::Ipv4Addr::from(0x0a00_0000 + i)));
        }
        assert_eq!(f.by_source.len(), MAX_FAILING_SOURCES + 1);
        let closed = f.close_if_due(Instant::now() + AUTH_FAILURE_WINDOW);
        assert_eq!(closed, vec![(None, 10)]);
    }
}
