//! The edge: accepts agents on the agent port, keeps their sessions and parked data
//! channels, and forwards each public TCP connection that its endpoint's traffic
//! policy allows into the session bound to the policy's target.
//!
//! [`start`] binds every listener on the calling thread (so a busy port is an error
//! right away), then starts one worker per core; each worker owns one SO_REUSEPORT
//! listener per address and serves both the agent port and the public endpoints.
//! Every listener is exclusive to the edge and to its purpose (`io::sockets`,
//! [`crate::listeners`]): a port held by anybody else is an `AddrInUse` error that
//! names the config key.

mod account;
mod agent_port;
mod agent_refusal;
pub mod audit;
pub mod auth;
pub mod bind_error;
mod channel_auth;
mod conn_facts;
pub mod conn_limits;
mod control;
pub mod datachan;
pub mod denials;
pub mod endpoint_policy;
pub mod endpoints;
mod http;
mod open;
pub mod ownership;

mod peer_in;
mod peer_links;
mod peer_out;
mod pipeline;
mod policy_log;
pub mod pool;
pub mod preauth;
mod public;
pub mod registry;
pub mod session;
pub mod session_handle;
pub mod stats;
mod terminate;
mod tls_front;
mod tls_port;

use std::{
    net::{SocketAddr, TcpListener},
    sync::{atomic::AtomicBool, Arc, Mutex},
    thread::JoinHandle,
    time::Duration,
};

use arc_swap::ArcSwap;
use sluice_policy::PolicyHandle;

use crate::{
    config::edge::{EdgeSettings, ServiceUser},
    io::sockets,
    listeners::Listener,
    runtime::{self, Driver},
};
use audit::AuditSink;
use auth::{AuthTable, Identity};
use endpoints::{EndpointSpec, Endpoints, WorkerCommand};
use registry::Registry;
use stats::EdgeStats;

/// The agent port, as its holder is named when an endpoint asks for its address.
pub const AGENT_PORT: &str = "the agent port (agents.listen)";
/// The shared port of `tls://` endpoints, named likewise.
pub const TLS_PORT: &str = "the tls:// endpoints' port (tls_endpoints.listen)";
/// The name of the shared `http://` port in clash messages.
pub const HTTP_PORT: &str = "the http:// endpoints' port (http_endpoints.listen)";
/// The admin API's listener, named likewise.
pub const ADMIN_API: &str = "the admin API (admin.listen)";

/// How long a public connection waits for an idle data channel.
pub const CHANNEL_WAIT: Duration = Duration::from_secs(5);

/// A cloud endpoint as the workers see it.
pub struct LiveEndpoint {
    /// Stable id (`ep_…` from the admin API, `static:…` from edge.yml).
    pub id: String,
    /// URL as configured.
    pub url: String,
    /// Bound address (the shared TLS port for `tls://` endpoints).
    pub addr: SocketAddr,
    /// Hot-swappable policy.
    pub policy: PolicyHandle,
    /// Idle timeout of forwarded connections.
    pub idle_timeout: Option<Duration>,
    /// How long an upstream may take to start its response (HTTP endpoints; then 504).
    pub response_timeout: Duration,
    /// TLS the edge terminates for this endpoint (`terminate_tls`), if any.
    pub terminate_tls: Option<Arc<rustls::ServerConfig>>,
    /// Set when the endpoint is removed: its accept loops end.
    pub closed: AtomicBool,
    /// Its counters (per worker; summed on scrape; `stats.active` counts its open
    /// connections).
    pub stats: stats::EndpointStats,
    /// Its connection limits.
    pub limits: conn_limits::ConnLimits,
}

impl LiveEndpoint {
    /// Whether it is an `https://` endpoint: on the shared TLS port, it serves HTTP
    /// requests rather than streams (`http://` endpoints have a port of their own).
    pub fn is_https(&self) -> bool {
        self.url.starts_with("https://")
    }
}

