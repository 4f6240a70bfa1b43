//! Cloud endpoints and reserved addresses through the control plane: validate, bind
//! (or route), commit, and only then answer; deletes stop accepting and let
//! established connections drain.

use std::{
    net::{IpAddr, SocketAddr},
    sync::Arc,
    time::Duration,
};

use serde::{Deserialize, Serialize};
use sluice_policy::{CompiledPolicy, TrafficPolicy};

use super::{ControlPlane, ErrorKind, PlaneError};
use crate::{
    clock::wall_ms as now_ms,
    config::edge::{check_country_source, parse_endpoint_url, EndpointAddr},
    edge::{
        conn_limits::LimitSettings,
        endpoints::{AddError, EndpointSpec},
        LiveEndpoint,
    },
    listeners::ips_overlap,
    state::{new_id, EndpointRecord, NewEvent, ReservedAddr, TlsPaths},
};

/// Most ports one reservation may span.
pub const MAX_RESERVED_RANGE: u32 = 1024;

/// A new endpoint, as the API receives it.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EndpointInput {
    /// `tcp://IP:PORT` (port 0: any free port) or `tls://HOST`; or leave it out and give
    /// `reserved_addr_id`.
    pub url: Option<String>,
    /// Take the first free port of this reservation.
    pub reserved_addr_id: Option<String>,
    /// YAML text, or a JSON object.
    pub traffic_policy: serde_json::Value,
    /// Free text.
    #[serde(default)]
    pub description: String,
    /// Seconds without bytes before a forwarded connection is closed; 0: never.
    /// Default 3600.
    pub idle_timeout_secs: Option<u64>,
    /// `http://` and `https://` endpoints: seconds an upstream may take to start its
    /// response before the client gets 504 (1 to 86400). Default 60.
    pub response_timeout_secs: Option<u64>,
    /// Most connections at once (absent: unlimited).
    pub max_connections: Option<usize>,
    /// Most connections at once per client IP (absent: the edge-wide default).
    pub max_connections_per_ip: Option<u32>,
    /// Terminate TLS at the edge with this certificate and key (absolute paths of PEM
    /// files on the edge host, readable by its user), like edge.yml's `terminate_tls`.
    pub terminate_tls: Option<TlsPaths>,
}

/// Changes to an endpoint.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EndpointPatch {
    /// New traffic policy (hot-swapped: established connections are untouched).
    pub traffic_policy: Option<serde_json::Value>,
    /// New description.
    pub description: Option<String>,
}

/// A new reservation.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReservationInput {
    /// `IP:PORT` or `IP:FIRST-LAST`.
    pub addr: String,
    /// Free text.
    #[serde(default)]
    pub description: String,
}

/// An endpoint as the API shows it.
#[derive(Debug, Serialize)]
pub struct EndpointView {
    /// Id.
    pub id: String,
    /// URL.
    pub url: String,
    /// Where it listens.
    pub listen_addr: String,
    /// Free text.
    pub description: String,
    /// The policy as stored (text).
    pub traffic_policy: String,
    /// Idle timeout in seconds (0: none).
    pub idle_timeout_secs: u64,
    /// Seconds an upstream may take to start its response (HTTP endpoints; `null` on
    /// others).
    pub response_timeout_secs: Option<u64>,
    /// Reservation it came from.
    pub reserved_addr_id: Option<String>,
    /// Most connections at once, if limited.
    pub max_connections: Option<usize>,
    /// Most connections per client IP, if limited.
    pub max_connections_per_ip: Option<u32>,
    /// Declared in edge.yml (read-only here).
    #[serde(rename = "static")]
    pub is_static: bool,
    /// The certificate and key the edge terminates TLS with, if it does.
    pub terminate_tls: Option<TlsPaths>,
    /// Connections being forwarded now.
    pub in_flight: usize,
    /// ms since the epoch (0 for static endpoints).
    pub created_at: i64,
    /// ms since the epoch.
    pub updated_at: i64,
}

