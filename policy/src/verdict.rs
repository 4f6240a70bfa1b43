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
    /// `restrict-ips`: the client matched a `deny` CIDR.
    DeniedByCidr,
    /// `restrict-ips`: `allow` is non-empty and the client matched none of it.
    NotInAllowList,
    /// No rule decided; the connection is denied. A validated policy never
    /// gets here.
    NoDecision,
}

impl Cause {
    /// A short stable name for logs and metrics labels.
    pub fn as_str(self) -> &'static str {
        match self {
            Cause::Forward => "forward",
            Cause::DenyAction => "deny-action",
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
}

/// Provenance of one CIDR list, both families.
#[derive(Debug, Default)]
pub(crate) struct CidrSet {
    pub(crate) v4: Provenance<u32>,
    pub(crate) v6: Provenance<u128>,
}

/// A precomputed outcome.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(crate) struct Verdict {
    /// Index into `targets`, or `None` for deny.
    pub(crate) target: Option<u32>,
    pub(crate) why: WhyT,
    pub(crate) would_deny: Option<WhyT>,
}

/// Rule, action, cause and the CIDR list (index into `sets`) that explains it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) struct WhyT {
    pub(crate) rule: u32,
    pub(crate) action: u32,
    pub(crate) cause: Cause,
    pub(crate) set: Option<u32>,
}
