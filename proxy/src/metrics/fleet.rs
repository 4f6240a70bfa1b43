//! The fleet's metric families on an edge: streams carried over peer links, both
//! ways and by outcome, and the other edges' routes in force.

use super::prometheus::Exposition;
use crate::fleet::Peers;

/// Renders the fleet families.
pub fn render(peers: &Peers) -> String {
    let s = &peers.stats;
    let mut e = Exposition::default();
    e.family(
        "sluice_edge_peer_streams_total",
        "counter",
        "Connections carried between edges of a fleet: out (this edge had no session for the URL and carried it to one that had: opened, or failed and the next route tried) and in (another edge carried it here: opened on a local session, refused for a bad proof, replay or stale time, or failed for want of a session or member).",
    );
    for (direction, outcome, counter) in [
        ("out", "opened", &s.out_opened),
        ("out", "failed", &s.out_failed),
        ("in", "opened", &s.in_opened),
        ("in", "refused", &s.in_refused),
        ("in", "failed", &s.in_failed),
    ] {
        e.sample(
            "sluice_edge_peer_streams_total",
            &[("direction", direction), ("outcome", outcome)],
            counter.get(),
        );
    }
    e.family(
        "sluice_edge_peer_link_streams_total",
        "counter",
        "Streams this edge sent to another edge, by the link that carried them: connected (a new peer link) or reused (a link kept from an earlier stream to the same edge).",
    );
    for (link, counter) in [
        ("connected", &s.links_connected),
        ("reused", &s.links_reused),
    ] {
        e.sample(
            "sluice_edge_peer_link_streams_total",
            &[("link", link)],
            counter.get(),
        );
    }
    e.family(
        "sluice_edge_fleet_routes",
        "gauge",
        "(internal URL, edge) routes of the other edges of the fleet in force here.",
    )
    .sample("sluice_edge_fleet_routes", &[], peers.routes().len());
    e.family(
        "sluice_edge_fleet_peer_key_loaded",
        "gauge",
        "1 once the fleet's peer link key is loaded from etcd (no peer link is opened or accepted before).",
    )
    .sample(
        "sluice_edge_fleet_peer_key_loaded",
        &[],
        u8::from(peers.key().is_some()),
    );
    e.finish()
}
