//! The edge's metric families, rendered from its live state on each scrape.

use std::sync::atomic::Ordering;

use super::prometheus::Exposition;
use crate::edge::{datachan::OpenError, stats::AGENT_REFUSAL_LABELS, EdgeShared};

/// Renders every edge metric.
pub fn render(edge: &EdgeShared) -> String {
    let mut e = Exposition::default();
    let s = &edge.stats;
    e.family(
        "sluice_edge_info",
        "gauge",
        "sluice edge build information.",
    )
    .sample(
        "sluice_edge_info",
        &[
            ("version", env!("CARGO_PKG_VERSION")),
            ("edge", edge.edge_id.as_str()),
        ],
        1,
    );
    e.family(
        "sluice_edge_accepted_total",
        "counter",
        "Public connections accepted (TCP endpoints and the TLS port).",
    )
    .sample("sluice_edge_accepted_total", &[], s.accepted.get());
    e.family(
        "sluice_edge_no_route_total",
        "counter",
        "TLS-port connections closed for a missing, unknown or unreadable SNI.",
    )
    .sample("sluice_edge_no_route_total", &[], s.no_route.get());
    let refused = e.family(
        "sluice_edge_agents_refused_total",
        "counter",
        "Agent-port connections refused before a session or parked channel, by cause.",
    );
    for (label, counter) in AGENT_REFUSAL_LABELS.iter().zip(&s.agents_refused) {
        refused.sample(
            "sluice_edge_agents_refused_total",
            &[("reason", label)],
            counter.get(),
        );
    }
    e.family(
        "sluice_edge_agent_handshake_seconds",
        "histogram",
        "Agent TLS handshake and hello, until the session starts.",
    )
    .histogram(
        "sluice_edge_agent_handshake_seconds",
        &[],
        &s.agent_handshake.0.snapshot(),
    );

    let mut endpoints = edge.endpoints.list();
    endpoints.sort_by(|a, b| a.url.cmp(&b.url).then(a.id.cmp(&b.id)));
    e.family(
        "sluice_edge_connections_total",
        "counter",
        "Connections per endpoint and outcome (handled = every connection the endpoint got).",
    );
    for ep in &endpoints {
        let st = &ep.stats;
        for (outcome, c) in [
            ("handled", &st.connections),
            ("limited", &st.limited),
            ("denied", &st.denied),
            ("no_agent", &st.no_agent),
            ("no_channel", &st.no_channel),
            ("tls_handshake_failed", &st.tls_handshake_failed),
            ("forwarded", &st.forwarded),
            ("stream_error", &st.stream_errors),
            ("idle_timeout", &st.idle_timeouts),
        ] {
            e.sample(
                "sluice_edge_connections_total",
                &[("endpoint", &ep.url), ("id", &ep.id), ("outcome", outcome)],
                c.get(),
            );
        }
    }
    e.family(
        "sluice_edge_http_responses_total",
        "counter",
        "Responses of http:// and https:// endpoints by status class, the edge's own error pages included.",
    );
    for ep in endpoints
        .iter()
        .filter(|ep| crate::config::edge::serves_http(&ep.url))
    {
        for (class, c) in ["1xx", "2xx", "3xx", "4xx", "5xx"]
            .into_iter()
            .zip(&ep.stats.http_responses)
        {
            e.sample(
                "sluice_edge_http_responses_total",
                &[("endpoint", &ep.url), ("id", &ep.id), ("class", class)],
                c.get(),
            );
        }
    }
    e.family(
        "sluice_edge_failovers_total",
        "counter",
        "Pool members skipped for another before any byte moved.",
    );
    for ep in &endpoints {
        e.sample(
            "sluice_edge_failovers_total",
            &[("endpoint", &ep.url), ("id", &ep.id)],
            ep.stats.failovers.get(),
        );
    }
    e.family("sluice_edge_bytes_total", "counter", "Bytes forwarded, by direction (in: client to upstream), counted when a stream ends cleanly.");
    for ep in &endpoints {
        for (dir, c) in [("in", &ep.stats.bytes_in), ("out", &ep.stats.bytes_out)] {
            e.sample(
                "sluice_edge_bytes_total",
                &[("endpoint", &ep.url), ("id", &ep.id), ("direction", dir)],
                c.get(),
            );
        }
    }
    e.family(
        "sluice_edge_active_connections",
        "gauge",
        "Connections being handled now.",
    );
    for ep in &endpoints {
        e.sample(
            "sluice_edge_active_connections",
            &[("endpoint", &ep.url), ("id", &ep.id)],
            ep.stats.active.get(),
        );
    }
    e.family(
        "sluice_edge_policy_swaps_total",
        "counter",
        "Traffic policies published to the endpoint since it started serving.",
    );
    for ep in &endpoints {
        e.sample(
            "sluice_edge_policy_swaps_total",
            &[("endpoint", &ep.url), ("id", &ep.id)],
            ep.policy.generation(),
        );
    }
    e.family(
        "sluice_edge_open_latency_seconds",
        "histogram",
        "From accept to the stream announced on a data channel.",
    );
    for ep in &endpoints {
        e.histogram(
            "sluice_edge_open_latency_seconds",
            &[("endpoint", &ep.url), ("id", &ep.id)],
            &ep.stats.open_latency.snapshot(),
        );
    }

    let sessions = edge.registry.sessions();
    e.family("sluice_edge_sessions", "gauge", "Live agent sessions.")
        .sample("sluice_edge_sessions", &[], sessions.len());
    e.family(
        "sluice_edge_session_rtt_seconds",
        "gauge",
        "Last control-channel round trip measured by the edge.",
    );
    for session in &sessions {
        let rtt = session.rtt_us.load(Ordering::Relaxed);
        if rtt > 0 {
            let id = session.id.to_string();
            e.sample(
                "sluice_edge_session_rtt_seconds",
                &[("session", &id), ("user", &session.identity.user_name)],
                rtt as f64 / 1e6,
            );
        }
    }
    e.family(
        "sluice_edge_idle_data_channels",
        "gauge",
        "Data channels parked at the edge, per session.",
    );
    for session in &sessions {
        let id = session.id.to_string();
        e.sample(
            "sluice_edge_idle_data_channels",
            &[("session", &id), ("user", &session.identity.user_name)],
            session.idle_channels(),
        );
    }
    e.family(
        "sluice_edge_session_streams",
        "gauge",
        "Streams forwarded through the session now.",
    );
    for session in &sessions {
        let id = session.id.to_string();
        e.sample(
            "sluice_edge_session_streams",
            &[("session", &id), ("user", &session.identity.user_name)],
            session.in_flight.load(Ordering::Relaxed),
        );
    }
    e.family(
        "sluice_edge_pool_members",
        "gauge",
        "Sessions serving each bound internal URL.",
    );
    for (url, members) in edge.registry.pools() {
        e.sample("sluice_edge_pool_members", &[("url", &url)], members);
    }
    pool_health(&mut e, edge);
    e.family(
        "sluice_edge_audit_events_dropped_total",
        "counter",
        "Audit events dropped because the queue to the control plane was full.",
    )
    .sample(
        "sluice_edge_audit_events_dropped_total",
        &[],
        edge.audit.dropped(),
    );
    super::process::render(&mut e);
    e.finish()
}

