//! The per-second, per-topic document: one line of `--jsonl`, and the document the
//! Elasticsearch output indexes. Its fields are listed in `docs/plotter.md`.

use iotload_core::recorder::LatencyStats;
use serde::Serialize;

use crate::aggregate::{MessageCounts, TopicSecondStats};

/// One topic in one second of one run, merged over its instances.
#[derive(Debug, Clone, Serialize)]
pub struct Document<'a> {
    /// The start of the second, ISO-8601 in UTC (`2025-01-31T12:00:00Z`).
    #[serde(rename = "@timestamp")]
    pub timestamp: String,
    /// Run id.
    pub run_id: &'a str,
    /// Topic (the action topic the collector received on).
    pub topic: &'a str,
    /// The instances whose rows were merged (empty when nothing happened that second).
    pub instances: &'a [&'a str],
    /// Message counters.
    #[serde(flatten)]
    pub counts: MessageCounts,
    /// Latency (receive − sent) in ms.
    pub latency_ms: LatencyStats,
    /// Corrected latency (receive − intended send time) in ms.
    pub latency_corrected_ms: LatencyStats,
}

impl<'a> Document<'a> {
    /// The document of one aggregated (second, topic) cell of run `run_id`.
    pub fn new(run_id: &'a str, cell: &'a TopicSecondStats<'a>) -> Self {
        Self {
            timestamp: iso8601(cell.second),
            run_id,
            topic: cell.topic,
            instances: &cell.instances,
            counts: cell.stats.counts,
            latency_ms: cell.stats.latency_ms,
            latency_corrected_ms: cell.stats.latency_corrected_ms,
        }
    }
}

/// A Unix second as ISO-8601 UTC.
pub fn iso8601(second: u64) -> String {
    i64::try_from(second)
        .ok()
        .and_then(|s| chrono::DateTime::from_timestamp(s, 0))
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::aggregate::CellStats;

    #[test]
    fn document_has_the_documented_fields() {
        let empty = iotload_core::recorder::LatencyHistogram::stored_precision();
        let cell = TopicSecondStats {
            second: 1_700_000_000,
            topic: "iot/1/action",
            instances: vec!["host-1"],
            stats: CellStats {
                counts: MessageCounts {
                    sent: 10,
                    received: 9,
                    gaps: 1,
                    ..MessageCounts::default()
                },
                ..CellStats::default()
            },
            latency: &empty,
            corrected: &empty,
        };
        let v = serde_json::to_value(Document::new("run-1", &cell)).unwrap();
        assert_eq!(v["@timestamp"], "2023-11-14T22:13:20Z");
        assert_eq!(v["run_id"], "run-1");
        assert_eq!(v["topic"], "iot/1/action");
        assert_eq!(v["instances"][0], "host-1");
        assert_eq!(v["sent"], 10);
        assert_eq!(v["received"], 9);
        assert_eq!(v["gaps"], 1);
        for key in ["duplicates", "reordered", "undecodable"] {
            assert_eq!(v[key], 0, "{key}");
        }
        for key in ["count", "min", "mean", "p50", "p90", "p99", "p999", "max"] {
            assert!(v["latency_ms"][key].is_number(), "{key}");
            assert!(v["latency_corrected_ms"][key].is_number(), "{key}");
        }
    }
}
