//! sluice-proxy: the edge and the agent of sluice, a thread-per-core io_uring reverse
//! tunnel, and the pieces they share.
//!
//! - [`edge`]: agent port, sessions, public endpoints, forwarding.
//! - [`agent`]: control loop, data channels, upstream connections.
//! - [`wire`]: the agent protocol's frames and codec (no I/O).
//! - [`sni`]: the SNI host name peeked from a TLS ClientHello, and name routing (no I/O).
//! - [`proxy_protocol`]: PROXY protocol v1/v2 headers for upstreams (no I/O).
//! - [`io`]: framed I/O, the splice and copy pumps, socket plumbing.
//! - [`config`]: the YAML files, validated whole, resolved into settings.
//! - [`runtime`]: worker threads and the io_uring/epoll driver choice.
//! - [`tls`], [`token`]: TLS material and authtokens.
//! - [`clock`]: the one clock (monotonic and wall time).
//! - [`limits`]: the open-files limit raised at start.
//! - [`listeners`]: the listeners sluice owns, and which addresses would share a port.
//! - [`demo`]: edge + agent + echo upstream in one process.
//! - [`drain`], [`signals`]: graceful drain on SIGTERM.
//! - [`fleet`]: a fleet's edges reaching each other (routes in etcd, peer link keys).
//! - [`geo`]: the operator's country database, for `conn.geo` in policies.
//! - [`control_plane`], [`state`], [`admin`]: the edge's run-time management — endpoints,
//!   users and tokens, audit events — durable in SQLite, served as a JSON admin API.
//! - [`managed_edge`]: an edge with its control plane, admin API and fleet links.
//! - [`service`]: `sluice service`, the edge or agent as a systemd unit.
#![warn(missing_docs)]

pub mod admin;
pub mod agent;
pub mod certs;
pub mod clock;
pub mod config;
pub mod control_plane;
pub mod datapath;
pub mod demo;
pub mod drain;
pub mod edge;
pub mod fleet;
pub mod geo;
pub mod http_thread;
pub mod io;
pub mod limits;
pub mod listeners;
pub mod logfmt;
pub mod logging;
pub mod managed_edge;
pub mod metrics;
pub mod proxy_protocol;
pub mod runtime;
pub mod service;
pub mod signals;
pub mod sni;
pub mod state;
pub mod tls;
pub mod token;
pub mod wire;
