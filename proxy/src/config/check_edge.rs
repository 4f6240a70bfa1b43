//! The semantic checks of an edge file for `sluice config check`, collecting every
//! problem: certificate and key files, duplicate users, endpoint URLs (format,
//! duplicates, the TLS port they need), listeners that would share a port (agent port,
//! TLS port, admin API, `tcp://` endpoints: [`crate::listeners`]), policies that do
//! not compile, and the admin section's values (a plain-HTTP listener beyond loopback
//! among them). Each section is read from the tree on its own, so a broken one hides
//! nothing else.

use std::{net::SocketAddr, path::Path};

use super::{
    admin::{
        default_listen as default_admin_listen, plaintext_warning, value_problems, AdminSection,
    },
    edge::{declared_listeners, parse_endpoint_url, CloudEndpointSection, EndpointAddr},
    problems::Problems,
    relative_to,
    tree::Node,
    tree_de::from_node,
};
use crate::{listeners, tls};

/// Checks what serde cannot; warnings go to `warnings`.
pub(super) fn check(tree: &Node, file: &Path, p: &mut Problems, warnings: &mut Vec<String>) {
    // Plain values are read from the tree, not the typed sections, so that an entry
    // dropped for another reason (a broken policy) still has its URL and files checked.
    if let Some(node) = tree.key("agents").and_then(|a| a.key("tls")) {
        if let (Some(cert), Some(key)) = (node.text("cert"), node.text("key")) {
            check_tls_files(file, "agents.tls", &cert, &key, p);
        }
    }
    if let Some(admin) = tree.key("admin") {
        check_admin(admin, file, p, warnings);
    }
    let mut names: Vec<String> = Vec::new();
    for (i, node) in tree
        .key("service_users")
        .into_iter()
        .flat_map(Node::all_items)
    {
        let Some(name) = node.text("name") else {
            continue;
        };
        if names.contains(&name) {
            p.at(
                &format!("service_users[{i}].name"),
                format!("`{name}` is listed twice"),
            );
        }
        names.push(name);
    }
    let tls_port = tree.key("tls_endpoints").is_some();
    let mut sni = crate::sni::SniRouter::new();
    let mut tcp: Vec<(usize, SocketAddr)> = Vec::new();
    for (i, node) in tree.key("endpoints").into_iter().flat_map(Node::all_items) {
        let at = |key: &str| format!("endpoints[{i}].{key}");
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
                }
                Ok(EndpointAddr::Tcp(addr)) => tcp.push((i, addr)),
            }
        }
        if node.pruned {
            continue;
        }
        let Ok(ep) = from_node::<CloudEndpointSection>(node) else {
            continue;
        };
        if let Err(e) = ep.traffic_policy.compile() {
            p.at(&at("traffic_policy"), e);
        }
        for w in ep.traffic_policy.unreachable() {
            warnings.push(format!("{}: {w}", at("traffic_policy")));
        }
    }
    check_listeners(tree, tcp, p);
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
    let declared = declared_listeners(listen("agents"), listen("tls_endpoints"), admin, tcp);
    for (later, earlier) in listeners::clashes(&declared) {
        let (later, earlier) = (&declared[later], &declared[earlier]);
        p.at(&later.name, listeners::clash_message(later, earlier));
    }
}

/// `admin:`: its TLS files, and the values the loader refuses.
fn check_admin(node: &Node, file: &Path, p: &mut Problems, warnings: &mut Vec<String>) {
    if let Some(tls) = node.key("tls") {
        if let (Some(cert), Some(key)) = (tls.text("cert"), tls.text("key")) {
            check_tls_files(file, "admin.tls", &cert, &key, p);
        }
    }
    if node.pruned {
        return;
    }
    let Ok(admin) = from_node::<AdminSection>(node) else {
        return;
    };
    for (key, message) in value_problems(&admin) {
        p.at(key, message);
    }
    if admin.tls.is_none() && admin.allow_plaintext_remote && !admin.listen.ip().is_loopback() {
        warnings.push(plaintext_warning(admin.listen));
    }
}

/// A certificate chain and key that load and belong together.
fn check_tls_files(file: &Path, at: &str, cert: &str, key: &str, p: &mut Problems) {
    let cert_path = relative_to(file, Path::new(cert));
    let certs = tls::load_certs(&cert_path).map_err(|e| p.at(&format!("{at}.cert"), e));
    let key_path = relative_to(file, Path::new(key));
    let key = tls::load_key(&key_path).map_err(|e| p.at(&format!("{at}.key"), e));
    if let (Ok(certs), Ok(key)) = (certs, key) {
        if let Err(e) = tls::server_config(certs, key, &cert_path, &key_path) {
            p.at(at, e);
        }
    }
}
