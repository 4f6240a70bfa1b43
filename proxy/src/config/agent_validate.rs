//! The one validation of an agent file, the resolve step [`super::validate::run`] runs
//! for `sluice agent` and `sluice config check` alike: the version, the `agent:`
//! section's values and CA file, and each endpoint's URL (duplicates), upstream address,
//! PROXY protocol version, TLS termination and upstream TLS files, pool weight and
//! health check. Every problem is recorded at its key; each section is read from the
//! tree on its own, so a broken one hides nothing else.

use std::{path::Path, sync::Arc, time::Duration};

use rustls::ClientConfig;
use rustls_pki_types::ServerName;
use sluice_policy::InternalUrl;

use super::{
    agent::{
        connect_host, upstream_dial_addr, upstream_speaks_tls, AgentEndpoint, AgentFile,
        AgentSection, AgentSettings, AgentTlsTerminationSection, EdgeTarget, EndpointSection,
        HealthCheck, HealthCheckSection, UpstreamTls, UpstreamTlsSection, DEFAULT_WEIGHT,
        MAX_DATA_CHANNELS, MAX_EDGE_CONNECTIONS, MAX_LABEL_BYTES, MAX_WEIGHT,
    },
    problems::Problems,
    relative_to,
    tree::Node,
    tree_de::from_node,
};
use crate::{proxy_protocol::Version, tls};

/// The agent file's version.
const VERSION: u32 = 3;
/// Shortest `upstream.health_check.interval`.
const MIN_CHECK_INTERVAL: Duration = Duration::from_millis(50);
/// Largest `healthy_threshold` / `unhealthy_threshold`.
const MAX_THRESHOLD: u32 = 100;

/// Checks the agent file in `tree` and builds its settings (see [`super::validate`]).
pub(super) fn resolve(
    tree: &Node,
    _whole: Option<AgentFile>,
    file: &Path,
    p: &mut Problems,
    warnings: &mut Vec<String>,
) -> Option<AgentSettings> {
    if let Some(v) = tree.key("version").and_then(|n| from_node::<u32>(n).ok()) {
        if v != VERSION {
            p.at("version", format!("expected {VERSION}, found {v}"));
        }
    }
    let agent = tree
        .key("agent")
        .and_then(|node| agent_section(node, file, p));
    let endpoints = endpoints(tree, file, p);
    if p.is_empty() && endpoints.is_empty() {
        warnings.push("endpoints: none; the agent will bind nothing".to_string());
    }
    let Connection {
        section: a,
        edges,
        tls,
        proxy,
    } = agent?;
    Some(AgentSettings {
        warnings: Vec::new(),
        workers: a
            .workers
            .unwrap_or_else(crate::runtime::default_workers)
            .max(1),
        edges,
        edge_connections: a.edge_connections,
        tls,
        authtoken: a.authtoken,
        transport: a.transport,
        data_channels: a.data_channels,
        heartbeat_interval: a.heartbeat_interval,
        heartbeat_tolerance: a.heartbeat_tolerance,
        endpoints,
        drain_timeout: a.drain_timeout,
        metrics_listen: a.metrics_listen,
        connect_timeout: a.connect_timeout,
        metadata: a.metadata.clone().unwrap_or_default(),
        proxy,
        logging: super::agent::AgentLogging {
            target: a.log.clone().map(|l| l.0).unwrap_or_default(),
            level: a.log_level,
            format: a.log_format,
        },
        pump: crate::io::Pump::default(),
    })
}

/// The `agent:` section, checked, with what it resolves to.
struct Connection {
    section: AgentSection,
    edges: Vec<EdgeTarget>,
    tls: Arc<ClientConfig>,
    /// The egress proxy (`proxy_url`), if any.
    proxy: Option<Arc<crate::agent::egress::EgressProxy>>,
}

