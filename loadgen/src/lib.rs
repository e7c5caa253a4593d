//! The load generator: emulated devices, each on its own connection, publishing stamped
//! stimuli on an open-loop schedule.
//!
//! [`LoadArgs`] are the options, [`LoadArgs::resolve`] checks them into a [`LoadPlan`], and
//! [`run`] connects the devices (at `--connect-rate`) and drives their schedules until the
//! plan ends or `stop` is cancelled. Devices are split into a few shards, each one task
//! with a timer heap, so ten thousand devices do not mean ten thousand timers.

mod args;
mod fleet;
mod groups;
mod shard;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use iotload_core::args::Credentials;
use iotload_core::payload::StampEncoder;
use iotload_core::plan::{Rate, Template};
use iotload_core::recorder::LatencyHistogram;
use iotload_core::schedule::{Stages, Stop};
use iotload_core::transport::{Publisher, Transport, TransportError};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

pub use args::{FirstDevice, LoadArgs};
pub use fleet::Fleet;

/// A checked description of what the devices do: one group of alike devices, or the
/// groups of a `--fleet` file, numbered one after another from `first_device`.
#[derive(Debug, Clone)]
pub struct LoadPlan {
    /// The device groups, in device order (one without `--fleet`).
    pub groups: Vec<DeviceGroup>,
    /// Whether the groups come from a `--fleet` file (summaries then break results down
    /// by group).
    pub from_fleet_file: bool,
    /// Number of devices, all groups together.
    pub devices: u32,
    /// Number of the first device.
    pub first_device: u32,
    /// `--first-device auto`: `first_device` is still to be reserved in the results store
    /// ([`LoadPlan::reserve_devices`]).
    pub allocate_devices: bool,
    /// Advertise the action topics in the store.
    pub advertise: bool,
    /// Instances to wait for in the start barrier.
    pub wait_for: Option<u64>,
    /// Wall-clock start time.
    pub start_at: Option<std::time::SystemTime>,
    /// New connections per second.
    pub connect_rate: f64,
    /// How long publishers may take to flush at the end.
    pub drain_timeout: Duration,
    /// Each shard wakes at most once per this long and sends everything due by then
    /// (`--send-slack`; zero: a wake-up per due time).
    pub send_slack: Duration,
}

/// Devices that behave alike: rate, topics, body, identity.
#[derive(Debug, Clone)]
pub struct DeviceGroup {
    /// The group's name (`default` without `--fleet`).
    pub name: String,
    /// Index of the group's first device among the plan's devices.
    pub offset: u32,
    /// Number of devices.
    pub devices: u32,
    /// Messages per second per device.
    pub rate: Rate,
    /// When each device stops.
    pub stop: Stop,
    /// With stages: the per-device rate over the run (`rate` is then its peak and `stop`
    /// its end).
    pub stages: Option<Arc<Stages>>,
    /// Topic per device.
    pub topic: Template,
    /// Topic each device's actions arrive on: results are stored under it and it is what
    /// `--advertise` offers to collectors.
    pub action_topic: Template,
    /// Client id per device.
    pub client_id: Template,
    /// Credentials per device.
    pub credentials: Credentials,
    /// MQTT QoS of this group's publishes, when it differs from `--qos`.
    pub qos: Option<u8>,
    /// The stamp carrier and body.
    pub encoder: Arc<StampEncoder>,
}

impl DeviceGroup {
    /// Messages the group will send if nothing stops it early.
    pub fn planned(&self) -> u64 {
        match &self.stages {
            Some(stages) => iotload_core::schedule::total_staged_messages(self.devices, stages),
            None => {
                iotload_core::schedule::total_messages(self.devices, self.rate.per_s(), self.stop)
            }
        }
    }

    /// Whether the plan's device at `index` belongs to this group.
    pub fn holds(&self, index: u32) -> bool {
        index >= self.offset && index - self.offset < self.devices
    }
}

impl LoadPlan {
    /// For `--first-device auto`: reserves this instance's block of device numbers in
    /// `store` under `run_id` and starts the plan there. Does nothing otherwise.
    pub async fn reserve_devices(
        &mut self,
        store: Option<&dyn iotload_core::store::Backend>,
        run_id: &str,
    ) -> Result<(), LoadgenError> {
        if !self.allocate_devices {
            return Ok(());
        }
        let store = store.ok_or(LoadgenError::NoStoreForAuto)?;
        let first = store
            .allocate_devices(run_id, self.devices)
            .await
            .map_err(LoadgenError::Fleet)?;
        self.first_device = first;
        self.allocate_devices = false;
        Ok(())
    }