/// The policy text from an API value (YAML string or JSON object), validated and
/// compiled; errors carry the policy engine's line and column.
pub fn compile_policy(value: &serde_json::Value) -> Result<(String, CompiledPolicy), PlaneError> {
    let text = match value {
        serde_json::Value::String(s) => s.clone(),
        serde_json::Value::Object(_) => serde_json::to_string_pretty(value).unwrap_or_default(),
        _ => {
            return Err(PlaneError::bad_request(
                "invalid_policy",
                "traffic_policy must be a YAML string or a JSON object",
            ))
        }
    };
    let policy = TrafficPolicy::from_yaml(&text)
        .map_err(|e| PlaneError::bad_request("invalid_policy", e.to_string()))?;
    if policy.terminate_tls_actions().any(|t| t.has_inline_key()) {
        return Err(PlaneError::bad_request(
            "inline_private_key",
            "a `terminate-tls` action's server_private_key is PEM text: the API keeps \
             policies in the edge's state (and a fleet's etcd) and shows them back, where a \
             private key would be readable by every holder of the admin key and in every \
             backup. Give the absolute path of a key file on the edge host instead (readable \
             by the edge's user only), or put the policy in edge.yml",
        ));
    }
    let compiled = policy
        .compile()
        .map_err(|e| PlaneError::bad_request("invalid_policy", e.to_string()))?;
    Ok((text, compiled))
}

/// The stable code of a refused address: another listener (the edge's own, another
/// endpoint's, or another process's) holds it.
pub const ADDRESS_IN_USE: &str = "address_in_use";

pub(super) fn add_error(e: AddError) -> PlaneError {
    match e {
        AddError::Conflict(m) => PlaneError::new(ErrorKind::Conflict, "conflict", m),
        AddError::InUse { .. } => {
            PlaneError::new(ErrorKind::Conflict, ADDRESS_IN_USE, e.to_string())
        }
        AddError::Invalid(m) => PlaneError::bad_request("invalid_url", m),
        AddError::Bind { ref error, .. } => match error.kind() {
            std::io::ErrorKind::AddrInUse => {
                PlaneError::new(ErrorKind::Conflict, ADDRESS_IN_USE, e.to_string())
            }
            // Not an address of this host, or a port below 1024 without the capability.
            std::io::ErrorKind::AddrNotAvailable | std::io::ErrorKind::PermissionDenied => {
                PlaneError::bad_request("cannot_listen", e.to_string())
            }
            _ => PlaneError::new(ErrorKind::Internal, "cannot_listen", e.to_string()),
        },
    }
}

pub(super) fn record_to_spec(r: &EndpointRecord) -> Result<EndpointSpec, PlaneError> {
    let addr = parse_endpoint_url(&r.url).map_err(|m| PlaneError::bad_request("invalid_url", m))?;
    let (_, policy) = compile_policy(&serde_json::Value::String(r.traffic_policy.clone()))?;
    addr.check_policy(&policy)
        .map_err(|m| PlaneError::bad_request("invalid_policy", m))?;
    Ok(EndpointSpec {
        id: r.id.clone(),
        url: r.url.clone(),
        addr,
        policy,
        idle_timeout: (r.idle_timeout_secs > 0).then(|| Duration::from_secs(r.idle_timeout_secs)),
        response_timeout: response_timeout(&r.url, r.response_timeout_secs)?,
        terminate_tls: r.terminate_tls.as_ref().map(load_tls).transpose()?,
        limits: LimitSettings {
            max_connections: r.max_connections,
            max_connections_per_ip: r.max_connections_per_ip,
        },
    })
}

/// An endpoint's `response_timeout_secs`, checked against its URL (a 400 otherwise).
fn response_timeout(url: &str, secs: Option<u64>) -> Result<Duration, PlaneError> {
    crate::config::edge::check_response_timeout(url, secs.map(Duration::from_secs))
        .map_err(|m| PlaneError::bad_request("invalid_timeout", m))
}

