//! Per-topic, per-second aggregation of what the collector receives, turned into store
//! records when each second is over.

use std::collections::HashMap;

use hdrhistogram::Histogram;
use iotload_core::recorder::{SecondSamples, second_scratch};
use iotload_core::store::{ALL_TOPICS, TopicSecond};

/// One topic's counters for the second in progress.
#[derive(Debug, Default)]
struct Accumulator {
    second: u64,
    received: u64,
    gaps: u64,
    duplicates: u64,
    reordered: u64,
    undecodable: u64,
    samples: SecondSamples,
}

impl Accumulator {
    fn is_empty(&self) -> bool {
        self.received == 0 && self.undecodable == 0
    }
}

/// What happened to one received message, as far as the topic's counters go.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Outcome {
    /// A new message with its latencies (µs) and the sequence gaps it opened.
    Measured {
        raw_us: u64,
        corrected_us: u64,
        new_gaps: u64,
    },
    /// A new message without a latency (stamp from the future).
    Unmeasured { new_gaps: u64 },
    /// A duplicate.
    Duplicate,
    /// A late (reordered) arrival with its latencies.
    Late { raw_us: u64, corrected_us: u64 },
    /// No readable stamp.
    Undecodable,
}

/// Per-topic accumulators for the current second (one for all topics, named
/// [`ALL_TOPICS`], when the results are stored per instance).
pub(crate) struct TopicSeconds {
    run_id: String,
    instance: String,
    by_instance: bool,
    topics: HashMap<String, Accumulator>,
    scratch: Histogram<u64>,
}

impl TopicSeconds {
    pub(crate) fn new(run_id: String, instance: String, by_instance: bool) -> Self {
        Self {
            run_id,
            instance,
            by_instance,
            topics: HashMap::new(),
            scratch: second_scratch(),
        }
    }

    /// Adds one message received at `second` (Unix time); returns the topic's finished
    /// previous second, if this message started a new one.
    pub(crate) fn add(
        &mut self,
        topic: &str,
        second: u64,
        outcome: Outcome,
    ) -> Option<TopicSecond> {
        let topic = if self.by_instance { ALL_TOPICS } else { topic };
        let acc = match self.topics.get_mut(topic) {
            Some(acc) => acc,
            None => self.topics.entry(topic.to_string()).or_default(),
        };
        let mut finished = None;
        if acc.second != second {
            if !acc.is_empty() {
                let done = std::mem::take(acc);
                finished = Some(done);
            }
            acc.second = second;
        }
        acc.received += 1;
        match outcome {
            Outcome::Measured {
                raw_us,
                corrected_us,
                new_gaps,
            } => {
                acc.gaps += new_gaps;
                acc.samples.record(raw_us, corrected_us);
            }
            Outcome::Unmeasured { new_gaps } => acc.gaps += new_gaps,
            Outcome::Duplicate => acc.duplicates += 1,
            Outcome::Late {
                raw_us,
                corrected_us,
            } => {
                acc.reordered += 1;
                acc.samples.record(raw_us, corrected_us);
            }
            Outcome::Undecodable => acc.undecodable += 1,
        }
        finished.map(|done| self.record(topic, done))
    }

    /// Finishes every topic whose second is before `now_second` (all when `None`).
    pub(crate) fn flush(&mut self, now_second: Option<u64>) -> Vec<TopicSecond> {
        let due: Vec<String> = self
            .topics
            .iter()
            .filter(|(_, a)| !a.is_empty() && now_second.is_none_or(|now| a.second < now))
            .map(|(t, _)| t.clone())
            .collect();
        let mut out = Vec::with_capacity(due.len());
        for topic in due {
            if let Some(acc) = self.topics.get_mut(&topic) {
                let done = std::mem::take(acc);
                out.push(self.record(&topic, done));
            }
        }
        out
    }

    fn record(&mut self, topic: &str, mut acc: Accumulator) -> TopicSecond {
        let (latency_hdr, corrected_hdr) = acc.samples.take_encoded(&mut self.scratch);
        TopicSecond {
            run_id: self.run_id.clone(),
            topic: topic.to_string(),
            second: acc.second,
            instance: self.instance.clone(),
            sent: 0,
            received: acc.received,
            gaps: acc.gaps,
            duplicates: acc.duplicates,
            reordered: acc.reordered,
            undecodable: acc.undecodable,
            latency_hdr,
            corrected_hdr,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_new_second_finishes_the_previous_one() {
        let mut t = TopicSeconds::new("r".into(), "i".into(), false);
        let m = Outcome::Measured {
            raw_us: 100,
            corrected_us: 150,
            new_gaps: 0,
        };
        assert!(t.add("a", 10, m).is_none());
        assert!(t.add("a", 10, Outcome::Duplicate).is_none());
        let done = t.add("a", 11, m).expect("second 10 finished");
        assert_eq!((done.second, done.received, done.duplicates), (10, 2, 1));
        assert!(!done.latency_hdr.is_empty());
        let rest = t.flush(None);
        assert_eq!(rest.len(), 1);
        assert_eq!(rest[0].second, 11);
        assert!(t.flush(None).is_empty());
    }

    #[test]
    fn by_instance_all_topics_add_up_in_one_row() {
        let mut t = TopicSeconds::new("r".into(), "i".into(), true);
        let m = Outcome::Measured {
            raw_us: 100,
            corrected_us: 150,
            new_gaps: 1,
        };
        t.add("a", 10, m);
        t.add("b", 10, m);
        t.add("c", 10, Outcome::Duplicate);
        let done = t.flush(None);
        assert_eq!(done.len(), 1);
        let row = &done[0];
        assert_eq!(row.topic, ALL_TOPICS);
        assert_eq!((row.received, row.gaps, row.duplicates), (3, 2, 1));
        let hdr = iotload_core::recorder::LatencyHistogram::decode(&row.latency_hdr).unwrap();
        assert_eq!(hdr.len(), 2);
    }

    #[test]
    fn flush_keeps_the_current_second() {
        let mut t = TopicSeconds::new("r".into(), "i".into(), false);
        t.add("a", 5, Outcome::Undecodable);
        t.add("b", 6, Outcome::Unmeasured { new_gaps: 3 });
        let done = t.flush(Some(6));
        assert_eq!(done.len(), 1);
        assert_eq!((done[0].topic.as_str(), done[0].undecodable), ("a", 1));
        let done = t.flush(Some(7));
        assert_eq!((done[0].topic.as_str(), done[0].gaps), ("b", 3));
    }
}