    /// Messages the whole fleet will send if nothing stops it early.
    pub fn planned(&self) -> u64 {
        self.groups.iter().map(DeviceGroup::planned).sum()
    }

    /// The group of the device at `index` (counted from the first device).
    pub fn group_of(&self, index: u32) -> usize {
        self.groups
            .iter()
            .position(|g| g.holds(index))
            .unwrap_or(self.groups.len().saturating_sub(1))
    }

    /// The peak rate per device, averaged over the devices.
    pub fn rate_per_device(&self) -> f64 {
        let weighted: f64 = self
            .groups
            .iter()
            .map(|g| g.rate.per_s() * f64::from(g.devices))
            .sum();
        weighted / f64::from(self.devices.max(1))
    }

    /// Every device's action topic, by index from the first device.
    pub fn action_topics(&self) -> Vec<String> {
        self.groups
            .iter()
            .flat_map(|g| {
                (0..g.devices).map(move |i| g.action_topic.render(self.first_device + g.offset + i))
            })
            .collect()
    }

    /// The distinct subscription filters of the groups' topics (`action`: of their action
    /// topics), in group order.
    pub fn topic_filters(&self, action: bool) -> Vec<String> {
        let mut filters: Vec<String> = Vec::new();
        for g in &self.groups {
            let t = if action { &g.action_topic } else { &g.topic };
            let f = t.to_filter();
            if !filters.contains(&f) {
                filters.push(f);
            }
        }
        filters
    }

    /// The groups as the results store keeps them in the run record (`groups` of its
    /// configuration), so `iotload results` can tell which topic is whose.
    pub fn groups_record(&self) -> serde_json::Value {
        serde_json::Value::Array(
            self.groups
                .iter()
                .map(|g| {
                    serde_json::json!({
                        "name": g.name,
                        "first_device": self.first_device + g.offset,
                        "devices": g.devices,
                        "action_topic": g.action_topic.as_str(),
                    })
                })
                .collect(),
        )
    }
}

/// Counters the progress line and the store reporter read while devices run.
#[derive(Debug, Default)]
pub struct LoadStats {
    /// Messages sent per device, by index from the first device.
    pub per_device: Vec<AtomicU64>,
    /// Messages handed to the broker client so far.
    pub sent: AtomicU64,
    /// Publishes that failed so far.
    pub errors: AtomicU64,
    /// Devices connected so far.
    pub connected: AtomicU64,
    /// Each device's latest send lag behind its schedule, µs, by index from the first
    /// device (one store per send, in the device's own slot).
    pub last_lag_us: Vec<AtomicU64>,
    /// The CPU time of the devices' tasks (connecting, sending, closing); measures only
    /// when enabled (`iotload run` splits its CPU time by component).
    pub cpu: Arc<iotload_core::cpu_meter::CpuMeter>,
}

impl LoadStats {
    /// Counters for `devices` devices.
    pub fn new(devices: u32) -> Self {
        Self {
            per_device: (0..devices).map(|_| AtomicU64::new(0)).collect(),
            last_lag_us: (0..devices).map(|_| AtomicU64::new(0)).collect(),
            ..Self::default()
        }
    }

    /// The worst of the devices' latest send lags, µs.
    pub fn worst_lag_us(&self) -> u64 {
        self.last_lag_us
            .iter()
            .map(|l| l.load(Ordering::Relaxed))
            .max()
            .unwrap_or(0)
    }
}

/// What the devices did.
#[derive(Debug)]
pub struct LoadReport {
    /// Devices that connected.
    pub connected: u32,
    /// Devices that failed to connect.
    pub connect_failures: u32,
    /// The first connection error, if any device failed.
    pub first_connect_error: Option<String>,
    /// Messages handed to the broker client.
    pub sent: u64,
    /// Failed publishes.
    pub errors: u64,
    /// Connections lost during the run.
    pub disconnections: u64,
    /// Time without a connection, summed over devices.
    pub disconnected: Duration,
    /// Lateness of each send behind its schedule, µs.
    pub send_lag: LatencyHistogram,
    /// Time from the first due send to the last send.
    pub send_elapsed: Duration,
    /// What each device group did, in the plan's group order.
    pub groups: Vec<GroupReport>,
}

/// What one device group did.
#[derive(Debug, Default)]
pub struct GroupReport {
    /// Messages handed to the broker client.
    pub sent: u64,
    /// Failed publishes.
    pub errors: u64,
    /// Lateness of each send behind its schedule, µs.
    pub send_lag: LatencyHistogram,
}