fn agent_section(node: &Node, file: &Path, p: &mut Problems) -> Option<Connection> {
    // Not pruned, so serde accepted it in the first pass.
    let a = from_node::<AgentSection>(node).ok()?;
    if a.authtoken.expose().trim().is_empty() {
        p.at("agent.authtoken", "must not be empty");
    }
    let edges = edge_targets(&a, p);
    if a.edge_connections == 0 || a.edge_connections > MAX_EDGE_CONNECTIONS {
        p.at(
            "agent.edge_connections",
            format!(
                "must be 1..={MAX_EDGE_CONNECTIONS}, found {}",
                a.edge_connections
            ),
        );
    }
    if a.data_channels == 0 || a.data_channels > MAX_DATA_CHANNELS {
        p.at(
            "agent.data_channels",
            format!("must be 1..={MAX_DATA_CHANNELS}, found {}", a.data_channels),
        );
    }
    if a.heartbeat_interval.is_zero() || a.heartbeat_tolerance <= a.heartbeat_interval {
        p.at(
            "agent.heartbeat_tolerance",
            "must be longer than a non-zero heartbeat_interval",
        );
    }
    if a.connect_timeout.is_zero() {
        p.at("agent.connect_timeout", "must be longer than zero");
    }
    if let Some(m) = a.metadata.as_ref().filter(|m| m.len() > MAX_LABEL_BYTES) {
        p.at(
            "agent.metadata",
            format!("{} bytes; at most {MAX_LABEL_BYTES}", m.len()),
        );
    }
    // `None` when it is invalid; `Some(None)` when there is none.
    let proxy = match a
        .proxy_url
        .as_deref()
        .map(crate::agent::egress::EgressProxy::parse)
    {
        None => Some(None),
        Some(Ok(proxy)) => Some(Some(Arc::new(proxy))),
        Some(Err(e)) => {
            p.at("agent.proxy_url", e);
            None
        }
    };
    if let Some(super::agent::LogSetting(crate::logging::LogTarget::File(path))) = &a.log {
        let dir = path.parent().filter(|d| !d.as_os_str().is_empty());
        if dir.is_some_and(|d| !d.is_dir()) {
            p.at(
                "agent.log",
                format!("{}: its directory does not exist", path.display()),
            );
        }
    }
    // ngrok's words: `trusted` (the public roots sluice carries, as with no setting)
    // and `host` (the operating system's bundle); anything else is a PEM file.
    let cas = match a.connect_cas.as_deref().and_then(|c| c.to_str()) {
        Some("trusted") => None,
        Some("host") => match HOST_CA_BUNDLES.iter().find(|b| Path::new(b).is_file()) {
            Some(bundle) => Some(std::path::PathBuf::from(bundle)),
            None => {
                p.at(
                    "agent.connect_cas",
                    format!(
                        "`host`: no CA bundle of the operating system found (looked for {})",
                        HOST_CA_BUNDLES.join(", ")
                    ),
                );
                return None;
            }
        },
        _ => a.connect_cas.as_ref().map(|c| relative_to(file, c)),
    };
    let tls = match &cas {
        Some(cas) => tls::load_certs(cas)
            .and_then(|certs| tls::client_config(Some(certs)))
            .map_err(|e| p.at("agent.connect_cas", e))
            .ok(),
        None => tls::client_config(None).map_err(|e| p.at("agent", e)).ok(),
    };
    Some(Connection {
        section: a,
        edges: edges?,
        tls: tls?,
        proxy: proxy?,
    })
}

/// Where operating systems keep their CA bundle (`connect_cas: host`), Debian's first.
const HOST_CA_BUNDLES: [&str; 4] = [
    "/etc/ssl/certs/ca-certificates.crt",
    "/etc/pki/tls/certs/ca-bundle.crt",
    "/etc/ssl/ca-bundle.pem",
    "/etc/ssl/cert.pem",
];

