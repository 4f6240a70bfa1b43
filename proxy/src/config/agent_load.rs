//! Loading an agent file: read it, parse it into a tree, and run its one validation
//! (`agent_validate`) into [`AgentSettings`]. Apart from `agent.rs` so that the types do
//! not depend on the validation that depends on them.

use std::path::Path;

use super::{
    agent::{AgentFile, AgentSettings},
    read_file,
    tree::{self, Node},
    validate::{self, Validated},
    ConfigError,
};

impl AgentSettings {
    /// Reads, parses and validates an agent config file.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        Self::from_yaml(&read_file(path)?, path)
    }

    /// Parses and validates agent config text; `path` is used for messages and for
    /// resolving relative file names.
    pub fn from_yaml(text: &str, path: &Path) -> Result<Self, ConfigError> {
        let tree = tree::parse(text).map_err(|e| ConfigError::new(path, e))?;
        if let Some(hint) = super::convert::v2_hint(&tree) {
            return Err(ConfigError::new(path, hint));
        }
        let validated = Self::validate(tree, path);
        let warnings = validated.warnings.clone();
        let mut settings = validated.into_result(path)?;
        settings.warnings = warnings;
        Ok(settings)
    }

    /// The one validation of an agent file (`path` parsed into `tree`): every problem,
    /// or the settings. `sluice config check` runs exactly this. ngrok's cloud-only
    /// keys are set aside first, with a warning (ngrok_keys.rs).
    pub fn validate(mut tree: Node, path: &Path) -> Validated<Self> {
        let ignored = super::ngrok_keys::set_aside(&mut tree);
        let mut validated =
            validate::run::<AgentFile, _>(tree, path, super::agent_validate::resolve);
        validated.warnings.splice(0..0, ignored);
        validated
    }
}
