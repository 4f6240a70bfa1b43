//! Stores the data path's session happenings ([`AuditEvent`]) as audit events, on a
//! thread of its own, and records when each API-made token was last used.

use std::sync::{mpsc::Receiver, Arc};

use super::ControlPlane;
use crate::{edge::audit::AuditEvent, state::NewEvent};

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
                while let Ok(event) = events.recv() {
                    plane.store_audit(event);
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
            } => {
                if identity.token_id.starts_with("tok_") {
                    if let Err(e) = self
                        .store()
                        .touch_token(&identity.token_id, crate::state::now_ms())
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
            } => NewEvent::now(
                "endpoint.bind_refused",
                &actor(&identity),
                url,
                serde_json::json!({ "session": session, "reason": reason, "token_id": identity.token_id }),
            ),
            AuditEvent::AuthFailed { peer } => NewEvent::now(
                "session.auth_failed",
                "agent",
                peer.to_string(),
                serde_json::json!({ "reason": "authtoken not recognised" }),
            ),
        };
        self.record(new);
    }
}
