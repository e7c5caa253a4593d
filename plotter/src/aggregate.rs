//! Aggregation of one run's stored rows: per (second, topic) across instances, per second
//! across all topics and instances, and per topic over the whole run.
//!
//! The store holds one row per (topic, second, instance) with counters and HdrHistograms.
//! Everything the plotter outputs (JSON Lines documents, report charts and tables, and
//! `iotload results show`) is built from the sums and merged histograms made here, so the
//! numbers agree wherever they are shown. The series are dense: every topic of the run
//! gets a (second, topic) cell for every second from the run's first to its last, with
//! zero counts where nothing happened, so a chart or an index never has to guess.
//!
//! Histograms are merged at the precision they are stored with (2 significant figures), so
//! a 1-hour, 1000-topic run needs a few hundred kilobytes per topic, not megabytes.

use std::collections::BTreeMap;

pub use iotload_core::loss::MessageCounts;
use iotload_core::recorder::{HistogramDecodeError, LatencyHistogram, LatencyStats};
use iotload_core::store::TopicSecond;
use serde::Serialize;

/// A stored histogram that cannot be read.
#[derive(Debug, thiserror::Error)]
#[error("run {run_id}, topic {topic}, second {second}, instance {instance}: {source}")]
pub struct AggregateError {
    /// Run id.
    pub run_id: String,
    /// Topic.
    pub topic: String,
    /// Second, Unix time.
    pub second: u64,
    /// Writer instance.
    pub instance: String,
    /// What is wrong with the bytes.
    #[source]
    pub source: HistogramDecodeError,
}

/// Counters and both latency histograms of a set of rows.
#[derive(Debug, Clone)]
pub struct Cell {
    /// Summed counters.
    pub counts: MessageCounts,
    /// Merged latency (receive − sent), µs.
    pub latency: LatencyHistogram,
    /// Merged corrected latency (receive − intended), µs.
    pub corrected: LatencyHistogram,
}

impl Default for Cell {
    fn default() -> Self {
        Self {
            counts: MessageCounts::default(),
            latency: LatencyHistogram::stored_precision(),
            corrected: LatencyHistogram::stored_precision(),
        }
    }
}

impl Cell {
    /// Adds one stored row.
    pub fn add_row(&mut self, row: &TopicSecond) -> Result<(), AggregateError> {
        let fail = |source| AggregateError {
            run_id: row.run_id.clone(),
            topic: row.topic.clone(),
            second: row.second,
            instance: row.instance.clone(),
            source,
        };
        self.counts += row.counts();
        self.latency.add_encoded(&row.latency_hdr).map_err(fail)?;
        self.corrected
            .add_encoded(&row.corrected_hdr)
            .map_err(fail)?;
        Ok(())
    }

    /// Adds another cell.
    pub fn add(&mut self, other: &Cell) {
        self.counts += other.counts;
        self.latency.add(&other.latency);
        self.corrected.add(&other.corrected);
    }

    /// Counters and percentiles, without the histograms.
    pub fn stats(&self) -> CellStats {
        CellStats {
            counts: self.counts,
            latency_ms: self.latency.stats_ms(),
            latency_corrected_ms: self.corrected.stats_ms(),
        }
    }
}

/// Counters and latency percentiles (ms) of a cell.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct CellStats {
    /// Summed counters.
    #[serde(flatten)]
    pub counts: MessageCounts,
    /// Latency percentiles, ms.
    pub latency_ms: LatencyStats,
    /// Corrected latency percentiles, ms.
    pub latency_corrected_ms: LatencyStats,
}

/// One topic in one second, merged over the instances that wrote it.
#[derive(Debug, Clone)]
pub struct TopicSecondStats<'a> {
    /// Second, Unix time.
    pub second: u64,
    /// Topic.
    pub topic: &'a str,
    /// The instances that wrote rows for it (none when nothing happened).
    pub instances: Vec<&'a str>,
    /// Counters and percentiles.
    pub stats: CellStats,
    /// Merged latency histogram (receive − sent), µs.
    pub latency: &'a LatencyHistogram,
    /// Merged corrected latency histogram (receive − intended), µs.
    pub corrected: &'a LatencyHistogram,
}

/// One second across every topic and instance.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SecondStats {
    /// Second, Unix time.
    pub second: u64,
    /// Counters and percentiles.
    pub stats: CellStats,
}

/// A run's aggregates.
#[derive(Debug, Clone)]
pub struct RunAggregate {
    /// Run id.
    pub run_id: String,
    /// Every second from the first to the last stored one, across all topics.
    pub seconds: Vec<SecondStats>,
    /// Per topic over the whole run, ordered by topic.
    pub topics: BTreeMap<String, Cell>,
    /// The whole run: every topic, second and instance.
    pub total: Cell,
}

impl RunAggregate {
    /// The number of seconds the run's series span.
    pub fn span_s(&self) -> u64 {
        self.seconds.len() as u64
    }

    /// Messages never received over the whole run: the sum of each topic's
    /// [`MessageCounts::lost`], so a topic without a loadgen's sent counts falls back to its
    /// own open gaps without hiding another topic's tail loss.
    pub fn lost(&self) -> u64 {
        self.topics.values().map(|c| c.counts.lost()).sum()
    }
}