/// The seconds shown for an endpoint's response timeout: HTTP endpoints only.
fn shown_response_timeout(url: &str, timeout: Duration) -> Option<u64> {
    crate::config::edge::serves_http(url).then_some(timeout.as_secs())
}

/// The server configuration of an endpoint's `terminate_tls` files; a path that is
/// not absolute, a file that cannot be read, or a pair that does not work is a 400
/// naming the file.
fn load_tls(paths: &TlsPaths) -> Result<Arc<rustls::ServerConfig>, PlaneError> {
    for p in [&paths.cert, &paths.key] {
        if !std::path::Path::new(p).is_absolute() {
            return Err(PlaneError::bad_request(
                "invalid_tls",
                format!("terminate_tls: `{p}` must be an absolute path on the edge host"),
            ));
        }
    }
    crate::tls::server_config_from_files(paths.cert.as_ref(), paths.key.as_ref(), None)
        .map_err(|e| PlaneError::bad_request("invalid_tls", format!("terminate_tls: {e}")))
}

fn parse_range(addr: &str) -> Result<(IpAddr, u16, u16), PlaneError> {
    let bad = || {
        PlaneError::bad_request(
            "invalid_addr",
            format!("`{addr}`: expected IP:PORT or IP:FIRST-LAST (e.g. 0.0.0.0:21000-21009)"),
        )
    };
    let (ip, ports) = addr.rsplit_once(':').ok_or_else(bad)?;
    let ip: IpAddr = ip.trim_matches(['[', ']']).parse().map_err(|_| bad())?;
    let (first, last) = match ports.split_once('-') {
        Some((a, b)) => (a.parse().map_err(|_| bad())?, b.parse().map_err(|_| bad())?),
        None => {
            let p = ports.parse().map_err(|_| bad())?;
            (p, p)
        }
    };
    if first == 0 || last < first || u32::from(last - first) >= MAX_RESERVED_RANGE {
        return Err(PlaneError::bad_request(
            "invalid_addr",
            format!("`{addr}`: ports must be 1-65535, first <= last, at most {MAX_RESERVED_RANGE} of them"),
        ));
    }
    Ok((ip, first, last))
}

impl ControlPlane {
    /// Serves the endpoints stored by earlier runs.
    pub(super) fn restore_endpoints(&self) -> Result<(), PlaneError> {
        let mut applied = self.applied_endpoints();
        let records = self.store().endpoints()?;
        for r in records {
            applied.insert(r.id.clone(), r.clone());
            if self.edge.endpoints.get(&r.id).is_some() {
                continue;
            }
            match record_to_spec(&r)
                .and_then(|spec| self.edge.endpoints.add(spec).map_err(add_error))
            {
                Ok(_) => {}
                Err(e) => {
                    tracing::error!(id = %r.id, url = %r.url, error = %e, "stored endpoint not served")
                }
            }
        }
        Ok(())
    }

    fn view(&self, live: Option<&Arc<LiveEndpoint>>, r: &EndpointRecord) -> EndpointView {
        EndpointView {
            id: r.id.clone(),
            url: r.url.clone(),
            listen_addr: live.map(|l| l.addr.to_string()).unwrap_or_default(),
            description: r.description.clone(),
            traffic_policy: r.traffic_policy.clone(),
            idle_timeout_secs: r.idle_timeout_secs,
            response_timeout_secs: live
                .and_then(|l| shown_response_timeout(&l.url, l.response_timeout))
                .or(r.response_timeout_secs),
            reserved_addr_id: r.reserved_addr_id.clone(),
            max_connections: r.max_connections,
            max_connections_per_ip: live
                .and_then(|l| l.limits.settings.max_connections_per_ip)
                .or(r.max_connections_per_ip),
            is_static: false,
            terminate_tls: r.terminate_tls.clone(),
            in_flight: live.map_or(0, |l| l.in_flight()),
            created_at: r.created_at,
            updated_at: r.updated_at,
        }
    }

