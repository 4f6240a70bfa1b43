//! The report of a run: [`Report`] is the JSON document (schema
//! `sluice-load/report/v1`, documented in `docs/loadtest.md` and pinned by a test),
//! built from a [`RunResult`] and the run's settings. [`markdown`] renders it as
//! Markdown next to two SVG charts drawn by [`svg`]; [`text`] is the summary printed
//! at the end of a run.
pub mod markdown;
pub mod settings;
pub mod svg;
pub mod text;

use std::{
    path::{Path, PathBuf},
    time::{SystemTime, UNIX_EPOCH},
};

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

pub use settings::Settings;

use crate::{stats::ConnCounts, ErrorClass, LoadError, RunResult};

/// Identifier of the JSON schema; bumped on any incompatible change.
pub const SCHEMA: &str = "sluice-load/report/v1";

/// Points of the percentile curve, in percent.
pub const CURVE: [f64; 17] = [
    0.0, 10.0, 20.0, 30.0, 40.0, 50.0, 60.0, 70.0, 80.0, 90.0, 95.0, 99.0, 99.5, 99.9, 99.99,
    99.999, 100.0,
];

/// Everything a run measured, with the settings and the exact command line.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Report {
    /// Always [`SCHEMA`].
    pub schema: String,
    /// The harness and its version.
    pub tool: Tool,
    /// `throughput`, `rr`, `connect` or `hold`.
    pub command: String,
    /// argv of the run, program name first.
    pub command_line: Vec<String>,
    /// Wall-clock start, milliseconds since the Unix epoch.
    pub started_unix_ms: u64,
    /// Where it ran.
    pub machine: Machine,
    /// Every setting of the run (null where a setting does not apply).
    pub settings: Settings,
    /// Totals over the measured window.
    pub totals: Totals,
    /// Latency in microseconds (open loop: corrected); null without operations.
    pub latency_us: Option<Latency>,
    /// Open loop only: service time from the actual send, microseconds.
    pub service_time_us: Option<Latency>,
    /// Open loop only: how late sends left after their intended time, microseconds.
    pub schedule_lag_us: Option<Latency>,
    /// The latency percentile curve at the [`CURVE`] points (empty without operations).
    pub percentiles: Vec<PercentilePoint>,
    /// One entry per second of the measured window.
    pub timeline: Vec<TimelinePoint>,
    /// Connection counts.
    pub connections: Connections,
    /// Failures by class, and their total.
    pub errors: Errors,
    /// Up to 16 distinct failure messages.
    pub error_samples: Vec<String>,
}

/// The harness.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Tool {
    /// `sluice-load`.
    pub name: String,
    /// Crate version.
    pub version: String,
}

/// The machine the run measured on.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Machine {
    /// Logical CPUs available.
    pub cpus: usize,
    /// `uname -r`.
    pub kernel: String,
    /// `io_uring` or `epoll`.
    pub driver: String,
}

/// Totals over the measured window.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Totals {
    /// Length of the measured window, seconds.
    pub measured_s: f64,
    /// Wall time of the whole run including warm-up and tear-down, seconds.
    pub wall_s: f64,
    /// Operations (requests, connection cycles, keep-alive echoes).
    pub ops: u64,
    /// Operations per second.
    pub ops_per_s: f64,
    /// Bytes sent.
    pub bytes_sent: u64,
    /// Bytes received.
    pub bytes_received: u64,
    /// Sent, Gbit/s.
    pub gbit_per_s_sent: f64,
    /// Received, Gbit/s.
    pub gbit_per_s_received: f64,
    /// Sent plus received, Gbit/s.
    pub gbit_per_s: f64,
}

/// A latency distribution, microseconds.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Latency {
    /// Samples.
    pub count: u64,
    /// Smallest.
    pub min: f64,
    /// Mean.
    pub mean: f64,
    /// Standard deviation.
    pub stdev: f64,
    /// Median.
    pub p50: f64,
    /// 90th percentile.
    pub p90: f64,
    /// 99th percentile.
    pub p99: f64,
    /// 99.9th percentile.
    pub p999: f64,
    /// Largest.
    pub max: f64,
}

/// One point of the percentile curve.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct PercentilePoint {
    /// Percentile, 0 to 100.
    pub percentile: f64,
    /// Latency at that percentile, microseconds.
    pub latency_us: f64,
}

/// One second of the measured window.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct TimelinePoint {
    /// Second since the start of the window.
    pub second: u64,
    /// Operations sent in it.
    pub ops: u64,
    /// Bytes sent.
    pub bytes_sent: u64,
    /// Bytes received.
    pub bytes_received: u64,
    /// Sent plus received, Gbit/s.
    pub gbit_per_s: f64,
    /// Failures.
    pub errors: u64,
}

/// Connection counts.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Connections {
    /// Attempts.
    pub attempted: u64,
    /// Attempts that completed.
    pub opened: u64,
    /// Attempts that failed.
    pub failed: u64,
    /// Open connections lost to a failure.
    pub dropped: u64,
    /// Connections healthy at the end.
    pub held: u64,
    /// Most open at once.
    pub peak_open: u64,
}

/// Failures by class.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Errors {
    /// Connection refused.
    pub refused: u64,
    /// Connection reset (or broken pipe).
    pub reset: u64,
    /// No progress within `--timeout`.
    pub timeout: u64,
    /// Peer closed before the expected bytes.
    pub short_read: u64,
    /// Received bytes differ from the expected ones.
    pub data_mismatch: u64,
    /// TLS handshake or record failure.
    pub tls: u64,
    /// HTTP responses whose status is not 2xx or 3xx.
    pub http_status: u64,
    /// Anything else.
    pub other: u64,
    /// Sum of the above.
    pub total: u64,
}

