//! The edge's durable control-plane state: cloud endpoints created through the admin
//! API, reserved addresses, service users, their authtokens (hashes only) and the
//! audit log.
//!
//! [`Store`] is the interface the control plane writes through; every write that
//! changes an object carries the audit event describing it and commits both in one
//! transaction before returning, so an API answer of 2xx means the change is on disk.
//! [`sqlite::SqliteStore`] is the embedded backend of one edge; [`etcd::EtcdStore`]
//! keeps the state of a fleet of edges in etcd and tells each edge of the changes the
//! others make ([`Store::on_remote_change`]).

pub mod etcd;
mod migrations;
pub mod records;
pub mod snapshot;
pub mod sqlite;

pub use records::*;

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The backend failed (I/O, corruption, a constraint, a bad stored value).
    #[error("state store: {0}")]
    Failed(String),
    /// Another writer changed what this write depends on first (another edge of the
    /// fleet, at the same time): nothing was written; read again and retry.
    #[error("{0}")]
    Conflict(String),
    /// The shared store cannot be reached now: nothing was written.
    #[error("shared state unavailable: {0}")]
    Unavailable(String),
}

impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> Self {
        Self::Failed(e.to_string())
    }
}

/// Which kinds of objects changed (to re-apply them to the live edge).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Changes {
    /// Cloud endpoints (listeners, SNI routes, policies).
    pub endpoints: bool,
    /// Service users or tokens (the auth table, sessions to end).
    pub auth: bool,
    /// Owners of internal URLs (or the users they name).
    pub owners: bool,
}

impl Changes {
    /// Whether anything changed.
    pub fn any(&self) -> bool {
        self.endpoints || self.auth || self.owners
    }

    /// Both sets of changes.
    pub fn merge(&mut self, other: Changes) {
        self.endpoints |= other.endpoints;
        self.auth |= other.auth;
        self.owners |= other.owners;
    }
}

/// How current this edge's view of the state is.
#[derive(Debug, Clone, serde::Serialize)]
pub struct StoreStatus {
    /// `sqlite`, `memory` or `etcd`.
    pub backend: &'static str,
    /// Whether the state has been loaded (a shared store that never answered: false;
    /// the edge then serves edge.yml's objects only).
    pub loaded: bool,
    /// Whether changes made elsewhere arrive now (always true for a local store).
    pub following: bool,
    /// The shared store's revision this edge has applied (0 for a local store).
    pub revision: i64,
    /// How many revisions the newest answer of the shared store showed beyond the
    /// applied one: changes written but not yet applied here (0 for a local store).
    pub lag_revisions: i64,
    /// Milliseconds since the shared store last answered (None: local, or never).
    pub last_contact_age_ms: Option<i64>,
    /// How long the last change made through another edge took to be applied here,
    /// from its writer's request to this edge's watch (None: local, or none yet).
    pub watch_lag_ms: Option<i64>,
    /// Audit events recorded while the shared store was away, not stored (nor listed)
    /// yet (0 for a local store).
    pub queued_events: u64,
    /// Changes made elsewhere applied since start.
    pub remote_changes: u64,
    /// Writes refused because another writer changed their object first.
    pub write_conflicts: u64,
}

impl StoreStatus {
    /// The status of a store only this edge writes.
    pub fn local(backend: &'static str) -> Self {
        Self {
            backend,
            loaded: true,
            following: true,
            revision: 0,
            lag_revisions: 0,
            last_contact_age_ms: None,
            watch_lag_ms: None,
            queued_events: 0,
            remote_changes: 0,
            write_conflicts: 0,
        }
    }
}

/// Called with what changed when a shared store learns of changes made elsewhere.
pub type ChangeListener = Box<dyn Fn(Changes) + Send + Sync>;

/// Result of a store operation.
pub type StoreResult<T> = Result<T, StoreError>;

/// Where the control plane keeps what operators told it.
pub trait Store: Send {
    /// Every API-created cloud endpoint.
    fn endpoints(&self) -> StoreResult<Vec<EndpointRecord>>;
    /// Inserts or replaces an endpoint, with its audit event, atomically.
    fn put_endpoint(&mut self, endpoint: &EndpointRecord, event: &NewEvent) -> StoreResult<()>;
    /// Deletes an endpoint, with its audit event; false if it did not exist.
    fn delete_endpoint(&mut self, id: &str, event: &NewEvent) -> StoreResult<bool>;

