//! The load generator's options and their checks.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use clap::Args;
use iotload_core::args::{BrokerArgs, Credentials, StampArgs};
use iotload_core::payload::{Body, CarrierKind, StampEncoder};
use iotload_core::plan::{
    BrokerKind, PlanError, Rate, Template, parse_count, parse_duration, parse_per_second,
};
use iotload_core::schedule::{Stages, Stop};

use crate::{DeviceGroup, LoadPlan};

/// Where a loadgen's device numbers start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FirstDevice {
    /// This number.
    Number(u32),
    /// The next free block of the run, reserved in the results store.
    Auto,
}

impl std::fmt::Display for FirstDevice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FirstDevice::Number(n) => write!(f, "{n}"),
            FirstDevice::Auto => f.write_str("auto"),
        }
    }
}

fn parse_first_device(s: &str) -> Result<FirstDevice, String> {
    if s.eq_ignore_ascii_case("auto") {
        return Ok(FirstDevice::Auto);
    }
    s.parse()
        .map(FirstDevice::Number)
        .map_err(|_| format!("`{s}` is neither a device number (0 to 4294967295) nor `auto`"))
}

/// What the emulated devices send.
#[derive(Debug, Clone, Args)]
pub struct LoadArgs {
    /// Number of emulated devices, each with its own connection (accepts 10k).
    #[arg(long, env = "IOTLOAD_DEVICES", value_name = "N", default_value = "100",
          value_parser = parse_count)]
    pub devices: u64,

    /// Number of the first device, so several loadgen instances use distinct devices; or
    /// `auto`: reserve the next free block of --devices numbers of this run in the results
    /// store, so replicas started with the same settings (Compose, Kubernetes) never share
    /// a device or topic.
    #[arg(
        long,
        env = "IOTLOAD_FIRST_DEVICE",
        value_name = "N|auto",
        default_value = "0",
        value_parser = parse_first_device
    )]
    pub first_device: FirstDevice,

    /// Messages per second per device; fractional rates are allowed (0.2 = one every 5 s).
    #[arg(
        long,
        env = "IOTLOAD_RATE",
        value_name = "MSG_PER_S",
        default_value_t = 10.0,
        allow_negative_numbers = true
    )]
    pub rate: f64,

    /// How long each device sends (e.g. 30s, 2m).
    #[arg(long, env = "IOTLOAD_DURATION", value_name = "DURATION", default_value = "10s",
          value_parser = parse_duration)]
    pub duration: std::time::Duration,

    /// A load stage, repeatable (k6 style): DURATION:RATE moves the per-device rate
    /// linearly to RATE msg/s over DURATION; the run starts at the first stage's rate
    /// (a flat first stage). `--stage 30s:10/s --stage 2m:100/s` holds 10/s for 30 s, then
    /// ramps to 100/s; a spike is a short stage up, a hold and a short stage down. Stages
    /// replace --rate and --duration.
    #[arg(long = "stage", env = "IOTLOAD_STAGE", value_name = "DURATION:RATE",
          value_delimiter = ',', value_parser = parse_stage)]
    pub stages: Vec<(Duration, f64)>,

    /// Messages per device; when given, replaces --duration.
    #[arg(long, env = "IOTLOAD_COUNT", value_name = "N", value_parser = parse_count)]
    pub count: Option<u64>,

    /// Topic per device; `{device}` is the device number.
    #[arg(
        long,
        env = "IOTLOAD_TOPIC",
        value_name = "TEMPLATE",
        default_value = "iot/{device}/telemetry"
    )]
    pub topic: String,

    /// Topic each device's actions arrive on (`{device}` is the device number): results
    /// are stored under it, and `--advertise` offers it to collectors.
    #[arg(
        long,
        env = "IOTLOAD_ACTION_TOPIC",
        value_name = "TEMPLATE",
        default_value = "iot/{device}/action"
    )]
    pub action_topic: String,

    /// Advertise each device's action topic in the results store, so collectors started
    /// with --claim consume them one to one.
    #[arg(long, env = "IOTLOAD_ADVERTISE")]
    pub advertise: bool,

    /// Before sending, wait until this many instances of the run (same --run-id) have
    /// joined the start barrier in the results store.
    #[arg(long, env = "IOTLOAD_WAIT_FOR", value_name = "N")]
    pub wait_for: Option<u64>,

    /// Start sending at this time: RFC 3339 (2026-11-25T10:00:00Z) or Unix seconds.
    #[arg(long, env = "IOTLOAD_START_AT", value_name = "TIME", value_parser = parse_start_at)]
    pub start_at: Option<std::time::SystemTime>,

    /// Client id per device; `{device}` is the device number.
    #[arg(
        long,
        env = "IOTLOAD_CLIENT_ID",
        value_name = "TEMPLATE",
        default_value = "dev-{device}"
    )]
    pub client_id: String,

    /// Message body: a JSON object (the stamp fields are added to it; its strings may hold
    /// per-message placeholders such as {int:0..100}, {walk:15..30:0.1} or
    /// {choice:a|b}, see docs/measurement.md) or any text.
    #[arg(
        long,
        env = "IOTLOAD_PAYLOAD",
        value_name = "TEXT",
        conflicts_with = "payload_file"
    )]
    pub payload: Option<String>,

    /// Read the message body from this file.
    #[arg(long, env = "IOTLOAD_PAYLOAD_FILE", value_name = "PATH")]
    pub payload_file: Option<PathBuf>,

    /// Minimum message size; padding is added to reach it.
    #[arg(
        long,
        env = "IOTLOAD_PAYLOAD_SIZE",
        value_name = "BYTES",
        default_value_t = 0
    )]
    pub payload_size: usize,

    /// A YAML file of device groups (a mixed fleet), each with its own `devices`, `rate`
    /// or `stages`, `payload`, `topic`, `action_topic`, `client_id`, `device_id`, `qos`,
    /// `username` and `password`; what a group does not set comes from the options.
    /// Summaries and `iotload results show` break results down by group. See
    /// docs/fleet.md.
    #[arg(long, env = "IOTLOAD_FLEET", value_name = "PATH")]
    pub fleet: Option<PathBuf>,

    /// Fewer timer wake-ups for less CPU: each wake-up sends everything due within this
    /// long (e.g. 150us), so sends go out up to this late, counted in send lag and in the
    /// corrected latency; 0 wakes for every due time. At most 10ms.
    #[arg(long, env = "IOTLOAD_SEND_SLACK", value_name = "DURATION", default_value = "0s",
          value_parser = parse_duration)]
    pub send_slack: Duration,

    /// New connections per second while devices connect, so thousands of devices do not
    /// storm the broker.
    #[arg(
        long,
        env = "IOTLOAD_CONNECT_RATE",
        value_name = "CONN_PER_S",
        default_value_t = 1000.0
    )]
    pub connect_rate: f64,
}

