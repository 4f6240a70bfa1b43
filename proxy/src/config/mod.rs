//! Configuration files: serde structs that mirror the YAML (unknown keys are errors),
//! parsed from a string apart from reading the file, then validated whole and resolved
//! into the settings the edge and agent run with (TLS material loaded, policies
//! compiled). Every error names the file and, where the YAML parser knows it, the line,
//! column and key.

pub mod admin;
pub mod agent;
pub mod check;
mod check_agent;
mod check_edge;
mod duration;
pub mod edge;
pub mod problems;
pub mod tree;
pub mod tree_de;

use std::path::{Path, PathBuf};

/// A configuration file could not be read, parsed or validated.
#[derive(Debug, thiserror::Error)]
#[error("{}: {message}", path.display())]
pub struct ConfigError {
    /// The file (or `<embedded>` for built-in configurations).
    pub path: PathBuf,
    /// What is wrong, with line and column where known.
    pub message: String,
}

impl ConfigError {
    pub(crate) fn new(path: &Path, message: impl ToString) -> Self {
        Self {
            path: path.to_path_buf(),
            message: message.to_string(),
        }
    }
}

/// Parses YAML into `T`, mapping the parser's error (which carries line and column).
pub(crate) fn parse_yaml<T: serde::de::DeserializeOwned>(
    text: &str,
    path: &Path,
) -> Result<T, ConfigError> {
    serde_saphyr::from_str(text).map_err(|e| ConfigError::new(path, e))
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