/// Pool members' health and the pool events counted by the registry (issue 5).
fn pool_health(e: &mut Exposition, edge: &EdgeShared) {
    let members = edge.registry.pool_members();
    for (family, help, pick) in [
        (
            "sluice_edge_pool_member_healthy",
            "1 while the member's agent reports its upstream reachable.",
            (|h: bool, _: bool| h) as fn(bool, bool) -> bool,
        ),
        (
            "sluice_edge_pool_member_suspect",
            "1 while the edge skips the member after a failure it saw.",
            |_: bool, s: bool| s,
        ),
    ] {
        e.family(family, "gauge", help);
        for (url, session, healthy, suspect) in &members {
            let id = session.to_string();
            e.sample(
                family,
                &[("url", url), ("session", &id)],
                u8::from(pick(*healthy, *suspect)),
            );
        }
    }
    let p = &edge.registry.pool_stats;
    e.family(
        "sluice_edge_pool_events_total",
        "counter",
        "Pool membership and health events: joined, left, unhealthy, healthy, suspect, failover, exhausted.",
    );
    for (event, counter) in [
        ("joined", &p.joined),
        ("left", &p.left),
        ("unhealthy", &p.became_unhealthy),
        ("healthy", &p.became_healthy),
        ("suspect", &p.marked_suspect),
        ("failover", &p.failovers),
        ("exhausted", &p.exhausted),
    ] {
        e.sample(
            "sluice_edge_pool_events_total",
            &[("event", event)],
            counter.load(Ordering::Relaxed),
        );
    }
    e.family(
        "sluice_edge_open_failures_total",
        "counter",
        "Failed attempts to open a stream on a pool member, by cause (each retried on another member while one is left).",
    );
    for cause in OpenError::ALL {
        e.sample(
            "sluice_edge_open_failures_total",
            &[("cause", cause.label())],
            p.open_failures[cause.index()].load(Ordering::Relaxed),
        );
    }
}