impl LoadArgs {
    /// Checks every value and builds the plan.
    pub fn resolve(
        &self,
        broker: &BrokerArgs,
        stamp: &StampArgs,
        drain_timeout: Duration,
    ) -> Result<LoadPlan, PlanError> {
        let (first_device, allocate_devices) = match self.first_device {
            FirstDevice::Number(n) => (n, false),
            FirstDevice::Auto => (0, true),
        };
        if !(self.connect_rate.is_finite() && self.connect_rate > 0.0) {
            return Err(PlanError::BadValue {
                option: "--connect-rate",
                reason: format!(
                    "{} is not a positive rate; give e.g. 500",
                    self.connect_rate
                ),
            });
        }
        if self.send_slack > Duration::from_millis(10) {
            return Err(PlanError::BadValue {
                option: "--send-slack",
                reason: format!(
                    "{:?} would make sends that late on purpose; give at most 10ms (e.g. 150us)",
                    self.send_slack
                ),
            });
        }
        // Without --broker, `iotload run` uses its embedded MQTT broker.
        let kind = broker.url()?.map_or(BrokerKind::Mqtt, |url| url.kind);
        let credentials = broker.credentials()?;
        let (groups, from_fleet_file) = match &self.fleet {
            None => {
                let context = GroupContext {
                    broker,
                    stamp: stamp.clone(),
                    kind,
                    credentials: credentials.clone(),
                    qos: None,
                };
                let group = self.resolve_group("default".into(), 0, &context)?;
                (vec![group], false)
            }
            Some(path) => {
                let groups = crate::groups::resolve(path, self, broker, stamp, kind, &credentials)?;
                (groups, true)
            }
        };
        let devices = groups
            .iter()
            .try_fold(0u32, |sum, g| sum.checked_add(g.devices))
            .ok_or_else(|| PlanError::BadValue {
                option: "--fleet",
                reason: format!("the groups hold more than {} devices", u32::MAX),
            })?;
        if first_device.checked_add(devices).is_none() {
            return Err(PlanError::BadValue {
                option: "--first-device",
                reason: "first device plus devices exceeds 4294967295".into(),
            });
        }
        for g in &groups {
            if allocate_devices && matches!(g.credentials, Credentials::Table(_)) {
                return Err(PlanError::BadValue {
                    option: "--first-device",
                    reason: "`auto` cannot be used with --credentials-file, whose rows are by \
                             device number; give each instance its --first-device"
                        .into(),
                });
            }
            g.credentials
                .check_rows(first_device + g.offset, g.devices)?;
        }
        Ok(LoadPlan {
            groups,
            from_fleet_file,
            devices,
            first_device,
            allocate_devices,
            advertise: self.advertise,
            wait_for: self.wait_for,
            start_at: self.start_at,
            connect_rate: self.connect_rate,
            drain_timeout,
            send_slack: self.send_slack,
        })
    }

