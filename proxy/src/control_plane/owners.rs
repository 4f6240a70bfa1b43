//! Owners of internal URLs (see [`crate::edge::ownership`]): restored from the store
//! and edge.yml into the registry at start and on reload, claims made by first binds
//! stored durably, and the admin API's list, assign/transfer and release. A change of
//! owner unbinds the sessions of every other user from that URL at once.

use serde::{Deserialize, Serialize};

use super::{ControlPlane, ErrorKind, PlaneError};
use crate::{
    clock::wall_ms as now_ms,
    edge::{
        auth::Identity,
        ownership::{Owner, OwnerSource, Ownership},
    },
    state::{NewEvent, UrlOwnerRecord},
};

/// An internal URL's owner as the API shows it.
#[derive(Debug, Serialize)]
pub struct UrlOwnerView {
    /// The internal URL (canonical).
    pub url: String,
    /// The owning service user.
    pub user_id: String,
    /// Its name.
    pub user_name: String,
    /// `config` (edge.yml, read-only here), `api` or `first_bind`.
    pub source: &'static str,
    /// Sessions bound to it now.
    pub bound_sessions: Vec<u64>,
}

/// Body of an assign or transfer.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OwnerInput {
    /// The service user that is to own the URL.
    pub user_id: String,
}

/// The canonical form of an internal URL given by an operator.
fn canonical(url: &str) -> Result<String, PlaneError> {
    url.parse::<sluice_policy::InternalUrl>()
        .map(|u| u.canonical())
        .map_err(|e| PlaneError::bad_request("invalid_url", format!("`{url}`: {e}")))
}

impl ControlPlane {
    /// Rebuilds the ownership table from the store and edge.yml (edge.yml wins) and
    /// publishes it; sessions holding a URL their user no longer owns are unbound.
    pub(super) fn restore_ownership(&self, why: &str) -> Result<(), PlaneError> {
        let users = self.store().users()?;
        let statics = self.statics();
        let name_of = |user_id: &str| -> Option<String> {
            if let Some(name) = user_id.strip_prefix("static:") {
                return statics
                    .users
                    .iter()
                    .any(|u| u.name == name)
                    .then(|| name.to_string());
            }
            users
                .iter()
                .find(|u| u.id == user_id)
                .map(|u| u.name.clone())
        };
        let mut table = Ownership::default();
        for r in self.store().url_owners()? {
            let Some(user_name) = name_of(&r.user_id) else {
                tracing::warn!(url = %r.url, user = %r.user_id, "owner of an internal URL no longer exists; ownership ignored");
                continue;
            };
            let source = OwnerSource::parse(&r.source).unwrap_or(OwnerSource::Api);
            let owner = Owner {
                user_id: r.user_id,
                user_name,
                source,
            };
            table.set(r.url, owner);
        }
        for (url, owner) in crate::edge::static_ownership(&statics.users) {
            table.set(url, owner);
        }
        drop(statics);
        let owned = table.len();
        let lost = self.edge.registry.set_ownership(table);
        self.record_unbinds(&lost, "config");
        tracing::info!(owned, unbound = lost.len(), %why, "internal URL owners loaded");
        Ok(())
    }

    /// Stores the claim a first bind made (called by the audit writer).
    pub(super) fn persist_claim(&self, url: &str, identity: &Identity, session: u64) {
        let record = UrlOwnerRecord {
            url: url.to_string(),
            user_id: identity.user_id.clone(),
            source: OwnerSource::FirstBind.as_str().to_string(),
            assigned_at: now_ms(),
        };
        let event = NewEvent::now(
            "internal_url.claimed",
            &format!("user:{}", identity.user_id),
            url,
            serde_json::json!({ "user": identity.user_name, "token_id": identity.token_id, "session": session }),
        );
        match self.store().claim_url_owner(&record, &event) {
            Ok(true) => {}
            Ok(false) => {
                tracing::info!(%url, user = %identity.user_name, "claim recorded; an assignment through the API had already stored its owner")
            }
            Err(e) => {
                tracing::error!(%url, error = %e, "ownership claim not stored; it holds until restart")
            }
        }
    }

    /// First binds claim URLs on the data path and are stored by the audit writer; an
    /// admin change of an owner waits for claims queued before it, so a claim stored
    /// late cannot bring back an owner the API released.
    fn store_pending_claims(&self) {
        if !self.edge.audit.flush(std::time::Duration::from_secs(2)) {
            tracing::warn!("audit writer did not catch up in 2 s; ownership change goes ahead");
        }
    }

