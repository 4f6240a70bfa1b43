//! The shared backend of a fleet: every edge keeps its control-plane state in one etcd
//! cluster ([`keys`] has the layout), reads it from its own [`mirror`], and learns of
//! the changes other edges make through the watch ([`session`]), which it hands to the
//! control plane to apply ([`Store::on_remote_change`]).
//!
//! Every write is one etcd transaction: the object, its index keys (unique URLs, ports,
//! user names) and its audit event, guarded by the revisions this edge last saw of what
//! the write depends on. If another edge changed any of them first, nothing is written
//! and the caller gets [`StoreError::Conflict`] (409), so two admins writing through
//! two edges at once never lose an update. While etcd cannot be reached writes fail
//! with [`StoreError::Unavailable`] (503) and reads answer from the mirror.

mod backlog;
mod keys;
mod mirror;
mod session;

pub use session::FleetLink;

use std::time::{Duration, Instant};

use etcd_client::{Compare, CompareOp, GetOptions, SortOrder, SortTarget, Txn, TxnOp};
use serde::{Deserialize, Serialize};

use super::sqlite::{is_security_event, MAX_EVENTS, MAX_SECURITY_EVENTS};
use super::{
    ChangeListener, EndpointRecord, EventQuery, EventRecord, NewEvent, ReservedAddr, Store,
    StoreError, StoreResult, StoreStatus, TokenRecord, UrlOwnerRecord, UserRecord,
};
use crate::config::fleet::EtcdSettings;
use keys::{tcp_port, ENDPOINTS, OWNERS, RESERVED, TOKENS, USERS};
use session::Link;

/// How long the edge waits at start for the shared state before serving without it.
pub const LOAD_WAIT: Duration = Duration::from_secs(5);

/// How long a write keeps retrying while etcd does not answer (a member lost, a
/// leader being elected) before it fails with [`StoreError::Unavailable`].
pub const WRITE_RETRY_FOR: Duration = Duration::from_secs(6);
/// Retention classes of the audit log: routine events never push security ones out.
const ROUTINE: &str = "routine";
const SECURITY: &str = "security";
/// Events this edge records between two prunes.
const PRUNE_EVERY: u32 = 1000;
/// Most events one prune deletes (the rest go at the next).
const MAX_PRUNED_AT_ONCE: usize = 10_000;

/// Audit events per transaction when a backlog goes out.
pub(super) const EVENTS_PER_TXN: usize = 100;
/// Longest wait for one attempt of a write.
const WRITE_ATTEMPT: Duration = Duration::from_secs(1);

/// Events fetched per etcd request while filtering audit events.
const EVENT_PAGE: i64 = 500;

/// A token as stored: the record the API shows and the hash it hides.
#[derive(Serialize, Deserialize)]
struct StoredToken {
    record: TokenRecord,
    hash: String,
}

/// An audit event as stored.
#[derive(Serialize, Deserialize)]
struct StoredEvent {
    at: i64,
    kind: String,
    actor: String,
    subject: String,
    detail: serde_json::Value,
    edge: String,
}

/// What a write depends on.
enum Guard {
    /// The key is as this edge last saw it (absent if it saw none).
    Unchanged(String),
    /// No key of that name exists.
    Absent(String),
}

/// The state of a fleet in etcd.
pub struct EtcdStore {
    link: Link,
    edge_id: String,
    /// Events recorded by this edge since it last pruned the log.
    events_since_prune: u32,
    /// Events kept per retention class: routine, security.
    keep: [usize; 2],
}

