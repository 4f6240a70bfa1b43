//! Who owns which internal URL. An internal URL belongs to one service user: only
//! that user's sessions may bind it or join its pool, whatever their tokens' bind
//! rules say, so one customer's compromised token can never capture another
//! customer's traffic (pool capture) or take a URL while its owner reconnects
//! (squatting).
//!
//! Ownership comes from three places, strongest first: edge.yml (`service_users[].owns`,
//! read-only through the API), the admin API (assign, transfer, release), and the
//! first bind of a URL nobody owns (the binding user claims it; the control plane makes
//! the claim durable). [`Ownership`] is the pure table and its decision; the registry
//! keeps one under its bind lock, so a claim and the bind that made it are one step.

use std::collections::HashMap;

use super::auth::Identity;

/// How a user came to own a URL.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OwnerSource {
    /// Declared in edge.yml (`service_users[].owns`).
    Config,
    /// Assigned or transferred through the admin API.
    Api,
    /// Claimed by the user's first bind of an unowned URL.
    FirstBind,
}

impl OwnerSource {
    /// The name stored and shown by the API.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Config => "config",
            Self::Api => "api",
            Self::FirstBind => "first_bind",
        }
    }

    /// Parses a stored name.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "config" => Some(Self::Config),
            "api" => Some(Self::Api),
            "first_bind" => Some(Self::FirstBind),
            _ => None,
        }
    }
}

/// The owner of one internal URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Owner {
    /// Service user id (`usr_…` or `static:NAME`).
    pub user_id: String,
    /// Service user name, for messages.
    pub user_name: String,
    /// How the ownership was made.
    pub source: OwnerSource,
}

/// What a bind of a URL by some identity means for its ownership.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BindRight {
    /// The identity's user owns the URL.
    Owner,
    /// Nobody owns it: the bind claims it for the identity's user.
    Claim,
    /// Another user owns it.
    Foreign(Owner),
}

/// Internal URL (canonical form) -> owner.
#[derive(Debug, Clone, Default)]
pub struct Ownership {
    owners: HashMap<String, Owner>,
}

impl Ownership {
    /// The owner of `url`, if any.
    pub fn owner(&self, url: &str) -> Option<&Owner> {
        self.owners.get(url)
    }

    /// What binding `url` as `identity` means.
    pub fn right(&self, url: &str, identity: &Identity) -> BindRight {
        match self.owners.get(url) {
            None => BindRight::Claim,
            Some(o) if o.user_id == identity.user_id => BindRight::Owner,
            Some(o) => BindRight::Foreign(o.clone()),
        }
    }

    /// Records (or replaces) the owner of `url`.
    pub fn set(&mut self, url: String, owner: Owner) {
        self.owners.insert(url, owner);
    }

    /// Forgets the owner of `url`; returns it.
    pub fn remove(&mut self, url: &str) -> Option<Owner> {
        self.owners.remove(url)
    }

    /// Every URL and its owner, sorted by URL.
    pub fn all(&self) -> Vec<(String, Owner)> {
        let mut all: Vec<_> = self
            .owners
            .iter()
            .map(|(u, o)| (u.clone(), o.clone()))
            .collect();
        all.sort_by(|a, b| a.0.cmp(&b.0));
        all
    }

    /// How many URLs have an owner.
    pub fn len(&self) -> usize {
        self.owners.len()
    }

    /// Whether no URL has an owner.
    pub fn is_empty(&self) -> bool {
        self.owners.is_empty()
    }
}

impl FromIterator<(String, Owner)> for Ownership {
    fn from_iter<T: IntoIterator<Item = (String, Owner)>>(iter: T) -> Self {
        Self {
            owners: iter.into_iter().collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(user: &str) -> Identity {
        Identity {
            user_id: user.into(),
            user_name: user.into(),
            token_id: format!("{user}-tok"),
            acl: vec![],
        }
    }

    fn owner(user: &str, source: OwnerSource) -> Owner {
        Owner {
            user_id: user.into(),
            user_name: user.into(),
            source,
        }
    }

    #[test]
    fn unowned_urls_are_claimed_owned_ones_only_by_their_owner() {
        let mut table = Ownership::default();
        let url = "tcp://db.internal:5432";
        assert_eq!(table.right(url, &id("alice")), BindRight::Claim);
        table.set(url.into(), owner("alice", OwnerSource::FirstBind));
        assert_eq!(table.right(url, &id("alice")), BindRight::Owner);
        assert_eq!(
            table.right(url, &id("mallory")),
            BindRight::Foreign(owner("alice", OwnerSource::FirstBind))
        );
        assert_eq!(
            table.right("tcp://other.internal:1", &id("mallory")),
            BindRight::Claim
        );
        assert!(table.remove(url).is_some());
        assert_eq!(table.right(url, &id("mallory")), BindRight::Claim);
    }

    #[test]
    fn sources_round_trip() {
        for s in [
            OwnerSource::Config,
            OwnerSource::Api,
            OwnerSource::FirstBind,
        ] {
            assert_eq!(OwnerSource::parse(s.as_str()), Some(s));
        }
        assert_eq!(OwnerSource::parse("nobody"), None);
    }
}
