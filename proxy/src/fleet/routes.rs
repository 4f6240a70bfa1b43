//! This edge's routes in etcd, and everyone's in a snapshot.
//!
//! [`publish`]: `P/routes/<edge_id>` holds the internal URLs this edge has a session
//! for, those sessions (for `/v1/sessions` on any edge) and the address of its agent
//! port (where peer links go), attached to a lease of [`TTL_SECS`] kept alive every
//! [`KEEPALIVE`]. An edge that dies stops keeping it alive, and its routes vanish from
//! etcd when the lease runs out, all at once. The registry's generation is read every
//! [`CHECK`]; the announcement is rebuilt and written when it moved, and every
//! [`LOAD_CHECK`] when only the URLs' loads moved (what other edges balance on).
//!
//! [`follow`]: every edge loads `P/routes/` and watches it, building a fresh
//! [`PeerRoutes`] (the other edges' routes) on each change and swapping it in for the
//! workers. When etcd goes away the last routes stay in force (a peer link to an edge
//! that died fails fast and the next route is tried); the watch is re-established with
//! a fresh load when etcd is back.

use std::{collections::HashMap, net::SocketAddr, sync::Arc, time::Duration};

use etcd_client::{EventType, GetOptions, PutOptions, WatchOptions};
use serde::{Deserialize, Serialize};

use super::{EdgeRoutes, PeerRoutes, Peers, RemoteSession, RouteSource};
use crate::state::etcd::FleetLink;

/// Life of an edge's routes without a keepalive: how long the routes of an edge that
/// died stay in the others' snapshots at most.
pub const TTL_SECS: i64 = 5;
/// How often the lease is kept alive.
pub const KEEPALIVE: Duration = Duration::from_millis(1500);
/// How often the registry's URLs are compared with those published.
pub const CHECK: Duration = Duration::from_millis(50);
/// How often the URLs' loads are compared with those published (and published again
/// when they moved): how stale the load another edge balances on may be.
pub const LOAD_CHECK: Duration = Duration::from_secs(1);
const RETRY: Duration = Duration::from_secs(1);

/// The value of `P/routes/<edge>`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RouteRecord {
    /// The edge's `edge_id`.
    pub edge: String,
    /// Its agent port, where peer links are opened.
    pub peer: SocketAddr,
    /// The number it drew at start (peer link openings are proven for it).
    #[serde(default)]
    pub boot: u64,
    /// The internal URLs it holds sessions for.
    pub urls: Vec<String>,
    /// Their loads, in the order of `urls` (absent from edges before it).
    #[serde(default)]
    pub loads: Vec<super::UrlLoad>,
    /// Whether it keeps a peer link for the next stream (absent from edges before it,
    /// which close each link after one stream).
    #[serde(default)]
    pub reuses_links: bool,
    /// Its sessions.
    #[serde(default)]
    pub sessions: Vec<super::SessionSummary>,
}

/// Publishes this edge's routes under its lease, forever.
pub async fn publish(link: FleetLink, peer: SocketAddr, boot: u64, source: Arc<dyn RouteSource>) {
    let key = link.key(&format!("routes/{}", link.edge_id()));
    let mut logged = false;
    loop {
        match publish_under_one_lease(&link, &key, peer, boot, &*source).await {
            Ok(()) => {}
            Err(e) => {
                if !std::mem::replace(&mut logged, true) {
                    tracing::warn!(error = %e, "fleet routes: cannot publish this edge's routes (etcd away); other edges keep the last ones until its lease runs out; retrying");
                }
            }
        }
        tokio::time::sleep(RETRY).await;
    }
}

/// Grants a lease and keeps the routes under it current until the lease is lost.
async fn publish_under_one_lease(
    link: &FleetLink,
    key: &str,
    peer: SocketAddr,
    boot: u64,
    source: &dyn RouteSource,
) -> anyhow::Result<()> {
    let mut client = link
        .client()
        .ok_or_else(|| anyhow::anyhow!("not connected to etcd yet"))?;
    let lease = client.lease_grant(TTL_SECS, None).await?.id();
    let (mut keeper, mut answers) = client.lease_keep_alive(lease).await?;
    let mut published: Option<(u64, Vec<super::UrlLoad>)> = None;
    let mut next_keepalive = tokio::time::Instant::now() + KEEPALIVE;
    let mut next_load_check = tokio::time::Instant::now() + LOAD_CHECK;
    loop {
        let generation = source.generation();
        let moved = published.as_ref().is_none_or(|(g, _)| *g != generation);
        let load_due = tokio::time::Instant::now() >= next_load_check;
        if load_due {
            next_load_check = tokio::time::Instant::now() + LOAD_CHECK;
        }
        let announced = (moved || load_due).then(|| source.announcement());
        let loads_moved = announced
            .as_ref()
            .is_some_and(|a| published.as_ref().is_none_or(|(_, l)| *l != a.loads));
        if let Some(announced) = announced.filter(|_| moved || loads_moved) {
            let loads = announced.loads.clone();
            let record = RouteRecord {
                edge: link.edge_id().to_string(),
                peer,
                boot,
                urls: announced.urls,
                loads: announced.loads,
                reuses_links: true,
                sessions: announced.sessions,
            };
            let value = serde_json::to_vec(&record)?;
            client
                .put(key, value, Some(PutOptions::new().with_lease(lease)))
                .await?;
            tracing::debug!(
                urls = record.urls.len(),
                sessions = record.sessions.len(),
                "fleet routes published"
            );
            published = Some((generation, loads));
        }
        if tokio::time::Instant::now() >= next_keepalive {
            keeper.keep_alive().await?;
            match tokio::time::timeout(Duration::from_secs(2), answers.message()).await {
                Ok(Ok(Some(answer))) if answer.ttl() > 0 => {}
                Ok(Ok(Some(_))) => anyhow::bail!("the routes' lease expired"),
                Ok(Ok(None)) => anyhow::bail!("lease keepalive stream ended"),
                Ok(Err(e)) => return Err(e.into()),
                Err(_) => anyhow::bail!("no keepalive answer in 2 s"),
            }
            next_keepalive = tokio::time::Instant::now() + KEEPALIVE;
        }
        tokio::time::sleep(CHECK).await;
    }
}

