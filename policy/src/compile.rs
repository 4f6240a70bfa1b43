//! Compilation: [`TrafficPolicy::compile`].
//!
//! 1. Every non-empty `allow`/`deny` list becomes a *set*: per family, its
//!    CIDRs are sorted and merged into disjoint intervals (`intervals.rs`).
//! 2. The rules become a straight-line program of steps.
//! 3. A sweep walks the boundaries of all sets in address order, keeping
//!    which sets contain the current segment, runs the program on that
//!    membership once per segment, and interns the outcome. Adjacent
//!    segments with the same outcome merge.
//! 4. The boundaries and outcome ids become the per-family tables.
//!
//! The result answers any address with one lookup, however many rules and
//! CIDRs the policy has.

use std::collections::HashMap;
use std::time::Instant;

use ipnet::IpNet;

use crate::compiled::{BuildStats, CompiledPolicy, Tables};
use crate::intervals::{merge, Provenance};
use crate::key::Key;
use crate::model::{Action, RestrictIps, TrafficPolicy};
use crate::table4::Table4;
use crate::table6::Table6;
use crate::verdict::{Cause, CidrSet, Verdict, Verdicts, WhyT};
use crate::{Cidr, InternalUrl, PolicyError};

/// Most distinct outcomes a policy may have (values are `u16`).
const MAX_OUTCOMES: usize = 1 << 16;

enum Step {
    Restrict {
        rule: u32,
        action: u32,
        enforce: bool,
        allow: Option<u32>,
        deny: Option<u32>,
    },
    Deny {
        rule: u32,
        action: u32,
    },
    Forward {
        rule: u32,
        action: u32,
        target: u32,
    },
}

impl TrafficPolicy {
    /// Compiles the policy into lookup tables. Validates first (a parsed
    /// policy is already valid; this catches policies built in code).
    pub fn compile(&self) -> Result<CompiledPolicy, PolicyError> {
        let started = Instant::now();
        self.validate()?;
        let mut stats = BuildStats::default();

        let mut targets: Vec<InternalUrl> = Vec::new();
        let mut steps = Vec::new();
        let mut sets4: Vec<Vec<u32>> = Vec::new();
        let mut sets6: Vec<Vec<u128>> = Vec::new();
        let mut sets: Vec<CidrSet> = Vec::new();
        let mut add_set = |list: &[Cidr], stats: &mut BuildStats| -> Option<u32> {
            if list.is_empty() {
                return None;
            }
            let (b4, b6, set) = build_set(list, stats);
            sets4.push(b4);
            sets6.push(b6);
            sets.push(set);
            Some(sets.len() as u32 - 1)
        };
        for (r, rule) in self.on_tcp_connect.iter().enumerate() {
            let rule_ix = r as u32;
            for (a, action) in rule.actions.iter().enumerate() {
                let action_ix = a as u32;
                steps.push(match action {
                    Action::RestrictIps(ri) => Step::Restrict {
                        rule: rule_ix,
                        action: action_ix,
                        enforce: ri.enforce,
                        allow: add_set(&ri.allow, &mut stats),
                        deny: add_set(&ri.deny, &mut stats),
                    },
                    Action::Deny => Step::Deny {
                        rule: rule_ix,
                        action: action_ix,
                    },
                    Action::ForwardInternal(f) => {
                        let t = match targets.iter().position(|t| *t == f.url) {
                            Some(t) => t,
                            None => {
                                targets.push(f.url.clone());
                                targets.len() - 1
                            }
                        };
                        Step::Forward {
                            rule: rule_ix,
                            action: action_ix,
                            target: t as u32,
                        }
                    }
                });
            }
        }

        let mut interner = Interner::default();
        let words = sets.len().div_ceil(64).max(1);
        let (k4, v4) = sweep(&sets4, words, |bits| interner.intern(run(&steps, bits)))?;
        let (k6, v6) = sweep(&sets6, words, |bits| interner.intern(run(&steps, bits)))?;
        drop(sets4);
        drop(sets6);
        let verdicts = interner.verdicts;
        // `CompiledPolicy::decision` indexes `verdicts` unchecked with these.
        assert!(v4
            .iter()
            .chain(&v6)
            .all(|&v| usize::from(v) < verdicts.len()));
        let tables = if verdicts.len() <= 256 {
            let n4 = v4.iter().map(|&v| v as u8).collect();
            let n6 = v6.iter().map(|&v| v as u8).collect();
            Tables::Narrow(Table4::new(k4, n4), Table6::new(k6, n6))
        } else {
            Tables::Wide(Table4::new(k4, v4), Table6::new(k6, v6))
        };
        match &tables {
            Tables::Narrow(t4, t6) => {
                (stats.boundaries_v4, stats.boundaries_v6) = (t4.len(), t6.len());
                (stats.table_bytes_v4, stats.table_bytes_v6) = (t4.heap_bytes(), t6.heap_bytes());
            }
            Tables::Wide(t4, t6) => {
                (stats.boundaries_v4, stats.boundaries_v6) = (t4.len(), t6.len());
                (stats.table_bytes_v4, stats.table_bytes_v6) = (t4.heap_bytes(), t6.heap_bytes());
            }
        }
        stats.provenance_bytes = sets
            .iter()
            .map(|s| s.v4.heap_bytes() + s.v6.heap_bytes())
            .sum();
        stats.outcomes = verdicts.len();
        stats.duration = started.elapsed();
        Ok(CompiledPolicy {
            verdicts: Verdicts {
                rule_names: self.on_tcp_connect.iter().map(|r| r.name.clone()).collect(),
                targets: targets.into_boxed_slice(),
                sets: sets.into_boxed_slice(),
                verdicts: verdicts.into_boxed_slice(),
            },
            tables,
            stats,
            decides_at_connect: self.decides_at_connect(),
            http: crate::http_eval::HttpPhases::build(self, &restrict_table)?,
        })
    }
}