/// `connect_url`'s entries with the name each edge's certificate must show.
fn edge_targets(a: &AgentSection, p: &mut Problems) -> Option<Vec<EdgeTarget>> {
    if a.connect_url.is_empty() {
        p.at("agent.connect_url", "lists no edge");
        return None;
    }
    let mut edges = Vec::new();
    let mut ok = true;
    for (i, addr) in a.connect_url.iter().enumerate() {
        let at = if a.connect_url.len() == 1 {
            "agent.connect_url".to_string()
        } else {
            format!("agent.connect_url[{i}]")
        };
        let Some(host) = connect_host(addr) else {
            p.at(&at, format!("expected host:port, found `{addr}`"));
            ok = false;
            continue;
        };
        if edges.iter().any(|e: &EdgeTarget| e.addr == *addr) {
            p.at(&at, format!("`{addr}` is listed twice"));
            ok = false;
            continue;
        }
        let name = a.server_name.clone().unwrap_or_else(|| host.to_string());
        match ServerName::try_from(name.clone()) {
            Ok(server_name) => edges.push(EdgeTarget {
                addr: addr.clone(),
                server_name,
            }),
            Err(_) => {
                let key = if a.server_name.is_some() {
                    "agent.server_name"
                } else {
                    at.as_str()
                };
                p.at(key, format!("`{name}` is not a valid DNS name or IP"));
                ok = false;
            }
        }
    }
    ok.then_some(edges)
}

fn endpoints(tree: &Node, file: &Path, p: &mut Problems) -> Vec<AgentEndpoint> {
    let mut urls: Vec<String> = Vec::new();
    let mut out = Vec::new();
    for (i, node) in tree.key("endpoints").into_iter().flat_map(Node::all_items) {
        let at = |key: &str| format!("endpoints[{i}].{key}");
        // Read from the tree, so that an entry serde dropped (a broken sibling key)
        // still has its URL, upstream address and PROXY version checked.
        let url = node
            .text("url")
            .and_then(|u| u.parse::<InternalUrl>().ok())
            .map(|u| u.canonical());
        if let Some(url) = url {
            if urls.contains(&url) {
                p.at(&at("url"), format!("`{url}` is listed twice"));
            }
            urls.push(url);
        }
        let upstream = node.key("upstream");
        if let Some(u) = upstream
            .and_then(|u| u.text("url"))
            .filter(|u| upstream_dial_addr(u).is_none())
        {
            let message = format!(
                "expected a port, host:port or scheme://host[:port] with a scheme of tcp, tls, \
                 http or https (tcp needs a port; no path), found `{u}`"
            );
            p.at(&at("upstream.url"), message);
        }
        let proxy_protocol = match upstream
            .and_then(|u| u.key("proxy_protocol"))
            .and_then(|n| from_node::<u8>(n).ok())
        {
            None => Ok(None),
            Some(1) => Ok(Some(Version::V1)),
            Some(2) => Ok(Some(Version::V2)),
            Some(other) => {
                p.at(
                    &at("upstream.proxy_protocol"),
                    format!("expected 1 or 2, found {other}"),
                );
                Err(())
            }
        };
        if node.pruned {
            continue;
        }
        let Ok(ep) = from_node::<EndpointSection>(node) else {
            continue;
        };
        out.extend(endpoint(ep, proxy_protocol, &at, file, p));
    }
    out
}

