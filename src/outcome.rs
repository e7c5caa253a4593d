//! How a command ends: the summary printed and written as JSON, the exit code, and a
//! hint for errors with a known fix.

use crate::summary::{ProcessSection, RunSummary};
use anyhow::Context;

use crate::cli::OutputArgs;

/// How a command ended.
pub(crate) struct Outcome {
    pub(crate) interrupted: bool,
    pub(crate) thresholds_failed: bool,
    /// The summary of a command that measured (for `--find-max`, which judges its steps
    /// by them).
    pub(crate) summary: Option<Box<RunSummary>>,
}

impl Outcome {
    /// Nothing went wrong.
    pub(crate) fn ok() -> Self {
        Self {
            interrupted: false,
            thresholds_failed: false,
            summary: None,
        }
    }

    /// 0 ok, 1 a threshold failed, 130 interrupted.
    pub(crate) fn exit_code(&self) -> u8 {
        if self.thresholds_failed {
            1
        } else if self.interrupted {
            130
        } else {
            0
        }
    }
}

/// A hint for errors with a known fix.
pub(crate) fn hint_for(err: &anyhow::Error) -> Option<&'static str> {
    let text = format!("{err:#}");
    if text.contains("virtual host") {
        Some("list the virtual hosts with `rabbitmqctl list_vhosts`; `amqp://HOST:5672` uses `/`")
    } else if text.contains("zmq+tcp://") {
        let unreachable = ["nothing listens", "nothing accepts", "no answer from"];
        unreachable.iter().any(|t| text.contains(t)).then_some(
            "start `iotload zmq-proxy` first (publishers connect to the URL's port, \
             subscribers to the next one), or use --zmq-mode peer",
        )
    } else if text.contains("cannot connect to") || text.contains("no answer from") {
        Some(
            "check that the broker runs and the address is right (e.g. `service mosquitto \
             start`, `service rabbitmq-server start` or `service nats-server start`); \
             `iotload run` without --broker uses an embedded MQTT broker",
        )
    } else if text.contains("TLS setup failed") {
        Some(
            "check --ca-file (the CA that signed the broker's certificate) and that the URL's \
             host matches the certificate; --insecure skips the check for testing",
        )
    } else {
        None
    }
}

/// When the command started, as RFC 3339 with µs.
pub(crate) fn started_at() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
}

/// Prints the summary, writes the JSON file, and says how the command ended.
pub(crate) fn finish(summary: &mut RunSummary, output: &OutputArgs) -> anyhow::Result<Outcome> {
    let handled = match (&summary.load, &summary.echo, &summary.receive) {
        (Some(l), _, _) => l.sent,
        (None, Some(e), _) => e.published,
        (None, None, Some(r)) => r.received,
        _ => 0,
    };
    summary.process = ProcessSection::measure(handled, summary.process.parts);
    if !output.quiet {
        print!("{}", summary.render());
    }
    if let Some(path) = &output.json {
        std::fs::write(path, summary.to_json() + "\n")
            .with_context(|| format!("cannot write the JSON summary to {}", path.display()))?;
    }
    Ok(Outcome {
        interrupted: summary.interrupted,
        thresholds_failed: summary.thresholds_failed(),
        summary: Some(Box::new(summary.clone())),
    })
}
