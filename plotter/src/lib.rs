//! The plotter: reads stored results (SQLite or Redis), aggregates them per second and per
//! topic, and writes them where people look at them: JSON Lines documents (`--jsonl`, the
//! documents the Elasticsearch output indexes) and a self-contained HTML report
//! (`--html`), which compares runs side by side when given several, and Prometheus
//! metrics (`--serve ADDR`).
//!
//! [`mod@aggregate`] does the arithmetic, [`document`] defines the per-second documents,
//! [`report`] and its charts render the HTML; [`run`] ties them to the options.

#![warn(missing_docs)]

pub mod aggregate;
pub mod charts;
pub mod document;
pub mod elasticsearch;
pub mod export;
pub mod metric_names;
pub mod prometheus;
pub mod report;

use std::path::{Path, PathBuf};

use clap::Args;
use iotload_core::store::{RunExtent, RunRecord, Store, StoreError, TopicSecond};

use crate::aggregate::{AggregateError, RunAggregator};
use crate::charts::ChartError;
use crate::document::Document;
use crate::elasticsearch::{BulkDocument, ElasticsearchArgs, ElasticsearchError, Shipper};
use crate::export::Exports;
use crate::report::RunReport;

/// Options of `iotload plotter`.
#[derive(Debug, Clone, Args)]
pub struct PlotterArgs {
    /// The results store to read: sqlite://FILE, redis://HOST:PORT/DB, rediss://… (TLS)
    /// or redis+cluster://HOST1:PORT1,HOST2:PORT2/ (Redis Cluster; docs/store.md).
    #[arg(
        long,
        env = "IOTLOAD_STORE",
        value_name = "URL",
        default_value = "sqlite://iotload-results.db"
    )]
    pub store: String,

    /// Run to read, or `latest`; repeat (or separate with commas) to compare runs side by
    /// side, the first being the baseline.
    #[arg(
        long = "run",
        env = "IOTLOAD_RUN",
        value_name = "RUN",
        default_value = "latest",
        value_delimiter = ','
    )]
    pub runs: Vec<String>,

    /// Write one JSON document per second and topic of each run to this file (JSON Lines,
    /// for Filebeat or Logstash); the fields are in docs/plotter.md.
    #[arg(long, env = "IOTLOAD_JSONL", value_name = "PATH")]
    pub jsonl: Option<PathBuf>,

    /// Write the same rows as CSV (one per second and topic, latency fields flattened, e.g.
    /// latency_p99_ms); the columns are in docs/plotter.md.
    #[arg(long, env = "IOTLOAD_CSV", value_name = "PATH")]
    pub csv: Option<PathBuf>,

    /// Write an HdrHistogram interval log: one raw and one corrected latency histogram
    /// per second (all topics merged), values in microseconds, for HistogramLogAnalyzer
    /// and other HdrHistogram tools.
    #[arg(long, env = "IOTLOAD_HLOG", value_name = "PATH")]
    pub hlog: Option<PathBuf>,

    /// Write a self-contained HTML report (charts, per-topic table, configuration) to this
    /// file; it opens offline.
    #[arg(long, env = "IOTLOAD_HTML", value_name = "PATH")]
    pub html: Option<PathBuf>,

    /// Serve Prometheus metrics of the runs at http://ADDR/metrics (e.g. 0.0.0.0:9464)
    /// until Ctrl-C; each scrape reads the store again.
    #[arg(long, env = "IOTLOAD_SERVE", value_name = "ADDR")]
    pub serve: Option<String>,

    /// Serve a live page of the run at http://ADDR/ until Ctrl-C (e.g. 127.0.0.1:8080):
    /// latency and throughput per second from the store, read again each second while
    /// the run is recorded, per-topic detail on demand. With `--run latest` (the default)
    /// it waits for a first run and moves on to each newer one; with several --run, it
    /// shows the first.
    #[arg(long, env = "IOTLOAD_UI", value_name = "ADDR")]
    pub ui: Option<String>,

    /// With --serve, label every series with its topic too (one series per topic: mind
    /// Prometheus' cardinality with thousands of topics).
    #[arg(long, env = "IOTLOAD_PER_TOPIC_LABELS")]
    pub per_topic_labels: bool,

    /// The Elasticsearch output.
    #[command(flatten)]
    pub es: ElasticsearchArgs,
}

