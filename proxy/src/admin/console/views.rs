//! What the console's pages read, assembled from the control plane's views, the
//! endpoints' live counters and the sampled [`History`]: the overview, one endpoint,
//! and the pools (members grouped by internal URL from the sessions' bindings).
//! Strings here come from agents and admins as they are; the page shows them as text.

use std::collections::BTreeMap;

use serde::Serialize;

use super::history::{Counts, History, SAMPLE_EVERY};
use crate::{
    control_plane::{ControlPlane, EndpointView, PlaneError},
    edge::{denials::Denial, EdgeShared, LiveEndpoint},
};

/// The edge itself.
#[derive(Debug, Serialize)]
pub struct EdgeInfo {
    /// Its `edge_id`.
    pub id: String,
    /// sluice's version.
    pub version: &'static str,
    /// Its clock, ms since the epoch.
    pub now_ms: i64,
    /// Seconds between the series' samples.
    pub sample_every_s: u64,
}

/// Counts across the edge now.
#[derive(Debug, Default, Serialize)]
pub struct Totals {
    /// Agent sessions this edge holds.
    pub sessions: usize,
    /// Endpoints.
    pub endpoints: usize,
    /// Internal URLs bound by agents.
    pub pools: usize,
    /// Their members.
    pub pool_members: usize,
    /// Members whose agent reports the upstream reachable and the edge does not skip.
    pub healthy_members: usize,
    /// Connections being handled.
    pub active: i64,
    /// Connections since start.
    pub connections: u64,
    /// Refused since start.
    pub refused: u64,
    /// Bytes in since start.
    pub bytes_in: u64,
    /// Bytes out since start.
    pub bytes_out: u64,
}

/// One row of the overview's endpoint table.
#[derive(Debug, Serialize)]
pub struct EndpointRow {
    /// Id.
    pub id: String,
    /// URL.
    pub url: String,
    /// Free text.
    pub description: String,
    /// Where it listens.
    pub listen_addr: String,
    /// Its totals now.
    pub now: Counts,
}

/// One pool row of the overview.
#[derive(Debug, Serialize)]
pub struct PoolRow {
    /// The internal URL.
    pub url: String,
    /// Members.
    pub members: usize,
    /// Members in service (healthy, not suspect).
    pub healthy: usize,
}

/// `GET /v1/console/overview`.
#[derive(Debug, Serialize)]
pub struct Overview {
    /// The edge.
    pub edge: EdgeInfo,
    /// Totals now.
    pub totals: Totals,
    /// The edge-wide series, the last point taken now.
    pub series: Vec<Counts>,
    /// Endpoints.
    pub endpoints: Vec<EndpointRow>,
    /// Pools.
    pub pools: Vec<PoolRow>,
}

