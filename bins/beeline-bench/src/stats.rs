//! Samples and their order statistics.

use serde::{Deserialize, Serialize};

/// A set of measurements in one unit (milliseconds, MB/s, ...).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(crate) struct Samples(pub(crate) Vec<f64>);

impl Samples {
    pub(crate) fn push(&mut self, v: f64) {
        self.0.push(v);
    }

    pub(crate) fn len(&self) -> usize {
        self.0.len()
    }

    fn sorted(&self) -> Vec<f64> {
        let mut v: Vec<f64> = self.0.iter().copied().filter(|x| x.is_finite()).collect();
        v.sort_by(|a, b| a.total_cmp(b));
        v
    }

    /// The `p`-th percentile (0..=100), nearest-rank; NaN when empty.
    pub(crate) fn pct(&self, p: f64) -> f64 {
        let v = self.sorted();
        if v.is_empty() {
            return f64::NAN;
        }
        let rank = ((p / 100.0) * v.len() as f64).ceil() as usize;
        v[rank.clamp(1, v.len()) - 1]
    }

    pub(crate) fn median(&self) -> f64 {
        self.pct(50.0)
    }

    pub(crate) fn max(&self) -> f64 {
        self.sorted().last().copied().unwrap_or(f64::NAN)
    }

    pub(crate) fn min(&self) -> f64 {
        self.sorted().first().copied().unwrap_or(f64::NAN)
    }

    /// A compact summary for the per-run JSON files.
    pub(crate) fn summary(&self) -> serde_json::Value {
        serde_json::json!({
            "n": self.len(),
            "min": self.min(),
            "p50": self.pct(50.0),
            "p90": self.pct(90.0),
            "p99": self.pct(99.0),
            "max": self.max(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let s = Samples((1..=100).map(f64::from).collect());
        assert_eq!(s.pct(50.0), 50.0);
        assert_eq!(s.pct(99.0), 99.0);
        assert_eq!(s.pct(100.0), 100.0);
        assert_eq!(s.pct(0.0), 1.0);
        assert!(Samples::default().median().is_nan());
    }
}
