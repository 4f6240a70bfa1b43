//! The Markdown report of a run: machine and peers, the summary table (also what
//! README shows), where sluice is behind a peer, charts, and every figure with its
//! median, spread and same-round comparison with direct.
use std::fmt::Write;

use super::metrics::{self, Metric, Versus};
use super::results::{RunData, DIRECT};
use super::stats::Spread;
use super::svg::{self, Bar};

/// Paths whose data channels are encrypted (compared with sluice's `tls` transport).
pub fn encrypted(path: &str) -> bool {
    path.ends_with("-tls") || path.ends_with("-noise")
}

fn num(v: f64) -> String {
    svg::short(v)
}

/// An added amount with its sign: `+51.2`, `-3.1` (below direct: noise).
fn signed(v: f64) -> String {
    if v < 0.0 {
        format!("-{}", num(-v))
    } else {
        format!("+{}", num(v))
    }
}

fn range(s: &Spread, suffix: &str) -> String {
    if s.n < 2 {
        return String::new();
    }
    format!(" ({}–{}{suffix})", num(s.min), num(s.max))
}

/// A cell of the summary: the headline comparison with direct (direct itself: its raw
/// value), or the raw value where direct has no counterpart.
fn cell(d: &RunData, path: &str, m: Metric) -> String {
    if path == DIRECT {
        return match (m.versus, d.spread(path, m)) {
            (Versus::None, _) | (_, None) => "–".into(),
            (_, Some(s)) => format!("{} {}", num(s.median), m.unit),
        };
    }
    match m.versus {
        Versus::Ratio => d
            .versus(path, m)
            .map_or("–".into(), |s| format!("{}x", num(s.median))),
        Versus::Added => d.versus(path, m).map_or("–".into(), |s| signed(s.median)),
        Versus::None => d.spread(path, m).map_or("–".into(), |s| num(s.median)),
    }
}

/// The summary columns.
pub const SUMMARY: [Metric; 13] = [
    metrics::THR1,
    metrics::THR4,
    metrics::RR_P50,
    metrics::RR_P99,
    metrics::OPEN_P999,
    metrics::CONN_RATE,
    metrics::CONN_POOL_RATE,
    metrics::CONN_ONE_RATE,
    metrics::CONN_P50,
    metrics::CPU_GB,
    metrics::CPU_CONN,
    metrics::RSS_TOTAL,
    metrics::AGENT_UP,
];

/// The HTTP summary's columns (only the paths that forward HTTP have them).
pub const HTTP_SUMMARY: [Metric; 6] = [
    metrics::HTTP_KA_RATE,
    metrics::CPU_HTTP_KA,
    metrics::HTTP_NEW_RATE,
    metrics::CPU_HTTP_NEW,
    metrics::HTTP_ONE_P50,
    metrics::HTTP_ONE_P99,
];

fn header(m: Metric) -> String {
    let short = match m.key {
        "thr1_gbps" => "1 stream",
        "thr4_gbps" => "4 streams",
        "rr_p50_us" => "rr p50 added µs",
        "rr_p99_us" => "rr p99 added µs",
        "open_p999_us" => "open-loop p99.9 added µs",
        "conn_per_s" => "conn/s async 32",
        "conn_pool_per_s" => "conn/s 32 threads",
        "conn_one_per_s" => "conn/s one at a time",
        "conn_p50_us" => "connect p50 added µs (async 32)",
        "cpu_s_per_gb" => "CPU s/GB",
        "cpu_us_per_conn" => "CPU µs/conn",
        "rss_b_per_conn" => "RSS B/conn",
        "agent_usable_ms" => "agent usable ms",
        "http_ka_per_s" => "req/s, 32 kept alive",
        "cpu_us_per_http_ka" => "CPU µs/req",
        "http_new_per_s" => "req/s, new connection each",
        "cpu_us_per_http_new" => "CPU µs/req (new connection)",
        "http_one_p50_us" => "one at a time, p50 added µs",
        "http_one_p99_us" => "p99 added µs",
        _ => m.label,
    };
    short.to_string()
}

/// The summary table: one row per measured path, medians over the rounds; throughput
/// and rates as ratios to direct, latency as added to direct, CPU and memory raw.
pub fn summary_table(d: &RunData) -> String {
    table(d, &SUMMARY, false)
}

