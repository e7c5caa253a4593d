//! The latency collector: subscribes to action topics, reads each message's stamp and
//! records end-to-end latency (raw and corrected for coordinated omission) plus loss,
//! duplicates and reordering by sequence number.
//!
//! [`subscribe`] opens the subscription (so `iotload run` can subscribe before any device
//! sends) and [`collect`] receives until `stop` fires or the drain goal is met.

pub mod claims;
mod devices;
mod topics;

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use clap::Args;
use devices::DeviceKeys;
use iotload_core::args::{BrokerArgs, StampArgs};
use iotload_core::backlog::BacklogWatch;
use iotload_core::payload::StampDecoder;
use iotload_core::plan::{PlanError, parse_duration};
use iotload_core::recorder::{LatencyHistogram, SecondSamples};
use iotload_core::seq::{Arrival, SeqCounts, SequenceTracker};
use iotload_core::stamp::now_us;
use iotload_core::store::writer::{Record, RecordSender};
use iotload_core::store::{RawRecord, TopicSecond};
use iotload_core::transport::{ClientIdentity, Subscriber, Transport, TransportError};
use tokio::sync::{Notify, watch};
use tokio_util::sync::CancellationToken;
use topics::{Outcome, TopicSeconds};

/// What the collector listens to.
#[derive(Debug, Clone, Args)]
pub struct CollectorArgs {
    /// Topic filter to receive actions from; wildcards allowed; repeat for several.
    #[arg(
        long = "topic",
        env = "IOTLOAD_TOPIC",
        value_name = "FILTER",
        default_value = "iot/+/action",
        value_delimiter = ','
    )]
    pub topics: Vec<String>,

    /// How long to listen (e.g. 60s); until Ctrl-C when not given.
    #[arg(long, env = "IOTLOAD_DURATION", value_name = "DURATION", value_parser = parse_duration)]
    pub duration: Option<Duration>,

    /// Instead of --topic, claim this many topics advertised by loadgens (--advertise) in
    /// the results store, one collector per topic, and consume those.
    #[arg(long, env = "IOTLOAD_CLAIM", value_name = "N")]
    pub claim: Option<usize>,

    /// How long --claim waits for enough advertised topics: then it goes on with the
    /// topics it holds, or exits (code 2) when it holds none.
    #[arg(long, env = "IOTLOAD_CLAIM_TIMEOUT", value_name = "DURATION", default_value = "60s",
          value_parser = parse_duration)]
    pub claim_timeout: Duration,

    /// Client id of the collector's connection; unique per process by default
    /// (`iotload-collector-HOST-PID`), since two clients with one id knock each other off.
    #[arg(long, env = "IOTLOAD_CLIENT_ID", value_name = "ID")]
    pub client_id: Option<String>,
}

/// A checked description of what to collect.
#[derive(Debug)]
pub struct CollectPlan {
    /// Topic filters.
    pub filters: Vec<String>,
    /// Who the collector is.
    pub identity: ClientIdentity,
    /// Reads stamps.
    pub decoder: StampDecoder,
    /// Stop after this long, if set.
    pub duration: Option<Duration>,
    /// Run id of stored records.
    pub run_id: String,
    /// Instance name of stored records.
    pub instance: String,
    /// Store every message too.
    pub raw: bool,
    /// Store one row per second for all topics (topic `*`) instead of one per topic.
    pub by_instance: bool,
    /// The device group of each topic, when results are broken down by group
    /// (`iotload run --fleet`).
    pub groups: Option<Arc<TopicGroups>>,
}

/// Which device group each topic belongs to.
#[derive(Debug, Default, Clone)]
pub struct TopicGroups {
    /// Group names, in the loadgen's order.
    pub names: Vec<String>,
    /// The group (index into `names`) of each topic.
    pub by_topic: HashMap<String, usize>,
}

/// What the collector received of one device group.
#[derive(Debug, Default)]
pub struct GroupReceived {
    /// Messages with a readable stamp, including duplicates.
    pub received: u64,
    /// Messages counted once.
    pub unique: u64,
    /// Latency: receive − sent, µs.
    pub latency: LatencyHistogram,
    /// Corrected latency: receive − intended, µs.
    pub latency_corrected: LatencyHistogram,
}

