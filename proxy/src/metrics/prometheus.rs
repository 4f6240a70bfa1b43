//! The Prometheus text exposition format (version 0.0.4): `# HELP`/`# TYPE` once per
//! family, label values escaped.

use std::fmt::Write;

use super::{HistogramSnapshot, LATENCY_BUCKETS_US};

/// Content type of the exposition.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Builds one exposition.
#[derive(Default)]
pub struct Exposition {
    out: String,
}

fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn labels(pairs: &[(&str, &str)]) -> String {
    if pairs.is_empty() {
        return String::new();
    }
    let inner: Vec<String> = pairs
        .iter()
        .map(|(k, v)| format!("{k}=\"{}\"", escape(v)))
        .collect();
    format!("{{{}}}", inner.join(","))
}

impl Exposition {
    /// Starts a family.
    pub fn family(&mut self, name: &str, kind: &str, help: &str) -> &mut Self {
        let _ = writeln!(self.out, "# HELP {name} {help}");
        let _ = writeln!(self.out, "# TYPE {name} {kind}");
        self
    }

    /// One sample.
    pub fn sample(
        &mut self,
        name: &str,
        pairs: &[(&str, &str)],
        value: impl std::fmt::Display,
    ) -> &mut Self {
        let _ = writeln!(self.out, "{name}{} {value}", labels(pairs));
        self
    }

    /// A histogram's samples (`_bucket` cumulative with `le`, `_sum` in seconds, `_count`).
    pub fn histogram(
        &mut self,
        name: &str,
        pairs: &[(&str, &str)],
        h: &HistogramSnapshot,
    ) -> &mut Self {
        let mut cumulative = 0;
        for (i, count) in h.buckets.iter().enumerate() {
            cumulative += count;
            let le = LATENCY_BUCKETS_US
                .get(i)
                .map_or_else(|| "+Inf".to_string(), |us| format!("{}", *us as f64 / 1e6));
            let mut with_le = pairs.to_vec();
            with_le.push(("le", &le));
            let _ = writeln!(self.out, "{name}_bucket{} {cumulative}", labels(&with_le));
        }
        let _ = writeln!(
            self.out,
            "{name}_sum{} {}",
            labels(pairs),
            h.sum_us as f64 / 1e6
        );
        let _ = writeln!(self.out, "{name}_count{} {cumulative}", labels(pairs));
        self
    }

    /// The text.
    pub fn finish(self) -> String {
        self.out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_families_labels_and_histograms() {
        let mut e = Exposition::default();
        e.family("x_total", "counter", "Things.").sample(
            "x_total",
            &[("endpoint", "tcp://a\"b")],
            3,
        );
        let h = HistogramSnapshot {
            buckets: {
                let mut b = vec![0; LATENCY_BUCKETS_US.len() + 1];
                b[0] = 2;
                b[LATENCY_BUCKETS_US.len()] = 1;
                b
            },
            sum_us: 1_500_000,
        };
        e.family("lat_seconds", "histogram", "Latency.")
            .histogram("lat_seconds", &[], &h);
        let text = e.finish();
        assert!(
            text.contains("# TYPE x_total counter\nx_total{endpoint=\"tcp://a\\\"b\"} 3\n"),
            "{text}"
        );
        assert!(
            text.contains("lat_seconds_bucket{le=\"0.0001\"} 2\n"),
            "{text}"
        );
        assert!(
            text.contains("lat_seconds_bucket{le=\"+Inf\"} 3\n"),
            "{text}"
        );
        assert!(
            text.contains("lat_seconds_sum 1.5\nlat_seconds_count 3\n"),
            "{text}"
        );
    }
}
