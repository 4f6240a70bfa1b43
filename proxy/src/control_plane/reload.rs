//! Reloading edge.yml while the edge runs (SIGHUP, or the file changing): the new file
//! is validated whole first; a bad one is rejected with the reason logged and stored as
//! an audit event, and the running configuration stays. A good one replaces the static
//! users (sessions whose token disappeared end) and the static endpoints (added,
//! removed with drain, policies swapped in place) and the agent port's certificate and
//! key (new handshakes use them; its expiry is logged) and the country database. Listener addresses and worker
//! counts need a restart.

use std::{path::Path, sync::Arc, time::Duration};

use sha2::Digest;

use super::{ControlPlane, PlaneError, StaticEndpoint};
use crate::{config::edge::EdgeSettings, edge::endpoints::EndpointSpec, state::NewEvent};

/// The settings a reload cannot apply (listeners, workers, the admin API, the state
/// directory, the agent port's limits), as `key = value` pairs: kept from start, and
/// compared at each reload so a change there is logged as needing a restart rather
/// than silently ignored.
pub fn restart_only(s: &EdgeSettings) -> Vec<(&'static str, String)> {
    let admin = s.admin.as_ref();
    vec![
        ("agents.listen", s.agent_listen.to_string()),
        ("tls_endpoints.listen", format!("{:?}", s.tls_listen)),
        ("http_endpoints.listen", format!("{:?}", s.http_listen)),
        ("workers", s.workers.to_string()),
        ("agents.plain_channels", s.plain_channels.to_string()),
        (
            "agents (pre-authentication limits)",
            format!("{:?}", s.preauth),
        ),
        ("admin.listen", format!("{:?}", admin.map(|a| a.listen))),
        (
            "admin (keys, tls, limits)",
            format!(
                "{:?}",
                admin.map(|a| (&a.api_keys, a.tls.is_some(), a.max_connections))
            ),
        ),
        ("state_dir", format!("{:?}", s.state_dir)),
        ("state.etcd", format!("{:?}", s.etcd)),
        ("edge_id", s.edge_id.clone()),
        ("public_address", format!("{:?}", s.public_address)),
        ("drain_timeout", format!("{:?}", s.drain_timeout)),
    ]
}

/// How often the config file is checked for changes.
pub const WATCH_INTERVAL: Duration = Duration::from_secs(1);

fn digest(path: &Path) -> Option<[u8; 32]> {
    std::fs::read(path)
        .ok()
        .map(|b| sha2::Sha256::digest(&b).into())
}

impl ControlPlane {
    /// Reloads edge.yml; on error nothing changes.
    pub fn reload(&self, trigger: &str) -> Result<(), PlaneError> {
        let Some(path) = self.config_path.clone() else {
            return Ok(());
        };
        let settings = match EdgeSettings::load(&path) {
            Ok(s) => s,
            Err(e) => {
                tracing::error!(%trigger, error = %e, "config reload rejected; the running configuration stays");
                self.record(NewEvent::now(
                    "config.reload_failed",
                    "config",
                    path.display().to_string(),
                    serde_json::json!({ "trigger": trigger, "error": e.to_string() }),
                ));
                return Err(PlaneError::bad_request("invalid_config", e.to_string()));
            }
        };
        let pending: Vec<&str> = restart_only(&settings)
            .into_iter()
            .zip(self.restart_only.iter())
            .filter(|(new, old)| new.1 != old.1)
            .map(|(new, _)| new.0)
            .collect();
        if !pending.is_empty() {
            tracing::warn!(%trigger, keys = ?pending, "config change needs a restart to take effect; the running values stay until then");
        }
        self.edge.replace_agent_tls(settings.agent_tls.clone());
        crate::edge::install_geo(&settings);
        crate::tls::log_expiry("agents.tls.cert", settings.agent_cert_not_after);
        let new_statics = StaticEndpoint::all(&settings.endpoints);
        let old_statics = self.statics().endpoints.clone();
        let mut added = Vec::new();
        let mut removed = Vec::new();
        let mut changed = Vec::new();
        for old in &old_statics {
            let keep = new_statics.iter().find(|n| n.id == old.id);
            let same_shape = keep.is_some_and(|n| {
                n.idle_timeout == old.idle_timeout
                    && n.response_timeout == old.response_timeout
                    && n.limits == old.limits
                    && n.terminate_tls == old.terminate_tls
            });
            if !same_shape {
                self.edge.endpoints.remove(&old.id);
                removed.push(old.url.clone());
            }
        }
        let mut failed = Vec::new();
        for (ep, fresh) in settings.endpoints.into_iter().zip(new_statics.clone()) {
            let old = old_statics.iter().find(|o| o.id == fresh.id);
            let live = self.edge.endpoints.get(&fresh.id);
            match (old, live) {
                (Some(old), Some(_)) => {
                    if old.policy_json != fresh.policy_json || old.policy_tls != fresh.policy_tls {
                        self.edge.endpoints.set_policy(&fresh.id, ep.policy);
                        changed.push(fresh.url.clone());
                    }
                }
                _ => {
                    let spec = EndpointSpec {
                        id: fresh.id.clone(),
                        url: ep.url.clone(),
                        addr: ep.addr,
                        policy: ep.policy,
                        idle_timeout: ep.idle_timeout,
                        response_timeout: ep.response_timeout,
                        terminate_tls: ep.terminate_tls,
                        limits: ep.limits,
                    };
                    match self.edge.endpoints.add(spec) {
                        Ok(_) => added.push(ep.url),
                        Err(e) => {
                            tracing::error!(url = %ep.url, error = %e, "endpoint from reloaded config not served");
                            failed.push(format!("{}: {e}", ep.url));
                        }
                    }
                }
            }
        }
        removed.retain(|u| !added.contains(u));
        {
            let mut statics = self.statics();
            statics.users = settings.users;
            statics.endpoints = new_statics;
        }
        self.rebuild_auth("config reload")?;
        self.restore_ownership("config reload")?;
        tracing::info!(%trigger, ?added, ?removed, ?changed, ?failed, "config reloaded");
        self.record(NewEvent::now(
            "config.reloaded",
            "config",
            path.display().to_string(),
            serde_json::json!({ "trigger": trigger, "added": added, "removed": removed,
                                "policy_changed": changed, "failed": failed,
                                "needs_restart": pending }),
        ));
        Ok(())
    }

    /// Watches the config file and reloads when its content changes.
    pub fn spawn_config_watcher(self: &Arc<Self>) -> std::io::Result<()> {
        let Some(path) = self.config_path.clone() else {
            return Ok(());
        };
        let plane = self.clone();
        std::thread::Builder::new()
            .name("sluice-config-watch".into())
            .spawn(move || {
                let mut seen = digest(&path);
                loop {
                    std::thread::sleep(WATCH_INTERVAL);
                    let now = digest(&path);
                    if now.is_some() && now != seen {
                        seen = now;
                        let _ = plane.reload("file changed");
                    }
                }
            })
            .map(drop)
    }

    /// The edge.yml this plane reloads.
    pub fn config_path(&self) -> Option<&Path> {
        self.config_path.as_deref()
    }
}
