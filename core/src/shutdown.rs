//! Graceful stop: end of duration, Ctrl-C and SIGTERM all run the same phases.
//!
//! The first signal cancels [`Shutdown::produce`]: publishers stop scheduling, receivers
//! drain. A second signal cancels [`Shutdown::consume`] too, which skips the drain; the
//! results gathered so far are still summarised and stored.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use tokio_util::sync::CancellationToken;

/// The two stop phases of a run and whether a signal started them.
#[derive(Debug, Clone, Default)]
pub struct Shutdown {
    produce: CancellationToken,
    consume: CancellationToken,
    interrupted: Arc<AtomicBool>,
}

impl Shutdown {
    /// A shutdown that nothing has triggered yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Cancelled when publishing must stop (first signal, or the plan's end).
    pub fn produce(&self) -> &CancellationToken {
        &self.produce
    }

    /// Cancelled when receiving must stop (after the drain, or a second signal).
    pub fn consume(&self) -> &CancellationToken {
        &self.consume
    }

    /// Whether a signal (rather than the plan) stopped the run.
    pub fn interrupted(&self) -> bool {
        self.interrupted.load(Ordering::Relaxed)
    }

    /// Records a signal: the first stops producing, the second stops consuming.
    pub fn signal(&self) {
        if self.interrupted.swap(true, Ordering::Relaxed) {
            self.consume.cancel();
        }
        self.produce.cancel();
    }

    /// Spawns a task that turns SIGINT and SIGTERM into [`Shutdown::signal`].
    pub fn listen_for_signals(&self) -> tokio::task::JoinHandle<()> {
        let this = self.clone();
        tokio::spawn(async move {
            #[cfg(unix)]
            {
                use tokio::signal::unix::{SignalKind, signal};
                let (Ok(mut int), Ok(mut term)) = (
                    signal(SignalKind::interrupt()),
                    signal(SignalKind::terminate()),
                ) else {
                    tracing::warn!("cannot install signal handlers; Ctrl-C will end abruptly");
                    return;
                };
                loop {
                    tokio::select! {
                        _ = int.recv() => {}
                        _ = term.recv() => {}
                    }
                    if this.interrupted() {
                        eprintln!("\nsecond signal: skipping the drain, saving results");
                    } else {
                        eprintln!("\nstopping: draining in-flight messages (signal again to skip)");
                    }
                    this.signal();
                }
            }
            #[cfg(not(unix))]
            loop {
                if tokio::signal::ctrl_c().await.is_err() {
                    return;
                }
                this.signal();
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_signal_stops_producing_second_stops_consuming() {
        let s = Shutdown::new();
        s.signal();
        assert!(s.produce().is_cancelled());
        assert!(!s.consume().is_cancelled());
        assert!(s.interrupted());
        s.signal();
        assert!(s.consume().is_cancelled());
    }
}