/// What can go wrong in the plotter.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PlotterError {
    /// No output was asked for.
    #[error(
        "nothing to do: give --html FILE, --elasticsearch URL, --jsonl FILE, --csv FILE, \
         --hlog FILE, --serve ADDR and/or --ui ADDR"
    )]
    NothingToDo,
    /// The Elasticsearch output failed.
    #[error(transparent)]
    Elasticsearch(#[from] ElasticsearchError),
    /// A document cannot be encoded (never expected).
    #[error("cannot encode a document: {0}")]
    Encode(String),
    /// Aggregation stopped because an output failed (that output's error is reported).
    #[error("stopped because an output failed")]
    Stopped,
    /// The store failed or lacks the run.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// `latest` was asked for in an empty store.
    #[error("{url} holds no runs yet; record one with `iotload run`")]
    NoRuns {
        /// The store URL (password redacted).
        url: String,
    },
    /// Stored data cannot be decoded.
    #[error("stored results cannot be read: {0}")]
    Aggregate(#[from] AggregateError),
    /// An output file cannot be written.
    #[error("cannot write {}: {source}", path.display())]
    Write {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A chart cannot be drawn.
    #[error(transparent)]
    Chart(#[from] ChartError),
}

/// What one run contributed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunOutput {
    /// Run id.
    pub run_id: String,
    /// Seconds its series span.
    pub seconds: u64,
    /// Topics.
    pub topics: usize,
    /// Documents made (one per second and topic; 0 without --jsonl, --csv or
    /// --elasticsearch).
    pub documents: u64,
    /// Documents indexed into Elasticsearch (0 without --elasticsearch).
    pub indexed: u64,
}

/// Reads the runs `args` names and writes the outputs it asks for.
pub async fn run(args: &PlotterArgs) -> Result<Vec<RunOutput>, PlotterError> {
    let files = args.jsonl.is_some() || args.csv.is_some() || args.hlog.is_some();
    let es = args.es.elasticsearch.is_some();
    if !files && !es && args.html.is_none() {
        if args.serve.is_some() || args.ui.is_some() {
            return Ok(Vec::new());
        }
        return Err(PlotterError::NothingToDo);
    }
    let store = iotload_core::store::open(&args.store).await?;
    let records = store.runs().await?;
    let ids = resolve_runs(store.url(), &records, &args.runs)?;
    let mut shipper = match es {
        true => Some(Shipper::connect(&args.es).await?),
        false => None,
    };
    let mut exports = Some(Exports::create(
        args.jsonl.as_deref(),
        args.csv.as_deref(),
        args.hlog.as_deref(),
    )?);
    let mut outputs = Vec::new();
    let mut reports = Vec::new();
    for id in ids {
        let indexed_before = shipper.as_ref().map_or(0, Shipper::indexed);
        let (aggregate, documents, back) = aggregate_run(
            store.as_ref(),
            &id,
            exports.take(),
            shipper.as_mut(),
            &args.es,
        )
        .await?;
        exports = back;
        outputs.push(RunOutput {
            run_id: id.clone(),
            seconds: aggregate.span_s(),
            topics: aggregate.topics.len(),
            documents,
            indexed: shipper.as_ref().map_or(0, Shipper::indexed) - indexed_before,
        });
        let run_records = records.iter().filter(|r| r.run_id == id).cloned().collect();
        if args.html.is_some() {
            reports.push(RunReport {
                aggregate,
                records: run_records,
            });
        }
    }
    if let Some(e) = exports {
        e.finish()?;
    }
    if let Some(path) = &args.html {
        let generated = chrono::Utc::now()
            .format("%Y-%m-%d %H:%M:%S UTC")
            .to_string();
        let html = report::render(&reports, &generated)?;
        std::fs::write(path, html).map_err(|e| write_error(path, e))?;
    }
    Ok(outputs)
}

/// How many stored rows a reader holds at once: one time slice of a run, so memory does
/// not grow with the run's length (about 0.5 KB a row; a slice spans this many
/// topic-seconds, at least one second and at most an hour).
pub const ROWS_PER_SLICE: u64 = 20_000;

/// Reads one run slice by slice and aggregates it on a blocking thread, writing its
/// cells to the export files there and handing documents to the Elasticsearch shipper
/// here, so reading, aggregation and indexing overlap and memory stays bounded by a slice
/// and a bulk batch.
async fn aggregate_run(
    store: &dyn Store,
    id: &str,
    mut exports: Option<Exports>,
    shipper: Option<&mut Shipper>,
    es: &ElasticsearchArgs,
) -> Result<(aggregate::RunAggregate, u64, Option<Exports>), PlotterError> {
    let extent = store.extent(id).await?;
    let (tx, mut rx) = tokio::sync::mpsc::channel::<BulkDocument>(4096);
    // One slice read ahead while the previous one is aggregated.
    let (slice_tx, mut slice_rx) = tokio::sync::mpsc::channel::<(Vec<TopicSecond>, u64)>(1);
    let want_es = shipper.is_some();
    let prefix = es.elasticsearch_index.clone();
    let run_id = id.to_string();
    let task_extent = extent.clone();
    let task = tokio::task::spawn_blocking(move || {
        let mut documents = 0u64;
        let want_files = exports.as_ref().is_some_and(Exports::any);
        let mut progress = Progress::new(&run_id, task_extent.as_ref());
        let mut run = RunAggregator::new(&run_id, task_extent.as_ref());
        while let Some((rows, to)) = slice_rx.blocking_recv() {
            run.add_slice::<PlotterError>(rows, to, |cell| {
                progress.at(cell.second);
                if !want_files && !want_es {
                    return Ok(());
                }
                let json = serde_json::to_string(&Document::new(&run_id, &cell))
                    .map_err(|e| PlotterError::Encode(e.to_string()))?;
                if let Some(x) = exports.as_mut() {
                    x.cell(&run_id, &cell, &json)?;
                }
                if want_es {
                    let doc = BulkDocument::new(&prefix, &run_id, cell.second, cell.topic, json);
                    // A closed channel means the shipper failed; its error is the one reported.
                    tx.blocking_send(doc).map_err(|_| PlotterError::Stopped)?;
                }
                documents += 1;
                Ok(())
            })?;
        }
        drop(tx);
        if let Some(x) = exports.as_mut() {
            x.end_run(&run_id)?;
        }
        Ok::<_, PlotterError>((run.finish(), documents, exports))
    });
    let read = async {
        for (from, to) in extent.iter().flat_map(|x| x.slices(ROWS_PER_SLICE)) {
            let rows = store.seconds_between(id, from, to).await?;
            if slice_tx.send((rows, to)).await.is_err() {
                // The aggregation stopped; its error is the one reported.
                break;
            }
        }
        drop(slice_tx);
        Ok::<(), PlotterError>(())
    };
    let ship = async {
        let Some(s) = shipper else {
            return Ok(());
        };
        let shipped = async {
            while let Some(doc) = rx.recv().await {
                s.push(doc).await?;
            }
            s.flush().await
        }
        .await;
        // On failure the aggregation stops at its next document.
        drop(rx);
        shipped.map_err(PlotterError::from)
    };
    let (read, ship) = tokio::join!(read, ship);
    let aggregated = task
        .await
        .map_err(|e| PlotterError::Encode(format!("aggregation thread failed: {e}")));
    read?;
    ship?;
    aggregated?
}

/// A line on stderr every 5 s while a long run is aggregated (short runs stay silent).
struct Progress<'a> {
    run_id: &'a str,
    first: u64,
    span: u64,
    started: std::time::Instant,
    next: std::time::Duration,
}

impl<'a> Progress<'a> {
    const EVERY: std::time::Duration = std::time::Duration::from_secs(5);

    fn new(run_id: &'a str, extent: Option<&RunExtent>) -> Self {
        let (first, last) = extent.map_or((0, 0), |x| (x.first, x.last));
        Self {
            run_id,
            first,
            span: last.saturating_sub(first) + 1,
            started: std::time::Instant::now(),
            next: Self::EVERY,
        }
    }

    /// Called for each cell; prints when the next report is due.
    fn at(&mut self, second: u64) {
        let elapsed = self.started.elapsed();
        if elapsed < self.next {
            return;
        }
        self.next = elapsed + Self::EVERY;
        let done = second.saturating_sub(self.first);
        eprintln!(
            "plotter: run {}: {done} of {} s aggregated ({:.0} %, {:.0} s so far)",
            self.run_id,
            self.span,
            done as f64 * 100.0 / self.span as f64,
            elapsed.as_secs_f64()
        );
    }
}

/// The run ids `wanted` names, `latest` being the newest run of `records` (newest first).
pub fn resolve_runs(
    url: &str,
    records: &[RunRecord],
    wanted: &[String],
) -> Result<Vec<String>, PlotterError> {
    wanted
        .iter()
        .map(|w| match w.trim() {
            "latest" => records
                .first()
                .map(|r| r.run_id.clone())
                .ok_or_else(|| PlotterError::NoRuns { url: url.into() }),
            id if records.iter().any(|r| r.run_id == id) => Ok(id.to_string()),
            id => Err(PlotterError::Store(StoreError::NoSuchRun {
                url: url.into(),
                run: id.to_string(),
            })),
        })
        .collect()
}

/// Every per-topic total of one run, as `iotload results show` prints them.
pub async fn run_aggregate(
    store: &dyn Store,
    run_id: &str,
) -> Result<aggregate::RunAggregate, PlotterError> {
    let extent = store.extent(run_id).await?;
    let mut run = RunAggregator::new(run_id, extent.as_ref());
    for (from, to) in extent.iter().flat_map(|x| x.slices(ROWS_PER_SLICE)) {
        let rows = store.seconds_between(run_id, from, to).await?;
        run.add_slice::<PlotterError>(rows, to, |_| Ok(()))?;
    }
    Ok(run.finish())
}

pub(crate) fn write_error(path: &Path, source: std::io::Error) -> PlotterError {
    PlotterError::Write {
        path: path.to_path_buf(),
        source,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(id: &str) -> RunRecord {
        RunRecord {
            run_id: id.into(),
            component: "run".into(),
            instance: "i".into(),
            started_us: 0,
            ended_us: 0,
            tool_version: String::new(),
            broker: String::new(),
            config: serde_json::Value::Null,
        }
    }

    #[test]
    fn latest_is_the_newest_run_and_unknown_runs_are_named() {
        let records = [record("new"), record("old")];
        let ids = resolve_runs("u", &records, &["latest".into(), "old".into()]).unwrap();
        assert_eq!(ids, ["new", "old"]);
        let err = resolve_runs("u", &records, &["nope".into()]).unwrap_err();
        assert!(err.to_string().contains("no run `nope`"), "{err}");
        let err = resolve_runs("u", &[], &["latest".into()]).unwrap_err();
        assert!(err.to_string().contains("holds no runs"), "{err}");
    }

    #[tokio::test]
    async fn nothing_to_do_without_an_output() {
        let args = PlotterArgs {
            store: "sqlite://unused.db".into(),
            runs: vec!["latest".into()],
            jsonl: None,
            csv: None,
            hlog: None,
            html: None,
            serve: None,
            ui: None,
            per_topic_labels: false,
            es: ElasticsearchArgs {
                elasticsearch: None,
                elasticsearch_index: "iotload".into(),
                elasticsearch_api_key: None,
                elasticsearch_batch: 10,
                elasticsearch_retries: 0,
            },
        };
        assert!(matches!(run(&args).await, Err(PlotterError::NothingToDo)));
    }
}
