//! [`CompiledPolicy`]: the immutable, compiled form of a [`TrafficPolicy`](crate::TrafficPolicy)
//! and its hot path, [`CompiledPolicy::evaluate`].
//!
//! Compilation (see `compile.rs`) folds *all* rules into one table per
//! address family whose segments map straight to a precomputed outcome, so
//! evaluation is one table lookup whatever the number of rules and CIDRs:
//! no allocation, no lock, no loop over rules.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use crate::decision::Decision;
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
    pub(crate) decides_at_connect: bool,
    pub(crate) http: HttpPhases,
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
    /// Decides what to do with a connection from `client`. One table
    /// lookup; no allocation, no lock. IPv4-mapped IPv6 addresses
    /// (`::ffff:a.b.c.d`) are checked as IPv4.
    #[inline]
    pub fn evaluate(&self, client: SocketAddr) -> Decision<'_> {
        self.evaluate_ip(client.ip())
    }

    /// [`evaluate`](Self::evaluate) for a bare address.
    #[inline]
    pub fn evaluate_ip(&self, ip: IpAddr) -> Decision<'_> {
        match ip {
            IpAddr::V4(a) => self.decide4(a),
            IpAddr::V6(a) => {
                let bits = u128::from(a);
                let (hi, lo) = ((bits >> 64) as u64, bits as u64);
                // `::ffff:a.b.c.d` (what `Ipv6Addr::to_ipv4_mapped` accepts).
                if hi == 0 && lo >> 32 == 0xffff {
                    self.decide4(Ipv4Addr::from(lo as u32))
                } else {
                    let id = match &self.tables {
                        Tables::Narrow(_, t6) => usize::from(t6.get(hi, lo)),
                        Tables::Wide(_, t6) => usize::from(t6.get(hi, lo)),
                    };
                    self.decision(id, IpAddr::V6(a))
                }
            }
        }
    }

    #[inline(always)]
    fn decide4(&self, a: Ipv4Addr) -> Decision<'_> {
        let id = match &self.tables {
            Tables::Narrow(t4, _) => usize::from(t4.get(u32::from(a))),
            Tables::Wide(t4, _) => usize::from(t4.get(u32::from(a))),
        };
        self.decision(id, IpAddr::V4(a))
    }

    #[inline(always)]
    fn decision(&self, id: usize, client: IpAddr) -> Decision<'_> {
        debug_assert!(id < self.verdicts.verdicts.len());
        Decision {
            verdicts: &self.verdicts,
            // SAFETY: every value in the tables is an id handed out by the
            // interner that built `verdicts`; `compile` asserts it.
            verdict: unsafe { self.verdicts.verdicts.get_unchecked(id) },
            client,
        }
    }

    /// Every internal endpoint this policy can forward to (deduplicated, in
    /// order of first appearance).
    pub fn forward_targets(&self) -> &[InternalUrl] {
        &self.verdicts.targets
    }

    /// Whether `on_tcp_connect` decides every connection. When it does not (an HTTP
    /// endpoint whose requests are forwarded by `on_http_request`), a connection that
    /// passes its restrictions gets [`Cause::NoDecision`](crate::Cause::NoDecision): go
    /// on to the HTTP phases.
    pub fn decides_at_connect(&self) -> bool {
        self.decides_at_connect
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
