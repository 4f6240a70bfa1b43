//! Service users and their authtokens: the secret is shown once, only its hash is
//! stored; revoking a token or deactivating/deleting its user rebuilds the auth table
//! and ends the live sessions that authenticated with it, unbinding their URLs.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::{ControlPlane, ErrorKind, PlaneError};
use crate::{
    clock::wall_ms as now_ms,
    edge::auth::{AuthTable, BindRule, Identity},
    state::{new_id, NewEvent, TokenRecord, UserRecord},
    token::{self, TokenHash},
    wire::ErrorCode,
};

/// A new service user.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserInput {
    /// Unique name (letters, digits, `-`, `_`, `.`).
    pub name: String,
    /// Free text.
    #[serde(default)]
    pub description: String,
}

/// Changes to a user.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserPatch {
    /// New description.
    pub description: Option<String>,
    /// false: its tokens stop working and its sessions end.
    pub active: Option<bool>,
}

/// A new token.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenInput {
    /// Free text.
    #[serde(default)]
    pub description: String,
    /// `bind:PATTERN` rules limiting which internal URLs the token may bind.
    #[serde(default)]
    pub acl: Vec<String>,
}

/// A user as the API shows it.
#[derive(Debug, Serialize)]
pub struct UserView {
    /// The stored user.
    #[serde(flatten)]
    pub user: UserRecord,
    /// Declared in edge.yml (read-only here).
    #[serde(rename = "static")]
    pub is_static: bool,
}

/// A token just created: the only time its secret is shown (never by `Debug`).
#[derive(Serialize)]
pub struct TokenCreated {
    /// The stored token (no secret).
    #[serde(flatten)]
    pub record: TokenRecord,
    /// The secret: give it to the agent (`agent.authtoken`); it cannot be shown again.
    pub token: String,
}

impl std::fmt::Debug for TokenCreated {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenCreated")
            .field("record", &self.record)
            .field("token", &"***")
            .finish()
    }
}

/// At most the first 64 characters of `text`, escaped, for an error message (a bad
/// value is quoted back, never echoed whole).
pub(crate) fn excerpt(text: &str) -> String {
    let mut out: String = text
        .chars()
        .take(64)
        .collect::<String>()
        .escape_debug()
        .to_string();
    if text.chars().nth(64).is_some() {
        out.push('…');
    }
    out
}

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

impl ControlPlane {
    /// Rebuilds the auth table from edge.yml's users and the store's active users'
    /// unrevoked tokens, publishes it, and ends sessions whose token no longer counts.
    pub(super) fn rebuild_auth(&self, why: &str) -> Result<(), PlaneError> {
        let mut entries = crate::edge::static_identities(&self.statics().users);
        let users = self.store().users()?;
        for t in self.store().tokens(None)? {
            let Some(user) = users.iter().find(|u| u.id == t.user_id) else {
                continue;
            };
            if !user.active || t.revoked_at.is_some() {
                continue;
            }
            let Ok(hash) = TokenHash::parse(&t.hash) else {
                tracing::error!(token = %t.id, "stored token hash unreadable; token ignored");
                continue;
            };
            let acl = t
                .acl
                .iter()
                .filter_map(|r| BindRule::parse(r).ok())
                .collect();
            entries.push((
                hash,
                Arc::new(Identity {
                    user_id: user.id.clone(),
                    user_name: user.name.clone(),
                    token_id: t.id.clone(),
                    acl,
                }),
            ));
        }
        let table = Arc::new(AuthTable::new(entries));
        self.edge.auth.store(table.clone());
        let ended = self.edge.registry.kick_where(
            |s| !table.has_token(&s.identity.token_id),
            ErrorCode::Unauthorized,
            "authtoken revoked, or its service user deactivated or deleted",
        );
        tracing::info!(tokens = table.len(), sessions_ended = ended, %why, "auth table rebuilt");
        Ok(())
    }

    /// Every user, static ones included.
    pub fn list_users(&self) -> Result<Vec<UserView>, PlaneError> {
        let mut out: Vec<UserView> = self
            .statics()
            .users
            .iter()
            .map(|u| UserView {
                user: UserRecord {
                    id: format!("static:{}", u.name),
                    name: u.name.clone(),
                    description: "declared in edge.yml".into(),
                    active: true,
                    created_at: 0,
                },
                is_static: true,
            })
            .collect();
        out.extend(self.store().users()?.into_iter().map(|user| UserView {
            user,
            is_static: false,
        }));
        Ok(out)
    }

    /// One user.
    pub fn get_user(&self, id: &str) -> Result<UserView, PlaneError> {
        self.list_users()?
            .into_iter()
            .find(|u| u.user.id == id)
            .ok_or_else(|| PlaneError::not_found("service user", id))
    }

