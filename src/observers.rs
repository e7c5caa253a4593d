//! Everything that watches a running component without slowing it down: the progress line,
//! live `/metrics`, the live page and the `--abort-on-fail` check; and, at the end, the
//! threshold verdicts that go into the summary and the exit code.

use crate::summary::RunSummary;
use crate::threshold::{Needs, check_all};
use anyhow::{Context, anyhow};
use tokio_util::sync::CancellationToken;

use crate::cli::OutputArgs;
use crate::live_page::{LivePage, PageInfo};
use crate::metrics::MetricsEndpoint;
use crate::outcome::{Outcome, finish};
use crate::progress::{Progress, Sources};
use crate::threshold_watch::ThresholdWatch;

/// Rejects thresholds that `component` has no numbers for, before anything connects.
pub(crate) fn check_thresholds(output: &OutputArgs, component: &str) -> anyhow::Result<()> {
    let (load, receive) = match component {
        "run" => (true, true),
        "loadgen" => (true, false),
        "collector" => (false, true),
        _ => (false, false),
    };
    for t in &output.threshold {
        let (ok, side) = match t.needs() {
            Needs::Load => (
                load,
                "the devices' numbers (`iotload loadgen` or `iotload run`)",
            ),
            Needs::Receive => (
                receive,
                "the collector's numbers (`iotload collector` or `iotload run`)",
            ),
        };
        if !ok {
            return Err(anyhow!(
                "--threshold '{t}' needs {side}; `iotload {component}` does not measure it"
            ));
        }
    }
    if output.abort_on_fail && output.threshold.is_empty() {
        return Err(anyhow!(
            "--abort-on-fail needs at least one --threshold (e.g. --threshold 'p99<50ms')"
        ));
    }
    Ok(())
}

/// Who the page and the summary are about.
pub(crate) struct About<'a> {
    pub(crate) component: &'a str,
    pub(crate) broker: String,
    pub(crate) run_id: Option<&'a str>,
}

/// The running observers of one component.
pub(crate) struct Observers {
    progress: Option<Progress>,
    metrics: Option<MetricsEndpoint>,
    page: Option<LivePage>,
    watch: Option<ThresholdWatch>,
    aborted_by: Option<String>,
}

impl Observers {
    /// Starts what `output` asks for; `stop_sending` is what `--abort-on-fail` cancels.
    pub(crate) async fn start(
        output: &OutputArgs,
        sources: Sources,
        about: About<'_>,
        stop_sending: &CancellationToken,
    ) -> anyhow::Result<Self> {
        let metrics = MetricsEndpoint::start(output, &sources, about.run_id).await?;
        let page = match &output.ui {
            Some(addr) => Some(
                LivePage::start(
                    addr,
                    &sources,
                    PageInfo {
                        component: about.component.to_string(),
                        broker: about.broker,
                        run_id: about.run_id.map(str::to_string),
                        thresholds: output.threshold.iter().map(|t| t.to_string()).collect(),
                        version: env!("CARGO_PKG_VERSION"),
                        source: "process",
                        store: None,
                    },
                )
                .await
                .context("starting the live page")?,
            ),
            None => None,
        };
        let watch = if output.abort_on_fail {
            ThresholdWatch::start(&output.threshold, &sources, stop_sending.clone())
        } else {
            None
        };
        let progress = Some(Progress::start(&output.progress, sources));
        Ok(Self {
            progress,
            metrics,
            page,
            watch,
            aborted_by: None,
        })
    }

    /// Stops watching once the components have stopped (the page keeps serving until
    /// [`Observers::finish`]).
    pub(crate) async fn stop(&mut self) {
        if let Some(p) = self.progress.take() {
            p.stop().await;
        }
        MetricsEndpoint::stop(self.metrics.take()).await;
        if let Some(w) = self.watch.take() {
            self.aborted_by = w.stop().await;
        }
        if let Some(page) = &mut self.page {
            page.stop_sampling().await;
        }
    }

    /// Adds the threshold verdicts to the summary, prints it, writes the JSON, shows it
    /// on the live page and closes the page.
    pub(crate) async fn finish(
        mut self,
        summary: &mut RunSummary,
        output: &OutputArgs,
    ) -> anyhow::Result<Outcome> {
        self.stop().await;
        summary.thresholds = check_all(&output.threshold, summary);
        for r in &mut summary.thresholds {
            if self.aborted_by.as_deref() == Some(r.threshold.as_str()) {
                // It failed during the run, whatever the final totals say.
                r.aborted_run = true;
                r.passed = false;
            }
        }
        if self.aborted_by.is_some() {
            summary
                .warnings
                .push("a threshold failed during the run and --abort-on-fail stopped it".into());
        }
        let outcome = finish(summary, output);
        if let Some(page) = self.page.take() {
            page.finish(&summary.to_json()).await;
        }
        outcome
    }
}
