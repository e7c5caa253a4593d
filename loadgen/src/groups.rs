//! The `--fleet` file: a mixed fleet as device groups, each a set of the loadgen's options
//! (count, rate or stages, body, topics, identity, QoS) over the command line's values.

use std::path::{Path, PathBuf};

use iotload_core::args::{BrokerArgs, Credentials, StampArgs};
use iotload_core::plan::{BrokerKind, PlanError, Template, parse_duration, parse_per_second};
use serde::Deserialize;

use crate::args::{GroupContext, parse_stage};
use crate::{DeviceGroup, LoadArgs};

/// The file: `groups:` and nothing else.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FleetFile {
    groups: Vec<GroupSpec>,
}

/// One group as written; what is absent comes from the options.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct GroupSpec {
    name: String,
    devices: u64,
    rate: Option<RateSpec>,
    duration: Option<String>,
    count: Option<u64>,
    stages: Option<Vec<String>>,
    topic: Option<String>,
    action_topic: Option<String>,
    client_id: Option<String>,
    device_id: Option<String>,
    payload: Option<serde_json::Value>,
    payload_file: Option<PathBuf>,
    payload_size: Option<usize>,
    qos: Option<u8>,
    username: Option<String>,
    password: Option<String>,
}

/// A rate as a number or as `10/s`.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum RateSpec {
    Number(f64),
    Text(String),
}

fn bad(reason: String) -> PlanError {
    PlanError::BadValue {
        option: "--fleet",
        reason,
    }
}

/// An error with its causes, on one line.
fn with_causes(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        text.push_str(": ");
        text.push_str(&c.to_string());
        cause = c.source();
    }
    text
}

/// Reads the fleet file at `path` and builds its groups over `base`'s options, numbered
/// one after another in the file's order.
pub(crate) fn resolve(
    path: &Path,
    base: &LoadArgs,
    broker: &BrokerArgs,
    stamp: &StampArgs,
    kind: BrokerKind,
    credentials: &Credentials,
) -> Result<Vec<DeviceGroup>, PlanError> {
    let text = std::fs::read_to_string(path).map_err(|source| PlanError::File {
        option: "--fleet",
        path: path.display().to_string(),
        source,
    })?;
    let file: FleetFile = serde_saphyr::from_str(&text).map_err(|e| {
        bad(format!(
            "{} is not a fleet file ({e}); it holds `groups:`, a list of groups each with \
             at least `name` and `devices`",
            path.display()
        ))
    })?;
    if file.groups.is_empty() {
        return Err(bad(format!("{} has no groups", path.display())));
    }
    let dir = path.parent().unwrap_or(Path::new("."));
    let mut groups: Vec<DeviceGroup> = Vec::with_capacity(file.groups.len());
    let mut offset = 0u32;
    for spec in file.groups {
        let name = spec.name.trim().to_string();
        let valid = !name.is_empty()
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
        if !valid {
            return Err(bad(format!(
                "group name `{}` must be letters, digits, `-` or `_`",
                spec.name
            )));
        }
        if groups.iter().any(|g| g.name == name) {
            return Err(bad(format!("two groups are named `{name}`")));
        }
        let in_group = |e: PlanError| bad(format!("group `{name}`: {}", with_causes(&e)));
        let context = spec
            .context(broker, stamp, kind, credentials)
            .map_err(in_group)?;
        let args = spec.args(base, dir).map_err(in_group)?;
        let group = args
            .resolve_group(name.clone(), offset, &context)
            .map_err(in_group)?;
        offset = offset
            .checked_add(group.devices)
            .ok_or_else(|| bad(format!("the groups hold more than {} devices", u32::MAX)))?;
        groups.push(group);
    }
    check_routes(&groups)?;
    Ok(groups)
}

