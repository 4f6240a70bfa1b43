//! A naive reference evaluator, written straight from the semantics in
//! issue 2, sharing no code with the compiled tables.

#![allow(dead_code)]

use std::net::IpAddr;

use ipnet::IpNet;
use sluice_policy::{Action, Cause, Cidr, Decision, InternalUrl, TrafficPolicy};

/// What the reference decides: target, (rule, action, cause, cidr), would-deny.
#[derive(Debug, PartialEq, Eq)]
pub struct Expect {
    pub target: Option<InternalUrl>,
    pub why: (usize, usize, Cause, Option<IpNet>),
    pub would_deny: Option<(usize, usize, Cause, Option<IpNet>)>,
}

fn most_specific(list: &[Cidr], ip: IpAddr) -> Option<IpNet> {
    list.iter()
        .map(|c| c.net())
        .filter(|n| n.contains(&ip))
        .max_by_key(|n| n.prefix_len())
}

pub fn reference(p: &TrafficPolicy, ip: IpAddr) -> Expect {
    let ip = match ip {
        IpAddr::V6(a) => a.to_ipv4_mapped().map_or(IpAddr::V6(a), IpAddr::V4),
        v4 => v4,
    };
    let mut logged = None;
    let mut allowed_by = None;
    for (r, rule) in p.on_tcp_connect.iter().enumerate() {
        for (a, action) in rule.actions.iter().enumerate() {
            match action {
                Action::RestrictIps(ri) => {
                    let deny_hit = most_specific(&ri.deny, ip);
                    let allow_hit = most_specific(&ri.allow, ip);
                    let fail = if deny_hit.is_some() {
                        Some((r, a, Cause::DeniedByCidr, deny_hit))
                    } else if !ri.allow.is_empty() && allow_hit.is_none() {
                        Some((r, a, Cause::NotInAllowList, None))
                    } else {
                        None
                    };
                    match fail {
                        Some(f) if ri.enforce => {
                            return Expect {
                                target: None,
                                why: f,
                                would_deny: logged,
                            }
                        }
                        Some(f) => logged = logged.or(Some(f)),
                        None if !ri.allow.is_empty() => allowed_by = allow_hit,
                        None => {}
                    }
                }
                Action::Deny => {
                    return Expect {
                        target: None,
                        why: (r, a, Cause::DenyAction, None),
                        would_deny: logged,
                    }
                }
                Action::ForwardInternal(f) => {
                    return Expect {
                        target: Some(f.url.clone()),
                        why: (r, a, Cause::Forward, allowed_by),
                        would_deny: logged,
                    }
                }
            }
        }
    }
    panic!("validated policies always decide")
}

/// The same fields read from a compiled decision.
pub fn observed(d: &Decision<'_>) -> Expect {
    let why = d.why();
    Expect {
        target: d.target().cloned(),
        why: (why.rule(), why.action(), why.cause(), why.cidr()),
        would_deny: d
            .would_deny()
            .map(|w| (w.rule(), w.action(), w.cause(), w.cidr())),
    }
}
