//! Live Prometheus `/metrics` (`--metrics-addr`) of the components running in this
//! process: the same counters the progress line reads, and the collector's latency as
//! Prometheus histograms. Names and labels are listed in docs/metrics.md.

use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use anyhow::Context;
use iotload_core::recorder::LatencyHistogram;
use plotter::metric_names::{self as names, Metric};
use plotter::prometheus::{label_value, serve_exposition};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::cli::OutputArgs;
use crate::progress::Sources;

/// Histogram bucket bounds, seconds: 100 µs to 10 s.
const BUCKETS_S: [f64; 16] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0,
];

/// A running `/metrics` endpoint; [`MetricsEndpoint::stop`] closes it.
pub(crate) struct MetricsEndpoint {
    stop: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

impl MetricsEndpoint {
    /// Listens on `--metrics-addr` when it is given; `run_id` labels every series.
    pub(crate) async fn start(
        output: &OutputArgs,
        sources: &Sources,
        run_id: Option<&str>,
    ) -> anyhow::Result<Option<Self>> {
        let Some(addr) = &output.metrics_addr else {
            return Ok(None);
        };
        let listener = TcpListener::bind(addr)
            .await
            .with_context(|| format!("cannot listen on --metrics-addr {addr}"))?;
        eprintln!(
            "serving live metrics at http://{}/metrics",
            listener.local_addr()?
        );
        let stop = CancellationToken::new();
        let exposition = Arc::new(Exposition {
            sources: sources.clone(),
            run_label: run_id.map(|r| format!("run=\"{}\"", label_value(r))),
        });
        let cancelled = stop.clone();
        let task = tokio::spawn(async move {
            serve_exposition(listener, cancelled.cancelled(), || {
                // Rendered off the runtime's workers: with thousands of topics a render
                // takes milliseconds that the collector's receive task must not wait for.
                let exposition = Arc::clone(&exposition);
                async move {
                    tokio::task::spawn_blocking(move || exposition.render())
                        .await
                        .map_err(|err| format!("rendering the metrics failed: {err}"))
                }
            })
            .await;
        });
        Ok(Some(Self { stop, task }))
    }