/// Two groups publishing on the same topics must answer on the same action topics, or the
/// echo could not tell where an answer goes; and no two groups may share action topics,
/// or results could not be told apart by group.
fn check_routes(groups: &[DeviceGroup]) -> Result<(), PlanError> {
    for (i, a) in groups.iter().enumerate() {
        for b in &groups[i + 1..] {
            if a.topic.to_filter() == b.topic.to_filter()
                && a.action_topic.as_str() != b.action_topic.as_str()
            {
                return Err(bad(format!(
                    "groups `{}` and `{}` publish on the same topics ({}) but want different \
                     action topics; give each group its own `topic`",
                    a.name,
                    b.name,
                    a.topic.to_filter()
                )));
            }
            if !a.action_topic.has_device() && a.action_topic.as_str() == b.action_topic.as_str() {
                return Err(bad(format!(
                    "groups `{}` and `{}` share the action topic `{}`, so their results \
                     could not be told apart; include {{device}} or give each its own",
                    a.name,
                    b.name,
                    a.action_topic.as_str()
                )));
            }
        }
    }
    Ok(())
}

impl GroupSpec {
    /// The loadgen's options with this group's values in place.
    fn args(&self, base: &LoadArgs, dir: &Path) -> Result<LoadArgs, PlanError> {
        let mut args = base.clone();
        args.fleet = None;
        args.devices = self.devices;
        if let Some(rate) = &self.rate {
            args.rate = match rate {
                RateSpec::Number(n) => *n,
                RateSpec::Text(t) => parse_per_second(t).ok_or_else(|| PlanError::BadValue {
                    option: "rate",
                    reason: format!("`{}` is not a rate; give e.g. 10/s or 0.5", t.trim()),
                })?,
            };
        }
        if let Some(d) = &self.duration {
            args.duration = parse_duration(d).map_err(|reason| PlanError::BadValue {
                option: "duration",
                reason,
            })?;
        }
        if let Some(n) = self.count {
            args.count = Some(n);
        }
        if let Some(stages) = &self.stages {
            args.stages = stages
                .iter()
                .map(|s| parse_stage(s))
                .collect::<Result<_, _>>()
                .map_err(|reason| PlanError::BadValue {
                    option: "stages",
                    reason,
                })?;
            // A group's stages replace the options' count and duration, as --stage does.
            args.count = None;
        }
        if let Some(t) = &self.topic {
            args.topic.clone_from(t);
        }
        if let Some(t) = &self.action_topic {
            args.action_topic.clone_from(t);
        }
        if let Some(t) = &self.client_id {
            args.client_id.clone_from(t);
        }
        match (&self.payload, &self.payload_file) {
            (Some(_), Some(_)) => {
                return Err(PlanError::BadValue {
                    option: "payload",
                    reason: "give `payload` or `payload_file`, not both".into(),
                });
            }
            (Some(serde_json::Value::String(text)), None) => {
                args.payload = Some(text.clone());
                args.payload_file = None;
            }
            (Some(body), None) => {
                args.payload = Some(body.to_string());
                args.payload_file = None;
            }
            (None, Some(file)) => {
                args.payload = None;
                args.payload_file = Some(dir.join(file));
            }
            (None, None) => {}
        }
        if let Some(size) = self.payload_size {
            args.payload_size = size;
        }
        Ok(args)
    }

    /// The stamp, credentials and QoS this group's devices use.
    fn context<'a>(
        &self,
        broker: &'a BrokerArgs,
        stamp: &StampArgs,
        kind: BrokerKind,
        credentials: &Credentials,
    ) -> Result<GroupContext<'a>, PlanError> {
        if let Some(qos) = self.qos {
            if kind != BrokerKind::Mqtt {
                return Err(PlanError::BadValue {
                    option: "qos",
                    reason: format!(
                        "QoS levels are MQTT's; this broker is {kind:?}, so leave `qos` out"
                    ),
                });
            }
            if qos > 2 {
                return Err(PlanError::BadValue {
                    option: "qos",
                    reason: format!("{qos} is not an MQTT QoS; give 0, 1 or 2"),
                });
            }
        }
        let credentials = if self.username.is_some() || self.password.is_some() {
            let template = |t: &Option<String>| t.as_deref().map(Template::parse).transpose();
            Credentials::Templates {
                username: template(&self.username)?,
                password: template(&self.password)?,
            }
        } else {
            credentials.clone()
        };
        let mut stamp = stamp.clone();
        if let Some(id) = &self.device_id {
            stamp.device_id = Some(id.clone());
        }
        Ok(GroupContext {
            broker,
            stamp,
            kind,
            credentials,
            qos: self.qos,
        })
    }
}
