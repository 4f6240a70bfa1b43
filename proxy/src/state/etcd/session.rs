//! The edge's link to etcd: a thread of its own running the client (tokio, off the
//! data-path workers), which connects, loads the mirror, and watches `P/objects/`
//! from the last revision it applied, for as long as the edge runs. When etcd goes
//! away it retries with backoff and resumes the watch where it stopped, or reloads
//! everything if that revision was compacted meanwhile, and says which.
//!
//! [`Link::call`] runs one request on that thread for a caller on any thread (the
//! admin API's included) and waits for its answer with a deadline.

use std::{
    future::Future,
    sync::{
        atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering},
        Arc, Mutex,
    },
    time::Duration,
};

use etcd_client::{
    Certificate, Client, ConnectOptions, EventType, GetOptions, Identity, TlsOptions, WatchOptions,
};

use super::{super::StoreError, backlog::Backlog, keys::Keys, mirror::Mirror};
use crate::{
    config::fleet::EtcdSettings,
    state::{ChangeListener, Changes},
};

/// Longest wait for one etcd request, connection included.
pub(super) const CALL_TIMEOUT: Duration = Duration::from_secs(5);
/// Backoff between attempts to reach etcd.
const RETRY_MIN: Duration = Duration::from_millis(100);
const RETRY_MAX: Duration = Duration::from_secs(2);
/// How often the watch looks whether its lag has stopped moving.
const PROGRESS_CHECK: Duration = Duration::from_secs(1);

/// What the link thread and the store share.
pub(super) struct Shared {
    pub keys: Keys,
    pub mirror: Mutex<Mirror>,
    client: Mutex<Option<Client>>,
    listener: Mutex<Option<ChangeListener>>,
    /// The watch is established (changes made elsewhere arrive).
    pub watching: AtomicBool,
    /// Wall-clock ms of the last answer from etcd (0: never).
    pub last_contact_ms: AtomicI64,
    /// The last request found etcd unreachable, and nothing has answered since.
    pub down: AtomicBool,
    /// Reports of changes made elsewhere handed to the control plane.
    pub remote_changes: AtomicU64,
    /// The newest etcd revision any answer has shown (the watch's lag is the distance
    /// from the mirror's revision, or [`Shared::confirmed_revision`], to this).
    pub etcd_revision: AtomicI64,
    /// The newest revision etcd answered a progress request with: every change to
    /// `P/objects/` up to it has been delivered. Counts only toward the lag; the
    /// mirror advances on etcd's periodic notifications, which etcd 3.4 sends only to
    /// watchers that have caught up (its answers to requests may come earlier).
    pub confirmed_revision: AtomicI64,
    /// Writes refused by a failed revision compare.
    pub write_conflicts: AtomicU64,
    /// What this edge's writes in flight put (Some) or delete (None), by key: the
    /// watch may deliver them before their answer, and they are not changes made
    /// elsewhere.
    own_writes: Mutex<std::collections::HashMap<String, Option<Vec<u8>>>>,
    /// Audit events waiting for etcd.
    pub backlog: Backlog,
    /// This edge's name: its own writes' stamps are not the others' lag.
    edge_id: String,
    /// [`Shared::watch_lag_ms`] (-1: none yet).
    watch_lag_ms: AtomicI64,
}

impl Shared {
    pub fn mirror(&self) -> std::sync::MutexGuard<'_, Mirror> {
        self.mirror.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn set_listener(&self, listener: ChangeListener) {
        *self.listener.lock().unwrap_or_else(|p| p.into_inner()) = Some(listener);
    }

    fn notify(&self, changes: Changes) {
        if !changes.any() {
            return;
        }
        self.remote_changes.fetch_add(1, Ordering::Relaxed);
        if let Some(l) = self
            .listener
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
        {
            l(changes);
        }
    }

    fn contact(&self) {
        self.last_contact_ms
            .store(crate::clock::wall_ms(), Ordering::Relaxed);
        self.down.store(false, Ordering::Relaxed);
    }

    /// Notes the puts and deletes of a write about to be sent.
    pub fn expect_own(&self, puts: &[(String, Vec<u8>)], deletes: &[String]) {
        let mut own = self.own_writes.lock().unwrap_or_else(|p| p.into_inner());
        for (k, v) in puts {
            own.insert(k.clone(), Some(v.clone()));
        }
        for k in deletes {
            own.insert(k.clone(), None);
        }
    }

