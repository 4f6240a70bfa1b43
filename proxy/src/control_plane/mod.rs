//! The edge's control plane: the operations the admin API and config reloads perform
//! on a running edge — cloud endpoints and their policies, reserved addresses, service
//! users and authtokens, the audit log — each validated, committed to the [`Store`]
//! and then applied to the live edge (listeners, SNI routes, policy handles, the auth
//! table, sessions). It runs on the admin thread and its own helper threads, never on
//! a data-path worker.
//!
//! Objects declared in edge.yml are *static*: shown by the API, read-only through it,
//! changed by editing the file and reloading (SIGHUP or the file changing).

mod audit_writer;
mod endpoints;
mod error;
mod fleet_sync;
mod owners;
mod reload;
mod sessions;
mod users;

use std::{
    collections::HashMap,
    path::PathBuf,
    sync::{Arc, Mutex, MutexGuard},
};

pub use endpoints::{EndpointInput, EndpointPatch, EndpointView, ReservationInput};
pub use error::{ErrorKind, PlaneError};
pub use owners::{OwnerInput, UrlOwnerView};
pub use reload::restart_only;
pub use sessions::{SessionBinding, SessionView};
pub use users::{TokenCreated, TokenInput, UserInput, UserPatch, UserView};

use crate::{
    config::edge::{CloudEndpoint, ServiceUser},
    edge::EdgeShared,
    state::{EndpointRecord, EventQuery, EventRecord, NewEvent, Store},
};

/// What edge.yml declared, as last loaded.
struct StaticConfig {
    users: Vec<ServiceUser>,
    endpoints: Vec<StaticEndpoint>,
}

/// An endpoint declared in edge.yml, as the API shows it and reloads compare it.
#[derive(Clone)]
pub struct StaticEndpoint {
    id: String,
    url: String,
    policy_json: String,
    /// Digest of the policy's `terminate-tls` material.
    policy_tls: [u8; 32],
    idle_timeout: Option<std::time::Duration>,
    response_timeout: std::time::Duration,
    limits: crate::edge::conn_limits::LimitSettings,
    /// Digest of the `terminate_tls` files (None: passthrough).
    terminate_tls: Option<[u8; 32]>,
}

impl StaticEndpoint {
    /// Summaries of the configured endpoints.
    pub fn all(endpoints: &[CloudEndpoint]) -> Vec<Self> {
        let ids = crate::edge::static_endpoint_ids(endpoints.iter().map(|e| e.url.as_str()));
        endpoints
            .iter()
            .zip(ids)
            .map(|(e, id)| Self::of(e, id))
            .collect()
    }

    fn of(e: &CloudEndpoint, id: String) -> Self {
        Self {
            id,
            url: e.url.clone(),
            policy_json: e.policy_json.clone(),
            policy_tls: e.policy_tls_digest,
            idle_timeout: e.idle_timeout,
            response_timeout: e.response_timeout,
            limits: e.limits,
            terminate_tls: e.terminate_tls_digest,
        }
    }
}

