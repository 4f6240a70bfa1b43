//! `sluice config check`: validates an edge or agent config (and the certificates and
//! policies it references) without starting anything, and lists warnings.

use std::path::Path;

use serde::Deserialize;

use super::{agent::AgentSettings, edge::EdgeSettings, parse_yaml, read_file, ConfigError};

/// What kind of file was checked, and what deserves a look.
#[derive(Debug)]
pub struct CheckReport {
    /// `edge` or `agent`.
    pub kind: &'static str,
    /// Things that are valid but probably not meant (e.g. policy rules that never run).
    pub warnings: Vec<String>,
}

/// Only the `version` key, to tell an edge file (1) from an agent file (3).
#[derive(Deserialize)]
struct VersionOnly {
    version: u32,
}

/// Checks the file at `path`.
pub fn check_file(path: &Path) -> Result<CheckReport, ConfigError> {
    let text = read_file(path)?;
    let VersionOnly { version } = serde_saphyr::from_str(&text).map_err(|e| {
        ConfigError::new(
            path,
            format!("cannot tell an edge from an agent config: {e}"),
        )
    })?;
    match version {
        1 => {
            let file: super::edge::EdgeFile = parse_yaml(&text, path)?;
            let mut warnings = Vec::new();
            for (i, ep) in file.endpoints.iter().enumerate() {
                for w in ep.traffic_policy.unreachable() {
                    warnings.push(format!("endpoints[{i}].traffic_policy: {w}"));
                }
            }
            EdgeSettings::from_yaml(&text, path)?;
            Ok(CheckReport {
                kind: "edge",
                warnings,
            })
        }
        3 => {
            let settings = AgentSettings::from_yaml(&text, path)?;
            let mut warnings = Vec::new();
            if settings.endpoints.is_empty() {
                warnings.push("endpoints: none; the agent will bind nothing".to_string());
            }
            Ok(CheckReport {
                kind: "agent",
                warnings,
            })
        }
        other => Err(ConfigError::new(
            path,
            format!("version: {other} is neither an edge config (1) nor an agent config (3)"),
        )),
    }
}
