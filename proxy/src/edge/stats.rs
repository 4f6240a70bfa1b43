//! Edge counters, per worker (see [`crate::metrics`]): edge-wide ones here, and each
//! endpoint's own in [`EndpointStats`]. Summed on scrape (`/metrics`), in logs and tests.

use crate::metrics::{Counter, Gauge, Histogram};

/// Labels of `agents_refused`, one per cause of refusal on the agent port.
pub const AGENT_REFUSAL_LABELS: [&str; 15] = super::agent_refusal::AgentRefusal::LABELS;

/// Edge-wide outcomes (those that happen before a connection has an endpoint, or
/// concern agents).
#[derive(Default, Debug)]
pub struct EdgeStats {
    /// Public connections accepted (TCP endpoints and the TLS port).
    pub accepted: Counter,
    /// TLS connections closed because their SNI was missing, unknown or unreadable.
    pub no_route: Counter,
    /// Public connections denied by policy.
    pub denied: Counter,
    /// Public connections closed because no agent serves the target.
    pub no_agent: Counter,
    /// Public connections closed because no data channel came in time.
    pub no_channel: Counter,
    /// Public connections forwarded to an agent.
    pub forwarded: Counter,
    /// Public connections closed because their TLS handshake with the edge
    /// (`terminate_tls`) failed or timed out.
    pub tls_handshake_failed: Counter,
    /// Agent-port connections refused before a session or parked channel, by cause
    /// (indexed like `AgentRefusal::LABELS`, which [`AGENT_REFUSAL_LABELS`] names).
    pub agents_refused: [Counter; AGENT_REFUSAL_LABELS.len()],
    /// Agent control channels' TLS handshake + hello, until the session starts.
    pub agent_handshake: HistogramField,
}

/// A histogram in a `Debug` struct.
#[derive(Default)]
pub struct HistogramField(pub Histogram);

impl std::fmt::Debug for HistogramField {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}", self.0.snapshot())
    }
}

impl EdgeStats {
    /// Adds one to a counter.
    #[inline]
    pub fn bump(counter: &Counter) {
        counter.inc();
    }
}

/// One endpoint's connections, by outcome, and its bytes.
#[derive(Default)]
pub struct EndpointStats {
    /// Connections handed to the endpoint (after SNI routing for `tls://`).
    pub connections: Counter,
    /// Denied by its traffic policy.
    pub denied: Counter,
    /// Closed: no agent serves the policy's target.
    pub no_agent: Counter,
    /// Closed: over `max_connections` or `max_connections_per_ip`.
    pub limited: Counter,
    /// Closed: no data channel from any pool member in time.
    pub no_channel: Counter,
    /// Closed: the client's TLS handshake with the edge failed.
    pub tls_handshake_failed: Counter,
    /// Forwarded to an agent.
    pub forwarded: Counter,
    /// Pool members skipped for another before any byte moved.
    pub failovers: Counter,
    /// Streams that ended with an error (reset, broken channel) after forwarding.
    pub stream_errors: Counter,
    /// Streams closed by the idle timeout.
    pub idle_timeouts: Counter,
    /// Bytes from clients toward the upstream (streams that ended cleanly).
    pub bytes_in: Counter,
    /// Bytes from the upstream toward clients (streams that ended cleanly).
    pub bytes_out: Counter,
    /// Connections being handled now.
    pub active: Gauge,
    /// From accept to the stream announced on a data channel.
    pub open_latency: Histogram,
    /// `http://` endpoints: responses sent, by status class (1xx … 5xx).
    pub http_responses: [Counter; 5],
    /// The clients refused lately (the operator console's endpoint page).
    pub recent_denials: super::denials::RecentDenials,
}
