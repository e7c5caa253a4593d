//! Prometheus: the stored runs' aggregates in the text exposition format, and the
//! `/metrics` endpoint (`--serve ADDR`) a Prometheus server scrapes.
//!
//! Names use the `iotload_` prefix, base units (seconds) and `_total` on counters. Every
//! series has a `run` label; the `topic` label only comes with `--per-topic-labels`, so
//! the number of series stays bounded by the number of runs unless asked otherwise.
//! Each scrape reads the store again, so a run still being recorded keeps growing.

use std::fmt::Write as _;
use std::future::Future;
use std::time::Duration;

use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;
use iotload_core::recorder::LatencyStats;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::aggregate::{Cell, RunAggregate};
use crate::metric_names::{self as names, Metric};
use crate::{PlotterArgs, PlotterError};

/// How one series reads its value: from a topic's cell, or from the whole run.
type Value = fn(&Series<'_>) -> u64;

/// The counters and gauges, with how to read them.
const VALUES: [(Metric, Value); 7] = [
    (names::MESSAGES_SENT, |s| s.cell.counts.sent),
    (names::MESSAGES_RECEIVED, |s| s.cell.counts.received),
    (names::SEQUENCE_GAPS, |s| s.cell.counts.gaps),
    (names::MESSAGES_LOST, |s| s.lost),
    (names::MESSAGES_DUPLICATE, |s| s.cell.counts.duplicates),
    (names::MESSAGES_REORDERED, |s| s.cell.counts.reordered),
    (names::MESSAGES_UNDECODABLE, |s| s.cell.counts.undecodable),
];

/// One labelled series: a run, or one topic of a run.
struct Series<'a> {
    labels: String,
    cell: &'a Cell,
    /// Lost, derived per topic and summed (see [`RunAggregate::lost`]).
    lost: u64,
}

/// The runs' aggregates as Prometheus text exposition (format 0.0.4).
pub fn exposition(runs: &[RunAggregate], per_topic: bool) -> String {
    let mut out = String::new();
    let mut all: Vec<Series<'_>> = Vec::new();
    for run in runs {
        let run_label = format!("run=\"{}\"", label_value(&run.run_id));
        if per_topic {
            all.extend(run.topics.iter().map(|(t, cell)| Series {
                labels: format!("{run_label},topic=\"{}\"", label_value(t)),
                cell,
                lost: cell.counts.lost(),
            }));
        } else {
            all.push(Series {
                labels: run_label,
                cell: &run.total,
                lost: run.lost(),
            });
        }
    }
    for (metric, get) in VALUES {
        metric.write_header(&mut out);
        for s in &all {
            let _ = writeln!(out, "{}{{{}}} {}", metric.name, s.labels, get(s));
        }
    }
    for (metric, corrected) in [
        (names::RUN_LATENCY, false),
        (names::RUN_LATENCY_CORRECTED, true),
    ] {
        metric.write_header(&mut out);
        let name = metric.name;
        for Series { labels, cell, .. } in &all {
            let s: LatencyStats = if corrected {
                cell.corrected.stats_ms()
            } else {
                cell.latency.stats_ms()
            };
            for (q, v) in [
                ("0.5", s.p50),
                ("0.9", s.p90),
                ("0.99", s.p99),
                ("0.999", s.p999),
                ("1", s.max),
            ] {
                let _ = writeln!(out, "{name}{{{labels},quantile=\"{q}\"}} {}", v / 1000.0);
            }
            let sum = s.mean * s.count as f64 / 1000.0;
            let _ = writeln!(out, "{name}_sum{{{labels}}} {sum}");
            let _ = writeln!(out, "{name}_count{{{labels}}} {}", s.count);
        }
    }
    names::RUN_DURATION.write_header(&mut out);
    for run in runs {
        let _ = writeln!(
            out,
            "{}{{run=\"{}\"}} {}",
            names::RUN_DURATION.name,
            label_value(&run.run_id),
            run.span_s()
        );
    }
    out
}

