//! Why a bind was refused: [`BindError`], one variant per cause. Each has its own wire
//! code (what the agent decides on: retry later or give up), a short [`BindError::label`]
//! for logs and counters, a `Display` without the URL, and [`BindError::message`], the
//! sentence about the URL the agent and the audit log are given.

use std::fmt;

use super::ownership::Owner;
use crate::wire::ErrorCode;

/// Why the edge refused a bind.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BindError {
    /// The URL does not parse (the parser's reason).
    InvalidUrl(String),
    /// The authtoken's bind rules do not allow the URL (the rules, for the message).
    Forbidden {
        /// The token's rules, as written.
        rules: String,
    },
    /// Another service user owns the URL.
    NotOwner(Owner),
    /// Another live session holds the URL, without pooling.
    AlreadyBound,
    /// This session has bound the URL already.
    AlreadyBoundHere,
    /// The URL's pool and this bind disagree on `pooling_enabled`.
    PoolingMismatch {
        /// What the pool's members asked for.
        pool_pooling: bool,
    },
    /// The session is ending.
    SessionEnding,
    /// The endpoint's traffic policy does not parse or compile (the reason).
    InvalidPolicy(String),
    /// The URL's pool members bound another traffic policy.
    PolicyMismatch,
}

impl BindError {
    /// Every cause's label, for tests and metric descriptions.
    pub const LABELS: [&'static str; 9] = [
        "invalid_url",
        "forbidden",
        "not_owner",
        "already_bound",
        "already_bound_here",
        "pooling_mismatch",
        "session_ending",
        "invalid_policy",
        "policy_mismatch",
    ];

    /// The agent protocol's code for this refusal (distinct per cause).
    pub const fn code(&self) -> ErrorCode {
        match self {
            Self::InvalidUrl(_) => ErrorCode::BadRequest,
            Self::Forbidden { .. } => ErrorCode::BindForbidden,
            Self::NotOwner(_) => ErrorCode::NotOwner,
            Self::AlreadyBound => ErrorCode::AlreadyBound,
            Self::AlreadyBoundHere => ErrorCode::AlreadyBoundHere,
            Self::PoolingMismatch { .. } => ErrorCode::PoolingMismatch,
            Self::SessionEnding => ErrorCode::SessionEnding,
            Self::InvalidPolicy(_) => ErrorCode::InvalidPolicy,
            Self::PolicyMismatch => ErrorCode::PolicyMismatch,
        }
    }

    /// Short name for logs and metric labels.
    pub const fn label(&self) -> &'static str {
        match self {
            Self::InvalidUrl(_) => Self::LABELS[0],
            Self::Forbidden { .. } => Self::LABELS[1],
            Self::NotOwner(_) => Self::LABELS[2],
            Self::AlreadyBound => Self::LABELS[3],
            Self::AlreadyBoundHere => Self::LABELS[4],
            Self::PoolingMismatch { .. } => Self::LABELS[5],
            Self::SessionEnding => Self::LABELS[6],
            Self::InvalidPolicy(_) => Self::LABELS[7],
            Self::PolicyMismatch => Self::LABELS[8],
        }
    }

    /// A sentence about `url` for the agent, logs and audit events.
    pub fn message(&self, url: &str) -> String {
        match self {
            Self::InvalidUrl(why) => format!("{url}: {why}"),
            Self::Forbidden { rules } => {
                format!("{url}: this authtoken may not bind it (its rules: {rules})")
            }
            Self::NotOwner(o) => format!(
                "{url} belongs to another service user ({}); only its sessions may bind it",
                o.user_name
            ),
            Self::AlreadyBound => format!("{url} is already bound by another agent session"),
            Self::AlreadyBoundHere => format!("{url} is already bound by this session"),
            Self::PoolingMismatch { pool_pooling } => format!(
                "{url} is bound by agents with pooling_enabled: {pool_pooling}; every member of a pool must set pooling_enabled: true"
            ),
            Self::SessionEnding => format!("{url}: the session is ending"),
            Self::InvalidPolicy(why) => format!("{url}: its traffic_policy is invalid: {why}"),
            Self::PolicyMismatch => format!(
                "{url} is bound by agents with another traffic_policy; every member of a pool must carry the same one"
            ),
        }
    }
}

impl fmt::Display for BindError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::InvalidUrl(why) => write!(f, "invalid internal URL: {why}"),
            Self::Forbidden { rules } => {
                write!(f, "the authtoken's bind rules do not allow it ({rules})")
            }
            Self::NotOwner(o) => write!(f, "owned by service user {}", o.user_name),
            Self::AlreadyBound => f.write_str("already bound by another agent session"),
            Self::AlreadyBoundHere => f.write_str("already bound by this session"),
            Self::PoolingMismatch { pool_pooling } => {
                write!(
                    f,
                    "the pool's members bound with pooling_enabled: {pool_pooling}"
                )
            }
            Self::SessionEnding => f.write_str("the session is ending"),
            Self::InvalidPolicy(why) => write!(f, "invalid traffic_policy: {why}"),
            Self::PolicyMismatch => f.write_str("the pool's members bound another traffic_policy"),
        }
    }
}

impl std::error::Error for BindError {}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::edge::ownership::OwnerSource;

    fn all() -> Vec<BindError> {
        vec![
            BindError::InvalidUrl("no scheme".into()),
            BindError::Forbidden {
                rules: "tcp://web.internal:*".into(),
            },
            BindError::NotOwner(Owner {
                user_id: "u1".into(),
                user_name: "alice".into(),
                source: OwnerSource::FirstBind,
            }),
            BindError::AlreadyBound,
            BindError::AlreadyBoundHere,
            BindError::PoolingMismatch { pool_pooling: true },
            BindError::SessionEnding,
            BindError::InvalidPolicy("expected a map".into()),
            BindError::PolicyMismatch,
        ]
    }

    #[test]
    fn every_cause_has_its_own_code_label_and_a_message_naming_the_url() {
        let all = all();
        let codes: std::collections::HashSet<u16> = all.iter().map(|e| e.code().to_u16()).collect();
        assert_eq!(codes.len(), all.len(), "distinct wire codes");
        let labels: Vec<_> = all.iter().map(BindError::label).collect();
        assert_eq!(labels, BindError::LABELS, "distinct labels, in order");
        for e in &all {
            assert!(e
                .message("tcp://db.internal:5432")
                .contains("tcp://db.internal:5432"));
            assert!(!e.to_string().is_empty());
        }
    }
}