impl EtcdStore {
    /// Starts the link to etcd and waits up to [`LOAD_WAIT`] for the shared state.
    /// Past that it returns anyway: the edge serves its edge.yml objects, says so, and
    /// applies the shared ones as soon as etcd answers.
    pub fn connect(settings: EtcdSettings, edge_id: &str) -> std::io::Result<Self> {
        let endpoints = settings.endpoints.clone();
        let link = Link::start(settings, edge_id)?;
        let deadline = Instant::now() + LOAD_WAIT;
        while !link.shared.mirror().loaded && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        if !link.shared.mirror().loaded {
            tracing::warn!(?endpoints, "shared state not loaded yet (etcd does not answer): serving edge.yml's objects; the others apply as soon as etcd answers");
        }
        Ok(Self {
            link,
            edge_id: edge_id.to_string(),
            events_since_prune: 0,
            keep: [MAX_EVENTS as usize, MAX_SECURITY_EVENTS as usize],
        })
    }

    /// Keeps at most `routine` routine and `security` security events (tests).
    pub fn with_retention(mut self, routine: usize, security: usize) -> Self {
        self.keep = [routine, security];
        self
    }

    /// Every [`PRUNE_EVERY`] events this edge records, each retention class is cut
    /// back to what it keeps, oldest first (every edge prunes the shared log; two
    /// pruning at once delete the same keys). Best effort.
    fn prune_events(&mut self) {
        let every = PRUNE_EVERY.min(self.keep[0] as u32).max(1);
        if self.events_since_prune < every || self.link.shared.is_down() {
            return;
        }
        self.events_since_prune = 0;
        for (class, keep) in [(ROUTINE, self.keep[0]), (SECURITY, self.keep[1])] {
            let prefix = self.keys().event_class(class);
            let count_key = prefix.clone();
            let Ok(count) = self.link.call(move |mut c| async move {
                c.get(
                    count_key,
                    Some(GetOptions::new().with_prefix().with_count_only()),
                )
                .await
                .map(|r| r.count())
            }) else {
                return;
            };
            let excess = (count.max(0) as usize)
                .saturating_sub(keep)
                .min(MAX_PRUNED_AT_ONCE);
            if excess == 0 {
                continue;
            }
            let oldest = self.link.call(move |mut c| async move {
                c.get(
                    prefix,
                    Some(
                        GetOptions::new()
                            .with_prefix()
                            .with_keys_only()
                            .with_sort(SortTarget::Create, SortOrder::Ascend)
                            .with_limit(excess as i64),
                    ),
                )
                .await
            });
            let Ok(oldest) = oldest else { return };
            let keys: Vec<Vec<u8>> = oldest.kvs().iter().map(|kv| kv.key().to_vec()).collect();
            for chunk in keys.chunks(EVENTS_PER_TXN) {
                let ops: Vec<TxnOp> = chunk
                    .iter()
                    .map(|k| TxnOp::delete(k.clone(), None))
                    .collect();
                let txn = Txn::new().and_then(ops);
                if self
                    .link
                    .call(move |mut c| async move { c.txn(txn).await })
                    .is_err()
                {
                    return;
                }
            }
            tracing::debug!(class, pruned = keys.len(), "audit events pruned");
        }
    }

