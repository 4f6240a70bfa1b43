//! Loading an edge file: read it, parse it into a tree, and run its one validation
//! (`edge_validate`) into [`EdgeSettings`]. Apart from `edge.rs` so that the types do not
//! depend on the validation that depends on them.

use std::path::Path;

use super::{
    edge::{EdgeFile, EdgeSettings},
    read_file,
    tree::{self, Node},
    validate::{self, Validated},
    ConfigError,
};

impl EdgeSettings {
    /// Reads, parses and validates an edge config file.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        Self::from_yaml(&read_file(path)?, path)
    }

    /// Parses and validates edge config text; relative paths resolve against `path`.
    pub fn from_yaml(text: &str, path: &Path) -> Result<Self, ConfigError> {
        let tree = tree::parse(text).map_err(|e| ConfigError::new(path, e))?;
        Self::validate(tree, path).into_result(path)
    }

    /// The one validation of an edge file (`path` parsed into `tree`): every problem,
    /// or the settings. `sluice config check` and config reloads run exactly this.
    pub fn validate(tree: Node, path: &Path) -> Validated<Self> {
        validate::run::<EdgeFile, _>(tree, path, super::edge_validate::resolve)
    }
}
