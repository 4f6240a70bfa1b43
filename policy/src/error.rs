//! The crate's single error type, [`PolicyError`].
//!
//! Parse and validation errors come from the YAML deserializer and carry its
//! rendering: `line L column C: <message naming the offending value>` followed
//! by a source snippet. Value errors ([`PolicyError::InvalidCidr`],
//! [`PolicyError::InvalidUrl`]) are produced when a value is parsed on its own
//! (`str::parse`), outside any document.

/// Everything that can go wrong when parsing, validating or compiling a policy.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PolicyError {
    /// The YAML document is malformed or fails validation; the message names
    /// the line, the column and the offending value.
    #[error("invalid traffic policy: {0}")]
    Parse(#[from] serde_saphyr::Error),
    /// A CIDR string could not be parsed.
    #[error("invalid CIDR `{value}`: {reason}")]
    InvalidCidr {
        /// The text as written.
        value: String,
        /// Why it was rejected.
        reason: &'static str,
    },
    /// An internal endpoint URL could not be parsed.
    #[error("invalid internal URL `{value}`: {reason}")]
    InvalidUrl {
        /// The text as written.
        value: String,
        /// Why it was rejected.
        reason: String,
    },
    /// A policy that was built in code (not parsed) breaks a validation rule.
    #[error("invalid traffic policy: {0}")]
    Invalid(String),
    /// The policy has more distinct outcomes than a compiled table can encode.
    #[error("traffic policy too large: {distinct} distinct outcomes (at most {max})")]
    TooLarge {
        /// Distinct outcomes the policy produces.
        distinct: usize,
        /// The limit.
        max: usize,
    },
}