    /// Whether the watch is up (changes from other edges arrive).
    pub fn watching(&self) -> bool {
        self.link
            .shared
            .watching
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    fn keys(&self) -> &keys::Keys {
        &self.link.shared.keys
    }

    fn list<T: for<'de> Deserialize<'de>>(&self, collection: &str) -> StoreResult<Vec<T>> {
        let prefix = self.keys().object(collection, "");
        let mirror = self.link.shared.mirror();
        mirror
            .values_under(&prefix)
            .map(|v| {
                serde_json::from_slice(v).map_err(|e| {
                    StoreError::Failed(format!("unreadable object under {prefix}: {e}"))
                })
            })
            .collect()
    }

    fn one<T: for<'de> Deserialize<'de>>(&self, key: &str) -> StoreResult<Option<T>> {
        let mirror = self.link.shared.mirror();
        mirror
            .get(key)
            .map(|v| {
                serde_json::from_slice(v)
                    .map_err(|e| StoreError::Failed(format!("unreadable object {key}: {e}")))
            })
            .transpose()
    }

    /// The put of this write's [`keys::WriteStamp`].
    fn write_stamp(&self) -> TxnOp {
        let stamp = keys::WriteStamp {
            edge: self.edge_id.clone(),
            at_ms: crate::clock::wall_ms(),
        };
        TxnOp::put(self.keys().written(), json(&stamp), None)
    }

    /// The key and value of `event` (a fresh key each call).
    fn event_entry(&mut self, event: &NewEvent) -> (String, Vec<u8>) {
        self.events_since_prune += 1;
        let stored = StoredEvent {
            at: event.at,
            kind: event.kind.clone(),
            actor: event.actor.clone(),
            subject: event.subject.clone(),
            detail: event.detail.clone(),
            edge: self.edge_id.clone(),
        };
        let class = if is_security_event(&event.kind) {
            SECURITY
        } else {
            ROUTINE
        };
        (
            self.keys()
                .event(class, &self.edge_id, event.at, rand::random()),
            json(&stored),
        )
    }

    /// Commits `puts` and `deletes` with `event` if every guard holds; the revision
    /// of the write. `what` names the change for a conflict's message.
    fn commit(
        &mut self,
        guards: Vec<Guard>,
        puts: Vec<(String, Vec<u8>)>,
        deletes: Vec<String>,
        event: &NewEvent,
        what: &str,
    ) -> StoreResult<i64> {
        let compares: Vec<Compare> = {
            let mirror = self.link.shared.mirror();
            if !mirror.loaded {
                return Err(StoreError::Unavailable(
                    "the shared state has not been loaded from etcd yet".into(),
                ));
            }
            guards
                .iter()
                .map(|g| match g {
                    Guard::Unchanged(k) => match mirror.mod_revision(k) {
                        Some(r) => Compare::mod_revision(k.as_str(), CompareOp::Equal, r),
                        None => Compare::create_revision(k.as_str(), CompareOp::Equal, 0),
                    },
                    Guard::Absent(k) => Compare::create_revision(k.as_str(), CompareOp::Equal, 0),
                })
                .collect()
        };
        let mut ops: Vec<TxnOp> = puts
            .iter()
            .map(|(k, v)| TxnOp::put(k.as_str(), v.clone(), None))
            .collect();
        ops.extend(deletes.iter().map(|k| TxnOp::delete(k.as_str(), None)));
        ops.push(self.write_stamp());
        let (event_key, event_value) = self.event_entry(event);
        ops.push(TxnOp::put(event_key.as_str(), event_value, None));
        let txn = Txn::new().when(compares).and_then(ops);
        self.link.shared.expect_own(&puts, &deletes);
        let outcome = self.transact(txn, &event_key);
        if let Ok(Some(revision)) = outcome {
            self.applied_own(&puts, &deletes, revision);
        }
        self.link.shared.forget_own(&puts, &deletes);
        let Some(revision) = outcome? else {
            self.link
                .shared
                .write_conflicts
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            return Err(StoreError::Conflict(format!(
                "{what}: changed at the same time through another edge of the fleet (or the \
                 name is taken there); nothing was written — read it again and retry"
            )));
        };
        if !self.link.shared.is_down() {
            let _ = self.flush_backlog();
        }
        self.prune_events();
        Ok(revision)
    }

    /// Sends the queued audit events ([`session::send_backlog`]); the revision of the
    /// last batch, or the error that stopped it (what was not sent stays queued).
    fn flush_backlog(&self) -> StoreResult<i64> {
        let shared = self.link.shared.clone();
        self.link
            .call(move |c| async move { session::send_backlog(c, &shared).await })
    }

    /// Puts this edge's landed write into the mirror (before it forgets the write was
    /// its own, so the watch's copy of it is never taken for a change made elsewhere).
    fn applied_own(&self, puts: &[(String, Vec<u8>)], deletes: &[String], revision: i64) {
        let mut mirror = self.link.shared.mirror();
        for (k, v) in puts {
            mirror.put(k, v.clone(), revision);
        }
        for k in deletes {
            mirror.delete(k, revision);
        }
    }

    /// Runs `txn`, whose success branch (only) puts `event_key`: the revision it was
    /// applied at, or None when its compares failed. An attempt that fails on the way
    /// (a member killed, a leader being elected, no answer in time) may or may not land:
    /// the event key tells, so the write is retried — in effect exactly once — until it
    /// has a definite outcome or [`WRITE_RETRY_FOR`] has passed.
    fn transact(&self, txn: Txn, event_key: &str) -> StoreResult<Option<i64>> {
        let deadline = Instant::now() + WRITE_RETRY_FOR;
        let mut pause = Duration::from_millis(20);
        let mut first_error: Option<String> = None;
        loop {
            let attempt = txn.clone();
            match self.link.call_within(
                WRITE_ATTEMPT,
                move |mut c| async move { c.txn(attempt).await },
            ) {
                Ok(resp) if resp.succeeded() => {
                    let revision = resp.header().map_or(0, |h| h.revision());
                    self.link.shared.saw_revision(revision);
                    return Ok(Some(revision));
                }
                // Compares failed: unless an earlier attempt of this very write landed
                // meanwhile, someone else's change came first.
                Ok(_) if first_error.is_none() => return Ok(None),
                Ok(_) => return self.landed(event_key),
                Err(StoreError::Unavailable(e)) => {
                    first_error.get_or_insert(e);
                    if let Ok(Some(revision)) = self.landed(event_key) {
                        return Ok(Some(revision));
                    }
                }
                Err(e) => return Err(e),
            }
            if Instant::now() + pause > deadline {
                return Err(StoreError::Unavailable(
                    first_error.unwrap_or_else(|| "etcd does not answer".into()),
                ));
            }
            std::thread::sleep(pause);
            pause = (pause * 2).min(Duration::from_millis(250));
        }
    }

    /// The revision at which the write recording `event_key` landed, if it did.
    fn landed(&self, event_key: &str) -> StoreResult<Option<i64>> {
        let key = event_key.to_string();
        let resp =
            self.link.call_within(
                WRITE_ATTEMPT,
                move |mut c| async move { c.get(key, None).await },
            )?;
        Ok(resp.kvs().first().map(|kv| kv.create_revision()))
    }

    /// Records `event` alone, or with `puts` if `compare` holds; whether it held.
    fn conditional(
        &mut self,
        compare: Compare,
        puts: Vec<(String, Vec<u8>)>,
        event: &NewEvent,
    ) -> StoreResult<bool> {
        // Both branches record the event; a separate marker in the failure branch
        // tells them apart when an attempt's answer is lost.
        let (event_key, event_value) = self.event_entry(event);
        let mut ops: Vec<TxnOp> = puts
            .iter()
            .map(|(k, v)| TxnOp::put(k.as_str(), v.clone(), None))
            .collect();
        ops.push(TxnOp::put(event_key.as_str(), event_value.clone(), None));
        ops.push(self.write_stamp());
        let marker = format!("{event_key}.held");
        let txn = Txn::new().when([compare]).and_then(ops).or_else([
            TxnOp::put(event_key.as_str(), event_value, None),
            TxnOp::put(marker.as_str(), "", None),
        ]);
        // The failure branch's marker has no place among events: it is read back only
        // here, then removed.
        self.link.shared.expect_own(&puts, &[]);
        let held = self.transact(txn, &event_key);
        let held = match held {
            Ok(held) => held,
            Err(e) => {
                self.link.shared.forget_own(&puts, &[]);
                return Err(e);
            }
        };
        let refused = match held {
            None => true,
            // An attempt whose answer was lost: the marker says which branch ran.
            Some(_) => {
                let marker_key = marker.clone();
                let read = self
                    .link
                    .call(move |mut c| async move { c.get(marker_key, None).await });
                match read {
                    Ok(r) => !r.kvs().is_empty(),
                    Err(e) => {
                        self.link.shared.forget_own(&puts, &[]);
                        return Err(e);
                    }
                }
            }
        };
        if refused {
            self.link.shared.forget_own(&puts, &[]);
            let _ = self
                .link
                .call(move |mut c| async move { c.delete(marker, None).await.map(|_| ()) });
            return Ok(false);
        }
        self.applied_own(&puts, &[], held.unwrap_or_default());
        self.link.shared.forget_own(&puts, &[]);
        Ok(true)
    }
}

fn json<T: Serialize>(value: &T) -> Vec<u8> {
    serde_json::to_vec(value).expect("records serialise")
}

impl Store for EtcdStore {
    fn endpoints(&self) -> StoreResult<Vec<EndpointRecord>> {
        self.list(ENDPOINTS)
    }

