//! Limits on the agent port before a peer has proved anything: how many connections
//! may be unauthenticated at once (edge-wide and per source address), and how fast one
//! source without a live session may start TLS handshakes. A flood of handshakes or
//! of silent connections from a few sources is turned away in microseconds, before it
//! costs a handshake, and the edge keeps its cores for the agents it already knows.
//!
//! The whole pre-authentication phase (first byte, TLS handshake, hello) runs under
//! one deadline, [`PreAuthSettings::handshake_timeout`], however the peer drips its
//! bytes.
//!
//! The handshake rate is a token bucket per source: admission control, a different
//! job from the log throttle ([`crate::logging::Throttle`], which only decides which
//! log lines to write). It reads the crate clock ([`crate::clock::mono_ms`]).

use std::{
    collections::HashMap,
    net::IpAddr,
    sync::{
        atomic::{AtomicUsize, Ordering},
        Mutex,
    },
};

use super::conn_limits::{ConnLimits, IpSlot, LimitHit, LimitSettings};

/// How long an agent connection may take to say who it is (TLS handshake + first
/// frame), unless `agents.handshake_timeout` says otherwise.
pub const AGENT_HANDSHAKE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// Limits of the agent port's unauthenticated phase, as configured.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PreAuthSettings {
    /// Connections at once that have not authenticated yet, edge-wide.
    pub max_unauthenticated: usize,
    /// Of those, from one source IP.
    pub max_unauthenticated_per_ip: u32,
    /// TLS handshakes per second one source without a live session may start
    /// (bursts of twice as many).
    pub handshakes_per_ip_per_sec: u32,
    /// How long a connection may take from accept to its hello (TLS handshake
    /// included): one deadline for the whole phase.
    pub handshake_timeout: std::time::Duration,
}

impl Default for PreAuthSettings {
    fn default() -> Self {
        Self {
            max_unauthenticated: 1024,
            max_unauthenticated_per_ip: 64,
            handshakes_per_ip_per_sec: 20,
            handshake_timeout: AGENT_HANDSHAKE_TIMEOUT,
        }
    }
}

/// Why a connection was turned away before authenticating.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PreAuthRefusal {
    /// Too many unauthenticated connections edge-wide.
    Busy,
    /// Too many unauthenticated connections from this source.
    PerIp,
    /// This source starts handshakes faster than allowed.
    Rate,
}

impl PreAuthRefusal {
    /// Name for logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Busy => "max_unauthenticated",
            Self::PerIp => "max_unauthenticated_per_ip",
            Self::Rate => "handshakes_per_ip_per_sec",
        }
    }
}

/// Most sources whose handshake rate is tracked; past it the table starts afresh
/// (a spoofing flooder cannot grow it without bound).
const MAX_TRACKED_SOURCES: usize = 65_536;

/// The gate every agent-port connection passes.
pub struct PreAuthGate {
    settings: PreAuthSettings,
    open: AtomicUsize,
    limits: ConnLimits,
    edge_wide: ConnLimits,
    buckets: Mutex<HashMap<IpAddr, Bucket>>,
}

/// A token bucket in thousandths of a handshake.
#[derive(Debug, Clone, Copy)]
struct Bucket {
    milli_tokens: u64,
    at_ms: u64,
}

/// An unauthenticated connection's place; freed when dropped.
pub struct PreAuthSlot<'a> {
    gate: &'a PreAuthGate,
    _ip: Option<IpSlot<'a>>,
}

impl Drop for PreAuthSlot<'_> {
    fn drop(&mut self) {
        self.gate.open.fetch_sub(1, Ordering::Relaxed);
    }
}

