//! The agent's metric families, and the optional listener that serves them
//! (`agent.metrics_listen`): plain HTTP, `GET /metrics`, on a thread of its own.

use std::sync::{atomic::Ordering, Arc};

use super::prometheus::{Exposition, CONTENT_TYPE};
use crate::agent::AgentShared;

/// Renders every agent metric.
pub(crate) fn render(agent: &AgentShared) -> String {
    let s = &agent.stats;
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
        "1 while a control session with the edge is open.",
    )
    .sample(
        "sluice_agent_session_up",
        &[],
        u8::from(
            agent
                .control
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .is_some(),
        ),
    );
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
    .sample("sluice_agent_active_streams", &[], agent.in_flight.get());
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
        agent.tls_refused.load(Ordering::Relaxed),
    );
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
    e.finish()
}

/// Serves `/metrics` on `listen` ([`crate::http_thread::serve`]).
pub(crate) fn serve(
    listen: std::net::SocketAddr,
    agent: Arc<AgentShared>,
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
                    render(&agent),
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