    fn put_endpoint(&mut self, endpoint: &EndpointRecord, event: &NewEvent) -> StoreResult<()> {
        let key = self.keys().object(ENDPOINTS, &endpoint.id);
        let old: Option<EndpointRecord> = self.one(&key)?;
        let mut guards = vec![Guard::Unchanged(key.clone())];
        let mut puts = vec![(key, json(endpoint))];
        let mut deletes = Vec::new();
        let old_url = old.as_ref().map(|o| o.url.as_str());
        if old_url != Some(endpoint.url.as_str()) {
            let url_key = self.keys().endpoint_url(&endpoint.url);
            guards.push(Guard::Absent(url_key.clone()));
            puts.push((url_key, endpoint.id.clone().into_bytes()));
            if let Some(port) = tcp_port(&endpoint.url) {
                let port_key = self.keys().tcp_port(port);
                guards.push(Guard::Absent(port_key.clone()));
                puts.push((port_key, endpoint.id.clone().into_bytes()));
            }
            if let Some(old_url) = old_url {
                deletes.push(self.keys().endpoint_url(old_url));
                deletes.extend(tcp_port(old_url).map(|p| self.keys().tcp_port(p)));
            }
        }
        self.commit(
            guards,
            puts,
            deletes,
            event,
            &format!("endpoint {} ({})", endpoint.id, endpoint.url),
        )?;
        Ok(())
    }