/// Why the load generator could not run.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LoadgenError {
    /// Not a single device could connect.
    #[error("no device could connect")]
    NoDevice(#[source] TransportError),
    /// The store refused the advertisement, the start barrier or a device block.
    #[error("coordinating with the fleet through the results store failed")]
    Fleet(#[source] iotload_core::store::StoreError),
    /// `--first-device auto` without a store to reserve the block in.
    #[error(
        "--first-device auto reserves device numbers in the results store, but there is \
         none (--store none); give --store redis://... shared by the loadgens, or a number"
    )]
    NoStoreForAuto,
}

/// Connects the devices, runs their schedules, then flushes and closes every connection.
pub async fn run<T: Transport>(
    transport: Arc<T>,
    plan: &LoadPlan,
    fleet: &Fleet,
    stats: Arc<LoadStats>,
    stop: CancellationToken,
) -> Result<LoadReport, LoadgenError> {
    let (publishers, failures, first_error) = connect_all(&transport, plan, &stats, &stop).await;
    if publishers.is_empty()
        && let Some(e) = first_error
    {
        return Err(LoadgenError::NoDevice(e));
    }
    let fleet_stop = CancellationToken::new();
    let advertiser = if plan.advertise {
        fleet
            .advertise(plan, fleet_stop.clone())
            .await
            .map_err(LoadgenError::Fleet)?
    } else {
        None
    };
    fleet.publish_clock().await;
    fleet
        .wait_for_start(plan.wait_for, plan.start_at, &stop)
        .await
        .map_err(LoadgenError::Fleet)?;
    let reporter = fleet.report_sent(plan, stats.clone(), fleet_stop.clone());
    let connected = publishers.len() as u32;
    let first_connect_error = first_error.map(|e| format!("{e:#}"));

    let shard_count = shard_count(publishers.len(), plan.send_slack);
    let mut shards: Vec<Vec<shard::Device<T::Publisher>>> =
        (0..shard_count).map(|_| Vec::new()).collect();
    for (i, (device, publisher)) in publishers.into_iter().enumerate() {
        shards[i % shard_count].push(shard::Device::new(device, publisher, plan));
    }
    let clock = shard::Clock::start();
    let encoders: Vec<Arc<StampEncoder>> = plan.groups.iter().map(|g| g.encoder.clone()).collect();
    let mut tasks = JoinSet::new();
    for devices in shards {
        let stats = stats.clone();
        let stop = stop.clone();
        let cpu = stats.cpu.clone();
        tasks.spawn(cpu.wrap(shard::drive(
            devices,
            clock,
            encoders.clone(),
            plan.send_slack,
            stats,
            stop,
        )));
    }
    let mut groups: Vec<GroupReport> = plan.groups.iter().map(|_| GroupReport::default()).collect();
    let mut last_send = clock.instant;
    let mut to_close = Vec::new();
    while let Some(done) = tasks.join_next().await {
        let Ok(done) = done else { continue };
        for (total, part) in groups.iter_mut().zip(&done.groups) {
            total.sent += part.sent;
            total.errors += part.errors;
            total.send_lag.add(&part.send_lag);
        }
        last_send = last_send.max(done.last_send);
        to_close.extend(done.publishers);
    }
    let mut send_lag = LatencyHistogram::new();
    for g in &groups {
        send_lag.add(&g.send_lag);
    }
    let sent = groups.iter().map(|g| g.sent).sum();
    let errors = groups.iter().map(|g| g.errors).sum();
    let disconnections = to_close.iter().map(Publisher::disconnections).sum();
    let disconnected = to_close.iter().map(Publisher::disconnected_for).sum();
    close_all(to_close, plan.drain_timeout, &stats.cpu).await;
    fleet_stop.cancel();
    for task in [advertiser, reporter].into_iter().flatten() {
        let _ = task.await;
    }
    Ok(LoadReport {
        connected,
        connect_failures: failures,
        first_connect_error,
        sent,
        errors,
        disconnections,
        disconnected,
        send_lag,
        send_elapsed: last_send.saturating_duration_since(clock.instant),
        groups,
    })
}

fn shard_count(devices: usize, slack: Duration) -> usize {
    let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
    // Four per core spread the work; with a send slack, one per core, so that a wake-up
    // finds several sends due (measured in BENCHMARKS.md, issue #23).
    let per_core = if slack.is_zero() { 4 } else { 1 };
    devices.clamp(1, cores * per_core)
}

/// The outcome of connecting the devices.
struct Connected<P> {
    publishers: Vec<(u32, P)>,
    failures: u32,
    first_error: Option<TransportError>,
}

impl<P> Connected<P> {
    fn absorb(&mut self, joined: Result<(u32, Result<P, TransportError>), tokio::task::JoinError>) {
        match joined {
            Ok((device, Ok(p))) => self.publishers.push((device, p)),
            Ok((_, Err(e))) => {
                self.failures += 1;
                self.first_error.get_or_insert(e);
            }
            Err(_) => self.failures += 1,
        }
    }
}

