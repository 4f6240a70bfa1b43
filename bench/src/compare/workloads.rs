//! The workloads every path runs, as `sluice-load` command lines, and the figures
//! each one records: throughput (1 and 4 streams, into the sink, with proxy CPU per
//! GB), 64-byte request/response closed and open loop, connections/s with three
//! client models (with proxy CPU per connection), and held connections (resident
//! memory per connection), and HTTP/1.1 requests on the paths that forward HTTP: the
//! rate with 32 connections kept alive or a new connection per request (with proxy CPU
//! per request), and the latency of one request at a time on one kept-alive connection
//! (under the 32 connections' saturation, latency only mirrors the rate).
//!
//! Connections/s is measured three ways, each against direct in the same round: an
//! async load generator with 32 connections in flight (`--threads 4`: with only one
//! worker per core, a worker descheduled on a 2-core machine shared with the proxy
//! stalls a whole share of the connections, and the direct figure fell short of a
//! thread pool's by ~20%); a pool of 32 blocking threads, as most applications
//! connect; and one blocking thread, one connection at a time (set-up latency with
//! nothing queued).
use std::net::SocketAddr;

use super::configs::{Public, HTTP_HOST};
use super::load::{get, LoadRun};
use super::metrics::{self, Metric};
use super::results::Settings;

/// One workload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Workload {
    Thr1,
    Thr4,
    Rr,
    Open,
    Connect,
    ConnectPool,
    ConnectOne,
    HttpKeepAlive,
    HttpNew,
    HttpOne,
    Hold,
}

/// The interleaved workloads, in order (hold runs last, one path at a time).
pub const ROUND: [Workload; 10] = [
    Workload::Thr1,
    Workload::Thr4,
    Workload::Rr,
    Workload::Open,
    Workload::Connect,
    Workload::ConnectPool,
    Workload::ConnectOne,
    Workload::HttpKeepAlive,
    Workload::HttpNew,
    Workload::HttpOne,
];

