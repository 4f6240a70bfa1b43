//! The edge: accepts agents on the agent port, keeps their sessions and parked data
//! channels, and forwards each public TCP connection that its endpoint's traffic
//! policy allows into the session bound to the policy's target.
//!
//! [`start`] binds every listener on the calling thread (so a busy port is an error
//! right away), then starts one worker per core; each worker owns one SO_REUSEPORT
//! listener per address and serves both the agent port and the public endpoints.

mod agent_port;
mod control;
pub mod pool;
mod public;
pub mod registry;
pub mod stats;
mod terminate;
mod tls_port;

use std::{
    net::{SocketAddr, TcpListener},
    sync::{Arc, Mutex},
    thread::JoinHandle,
    time::Duration,
};

use sluice_policy::PolicyHandle;

use crate::{
    config::edge::{EdgeSettings, EndpointAddr, ServiceUser},
    io::sockets,
    runtime::{self, Driver},
};
use registry::Registry;
use stats::EdgeStats;

/// How long an agent connection may take to say who it is (TLS handshake + first frame).
pub const AGENT_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a public connection waits for an idle data channel.
pub const CHANNEL_WAIT: Duration = Duration::from_secs(5);

/// A TCP cloud endpoint as the workers see it.
pub struct LiveEndpoint {
    /// URL as configured.
    pub url: String,
    /// Bound address.
    pub addr: SocketAddr,
    /// Hot-swappable policy.
    pub policy: PolicyHandle,
    /// Idle timeout of forwarded connections.
    pub idle_timeout: Option<Duration>,
    /// TLS terminated here (`terminate_tls`); `None` passes bytes through.
    pub terminate_tls: Option<Arc<rustls::ServerConfig>>,
}

/// State shared by every worker.
pub struct EdgeShared {
    /// Sessions and bindings.
    pub registry: Registry,
    /// Who may connect.
    pub users: Vec<ServiceUser>,
    /// Public endpoints.
    pub endpoints: Vec<Arc<LiveEndpoint>>,
    /// Counters.
    pub stats: EdgeStats,
    /// How plain-TCP streams move bytes.
    pub pump: crate::io::Pump,
    /// Public connections being forwarded.
    pub in_flight: crate::drain::InFlight,
    /// Set once a drain started: accept loops end instead of retrying.
    pub draining: std::sync::atomic::AtomicBool,
    agent_tls: Arc<rustls::ServerConfig>,
}

/// A running edge.
pub struct EdgeHandle {
    /// Where agents connect.
    pub agent_addr: SocketAddr,
    /// Shared state (sessions, endpoints, counters).
    pub shared: Arc<EdgeShared>,
    /// Worker threads.
    pub workers: Vec<JoinHandle<std::io::Result<()>>>,
    public_fds: Vec<std::os::fd::RawFd>,
}

impl EdgeHandle {
    /// Starts a drain: every public listener stops accepting (pending accepts end),
    /// established connections carry on. Agents stay connected.
    pub fn stop_accepting(&self) {
        self.shared
            .draining
            .store(true, std::sync::atomic::Ordering::Release);
        for fd in &self.public_fds {
            sockets::shutdown_listener(*fd);
        }
        tracing::info!(
            in_flight = self.shared.in_flight.get(),
            "draining: public listeners closed"
        );
    }
}

struct WorkerListeners {
    agent: TcpListener,
    public: Vec<(Arc<LiveEndpoint>, TcpListener)>,
    tls: Option<TcpListener>,
}

/// `tls://` endpoints by host name (exact names before wildcards).
pub type SniRoutes = crate::sni::SniRouter<Arc<LiveEndpoint>>;