/// An HTTP phase's `restrict-ips` as a compiled table: one lookup per request however
/// long its lists (a policy of that restriction alone, forwarding whoever passes it).
fn restrict_table(r: &RestrictIps) -> Result<crate::http_eval::Passes, PolicyError> {
    let restriction = RestrictIps {
        enforce: true,
        ..r.clone()
    };
    let table = TrafficPolicy {
        on_tcp_connect: vec![crate::model::Rule {
            name: None,
            actions: vec![
                Action::RestrictIps(restriction),
                Action::ForwardInternal(crate::model::ForwardInternal {
                    url: InternalUrl::parse("tcp://passed.internal:1").expect("a valid URL"),
                }),
            ],
        }],
        ..TrafficPolicy::default()
    }
    .compile()?;
    Ok(Box::new(move |ip| table.evaluate_ip(ip).is_allowed()))
}

/// Splits a CIDR list by family, merges each into boundaries, indexes provenance.
fn build_set(list: &[Cidr], stats: &mut BuildStats) -> (Vec<u32>, Vec<u128>, CidrSet) {
    let mut p4: Vec<(u32, u8)> = Vec::new();
    let mut p6: Vec<(u128, u8)> = Vec::new();
    for c in list {
        match c.net() {
            IpNet::V4(n) => p4.push((u32::from(n.network()), n.prefix_len())),
            IpNet::V6(n) => p6.push((u128::from(n.network()), n.prefix_len())),
        }
    }
    stats.prefixes_v4 += p4.len();
    stats.prefixes_v6 += p6.len();
    let b4 = merge(&mut p4);
    let b6 = merge(&mut p6);
    let set = CidrSet {
        v4: Provenance::new(&p4),
        v6: Provenance::new(&p6),
    };
    (b4, b6, set)
}

