//! Runs the chosen component (or the whole loop) on the broker the URL names; how it
//! ends (summary, exit code) is `outcome.rs`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::summary::{CpuParts, RunSummary};
use anyhow::{Context, anyhow};
use iotload_core::args::BrokerArgs;
use iotload_core::cpu_meter::CpuMeter;
use iotload_core::plan::BrokerUrl;
use iotload_core::shutdown::Shutdown;
use iotload_core::transport::{AnyTransport, Transport};

use crate::cli::{Cli, Command, RunArgs};
use crate::observers::{About, Observers};
use crate::outcome::{Outcome, started_at};
use crate::progress::Sources;
use crate::recording::Recording;
use crate::summary_build::{echo_section, load_section, receive_section};

/// Runs the command the user chose.
pub(crate) async fn execute(cli: Cli) -> anyhow::Result<Outcome> {
    if let Command::Results(args) = cli.command {
        crate::results::execute(args).await?;
        return Ok(Outcome::ok());
    }
    if cli.dry_run {
        crate::dry_run::print_dry_run(&cli)?;
        return Ok(Outcome::ok());
    }
    let output = match &cli.command {
        Command::Run(a) => Some(&a.output),
        Command::Loadgen(a) => Some(&a.output),
        Command::EchoIpaas(a) => Some(&a.output),
        Command::Collector(a) => Some(&a.output),
        _ => None,
    };
    if let Some(output) = output {
        crate::observers::check_thresholds(output, cli.command.name())?;
    }
    let config = crate::cli::options_json(&cli);
    let shutdown = Shutdown::new();
    let _signals = shutdown.listen_for_signals();
    match cli.command {
        #[cfg(feature = "zmq")]
        Command::ZmqProxy(args) => {
            crate::zmq_proxy::execute(&args, &shutdown).await?;
            Ok(Outcome::ok())
        }
        Command::Run(args) => run_loop(args, config, shutdown).await,
        Command::Loadgen(a) => {
            let url = required_url(&a.broker)?;
            let mut plan = a
                .load
                .resolve(&a.broker, &a.stamp, a.output.drain_timeout)?;
            loadgen::ensure_open_files(plan.devices)?;
            let mut rec = Recording::open(&a.store, "loadgen", url.to_string(), config).await?;
            reserve_devices(&mut plan, &rec).await?;
            rec.record_groups(&plan).await;
            let t = open_transport(url, &a.broker)?;
            crate::components::run_loadgen(t, plan, rec, &a.output, shutdown).await
        }
        Command::EchoIpaas(a) => {
            let from = broker_side(&a.broker, a.from_broker.as_deref(), "--from-broker")?;
            let to = broker_side(&a.broker, a.to_broker.as_deref(), "--to-broker")?;
            let from_url = required_url(&from)?;
            let to_url = required_url(&to)?;
            let plan = a.echo.resolve(&a.broker)?;
            let (f, t) = (
                open_transport(from_url, &from)?,
                open_transport(to_url, &to)?,
            );
            crate::components::run_echo(f, t, plan, a.duration, &a.output, shutdown).await
        }
        Command::Results(_) => Err(anyhow!("`results` takes no --dry-run")),
        Command::Plotter(a) => {
            let outputs = plotter::run(&a).await?;
            for o in &outputs {
                let mut line = format!("run {}: {} s × {} topics", o.run_id, o.seconds, o.topics);
                if o.documents > 0 {
                    line.push_str(&format!(", {} documents", o.documents));
                }
                if a.es.elasticsearch.is_some() {
                    line.push_str(&format!(", {} indexed into Elasticsearch", o.indexed));
                }
                println!("{line}");
            }
            for path in [&a.jsonl, &a.csv, &a.hlog, &a.html].into_iter().flatten() {
                println!("wrote {}", path.display());
            }
            if a.serve.is_some() || a.ui.is_some() {
                serve_plotter(&a, &shutdown).await?;
                return Ok(Outcome {
                    interrupted: shutdown.interrupted(),
                    ..Outcome::ok()
                });
            }
            Ok(Outcome::ok())
        }
        Command::Collector(a) => {
            let url = required_url(&a.broker)?;
            let mut plan = a.collect.resolve(&a.broker, &a.stamp)?;
            let rec = Recording::open(&a.store, "collector", url.to_string(), config).await?;
            plan.run_id = rec.run_id().to_string();
            plan.instance = rec.instance().to_string();
            plan.raw = rec.raw;
            plan.by_instance = rec.by_instance;
            let claim = a.collect.claim.map(|n| (n, a.collect.claim_timeout));
            let t = open_transport(url, &a.broker)?;
            crate::components::run_collector(t, plan, rec, claim, &a.output, shutdown).await
        }
    }
}

