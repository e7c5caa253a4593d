//! One shard of devices: a task with a timer heap that sends each device's messages when
//! they are due, stamping intended and actual send times.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use iotload_core::payload::StampEncoder;
use iotload_core::schedule::DeviceSchedule;
use iotload_core::stamp::{Stamp, now_us};
use iotload_core::timer::PreciseTimer;
use iotload_core::transport::{Outgoing, Publisher};
use tokio_util::sync::CancellationToken;

use crate::{GroupReport, LoadPlan, LoadStats};

/// The run's start on the monotonic clock, which every schedule counts from (stamps read
/// the wall clock when they are sent).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Clock {
    pub(crate) instant: Instant,
}

impl Clock {
    pub(crate) fn start() -> Self {
        Self {
            instant: Instant::now(),
        }
    }
}

/// One emulated device in a shard.
pub(crate) struct Device<P> {
    id: u32,
    index: usize,
    group: usize,
    topic: String,
    schedule: DeviceSchedule,
    publisher: P,
}

impl<P: Publisher> Device<P> {
    pub(crate) fn new(id: u32, publisher: P, plan: &LoadPlan) -> Self {
        let index = id - plan.first_device;
        let group = plan.group_of(index);
        let g = &plan.groups[group];
        // Phases spread over the group, as if it ran alone.
        let in_group = index - g.offset;
        Self {
            id,
            index: index as usize,
            group,
            topic: g.topic.render(id),
            schedule: match &g.stages {
                Some(stages) => DeviceSchedule::staged(in_group, g.devices, stages.clone()),
                None => DeviceSchedule::new(in_group, g.devices, g.rate.per_s(), g.stop),
            },
            publisher,
        }
    }
}

/// What a shard did, handed back when it ends.
pub(crate) struct ShardDone<P> {
    pub(crate) publishers: Vec<P>,
    /// Sent, errors and send lag by device group.
    pub(crate) groups: Vec<GroupReport>,
    pub(crate) last_send: Instant,
}

/// Sleeps until `at` on the precise timer, or on tokio's when it is unavailable.
async fn wait_until(timer: &mut Option<PreciseTimer>, at: Instant) {
    if let Some(t) = timer
        && t.sleep_until(at).await.is_ok()
    {
        return;
    }
    tokio::time::sleep_until(at.into()).await;
}

/// Sends every due message of `devices` until all schedules end or `stop` fires.
pub(crate) async fn drive<P: Publisher>(
    mut devices: Vec<Device<P>>,
    clock: Clock,
    encoders: Vec<Arc<StampEncoder>>,
    slack: Duration,
    stats: Arc<LoadStats>,
    stop: CancellationToken,
) -> ShardDone<P> {
    // (due offset, seq, device slot); the smallest due time first.
    let mut heap: BinaryHeap<Reverse<(Duration, u64, usize)>> = devices
        .iter()
        .enumerate()
        .filter(|(_, d)| d.schedule.messages() > 0)
        .map(|(slot, d)| Reverse((d.schedule.due(0), 0, slot)))
        .collect();
    let mut groups: Vec<GroupReport> = encoders.iter().map(|_| GroupReport::default()).collect();
    let mut last_send = clock.instant;
    let mut payload = Vec::with_capacity(256);
    let mut headers = Vec::new();
    let mut timer = PreciseTimer::new().ok();
    let mut values: Vec<_> = devices
        .iter()
        .map(|d| encoders[d.group].device_values(d.id))
        .collect();
    // With a slack, a wake-up comes at most once per slack: what falls due before then
    // waits for it and goes out late, counted as send lag.
    let mut earliest_wake = clock.instant;
    while let Some(&Reverse((due, seq, slot))) = heap.peek() {
        let due_at = clock.instant + due;
        let now = Instant::now();
        if now < due_at {
            let wake = due_at.max(earliest_wake);
            tokio::select! {
                biased;
                _ = stop.cancelled() => break,
                _ = wait_until(&mut timer, wake) => {}
            }
            earliest_wake = Instant::now() + slack;
        } else if stop.is_cancelled() {
            break;
        }
        heap.pop();
        let device = &mut devices[slot];
        let lag = Instant::now().saturating_duration_since(due_at);
        let lag_us = lag.as_micros() as u64;
        let group = &mut groups[device.group];
        group.send_lag.record(lag_us);
        if let Some(last) = stats.last_lag_us.get(device.index) {
            last.store(lag_us, Ordering::Relaxed);
        }
        // The intended time is the send time minus the lag, both read now: anchoring it
        // to the wall clock at start instead would let a clock slew or step during a long
        // run drift the corrected latency away from the raw one.
        let sent_us = now_us();
        let stamp = Stamp {
            device: device.id,
            seq,
            intended_us: sent_us.saturating_sub(lag_us),
            sent_us,
        };
        encoders[device.group].encode(&stamp, &mut values[slot], &mut payload, &mut headers);
        let message = Outgoing {
            topic: &device.topic,
            payload: &payload,
            headers: &headers,
            record_time_us: Some(sent_us),
        };
        match device.publisher.publish(message).await {
            Ok(()) => {
                group.sent += 1;
                stats.sent.fetch_add(1, Ordering::Relaxed);
                stats.per_device[device.index].fetch_add(1, Ordering::Relaxed);
            }
            Err(e) => {
                group.errors += 1;
                stats.errors.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(device = device.id, "publish failed: {e}");
            }
        }
        last_send = Instant::now();
        if seq + 1 < device.schedule.messages() {
            heap.push(Reverse((device.schedule.due(seq + 1), seq + 1, slot)));
        }
    }
    ShardDone {
        publishers: devices.into_iter().map(|d| d.publisher).collect(),
        groups,
        last_send,
    }
}
