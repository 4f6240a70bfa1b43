//! The one validation of an edge file, the resolve step [`super::validate::run`] runs
//! for `sluice edge` (at start and on every reload) and `sluice config check` alike:
//! the version, the agent port's certificate and key, service users (duplicate names,
//! `acl` rules, `owns` URLs and who already owns them), endpoint URLs (format,
//! duplicates, the TLS port they need), policies that do not compile, `terminate_tls`
//! files, listeners that would share a port (agent port, TLS port, admin API, `tcp://`
//! endpoints: [`crate::listeners`]) and the admin section ([`super::admin::resolve`]:
//! its values, its TLS files, a plain-HTTP listener beyond loopback). Every problem is
//! recorded at its key; each section is read from the tree on its own, so a broken one
//! hides nothing else.

use std::{net::SocketAddr, path::Path, sync::Arc, time::SystemTime};

use rustls::ServerConfig;
use sluice_policy::InternalUrl;

use super::{
    admin::{self, default_listen as default_admin_listen},
    edge::{
        check_country_source, declared_listeners, parse_endpoint_url, AgentsSection, CloudEndpoint,
        CloudEndpointSection, EdgeFile, EdgeSettings, EndpointAddr, GeoIpSection, ServiceUser,
        ServiceUserSection,
    },
    fleet,
    problems::Problems,
    relative_to,
    tree::Node,
    tree_de::from_node,
    validate::cert_and_key,
};
use crate::{
    edge::{auth::BindRule, conn_limits::LimitSettings, preauth::PreAuthSettings},
    listeners, tls,
};

/// The edge file's version.
const VERSION: u32 = 1;

/// Checks the edge file in `tree` and builds its settings (see [`super::validate`]).
/// Top-level values come from `whole`, the file as serde read it.
pub(super) fn resolve(
    tree: &Node,
    whole: Option<EdgeFile>,
    file: &Path,
    p: &mut Problems,
    warnings: &mut Vec<String>,
) -> Option<EdgeSettings> {
    if let Some(v) = tree.key("version").and_then(|n| from_node::<u32>(n).ok()) {
        if v != VERSION {
            p.at("version", format!("expected {VERSION}, found {v}"));
        }
    }
    let agent_port = tree
        .key("agents")
        .and_then(|node| agent_port(node, file, p, warnings));
    // `None`: no admin section; `Some(None)`: a broken one.
    let admin = tree.key("admin").map(|node| {
        from_node::<admin::AdminSection>(node)
            .ok()
            .and_then(|a| admin::resolve(a, file, p, warnings))
    });
    let users = service_users(tree, p);
    let geo = geoip(tree, file, p);
    let (endpoints, tcp) = endpoints(tree, file, tree.key("geoip").is_some(), p, warnings);
    check_listeners(tree, tcp, p);
    let edge_id = fleet::edge_id(tree, p);
    let etcd = fleet::state(tree, file, tree.key("state_dir").is_some(), p);

    let f = whole?;
    let AgentPort {
        section: agents,
        tls: agent_tls,
        not_after: agent_cert_not_after,
    } = agent_port?;
    let admin = match admin {
        None => None,
        Some(resolved) => Some(resolved?),
    };
    let d = PreAuthSettings::default();
    Some(EdgeSettings {
        workers: f
            .workers
            .unwrap_or_else(crate::runtime::default_workers)
            .max(1),
        agent_listen: agents.listen,
        agent_tls,
        agent_cert_not_after,
        plain_channels: agents.plain_channels,
        preauth: PreAuthSettings {
            max_unauthenticated: agents
                .max_unauthenticated
                .unwrap_or(d.max_unauthenticated)
                .max(1),
            max_unauthenticated_per_ip: agents
                .max_unauthenticated_per_ip
                .unwrap_or(d.max_unauthenticated_per_ip)
                .max(1),
            handshakes_per_ip_per_sec: agents
                .handshakes_per_ip_per_sec
                .unwrap_or(d.handshakes_per_ip_per_sec)
                .max(1),
            handshake_timeout: agents
                .handshake_timeout
                .unwrap_or(d.handshake_timeout)
                .max(std::time::Duration::from_millis(100)),
        },
        users,
        endpoints,
        tls_listen: f.tls_endpoints.map(|t| t.listen),
        http_listen: f.http_endpoints.map(|h| h.listen),
        drain_timeout: f.drain_timeout,
        pump: crate::io::Pump::default(),
        admin,
        default_max_connections_per_ip: f.limits.max_connections_per_ip.filter(|n| *n > 0),
        state_dir: f.state_dir.map(|d| relative_to(file, &d)),
        etcd,
        edge_id,
        public_address: f.public_address,
        geo,
    })
}