/// Binds every listener and starts the workers.
pub fn start(settings: EdgeSettings, driver: Driver) -> std::io::Result<EdgeHandle> {
    let workers = settings.workers;
    crate::limits::raise_and_log("edge");
    let agent_listeners = sockets::reuseport_listeners(settings.agent_listen, workers)?;
    let agent_addr = agent_listeners[0].local_addr()?;
    tracing::info!(kind = "agents", %agent_addr, "listening");
    let mut per_worker: Vec<WorkerListeners> = agent_listeners
        .into_iter()
        .map(|agent| WorkerListeners {
            agent,
            public: Vec::new(),
            tls: None,
        })
        .collect();
    let mut endpoints = Vec::new();
    let mut public_fds = Vec::new();
    let mut sni_routes = SniRoutes::new();
    let mut tls_addr = None;
    if let Some(listen) = settings.tls_listen {
        let listeners = sockets::reuseport_listeners(listen, workers)?;
        public_fds.extend(listeners.iter().map(std::os::fd::AsRawFd::as_raw_fd));
        let addr = listeners[0].local_addr()?;
        tracing::info!(kind = "tls-endpoints", %addr, "listening");
        tls_addr = Some(addr);
        for (w, l) in per_worker.iter_mut().zip(listeners) {
            w.tls = Some(l);
        }
    }
    for ep in settings.endpoints {
        let listen = match ep.addr {
            EndpointAddr::Tcp(listen) => listen,
            EndpointAddr::Tls(host) => {
                let live = Arc::new(LiveEndpoint {
                    url: ep.url,
                    addr: tls_addr.expect("validated: tls endpoints need tls_endpoints.listen"),
                    policy: PolicyHandle::new(ep.policy),
                    idle_timeout: ep.idle_timeout,
                    terminate_tls: ep.terminate_tls,
                });
                sni_routes
                    .insert(&host, live.clone())
                    .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
                endpoints.push(live);
                continue;
            }
        };
        let listeners = sockets::reuseport_listeners(listen, workers)?;
        public_fds.extend(listeners.iter().map(std::os::fd::AsRawFd::as_raw_fd));
        let addr = listeners[0].local_addr()?;
        tracing::info!(kind = "endpoint", url = %ep.url, %addr, "listening");
        let live = Arc::new(LiveEndpoint {
            url: ep.url,
            addr,
            policy: PolicyHandle::new(ep.policy),
            idle_timeout: ep.idle_timeout,
            terminate_tls: ep.terminate_tls,
        });
        for (w, l) in per_worker.iter_mut().zip(listeners) {
            w.public.push((live.clone(), l));
        }
        endpoints.push(live);
    }
    let shared = Arc::new(EdgeShared {
        registry: Registry::default(),
        users: settings.users,
        endpoints,
        stats: EdgeStats::default(),
        pump: settings.pump,
        in_flight: Default::default(),
        draining: Default::default(),
        agent_tls: settings.agent_tls,
    });
    crate::datapath::log_edge(shared.pump);
    let slots: Arc<Mutex<Vec<Option<WorkerListeners>>>> =
        Arc::new(Mutex::new(per_worker.into_iter().map(Some).collect()));
    let worker_shared = shared.clone();
    let sni_routes = Arc::new(sni_routes);
    let threads = runtime::spawn_workers("edge", workers, driver, move |i| {
        let shared = worker_shared.clone();
        let routes = sni_routes.clone();
        let mine = slots.lock().unwrap_or_else(|p| p.into_inner())[i].take();
        async move {
            if let Some(listeners) = mine {
                run_worker(i, listeners, routes, shared).await;
            }
        }
    })?;
    Ok(EdgeHandle {
        agent_addr,
        shared,
        workers: threads,
        public_fds,
    })
}

async fn run_worker(
    index: usize,
    listeners: WorkerListeners,
    routes: Arc<SniRoutes>,
    shared: Arc<EdgeShared>,
) {
    if let Some(listener) = listeners.tls {
        match monoio::net::TcpListener::from_std(listener) {
            Ok(l) => {
                let sh = shared.clone();
                let handle = move |s, p| tls_port::route(s, p, routes.clone(), sh.clone());
                let name = "tls-endpoints".to_string();
                monoio::spawn(public::accept_loop(l, name, shared.clone(), handle));
            }
            Err(e) => tracing::error!(worker = index, error = %e, "cannot adopt tls listener"),
        }
    }
    for (endpoint, listener) in listeners.public {
        match monoio::net::TcpListener::from_std(listener) {
            Ok(l) => {
                let sh = shared.clone();
                let name = endpoint.url.clone();
                let handle =
                    move |s, p| public::forward(s, p, endpoint.clone(), sh.clone(), Vec::new());
                monoio::spawn(public::accept_loop(l, name, shared.clone(), handle));
            }
            Err(e) => tracing::error!(worker = index, error = %e, "cannot adopt public listener"),
        }
    }
    match monoio::net::TcpListener::from_std(listeners.agent) {
        Ok(l) => agent_port::accept_loop(l, shared).await,
        Err(e) => tracing::error!(worker = index, error = %e, "cannot adopt agent listener"),
    }
}

/// Sleeps a little after an accept error (e.g. EMFILE) so the loop does not spin.
pub(crate) async fn accept_backoff(what: &str, e: &std::io::Error) {
    tracing::warn!(listener = what, error = %e, "accept failed");
    monoio::time::sleep(Duration::from_millis(50)).await;
}