/// State shared by every worker and the control plane.
pub struct EdgeShared {
    /// This edge's name (`edge_id`): in logs, metrics, events and the API.
    pub edge_id: String,
    /// Sessions and bindings.
    pub registry: Registry,
    /// Which authtokens are valid, and whose they are.
    pub auth: ArcSwap<AuthTable>,
    /// Public endpoints (changeable at run time).
    pub endpoints: Endpoints,
    /// Counters.
    pub stats: EdgeStats,
    /// How plain-TCP streams move bytes.
    pub pump: crate::io::Pump,
    /// Public connections being forwarded.
    pub in_flight: crate::drain::InFlight,
    /// Set once a drain started: accept loops end instead of retrying.
    pub draining: AtomicBool,
    /// Set when a fleet edge starts leaving (SIGTERM): not ready any more, its agents
    /// told to move their sessions to other edges; it still serves meanwhile.
    pub leaving: AtomicBool,
    /// Session happenings for the audit log.
    pub audit: AuditSink,
    /// Whether plain-TCP data channels are accepted (`agents.plain_channels`).
    pub plain_channels: bool,
    /// Limits of the agent port before authentication.
    pub preauth: preauth::PreAuthGate,
    /// The fleet's other edges: their routes and the key of peer links (empty for a
    /// lone edge).
    pub peers: Arc<crate::fleet::Peers>,
    /// The agent port's TLS (replaced by a config reload: new handshakes use it).
    agent_tls: ArcSwap<rustls::ServerConfig>,
}

/// What this edge announces to a fleet: the URLs it holds sessions for, and those
/// sessions.
impl crate::fleet::RouteSource for EdgeShared {
    fn generation(&self) -> u64 {
        self.registry.generation()
    }

    fn announcement(&self) -> crate::fleet::Announcement {
        let (urls, loads) = self.registry.bound_urls().into_iter().unzip();
        // Each session's URLs from one pass over the bindings (sorted by URL).
        let mut urls_of: std::collections::HashMap<u64, Vec<String>> = Default::default();
        for (url, session, _, _) in self.registry.pool_members() {
            urls_of.entry(session).or_default().push(url);
        }
        let sessions = self
            .registry
            .sessions()
            .into_iter()
            .take(crate::fleet::MAX_ANNOUNCED_SESSIONS)
            .map(|s| crate::fleet::SessionSummary {
                id: s.id,
                user_id: s.identity.user_id.clone(),
                user: s.identity.user_name.clone(),
                token_id: s.identity.token_id.clone(),
                peer: s.peer.to_string(),
                agent_version: s.agent_version.clone(),
                metadata: crate::wire::char_prefix(
                    &s.metadata,
                    crate::fleet::ANNOUNCED_METADATA_BYTES,
                )
                .to_owned(),
                started_at: s.started_at,
                endpoints: urls_of.remove(&s.id).unwrap_or_default(),
            })
            .collect();
        crate::fleet::Announcement {
            urls,
            loads,
            sessions,
        }
    }
}

impl EdgeShared {
    /// The agent port's TLS configuration in force.
    pub fn agent_tls(&self) -> Arc<rustls::ServerConfig> {
        self.agent_tls.load_full()
    }

    /// Replaces the agent port's certificate and key (a reload): connections after
    /// this handshake with the new one; sessions already up keep theirs.
    pub fn replace_agent_tls(&self, config: Arc<rustls::ServerConfig>) {
        self.agent_tls.store(config);
    }
}

/// A running edge.
pub struct EdgeHandle {
    /// Where agents connect.
    pub agent_addr: SocketAddr,
    /// The shared port of `tls://` endpoints.
    pub tls_addr: Option<SocketAddr>,
    /// The shared port of `http://` endpoints.
    pub http_addr: Option<SocketAddr>,
    /// Shared state (sessions, endpoints, counters).
    pub shared: Arc<EdgeShared>,
    /// Worker threads.
    pub workers: Vec<JoinHandle<std::io::Result<()>>>,
    tls_fds: Vec<std::os::fd::RawFd>,
}

impl EdgeHandle {
    /// Starts leaving a fleet: `/readyz` answers 503 from now on, and every agent
    /// session is told to move to another edge (a Drain frame) within `grace`, while
    /// this edge keeps serving (its own sessions while they last, other edges' over peer
    /// links). Returns how many sessions were told.
    pub fn leave_fleet(&self, grace: std::time::Duration) -> usize {
        self.shared
            .leaving
            .store(true, std::sync::atomic::Ordering::Release);
        let grace_ms = grace.as_millis().min(u128::from(u32::MAX)) as u32;
        let sessions = self.shared.registry.sessions();
        for session in &sessions {
            session.send_control(crate::wire::Frame::Drain { grace_ms });
        }
        tracing::info!(
            sessions = sessions.len(),
            ?grace,
            "leaving the fleet: agents told to move their sessions to other edges"
        );
        sessions.len()
    }

