//! The command line: one subcommand per component, shared option groups, and the merge of
//! flags, `IOTLOAD_*` environment variables, the `--config` YAML file and defaults.

use std::collections::BTreeSet;
use std::ffi::OsString;
use std::path::PathBuf;
use std::time::Duration;

use clap::{ArgMatches, Args, CommandFactory, FromArgMatches, Parser, Subcommand};
use collector::CollectorArgs;
use echo_ipaas::EchoArgs;
use iotload_core::args::{BrokerArgs, StampArgs, StoreArgs};
use iotload_core::plan::parse_duration;
use loadgen::LoadArgs;

use crate::config_file;

/// Load-test and latency tool for IoT pipelines.
///
/// Emulated devices publish stamped stimuli, an iPaaS (the built-in echo, or yours) turns
/// them into actions, and the collector measures end-to-end latency, loss, duplicates and
/// reordering. Every option is also an environment variable (IOTLOAD_RATE for --rate) and a key of
/// the --config YAML file; flags win over the environment, which wins over the file.
#[derive(Debug, Parser)]
#[command(
    name = "iotload",
    version,
    propagate_version = true,
    max_term_width = 100
)]
pub(crate) struct Cli {
    /// YAML file of option values; keys are option names (`rate: 10`, `qos: 1`), optionally
    /// grouped under a subcommand name (`loadgen: {devices: 50}`).
    #[arg(long, global = true, env = "IOTLOAD_CONFIG", value_name = "PATH")]
    pub(crate) config: Option<PathBuf>,

    /// Print the resolved plan and where each value came from, then exit without connecting.
    #[arg(long, global = true, env = "IOTLOAD_DRY_RUN")]
    pub(crate) dry_run: bool,

    /// What to run.
    #[command(subcommand)]
    pub(crate) command: Command,

    /// Values that the config file supplied, by option id (for --dry-run).
    #[arg(skip)]
    pub(crate) from_file: BTreeSet<String>,

    /// The matches of the chosen subcommand (for --dry-run).
    #[arg(skip)]
    pub(crate) matches: Option<ArgMatches>,
}

/// The components.
#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Devices, echo iPaaS and collector in one process, on an embedded broker unless
    /// --broker is given: the whole latency loop in one command.
    Run(RunArgs),
    /// Emulated devices publishing stamped stimuli.
    Loadgen(LoadgenArgs),
    /// The reference iPaaS: republishes each request as an action with the stamp copied.
    EchoIpaas(EchoIpaasArgs),
    /// Receives actions and measures latency, loss, duplicates and reordering.
    Collector(CollectorCmdArgs),
    /// Lists, shows and exports results stored by earlier runs.
    Results(crate::results::ResultsArgs),
    /// Reads stored runs, aggregates them per second and per topic, and writes JSON Lines
    /// documents and an HTML report (several runs: compared side by side).
    Plotter(plotter::PlotterArgs),
    /// A ZeroMQ XSUB/XPUB forwarder standing in for a broker: publishers connect to one
    /// port, subscribers to the next (--broker zmq+tcp://HOST:PORT).
    #[cfg(feature = "zmq")]
    ZmqProxy(crate::zmq_proxy::ZmqProxyArgs),
}

impl Command {
    /// The subcommand's name.
    pub(crate) fn name(&self) -> &'static str {
        match self {
            Command::Run(_) => "run",
            Command::Loadgen(_) => "loadgen",
            Command::EchoIpaas(_) => "echo-ipaas",
            Command::Collector(_) => "collector",
            Command::Results(_) => "results",
            Command::Plotter(_) => "plotter",
            #[cfg(feature = "zmq")]
            Command::ZmqProxy(_) => "zmq-proxy",
        }
    }
}

/// Where results go and how the end of a run is handled.
#[derive(Debug, Clone, Args)]
pub(crate) struct OutputArgs {
    /// Not an option: set for `--find-max`'s steps, whose summaries it prints as one
    /// table instead.
    #[arg(skip)]
    pub(crate) quiet: bool,

    /// Also write the summary as JSON to this file (schema: docs/summary.schema.json).
    #[arg(long, env = "IOTLOAD_JSON", value_name = "PATH")]
    pub(crate) json: Option<PathBuf>,