/// Opens one connection per device, `connect_rate` per second, at most 256 at once.
async fn connect_all<T: Transport>(
    transport: &Arc<T>,
    plan: &LoadPlan,
    stats: &Arc<LoadStats>,
    stop: &CancellationToken,
) -> (Vec<(u32, T::Publisher)>, u32, Option<TransportError>) {
    let limit = Arc::new(Semaphore::new(256));
    let start = Instant::now();
    let mut pending = JoinSet::new();
    let mut fleet = Connected {
        publishers: Vec::with_capacity(plan.devices as usize),
        failures: 0,
        first_error: None,
    };
    for i in 0..plan.devices {
        let due = start + Duration::from_secs_f64(f64::from(i) / plan.connect_rate);
        tokio::select! {
            _ = tokio::time::sleep_until(due.into()) => {}
            _ = stop.cancelled() => break,
        }
        let Ok(permit) = limit.clone().acquire_owned().await else {
            break;
        };
        while let Some(r) = pending.try_join_next() {
            fleet.absorb(r);
        }
        // Stop ramping when the first devices cannot connect: the broker is not there.
        if fleet.first_error.is_some() && fleet.publishers.is_empty() {
            break;
        }
        let device = plan.first_device + i;
        let group = &plan.groups[plan.group_of(i)];
        let mut identity = group
            .credentials
            .identity(group.client_id.render(device), device);
        identity.qos = group.qos;
        let transport = transport.clone();
        let stats = stats.clone();
        let cpu = stats.cpu.clone();
        pending.spawn(cpu.wrap(async move {
            let result = transport.publisher(&identity).await;
            if result.is_ok() {
                stats.connected.fetch_add(1, Ordering::Relaxed);
            }
            drop(permit);
            (device, result)
        }));
    }
    while let Some(r) = pending.join_next().await {
        fleet.absorb(r);
    }
    fleet.publishers.sort_by_key(|(d, _)| *d);
    (fleet.publishers, fleet.failures, fleet.first_error)
}

/// Closes every connection, at most 256 at once: a close in flight is a task of its own
/// (about 10 KB with its flush and DISCONNECT), and all of them at once made the close,
/// not the run, the loadgen's peak memory (BENCHMARKS.md, issue #23).
async fn close_all<P: Publisher>(
    publishers: Vec<P>,
    timeout: Duration,
    cpu: &Arc<iotload_core::cpu_meter::CpuMeter>,
) {
    const AT_ONCE: usize = 256;
    let mut publishers = publishers.into_iter();
    let mut closing = JoinSet::new();
    let _ = tokio::time::timeout(timeout.max(Duration::from_millis(100)), async {
        loop {
            while closing.len() < AT_ONCE {
                let Some(p) = publishers.next() else { break };
                closing.spawn(cpu.wrap(p.close()));
            }
            if closing.join_next().await.is_none() {
                break;
            }
        }
    })
    .await;
}

/// Makes sure the process may open a connection per device: raises the soft limit on open
/// files if needed and allowed, else says how.
pub fn ensure_open_files(devices: u32) -> Result<u64, PlanErrorFiles> {
    let need = u64::from(devices) + 256;
    let (soft, hard) = rlimit::Resource::NOFILE.get().map_err(|e| PlanErrorFiles {
        need,
        soft: 0,
        hard: 0,
        reason: e.to_string(),
    })?;
    if soft >= need {
        return Ok(soft);
    }
    if hard >= need && rlimit::Resource::NOFILE.set(need, hard).is_ok() {
        return Ok(need);
    }
    // Root (CAP_SYS_RESOURCE) may raise the hard limit too, up to fs.nr_open.
    if hard < need && rlimit::Resource::NOFILE.set(need, need).is_ok() {
        return Ok(need);
    }
    Err(PlanErrorFiles {
        need,
        soft,
        hard,
        reason: "the hard limit is too low, and this process may not raise it".into(),
    })
}

/// The open-file limit is too low for the number of devices.
#[derive(Debug, thiserror::Error)]
#[error(
    "{need} open files are needed (one per device plus spare) but the limit is {soft} \
     (hard {hard}): {reason}; raise it with `ulimit -n {need}` (as root, or in \
     /etc/security/limits.conf) or lower --devices"
)]
pub struct PlanErrorFiles {
    /// Files needed.
    pub need: u64,
    /// Current soft limit.
    pub soft: u64,
    /// Current hard limit.
    pub hard: u64,
    /// Why it could not be raised.
    pub reason: String,
}