    /// Starts a drain: every public listener stops accepting (pending accepts end),
    /// established connections carry on. Agents stay connected.
    pub fn stop_accepting(&self) {
        self.shared
            .draining
            .store(true, std::sync::atomic::Ordering::Release);
        self.shared.endpoints.stop_accepting();
        for fd in &self.tls_fds {
            sockets::shutdown_listener(*fd);
        }
        tracing::info!(
            in_flight = self.shared.in_flight.get(),
            "draining: public listeners closed"
        );
    }
}

/// `tls://` endpoints by host name (exact names before wildcards).
pub type SniRoutes = crate::sni::SniRouter<Arc<LiveEndpoint>>;

/// The auth table entries of service users declared in edge.yml: user id
/// `static:NAME`, token ids `static:NAME:N`, the user's bind rules.
pub fn static_identities(users: &[ServiceUser]) -> Vec<(crate::token::TokenHash, Arc<Identity>)> {
    users
        .iter()
        .flat_map(|u| {
            u.token_hashes.iter().enumerate().map(|(i, hash)| {
                let identity = Identity {
                    user_id: format!("static:{}", u.name),
                    user_name: u.name.clone(),
                    token_id: format!("static:{}:{i}", u.name),
                    acl: u.acl.clone(),
                };
                (*hash, Arc::new(identity))
            })
        })
        .collect()
}

/// The ownerships declared in edge.yml (`service_users[].owns`).
pub fn static_ownership(users: &[ServiceUser]) -> Vec<(String, ownership::Owner)> {
    users
        .iter()
        .flat_map(|u| {
            u.owns.iter().map(|url| {
                let owner = ownership::Owner {
                    user_id: format!("static:{}", u.name),
                    user_name: u.name.clone(),
                    source: ownership::OwnerSource::Config,
                };
                (url.clone(), owner)
            })
        })
        .collect()
}

/// The ids of endpoints declared in edge.yml, in order: derived from the URL (and,
/// for URLs listed more than once such as `tcp://127.0.0.1:0`, its occurrence), so they
/// stay the same across restarts and reloads.
pub fn static_endpoint_ids<'a>(urls: impl IntoIterator<Item = &'a str>) -> Vec<String> {
    use sha2::Digest;
    let mut seen: Vec<&str> = Vec::new();
    urls.into_iter()
        .map(|url| {
            let occurrence = seen.iter().filter(|u| **u == url).count();
            seen.push(url);
            let digest = sha2::Sha256::digest(format!("{url}#{occurrence}").as_bytes());
            format!("static:{}", hex::encode(&digest[..6]))
        })
        .collect()
}

/// Binds every listener and starts the workers. Session happenings go to `audit`.
pub fn start(settings: EdgeSettings, driver: Driver) -> std::io::Result<EdgeHandle> {
    start_with_audit(settings, driver, AuditSink::discard())
}

