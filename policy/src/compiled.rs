//! [`CompiledPolicy`]: the immutable, compiled form of a [`TrafficPolicy`](crate::TrafficPolicy)
//! and its hot path, [`CompiledPolicy::evaluate`].
//!
//! Compilation (see `compile.rs`) folds *all* rules into one table per
//! address family whose segments map straight to a precomputed outcome, so
//! evaluation is one table lookup whatever the number of rules and CIDRs:
//! no allocation, no lock, no loop over rules.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use crate::conn_eval::{self, ConnInfo, LogEvent, NoConnInfo, Program};
use crate::decision::{Decision, Held};
use crate::http_eval::HttpPhases;
use crate::table4::Table4;
use crate::table6::Table6;
use crate::verdict::Verdicts;
use crate::InternalUrl;

/// A compiled policy, ready to evaluate. Immutable; share it through a
/// [`PolicyHandle`](crate::PolicyHandle) or an `Arc`.
#[derive(Debug)]
pub struct CompiledPolicy {
    pub(crate) verdicts: Verdicts,
    pub(crate) tables: Tables,
    pub(crate) stats: BuildStats,
    /// Verdict ids from this one on are pending (the rules need more than the client
    /// address): `compile` puts them last.
    pub(crate) first_pending: usize,
    pub(crate) decides_at_connect: bool,
    pub(crate) http: HttpPhases,
    /// The rules as a program, for the verdicts that pend.
    pub(crate) program: Program,
}

/// The per-family tables; values are indexes into `verdicts.verdicts`, one byte wide
/// when the policy has at most 256 distinct outcomes.
#[derive(Debug)]
pub(crate) enum Tables {
    Narrow(Table4<u8>, Table6<u8>),
    Wide(Table4<u16>, Table6<u16>),
}

/// Figures about one compilation.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct BuildStats {
    /// Wall time of [`TrafficPolicy::compile`](crate::TrafficPolicy::compile).
    pub duration: Duration,
    /// IPv4 CIDRs listed (after normalisation, before merging).
    pub prefixes_v4: usize,
    /// IPv6 CIDRs listed.
    pub prefixes_v6: usize,
    /// Segment boundaries in the IPv4 table.
    pub boundaries_v4: usize,
    /// Segment boundaries in the IPv6 table.
    pub boundaries_v6: usize,
    /// Heap bytes of the IPv4 lookup table (index, keys, values).
    pub table_bytes_v4: usize,
    /// Heap bytes of the IPv6 lookup table.
    pub table_bytes_v6: usize,
    /// Heap bytes of the per-list indexes used by `Why::cidr` (logs only).
    pub provenance_bytes: usize,
    /// Distinct precomputed outcomes.
    pub outcomes: usize,
}

