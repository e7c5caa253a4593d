//! Sub-millisecond wake-ups for the send schedule.
//!
//! Tokio's timer wheel has a resolution of 1 ms: a sleep wakes on the next millisecond
//! tick, so every scheduled send would go out up to 1 ms late and the corrected latency
//! would carry that error. On Linux this timer arms a `timerfd` instead, which wakes
//! within the kernel's timer slack (about 50 µs). Elsewhere it falls back to tokio.

use std::io;
use std::time::Instant;

/// A one-shot timer a single task re-arms for each wake-up.
#[derive(Debug)]
pub struct PreciseTimer {
    #[cfg(target_os = "linux")]
    fd: tokio::io::unix::AsyncFd<std::os::fd::OwnedFd>,
}

impl PreciseTimer {
    /// Creates the timer; must be called inside a tokio runtime.
    pub fn new() -> io::Result<Self> {
        #[cfg(target_os = "linux")]
        {
            use rustix::time::{TimerfdClockId, TimerfdFlags, timerfd_create};
            let fd = timerfd_create(
                TimerfdClockId::Monotonic,
                TimerfdFlags::NONBLOCK | TimerfdFlags::CLOEXEC,
            )?;
            // `AsyncFd::new` is deprecated because an arbitrary `AsRawFd` type may change or
            // close its descriptor; an `OwnedFd` cannot, so the requirement of the unsafe
            // `register` that replaces it holds here, and our code stays free of `unsafe`.
            #[allow(deprecated)]
            let fd = tokio::io::unix::AsyncFd::new(fd)?;
            Ok(Self { fd })
        }
        #[cfg(not(target_os = "linux"))]
        Ok(Self {})
    }

    /// Waits until `deadline`; returns at once if it has passed. Cancel-safe: dropping
    /// the future and calling again re-arms the timer.
    pub async fn sleep_until(&mut self, deadline: Instant) -> io::Result<()> {
        #[cfg(target_os = "linux")]
        {
            use rustix::time::{Itimerspec, TimerfdTimerFlags, Timespec, timerfd_settime};
            loop {
                let now = Instant::now();
                if now >= deadline {
                    return Ok(());
                }
                let wait = deadline - now;
                let spec = Itimerspec {
                    it_interval: Timespec {
                        tv_sec: 0,
                        tv_nsec: 0,
                    },
                    it_value: Timespec {
                        tv_sec: wait.as_secs() as _,
                        tv_nsec: wait.subsec_nanos().max(1) as _,
                    },
                };
                timerfd_settime(self.fd.get_ref(), TimerfdTimerFlags::empty(), &spec)?;
                // An expiration left over from a cancelled wait may wake us early: the
                // loop re-checks the clock and re-arms.
                let mut guard = self.fd.readable().await?;
                let mut buf = [0u8; 8];
                let read = rustix::io::read(guard.get_inner(), &mut buf);
                // Either way the descriptor is drained: the timer is one-shot and its
                // expiration, if any, was just read. Keeping the readiness would make the
                // next wait return at once, read `EAGAIN` and arm the timer a second time
                // (two more system calls per wake-up).
                guard.clear_ready();
                match read {
                    Ok(_) | Err(rustix::io::Errno::AGAIN) => {}
                    Err(e) => return Err(e.into()),
                }
            }
        }
        #[cfg(not(target_os = "linux"))]
        {
            tokio::time::sleep_until(deadline.into()).await;
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn wakes_after_the_deadline_and_not_a_millisecond_tick_later() {
        let mut timer = PreciseTimer::new().unwrap();
        let (mut precise, mut tick) = (Vec::new(), Vec::new());
        // Alternately, so both see the same machine: a loaded one delays every wake-up.
        for _ in 0..50 {
            let deadline = Instant::now() + Duration::from_micros(700);
            timer.sleep_until(deadline).await.unwrap();
            let now = Instant::now();
            assert!(now >= deadline);
            precise.push(now - deadline);
            let deadline = Instant::now() + Duration::from_micros(700);
            tokio::time::sleep_until(deadline.into()).await;
            tick.push(Instant::now() - deadline);
        }
        precise.sort();
        tick.sort();
        // The medians, so a busy machine's outliers do not fail the test. tokio's timer
        // wakes on the next millisecond tick: ~500 µs late on average for these waits;
        // this one within tens of µs on a quiet machine.
        assert!(
            precise[25] + Duration::from_micros(200) < tick[25],
            "precise {precise:?}\ntokio {tick:?}"
        );
    }

    #[tokio::test]
    async fn a_cancelled_wait_does_not_end_the_next_one_early() {
        let mut timer = PreciseTimer::new().unwrap();
        let soon = Instant::now() + Duration::from_millis(1);
        let _ = tokio::time::timeout(Duration::from_micros(10), timer.sleep_until(soon)).await;
        std::hint::black_box(());
        let deadline = Instant::now() + Duration::from_millis(5);
        timer.sleep_until(deadline).await.unwrap();
        assert!(Instant::now() >= deadline);
    }
}