/// The HTTP summary: one row per path that forwarded HTTP, as [`summary_table`].
pub fn http_table(d: &RunData) -> String {
    table(d, &HTTP_SUMMARY, true)
}

/// One row per measured path (only those with a figure in `columns` when
/// `only_with_figures`).
fn table(d: &RunData, columns: &[Metric], only_with_figures: bool) -> String {
    let mut s = String::from("| path |");
    for m in columns {
        let _ = write!(s, " {} |", header(*m));
    }
    s.push_str("\n| --- |");
    s.push_str(&" ---: |".repeat(columns.len()));
    s.push('\n');
    for p in d.measured() {
        if only_with_figures && columns.iter().all(|m| d.spread(&p.key, *m).is_none()) {
            continue;
        }
        let _ = write!(s, "| {} |", p.label);
        for m in columns {
            let _ = write!(s, " {} |", cell(d, &p.key, *m));
        }
        s.push('\n');
    }
    s
}

/// The headline number of `path` for `m` that is compared between paths.
fn headline(d: &RunData, path: &str, m: Metric) -> Option<f64> {
    headline_spread(d, path, m).map(|s| s.median)
}

/// One line per (sluice path, peer, figure) where the sluice path's median is worse:
/// the `tcp` transport against every peer, the `tls` transport against the encrypted
/// peers.
pub fn behind(d: &RunData) -> Vec<String> {
    let mut out = Vec::new();
    for s in ["sluice-tcp", "sluice-tls"] {
        let Some(sp) = d.measured().find(|p| p.key == s) else {
            continue;
        };
        for peer in d
            .measured()
            .filter(|p| p.key != DIRECT && !p.key.starts_with("sluice"))
        {
            if s == "sluice-tls" && !encrypted(&peer.key) {
                continue;
            }
            for m in metrics::ALL {
                if m.key == "errors"
                    || m.key == "rss_edge_b_per_conn"
                    || m.key == "rss_agent_b_per_conn"
                {
                    continue;
                }
                let (Some(a), Some(b)) = (headline(d, s, m), headline(d, &peer.key, m)) else {
                    continue;
                };
                let worse = if m.higher_is_better { a < b } else { a > b };
                if worse {
                    let what = match m.versus {
                        Versus::Ratio => format!("{}x vs {}x of direct", num(a), num(b)),
                        Versus::Added => {
                            format!("{} vs {} {} over direct", signed(a), signed(b), m.unit)
                        }
                        Versus::None => format!("{} vs {} {}", num(a), num(b), m.unit),
                    };
                    out.push(format!(
                        "**{}** is behind **{}** on {}: {}",
                        sp.label, peer.label, m.label, what
                    ));
                }
            }
        }
    }
    out
}

/// The spread of `path`'s headline figure for `m` over the rounds.
fn headline_spread(d: &RunData, path: &str, m: Metric) -> Option<Spread> {
    match m.versus {
        Versus::None => d.spread(path, m),
        _ => d.versus(path, m),
    }
}

/// This build against the `--baseline` build, one row per (transport, figure) both
/// measured: the two medians (each from its own round's direct path), and which is
/// better only when the two builds' ranges over the rounds do not overlap. Empty when no
/// baseline was measured.
pub fn against_baseline(d: &RunData) -> String {
    let mut rows = String::new();
    for s in ["sluice-tcp", "sluice-tls"] {
        let base = format!("{s}-baseline");
        if !d.measured().any(|p| p.key == base) {
            continue;
        }
        for m in metrics::ALL {
            if m.key == "errors" {
                continue;
            }
            let (Some(now), Some(before)) =
                (headline_spread(d, s, m), headline_spread(d, &base, m))
            else {
                continue;
            };
            let shown = |v: f64| match m.versus {
                Versus::Ratio => format!("{}x", num(v)),
                Versus::Added => format!("{} {}", signed(v), m.unit),
                Versus::None => format!("{} {}", num(v), m.unit),
            };
            let verdict = if now.min > before.max {
                if m.higher_is_better {
                    "better"
                } else {
                    "worse"
                }
            } else if now.max < before.min {
                if m.higher_is_better {
                    "worse"
                } else {
                    "better"
                }
            } else {
                "ranges overlap"
            };
            let _ = writeln!(
                rows,
                "| {} | {} | {} | {} | {verdict} |",
                s.trim_start_matches("sluice-"),
                m.label,
                shown(now.median),
                shown(before.median)
            );
        }
    }
    if rows.is_empty() {
        return rows;
    }
    format!("| transport | figure | this build | baseline | this build is |\n| --- | --- | ---: | ---: | --- |\n{rows}")
}

