//! The precomputed outcomes of a compiled policy and what they point into:
//! [`Verdict`] (target, cause, CIDR list), [`Cause`], and [`Verdicts`], the
//! tables a [`Decision`](crate::Decision) borrows to explain itself (rule
//! names, forward targets, CIDR lists). Plain data, below both `compiled`
//! (which looks verdicts up) and `decision` (which reads them).

use crate::intervals::Provenance;
use crate::InternalUrl;

/// Why an action decided (or, for a log-only result, would have denied).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Cause {
    /// A `forward-internal` action was reached.
    Forward,
    /// A `deny` action was reached.
    DenyAction,
    /// A `close-connection` action was reached.
    CloseAction,
    /// `restrict-ips`: the client matched a `deny` CIDR.
    DeniedByCidr,
    /// `restrict-ips`: `allow` is non-empty and the client matched none of it.
    NotInAllowList,
    /// No rule decided; the connection is denied (every deciding rule had
    /// expressions, and none held).
    NoDecision,
}

impl Cause {
    /// A short stable name for logs and metrics labels.
    pub fn as_str(self) -> &'static str {
        match self {
            Cause::Forward => "forward",
            Cause::DenyAction => "deny-action",
            Cause::CloseAction => "close-connection",
            Cause::DeniedByCidr => "denied-by-cidr",
            Cause::NotInAllowList => "not-in-allow-list",
            Cause::NoDecision => "no-decision",
        }
    }
}

/// Every precomputed outcome of one policy, with the rule names, forward
/// targets and CIDR lists its verdicts refer to by index.
#[derive(Debug)]
pub(crate) struct Verdicts {
    pub(crate) rule_names: Box<[Option<String>]>,
    pub(crate) targets: Box<[InternalUrl]>,
    pub(crate) sets: Box<[CidrSet]>,
    pub(crate) verdicts: Box<[Verdict]>,
    /// The `log` actions, by the bit their verdicts set.
    pub(crate) logs: Box<[LogAction]>,
    /// The server configurations of the `terminate-tls` actions, in order.
    pub(crate) tls: Box<[std::sync::Arc<rustls::ServerConfig>]>,
}

/// A `log` action: its rule and config.
#[derive(Debug)]
pub(crate) struct LogAction {
    pub(crate) rule: u32,
    pub(crate) config: crate::model::Log,
}

/// Provenance of one CIDR list, both families.
#[derive(Debug, Default)]
pub(crate) struct CidrSet {
    pub(crate) v4: Provenance<u32>,
    pub(crate) v6: Provenance<u128>,
}

/// A precomputed outcome (or, per connection, the outcome of a run from a pending
/// one).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) struct Verdict {
    /// Index into `targets`, or `None` for deny.
    pub(crate) target: Option<u32>,
    pub(crate) why: WhyT,
    pub(crate) would_deny: Option<WhyT>,
    /// Bit `i`: `log` action `i` was reached.
    pub(crate) logs: u64,
    /// The first `terminate-tls` action reached (index into `tls`).
    pub(crate) tls: Option<u32>,
    /// Not decided by the client address alone: the program goes on from here per
    /// connection.
    pub(crate) pending: Option<Pending>,
}

/// Where a run stopped for facts the table cannot know, and its state there.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) struct Pending {
    pub(crate) step: u32,
    pub(crate) allowed_by: Option<u32>,
    pub(crate) last: (u32, u32),
}

/// Rule, action, cause and the CIDR list (index into `sets`) that explains it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) struct WhyT {
    pub(crate) rule: u32,
    pub(crate) action: u32,
    pub(crate) cause: Cause,
    pub(crate) set: Option<u32>,
}