/// `geoip:`, its database read and checked.
fn geoip(tree: &Node, file: &Path, p: &mut Problems) -> Option<Arc<crate::geo::GeoDb>> {
    let section = from_node::<GeoIpSection>(tree.key("geoip")?).ok()?;
    crate::geo::GeoDb::open(&relative_to(file, &section.database))
        .map(Arc::new)
        .map_err(|e| p.at("geoip.database", e))
        .ok()
}

/// `agents:`, checked, with its TLS configuration loaded.
struct AgentPort {
    section: AgentsSection,
    tls: Arc<ServerConfig>,
    not_after: Option<SystemTime>,
}

fn agent_port(
    node: &Node,
    file: &Path,
    p: &mut Problems,
    warnings: &mut Vec<String>,
) -> Option<AgentPort> {
    // Not pruned, so serde accepted it in the first pass.
    let section = from_node::<AgentsSection>(node).ok()?;
    let ck = cert_and_key(file, "agents.tls", &section.tls, p)?;
    // What agents would refuse in the handshake, said now in a sentence. An expired
    // certificate is a warning (the edge still starts, and says so loudly; replace it
    // and reload), the rest can never work.
    if let Some(leaf) = ck.certs.first() {
        let path = ck.cert_path.display();
        for problem in tls::leaf_problems(leaf) {
            p.at("agents.tls.cert", format!("{path}: {problem}"));
        }
        if let Some(problem) = tls::validity_problem(leaf) {
            warnings.push(format!("agents.tls.cert: {path}: {problem}"));
        }
    }
    let not_after = tls::not_after(&ck.certs);
    let tls = tls::server_config(ck.certs, ck.key, &ck.cert_path, &ck.key_path)
        .map_err(|e| p.at("agents.tls", e))
        .ok()?;
    Some(AgentPort {
        section,
        tls,
        not_after,
    })
}

fn service_users(tree: &Node, p: &mut Problems) -> Vec<ServiceUser> {
    let mut names: Vec<String> = Vec::new();
    let mut users: Vec<ServiceUser> = Vec::new();
    for (i, node) in tree
        .key("service_users")
        .into_iter()
        .flat_map(Node::all_items)
    {
        // From the tree: a user dropped for another reason still has its name counted.
        if let Some(name) = node.text("name") {
            if names.contains(&name) {
                p.at(
                    &format!("service_users[{i}].name"),
                    format!("`{name}` is listed twice"),
                );
            }
            names.push(name);
        }
        if node.pruned {
            continue;
        }
        let Ok(u) = from_node::<ServiceUserSection>(node) else {
            continue;
        };
        let mut acl = Vec::with_capacity(u.acl.len());
        for (j, rule) in u.acl.iter().enumerate() {
            match BindRule::parse(rule) {
                Ok(rule) => acl.push(rule),
                Err(m) => p.at(&format!("service_users[{i}].acl[{j}]"), m),
            }
        }
        let mut owns: Vec<String> = Vec::new();
        for (j, url) in u.owns.iter().enumerate() {
            let at = format!("service_users[{i}].owns[{j}]");
            let canonical = match url.parse::<InternalUrl>() {
                Ok(u) => u.canonical(),
                Err(e) => {
                    p.at(&at, format!("`{url}`: {e}"));
                    continue;
                }
            };
            if let Some(other) = users.iter().find(|x| x.owns.contains(&canonical)) {
                p.at(
                    &at,
                    format!(
                        "{canonical} is already owned by service user `{}`",
                        other.name
                    ),
                );
            }
            if !owns.contains(&canonical) {
                owns.push(canonical);
            }
        }
        users.push(ServiceUser {
            name: u.name,
            token_hashes: u.authtokens,
            acl,
            owns,
        });
    }
    users
}

