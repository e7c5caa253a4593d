//! `iotload run --find-max EXPR`: the highest rate the system under test holds. Runs
//! steps of rising load, each a whole `run` judged by the thresholds, stops at the first
//! step that fails, and reports the last that held (a table, and JSON with `--json`).

use std::time::Duration;

use anyhow::Context;
use clap::Args;
use iotload_core::plan::parse_duration;
use iotload_core::shutdown::Shutdown;
use serde::Serialize;
use serde_json::Value;

use crate::cli::RunArgs;
use crate::outcome::Outcome;
use crate::summary::RunSummary;
use crate::threshold::Threshold;

/// Options of the capacity search.
#[derive(Debug, Clone, Args, Default)]
pub(crate) struct FindMaxArgs {
    /// Search for the highest rate that passes these thresholds (e.g. 'p99<50ms'): run
    /// steps from --rate up by --step, each held --hold, stop at the first step that
    /// fails, and report the highest that held.
    #[arg(
        long = "find-max",
        env = "IOTLOAD_FIND_MAX",
        value_name = "EXPR",
        value_delimiter = ','
    )]
    pub(crate) thresholds: Vec<Threshold>,

    /// Per-device rate added at each --find-max step, msg/s (default: the starting --rate).
    #[arg(long, env = "IOTLOAD_STEP", value_name = "MSG_PER_S")]
    pub(crate) step: Option<f64>,

    /// How long each --find-max step runs.
    #[arg(long, env = "IOTLOAD_HOLD", value_name = "DURATION", default_value = "10s",
          value_parser = parse_duration)]
    pub(crate) hold: Duration,

    /// The most --find-max steps.
    #[arg(long, env = "IOTLOAD_MAX_STEPS", value_name = "N", default_value_t = 20,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub(crate) max_steps: u32,
}

/// One step's figures.
#[derive(Debug, Clone, Serialize)]
struct Step {
    rate_per_device: f64,
    rate_total: f64,
    sent: u64,
    lost: u64,
    p50_ms: f64,
    p99_ms: f64,
    corrected_p99_ms: f64,
    send_lag_p99_ms: f64,
    passed: bool,
}

/// The search's report.
#[derive(Debug, Serialize)]
struct Report {
    thresholds: Vec<String>,
    steps: Vec<Step>,
    /// The highest step that held, if any did.
    max: Option<Step>,
    /// Why the search ended.
    ended: String,
    /// Whether iotload itself fell behind its schedule at the failing step.
    loadgen_limited: bool,
}

/// Send lag p99 above which iotload, not the system under test, is said to be the limit.
const LAG_LIMIT_MS: f64 = 20.0;

/// Runs the search; each step is a whole `run` with the thresholds as its own.
pub(crate) async fn search(
    args: RunArgs,
    config: Value,
    shutdown: Shutdown,
) -> anyhow::Result<Outcome> {
    let search = args.find_max.clone();
    if args.load.count.is_some() || !args.load.stages.is_empty() {
        anyhow::bail!(
            "--find-max sets each step's rate and length itself (--rate, --step, --hold); \
             leave out --count and --stage"
        );
    }
    if args.load.fleet.is_some() {
        anyhow::bail!(
            "--find-max raises one rate for all devices, and a --fleet file gives each group \
             its own; search with one group's options instead of the file"
        );
    }
    let step = search.step.unwrap_or(args.load.rate);
    if !(step.is_finite() && step > 0.0) {
        anyhow::bail!("--step {step}: give a rate above zero, e.g. 10");
    }
    let devices = args.load.devices as f64;
    let mut steps: Vec<Step> = Vec::new();
    let mut ended = format!("all {} steps held", search.max_steps);
    let mut loadgen_limited = false;
    for i in 0..search.max_steps {
        if shutdown.interrupted() {
            ended = "interrupted".into();
            break;
        }
        let rate = args.load.rate + step * f64::from(i);
        eprintln!(
            "find-max: step {} at {} msg/s per device ({} msg/s in all) for {:?}",
            i + 1,
            rate,
            rate * devices,
            search.hold
        );
        let mut run = args.clone();
        run.find_max.thresholds.clear();
        run.load.rate = rate;
        run.load.duration = search.hold;
        run.output.threshold = search.thresholds.clone();
        run.output.json = None;
        run.output.quiet = true;
        let step_shutdown = forward(&shutdown);
        let outcome = Box::pin(crate::pipeline::run_loop(
            run,
            config.clone(),
            step_shutdown,
        ))
        .await
        .with_context(|| format!("find-max step {}", i + 1))?;
        let figures = step_figures(
            outcome.summary.as_deref(),
            rate,
            devices,
            !outcome.thresholds_failed,
        );
        eprintln!(
            "find-max: step {} {} (p99 {:.3} ms, {} sent, {} lost)",
            i + 1,
            if figures.passed { "held" } else { "failed" },
            figures.p99_ms,
            figures.sent,
            figures.lost
        );
        steps.push(figures.clone());
        if outcome.interrupted {
            ended = "interrupted".into();
            break;
        }
        if outcome.thresholds_failed {
            loadgen_limited = figures.send_lag_p99_ms > LAG_LIMIT_MS
                || (figures.sent as f64) < 0.95 * figures.rate_total * search.hold.as_secs_f64();
            ended = format!("step {} failed the thresholds", i + 1);
            break;
        }
    }
    let report = Report {
        thresholds: search.thresholds.iter().map(ToString::to_string).collect(),
        max: steps.iter().rev().find(|s| s.passed).cloned(),
        steps,
        ended,
        loadgen_limited,
    };
    print_report(&report, step * devices);
    if let Some(path) = &args.output.json {
        let text = serde_json::to_string_pretty(&report)?;
        std::fs::write(path, text + "\n")
            .with_context(|| format!("writing the find-max report to {}", path.display()))?;
    }
    Ok(Outcome {
        interrupted: shutdown.interrupted(),
        thresholds_failed: report.max.is_none(),
        summary: None,
    })
}