/// `iotload plotter --serve ADDR` and/or `--ui ADDR`: Prometheus metrics and the live page
/// of the stored runs, until Ctrl-C.
async fn serve_plotter(a: &plotter::PlotterArgs, shutdown: &Shutdown) -> anyhow::Result<()> {
    let stop = shutdown.produce().clone();
    let page = match &a.ui {
        Some(addr) => {
            let store = iotload_core::store::open(&a.store).await?;
            let wanted = a.runs.first().cloned().unwrap_or_else(|| "latest".into());
            Some(crate::live_page::LivePage::follow_store(addr, store, wanted).await?)
        }
        None => None,
    };
    let served = match &a.serve {
        Some(addr) => {
            let listener = tokio::net::TcpListener::bind(addr)
                .await
                .with_context(|| format!("cannot listen on --serve {addr}"))?;
            let bound = listener.local_addr()?;
            eprintln!("serving Prometheus metrics at http://{bound}/metrics");
            plotter::prometheus::serve(a, listener, stop.cancelled_owned())
                .await
                .map_err(anyhow::Error::from)
        }
        None => {
            stop.cancelled().await;
            Ok(())
        }
    };
    if let Some(page) = page {
        page.close().await;
    }
    served
}

/// The broker options with the URL replaced by `url` (from `flag`), when given.
fn broker_side(
    broker: &BrokerArgs,
    url: Option<&str>,
    flag: &'static str,
) -> anyhow::Result<BrokerArgs> {
    let mut side = broker.clone();
    if let Some(url) = url {
        BrokerUrl::parse(url).with_context(|| format!("{flag} {}", redact(url)))?;
        side.broker = Some(url.to_string());
    }
    Ok(side)
}

fn redact(url: &str) -> String {
    iotload_core::plan::redact_url(url)
}

/// The transport `url` names, built from the broker flags (the registry in
/// `core/src/transport/registry.rs` knows every family).
fn open_transport(url: BrokerUrl, broker: &BrokerArgs) -> anyhow::Result<Arc<AnyTransport>> {
    Ok(Arc::new(AnyTransport::open(url, broker)?))
}

pub(crate) fn required_url(broker: &BrokerArgs) -> anyhow::Result<BrokerUrl> {
    broker.url()?.ok_or_else(|| {
        anyhow!("--broker is required (e.g. --broker mqtt://127.0.0.1:1883, or IOTLOAD_BROKER)")
    })
}

/// `iotload run`: collector and echo subscribe first, then the devices send.
pub(crate) async fn run_loop(
    args: RunArgs,
    config: serde_json::Value,
    shutdown: Shutdown,
) -> anyhow::Result<Outcome> {
    if !args.find_max.thresholds.is_empty() {
        return crate::find_max::search(args, config, shutdown).await;
    }
    let mut plan = args
        .load
        .resolve(&args.broker, &args.stamp, args.output.drain_timeout)?;
    if let Some(flag) = args.broker.shared_consumers_flag() {
        return Err(anyhow!(
            "{flag} names one consumer group, but `iotload run` has two consumers \
             (the echo and the collector) that must not share one; give it to a standalone \
             `iotload collector` or `iotload echo-ipaas`"
        ));
    }
    loadgen::ensure_open_files(plan.devices)?;
    let url = match args.broker.url()? {
        Some(url) => url,
        None => start_embedded(&args.broker, plan.devices)?,
    };
    let actions = broker_side(&args.broker, args.to_broker.as_deref(), "--to-broker")?;
    let actions_url = match &args.to_broker {
        Some(_) => required_url(&actions)?,
        None => url.clone(),
    };
    let label = crate::components::bridge_label(&url, &actions_url);
    let mut rec = Recording::open(&args.store, "run", label, config).await?;
    reserve_devices(&mut plan, &rec).await?;
    rec.record_groups(&plan).await;
    let requests = args.broker.clone();
    let t = open_transport(url, &requests)?;
    let u = open_transport(actions_url, &actions)?;
    run_loop_on(t, u, args, plan, rec, shutdown).await
}

#[cfg(feature = "embedded-broker")]
fn start_embedded(broker: &BrokerArgs, devices: u32) -> anyhow::Result<BrokerUrl> {
    let embedded = iotload_core::embedded_broker::EmbeddedBroker::start(devices as usize + 16)
        .context("starting the embedded MQTT broker")?;
    let url = match broker.family.mqtt.version()? {
        iotload_core::transport::mqtt::MqttVersion::V311 => embedded.url_v311(),
        iotload_core::transport::mqtt::MqttVersion::V5 => embedded.url_v5(),
    };
    eprintln!("no --broker given: using the embedded MQTT broker at {url}");
    Ok(BrokerUrl::parse(&url)?)
}

