//! What one comparison run produced: the recorded figures (path, round, metric,
//! value), the paths with their status and versions, the machine and the settings;
//! and the per-figure views the report needs (values over the rounds, the same-round
//! comparison with direct, median and spread).
use serde::{Deserialize, Serialize};

use super::metrics::{Metric, Versus};
use super::stats::{added, ratio, Spread};

/// The key of the ceiling path every figure is compared with.
pub const DIRECT: &str = "direct";

/// One figure of one path in one round.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Record {
    pub round: u32,
    pub path: String,
    pub metric: String,
    pub value: f64,
}

/// A path of the comparison: `status` is "ok", or why it has no figures.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PathInfo {
    pub key: String,
    pub label: String,
    pub status: String,
    pub version: Option<String>,
}

/// The machine the run was on.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Machine {
    pub cpu_model: String,
    pub cores: usize,
    pub kernel: String,
    pub io_uring: bool,
    pub loadavg_start: String,
    pub loadavg_end: String,
}

/// Durations and counts of the workloads (from `--quick` or `--full`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Settings {
    pub mode: String,
    pub rounds: u32,
    pub seconds: f64,
    pub open_loop_rate: u32,
    pub hold_connections: u32,
    pub hold_seconds: f64,
}

/// Everything a run produced; serialized as the report's raw JSON.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunData {
    pub schema: String,
    pub name: String,
    pub started_unix: u64,
    pub settings: Settings,
    pub machine: Machine,
    pub paths: Vec<PathInfo>,
    pub records: Vec<Record>,
    /// Every `sluice-load` JSON report (timeline dropped), tagged with path and round.
    pub raw: Vec<serde_json::Value>,
}

impl RunData {
    pub fn push(&mut self, round: u32, path: &str, metric: Metric, value: f64) {
        if value.is_finite() {
            self.records.push(Record {
                round,
                path: path.into(),
                metric: metric.key.into(),
                value,
            });
        }
    }

    /// The value of one figure in one round.
    pub fn value(&self, path: &str, metric: Metric, round: u32) -> Option<f64> {
        self.records
            .iter()
            .find(|r| r.round == round && r.path == path && r.metric == metric.key)
            .map(|r| r.value)
    }

    fn rounds(&self) -> Vec<u32> {
        let mut r: Vec<u32> = self.records.iter().map(|r| r.round).collect();
        r.sort_unstable();
        r.dedup();
        r
    }

    /// Median and spread of the raw values over the rounds.
    pub fn spread(&self, path: &str, metric: Metric) -> Option<Spread> {
        let v: Vec<f64> = self
            .rounds()
            .into_iter()
            .filter_map(|r| self.value(path, metric, r))
            .collect();
        Spread::of(&v)
    }

    /// Median and spread of the same-round comparison with direct: `path / direct` for
    /// [`Versus::Ratio`] and `path - direct` for [`Versus::Added`].
    pub fn versus(&self, path: &str, metric: Metric) -> Option<Spread> {
        let v: Vec<f64> = self
            .rounds()
            .into_iter()
            .filter_map(|r| {
                let (v, d) = (self.value(path, metric, r), self.value(DIRECT, metric, r));
                match metric.versus {
                    Versus::Ratio => ratio(v, d),
                    Versus::Added => added(v, d),
                    Versus::None => None,
                }
            })
            .collect();
        Spread::of(&v)
    }

    /// Same-round `path / direct` whatever the metric's headline comparison is.
    pub fn ratio_spread(&self, path: &str, metric: Metric) -> Option<Spread> {
        let v: Vec<f64> = self
            .rounds()
            .into_iter()
            .filter_map(|r| ratio(self.value(path, metric, r), self.value(DIRECT, metric, r)))
            .collect();
        Spread::of(&v)
    }

    /// The paths that have figures (status "ok").
    pub fn measured(&self) -> impl Iterator<Item = &PathInfo> {
        self.paths.iter().filter(|p| p.status == "ok")
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::compare::metrics::{RR_P50, THR1};

    pub fn sample() -> RunData {
        let mut d = RunData {
            schema: "sluice-bench/compare/v1".into(),
            name: "t".into(),
            started_unix: 0,
            settings: Settings {
                mode: "quick".into(),
                rounds: 3,
                seconds: 1.0,
                open_loop_rate: 1000,
                hold_connections: 100,
                hold_seconds: 1.0,
            },
            machine: Machine::default(),
            paths: vec![
                PathInfo {
                    key: "direct".into(),
                    label: "direct".into(),
                    status: "ok".into(),
                    version: None,
                },
                PathInfo {
                    key: "sluice-tcp".into(),
                    label: "sluice tcp".into(),
                    status: "ok".into(),
                    version: None,
                },
                PathInfo {
                    key: "bore".into(),
                    label: "bore".into(),
                    status: "ok".into(),
                    version: None,
                },
                PathInfo {
                    key: "rathole-tcp".into(),
                    label: "rathole".into(),
                    status: "not installed".into(),
                    version: None,
                },
            ],
            records: vec![],
            raw: vec![],
        };
        for (r, (direct, sluice, bore)) in [(10.0, 6.0, 3.0), (20.0, 10.0, 5.0), (30.0, 12.0, 9.0)]
            .into_iter()
            .enumerate()
        {
            d.push(r as u32, "direct", THR1, direct);
            d.push(r as u32, "sluice-tcp", THR1, sluice);
            d.push(r as u32, "bore", THR1, bore);
            d.push(r as u32, "direct", RR_P50, 30.0);
            d.push(r as u32, "sluice-tcp", RR_P50, 80.0 + r as f64);
            d.push(r as u32, "bore", RR_P50, 100.0);
        }
        d
    }

    #[test]
    fn ratios_are_taken_within_a_round() {
        let d = sample();
        let s = d.versus("sluice-tcp", THR1).unwrap();
        assert_eq!((s.min, s.median, s.max), (0.4, 0.5, 0.6));
        let raw = d.spread("sluice-tcp", THR1).unwrap();
        assert_eq!(raw.median, 10.0);
        let a = d.versus("sluice-tcp", RR_P50).unwrap();
        assert_eq!((a.min, a.median, a.max), (50.0, 51.0, 52.0));
        assert!(d.versus("rathole-tcp", THR1).is_none());
        assert_eq!(d.measured().count(), 3);
    }
}