impl CollectorArgs {
    /// Checks the values and builds the plan.
    pub fn resolve(
        &self,
        broker: &BrokerArgs,
        stamp: &StampArgs,
    ) -> Result<CollectPlan, PlanError> {
        let filters: Vec<String> = self
            .topics
            .iter()
            .map(|t| t.trim().to_string())
            .filter(|t| !t.is_empty())
            .collect();
        if filters.is_empty() {
            return Err(PlanError::BadValue {
                option: "--topic",
                reason: "give at least one topic filter, e.g. iot/+/action".into(),
            });
        }
        if self.duration.is_some_and(|d| d.is_zero()) {
            return Err(PlanError::BadValue {
                option: "--duration",
                reason: "a zero duration collects nothing; give e.g. 60s or leave it out".into(),
            });
        }
        let client_id = self.client_id.clone().unwrap_or_else(|| {
            format!(
                "iotload-collector-{}",
                iotload_core::args::default_instance()
            )
        });
        stamp.check_record_time(broker.url()?.map(|u| u.kind))?;
        let identity = broker.credentials()?.identity(client_id, 0);
        Ok(CollectPlan {
            filters,
            identity,
            decoder: StampDecoder::new(stamp.json_format()?),
            duration: self.duration,
            run_id: String::new(),
            instance: String::new(),
            raw: false,
            by_instance: false,
            groups: None,
        })
    }
}

/// Topics with their own totals in [`LiveTotals::topics`]: the first this many seen (each
/// keeps two latency histograms at the stored precision, grown to the largest latency
/// held: about 20 KB for latencies under 100 ms).
pub const MAX_DETAIL_TOPICS: usize = 1_000;

/// The last second, for the progress line.
#[derive(Debug, Clone, Copy, Default)]
pub struct IntervalStats {
    /// Messages received in the interval.
    pub received: u64,
    /// Median latency in the interval, µs.
    pub p50_us: u64,
    /// 90th percentile latency in the interval, µs.
    pub p90_us: u64,
    /// 99th percentile latency in the interval, µs.
    pub p99_us: u64,
    /// 99.9th percentile latency in the interval, µs.
    pub p999_us: u64,
    /// Largest latency in the interval, µs.
    pub max_us: u64,
    /// 99th percentile corrected latency in the interval, µs.
    pub corrected_p99_us: u64,
    /// Sequence gaps so far (messages below a device's highest seq not yet received).
    pub gaps: u64,
}

/// Everything received so far, updated once a second (and at the end): what live
/// `/metrics` exposes.
#[derive(Debug, Clone, Default)]
pub struct LiveTotals {
    /// Messages received, duplicates and undecodable ones included.
    pub received: u64,
    /// Sequence accounting.
    pub seq: SeqCounts,
    /// Messages without a readable stamp.
    pub undecodable: u64,
    /// Latency (receive − sent), µs.
    pub latency: LatencyHistogram,
    /// Corrected latency (receive − intended), µs.
    pub latency_corrected: LatencyHistogram,
    /// Per topic (only when asked for with [`CollectorLive::with_topic_detail`]; the first
    /// [`MAX_DETAIL_TOPICS`] topics seen).
    pub topics: BTreeMap<String, TopicTotals>,
}

/// One topic's share of [`LiveTotals`], at the precision the store keeps (two significant
/// figures), so a thousand topics cost megabytes, not gigabytes.
#[derive(Debug, Clone)]
pub struct TopicTotals {
    /// Messages received on the topic, duplicates and undecodable ones included.
    pub received: u64,
    /// Latency (receive − sent), µs.
    pub latency: LatencyHistogram,
    /// Corrected latency (receive − intended), µs.
    pub latency_corrected: LatencyHistogram,
}

impl Default for TopicTotals {
    fn default() -> Self {
        Self {
            received: 0,
            latency: LatencyHistogram::stored_precision(),
            latency_corrected: LatencyHistogram::stored_precision(),
        }
    }
}

/// One topic's messages of the second in progress, kept on the receive task as plain
/// samples (a push per message).
#[derive(Debug, Default)]
struct TopicInterval {
    received: u64,
    samples: SecondSamples,
}