    /// Checks the options that describe one group of devices (all of them without
    /// `--fleet`; a fleet file's group sets some of them) and builds the group.
    pub(crate) fn resolve_group(
        &self,
        name: String,
        offset: u32,
        context: &GroupContext<'_>,
    ) -> Result<DeviceGroup, PlanError> {
        let devices = u32::try_from(self.devices)
            .ok()
            .filter(|&d| d > 0)
            .ok_or_else(|| PlanError::BadValue {
                option: "--devices",
                reason: format!("{} is not between 1 and {}", self.devices, u32::MAX),
            })?;
        let rate = Rate::new(self.rate)?;
        let stages = if self.stages.is_empty() {
            None
        } else if self.count.is_some() {
            return Err(PlanError::BadValue {
                option: "--stage",
                reason: "stages say how long the run lasts, so --count cannot be given too".into(),
            });
        } else {
            let stages = Stages::new(&self.stages).map_err(|reason| PlanError::BadValue {
                option: "--stage",
                reason,
            })?;
            Some(Arc::new(stages))
        };
        let rate = match &stages {
            Some(stages) => Rate::new(stages.peak())?,
            None => rate,
        };
        let stop = match self.count {
            _ if stages.is_some() => {
                Stop::After(stages.as_ref().map_or(self.duration, |s| s.duration()))
            }
            Some(0) => {
                return Err(PlanError::BadValue {
                    option: "--count",
                    reason: "0 messages per device sends nothing; give at least 1".into(),
                });
            }
            Some(n) => Stop::Count(n),
            None if self.duration.is_zero() => {
                return Err(PlanError::BadValue {
                    option: "--duration",
                    reason: "a zero duration sends nothing; give e.g. 10s".into(),
                });
            }
            None => Stop::After(self.duration),
        };
        let topic = Template::parse(&self.topic)?;
        let action_topic = Template::parse(&self.action_topic)?;
        let client_id = Template::parse(&self.client_id)?;
        if devices > 1 && !client_id.has_device() {
            return Err(PlanError::BadValue {
                option: "--client-id",
                reason: format!(
                    "`{}` gives every device the same client id, so the broker would \
                     disconnect all but one; include {{device}}",
                    self.client_id
                ),
            });
        }
        let body = match (&self.payload, &self.payload_file) {
            (Some(text), _) => Body::from_bytes(text.clone().into_bytes()),
            (None, Some(path)) => Body::from_file(path)?,
            (None, None) => Body::Empty,
        };
        let (broker, stamp) = (context.broker, &context.stamp);
        stamp.check_record_time(Some(context.kind))?;
        if stamp.carrier == CarrierKind::Header
            && let Some(reason) = broker.header_stamp_problem(context.kind)
        {
            return Err(PlanError::BadValue {
                option: "--stamp",
                reason,
            });
        }
        let encoder = StampEncoder::new(
            stamp.carrier,
            stamp.json_format()?,
            &body,
            self.payload_size,
        )?;
        Ok(DeviceGroup {
            name,
            offset,
            devices,
            rate,
            stop,
            stages,
            topic,
            action_topic,
            client_id,
            credentials: context.credentials.clone(),
            qos: context.qos,
            encoder: Arc::new(encoder),
        })
    }
}

/// What a group is built with besides its own options.
pub(crate) struct GroupContext<'a> {
    pub(crate) broker: &'a BrokerArgs,
    pub(crate) stamp: StampArgs,
    pub(crate) kind: BrokerKind,
    pub(crate) credentials: Credentials,
    pub(crate) qos: Option<u8>,
}

/// Parses one `--stage`: `DURATION:RATE`, the rate as `100/s` or `100`.
pub(crate) fn parse_stage(value: &str) -> Result<(Duration, f64), String> {
    let expected = || format!("`{value}` is not a stage; give DURATION:RATE, e.g. 30s:100/s");
    let (span, rate) = value.trim().split_once(':').ok_or_else(expected)?;
    let span = parse_duration(span.trim()).map_err(|_| expected())?;
    let rate = parse_per_second(rate).ok_or_else(expected)?;
    Ok((span, rate))
}

/// Parses `--start-at`: RFC 3339 or Unix seconds.
fn parse_start_at(value: &str) -> Result<std::time::SystemTime, String> {
    if let Ok(secs) = value.trim().parse::<f64>()
        && secs.is_finite()
        && secs >= 0.0
    {
        return Ok(std::time::UNIX_EPOCH + Duration::from_secs_f64(secs));
    }
    chrono::DateTime::parse_from_rfc3339(value.trim())
        .map(std::time::SystemTime::from)
        .map_err(|e| {
            format!("`{value}` is not a time ({e}); give e.g. 2026-11-25T10:00:00Z or Unix seconds")
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn start_at_accepts_rfc3339_and_unix_seconds() {
        let a = parse_start_at("2026-11-25T10:00:00Z").unwrap();
        let b = parse_start_at("1795600800").unwrap();
        assert_eq!(a, b);
        let e = parse_start_at("tomorrow").unwrap_err();
        assert!(e.contains("2026-11-25T10:00:00Z"), "{e}");
    }
}
