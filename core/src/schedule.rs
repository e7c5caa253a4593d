//! The open-loop send schedule: when each device's k-th message is due.
//!
//! Message `k` of a device is due at `t0 + phase + k · period`, whatever happened to
//! earlier sends. A late send goes out at once and its lateness is recorded as send lag;
//! the schedule never waits for a previous send or acknowledgement, which is what keeps
//! the measurement free of coordinated omission.

use std::sync::Arc;
use std::time::Duration;

/// When a device stops sending.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stop {
    /// Every message due before this much time after the start is sent.
    After(Duration),
    /// Each device sends exactly this many messages.
    Count(u64),
}

/// A per-device rate that changes during the run, k6 style: each stage moves the rate
/// linearly to its target over its duration; the run starts at the first stage's target
/// (so the first stage is flat). `30s:100/s, 2m:1000/s` holds 100/s for 30 s, then ramps
/// to 1,000/s over 2 minutes; a spike is a short stage up, a hold, a short stage down.
#[derive(Debug, Clone, PartialEq)]
pub struct Stages {
    segments: Vec<Segment>,
}

/// One stage: from `from` to `to` msg/s over `span_s`, starting `start_s` into the run,
/// with `before` messages per device due before it.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Segment {
    start_s: f64,
    span_s: f64,
    from: f64,
    to: f64,
    before: f64,
}

impl Segment {
    /// Messages due within the first `t` seconds of the segment.
    fn count(&self, t: f64) -> f64 {
        self.from * t + (self.to - self.from) * t * t / (2.0 * self.span_s)
    }

    /// When, into the segment, the `n`-th message of it is due (0 ≤ n ≤ its count): the
    /// root of the quadratic above, in a form that is stable for either sign of the slope.
    fn time_of(&self, n: f64) -> f64 {
        let a = (self.to - self.from) / (2.0 * self.span_s);
        let b = self.from;
        let disc = (b * b + 4.0 * a * n).max(0.0);
        2.0 * n / (b + disc.sqrt())
    }
}

impl Stages {
    /// Stages from (duration, target msg/s per device) pairs; every duration and rate
    /// must be above zero.
    pub fn new(stages: &[(Duration, f64)]) -> Result<Self, String> {
        let Some(&(_, first)) = stages.first() else {
            return Err("give at least one stage, e.g. --stage 30s:100/s".into());
        };
        let mut segments = Vec::with_capacity(stages.len());
        let (mut start_s, mut from, mut before) = (0.0, first, 0.0);
        for &(span, to) in stages {
            let span_s = span.as_secs_f64();
            if span_s <= 0.0 || !(to.is_finite() && to > 0.0) {
                return Err(format!(
                    "a stage of {} at {to}/s: durations and rates must be above zero",
                    humantime::format_duration(span)
                ));
            }
            let segment = Segment {
                start_s,
                span_s,
                from,
                to,
                before,
            };
            before += segment.count(span_s);
            start_s += span_s;
            from = to;
            segments.push(segment);
        }
        Ok(Self { segments })
    }

    /// The whole run's length.
    pub fn duration(&self) -> Duration {
        self.segments.last().map_or(Duration::ZERO, |s| {
            Duration::from_secs_f64(s.start_s + s.span_s)
        })
    }

    /// The highest rate of any stage, msg/s per device.
    pub fn peak(&self) -> f64 {
        self.segments
            .iter()
            .map(|s| s.from.max(s.to))
            .fold(0.0, f64::max)
    }

    /// Messages per device due over the whole run (fractional).
    fn total(&self) -> f64 {
        self.segments
            .last()
            .map_or(0.0, |s| s.before + s.count(s.span_s))
    }

    /// When the `n`-th message (fractional, from 0) is due, in seconds from the start.
    fn time_of(&self, n: f64) -> f64 {
        let index = self
            .segments
            .partition_point(|s| s.before <= n)
            .saturating_sub(1);
        let s = &self.segments[index];
        s.start_s + s.time_of(n - s.before).min(s.span_s.max(0.0) * 4.0)
    }
}

