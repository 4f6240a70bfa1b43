//! Changes made through another edge of a fleet, applied to this one: the shared
//! store reports what kind of objects changed ([`Changes`]), and a thread of the
//! control plane re-reads them and applies them the way a local API call would —
//! endpoints started, re-policied or stopped, the auth table rebuilt (ending the
//! sessions of revoked tokens and deactivated or deleted users), URL owners reloaded.
//! Reports that arrive while one is being applied are merged into the next round.

use std::{
    collections::HashMap,
    sync::{mpsc, Arc, Weak},
};

use super::{endpoints::record_to_spec, ControlPlane, PlaneError};
use crate::state::{Changes, EndpointRecord};

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
                while let Ok(first) = rx.recv() {
                    let mut changes = first;
                    while let Ok(more) = rx.try_recv() {
                        changes.merge(more);
                    }
                    let Some(plane) = plane.upgrade() else { return };
                    plane.apply_remote(changes);
                }
            })?;
        Ok(())
    }

    fn apply_remote(&self, changes: Changes) {
        let started = std::time::Instant::now();
        let mut failed = Vec::new();
        if changes.endpoints {
            if let Err(e) = self.sync_endpoints() {
                failed.push(e);
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
    }

    /// Makes the live API-made endpoints what the store holds: new ones served, changed
    /// policies swapped in, deleted ones stopped (their connections finish).
    pub(super) fn sync_endpoints(&self) -> Result<(), PlaneError> {
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
                        tracing::error!(id = %r.id, url = %r.url, error = %e, "endpoint created through another edge not served")
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
        Ok(())
    }
}
