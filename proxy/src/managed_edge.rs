//! An edge with everything that manages it, as `sluice edge` and `sluice demo` run it:
//! the state store, the control plane (audit writer, config watcher), the admin API
//! and console when `admin` is configured, and the fleet's routes and peer links when
//! the state is shared in etcd.

use std::{net::SocketAddr, path::Path, sync::Arc};

use crate::{
    config::edge::EdgeSettings,
    control_plane::{ControlPlane, StaticEndpoint},
    edge::{self, audit::AuditSink, EdgeHandle},
    runtime::Driver,
};

/// A started edge and what manages it.
pub struct ManagedEdge {
    /// The edge.
    pub edge: EdgeHandle,
    /// Its control plane.
    pub plane: Arc<ControlPlane>,
    /// Where the admin API (and console) listens, if configured.
    pub admin_addr: Option<SocketAddr>,
    /// Whether it is part of a fleet (state in etcd).
    pub in_fleet: bool,
}

/// Starts the edge of `settings`, read from `config` (watched for changes).
pub fn start(settings: EdgeSettings, config: &Path, driver: Driver) -> anyhow::Result<ManagedEdge> {
    let admin = settings.admin.clone();
    let users = settings.users.clone();
    let statics = StaticEndpoint::all(&settings.endpoints);
    let restart_only = crate::control_plane::restart_only(&settings);
    let store = crate::state::open(&settings, admin.is_some())?;
    let public_address = settings.public_address;
    let (audit, audit_rx) = AuditSink::channel();
    let edge = edge::start_with_audit(settings, driver, audit)?;
    let in_fleet = store.fleet_link().is_some();
    if let Some(link) = store.fleet_link() {
        start_fleet(link, &edge, public_address);
    }
    let config_path = std::fs::canonicalize(config).unwrap_or_else(|_| config.to_path_buf());
    let plane = ControlPlane::new(
        store,
        edge.shared.clone(),
        users,
        statics,
        Some(config_path),
        restart_only,
    )?;
    plane.spawn_audit_writer(audit_rx)?;
    plane.spawn_config_watcher()?;
    let mut admin_addr = None;
    if let Some(admin) = admin {
        let addr = crate::admin::start(admin, plane.clone())
            .map_err(|e| std::io::Error::new(e.kind(), format!("admin.listen: {e}")))?;
        edge.shared
            .endpoints
            .add_own_listener(crate::listeners::Listener::new(edge::ADMIN_API, addr));
        admin_addr = Some(addr);
    }
    Ok(ManagedEdge {
        edge,
        plane,
        admin_addr,
        in_fleet,
    })
}

/// Starts the fleet's routes and peer links (crate::fleet) for an edge on etcd. Peers
/// reach this edge at its agent port: on `public_address` when the port listens on a
/// wildcard address.
fn start_fleet(
    link: crate::state::etcd::FleetLink,
    edge: &EdgeHandle,
    public_address: Option<std::net::IpAddr>,
) {
    let mut peer_addr = Some(edge.agent_addr);
    if edge.agent_addr.ip().is_unspecified() {
        peer_addr = public_address.map(|ip| SocketAddr::new(ip, edge.agent_addr.port()));
        if peer_addr.is_none() {
            tracing::warn!(agent_port = %edge.agent_addr, "fleet: the agent port listens on a wildcard address and public_address is not set: other edges cannot reach this one, so it publishes no routes (it still forwards to the others)");
        }
    }
    crate::fleet::start(
        link,
        edge.shared.peers.clone(),
        peer_addr,
        edge.shared.clone(),
    );
}
