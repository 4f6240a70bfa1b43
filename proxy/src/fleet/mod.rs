//! A fleet's edges reaching each other: which edge holds a session for which internal
//! URL ([`routes`]: published in etcd under each edge's lease, watched by every edge
//! into an immutable snapshot the workers read without a lock), and the fleet's key
//! that authenticates peer links ([`peer_key`], [`proof`]).
//!
//! A public connection whose URL has no local session is carried over a peer link to
//! an edge that has one (edge/peer_out.rs), which hands it to its session as if it
//! had accepted it (edge/peer_in.rs). Nothing on the accept path reads etcd.

pub mod peer_key;
pub mod proof;
pub mod routes;

use std::{collections::HashMap, net::SocketAddr, sync::Arc};

use arc_swap::{ArcSwap, ArcSwapOption};

use crate::{metrics::Counter, state::etcd::FleetLink};

/// Keepalive probes on a peer link start after this long without traffic (then 3, 10 s
/// apart): an edge that vanished without closing its links is noticed.
pub const PEER_KEEPALIVE_IDLE: std::time::Duration = std::time::Duration::from_secs(60);

/// Turns keepalive on for a peer link (either end).
pub fn keep_link_alive(fd: std::os::fd::RawFd) {
    crate::io::sockets::keepalive(
        fd,
        PEER_KEEPALIVE_IDLE,
        std::time::Duration::from_secs(10),
        3,
    );
}

/// Another edge that holds a session for a URL, and where its peer links go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerRoute {
    /// Its `edge_id`.
    pub edge: Arc<str>,
    /// Its agent port, where peer links are opened.
    pub addr: SocketAddr,
    /// The number it drew at start (openings are proven for it).
    pub boot: u64,
    /// The URL's load there, as last published.
    pub load: UrlLoad,
    /// Whether it keeps a link for the next stream once one ended (edges before this
    /// was published close it, and the link is closed here too).
    pub reuses_links: bool,
}

/// How loaded a URL is on the edge that publishes it: what balancing across edges
/// compares (edge/peer_out.rs).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct UrlLoad {
    /// The summed weights of its healthy members there (0: not published).
    pub capacity: u32,
    /// Streams open on those members' sessions.
    pub active: u32,
}

/// One edge's part of the routes: what [`PeerRoutes::from_edges`] reads.
pub struct EdgeRoutes<'a> {
    /// Its `edge_id`.
    pub edge: &'a str,
    /// Its agent port.
    pub addr: SocketAddr,
    /// Its boot number.
    pub boot: u64,
    /// The URLs it serves.
    pub urls: &'a [String],
    /// Their loads, in the order of `urls` (empty: not published).
    pub loads: &'a [UrlLoad],
    /// Whether it reuses peer links.
    pub reuses_links: bool,
}

/// Which other edges hold sessions for which URLs (this edge's own are not in it).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct PeerRoutes {
    by_url: HashMap<String, Vec<PeerRoute>>,
}