    fn delete_endpoint(&mut self, id: &str, event: &NewEvent) -> StoreResult<bool> {
        let key = self.keys().object(ENDPOINTS, id);
        let Some(old) = self.one::<EndpointRecord>(&key)? else {
            return Ok(false);
        };
        let mut deletes = vec![key.clone(), self.keys().endpoint_url(&old.url)];
        deletes.extend(tcp_port(&old.url).map(|p| self.keys().tcp_port(p)));
        self.commit(
            vec![Guard::Unchanged(key)],
            Vec::new(),
            deletes,
            event,
            &format!("endpoint {id}"),
        )?;
        Ok(true)
    }

    fn reserved_addrs(&self) -> StoreResult<Vec<ReservedAddr>> {
        self.list(RESERVED)
    }

    fn put_reserved_addr(&mut self, addr: &ReservedAddr, event: &NewEvent) -> StoreResult<()> {
        let key = self.keys().object(RESERVED, &addr.id);
        let guard = self.keys().reservations_guard();
        // Every reservation change touches one guard key: overlapping ranges reserved
        // through two edges at once cannot both land.
        self.commit(
            vec![
                Guard::Unchanged(guard.clone()),
                Guard::Unchanged(key.clone()),
            ],
            vec![(key, json(addr)), (guard, addr.id.clone().into_bytes())],
            Vec::new(),
            event,
            "reserved addresses",
        )?;
        Ok(())
    }

    fn delete_reserved_addr(&mut self, id: &str, event: &NewEvent) -> StoreResult<bool> {
        let key = self.keys().object(RESERVED, id);
        if self.link.shared.mirror().get(&key).is_none() {
            return Ok(false);
        }
        let guard = self.keys().reservations_guard();
        self.commit(
            vec![
                Guard::Unchanged(guard.clone()),
                Guard::Unchanged(key.clone()),
            ],
            vec![(guard, id.as_bytes().to_vec())],
            vec![key],
            event,
            "reserved addresses",
        )?;
        Ok(true)
    }

