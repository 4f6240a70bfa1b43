//! `sluice config check`: validates an edge or agent config (and the certificates and
//! policies it references) without starting anything, listing every problem with file,
//! line and key, and warnings.
//!
//! It tells the file's kind from its `version:` and runs that kind's one validation
//! ([`EdgeSettings::validate`], [`AgentSettings::validate`]), the very function the
//! daemon loads the file with ([`super::validate`]): `check` passes exactly the files
//! the daemon starts with, and reports the same problems it would refuse them for.

use std::path::Path;

use super::{
    agent::AgentSettings,
    edge::EdgeSettings,
    problems::Problem,
    read_file,
    tree::{self, Node},
    tree_de::from_node,
    ConfigError,
};

/// What kind of file was checked, what is wrong with it, and what deserves a look.
#[derive(Debug)]
pub struct CheckReport {
    /// `edge` or `agent`.
    pub kind: &'static str,
    /// Every problem found, in file order; empty when the file is valid.
    pub problems: Vec<Problem>,
    /// Things that are valid but probably not meant (e.g. policy rules that never run).
    pub warnings: Vec<String>,
}

/// Which daemon a config file is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// `version: 1` with `agents:`.
    Edge,
    /// `version: 3` with `agent:`.
    Agent,
}

impl Kind {
    /// `edge` or `agent`.
    pub fn name(self) -> &'static str {
        match self {
            Kind::Edge => "edge",
            Kind::Agent => "agent",
        }
    }
}

/// Tells an edge file (`version: 1`) from an agent file (`version: 3`).
pub fn kind_of(tree: &Node, path: &Path) -> Result<Kind, ConfigError> {
    if let Some(hint) = super::convert::v2_hint(tree) {
        return Err(ConfigError::new(path, hint));
    }
    // Quoted (`version: "3"`) as the loaders read it; not a number: by the keys.
    let version = tree.key("version").and_then(|n| from_node::<i128>(n).ok());
    match version {
        Some(1) => Ok(Kind::Edge),
        Some(3) => Ok(Kind::Agent),
        Some(other) => Err(ConfigError::new(
            path,
            format!("version: {other} is neither an edge config (1) nor an agent config (3)"),
        )),
        _ if tree.key("agents").is_some() => Ok(Kind::Edge),
        _ if tree.key("agent").is_some() => Ok(Kind::Agent),
        _ => Err(ConfigError::new(
            path,
            "cannot tell an edge from an agent config: no `version: 1` or `version: 3`",
        )),
    }
}

/// Reads and parses the file into a tree (the error is fatal: not YAML).
pub fn read_tree(path: &Path) -> Result<(String, Node), ConfigError> {
    let text = read_file(path)?;
    let tree = tree::parse(&text).map_err(|e| ConfigError::new(path, e))?;
    Ok((text, tree))
}

/// Checks the file at `path`. `Err` only when it cannot be read, is not YAML, or is
/// neither an edge nor an agent file; everything else is in the report.
pub fn check_file(path: &Path) -> Result<CheckReport, ConfigError> {
    let (_, tree) = read_tree(path)?;
    let kind = kind_of(&tree, path)?;
    let (outcome, warnings) = match kind {
        Kind::Edge => {
            let v = EdgeSettings::validate(tree, path);
            (v.outcome.map(drop), v.warnings)
        }
        Kind::Agent => {
            let v = AgentSettings::validate(tree, path);
            (v.outcome.map(drop), v.warnings)
        }
    };
    Ok(CheckReport {
        kind: kind.name(),
        problems: outcome.err().unwrap_or_default(),
        warnings,
    })
}
