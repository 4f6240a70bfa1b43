//! The embedded backend: one SQLite database file (`state.db` in `state_dir`), in WAL
//! mode with `synchronous=FULL`, so a committed change survives `kill -9` and power
//! loss. Without a state directory the database lives in memory (nothing survives a
//! restart; the edge logs so at start).
//!
//! SQLite (through rusqlite, compiled in) rather than a key-value store because the
//! audit log is queried by type, time and id ranges, and uniqueness (URLs, token
//! hashes, user names) is enforced by the schema, in the same transaction as the change.

use std::{os::unix::fs::OpenOptionsExt, path::Path};

use rusqlite::{params, Connection, OptionalExtension, Row};

use super::{
    migrations::MIGRATIONS, EndpointRecord, EventQuery, EventRecord, NewEvent, ReservedAddr, Store,
    StoreError, StoreResult, StoreStatus, TokenRecord, UrlOwnerRecord, UserRecord,
};

/// Routine audit events kept; older ones are pruned as new ones arrive.
pub const MAX_EVENTS: i64 = 100_000;
/// Events inserted between two prunes.
const PRUNE_EVERY: i64 = 1000;
/// Security events kept ([`is_security_event`]), pruned apart from routine ones.
pub const MAX_SECURITY_EVENTS: i64 = 100_000;

/// Whether an event kind belongs to the security retention class: ownership changes,
/// bind refusals, token and service-user changes (revocations among them). Routine
/// events (sessions, binds, failed authentications by outsiders) never push them out.
pub fn is_security_event(kind: &str) -> bool {
    kind.starts_with("internal_url.")
        || kind.starts_with("authtoken.")
        || kind.starts_with("service_user.")
        || kind == "endpoint.bind_refused"
}

/// A store in one SQLite database.
pub struct SqliteStore {
    db: Connection,
    inserts_since_prune: u32,
    /// Events kept per retention class: routine, security.
    keep: [i64; 2],
    /// `sqlite`, or `memory` without a state directory.
    backend: &'static str,
}

impl SqliteStore {
    /// Opens (creating if needed) `dir/state.db` and brings its schema up to date.
    /// The directory is made (or narrowed to) mode 0700 and the database files are
    /// 0600: they hold token hashes and the audit log.
    pub fn open(dir: &Path) -> StoreResult<Self> {
        use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|e| StoreError::Failed(format!("cannot create {}: {e}", dir.display())))?;
        if let Err(e) = std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)) {
            tracing::warn!(dir = %dir.display(), error = %e, "cannot make the state directory private (mode 0700)");
        }
        let path = dir.join("state.db");
        if !path.exists() {
            std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&path)
                .map_err(|e| {
                    StoreError::Failed(format!("cannot create {}: {e}", path.display()))
                })?;
        }
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))
            .map_err(|e| StoreError::Failed(format!("cannot restrict {}: {e}", path.display())))?;
        let db = Connection::open(&path)
            .map_err(|e| StoreError::Failed(format!("cannot open {}: {e}", path.display())))?;
        db.pragma_update(None, "journal_mode", "WAL")?;
        Self::prepare(db, &path.display().to_string())
    }

    /// A store that lives in memory only.
    pub fn in_memory() -> StoreResult<Self> {
        Self::prepare(Connection::open_in_memory()?, "memory")
    }

    /// `database`: where it lives, for logs (a path, or `memory`).
    fn prepare(mut db: Connection, database: &str) -> StoreResult<Self> {
        db.pragma_update(None, "synchronous", "FULL")?;
        db.pragma_update(None, "foreign_keys", "ON")?;
        db.busy_timeout(std::time::Duration::from_secs(5))?;
        migrate(&mut db, database)?;
        Ok(Self {
            db,
            inserts_since_prune: 0,
            keep: [MAX_EVENTS, MAX_SECURITY_EVENTS],
            backend: if database == "memory" {
                "memory"
            } else {
                "sqlite"
            },
        })
    }

    /// Keeps at most `routine` routine and `security` security events (tests).
    pub fn with_retention(mut self, routine: i64, security: i64) -> Self {
        self.keep = [routine, security];
        self
    }

    /// The schema version in force.
    pub fn schema_version(&self) -> StoreResult<u32> {
        Ok(self
            .db
            .pragma_query_value(None, "user_version", |r| r.get(0))?)
    }

    fn write<T>(
        &mut self,
        event: &NewEvent,
        change: impl FnOnce(&rusqlite::Transaction) -> rusqlite::Result<T>,
    ) -> StoreResult<T> {
        let tx = self.db.transaction()?;
        let out = change(&tx)?;
        insert_event(&tx, event)?;
        tx.commit()?;
        self.after_insert()?;
        Ok(out)
    }

    fn after_insert(&mut self) -> StoreResult<()> {
        self.inserts_since_prune += 1;
        if i64::from(self.inserts_since_prune) >= PRUNE_EVERY.min(self.keep[0]) {
            self.inserts_since_prune = 0;
            for (class, keep) in [(0, self.keep[0]), (1, self.keep[1])] {
                self.db.execute(
                    "DELETE FROM events WHERE security = ?1 AND id <= \
                     (SELECT id FROM events WHERE security = ?1 ORDER BY id DESC LIMIT 1 OFFSET ?2)",
                    params![class, keep],
                )?;
            }
        }
        Ok(())
    }
}