/// One second of what the receive task saw, moved (not merged) to the aggregator task,
/// which folds it into [`LiveTotals`]: the receive task never waits for a reader of the
/// totals nor spends its time merging histograms.
struct Interval {
    /// Messages received so far.
    received: u64,
    /// Messages received in this second.
    interval_received: u64,
    seq: SeqCounts,
    undecodable: u64,
    latency: LatencyHistogram,
    corrected: LatencyHistogram,
    topics: HashMap<String, TopicInterval>,
}

/// What a drain waits for.
#[derive(Debug, Clone, Copy)]
enum DrainTarget {
    /// This many distinct messages.
    Unique(u64),
    /// This many stamped messages, duplicates included.
    Arrived(u64),
}

/// What others may watch while the collector runs.
#[derive(Debug)]
pub struct CollectorLive {
    /// Distinct messages received so far.
    pub unique: AtomicU64,
    /// Stamped messages received so far, duplicates included.
    pub arrived: AtomicU64,
    /// What a drain waits for: `unique` reaching the first or `arrived` the second.
    drain_targets: [AtomicU64; 2],
    drained: Notify,
    interval_tx: watch::Sender<IntervalStats>,
    totals: Mutex<LiveTotals>,
    topic_detail: bool,
}

impl Default for CollectorLive {
    fn default() -> Self {
        Self {
            unique: AtomicU64::new(0),
            arrived: AtomicU64::new(0),
            drain_targets: [AtomicU64::new(u64::MAX), AtomicU64::new(u64::MAX)],
            drained: Notify::new(),
            interval_tx: watch::channel(IntervalStats::default()).0,
            totals: Mutex::new(LiveTotals::default()),
            topic_detail: false,
        }
    }
}

impl CollectorLive {
    /// Also keeps [`LiveTotals::topics`] (one entry per topic: bounded by the topics).
    pub fn with_topic_detail(topic_detail: bool) -> Self {
        Self {
            topic_detail,
            ..Self::default()
        }
    }

    /// A copy of the totals as of the last second.
    pub fn totals(&self) -> LiveTotals {
        self.totals
            .lock()
            .map(|t| t.clone())
            .unwrap_or_else(|poisoned| poisoned.into_inner().clone())
    }

    /// Runs `read` on the totals as of the last second without copying them; the collector
    /// waits for the lock once a second, so `read` must be quick.
    pub fn read_totals<R>(&self, read: impl FnOnce(&LiveTotals) -> R) -> R {
        match self.totals.lock() {
            Ok(t) => read(&t),
            Err(poisoned) => read(&poisoned.into_inner()),
        }
    }

    /// Resolves once `target` distinct messages have been received.
    pub async fn wait_for(&self, target: u64) {
        self.wait_until(DrainTarget::Unique(target)).await;
    }

    /// Resolves once `target` stamped messages have been received, duplicates included:
    /// a drain that knows how many copies were sent waits for the last one too.
    pub async fn wait_for_arrivals(&self, target: u64) {
        self.wait_until(DrainTarget::Arrived(target)).await;
    }

    async fn wait_until(&self, target: DrainTarget) {
        let (index, count, n) = match target {
            DrainTarget::Unique(n) => (0, &self.unique, n),
            DrainTarget::Arrived(n) => (1, &self.arrived, n),
        };
        for (i, t) in self.drain_targets.iter().enumerate() {
            t.store(if i == index { n } else { u64::MAX }, Ordering::SeqCst);
        }
        loop {
            let notified = self.drained.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if count.load(Ordering::SeqCst) >= n {
                return;
            }
            // A wake-up may be a permit left by an earlier target: check again.
            notified.await;
        }
    }

    /// Counts what has arrived and wakes a drain whose target it meets.
    fn count_arrivals(&self, unique: u64, arrived: u64) {
        // SeqCst on both sides (`wait_until` stores the target, then loads the count):
        // with Relaxed both could miss the other's store and the drain would wait for
        // its timeout.
        self.unique.store(unique, Ordering::SeqCst);
        self.arrived.store(arrived, Ordering::SeqCst);
        if unique >= self.drain_targets[0].load(Ordering::SeqCst)
            || arrived >= self.drain_targets[1].load(Ordering::SeqCst)
        {
            self.drained.notify_one();
        }
    }

