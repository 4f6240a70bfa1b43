//! The cloud endpoints the edge serves right now, changeable while it runs.
//!
//! [`Endpoints::add`] binds a TCP endpoint's SO_REUSEPORT listeners on the calling
//! thread (a busy port is an error at once) and hands one to each worker through its
//! command queue; a `tls://` endpoint joins the SNI routes of the shared TLS port, an
//! `http://` endpoint the `Host` routes of the shared HTTP port. A
//! TCP endpoint never shares a port: not with another endpoint, not with the edge's
//! own listeners (agent port, TLS port, admin API: [`Endpoints::add_own_listener`]),
//! which are checked by name first ([`AddError::InUse`]), nor with anybody else's,
//! which the bind refuses (`io::sockets`).
//! [`Endpoints::remove`] shuts the listeners down (pending accepts end, the port is
//! released) or drops the SNI route; connections already forwarded keep their
//! `Arc<LiveEndpoint>` and finish undisturbed. Policy changes need none of this: each
//! endpoint's [`PolicyHandle`] is swapped in place.

use std::{
    collections::HashMap,
    net::{SocketAddr, TcpListener},
    os::fd::{AsRawFd, OwnedFd},
    sync::{atomic::Ordering, Arc, Mutex},
};

use arc_swap::ArcSwap;
use sluice_policy::{CompiledPolicy, PolicyHandle};

use super::{conn_limits::LimitSettings, LiveEndpoint, SniRoutes};
use crate::{
    config::edge::EndpointAddr,
    io::sockets,
    listeners::{self, Listener},
};

/// Work handed to a data-path worker.
pub enum WorkerCommand {
    /// Accept connections for this endpoint on this (worker's own) listener.
    Serve(Arc<LiveEndpoint>, TcpListener),
}

/// What a new endpoint is.
pub struct EndpointSpec {
    /// Stable id (`ep_…`, or `static:…` for endpoints from edge.yml).
    pub id: String,
    /// URL as configured.
    pub url: String,
    /// Where connections arrive.
    pub addr: EndpointAddr,
    /// Its compiled traffic policy.
    pub policy: CompiledPolicy,
    /// Idle timeout of forwarded connections.
    pub idle_timeout: Option<std::time::Duration>,
    /// How long an upstream may take to start its response (HTTP endpoints).
    pub response_timeout: std::time::Duration,
    /// TLS the edge terminates (`terminate_tls`), if any.
    pub terminate_tls: Option<Arc<rustls::ServerConfig>>,
    /// Connection limits (a missing per-IP limit takes the edge-wide default).
    pub limits: LimitSettings,
}

struct Slot {
    endpoint: Arc<LiveEndpoint>,
    /// Duplicates of the workers' listeners, to shut them down (never reused numbers).
    listeners: Vec<OwnedFd>,
    /// The shared port and host name it is routed by (`tls://`, `https://`, `http://`).
    routed: Option<(SharedPort, String)>,
}

/// A port endpoints share, routed by host name.
#[derive(Clone, Copy, PartialEq, Eq)]
enum SharedPort {
    /// `tls_endpoints.listen`, by SNI.
    Tls,
    /// `http_endpoints.listen`, by `Host`.
    Http,
}

/// Live endpoints by id, the SNI routes, and the workers' command queues.
pub struct Endpoints {
    workers: Vec<async_channel::Sender<WorkerCommand>>,
    slots: Mutex<HashMap<String, Slot>>,
    sni: ArcSwap<SniRoutes>,
    tls_addr: Option<SocketAddr>,
    /// `http://` endpoints by `Host` (the same exact-then-wildcard matching as SNI).
    hosts: ArcSwap<SniRoutes>,
    http_addr: Option<SocketAddr>,
    default_max_per_ip: Option<u32>,
    /// `public_address`: the IP every `tcp://` endpoint binds, whatever its URL's host.
    bind_ip: Option<std::net::IpAddr>,
    /// The edge's own listeners (agent port, TLS port, admin API): no endpoint there.
    own: Mutex<Vec<Listener>>,
}