    /// Forgets them once the write has its answer (the mirror has them then).
    pub fn forget_own(&self, puts: &[(String, Vec<u8>)], deletes: &[String]) {
        let mut own = self.own_writes.lock().unwrap_or_else(|p| p.into_inner());
        for (k, _) in puts {
            own.remove(k);
        }
        for k in deletes {
            own.remove(k);
        }
    }

    fn is_own(&self, key: &str, value: Option<&[u8]>) -> bool {
        let own = self.own_writes.lock().unwrap_or_else(|p| p.into_inner());
        own.get(key).is_some_and(|v| v.as_deref() == value)
    }

    /// Notes a revision an answer of etcd showed.
    pub fn saw_revision(&self, revision: i64) {
        self.etcd_revision.fetch_max(revision, Ordering::Relaxed);
    }

    /// How many revisions etcd has shown that the watch has not yet delivered or
    /// confirmed. Revisions that changed nothing under `P/objects/` (audit events,
    /// token uses) count until a progress answer confirms them.
    pub fn lag_revisions(&self) -> i64 {
        let applied = self
            .mirror()
            .revision
            .max(self.confirmed_revision.load(Ordering::Relaxed));
        (self.etcd_revision.load(Ordering::Relaxed) - applied).max(0)
    }

    /// How long the last change written through another edge took to reach this one
    /// (its [`WriteStamp`](super::keys::WriteStamp) to its arrival in the watch).
    pub fn watch_lag_ms(&self) -> Option<i64> {
        let lag = self.watch_lag_ms.load(Ordering::Relaxed);
        (lag >= 0).then_some(lag)
    }

    /// Notes the stamp of a write the watch delivered.
    fn saw_stamp(&self, value: &[u8]) {
        let Ok(stamp) = serde_json::from_slice::<super::keys::WriteStamp>(value) else {
            return;
        };
        if stamp.edge != self.edge_id {
            let lag = (crate::clock::wall_ms() - stamp.at_ms).max(0);
            self.watch_lag_ms.store(lag, Ordering::Relaxed);
        }
    }

    /// Whether etcd was found unreachable and has not answered since.
    pub fn is_down(&self) -> bool {
        self.down.load(Ordering::Relaxed)
    }
}

/// What the fleet's features beyond the state (routes, the peer key: `crate::fleet`)
/// need of the etcd link: its runtime, to run their tasks on, and its client.
#[derive(Clone)]
pub struct FleetLink {
    runtime: tokio::runtime::Handle,
    shared: Arc<Shared>,
}

impl FleetLink {
    /// Runs `task` on the link's thread.
    pub fn spawn<F: Future<Output = ()> + Send + 'static>(&self, task: F) {
        self.runtime.spawn(task);
    }

    /// The client, once the link has connected.
    pub fn client(&self) -> Option<Client> {
        self.shared
            .client
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// `P/<rest>` under the fleet's prefix.
    pub fn key(&self, rest: &str) -> String {
        self.shared.keys.under(rest)
    }

    /// This edge's name.
    pub fn edge_id(&self) -> &str {
        &self.shared.edge_id
    }
}

/// A handle to the link thread.
pub(super) struct Link {
    runtime: tokio::runtime::Handle,
    pub shared: Arc<Shared>,
}