/// The endpoints serde accepted, resolved, and the `tcp://` address of every entry
/// (dropped ones too) for the listener check.
fn endpoints(
    tree: &Node,
    file: &Path,
    has_geoip: bool,
    p: &mut Problems,
    warnings: &mut Vec<String>,
) -> (Vec<CloudEndpoint>, Vec<(usize, SocketAddr)>) {
    let tls_port = tree.key("tls_endpoints").is_some();
    let http_port = tree.key("http_endpoints").is_some();
    let mut sni = crate::sni::SniRouter::new();
    let mut hosts = crate::sni::SniRouter::new();
    let mut tcp: Vec<(usize, SocketAddr)> = Vec::new();
    let mut out = Vec::new();
    for (i, node) in tree.key("endpoints").into_iter().flat_map(Node::all_items) {
        let at = |key: &str| format!("endpoints[{i}].{key}");
        // From the tree, so that an entry dropped for another reason (a broken policy)
        // still has its URL checked.
        let mut addr = None;
        if let Some(url) = node.text("url") {
            match parse_endpoint_url(&url) {
                Err(m) => p.at(&at("url"), m),
                Ok(EndpointAddr::Tls(host)) => {
                    if !tls_port {
                        p.at(
                            &at("url"),
                            format!("`{url}` needs `tls_endpoints: {{ listen: ADDR:PORT }}`"),
                        );
                    }
                    match sni.insert(&host, ()) {
                        Err(e) => p.at(&at("url"), format!("`{url}`: {e}")),
                        Ok(Some(())) => p.at(&at("url"), format!("`{url}` is listed twice")),
                        Ok(None) => {}
                    }
                    addr = Some(EndpointAddr::Tls(host));
                }
                Ok(EndpointAddr::Https(host)) => {
                    if !tls_port {
                        p.at(
                            &at("url"),
                            format!("`{url}` needs `tls_endpoints: {{ listen: ADDR:PORT }}`"),
                        );
                    }
                    if node.key("terminate_tls").is_none() {
                        p.at(
                            &at("url"),
                            format!("`{url}` needs `terminate_tls: {{ cert: FILE, key: FILE }}` (the edge ends its TLS)"),
                        );
                    }
                    match sni.insert(&host, ()) {
                        Err(e) => p.at(&at("url"), format!("`{url}`: {e}")),
                        Ok(Some(())) => {
                            p.at(&at("url"), format!("`{url}`: its host is listed twice"))
                        }
                        Ok(None) => {}
                    }
                    addr = Some(EndpointAddr::Https(host));
                }
                Ok(EndpointAddr::Http(host)) => {
                    if !http_port {
                        p.at(
                            &at("url"),
                            format!("`{url}` needs `http_endpoints: {{ listen: ADDR:PORT }}`"),
                        );
                    }
                    match hosts.insert(&host, ()) {
                        Err(e) => p.at(&at("url"), format!("`{url}`: {e}")),
                        Ok(Some(())) => p.at(&at("url"), format!("`{url}` is listed twice")),
                        Ok(None) => {}
                    }
                    addr = Some(EndpointAddr::Http(host));
                }
                Ok(EndpointAddr::Tcp(a)) => {
                    tcp.push((i, a));
                    addr = Some(EndpointAddr::Tcp(a));
                }
            }
        }
        if node.pruned {
            continue;
        }
        let Ok(ep) = from_node::<CloudEndpointSection>(node) else {
            continue;
        };
        // The digests are taken before the files are read for use: a file replaced in
        // between leaves a digest of the old one, and the next reload builds again.
        let terminate_tls_digest = ep.terminate_tls.as_ref().map(|files| {
            sha256_of(
                [&files.cert, &files.key]
                    .map(|f| std::fs::read(relative_to(file, f)).unwrap_or_default()),
            )
        });
        let policy_tls_digest = sha256_of(
            ep.traffic_policy
                .terminate_tls_actions()
                .map(|action| action.material()),
        );
        let policy = ep
            .traffic_policy
            .compile()
            .map_err(|e| p.at(&at("traffic_policy"), e));
        for w in ep.traffic_policy.unreachable() {
            warnings.push(format!("{}: {w}", at("traffic_policy")));
        }
        let terminate_tls = ep
            .terminate_tls
            .as_ref()
            .map(|files| {
                tls::server_config_from_files(
                    &relative_to(file, &files.cert),
                    &relative_to(file, &files.key),
                    None,
                )
                .map_err(|e| p.at(&at("terminate_tls"), e))
            })
            .transpose();
        let response_timeout = super::edge::check_response_timeout(&ep.url, ep.response_timeout)
            .map_err(|e| p.at(&at("response_timeout"), e));
        let (Some(addr), Ok(policy), Ok(terminate_tls), Ok(response_timeout)) =
            (addr, policy, terminate_tls, response_timeout)
        else {
            continue;
        };
        if let Err(e) = addr
            .check_policy(&policy)
            .and_then(|()| check_country_source(&policy, has_geoip))
        {
            p.at(&at("traffic_policy"), e);
            continue;
        }
        out.push(CloudEndpoint {
            limits: LimitSettings {
                max_connections: ep.max_connections.filter(|n| *n > 0),
                // An explicit 0 turns the edge-wide default off for this endpoint.
                max_connections_per_ip: match ep.max_connections_per_ip {
                    Some(0) => Some(u32::MAX),
                    other => other,
                },
            },
            policy_json: serde_json::to_string(&ep.traffic_policy).unwrap_or_default(),
            url: ep.url,
            addr,
            policy,
            idle_timeout: (!ep.idle_timeout.is_zero()).then_some(ep.idle_timeout),
            response_timeout,
            terminate_tls,
            terminate_tls_digest,
            policy_tls_digest,
        });
    }
    (out, tcp)
}