/// Aggregates one run's rows (in any order). `each` is called once per (second, topic)
/// of the dense grid, seconds in order and topics in order within a second; what it
/// returns stops the aggregation when it is an error.
pub fn aggregate<E>(
    run_id: &str,
    mut rows: Vec<TopicSecond>,
    mut each: impl FnMut(TopicSecondStats<'_>) -> Result<(), E>,
) -> Result<RunAggregate, E>
where
    E: From<AggregateError>,
{
    rows.sort_by(|a, b| (a.second, &a.topic, &a.instance).cmp(&(b.second, &b.topic, &b.instance)));
    let mut topics: BTreeMap<String, Cell> = BTreeMap::new();
    for r in &rows {
        if !topics.contains_key(&r.topic) {
            topics.insert(r.topic.clone(), Cell::default());
        }
    }
    let names: Vec<String> = topics.keys().cloned().collect();
    let (first, last) = match (rows.first(), rows.last()) {
        (Some(a), Some(b)) => (a.second, b.second),
        _ => (0, 0),
    };
    let mut seconds = Vec::new();
    let mut total = Cell::default();
    let mut i = 0;
    if !rows.is_empty() {
        for second in first..=last {
            let mut all = Cell::default();
            for name in &names {
                let mut cell = Cell::default();
                let mut instances = Vec::new();
                while let Some(row) = rows
                    .get(i)
                    .filter(|r| r.second == second && r.topic == *name)
                {
                    cell.add_row(row)?;
                    instances.push(row.instance.as_str());
                    i += 1;
                }
                all.add(&cell);
                if let Some(t) = topics.get_mut(name) {
                    t.add(&cell);
                }
                each(TopicSecondStats {
                    second,
                    topic: name,
                    instances,
                    stats: cell.stats(),
                    latency: &cell.latency,
                    corrected: &cell.corrected,
                })?;
            }
            total.add(&all);
            seconds.push(SecondStats {
                second,
                stats: all.stats(),
            });
        }
    }
    Ok(RunAggregate {
        run_id: run_id.to_string(),
        seconds,
        topics,
        total,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use iotload_core::recorder::{SecondSamples, second_scratch};

    fn row(topic: &str, second: u64, instance: &str, received: u64, us: &[u64]) -> TopicSecond {
        let mut samples = SecondSamples::default();
        for &v in us {
            samples.record(v, v + 100);
        }
        let (latency_hdr, corrected_hdr) = samples.take_encoded(&mut second_scratch());
        TopicSecond {
            run_id: "r".into(),
            topic: topic.into(),
            second,
            instance: instance.into(),
            sent: received + 1,
            received,
            gaps: 1,
            latency_hdr,
            corrected_hdr,
            ..TopicSecond::default()
        }
    }

    #[derive(Debug)]
    struct Failed(#[allow(dead_code)] AggregateError);
    impl From<AggregateError> for Failed {
        fn from(e: AggregateError) -> Self {
            Self(e)
        }
    }

    #[test]
    fn grid_is_dense_and_instances_merge() {
        let rows = vec![
            row("b", 12, "i1", 1, &[3_000]),
            row("a", 10, "i2", 2, &[1_000, 2_000]),
            row("a", 10, "i1", 1, &[4_000]),
        ];
        let mut docs = Vec::new();
        let agg = aggregate::<Failed>("r", rows, |d| {
            docs.push((
                d.second,
                d.topic.to_string(),
                d.instances.join("+"),
                d.stats,
            ));
            Ok(())
        })
        .unwrap();
        // 3 seconds × 2 topics, zero cells included.
        assert_eq!(docs.len(), 6);
        assert_eq!(docs[0].0, 10);
        assert_eq!(docs[0].1, "a");
        assert_eq!(docs[0].2, "i1+i2");
        assert_eq!(docs[0].3.counts.received, 3);
        assert_eq!(docs[0].3.latency_ms.count, 3);
        assert!((docs[0].3.latency_ms.max - 4.0).abs() < 0.05);
        assert_eq!(docs[1].3.counts, MessageCounts::default());
        assert_eq!(agg.seconds.len(), 3);
        assert_eq!(agg.seconds[0].stats.counts.received, 3);
        assert_eq!(agg.seconds[1].stats.counts.received, 0);
        assert_eq!(agg.topics["a"].counts.sent, 5);
        assert_eq!(agg.topics["b"].counts.gaps, 1);
        assert_eq!(agg.total.counts.received, 4);
        assert_eq!(agg.total.latency.len(), 4);
        assert_eq!(agg.total.corrected.len(), 4);
    }

    #[test]
    fn no_rows_give_an_empty_aggregate() {
        let agg = aggregate::<Failed>("r", Vec::new(), |_| Ok(())).unwrap();
        assert!(agg.seconds.is_empty());
        assert!(agg.topics.is_empty());
    }

    #[test]
    fn unreadable_histogram_names_its_row() {
        let mut bad = row("t", 5, "i", 1, &[1]);
        bad.latency_hdr = b"junk".to_vec();
        let err = aggregate::<Failed>("r", vec![bad], |_| Ok(())).unwrap_err();
        assert_eq!(err.0.topic, "t");
        assert_eq!(err.0.second, 5);
    }
}