impl Link {
    /// Starts the link thread for `settings`; returns at once (connecting and loading
    /// go on in the background).
    pub fn start(settings: EtcdSettings, edge_id: &str) -> std::io::Result<Link> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let handle = runtime.handle().clone();
        let shared = Arc::new(Shared {
            keys: Keys::new(&settings.prefix),
            mirror: Mutex::new(Mirror::default()),
            client: Mutex::new(None),
            listener: Mutex::new(None),
            watching: AtomicBool::new(false),
            last_contact_ms: AtomicI64::new(0),
            down: AtomicBool::new(false),
            remote_changes: AtomicU64::new(0),
            etcd_revision: AtomicI64::new(0),
            confirmed_revision: AtomicI64::new(0),
            write_conflicts: AtomicU64::new(0),
            own_writes: Mutex::new(Default::default()),
            backlog: Backlog::default(),
            edge_id: edge_id.to_string(),
            watch_lag_ms: AtomicI64::new(-1),
        });
        let thread_shared = shared.clone();
        std::thread::Builder::new()
            .name("sluice-etcd".into())
            .spawn(move || runtime.block_on(run(thread_shared, settings)))?;
        Ok(Link {
            runtime: handle,
            shared,
        })
    }

    /// The handle the fleet's other features use.
    pub fn fleet_link(&self) -> FleetLink {
        FleetLink {
            runtime: self.runtime.clone(),
            shared: self.shared.clone(),
        }
    }

    /// Runs `request` with the client on the link thread and waits for its answer, at
    /// most [`CALL_TIMEOUT`].
    pub fn call<T, F, Fut>(&self, request: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(Client) -> Fut + Send + 'static,
        Fut: Future<Output = Result<T, etcd_client::Error>> + Send + 'static,
    {
        self.call_within(CALL_TIMEOUT, request)
    }

    /// [`Link::call`] with a deadline of `timeout`.
    pub fn call_within<T, F, Fut>(&self, timeout: Duration, request: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(Client) -> Fut + Send + 'static,
        Fut: Future<Output = Result<T, etcd_client::Error>> + Send + 'static,
    {
        let client = self
            .shared
            .client
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
            .ok_or_else(|| StoreError::Unavailable("not connected to etcd yet".into()))?;
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        self.runtime.spawn(async move {
            let answer = tokio::time::timeout(timeout, request(client)).await;
            let _ = tx.send(answer);
        });
        match rx.recv_timeout(timeout + Duration::from_secs(1)) {
            Ok(Ok(Ok(v))) => {
                self.shared.contact();
                Ok(v)
            }
            Ok(Ok(Err(e))) => {
                let e = classify(e);
                if matches!(e, StoreError::Unavailable(_)) {
                    self.shared.down.store(true, Ordering::Relaxed);
                }
                Err(e)
            }
            Ok(Err(_)) | Err(_) => {
                self.shared.down.store(true, Ordering::Relaxed);
                Err(StoreError::Unavailable(format!(
                    "etcd did not answer within {timeout:?}"
                )))
            }
        }
    }
}

/// Unreachable members and lost leaders are outages (503); the rest are failures.
fn classify(e: etcd_client::Error) -> StoreError {
    use etcd_client::Error;
    match &e {
        Error::TransportError(_) | Error::IoError(_) => StoreError::Unavailable(e.to_string()),
        Error::GRpcStatus(s)
            if matches!(
                s.code(),
                tonic::Code::Unavailable | tonic::Code::DeadlineExceeded | tonic::Code::Cancelled
            ) =>
        {
            StoreError::Unavailable(e.to_string())
        }
        _ => StoreError::Failed(format!("etcd: {e}")),
    }
}

fn options(settings: &EtcdSettings) -> ConnectOptions {
    let mut o = ConnectOptions::new()
        .with_connect_timeout(Duration::from_secs(1))
        .with_timeout(CALL_TIMEOUT)
        // A member without a leader answers at once (and the write is retried) rather
        // than holding the request through an election.
        .with_require_leader(true)
        .with_keep_alive(Duration::from_secs(5), Duration::from_secs(3))
        .with_keep_alive_while_idle(true);
    if let Some((user, password)) = &settings.user {
        // etcd's auth tokens expire (simple tokens 5 min after their last use): fetch a
        // new one when a request meets an expired one, rather than failing every write
        // after a quiet spell.
        o = o
            .with_user(user.clone(), password.clone())
            .with_auto_token_refresh(true);
    }
    if let Some(tls) = &settings.tls {
        let mut t = TlsOptions::new().ca_certificate(Certificate::from_pem(&tls.ca_pem));
        if let Some((cert, key)) = &tls.identity {
            t = t.identity(Identity::from_pem(cert, key));
        }
        o = o.with_tls(t);
    }
    o
}

/// With TLS to etcd, a certificate etcd refuses (or one the edge refuses) shows as a
/// lost connection, not as a TLS error: the log line says where to look.
fn tls_hint(settings: &EtcdSettings) -> Option<&'static str> {
    settings.tls.as_ref().map(|_| {
        "with state.etcd.tls: check that etcd's certificate chains to tls.ca and names the \
         endpoint's host, and that etcd trusts the CA of tls.cert"
    })
}

