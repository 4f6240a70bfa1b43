//! The admin listener's own series, appended to the edge's on `GET /metrics`:
//! connections open and refused at the cap, connections closed per timed-out phase,
//! TLS handshakes failed, authentication failures and hold-off refusals.

use std::sync::atomic::Ordering::Relaxed;

use super::auth::Guard;
use crate::{
    http_thread::{phase::Phase, ConnStats},
    metrics::prometheus::Exposition,
};

/// The series, in the Prometheus text format.
pub fn render(conns: &ConnStats, guard: &Guard) -> String {
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
    e.family(
        "sluice_admin_auth_failures_total",
        "counter",
        "Admin API requests refused for a missing or wrong key (401).",
    )
    .sample(
        "sluice_admin_auth_failures_total",
        &[],
        guard.failed.load(Relaxed),
    );
    e.family(
        "sluice_admin_auth_held_off_total",
        "counter",
        "Admin API requests refused with 429 while their client was held off.",
    )
    .sample(
        "sluice_admin_auth_held_off_total",
        &[],
        guard.held_off.load(Relaxed),
    );
    e.finish()
}