/// Why an endpoint could not be added.
#[derive(Debug, thiserror::Error)]
pub enum AddError {
    /// Another endpoint has this id or host name.
    #[error("{0}")]
    Conflict(String),
    /// One of the edge's own listeners or another endpoint holds the address.
    #[error("{addr} is in use by {holder}")]
    InUse {
        /// The address asked for.
        addr: SocketAddr,
        /// What holds it (`the agent port (agents.listen …)`, `endpoint ep_… (tcp://…)`).
        holder: String,
    },
    /// The endpoint is invalid here (e.g. tls:// without a TLS port).
    #[error("{0}")]
    Invalid(String),
    /// Binding the listener failed: [`std::io::ErrorKind::AddrInUse`] when another
    /// process holds the address.
    #[error("{error}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The error (its message names the address).
        error: std::io::Error,
    },
}

impl Endpoints {
    /// A manager feeding these worker queues; `tls_addr` is the shared TLS port,
    /// `http_addr` the shared HTTP port.
    /// `default_max_per_ip` applies to endpoints that set no per-IP limit; `bind_ip`
    /// (the edge's `public_address`) replaces the host of every `tcp://` URL.
    pub fn new(
        workers: Vec<async_channel::Sender<WorkerCommand>>,
        tls_addr: Option<SocketAddr>,
        http_addr: Option<SocketAddr>,
        default_max_per_ip: Option<u32>,
        bind_ip: Option<std::net::IpAddr>,
    ) -> Self {
        Self {
            workers,
            slots: Mutex::new(HashMap::new()),
            sni: ArcSwap::from_pointee(SniRoutes::new()),
            tls_addr,
            hosts: ArcSwap::from_pointee(SniRoutes::new()),
            http_addr,
            default_max_per_ip,
            bind_ip,
            own: Mutex::new(Vec::new()),
        }
    }

    /// Records a listener of the edge itself (bound, so with its real port): no
    /// endpoint may share its port from now on.
    pub fn add_own_listener(&self, listener: Listener) {
        let mut own = self.own.lock().unwrap_or_else(|p| p.into_inner());
        if !own.contains(&listener) {
            own.push(listener);
        }
    }

    /// What already listens on a port `addr` would share: one of the edge's own
    /// listeners or a TCP endpoint, described for people; `None` when nothing does
    /// (here: another process is the bind's to find).
    pub fn holder(&self, addr: SocketAddr) -> Option<String> {
        self.own_holder(addr)
            .or_else(|| Self::endpoint_holder(&self.lock(), addr))
    }

    fn own_holder(&self, addr: SocketAddr) -> Option<String> {
        let own = self.own.lock().unwrap_or_else(|p| p.into_inner());
        own.iter()
            .find(|l| listeners::shares_port(l.addr, addr))
            .map(|l| format!("{} on {}", l.name, l.addr))
    }

