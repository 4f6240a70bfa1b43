//! What the unit needs to know from a config file: edge or agent (the config loaders
//! decide), the drain timeout, whether any listener binds a port below 1024, and the
//! state directory, if any.

use std::{net::SocketAddr, path::Path, time::Duration};

use crate::config::{
    agent::AgentFile,
    check::{kind_of, read_tree, Kind},
    edge::EdgeFile,
    relative_to,
    tree::{Node, Seg},
    tree_de::from_node,
};

/// The facts a unit is rendered from.
#[derive(Debug)]
pub struct ConfigFacts {
    /// Edge or agent.
    pub kind: Kind,
    /// `drain_timeout` (edge) or `agent.drain_timeout`.
    pub drain_timeout: Duration,
    /// Some `listen:` address or `tcp://` endpoint uses a port in 1..1024.
    pub low_port: bool,
    /// `state_dir`, absolute.
    pub state_dir: Option<std::path::PathBuf>,
}

/// Reads `config` (an absolute path) with the daemons' own structs; a file they would
/// refuse is an error naming the first problem.
pub fn read(config: &Path) -> anyhow::Result<ConfigFacts> {
    let (_, tree) = read_tree(config)?;
    let kind = kind_of(&tree, config)?;
    let invalid = |e: crate::config::tree_de::DeError| {
        let line = e.loc.map(|l| format!(":{}:{}", l.line, l.column));
        anyhow::anyhow!(
            "{}{}: {}: {e} (`sluice config check` lists every problem)",
            config.display(),
            line.unwrap_or_default(),
            e.path
        )
    };
    let drain_timeout = match kind {
        Kind::Edge => from_node::<EdgeFile>(&tree).map_err(invalid)?.drain_timeout,
        Kind::Agent => {
            from_node::<AgentFile>(&tree)
                .map_err(invalid)?
                .agent
                .drain_timeout
        }
    };
    Ok(ConfigFacts {
        kind,
        drain_timeout,
        low_port: binds_low_port(&tree),
        state_dir: state_dir(&tree, config),
    })
}

/// Any `listen:` value, at any depth, or endpoint `url: tcp://ADDR:PORT`, with a port in
/// 1..1024 — so listeners added to the config later count without changes here.
pub fn binds_low_port(tree: &Node) -> bool {
    let mut low = false;
    tree.walk(&mut |path, key, node| {
        let in_endpoints = matches!(path.0.first(), Some(Seg::Key(k)) if k == "endpoints");
        let addr = match (key, node.as_text()) {
            ("listen", Some(text)) => text.parse::<SocketAddr>().ok(),
            ("url", Some(text)) if in_endpoints => text
                .strip_prefix("tcp://")
                .and_then(|a| a.parse::<SocketAddr>().ok()),
            _ => None,
        };
        low |= addr.is_some_and(|a| (1..1024).contains(&a.port()));
    });
    low
}

/// `state_dir:` (top level), resolved against the config's directory.
pub fn state_dir(tree: &Node, config: &Path) -> Option<std::path::PathBuf> {
    tree.text("state_dir")
        .map(|d| relative_to(config, Path::new(&d)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::tree;

    #[test]
    fn state_dir_is_absolute() {
        let t = tree::parse("version: 1\nstate_dir: state\n").unwrap();
        let dir = state_dir(&t, Path::new("/etc/sluice/edge.yml"));
        assert_eq!(dir, Some("/etc/sluice/state".into()));
        let t = tree::parse("version: 1\n").unwrap();
        assert_eq!(state_dir(&t, Path::new("/etc/sluice/edge.yml")), None);
    }

    #[test]
    fn low_ports_anywhere() {
        let low = |yaml: &str| binds_low_port(&tree::parse(yaml).unwrap());
        assert!(!low(
            "agents: { listen: 0.0.0.0:4443 }\nendpoints: [ { url: tcp://0.0.0.0:21001 } ]\n"
        ));
        assert!(low("agents: { listen: 0.0.0.0:443 }\n"));
        assert!(low("tls_endpoints: { listen: '[::]:443' }\n"));
        assert!(low("admin: { listen: 127.0.0.1:80 }\n"));
        assert!(low("endpoints: [ { url: tcp://0.0.0.0:22 } ]\n"));
        assert!(!low("endpoints: [ { url: tcp://db.internal:22 } ]\n"));
        assert!(!low("agents: { listen: 127.0.0.1:0 }\n"));
    }
}