/// An endpoint serde accepted, checked further and resolved; `proxy_protocol` was
/// read (and any problem with it recorded) by the caller.
fn endpoint(
    ep: EndpointSection,
    proxy_protocol: Result<Option<Version>, ()>,
    at: &dyn Fn(&str) -> String,
    file: &Path,
    p: &mut Problems,
) -> Option<AgentEndpoint> {
    let url = ep.url.canonical();
    let tls_termination = ep
        .agent_tls_termination
        .as_ref()
        .map(|t| termination_config(t, file).map_err(|m| p.at(&at("agent_tls_termination"), m)))
        .transpose();
    let upstream_protocol = upstream_protocol(ep.upstream.protocol.as_deref(), &ep.url)
        .map_err(|m| p.at(&at("upstream.protocol"), m));
    // `upstream.tls`, or a `tls://`/`https://` upstream URL, which implies it with the
    // defaults (webpki roots, the URL's host as the name to verify).
    let implied_tls = upstream_speaks_tls(&ep.upstream.url).then(UpstreamTlsSection::default);
    let dial = upstream_dial_addr(&ep.upstream.url).unwrap_or_else(|| ep.upstream.url.clone());
    let upstream_tls = ep
        .upstream
        .tls
        .as_ref()
        .or(implied_tls.as_ref())
        .map(|t| {
            let h2 = upstream_protocol == Ok(crate::wire::UpstreamProtocol::Http2);
            upstream_tls(t, &dial, file, h2).map_err(|m| p.at(&at("upstream.tls"), m))
        })
        .transpose();
    let weight = ep.weight.unwrap_or(DEFAULT_WEIGHT);
    if !(1..=MAX_WEIGHT).contains(&weight) {
        p.at(
            &at("weight"),
            format!("must be 1..={MAX_WEIGHT}, found {weight}"),
        );
    }
    let health_check = health_check(
        ep.upstream.health_check.as_ref(),
        &at("upstream.health_check"),
        p,
    );
    for (key, text) in [("description", &ep.description), ("metadata", &ep.metadata)] {
        if let Some(text) = text.as_ref().filter(|t| t.len() > MAX_LABEL_BYTES) {
            p.at(
                &at(key),
                format!("{} bytes; at most {MAX_LABEL_BYTES}", text.len()),
            );
        }
    }
    for binding in ep.bindings.iter().flatten() {
        match binding.as_str() {
            "internal" => {}
            "public" => p.at(
                &at("bindings"),
                "`public`: an agent endpoint here is always internal (tcp://NAME.internal); \
                 public endpoints are the edge's `endpoints:` (its file or admin API), which \
                 forward to this one",
            ),
            other => p.at(&at("bindings"), format!("`{other}`: expected `internal`")),
        }
    }
    let traffic_policy = ep
        .traffic_policy
        .as_ref()
        .map(|policy| endpoint_policy(policy, &ep.url))
        .transpose()
        .map_err(|m| p.at(&at("traffic_policy"), m));
    Some(AgentEndpoint {
        traffic_policy: traffic_policy.ok()?.unwrap_or_default(),
        labels: crate::wire::Labels {
            description: ep.description.clone().unwrap_or_default(),
            metadata: ep.metadata.clone().unwrap_or_default(),
        },
        name: ep.name.unwrap_or_else(|| url.clone()),
        url,
        pooling: ep.pooling_enabled,
        upstream: dial,
        proxy_protocol: proxy_protocol.ok()?,
        tls_termination: tls_termination.ok()?,
        upstream_tls: upstream_tls.ok()?,
        weight,
        health_check: health_check?,
        upstream_protocol: upstream_protocol.ok()?,
    })
}

/// `upstream.protocol`: `http1` or `http2`, on `http://` endpoints (others carry bytes,
/// whatever their protocol).
fn upstream_protocol(
    written: Option<&str>,
    url: &sluice_policy::InternalUrl,
) -> Result<crate::wire::UpstreamProtocol, String> {
    use crate::wire::UpstreamProtocol;
    let Some(written) = written else {
        return Ok(UpstreamProtocol::Http1);
    };
    let protocol = match written {
        "http1" => UpstreamProtocol::Http1,
        "http2" => UpstreamProtocol::Http2,
        other => return Err(format!("`{other}`: expected `http1` or `http2`")),
    };
    if !url.scheme().is_http() {
        return Err(format!(
            "`{written}` on a {} endpoint: the HTTP version of the upstream matters only \
             on http:// and https:// endpoints (the edge carries other endpoints' bytes as they are)",
            url.scheme().as_str()
        ));
    }
    Ok(protocol)
}

/// An endpoint's `traffic_policy` as the Bind carries it (JSON), checked: it compiles
/// for the endpoint (HTTP rules on http:// ones only) and fits a frame.
fn endpoint_policy(
    policy: &sluice_policy::EndpointPolicy,
    url: &sluice_policy::InternalUrl,
) -> Result<String, String> {
    policy.compile_for(url).map_err(|e| e.to_string())?;
    let json = serde_json::to_string(policy).map_err(|e| e.to_string())?;
    if json.len() > crate::wire::MAX_POLICY_LEN {
        return Err(format!(
            "{} bytes as sent to the edge; at most {}: long lists belong on the edge's \
             endpoint",
            json.len(),
            crate::wire::MAX_POLICY_LEN
        ));
    }
    Ok(json)
}

