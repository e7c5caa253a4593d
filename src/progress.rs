//! The live progress line on stderr: a redrawn line on a terminal, plain lines otherwise.

use std::io::{IsTerminal, Write};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use collector::{CollectorLive, IntervalStats};
use echo_ipaas::EchoStats;
use loadgen::LoadStats;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// What the progress line (and live `/metrics`) reads.
#[derive(Default, Clone)]
pub(crate) struct Sources {
    pub(crate) load: Option<Arc<LoadStats>>,
    pub(crate) echo: Option<Arc<EchoStats>>,
    pub(crate) collector: Option<Arc<CollectorLive>>,
}

/// A running progress line; [`Progress::stop`] ends it and clears a terminal line.
pub(crate) struct Progress {
    stop: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

impl Progress {
    /// Starts printing; `mode` is auto, always or never.
    pub(crate) fn start(mode: &str, sources: Sources) -> Self {
        let stop = CancellationToken::new();
        let task = spawn(mode, sources, stop.clone());
        Self { stop, task }
    }

    /// Stops printing and waits for the last line.
    pub(crate) async fn stop(self) {
        self.stop.cancel();
        let _ = self.task.await;
    }
}

/// Prints progress until `stop` fires.
fn spawn(mode: &str, sources: Sources, stop: CancellationToken) -> tokio::task::JoinHandle<()> {
    let tty = std::io::stderr().is_terminal();
    let enabled = match mode {
        "never" => false,
        "always" => true,
        _ => true,
    };
    let every = if tty || mode == "always" {
        Duration::from_secs(1)
    } else {
        Duration::from_secs(5)
    };
    tokio::spawn(async move {
        if !enabled {
            return;
        }
        let start = Instant::now();
        let mut interval: Option<watch::Receiver<IntervalStats>> =
            sources.collector.as_ref().map(|c| c.interval());
        let mut last_sent = 0;
        let mut last_at = Instant::now();
        let mut tick = tokio::time::interval(every);
        tick.tick().await;
        loop {
            tokio::select! {
                _ = stop.cancelled() => break,
                _ = tick.tick() => {}
            }
            let now = Instant::now();
            let secs = now.duration_since(last_at).as_secs_f64().max(1e-3);
            last_at = now;
            let mut line = format!("[{:>6.1}s]", start.elapsed().as_secs_f64());
            if let Some(l) = &sources.load {
                let sent = l.sent.load(Ordering::Relaxed);
                line.push_str(&format!(
                    " devices {} · sent {} ({:.0}/s)",
                    l.connected.load(Ordering::Relaxed),
                    sent,
                    (sent - last_sent) as f64 / secs
                ));
                last_sent = sent;
            }
            if let Some(e) = &sources.echo {
                line.push_str(&format!(
                    " · echoed {} of {} requests",
                    e.published.load(Ordering::Relaxed),
                    e.received.load(Ordering::Relaxed)
                ));
            }
            if let (Some(c), Some(rx)) = (&sources.collector, interval.as_mut()) {
                let i = *rx.borrow_and_update();
                let unique = c.unique.load(Ordering::Relaxed);
                line.push_str(&format!(
                    " · received {} ({}/s) · p50 {:.3} ms · p99 {:.3} ms · gaps {}",
                    unique,
                    i.received,
                    i.p50_us as f64 / 1000.0,
                    i.p99_us as f64 / 1000.0,
                    i.gaps
                ));
                let duplicates = c.arrived.load(Ordering::Relaxed).saturating_sub(unique);
                if duplicates > 0 {
                    line.push_str(&format!(" · duplicates {duplicates}"));
                }
            }
            let mut err = std::io::stderr().lock();
            let _ = if tty {
                write!(err, "\r\x1b[2K{line}")
            } else {
                writeln!(err, "{line}")
            };
            let _ = err.flush();
        }
        if tty {
            let _ = write!(std::io::stderr(), "\r\x1b[2K");
        }
    })
}
