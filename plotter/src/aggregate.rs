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
use iotload_core::store::{RunExtent, TopicSecond};
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

/// Aggregates one run's rows (in any order) in one go. `each` is called once per (second,
/// topic) of the dense grid, seconds in order and topics in order within a second; what
/// it returns stops the aggregation when it is an error.
pub fn aggregate<E>(
    run_id: &str,
    rows: Vec<TopicSecond>,
    each: impl FnMut(TopicSecondStats<'_>) -> Result<(), E>,
) -> Result<RunAggregate, E>
where
    E: From<AggregateError>,
{
    let extent = RunExtent::of(&rows);
    let mut run = RunAggregator::new(run_id, extent.as_ref());
    if let Some(extent) = &extent {
        run.add_slice(rows, extent.last, each)?;
    }
    Ok(run.finish())
}

/// Aggregates one run a time slice at a time, so memory follows the slice and the
/// number of topics, never the run's length: the per-topic and whole-run cells grow
/// with each slice, each second is finished (and handed to `each`) within its slice.
#[derive(Debug, Clone)]
pub struct RunAggregator {
    run_id: String,
    /// Every topic, in order: each gets a cell in every second.
    names: Vec<String>,
    topics: BTreeMap<String, Cell>,
    seconds: Vec<SecondStats>,
    total: Cell,
    /// The next second to finish.
    next: u64,
    /// The last second of the run.
    last: u64,
    /// Whether the run has any rows.
    any: bool,
}

impl RunAggregator {
    /// An aggregator for a run spanning `extent` (`None`: no rows).
    pub fn new(run_id: &str, extent: Option<&RunExtent>) -> Self {
        let names: Vec<String> = extent.map(|x| x.topics.clone()).unwrap_or_default();
        Self {
            run_id: run_id.to_string(),
            topics: names.iter().map(|n| (n.clone(), Cell::default())).collect(),
            names,
            seconds: Vec::new(),
            total: Cell::default(),
            next: extent.map_or(0, |x| x.first),
            last: extent.map_or(0, |x| x.last),
            any: extent.is_some(),
        }
    }

    /// The next second [`RunAggregator::add_slice`] will finish.
    pub fn next_second(&self) -> u64 {
        self.next
    }

    /// Adds the rows of the seconds from the next unfinished one through `to` (rows of
    /// other seconds are not this slice's and are left out) and finishes those seconds,
    /// calling `each` per (second, topic) as [`aggregate`] does. A topic first seen here
    /// gets its cells from here on.
    pub fn add_slice<E>(
        &mut self,
        mut rows: Vec<TopicSecond>,
        to: u64,
        mut each: impl FnMut(TopicSecondStats<'_>) -> Result<(), E>,
    ) -> Result<(), E>
    where
        E: From<AggregateError>,
    {
        if !self.any {
            return Ok(());
        }
        let (from, to) = (self.next, to.min(self.last));
        if to < from {
            return Ok(());
        }
        rows.retain(|r| (from..=to).contains(&r.second));
        rows.sort_by(|a, b| {
            (a.second, &a.topic, &a.instance).cmp(&(b.second, &b.topic, &b.instance))
        });
        for r in &rows {
            if !self.topics.contains_key(&r.topic) {
                self.topics.insert(r.topic.clone(), Cell::default());
                let at = self.names.partition_point(|n| *n < r.topic);
                self.names.insert(at, r.topic.clone());
            }
        }
        let mut i = 0;
        for second in from..=to {
            let mut all = Cell::default();
            for name in &self.names {
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
                if let Some(t) = self.topics.get_mut(name) {
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
            self.total.add(&all);
            self.seconds.push(SecondStats {
                second,
                stats: all.stats(),
            });
        }
        self.next = to.saturating_add(1);
        Ok(())
    }

    /// The run's aggregates from the seconds finished so far.
    pub fn finish(self) -> RunAggregate {
        RunAggregate {
            run_id: self.run_id,
            seconds: self.seconds,
            topics: self.topics,
            total: self.total,
        }
    }
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
    fn slices_give_what_the_whole_run_gives() {
        let rows = vec![
            row("b", 12, "i1", 1, &[3_000]),
            row("a", 10, "i2", 2, &[1_000, 2_000]),
            row("a", 10, "i1", 1, &[4_000]),
            row("c", 13, "i1", 5, &[9_000]),
            row("a", 15, "i1", 1, &[7_000]),
        ];
        let cells = |docs: &mut Vec<(u64, String, CellStats)>, d: TopicSecondStats<'_>| {
            docs.push((d.second, d.topic.to_string(), d.stats));
            Ok::<(), Failed>(())
        };
        let mut whole_docs = Vec::new();
        let whole = aggregate::<Failed>("r", rows.clone(), |d| cells(&mut whole_docs, d)).unwrap();
        let extent = RunExtent::of(&rows).unwrap();
        for per_slice in [1, 3, 6, 100] {
            let mut docs = Vec::new();
            let mut run = RunAggregator::new("r", Some(&extent));
            for (from, to) in extent.slices(per_slice) {
                let slice = rows
                    .iter()
                    .filter(|r| (from..=to).contains(&r.second))
                    .cloned()
                    .collect();
                run.add_slice::<Failed>(slice, to, |d| cells(&mut docs, d))
                    .unwrap();
            }
            let sliced = run.finish();
            assert_eq!(docs, whole_docs, "{per_slice} rows a slice");
            assert_eq!(sliced.seconds, whole.seconds);
            assert_eq!(sliced.total.stats(), whole.total.stats());
            let stats = |a: &RunAggregate| -> Vec<(String, CellStats)> {
                a.topics
                    .iter()
                    .map(|(t, c)| (t.clone(), c.stats()))
                    .collect()
            };
            assert_eq!(stats(&sliced), stats(&whole));
        }
        // 6 seconds × 3 topics, dense.
        assert_eq!(whole_docs.len(), 18);
    }

    #[test]
    fn a_topic_first_seen_in_a_later_slice_joins_from_there() {
        let extent = RunExtent {
            topics: vec!["a".into()],
            first: 10,
            last: 11,
        };
        let mut run = RunAggregator::new("r", Some(&extent));
        let mut docs = Vec::new();
        run.add_slice::<Failed>(vec![row("a", 10, "i", 1, &[1])], 10, |d| {
            docs.push((d.second, d.topic.to_string()));
            Ok(())
        })
        .unwrap();
        run.add_slice::<Failed>(
            vec![row("b", 11, "i", 1, &[1]), row("b", 99, "i", 1, &[1])],
            11,
            |d| {
                docs.push((d.second, d.topic.to_string()));
                Ok(())
            },
        )
        .unwrap();
        assert_eq!(docs, [(10, "a".into()), (11, "a".into()), (11, "b".into())]);
        let agg = run.finish();
        assert_eq!(
            agg.topics["b"].counts.received, 1,
            "second 99 is past the run"
        );
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