/// `GET /v1/console/endpoints/{id}`.
#[derive(Debug, Serialize)]
pub struct EndpointPage {
    /// The edge.
    pub edge: EdgeInfo,
    /// The endpoint as the API shows it (policy text included).
    pub endpoint: EndpointView,
    /// Connections by outcome since it started serving, as `[name, count]`.
    pub outcomes: Vec<(&'static str, u64)>,
    /// HTTP responses by status class (`http://` and `https://` endpoints).
    pub http_responses: BTreeMap<&'static str, u64>,
    /// Its series, the last point taken now.
    pub series: Vec<Counts>,
    /// Clients refused lately, most recent first.
    pub denials: Vec<Denial>,
    /// Refusals not entered in that table because it was busy.
    pub denials_skipped: u64,
}

/// A member of a pool.
#[derive(Debug, Serialize)]
pub struct MemberRow {
    /// Its session.
    pub session: u64,
    /// Service user.
    pub user: String,
    /// The agent's address.
    pub peer: String,
    /// The agent's version.
    pub agent_version: String,
    /// When the session started, ms since the epoch.
    pub started_at: i64,
    /// Control-channel round trip, ms.
    pub rtt_ms: Option<f64>,
    /// Streams through the session now (all its URLs).
    pub in_flight: usize,
    /// The agent reports the upstream reachable.
    pub healthy: bool,
    /// The edge skips it for a moment after a failure.
    pub suspect: bool,
    /// Pool weight.
    pub weight: u16,
    /// Streams that could not be opened on it since it joined.
    pub open_failures: u64,
    /// The endpoint's `description` in the agent file.
    pub description: String,
    /// The endpoint's `metadata` in the agent file.
    pub metadata: String,
}

/// One pool.
#[derive(Debug, Serialize)]
pub struct PoolPage {
    /// The internal URL.
    pub url: String,
    /// Its members.
    pub members: Vec<MemberRow>,
}

/// `GET /v1/console/pools`.
#[derive(Debug, Serialize)]
pub struct Pools {
    /// The edge.
    pub edge: EdgeInfo,
    /// Pools by URL.
    pub items: Vec<PoolPage>,
    /// Pool events since start: joined, left, unhealthy, healthy, suspect, failover,
    /// exhausted.
    pub events: BTreeMap<&'static str, u64>,
}

fn edge_info(edge: &EdgeShared) -> EdgeInfo {
    EdgeInfo {
        id: edge.edge_id.clone(),
        version: env!("CARGO_PKG_VERSION"),
        now_ms: crate::clock::wall_ms(),
        sample_every_s: SAMPLE_EVERY.as_secs(),
    }
}

/// The sampled series with a point for now appended.
fn with_now(mut series: Vec<Counts>, now: Counts) -> Vec<Counts> {
    series.push(now);
    series
}

/// The overview.
pub fn overview(plane: &ControlPlane, history: &History) -> Result<Overview, PlaneError> {
    let edge = plane.edge();
    let info = edge_info(edge);
    let views = plane.list_endpoints()?;
    let mut endpoints = Vec::with_capacity(views.len());
    let mut totals = Totals {
        sessions: edge.registry.sessions().len(),
        endpoints: views.len(),
        ..Totals::default()
    };
    let mut now = Counts {
        t: info.now_ms,
        ..Counts::default()
    };
    for view in views {
        let counts = edge
            .endpoints
            .get(&view.id)
            .map(|live| Counts::of(&live, info.now_ms))
            .unwrap_or(Counts {
                t: info.now_ms,
                ..Counts::default()
            });
        now.connections += counts.connections;
        now.refused += counts.refused;
        now.bytes_in += counts.bytes_in;
        now.bytes_out += counts.bytes_out;
        now.active += counts.active;
        endpoints.push(EndpointRow {
            id: view.id,
            url: view.url,
            description: view.description,
            listen_addr: view.listen_addr,
            now: counts,
        });
    }
    totals.active = now.active;
    totals.connections = now.connections;
    totals.refused = now.refused;
    totals.bytes_in = now.bytes_in;
    totals.bytes_out = now.bytes_out;
    let mut pools: BTreeMap<String, PoolRow> = BTreeMap::new();
    for (url, _, healthy, suspect) in edge.registry.pool_members() {
        let row = pools.entry(url.clone()).or_insert(PoolRow {
            url,
            members: 0,
            healthy: 0,
        });
        row.members += 1;
        row.healthy += usize::from(healthy && !suspect);
    }
    totals.pools = pools.len();
    totals.pool_members = pools.values().map(|p| p.members).sum();
    totals.healthy_members = pools.values().map(|p| p.healthy).sum();
    Ok(Overview {
        series: with_now(history.edge(), now),
        edge: info,
        totals,
        endpoints,
        pools: pools.into_values().collect(),
    })
}

fn outcomes(live: &LiveEndpoint) -> Vec<(&'static str, u64)> {
    let s = &live.stats;
    [
        ("handled", &s.connections),
        ("forwarded", &s.forwarded),
        ("denied", &s.denied),
        ("limited", &s.limited),
        ("no_agent", &s.no_agent),
        ("no_channel", &s.no_channel),
        ("tls_handshake_failed", &s.tls_handshake_failed),
        ("stream_error", &s.stream_errors),
        ("idle_timeout", &s.idle_timeouts),
        ("failovers", &s.failovers),
    ]
    .into_iter()
    .map(|(name, c)| (name, c.get()))
    .collect()
}

/// One endpoint's page.
pub fn endpoint(
    plane: &ControlPlane,
    history: &History,
    id: &str,
) -> Result<EndpointPage, PlaneError> {
    let endpoint = plane.get_endpoint(id)?;
    let edge = plane.edge();
    let info = edge_info(edge);
    let live = edge.endpoints.get(id);
    let now = live.as_ref().map_or(
        Counts {
            t: info.now_ms,
            ..Counts::default()
        },
        |l| Counts::of(l, info.now_ms),
    );
    let (outcomes, http_responses, denials, denials_skipped) = match &live {
        Some(l) => (
            outcomes(l),
            ["1xx", "2xx", "3xx", "4xx", "5xx"]
                .into_iter()
                .zip(l.stats.http_responses.iter().map(|c| c.get()))
                .collect(),
            l.stats.recent_denials.snapshot(),
            l.stats.recent_denials.skipped(),
        ),
        None => Default::default(),
    };
    Ok(EndpointPage {
        series: with_now(history.endpoint(id), now),
        edge: info,
        endpoint,
        outcomes,
        http_responses,
        denials,
        denials_skipped,
    })
}

/// The pools, from this edge's sessions' bindings.
pub fn pools(plane: &ControlPlane) -> Pools {
    let edge = plane.edge();
    let mut by_url: BTreeMap<String, Vec<MemberRow>> = BTreeMap::new();
    for session in plane.list_sessions() {
        for binding in &session.endpoints {
            by_url
                .entry(binding.url.clone())
                .or_default()
                .push(MemberRow {
                    session: session.id,
                    user: session.user.clone(),
                    peer: session.peer.clone(),
                    agent_version: session.agent_version.clone(),
                    started_at: session.started_at,
                    rtt_ms: session.rtt_ms,
                    in_flight: session.in_flight,
                    healthy: binding.healthy,
                    suspect: binding.suspect,
                    weight: binding.weight,
                    open_failures: binding.open_failures,
                    description: binding.labels.description.clone(),
                    metadata: binding.labels.metadata.clone(),
                });
        }
    }
    let p = &edge.registry.pool_stats;
    let load = |a: &std::sync::atomic::AtomicU64| a.load(std::sync::atomic::Ordering::Relaxed);
    Pools {
        edge: edge_info(edge),
        items: by_url
            .into_iter()
            .map(|(url, members)| PoolPage { url, members })
            .collect(),
        events: [
            ("joined", load(&p.joined)),
            ("left", load(&p.left)),
            ("unhealthy", load(&p.became_unhealthy)),
            ("healthy", load(&p.became_healthy)),
            ("suspect", load(&p.marked_suspect)),
            ("failover", load(&p.failovers)),
            ("exhausted", load(&p.exhausted)),
        ]
        .into_iter()
        .collect(),
    }
}