    fn users(&self) -> StoreResult<Vec<UserRecord>> {
        self.list(USERS)
    }

    fn put_user(&mut self, user: &UserRecord, event: &NewEvent) -> StoreResult<()> {
        let key = self.keys().object(USERS, &user.id);
        let old: Option<UserRecord> = self.one(&key)?;
        let mut guards = vec![Guard::Unchanged(key.clone())];
        let mut puts = vec![(key, json(user))];
        let mut deletes = Vec::new();
        if old.as_ref().map(|o| o.name.as_str()) != Some(user.name.as_str()) {
            let name_key = self.keys().user_name(&user.name);
            guards.push(Guard::Absent(name_key.clone()));
            puts.push((name_key, user.id.clone().into_bytes()));
            deletes.extend(old.map(|o| self.keys().user_name(&o.name)));
        }
        self.commit(
            guards,
            puts,
            deletes,
            event,
            &format!("service user {} ({})", user.id, user.name),
        )?;
        Ok(())
    }

    fn delete_user(&mut self, id: &str, event: &NewEvent) -> StoreResult<bool> {
        let key = self.keys().object(USERS, id);
        let Some(old) = self.one::<UserRecord>(&key)? else {
            return Ok(false);
        };
        let mut deletes = vec![key.clone(), self.keys().user_name(&old.name)];
        for t in self.tokens(Some(id))? {
            deletes.push(self.keys().object(TOKENS, &t.id));
        }
        for o in self.url_owners()? {
            if o.user_id == id {
                deletes.push(self.keys().object(OWNERS, &o.url));
            }
        }
        self.commit(
            vec![Guard::Unchanged(key)],
            Vec::new(),
            deletes,
            event,
            &format!("service user {id}"),
        )?;
        Ok(true)
    }

    fn tokens(&self, user_id: Option<&str>) -> StoreResult<Vec<TokenRecord>> {
        let stored: Vec<StoredToken> = self.list(TOKENS)?;
        Ok(stored
            .into_iter()
            .filter(|t| user_id.is_none_or(|u| t.record.user_id == u))
            .map(|t| TokenRecord {
                hash: t.hash,
                ..t.record
            })
            .collect())
    }

    fn put_token(&mut self, token: &TokenRecord, event: &NewEvent) -> StoreResult<()> {
        let key = self.keys().object(TOKENS, &token.id);
        let stored = StoredToken {
            record: token.clone(),
            hash: token.hash.clone(),
        };
        // The owner must not have been deleted meanwhile (its token would be orphaned).
        let user = self.keys().object(USERS, &token.user_id);
        self.commit(
            vec![Guard::Unchanged(key.clone()), Guard::Unchanged(user)],
            vec![(key, json(&stored))],
            Vec::new(),
            event,
            &format!("authtoken {}", token.id),
        )?;
        Ok(())
    }

    fn touch_token(&mut self, id: &str, at_ms: i64) -> StoreResult<()> {
        // Outside the mirrored objects: an authentication changes nothing anywhere.
        // Best effort, and never a wait while etcd is away.
        if self.link.shared.is_down() {
            return Ok(());
        }
        let key = self.keys().token_used(id);
        self.link
            .call(move |mut c| async move { c.put(key, at_ms.to_string(), None).await.map(|_| ()) })
    }

    fn url_owners(&self) -> StoreResult<Vec<UrlOwnerRecord>> {
        self.list(OWNERS)
    }

    fn put_url_owner(&mut self, owner: &UrlOwnerRecord, event: &NewEvent) -> StoreResult<()> {
        let key = self.keys().object(OWNERS, &owner.url);
        self.commit(
            vec![Guard::Unchanged(key.clone())],
            vec![(key, json(owner))],
            Vec::new(),
            event,
            &format!("owner of {}", owner.url),
        )?;
        Ok(())
    }

