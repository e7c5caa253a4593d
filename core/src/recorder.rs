//! Latency recording: the one histogram type iotload uses, and its percentiles.
//!
//! Latencies are kept in HdrHistograms with microsecond resolution from 1 µs to one hour
//! at three significant figures, so memory does not grow with run length and merging
//! per-task histograms is exact.

use hdrhistogram::Histogram;
use serde::Serialize;

/// The largest latency recorded: one hour, in µs. Larger values are clamped to it.
pub const MAX_LATENCY_US: u64 = 3_600_000_000;

/// A latency histogram in µs (1 µs to 1 h, 3 significant figures).
#[derive(Debug, Clone)]
pub struct LatencyHistogram(Histogram<u64>);

impl Default for LatencyHistogram {
    fn default() -> Self {
        Self::new()
    }
}

impl LatencyHistogram {
    /// An empty histogram.
    pub fn new() -> Self {
        Self(Histogram::new_with_bounds(1, MAX_LATENCY_US, 3).expect("constant bounds are valid"))
    }

    /// Records one value in µs; values above one hour are clamped, 0 counts as 1 µs.
    pub fn record(&mut self, value_us: u64) {
        self.0.saturating_record(value_us.clamp(1, MAX_LATENCY_US));
    }

    /// Adds every value of `other` to this histogram.
    pub fn add(&mut self, other: &LatencyHistogram) {
        // Both have the same bounds, so `add` cannot fail.
        let _ = self.0.add(&other.0);
    }

    /// How many values were recorded.
    pub fn len(&self) -> u64 {
        self.0.len()
    }

    /// Whether no value was recorded.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Forgets every value, keeping the allocation.
    pub fn clear(&mut self) {
        self.0.reset();
    }

    /// The value at percentile `p` (0–100) in µs, 0 when empty.
    pub fn percentile_us(&self, p: f64) -> u64 {
        if self.0.is_empty() {
            0
        } else {
            self.0.value_at_quantile(p / 100.0)
        }
    }

    /// The underlying HdrHistogram, for serialisation and export.
    pub fn inner(&self) -> &Histogram<u64> {
        &self.0
    }

    /// The standard percentiles, in milliseconds with µs precision.
    pub fn stats_ms(&self) -> LatencyStats {
        let ms = |us: u64| us as f64 / 1000.0;
        if self.0.is_empty() {
            return LatencyStats::default();
        }
        LatencyStats {
            count: self.0.len(),
            min: ms(self.0.min()),
            mean: self.0.mean().round() / 1000.0,
            p50: ms(self.percentile_us(50.0)),
            p90: ms(self.percentile_us(90.0)),
            p99: ms(self.percentile_us(99.0)),
            p999: ms(self.percentile_us(99.9)),
            max: ms(self.0.max()),
        }
    }
}

/// Summary statistics of a latency distribution, in milliseconds (µs precision).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct LatencyStats {
    /// Number of values.
    pub count: u64,
    /// Smallest value.
    pub min: f64,
    /// Arithmetic mean.
    pub mean: f64,
    /// Median.
    pub p50: f64,
    /// 90th percentile.
    pub p90: f64,
    /// 99th percentile.
    pub p99: f64,
    /// 99.9th percentile.
    pub p999: f64,
    /// Largest value.
    pub max: f64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_are_reported_in_ms_with_us_precision() {
        let mut h = LatencyHistogram::new();
        for v in 1..=1000 {
            h.record(v * 10);
        }
        let s = h.stats_ms();
        assert_eq!(s.count, 1000);
        assert_eq!(s.min, 0.01);
        assert!((s.p50 - 5.0).abs() < 0.01, "{s:?}");
        assert!((s.max - 10.0).abs() < 0.01, "{s:?}");
    }

    #[test]
    fn merging_keeps_every_count() {
        let mut a = LatencyHistogram::new();
        let mut b = LatencyHistogram::new();
        a.record(5);
        b.record(7_000_000_000);
        a.add(&b);
        assert_eq!(a.len(), 2);
        // Clamped to one hour, within the histogram's 3 significant figures.
        assert!((a.stats_ms().max - 3_600_000.0).abs() < 3_600.0);
    }

    #[test]
    fn empty_histogram_reports_zeroes() {
        assert_eq!(LatencyHistogram::new().stats_ms(), LatencyStats::default());
    }
}
