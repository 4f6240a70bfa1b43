//! Horizontal bar charts for the report, as plain SVG written by hand (no plotting
//! crate, no fonts to embed, byte-stable output): one bar per path, the median, with
//! the min–max spread over the rounds drawn as a whisker.
use std::fmt::Write;

/// One bar: label, median, and the spread over the rounds.
#[derive(Debug, Clone)]
pub struct Bar {
    pub label: String,
    pub median: f64,
    pub min: f64,
    pub max: f64,
}

const W: f64 = 720.0;
const LEFT: f64 = 170.0;
const RIGHT: f64 = 90.0;
const TOP: f64 = 44.0;
const ROW: f64 = 28.0;

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// A "nice" axis end: 1, 2 or 5 times a power of ten, at least `v`.
fn nice(v: f64) -> f64 {
    if v <= 0.0 || !v.is_finite() {
        return 1.0;
    }
    let mag = 10f64.powf(v.log10().floor());
    [1.0, 2.0, 5.0, 10.0]
        .iter()
        .map(|m| m * mag)
        .find(|c| *c >= v * 0.999_999)
        .unwrap_or(10.0 * mag)
}

/// Short number for labels: 3 significant digits, k/M suffixes.
pub fn short(v: f64) -> String {
    let a = v.abs();
    if a >= 1e6 {
        format!("{:.3}M", v / 1e6)
            .trim_end_matches('0')
            .trim_end_matches('.')
            .to_string()
    } else if a >= 1e4 {
        format!("{:.1}k", v / 1e3)
    } else if a >= 100.0 {
        format!("{v:.0}")
    } else if a >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

/// The chart: `title`, a unit for the value labels, and the bars top to bottom.
/// Negative values (e.g. added latency below direct's noise) are drawn as zero-length.
pub fn bar_chart(title: &str, unit: &str, bars: &[Bar]) -> String {
    let h = TOP + ROW * bars.len() as f64 + 34.0;
    let top = nice(bars.iter().map(|b| b.max.max(b.median)).fold(0.0, f64::max));
    let pw = W - LEFT - RIGHT;
    let x = |v: f64| LEFT + pw * (v / top).clamp(0.0, 1.0);
    let mut s = String::new();
    let _ = writeln!(
        s,
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{W}\" height=\"{h}\" viewBox=\"0 0 {W} {h}\" \
         font-family=\"sans-serif\" font-size=\"12\">\n<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n\
         <text x=\"{}\" y=\"24\" text-anchor=\"middle\" font-size=\"15\">{}</text>",
        W / 2.0,
        escape(title)
    );
    for i in 0..=4 {
        let v = top * f64::from(i) / 4.0;
        let _ = writeln!(
            s,
            "<line x1=\"{0:.1}\" y1=\"{TOP}\" x2=\"{0:.1}\" y2=\"{1:.1}\" stroke=\"#ddd\"/>\
             <text x=\"{0:.1}\" y=\"{2:.1}\" text-anchor=\"middle\">{3}</text>",
            x(v),
            h - 30.0,
            h - 14.0,
            short(v)
        );
    }
    for (i, b) in bars.iter().enumerate() {
        let y = TOP + ROW * i as f64;
        let _ = writeln!(
            s,
            "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\">{}</text>\
             <rect x=\"{LEFT}\" y=\"{:.1}\" width=\"{:.1}\" height=\"{:.1}\" fill=\"{}\"/>\
             <line x1=\"{:.1}\" y1=\"{:.1}\" x2=\"{:.1}\" y2=\"{:.1}\" stroke=\"black\"/>\
             <text x=\"{:.1}\" y=\"{:.1}\">{} {}</text>",
            LEFT - 8.0,
            y + ROW / 2.0 + 4.0,
            escape(&b.label),
            y + 5.0,
            x(b.median) - LEFT,
            ROW - 10.0,
            if b.label.starts_with("sluice") {
                "#2b6cb0"
            } else {
                "#a0aec0"
            },
            x(b.min),
            y + ROW / 2.0,
            x(b.max),
            y + ROW / 2.0,
            x(b.max.max(b.median)) + 6.0,
            y + ROW / 2.0 + 4.0,
            short(b.median),
            escape(unit)
        );
    }
    s.push_str("</svg>\n");
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nice_axis_ends() {
        assert_eq!(nice(0.0), 1.0);
        assert_eq!(nice(0.73), 1.0);
        assert_eq!(nice(1.2), 2.0);
        assert_eq!(nice(31.0), 50.0);
        assert_eq!(nice(100.0), 100.0);
    }

    #[test]
    fn short_numbers() {
        assert_eq!(short(0.531), "0.53");
        assert_eq!(short(12.34), "12.3");
        assert_eq!(short(9632.0), "9632");
        assert_eq!(short(25_300.0), "25.3k");
    }

    #[test]
    fn one_bar_per_path_and_escaped_labels() {
        let bars = vec![
            Bar {
                label: "direct".into(),
                median: 1.0,
                min: 1.0,
                max: 1.0,
            },
            Bar {
                label: "sluice <tcp>".into(),
                median: 0.5,
                min: 0.4,
                max: 0.6,
            },
        ];
        let svg = bar_chart("Throughput & more", "x", &bars);
        assert!(svg.starts_with("<svg") && svg.ends_with("</svg>\n"));
        assert_eq!(svg.matches("<rect x=").count(), 2);
        assert!(svg.contains("sluice &lt;tcp&gt;") && svg.contains("Throughput &amp; more"));
        assert!(svg.contains("#2b6cb0"));
        // Stable output.
        assert_eq!(svg, bar_chart("Throughput & more", "x", &bars));
    }
}