    /// Closes the endpoint.
    pub(crate) async fn stop(this: Option<Self>) {
        if let Some(m) = this {
            m.stop.cancel();
            let _ = m.task.await;
        }
    }
}

/// What one scrape renders.
struct Exposition {
    sources: Sources,
    run_label: Option<String>,
}

impl Exposition {
    fn render(&self) -> String {
        let mut out = String::new();
        let base = self.run_label.clone().unwrap_or_default();
        let labels = |extra: &str| -> String {
            match (base.is_empty(), extra.is_empty()) {
                (true, true) => String::new(),
                (false, true) => format!("{{{base}}}"),
                (true, false) => format!("{{{extra}}}"),
                (false, false) => format!("{{{base},{extra}}}"),
            }
        };
        let plain = labels("");
        let metric = |out: &mut String, metric: Metric, value: u64| {
            metric.write_header(out);
            let _ = writeln!(out, "{}{plain} {value}", metric.name);
        };
        if let Some(l) = &self.sources.load {
            metric(
                &mut out,
                names::MESSAGES_SENT,
                l.sent.load(Ordering::Relaxed),
            );
            metric(
                &mut out,
                names::PUBLISH_ERRORS,
                l.errors.load(Ordering::Relaxed),
            );
            metric(
                &mut out,
                names::DEVICES_CONNECTED,
                l.connected.load(Ordering::Relaxed),
            );
        }
        if let Some(e) = &self.sources.echo {
            metric(
                &mut out,
                names::ECHO_RECEIVED,
                e.received.load(Ordering::Relaxed),
            );
            metric(
                &mut out,
                names::ECHO_PUBLISHED,
                e.published.load(Ordering::Relaxed),
            );
            metric(
                &mut out,
                names::ECHO_ERRORS,
                e.errors.load(Ordering::Relaxed),
            );
        }
        let Some(c) = &self.sources.collector else {
            return out;
        };
        // Read in place under the totals lock: no histogram is copied for a scrape.
        c.read_totals(|t| {
            // The tracker keeps open gaps; each late arrival closed one, so the gaps ever
            // opened are the open ones plus the late arrivals: a counter.
            let opened = t.seq.gaps.saturating_add(t.seq.reordered);
            metric(&mut out, names::SEQUENCE_GAPS, opened);
            metric(&mut out, names::MESSAGES_DUPLICATE, t.seq.duplicates);
            metric(&mut out, names::MESSAGES_REORDERED, t.seq.reordered);
            metric(&mut out, names::MESSAGES_UNDECODABLE, t.undecodable);
            names::MESSAGES_RECEIVED.write_header(&mut out);
            let name = names::MESSAGES_RECEIVED.name;
            if t.topics.is_empty() {
                let _ = writeln!(out, "{name}{} {}", labels(""), t.received);
            }
            for (topic, tt) in &t.topics {
                let topic = format!("topic=\"{}\"", label_value(topic));
                let _ = writeln!(out, "{name}{} {}", labels(&topic), tt.received);
            }
            for (metric, corrected) in [(names::LATENCY, false), (names::LATENCY_CORRECTED, true)] {
                metric.write_header(&mut out);
                let name = metric.name;
                let pick = |latency, corr| if corrected { corr } else { latency };
                if t.topics.is_empty() {
                    histogram(
                        &mut out,
                        name,
                        &base,
                        pick(&t.latency, &t.latency_corrected),
                    );
                }
                for (topic, tt) in &t.topics {
                    let mut l = base.clone();
                    if !l.is_empty() {
                        l.push(',');
                    }
                    let _ = write!(l, "topic=\"{}\"", label_value(topic));
                    histogram(&mut out, name, &l, pick(&tt.latency, &tt.latency_corrected));
                }
            }
        });
        out
    }
}

/// One Prometheus histogram's `_bucket`, `_sum` and `_count` lines from a µs histogram.
/// One pass over the recorded values fills every cumulative bucket and the sum: a scrape
/// of thousands of per-topic histograms costs one walk of each, not one per bucket.
fn histogram(out: &mut String, name: &str, labels: &str, h: &LatencyHistogram) {
    let sep = if labels.is_empty() { "" } else { "," };
    let inner = h.inner();
    let bounds_us = BUCKETS_S.map(|le| (le * 1e6) as u64);
    let mut in_bucket = [0_u64; BUCKETS_S.len()];
    let mut sum_us = 0.0_f64;
    if !h.is_empty() {
        // Values come in ascending order, so the bucket index only moves forward.
        let mut bucket = 0;
        for value in inner.iter_recorded() {
            let count = value.count_at_value();
            let at = value.value_iterated_to();
            sum_us += inner.median_equivalent(at) as f64 * count as f64;
            // The first bucket whose bound the value's range reaches, as count_between.
            let lowest = inner.lowest_equivalent(at);
            while bucket < bounds_us.len() && lowest > bounds_us[bucket] {
                bucket += 1;
            }
            if let Some(slot) = in_bucket.get_mut(bucket) {
                *slot += count;
            }
        }
    }
    let mut cumulative = 0_u64;
    for (le, count) in BUCKETS_S.iter().zip(in_bucket) {
        cumulative += count;
        let _ = writeln!(
            out,
            "{name}_bucket{{{labels}{sep}le=\"{le}\"}} {cumulative}"
        );
    }
    let _ = writeln!(out, "{name}_bucket{{{labels}{sep}le=\"+Inf\"}} {}", h.len());
    let sum_s = sum_us / 1e6;
    let braces = if labels.is_empty() {
        String::new()
    } else {
        format!("{{{labels}}}")
    };
    let _ = writeln!(out, "{name}_sum{braces} {sum_s}");
    let _ = writeln!(out, "{name}_count{braces} {}", h.len());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_pass_buckets_equal_counting_between_zero_and_each_bound() {
        let mut h = LatencyHistogram::new();
        // Values on and around every bound, plus a spread, so bucket edges are exercised.
        for le in BUCKETS_S {
            let us = (le * 1e6) as u64;
            for v in [us.saturating_sub(1), us, us + 1, us + us / 50] {
                h.record(v.max(1));
            }
        }
        for v in (1..200_000).step_by(7) {
            h.record(v);
        }
        let mut out = String::new();
        histogram(&mut out, "x", "", &h);
        for le in BUCKETS_S {
            let expected = h.inner().count_between(0, (le * 1e6) as u64);
            assert!(
                out.contains(&format!("x_bucket{{le=\"{le}\"}} {expected}\n")),
                "le {le}: expected {expected} in\n{out}"
            );
        }
        let sum: f64 = out
            .lines()
            .find_map(|l| l.strip_prefix("x_sum "))
            .unwrap()
            .parse()
            .unwrap();
        let expected = h.inner().mean() * h.len() as f64 / 1e6;
        assert!(
            (sum - expected).abs() <= expected * 1e-9,
            "{sum} vs {expected}"
        );
    }

    #[test]
    fn histogram_buckets_are_cumulative_in_seconds() {
        let mut h = LatencyHistogram::new();
        for us in [50, 300, 2_000, 2_000_000] {
            h.record(us);
        }
        let mut out = String::new();
        histogram(&mut out, "x", "run=\"r\"", &h);
        assert!(
            out.contains("x_bucket{run=\"r\",le=\"0.0001\"} 1\n"),
            "{out}"
        );
        assert!(
            out.contains("x_bucket{run=\"r\",le=\"0.0005\"} 2\n"),
            "{out}"
        );
        assert!(
            out.contains("x_bucket{run=\"r\",le=\"0.0025\"} 3\n"),
            "{out}"
        );
        assert!(out.contains("x_bucket{run=\"r\",le=\"2.5\"} 4\n"), "{out}");
        assert!(out.contains("x_bucket{run=\"r\",le=\"+Inf\"} 4\n"), "{out}");
        assert!(out.contains("x_count{run=\"r\"} 4\n"), "{out}");
        let sum: f64 = out
            .lines()
            .find_map(|l| l.strip_prefix("x_sum{run=\"r\"} "))
            .unwrap()
            .parse()
            .unwrap();
        assert!((sum - 2.00235).abs() < 0.01, "{sum}");
        let mut empty = String::new();
        histogram(&mut empty, "x", "", &LatencyHistogram::new());
        assert!(empty.contains("x_bucket{le=\"+Inf\"} 0\n"), "{empty}");
        assert!(empty.contains("x_sum 0\n"), "{empty}");
    }
}
