//! Pass/fail criteria for CI, in the spirit of k6: `p99<50ms`, `loss<0.1%`, `rate>=990/s`.
//!
//! A [`Threshold`] is parsed once from the command line or the config file and checked
//! against an [`Observed`]: the final summary's numbers, or the running totals while
//! `--abort-on-fail` watches a run.

use std::fmt;
use std::str::FromStr;

use serde::Serialize;

use crate::summary::RunSummary;
use iotload_core::recorder::LatencyStats;

/// Why a threshold expression was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("threshold '{text}': {reason}")]
pub(crate) struct ThresholdError {
    text: String,
    reason: String,
}

fn rejected(text: &str, reason: impl Into<String>) -> ThresholdError {
    ThresholdError {
        text: text.to_string(),
        reason: reason.into(),
    }
}

/// What a threshold measures.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Metric {
    /// A statistic of the end-to-end latency, ms (`corrected`: from the intended send).
    Latency {
        /// Corrected for coordinated omission.
        corrected: bool,
        /// Which statistic.
        stat: Stat,
    },
    /// A statistic of the send lag behind the schedule, ms.
    SendLag(Stat),
    /// Messages never received: a count, or a percentage of those sent.
    Loss(Amount),
    /// Messages received more than once: a count, or a percentage of those received.
    Duplicates(Amount),
    /// Messages that arrived after a later one: a count, or a percentage of those received.
    Reordered(Amount),
    /// Messages received per second.
    Rate,
    /// Messages sent per second.
    SentRate,
}

/// A statistic of a latency distribution.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Stat {
    /// Smallest value.
    Min,
    /// Arithmetic mean.
    Mean,
    /// A percentile, in tenths (p99.9 is 999, p99 is 990).
    Percentile(u16),
    /// Largest value.
    Max,
}

/// How a count is compared.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Amount {
    /// As a number of messages.
    Count,
    /// As a percentage.
    Percent,
}

/// The comparison.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Comparison {
    /// `<`
    Below,
    /// `<=`
    AtMost,
    /// `>`
    Above,
    /// `>=`
    AtLeast,
}

impl Comparison {
    fn holds(self, value: f64, limit: f64) -> bool {
        match self {
            Comparison::Below => value < limit,
            Comparison::AtMost => value <= limit,
            Comparison::Above => value > limit,
            Comparison::AtLeast => value >= limit,
        }
    }

    /// Whether the threshold sets an upper bound (a value can fail it before the end).
    pub(crate) fn is_upper_bound(self) -> bool {
        matches!(self, Comparison::Below | Comparison::AtMost)
    }
}

/// One pass/fail criterion.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Threshold {
    text: String,
    metric: Metric,
    comparison: Comparison,
    /// In the metric's unit: ms, messages, percent or messages per second.
    limit: f64,
}

/// Which part of a run a threshold needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Needs {
    /// The devices' side: `loadgen` or `run`.
    Load,
    /// The collector's side: `collector` or `run`.
    Receive,
}

impl Threshold {
    /// The expression as the user wrote it.
    pub(crate) fn text(&self) -> &str {
        &self.text
    }

    /// What it measures.
    pub(crate) fn metric(&self) -> Metric {
        self.metric
    }

    /// The comparison.
    pub(crate) fn comparison(&self) -> Comparison {
        self.comparison
    }

    /// Which part of a run it needs numbers from.
    pub(crate) fn needs(&self) -> Needs {
        match self.metric {
            Metric::SendLag(_) | Metric::SentRate => Needs::Load,
            _ => Needs::Receive,
        }
    }

    /// Checks the threshold against `observed`; `None` when the numbers it needs are
    /// missing (e.g. nothing received yet).
    pub(crate) fn check(&self, observed: &Observed) -> Option<ThresholdResult> {
        let (value, unit) = self.value(observed)?;
        Some(ThresholdResult {
            threshold: self.text.clone(),
            value,
            unit,
            passed: self.comparison.holds(value, self.limit),
            aborted_run: false,
        })
    }

