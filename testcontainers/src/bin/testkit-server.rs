//! Runs one of the test kit's JVM servers outside a test, for benchmarks and by hand:
//! `testkit-server kafka|pulsar` starts it on free loopback ports, prints
//! `url=…` (and `started_in_ms=…`, `pid=…`) on standard output once it serves, and
//! keeps it until interrupted (Ctrl-C or SIGINT), then stops it.

use std::process::ExitCode;
use std::time::Instant;

use iotload_testkit::{KafkaBroker, PulsarBroker, TestkitError};

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let which = std::env::args().nth(1).unwrap_or_default();
    if !matches!(which.as_str(), "kafka" | "pulsar") {
        eprintln!("usage: testkit-server kafka|pulsar (got {which:?})");
        return ExitCode::from(2);
    }
    match serve(&which).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err}");
            ExitCode::FAILURE
        }
    }
}

async fn serve(which: &str) -> Result<(), TestkitError> {
    let started = Instant::now();
    // Each server stays alive until the end of its arm.
    match which {
        "kafka" => {
            let broker = KafkaBroker::start().await?;
            announce(&broker.url(), broker.pid(), started);
            wait_for_interrupt().await
        }
        "pulsar" => {
            let broker = PulsarBroker::start().await?;
            announce(&broker.url(), broker.pid(), started);
            wait_for_interrupt().await
        }
        _ => Ok(()),
    }
}

fn announce(url: &str, pid: Option<u32>, started: Instant) {
    println!("url={url}");
    println!("started_in_ms={}", started.elapsed().as_millis());
    if let Some(pid) = pid {
        println!("pid={pid}");
    }
}

async fn wait_for_interrupt() -> Result<(), TestkitError> {
    tokio::signal::ctrl_c().await?;
    Ok(())
}
