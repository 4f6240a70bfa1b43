//! Configuration files: serde structs that mirror the YAML (unknown keys are errors),
//! parsed from a string apart from reading the file, then validated whole and resolved
//! into the settings the edge and agent run with (TLS material loaded, policies
//! compiled). Each file kind has one validation ([`validate`]), run both by the daemon
//! that loads the file and by `sluice config check`; it reports every problem with the
//! file, line, column and key path, and the daemon refuses a file with any.

pub mod admin;
pub mod agent;
mod agent_load;
mod agent_validate;
pub mod check;
pub mod convert;
mod duration;
pub mod edge;
mod edge_load;
mod edge_validate;
pub mod fleet;
mod ngrok_keys;
pub mod problems;
pub mod tree;
pub mod tree_de;
pub mod validate;

#[cfg(test)]
mod tests;

use std::{
    fmt,
    path::{Path, PathBuf},
};

use problems::Problem;
use serde::Deserialize;

/// A certificate chain and its key, as PEM files (`tls:` of the edge's agent port, of
/// the admin API, of `terminate_tls`).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsFiles {
    /// PEM certificate chain.
    pub cert: std::path::PathBuf,
    /// PEM private key.
    pub key: std::path::PathBuf,
}

/// A configuration file could not be read, parsed or validated: every problem found.
#[derive(Debug, thiserror::Error)]
pub struct ConfigError {
    /// The file (or `<embedded>` for built-in configurations).
    pub path: PathBuf,
    /// What is wrong, in file order, each with line and column where known; never
    /// empty.
    pub problems: Vec<Problem>,
}

impl fmt::Display for ConfigError {
    /// One problem a line (`FILE:LINE:COLUMN: key.path: what`), as `config check`
    /// prints them.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, p) in self.problems.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{p}")?;
        }
        if self.problems.is_empty() {
            write!(f, "{}: invalid", self.path.display())?;
        }
        Ok(())
    }
}

impl ConfigError {
    /// A problem of the whole file (it cannot be read, is not YAML, …).
    pub(crate) fn new(path: &Path, message: impl ToString) -> Self {
        Self::from_problems(path, vec![Problem::whole(path, message)])
    }

    /// The problems the validation found.
    pub(crate) fn from_problems(path: &Path, problems: Vec<Problem>) -> Self {
        Self {
            path: path.to_path_buf(),
            problems,
        }
    }
}

/// Reads a file into a string with an error that names it.
pub(crate) fn read_file(path: &Path) -> Result<String, ConfigError> {
    std::fs::read_to_string(path).map_err(|e| ConfigError::new(path, format!("cannot read: {e}")))
}

/// Resolves a path from a config file relative to the file's directory.
pub(crate) fn relative_to(config_path: &Path, p: &Path) -> PathBuf {
    if p.is_absolute() {
        return p.to_path_buf();
    }
    config_path
        .parent()
        .map(|dir| dir.join(p))
        .unwrap_or_else(|| p.to_path_buf())
}