impl Workload {
    pub fn name(self) -> &'static str {
        match self {
            Workload::Thr1 => "throughput-1",
            Workload::Thr4 => "throughput-4",
            Workload::Rr => "rr",
            Workload::Open => "rr-open",
            Workload::Connect => "connect",
            Workload::ConnectPool => "connect-pool",
            Workload::ConnectOne => "connect-one",
            Workload::HttpKeepAlive => "http-keep-alive",
            Workload::HttpNew => "http-new-connection",
            Workload::HttpOne => "http-one",
            Workload::Hold => "hold",
        }
    }

    /// The `sluice-load` arguments (without `--json`) through a path with these public
    /// addresses; `None` for an HTTP workload on a path that forwards no HTTP.
    pub fn args(self, public: &Public, st: &Settings) -> Option<Vec<String>> {
        let (echo, sink): (SocketAddr, SocketAddr) = (public.echo, public.sink);
        let d = format!("{}s", st.seconds);
        let mut a: Vec<String> = match self {
            Workload::Thr1 | Workload::Thr4 => {
                let streams = if self == Workload::Thr1 { "1" } else { "4" };
                vec![
                    "throughput".into(),
                    "--target".into(),
                    sink.to_string(),
                    "--streams".into(),
                    streams.into(),
                    "--direction".into(),
                    "up".into(),
                    "--warmup".into(),
                    "0s".into(),
                ]
            }
            Workload::Rr => vec![
                "rr".into(),
                "--target".into(),
                echo.to_string(),
                "--size".into(),
                "64".into(),
                "--connections".into(),
                "1".into(),
                "--warmup".into(),
                "0.5s".into(),
            ],
            Workload::Open => vec![
                "rr".into(),
                "--target".into(),
                echo.to_string(),
                "--size".into(),
                "64".into(),
                "--connections".into(),
                "4".into(),
                "--rate".into(),
                st.open_loop_rate.to_string(),
                "--warmup".into(),
                "0.5s".into(),
            ],
            Workload::Connect | Workload::ConnectPool | Workload::ConnectOne => {
                let (model, clients, threads) = match self {
                    Workload::Connect => ("async", "32", Some("4")),
                    Workload::ConnectPool => ("blocking", "32", None),
                    _ => ("blocking", "1", None),
                };
                let mut v: Vec<String> = vec![
                    "connect".into(),
                    "--target".into(),
                    echo.to_string(),
                    "--model".into(),
                    model.into(),
                    "--concurrency".into(),
                    clients.into(),
                    "--size".into(),
                    "64".into(),
                    "--warmup".into(),
                    "0.2s".into(),
                ];
                if let Some(t) = threads {
                    v.extend(["--threads".into(), t.into()]);
                }
                v
            }
            Workload::HttpKeepAlive | Workload::HttpNew | Workload::HttpOne => {
                let (connections, threads) = match self {
                    Workload::HttpOne => ("1", "1"),
                    _ => ("32", "2"),
                };
                let mut v: Vec<String> = vec![
                    "http".into(),
                    "--target".into(),
                    public.http?.to_string(),
                    "--host".into(),
                    HTTP_HOST.into(),
                    "--connections".into(),
                    connections.into(),
                    "--threads".into(),
                    threads.into(),
                    // No warm-up: the proxies' CPU is taken over the whole run and
                    // divided by the requests counted, which a warm-up would leave out.
                    "--warmup".into(),
                    "0s".into(),
                ];
                if self == Workload::HttpNew {
                    v.push("--new-connection".into());
                }
                v
            }
            Workload::Hold => {
                return Some(vec![
                    "hold".into(),
                    "--target".into(),
                    echo.to_string(),
                    "--connections".into(),
                    st.hold_connections.to_string(),
                    "--interval".into(),
                    "3s".into(),
                    "--duration".into(),
                    format!("{}s", st.hold_seconds),
                ]);
            }
        };
        a.extend(["--duration".into(), d]);
        Some(a)
    }

    /// The figures of one run: (metric, value). `edge_pids`: how many of the watched
    /// PIDs are the edge's (the rest are the agent's), for the memory split.
    pub fn figures(self, run: &LoadRun, edge_pids: usize, proxied: bool) -> Vec<(Metric, f64)> {
        let r = &run.report;
        let lat = |m50: Metric, m99: Metric, m999: Option<Metric>| {
            let mut v = vec![
                (m50, get(r, "/latency_us/p50")),
                (m99, get(r, "/latency_us/p99")),
            ];
            if let Some(m) = m999 {
                v.push((m, get(r, "/latency_us/p999")));
            }
            v
        };
        let mut out = match self {
            Workload::Thr1 => {
                let mut v = vec![(metrics::THR1, get(r, "/totals/gbit_per_s"))];
                let gb = get(r, "/totals/bytes_sent") / 1e9;
                if proxied && gb > 0.0 {
                    v.push((metrics::CPU_GB, run.cpu_s / gb));
                }
                v
            }
            Workload::Thr4 => vec![(metrics::THR4, get(r, "/totals/gbit_per_s"))],
            Workload::Rr => {
                let mut v = lat(metrics::RR_P50, metrics::RR_P99, Some(metrics::RR_P999));
                v.push((metrics::RR_RATE, get(r, "/totals/ops_per_s")));
                v
            }
            Workload::Open => lat(
                metrics::OPEN_P50,
                metrics::OPEN_P99,
                Some(metrics::OPEN_P999),
            ),
            Workload::Connect => {
                let mut v = lat(metrics::CONN_P50, metrics::CONN_P99, None);
                v.push((metrics::CONN_RATE, get(r, "/totals/ops_per_s")));
                let opened = get(r, "/connections/opened");
                if proxied && opened > 0.0 {
                    v.push((metrics::CPU_CONN, run.cpu_s * 1e6 / opened));
                }
                v
            }
            Workload::ConnectPool => {
                let mut v = vec![(metrics::CONN_POOL_RATE, get(r, "/totals/ops_per_s"))];
                let opened = get(r, "/connections/opened");
                if proxied && opened > 0.0 {
                    v.push((metrics::CPU_CONN_POOL, run.cpu_s * 1e6 / opened));
                }
                v
            }
            Workload::ConnectOne => vec![
                (metrics::CONN_ONE_RATE, get(r, "/totals/ops_per_s")),
                (metrics::CONN_ONE_P50, get(r, "/latency_us/p50")),
            ],
            Workload::HttpOne => lat(metrics::HTTP_ONE_P50, metrics::HTTP_ONE_P99, None),
            Workload::HttpKeepAlive | Workload::HttpNew => {
                let (rate, cpu) = if self == Workload::HttpKeepAlive {
                    (metrics::HTTP_KA_RATE, metrics::CPU_HTTP_KA)
                } else {
                    (metrics::HTTP_NEW_RATE, metrics::CPU_HTTP_NEW)
                };
                let mut v = vec![(rate, get(r, "/totals/ops_per_s"))];
                let requests = get(r, "/totals/ops");
                if proxied && requests > 0.0 {
                    v.push((cpu, run.cpu_s * 1e6 / requests));
                }
                v
            }
            Workload::Hold => {
                let held = get(r, "/connections/held");
                let mut v = vec![(metrics::HELD, held)];
                if proxied && held > 0.0 {
                    let grow = |range: std::ops::Range<usize>| -> f64 {
                        range
                            .map(|i| {
                                run.rss_peak[i].saturating_sub(run.rss_before[i]) as f64 * 1024.0
                            })
                            .sum::<f64>()
                            / held
                    };
                    let n = run.rss_peak.len();
                    let (e, a) = (grow(0..edge_pids.min(n)), grow(edge_pids.min(n)..n));
                    v.extend([
                        (metrics::RSS_EDGE, e),
                        (metrics::RSS_AGENT, a),
                        (metrics::RSS_TOTAL, e + a),
                    ]);
                }
                v
            }
        };
        out.retain(|(_, v)| v.is_finite());
        out
    }
}

