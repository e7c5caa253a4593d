//! The CPU time one component's futures take inside a runtime it shares with others.
//!
//! `iotload run` drives the loadgen, the echo and the collector on one tokio runtime, so
//! the process's CPU time cannot say which of them costs what. A [`CpuMeter`] wraps a
//! component's futures ([`CpuMeter::wrap`]) and adds, for every poll, the CPU time the
//! polling thread spent in it (the thread's CPU clock read before and after: about two
//! 0.25 µs reads per poll, so it is only switched on where the split is reported). What
//! the runtime itself spends between polls (waiting in `epoll`, scheduling) is in no
//! meter; the summary shows it as the remainder.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};

/// Accumulated CPU time of the futures wrapped with it; a disabled meter adds nothing
/// and costs one branch per poll.
#[derive(Debug, Default)]
pub struct CpuMeter {
    enabled: bool,
    nanos: AtomicU64,
}

impl CpuMeter {
    /// A meter that measures.
    pub fn enabled() -> Self {
        Self {
            enabled: true,
            nanos: AtomicU64::new(0),
        }
    }

    /// Whether this meter measures.
    pub fn is_enabled(&self) -> bool {
        self.enabled
    }

    /// CPU seconds measured so far.
    pub fn seconds(&self) -> f64 {
        self.nanos.load(Ordering::Relaxed) as f64 / 1e9
    }

    /// `future`, with the CPU time of each of its polls added to this meter.
    pub fn wrap<F: Future>(self: &Arc<Self>, future: F) -> Metered<F> {
        Metered {
            future: Box::pin(future),
            meter: self.clone(),
        }
    }
}

/// A future whose polls are timed on its thread's CPU clock (see [`CpuMeter::wrap`]).
pub struct Metered<F> {
    future: Pin<Box<F>>,
    meter: Arc<CpuMeter>,
}

impl<F: Future> Future for Metered<F> {
    type Output = F::Output;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        if !self.meter.enabled {
            return self.future.as_mut().poll(cx);
        }
        let before = thread_cpu_nanos();
        let polled = self.future.as_mut().poll(cx);
        let spent = thread_cpu_nanos().saturating_sub(before);
        self.meter.nanos.fetch_add(spent, Ordering::Relaxed);
        polled
    }
}

/// CPU time of the calling thread, ns (0 where the platform has no thread clock).
pub(crate) fn thread_cpu_nanos() -> u64 {
    use nix::time::{ClockId, clock_gettime};
    match clock_gettime(ClockId::CLOCK_THREAD_CPUTIME_ID) {
        Ok(t) => (t.tv_sec() as u64)
            .saturating_mul(1_000_000_000)
            .saturating_add(t.tv_nsec() as u64),
        Err(_) => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spin() -> u64 {
        let mut x = 0u64;
        for i in 0..20_000_000u64 {
            x = x.wrapping_mul(31).wrapping_add(i);
        }
        std::hint::black_box(x)
    }

    #[tokio::test]
    async fn an_enabled_meter_counts_the_polls_and_a_disabled_one_nothing() {
        let on = Arc::new(CpuMeter::enabled());
        let off = Arc::new(CpuMeter::default());
        assert_eq!(
            on.wrap(async { spin() }).await,
            off.wrap(async { spin() }).await
        );
        assert!(on.seconds() > 0.001, "measured {} s", on.seconds());
        assert_eq!(off.seconds(), 0.0);
    }

    #[tokio::test]
    async fn time_spent_waiting_is_not_counted() {
        let meter = Arc::new(CpuMeter::enabled());
        meter
            .wrap(tokio::time::sleep(std::time::Duration::from_millis(200)))
            .await;
        assert!(meter.seconds() < 0.05, "measured {} s", meter.seconds());
    }
}