    fn value(&self, o: &Observed) -> Option<(f64, &'static str)> {
        let percent = |part: u64, whole: u64| {
            if whole == 0 {
                0.0
            } else {
                part as f64 * 100.0 / whole as f64
            }
        };
        let counted = |amount: Amount, part: u64, whole: u64| match amount {
            Amount::Count => (part as f64, "messages"),
            Amount::Percent => (percent(part, whole), "%"),
        };
        Some(match self.metric {
            Metric::Latency { corrected, stat } => {
                let s = if corrected {
                    o.latency_corrected_ms.as_ref()?
                } else {
                    o.latency_ms.as_ref()?
                };
                (stat.of(s)?, "ms")
            }
            Metric::SendLag(stat) => (stat.of(o.send_lag_ms.as_ref()?)?, "ms"),
            Metric::Loss(a) => {
                let r = o.receive.as_ref()?;
                counted(a, r.lost, r.unique + r.lost)
            }
            Metric::Duplicates(a) => {
                let r = o.receive.as_ref()?;
                counted(a, r.duplicates, r.received)
            }
            Metric::Reordered(a) => {
                let r = o.receive.as_ref()?;
                counted(a, r.reordered, r.received)
            }
            Metric::Rate => (o.received_per_s?, "msg/s"),
            Metric::SentRate => (o.sent_per_s?, "msg/s"),
        })
    }
}

impl Stat {
    /// The statistic of `s`, `None` when it holds no values.
    fn of(self, s: &LatencyStats) -> Option<f64> {
        if s.count == 0 {
            return None;
        }
        Some(match self {
            Stat::Min => s.min,
            Stat::Mean => s.mean,
            Stat::Max => s.max,
            Stat::Percentile(500) => s.p50,
            Stat::Percentile(900) => s.p90,
            Stat::Percentile(990) => s.p99,
            Stat::Percentile(_) => s.p999,
        })
    }
}

impl fmt::Display for Threshold {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl FromStr for Threshold {
    type Err = ThresholdError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let compact: String = text.chars().filter(|c| !c.is_whitespace()).collect();
        let at = compact
            .find(['<', '>'])
            .ok_or_else(|| rejected(text, "no comparison: write e.g. p99<50ms or rate>=990/s"))?;
        let (name, rest) = compact.split_at(at);
        let (comparison, value) = if let Some(v) = rest.strip_prefix("<=") {
            (Comparison::AtMost, v)
        } else if let Some(v) = rest.strip_prefix(">=") {
            (Comparison::AtLeast, v)
        } else if let Some(v) = rest.strip_prefix('<') {
            (Comparison::Below, v)
        } else if let Some(v) = rest.strip_prefix('>') {
            (Comparison::Above, v)
        } else {
            return Err(rejected(text, "no comparison"));
        };
        let name = name.to_ascii_lowercase();
        let (metric, limit) = match name.as_str() {
            "loss" | "lost" => amount(text, value, Metric::Loss)?,
            "dup" | "dups" | "duplicates" => amount(text, value, Metric::Duplicates)?,
            "reorder" | "reordered" => amount(text, value, Metric::Reordered)?,
            "rate" | "received_rate" => (Metric::Rate, per_second(text, value)?),
            "sent_rate" => (Metric::SentRate, per_second(text, value)?),
            _ => {
                // `p99.9` is a statistic; `corrected.p99.9` a family and a statistic.
                let (family, stat) = match stat_named(&name) {
                    Some(stat) => ("", stat),
                    None => {
                        let (family, stat) =
                            name.split_once('.').ok_or_else(|| unknown(text, &name))?;
                        (
                            family,
                            stat_named(stat).ok_or_else(|| unknown(text, &name))?,
                        )
                    }
                };
                let metric = match family {
                    "" | "latency" => Metric::Latency {
                        corrected: false,
                        stat,
                    },
                    "corrected" | "latency_corrected" => Metric::Latency {
                        corrected: true,
                        stat,
                    },
                    "send_lag" | "lag" => Metric::SendLag(stat),
                    _ => return Err(unknown(text, &name)),
                };
                (metric, milliseconds(text, value)?)
            }
        };
        Ok(Threshold {
            text: text.trim().to_string(),
            metric,
            comparison,
            limit,
        })
    }
}

fn unknown(text: &str, name: &str) -> ThresholdError {
    rejected(
        text,
        format!(
            "unknown metric '{name}': use p50, p90, p99, p99.9, min, mean or max (latency; \
             corrected.p99 for the corrected latency, send_lag.p99 for the send lag), loss, \
             dup, reorder, rate or sent_rate"
        ),
    )
}

