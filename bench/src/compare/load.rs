//! One `sluice-load` run against one path: the client started with a JSON report file,
//! waited for with a hard deadline (killed by PID past it), the proxy processes' CPU
//! time read before and after, and their resident memory sampled while it runs.
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde_json::Value;

use super::procs::{cpu_seconds, rss_kib};

/// What one run gave: the report, the proxies' CPU seconds spent during it, and each
/// watched process's RSS (KiB) before and at its peak during the run.
pub struct LoadRun {
    pub report: Value,
    pub cpu_s: f64,
    pub rss_before: Vec<u64>,
    pub rss_peak: Vec<u64>,
}

fn cpu_sum(pids: &[u32]) -> f64 {
    pids.iter().filter_map(|p| cpu_seconds(*p)).sum()
}

fn rss_all(pids: &[u32]) -> Vec<u64> {
    pids.iter().map(|p| rss_kib(*p).unwrap_or(0)).collect()
}

/// Runs `sluice-load args… --json <json>` (stderr to `<json>.log`), bounded by `limit`.
/// `watch`: the proxy PIDs whose CPU and memory are charged to this run.
pub fn run(
    bin: &Path,
    args: &[String],
    json: &Path,
    limit: Duration,
    watch: &[u32],
) -> Result<LoadRun> {
    let log = json.with_extension("log");
    let err = std::fs::File::create(&log)?;
    let rss_before = rss_all(watch);
    let cpu0 = cpu_sum(watch);
    let mut child = Command::new(bin)
        .args(args)
        .arg("--json")
        .arg(json)
        .arg("--quiet")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(err)
        .spawn()
        .context("starting sluice-load")?;
    let t0 = Instant::now();
    let mut peak = rss_before.clone();
    let status = loop {
        if let Some(st) = child.try_wait()? {
            break st;
        }
        if t0.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            bail!("sluice-load {} ran past {limit:?}; killed", args.join(" "));
        }
        for (p, now) in peak.iter_mut().zip(rss_all(watch)) {
            *p = (*p).max(now);
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let cpu_s = cpu_sum(watch) - cpu0;
    if !status.success() {
        bail!(
            "sluice-load {} failed ({status}): {}",
            args.join(" "),
            std::fs::read_to_string(&log).unwrap_or_default().trim()
        );
    }
    let text =
        std::fs::read_to_string(json).with_context(|| format!("reading {}", json.display()))?;
    let report: Value = serde_json::from_str(&text).context("parsing the sluice-load report")?;
    Ok(LoadRun {
        report,
        cpu_s,
        rss_before,
        rss_peak: peak,
    })
}

/// A number in the report at a JSON pointer (`/totals/ops_per_s`); NaN when absent.
pub fn get(report: &Value, pointer: &str) -> f64 {
    report
        .pointer(pointer)
        .and_then(Value::as_f64)
        .unwrap_or(f64::NAN)
}

/// The report without its per-second timeline, tagged with path, round and workload.
pub fn slim(mut report: Value, path: &str, round: u32, workload: &str) -> Value {
    if let Some(o) = report.as_object_mut() {
        o.remove("timeline");
        o.insert(
            "compare".into(),
            serde_json::json!({ "path": path, "round": round, "workload": workload }),
        );
    }
    report
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_numbers_and_slims() {
        let r = serde_json::json!({ "totals": { "ops_per_s": 12.5 }, "timeline": [1, 2] });
        assert_eq!(get(&r, "/totals/ops_per_s"), 12.5);
        assert!(get(&r, "/latency_us/p50").is_nan());
        let s = slim(r, "bore", 2, "connect");
        assert!(s.get("timeline").is_none());
        assert_eq!(s["compare"]["round"], 2);
    }
}