/// A fresh shutdown for one step that signals reach: the outer one's phases are forwarded.
fn forward(outer: &Shutdown) -> Shutdown {
    let inner = Shutdown::new();
    let (outer, step) = (outer.clone(), inner.clone());
    tokio::spawn(async move {
        outer.produce().cancelled().await;
        step.signal();
        outer.consume().cancelled().await;
        step.signal();
    });
    inner
}

/// A step's figures from its run's summary (NaN and 0 where the run measured nothing).
fn step_figures(s: Option<&RunSummary>, rate: f64, devices: f64, passed: bool) -> Step {
    let load = s.and_then(|s| s.load.as_ref());
    let receive = s.and_then(|s| s.receive.as_ref());
    let ms = |v: Option<f64>| v.unwrap_or(f64::NAN);
    Step {
        rate_per_device: rate,
        rate_total: rate * devices,
        sent: load.map_or(0, |l| l.sent),
        lost: receive.map_or(0, |r| r.lost),
        p50_ms: ms(receive.map(|r| r.latency_ms.p50)),
        p99_ms: ms(receive.map(|r| r.latency_ms.p99)),
        corrected_p99_ms: ms(receive.map(|r| r.latency_corrected_ms.p99)),
        send_lag_p99_ms: ms(load.map(|l| l.send_lag_ms.p99)),
        passed,
    }
}

fn print_report(report: &Report, step_total: f64) {
    println!(
        "\nfind-max {} · steps of +{step_total} msg/s",
        report.thresholds.join(", ")
    );
    println!(
        "{:>12} {:>10} {:>8} {:>10} {:>10} {:>14} {:>12}  result",
        "msg/s", "sent", "lost", "p50 ms", "p99 ms", "corr. p99 ms", "lag p99 ms"
    );
    for s in &report.steps {
        println!(
            "{:>12} {:>10} {:>8} {:>10.3} {:>10.3} {:>14.3} {:>12.3}  {}",
            s.rate_total,
            s.sent,
            s.lost,
            s.p50_ms,
            s.p99_ms,
            s.corrected_p99_ms,
            s.send_lag_p99_ms,
            if s.passed { "held" } else { "failed" }
        );
    }
    match &report.max {
        Some(max) => println!(
            "highest rate that held: {} msg/s ({} per device), p99 {:.3} ms; {}",
            max.rate_total, max.rate_per_device, max.p99_ms, report.ended
        ),
        None => println!("no step held; {}", report.ended),
    }
    if report.loadgen_limited {
        println!(
            "note: iotload fell behind its own schedule at the failing step (send lag p99 \
             above {LAG_LIMIT_MS} ms or under 95 % sent): the limit found may be this \
             machine's, not the system under test's"
        );
    }
}
