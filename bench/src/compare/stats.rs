//! Order statistics over the rounds of one figure: median and spread (min–max), and
//! the per-round ratio to direct that every figure is also reported as.

/// Median, minimum and maximum of the finite values of one figure over its rounds.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct Spread {
    pub median: f64,
    pub min: f64,
    pub max: f64,
    pub n: usize,
}

impl Spread {
    /// `None` when no value is finite (the figure was never measured).
    pub fn of(values: &[f64]) -> Option<Spread> {
        let mut v: Vec<f64> = values.iter().copied().filter(|x| x.is_finite()).collect();
        if v.is_empty() {
            return None;
        }
        v.sort_by(f64::total_cmp);
        let n = v.len();
        let median = if n % 2 == 1 {
            v[n / 2]
        } else {
            (v[n / 2 - 1] + v[n / 2]) / 2.0
        };
        Some(Spread {
            median,
            min: v[0],
            max: v[n - 1],
            n,
        })
    }
}

/// `value / direct` of one round; `None` when either is missing or direct is zero.
pub fn ratio(value: Option<f64>, direct: Option<f64>) -> Option<f64> {
    match (value, direct) {
        (Some(v), Some(d)) if d != 0.0 && v.is_finite() && d.is_finite() => Some(v / d),
        _ => None,
    }
}

/// `value - direct` of one round (added latency); `None` when either is missing.
pub fn added(value: Option<f64>, direct: Option<f64>) -> Option<f64> {
    match (value, direct) {
        (Some(v), Some(d)) if v.is_finite() && d.is_finite() => Some(v - d),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn odd_and_even_medians() {
        let s = Spread::of(&[3.0, 1.0, 2.0]).unwrap();
        assert_eq!((s.median, s.min, s.max, s.n), (2.0, 1.0, 3.0, 3));
        let s = Spread::of(&[4.0, 1.0, 2.0, 3.0]).unwrap();
        assert_eq!(s.median, 2.5);
    }

    #[test]
    fn non_finite_values_are_skipped() {
        assert_eq!(Spread::of(&[]), None);
        assert_eq!(Spread::of(&[f64::NAN]), None);
        let s = Spread::of(&[f64::NAN, 5.0, f64::INFINITY]).unwrap();
        assert_eq!((s.median, s.n), (5.0, 1));
    }

    #[test]
    fn ratios_and_added() {
        assert_eq!(ratio(Some(1.0), Some(4.0)), Some(0.25));
        assert_eq!(ratio(Some(1.0), Some(0.0)), None);
        assert_eq!(ratio(None, Some(1.0)), None);
        assert_eq!(added(Some(50.0), Some(30.0)), Some(20.0));
        assert_eq!(added(Some(50.0), None), None);
    }
}
