//! Moving a whole state between backends (`sluice state export` / `import`): from an
//! edge's SQLite database into a fleet's etcd, and back. A [`Snapshot`] is every
//! API-made object (token hashes included) and the audit log, as one JSON document.
//!
//! Import goes through the [`Store`] trait like any write, so uniqueness and the
//! fleet's watch work as usual (running edges of a fleet apply an import at once). The
//! audit log comes first, oldest event first, with its original times, kinds, actors
//! and details (its ids are the target's); then each object with an `*.imported`
//! event of its own. A target that already holds objects is refused: an import never
//! merges into or overwrites a live state.

use serde::{Deserialize, Serialize};

use super::{
    EndpointRecord, EventQuery, EventRecord, NewEvent, ReservedAddr, Store, StoreError,
    StoreResult, TokenRecord, UrlOwnerRecord, UserRecord,
};

/// What `format` says in every snapshot.
pub const FORMAT: &str = "sluice-state";
/// The snapshot layout's version.
pub const VERSION: u32 = 1;

/// A whole state.
#[derive(Debug, Serialize, Deserialize)]
pub struct Snapshot {
    /// Always [`FORMAT`].
    pub format: String,
    /// [`VERSION`].
    pub version: u32,
    /// The backend it was read from (`sqlite`, `etcd`, `memory`).
    pub source: String,
    /// API-made cloud endpoints.
    pub endpoints: Vec<EndpointRecord>,
    /// Reserved addresses.
    pub reserved_addrs: Vec<ReservedAddr>,
    /// Service users.
    pub service_users: Vec<UserRecord>,
    /// Authtokens, with their hashes.
    pub authtokens: Vec<ExportedToken>,
    /// Owners of internal URLs.
    pub internal_url_owners: Vec<UrlOwnerRecord>,
    /// The audit log, oldest first.
    pub events: Vec<EventRecord>,
}

/// A token with the hash the API never shows.
#[derive(Debug, Serialize, Deserialize)]
pub struct ExportedToken {
    /// The record.
    #[serde(flatten)]
    pub record: TokenRecord,
    /// `sha256:…` of the secret.
    pub hash: String,
}

/// Audit events read per query while exporting.
const EVENT_PAGE: usize = 1000;

/// Reads everything `store` holds.
pub fn export(store: &dyn Store) -> StoreResult<Snapshot> {
    let mut events = Vec::new();
    let mut before_id = None;
    loop {
        let page = store.events(&EventQuery {
            before_id,
            limit: EVENT_PAGE,
            ..Default::default()
        })?;
        let Some(last) = page.last() else { break };
        before_id = Some(last.id);
        let full = page.len() == EVENT_PAGE;
        events.extend(page);
        if !full {
            break;
        }
    }
    events.reverse();
    Ok(Snapshot {
        format: FORMAT.into(),
        version: VERSION,
        source: store.status().backend.into(),
        endpoints: store.endpoints()?,
        reserved_addrs: store.reserved_addrs()?,
        service_users: store.users()?,
        authtokens: store
            .tokens(None)?
            .into_iter()
            .map(|t| ExportedToken {
                hash: t.hash.clone(),
                record: t,
            })
            .collect(),
        internal_url_owners: store.url_owners()?,
        events,
    })
}

/// What an import wrote.
#[derive(Debug, Default, Serialize)]
pub struct Imported {
    /// Objects written.
    pub objects: usize,
    /// Audit events written.
    pub events: usize,
}

/// Writes `snapshot` into `store`, which must hold no objects.
pub fn import(store: &mut dyn Store, snapshot: Snapshot, actor: &str) -> StoreResult<Imported> {
    if snapshot.format != FORMAT || snapshot.version != VERSION {
        return Err(StoreError::Failed(format!(
            "not a sluice state snapshot of version {VERSION} (format `{}`, version {})",
            snapshot.format, snapshot.version
        )));
    }
    let held = store.endpoints()?.len()
        + store.reserved_addrs()?.len()
        + store.users()?.len()
        + store.tokens(None)?.len()
        + store.url_owners()?.len();
    if held > 0 {
        return Err(StoreError::Conflict(format!(
            "the target state already holds {held} objects; import only into an empty one"
        )));
    }
    let mut done = Imported::default();
    for e in &snapshot.events {
        store.append_event(&NewEvent {
            at: e.at,
            kind: e.kind.clone(),
            actor: e.actor.clone(),
            subject: e.subject.clone(),
            detail: e.detail.clone(),
        })?;
        done.events += 1;
    }
    let source = snapshot.source.as_str();
    let imported = |kind: &str, subject: &str| {
        NewEvent::now(kind, actor, subject, serde_json::json!({ "from": source }))
    };
    for a in &snapshot.reserved_addrs {
        store.put_reserved_addr(a, &imported("reserved_addr.imported", &a.id))?;
        done.objects += 1;
    }
    for u in &snapshot.service_users {
        store.put_user(u, &imported("service_user.imported", &u.id))?;
        done.objects += 1;
    }
    for t in &snapshot.authtokens {
        let token = TokenRecord {
            hash: t.hash.clone(),
            ..t.record.clone()
        };
        store.put_token(&token, &imported("authtoken.imported", &token.id))?;
        done.objects += 1;
    }
    for o in &snapshot.internal_url_owners {
        store.put_url_owner(o, &imported("internal_url.imported", &o.url))?;
        done.objects += 1;
    }
    for e in &snapshot.endpoints {
        store.put_endpoint(e, &imported("endpoint.imported", &e.id))?;
        done.objects += 1;
    }
    Ok(done)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::sqlite::SqliteStore;

    #[test]
    fn a_state_survives_export_and_import_whole() {
        let mut from = SqliteStore::in_memory().unwrap();
        let ev = |kind: &str| NewEvent::now(kind, "api:test", "x", serde_json::json!({}));
        let user = UserRecord {
            id: "usr_1".into(),
            name: "clinic".into(),
            description: String::new(),
            active: true,
            created_at: 1,
        };
        from.put_user(&user, &ev("service_user.created")).unwrap();
        let token = TokenRecord {
            id: "tok_1".into(),
            user_id: "usr_1".into(),
            description: "db".into(),
            hash: "sha256:00ff".into(),
            acl: vec!["bind:*.internal".into()],
            created_at: 2,
            last_used_at: None,
            revoked_at: None,
        };
        from.put_token(&token, &ev("authtoken.created")).unwrap();
        from.append_event(&ev("session.started")).unwrap();

        let text = serde_json::to_string(&export(&from).unwrap()).unwrap();
        assert!(text.contains("sha256:00ff"), "{text}");
        let snapshot: Snapshot = serde_json::from_str(&text).unwrap();

        let mut to = SqliteStore::in_memory().unwrap();
        let done = import(&mut to, snapshot, "import").unwrap();
        assert_eq!((done.objects, done.events), (2, 3));
        assert_eq!(to.users().unwrap(), vec![user]);
        assert_eq!(to.tokens(None).unwrap(), vec![token]);
        let kinds: Vec<String> = to
            .events(&EventQuery {
                limit: 10,
                ..Default::default()
            })
            .unwrap()
            .into_iter()
            .map(|e| e.kind)
            .collect();
        assert_eq!(
            kinds,
            [
                "authtoken.imported",
                "service_user.imported",
                "session.started",
                "authtoken.created",
                "service_user.created"
            ]
        );
        // Never into a state that holds objects.
        let again: Snapshot = serde_json::from_str(&text).unwrap();
        assert!(matches!(
            import(&mut to, again, "import"),
            Err(StoreError::Conflict(_))
        ));
    }
}
