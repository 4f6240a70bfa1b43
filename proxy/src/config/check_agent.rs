//! The semantic checks of an agent file for `sluice config check`, collecting every
//! problem: the `agent:` section's values and CA file, and each endpoint's URL
//! (duplicates), upstream address and PROXY protocol version. Each section is read from
//! the tree on its own, so a broken one hides nothing else.

use std::path::Path;

use rustls_pki_types::ServerName;
use sluice_policy::InternalUrl;

use super::{
    agent::{connect_host, AgentSection},
    problems::Problems,
    relative_to,
    tree::{Node, Value},
    tree_de::from_node,
};
use crate::tls;

/// The loader's bound on `data_channels` (config/agent.rs); the final run of the
/// loader itself catches any drift.
const MAX_DATA_CHANNELS: usize = 1024;

/// Checks what serde cannot. Plain values are read from the tree, not the typed
/// sections, so that a section dropped for another reason still has them checked.
pub(super) fn check(tree: &Node, file: &Path, p: &mut Problems) {
    if let Some(agent) = tree.key("agent") {
        check_agent_section(agent, file, p);
    }
    let mut urls: Vec<String> = Vec::new();
    for (i, node) in tree.key("endpoints").into_iter().flat_map(Node::all_items) {
        let at = |key: &str| format!("endpoints[{i}].{key}");
        if let Some(Ok(url)) = node.text("url").map(|u| u.parse::<InternalUrl>()) {
            let url = url.canonical();
            if urls.contains(&url) {
                p.at(&at("url"), format!("`{url}` is listed twice"));
            }
            urls.push(url);
        }
        let Some(upstream) = node.key("upstream") else {
            continue;
        };
        if let Some(u) = upstream.text("url").filter(|u| connect_host(u).is_none()) {
            p.at(
                &at("upstream.url"),
                format!("expected host:port, found `{u}`"),
            );
        }
        if let Some(Value::Int(v)) = upstream.key("proxy_protocol").map(|n| &n.value) {
            if !matches!(v, 1 | 2) {
                p.at(
                    &at("upstream.proxy_protocol"),
                    format!("expected 1 or 2, found {v}"),
                );
            }
        }
    }
}

fn check_agent_section(a: &Node, file: &Path, p: &mut Problems) {
    if a.text("authtoken").is_some_and(|t| t.trim().is_empty()) {
        p.at("agent.authtoken", "must not be empty");
    }
    if let Some(connect_url) = a.text("connect_url") {
        match connect_host(&connect_url) {
            None => p.at(
                "agent.connect_url",
                format!("expected host:port, found `{connect_url}`"),
            ),
            Some(host) => {
                let name = a.text("server_name").unwrap_or_else(|| host.to_string());
                if ServerName::try_from(name.clone()).is_err() {
                    p.at(
                        "agent.server_name",
                        format!("`{name}` is not a valid DNS name or IP"),
                    );
                }
            }
        }
    }
    if let Some(cas) = a.text("connect_cas") {
        match tls::load_certs(&relative_to(file, Path::new(&cas))) {
            Err(e) => p.at("agent.connect_cas", e),
            Ok(certs) => {
                if let Err(e) = tls::client_config(Some(certs)) {
                    p.at("agent.connect_cas", e);
                }
            }
        }
    }
    let Ok(a) = from_node::<AgentSection>(a) else {
        return;
    };
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
}
