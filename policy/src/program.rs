//! The straight-line program the `on_tcp_connect` rules compile to ([`Step`]) and its
//! interpreter ([`run`]). It runs twice over: while compiling, once per segment of the
//! address space, where which CIDR sets hold the client is known and nothing else is
//! (a step that needs more — a country, a CEL expression, `set-vars` — stops the run:
//! the segment's verdict is *pending* there); and per connection, from a pending step
//! on, with everything known ([`Facts`]).

use crate::verdict::{Cause, Pending, Verdict, WhyT};

/// One step of the program.
pub(crate) enum Step {
    /// A rule's expression: on to the next step when it holds, else to `skip_to` (the
    /// next rule's first step).
    Guard { test: Test, skip_to: u32 },
    /// `restrict-ips`.
    Restrict {
        rule: u32,
        action: u32,
        enforce: bool,
        allow: Option<u32>,
        deny: Option<u32>,
    },
    /// `deny` or `close-connection`.
    Close {
        rule: u32,
        action: u32,
        cause: Cause,
    },
    /// `forward-internal`.
    Forward { rule: u32, action: u32, target: u32 },
    /// `log`: bit `id` of the verdict's logs.
    Log { id: u32 },
    /// `set-vars`: the variables of `id`.
    SetVars { id: u32 },
    /// `terminate-tls`: config `id`, unless an earlier one was reached.
    TerminateTls { id: u32 },
}

/// What a guard tests.
pub(crate) enum Test {
    /// The client is in (`negate`: not in) CIDR set `set`.
    Set { set: u32, negate: bool },
    /// The client's country is one of (`negate`: none of) `codes`.
    Country { codes: Box<[String]>, negate: bool },
    /// CEL expression `id`.
    Cel { id: u32 },
}

/// What a run may ask; `None` when it is not known yet (the run pends).
pub(crate) trait Facts {
    /// Whether CIDR set `set` holds the client.
    fn has(&self, set: u32) -> bool;
    /// Whether the client's country is one of `codes` (no country: no).
    fn country_in(&mut self, codes: &[String]) -> Option<bool>;
    /// Whether CEL expression `id` holds.
    fn cel(&mut self, id: u32) -> Option<bool>;
    /// Sets the variables of `set-vars` `id`.
    fn set_vars(&mut self, id: u32) -> Option<()>;
}

/// Where a run starts: the beginning, or a pending verdict.
#[derive(Clone, Copy, Default)]
pub(crate) struct Start {
    pub(crate) step: u32,
    pub(crate) logged: Option<WhyT>,
    pub(crate) allowed_by: Option<u32>,
    pub(crate) last: (u32, u32),
    pub(crate) logs: u64,
    pub(crate) tls: Option<u32>,
}

impl Start {
    /// Resumes a pending verdict.
    pub(crate) fn resume(v: &Verdict) -> Option<Start> {
        v.pending.map(|p| Start {
            step: p.step,
            logged: v.would_deny,
            allowed_by: p.allowed_by,
            last: p.last,
            logs: v.logs,
            tls: v.tls,
        })
    }
}

/// Runs `steps` from `start` and returns the verdict (pending when `facts` lacks
/// something a step needs).
pub(crate) fn run(steps: &[Step], start: Start, facts: &mut impl Facts) -> Verdict {
    let Start {
        step,
        mut logged,
        mut allowed_by,
        mut last,
        mut logs,
        mut tls,
    } = start;
    let mut i = step as usize;
    let decided = |target, why, logged, logs, tls| Verdict {
        target,
        why,
        would_deny: logged,
        logs,
        tls,
        pending: None,
    };
    while let Some(s) = steps.get(i) {
        let pend = |logged: Option<WhyT>,
                    allowed_by: Option<u32>,
                    last: (u32, u32),
                    logs: u64,
                    tls: Option<u32>| Verdict {
            target: None,
            why: WhyT {
                rule: last.0,
                action: last.1,
                cause: Cause::NoDecision,
                set: None,
            },
            would_deny: logged,
            logs,
            tls,
            pending: Some(Pending {
                step: i as u32,
                allowed_by,
                last,
            }),
        };
        match *s {
            Step::Guard { ref test, skip_to } => {
                let holds = match *test {
                    Test::Set { set, negate } => Some(facts.has(set) != negate),
                    Test::Country { ref codes, negate } => {
                        facts.country_in(codes).map(|c| c != negate)
                    }
                    Test::Cel { id } => facts.cel(id),
                };
                match holds {
                    None => return pend(logged, allowed_by, last, logs, tls),
                    Some(true) => i += 1,
                    Some(false) => i = skip_to as usize,
                }
                continue;
            }
            Step::Restrict {
                rule,
                action,
                enforce,
                allow,
                deny,
            } => {
                last = (rule, action);
                let cause = match (deny, allow) {
                    (Some(d), _) if facts.has(d) => Some((Cause::DeniedByCidr, Some(d))),
                    (_, Some(a)) if !facts.has(a) => Some((Cause::NotInAllowList, None)),
                    _ => None,
                };
                match cause {
                    Some((cause, set)) => {
                        let why = WhyT {
                            rule,
                            action,
                            cause,
                            set,
                        };
                        if enforce {
                            return decided(None, why, logged, logs, tls);
                        }
                        logged = logged.or(Some(why));
                    }
                    None => allowed_by = allow.or(allowed_by),
                }
            }
            Step::Close {
                rule,
                action,
                cause,
            } => {
                let why = WhyT {
                    rule,
                    action,
                    cause,
                    set: None,
                };
                return decided(None, why, logged, logs, tls);
            }
            Step::Forward {
                rule,
                action,
                target,
            } => {
                let why = WhyT {
                    rule,
                    action,
                    cause: Cause::Forward,
                    set: allowed_by,
                };
                return decided(Some(target), why, logged, logs, tls);
            }
            Step::Log { id } => logs |= 1 << id,
            Step::TerminateTls { id } => tls = tls.or(Some(id)),
            Step::SetVars { id } => {
                if facts.set_vars(id).is_none() {
                    return pend(logged, allowed_by, last, logs, tls);
                }
            }
        }
        i += 1;
    }
    decided(
        None,
        WhyT {
            rule: last.0,
            action: last.1,
            cause: Cause::NoDecision,
            set: None,
        },
        logged,
        logs,
        tls,
    )
}