    /// Every endpoint, static ones included.
    pub fn list_endpoints(&self) -> Result<Vec<EndpointView>, PlaneError> {
        let mut out: Vec<EndpointView> = self
            .statics()
            .endpoints
            .iter()
            .map(|s| {
                let live = self.edge.endpoints.get(&s.id);
                EndpointView {
                    id: s.id.clone(),
                    url: s.url.clone(),
                    listen_addr: live
                        .as_ref()
                        .map(|l| l.addr.to_string())
                        .unwrap_or_default(),
                    description: "declared in edge.yml".into(),
                    traffic_policy: s.policy_json.clone(),
                    idle_timeout_secs: s.idle_timeout.map_or(0, |d| d.as_secs()),
                    response_timeout_secs: shown_response_timeout(&s.url, s.response_timeout),
                    reserved_addr_id: None,
                    max_connections: s.limits.max_connections,
                    max_connections_per_ip: live
                        .as_ref()
                        .and_then(|l| l.limits.settings.max_connections_per_ip),
                    is_static: true,
                    terminate_tls: None,
                    in_flight: live.map_or(0, |l| l.in_flight()),
                    created_at: 0,
                    updated_at: 0,
                }
            })
            .collect();
        for r in self.store().endpoints()? {
            let live = self.edge.endpoints.get(&r.id);
            out.push(self.view(live.as_ref(), &r));
        }
        Ok(out)
    }

    /// One endpoint.
    pub fn get_endpoint(&self, id: &str) -> Result<EndpointView, PlaneError> {
        self.list_endpoints()?
            .into_iter()
            .find(|e| e.id == id)
            .ok_or_else(|| PlaneError::not_found("endpoint", id))
    }

    fn find_record(&self, id: &str) -> Result<EndpointRecord, PlaneError> {
        if self.statics().endpoints.iter().any(|s| s.id == id) {
            return Err(PlaneError::static_object("endpoint", id));
        }
        self.store()
            .endpoints()?
            .into_iter()
            .find(|r| r.id == id)
            .ok_or_else(|| PlaneError::not_found("endpoint", id))
    }