/// Escapes a label value: backslash, double quote and newline.
pub fn label_value(text: &str) -> String {
    text.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// Serves `/metrics` on `listener` until `stop` completes.
pub async fn serve(
    args: &PlotterArgs,
    listener: TcpListener,
    stop: impl Future<Output = ()>,
) -> Result<(), PlotterError> {
    let store = iotload_core::store::open(&args.store).await?;
    let store = store.as_ref();
    serve_exposition(listener, stop, || async move {
        read_runs(args, store)
            .await
            .map(|runs| exposition(&runs, args.per_topic_labels))
            .map_err(|e| e.to_string())
    })
    .await;
    Ok(())
}

/// How long a client may take to send its request before the connection is closed.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// The most connections answered at once; more are closed at once.
const MAX_CONNECTIONS: usize = 64;

/// Serves what `body` renders at `/metrics` on `listener` until `stop` completes.
/// Connections are answered concurrently (up to 64 at once), and one that sends
/// no request within 10 s is closed, so an idle or slow client never holds
/// up a scrape. An `Err` from `body` is answered with 503 and its text. Shared by the
/// plotter and the components' live `--metrics-addr`.
pub async fn serve_exposition<F>(
    listener: TcpListener,
    stop: impl Future<Output = ()>,
    body: impl Fn() -> F,
) where
    F: Future<Output = Result<String, String>>,
{
    tokio::pin!(stop);
    let mut connections = FuturesUnordered::new();
    loop {
        tokio::select! {
            _ = &mut stop => return,
            accepted = listener.accept() => match accepted {
                Ok((socket, _)) if connections.len() < MAX_CONNECTIONS => {
                    connections.push(answer(socket, &body));
                }
                Ok(_) => tracing::warn!(
                    "more than {MAX_CONNECTIONS} /metrics connections at once: closing one"
                ),
                Err(e) => tracing::warn!("accepting a /metrics connection: {e}"),
            },
            Some(answered) = connections.next(), if !connections.is_empty() => {
                if let Err(e) = answered {
                    tracing::warn!("answering a /metrics request: {e}");
                }
            }
        }
    }
}

/// Answers one request; `body` renders the exposition (only called for `/metrics`).
async fn answer<F>(mut socket: TcpStream, body: &impl Fn() -> F) -> std::io::Result<()>
where
    F: Future<Output = Result<String, String>>,
{
    let mut request = Vec::new();
    let mut buf = [0u8; 2048];
    let read_request = async {
        while !request.windows(4).any(|w| w == b"\r\n\r\n") && request.len() < 16 * 1024 {
            let n = socket.read(&mut buf).await?;
            if n == 0 {
                break;
            }
            request.extend_from_slice(&buf[..n]);
        }
        Ok::<_, std::io::Error>(())
    };
    match tokio::time::timeout(REQUEST_TIMEOUT, read_request).await {
        Ok(read) => read?,
        Err(_) => {
            return Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                format!("no request within {REQUEST_TIMEOUT:?}"),
            ));
        }
    }
    let line = String::from_utf8_lossy(&request);
    let path = line.split_whitespace().nth(1).unwrap_or("");
    let (status, kind, text) = if path == "/metrics" || path.starts_with("/metrics?") {
        match body().await {
            Ok(text) => ("200 OK", "text/plain; version=0.0.4; charset=utf-8", text),
            Err(e) => (
                "503 Service Unavailable",
                "text/plain; charset=utf-8",
                format!("{e}\n"),
            ),
        }
    } else {
        (
            "404 Not Found",
            "text/plain; charset=utf-8",
            "iotload: see /metrics\n".to_string(),
        )
    };
    let head = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {kind}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        text.len()
    );
    socket.write_all(head.as_bytes()).await?;
    socket.write_all(text.as_bytes()).await?;
    socket.shutdown().await
}

async fn read_runs(
    args: &PlotterArgs,
    store: &dyn iotload_core::store::Store,
) -> Result<Vec<RunAggregate>, PlotterError> {
    let records = store.runs().await?;
    let ids = crate::resolve_runs(store.url(), &records, &args.runs)?;
    let mut runs = Vec::new();
    for id in ids {
        runs.push(crate::run_aggregate(store, &id).await?);
    }
    Ok(runs)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::aggregate::aggregate;
    use iotload_core::recorder::{SecondSamples, second_scratch};
    use iotload_core::store::TopicSecond;

    fn agg() -> RunAggregate {
        let mut samples = SecondSamples::default();
        samples.record(2_000, 3_000);
        let (latency_hdr, corrected_hdr) = samples.take_encoded(&mut second_scratch());
        let rows = ["a", "b\"x"]
            .iter()
            .map(|t| TopicSecond {
                run_id: "r1".into(),
                topic: (*t).into(),
                second: 100,
                instance: "i".into(),
                sent: 3,
                received: 2,
                gaps: 1,
                duplicates: 1,
                latency_hdr: latency_hdr.clone(),
                corrected_hdr: corrected_hdr.clone(),
                ..TopicSecond::default()
            })
            .collect();
        aggregate::<crate::aggregate::AggregateError>("r1", rows, |_| Ok(())).unwrap()
    }

    #[test]
    fn totals_are_exposed_per_run_in_base_units() {
        let text = exposition(&[agg()], false);
        assert!(text.contains("# TYPE iotload_messages_received_total counter"));
        assert!(
            text.contains("iotload_messages_received_total{run=\"r1\"} 4\n"),
            "{text}"
        );
        assert!(text.contains("iotload_sequence_gaps_total{run=\"r1\"} 2\n"));
        // Each topic: 3 sent, 2 received of which 1 a duplicate: 2 lost.
        assert!(text.contains("# TYPE iotload_messages_lost gauge"));
        assert!(
            text.contains("iotload_messages_lost{run=\"r1\"} 4\n"),
            "{text}"
        );
        assert!(text.contains("iotload_run_latency_seconds_count{run=\"r1\"} 2\n"));
        let p50: f64 = text
            .lines()
            .find(|l| l.starts_with("iotload_run_latency_seconds{run=\"r1\",quantile=\"0.5\"}"))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
            .unwrap();
        assert!((p50 - 0.002).abs() < 0.0001, "{p50}");
        assert!(!text.contains("topic="));
    }

    #[test]
    fn topic_labels_only_on_request_and_escaped() {
        let text = exposition(&[agg()], true);
        assert!(
            text.contains("iotload_messages_sent_total{run=\"r1\",topic=\"b\\\"x\"} 3\n"),
            "{text}"
        );
    }
}
