//! Opens the results store for a command, hands it records while the command runs, and
//! closes it with the run record and a report for the summary.

use std::sync::Arc;
use std::time::Duration;

use crate::summary::{RunSummary, StoreSection};
use anyhow::Context;
use iotload_core::args::StoreArgs;
use iotload_core::stamp::now_us;
use iotload_core::store::writer::{RecordSender, StoreWriter};
use iotload_core::store::{Backend, RunRecord};

/// The results store of one command, or nothing with `--store none`.
pub(crate) struct Recording {
    backend: Option<Arc<dyn Backend>>,
    writer: Option<StoreWriter>,
    run: RunRecord,
    url: String,
    pub(crate) raw: bool,
    /// Rows per instance instead of per topic (`--store-by instance`).
    pub(crate) by_instance: bool,
    pub(crate) lease: Duration,
}

impl Recording {
    /// Opens the store and writes the run record (end time 0 until `close`).
    pub(crate) async fn open(
        args: &StoreArgs,
        component: &str,
        broker: String,
        config: serde_json::Value,
    ) -> anyhow::Result<Self> {
        let run = RunRecord {
            run_id: args.run_id(),
            component: component.to_string(),
            instance: args.instance(),
            started_us: now_us(),
            ended_us: 0,
            tool_version: env!("CARGO_PKG_VERSION").to_string(),
            broker,
            config,
        };
        let mut this = Self {
            backend: None,
            writer: None,
            run,
            url: String::new(),
            raw: args.raw,
            by_instance: args.store_by == iotload_core::args::StoreBy::Instance,
            lease: args.lease,
        };
        if let Some(url) = args.url() {
            let backend = iotload_core::store::open(url)
                .await
                .context("opening the results store (--store none runs without one)")?;
            backend
                .put_run(&this.run)
                .await
                .context("writing the run record")?;
            this.url = backend.url().to_string();
            this.writer = Some(StoreWriter::spawn(
                backend.clone(),
                this.run.run_id.clone(),
                args.store_buffer,
            ));
            this.backend = Some(backend);
        }
        Ok(this)
    }

    /// Where records go, if there is a store.
    pub(crate) fn records(&self) -> Option<RecordSender> {
        self.writer.as_ref().map(StoreWriter::sender)
    }

    /// The store, for fleet coordination.
    pub(crate) fn backend(&self) -> Option<Arc<dyn Backend>> {
        self.backend.clone()
    }

    /// The run id.
    pub(crate) fn run_id(&self) -> &str {
        &self.run.run_id
    }

    /// This instance's name.
    pub(crate) fn instance(&self) -> &str {
        &self.run.instance
    }

    /// Adds a `--fleet` plan's device groups (names, device numbers, action topics) to
    /// the run record, so `iotload results show` can break the run down by group.
    pub(crate) async fn record_groups(&mut self, plan: &loadgen::LoadPlan) {
        if !plan.from_fleet_file {
            return;
        }
        if let serde_json::Value::Object(config) = &mut self.run.config {
            config.insert("groups".into(), plan.groups_record());
        }
        if let Some(backend) = &self.backend
            && let Err(e) = backend.put_run(&self.run).await
        {
            tracing::warn!("storing the device groups in the run record failed: {e}");
        }
    }

    /// The loadgen's view of the fleet.
    pub(crate) fn fleet(&self) -> loadgen::Fleet {
        loadgen::Fleet {
            store: self.backend(),
            records: self.records(),
            run_id: self.run.run_id.clone(),
            instance: self.run.instance.clone(),
            lease: self.lease,
            by_instance: self.by_instance,
        }
    }

    /// Flushes what is buffered (within `flush`), stores the end time, and reports in
    /// the summary.
    pub(crate) async fn close(mut self, summary: &mut RunSummary, flush: Duration) {
        let (Some(writer), Some(backend)) = (self.writer.take(), self.backend.take()) else {
            return;
        };
        let report = writer.finish(flush.max(Duration::from_secs(5))).await;
        self.run.ended_us = now_us();
        if let Err(e) = backend.put_run(&self.run).await {
            summary
                .warnings
                .push(format!("could not store the run's end time: {e}"));
        }
        let lost = report.dropped + report.unflushed;
        if lost > 0 {
            summary.warnings.push(format!(
                "{lost} result records were not stored ({} dropped with the buffer full, {} \
                 unwritten at exit; last error: {}); raise --store-buffer or check the store",
                report.dropped,
                report.unflushed,
                report.last_error.as_deref().unwrap_or("none")
            ));
        }
        summary.store = Some(StoreSection {
            url: self.url,
            run_id: self.run.run_id,
            instance: self.run.instance,
            seconds_written: report.seconds_written,
            raw_written: report.raw_written,
            dropped: report.dropped,
            unflushed: report.unflushed,
            failures: report.failures,
        });
    }
}