    fn claim_url_owner(&mut self, owner: &UrlOwnerRecord, event: &NewEvent) -> StoreResult<bool> {
        let key = self.keys().object(OWNERS, &owner.url);
        self.conditional(
            Compare::create_revision(key.as_str(), CompareOp::Equal, 0),
            vec![(key, json(owner))],
            event,
        )
    }

    fn delete_url_owner(&mut self, url: &str, event: &NewEvent) -> StoreResult<bool> {
        let key = self.keys().object(OWNERS, url);
        if self.link.shared.mirror().get(&key).is_none() {
            return Ok(false);
        }
        self.commit(
            vec![Guard::Unchanged(key.clone())],
            Vec::new(),
            vec![key],
            event,
            &format!("owner of {url}"),
        )?;
        Ok(true)
    }

    fn append_event(&mut self, event: &NewEvent) -> StoreResult<i64> {
        // Events of the data path (sessions, binds) must never wait on etcd: while it is
        // away they stay queued (see `backlog`).
        let entry = self.event_entry(event);
        self.link.shared.backlog.push(entry);
        if self.link.shared.is_down() {
            return Ok(0);
        }
        match self.flush_backlog() {
            Ok(revision) => {
                self.prune_events();
                Ok(revision)
            }
            Err(StoreError::Unavailable(_)) => Ok(0),
            Err(e) => Err(e),
        }
    }

    fn events(&self, query: &EventQuery) -> StoreResult<Vec<EventRecord>> {
        let prefix = self.keys().events();
        let mut out = Vec::new();
        // Newest first: pages by create revision (the event's id), descending.
        let mut below = query.before_id.unwrap_or(i64::MAX);
        while out.len() < query.limit && below > 1 {
            let mut options = GetOptions::new()
                .with_prefix()
                .with_sort(SortTarget::Create, SortOrder::Descend)
                .with_limit(EVENT_PAGE);
            if below < i64::MAX {
                options = options.with_max_create_revision(below - 1);
            }
            let key = prefix.clone();
            let resp = self
                .link
                .call(move |mut c| async move { c.get(key, Some(options)).await })?;
            let kvs = resp.kvs();
            for kv in kvs {
                below = below.min(kv.create_revision());
                let Ok(e) = serde_json::from_slice::<StoredEvent>(kv.value()) else {
                    continue;
                };
                let record = EventRecord {
                    id: kv.create_revision(),
                    at: e.at,
                    kind: e.kind,
                    actor: e.actor,
                    subject: e.subject,
                    detail: e.detail,
                    edge: Some(e.edge),
                };
                if query.matches(&record) && out.len() < query.limit {
                    out.push(record);
                }
            }
            if (kvs.len() as i64) < EVENT_PAGE {
                break;
            }
        }
        Ok(out)
    }

    fn on_remote_change(&mut self, listener: ChangeListener) {
        self.link.shared.set_listener(listener);
    }

    fn fleet_link(&self) -> Option<FleetLink> {
        Some(self.link.fleet_link())
    }

    fn status(&self) -> StoreStatus {
        use std::sync::atomic::Ordering::Relaxed;
        let shared = &self.link.shared;
        let (loaded, revision) = {
            let m = shared.mirror();
            (m.loaded, m.revision)
        };
        let last = shared.last_contact_ms.load(Relaxed);
        StoreStatus {
            backend: "etcd",
            loaded,
            following: self.watching(),
            revision,
            lag_revisions: shared.lag_revisions(),
            last_contact_age_ms: (last > 0).then(|| (crate::clock::wall_ms() - last).max(0)),
            queued_events: shared.backlog.len() as u64,
            watch_lag_ms: shared.watch_lag_ms(),
            remote_changes: shared.remote_changes.load(Relaxed),
            write_conflicts: shared.write_conflicts.load(Relaxed),
        }
    }
}