    /// Folds one interval into the totals (the run's only cumulative latency histograms
    /// live here) and publishes its percentiles for the progress line.
    fn add_interval(&self, mut interval: Interval) {
        self.interval_tx.send_replace(IntervalStats {
            received: interval.interval_received,
            p50_us: interval.latency.percentile_us(50.0),
            p90_us: interval.latency.percentile_us(90.0),
            p99_us: interval.latency.percentile_us(99.0),
            p999_us: interval.latency.percentile_us(99.9),
            max_us: interval.latency.percentile_us(100.0),
            corrected_p99_us: interval.corrected.percentile_us(99.0),
            gaps: interval.seq.gaps,
        });
        let mut totals = match self.totals.lock() {
            Ok(t) => t,
            Err(poisoned) => poisoned.into_inner(),
        };
        totals.received = interval.received;
        totals.seq = interval.seq;
        totals.undecodable = interval.undecodable;
        totals.latency.add(&interval.latency);
        totals.latency_corrected.add(&interval.corrected);
        for (topic, t) in interval.topics.iter_mut() {
            let total = match totals.topics.get_mut(topic) {
                Some(total) => total,
                None => totals.topics.entry(topic.clone()).or_default(),
            };
            total.received += t.received;
            t.samples
                .drain_into(&mut total.latency, &mut total.latency_corrected);
        }
    }

    /// The latest one-second interval.
    pub fn interval(&self) -> watch::Receiver<IntervalStats> {
        self.interval_tx.subscribe()
    }
}

/// What the collector measured.
#[derive(Debug)]
pub struct CollectReport {
    /// Messages received, including duplicates and undecodable ones.
    pub received: u64,
    /// Sequence accounting.
    pub seq: SeqCounts,
    /// Sequence accounting per device, in device order.
    pub per_device: Vec<(u32, SeqCounts)>,
    /// The string ids (or topics, for messages without a device field) behind the
    /// device keys counted down from `u32::MAX`.
    pub device_names: HashMap<u32, String>,
    /// Undecodable messages by kind.
    pub undecodable: BTreeMap<String, u64>,
    /// Stamps sent after they were received (clock skew).
    pub future_stamps: u64,
    /// Latency: receive − sent, µs.
    pub latency: LatencyHistogram,
    /// Corrected latency: receive − intended, µs.
    pub latency_corrected: LatencyHistogram,
    /// Connections lost.
    pub disconnections: u64,
    /// Time from the first to the last message received.
    pub receive_span: Duration,
    /// Messages the client library dropped because the collector fell behind.
    pub dropped_by_client: u64,
    /// The most bytes seen waiting unread in this process's TCP sockets (sampled each
    /// second; 0 where the platform does not say).
    pub backlog_peak_bytes: u64,
    /// Time during which the unread bytes were at or above
    /// [`iotload_core::backlog::BEHIND_BYTES`]: the receiver was behind.
    pub backlog_behind: Duration,
    /// Per device group, in [`TopicGroups::names`] order (empty without groups).
    pub groups: Vec<GroupReceived>,
}

/// Opens the subscription; messages published after this returns are received.
pub async fn subscribe<T: Transport>(
    transport: &T,
    plan: &CollectPlan,
) -> Result<T::Subscriber, TransportError> {
    transport.subscriber(&plan.identity, &plan.filters).await
}