    /// Every owned internal URL.
    pub fn list_owners(&self) -> Vec<UrlOwnerView> {
        let members = self.edge.registry.pool_members();
        self.edge
            .registry
            .ownership()
            .all()
            .into_iter()
            .map(|(url, o)| UrlOwnerView {
                bound_sessions: members.iter().filter(|m| m.0 == url).map(|m| m.1).collect(),
                url,
                user_id: o.user_id,
                user_name: o.user_name,
                source: o.source.as_str(),
            })
            .collect()
    }

    /// One owned URL.
    pub fn get_owner(&self, url: &str) -> Result<UrlOwnerView, PlaneError> {
        let url = canonical(url)?;
        self.list_owners()
            .into_iter()
            .find(|o| o.url == url)
            .ok_or_else(|| PlaneError::not_found("owned internal URL", &url))
    }

    /// Assigns `url` to a user, or transfers it; sessions of other users bound to it
    /// are unbound. Returns the new view and whether the URL had no owner before.
    pub fn assign_owner(
        &self,
        actor: &str,
        url: &str,
        input: OwnerInput,
    ) -> Result<(UrlOwnerView, bool), PlaneError> {
        let url = canonical(url)?;
        let user_name = self.user_name(&input.user_id)?;
        self.store_pending_claims();
        let before = self.edge.registry.ownership().owner(&url).cloned();
        if let Some(o) = &before {
            if o.source == OwnerSource::Config {
                return Err(PlaneError::static_object("owner of", &url));
            }
        }
        let record = UrlOwnerRecord {
            url: url.clone(),
            user_id: input.user_id.clone(),
            source: OwnerSource::Api.as_str().to_string(),
            assigned_at: now_ms(),
        };
        let kind = if before.is_some() {
            "internal_url.transferred"
        } else {
            "internal_url.assigned"
        };
        let event = NewEvent::now(
            kind,
            actor,
            &url,
            serde_json::json!({
                "user_id": input.user_id, "user": user_name,
                "previous_user_id": before.as_ref().map(|o| o.user_id.clone()),
                "previous_user": before.as_ref().map(|o| o.user_name.clone()),
            }),
        );
        self.store().put_url_owner(&record, &event)?;
        let owner = Owner {
            user_id: input.user_id,
            user_name,
            source: OwnerSource::Api,
        };
        let lost = self.edge.registry.set_owner(&url, owner);
        self.record_unbinds(&lost, actor);
        Ok((self.get_owner(&url)?, before.is_none()))
    }

    /// Forgets the owner of `url`, so the next bind by anyone claims it. Refused while
    /// a session holds the URL (transfer it instead) or when edge.yml declares it.
    pub fn release_owner(&self, actor: &str, url: &str) -> Result<(), PlaneError> {
        let url = canonical(url)?;
        self.store_pending_claims();
        let Some(before) = self.edge.registry.ownership().owner(&url).cloned() else {
            return Err(PlaneError::not_found("owned internal URL", &url));
        };
        if before.source == OwnerSource::Config {
            return Err(PlaneError::static_object("owner of", &url));
        }
        if let Err(sessions) = self.edge.registry.release_owner(&url) {
            return Err(PlaneError::new(
                ErrorKind::Conflict,
                "url_in_use",
                format!(
                    "{url} is bound by session(s) {sessions:?} of its owner; transfer it, or stop those agents first"
                ),
            ));
        }
        let event = NewEvent::now(
            "internal_url.released",
            actor,
            &url,
            serde_json::json!({ "previous_user_id": before.user_id, "previous_user": before.user_name }),
        );
        if let Err(e) = self.store().delete_url_owner(&url, &event) {
            self.edge.registry.set_owner(&url, before);
            return Err(e.into());
        }
        Ok(())
    }

    /// The name of an existing user (API-made or from edge.yml).
    fn user_name(&self, user_id: &str) -> Result<String, PlaneError> {
        self.list_users()?
            .into_iter()
            .find(|u| u.user.id == user_id)
            .map(|u| u.user.name)
            .ok_or_else(|| {
                PlaneError::bad_request(
                    "unknown_user",
                    format!("no service user with id {user_id}"),
                )
            })
    }

    fn record_unbinds(&self, lost: &[(String, u64)], actor: &str) {
        for (url, session) in lost {
            self.record(NewEvent::now(
                "internal_url.unbound",
                actor,
                url,
                serde_json::json!({ "session": session, "reason": "the URL now belongs to another service user" }),
            ));
        }
    }
}