    /// After sending ends (or Ctrl-C), how long to wait for messages still in flight.
    #[arg(long, env = "IOTLOAD_DRAIN_TIMEOUT", value_name = "DURATION", default_value = "2s",
          value_parser = parse_duration)]
    pub(crate) drain_timeout: Duration,

    /// List received, gaps, duplicates and reordered messages per device in the summary.
    #[arg(long, env = "IOTLOAD_PER_DEVICE")]
    pub(crate) per_device: bool,

    /// Progress line on stderr: auto (redrawn every second on a terminal, a plain line every
    /// 5 s otherwise), always (a line every second), or never.
    #[arg(long, env = "IOTLOAD_PROGRESS", value_name = "WHEN", default_value = "auto",
          value_parser = ["auto", "always", "never"])]
    pub(crate) progress: String,

    /// Serve live Prometheus metrics of this process at http://ADDR/metrics while it runs
    /// (e.g. 0.0.0.0:9465; port 0 picks a free port, printed on stderr): counters, devices
    /// connected and latency histograms; names in docs/metrics.md.
    #[arg(long, env = "IOTLOAD_METRICS_ADDR", value_name = "ADDR")]
    pub(crate) metrics_addr: Option<String>,

    /// With --metrics-addr, give the collector's received counter and latency histograms a
    /// topic label (one series per topic: mind Prometheus' cardinality).
    #[arg(long, env = "IOTLOAD_METRICS_TOPIC_LABELS")]
    pub(crate) metrics_topic_labels: bool,

    /// Serve a live page at http://ADDR/ while this runs (e.g. 127.0.0.1:8080; port 0 picks
    /// a free port, printed on stderr): latency percentiles and throughput per second,
    /// loss, duplicates, reordering, devices, send lag, per-topic detail, and the final
    /// summary. Works offline; the engine never waits for a viewer. Also keeps per-topic
    /// latency in the collector (one histogram per topic).
    #[arg(long, env = "IOTLOAD_UI", value_name = "ADDR")]
    pub(crate) ui: Option<String>,

    /// Pass/fail criterion checked at the end (repeatable; in the config file a list):
    /// p50|p90|p99|p99.9|min|mean|max (latency; corrected.p99 for the corrected latency,
    /// send_lag.p99 for the send lag) with a time in ms, us or s; loss|dup|reorder with a
    /// count or a percentage; rate|sent_rate in messages per second. Compare with <, <=, >
    /// or >=, e.g. 'p99<50ms', 'loss<0.1%', 'rate>=990/s'. The summary shows each verdict;
    /// the exit code is 1 when one failed.
    #[arg(
        long,
        env = "IOTLOAD_THRESHOLD",
        value_name = "EXPR",
        value_delimiter = ','
    )]
    pub(crate) threshold: Vec<crate::threshold::Threshold>,

    /// Stop the run early (as the first Ctrl-C does: drain, summarise, store) as soon as
    /// a threshold that a running total can fail (<, <= on latency, loss, dup, reorder)
    /// fails; judged from 100 messages on. Lower bounds (rate>=...) are judged at the end.
    #[arg(long, env = "IOTLOAD_ABORT_ON_FAIL")]
    pub(crate) abort_on_fail: bool,
}

/// Options of `iotload run`.
#[derive(Debug, Clone, Args)]
pub(crate) struct RunArgs {
    #[command(flatten)]
    pub(crate) broker: BrokerArgs,
    #[command(flatten)]
    pub(crate) load: LoadArgs,
    #[command(flatten)]
    pub(crate) stamp: StampArgs,
    /// What the built-in echo iPaaS does besides copying: its delay and injected faults.
    #[command(flatten)]
    pub(crate) faults: echo_ipaas::FaultArgs,
    /// Do not start the built-in echo: a real iPaaS between the request and action topics
    /// answers instead, and latency is still measured on one clock.
    #[arg(long, env = "IOTLOAD_EXTERNAL_IPAAS")]
    pub(crate) external_ipaas: bool,
    /// Broker of the actions, when it is not --broker: the echo consumes requests from
    /// --broker and publishes actions here, where the collector listens (e.g. MQTT devices
    /// bridged into Kafka). Options such as TLS files apply to both brokers; give
    /// credentials in each URL when they differ.
    #[arg(long, env = "IOTLOAD_TO_BROKER", value_name = "URL")]
    pub(crate) to_broker: Option<String>,
    #[command(flatten)]
    pub(crate) find_max: crate::find_max::FindMaxArgs,
    #[command(flatten)]
    pub(crate) store: StoreArgs,
    #[command(flatten)]
    pub(crate) output: OutputArgs,
}

/// Options of `iotload loadgen`.
#[derive(Debug, Clone, Args)]
pub(crate) struct LoadgenArgs {
    #[command(flatten)]
    pub(crate) broker: BrokerArgs,
    #[command(flatten)]
    pub(crate) load: LoadArgs,
    #[command(flatten)]
    pub(crate) stamp: StampArgs,
    #[command(flatten)]
    pub(crate) store: StoreArgs,
    #[command(flatten)]
    pub(crate) output: OutputArgs,
}

/// Options of `iotload echo-ipaas`.
#[derive(Debug, Clone, Args)]
pub(crate) struct EchoIpaasArgs {
    #[command(flatten)]
    pub(crate) broker: BrokerArgs,
    /// Broker the requests are consumed from; --broker when not given.
    #[arg(long, env = "IOTLOAD_FROM_BROKER", value_name = "URL")]
    pub(crate) from_broker: Option<String>,
    /// Broker the actions are published to; --broker when not given. With --from-broker,
    /// the echo bridges two brokers (e.g. mqtt:// into kafka:// or amqp://).
    #[arg(long, env = "IOTLOAD_TO_BROKER", value_name = "URL")]
    pub(crate) to_broker: Option<String>,
    #[command(flatten)]
    pub(crate) echo: EchoArgs,
    /// Stop after this long (e.g. 10m); until Ctrl-C or SIGTERM when not given.
    #[arg(long, env = "IOTLOAD_DURATION", value_name = "DURATION", value_parser = parse_duration)]
    pub(crate) duration: Option<Duration>,
    #[command(flatten)]
    pub(crate) output: OutputArgs,
}