#[cfg(not(feature = "embedded-broker"))]
fn start_embedded(_: &BrokerArgs, _: u32) -> anyhow::Result<BrokerUrl> {
    Err(anyhow!(
        "--broker is required: this build has no embedded broker (rebuild with --features embedded-broker)"
    ))
}

/// The whole loop: devices publish requests on `transport`; the echo consumes them there
/// and publishes actions on `actions` (the same transport unless --to-broker), where the
/// collector listens.
async fn run_loop_on<T: Transport, U: Transport>(
    transport: Arc<T>,
    actions: Arc<U>,
    args: RunArgs,
    plan: loadgen::LoadPlan,
    rec: Recording,
    shutdown: Shutdown,
) -> anyhow::Result<Outcome> {
    let started = started_at();
    let clock = Instant::now();
    let collect_args = collector::CollectorArgs {
        topics: plan.topic_filters(true),
        duration: None,
        claim: None,
        claim_timeout: Duration::ZERO,
        client_id: None,
    };
    let mut collect_plan = collect_args.resolve(&args.broker, &args.stamp)?;
    collect_plan.run_id = rec.run_id().to_string();
    collect_plan.instance = rec.instance().to_string();
    collect_plan.raw = rec.raw;
    collect_plan.by_instance = rec.by_instance;
    if plan.from_fleet_file {
        collect_plan.groups = Some(Arc::new(topic_groups(&plan)));
    }
    let subscriber = collector::subscribe(actions.as_ref(), &collect_plan)
        .await
        .context("connecting the collector")?;
    let echo = if args.external_ipaas {
        None
    } else {
        let echo_args = echo_ipaas::EchoArgs {
            from: plan.topic_filters(false),
            to: args.load.action_topic.clone(),
            faults: args.faults.clone(),
            client_id: None,
        };
        let mut echo_plan = echo_args.resolve(&args.broker)?;
        // Each group's requests are answered on its own action topics.
        echo_plan.route = echo_ipaas::Route::by_filter(
            plan.groups
                .iter()
                .map(|g| (g.topic.to_filter(), g.action_topic.clone()))
                .collect(),
        )?;
        let conns = echo_ipaas::connect(transport.as_ref(), actions.as_ref(), &echo_plan)
            .await
            .context("connecting the echo iPaaS")?;
        Some((echo_plan, conns))
    };

    let consume = shutdown.consume().clone();
    let live = Arc::new(collector::CollectorLive::with_topic_detail(
        args.output.metrics_topic_labels || args.output.ui.is_some(),
    ));
    // Each part's CPU time is measured on its own (the summary splits the process's).
    let load_stats = Arc::new(loadgen::LoadStats {
        cpu: Arc::new(CpuMeter::enabled()),
        ..loadgen::LoadStats::new(plan.devices)
    });
    let echo_cpu = Arc::new(CpuMeter::enabled());
    let collector_cpu = Arc::new(CpuMeter::enabled());
    let echo_stats = Arc::new(echo_ipaas::EchoStats::default());
    let collector_task = {
        let live = live.clone();
        let stop = consume.clone();
        let records = rec.records();
        tokio::spawn(collector_cpu.wrap(async move {
            collector::collect(subscriber, &collect_plan, live, records, stop).await
        }))
    };
    let echo_plan = echo.as_ref().map(|(plan, _)| plan.clone());
    let echo_task =
        echo.map(|(echo_plan, conns)| {
            let stats = echo_stats.clone();
            let stop = consume.clone();
            tokio::spawn(echo_cpu.wrap(async move {
                echo_ipaas::serve::<T, U>(conns, &echo_plan, stats, stop).await
            }))
        });
    let sources = Sources {
        load: Some(load_stats.clone()),
        echo: echo_task.as_ref().map(|_| echo_stats.clone()),
        collector: Some(live.clone()),
    };
    let about = About {
        component: "run",
        broker: crate::components::bridge_label(transport.url(), actions.url()),
        run_id: Some(rec.run_id()),
    };
    let mut observers = Observers::start(&args.output, sources, about, shutdown.produce()).await?;

    // The fleet handle holds a record sender: it must be gone before the store's final
    // flush waits for every sender to close.
    let load = load_stats
        .cpu
        .wrap(loadgen::run(
            transport.clone(),
            &plan,
            &rec.fleet(),
            load_stats.clone(),
            shutdown.produce().clone(),
        ))
        .await;
    // Drain: wait until every sent message arrived, the drain timeout, or a second signal.
    let mut warnings = Vec::new();
    if let Ok(report) = &load {
        let echo = (!args.external_ipaas).then_some(echo_stats.as_ref());
        let drained = tokio::select! {
            _ = wait_for_answers(&live, report.sent, echo) => true,
            _ = tokio::time::sleep(args.output.drain_timeout) => false,
            _ = consume.cancelled() => false,
        };
        if !drained {
            warnings.push(format!(
                "the drain ended before every message arrived (--drain-timeout {})",
                humantime_str(args.output.drain_timeout)
            ));
        }
    }
    consume.cancel();
    observers.stop().await;
    let collected = collector_task.await.context("the collector task failed")?;
    if let Some(t) = echo_task {
        let _ = t.await;
    }
    let load = load.context("running the devices")?;

    let label = crate::components::bridge_label(transport.url(), actions.url());
    let mut summary = RunSummary::new("run", label, started);
    summary.interrupted = shutdown.interrupted();
    summary.load = Some(load_section(&plan, &load, &mut warnings));
    if let Some(echo_plan) = &echo_plan {
        summary.echo = Some(echo_section(&echo_stats, echo_plan));
    }
    summary.receive = Some(receive_section(
        &collected,
        Some(load.sent),
        args.output.per_device,
        &mut warnings,
    ));
    if plan.from_fleet_file {
        summary.groups = crate::summary_build::group_sections(&plan, &load, Some(&collected));
    }
    summary.process.parts = Some(CpuParts::new(
        load_stats.cpu.seconds(),
        echo_cpu.seconds(),
        collector_cpu.seconds(),
        embedded_broker_cpu_s(),
    ));
    summary.elapsed_s = clock.elapsed().as_secs_f64();
    summary.warnings = warnings;
    rec.close(&mut summary, args.output.drain_timeout).await;
    observers.finish(&mut summary, &args.output).await
}

