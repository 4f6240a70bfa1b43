//! The control-plane state's metric families: which backend, whether a shared store
//! is followed, how far behind it this edge may be, changes applied from other edges,
//! and writes refused by conflicts.

use super::prometheus::Exposition;
use crate::control_plane::StateView;

/// Renders the state families.
pub fn render(view: &StateView) -> String {
    let s = &view.store;
    let mut e = Exposition::default();
    e.family(
        "sluice_edge_state_info",
        "gauge",
        "Where this edge keeps its control-plane state (backend: sqlite, memory, etcd).",
    )
    .sample(
        "sluice_edge_state_info",
        &[("backend", s.backend), ("edge", view.edge_id.as_str())],
        1,
    );
    e.family(
        "sluice_edge_state_loaded",
        "gauge",
        "1 once the state has been loaded (a shared store that never answered: 0, and the edge serves edge.yml's objects only).",
    )
    .sample("sluice_edge_state_loaded", &[], u8::from(s.loaded));
    e.family(
        "sluice_edge_state_following",
        "gauge",
        "1 while changes made through other edges arrive (the etcd watch is up); always 1 for a local store.",
    )
    .sample("sluice_edge_state_following", &[], u8::from(s.following));
    e.family(
        "sluice_edge_state_revision",
        "gauge",
        "The shared store's revision this edge has applied (0 for a local store).",
    )
    .sample("sluice_edge_state_revision", &[], s.revision);
    e.family(
        "sluice_edge_state_lag_revisions",
        "gauge",
        "Revisions the shared store has shown beyond the one applied here: changes not yet applied (watch lag).",
    )
    .sample("sluice_edge_state_lag_revisions", &[], s.lag_revisions);
    if let Some(age) = s.last_contact_age_ms {
        e.family(
            "sluice_edge_state_contact_age_seconds",
            "gauge",
            "Seconds since the shared store last answered: how stale this edge's view may be.",
        )
        .sample(
            "sluice_edge_state_contact_age_seconds",
            &[],
            age as f64 / 1000.0,
        );
    }
    if let Some(lag) = s.watch_lag_ms {
        e.family(
            "sluice_edge_state_watch_lag_seconds",
            "gauge",
            "How long the last change made through another edge took to reach this edge's watch (from its writer's request; assumes the hosts' clocks in sync).",
        )
        .sample(
            "sluice_edge_state_watch_lag_seconds",
            &[],
            lag as f64 / 1000.0,
        );
    }
    e.family(
        "sluice_edge_state_queued_events",
        "gauge",
        "Audit events recorded here while the shared store was away, waiting to be stored (listed once stored).",
    )
    .sample("sluice_edge_state_queued_events", &[], s.queued_events);
    e.family(
        "sluice_edge_state_remote_changes_total",
        "counter",
        "Reports of changes made through other edges applied here.",
    )
    .sample(
        "sluice_edge_state_remote_changes_total",
        &[],
        s.remote_changes,
    );
    e.family(
        "sluice_edge_state_write_conflicts_total",
        "counter",
        "Admin writes refused (409) because another edge changed their object first.",
    )
    .sample(
        "sluice_edge_state_write_conflicts_total",
        &[],
        s.write_conflicts,
    );
    e.finish()
}
