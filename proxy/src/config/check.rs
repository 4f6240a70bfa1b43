//! `sluice config check`: validates an edge or agent config (and the certificates and
//! policies it references) without starting anything, listing every problem with file,
//! line and key, and warnings.
//!
//! Three passes over the file's [`tree`](super::tree): the config structs themselves
//! deserialize it again and again, each error recorded and its node pruned
//! ([`problems::collect`]): unknown keys, types, policies; then the semantic checks
//! (`check_edge`, `check_agent`) on every section that survived; and when both found
//! nothing, the daemon's own loader, so `check` never passes a file the daemon refuses.

use std::path::Path;

use super::{
    agent::{AgentFile, AgentSettings},
    check_agent, check_edge,
    edge::{EdgeFile, EdgeSettings},
    problems::{self, Problem, Problems},
    read_file,
    tree::{self, Node, Value},
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
    let version = tree.key("version").map(|n| &n.value);
    match version {
        Some(Value::Int(1)) => Ok(Kind::Edge),
        Some(Value::Int(3)) => Ok(Kind::Agent),
        Some(Value::Int(other)) => Err(ConfigError::new(
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
    let (text, mut tree) = read_tree(path)?;
    let kind = kind_of(&tree, path)?;
    let mut found = Vec::new();
    let mut warnings = Vec::new();
    match kind {
        Kind::Edge => {
            problems::collect::<EdgeFile>(&mut tree, path, &mut found);
        }
        Kind::Agent => {
            problems::collect::<AgentFile>(&mut tree, path, &mut found);
        }
    }
    let mut p = Problems::new(path.to_path_buf(), &tree);
    match kind {
        Kind::Edge => check_edge::check(&tree, path, &mut p, &mut warnings),
        Kind::Agent => check_agent::check(&tree, path, &mut p),
    }
    if found.is_empty() && p.list.is_empty() {
        let loaded = match kind {
            Kind::Edge => EdgeSettings::from_yaml(&text, path).map(drop),
            Kind::Agent => AgentSettings::from_yaml(&text, path).map(drop),
        };
        if let Err(e) = loaded {
            p.message(&e.message);
        }
    }
    // With problems, broken endpoints were pruned from the tree: the count would lie.
    let clean = found.is_empty() && p.list.is_empty();
    if clean && kind == Kind::Agent && tree.key("endpoints").is_none_or(|e| e.items().count() == 0)
    {
        warnings.push("endpoints: none; the agent will bind nothing".to_string());
    }
    found.append(&mut p.list);
    // File order; problems without a line (the whole file) last.
    found.sort_by_key(|p| p.loc.filter(|l| l.line > 0).map_or(u64::MAX, |l| l.line));
    Ok(CheckReport {
        kind: kind.name(),
        problems: found,
        warnings,
    })
}