/// SHA-256 of `parts` one after another: what TLS material was loaded, so a reload
/// can tell replaced files from unchanged ones.
fn sha256_of<P: AsRef<[u8]>>(parts: impl IntoIterator<Item = P>) -> [u8; 32] {
    use sha2::Digest;
    let mut h = sha2::Sha256::new();
    for part in parts {
        h.update(part);
    }
    h.finalize().into()
}

/// No two listeners the file declares share a port; each clash is reported at the
/// later one, naming the earlier. Addresses that do not parse are serde's to report.
fn check_listeners(tree: &Node, tcp: Vec<(usize, SocketAddr)>, p: &mut Problems) {
    let listen =
        |section: &str| -> Option<SocketAddr> { tree.key(section)?.text("listen")?.parse().ok() };
    let admin = match tree.key("admin") {
        Some(node) if node.key("listen").is_none() => Some(default_admin_listen()),
        Some(_) => listen("admin"),
        None => None,
    };
    let declared = declared_listeners(
        listen("agents"),
        listen("tls_endpoints"),
        listen("http_endpoints"),
        admin,
        tcp,
    );
    for (later, earlier) in listeners::clashes(&declared) {
        let (later, earlier) = (&declared[later], &declared[earlier]);
        p.at(&later.name, listeners::clash_message(later, earlier));
    }
}