/// `p99.9`, `p999`, `p99`, `min`, ...
fn stat_named(name: &str) -> Option<Stat> {
    Some(match name {
        "min" => Stat::Min,
        "mean" | "avg" => Stat::Mean,
        "max" => Stat::Max,
        "p50" | "median" => Stat::Percentile(500),
        "p90" => Stat::Percentile(900),
        "p99" => Stat::Percentile(990),
        "p99.9" | "p999" => Stat::Percentile(999),
        _ => return None,
    })
}

fn number(text: &str, value: &str) -> Result<f64, ThresholdError> {
    match value.parse::<f64>() {
        Ok(v) if v.is_finite() && v >= 0.0 => Ok(v),
        _ => Err(rejected(
            text,
            format!("'{value}' is not a number of zero or more"),
        )),
    }
}

/// `50ms`, `500us`, `0.2s`; a bare number is milliseconds.
fn milliseconds(text: &str, value: &str) -> Result<f64, ThresholdError> {
    for (suffix, scale) in [("ms", 1.0), ("us", 1e-3), ("µs", 1e-3), ("s", 1e3)] {
        if let Some(v) = value.strip_suffix(suffix) {
            return Ok(number(text, v)? * scale);
        }
    }
    number(text, value)
}

/// `990/s`, `990`.
fn per_second(text: &str, value: &str) -> Result<f64, ThresholdError> {
    number(text, value.strip_suffix("/s").unwrap_or(value))
}

/// `0.1%` (a percentage) or `5` (a count).
fn amount(
    text: &str,
    value: &str,
    metric: fn(Amount) -> Metric,
) -> Result<(Metric, f64), ThresholdError> {
    match value.strip_suffix('%') {
        Some(v) => Ok((metric(Amount::Percent), number(text, v)?)),
        None => Ok((metric(Amount::Count), number(text, value)?)),
    }
}

/// The numbers thresholds are checked against.
#[derive(Debug, Clone, Default)]
pub(crate) struct Observed {
    /// End-to-end latency.
    pub(crate) latency_ms: Option<LatencyStats>,
    /// Corrected latency.
    pub(crate) latency_corrected_ms: Option<LatencyStats>,
    /// Send lag behind the schedule.
    pub(crate) send_lag_ms: Option<LatencyStats>,
    /// What was received.
    pub(crate) receive: Option<ReceivedCounts>,
    /// Messages received per second.
    pub(crate) received_per_s: Option<f64>,
    /// Messages sent per second.
    pub(crate) sent_per_s: Option<f64>,
}

/// Counts of what was received.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct ReceivedCounts {
    /// Messages received, duplicates included.
    pub(crate) received: u64,
    /// Distinct messages received.
    pub(crate) unique: u64,
    /// Messages never received.
    pub(crate) lost: u64,
    /// Messages received more than once.
    pub(crate) duplicates: u64,
    /// Messages that arrived after a later one.
    pub(crate) reordered: u64,
}

impl Observed {
    /// The final numbers of a run.
    pub(crate) fn from_summary(s: &RunSummary) -> Self {
        let mut o = Observed::default();
        if let Some(l) = &s.load {
            o.send_lag_ms = Some(l.send_lag_ms);
            o.sent_per_s = Some(l.sent_per_s);
        }
        if let Some(r) = &s.receive {
            o.latency_ms = Some(r.latency_ms);
            o.latency_corrected_ms = Some(r.latency_corrected_ms);
            o.received_per_s = Some(r.received_per_s);
            o.receive = Some(ReceivedCounts {
                received: r.received,
                unique: r.unique,
                lost: r.lost,
                duplicates: r.duplicates,
                reordered: r.reordered,
            });
        }
        o
    }
}

/// One threshold's verdict, as the summary reports it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub(crate) struct ThresholdResult {
    /// The expression.
    pub(crate) threshold: String,
    /// The measured value, in `unit`.
    pub(crate) value: f64,
    /// `ms`, `%`, `messages` or `msg/s`.
    pub(crate) unit: &'static str,
    /// Whether the value met the threshold.
    pub(crate) passed: bool,
    /// Whether this threshold failed during the run and `--abort-on-fail` stopped it.
    pub(crate) aborted_run: bool,
}

