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
pub mod prometheus;
pub mod report;

use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use clap::Args;
use iotload_core::store::{RunRecord, Store, StoreError};

use crate::aggregate::{AggregateError, aggregate};
use crate::charts::ChartError;
use crate::document::Document;
use crate::report::RunReport;

/// Options of `iotload plotter`.
#[derive(Debug, Clone, Args)]
pub struct PlotterArgs {
    /// The results store to read: sqlite://FILE or redis://HOST:PORT/DB.
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

    /// Write a self-contained HTML report (charts, per-topic table, configuration) to this
    /// file; it opens offline.
    #[arg(long, env = "IOTLOAD_HTML", value_name = "PATH")]
    pub html: Option<PathBuf>,

    /// Serve Prometheus metrics of the runs at http://ADDR/metrics (e.g. 0.0.0.0:9464)
    /// until Ctrl-C; each scrape reads the store again.
    #[arg(long, env = "IOTLOAD_SERVE", value_name = "ADDR")]
    pub serve: Option<String>,

    /// With --serve, label every series with its topic too (one series per topic: mind
    /// Prometheus' cardinality with thousands of topics).
    #[arg(long, env = "IOTLOAD_PER_TOPIC_LABELS")]
    pub per_topic_labels: bool,
}

/// What can go wrong in the plotter.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PlotterError {
    /// No output was asked for.
    #[error("nothing to do: give --jsonl FILE, --html FILE and/or --serve ADDR")]
    NothingToDo,
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
    /// JSON Lines documents written (0 without --jsonl).
    pub documents: u64,
}

/// Reads the runs `args` names and writes the outputs it asks for.
pub async fn run(args: &PlotterArgs) -> Result<Vec<RunOutput>, PlotterError> {
    if args.jsonl.is_none() && args.html.is_none() {
        if args.serve.is_some() {
            return Ok(Vec::new());
        }
        return Err(PlotterError::NothingToDo);
    }
    let store = iotload_core::store::open(&args.store).await?;
    let records = store.runs().await?;
    let ids = resolve_runs(store.url(), &records, &args.runs)?;
    let mut jsonl = match &args.jsonl {
        Some(path) => Some((
            path.as_path(),
            BufWriter::new(std::fs::File::create(path).map_err(|e| write_error(path, e))?),
        )),
        None => None,
    };
    let mut outputs = Vec::new();
    let mut reports = Vec::new();
    for id in ids {
        let rows = store.seconds(&id).await?;
        let mut documents = 0u64;
        let aggregate = aggregate::<PlotterError>(&id, rows, |cell| {
            if let Some((path, out)) = jsonl.as_mut() {
                let line = serde_json::to_string(&Document::new(&id, &cell))
                    .map_err(|e| write_error(path, e.into()))?;
                out.write_all(line.as_bytes())
                    .and_then(|()| out.write_all(b"\n"))
                    .map_err(|e| write_error(path, e))?;
                documents += 1;
            }
            Ok(())
        })?;
        outputs.push(RunOutput {
            run_id: id.clone(),
            seconds: aggregate.span_s(),
            topics: aggregate.topics.len(),
            documents,
        });
        let run_records = records.iter().filter(|r| r.run_id == id).cloned().collect();
        if args.html.is_some() {
            reports.push(RunReport {
                aggregate,
                records: run_records,
            });
        }
    }
    if let Some((path, mut out)) = jsonl {
        out.flush().map_err(|e| write_error(path, e))?;
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
    let rows = store.seconds(run_id).await?;
    aggregate::<PlotterError>(run_id, rows, |_| Ok(()))
}

fn write_error(path: &Path, source: std::io::Error) -> PlotterError {
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
            html: None,
            serve: None,
            per_topic_labels: false,
        };
        assert!(matches!(run(&args).await, Err(PlotterError::NothingToDo)));
    }
}