/// Logs the start of an outage, once until the state loads again.
fn log_outage(e: &dyn std::fmt::Display, settings: &EtcdSettings, logged: &mut bool) {
    if !std::mem::replace(logged, true) {
        let hint = tls_hint(settings);
        tracing::warn!(error = %e, hint, "etcd unreachable: serving the last applied state; retrying");
    }
}

/// The link thread: connect, load, watch; again after every loss.
async fn run(shared: Arc<Shared>, settings: EtcdSettings) {
    let mut backoff = RETRY_MIN;
    let mut reload = true;
    let mut outage_logged = false;
    let client = loop {
        match Client::connect(&settings.endpoints, Some(options(&settings))).await {
            Ok(c) => break c,
            Err(e) => {
                let hint = tls_hint(&settings);
                tracing::warn!(error = %e, endpoints = ?settings.endpoints, hint, "etcd: cannot connect; retrying");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(RETRY_MAX);
            }
        }
    };
    *shared.client.lock().unwrap_or_else(|p| p.into_inner()) = Some(client.clone());
    loop {
        if reload {
            match load(&client, &shared).await {
                Ok((revision, changes, objects)) => {
                    tracing::info!(revision, objects, "shared state loaded from etcd");
                    reload = false;
                    outage_logged = false;
                    backoff = RETRY_MIN;
                    shared.notify(changes);
                }
                Err(e) => {
                    shared.down.store(true, Ordering::Relaxed);
                    log_outage(&e, &settings, &mut outage_logged);
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(RETRY_MAX);
                    continue;
                }
            }
        }
        let start = shared.mirror().revision + 1;
        match watch(&client, &shared, start).await {
            WatchEnd::Compacted(at) => {
                tracing::warn!(
                    resume_from = start,
                    compacted = at,
                    "etcd compacted the revisions this edge had not seen; reloading everything"
                );
                reload = true;
            }
            WatchEnd::Lost(e) => {
                shared.down.store(true, Ordering::Relaxed);
                log_outage(&e, &settings, &mut outage_logged);
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(RETRY_MAX);
            }
        }
    }
}

/// Loads every object; (revision, what changed, how many objects).
async fn load(
    client: &Client,
    shared: &Shared,
) -> Result<(i64, Changes, usize), etcd_client::Error> {
    let mut kv = client.kv_client();
    let prefix = shared.keys.objects();
    let resp = tokio::time::timeout(
        CALL_TIMEOUT,
        kv.get(prefix.as_str(), Some(GetOptions::new().with_prefix())),
    )
    .await
    .map_err(|_| etcd_client::Error::WatchError("load timed out".into()))??;
    shared.contact();
    let revision = resp.header().map_or(0, |h| h.revision());
    shared.saw_revision(revision);
    let kvs: Vec<(String, Vec<u8>, i64)> = resp
        .kvs()
        .iter()
        .map(|kv| {
            (
                String::from_utf8_lossy(kv.key()).into_owned(),
                kv.value().to_vec(),
                kv.mod_revision(),
            )
        })
        .collect();
    let objects = kvs.len();
    let changes = shared.mirror().replace_all(kvs, revision, &shared.keys);
    Ok((revision, changes, objects))
}

/// Sends the audit events queued while etcd was away, oldest first, in batches; the
/// revision of the last batch (0: nothing queued). What a failed batch holds goes back
/// ahead of the rest.
pub(super) async fn send_backlog(
    client: Client,
    shared: &Shared,
) -> Result<i64, etcd_client::Error> {
    let mut kv = client.kv_client();
    let mut revision = 0;
    loop {
        let batch = shared.backlog.take(super::EVENTS_PER_TXN);
        if batch.is_empty() {
            return Ok(revision);
        }
        let ops: Vec<etcd_client::TxnOp> = batch
            .iter()
            .map(|(k, v)| etcd_client::TxnOp::put(k.as_str(), v.clone(), None))
            .collect();
        match kv.txn(etcd_client::Txn::new().and_then(ops)).await {
            Ok(resp) => {
                revision = resp.header().map_or(0, |h| h.revision());
                shared.saw_revision(revision);
            }
            Err(e) => {
                shared.backlog.put_back(batch);
                return Err(e);
            }
        }
    }
}

