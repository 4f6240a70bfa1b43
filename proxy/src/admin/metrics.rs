//! The admin listener's own series, appended to the edge's on `GET /metrics`:
//! connections open and refused at the cap, connections closed per timed-out phase,
//! TLS handshakes failed.

use crate::{
    http_thread::{phase::Phase, ConnStats},
    metrics::prometheus::Exposition,
};

/// The series, in the Prometheus text format.
pub fn render(conns: &ConnStats) -> String {
    let mut e = Exposition::default();
    e.family(
        "sluice_admin_connections",
        "gauge",
        "Admin API connections open.",
    )
    .sample("sluice_admin_connections", &[], conns.open());
    e.family(
        "sluice_admin_connections_refused_total",
        "counter",
        "Admin API connections closed at accept: admin.max_connections reached.",
    )
    .sample(
        "sluice_admin_connections_refused_total",
        &[],
        conns.refused(),
    );
    e.family(
        "sluice_admin_connections_timed_out_total",
        "counter",
        "Admin API connections closed for a phase past its limit (header, request, idle).",
    );
    for phase in [Phase::Header, Phase::Request, Phase::Idle] {
        e.sample(
            "sluice_admin_connections_timed_out_total",
            &[("phase", phase.name())],
            conns.timed_out(phase),
        );
    }
    e.family(
        "sluice_admin_tls_handshake_failures_total",
        "counter",
        "Admin API TLS handshakes that failed.",
    )
    .sample(
        "sluice_admin_tls_handshake_failures_total",
        &[],
        conns.tls_failed(),
    );
    e.finish()
}