impl PreAuthGate {
    /// A gate enforcing `settings`.
    pub fn new(settings: PreAuthSettings) -> Self {
        Self {
            settings,
            open: AtomicUsize::new(0),
            limits: ConnLimits::new(LimitSettings {
                max_connections: Some(settings.max_unauthenticated),
                max_connections_per_ip: Some(settings.max_unauthenticated_per_ip),
            }),
            edge_wide: ConnLimits::new(LimitSettings {
                max_connections: Some(settings.max_unauthenticated),
                max_connections_per_ip: None,
            }),
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Admits a new connection from `ip` into the unauthenticated phase. A source
    /// with a live session (`has_session`: an agent opening its data channels, maybe
    /// hundreds at once) is held only to the edge-wide cap.
    pub fn admit(&self, ip: IpAddr, has_session: bool) -> Result<PreAuthSlot<'_>, PreAuthRefusal> {
        let open = self.open.fetch_add(1, Ordering::Relaxed) + 1;
        let limits = if has_session {
            &self.edge_wide
        } else {
            &self.limits
        };
        match limits.admit(ip, open) {
            Ok(slot) => Ok(PreAuthSlot {
                gate: self,
                _ip: slot,
            }),
            Err(hit) => {
                self.open.fetch_sub(1, Ordering::Relaxed);
                Err(match hit {
                    LimitHit::Endpoint => PreAuthRefusal::Busy,
                    LimitHit::PerIp => PreAuthRefusal::PerIp,
                })
            }
        }
    }

    /// Takes one handshake from `ip`'s bucket (sources with a live session are not
    /// asked: `has_session`).
    pub fn allow_handshake(&self, ip: IpAddr, has_session: bool) -> Result<(), PreAuthRefusal> {
        if has_session {
            return Ok(());
        }
        self.take_handshake(ip, crate::clock::mono_ms())
    }

    /// Takes one handshake from `ip`'s bucket at `now_ms` on the crate clock.
    fn take_handshake(&self, ip: IpAddr, now_ms: u64) -> Result<(), PreAuthRefusal> {
        let rate = u64::from(self.settings.handshakes_per_ip_per_sec.max(1));
        let capacity = rate * 2 * 1000;
        let mut buckets = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        if buckets.len() >= MAX_TRACKED_SOURCES && !buckets.contains_key(&ip) {
            buckets.clear();
        }
        let b = buckets.entry(ip).or_insert(Bucket {
            milli_tokens: capacity,
            at_ms: now_ms,
        });
        b.milli_tokens = (b.milli_tokens + now_ms.saturating_sub(b.at_ms) * rate).min(capacity);
        b.at_ms = b.at_ms.max(now_ms);
        if b.milli_tokens < 1000 {
            return Err(PreAuthRefusal::Rate);
        }
        b.milli_tokens -= 1000;
        Ok(())
    }

    /// The whole pre-authentication phase's time limit.
    pub fn handshake_timeout(&self) -> std::time::Duration {
        self.settings.handshake_timeout
    }

    /// Connections in the unauthenticated phase now.
    pub fn unauthenticated(&self) -> usize {
        self.open.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gate(max: usize, per_ip: u32, rate: u32) -> PreAuthGate {
        PreAuthGate::new(PreAuthSettings {
            max_unauthenticated: max,
            max_unauthenticated_per_ip: per_ip,
            handshakes_per_ip_per_sec: rate,
            ..Default::default()
        })
    }

    #[test]
    fn caps_unauthenticated_connections_per_source_and_in_all() {
        let g = gate(3, 2, 10);
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "192.0.2.2".parse().unwrap();
        let s1 = g.admit(a, false).unwrap();
        let _s2 = g.admit(a, false).unwrap();
        assert_eq!(g.admit(a, false).err(), Some(PreAuthRefusal::PerIp));
        let s3 = g.admit(a, true).unwrap();
        assert_eq!(g.admit(b, false).err(), Some(PreAuthRefusal::Busy));
        assert_eq!(g.admit(b, true).err(), Some(PreAuthRefusal::Busy));
        assert_eq!(g.unauthenticated(), 3);
        drop(s1);
        drop(s3);
        assert_eq!(g.unauthenticated(), 1);
        assert!(g.admit(a, false).is_ok(), "a freed place is usable again");
    }

    #[test]
    fn handshake_rate_allows_a_burst_then_refuses_unless_the_source_has_a_session() {
        let g = gate(10, 10, 5);
        let ip: IpAddr = "192.0.2.9".parse().unwrap();
        let allowed = (0..100)
            .filter(|_| g.allow_handshake(ip, false).is_ok())
            .count();
        assert!(
            (10..=11).contains(&allowed),
            "burst of 2x the rate, got {allowed}"
        );
        assert_eq!(g.allow_handshake(ip, false), Err(PreAuthRefusal::Rate));
        assert_eq!(g.allow_handshake(ip, true), Ok(()));
        let other: IpAddr = "192.0.2.10".parse().unwrap();
        assert_eq!(g.allow_handshake(other, false), Ok(()), "per source");
    }

    #[test]
    fn the_handshake_bucket_refills_at_the_rate_on_a_fake_clock() {
        let g = gate(10, 10, 5);
        let ip: IpAddr = "192.0.2.11".parse().unwrap();
        let t0 = 5_000_000;
        let burst = (0..20).filter(|_| g.take_handshake(ip, t0).is_ok()).count();
        assert_eq!(burst, 10, "a burst of twice the rate");
        assert_eq!(g.take_handshake(ip, t0 + 199), Err(PreAuthRefusal::Rate));
        assert_eq!(
            g.take_handshake(ip, t0 + 200),
            Ok(()),
            "one per 200 ms at 5/s"
        );
        assert_eq!(g.take_handshake(ip, t0 + 200), Err(PreAuthRefusal::Rate));
    }
}