fn migrate(db: &mut Connection, database: &str) -> StoreResult<()> {
    let version: i64 = db.pragma_query_value(None, "user_version", |r| r.get(0))?;
    let version = usize::try_from(version).unwrap_or(usize::MAX);
    if version > MIGRATIONS.len() {
        return Err(StoreError::Failed(format!(
            "database schema version {version} is newer than this sluice knows ({}); \
             refusing to touch it",
            MIGRATIONS.len()
        )));
    }
    if version == MIGRATIONS.len() {
        return Ok(());
    }
    let tx = db.transaction()?;
    for sql in &MIGRATIONS[version..] {
        tx.execute_batch(sql)?;
    }
    tx.pragma_update(None, "user_version", MIGRATIONS.len() as i64)?;
    tx.commit()?;
    tracing::info!(
        from = version,
        to = MIGRATIONS.len(),
        %database,
        "state schema migrated"
    );
    Ok(())
}

fn insert_event(tx: &Connection, e: &NewEvent) -> rusqlite::Result<i64> {
    tx.execute(
        "INSERT INTO events (at, kind, actor, subject, detail, security) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        params![
            e.at,
            e.kind,
            e.actor,
            e.subject,
            e.detail.to_string(),
            is_security_event(&e.kind)
        ],
    )?;
    Ok(tx.last_insert_rowid())
}

fn endpoint_row(r: &Row) -> rusqlite::Result<EndpointRecord> {
    Ok(EndpointRecord {
        id: r.get(0)?,
        url: r.get(1)?,
        description: r.get(2)?,
        traffic_policy: r.get(3)?,
        idle_timeout_secs: r.get::<_, i64>(4)? as u64,
        reserved_addr_id: r.get(5)?,
        created_at: r.get(6)?,
        updated_at: r.get(7)?,
        max_connections: r.get::<_, Option<i64>>(8)?.map(|n| n as usize),
        max_connections_per_ip: r.get::<_, Option<i64>>(9)?.map(|n| n as u32),
        terminate_tls: match (
            r.get::<_, Option<String>>(10)?,
            r.get::<_, Option<String>>(11)?,
        ) {
            (Some(cert), Some(key)) => Some(super::TlsPaths { cert, key }),
            _ => None,
        },
        response_timeout_secs: r.get::<_, Option<i64>>(12)?.map(|n| n as u64),
    })
}

fn token_row(r: &Row) -> rusqlite::Result<TokenRecord> {
    let acl: String = r.get(4)?;
    Ok(TokenRecord {
        id: r.get(0)?,
        user_id: r.get(1)?,
        description: r.get(2)?,
        hash: r.get(3)?,
        acl: serde_json::from_str(&acl).unwrap_or_default(),
        created_at: r.get(5)?,
        last_used_at: r.get(6)?,
        revoked_at: r.get(7)?,
    })
}