/// One device's send times, as offsets from the run's start.
#[derive(Debug, Clone, PartialEq)]
pub struct DeviceSchedule {
    phase_ns: f64,
    period_ns: f64,
    messages: u64,
    /// With `--stage`: the changing rate, and this device's phase as a share of one
    /// message.
    stages: Option<(Arc<Stages>, f64)>,
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
            stages: None,
        }
    }

    /// The schedule of device `index` out of `devices` under `stages` (which also say
    /// when it ends). Phases are spread evenly over one message, as at a fixed rate.
    pub fn staged(index: u32, devices: u32, stages: Arc<Stages>) -> Self {
        let phase = f64::from(index) / f64::from(devices.max(1));
        let messages = (stages.total() - phase).max(0.0).ceil() as u64;
        Self {
            phase_ns: 0.0,
            period_ns: 0.0,
            messages,
            stages: Some((stages, phase)),
        }
    }

    /// How many messages this device sends in total.
    pub fn messages(&self) -> u64 {
        self.messages
    }

    /// When message `k` is due, measured from the run's start.
    pub fn due(&self, k: u64) -> Duration {
        if let Some((stages, phase)) = &self.stages {
            return Duration::from_secs_f64(stages.time_of(k as f64 + phase).max(0.0));
        }
        Duration::from_nanos((self.phase_ns + k as f64 * self.period_ns).round() as u64)
    }
}

/// The total number of messages `devices` devices send under `stages`.
pub fn total_staged_messages(devices: u32, stages: &Arc<Stages>) -> u64 {
    (0..devices)
        .map(|d| DeviceSchedule::staged(d, devices, stages.clone()).messages())
        .sum()
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

    #[test]
    fn a_ramp_sends_what_its_average_rate_gives_and_speeds_up() {
        let secs = Duration::from_secs;
        // Flat 10/s for 10 s, then up to 30/s over 10 s: 100 + 200 messages per device.
        let stages = Arc::new(Stages::new(&[(secs(10), 10.0), (secs(10), 30.0)]).unwrap());
        assert_eq!(stages.duration(), secs(20));
        assert_eq!(stages.peak(), 30.0);
        let s = DeviceSchedule::staged(0, 1, stages.clone());
        assert_eq!(s.messages(), 300);
        assert_eq!(s.due(0), Duration::ZERO);
        assert_eq!(s.due(50), secs(5), "flat at first");
        assert_eq!(s.due(100), secs(10));
        // On the ramp the gap between messages is one over the rate at that moment,
        // 10 + 2/s per second into the ramp.
        for k in [105, 110, 200, 290] {
            let t = s.due(k).as_secs_f64();
            let gap = (s.due(k + 1) - s.due(k)).as_secs_f64();
            let rate = 10.0 + 2.0 * (t - 10.0);
            assert!(
                (gap * rate - 1.0).abs() < 0.02,
                "message {k}: gap {gap} at {rate}/s"
            );
        }
        assert!(s.due(299) < secs(20));
        assert_eq!(total_staged_messages(10, &stages), 3_000);
        // Down again: a spike.
        let spike = Stages::new(&[(secs(5), 10.0), (secs(1), 100.0), (secs(1), 10.0)]).unwrap();
        assert_eq!(
            DeviceSchedule::staged(0, 1, Arc::new(spike)).messages(),
            160
        );
        assert!(Stages::new(&[]).is_err());
        assert!(Stages::new(&[(secs(0), 1.0)]).is_err());
        assert!(Stages::new(&[(secs(1), 0.0)]).is_err());
    }

    proptest! {
        #[test]
        fn staged_due_times_increase_and_stay_inside_the_run(
            rates in proptest::collection::vec(0.5f64..2000.0, 1..5),
            spans in proptest::collection::vec(1u64..20, 5),
            devices in 1u32..50, index_frac in 0.0f64..1.0,
        ) {
            let stages: Vec<(Duration, f64)> = rates
                .iter()
                .zip(&spans)
                .map(|(r, s)| (Duration::from_millis(s * 100), *r))
                .collect();
            let stages = Arc::new(Stages::new(&stages).unwrap());
            let index = ((f64::from(devices) * index_frac) as u32).min(devices - 1);
            let s = DeviceSchedule::staged(index, devices, stages.clone());
            let end = stages.duration() + Duration::from_micros(1);
            let mut last = Duration::ZERO;
            for k in 0..s.messages() {
                let due = s.due(k);
                prop_assert!(due >= last, "message {k}: {due:?} before {last:?}");
                prop_assert!(due <= end, "message {k}: {due:?} after the run's {end:?}");
                last = due;
            }
        }

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