/// [`start`], with session happenings sent to `audit`.
pub fn start_with_audit(
    settings: EdgeSettings,
    driver: Driver,
    audit: AuditSink,
) -> std::io::Result<EdgeHandle> {
    let workers = settings.workers;
    crate::limits::raise_and_log("edge");
    let agent_listeners = sockets::reuseport_listeners(settings.agent_listen, workers)
        .map_err(|e| naming("agents.listen", e))?;
    let agent_addr = agent_listeners[0].local_addr()?;
    tracing::info!(kind = "agents", %agent_addr, "listening");
    let mut tls_listeners: Vec<Option<TcpListener>> = (0..workers).map(|_| None).collect();
    let mut tls_fds = Vec::new();
    let mut tls_addr = None;
    if let Some(listen) = settings.tls_listen {
        let listeners = sockets::reuseport_listeners(listen, workers)
            .map_err(|e| naming("tls_endpoints.listen", e))?;
        tls_fds.extend(listeners.iter().map(std::os::fd::AsRawFd::as_raw_fd));
        let addr = listeners[0].local_addr()?;
        tracing::info!(kind = "tls-endpoints", %addr, "listening");
        tls_addr = Some(addr);
        for (slot, l) in tls_listeners.iter_mut().zip(listeners) {
            *slot = Some(l);
        }
    }
    let mut http_listeners: Vec<Option<TcpListener>> = (0..workers).map(|_| None).collect();
    let mut http_addr = None;
    if let Some(listen) = settings.http_listen {
        let listeners = sockets::reuseport_listeners(listen, workers)
            .map_err(|e| naming("http_endpoints.listen", e))?;
        tls_fds.extend(listeners.iter().map(std::os::fd::AsRawFd::as_raw_fd));
        let addr = listeners[0].local_addr()?;
        tracing::info!(kind = "http-endpoints", %addr, "listening");
        http_addr = Some(addr);
        for (slot, l) in http_listeners.iter_mut().zip(listeners) {
            *slot = Some(l);
        }
    }
    install_geo(&settings);
    let (senders, receivers): (Vec<_>, Vec<_>) =
        (0..workers).map(|_| async_channel::unbounded()).unzip();
    let shared = Arc::new(EdgeShared {
        edge_id: settings.edge_id.clone(),
        registry: Registry::default(),
        auth: ArcSwap::from_pointee(AuthTable::new(static_identities(&settings.users))),
        endpoints: Endpoints::new(
            senders,
            tls_addr,
            http_addr,
            settings.default_max_connections_per_ip,
            settings.public_address,
        ),
        stats: EdgeStats::default(),
        pump: settings.pump,
        in_flight: Default::default(),
        draining: Default::default(),
        leaving: Default::default(),
        audit,
        plain_channels: settings.plain_channels,
        preauth: preauth::PreAuthGate::new(settings.preauth),
        agent_tls: ArcSwap::new(settings.agent_tls),
        peers: Default::default(),
    });
    crate::tls::log_expiry("agents.tls.cert", settings.agent_cert_not_after);
    shared
        .registry
        .set_ownership(static_ownership(&settings.users).into_iter().collect());
    shared
        .endpoints
        .add_own_listener(Listener::new(AGENT_PORT, agent_addr));
    if let Some(addr) = tls_addr {
        shared
            .endpoints
            .add_own_listener(Listener::new(TLS_PORT, addr));
    }
    if let Some(addr) = http_addr {
        shared
            .endpoints
            .add_own_listener(Listener::new(HTTP_PORT, addr));
    }
    // Bound later (by the caller, after the control plane starts); a port 0 there is
    // recorded once bound.
    if let Some(admin) = settings.admin.as_ref().filter(|a| a.listen.port() != 0) {
        shared
            .endpoints
            .add_own_listener(Listener::new(ADMIN_API, admin.listen));
    }
    let ids = static_endpoint_ids(settings.endpoints.iter().map(|e| e.url.as_str()));
    for (ep, id) in settings.endpoints.into_iter().zip(ids) {
        let url = ep.url.clone();
        shared
            .endpoints
            .add(EndpointSpec {
                id,
                url: ep.url,
                addr: ep.addr,
                policy: ep.policy,
                idle_timeout: ep.idle_timeout,
                response_timeout: ep.response_timeout,
                terminate_tls: ep.terminate_tls,
                limits: ep.limits,
            })
            .map_err(|e| {
                let kind = match &e {
                    endpoints::AddError::Bind { error, .. } => error.kind(),
                    endpoints::AddError::InUse { .. } => std::io::ErrorKind::AddrInUse,
                    _ => std::io::ErrorKind::Other,
                };
                std::io::Error::new(kind, format!("{url}: {e}"))
            })?;
    }
    crate::datapath::log_edge(shared.pump);
    let per_worker: Vec<_> = agent_listeners
        .into_iter()
        .zip(tls_listeners)
        .zip(http_listeners)
        .zip(receivers)
        .map(|(((agent, tls), http), commands)| Some((agent, [tls, http], commands)))
        .collect();
    let slots = Arc::new(Mutex::new(per_worker));
    let worker_shared = shared.clone();
    let threads = runtime::spawn_workers("edge", workers, driver, move |i| {
        let shared = worker_shared.clone();
        let mine = slots.lock().unwrap_or_else(|p| p.into_inner())[i].take();
        async move {
            if let Some((agent, shared_ports, commands)) = mine {
                run_worker(i, agent, shared_ports, commands, shared).await;
            }
        }
    })?;
    Ok(EdgeHandle {
        agent_addr,
        tls_addr,
        http_addr,
        shared,
        workers: threads,
        tls_fds,
    })
}