    fn endpoint_holder(slots: &HashMap<String, Slot>, addr: SocketAddr) -> Option<String> {
        slots
            .values()
            .find(|s| s.routed.is_none() && listeners::shares_port(s.endpoint.addr, addr))
            .map(|s| format!("endpoint {} ({})", s.endpoint.id, s.endpoint.url))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Slot>> {
        // Every update below is a single insert/remove: a panic cannot leave it torn.
        self.slots.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Starts serving an endpoint; returns it with its bound address.
    pub fn add(&self, mut spec: EndpointSpec) -> Result<Arc<LiveEndpoint>, AddError> {
        if spec.limits.max_connections_per_ip.is_none() {
            spec.limits.max_connections_per_ip = self.default_max_per_ip;
        }
        let mut slots = self.lock();
        if slots.contains_key(&spec.id) {
            return Err(AddError::Conflict(format!(
                "endpoint id {} exists",
                spec.id
            )));
        }
        if let EndpointAddr::Https(host) = spec.addr {
            let Some(config) = spec.terminate_tls.take() else {
                return Err(AddError::Invalid(format!(
                    "{}: https:// endpoints need terminate_tls (the certificate the edge presents)",
                    spec.url
                )));
            };
            let mut config = rustls::ServerConfig::clone(&config);
            config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
            spec.terminate_tls = Some(Arc::new(config));
            spec.addr = EndpointAddr::Tls(host);
        }
        match spec.addr.clone() {
            EndpointAddr::Https(_) => unreachable!("routed by SNI like tls:// just above"),
            EndpointAddr::Tls(host) => {
                let addr = self.tls_addr.ok_or_else(|| {
                    AddError::Invalid(format!(
                        "{}: tls:// and https:// endpoints need `tls_endpoints: {{ listen: ADDR:PORT }}` in edge.yml",
                        spec.url
                    ))
                })?;
                self.add_routed(&mut slots, spec, SharedPort::Tls, host, addr)
            }
            EndpointAddr::Http(host) => {
                let addr = self.http_addr.ok_or_else(|| {
                    AddError::Invalid(format!(
                        "{}: http:// endpoints need `http_endpoints: {{ listen: ADDR:PORT }}` in edge.yml",
                        spec.url
                    ))
                })?;
                if spec.terminate_tls.is_some() {
                    return Err(AddError::Invalid(format!(
                        "{}: terminate_tls is for tcp:// and tls:// endpoints",
                        spec.url
                    )));
                }
                self.add_routed(&mut slots, spec, SharedPort::Http, host, addr)
            }
            EndpointAddr::Tcp(listen) => {
                let listen = self
                    .bind_ip
                    .map_or(listen, |ip| SocketAddr::new(ip, listen.port()));
                let holder = self
                    .own_holder(listen)
                    .or_else(|| Self::endpoint_holder(&slots, listen));
                if let Some(holder) = holder {
                    return Err(AddError::InUse {
                        addr: listen,
                        holder,
                    });
                }
                let bind_error = |error| AddError::Bind {
                    addr: listen,
                    error,
                };
                let listeners =
                    sockets::reuseport_listeners(listen, self.workers.len()).map_err(bind_error)?;
                let addr = listeners[0]
                    .local_addr()
                    .map_err(|e| bind_error(sockets::listen_error(listen, e)))?;
                let dups = listeners
                    .iter()
                    .map(|l| l.try_clone().map(OwnedFd::from))
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(|e| bind_error(sockets::listen_error(listen, e)))?;
                let live = Arc::new(LiveEndpoint::new(spec, addr));
                for (worker, listener) in self.workers.iter().zip(listeners) {
                    let _ = worker.try_send(WorkerCommand::Serve(live.clone(), listener));
                }
                tracing::info!(kind = "endpoint", id = %live.id, url = %live.url, %addr, "listening");
                slots.insert(
                    live.id.clone(),
                    Slot {
                        endpoint: live.clone(),
                        listeners: dups,
                        routed: None,
                    },
                );
                Ok(live)
            }
        }
    }

    /// The host routes of a shared port.
    fn routes(&self, port: SharedPort) -> &ArcSwap<SniRoutes> {
        match port {
            SharedPort::Tls => &self.sni,
            SharedPort::Http => &self.hosts,
        }
    }

    /// An endpoint on shared `port` (bound at `addr`), routed by `host`.
    fn add_routed(
        &self,
        slots: &mut HashMap<String, Slot>,
        spec: EndpointSpec,
        port: SharedPort,
        host: String,
        addr: SocketAddr,
    ) -> Result<Arc<LiveEndpoint>, AddError> {
        let live = Arc::new(LiveEndpoint::new(spec, addr));
        let mut routes = SniRoutes::clone(&self.routes(port).load());
        match routes.insert(&host, live.clone()) {
            Err(e) => return Err(AddError::Invalid(format!("{}: {e}", live.url))),
            Ok(Some(_)) => {
                return Err(AddError::Conflict(format!(
                    "{}: host name already routed",
                    live.url
                )))
            }
            Ok(None) => {}
        }
        self.routes(port).store(Arc::new(routes));
        let by = match port {
            SharedPort::Tls => "serving (SNI)",
            SharedPort::Http => "serving (Host)",
        };
        tracing::info!(kind = "endpoint", id = %live.id, url = %live.url, %addr, "{by}");
        slots.insert(
            live.id.clone(),
            Slot {
                endpoint: live.clone(),
                listeners: Vec::new(),
                routed: Some((port, host)),
            },
        );
        Ok(live)
    }

    /// Stops accepting for an endpoint; its established connections finish.
    pub fn remove(&self, id: &str) -> Option<Arc<LiveEndpoint>> {
        let slot = self.lock().remove(id)?;
        slot.endpoint.closed.store(true, Ordering::Release);
        for fd in &slot.listeners {
            sockets::shutdown_listener(fd.as_raw_fd());
        }
        if let Some((port, _)) = &slot.routed {
            let mut routes = SniRoutes::new();
            for s in self.lock().values() {
                if let Some((_, host)) = s.routed.as_ref().filter(|(p, _)| p == port) {
                    let _ = routes.insert(host, s.endpoint.clone());
                }
            }
            self.routes(*port).store(Arc::new(routes));
        }
        tracing::info!(id, url = %slot.endpoint.url, in_flight = slot.endpoint.in_flight(), "endpoint removed; established connections drain");
        Some(slot.endpoint)
    }

    /// Swaps an endpoint's traffic policy; established connections are untouched.
    pub fn set_policy(&self, id: &str, policy: CompiledPolicy) -> bool {
        match self.get(id) {
            Some(ep) => {
                let report = ep.policy.store(policy);
                tracing::info!(id, url = %ep.url, generation = report.generation, "traffic policy swapped");
                true
            }
            None => false,
        }
    }

    /// One endpoint.
    pub fn get(&self, id: &str) -> Option<Arc<LiveEndpoint>> {
        self.lock().get(id).map(|s| s.endpoint.clone())
    }

    /// Every endpoint, in no particular order.
    pub fn list(&self) -> Vec<Arc<LiveEndpoint>> {
        self.lock().values().map(|s| s.endpoint.clone()).collect()
    }

    /// The endpoint for a TLS server name (exact before wildcard). Lock-free.
    pub fn route_sni(&self, name: &str) -> Option<Arc<LiveEndpoint>> {
        self.sni.load().route(name).cloned()
    }

    /// The endpoint for an HTTP `Host` (port removed; exact before wildcard). Lock-free.
    pub fn route_host(&self, host: &str) -> Option<Arc<LiveEndpoint>> {
        self.hosts.load().route(host).cloned()
    }

    /// Closes every TCP endpoint's listeners (drain); returns how many were closed.
    pub fn stop_accepting(&self) -> usize {
        let slots = self.lock();
        for slot in slots.values() {
            for fd in &slot.listeners {
                sockets::shutdown_listener(fd.as_raw_fd());
            }
        }
        slots.len()
    }
}

impl LiveEndpoint {
    /// The endpoint `spec` describes, bound at `addr`.
    pub(super) fn new(spec: EndpointSpec, addr: SocketAddr) -> Self {
        Self {
            id: spec.id,
            url: spec.url,
            addr,
            policy: PolicyHandle::new(spec.policy),
            idle_timeout: spec.idle_timeout,
            response_timeout: spec.response_timeout,
            terminate_tls: spec.terminate_tls,
            closed: Default::default(),
            stats: Default::default(),
            limits: super::conn_limits::ConnLimits::new(spec.limits),
        }
    }

    /// Connections of this endpoint being forwarded now.
    pub fn in_flight(&self) -> usize {
        self.stats.active.get().max(0) as usize
    }
}