impl PeerRoutes {
    /// The routes published by each edge.
    pub fn from_edges<'a>(edges: impl IntoIterator<Item = EdgeRoutes<'a>>) -> Self {
        let mut by_url: HashMap<String, Vec<PeerRoute>> = HashMap::new();
        for published in edges {
            let edge: Arc<str> = Arc::from(published.edge);
            let loads = (published.loads.len() == published.urls.len()).then_some(published.loads);
            for (i, url) in published.urls.iter().enumerate() {
                by_url.entry(url.clone()).or_default().push(PeerRoute {
                    edge: edge.clone(),
                    addr: published.addr,
                    boot: published.boot,
                    load: loads.map_or_else(UrlLoad::default, |l| l[i]),
                    reuses_links: published.reuses_links,
                });
            }
        }
        for routes in by_url.values_mut() {
            routes.sort_by(|a, b| a.edge.cmp(&b.edge));
        }
        Self { by_url }
    }

    /// The edges serving `url`.
    pub fn lookup(&self, url: &str) -> Option<&[PeerRoute]> {
        self.by_url
            .get(url)
            .map(Vec::as_slice)
            .filter(|r| !r.is_empty())
    }

    /// Every (URL, route), in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &PeerRoute)> {
        self.by_url
            .iter()
            .flat_map(|(url, routes)| routes.iter().map(move |r| (url.as_str(), r)))
    }

    /// Whether `other` sends each URL to the same edges (loads aside).
    pub fn same_targets(&self, other: &PeerRoutes) -> bool {
        self.by_url.len() == other.by_url.len()
            && self.by_url.iter().all(|(url, routes)| {
                other.by_url.get(url).is_some_and(|theirs| {
                    routes.len() == theirs.len()
                        && routes
                            .iter()
                            .zip(theirs)
                            .all(|(a, b)| (&a.edge, a.addr, a.boot) == (&b.edge, b.addr, b.boot))
                })
            })
    }

    /// How many (URL, edge) routes there are.
    pub fn len(&self) -> usize {
        self.by_url.values().map(Vec::len).sum()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// An agent session as the other edges of a fleet see it (`/v1/sessions` on any
/// edge): what does not change while it lives.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SessionSummary {
    /// Its id on its edge.
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
    /// The agent file's `metadata`, its first [`ANNOUNCED_METADATA_BYTES`] (in full on
    /// its own edge's `/v1/sessions`); absent from an older edge's record.
    #[serde(default)]
    pub metadata: String,
    /// ms since the epoch.
    pub started_at: i64,
    /// The internal URLs it serves.
    pub endpoints: Vec<String>,
}

/// How much of a session's `metadata` its edge announces to the fleet (the record is
/// one etcd value).
pub const ANNOUNCED_METADATA_BYTES: usize = 256;

/// Sessions an edge lists in its routes record at most (the rest are on its own
/// `/v1/sessions`): the record is one etcd value, and etcd refuses values over 1.5 MiB.
pub const MAX_ANNOUNCED_SESSIONS: usize = 1000;

/// What an edge tells the fleet about itself: the URLs it holds sessions for, and
/// those sessions.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Announcement {
    /// Internal URLs with a session here (sorted).
    pub urls: Vec<String>,
    /// Their loads, in the same order.
    pub loads: Vec<UrlLoad>,
    /// The sessions.
    pub sessions: Vec<SessionSummary>,
}

/// Where the fleet reads what this edge announces (the edge's registry).
pub trait RouteSource: Send + Sync + 'static {
    /// A number that moves whenever the announcement would change.
    fn generation(&self) -> u64;
    /// The announcement as it stands.
    fn announcement(&self) -> Announcement;
}

/// A session held by another edge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteSession {
    /// The edge holding it.
    pub edge: String,
    /// The session.
    pub session: SessionSummary,
}

/// Counters of peer links.
#[derive(Default)]
pub struct PeerStats {
    /// Connections this edge carried to another edge.
    pub out_opened: Counter,
    /// Attempts to open a peer link that failed (the next route was tried).
    pub out_failed: Counter,
    /// Connections another edge carried here and this edge handed to a session.
    pub in_opened: Counter,
    /// Openings refused (bad proof, replay, stale time, no fleet key yet).
    pub in_refused: Counter,
    /// Openings for a URL no local session could take.
    pub in_failed: Counter,
    /// Peer links this edge connected to another edge.
    pub links_connected: Counter,
    /// Streams this edge sent on a link kept from an earlier stream.
    pub links_reused: Counter,
}

/// What the workers know of the fleet's other edges.
pub struct Peers {
    /// Drawn at start: openings for this edge are proven for this number, so one
    /// captured before a restart is refused after it.
    pub boot: u64,
    routes: ArcSwap<PeerRoutes>,
    sessions: ArcSwap<Vec<RemoteSession>>,
    key: ArcSwapOption<[u8; 32]>,
    /// Set when the fleet's tasks start (an edge on etcd).
    in_fleet: std::sync::atomic::AtomicBool,
    /// Set once the other edges' routes have been loaded.
    routes_loaded: std::sync::atomic::AtomicBool,
    /// Openings seen (replay protection).
    pub replay: proof::ReplayGuard,
    /// Counters.
    pub stats: PeerStats,
}