/// The charts of the report: (file suffix, SVG text).
pub fn charts(d: &RunData) -> Vec<(String, String)> {
    let specs: [(Metric, &str, bool); 8] = [
        (
            metrics::THR1,
            "Throughput, 1 stream (x direct, same round)",
            true,
        ),
        (
            metrics::CONN_RATE,
            "Connections/s, async client, 32 concurrent (x direct, same round)",
            true,
        ),
        (
            metrics::CONN_POOL_RATE,
            "Connections/s, 32 blocking client threads (x direct, same round)",
            true,
        ),
        (
            metrics::CONN_ONE_RATE,
            "Connections/s, one at a time (x direct, same round)",
            true,
        ),
        (
            metrics::RR_P50,
            "Added rr p50, 64 B, closed loop (µs over direct)",
            true,
        ),
        (
            metrics::CPU_GB,
            "Proxy CPU per GB (CPU s/GB, edge + agent)",
            false,
        ),
        (
            metrics::CPU_CONN,
            "Proxy CPU per connection (CPU µs, edge + agent)",
            false,
        ),
        (
            metrics::RSS_TOTAL,
            "RSS per held connection (B, edge + agent)",
            false,
        ),
    ];
    let mut out = Vec::new();
    for (m, title, vs_direct) in specs {
        let bars: Vec<Bar> = d
            .measured()
            .filter(|p| !(p.key == DIRECT && (!vs_direct || m.versus == Versus::Added)))
            .filter_map(|p| {
                let s = if vs_direct {
                    d.versus(&p.key, m)
                } else {
                    d.spread(&p.key, m)
                };
                let s = if p.key == DIRECT && vs_direct {
                    Some(Spread {
                        median: 1.0,
                        min: 1.0,
                        max: 1.0,
                        n: 1,
                    })
                } else {
                    s
                };
                s.map(|s| Bar {
                    label: p.label.clone(),
                    median: s.median,
                    min: s.min,
                    max: s.max,
                })
            })
            .collect();
        let unit = match (vs_direct, m.versus) {
            (true, Versus::Ratio) => "x",
            _ => m.unit,
        };
        out.push((m.key.replace('_', "-"), svg::bar_chart(title, unit, &bars)));
    }
    out
}

/// Every figure: per path the median with min–max, and the same-round comparison.
fn every_figure(d: &RunData) -> String {
    let mut s = String::new();
    for m in metrics::ALL {
        let unit = if m.unit.is_empty() {
            String::new()
        } else {
            format!(" ({})", m.unit)
        };
        let _ = writeln!(s, "\n**{}**{unit}\n\n| path | median (min–max) | vs direct, same round |\n| --- | ---: | ---: |", m.label);
        for p in d.measured() {
            let Some(raw) = d.spread(&p.key, m) else {
                let _ = writeln!(s, "| {} | – | – |", p.label);
                continue;
            };
            let vs = if p.key == DIRECT {
                String::new()
            } else {
                match m.versus {
                    Versus::Ratio => d.versus(&p.key, m).map_or(String::new(), |v| {
                        format!("{}x{}", num(v.median), range(&v, "x"))
                    }),
                    Versus::Added => {
                        let a = d.versus(&p.key, m).map_or(String::new(), |v| {
                            format!("{}{}", signed(v.median), range(&v, ""))
                        });
                        let r = d
                            .ratio_spread(&p.key, m)
                            .map_or(String::new(), |v| format!(", {}x", num(v.median)));
                        a + &r
                    }
                    Versus::None => String::new(),
                }
            };
            let _ = writeln!(
                s,
                "| {} | {}{} | {} |",
                p.label,
                num(raw.median),
                range(&raw, ""),
                vs
            );
        }
    }
    s
}