enum WatchEnd {
    /// The start revision is gone; reload.
    Compacted(i64),
    /// The stream ended or failed; resume after a pause.
    Lost(String),
}

/// Watches `P/objects/` from `start`, applying each change, until the stream ends.
async fn watch(client: &Client, shared: &Shared, start: i64) -> WatchEnd {
    let options = WatchOptions::new()
        .with_prefix()
        .with_start_revision(start)
        .with_progress_notify();
    let mut stream = match client
        .watch_client()
        .watch(shared.keys.objects(), Some(options))
        .await
    {
        Ok(s) => s,
        Err(e) => return WatchEnd::Lost(e.to_string()),
    };
    shared.watching.store(true, Ordering::Relaxed);
    // A confirmation counts for the watch that got it: a new one starts behind.
    shared.confirmed_revision.store(0, Ordering::Relaxed);
    let written = shared.keys.written();
    let queued = shared.backlog.len();
    match tokio::time::timeout(CALL_TIMEOUT, send_backlog(client.clone(), shared)).await {
        Ok(Ok(_)) if queued > 0 => {
            tracing::info!(
                events = queued,
                "audit events queued while etcd was away stored"
            )
        }
        _ => {}
    }
    let mut progress_check = tokio::time::interval(PROGRESS_CHECK);
    progress_check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // The lag seen at the last check: a lag that has not moved for a whole interval
    // (say, the revisions of other edges' audit events, which this watch never sees)
    // is settled by asking etcd how far the watch has got.
    let mut lag_at_check = 0;
    let end = loop {
        let message = tokio::select! {
            message = stream.message() => message,
            _ = progress_check.tick() => {
                let lag = shared.lag_revisions();
                if lag > 0 && lag == lag_at_check {
                    if let Err(e) = stream.request_progress().await {
                        break WatchEnd::Lost(e.to_string());
                    }
                }
                lag_at_check = lag;
                continue;
            }
        };
        let resp = match message {
            Ok(Some(r)) => r,
            Ok(None) => break WatchEnd::Lost("watch stream ended".into()),
            Err(e) => break WatchEnd::Lost(e.to_string()),
        };
        shared.contact();
        if resp.compact_revision() > 0 {
            break WatchEnd::Compacted(resp.compact_revision());
        }
        if resp.canceled() {
            break WatchEnd::Lost(format!("watch canceled: {}", resp.cancel_reason()));
        }
        let mut changes = Changes::default();
        let mut mirror = shared.mirror();
        let mut last = 0;
        let mut stamp = None;
        for event in resp.events() {
            let Some(kv) = event.kv() else { continue };
            let key = String::from_utf8_lossy(kv.key());
            let revision = kv.mod_revision();
            last = last.max(revision);
            let (changed, value) = match event.event_type() {
                EventType::Put => (
                    mirror.put(&key, kv.value().to_vec(), revision),
                    Some(kv.value()),
                ),
                EventType::Delete => (mirror.delete(&key, revision), None),
            };
            if changed && !shared.is_own(&key, value) {
                changes.merge(shared.keys.changes_of(&key));
            }
            if key == written && value.is_some() {
                stamp = value;
            }
        }
        let header = resp.header().map_or(0, |h| h.revision());
        shared.saw_revision(header);
        // A progress notification (no events) says every change up to the header's
        // revision was delivered.
        // (The response that confirms the watch also has none, but older events may
        // still follow it.)
        if !resp.events().is_empty() {
            mirror.advance(last);
        } else if resp.watch_id() < 0 {
            // The answer to a progress request: it concerns every watch of the stream.
            shared
                .confirmed_revision
                .fetch_max(header, Ordering::Relaxed);
        } else if !resp.created() {
            mirror.advance(header);
        }
        drop(mirror);
        shared.notify(changes);
        if let Some(stamp) = stamp {
            shared.saw_stamp(stamp);
        }
    };
    shared.watching.store(false, Ordering::Relaxed);
    end
}
