//! The Markdown report: the command line, settings, totals, latency and error tables,
//! the per-second timeline, and links to the two SVG charts written beside it.
use std::fmt::Write;

use super::{Latency, Report};

fn row(s: &mut String, name: &str, l: Option<&Latency>) {
    if let Some(l) = l {
        let _ = writeln!(
            s,
            "| {name} | {} | {:.1} | {:.1} | {:.1} | {:.1} | {:.1} | {:.1} | {:.1} |",
            l.count, l.min, l.mean, l.p50, l.p90, l.p99, l.p999, l.max
        );
    }
}

/// Renders the report; `latency_svg` and `timeline_svg` are the chart file names.
#[must_use]
pub fn render(r: &Report, latency_svg: Option<&str>, timeline_svg: &str) -> String {
    let mut s = String::new();
    let t = &r.totals;
    let _ = writeln!(
        s,
        "# sluice-load {} against {}\n",
        r.command, r.settings.target
    );
    let _ = writeln!(s, "```\n{}\n```\n", r.command_line.join(" "));
    let _ = writeln!(
        s,
        "Machine: {} CPUs, kernel {}, driver {}. Schema `{}`.\n",
        r.machine.cpus, r.machine.kernel, r.machine.driver, r.schema
    );
    let _ = writeln!(s, "## Totals\n\n| figure | value |\n| --- | --- |");
    let _ = writeln!(
        s,
        "| measured | {:.2} s (wall {:.2} s) |",
        t.measured_s, t.wall_s
    );
    let _ = writeln!(s, "| operations | {} ({:.1}/s) |", t.ops, t.ops_per_s);
    let _ = writeln!(
        s,
        "| sent | {} B ({:.3} Gbit/s) |",
        t.bytes_sent, t.gbit_per_s_sent
    );
    let _ = writeln!(
        s,
        "| received | {} B ({:.3} Gbit/s) |",
        t.bytes_received, t.gbit_per_s_received
    );
    let c = &r.connections;
    let _ = writeln!(
        s,
        "| connections | attempted {}, opened {}, failed {}, dropped {}, held at end {}, peak open {} |\n",
        c.attempted, c.opened, c.failed, c.dropped, c.held, c.peak_open
    );
    if r.latency_us.is_some() {
        let _ = writeln!(
            s,
            "## Latency (µs)\n\n| | count | min | mean | p50 | p90 | p99 | p99.9 | max |\n\
             | --- | --- | --- | --- | --- | --- | --- | --- | --- |"
        );
        let label = if r.settings.rate.is_some() {
            "latency (corrected)"
        } else {
            "latency"
        };
        row(&mut s, label, r.latency_us.as_ref());
        row(&mut s, "service time", r.service_time_us.as_ref());
        row(&mut s, "schedule lag", r.schedule_lag_us.as_ref());
        s.push('\n');
    }
    if let Some(name) = latency_svg {
        let _ = writeln!(s, "![latency by percentile]({name})\n");
    }
    let _ = writeln!(s, "![over time]({timeline_svg})\n");
    let e = &r.errors;
    let _ = writeln!(
        s,
        "## Errors\n\n| refused | reset | timeout | short read | data mismatch | TLS | HTTP status | other | total |\n\
         | --- | --- | --- | --- | --- | --- | --- | --- | --- |\n| {} | {} | {} | {} | {} | {} | {} | {} | {} |\n",
        e.refused, e.reset, e.timeout, e.short_read, e.data_mismatch, e.tls, e.http_status, e.other, e.total
    );
    for sample in &r.error_samples {
        let _ = writeln!(s, "- `{sample}`");
    }
    if !r.error_samples.is_empty() {
        s.push('\n');
    }
    let _ = writeln!(
        s,
        "## Timeline\n\n| second | ops | Gbit/s | errors |\n| --- | --- | --- | --- |"
    );
    for b in &r.timeline {
        let _ = writeln!(
            s,
            "| {} | {} | {:.3} | {} |",
            b.second, b.ops, b.gbit_per_s, b.errors
        );
    }
    s
}