fn us(ns: u64) -> f64 {
    ns as f64 / 1000.0
}

fn latency(h: &Histogram<u64>) -> Option<Latency> {
    (!h.is_empty()).then(|| Latency {
        count: h.len(),
        min: us(h.min()),
        mean: h.mean() / 1000.0,
        stdev: h.stdev() / 1000.0,
        p50: us(h.value_at_quantile(0.50)),
        p90: us(h.value_at_quantile(0.90)),
        p99: us(h.value_at_quantile(0.99)),
        p999: us(h.value_at_quantile(0.999)),
        max: us(h.max()),
    })
}

fn gbps(bytes: u64, secs: f64) -> f64 {
    bytes as f64 * 8.0 / secs.max(1e-9) / 1e9
}

impl Report {
    /// Builds the report of a finished run.
    #[must_use]
    pub fn new(
        command: &str,
        command_line: Vec<String>,
        settings: Settings,
        r: &RunResult,
    ) -> Self {
        let secs = r.measured.as_secs_f64();
        let started = SystemTime::now()
            .checked_sub(r.wall)
            .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
            .map_or(0, |d| d.as_millis() as u64);
        let conns: ConnCounts = r.conns;
        Report {
            schema: SCHEMA.to_string(),
            tool: Tool {
                name: "sluice-load".into(),
                version: env!("CARGO_PKG_VERSION").into(),
            },
            command: command.to_string(),
            command_line,
            started_unix_ms: started,
            machine: Machine {
                cpus: std::thread::available_parallelism().map_or(1, |n| n.get()),
                kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease")
                    .map(|s| s.trim().to_string())
                    .unwrap_or_default(),
                driver: r.driver.name().to_string(),
            },
            settings,
            totals: Totals {
                measured_s: secs,
                wall_s: r.wall.as_secs_f64(),
                ops: r.ops,
                ops_per_s: r.ops as f64 / secs.max(1e-9),
                bytes_sent: r.bytes_sent,
                bytes_received: r.bytes_received,
                gbit_per_s_sent: gbps(r.bytes_sent, secs),
                gbit_per_s_received: gbps(r.bytes_received, secs),
                gbit_per_s: gbps(r.bytes_sent + r.bytes_received, secs),
            },
            latency_us: latency(&r.latency),
            service_time_us: latency(&r.service),
            schedule_lag_us: latency(&r.lag),
            percentiles: if r.latency.is_empty() {
                Vec::new()
            } else {
                CURVE
                    .iter()
                    .map(|&p| PercentilePoint {
                        percentile: p,
                        latency_us: us(r.latency.value_at_percentile(p)),
                    })
                    .collect()
            },
            timeline: r
                .timeline
                .iter()
                .enumerate()
                .map(|(i, b)| TimelinePoint {
                    second: i as u64,
                    ops: b.ops,
                    bytes_sent: b.bytes_sent,
                    bytes_received: b.bytes_received,
                    gbit_per_s: gbps(b.bytes_sent + b.bytes_received, 1.0),
                    errors: b.errors,
                })
                .collect(),
            connections: Connections {
                attempted: conns.attempted,
                opened: conns.opened,
                failed: conns.failed,
                dropped: conns.dropped,
                held: conns.held,
                peak_open: conns.peak_open,
            },
            errors: Errors {
                refused: r.errors.get(ErrorClass::Refused),
                reset: r.errors.get(ErrorClass::Reset),
                timeout: r.errors.get(ErrorClass::Timeout),
                short_read: r.errors.get(ErrorClass::ShortRead),
                data_mismatch: r.errors.get(ErrorClass::DataMismatch),
                tls: r.errors.get(ErrorClass::Tls),
                http_status: r.errors.get(ErrorClass::HttpStatus),
                other: r.errors.get(ErrorClass::Other),
                total: r.errors.total(),
            },
            error_samples: r.samples.clone(),
        }
    }

    /// Pretty JSON.
    pub fn to_json(&self) -> Result<String, LoadError> {
        Ok(serde_json::to_string_pretty(self)?)
    }

    /// Writes the JSON to `path`.
    pub fn write_json(&self, path: &Path) -> Result<(), LoadError> {
        write(path, self.to_json()? + "\n")
    }

    /// Writes the Markdown report to `path` and its two charts beside it
    /// (`<stem>-latency.svg`, `<stem>-timeline.svg`); returns the chart paths.
    pub fn write_markdown(&self, path: &Path) -> Result<Vec<PathBuf>, LoadError> {
        let stem = path
            .file_stem()
            .map_or("report".into(), |s| s.to_string_lossy().into_owned());
        let dir = path.parent().unwrap_or(Path::new(""));
        let latency_name = format!("{stem}-latency.svg");
        let timeline_name = format!("{stem}-timeline.svg");
        let mut written = Vec::new();
        let latency_chart = svg::percentile_chart(&self.percentiles);
        if let Some(chart) = &latency_chart {
            let p = dir.join(&latency_name);
            write(&p, chart.clone())?;
            written.push(p);
        }
        let p = dir.join(&timeline_name);
        write(&p, svg::timeline_chart(self))?;
        written.push(p);
        let md = markdown::render(
            self,
            latency_chart.is_some().then_some(latency_name.as_str()),
            &timeline_name,
        );
        write(path, md)?;
        Ok(written)
    }
}

fn write(path: &Path, text: String) -> Result<(), LoadError> {
    std::fs::write(path, text).map_err(|source| LoadError::Write {
        path: path.to_path_buf(),
        source,
    })
}
