//! One second of a running process as the live page draws it, read from the same counters
//! the progress line reads (atomics and the collector's once-a-second interval).

use std::sync::atomic::Ordering;

use collector::{IntervalStats, LiveTotals};
use iotload_core::recorder::LatencyHistogram;
use serde::Serialize;
use tokio::sync::watch;

use crate::progress::Sources;

/// What the page shows for one second.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Sample {
    /// Seconds since the process started watching.
    pub(crate) t: f64,
    /// The devices' side.
    pub(crate) load: Option<LoadSample>,
    /// The echo iPaaS.
    pub(crate) echo: Option<EchoSample>,
    /// The collector's side.
    pub(crate) receive: Option<ReceiveSample>,
}

/// The devices, as of this second. A results store keeps only what was sent, so a page fed
/// from one (`iotload plotter --ui`) has no device counts, errors or lag (`null`).
#[derive(Debug, Clone, Serialize)]
pub(crate) struct LoadSample {
    pub(crate) devices: Option<usize>,
    pub(crate) connected: Option<u64>,
    pub(crate) sent: u64,
    pub(crate) sent_per_s: f64,
    pub(crate) publish_errors: Option<u64>,
    /// The worst of the devices' latest lags behind their schedule.
    pub(crate) send_lag_ms: Option<f64>,
}

/// The echo iPaaS, as of this second.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct EchoSample {
    pub(crate) received: u64,
    pub(crate) published: u64,
    pub(crate) errors: u64,
}

/// The collector: the last second's latency and the totals so far.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct ReceiveSample {
    /// Messages received in the last second.
    pub(crate) received_per_s: u64,
    /// Latency percentiles of the last second, ms.
    pub(crate) p50_ms: f64,
    pub(crate) p90_ms: f64,
    pub(crate) p99_ms: f64,
    pub(crate) p999_ms: f64,
    pub(crate) max_ms: f64,
    pub(crate) corrected_p99_ms: f64,
    /// Totals so far.
    pub(crate) received: u64,
    pub(crate) unique: u64,
    /// Sequence gaps not (yet) filled by a late arrival: what the loss model counts as
    /// lost while messages may still be in flight (docs/measurement.md).
    pub(crate) open_gaps: u64,
    pub(crate) duplicates: u64,
    pub(crate) reordered: u64,
    pub(crate) undecodable: u64,
    /// Latency of everything received so far, ms (from a results store: only on the
    /// newest sample).
    pub(crate) total_p50_ms: Option<f64>,
    pub(crate) total_p99_ms: Option<f64>,
    pub(crate) total_max_ms: Option<f64>,
}

/// One topic's totals, for the per-topic table.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct TopicRow {
    pub(crate) topic: String,
    pub(crate) received: u64,
    pub(crate) p50_ms: f64,
    pub(crate) p99_ms: f64,
    pub(crate) max_ms: f64,
    pub(crate) corrected_p99_ms: f64,
}

pub(crate) fn ms(us: u64) -> f64 {
    us as f64 / 1000.0
}

/// Reads percentile `p` of `h` in ms.
fn pct(h: &LatencyHistogram, p: f64) -> f64 {
    ms(h.percentile_us(p))
}

/// Builds samples from the sources, remembering what a rate needs.
pub(crate) struct Sampler {
    sources: Sources,
    last_sent: u64,
    last_t: f64,
}

impl Sampler {
    pub(crate) fn new(sources: Sources) -> Self {
        Self {
            sources,
            last_sent: 0,
            last_t: 0.0,
        }
    }

    /// The collector's once-a-second interval statistics, when this process collects.
    pub(crate) fn collector_interval(&self) -> Option<watch::Receiver<IntervalStats>> {
        self.sources.collector.as_ref().map(|c| c.interval())
    }

    /// The sample at `t` seconds; `interval` is the collector's latest second.
    pub(crate) fn sample(&mut self, t: f64, interval: Option<IntervalStats>) -> Sample {
        let elapsed = (t - self.last_t).max(1e-3);
        self.last_t = t;
        let load = self.sources.load.as_ref().map(|l| {
            let sent = l.sent.load(Ordering::Relaxed);
            let rate = sent.saturating_sub(self.last_sent) as f64 / elapsed;
            self.last_sent = sent;
            LoadSample {
                devices: Some(l.per_device.len()),
                connected: Some(l.connected.load(Ordering::Relaxed)),
                sent,
                sent_per_s: (rate * 10.0).round() / 10.0,
                publish_errors: Some(l.errors.load(Ordering::Relaxed)),
                send_lag_ms: Some(ms(l.worst_lag_us())),
            }
        });
        let echo = self.sources.echo.as_ref().map(|e| EchoSample {
            received: e.received.load(Ordering::Relaxed),
            published: e.published.load(Ordering::Relaxed),
            errors: e.errors.load(Ordering::Relaxed),
        });
        let receive = self.sources.collector.as_ref().map(|c| {
            let i = interval.unwrap_or_default();
            let unique = c.unique.load(Ordering::Relaxed);
            c.read_totals(|totals: &LiveTotals| ReceiveSample {
                received_per_s: i.received,
                p50_ms: ms(i.p50_us),
                p90_ms: ms(i.p90_us),
                p99_ms: ms(i.p99_us),
                p999_ms: ms(i.p999_us),
                max_ms: ms(i.max_us),
                corrected_p99_ms: ms(i.corrected_p99_us),
                received: totals.received,
                unique,
                open_gaps: totals.seq.gaps,
                duplicates: totals.seq.duplicates,
                reordered: totals.seq.reordered,
                undecodable: totals.undecodable,
                total_p50_ms: Some(pct(&totals.latency, 50.0)),
                total_p99_ms: Some(pct(&totals.latency, 99.0)),
                total_max_ms: Some(pct(&totals.latency, 100.0)),
            })
        });
        Sample {
            t: (t * 10.0).round() / 10.0,
            load,
            echo,
            receive,
        }
    }

    /// Every topic's totals so far (empty without a collector), busiest first.
    pub(crate) fn topics(&self) -> Vec<TopicRow> {
        let Some(c) = &self.sources.collector else {
            return Vec::new();
        };
        let mut rows = c.read_totals(|totals| {
            totals
                .topics
                .iter()
                .map(|(topic, t)| TopicRow {
                    topic: topic.clone(),
                    received: t.received,
                    p50_ms: pct(&t.latency, 50.0),
                    p99_ms: pct(&t.latency, 99.0),
                    max_ms: pct(&t.latency, 100.0),
                    corrected_p99_ms: pct(&t.latency_corrected, 99.0),
                })
                .collect::<Vec<_>>()
        });
        rows.sort_by(|a, b| b.received.cmp(&a.received).then(a.topic.cmp(&b.topic)));
        rows
    }
}
