//! Who may connect as an agent: every live authtoken hash with the identity it proves
//! (service user, token id, bind rules). The table is rebuilt by the control plane on
//! every change (token created or revoked, user deactivated, config reloaded) and
//! published with `arc-swap`; agents authenticate against the current snapshot.

use std::sync::Arc;

use crate::token::TokenHash;

/// What an authtoken proves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// Service user id (`usr_…`, or `static:NAME` for users from edge.yml).
    pub user_id: String,
    /// Service user name.
    pub user_name: String,
    /// Token id (`tok_…`, or `static:NAME:N`).
    pub token_id: String,
    /// `bind:PATTERN` rules; empty: any internal URL.
    pub acl: Vec<BindRule>,
}

impl Identity {
    /// Whether this identity may bind the internal URL `url` (`tcp://host:port`).
    pub fn may_bind(&self, url: &str) -> bool {
        self.acl.is_empty() || self.acl.iter().any(|r| r.allows(url))
    }
}

/// One `bind:PATTERN` rule. The pattern is matched against the internal URL's host
/// (`*.internal`, `db.internal`) or, when it contains `://`, the whole URL; `*`
/// matches any run of characters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BindRule(String);

impl BindRule {
    /// Parses `bind:PATTERN`.
    pub fn parse(rule: &str) -> Result<Self, String> {
        let pattern = rule
            .strip_prefix("bind:")
            .ok_or_else(|| format!("`{rule}`: expected bind:PATTERN (e.g. bind:*.internal)"))?;
        if pattern.is_empty() || pattern.chars().any(char::is_whitespace) {
            return Err(format!("`{rule}`: the pattern is empty or has spaces"));
        }
        Ok(Self(pattern.to_ascii_lowercase()))
    }

    /// Whether the rule allows binding `url`.
    pub fn allows(&self, url: &str) -> bool {
        let url = url.to_ascii_lowercase();
        if self.0.contains("://") {
            return glob(&self.0, &url);
        }
        let host = url
            .split_once("://")
            .map_or(url.as_str(), |(_, rest)| rest)
            .rsplit_once(':')
            .map_or_else(|| url.as_str(), |(h, _)| h);
        glob(&self.0, host)
    }
}

impl std::fmt::Display for BindRule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "bind:{}", self.0)
    }
}

/// `*` matches any run (including none); everything else literally.
fn glob(pattern: &str, text: &str) -> bool {
    let mut parts = pattern.split('*');
    let first = parts.next().unwrap_or("");
    let Some(mut rest) = text.strip_prefix(first) else {
        return false;
    };
    let parts: Vec<&str> = parts.collect();
    let Some((last, middle)) = parts.split_last() else {
        return rest.is_empty();
    };
    for part in middle {
        match rest.find(part) {
            Some(at) => rest = &rest[at + part.len()..],
            None => return false,
        }
    }
    rest.ends_with(last)
}

/// Every live token hash and its identity.
#[derive(Debug, Default)]
pub struct AuthTable {
    entries: Vec<(TokenHash, Arc<Identity>)>,
}

impl AuthTable {
    /// A table of these tokens.
    pub fn new(entries: Vec<(TokenHash, Arc<Identity>)>) -> Self {
        Self { entries }
    }

    /// The identity `token` proves ([`TokenHash::find`]: every hash compared in
    /// constant time).
    pub fn authenticate(&self, token: &str) -> Option<Arc<Identity>> {
        TokenHash::find(token, self.entries.iter().map(|(h, i)| (h, i))).cloned()
    }

    /// Whether the token with this id is still in the table.
    pub fn has_token(&self, token_id: &str) -> bool {
        self.entries.iter().any(|(_, i)| i.token_id == token_id)
    }

    /// How many tokens authenticate.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether no token authenticates.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bind_rules_match_hosts_and_urls() {
        let r = BindRule::parse("bind:*.internal").unwrap();
        assert!(r.allows("tcp://db.internal:5432"));
        assert!(!r.allows("tcp://db.internal.evil:5432"));
        assert!(!r.allows("tcp://internal:5432"));
        let r = BindRule::parse("bind:db.internal").unwrap();
        assert!(r.allows("tcp://DB.internal:1"));
        assert!(!r.allows("tcp://xdb.internal:1"));
        let r = BindRule::parse("bind:tcp://*:5432").unwrap();
        assert!(r.allows("tcp://a.b:5432"));
        assert!(!r.allows("tcp://a.b:5433"));
        assert!(BindRule::parse("*.internal").is_err());
        assert!(BindRule::parse("bind:").is_err());
    }

    #[test]
    fn empty_acl_allows_everything() {
        let id = Identity {
            user_id: "u".into(),
            user_name: "u".into(),
            token_id: "t".into(),
            acl: vec![],
        };
        assert!(id.may_bind("tcp://anything:1"));
    }

    #[test]
    fn authenticates_only_listed_tokens() {
        let id = Arc::new(Identity {
            user_id: "u".into(),
            user_name: "n".into(),
            token_id: "t".into(),
            acl: vec![],
        });
        let table = AuthTable::new(vec![(TokenHash::of("secret"), id.clone())]);
        assert_eq!(table.authenticate("secret"), Some(id));
        assert_eq!(table.authenticate("other"), None);
        assert!(table.has_token("t"));
    }
}