/// The whole report. `cmd` is the command line that reproduces it.
pub fn render(d: &RunData, cmd: &str) -> String {
    let mut s = String::new();
    let m = &d.machine;
    let st = &d.settings;
    let _ = writeln!(s, "# sluice side by side: {}\n", d.name);
    let _ = writeln!(
        s,
        "Produced by `{cmd}` ({} mode). Machine: {}, {} cores, Linux {}, io_uring {}; load average {} at the start, {} at the end (the machine is shared: every comparison is within a round).\n",
        st.mode,
        m.cpu_model,
        m.cores,
        m.kernel,
        if m.io_uring { "available" } else { "not available" },
        m.loadavg_start,
        m.loadavg_end
    );
    let _ = writeln!(
        s,
        "Settings: {} rounds, paths interleaved within each workload (A B C … A B C …), {} s per throughput/rr/connect figure, open loop at {} req/s over 4 connections, {} held connections for {} s. Upstream: `sluice-load serve` (echo for rr/connect/hold, sink for throughput, `--mode http` for the HTTP workloads).\n",
        st.rounds, st.seconds, st.open_loop_rate, st.hold_connections, st.hold_seconds
    );
    s.push_str("## Paths\n\n| path | version | status |\n| --- | --- | --- |\n");
    for p in &d.paths {
        let _ = writeln!(
            s,
            "| {} | {} | {} |",
            p.label,
            p.version.as_deref().unwrap_or("–"),
            p.status
        );
    }
    let _ = writeln!(
        s,
        "\n## Summary\n\nMedians over {} rounds. Throughput and connections/s: ratio to direct in the same round (the direct row: its own figures); latency: µs added to direct in the same round; CPU (user + system of the proxy processes, edge + agent) and resident memory per held connection: raw.\n",
        st.rounds
    );
    s.push_str(&summary_table(d));
    let _ = writeln!(
        s,
        "\n## HTTP\n\n`sluice-load http`, HTTP/1.1 `GET /` with a 64-byte answer, {} s per figure: requests/s with 32 connections over 2 client threads, kept alive and a new connection per request (`Connection: close`), with proxy CPU per request; latency of one request at a time on one kept-alive connection (with 32 connections the machine is saturated and latency only mirrors the rate). Only the paths that forward HTTP requests: sluice's `http://` endpoint (the data channel transport as named) and HAProxy chained twice, here through a `mode http` section of each hop (its label names its `mode tcp` sections, which splice). Requests/s as a ratio to direct in the same round, latency added to direct, proxy CPU per request raw.\n",
        st.seconds
    );
    s.push_str(&http_table(d));
    s.push_str("\n## Where sluice is behind\n\nThe `tcp` transport against every peer, the `tls` transport against the encrypted peers (medians; ratios and added latency from the same round):\n\n");
    let b = behind(d);
    if b.is_empty() {
        s.push_str("Nowhere in this run.\n");
    } else {
        for line in b {
            let _ = writeln!(s, "- {line}");
        }
    }
    let base = against_baseline(d);
    if !base.is_empty() {
        s.push_str("\n## This build against the baseline\n\nThe `--baseline` build measured in the same rounds, interleaved with this one (medians; ratios and added latency each against its own round's direct path; better or worse only where the two builds' ranges over the rounds do not overlap, which two identical builds do by chance for 1 figure in 10 with 3 rounds and 1 in 126 with 5; a transport the change does not touch is such an identical pair, a control):\n\n");
        s.push_str(&base);
    }
    s.push_str("\n## Charts\n\n");
    for (suffix, _) in charts(d) {
        let _ = writeln!(s, "![{suffix}]({}-{suffix}.svg)", d.name);
    }
    s.push_str("\n## Every figure\n");
    s.push_str(&every_figure(d));
    let errors: Vec<String> = d
        .measured()
        .filter_map(|p| {
            d.spread(&p.key, metrics::ERRORS)
                .filter(|e| e.max > 0.0)
                .map(|e| format!("{}: up to {} per round", p.label, num(e.max)))
        })
        .collect();
    if !errors.is_empty() {
        let _ = writeln!(
            s,
            "\nLoad errors (refused, reset, timeouts, …; details in the raw JSON): {}.",
            errors.join("; ")
        );
    }
    let _ = writeln!(
        s,
        "\nRaw figures and every `sluice-load` report: [{0}.json]({0}.json).",
        d.name
    );
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::compare::results::tests::sample;

    #[test]
    fn summary_has_one_row_per_measured_path() {
        let d = sample();
        let t = summary_table(&d);
        assert_eq!(t.lines().count(), 2 + 3);
        assert!(t.contains("| sluice tcp | 0.50x |"));
        assert!(t.contains("| direct | 20.0 Gbit/s |"));
        assert!(!t.contains("rathole"));
    }

    #[test]
    fn the_http_table_has_only_the_paths_that_forwarded_http() {
        let mut d = sample();
        assert_eq!(
            http_table(&d).lines().count(),
            2,
            "no HTTP figures, no rows"
        );
        for (r, (direct, sluice)) in [(30000.0, 9000.0), (40000.0, 10000.0), (50000.0, 20000.0)]
            .into_iter()
            .enumerate()
        {
            d.push(r as u32, "direct", metrics::HTTP_KA_RATE, direct);
            d.push(r as u32, "sluice-tcp", metrics::HTTP_KA_RATE, sluice);
            d.push(r as u32, "sluice-tcp", metrics::CPU_HTTP_KA, 50.0);
        }
        let t = http_table(&d);
        assert_eq!(t.lines().count(), 2 + 2, "{t}");
        assert!(t.contains("| direct | 40.0k req/s |"), "{t}");
        assert!(t.contains("| sluice tcp | 0.30x | 50.0 | – |"), "{t}");
        assert!(!t.contains("bore"), "{t}");
    }

    #[test]
    fn behind_lists_only_worse_figures() {
        let mut d = sample();
        // bore beats sluice on latency in this sample? No: 100 > 81. Make it so.
        for r in 0..3 {
            d.records
                .retain(|x| !(x.path == "bore" && x.metric == "rr_p50_us" && x.round == r));
            d.push(r, "bore", metrics::RR_P50, 40.0);
        }
        let b = behind(&d);
        assert_eq!(b.len(), 1, "{b:?}");
        assert!(b[0].contains("bore") && b[0].contains("p50"));
    }

    #[test]
    fn the_baseline_section_compares_each_figure_both_builds_measured() {
        let mut d = sample();
        assert!(against_baseline(&d).is_empty(), "no baseline, no section");
        d.paths.push(crate::compare::results::PathInfo {
            key: "sluice-tcp-baseline".into(),
            label: "sluice baseline build, tcp transport".into(),
            status: "ok".into(),
            version: None,
        });
        // sluice-tcp: 1 stream at 0.4-0.6x of direct, rr p50 +50 to +52 µs.
        for (r, direct) in [10.0, 20.0, 30.0].into_iter().enumerate() {
            let r = r as u32;
            d.push(r, "sluice-tcp-baseline", metrics::THR1, direct * 0.3);
            d.push(r, "sluice-tcp-baseline", metrics::RR_P50, 40.0);
            d.push(r, "sluice-tcp", metrics::CPU_CONN, 100.0 + r as f64);
            d.push(r, "sluice-tcp-baseline", metrics::CPU_CONN, 101.0);
        }
        let t = against_baseline(&d);
        assert_eq!(t.lines().count(), 2 + 3, "{t}");
        assert!(
            t.contains("| tcp | throughput, 1 stream | 0.50x | 0.30x | better |"),
            "{t}"
        );
        assert!(
            t.contains(
                "| tcp | proxy CPU per connection | 101 CPU µs | 101 CPU µs | ranges overlap |"
            ),
            "{t}"
        );
        assert!(
            t.contains("| tcp | rr 64 B closed loop p50 | +51.0 µs | +10.0 µs | worse |"),
            "{t}"
        );
        assert!(
            !behind(&d).iter().any(|l| l.contains("baseline")),
            "a baseline is not a peer"
        );
        assert!(render(&d, "compare").contains("## This build against the baseline"));
    }

    #[test]
    fn render_names_paths_and_charts() {
        let d = sample();
        let md = render(&d, "cargo run");
        assert!(md.contains("| rathole | – | not installed |"));
        assert!(md.contains("![thr1-gbps](t-thr1-gbps.svg)"));
        assert!(md.contains("0.50x (0.40–0.60x)"));
        assert!(md.contains("Nowhere in this run."));
        assert_eq!(signed(-5037.0), "-5037");
        assert_eq!(signed(51.0), "+51.0");
        assert_eq!(charts(&d).len(), 8);
    }
}
