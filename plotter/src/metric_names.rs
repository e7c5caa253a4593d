//! Every Prometheus metric iotload exposes: its name, type and help text, in one place.
//! The components' live `/metrics` (`--metrics-addr`) and the plotter's (`--serve`) both
//! write from these, so one name never has two types (docs/metrics.md lists them).

use std::fmt::Write as _;

/// A Prometheus metric type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Only grows (resets only when the process restarts).
    Counter,
    /// Goes up and down.
    Gauge,
    /// Cumulative buckets, `_sum` and `_count`.
    Histogram,
    /// Quantiles, `_sum` and `_count`.
    Summary,
}

impl Kind {
    /// The name the exposition format's `# TYPE` line uses.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Counter => "counter",
            Self::Gauge => "gauge",
            Self::Histogram => "histogram",
            Self::Summary => "summary",
        }
    }
}

/// One metric family.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Metric {
    /// Its name, `iotload_` prefixed, `_total` on counters.
    pub name: &'static str,
    /// Its type.
    pub kind: Kind,
    /// Its help text.
    pub help: &'static str,
}

impl Metric {
    /// Writes the family's `# HELP` and `# TYPE` lines.
    pub fn write_header(&self, out: &mut String) {
        let _ = writeln!(
            out,
            "# HELP {} {}\n# TYPE {} {}",
            self.name,
            self.help,
            self.name,
            self.kind.as_str()
        );
    }
}

const fn metric(name: &'static str, kind: Kind, help: &'static str) -> Metric {
    Metric { name, kind, help }
}

/// Messages the devices handed to the broker client (loadgen), or sent as stored.
pub const MESSAGES_SENT: Metric = metric(
    "iotload_messages_sent_total",
    Kind::Counter,
    "Messages sent by the loadgen side.",
);
/// Publishes that failed (loadgen).
pub const PUBLISH_ERRORS: Metric = metric(
    "iotload_publish_errors_total",
    Kind::Counter,
    "Publishes that failed.",
);
/// Devices connected so far (loadgen).
pub const DEVICES_CONNECTED: Metric = metric(
    "iotload_devices_connected",
    Kind::Gauge,
    "Devices connected so far.",
);
/// Requests the echo iPaaS received.
pub const ECHO_RECEIVED: Metric = metric(
    "iotload_echo_received_total",
    Kind::Counter,
    "Requests the echo iPaaS received.",
);
/// Actions the echo iPaaS published.
pub const ECHO_PUBLISHED: Metric = metric(
    "iotload_echo_published_total",
    Kind::Counter,
    "Actions the echo iPaaS published (duplicates it injected included).",
);
/// Actions the echo could not publish or route.
pub const ECHO_ERRORS: Metric = metric(
    "iotload_echo_errors_total",
    Kind::Counter,
    "Actions the echo iPaaS failed to publish or could not route.",
);
/// Messages received by the collector side.
pub const MESSAGES_RECEIVED: Metric = metric(
    "iotload_messages_received_total",
    Kind::Counter,
    "Messages received by the collector side, duplicates and undecodable ones included.",
);
/// Sequence gaps found (the loss model's first counter).
pub const SEQUENCE_GAPS: Metric = metric(
    "iotload_sequence_gaps_total",
    Kind::Counter,
    "Sequence numbers found missing when a higher one of the same device arrived.",
);
/// Messages lost, derived from the counters (docs/measurement.md).
pub const MESSAGES_LOST: Metric = metric(
    "iotload_messages_lost",
    Kind::Gauge,
    "Messages never received: sent minus unique received when the sent count is known, \
     else sequence gaps not filled by a late arrival.",
);
/// Duplicates.
pub const MESSAGES_DUPLICATE: Metric = metric(
    "iotload_messages_duplicate_total",
    Kind::Counter,
    "Duplicate messages.",
);
/// Late arrivals, each filling a gap (the loss model's second counter).
pub const MESSAGES_REORDERED: Metric = metric(
    "iotload_messages_reordered_total",
    Kind::Counter,
    "Messages that arrived after a later one of their device (each fills a sequence gap).",
);
/// Messages without a readable stamp.
pub const MESSAGES_UNDECODABLE: Metric = metric(
    "iotload_messages_undecodable_total",
    Kind::Counter,
    "Messages without a readable stamp.",
);
/// Live latency histogram (components).
pub const LATENCY: Metric = metric(
    "iotload_latency_seconds",
    Kind::Histogram,
    "Latency, receive time minus send time.",
);
/// Live corrected latency histogram (components).
pub const LATENCY_CORRECTED: Metric = metric(
    "iotload_latency_corrected_seconds",
    Kind::Histogram,
    "Latency corrected for coordinated omission: receive time minus intended send time.",
);
/// A stored run's latency quantiles (plotter).
pub const RUN_LATENCY: Metric = metric(
    "iotload_run_latency_seconds",
    Kind::Summary,
    "Latency over a stored run, receive time minus send time.",
);
/// A stored run's corrected latency quantiles (plotter).
pub const RUN_LATENCY_CORRECTED: Metric = metric(
    "iotload_run_latency_corrected_seconds",
    Kind::Summary,
    "Corrected latency over a stored run, receive time minus intended send time.",
);
/// Seconds a stored run spans (plotter).
pub const RUN_DURATION: Metric = metric(
    "iotload_run_duration_seconds",
    Kind::Gauge,
    "Seconds the run's stored results span.",
);

/// Every metric, for the documentation test.
pub const ALL: [Metric; 17] = [
    MESSAGES_SENT,
    PUBLISH_ERRORS,
    DEVICES_CONNECTED,
    ECHO_RECEIVED,
    ECHO_PUBLISHED,
    ECHO_ERRORS,
    MESSAGES_RECEIVED,
    SEQUENCE_GAPS,
    MESSAGES_LOST,
    MESSAGES_DUPLICATE,
    MESSAGES_REORDERED,
    MESSAGES_UNDECODABLE,
    LATENCY,
    LATENCY_CORRECTED,
    RUN_LATENCY,
    RUN_LATENCY_CORRECTED,
    RUN_DURATION,
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_and_follow_the_conventions() {
        let mut names: Vec<&str> = ALL.iter().map(|m| m.name).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), ALL.len(), "a name is declared twice");
        for m in ALL {
            assert!(m.name.starts_with("iotload_"), "{}", m.name);
            assert_eq!(
                m.kind == Kind::Counter,
                m.name.ends_with("_total"),
                "{}: counters and only counters end in _total",
                m.name
            );
        }
    }

    #[test]
    fn every_metric_is_documented_with_its_type() {
        let docs = include_str!("../../docs/metrics.md");
        for m in ALL {
            let row = format!("| `{}` | {} |", m.name, m.kind.as_str());
            assert!(docs.contains(&row), "docs/metrics.md lacks the row {row}");
        }
    }
}