/// Checks every threshold against a run's final numbers; one whose numbers are missing
/// (nothing received) fails.
pub(crate) fn check_all(thresholds: &[Threshold], summary: &RunSummary) -> Vec<ThresholdResult> {
    let observed = Observed::from_summary(summary);
    thresholds
        .iter()
        .map(|t| {
            t.check(&observed).unwrap_or_else(|| ThresholdResult {
                threshold: t.text.clone(),
                value: f64::NAN,
                unit: "",
                passed: false,
                aborted_run: false,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(text: &str) -> Threshold {
        text.parse().unwrap()
    }

    fn observed() -> Observed {
        Observed {
            latency_ms: Some(LatencyStats {
                count: 100,
                p50: 1.0,
                p99: 40.0,
                p999: 60.0,
                max: 80.0,
                ..Default::default()
            }),
            latency_corrected_ms: Some(LatencyStats {
                count: 100,
                p99: 55.0,
                ..Default::default()
            }),
            send_lag_ms: Some(LatencyStats {
                count: 100,
                p99: 0.2,
                ..Default::default()
            }),
            receive: Some(ReceivedCounts {
                received: 1_000,
                unique: 999,
                lost: 1,
                duplicates: 1,
                reordered: 0,
            }),
            received_per_s: Some(995.0),
            sent_per_s: Some(1_000.0),
        }
    }

    #[test]
    fn parses_the_k6_style_examples() {
        assert_eq!(
            t("p99<50ms").metric(),
            Metric::Latency {
                corrected: false,
                stat: Stat::Percentile(990)
            }
        );
        assert_eq!(t("p99 < 50ms").limit, 50.0);
        assert_eq!(t("p99.9<=0.2s").limit, 200.0);
        assert_eq!(t("max<500us").limit, 0.5);
        assert_eq!(t("loss<0.1%").metric(), Metric::Loss(Amount::Percent));
        assert_eq!(t("loss<=5").metric(), Metric::Loss(Amount::Count));
        assert_eq!(t("rate>=990/s").comparison(), Comparison::AtLeast);
        assert_eq!(t("rate>=990/s").limit, 990.0);
        assert_eq!(t("send_lag.p99<1ms").needs(), Needs::Load);
        assert_eq!(
            t("corrected.p99.9<1s").metric(),
            Metric::Latency {
                corrected: true,
                stat: Stat::Percentile(999)
            }
        );
        assert_eq!(
            t("corrected.p99<50").metric(),
            Metric::Latency {
                corrected: true,
                stat: Stat::Percentile(990)
            }
        );
    }

    #[test]
    fn rejects_with_a_reason() {
        for (text, reason) in [
            ("p99", "no comparison"),
            ("p98<5ms", "unknown metric 'p98'"),
            ("rate>=fast", "'fast' is not a number"),
            ("p99<-1ms", "not a number of zero or more"),
            ("p99=5ms", "no comparison"),
            ("bogus.p99<1", "unknown metric"),
        ] {
            let e = text.parse::<Threshold>().unwrap_err().to_string();
            assert!(e.contains(reason), "{text}: {e}");
            assert!(e.contains(text), "{text}: {e}");
        }
    }

    #[test]
    fn checks_pass_and_fail() {
        let o = observed();
        for (text, passed) in [
            ("p99<50ms", true),
            ("p99<40ms", false),
            ("p99<=40ms", true),
            ("corrected.p99<50ms", false),
            ("p99.9<61", true),
            ("max<0.05s", false),
            ("loss<0.1%", false),
            ("loss<0.2%", true),
            ("loss<=1", true),
            ("dup<1", false),
            ("reorder<1", true),
            ("rate>=990/s", true),
            ("rate>995", false),
            ("sent_rate>=1000", true),
            ("send_lag.p99<1ms", true),
        ] {
            let r = t(text).check(&o).unwrap();
            assert_eq!(r.passed, passed, "{text}: {r:?}");
        }
    }

    #[test]
    fn missing_numbers_fail_in_the_summary() {
        let summary = RunSummary::new("loadgen", "mqtt://x".into(), "now".into());
        let results = check_all(&[t("p99<50ms")], &summary);
        assert!(!results[0].passed);
        assert!(t("p99<50ms").check(&Observed::default()).is_none());
    }

    proptest::proptest! {
        #[test]
        fn arbitrary_text_never_panics(text in "\\PC{0,40}") {
            let _ = text.parse::<Threshold>();
        }
    }
}