impl Default for Peers {
    fn default() -> Self {
        Self {
            boot: rand::random(),
            routes: Default::default(),
            sessions: Default::default(),
            key: Default::default(),
            in_fleet: Default::default(),
            routes_loaded: Default::default(),
            replay: Default::default(),
            stats: Default::default(),
        }
    }
}

impl Peers {
    /// The routes in force.
    pub fn routes(&self) -> arc_swap::Guard<Arc<PeerRoutes>> {
        self.routes.load()
    }

    /// Replaces the routes.
    pub fn set_routes(&self, routes: PeerRoutes) {
        self.routes.store(Arc::new(routes));
    }

    /// Whether this edge can take its part in the fleet: the peer key and the other
    /// edges' routes loaded (always true for a lone edge).
    pub fn ready(&self) -> bool {
        use std::sync::atomic::Ordering::Acquire;
        !self.in_fleet.load(Acquire) || (self.key().is_some() && self.routes_loaded.load(Acquire))
    }

    /// The sessions the other edges hold, as last announced.
    pub fn remote_sessions(&self) -> Arc<Vec<RemoteSession>> {
        self.sessions.load_full()
    }

    /// Replaces them.
    pub fn set_remote_sessions(&self, sessions: Vec<RemoteSession>) {
        self.sessions.store(Arc::new(sessions));
    }

    /// The fleet key, once loaded (no peer link is opened or accepted before).
    pub fn key(&self) -> Option<Arc<[u8; 32]>> {
        self.key.load_full()
    }

    /// Sets the fleet key.
    pub fn set_key(&self, key: [u8; 32]) {
        self.key.store(Some(Arc::new(key)));
    }
}

/// Starts the fleet's tasks on the etcd link: the peer key, this edge's routes (what
/// `source` announces, reachable at `peer_addr`; none published without one) and the
/// watch of the others'.
pub fn start(
    link: FleetLink,
    peers: Arc<Peers>,
    peer_addr: Option<SocketAddr>,
    source: Arc<dyn RouteSource>,
) {
    peers
        .in_fleet
        .store(true, std::sync::atomic::Ordering::Release);
    link.spawn(peer_key::load(link.clone(), peers.clone()));
    if let Some(peer_addr) = peer_addr {
        tracing::info!(%peer_addr, "fleet: publishing this edge's routes; peer links accepted on the agent port");
        link.spawn(routes::publish(link.clone(), peer_addr, peers.boot, source));
    }
    link.spawn(routes::follow(link.clone(), peers));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_are_found_by_url_in_edge_order() {
        let db = vec!["tcp://db.internal:5432".to_string()];
        let both = vec![
            "tcp://db.internal:5432".to_string(),
            "tcp://api.internal:443".to_string(),
        ];
        let loads = [
            UrlLoad {
                capacity: 2,
                active: 5,
            },
            UrlLoad {
                capacity: 1,
                active: 0,
            },
        ];
        let routes = PeerRoutes::from_edges([
            EdgeRoutes {
                edge: "edge-c",
                addr: "127.0.0.3:4443".parse().unwrap(),
                boot: 3,
                urls: &both,
                loads: &loads,
                reuses_links: true,
            },
            EdgeRoutes {
                edge: "edge-b",
                addr: "127.0.0.2:4443".parse().unwrap(),
                boot: 2,
                urls: &db,
                loads: &[],
                reuses_links: false,
            },
        ]);
        let db_routes = routes.lookup("tcp://db.internal:5432").unwrap();
        assert_eq!(
            db_routes.iter().map(|r| &*r.edge).collect::<Vec<_>>(),
            ["edge-b", "edge-c"]
        );
        assert_eq!(db_routes[0].load, UrlLoad::default(), "b published none");
        assert_eq!(db_routes[1].load, loads[0]);
        assert!(db_routes[1].reuses_links && !db_routes[0].reuses_links);
        assert_eq!(routes.lookup("tcp://api.internal:443").unwrap().len(), 1);
        assert_eq!(
            routes.lookup("tcp://api.internal:443").unwrap()[0].load,
            loads[1]
        );
        assert!(routes.lookup("tcp://none.internal:1").is_none());
        assert_eq!(routes.len(), 3);
    }
}
