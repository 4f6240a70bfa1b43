//! The policy model: [`TrafficPolicy`], [`Rule`], [`Action`] and the action
//! configs, in the shape of ngrok's Traffic Policy for TCP/TLS endpoints.
//!
//! The types deserialize from YAML (see `parse.rs`, which validates while it
//! reads so that every error carries a location, and also owns
//! [`TrafficPolicy::validate`] for policies built in code) and serialize back
//! to the same shape, so the admin API can show a stored policy. Plain data:
//! this module uses no other module of the crate but `url`, `restrict`, `expr`,
//! `tls_action` and `http_model`.

use serde::Serialize;

pub use crate::log_vars::{Log, SetVars, VarValue};
pub use crate::restrict::RestrictIps;
pub use crate::tls_action::{MtlsStrategy, Pem, TerminateTls, TlsVersion};
use crate::{expr::Expression, http_model::HttpRule, InternalUrl};

/// A traffic policy: the `on_tcp_connect` rules of one cloud endpoint, and for an
/// `http://` or `https://` endpoint its `on_http_request` and `on_http_response` rules.
///
/// Build one with [`TrafficPolicy::from_yaml`], or deserialize it from a
/// larger document (it validates itself during deserialization), then
/// [`compile`](TrafficPolicy::compile) it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct TrafficPolicy {
    /// Rules run in order on every accepted connection.
    pub on_tcp_connect: Vec<Rule>,
    /// Rules run in order on every request (HTTP endpoints).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub on_http_request: Vec<HttpRule>,
    /// Rules run in order on every response (HTTP endpoints).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub on_http_response: Vec<HttpRule>,
}

impl TrafficPolicy {
    /// Whether `on_tcp_connect` decides connections (what a `tcp://` or `tls://`
    /// endpoint needs): some rule forwards, denies or closes, under its expressions
    /// or always. A connection no rule decides is closed.
    pub fn decides_at_connect(&self) -> bool {
        self.on_tcp_connect
            .iter()
            .any(|r| r.actions.iter().any(Action::always_decides))
    }

    /// Whether it has HTTP rules (only `http://` and `https://` endpoints run them).
    pub fn has_http_rules(&self) -> bool {
        !self.on_http_request.is_empty() || !self.on_http_response.is_empty()
    }

    /// The `terminate-tls` actions of `on_tcp_connect`, in order.
    pub fn terminate_tls_actions(&self) -> impl Iterator<Item = &TerminateTls> {
        self.on_tcp_connect
            .iter()
            .flat_map(|r| &r.actions)
            .filter_map(|a| match a {
                Action::TerminateTls(t) => Some(t),
                _ => None,
            })
    }
}

/// One rule: an optional name, the expressions that must all hold for it to apply,
/// and the actions it runs in order.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Rule {
    /// Shown in logs and decisions.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// CEL over `conn.*` (and `vars.*`); all must hold (none: the rule always applies).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub expressions: Vec<Expression>,
    /// Run in order; the first terminating action decides.
    pub actions: Vec<Action>,
}

/// One action of a rule.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "type", content = "config", rename_all = "kebab-case")]
pub enum Action {
    /// Pass only clients in `allow` (when non-empty) and not in `deny`;
    /// a client that fails is denied (terminating) when `enforce` is true,
    /// or only logged when it is false.
    RestrictIps(RestrictIps),
    /// Close the connection (terminating).
    Deny,
    /// Forward to an internal endpoint (terminating).
    ForwardInternal(ForwardInternal),
    /// Close the connection (terminating): ngrok's name for `deny` at connect.
    CloseConnection,
    /// Log an event with this metadata and go on.
    Log(Log),
    /// Set variables later expressions read as `vars.NAME`, and go on.
    SetVars(SetVars),
    /// End the client's TLS at the edge with this certificate, and go on (the first
    /// one a connection reaches applies).
    TerminateTls(TerminateTls),
}

/// Config of a `forward-internal` action.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ForwardInternal {
    /// The internal endpoint to forward to.
    pub url: InternalUrl,
}

impl Action {
    /// The `type:` name of this action.
    pub fn type_name(&self) -> &'static str {
        match self {
            Action::RestrictIps(_) => "restrict-ips",
            Action::Deny => "deny",
            Action::ForwardInternal(_) => "forward-internal",
            Action::CloseConnection => "close-connection",
            Action::Log(_) => "log",
            Action::SetVars(_) => "set-vars",
            Action::TerminateTls(_) => "terminate-tls",
        }
    }

    /// Whether this action decides every connection that reaches it
    /// (`deny`, `close-connection`, `forward-internal`); `restrict-ips` decides only
    /// some, `log` and `set-vars` none.
    pub fn always_decides(&self) -> bool {
        matches!(
            self,
            Action::Deny | Action::CloseConnection | Action::ForwardInternal(_)
        )
    }

    /// `deny` or `forward-internal <url>`, for messages.
    pub(crate) fn describe(&self) -> String {
        match self {
            Action::ForwardInternal(f) => format!("`forward-internal` to {}", f.url),
            other => format!("`{}`", other.type_name()),
        }
    }
}

impl Rule {
    /// Whether this rule decides every connection that reaches it (it has no
    /// expressions and a deciding action).
    pub fn always_decides(&self) -> bool {
        self.expressions.is_empty() && self.actions.iter().any(Action::always_decides)
    }

    /// `rule 2 ("office")`, for messages (1-based like the YAML list).
    pub(crate) fn describe(&self, index: usize) -> String {
        match &self.name {
            Some(n) => format!("rule {} (`{n}`)", index + 1),
            None => format!("rule {}", index + 1),
        }
    }
}