/// Runs the program for a segment whose set membership is `bits`.
fn run(steps: &[Step], bits: &[u64]) -> Verdict {
    let has = |s: u32| bits[(s / 64) as usize] >> (s % 64) & 1 == 1;
    let mut logged: Option<WhyT> = None;
    let mut allowed_by: Option<u32> = None;
    let mut last = (0, 0);
    for step in steps {
        match *step {
            Step::Restrict {
                rule,
                action,
                enforce,
                allow,
                deny,
            } => {
                last = (rule, action);
                let cause = match (deny, allow) {
                    (Some(d), _) if has(d) => Some((Cause::DeniedByCidr, Some(d))),
                    (_, Some(a)) if !has(a) => Some((Cause::NotInAllowList, None)),
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
                            return Verdict {
                                target: None,
                                why,
                                would_deny: logged,
                            };
                        }
                        logged = logged.or(Some(why));
                    }
                    None => allowed_by = allow.or(allowed_by),
                }
            }
            Step::Deny { rule, action } => {
                return Verdict {
                    target: None,
                    why: WhyT {
                        rule,
                        action,
                        cause: Cause::DenyAction,
                        set: None,
                    },
                    would_deny: logged,
                }
            }
            Step::Forward {
                rule,
                action,
                target,
            } => {
                return Verdict {
                    target: Some(target),
                    why: WhyT {
                        rule,
                        action,
                        cause: Cause::Forward,
                        set: allowed_by,
                    },
                    would_deny: logged,
                }
            }
        }
    }
    Verdict {
        target: None,
        why: WhyT {
            rule: last.0,
            action: last.1,
            cause: Cause::NoDecision,
            set: None,
        },
        would_deny: logged,
    }
}

#[derive(Default)]
struct Interner {
    verdicts: Vec<Verdict>,
    ids: HashMap<Verdict, u16>,
}

impl Interner {
    fn intern(&mut self, v: Verdict) -> Result<u16, PolicyError> {
        if self.verdicts.len() <= 8 {
            if let Some(i) = self.verdicts.iter().position(|x| *x == v) {
                return Ok(i as u16);
            }
        } else if let Some(&i) = self.ids.get(&v) {
            return Ok(i);
        }
        if self.verdicts.len() >= MAX_OUTCOMES {
            return Err(PolicyError::TooLarge {
                distinct: self.verdicts.len() + 1,
                max: MAX_OUTCOMES,
            });
        }
        let id = self.verdicts.len() as u16;
        if self.verdicts.len() == 8 {
            for (i, x) in self.verdicts.iter().enumerate() {
                self.ids.insert(x.clone(), i as u16);
            }
        }
        if self.verdicts.len() >= 8 {
            self.ids.insert(v.clone(), id);
        }
        self.verdicts.push(v);
        Ok(id)
    }
}

/// Walks the boundaries of all sets of one family in order and returns the
/// table's keys (starting with 0) and the outcome id of each segment.
fn sweep<K: Key>(
    sets: &[Vec<K>],
    words: usize,
    mut decide: impl FnMut(&[u64]) -> Result<u16, PolicyError>,
) -> Result<(Vec<K>, Vec<u16>), PolicyError> {
    let mut bits = vec![0u64; words];
    let total: usize = sets.iter().map(Vec::len).sum();
    let mut keys = Vec::with_capacity(total + 1);
    let mut vals = Vec::with_capacity(total + 1);
    keys.push(K::default());
    vals.push(decide(&bits)?);

    let nonempty: Vec<usize> = (0..sets.len()).filter(|&s| !sets[s].is_empty()).collect();
    let mut step = |key: K, bits: &[u64], vals: &mut Vec<u16>, keys: &mut Vec<K>| {
        let id = decide(bits)?;
        if key == K::default() {
            vals[0] = id;
        } else if *vals.last().expect("vals starts non-empty") != id {
            keys.push(key);
            vals.push(id);
        }
        Ok::<(), PolicyError>(())
    };
    if let [only] = nonempty[..] {
        // One set in this family: its boundaries are already sorted.
        for &k in &sets[only] {
            bits[only / 64] ^= 1 << (only % 64);
            step(k, &bits, &mut vals, &mut keys)?;
        }
    } else if !nonempty.is_empty() {
        let mut events: Vec<(K, u32)> = Vec::with_capacity(total);
        for &s in &nonempty {
            events.extend(sets[s].iter().map(|&k| (k, s as u32)));
        }
        events.sort_unstable_by_key(|e| e.0);
        let mut i = 0;
        while i < events.len() {
            let key = events[i].0;
            while i < events.len() && events[i].0 == key {
                let s = events[i].1 as usize;
                bits[s / 64] ^= 1 << (s % 64);
                i += 1;
            }
            step(key, &bits, &mut vals, &mut keys)?;
        }
    }
    Ok((keys, vals))
}
