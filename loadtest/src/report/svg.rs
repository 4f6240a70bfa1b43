//! The two charts of the Markdown report, written as plain SVG (no plotting crate:
//! two line charts with axes do not need one, and the output stays byte-stable and
//! free of font dependencies): the latency percentile curve on the usual
//! "nines" axis, and throughput over time in one-second buckets.
use std::fmt::Write;

use super::{PercentilePoint, Report};

const W: f64 = 720.0;
const H: f64 = 360.0;
const LEFT: f64 = 70.0;
const RIGHT: f64 = 20.0;
const TOP: f64 = 40.0;
const BOTTOM: f64 = 50.0;

/// A line chart: `points` in data units, x from 0 to `x_max`, y from 0 to a rounded max.
struct Chart<'a> {
    title: &'a str,
    x_label: &'a str,
    y_label: &'a str,
    x_max: f64,
    x_ticks: Vec<(f64, String)>,
    points: Vec<(f64, f64)>,
}

/// A "nice" upper bound for an axis: 1, 2 or 5 times a power of ten.
fn nice(v: f64) -> f64 {
    if v <= 0.0 || !v.is_finite() {
        return 1.0;
    }
    let mag = 10f64.powf(v.log10().floor());
    [1.0, 2.0, 5.0, 10.0]
        .iter()
        .map(|m| m * mag)
        .find(|c| *c >= v)
        .unwrap_or(10.0 * mag)
}

fn fmt_num(v: f64) -> String {
    if v >= 1e6 {
        format!("{:.1}M", v / 1e6)
    } else if v >= 1e4 {
        format!("{:.0}k", v / 1e3)
    } else if v >= 100.0 || v == v.trunc() {
        format!("{v:.0}")
    } else {
        format!("{v:.2}")
    }
}

impl Chart<'_> {
    fn render(&self) -> String {
        let (pw, ph) = (W - LEFT - RIGHT, H - TOP - BOTTOM);
        let y_max = nice(self.points.iter().map(|p| p.1).fold(0.0, f64::max));
        let x_max = if self.x_max > 0.0 { self.x_max } else { 1.0 };
        let sx = |x: f64| LEFT + pw * (x / x_max).clamp(0.0, 1.0);
        let sy = |y: f64| TOP + ph * (1.0 - (y / y_max).clamp(0.0, 1.0));
        let mut s = String::new();
        let _ = write!(
            s,
            "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{W}\" height=\"{H}\" viewBox=\"0 0 {W} {H}\" \
             font-family=\"sans-serif\" font-size=\"12\">\n<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n\
             <text x=\"{}\" y=\"22\" text-anchor=\"middle\" font-size=\"15\">{}</text>\n",
            W / 2.0,
            escape(self.title)
        );
        for i in 0..=5 {
            let v = y_max * f64::from(i) / 5.0;
            let y = sy(v);
            let _ = writeln!(
                s,
                "<line x1=\"{LEFT}\" y1=\"{y:.1}\" x2=\"{:.1}\" y2=\"{y:.1}\" stroke=\"#ddd\"/>\
                 <text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\">{}</text>",
                W - RIGHT,
                LEFT - 6.0,
                y + 4.0,
                fmt_num(v)
            );
        }
        for (x, label) in &self.x_ticks {
            let px = sx(*x);
            let _ = writeln!(
                s,
                "<line x1=\"{px:.1}\" y1=\"{TOP}\" x2=\"{px:.1}\" y2=\"{:.1}\" stroke=\"#eee\"/>\
                 <text x=\"{px:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{}</text>",
                TOP + ph,
                TOP + ph + 16.0,
                escape(label)
            );
        }
        let _ = writeln!(
            s,
            "<rect x=\"{LEFT}\" y=\"{TOP}\" width=\"{pw}\" height=\"{ph}\" fill=\"none\" stroke=\"#333\"/>\n\
             <text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{}</text>\n\
             <text x=\"16\" y=\"{:.1}\" text-anchor=\"middle\" transform=\"rotate(-90 16 {:.1})\">{}</text>",
            LEFT + pw / 2.0,
            H - 10.0,
            escape(self.x_label),
            TOP + ph / 2.0,
            TOP + ph / 2.0,
            escape(self.y_label)
        );
        let path: Vec<String> = self
            .points
            .iter()
            .map(|(x, y)| format!("{:.1},{:.1}", sx(*x), sy(*y)))
            .collect();
        if !path.is_empty() {
            let _ = writeln!(
                s,
                "<polyline fill=\"none\" stroke=\"#1f77b4\" stroke-width=\"2\" points=\"{}\"/>",
                path.join(" ")
            );
        }
        s.push_str("</svg>\n");
        s
    }
}

fn escape(t: &str) -> String {
    t.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// Position of a percentile on the "nines" axis: log10(1 / (1 - p)), capped at 5 nines.
fn nines(p: f64) -> f64 {
    let q = (1.0 - p / 100.0).max(1e-5);
    (1.0 / q).log10()
}

/// The latency percentile curve; `None` without samples.
#[must_use]
pub fn percentile_chart(points: &[PercentilePoint]) -> Option<String> {
    if points.is_empty() {
        return None;
    }
    let ticks = ["0%", "90%", "99%", "99.9%", "99.99%", "99.999%"];
    Some(
        Chart {
            title: "Latency by percentile",
            x_label: "percentile",
            y_label: "latency (µs)",
            x_max: 5.0,
            x_ticks: ticks
                .iter()
                .enumerate()
                .map(|(i, t)| (i as f64, (*t).to_string()))
                .collect(),
            points: points
                .iter()
                .map(|p| (nines(p.percentile), p.latency_us))
                .collect(),
        }
        .render(),
    )
}

/// Throughput per second over the measured window: Gbit/s for `throughput`,
/// operations/s otherwise.
#[must_use]
pub fn timeline_chart(r: &Report) -> String {
    let bytes = r.command == "throughput";
    let n = r.timeline.len().max(1) as f64;
    let step = nice(n / 8.0).max(1.0);
    let mut x_ticks = Vec::new();
    let mut t = 0.0;
    while t <= n {
        x_ticks.push((t, format!("{t:.0}")));
        t += step;
    }
    Chart {
        title: if bytes {
            "Throughput over time"
        } else {
            "Operations over time"
        },
        x_label: "second of the measured window",
        y_label: if bytes { "Gbit/s" } else { "operations/s" },
        x_max: n,
        x_ticks,
        points: r
            .timeline
            .iter()
            .map(|b| {
                (
                    b.second as f64 + 0.5,
                    if bytes { b.gbit_per_s } else { b.ops as f64 },
                )
            })
            .collect(),
    }
    .render()
}
