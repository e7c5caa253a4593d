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

    /// An empty histogram at the precision per-second aggregates are stored with (2
    /// significant figures, see [`SecondSamples::take_encoded`]): merging stored histograms
    /// into it loses nothing. It starts small and grows only up to the largest value it
    /// holds (about 10 KB for latencies under 100 ms, against 27 KB sized for one hour and
    /// 0.2 MB for [`LatencyHistogram::new`]), which matters when a collector, the live page
    /// or a report keeps one per topic or per second.
    pub fn stored_precision() -> Self {
        let mut histogram = Histogram::new(2).expect("2 significant figures are valid");
        histogram.auto(true);
        Self(histogram)
    }

    /// Records one value in µs; values above one hour are clamped, 0 counts as 1 µs.
    pub fn record(&mut self, value_us: u64) {
        let value = value_us.clamp(1, MAX_LATENCY_US);
        // `record` grows a growing histogram ([`LatencyHistogram::stored_precision`]),
        // where `saturating_record` would clamp to its current top instead.
        if self.0.record(value).is_err() {
            self.0.saturating_record(value);
        }
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

    /// The standard HdrHistogram V2 + deflate encoding, readable by other HDR tools;
    /// empty when nothing was recorded.
    pub fn encode(&self) -> Vec<u8> {
        encode(&self.0)
    }

    /// Reads a histogram written by [`LatencyHistogram::encode`] (or any V2 encoder);
    /// empty bytes give an empty histogram.
    pub fn decode(bytes: &[u8]) -> Result<Self, HistogramDecodeError> {
        let mut h = Self::new();
        h.add_encoded(bytes)?;
        Ok(h)
    }

    /// Decodes a stored per-second histogram into one at the stored precision
    /// ([`LatencyHistogram::stored_precision`]), so its percentiles are the ones every
    /// other reader of the store reports (the plotter, Elasticsearch documents).
    /// [`LatencyHistogram::decode`] would place each stored bucket at the low end of a
    /// finer bucket and report up to about 1 % less.
    pub fn decode_stored(bytes: &[u8]) -> Result<Self, HistogramDecodeError> {
        let mut h = Self::stored_precision();
        h.add_encoded(bytes)?;
        Ok(h)
    }

    /// Adds the values of a histogram written by [`LatencyHistogram::encode`] (or any V2
    /// encoder); empty bytes add nothing.
    pub fn add_encoded(&mut self, bytes: &[u8]) -> Result<(), HistogramDecodeError> {
        if !bytes.is_empty() {
            let other: Histogram<u64> = hdrhistogram::serialization::Deserializer::new()
                .deserialize(&mut &bytes[..])
                .map_err(|e| HistogramDecodeError(format!("{e:?}")))?;
            self.0
                .add(&other)
                .map_err(|e| HistogramDecodeError(format!("{e:?}")))?;
        }
        Ok(())
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

/// Encodes any u64 histogram in the V2 + deflate format; empty bytes when empty.
pub fn encode(h: &Histogram<u64>) -> Vec<u8> {
    use hdrhistogram::serialization::Serializer;
    let mut out = Vec::new();
    if !h.is_empty() {
        // Writing to a Vec cannot fail.
        let _ = hdrhistogram::serialization::V2DeflateSerializer::new().serialize(h, &mut out);
    }
    out
}

/// Stored histogram bytes that cannot be read.
#[derive(Debug, thiserror::Error)]
#[error("not an HdrHistogram encoding: {0}")]
pub struct HistogramDecodeError(String);

/// Per-topic per-second latency accumulator: keeps the second's samples and turns them
/// into a compact histogram only when the second is written, so thousands of topics cost
/// memory in proportion to their messages, not to histogram buckets.
#[derive(Debug, Default, Clone)]
pub struct SecondSamples {
    raw: Vec<u32>,
    corrected: Vec<u32>,
}

impl SecondSamples {
    /// Records one message's latencies in µs (clamped to about 71 minutes).
    pub fn record(&mut self, raw_us: u64, corrected_us: u64) {
        self.raw.push(raw_us.min(u64::from(u32::MAX)) as u32);
        self.corrected
            .push(corrected_us.min(u64::from(u32::MAX)) as u32);
    }

    /// Whether nothing was recorded.
    pub fn is_empty(&self) -> bool {
        self.raw.is_empty()
    }

    /// Records the samples into `raw` and `corrected`, then forgets them.
    pub fn drain_into(&mut self, raw: &mut LatencyHistogram, corrected: &mut LatencyHistogram) {
        for &v in &self.raw {
            raw.record(u64::from(v));
        }
        for &v in &self.corrected {
            corrected.record(u64::from(v));
        }
        self.raw.clear();
        self.corrected.clear();
    }

    /// Encodes both histograms with `scratch` (2 significant figures: 1 % precision is
    /// plenty for one topic-second and keeps encoding cheap), then forgets the samples.
    pub fn take_encoded(&mut self, scratch: &mut Histogram<u64>) -> (Vec<u8>, Vec<u8>) {
        let mut one = |samples: &mut Vec<u32>| {
            scratch.reset();
            for &v in samples.iter() {
                scratch.saturating_record(u64::from(v).clamp(1, MAX_LATENCY_US));
            }
            samples.clear();
            encode(scratch)
        };
        let raw = one(&mut self.raw);
        let corrected = one(&mut self.corrected);
        (raw, corrected)
    }
}

/// The scratch histogram for [`SecondSamples::take_encoded`].
pub fn second_scratch() -> Histogram<u64> {
    Histogram::new_with_bounds(1, MAX_LATENCY_US, 2).expect("constant bounds are valid")
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
    fn stored_precision_starts_small_grows_to_an_hour_and_merges_stored_histograms() {
        let mut h = LatencyHistogram::stored_precision();
        let small = h.inner().distinct_values();
        for v in [1, 250, 80_000] {
            h.record(v);
        }
        assert!(h.inner().distinct_values() < second_scratch().distinct_values());
        h.record(MAX_LATENCY_US);
        assert!(h.inner().distinct_values() > small);
        assert_eq!(h.len(), 4);
        assert!(
            h.inner().max() >= MAX_LATENCY_US * 99 / 100,
            "{}",
            h.inner().max()
        );
        let mut stored = LatencyHistogram(second_scratch());
        stored.record(42);
        stored.record(2_000_000);
        h.add(&stored);
        assert_eq!(h.len(), 6);
        assert_eq!(h.inner().count_between(0, 100), 2);
    }

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
    fn v2_encoding_round_trips_every_count() {
        let mut h = LatencyHistogram::new();
        for v in [1, 10, 100, 1_000, 10_000, 100_000] {
            h.record(v);
        }
        let back = LatencyHistogram::decode(&h.encode()).unwrap();
        assert_eq!(back.len(), 6);
        assert_eq!(back.inner().max(), h.inner().max());
        assert!(LatencyHistogram::decode(&[]).unwrap().is_empty());
        assert!(LatencyHistogram::decode(b"junk").is_err());
    }

    #[test]
    fn second_samples_encode_to_decodable_histograms() {
        let mut s = SecondSamples::default();
        let mut scratch = second_scratch();
        s.record(1_000, 2_000);
        s.record(3_000, 4_000);
        let (raw, corrected) = s.take_encoded(&mut scratch);
        assert!(s.is_empty());
        let raw = LatencyHistogram::decode(&raw).unwrap();
        assert_eq!(raw.len(), 2);
        assert!((raw.stats_ms().max - 3.0).abs() < 0.05);
        assert_eq!(LatencyHistogram::decode(&corrected).unwrap().len(), 2);
    }

    #[test]
    fn a_stored_second_decodes_to_the_percentiles_it_was_stored_with() {
        let mut s = SecondSamples::default();
        let mut scratch = second_scratch();
        for v in (1..=1000u64).map(|i| 30_000 + i * 7) {
            s.record(v, v);
        }
        let (raw, _) = s.take_encoded(&mut scratch);
        let mut stored = LatencyHistogram::stored_precision();
        stored.add_encoded(&raw).unwrap();
        let decoded = LatencyHistogram::decode_stored(&raw).unwrap();
        assert_eq!(decoded.stats_ms(), stored.stats_ms());
        // What `results export` used to report: the finer histogram's lower bucket ends.
        let finer = LatencyHistogram::decode(&raw).unwrap();
        assert!(finer.stats_ms().p99 < stored.stats_ms().p99);
    }

    #[test]
    fn stored_precision_histograms_merge_stored_seconds_exactly() {
        let mut s = SecondSamples::default();
        let mut scratch = second_scratch();
        for v in [1_234, 5_678, 91_011] {
            s.record(v, v);
        }
        let (raw, _) = s.take_encoded(&mut scratch);
        let mut h = LatencyHistogram::stored_precision();
        h.add_encoded(&raw).unwrap();
        h.add_encoded(&raw).unwrap();
        h.add_encoded(&[]).unwrap();
        assert_eq!(h.len(), 6);
        let direct = LatencyHistogram::decode(&raw).unwrap();
        // The coarse buckets report within 1 % of the 3-digit histogram's values.
        assert!((h.stats_ms().max - direct.stats_ms().max).abs() / direct.stats_ms().max < 0.01);
        assert!(h.add_encoded(b"junk").is_err());
    }

    #[test]
    fn empty_histogram_reports_zeroes() {
        assert_eq!(LatencyHistogram::new().stats_ms(), LatencyStats::default());
    }
}
