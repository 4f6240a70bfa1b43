//! Changes made through another edge of a fleet, applied to this one: the shared
//! store reports what kind of objects changed ([`Changes`]), and a thread of the
//! control plane re-reads them and applies them the way a local API call would —
//! endpoints started, re-policied or stopped, the auth table rebuilt (ending the
//! sessions of revoked tokens and deactivated or deleted users), URL owners reloaded.
//! Reports that arrive while one is being applied are merged into the next round.
//! An endpoint this edge could not serve (its port busy here, say) is tried again
//! after [`RETRY_FIRST`], then twice as long each time up to [`RETRY_MOST`], until it is
//! served or deleted, without waiting for another change.

use std::{
    collections::HashMap,
    sync::{mpsc, Arc, Weak},
    time::Duration,
};

use super::{endpoints::record_to_spec, ControlPlane, PlaneError};
use crate::state::{Changes, EndpointRecord};

/// The first wait before an endpoint that could not be served is tried again.
const RETRY_FIRST: Duration = Duration::from_secs(1);
/// The longest wait between tries.
const RETRY_MOST: Duration = Duration::from_secs(30);

impl ControlPlane {
    /// Subscribes to the store's reports of remote changes and starts the thread
    /// applying them (a store that has none never reports).
    pub(super) fn follow_remote_changes(self: &Arc<Self>) -> std::io::Result<()> {
        let (tx, rx) = mpsc::channel::<Changes>();
        self.store().on_remote_change(Box::new(move |changes| {
            let _ = tx.send(changes);
        }));
        let plane: Weak<Self> = Arc::downgrade(self);
        std::thread::Builder::new()
            .name("sluice-fleet-sync".into())
            .spawn(move || {
                // Set while some endpoint is not served here: the wait before the
                // next try.
                let mut retry: Option<Duration> = None;
                loop {
                    let first = match retry {
                        None => rx.recv().map_err(|_| ()),
                        Some(wait) => match rx.recv_timeout(wait) {
                            Ok(changes) => Ok(changes),
                            Err(mpsc::RecvTimeoutError::Timeout) => Ok(Changes {
                                endpoints: true,
                                ..Changes::default()
                            }),
                            Err(mpsc::RecvTimeoutError::Disconnected) => Err(()),
                        },
                    };
                    let Ok(mut changes) = first else { return };
                    while let Ok(more) = rx.try_recv() {
                        changes.merge(more);
                    }
                    let Some(plane) = plane.upgrade() else { return };
                    let unserved = plane.apply_remote(changes);
                    retry = match (unserved, retry) {
                        (false, _) => None,
                        (true, None) => Some(RETRY_FIRST),
                        (true, Some(wait)) => Some((wait * 2).min(RETRY_MOST)),
                    };
                }
            })?;
        Ok(())
    }

    /// Applies `changes`; whether some endpoint is left unserved here (to try again).
    fn apply_remote(&self, changes: Changes) -> bool {
        let started = std::time::Instant::now();
        let mut failed = Vec::new();
        let mut unserved = false;
        if changes.endpoints {
            match self.sync_endpoints() {
                Ok(n) => unserved = n > 0,
                Err(e) => failed.push(e),
            }
        }
        if changes.auth {
            if let Err(e) = self.rebuild_auth("change through another edge") {
                failed.push(e);
            }
        }
        if changes.owners {
            if let Err(e) = self.restore_ownership("change through another edge") {
                failed.push(e);
            }
        }
        for e in &failed {
            tracing::error!(error = %e, "change made through another edge not applied");
        }
        tracing::debug!(?changes, took = ?started.elapsed(), "changes through other edges applied");
        unserved
    }

    /// Makes the live API-made endpoints what the store holds: new ones served, changed
    /// policies swapped in, deleted ones stopped (their connections finish). Returns how
    /// many stored endpoints could not be served here.
    pub(super) fn sync_endpoints(&self) -> Result<usize, PlaneError> {
        let mut unserved = 0;
        let records = self.store().endpoints()?;
        let statics: Vec<String> = self
            .statics()
            .endpoints
            .iter()
            .map(|s| s.id.clone())
            .collect();
        let mut applied = self.applied_endpoints();
        let mut now: HashMap<String, EndpointRecord> = HashMap::new();
        for r in records {
            match self.edge.endpoints.get(&r.id) {
                None => match record_to_spec(&r).and_then(|spec| {
                    self.edge
                        .endpoints
                        .add(spec)
                        .map_err(super::endpoints::add_error)
                }) {
                    Ok(_) => {
                        tracing::info!(id = %r.id, url = %r.url, "endpoint created through another edge: serving")
                    }
                    Err(e) => {
                        unserved += 1;
                        crate::log_throttled!(error, id = %r.id, url = %r.url, error = %e,
                            "endpoint created through another edge not served; trying again")
                    }
                },
                Some(live) => {
                    // A policy set again unchanged still rereads its `terminate-tls`
                    // files (a renewed certificate), on every edge.
                    let rereads = || live.policy.load().terminates_tls();
                    let changed = applied.get(&r.id).is_some_and(|old| {
                        old.traffic_policy != r.traffic_policy
                            || (old.updated_at != r.updated_at && rereads())
                    });
                    if changed {
                        match record_to_spec(&r) {
                            Ok(spec) => {
                                self.edge.endpoints.set_policy(&r.id, spec.policy);
                                tracing::info!(id = %r.id, "policy changed through another edge: swapped in");
                            }
                            Err(e) => {
                                tracing::error!(id = %r.id, error = %e, "policy changed through another edge does not compile here; the previous one stays")
                            }
                        }
                    }
                }
            }
            now.insert(r.id.clone(), r);
        }
        for live in self.edge.endpoints.list() {
            if !now.contains_key(&live.id) && !statics.contains(&live.id) {
                self.edge.endpoints.remove(&live.id);
                tracing::info!(id = %live.id, url = %live.url, "endpoint deleted through another edge: stopped accepting");
            }
        }
        *applied = now;
        Ok(unserved)
    }
}