/// Failed operations in a run (refused, reset, timeouts, …).
pub fn errors(run: &LoadRun) -> f64 {
    let e = get(&run.report, "/errors/total");
    if e.is_finite() {
        e
    } else {
        0.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::compare::args::settings;

    fn run(report: serde_json::Value) -> LoadRun {
        LoadRun {
            report,
            cpu_s: 2.0,
            rss_before: vec![1000, 500],
            rss_peak: vec![2000, 1500],
        }
    }

    #[test]
    fn command_lines() {
        let st = settings("quick");
        let p = Public {
            echo: "127.0.0.1:1".parse().unwrap(),
            sink: "127.0.0.1:2".parse().unwrap(),
            http: Some("127.0.0.1:3".parse().unwrap()),
        };
        let args = |w: Workload| w.args(&p, &st).unwrap().join(" ");
        let t = args(Workload::Thr4);
        assert!(
            t.starts_with("throughput --target 127.0.0.1:2 --streams 4 --direction up"),
            "{t}"
        );
        assert!(t.ends_with("--duration 2s"));
        assert!(args(Workload::Open).contains("--rate 2000"));
        let c = args(Workload::Connect);
        assert!(
            c.contains("--target 127.0.0.1:1 --model async --concurrency 32")
                && c.contains("--threads 4"),
            "{c}"
        );
        let c = args(Workload::ConnectPool);
        assert!(
            c.contains("--model blocking --concurrency 32") && !c.contains("--threads"),
            "{c}"
        );
        let c = args(Workload::ConnectOne);
        assert!(c.contains("--model blocking --concurrency 1 "), "{c}");
        let h = args(Workload::Hold);
        assert!(
            h.contains("--connections 2000") && h.ends_with("--duration 5s"),
            "{h}"
        );
        let k = args(Workload::HttpKeepAlive);
        assert!(
            k.starts_with("http --target 127.0.0.1:3 --host bench.example --connections 32")
                && !k.contains("--new-connection")
                && k.ends_with("--duration 2s"),
            "{k}"
        );
        assert!(args(Workload::HttpNew).contains("--new-connection"));
        assert!(args(Workload::HttpOne).contains("--connections 1 --threads 1"));
        let tcp_only = Public { http: None, ..p };
        assert_eq!(Workload::HttpKeepAlive.args(&tcp_only, &st), None);
        assert!(Workload::Rr.args(&tcp_only, &st).is_some());
    }

    #[test]
    fn figures_from_reports() {
        let r = run(serde_json::json!({ "totals": { "gbit_per_s": 8.0, "bytes_sent": 4e9 } }));
        let f = Workload::Thr1.figures(&r, 1, true);
        assert_eq!(f, vec![(metrics::THR1, 8.0), (metrics::CPU_GB, 0.5)]);
        assert_eq!(
            Workload::Thr1.figures(&r, 0, false).len(),
            1,
            "direct has no CPU figure"
        );
        let c = run(
            serde_json::json!({ "latency_us": { "p50": 100.0, "p99": 300.0 }, "totals": { "ops_per_s": 5000.0 }, "connections": { "opened": 1000.0 } }),
        );
        let f = Workload::Connect.figures(&c, 1, true);
        assert!(f.contains(&(metrics::CPU_CONN, 2000.0)));
        assert!(f.contains(&(metrics::CONN_RATE, 5000.0)));
        let f = Workload::ConnectPool.figures(&c, 1, true);
        assert_eq!(
            f,
            vec![
                (metrics::CONN_POOL_RATE, 5000.0),
                (metrics::CPU_CONN_POOL, 2000.0)
            ]
        );
        let f = Workload::ConnectOne.figures(&c, 1, false);
        assert_eq!(
            f,
            vec![
                (metrics::CONN_ONE_RATE, 5000.0),
                (metrics::CONN_ONE_P50, 100.0)
            ]
        );
        let h = run(serde_json::json!({
            "latency_us": { "p50": 400.0, "p99": 900.0 },
            "totals": { "ops_per_s": 20000.0, "ops": 40000.0 }
        }));
        let f = Workload::HttpKeepAlive.figures(&h, 1, true);
        assert_eq!(
            f,
            vec![
                (metrics::HTTP_KA_RATE, 20000.0),
                (metrics::CPU_HTTP_KA, 50.0)
            ]
        );
        assert_eq!(Workload::HttpNew.figures(&h, 0, false).len(), 1);
        assert_eq!(
            Workload::HttpOne.figures(&h, 1, true),
            vec![
                (metrics::HTTP_ONE_P50, 400.0),
                (metrics::HTTP_ONE_P99, 900.0)
            ]
        );
        let h = run(serde_json::json!({ "connections": { "held": 1024.0 } }));
        let f = Workload::Hold.figures(&h, 1, true);
        assert!(f.contains(&(metrics::RSS_EDGE, 1000.0)));
        assert!(f.contains(&(metrics::RSS_AGENT, 1000.0)));
        assert!(f.contains(&(metrics::RSS_TOTAL, 2000.0)));
    }
}