/// The control plane of one edge.
pub struct ControlPlane {
    store: Mutex<Box<dyn Store>>,
    edge: Arc<EdgeShared>,
    statics: Mutex<StaticConfig>,
    config_path: Option<PathBuf>,
    /// [`reload::restart_only`] of the settings the edge started with.
    restart_only: Vec<(&'static str, String)>,
    /// The API-made endpoints as last applied to the live edge. Held for the whole of
    /// an endpoint change, local or from another edge, so the two never interleave.
    applied: Mutex<HashMap<String, EndpointRecord>>,
}

impl ControlPlane {
    /// A control plane over a running edge whose static objects came from `users`
    /// and `endpoints` (already serving), loading the API-made objects from `store`
    /// and applying them. An API-made endpoint that cannot be served (its port taken
    /// by a static endpoint, say) is logged and skipped, not fatal. `restart_only`:
    /// [`restart_only`] of the settings the edge started with.
    pub fn new(
        store: Box<dyn Store>,
        edge: Arc<EdgeShared>,
        users: Vec<ServiceUser>,
        endpoints: Vec<StaticEndpoint>,
        config_path: Option<PathBuf>,
        restart_only: Vec<(&'static str, String)>,
    ) -> Result<Arc<Self>, PlaneError> {
        let plane = Arc::new(Self {
            store: Mutex::new(store),
            edge,
            statics: Mutex::new(StaticConfig { users, endpoints }),
            config_path,
            restart_only,
            applied: Mutex::new(HashMap::new()),
        });
        plane
            .follow_remote_changes()
            .map_err(|e| PlaneError::new(ErrorKind::Internal, "cannot_start", e.to_string()))?;
        plane.restore_endpoints()?;
        plane.rebuild_auth("start")?;
        plane.restore_ownership("start")?;
        Ok(plane)
    }

    fn store(&self) -> MutexGuard<'_, Box<dyn Store>> {
        // A panic mid-call leaves SQLite consistent (the transaction rolls back).
        self.store.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn applied_endpoints(&self) -> MutexGuard<'_, HashMap<String, EndpointRecord>> {
        self.applied.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn statics(&self) -> MutexGuard<'_, StaticConfig> {
        self.statics.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Audit events, newest first.
    pub fn events(&self, query: &EventQuery) -> Result<Vec<EventRecord>, PlaneError> {
        Ok(self.store().events(query)?)
    }

    /// Records an audit event of its own (e.g. an admin authentication failure).
    pub fn record(&self, event: NewEvent) {
        if let Err(e) = self.store().append_event(&event) {
            tracing::warn!(error = %e, kind = %event.kind, "audit event not stored");
        }
    }

    /// Whether the edge serves its whole state (readiness). A local store must answer;
    /// a shared one must have been loaded once — an etcd outage later changes nothing
    /// on the data path, so it does not take the edge out of a balancer's rotation.
    pub fn ready(&self) -> bool {
        if self.edge.leaving.load(std::sync::atomic::Ordering::Acquire) || !self.edge.peers.ready()
        {
            return false;
        }
        let store = self.store();
        let status = store.status();
        match status.backend {
            "etcd" => status.loaded,
            _ => store
                .events(&EventQuery {
                    limit: 1,
                    ..Default::default()
                })
                .is_ok(),
        }
    }

    /// How current this edge's view of the state is, and which edge this is.
    pub fn state_status(&self) -> StateView {
        StateView {
            edge_id: self.edge.edge_id.clone(),
            store: self.store().status(),
        }
    }

    /// The edge this plane manages.
    pub fn edge(&self) -> &Arc<EdgeShared> {
        &self.edge
    }
}

/// `GET /v1/state`: this edge and how current its state is.
#[derive(Debug, serde::Serialize)]
pub struct StateView {
    /// This edge's name.
    pub edge_id: String,
    /// The store's report.
    #[serde(flatten)]
    pub store: crate::state::StoreStatus,
}

/// A page of a list: the items and the cursor of the next page.
#[derive(Debug, serde::Serialize)]
pub struct Page<T> {
    /// Items of this page.
    pub items: Vec<T>,
    /// Pass as `after` (or `before` for events) to get the next page; null at the end.
    pub next: Option<String>,
}

/// Pages a list sorted by `key`: items after `after`, at most `limit`.
pub fn page_by<T>(
    mut items: Vec<T>,
    key: impl Fn(&T) -> String,
    after: Option<&str>,
    limit: usize,
) -> Page<T> {
    items.sort_by_key(&key);
    let start = after.map_or(0, |a| items.partition_point(|i| key(i).as_str() <= a));
    let mut rest: Vec<T> = items.into_iter().skip(start).collect();
    let next = (rest.len() > limit).then(|| key(&rest[limit - 1]));
    rest.truncate(limit);
    Page { items: rest, next }
}
