//! The last hour of the edge's traffic, for the console's charts: every
//! [`SAMPLE_EVERY`] the admin thread sums the endpoints' per-worker counters
//! ([`crate::edge::stats::EndpointStats`]) into one sample, edge-wide and per endpoint,
//! and keeps the newest [`KEEP`]. Nothing leaves the process; the charts need no
//! database. The samples hold running totals; the page turns consecutive ones into
//! rates (a counter that went down, an endpoint replaced under its id, counts as 0).

use std::{
    collections::{HashMap, VecDeque},
    sync::Arc,
    time::Duration,
};

use serde::Serialize;

use crate::edge::{EdgeShared, LiveEndpoint};

/// How often a sample is taken.
pub const SAMPLE_EVERY: Duration = Duration::from_secs(10);

/// Samples kept: one hour.
pub const KEEP: usize = 360;

/// Endpoints with a series of their own (the first by id); the edge-wide series
/// counts them all.
pub const MAX_ENDPOINT_SERIES: usize = 256;

/// Running totals at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Counts {
    /// ms since the epoch.
    pub t: i64,
    /// Connections (or HTTP requests) the endpoint got.
    pub connections: u64,
    /// Refused: denied by a policy or over a connection limit.
    pub refused: u64,
    /// Bytes from clients toward upstreams.
    pub bytes_in: u64,
    /// Bytes from upstreams toward clients.
    pub bytes_out: u64,
    /// Connections open at that moment.
    pub active: i64,
}

impl Counts {
    /// The endpoint's totals now.
    pub fn of(endpoint: &LiveEndpoint, t: i64) -> Counts {
        let s = &endpoint.stats;
        Counts {
            t,
            connections: s.connections.get(),
            refused: s.denied.get() + s.limited.get(),
            bytes_in: s.bytes_in.get(),
            bytes_out: s.bytes_out.get(),
            active: s.active.get(),
        }
    }

    fn add(&mut self, other: &Counts) {
        self.connections += other.connections;
        self.refused += other.refused;
        self.bytes_in += other.bytes_in;
        self.bytes_out += other.bytes_out;
        self.active += other.active;
    }
}

/// The sampled history, shared by the admin thread's sampler and the handlers.
pub type SharedHistory = Arc<std::sync::Mutex<History>>;

/// The samples.
#[derive(Default)]
pub struct History {
    edge: VecDeque<Counts>,
    endpoints: HashMap<Arc<str>, VecDeque<Counts>>,
}

impl History {
    /// Takes a sample of `edge` now.
    pub fn sample(&mut self, edge: &EdgeShared) {
        let now = crate::clock::wall_ms();
        let mut live = edge.endpoints.list();
        live.sort_by(|a, b| a.id.cmp(&b.id));
        self.record(
            now,
            live.iter().map(|e| (e.id.as_str(), Counts::of(e, now))),
        );
    }

    /// Adds one sample: each endpoint's totals at `now`.
    pub fn record<'a>(&mut self, now: i64, endpoints: impl Iterator<Item = (&'a str, Counts)>) {
        let mut total = Counts {
            t: now,
            ..Counts::default()
        };
        let mut seen = Vec::new();
        for (id, counts) in endpoints {
            total.add(&counts);
            if seen.len() >= MAX_ENDPOINT_SERIES {
                continue;
            }
            let key: Arc<str> = match self.endpoints.get_key_value(id) {
                Some((k, _)) => k.clone(),
                None => Arc::from(id),
            };
            push(self.endpoints.entry(key.clone()).or_default(), counts);
            seen.push(key);
        }
        // An endpoint that is gone keeps no series.
        self.endpoints.retain(|id, _| seen.contains(id));
        push(&mut self.edge, total);
    }

    /// The edge-wide series, oldest first.
    pub fn edge(&self) -> Vec<Counts> {
        self.edge.iter().copied().collect()
    }

    /// One endpoint's series, oldest first (empty: no series for it).
    pub fn endpoint(&self, id: &str) -> Vec<Counts> {
        self.endpoints
            .get(id)
            .map(|s| s.iter().copied().collect())
            .unwrap_or_default()
    }
}

fn push(series: &mut VecDeque<Counts>, counts: Counts) {
    if series.len() == KEEP {
        series.pop_front();
    }
    series.push_back(counts);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counts(connections: u64) -> Counts {
        Counts {
            connections,
            refused: 1,
            bytes_in: 10,
            bytes_out: 20,
            active: 2,
            ..Counts::default()
        }
    }

    #[test]
    fn sums_the_endpoints_and_keeps_one_hour() {
        let mut h = History::default();
        for i in 0..(KEEP as u64 + 5) {
            h.record(
                i as i64 * 10_000,
                [("ep_a", counts(i)), ("ep_b", counts(2 * i))].into_iter(),
            );
        }
        let edge = h.edge();
        assert_eq!(edge.len(), KEEP);
        let last = edge.last().unwrap();
        let n = KEEP as u64 + 4;
        assert_eq!(
            (last.connections, last.refused, last.bytes_out),
            (3 * n, 2, 40)
        );
        assert_eq!(last.active, 4);
        assert_eq!(edge[0].t, 50_000);
        assert_eq!(h.endpoint("ep_b").last().unwrap().connections, 2 * n);
        assert!(h.endpoint("ep_c").is_empty());
    }

    #[test]
    fn a_removed_endpoint_loses_its_series_and_series_are_bounded() {
        let mut h = History::default();
        h.record(0, [("ep_a", counts(1)), ("ep_b", counts(1))].into_iter());
        h.record(1, [("ep_b", counts(2))].into_iter());
        assert!(h.endpoint("ep_a").is_empty());
        assert_eq!(h.endpoint("ep_b").len(), 2);

        let ids: Vec<String> = (0..MAX_ENDPOINT_SERIES + 10)
            .map(|i| format!("ep_{i:04}"))
            .collect();
        h.record(2, ids.iter().map(|id| (id.as_str(), counts(1))));
        assert_eq!(h.endpoints.len(), MAX_ENDPOINT_SERIES);
        let total = h.edge().last().unwrap().connections;
        assert_eq!(
            total,
            (MAX_ENDPOINT_SERIES + 10) as u64,
            "the edge-wide series counts every endpoint"
        );
    }
}