impl Store for SqliteStore {
    fn endpoints(&self) -> StoreResult<Vec<EndpointRecord>> {
        let mut st = self.db.prepare(
            "SELECT id, url, description, traffic_policy, idle_timeout_secs, reserved_addr_id, \
             created_at, updated_at, max_connections, max_connections_per_ip, \
             terminate_tls_cert, terminate_tls_key, response_timeout_secs \
             FROM endpoints ORDER BY created_at, id",
        )?;
        let rows = st.query_map([], endpoint_row)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    fn put_endpoint(&mut self, e: &EndpointRecord, event: &NewEvent) -> StoreResult<()> {
        self.write(event, |tx| {
            tx.execute(
                "INSERT OR REPLACE INTO endpoints (id, url, description, traffic_policy, \
                 idle_timeout_secs, reserved_addr_id, created_at, updated_at, max_connections, \
                 max_connections_per_ip, terminate_tls_cert, terminate_tls_key, \
                 response_timeout_secs) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)",
                params![
                    e.id,
                    e.url,
                    e.description,
                    e.traffic_policy,
                    e.idle_timeout_secs as i64,
                    e.reserved_addr_id,
                    e.created_at,
                    e.updated_at,
                    e.max_connections.map(|n| n as i64),
                    e.max_connections_per_ip,
                    e.terminate_tls.as_ref().map(|t| t.cert.as_str()),
                    e.terminate_tls.as_ref().map(|t| t.key.as_str()),
                    e.response_timeout_secs.map(|n| n as i64)
                ],
            )
            .map(drop)
        })
    }

    fn delete_endpoint(&mut self, id: &str, event: &NewEvent) -> StoreResult<bool> {
        self.write(event, |tx| {
            tx.execute("DELETE FROM endpoints WHERE id = ?1", [id])
                .map(|n| n > 0)
        })
    }

    fn reserved_addrs(&self) -> StoreResult<Vec<ReservedAddr>> {
        let mut st = self.db.prepare(
            "SELECT id, ip, port_start, port_end, description, created_at \
             FROM reserved_addrs ORDER BY created_at, id",
        )?;
        let rows = st.query_map([], |r| {
            Ok(ReservedAddr {
                id: r.get(0)?,
                ip: r.get(1)?,
                port_start: r.get(2)?,
                port_end: r.get(3)?,
                description: r.get(4)?,
                created_at: r.get(5)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    fn put_reserved_addr(&mut self, a: &ReservedAddr, event: &NewEvent) -> StoreResult<()> {
        self.write(event, |tx| {
            tx.execute(
                "INSERT OR REPLACE INTO reserved_addrs (id, ip, port_start, port_end, \
                 description, created_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                params![
                    a.id,
                    a.ip,
                    a.port_start,
                    a.port_end,
                    a.description,
                    a.created_at
                ],
            )
            .map(drop)
        })
    }

    fn delete_reserved_addr(&mut self, id: &str, event: &NewEvent) -> StoreResult<bool> {
        self.write(event, |tx| {
            tx.execute("DELETE FROM reserved_addrs WHERE id = ?1", [id])
                .map(|n| n > 0)
        })
    }

    fn users(&self) -> StoreResult<Vec<UserRecord>> {
        let mut st = self.db.prepare(
            "SELECT id, name, description, active, created_at FROM users ORDER BY created_at, id",
        )?;
        let rows = st.query_map([], |r| {
            Ok(UserRecord {
                id: r.get(0)?,
                name: r.get(1)?,
                description: r.get(2)?,
                active: r.get(3)?,
                created_at: r.get(4)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    fn put_user(&mut self, u: &UserRecord, event: &NewEvent) -> StoreResult<()> {
        self.write(event, |tx| {
            // Not INSERT OR REPLACE: replacing would cascade-delete the user's tokens.
            let updated = tx.execute(
                "UPDATE users SET name = ?2, description = ?3, active = ?4 WHERE id = ?1",
                params![u.id, u.name, u.description, u.active],
            )?;
            if updated == 0 {
                tx.execute(
                    "INSERT INTO users (id, name, description, active, created_at) \
                     VALUES (?1, ?2, ?3, ?4, ?5)",
                    params![u.id, u.name, u.description, u.active, u.created_at],
                )?;
            }
            Ok(())
        })
    }

    fn delete_user(&mut self, id: &str, event: &NewEvent) -> StoreResult<bool> {
        self.write(event, |tx| {
            tx.execute("DELETE FROM url_owners WHERE user_id = ?1", [id])?;
            tx.execute("DELETE FROM users WHERE id = ?1", [id])
                .map(|n| n > 0)
        })
    }

    fn tokens(&self, user_id: Option<&str>) -> StoreResult<Vec<TokenRecord>> {
        let mut st = self.db.prepare(
            "SELECT id, user_id, description, hash, acl, created_at, last_used_at, revoked_at \
             FROM tokens WHERE (?1 IS NULL OR user_id = ?1) ORDER BY created_at, id",
        )?;
        let rows = st.query_map([user_id], token_row)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    fn put_token(&mut self, t: &TokenRecord, event: &NewEvent) -> StoreResult<()> {
        let acl = serde_json::to_string(&t.acl).unwrap_or_else(|_| "[]".into());
        self.write(event, |tx| {
            tx.execute(
                "INSERT OR REPLACE INTO tokens (id, user_id, description, hash, acl, created_at, \
                 last_used_at, revoked_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                params![
                    t.id,
                    t.user_id,
                    t.description,
                    t.hash,
                    acl,
                    t.created_at,
                    t.last_used_at,
                    t.revoked_at
                ],
            )
            .map(drop)
        })
    }

    fn touch_token(&mut self, id: &str, at_ms: i64) -> StoreResult<()> {
        self.db.execute(
            "UPDATE tokens SET last_used_at = ?2 WHERE id = ?1",
            params![id, at_ms],
        )?;
        Ok(())
    }

    fn url_owners(&self) -> StoreResult<Vec<UrlOwnerRecord>> {
        let mut st = self
            .db
            .prepare("SELECT url, user_id, source, assigned_at FROM url_owners ORDER BY url")?;
        let rows = st.query_map([], |r| {
            Ok(UrlOwnerRecord {
                url: r.get(0)?,
                user_id: r.get(1)?,
                source: r.get(2)?,
                assigned_at: r.get(3)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    fn put_url_owner(&mut self, o: &UrlOwnerRecord, event: &NewEvent) -> StoreResult<()> {
        self.write(event, |tx| {
            tx.execute(
                "INSERT OR REPLACE INTO url_owners (url, user_id, source, assigned_at) \
                 VALUES (?1, ?2, ?3, ?4)",
                params![o.url, o.user_id, o.source, o.assigned_at],
            )
            .map(drop)
        })
    }

    fn claim_url_owner(&mut self, o: &UrlOwnerRecord, event: &NewEvent) -> StoreResult<bool> {
        let tx = self.db.transaction()?;
        let inserted = tx.execute(
            "INSERT OR IGNORE INTO url_owners (url, user_id, source, assigned_at) \
             VALUES (?1, ?2, ?3, ?4)",
            params![o.url, o.user_id, o.source, o.assigned_at],
        )? > 0;
        insert_event(&tx, event)?;
        tx.commit()?;
        self.after_insert()?;
        Ok(inserted)
    }

    fn delete_url_owner(&mut self, url: &str, event: &NewEvent) -> StoreResult<bool> {
        self.write(event, |tx| {
            tx.execute("DELETE FROM url_owners WHERE url = ?1", [url])
                .map(|n| n > 0)
        })
    }

    fn append_event(&mut self, event: &NewEvent) -> StoreResult<i64> {
        let id = insert_event(&self.db, event)?;
        self.after_insert()?;
        Ok(id)
    }

    fn status(&self) -> StoreStatus {
        StoreStatus::local(self.backend)
    }

    fn events(&self, q: &EventQuery) -> StoreResult<Vec<EventRecord>> {
        let mut sql = String::from(
            "SELECT id, at, kind, actor, subject, detail FROM events WHERE at >= ?1 AND at <= ?2 \
             AND id < ?3",
        );
        let mut kinds: Vec<String> = Vec::new();
        if !q.kinds.is_empty() {
            let mut parts = Vec::new();
            for k in &q.kinds {
                let escape = |t: &str| {
                    t.replace('\\', "\\\\")
                        .replace('%', "\\%")
                        .replace('_', "\\_")
                };
                kinds.push(match k.strip_suffix('*') {
                    Some(prefix) => format!("{}%", escape(prefix)),
                    None => escape(k),
                });
                parts.push(format!("kind LIKE ?{} ESCAPE '\\'", 4 + kinds.len()));
            }
            sql.push_str(&format!(" AND ({})", parts.join(" OR ")));
        }
        sql.push_str(" ORDER BY id DESC LIMIT ?4");
        let mut st = self.db.prepare(&sql)?;
        let mut values: Vec<Box<dyn rusqlite::ToSql>> = vec![
            Box::new(q.since.unwrap_or(i64::MIN)),
            Box::new(q.until.unwrap_or(i64::MAX)),
            Box::new(q.before_id.unwrap_or(i64::MAX)),
            Box::new(q.limit as i64),
        ];
        values.extend(
            kinds
                .into_iter()
                .map(|k| Box::new(k) as Box<dyn rusqlite::ToSql>),
        );
        let rows = st.query_map(rusqlite::params_from_iter(values.iter()), |r| {
            let detail: String = r.get(5)?;
            Ok(EventRecord {
                id: r.get(0)?,
                at: r.get(1)?,
                kind: r.get(2)?,
                actor: r.get(3)?,
                subject: r.get(4)?,
                detail: serde_json::from_str(&detail).unwrap_or(serde_json::Value::Null),
                edge: None,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }
}

impl SqliteStore {
    /// One token by id.
    pub fn token(&self, id: &str) -> StoreResult<Option<TokenRecord>> {
        Ok(self
            .db
            .query_row(
                "SELECT id, user_id, description, hash, acl, created_at, last_used_at, \
                 revoked_at FROM tokens WHERE id = ?1",
                [id],
                token_row,
            )
            .optional()?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(kind: &str) -> NewEvent {
        NewEvent::now(kind, "test", "x", serde_json::json!({}))
    }

    #[test]
    fn endpoint_records_come_back_as_stored() {
        let mut s = SqliteStore::in_memory().unwrap();
        let record = |id: &str, response_timeout_secs| EndpointRecord {
            id: id.into(),
            url: format!("http://{id}.example.com"),
            description: "d".into(),
            traffic_policy: "{}".into(),
            idle_timeout_secs: 30,
            reserved_addr_id: None,
            max_connections: Some(5),
            max_connections_per_ip: Some(2),
            terminate_tls: Some(super::super::TlsPaths {
                cert: "/c.pem".into(),
                key: "/k.pem".into(),
            }),
            response_timeout_secs,
            created_at: 1,
            updated_at: 2,
        };
        let (timed, untimed) = (record("a", Some(90)), record("b", None));
        s.put_endpoint(&timed, &event("endpoint.created")).unwrap();
        s.put_endpoint(&untimed, &event("endpoint.created"))
            .unwrap();
        assert_eq!(s.endpoints().unwrap(), [timed, untimed]);
    }

    #[test]
    fn a_flood_of_routine_events_does_not_push_out_security_events() {
        let mut s = SqliteStore::in_memory().unwrap().with_retention(50, 1000);
        s.append_event(&event("authtoken.revoked")).unwrap();
        s.append_event(&event("internal_url.foreign_bind_refused"))
            .unwrap();
        for _ in 0..500 {
            s.append_event(&event("session.auth_failed")).unwrap();
        }
        let all = s
            .events(&EventQuery {
                limit: 10_000,
                ..Default::default()
            })
            .unwrap();
        let security: Vec<_> = all
            .iter()
            .filter(|e| is_security_event(&e.kind))
            .map(|e| e.kind.as_str())
            .collect();
        assert_eq!(
            security,
            ["internal_url.foreign_bind_refused", "authtoken.revoked"]
        );
        let routine = all.len() - security.len();
        assert!(
            (50..100).contains(&routine),
            "routine events pruned to the cap: {routine}"
        );
    }

    #[test]
    fn the_database_is_private_to_its_owner() {
        use std::os::unix::fs::PermissionsExt;
        let dir = std::env::temp_dir().join(format!("sluice-perm-{}", super::super::new_id("t")));
        SqliteStore::open(&dir).unwrap();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&dir), 0o700);
        assert_eq!(mode(&dir.join("state.db")), 0o600);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn type_prefixes_with_underscores_match_literally() {
        let mut s = SqliteStore::in_memory().unwrap();
        for kind in [
            "service_user.created",
            "serviceXuser.created",
            "internal_url.claimed",
        ] {
            s.append_event(&event(kind)).unwrap();
        }
        let kinds = |k: &str| -> Vec<String> {
            s.events(&EventQuery {
                kinds: vec![k.to_string()],
                limit: 10,
                ..Default::default()
            })
            .unwrap()
            .into_iter()
            .map(|e| e.kind)
            .collect()
        };
        assert_eq!(kinds("service_user.*"), ["service_user.created"]);
        assert_eq!(kinds("internal_url.*"), ["internal_url.claimed"]);
        assert_eq!(kinds("service_user.created"), ["service_user.created"]);
    }

    #[test]
    fn url_owners_claim_once_and_leave_with_their_user() {
        let mut s = SqliteStore::in_memory().unwrap();
        let owner = |user: &str| UrlOwnerRecord {
            url: "tcp://db.internal:5432".into(),
            user_id: user.into(),
            source: "first_bind".into(),
            assigned_at: 1,
        };
        assert!(s
            .claim_url_owner(&owner("usr_a"), &event("internal_url.claimed"))
            .unwrap());
        assert!(!s
            .claim_url_owner(&owner("usr_b"), &event("internal_url.claimed"))
            .unwrap());
        assert_eq!(s.url_owners().unwrap(), vec![owner("usr_a")]);
        s.put_url_owner(&owner("usr_b"), &event("internal_url.transferred"))
            .unwrap();
        assert_eq!(s.url_owners().unwrap(), vec![owner("usr_b")]);
        let user = UserRecord {
            id: "usr_b".into(),
            name: "b".into(),
            description: String::new(),
            active: true,
            created_at: 1,
        };
        s.put_user(&user, &event("service_user.created")).unwrap();
        s.delete_user("usr_b", &event("service_user.deleted"))
            .unwrap();
        assert!(s.url_owners().unwrap().is_empty());
    }

    #[test]
    fn survives_reopen_with_every_object() {
        let dir = std::env::temp_dir().join(format!("sluice-state-{}", super::super::new_id("t")));
        {
            let mut s = SqliteStore::open(&dir).unwrap();
            let user = UserRecord {
                id: "usr_1".into(),
                name: "clinic".into(),
                description: String::new(),
                active: true,
                created_at: 1,
            };
            s.put_user(&user, &event("user.created")).unwrap();
            let token = TokenRecord {
                id: "tok_1".into(),
                user_id: "usr_1".into(),
                description: "ci".into(),
                hash: "sha256:00".into(),
                acl: vec!["bind:*.internal".into()],
                created_at: 2,
                last_used_at: None,
                revoked_at: None,
            };
            s.put_token(&token, &event("token.created")).unwrap();
            s.touch_token("tok_1", 5).unwrap();
            // Updating the user must not cascade-delete its tokens.
            s.put_user(
                &UserRecord {
                    active: false,
                    ..user
                },
                &event("user.updated"),
            )
            .unwrap();
        }
        let s = SqliteStore::open(&dir).unwrap();
        assert_eq!(s.schema_version().unwrap() as usize, MIGRATIONS.len());
        let tokens = s.tokens(Some("usr_1")).unwrap();
        assert_eq!(tokens.len(), 1);
        assert_eq!(tokens[0].acl, vec!["bind:*.internal".to_string()]);
        assert_eq!(tokens[0].last_used_at, Some(5));
        assert!(!s.users().unwrap()[0].active);
        let kinds: Vec<_> = s
            .events(&EventQuery {
                limit: 10,
                ..Default::default()
            })
            .unwrap()
            .into_iter()
            .map(|e| e.kind)
            .collect();
        assert_eq!(kinds, ["user.updated", "token.created", "user.created"]);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn events_filter_by_type_prefix_time_and_cursor() {
        let mut s = SqliteStore::in_memory().unwrap();
        for (i, kind) in ["session.started", "endpoint.created", "session.ended"]
            .iter()
            .enumerate()
        {
            let mut e = event(kind);
            e.at = 100 + i as i64;
            s.append_event(&e).unwrap();
        }
        let q = |kinds: &[&str], since, before_id| EventQuery {
            kinds: kinds.iter().map(|k| k.to_string()).collect(),
            since,
            until: None,
            before_id,
            limit: 10,
        };
        let kinds = |q| {
            s.events(&q)
                .unwrap()
                .into_iter()
                .map(|e| e.kind)
                .collect::<Vec<_>>()
        };
        assert_eq!(
            kinds(q(&["session.*"], None, None)),
            ["session.ended", "session.started"]
        );
        assert_eq!(
            kinds(q(&["endpoint.created"], None, None)),
            ["endpoint.created"]
        );
        assert_eq!(
            kinds(q(&[], Some(101), None)),
            ["session.ended", "endpoint.created"]
        );
        assert_eq!(
            kinds(q(&[], None, Some(3))),
            ["endpoint.created", "session.started"]
        );
    }

    #[test]
    fn a_failed_change_stores_neither_object_nor_event() {
        let mut s = SqliteStore::in_memory().unwrap();
        let token = TokenRecord {
            id: "tok_1".into(),
            user_id: "usr_missing".into(),
            description: String::new(),
            hash: "sha256:00".into(),
            acl: vec![],
            created_at: 0,
            last_used_at: None,
            revoked_at: None,
        };
        assert!(s.put_token(&token, &event("token.created")).is_err());
        assert!(s.tokens(None).unwrap().is_empty());
        assert!(s
            .events(&EventQuery {
                limit: 10,
                ..Default::default()
            })
            .unwrap()
            .is_empty());
    }
}
