//! Edge counters (relaxed atomics; summed views for logs, tests and later metrics).

use std::sync::atomic::{AtomicU64, Ordering};

/// Connection outcomes counted by the edge.
#[derive(Default, Debug)]
pub struct EdgeStats {
    /// Public connections accepted.
    pub accepted: AtomicU64,
    /// TLS connections closed because their SNI was missing, unknown or unreadable.
    pub no_route: AtomicU64,
    /// Public connections denied by policy.
    pub denied: AtomicU64,
    /// Public connections closed because no agent serves the target.
    pub no_agent: AtomicU64,
    /// Public connections closed because no data channel came in time.
    pub no_channel: AtomicU64,
    /// Public connections forwarded to an agent.
    pub forwarded: AtomicU64,
    /// Public connections closed because their TLS handshake with the edge
    /// (`terminate_tls`) failed or timed out.
    pub tls_handshake_failed: AtomicU64,
    /// Agent connections refused (bad token, version, garbage).
    pub agents_refused: AtomicU64,
}

impl EdgeStats {
    /// Adds one to a counter.
    pub fn bump(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }
}
