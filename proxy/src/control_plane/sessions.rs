//! Live agent sessions as the admin API shows them: this edge's, in full, and in a
//! fleet the other edges' as they announced them (crate::fleet), each with the edge
//! holding it; and which edges serve which URLs (`/v1/routes`).

use serde::Serialize;

use super::ControlPlane;

/// One URL a session serves.
#[derive(Debug, Serialize)]
pub struct SessionBinding {
    /// Internal URL.
    pub url: String,
    /// Members of its pool (1 without pooling).
    pub pool_members: usize,
    /// Whether this member's agent last reported its upstream reachable.
    pub healthy: bool,
    /// Whether the edge skips this member for a moment after a failure it saw (no
    /// data channel in time, a broken channel, an upstream that refused).
    pub suspect: bool,
    /// Its pool weight.
    pub weight: u16,
    /// Streams that could not be opened on this member since it joined (each tried on
    /// another member while one was left).
    pub open_failures: u64,
    /// The `description` and `metadata` its agent gave (empty: none).
    #[serde(flatten)]
    pub labels: crate::wire::Labels,
}

/// A live agent session.
#[derive(Debug, Serialize)]
pub struct SessionView {
    /// The edge holding it (this one).
    pub edge: String,
    /// Session id.
    pub id: u64,
    /// Service user id.
    pub user_id: String,
    /// Service user name.
    pub user: String,
    /// Token it authenticated with.
    pub token_id: String,
    /// The agent's address.
    pub peer: String,
    /// The agent's version.
    pub agent_version: String,
    /// The agent file's `metadata` (empty: none).
    pub metadata: String,
    /// ms since the epoch.
    pub started_at: i64,
    /// Last control-channel round trip (ms), if measured yet.
    pub rtt_ms: Option<f64>,
    /// Streams forwarded through it now.
    pub in_flight: usize,
    /// Data channels parked at the edge, ready for streams.
    pub idle_data_channels: usize,
    /// URLs it serves.
    pub endpoints: Vec<SessionBinding>,
}

/// A session another edge of the fleet holds: what it announced (its load, health and
/// round trip are on that edge's own `/v1/sessions`).
#[derive(Debug, Serialize)]
pub struct RemoteSessionView {
    /// The edge holding it.
    pub edge: String,
    /// The session, as announced.
    #[serde(flatten)]
    pub session: crate::fleet::SessionSummary,
}

/// One entry of `/v1/routes`: an edge of the fleet that serves an internal URL.
#[derive(Debug, Serialize, PartialEq, Eq)]
pub struct RouteView {
    /// The internal URL.
    pub url: String,
    /// The edge holding sessions for it.
    pub edge: String,
    /// Whether that edge is this one (its load is live; the others' as last published).
    pub local: bool,
    /// The summed weights of its healthy members there.
    pub capacity: u32,
    /// Streams open on those members' sessions.
    pub active: u32,
}

/// One entry of `/v1/sessions`.
#[derive(Debug, Serialize)]
#[serde(untagged)]
pub enum SessionItem {
    /// Held by this edge.
    Local(SessionView),
    /// Held by another edge of the fleet.
    Remote(RemoteSessionView),
}

impl ControlPlane {
    /// The fleet's sessions: this edge's, then the others' (by edge, then id); only
    /// those of edge `only` when given.
    pub fn fleet_sessions(&self, only: Option<&str>) -> Vec<SessionItem> {
        let wanted = |edge: &str| only.is_none_or(|o| o == edge);
        let mut items: Vec<SessionItem> = if wanted(&self.edge.edge_id) {
            self.list_sessions()
                .into_iter()
                .map(SessionItem::Local)
                .collect()
        } else {
            Vec::new()
        };
        items.extend(
            self.edge
                .peers
                .remote_sessions()
                .iter()
                .filter(|r| wanted(&r.edge))
                .map(|r| {
                    SessionItem::Remote(RemoteSessionView {
                        edge: r.edge.clone(),
                        session: r.session.clone(),
                    })
                }),
        );
        items
    }

    /// Which edges serve which internal URLs, with their loads: this edge's own (now),
    /// then the other edges' as last published, sorted by URL and edge.
    pub fn fleet_routes(&self) -> Vec<RouteView> {
        let own = &self.edge.edge_id;
        let mut items: Vec<RouteView> = self
            .edge
            .registry
            .bound_urls()
            .into_iter()
            .map(|(url, load)| RouteView {
                url,
                edge: own.to_string(),
                local: true,
                capacity: load.capacity,
                active: load.active,
            })
            .collect();
        items.extend(self.edge.peers.routes().iter().map(|(url, r)| RouteView {
            url: url.to_owned(),
            edge: r.edge.to_string(),
            local: false,
            capacity: r.load.capacity,
            active: r.load.active,
        }));
        items.sort_by(|a, b| (&a.url, &a.edge).cmp(&(&b.url, &b.edge)));
        items
    }

    /// Every live session of this edge, oldest first (session ids are handed out in
    /// order), so listings keep a stable order between calls.
    pub fn list_sessions(&self) -> Vec<SessionView> {
        let registry = &self.edge.registry;
        let mut sessions = registry.sessions();
        sessions.sort_by_key(|s| s.id);
        sessions
            .into_iter()
            .map(|s| {
                let rtt = s.rtt_us.load(std::sync::atomic::Ordering::Relaxed);
                SessionView {
                    edge: self.edge.edge_id.clone(),
                    id: s.id,
                    user_id: s.identity.user_id.clone(),
                    user: s.identity.user_name.clone(),
                    token_id: s.identity.token_id.clone(),
                    peer: s.peer.to_string(),
                    agent_version: s.agent_version.clone(),
                    metadata: s.metadata.clone(),
                    started_at: s.started_at,
                    rtt_ms: (rtt > 0).then(|| rtt as f64 / 1000.0),
                    in_flight: s.in_flight.load(std::sync::atomic::Ordering::Relaxed),
                    idle_data_channels: s.idle_channels(),
                    endpoints: registry
                        .bindings_of(s.id)
                        .into_iter()
                        .map(|b| SessionBinding {
                            labels: s.labels_of(&b.url),
                            url: b.url,
                            pool_members: b.pool_members,
                            healthy: b.healthy,
                            suspect: b.suspect,
                            weight: b.weight,
                            open_failures: b.open_failures,
                        })
                        .collect(),
                }
            })
            .collect()
    }
}
