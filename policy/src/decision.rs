//! [`Decision`]: what [`CompiledPolicy::evaluate`](crate::CompiledPolicy::evaluate)
//! returns. It borrows from the compiled policy (no allocation) and explains
//! itself for logs: which rule and action decided, why, and on demand which
//! listed CIDR matched.

use std::fmt;
use std::net::IpAddr;

use ipnet::{IpNet, Ipv4Net, Ipv6Net};

use crate::verdict::{Cause, Verdict, Verdicts, WhyT};
use crate::InternalUrl;

/// What to do with the connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome<'a> {
    /// Forward to this internal endpoint.
    Forward(&'a InternalUrl),
    /// Close the connection.
    Deny,
}

/// The result of evaluating a policy for one client address.
#[derive(Clone, Copy)]
pub struct Decision<'a> {
    /// The tables the verdict refers to (targets, rule names, CIDR lists).
    pub(crate) verdicts: &'a Verdicts,
    /// The table's verdict, or (rarely) the one a run from a pending verdict made.
    pub(crate) held: Held<'a>,
    /// The client address as checked (IPv4-mapped IPv6 turned into IPv4).
    pub(crate) client: IpAddr,
}

/// A verdict as a decision holds it.
#[derive(Clone, Copy)]
pub(crate) enum Held<'a> {
    /// Precomputed, in the policy's tables (one lookup decided).
    Table(&'a Verdict),
    /// Made for this connection by the rules the table could not decide.
    Ran(Verdict),
}

impl<'a> Decision<'a> {
    #[inline(always)]
    pub(crate) fn verdict(&self) -> &Verdict {
        match &self.held {
            Held::Table(v) => v,
            Held::Ran(v) => v,
        }
    }

    /// Forward (and where) or deny.
    #[inline]
    pub fn outcome(&self) -> Outcome<'a> {
        match self.verdict().target {
            Some(t) => Outcome::Forward(&self.verdicts.targets[t as usize]),
            None => Outcome::Deny,
        }
    }

    /// Whether the connection is forwarded.
    #[inline]
    pub fn is_allowed(&self) -> bool {
        self.verdict().target.is_some()
    }

    /// The internal endpoint to forward to, if allowed.
    #[inline]
    pub fn target(&self) -> Option<&'a InternalUrl> {
        match self.outcome() {
            Outcome::Forward(t) => Some(t),
            Outcome::Deny => None,
        }
    }

    /// The action that decided.
    #[inline]
    pub fn why(&self) -> Why<'a> {
        Why {
            verdicts: self.verdicts,
            t: self.verdict().why,
            client: self.client,
        }
    }

    /// The first `restrict-ips` with `enforce: false` that would have denied
    /// this client, if any (it was only logged).
    #[inline]
    pub fn would_deny(&self) -> Option<Why<'a>> {
        self.verdict().would_deny.map(|t| Why {
            verdicts: self.verdicts,
            t,
            client: self.client,
        })
    }

    /// Forwarded although an `enforce: false` restriction would have denied:
    /// the "log-only" outcome.
    #[inline]
    pub fn is_log_only(&self) -> bool {
        self.is_allowed() && self.verdict().would_deny.is_some()
    }

    /// The client address as checked (IPv4-mapped IPv6 shown as IPv4).
    #[inline]
    pub fn client(&self) -> IpAddr {
        self.client
    }

    /// The server configuration of the first `terminate-tls` action this connection
    /// reached, if any: the edge ends the client's TLS with it.
    #[inline]
    pub fn terminate_tls(&self) -> Option<&'a std::sync::Arc<rustls::ServerConfig>> {
        let verdicts = self.verdicts;
        self.verdict().tls.map(|i| &verdicts.tls[i as usize])
    }

    /// Whether `log` actions ran for this connection (see
    /// [`CompiledPolicy::log_events`](crate::CompiledPolicy::log_events)).
    #[inline]
    pub fn has_logs(&self) -> bool {
        self.verdict().logs != 0
    }
}

impl fmt::Debug for Decision<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Decision")
            .field("client", &self.client)
            .field("outcome", &self.outcome())
            .field("why", &self.why())
            .field("would_deny", &self.would_deny())
            .finish()
    }
}

impl fmt::Display for Decision<'_> {
    /// `forward to tcp://db.internal:5432 (rule 1 "office", action 2: forward; allowed by 203.0.113.0/24)`
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.outcome() {
            Outcome::Forward(t) => write!(f, "forward to {t} ({})", self.why())?,
            Outcome::Deny => write!(f, "deny ({})", self.why())?,
        }
        if let Some(w) = self.would_deny() {
            write!(f, "; log-only: would deny ({w})")?;
        }
        Ok(())
    }
}

/// Which action decided and why; borrowed from the compiled policy.
#[derive(Clone, Copy)]
pub struct Why<'a> {
    verdicts: &'a Verdicts,
    t: WhyT,
    client: IpAddr,
}

impl<'a> Why<'a> {
    /// Index of the rule in `on_tcp_connect` (0-based).
    pub fn rule(&self) -> usize {
        self.t.rule as usize
    }

    /// The rule's `name`, if it has one.
    pub fn rule_name(&self) -> Option<&'a str> {
        self.verdicts
            .rule_names
            .get(self.t.rule as usize)
            .and_then(|n| n.as_deref())
    }

    /// Index of the action in the rule's `actions` (0-based).
    pub fn action(&self) -> usize {
        self.t.action as usize
    }

    /// Why it decided.
    pub fn cause(&self) -> Cause {
        self.t.cause
    }

    /// The listed CIDR that decided: the most specific `deny` CIDR matching
    /// the client for [`Cause::DeniedByCidr`]; for [`Cause::Forward`] the
    /// most specific `allow` CIDR of the last `restrict-ips` that admitted
    /// the client, if any. Computed on demand (one binary search per prefix
    /// length in the list), meant for logs, not for the accept path.
    pub fn cidr(&self) -> Option<IpNet> {
        let set = &self.verdicts.sets[self.t.set? as usize];
        match self.client {
            IpAddr::V4(a) => set
                .v4
                .most_specific(u32::from(a))
                .map(|(net, len)| IpNet::V4(Ipv4Net::new(net.into(), len).expect("len <= 32"))),
            IpAddr::V6(a) => set
                .v6
                .most_specific(u128::from(a))
                .map(|(net, len)| IpNet::V6(Ipv6Net::new(net.into(), len).expect("len <= 128"))),
        }
    }
}

impl fmt::Debug for Why<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Why")
            .field("rule", &self.rule())
            .field("rule_name", &self.rule_name())
            .field("action", &self.action())
            .field("cause", &self.cause())
            .field("cidr", &self.cidr())
            .finish()
    }
}

impl fmt::Display for Why<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "rule {}", self.rule() + 1)?;
        if let Some(n) = self.rule_name() {
            write!(f, " {n:?}")?;
        }
        write!(
            f,
            ", action {}: {}",
            self.action() + 1,
            self.cause().as_str()
        )?;
        match (self.cause(), self.cidr()) {
            (Cause::Forward, Some(c)) => write!(f, "; allowed by {c}"),
            (_, Some(c)) => write!(f, " {c}"),
            (_, None) => Ok(()),
        }
    }
}
