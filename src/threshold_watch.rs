//! `--abort-on-fail`: checks the upper-bound thresholds against the running totals once a
//! second and stops the devices (as the first Ctrl-C does) when one fails.

use std::sync::atomic::Ordering;
use std::time::Duration;

use crate::threshold::{Amount, Metric, Observed, ReceivedCounts, Threshold};
use tokio_util::sync::CancellationToken;

use crate::progress::Sources;

/// Messages received before a percentile or a percentage is judged during the run: the
/// first few messages of a run say little about either.
const MIN_MESSAGES: u64 = 100;

/// A running check; [`ThresholdWatch::stop`] says which threshold stopped the run, if any.
pub(crate) struct ThresholdWatch {
    stop: CancellationToken,
    task: tokio::task::JoinHandle<Option<String>>,
}

impl ThresholdWatch {
    /// Starts checking the thresholds a running total can fail (`<`, `<=`); cancels
    /// `stop_sending` at the first failure. `None` when no threshold qualifies.
    pub(crate) fn start(
        thresholds: &[Threshold],
        sources: &Sources,
        stop_sending: CancellationToken,
    ) -> Option<Self> {
        let watched: Vec<Threshold> = thresholds
            .iter()
            .filter(|t| t.comparison().is_upper_bound() && judged_live(t.metric()))
            .cloned()
            .collect();
        if watched.is_empty() || sources.collector.is_none() {
            return None;
        }
        let stop = CancellationToken::new();
        let cancelled = stop.clone();
        let sources = sources.clone();
        let task = tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            tick.tick().await;
            loop {
                tokio::select! {
                    _ = cancelled.cancelled() => return None,
                    _ = tick.tick() => {}
                }
                let observed = running_totals(&sources);
                let received = observed.receive.map_or(0, |r| r.received);
                for t in &watched {
                    if needs_volume(t.metric()) && received < MIN_MESSAGES {
                        continue;
                    }
                    if let Some(r) = t.check(&observed)
                        && !r.passed
                    {
                        eprintln!(
                            "\nthreshold '{t}' failed ({:.3} {}): stopping the run (--abort-on-fail)",
                            r.value, r.unit
                        );
                        stop_sending.cancel();
                        return Some(t.text().to_string());
                    }
                }
            }
        });
        Some(Self { stop, task })
    }

    /// Stops checking; the threshold that stopped the run, if one did.
    pub(crate) async fn stop(self) -> Option<String> {
        self.stop.cancel();
        self.task.await.ok().flatten()
    }
}

/// Whether a running total of the metric is known during the run (send lag and rates are
/// only known at the end).
fn judged_live(metric: Metric) -> bool {
    matches!(
        metric,
        Metric::Latency { .. } | Metric::Loss(_) | Metric::Duplicates(_) | Metric::Reordered(_)
    )
}

/// Whether the metric means little over a handful of messages.
fn needs_volume(metric: Metric) -> bool {
    match metric {
        Metric::Latency { .. } => true,
        Metric::Loss(a) | Metric::Duplicates(a) | Metric::Reordered(a) => a == Amount::Percent,
        _ => false,
    }
}

/// The collector's totals so far; sequence gaps stand in for loss.
fn running_totals(sources: &Sources) -> Observed {
    let Some(c) = &sources.collector else {
        return Observed::default();
    };
    let unique = c.unique.load(Ordering::Relaxed);
    c.read_totals(|t| Observed {
        latency_ms: Some(t.latency.stats_ms()),
        latency_corrected_ms: Some(t.latency_corrected.stats_ms()),
        receive: Some(ReceivedCounts {
            received: t.received,
            unique,
            lost: t.seq.gaps,
            duplicates: t.seq.duplicates,
            reordered: t.seq.reordered,
        }),
        ..Observed::default()
    })
}