/// Receives and measures until `stop` fires (or the plan's duration passes).
pub async fn collect<S: Subscriber>(
    mut subscriber: S,
    plan: &CollectPlan,
    live: Arc<CollectorLive>,
    records: Option<RecordSender>,
    stop: CancellationToken,
) -> CollectReport {
    let backlog = BacklogWatch::start(Duration::from_secs(1));
    let mut per_topic =
        TopicSeconds::new(plan.run_id.clone(), plan.instance.clone(), plan.by_instance);
    let offer_all = |done: Vec<TopicSecond>| {
        if let Some(r) = &records {
            for d in done {
                r.offer(Record::Second(d));
            }
        }
    };
    let mut seq = SequenceTracker::new();
    let mut device_keys = DeviceKeys::default();
    let mut groups: Vec<GroupReceived> = plan
        .groups
        .as_ref()
        .map(|g| g.names.iter().map(|_| GroupReceived::default()).collect())
        .unwrap_or_default();
    let mut interval = LatencyHistogram::new();
    let mut interval_corrected = LatencyHistogram::new();
    let mut interval_received = 0u64;
    let mut interval_topics: HashMap<String, TopicInterval> = HashMap::new();
    let (handoff, intervals) = tokio::sync::mpsc::unbounded_channel::<Interval>();
    let aggregator = {
        let live = live.clone();
        tokio::spawn(async move {
            let mut intervals = intervals;
            while let Some(interval) = intervals.recv().await {
                live.add_interval(interval);
            }
        })
    };
    let hand_off = move |received: u64,
                         interval_received: &mut u64,
                         seq: SeqCounts,
                         undecodable: u64,
                         latency: &mut LatencyHistogram,
                         corrected: &mut LatencyHistogram,
                         topics: &mut HashMap<String, TopicInterval>| {
        let _ = handoff.send(Interval {
            received,
            interval_received: std::mem::take(interval_received),
            seq,
            undecodable,
            latency: std::mem::take(latency),
            corrected: std::mem::take(corrected),
            topics: std::mem::take(topics),
        });
    };
    let mut received = 0u64;
    let mut unique = 0u64;
    let mut duplicates = 0u64;
    let mut undecodable: BTreeMap<String, u64> = BTreeMap::new();
    let mut future_stamps = 0u64;
    let mut disconnections = 0u64;
    let mut connected = true;
    let mut first: Option<Instant> = None;
    let mut last = Instant::now();
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let deadline = plan.duration.map(|d| tokio::time::Instant::now() + d);
    let until_deadline = async {
        match deadline {
            Some(d) => tokio::time::sleep_until(d).await,
            None => std::future::pending().await,
        }
    };
    tokio::pin!(until_deadline);
    loop {
        tokio::select! {
            biased;
            _ = stop.cancelled() => break,
            _ = &mut until_deadline => break,
            _ = tick.tick() => {
                hand_off(
                    received,
                    &mut interval_received,
                    seq.counts(),
                    undecodable.values().sum(),
                    &mut interval,
                    &mut interval_corrected,
                    &mut interval_topics,
                );
                if records.is_some() {
                    offer_all(per_topic.flush(Some(now_us() / 1_000_000)));
                }
            }
            message = subscriber.recv() => {
                let message = match message {
                    Ok(m) => {
                        connected = true;
                        m
                    }
                    Err(e) => {
                        // One outage counts once, however many reconnect attempts it takes.
                        if connected {
                            disconnections += 1;
                            connected = false;
                        }
                        tracing::warn!("{e:#}; reconnecting");
                        continue;
                    }
                };
                received += 1;
                interval_received += 1;
                let topic_totals = if live.topic_detail {
                    // One lookup per message; a new topic is added while under the cap.
                    let full = interval_topics.len() >= MAX_DETAIL_TOPICS;
                    let mut t = match interval_topics.get_mut(&message.topic) {
                        Some(t) => Some(t),
                        None if full => None,
                        None => Some(interval_topics.entry(message.topic.clone()).or_default()),
                    };
                    if let Some(t) = &mut t {
                        t.received += 1;
                    }
                    t
                } else {
                    None
                };
                let now = Instant::now();
                first.get_or_insert(now);
                last = now;
                let second = message.received_us / 1_000_000;
                let stamp = match plan
                    .decoder
                    .decode(&message.payload, &message.headers, message.record_time_us) {
                    Ok(s) => s,
                    Err(e) => {
                        *undecodable.entry(e.kind().to_string()).or_default() += 1;
                        if records.is_some() {
                            let done = per_topic.add(&message.topic, second, Outcome::Undecodable);
                            offer_all(done.into_iter().collect());
                        }
                        continue;
                    }
                };
                let device = device_keys.key(stamp.device.as_ref(), &message.topic);
                let mut group = plan
                    .groups
                    .as_ref()
                    .and_then(|g| g.by_topic.get(&message.topic))
                    .and_then(|&i| groups.get_mut(i));
                if let Some(g) = &mut group {
                    g.received += 1;
                }
                let gaps_before = seq.counts().gaps;
                let arrival = match stamp.seq {
                    Some(n) => seq.observe(device, n),
                    None => seq.observe_unnumbered(),
                };
                let new_gaps = seq.counts().gaps.saturating_sub(gaps_before);
                let future = message.received_us < stamp.sent_us;
                let raw_us = message.received_us.saturating_sub(stamp.sent_us);
                let corrected_us = message.received_us.saturating_sub(stamp.intended_us);
                if let Some(r) = &records {
                    let outcome = match (arrival, future) {
                        (Arrival::Duplicate, _) => Outcome::Duplicate,
                        (_, true) => Outcome::Unmeasured { new_gaps },
                        (Arrival::Late, false) => Outcome::Late { raw_us, corrected_us },
                        (Arrival::New, false) => Outcome::Measured { raw_us, corrected_us, new_gaps },
                    };
                    offer_all(per_topic.add(&message.topic, second, outcome).into_iter().collect());
                    if plan.raw && arrival != Arrival::Duplicate {
                        r.offer(Record::Raw(
                            message.topic.clone(),
                            RawRecord {
                                device,
                                seq: stamp.seq.unwrap_or(0),
                                intended_us: stamp.intended_us,
                                sent_us: stamp.sent_us,
                                received_us: message.received_us,
                            },
                        ));
                    }
                }
                if arrival == Arrival::Duplicate {
                    duplicates += 1;
                    live.count_arrivals(unique, unique + duplicates);
                    continue;
                }
                unique += 1;
                if let Some(g) = &mut group {
                    g.unique += 1;
                    if !future {
                        g.latency.record(raw_us);
                        g.latency_corrected.record(corrected_us);
                    }
                }
                if future {
                    future_stamps += 1;
                } else {
                    interval.record(raw_us);
                    interval_corrected.record(corrected_us);
                    if let Some(t) = topic_totals {
                        t.samples.record(raw_us, corrected_us);
                    }
                }
                live.count_arrivals(unique, unique + duplicates);
            }
        }
    }
    let dropped_by_client = subscriber.dropped();
    let (backlog_peak_bytes, backlog_behind) = backlog.finish();
    hand_off(
        received,
        &mut interval_received,
        seq.counts(),
        undecodable.values().sum(),
        &mut interval,
        &mut interval_corrected,
        &mut interval_topics,
    );
    drop(hand_off);
    if aggregator.await.is_err() {
        tracing::warn!("the collector's aggregator task failed: the totals may miss a second");
    }
    // The run's latency histograms are the live totals, which now hold every interval.
    let totals = live.totals();
    offer_all(per_topic.flush(None));
    let _ = subscriber.close().await;
    CollectReport {
        received,
        seq: seq.counts(),
        per_device: seq.per_device(),
        device_names: device_keys.into_names(),
        undecodable,
        future_stamps,
        latency: totals.latency,
        latency_corrected: totals.latency_corrected,
        disconnections,
        receive_span: first.map_or(Duration::ZERO, |f| last.saturating_duration_since(f)),
        dropped_by_client,
        backlog_peak_bytes,
        backlog_behind,
        groups,
    }
}