    fn stored_user(&self, id: &str) -> Result<UserRecord, PlaneError> {
        if id.starts_with("static:")
            && self
                .statics()
                .users
                .iter()
                .any(|u| format!("static:{}", u.name) == id)
        {
            return Err(PlaneError::static_object("service user", id));
        }
        self.store()
            .users()?
            .into_iter()
            .find(|u| u.id == id)
            .ok_or_else(|| PlaneError::not_found("service user", id))
    }

    /// Creates a user.
    pub fn create_user(&self, actor: &str, input: UserInput) -> Result<UserView, PlaneError> {
        if !valid_name(&input.name) {
            return Err(PlaneError::bad_request(
                "invalid_name",
                format!(
                    "`{}`: 1-64 letters, digits, `-`, `_` or `.`",
                    excerpt(&input.name)
                ),
            ));
        }
        if self.list_users()?.iter().any(|u| u.user.name == input.name) {
            return Err(PlaneError::new(
                ErrorKind::Conflict,
                "name_taken",
                format!("a service user named {} exists", input.name),
            ));
        }
        let user = UserRecord {
            id: new_id("usr_"),
            name: input.name,
            description: input.description,
            active: true,
            created_at: now_ms(),
        };
        let event = NewEvent::now(
            "service_user.created",
            actor,
            &user.id,
            serde_json::json!({ "name": user.name }),
        );
        self.store().put_user(&user, &event)?;
        Ok(UserView {
            user,
            is_static: false,
        })
    }

    /// Updates a user; deactivating ends its sessions.
    pub fn update_user(
        &self,
        actor: &str,
        id: &str,
        patch: UserPatch,
    ) -> Result<UserView, PlaneError> {
        let old = self.stored_user(id)?;
        let mut user = old.clone();
        if let Some(d) = patch.description {
            user.description = d;
        }
        if let Some(a) = patch.active {
            user.active = a;
        }
        let kind = match (old.active, user.active) {
            (true, false) => "service_user.deactivated",
            (false, true) => "service_user.activated",
            _ => "service_user.updated",
        };
        let event = NewEvent::now(
            kind,
            actor,
            id,
            serde_json::json!({
                "old": { "active": old.active, "description": old.description },
                "new": { "active": user.active, "description": user.description },
            }),
        );
        self.store().put_user(&user, &event)?;
        if old.active != user.active {
            self.rebuild_auth(kind)?;
        }
        Ok(UserView {
            user,
            is_static: false,
        })
    }

    /// Deletes a user and its tokens; its sessions end.
    pub fn delete_user(&self, actor: &str, id: &str) -> Result<(), PlaneError> {
        let old = self.stored_user(id)?;
        let event = NewEvent::now(
            "service_user.deleted",
            actor,
            id,
            serde_json::json!({ "name": old.name }),
        );
        self.store().delete_user(id, &event)?;
        self.rebuild_auth("service_user.deleted")?;
        self.restore_ownership("service_user.deleted")
    }

    /// A user's tokens (revoked ones too).
    pub fn list_tokens(&self, user_id: &str) -> Result<Vec<TokenRecord>, PlaneError> {
        self.stored_user(user_id)?;
        Ok(self.store().tokens(Some(user_id))?)
    }

    /// Creates a token for a user; returns its secret once.
    pub fn create_token(
        &self,
        actor: &str,
        user_id: &str,
        input: TokenInput,
    ) -> Result<TokenCreated, PlaneError> {
        let user = self.stored_user(user_id)?;
        for rule in &input.acl {
            BindRule::parse(rule).map_err(|m| PlaneError::bad_request("invalid_acl", m))?;
        }
        let secret = token::generate();
        let record = TokenRecord {
            id: new_id("tok_"),
            user_id: user.id.clone(),
            description: input.description,
            hash: TokenHash::of(secret.expose()).to_string(),
            acl: input.acl,
            created_at: now_ms(),
            last_used_at: None,
            revoked_at: None,
        };
        let event = NewEvent::now(
            "authtoken.created",
            actor,
            &record.id,
            serde_json::json!({ "user_id": user.id, "acl": record.acl }),
        );
        self.store().put_token(&record, &event)?;
        self.rebuild_auth("authtoken.created")?;
        Ok(TokenCreated {
            record,
            token: secret.expose().to_string(),
        })
    }

    /// Revokes a token: it stops authenticating and its sessions end within this call.
    pub fn revoke_token(
        &self,
        actor: &str,
        user_id: &str,
        token_id: &str,
    ) -> Result<TokenRecord, PlaneError> {
        self.stored_user(user_id)?;
        let mut token = self
            .store()
            .tokens(Some(user_id))?
            .into_iter()
            .find(|t| t.id == token_id)
            .ok_or_else(|| PlaneError::not_found("authtoken", token_id))?;
        if token.revoked_at.is_some() {
            return Ok(token);
        }
        token.revoked_at = Some(now_ms());
        let event = NewEvent::now(
            "authtoken.revoked",
            actor,
            token_id,
            serde_json::json!({ "user_id": user_id }),
        );
        self.store().put_token(&token, &event)?;
        self.rebuild_auth("authtoken.revoked")?;
        Ok(token)
    }
}