    /// Creates an endpoint: serving within this call, committed before it returns.
    pub fn create_endpoint(
        &self,
        actor: &str,
        input: EndpointInput,
    ) -> Result<EndpointView, PlaneError> {
        let mut applied = self.applied_endpoints();
        let (policy_text, policy) = compile_policy(&input.traffic_policy)?;
        let reservations = self.store().reserved_addrs()?;
        let (url, reserved_addr_id) = match (&input.url, &input.reserved_addr_id) {
            (Some(_), Some(_)) | (None, None) => {
                return Err(PlaneError::bad_request(
                    "invalid_url",
                    "give exactly one of url and reserved_addr_id",
                ))
            }
            (None, Some(rid)) => {
                let r = reservations
                    .iter()
                    .find(|r| &r.id == rid)
                    .ok_or_else(|| PlaneError::not_found("reserved address", rid))?;
                let ip: IpAddr =
                    r.ip.parse()
                        .map_err(|_| PlaneError::bad_request("invalid_addr", "bad stored IP"))?;
                let port = (r.port_start..=r.port_end)
                    .find(|p| {
                        self.edge
                            .endpoints
                            .holder(SocketAddr::new(ip, *p))
                            .is_none()
                    })
                    .ok_or_else(|| {
                        PlaneError::new(
                            ErrorKind::Conflict,
                            "reservation_full",
                            format!("every port of {} is in use", r.id),
                        )
                    })?;
                (
                    format!("tcp://{}", SocketAddr::new(ip, port)),
                    Some(rid.clone()),
                )
            }
            (Some(url), None) => (url.clone(), None),
        };
        let addr =
            parse_endpoint_url(&url).map_err(|m| PlaneError::bad_request("invalid_url", m))?;
        addr.check_policy(&policy)
            .and_then(|()| check_country_source(&policy, crate::geo::installed()))
            .map_err(|m| PlaneError::bad_request("invalid_policy", m))?;
        if let (EndpointAddr::Tcp(a), None) = (&addr, &reserved_addr_id) {
            if let Some(r) = reservations.iter().find(|r| {
                r.ip.parse().is_ok_and(|ip| ips_overlap(ip, a.ip()))
                    && (r.port_start..=r.port_end).contains(&a.port())
            }) {
                return Err(PlaneError::new(
                    ErrorKind::Conflict,
                    "port_reserved",
                    format!(
                        "port {} is reserved by {}; create the endpoint with reserved_addr_id",
                        a.port(),
                        r.id
                    ),
                ));
            }
        }
        let idle = input.idle_timeout_secs.unwrap_or(3600);
        let response_timeout = response_timeout(&url, input.response_timeout_secs)?;
        let terminate = input.terminate_tls.as_ref().map(load_tls).transpose()?;
        let id = new_id("ep_");
        let live = self
            .edge
            .endpoints
            .add(EndpointSpec {
                id: id.clone(),
                url: url.clone(),
                addr: addr.clone(),
                policy,
                idle_timeout: (idle > 0).then(|| Duration::from_secs(idle)),
                response_timeout,
                terminate_tls: terminate,
                limits: LimitSettings {
                    max_connections: input.max_connections.filter(|n| *n > 0),
                    max_connections_per_ip: input.max_connections_per_ip,
                },
            })
            .map_err(add_error)?;
        // Port 0 picked a port: keep the one bound, so a restart listens there again.
        let url = match addr {
            EndpointAddr::Tcp(_) => format!("tcp://{}", live.addr),
            EndpointAddr::Tls(_) | EndpointAddr::Http(_) | EndpointAddr::Https(_) => url,
        };
        let now = now_ms();
        let record = EndpointRecord {
            id: id.clone(),
            url,
            description: input.description,
            traffic_policy: policy_text,
            idle_timeout_secs: idle,
            response_timeout_secs: input.response_timeout_secs,
            reserved_addr_id,
            max_connections: input.max_connections.filter(|n| *n > 0),
            max_connections_per_ip: input.max_connections_per_ip,
            terminate_tls: input.terminate_tls,
            created_at: now,
            updated_at: now,
        };
        let event = NewEvent::now(
            "endpoint.created",
            actor,
            &id,
            serde_json::json!({ "url": record.url, "traffic_policy": record.traffic_policy }),
        );
        if let Err(e) = self.store().put_endpoint(&record, &event) {
            self.edge.endpoints.remove(&id);
            return Err(e.into());
        }
        applied.insert(id, record.clone());
        Ok(self.view(Some(&live), &record))
    }

    /// Updates an endpoint's policy or description; a new policy is committed, then
    /// swapped in: established connections keep going, new ones see it at once.
    pub fn update_endpoint(
        &self,
        actor: &str,
        id: &str,
        patch: EndpointPatch,
    ) -> Result<EndpointView, PlaneError> {
        let mut applied = self.applied_endpoints();
        let old = self.find_record(id)?;
        let mut new = old.clone();
        let compiled = match &patch.traffic_policy {
            Some(value) => {
                let (text, compiled) = compile_policy(value)?;
                parse_endpoint_url(&old.url)
                    .and_then(|addr| addr.check_policy(&compiled))
                    .and_then(|()| check_country_source(&compiled, crate::geo::installed()))
                    .map_err(|m| PlaneError::bad_request("invalid_policy", m))?;
                new.traffic_policy = text;
                Some(compiled)
            }
            None => None,
        };
        if let Some(d) = patch.description {
            new.description = d;
        }
        new.updated_at = now_ms();
        let kind = if compiled.is_some() {
            "endpoint.policy_changed"
        } else {
            "endpoint.updated"
        };
        let event = NewEvent::now(
            kind,
            actor,
            id,
            serde_json::json!({
                "url": old.url,
                "old": { "traffic_policy": old.traffic_policy, "description": old.description },
                "new": { "traffic_policy": new.traffic_policy, "description": new.description },
            }),
        );
        self.store().put_endpoint(&new, &event)?;
        if let Some(policy) = compiled {
            self.edge.endpoints.set_policy(id, policy);
        }
        applied.insert(id.to_string(), new.clone());
        let live = self.edge.endpoints.get(id);
        Ok(self.view(live.as_ref(), &new))
    }