#[cfg(test)]
mod tests {
    use std::future::Future;
    use std::pin::pin;
    use std::task::{Context, Poll, Waker};

    use super::CollectorLive;

    fn poll_once(f: std::pin::Pin<&mut impl Future<Output = ()>>) -> Poll<()> {
        f.poll(&mut Context::from_waker(Waker::noop()))
    }

    #[test]
    fn a_drain_waits_for_the_last_copy_not_a_wake_up_left_by_the_first_target() {
        let live = CollectorLive::default();
        live.count_arrivals(2, 2);
        assert!(poll_once(pin!(live.wait_for(2))).is_ready());
        // Met again after the drain returned: leaves a wake-up nobody consumed.
        live.count_arrivals(2, 3);
        let mut copies = pin!(live.wait_for_arrivals(4));
        assert!(poll_once(copies.as_mut()).is_pending(), "3 of 4 copies");
        live.count_arrivals(2, 4);
        assert!(poll_once(copies.as_mut()).is_ready(), "4 of 4 copies");
    }

    #[test]
    fn a_drain_for_distinct_messages_ignores_duplicates() {
        let live = CollectorLive::default();
        let mut distinct = pin!(live.wait_for(3));
        assert!(poll_once(distinct.as_mut()).is_pending());
        live.count_arrivals(2, 5);
        assert!(poll_once(distinct.as_mut()).is_pending(), "2 distinct of 3");
        live.count_arrivals(3, 6);
        assert!(poll_once(distinct.as_mut()).is_ready());
    }
}
