//! The JSON report's shape is the stable interface: every key, and the type of every
//! value, is pinned here. Changing it means a new schema id and a docs update.
mod common;

use std::collections::BTreeSet;

use serde_json::Value;
use sluice_loadtest::{
    report::{Settings, SCHEMA},
    rr::{self, RrOptions},
    Report, ServeMode,
};

/// `path: type` for every leaf; arrays contribute their first element as `path[]`.
fn shape(v: &Value, path: &str, out: &mut BTreeSet<String>) {
    match v {
        Value::Object(m) => {
            for (k, v) in m {
                shape(
                    v,
                    &if path.is_empty() {
                        k.clone()
                    } else {
                        format!("{path}.{k}")
                    },
                    out,
                );
            }
        }
        Value::Array(a) => {
            out.insert(format!("{path}: array"));
            if let Some(first) = a.first() {
                shape(first, &format!("{path}[]"), out);
            }
        }
        Value::Null => {
            out.insert(format!("{path}: null"));
        }
        Value::Bool(_) => {
            out.insert(format!("{path}: bool"));
        }
        Value::Number(_) => {
            out.insert(format!("{path}: number"));
        }
        Value::String(_) => {
            out.insert(format!("{path}: string"));
        }
    }
}

const LATENCY: [&str; 9] = [
    "count", "min", "mean", "stdev", "p50", "p90", "p99", "p999", "max",
];

fn expected(open_loop: bool) -> BTreeSet<String> {
    let mut e: BTreeSet<String> = [
        "schema: string",
        "tool.name: string",
        "tool.version: string",
        "command: string",
        "command_line: array",
        "command_line[]: string",
        "started_unix_ms: number",
        "machine.cpus: number",
        "machine.kernel: string",
        "machine.driver: string",
        "settings.target: string",
        "settings.tls: bool",
        "settings.sni: null",
        "settings.threads: number",
        "settings.duration_s: number",
        "settings.warmup_s: number",
        "settings.timeout_s: number",
        "settings.bind: null",
        "settings.driver: string",
        "settings.connections: number",
        "settings.size: number",
        "settings.streams: null",
        "settings.direction: null",
        "settings.buffer: null",
        "settings.verify: null",
        "settings.concurrency: null",
        "settings.interval_s: null",
        "settings.open_concurrency: null",
        "settings.request: null",
        "settings.new_connection: null",
        "totals.measured_s: number",
        "totals.wall_s: number",
        "totals.ops: number",
        "totals.ops_per_s: number",
        "totals.bytes_sent: number",
        "totals.bytes_received: number",
        "totals.gbit_per_s_sent: number",
        "totals.gbit_per_s_received: number",
        "totals.gbit_per_s: number",
        "percentiles: array",
        "percentiles[].percentile: number",
        "percentiles[].latency_us: number",
        "timeline: array",
        "timeline[].second: number",
        "timeline[].ops: number",
        "timeline[].bytes_sent: number",
        "timeline[].bytes_received: number",
        "timeline[].gbit_per_s: number",
        "timeline[].errors: number",
        "connections.attempted: number",
        "connections.opened: number",
        "connections.failed: number",
        "connections.dropped: number",
        "connections.held: number",
        "connections.peak_open: number",
        "errors.refused: number",
        "errors.reset: number",
        "errors.timeout: number",
        "errors.short_read: number",
        "errors.data_mismatch: number",
        "errors.tls: number",
        "errors.http_status: number",
        "errors.other: number",
        "errors.total: number",
        "error_samples: array",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    for k in LATENCY {
        e.insert(format!("latency_us.{k}: number"));
    }
    if open_loop {
        e.insert("settings.rate: number".into());
        for k in LATENCY {
            e.insert(format!("service_time_us.{k}: number"));
            e.insert(format!("schedule_lag_us.{k}: number"));
        }
    } else {
        e.insert("settings.rate: null".into());
        e.insert("service_time_us: null".into());
        e.insert("schedule_lag_us: null".into());
    }
    e
}

#[test]
fn report_shape_is_stable() {
    let server = common::start(ServeMode::Echo, 1, common::drivers()[0]);
    for rate in [None, Some(500.0)] {
        let o = RrOptions::new(common::short(server.local_addr(), 300)).rate(rate);
        let result = rr::run(&o).unwrap();
        let argv = vec!["sluice-load".to_string(), "rr".to_string()];
        let report = Report::new("rr", argv.clone(), Settings::rr(&o), &result);
        let json: Value = serde_json::from_str(&report.to_json().unwrap()).unwrap();
        let mut got = BTreeSet::new();
        shape(&json, "", &mut got);
        let want = expected(rate.is_some());
        assert_eq!(
            got.symmetric_difference(&want).collect::<Vec<_>>(),
            Vec::<&String>::new(),
            "keys differ from schema {SCHEMA}"
        );
        assert_eq!(json["schema"], "sluice-load/report/v1");
        assert_eq!(json["command_line"], serde_json::json!(argv));
        assert_eq!(json["percentiles"].as_array().unwrap().len(), 17);
        assert_eq!(json["timeline"].as_array().unwrap().len(), 1);
        // It reads back into the same structure.
        let back: Report = serde_json::from_value(json).unwrap();
        assert_eq!(back, report);
    }
    server.stop().unwrap();
}