/// Follows every edge's routes into `peers`, forever.
pub async fn follow(link: FleetLink, peers: Arc<Peers>) {
    let mut logged = false;
    loop {
        if let Err(e) = follow_once(&link, &peers).await {
            if !std::mem::replace(&mut logged, true) {
                tracing::warn!(error = %e, "fleet routes: not following the other edges' routes (etcd away); the last ones stay in force; retrying");
            }
        }
        tokio::time::sleep(RETRY).await;
    }
}

/// One load and watch, until the watch ends.
async fn follow_once(link: &FleetLink, peers: &Peers) -> anyhow::Result<()> {
    let mut client = link
        .client()
        .ok_or_else(|| anyhow::anyhow!("not connected to etcd yet"))?;
    let prefix = link.key("routes/");
    let loaded = client
        .get(prefix.as_str(), Some(GetOptions::new().with_prefix()))
        .await?;
    let revision = loaded.header().map_or(0, |h| h.revision());
    let mut records: HashMap<String, RouteRecord> = HashMap::new();
    for kv in loaded.kvs() {
        if let Some(record) = parse(kv.value()) {
            records.insert(String::from_utf8_lossy(kv.key()).into_owned(), record);
        }
    }
    apply(link, peers, &records);
    peers
        .routes_loaded
        .store(true, std::sync::atomic::Ordering::Release);
    let options = WatchOptions::new()
        .with_prefix()
        .with_start_revision(revision + 1);
    let mut stream = client.watch(prefix.as_str(), Some(options)).await?;
    while let Some(answer) = stream.message().await? {
        if answer.canceled() || answer.compact_revision() > 0 {
            anyhow::bail!("routes watch ended ({})", answer.cancel_reason());
        }
        for event in answer.events() {
            let Some(kv) = event.kv() else { continue };
            let key = String::from_utf8_lossy(kv.key()).into_owned();
            match event.event_type() {
                EventType::Put => match parse(kv.value()) {
                    Some(record) => {
                        records.insert(key, record);
                    }
                    None => {
                        records.remove(&key);
                    }
                },
                EventType::Delete => {
                    records.remove(&key);
                }
            }
        }
        apply(link, peers, &records);
    }
    anyhow::bail!("routes watch stream ended")
}

fn parse(value: &[u8]) -> Option<RouteRecord> {
    serde_json::from_slice(value).ok()
}

/// Swaps in the routes of `records` (other edges only) if they changed.
fn apply(link: &FleetLink, peers: &Peers, records: &HashMap<String, RouteRecord>) {
    let own = link.edge_id();
    let routes =
        PeerRoutes::from_edges(
            records
                .values()
                .filter(|r| r.edge != own)
                .map(|r| EdgeRoutes {
                    edge: &r.edge,
                    addr: r.peer,
                    boot: r.boot,
                    urls: &r.urls,
                    loads: &r.loads,
                    reuses_links: r.reuses_links,
                }),
        );
    let in_force = peers.routes();
    if **in_force != routes {
        if !in_force.same_targets(&routes) {
            let edges = records.values().filter(|r| r.edge != own).count();
            tracing::info!(edges, routes = routes.len(), "fleet routes changed");
        }
        peers.set_routes(routes);
    }
    let mut sessions: Vec<RemoteSession> = records
        .values()
        .filter(|r| r.edge != own)
        .flat_map(|r| {
            r.sessions.iter().map(|s| RemoteSession {
                edge: r.edge.clone(),
                session: s.clone(),
            })
        })
        .collect();
    sessions.sort_by(|a, b| (&a.edge, a.session.id).cmp(&(&b.edge, b.session.id)));
    if *peers.remote_sessions() != sessions {
        peers.set_remote_sessions(sessions);
    }
}