/// The embedded broker's CPU seconds so far, if it runs in this process.
fn embedded_broker_cpu_s() -> Option<f64> {
    #[cfg(feature = "embedded-broker")]
    {
        let used =
            iotload_core::usage::threads_cpu_s(iotload_core::embedded_broker::is_broker_thread);
        (used > 0.0).then_some(used)
    }
    #[cfg(not(feature = "embedded-broker"))]
    None
}

/// The device group of every action topic of `plan`.
fn topic_groups(plan: &loadgen::LoadPlan) -> collector::TopicGroups {
    let mut by_topic = std::collections::HashMap::new();
    for (index, topic) in plan.action_topics().into_iter().enumerate() {
        by_topic.insert(topic, plan.group_of(index as u32));
    }
    collector::TopicGroups {
        names: plan.groups.iter().map(|g| g.name.clone()).collect(),
        by_topic,
    }
}

/// Waits until every answered message arrived: `sent` minus what the echo (`echo`, when it
/// runs in this process) dropped on purpose, a number that grows while requests are
/// still on their way to it; then, with the echo in this process, until the second copy
/// of every request it duplicated arrived too (it may trail its first, and a collector
/// stopped between the two would report one duplicate fewer than the echo made).
async fn wait_for_answers(
    live: &collector::CollectorLive,
    sent: u64,
    echo: Option<&echo_ipaas::EchoStats>,
) {
    let Some(echo) = echo else {
        return live.wait_for(sent).await;
    };
    loop {
        let more_drops = echo.drops_changed.notified();
        tokio::pin!(more_drops);
        more_drops.as_mut().enable();
        let dropped = echo.dropped.load(std::sync::atomic::Ordering::SeqCst);
        tokio::select! {
            _ = live.wait_for(sent.saturating_sub(dropped)) => break,
            _ = &mut more_drops => {}
        }
    }
    // Every request the echo did not drop has been answered, so its duplicate draws are
    // all made; a copy that failed to publish counts as an error and never arrives.
    let load = |n: &std::sync::atomic::AtomicU64| n.load(std::sync::atomic::Ordering::SeqCst);
    let copies =
        (sent + load(&echo.duplicated)).saturating_sub(load(&echo.dropped) + load(&echo.errors));
    live.wait_for_arrivals(copies).await;
}

fn humantime_str(d: Duration) -> String {
    format!("{}s", d.as_secs_f64())
}

/// `--first-device auto`: reserves this instance's device numbers in the results store.
async fn reserve_devices(plan: &mut loadgen::LoadPlan, rec: &Recording) -> anyhow::Result<()> {
    if !plan.allocate_devices {
        return Ok(());
    }
    let store = rec.backend();
    plan.reserve_devices(store.as_deref(), rec.run_id())
        .await
        .context("reserving device numbers for --first-device auto")?;
    eprintln!(
        "devices {}..{} of run {} (reserved in the results store)",
        plan.first_device,
        plan.first_device + plan.devices - 1,
        rec.run_id()
    );
    Ok(())
}
