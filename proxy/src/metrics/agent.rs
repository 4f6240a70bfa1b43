//! The agent's counters ([`AgentStats`], per worker, see [`crate::metrics`]), its metric
//! families, and the optional listener that serves them (`agent.metrics_listen`):
//! plain HTTP, `GET /metrics`, on a thread of its own.
//!
//! This module knows nothing of the agent's types: the agent hands the listener an
//! [`AgentReadout`] (its live gauges and its [`AgentStats`]), so the dependency runs
//! one way, `agent` → `metrics`.

use std::{collections::HashMap, sync::Arc};

use super::{
    prometheus::{Exposition, CONTENT_TYPE},
    Counter,
};

/// One internal endpoint's streams.
#[derive(Default)]
pub struct EndpointStats {
    /// Streams the edge assigned to this endpoint.
    pub streams: Counter,
    /// Sub-streams of multiplexed links (HTTP/1.1 connections the edge ran through a
    /// shared stream, io/mux.rs), each relayed to an upstream connection of its own.
    pub substreams: Counter,
    /// Streams and sub-streams whose upstream could not be reached (connect or TLS
    /// failed, timed out).
    pub upstream_failed: Counter,
    /// Streams that ended with an error after the upstream answered.
    pub stream_errors: Counter,
    /// Bytes from the edge (public clients) to the upstream, for streams that ended cleanly.
    pub bytes_in: Counter,
    /// Bytes from the upstream back to the edge, for streams that ended cleanly.
    pub bytes_out: Counter,
}

/// Counters labelled by cause: one per label, the labels fixed at start.
#[derive(Default)]
pub struct ByCause {
    labels: &'static [&'static str],
    counters: Box<[Counter]>,
}

impl ByCause {
    /// One counter per label of `labels`.
    pub fn new(labels: &'static [&'static str]) -> Self {
        Self {
            labels,
            counters: labels.iter().map(|_| Counter::default()).collect(),
        }
    }

    /// Counts one event of the cause at `index` in the labels (ignored if out of range).
    pub fn inc(&self, index: usize) {
        if let Some(c) = self.counters.get(index) {
            c.inc();
        }
    }

    /// Each label with its count.
    pub fn samples(&self) -> impl Iterator<Item = (&'static str, u64)> + '_ {
        self.labels
            .iter()
            .zip(self.counters.iter())
            .map(|(l, c)| (*l, c.get()))
    }
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
    /// Failed upstream connects, agent-wide, by cause (`refused`, `timeout`, `dns`…).
    pub upstream_failures: ByCause,
}

impl AgentStats {
    /// Counters for these internal URLs, and one upstream failure counter per label of
    /// `upstream_causes`.
    pub fn new<'a>(
        urls: impl IntoIterator<Item = &'a str>,
        upstream_causes: &'static [&'static str],
    ) -> Self {
        Self {
            endpoints: urls
                .into_iter()
                .map(|u| (u.to_string(), EndpointStats::default()))
                .collect(),
            upstream_failures: ByCause::new(upstream_causes),
            ..Default::default()
        }
    }

    /// The counters of one internal URL (URLs the agent serves always have some).
    pub fn endpoint(&self, url: &str) -> Option<&EndpointStats> {
        self.endpoints.get(url)
    }
}

/// What the metrics listener reads from a running agent on each scrape.
pub trait AgentReadout: Send + Sync + 'static {
    /// The agent's counters.
    fn stats(&self) -> &AgentStats;
    /// Whether a control session with an edge is open.
    fn session_up(&self) -> bool;
    /// The edges with an open session.
    fn edges_held(&self) -> Vec<std::net::SocketAddr>;
    /// How many edges the agent keeps sessions with when it can.
    fn edge_sessions_wanted(&self) -> usize;
    /// Streams being forwarded now.
    fn active_streams(&self) -> usize;
    /// Client TLS handshakes refused by `agent_tls_termination`.
    fn client_tls_refused(&self) -> u64;
}

