//! `iotload`: one binary, a subcommand per component, and `run` for the whole loop.
//!
//! parse (flags > env > config file > defaults) → resolve → run → exit code:
//! 0 ok, 1 a --threshold failed, 2 error, 130 interrupted (results kept).

mod cli;
mod components;
mod config_file;
mod dry_run;
mod find_max;
mod live_page;
mod metrics;
mod observers;
mod outcome;
mod pipeline;
mod progress;
mod recording;
mod results;
mod summary;
mod summary_build;
mod threshold;
mod threshold_watch;
#[cfg(feature = "zmq")]
mod zmq_proxy;

use std::process::ExitCode;

fn main() -> ExitCode {
    let cli = match cli::parse(std::env::args_os().collect()) {
        Ok(cli) => cli,
        Err(cli::ParseExit::Clap(e)) => {
            let _ = e.print();
            return ExitCode::from(if e.use_stderr() { 2 } else { 0 });
        }
        Err(cli::ParseExit::Config(e)) => {
            eprintln!("error: {e:#}");
            return ExitCode::from(2);
        }
    };
    // pulsar logs each retry as an error; iotload reports failures itself.
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("IOTLOAD_LOG").unwrap_or_else(|_| {
                tracing_subscriber::EnvFilter::new("warn,rumqttd=off,lapin=off,pulsar=off")
            }),
        )
        .with_writer(std::io::stderr)
        .init();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(2);
        }
    };
    // The pipeline runs as a task on a worker thread, not on this thread: a future given
    // to `block_on` is woken from the worker that owns the I/O driver through a futex,
    // one wake-up per message for the loops that run inline (BENCHMARKS.md, issue #23).
    let executed = runtime.block_on(async { tokio::spawn(pipeline::execute(cli)).await });
    let executed = match executed {
        Ok(result) => result,
        Err(failed) if failed.is_panic() => std::panic::resume_unwind(failed.into_panic()),
        Err(failed) => Err(anyhow::anyhow!(
            "the command's task was cancelled: {failed}"
        )),
    };
    match executed {
        Ok(outcome) => ExitCode::from(outcome.exit_code()),
        Err(err) => {
            eprintln!("error: {err:#}");
            if let Some(hint) = outcome::hint_for(&err) {
                eprintln!("hint: {hint}");
            }
            ExitCode::from(2)
        }
    }
}