/// `e` with the config key of the listener it is about in front.
fn naming(key: &str, e: std::io::Error) -> std::io::Error {
    std::io::Error::new(e.kind(), format!("{key}: {e}"))
}

async fn run_worker(
    index: usize,
    agent: TcpListener,
    [tls, http]: [Option<TcpListener>; 2],
    commands: async_channel::Receiver<WorkerCommand>,
    shared: Arc<EdgeShared>,
) {
    if let Some(listener) = http {
        match monoio::net::TcpListener::from_std(listener) {
            Ok(l) => {
                let sh = shared.clone();
                let handle = move |s, p| http::serve(s, p, sh.clone());
                let name = "http-endpoints".to_string();
                monoio::spawn(public::accept_loop(
                    l,
                    name,
                    shared.clone(),
                    || false,
                    handle,
                ));
            }
            Err(e) => tracing::error!(worker = index, error = %e, "cannot adopt http listener"),
        }
    }
    if let Some(listener) = tls {
        match monoio::net::TcpListener::from_std(listener) {
            Ok(l) => {
                let sh = shared.clone();
                let handle = move |s, p| tls_front::serve(s, p, sh.clone());
                let name = "tls-endpoints".to_string();
                monoio::spawn(public::accept_loop(
                    l,
                    name,
                    shared.clone(),
                    || false,
                    handle,
                ));
            }
            Err(e) => tracing::error!(worker = index, error = %e, "cannot adopt tls listener"),
        }
    }
    let sh = shared.clone();
    monoio::spawn(async move {
        while let Ok(command) = commands.recv().await {
            match command {
                WorkerCommand::Serve(endpoint, listener) => {
                    serve_endpoint(index, endpoint, listener, sh.clone())
                }
            }
        }
    });
    match monoio::net::TcpListener::from_std(agent) {
        Ok(l) => agent_port::accept_loop(l, shared).await,
        Err(e) => tracing::error!(worker = index, error = %e, "cannot adopt agent listener"),
    }
}

fn serve_endpoint(
    index: usize,
    endpoint: Arc<LiveEndpoint>,
    listener: TcpListener,
    shared: Arc<EdgeShared>,
) {
    match monoio::net::TcpListener::from_std(listener) {
        Ok(l) => {
            let sh = shared.clone();
            let name = endpoint.url.clone();
            let ep = endpoint.clone();
            let closed = move || ep.closed.load(std::sync::atomic::Ordering::Acquire);
            let handle =
                move |s, p| pipeline::forward(s, p, endpoint.clone(), sh.clone(), Vec::new());
            monoio::spawn(public::accept_loop(l, name, shared, closed, handle));
        }
        Err(e) => tracing::error!(worker = index, error = %e, "cannot adopt public listener"),
    }
}

/// How often a failing accept (e.g. EMFILE: out of file descriptors) is logged.
pub const ACCEPT_ERROR_LOG_INTERVAL: Duration = Duration::from_secs(5);

/// Sleeps a little after an accept error (e.g. EMFILE) so the loop does not spin, and
/// logs at most once per [`ACCEPT_ERROR_LOG_INTERVAL`] (with how many failed since).
/// Connections already established keep being served; accepting resumes by itself once
/// descriptors are free again.
pub(crate) async fn accept_backoff(what: &str, e: &std::io::Error) {
    static THROTTLE: crate::logging::Throttle =
        crate::logging::Throttle::per_window(1, ACCEPT_ERROR_LOG_INTERVAL.as_millis() as u64);
    if let Some(suppressed) = THROTTLE.admit() {
        let failed = suppressed + 1;
        tracing::warn!(listener = what, error = %e, failed, "accept failed; retrying every 50 ms");
    }
    monoio::time::sleep(Duration::from_millis(50)).await;
}

/// Makes the file's country database (or none) the one policies read.
pub fn install_geo(settings: &EdgeSettings) {
    if let Some(db) = &settings.geo {
        tracing::info!(database = db.describe(), "country database loaded");
    }
    crate::geo::install(settings.geo.clone());
}