/// Renders every agent metric.
pub(crate) fn render(agent: &dyn AgentReadout) -> String {
    let s = agent.stats();
    let mut e = Exposition::default();
    e.family(
        "sluice_agent_info",
        "gauge",
        "sluice agent build information.",
    )
    .sample(
        "sluice_agent_info",
        &[("version", env!("CARGO_PKG_VERSION"))],
        1,
    );
    e.family(
        "sluice_agent_session_up",
        "gauge",
        "1 while a control session with at least one edge is open.",
    )
    .sample("sluice_agent_session_up", &[], u8::from(agent.session_up()));
    let held = agent.edges_held();
    e.family(
        "sluice_agent_edge_sessions",
        "gauge",
        "Sessions open now, each with a distinct edge.",
    )
    .sample("sluice_agent_edge_sessions", &[], held.len());
    e.family(
        "sluice_agent_edge_sessions_wanted",
        "gauge",
        "Sessions the agent keeps when it can (edge_connections, capped by the edges connect_url names).",
    )
    .sample(
        "sluice_agent_edge_sessions_wanted",
        &[],
        agent.edge_sessions_wanted(),
    );
    e.family(
        "sluice_agent_edge_session_up",
        "gauge",
        "1 for each edge the agent holds a session with (label: the edge's address).",
    );
    for edge in &held {
        e.sample(
            "sluice_agent_edge_session_up",
            &[("edge", edge.to_string().as_str())],
            1,
        );
    }
    e.family(
        "sluice_agent_sessions_total",
        "counter",
        "Sessions established with the edge (1 + reconnects).",
    )
    .sample("sluice_agent_sessions_total", &[], s.sessions.get());
    e.family(
        "sluice_agent_data_channels_opened_total",
        "counter",
        "Data channels opened to the edge.",
    )
    .sample(
        "sluice_agent_data_channels_opened_total",
        &[],
        s.channels_opened.get(),
    );
    e.family(
        "sluice_agent_data_channel_failures_total",
        "counter",
        "Data channels that could not be opened.",
    )
    .sample(
        "sluice_agent_data_channel_failures_total",
        &[],
        s.channel_failures.get(),
    );
    e.family(
        "sluice_agent_active_streams",
        "gauge",
        "Streams being forwarded now.",
    )
    .sample("sluice_agent_active_streams", &[], agent.active_streams());
    e.family(
        "sluice_agent_unknown_endpoint_total",
        "counter",
        "Streams for an internal URL this agent does not serve.",
    )
    .sample(
        "sluice_agent_unknown_endpoint_total",
        &[],
        s.unknown_endpoint.get(),
    );
    e.family(
        "sluice_agent_client_tls_refused_total",
        "counter",
        "Client TLS handshakes refused by agent_tls_termination.",
    )
    .sample(
        "sluice_agent_client_tls_refused_total",
        &[],
        agent.client_tls_refused(),
    );
    e.family(
        "sluice_agent_upstream_failures_total",
        "counter",
        "Upstream connects that failed, by cause (the stream was answered UpstreamFailed, or ended under agent_tls_termination).",
    );
    for (cause, n) in s.upstream_failures.samples() {
        e.sample(
            "sluice_agent_upstream_failures_total",
            &[("cause", cause)],
            n,
        );
    }
    let mut urls: Vec<&String> = s.endpoints.keys().collect();
    urls.sort();
    e.family(
        "sluice_agent_streams_total",
        "counter",
        "Streams per internal endpoint and outcome (assigned = every stream the edge sent).",
    );
    for url in &urls {
        let st = &s.endpoints[*url];
        for (outcome, c) in [
            ("assigned", &st.streams),
            ("upstream_failed", &st.upstream_failed),
            ("stream_error", &st.stream_errors),
        ] {
            e.sample(
                "sluice_agent_streams_total",
                &[("endpoint", url), ("outcome", outcome)],
                c.get(),
            );
        }
    }
    e.family(
        "sluice_agent_substreams_total",
        "counter",
        "Sub-streams of multiplexed links per internal endpoint: HTTP/1.1 connections the edge ran inside a shared stream, each relayed to an upstream connection of its own.",
    );
    for url in &urls {
        e.sample(
            "sluice_agent_substreams_total",
            &[("endpoint", url)],
            s.endpoints[*url].substreams.get(),
        );
    }
    e.family("sluice_agent_bytes_total", "counter", "Bytes forwarded per internal endpoint (in: toward the upstream), counted when a stream ends cleanly.");
    for url in &urls {
        let st = &s.endpoints[*url];
        for (dir, c) in [("in", &st.bytes_in), ("out", &st.bytes_out)] {
            e.sample(
                "sluice_agent_bytes_total",
                &[("endpoint", url), ("direction", dir)],
                c.get(),
            );
        }
    }
    super::process::render(&mut e);
    e.finish()
}

/// Serves `/metrics` on `listen` ([`crate::http_thread::serve`]).
pub(crate) fn serve(
    listen: std::net::SocketAddr,
    agent: Arc<dyn AgentReadout>,
) -> std::io::Result<std::net::SocketAddr> {
    use axum::{response::IntoResponse, routing::get, Router};
    if !listen.ip().is_loopback() {
        tracing::warn!(%listen, "agent metrics listen beyond loopback (no authentication)");
    }
    let app = Router::new().route(
        "/metrics",
        get(move || {
            let agent = agent.clone();
            async move {
                (
                    [(axum::http::header::CONTENT_TYPE, CONTENT_TYPE)],
                    render(&*agent),
                )
                    .into_response()
            }
        }),
    );
    crate::http_thread::serve(
        listen,
        "sluice-metrics",
        "metrics",
        app,
        crate::http_thread::ServeOptions::new(),
        Arc::default(),
    )
}