/// Validates `upstream.health_check` (problems at `at.KEY`); `Some(None)` when checks
/// are off, `None` when it is invalid.
fn health_check(
    h: Option<&HealthCheckSection>,
    at: &str,
    p: &mut Problems,
) -> Option<Option<HealthCheck>> {
    let Some(h) = h else {
        return Some(Some(HealthCheck::default()));
    };
    if !h.enabled {
        return Some(None);
    }
    let mut ok = true;
    let mut problem = |key: &str, message: String| {
        p.at(&format!("{at}.{key}"), message);
        ok = false;
    };
    if h.interval < MIN_CHECK_INTERVAL {
        problem(
            "interval",
            format!("at least {MIN_CHECK_INTERVAL:?}, found {:?}", h.interval),
        );
    }
    if h.timeout.is_zero() || h.timeout > h.interval {
        problem(
            "timeout",
            "must be non-zero and at most the interval".into(),
        );
    }
    for (key, n) in [
        ("healthy_threshold", h.healthy_threshold),
        ("unhealthy_threshold", h.unhealthy_threshold),
    ] {
        if !(1..=MAX_THRESHOLD).contains(&n) {
            problem(key, format!("must be 1..={MAX_THRESHOLD}, found {n}"));
        }
    }
    ok.then_some(Some(HealthCheck {
        interval: h.interval,
        timeout: h.timeout,
        healthy_threshold: h.healthy_threshold,
        unhealthy_threshold: h.unhealthy_threshold,
    }))
}

/// Loads `agent_tls_termination`: the server certificate and key, and a client
/// certificate verifier when CAs are listed.
fn termination_config(
    t: &AgentTlsTerminationSection,
    path: &Path,
) -> Result<Arc<rustls::ServerConfig>, String> {
    let verifier = if t.mutual_tls_certificate_authorities.is_empty() {
        None
    } else {
        let cas: Vec<_> = t
            .mutual_tls_certificate_authorities
            .iter()
            .map(|p| relative_to(path, p))
            .collect();
        let refs: Vec<&Path> = cas.iter().map(|p| p.as_path()).collect();
        let roots = tls::load_roots(&refs)
            .map_err(|e| format!("mutual_tls_certificate_authorities: {e}"))?;
        Some(tls::client_verifier(roots, refs[0]).map_err(|e| e.to_string())?)
    };
    tls::server_config_from_files(
        &relative_to(path, &t.server_certificate),
        &relative_to(path, &t.server_private_key),
        verifier,
    )
    .map_err(|e| e.to_string())
}

/// Loads `upstream.tls`: the CA (or webpki roots) and the name to verify.
fn upstream_tls(
    t: &UpstreamTlsSection,
    upstream: &str,
    path: &Path,
    h2: bool,
) -> Result<UpstreamTls, String> {
    let config = match &t.ca {
        Some(ca) => {
            let ca = relative_to(path, ca);
            let certs = tls::load_certs(&ca).map_err(|e| format!("ca: {e}"))?;
            tls::client_config_named(Some(certs), &ca).map_err(|e| format!("ca: {e}"))?
        }
        None => tls::client_config(None).map_err(|e| e.to_string())?,
    };
    // HTTP/2 over TLS is negotiated by ALPN (RFC 9113 3.2).
    let config = if h2 {
        let mut c = (*config).clone();
        c.alpn_protocols = vec![b"h2".to_vec()];
        Arc::new(c)
    } else {
        config
    };
    let name = match &t.server_name {
        Some(n) => n.clone(),
        None => connect_host(upstream).unwrap_or_default().to_string(),
    };
    let server_name = ServerName::try_from(name.clone())
        .map_err(|_| format!("server_name: `{name}` is not a valid DNS name or IP"))?;
    Ok(UpstreamTls {
        config,
        server_name,
    })
}
