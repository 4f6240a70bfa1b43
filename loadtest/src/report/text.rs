//! The short summary printed when a run ends.
use std::fmt::Write;

use super::Report;

/// A few lines: rate, bytes, latency percentiles, connections, errors.
#[must_use]
pub fn summary(r: &Report) -> String {
    let mut s = String::new();
    let t = &r.totals;
    let _ = writeln!(
        s,
        "{} {}: {:.2}s measured on {} threads ({})",
        r.command, r.settings.target, t.measured_s, r.settings.threads, r.machine.driver
    );
    let _ = writeln!(s, "  ops        {} ({:.1}/s)", t.ops, t.ops_per_s);
    if t.bytes_sent + t.bytes_received > 0 {
        let _ = writeln!(
            s,
            "  throughput {:.3} Gbit/s (sent {:.3}, received {:.3})",
            t.gbit_per_s, t.gbit_per_s_sent, t.gbit_per_s_received
        );
    }
    for (name, l) in [
        ("latency", &r.latency_us),
        ("service", &r.service_time_us),
        ("lag", &r.schedule_lag_us),
    ] {
        if let Some(l) = l {
            let _ = writeln!(
                s,
                "  {name:<10} µs p50 {:.1}  p90 {:.1}  p99 {:.1}  p99.9 {:.1}  max {:.1}",
                l.p50, l.p90, l.p99, l.p999, l.max
            );
        }
    }
    let c = &r.connections;
    let _ = writeln!(
        s,
        "  conns      opened {} failed {} dropped {} held {} peak {}",
        c.opened, c.failed, c.dropped, c.held, c.peak_open
    );
    let e = &r.errors;
    let _ = writeln!(
        s,
        "  errors     {} (refused {} reset {} timeout {} short_read {} data_mismatch {} tls {} http_status {} other {})",
        e.total, e.refused, e.reset, e.timeout, e.short_read, e.data_mismatch, e.tls, e.http_status, e.other
    );
    for sample in &r.error_samples {
        let _ = writeln!(s, "    - {sample}");
    }
    s
}