    /// Deletes an endpoint: committed, then it stops accepting; its established
    /// connections finish.
    pub fn delete_endpoint(&self, actor: &str, id: &str) -> Result<(), PlaneError> {
        let mut applied = self.applied_endpoints();
        let old = self.find_record(id)?;
        let event = NewEvent::now(
            "endpoint.deleted",
            actor,
            id,
            serde_json::json!({ "url": old.url, "traffic_policy": old.traffic_policy }),
        );
        self.store().delete_endpoint(id, &event)?;
        self.edge.endpoints.remove(id);
        applied.remove(id);
        Ok(())
    }

    /// Every reservation.
    pub fn list_reserved(&self) -> Result<Vec<ReservedAddr>, PlaneError> {
        Ok(self.store().reserved_addrs()?)
    }

    /// Reserves a port or a range; refused when another endpoint or reservation
    /// holds any of its ports.
    pub fn create_reserved(
        &self,
        actor: &str,
        input: ReservationInput,
    ) -> Result<ReservedAddr, PlaneError> {
        let (ip, first, last) = parse_range(&input.addr)?;
        for ep in self.edge.endpoints.list() {
            let tcp = !ep.url.starts_with("tls://");
            if tcp && ips_overlap(ep.addr.ip(), ip) && (first..=last).contains(&ep.addr.port()) {
                return Err(PlaneError::new(
                    ErrorKind::Conflict,
                    "port_in_use",
                    format!(
                        "port {} is in use by endpoint {} ({})",
                        ep.addr.port(),
                        ep.id,
                        ep.url
                    ),
                ));
            }
        }
        let existing = self.store().reserved_addrs()?;
        if let Some(r) = existing.iter().find(|r| {
            r.ip.parse().is_ok_and(|rip| ips_overlap(rip, ip))
                && r.port_start <= last
                && first <= r.port_end
        }) {
            return Err(PlaneError::new(
                ErrorKind::Conflict,
                "port_reserved",
                format!("ports {}-{} overlap reservation {}", first, last, r.id),
            ));
        }
        let addr = ReservedAddr {
            id: new_id("ra_"),
            ip: ip.to_string(),
            port_start: first,
            port_end: last,
            description: input.description,
            created_at: now_ms(),
        };
        let event = NewEvent::now(
            "reserved_addr.created",
            actor,
            &addr.id,
            serde_json::json!({ "addr": input.addr }),
        );
        self.store().put_reserved_addr(&addr, &event)?;
        Ok(addr)
    }

    /// Releases a reservation; refused while an endpoint uses it.
    pub fn delete_reserved(&self, actor: &str, id: &str) -> Result<(), PlaneError> {
        if let Some(ep) = self
            .store()
            .endpoints()?
            .into_iter()
            .find(|e| e.reserved_addr_id.as_deref() == Some(id))
        {
            return Err(PlaneError::new(
                ErrorKind::Conflict,
                "in_use",
                format!("endpoint {} uses reservation {id}; delete it first", ep.id),
            ));
        }
        let Some(old) = self
            .store()
            .reserved_addrs()?
            .into_iter()
            .find(|r| r.id == id)
        else {
            return Err(PlaneError::not_found("reserved address", id));
        };
        let event = NewEvent::now(
            "reserved_addr.deleted",
            actor,
            id,
            serde_json::json!({ "ip": old.ip, "port_start": old.port_start, "port_end": old.port_end }),
        );
        self.store().delete_reserved_addr(id, &event)?;
        Ok(())
    }
}
