//! [`SniRouter`]: server name to value, exact names and one-label wildcards.

use std::collections::HashMap;

use super::{validate_host_name, SniError, MAX_HOST_NAME};

/// Maps TLS server names to values (endpoints). Patterns are exact host names
/// (`db.acme.example`) or wildcards (`*.acme.example`) that match exactly one more label
/// (`db.acme.example`, not `acme.example` nor `a.b.acme.example`). Matching ignores ASCII
/// case, and an exact name beats a wildcard. Build it off the hot path; [`route`] does
/// not allocate.
///
/// [`route`]: SniRouter::route
#[derive(Debug, Clone)]
pub struct SniRouter<T> {
    /// Lowercased exact names.
    exact: HashMap<String, T>,
    /// Lowercased wildcard suffixes: `acme.example` for `*.acme.example`.
    wildcard: HashMap<String, T>,
}

impl<T> Default for SniRouter<T> {
    fn default() -> Self {
        Self {
            exact: HashMap::new(),
            wildcard: HashMap::new(),
        }
    }
}

impl<T> SniRouter<T> {
    /// An empty router.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds `pattern` (a host name or `*.` followed by one) routing to `value`; returns
    /// the value it replaces. A pattern that is not a valid host name is rejected with
    /// [`SniError::InvalidHostName`].
    pub fn insert(&mut self, pattern: &str, value: T) -> Result<Option<T>, SniError> {
        let (table, name) = match pattern.strip_prefix("*.") {
            Some(suffix) => (&mut self.wildcard, suffix),
            None => (&mut self.exact, pattern),
        };
        validate_host_name(name.as_bytes())?;
        Ok(table.insert(name.to_ascii_lowercase(), value))
    }

    /// The value for server name `name` (as [`super::peek_sni`] found it, any case).
    pub fn route(&self, name: &str) -> Option<&T> {
        let mut lower = [0u8; MAX_HOST_NAME];
        let lower = lower.get_mut(..name.len())?;
        lower.copy_from_slice(name.as_bytes());
        lower.make_ascii_lowercase();
        // Lowercasing ASCII bytes keeps UTF-8 valid; this cannot fail.
        let lower = std::str::from_utf8(lower).ok()?;
        if let Some(value) = self.exact.get(lower) {
            return Some(value);
        }
        match lower.split_once('.') {
            Some((first, rest)) if !first.is_empty() => self.wildcard.get(rest),
            _ => None,
        }
    }

    /// Number of patterns.
    #[must_use]
    pub fn len(&self) -> usize {
        self.exact.len() + self.wildcard.len()
    }

    /// Whether there are no patterns.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
