//! [`RestrictIps`]: the config of a `restrict-ips` action, shared by `on_tcp_connect`
//! (`model.rs`) and the HTTP phases (`http_model.rs`), with the check both parsers run.

use serde::Serialize;

use crate::Cidr;

/// Config of a `restrict-ips` action.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct RestrictIps {
    /// `true` (default): deny clients that fail; `false`: log them and go on.
    pub enforce: bool,
    /// When non-empty, a client must match one of these.
    pub allow: Vec<Cidr>,
    /// A client matching one of these fails, whatever `allow` says.
    pub deny: Vec<Cidr>,
}

impl RestrictIps {
    /// A restriction must list something: empty `allow` and `deny` restrict nothing.
    pub(crate) fn check(&self) -> Result<(), String> {
        if self.allow.is_empty() && self.deny.is_empty() {
            return Err(
                "`restrict-ips` with empty `allow` and `deny` restricts nothing: list at least one CIDR"
                    .to_owned(),
            );
        }
        Ok(())
    }
}
