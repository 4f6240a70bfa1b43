//! Compilation: [`TrafficPolicy::compile`].
//!
//! 1. Every non-empty `allow`/`deny` list becomes a *set*: per family, its
//!    CIDRs are sorted and merged into disjoint intervals (`intervals.rs`).
//! 2. The rules become a straight-line program of steps (`program.rs`); a rule's
//!    expressions are guards before its actions, the client-address shapes among
//!    them sets like the `restrict-ips` lists (`guard.rs`).
//! 3. A sweep walks the boundaries of all sets in address order, keeping
//!    which sets contain the current segment, runs the program on that
//!    membership once per segment, and interns the outcome (pending at the first
//!    step that needs more than the address: `conn_eval.rs` runs on from there per
//!    connection). Adjacent segments with the same outcome merge.
//! 4. The boundaries and outcome ids become the per-family tables.
//!
//! The result answers any address with one lookup, however many rules and
//! CIDRs the policy has.

use std::collections::HashMap;
use std::time::Instant;

use ipnet::IpNet;

use crate::compiled::{BuildStats, CompiledPolicy, Tables};
use crate::conn_eval::Program;
use crate::guard::{classify, Guard};
use crate::intervals::{merge, Provenance};
use crate::key::Key;
use crate::model::{Action, RestrictIps, TrafficPolicy, VarValue};
use crate::program::{run, Facts, Start, Step, Test};
use crate::table4::Table4;
use crate::table6::Table6;
use crate::verdict::{Cause, CidrSet, LogAction, Verdict, Verdicts};
use crate::{Cidr, InternalUrl, PolicyError};

/// Most distinct outcomes a policy may have (values are `u16`).
const MAX_OUTCOMES: usize = 1 << 16;

impl TrafficPolicy {
    /// Compiles the policy into lookup tables. Validates first (a parsed
    /// policy is already valid; this catches policies built in code).
    pub fn compile(&self) -> Result<CompiledPolicy, PolicyError> {
        let started = Instant::now();
        self.validate()?;
        let mut stats = BuildStats::default();

        let mut targets: Vec<InternalUrl> = Vec::new();
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
        let mut program = Program::default();
        let mut steps: Vec<Step> = Vec::new();
        let mut cel = Vec::new();
        let mut set_vars = Vec::new();
        let mut logs = Vec::new();
        let mut tls = Vec::new();
        for (r, rule) in self.on_tcp_connect.iter().enumerate() {
            let rule_ix = r as u32;
            let guards_from = steps.len();
            for expr in &rule.expressions {
                let test = match classify(expr).map_err(PolicyError::Invalid)? {
                    Guard::Client { cidrs, negate } => Test::Set {
                        set: add_set(&cidrs, &mut stats).expect("a shape lists an address"),
                        negate,
                    },
                    Guard::Country { codes, negate } => {
                        program.reads_geo = true;
                        Test::Country {
                            codes: codes.into(),
                            negate,
                        }
                    }
                    Guard::Cel => {
                        program.note_reads(expr.as_str());
                        cel.push(expr.clone());
                        Test::Cel {
                            id: cel.len() as u32 - 1,
                        }
                    }
                };
                steps.push(Step::Guard { test, skip_to: 0 });
            }
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
                    Action::Deny | Action::CloseConnection => Step::Close {
                        rule: rule_ix,
                        action: action_ix,
                        cause: if matches!(action, Action::Deny) {
                            Cause::DenyAction
                        } else {
                            Cause::CloseAction
                        },
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
                    Action::Log(config) => {
                        for t in config.metadata.values() {
                            program.note_reads(t.as_str());
                        }
                        logs.push(LogAction {
                            rule: rule_ix,
                            config: config.clone(),
                        });
                        Step::Log {
                            id: logs.len() as u32 - 1,
                        }
                    }
                    Action::TerminateTls(config) => {
                        tls.push(config.server_config().map_err(|e| {
                            PolicyError::Invalid(format!(
                                "{}, action {} (`terminate-tls`): {e}",
                                rule.describe(r),
                                a + 1
                            ))
                        })?);
                        Step::TerminateTls {
                            id: tls.len() as u32 - 1,
                        }
                    }
                    Action::SetVars(config) => {
                        for v in config.vars.values() {
                            if let VarValue::Text(t) = v {
                                program.note_reads(t.as_str());
                            }
                        }
                        set_vars.push(config.clone());
                        Step::SetVars {
                            id: set_vars.len() as u32 - 1,
                        }
                    }
                });
            }
            let next_rule = steps.len() as u32;
            for step in &mut steps[guards_from..] {
                if let Step::Guard { skip_to, .. } = step {
                    *skip_to = next_rule;
                }
            }
        }

        let mut interner = Interner::default();
        let words = sets.len().div_ceil(64).max(1);
        let (k4, v4) = sweep(&sets4, words, |bits| {
            interner.intern(run(&steps, Start::default(), &mut Segment(bits)))
        })?;
        let (k6, v6) = sweep(&sets6, words, |bits| {
            interner.intern(run(&steps, Start::default(), &mut Segment(bits)))
        })?;
        drop(sets4);
        drop(sets6);
        // The pending verdicts last, so the lookup tells them by their id alone.
        let (verdicts, first_pending, v4, v6) = pending_last(interner.verdicts, v4, v6);
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
                logs: logs.into_boxed_slice(),
                tls: tls.into_boxed_slice(),
            },
            program: Program {
                steps: steps.into_boxed_slice(),
                cel: cel.into_boxed_slice(),
                set_vars: set_vars.into_boxed_slice(),
                ..program
            },
            tables,
            stats,
            first_pending,
            decides_at_connect: self.decides_at_connect(),
            http: crate::http_eval::HttpPhases::build(self, &restrict_table)?,
        })
    }
}

/// Renumbers the verdicts so those pending come after every other: returns them, the
/// first pending id, and the tables' values renumbered.
fn pending_last(
    verdicts: Vec<Verdict>,
    v4: Vec<u16>,
    v6: Vec<u16>,
) -> (Vec<Verdict>, usize, Vec<u16>, Vec<u16>) {
    let mut order: Vec<usize> = (0..verdicts.len()).collect();
    order.sort_by_key(|&i| verdicts[i].pending.is_some());
    let mut new_id = vec![0u16; verdicts.len()];
    for (new, &old) in order.iter().enumerate() {
        new_id[old] = new as u16;
    }
    let first_pending = verdicts.iter().filter(|v| v.pending.is_none()).count();
    let sorted = order.iter().map(|&i| verdicts[i]).collect();
    let remap = |t: Vec<u16>| t.into_iter().map(|v| new_id[usize::from(v)]).collect();
    (sorted, first_pending, remap(v4), remap(v6))
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
            expressions: Vec::new(),
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

/// The facts of one table segment: which sets hold it, and nothing else.
struct Segment<'b>(&'b [u64]);

impl Facts for Segment<'_> {
    fn has(&self, s: u32) -> bool {
        self.0[(s / 64) as usize] >> (s % 64) & 1 == 1
    }
    fn country_in(&mut self, _: &[String]) -> Option<bool> {
        None
    }
    fn cel(&mut self, _: u32) -> Option<bool> {
        None
    }
    fn set_vars(&mut self, _: u32) -> Option<()> {
        None
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
                self.ids.insert(*x, i as u16);
            }
        }
        if self.verdicts.len() >= 8 {
            self.ids.insert(v, id);
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