impl CompiledPolicy {
    /// Decides what to do with a connection from `client`, about which nothing
    /// more is known (expressions that read more find it absent). See
    /// [`evaluate_conn`](Self::evaluate_conn).
    #[inline]
    pub fn evaluate(&self, client: SocketAddr) -> Decision<'_> {
        self.evaluate_conn(client, &NoConnInfo)
    }

    /// Decides what to do with a connection from `client`: one table lookup, no
    /// allocation, no lock, when every expression of the policy tests the client
    /// address (those are folded into the table); else the rules from the first one
    /// that needs more run on with what `info` tells. IPv4-mapped IPv6 addresses
    /// (`::ffff:a.b.c.d`) are checked as IPv4.
    #[inline]
    pub fn evaluate_conn(&self, client: SocketAddr, info: &dyn ConnInfo) -> Decision<'_> {
        self.lookup(client.ip(), client.port(), info)
    }

    /// [`evaluate`](Self::evaluate) for a bare address.
    #[inline]
    pub fn evaluate_ip(&self, ip: IpAddr) -> Decision<'_> {
        self.lookup(ip, 0, &NoConnInfo)
    }

    /// A pending verdict run on with the connection's facts (conn_eval.rs).
    #[cold]
    #[inline(never)]
    fn run_on(&self, id: usize, client: SocketAddr, info: &dyn ConnInfo) -> Decision<'_> {
        let ran = conn_eval::resume(
            &self.program,
            &self.verdicts.sets,
            &self.verdicts.verdicts[id],
            client,
            info,
        );
        Decision {
            verdicts: &self.verdicts,
            held: Held::Ran(ran),
            client: client.ip(),
        }
    }

    /// The table's verdict for `ip`, or for a pending one the verdict of the rules run
    /// on from it with `info`.
    #[inline]
    fn lookup<'p>(&'p self, ip: IpAddr, port: u16, info: &dyn ConnInfo) -> Decision<'p> {
        match ip {
            IpAddr::V4(a) => self.decide4(a, port, info),
            IpAddr::V6(a) => {
                let bits = u128::from(a);
                let (hi, lo) = ((bits >> 64) as u64, bits as u64);
                // `::ffff:a.b.c.d` (what `Ipv6Addr::to_ipv4_mapped` accepts).
                if hi == 0 && lo >> 32 == 0xffff {
                    self.decide4(Ipv4Addr::from(lo as u32), port, info)
                } else {
                    let id = match &self.tables {
                        Tables::Narrow(_, t6) => usize::from(t6.get(hi, lo)),
                        Tables::Wide(_, t6) => usize::from(t6.get(hi, lo)),
                    };
                    self.decision(id, IpAddr::V6(a), port, info)
                }
            }
        }
    }

    #[inline(always)]
    fn decide4<'p>(&'p self, a: Ipv4Addr, port: u16, info: &dyn ConnInfo) -> Decision<'p> {
        let id = match &self.tables {
            Tables::Narrow(t4, _) => usize::from(t4.get(u32::from(a))),
            Tables::Wide(t4, _) => usize::from(t4.get(u32::from(a))),
        };
        self.decision(id, IpAddr::V4(a), port, info)
    }

    #[inline(always)]
    fn decision<'p>(
        &'p self,
        id: usize,
        client: IpAddr,
        port: u16,
        info: &dyn ConnInfo,
    ) -> Decision<'p> {
        if id >= self.first_pending {
            return self.run_on(id, SocketAddr::new(client, port), info);
        }
        debug_assert!(id < self.verdicts.verdicts.len());
        Decision {
            verdicts: &self.verdicts,
            // SAFETY: every value in the tables is an id handed out by the
            // interner that built `verdicts`; `compile` asserts it.
            held: Held::Table(unsafe { self.verdicts.verdicts.get_unchecked(id) }),
            client,
        }
    }

    /// Every internal endpoint this policy can forward to (deduplicated, in
    /// order of first appearance).
    pub fn forward_targets(&self) -> &[InternalUrl] {
        &self.verdicts.targets
    }

    /// Whether some verdict needs more than the client address (expressions over
    /// other facts, `set-vars`): then [`evaluate_conn`](Self::evaluate_conn) wants a
    /// real [`ConnInfo`].
    pub fn reads_more_than_the_address(&self) -> bool {
        self.first_pending < self.verdicts.verdicts.len()
    }

    /// The `log` actions `decision`'s connection reached, their metadata rendered
    /// (`${conn.client_ip}`, …; `vars.*` are not kept for logs).
    pub fn log_events(
        &self,
        decision: &Decision<'_>,
        client: SocketAddr,
        info: &dyn ConnInfo,
    ) -> Vec<LogEvent<'_>> {
        conn_eval::log_events(&self.verdicts, decision.verdict().logs, client, info)
    }

    /// Whether an expression reads `conn.geo` (the edge needs a country database).
    pub fn reads_country(&self) -> bool {
        self.program.reads_geo || self.http.reads_country()
    }

    /// Whether `on_tcp_connect` decides every connection. When it does not (an HTTP
    /// endpoint whose requests are forwarded by `on_http_request`), a connection that
    /// passes its restrictions gets [`Cause::NoDecision`](crate::Cause::NoDecision): go
    /// on to the HTTP phases.
    pub fn decides_at_connect(&self) -> bool {
        self.decides_at_connect
    }

    /// Whether some `terminate-tls` action may end a connection's TLS at the edge.
    pub fn terminates_tls(&self) -> bool {
        !self.verdicts.tls.is_empty()
    }

    /// The HTTP phases (empty for a policy without HTTP rules).
    pub fn http(&self) -> &HttpPhases {
        &self.http
    }

    /// How long the build took, table sizes, bytes.
    pub fn stats(&self) -> &BuildStats {
        &self.stats
    }
}
