//! The components run on their own (`iotload loadgen`, `echo-ipaas`, `collector`), one
//! container each in a deployment: connect, run until the plan ends or a signal, summarise.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::summary::RunSummary;
use anyhow::{Context, anyhow};
use iotload_core::shutdown::Shutdown;
use iotload_core::transport::Transport;
use tokio_util::sync::CancellationToken;

use crate::cli::OutputArgs;
use crate::observers::{About, Observers};
use crate::outcome::{Outcome, started_at};
use crate::progress::Sources;
use crate::recording::Recording;
use crate::summary_build::{echo_section, load_section, receive_section};

pub(crate) async fn run_loadgen<T: Transport>(
    transport: Arc<T>,
    plan: loadgen::LoadPlan,
    rec: Recording,
    output: &OutputArgs,
    shutdown: Shutdown,
) -> anyhow::Result<Outcome> {
    let started = started_at();
    let clock = Instant::now();
    let stats = Arc::new(loadgen::LoadStats::new(plan.devices));
    let sources = Sources {
        load: Some(stats.clone()),
        ..Sources::default()
    };
    let about = About {
        component: "loadgen",
        broker: transport.url().to_string(),
        run_id: Some(rec.run_id()),
    };
    let mut observers = Observers::start(output, sources, about, shutdown.produce()).await?;
    let report = loadgen::run(
        transport.clone(),
        &plan,
        &rec.fleet(),
        stats,
        shutdown.produce().clone(),
    )
    .await;
    observers.stop().await;
    let report = report.context("running the devices")?;
    let mut warnings = Vec::new();
    let mut summary = RunSummary::new("loadgen", transport.url().to_string(), started);
    summary.interrupted = shutdown.interrupted();
    summary.load = Some(load_section(&plan, &report, &mut warnings));
    if plan.from_fleet_file {
        summary.groups = crate::summary_build::group_sections(&plan, &report, None);
    }
    summary.elapsed_s = clock.elapsed().as_secs_f64();
    summary.warnings = warnings;
    rec.close(&mut summary, output.drain_timeout).await;
    observers.finish(&mut summary, output).await
}

pub(crate) async fn run_echo<F: Transport, T: Transport>(
    from: Arc<F>,
    to: Arc<T>,
    plan: echo_ipaas::EchoPlan,
    duration: Option<Duration>,
    output: &OutputArgs,
    shutdown: Shutdown,
) -> anyhow::Result<Outcome> {
    let started = started_at();
    let clock = Instant::now();
    let conns = echo_ipaas::connect(from.as_ref(), to.as_ref(), &plan)
        .await
        .context("connecting the echo iPaaS")?;
    eprintln!(
        "echo-ipaas: {:?} → {}; Ctrl-C to stop",
        plan.from,
        plan.route_text()
    );
    let stats = Arc::new(echo_ipaas::EchoStats::default());
    let stop = shutdown.produce().clone();
    if let Some(d) = duration {
        let stop = stop.clone();
        tokio::spawn(async move {
            tokio::time::sleep(d).await;
            stop.cancel();
        });
    }
    let sources = Sources {
        echo: Some(stats.clone()),
        ..Sources::default()
    };
    let about = About {
        component: "echo-ipaas",
        broker: bridge_label(from.url(), to.url()),
        run_id: None,
    };
    let mut observers = Observers::start(output, sources, about, &stop).await?;
    echo_ipaas::serve::<F, T>(conns, &plan, stats.clone(), stop).await;
    observers.stop().await;
    let mut summary = RunSummary::new("echo-ipaas", bridge_label(from.url(), to.url()), started);
    summary.interrupted = shutdown.interrupted();
    summary.echo = Some(echo_section(&stats, &plan));
    summary.elapsed_s = clock.elapsed().as_secs_f64();
    observers.finish(&mut summary, output).await
}

/// The broker a summary names: one URL, or `FROM -> TO` when the echo bridges two.
pub(crate) fn bridge_label(
    from: &iotload_core::plan::BrokerUrl,
    to: &iotload_core::plan::BrokerUrl,
) -> String {
    if from == to {
        from.to_string()
    } else {
        format!("{from} -> {to}")
    }
}

