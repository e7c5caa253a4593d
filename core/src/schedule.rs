//! The open-loop send schedule: when each device's k-th message is due.
//!
//! Message `k` of a device is due at `t0 + phase + k · period`, whatever happened to
//! earlier sends. A late send goes out at once and its lateness is recorded as send lag;
//! the schedule never waits for a previous send or acknowledgement, which is what keeps
//! the measurement free of coordinated omission.

use std::time::Duration;

/// When a device stops sending.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stop {
    /// Every message due before this much time after the start is sent.
    After(Duration),
    /// Each device sends exactly this many messages.
    Count(u64),
}

/// One device's send times, as offsets from the run's start.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DeviceSchedule {
    phase_ns: f64,
    period_ns: f64,
    messages: u64,
}

impl DeviceSchedule {
    /// The schedule of device `index` out of `devices` at `rate_per_s` each.
    ///
    /// Phases are spread evenly over one period so devices do not fire in lock-step.
    pub fn new(index: u32, devices: u32, rate_per_s: f64, stop: Stop) -> Self {
        let period_ns = 1e9 / rate_per_s;
        let phase_ns = period_ns * f64::from(index) / f64::from(devices.max(1));
        let messages = match stop {
            Stop::Count(n) => n,
            Stop::After(d) => {
                let span = d.as_nanos() as f64 - phase_ns;
                if span <= 0.0 {
                    0
                } else {
                    (span / period_ns).ceil() as u64
                }
            }
        };
        Self {
            phase_ns,
            period_ns,
            messages,
        }
    }

    /// How many messages this device sends in total.
    pub fn messages(&self) -> u64 {
        self.messages
    }

    /// When message `k` is due, measured from the run's start.
    pub fn due(&self, k: u64) -> Duration {
        Duration::from_nanos((self.phase_ns + k as f64 * self.period_ns).round() as u64)
    }
}

/// The total number of messages `devices` devices send under `stop`.
pub fn total_messages(devices: u32, rate_per_s: f64, stop: Stop) -> u64 {
    (0..devices)
        .map(|d| DeviceSchedule::new(d, devices, rate_per_s, stop).messages())
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn due_times_advance_by_one_period() {
        let s = DeviceSchedule::new(0, 1, 1000.0, Stop::Count(3));
        assert_eq!(s.due(0), Duration::ZERO);
        assert_eq!(s.due(1), Duration::from_millis(1));
        assert_eq!(s.due(2), Duration::from_millis(2));
        assert_eq!(s.messages(), 3);
    }

    #[test]
    fn phases_spread_devices_over_one_period() {
        let a = DeviceSchedule::new(0, 4, 10.0, Stop::Count(1));
        let b = DeviceSchedule::new(1, 4, 10.0, Stop::Count(1));
        let d = DeviceSchedule::new(3, 4, 10.0, Stop::Count(1));
        assert_eq!(a.due(0), Duration::ZERO);
        assert_eq!(b.due(0), Duration::from_millis(25));
        assert_eq!(d.due(0), Duration::from_millis(75));
    }

    #[test]
    fn duration_gives_rate_times_duration_messages_per_device() {
        for index in 0..100 {
            let s = DeviceSchedule::new(index, 100, 10.0, Stop::After(Duration::from_secs(10)));
            assert_eq!(s.messages(), 100, "device {index}");
        }
        assert_eq!(
            total_messages(100, 10.0, Stop::After(Duration::from_secs(10))),
            10_000
        );
    }

    #[test]
    fn fractional_rate_sends_one_message_every_five_seconds() {
        let s = DeviceSchedule::new(0, 1, 0.2, Stop::After(Duration::from_secs(11)));
        assert_eq!(s.messages(), 3);
        assert_eq!(s.due(2), Duration::from_secs(10));
    }

    proptest! {
        #[test]
        fn every_due_time_is_inside_the_duration(
            devices in 1u32..500, index_frac in 0.0f64..1.0,
            rate in 0.1f64..5000.0, secs in 0.1f64..20.0,
        ) {
            let index = ((f64::from(devices) * index_frac) as u32).min(devices - 1);
            let d = Duration::from_secs_f64(secs);
            let s = DeviceSchedule::new(index, devices, rate, Stop::After(d));
            if s.messages() > 0 {
                prop_assert!(s.due(s.messages() - 1) < d + Duration::from_nanos(2));
                prop_assert!(s.due(s.messages()) + Duration::from_nanos(2) >= d);
            }
        }
    }
}