/// Options of `iotload collector`.
#[derive(Debug, Clone, Args)]
pub(crate) struct CollectorCmdArgs {
    #[command(flatten)]
    pub(crate) broker: BrokerArgs,
    #[command(flatten)]
    pub(crate) collect: CollectorArgs,
    #[command(flatten)]
    pub(crate) stamp: StampArgs,
    #[command(flatten)]
    pub(crate) store: StoreArgs,
    #[command(flatten)]
    pub(crate) output: OutputArgs,
}

/// Why parsing ended without a command to run.
pub(crate) enum ParseExit {
    /// clap's own message (also --help and --version).
    Clap(clap::Error),
    /// The config file is unusable.
    Config(anyhow::Error),
}

/// Parses the command line, filling unset options from the config file.
pub(crate) fn parse(argv: Vec<OsString>) -> Result<Cli, ParseExit> {
    let mut command = Cli::command();
    let mut from_file = BTreeSet::new();
    if let Some(path) = config_file::locate(&argv) {
        let file = config_file::load(&path).map_err(ParseExit::Config)?;
        command = file
            .apply(command, &mut from_file)
            .map_err(ParseExit::Config)?;
    }
    let matches = command
        .try_get_matches_from(argv)
        .map_err(ParseExit::Clap)?;
    let mut cli = Cli::from_arg_matches(&matches).map_err(ParseExit::Clap)?;
    cli.from_file = from_file;
    cli.matches = matches.subcommand().map(|(_, m)| m.clone());
    Ok(cli)
}

/// One option's resolved value and where it came from.
pub(crate) struct ResolvedOption {
    pub(crate) long: String,
    pub(crate) value: String,
    pub(crate) source: String,
}

/// Every option of the chosen subcommand with its value (secrets redacted) and source.
pub(crate) fn resolved_options(cli: &Cli) -> Vec<ResolvedOption> {
    use clap::parser::ValueSource;
    let name = cli.command.name();
    let (Some(matches), command) = (&cli.matches, Cli::command()) else {
        return Vec::new();
    };
    let Some(sub) = command.find_subcommand(name) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for arg in sub.get_arguments() {
        let id = arg.get_id().as_str();
        let Some(long) = arg.get_long() else { continue };
        if matches!(id, "help" | "version" | "dry_run") {
            continue;
        }
        let values: Vec<String> = matches
            .get_raw(id)
            .map(|v| v.map(|s| s.to_string_lossy().into_owned()).collect())
            .unwrap_or_default();
        let mut value = values.join(",");
        if (long.contains("password") || long.contains("token")) && !value.is_empty() {
            value = "***".into();
        }
        if matches!(long, "broker" | "store") {
            value = iotload_core::plan::redact_url(&value);
        }
        let source = match matches.value_source(id) {
            Some(ValueSource::CommandLine) => "flag".to_string(),
            Some(ValueSource::EnvVariable) => format!(
                "env {}",
                arg.get_env()
                    .map(|e| e.to_string_lossy().into_owned())
                    .unwrap_or_default()
            ),
            Some(ValueSource::DefaultValue) if cli.from_file.contains(&format!("{name}:{id}")) => {
                "config file".into()
            }
            Some(ValueSource::DefaultValue) => "default".into(),
            _ => "unset".into(),
        };
        out.push(ResolvedOption {
            long: long.to_string(),
            value,
            source,
        });
    }
    out
}

/// The resolved options as a JSON object (for the stored run record).
pub(crate) fn options_json(cli: &Cli) -> serde_json::Value {
    serde_json::Value::Object(
        resolved_options(cli)
            .into_iter()
            .filter(|o| !o.value.is_empty())
            .map(|o| (o.long, serde_json::Value::String(o.value)))
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_option_has_an_iotload_env_name_and_help() {
        let cmd = Cli::command();
        for sub in cmd.get_subcommands() {
            for arg in sub.get_arguments() {
                if arg.get_id() == "help" || arg.get_id() == "version" {
                    continue;
                }
                let env = arg.get_env().map(|e| e.to_string_lossy().into_owned());
                let long = arg.get_long().unwrap_or_default();
                let expected = format!("IOTLOAD_{}", long.replace('-', "_").to_uppercase());
                assert_eq!(
                    env.as_deref(),
                    Some(expected.as_str()),
                    "{} --{long}",
                    sub.get_name()
                );
                assert!(
                    arg.get_help().is_some(),
                    "{} --{long} has no help",
                    sub.get_name()
                );
            }
        }
    }
}