pub(crate) async fn run_collector<T: Transport>(
    transport: Arc<T>,
    mut plan: collector::CollectPlan,
    rec: Recording,
    claim: Option<(usize, Duration)>,
    output: &OutputArgs,
    shutdown: Shutdown,
) -> anyhow::Result<Outcome> {
    let started = started_at();
    let clock = Instant::now();
    let claims_stop = CancellationToken::new();
    let mut claims_task = None;
    if let Some((n, timeout)) = claim {
        let store = rec.backend().ok_or_else(|| {
            anyhow!("--claim needs a results store shared with the loadgens (--store redis://...)")
        })?;
        eprintln!(
            "collector: claiming {n} advertised topics (up to {} s)",
            timeout.as_secs()
        );
        let topics = collector::claims::claim_topics(
            &store,
            n,
            rec.instance(),
            rec.lease,
            timeout,
            shutdown.produce(),
        )
        .await
        .context("claiming topics")?;
        if topics.is_empty() && shutdown.interrupted() {
            eprintln!("collector: interrupted before any advertised topic was claimed");
            return Ok(Outcome {
                interrupted: true,
                ..Outcome::ok()
            });
        }
        if topics.is_empty() {
            return Err(anyhow!(
                "no advertised topic could be claimed within {} s: start loadgens with \
                 --advertise and the same --store, or raise --claim-timeout",
                timeout.as_secs()
            ));
        }
        plan.filters = topics.clone();
        claims_task = Some(collector::claims::keep_claims(
            store,
            topics,
            rec.instance().to_string(),
            rec.lease,
            claims_stop.clone(),
        ));
    }
    let subscriber = collector::subscribe(transport.as_ref(), &plan)
        .await
        .context("connecting the collector")?;
    if let Some(store) = rec.backend() {
        // Tell loadgens waiting with --wait-for that this collector is subscribed.
        store
            .join_barrier(rec.run_id(), rec.instance())
            .await
            .context("joining the start barrier")?;
    }
    eprintln!("collector: listening on {:?}", plan.filters);
    let live = Arc::new(collector::CollectorLive::with_topic_detail(
        output.metrics_topic_labels || output.ui.is_some(),
    ));
    let sources = Sources {
        collector: Some(live.clone()),
        ..Sources::default()
    };
    let about = About {
        component: "collector",
        broker: transport.url().to_string(),
        run_id: Some(rec.run_id()),
    };
    let mut observers = Observers::start(output, sources, about, shutdown.produce()).await?;
    let report = collector::collect(
        subscriber,
        &plan,
        live,
        rec.records(),
        shutdown.produce().clone(),
    )
    .await;
    observers.stop().await;
    claims_stop.cancel();
    if let Some(task) = claims_task {
        let _ = task.await;
    }
    let mut warnings = Vec::new();
    let mut summary = RunSummary::new("collector", transport.url().to_string(), started);
    summary.interrupted = shutdown.interrupted();
    let mut receive = receive_section(&report, None, output.per_device, &mut warnings);
    if let Some(store) = rec.backend() {
        receive.clock_offsets = clock_offsets(store.as_ref(), rec.run_id(), &mut warnings).await;
    }
    summary.receive = Some(receive);
    summary.elapsed_s = clock.elapsed().as_secs_f64();
    summary.warnings = warnings;
    rec.close(&mut summary, output.drain_timeout).await;
    observers.finish(&mut summary, output).await
}

/// This collector's clock against each loadgen's that stored an estimate in the run, with
/// a warning for any that is off by more than its error bound and 1 ms.
async fn clock_offsets(
    store: &dyn iotload_core::store::Backend,
    run_id: &str,
    warnings: &mut Vec<String>,
) -> Vec<iotload_core::clock_offset::ClockOffset> {
    use iotload_core::clock_offset::{estimate, offsets_to};
    let measured = async {
        let own = estimate(store, 16).await?;
        Ok::<_, iotload_core::store::StoreError>(offsets_to(own, &store.clocks(run_id).await?))
    };
    match measured.await {
        Ok(offsets) => {
            for o in &offsets {
                if o.offset_us.unsigned_abs() > o.bound_us.max(1_000) {
                    warnings.push(format!(
                        "the clock of loadgen {} is {:.3} ms {} this collector's (± {:.3} ms): \
                         latencies of its messages are off by that much; synchronise the \
                         clocks (NTP, PTP) or add the offset",
                        o.instance,
                        o.offset_us.unsigned_abs() as f64 / 1000.0,
                        if o.offset_us > 0 {
                            "ahead of"
                        } else {
                            "behind"
                        },
                        o.bound_us as f64 / 1000.0
                    ));
                }
            }
            offsets
        }
        Err(e) => {
            warnings.push(format!(
                "could not estimate the loadgens' clock offsets: {e}"
            ));
            Vec::new()
        }
    }
}
