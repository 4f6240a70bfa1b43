//! How an off-data-path HTTP listener serves its connections ([`ServeOptions`]: phase
//! limits, a connection cap, optional TLS) and what it counts ([`ConnStats`]).

use std::{
    sync::{
        atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed},
        Arc,
    },
    time::Duration,
};

use rustls::ServerConfig;

use super::phase::{Phase, PhaseLimits};

/// Options of [`serve`](super::serve). The defaults are the secure ones documented for
/// `admin:` in docs/config.md.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ServeOptions {
    /// How long each phase of a connection may last.
    pub limits: PhaseLimits,
    /// Most connections served at once; beyond, a new connection is closed at once.
    pub max_connections: usize,
    /// TLS to terminate, if any (plain HTTP otherwise).
    pub tls: Option<Arc<ServerConfig>>,
}

/// Default [`PhaseLimits::header`]: a request head (and TLS handshake) within 10 s.
pub const DEFAULT_HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// Default [`PhaseLimits::request`]: body, handling and answer within 30 s.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// Default [`PhaseLimits::idle`]: a keep-alive connection idle for 60 s is closed.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// Default [`ServeOptions::max_connections`].
pub const DEFAULT_MAX_CONNECTIONS: usize = 256;

impl ServeOptions {
    /// Plain HTTP with the default limits.
    pub const fn new() -> Self {
        Self {
            limits: PhaseLimits {
                header: DEFAULT_HEADER_TIMEOUT,
                request: DEFAULT_REQUEST_TIMEOUT,
                idle: DEFAULT_IDLE_TIMEOUT,
            },
            max_connections: DEFAULT_MAX_CONNECTIONS,
            tls: None,
        }
    }

    /// Phase limits.
    #[must_use]
    pub const fn limits(mut self, limits: PhaseLimits) -> Self {
        self.limits = limits;
        self
    }

    /// Connection cap (at least 1).
    #[must_use]
    pub const fn max_connections(mut self, n: usize) -> Self {
        self.max_connections = if n == 0 { 1 } else { n };
        self
    }

    /// Terminate TLS with `config`.
    #[must_use]
    pub fn tls(mut self, config: Option<Arc<ServerConfig>>) -> Self {
        self.tls = config;
        self
    }
}

impl Default for ServeOptions {
    fn default() -> Self {
        Self::new()
    }
}

/// Counters of one listener.
#[derive(Debug, Default)]
pub struct ConnStats {
    open: AtomicUsize,
    refused: AtomicU64,
    timed_out: [AtomicU64; 3],
    tls_failed: AtomicU64,
}

impl ConnStats {
    /// Takes a connection slot unless `max` are taken; the slot is freed on drop.
    pub fn enter(self: &Arc<Self>, max: usize) -> Option<Slot> {
        self.open
            .fetch_update(Relaxed, Relaxed, |n| (n < max).then_some(n + 1))
            .ok()
            .map(|_| Slot(self.clone()))
    }

    /// Connections open now.
    pub fn open(&self) -> usize {
        self.open.load(Relaxed)
    }

    /// Connections closed at accept because the cap was reached.
    pub fn refused(&self) -> u64 {
        self.refused.load(Relaxed)
    }

    pub(super) fn count_refused(&self) {
        self.refused.fetch_add(1, Relaxed);
    }

    /// Connections closed because `phase` outlived its limit.
    pub fn timed_out(&self, phase: Phase) -> u64 {
        self.timed_out[phase as usize].load(Relaxed)
    }

    pub(super) fn count_timed_out(&self, phase: Phase) {
        self.timed_out[phase as usize].fetch_add(1, Relaxed);
    }

    /// TLS handshakes that failed.
    pub fn tls_failed(&self) -> u64 {
        self.tls_failed.load(Relaxed)
    }

    pub(super) fn count_tls_failed(&self) {
        self.tls_failed.fetch_add(1, Relaxed);
    }
}

/// A taken connection slot ([`ConnStats::enter`]).
pub struct Slot(Arc<ConnStats>);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_stop_at_the_cap_and_free_on_drop() {
        let stats = Arc::new(ConnStats::default());
        let a = stats.enter(2).unwrap();
        let _b = stats.enter(2).unwrap();
        assert!(stats.enter(2).is_none());
        drop(a);
        assert_eq!(stats.open(), 1);
        assert!(stats.enter(2).is_some());
    }
}
