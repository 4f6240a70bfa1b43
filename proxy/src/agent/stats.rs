//! Agent counters, per worker (see [`crate::metrics`]): per endpoint (streams, upstream
//! failures, bytes) and agent-wide (sessions, data channels). Rendered by
//! [`crate::metrics::agent`] on the optional metrics listener.

use std::collections::HashMap;

use crate::metrics::Counter;

/// One internal endpoint's streams.
#[derive(Default)]
pub struct EndpointStats {
    /// Streams the edge assigned to this endpoint.
    pub streams: Counter,
    /// Streams whose upstream could not be reached (connect or TLS failed, timed out).
    pub upstream_failed: Counter,
    /// Streams that ended with an error after the upstream answered.
    pub stream_errors: Counter,
    /// Bytes from the edge (public clients) to the upstream, for streams that ended cleanly.
    pub bytes_in: Counter,
    /// Bytes from the upstream back to the edge, for streams that ended cleanly.
    pub bytes_out: Counter,
}

/// Everything the agent counts.
#[derive(Default)]
pub struct AgentStats {
    /// By internal URL (fixed at start).
    pub endpoints: HashMap<String, EndpointStats>,
    /// Sessions established with the edge (1 + reconnects).
    pub sessions: Counter,
    /// Data channels dialled and sent their hello.
    pub channels_opened: Counter,
    /// Data channels that could not be opened (connect or TLS failed).
    pub channel_failures: Counter,
    /// Streams for an internal URL this agent does not serve.
    pub unknown_endpoint: Counter,
}

impl AgentStats {
    /// Counters for these internal URLs.
    pub fn new<'a>(urls: impl IntoIterator<Item = &'a str>) -> Self {
        Self {
            endpoints: urls
                .into_iter()
                .map(|u| (u.to_string(), EndpointStats::default()))
                .collect(),
            ..Default::default()
        }
    }

    /// The counters of one internal URL (URLs the agent serves always have some).
    pub fn endpoint(&self, url: &str) -> Option<&EndpointStats> {
        self.endpoints.get(url)
    }
}
