//! A naive reference evaluator, written straight from the semantics in
//! issue 2, sharing no code with the compiled tables.

#![allow(dead_code)]

use std::net::{IpAddr, SocketAddr};

use ipnet::IpNet;
use sluice_policy::{
    Action, Cause, Cidr, CompiledPolicy, Decision, InternalUrl, NoConnInfo, TrafficPolicy,
};

/// What the reference decides: target, (rule, action, cause, cidr), would-deny, and
/// the rules whose `log` actions ran.
#[derive(Debug, PartialEq, Eq)]
pub struct Expect {
    pub target: Option<InternalUrl>,
    pub why: (usize, usize, Cause, Option<IpNet>),
    pub would_deny: Option<(usize, usize, Cause, Option<IpNet>)>,
    pub logs: Vec<usize>,
}

/// The CIDRs of a generated `inCidrRanges(conn.client_ip, [...])`, `!(...)` or not.
pub fn expression_cidrs(source: &str) -> Option<Vec<Cidr>> {
    let (_, list) = source.split_once("inCidrRanges(conn.client_ip, [")?;
    let list = list.split_once(']').expect("a closed list").0;
    Some(
        list.split(", ")
            .map(|c| c.trim_matches('\'').parse().unwrap())
            .collect(),
    )
}

/// The expressions the property tests generate, and what they mean.
pub fn expression_holds(source: &str, ip: IpAddr, port: u16) -> bool {
    let (negate, body) = match source.strip_prefix("!(") {
        Some(rest) => (true, rest.strip_suffix(')').unwrap()),
        None => (false, source),
    };
    let holds = if let Some(list) = expression_cidrs(body) {
        list.iter().any(|c| c.contains(ip))
    } else if let Some(n) = body.strip_prefix("conn.client_port < ") {
        port < n.parse::<u16>().unwrap()
    } else {
        panic!("the reference does not know `{source}`")
    };
    holds != negate
}

fn most_specific(list: &[Cidr], ip: IpAddr) -> Option<IpNet> {
    list.iter()
        .map(|c| c.net())
        .filter(|n| n.contains(&ip))
        .max_by_key(|n| n.prefix_len())
}

pub fn reference(p: &TrafficPolicy, ip: IpAddr) -> Expect {
    reference_conn(p, ip, 443)
}

/// The reference for a client address and port.
pub fn reference_conn(p: &TrafficPolicy, ip: IpAddr, port: u16) -> Expect {
    let ip = match ip {
        IpAddr::V6(a) => a.to_ipv4_mapped().map_or(IpAddr::V6(a), IpAddr::V4),
        v4 => v4,
    };
    let mut logged = None;
    let mut allowed_by = None;
    let mut logs = Vec::new();
    let mut last = (0, 0);
    for (r, rule) in p.on_tcp_connect.iter().enumerate() {
        if !rule
            .expressions
            .iter()
            .all(|e| expression_holds(e.as_str(), ip, port))
        {
            continue;
        }
        for (a, action) in rule.actions.iter().enumerate() {
            match action {
                Action::RestrictIps(ri) => {
                    last = (r, a);
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
                                logs,
                            }
                        }
                        Some(f) => logged = logged.or(Some(f)),
                        None if !ri.allow.is_empty() => allowed_by = allow_hit,
                        None => {}
                    }
                }
                Action::Deny | Action::CloseConnection => {
                    let cause = if matches!(action, Action::Deny) {
                        Cause::DenyAction
                    } else {
                        Cause::CloseAction
                    };
                    return Expect {
                        target: None,
                        why: (r, a, cause, None),
                        would_deny: logged,
                        logs,
                    };
                }
                Action::ForwardInternal(f) => {
                    return Expect {
                        target: Some(f.url.clone()),
                        why: (r, a, Cause::Forward, allowed_by),
                        would_deny: logged,
                        logs,
                    }
                }
                Action::Log(_) => logs.push(r),
                Action::SetVars(_) => panic!("the reference does not set variables"),
                Action::TerminateTls(_) => panic!("the reference does not terminate TLS"),
            }
        }
    }
    Expect {
        target: None,
        why: (last.0, last.1, Cause::NoDecision, None),
        would_deny: logged,
        logs,
    }
}

/// The same fields read from a compiled decision (the log events of `policy`, which
/// made it for `client`).
pub fn observed(d: &Decision<'_>) -> Expect {
    observed_logs(d, None)
}

/// [`observed`], with the rules of the log events.
pub fn observed_logs(d: &Decision<'_>, policy: Option<(&CompiledPolicy, SocketAddr)>) -> Expect {
    let why = d.why();
    Expect {
        target: d.target().cloned(),
        why: (why.rule(), why.action(), why.cause(), why.cidr()),
        would_deny: d
            .would_deny()
            .map(|w| (w.rule(), w.action(), w.cause(), w.cidr())),
        logs: policy
            .map(|(p, client)| {
                p.log_events(d, client, &NoConnInfo)
                    .iter()
                    .map(|e| e.rule)
                    .collect()
            })
            .unwrap_or_default(),
    }
}