    /// Every reserved address.
    fn reserved_addrs(&self) -> StoreResult<Vec<ReservedAddr>>;
    /// Inserts a reservation, with its audit event.
    fn put_reserved_addr(&mut self, addr: &ReservedAddr, event: &NewEvent) -> StoreResult<()>;
    /// Deletes a reservation, with its audit event; false if it did not exist.
    fn delete_reserved_addr(&mut self, id: &str, event: &NewEvent) -> StoreResult<bool>;

    /// Every API-created service user.
    fn users(&self) -> StoreResult<Vec<UserRecord>>;
    /// Inserts or replaces a user, with its audit event.
    fn put_user(&mut self, user: &UserRecord, event: &NewEvent) -> StoreResult<()>;
    /// Deletes a user, its tokens and its URL ownerships, with the audit event; false
    /// if it did not exist.
    fn delete_user(&mut self, id: &str, event: &NewEvent) -> StoreResult<bool>;

    /// Every token (revoked ones too), optionally of one user.
    fn tokens(&self, user_id: Option<&str>) -> StoreResult<Vec<TokenRecord>>;
    /// Inserts or replaces a token record, with its audit event.
    fn put_token(&mut self, token: &TokenRecord, event: &NewEvent) -> StoreResult<()>;
    /// Records when a token was last used (no audit event; best effort).
    fn touch_token(&mut self, id: &str, at_ms: i64) -> StoreResult<()>;

    /// Every recorded owner of an internal URL.
    fn url_owners(&self) -> StoreResult<Vec<UrlOwnerRecord>>;
    /// Records or replaces the owner of a URL, with its audit event.
    fn put_url_owner(&mut self, owner: &UrlOwnerRecord, event: &NewEvent) -> StoreResult<()>;
    /// Records the owner of a URL only if it has none (a first bind's claim); false if
    /// someone owns it already (an assignment through the API overtook the claim on its
    /// way here). The claim's audit event is recorded either way: the claim happened.
    fn claim_url_owner(&mut self, owner: &UrlOwnerRecord, event: &NewEvent) -> StoreResult<bool>;
    /// Forgets the owner of a URL, with its audit event; false if it had none.
    fn delete_url_owner(&mut self, url: &str, event: &NewEvent) -> StoreResult<bool>;

    /// Appends an audit event on its own; returns its id.
    fn append_event(&mut self, event: &NewEvent) -> StoreResult<i64>;
    /// Audit events matching `query`, newest first.
    fn events(&self, query: &EventQuery) -> StoreResult<Vec<EventRecord>>;

    /// Registers who to tell when objects change through another writer (another edge
    /// of a fleet). A store only this edge writes never calls it.
    fn on_remote_change(&mut self, _listener: ChangeListener) {}
    /// The link to a fleet's etcd, for the fleet's features beyond the state (routes,
    /// peer links); None for a store of one edge.
    fn fleet_link(&self) -> Option<etcd::FleetLink> {
        None
    }

    /// How current this edge's view is.
    fn status(&self) -> StoreStatus;
}

/// A fresh random object id with a type prefix (`ep_`, `usr_`, `tok_`, `ra_`).
pub fn new_id(prefix: &str) -> String {
    let mut bytes = [0u8; 10];
    rand::RngCore::fill_bytes(&mut rand::rng(), &mut bytes);
    format!("{prefix}{}", hex::encode(bytes))
}

/// The store an edge's settings name: etcd (`state.etcd`), SQLite (`state_dir`), or
/// memory. `warn_memory`: say that API changes will not survive a restart.
pub fn open(
    settings: &crate::config::edge::EdgeSettings,
    warn_memory: bool,
) -> std::io::Result<Box<dyn Store>> {
    let to_io = |e: StoreError| std::io::Error::other(e.to_string());
    Ok(match (&settings.etcd, &settings.state_dir) {
        (Some(etcd), _) => {
            tracing::info!(endpoints = ?etcd.endpoints, prefix = %etcd.prefix, "state: etcd (shared by the fleet)");
            Box::new(etcd::EtcdStore::connect(etcd.clone(), &settings.edge_id)?)
        }
        (None, Some(dir)) => {
            let store = sqlite::SqliteStore::open(dir).map_err(to_io)?;
            tracing::info!(state_dir = %dir.display(), "state: SQLite");
            Box::new(store)
        }
        (None, None) => {
            if warn_memory {
                tracing::warn!("state: in memory (set state_dir in edge.yml to keep API changes across restarts)");
            }
            Box::new(sqlite::SqliteStore::in_memory().map_err(to_io)?)
        }
    })
}
