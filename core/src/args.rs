//! Option groups every component shares: broker connection, credentials, TLS, stamp.
//!
//! Each option is a flag, an `IOTLOAD_*` environment variable and a key of the `--config`
//! YAML file (merged by the binary). `resolve`-style methods here turn them into the
//! typed settings the engine uses; they are the only place these values are checked.

use std::path::PathBuf;
use std::time::Duration;

use clap::Args;

use crate::payload::{CarrierKind, JsonStampFormat};
use crate::plan::{BrokerKind, BrokerUrl, PlanError, Template, parse_duration};
use crate::stamp::{DeviceIdFormat, JsonFields};
use crate::transport::ClientIdentity;
use crate::transport::registry::BrokerFlags;
#[cfg(feature = "tls")]
use crate::transport::tls::TlsSettings;

/// How to reach and talk to the broker.
#[derive(Debug, Clone, Args)]
pub struct BrokerArgs {
    /// Broker URL: mqtt://host:port, or mqtts://host:port for TLS; nats://host:port, or
    /// tls://host:port for NATS over TLS; amqp://user:password@host:5672/vhost, or
    /// amqps://...; kafka://host:port, or kafka+tls://host:port; zmq+tcp://host:port (an
    /// iotload zmq-proxy); pulsar://host:6650, or pulsar+ssl://host:6651.
    ///
    /// `iotload run` starts an embedded broker when this is not given.
    #[arg(long, env = "IOTLOAD_BROKER", value_name = "URL")]
    pub broker: Option<String>,

    /// Keep-alive interval (e.g. 30s); for Pulsar, the interval of pings on the connection.
    #[arg(long, env = "IOTLOAD_KEEP_ALIVE", value_name = "DURATION", default_value = "30s",
          value_parser = parse_duration)]
    pub keep_alive: Duration,

    /// User name; `{device}` is replaced by the device number.
    #[arg(long, env = "IOTLOAD_USERNAME", value_name = "TEMPLATE")]
    pub username: Option<String>,

    /// Password; `{device}` is replaced by the device number.
    ///
    /// Prefer the IOTLOAD_PASSWORD variable or --password-file: command lines are visible
    /// to other users of the machine.
    #[arg(
        long,
        env = "IOTLOAD_PASSWORD",
        value_name = "TEMPLATE",
        hide_env_values = true
    )]
    pub password: Option<String>,

    /// File whose first line is the password (or password template).
    #[arg(long, env = "IOTLOAD_PASSWORD_FILE", value_name = "PATH")]
    pub password_file: Option<PathBuf>,

    /// CSV file of per-device credentials: a header `username,password`, then one row per
    /// device in device order.
    #[arg(long, env = "IOTLOAD_CREDENTIALS_FILE", value_name = "PATH")]
    pub credentials_file: Option<PathBuf>,

    /// CA certificates (PEM) that sign the broker's certificate; the system roots if not given.
    #[arg(long, env = "IOTLOAD_CA_FILE", value_name = "PATH")]
    pub ca_file: Option<PathBuf>,

    /// Client certificate (PEM) for mutual TLS; needs --key-file.
    #[arg(long, env = "IOTLOAD_CERT_FILE", value_name = "PATH")]
    pub cert_file: Option<PathBuf>,

    /// Client private key (PEM) for mutual TLS; needs --cert-file.
    #[arg(long, env = "IOTLOAD_KEY_FILE", value_name = "PATH")]
    pub key_file: Option<PathBuf>,

    /// Accept any broker certificate. For testing only: the connection can be intercepted.
    #[arg(long, env = "IOTLOAD_INSECURE")]
    pub insecure: bool,

    /// How long to wait for the broker to accept a connection or subscription.
    #[arg(long, env = "IOTLOAD_CONNECT_TIMEOUT", value_name = "DURATION", default_value = "10s",
          value_parser = parse_duration)]
    pub connect_timeout: Duration,

    /// Messages each connection queues before sending waits (the wait counts as send lag);
    /// for a NATS subscriber, the messages it buffers before its client drops new ones.
    #[arg(
        long,
        env = "IOTLOAD_QUEUE_CAPACITY",
        value_name = "MESSAGES",
        default_value_t = 1024
    )]
    pub queue_capacity: usize,

    /// QoS 1/2 messages (MQTT), JetStream acknowledgements (NATS), publisher confirms
    /// (AMQP), unacknowledged deliveries (Kafka) or send receipts (Pulsar) in flight per
    /// connection or device.
    #[arg(
        long,
        env = "IOTLOAD_INFLIGHT",
        value_name = "MESSAGES",
        default_value_t = 100
    )]
    pub inflight: u16,

    /// The options of each broker family, under their own headings.
    #[command(flatten)]
    pub family: BrokerFlags,
}

impl BrokerArgs {
    /// The flags `args` (without a program name) give, as a command line would.
    #[cfg(test)]
    #[cfg_attr(not(any(feature = "kafka", feature = "pulsar")), allow(dead_code))]
    pub(crate) fn parse_for_tests(args: &[&str]) -> Result<Self, clap::Error> {
        use clap::Parser;
        #[derive(Parser)]
        struct Cli {
            #[command(flatten)]
            broker: BrokerArgs,
        }
        let argv = std::iter::once("iotload").chain(args.iter().copied());
        Ok(Cli::try_parse_from(argv)?.broker)
    }

    /// The broker URL, parsed; `None` when not given.
    pub fn url(&self) -> Result<Option<BrokerUrl>, PlanError> {
        self.broker.as_deref().map(BrokerUrl::parse).transpose()
    }

    /// The TLS files and policy every family with TLS uses.
    #[cfg(feature = "tls")]
    pub(crate) fn tls_settings(&self) -> TlsSettings {
        TlsSettings {
            ca_file: self.ca_file.clone(),
            cert_file: self.cert_file.clone(),
            key_file: self.key_file.clone(),
            insecure: self.insecure,
        }
    }

    /// How each client identifies itself.
    pub fn credentials(&self) -> Result<Credentials, PlanError> {
        if let Some(path) = &self.credentials_file {
            return Credentials::from_csv(path);
        }
        let password = match &self.password_file {
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|source| PlanError::File {
                    option: "--password-file",
                    path: path.display().to_string(),
                    source,
                })?;
                Some(text.lines().next().unwrap_or_default().to_string())
            }
            None => self.password.clone(),
        };
        let username = self.username.as_deref().map(Template::parse).transpose()?;
        let password = password.as_deref().map(Template::parse).transpose()?;
        Ok(Credentials::Templates { username, password })
    }
}

/// Per-device credentials, resolved once.
#[derive(Clone)]
pub enum Credentials {
    /// User name and password from templates (or none).
    Templates {
        /// User name template.
        username: Option<Template>,
        /// Password template.
        password: Option<Template>,
    },
    /// One row per device, from a CSV file.
    Table(Vec<(String, String)>),
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Credentials::Templates { username, password } => f
                .debug_struct("Templates")
                .field("username", &username.as_ref().map(Template::as_str))
                .field("password", &password.as_ref().map(|_| "***"))
                .finish(),
            Credentials::Table(rows) => write!(f, "Table({} rows)", rows.len()),
        }
    }
}

impl Credentials {
    fn from_csv(path: &std::path::Path) -> Result<Self, PlanError> {
        let bad = |reason: String| PlanError::BadValue {
            option: "--credentials-file",
            reason: format!("{}: {reason}", path.display()),
        };
        let file = std::fs::File::open(path).map_err(|source| PlanError::File {
            option: "--credentials-file",
            path: path.display().to_string(),
            source,
        })?;
        let mut reader = csv::Reader::from_reader(file);
        let headers = reader.headers().map_err(|e| bad(e.to_string()))?.clone();
        let col = |name: &str| headers.iter().position(|h| h.trim() == name);
        let (Some(u), Some(p)) = (col("username"), col("password")) else {
            return Err(bad(
                "the first row must name the columns `username,password`".into(),
            ));
        };
        let mut rows = Vec::new();
        for (i, record) in reader.records().enumerate() {
            let record = record.map_err(|e| bad(format!("row {}: {e}", i + 2)))?;
            let get = |c: usize| record.get(c).unwrap_or_default().to_string();
            rows.push((get(u), get(p)));
        }
        if rows.is_empty() {
            return Err(bad("no credential rows after the header".into()));
        }
        Ok(Self::Table(rows))
    }

    /// Whether there are enough rows for `devices` devices starting at `first`.
    pub fn check_rows(&self, first: u32, devices: u32) -> Result<(), PlanError> {
        if let Credentials::Table(rows) = self {
            let need = first as usize + devices as usize;
            if rows.len() < need {
                return Err(PlanError::BadValue {
                    option: "--credentials-file",
                    reason: format!(
                        "it has {} rows but devices {first}..{} need {need}; add rows or lower --devices",
                        rows.len(),
                        need - 1
                    ),
                });
            }
        }
        Ok(())
    }

    /// The identity of client `client_id` for device `device`.
    pub fn identity(&self, client_id: String, device: u32) -> ClientIdentity {
        match self {
            Credentials::Templates { username, password } => ClientIdentity {
                client_id,
                username: username.as_ref().map(|t| t.render(device)),
                password: password.as_ref().map(|t| t.render(device)),
                qos: None,
            },
            Credentials::Table(rows) => {
                let row = rows.get(device as usize);
                ClientIdentity {
                    client_id,
                    username: row.map(|r| r.0.clone()),
                    password: row.map(|r| r.1.clone()),
                    qos: None,
                }
            }
        }
    }
}

/// How the stamp is written and read.
#[derive(Debug, Clone, Args)]
pub struct StampArgs {
    /// Where the stamp rides: json (fields of a JSON payload), binary (a 32-byte header),
    /// or header (MQTT 5 user properties, needs --mqtt-version 5; or NATS, AMQP or Kafka
    /// headers).
    #[arg(
        long = "stamp",
        env = "IOTLOAD_STAMP",
        value_name = "CARRIER",
        default_value = "json"
    )]
    pub carrier: CarrierKind,

    /// Where the JSON stamp's values are: four comma-separated field paths in the order
    /// device,seq,intended,sent (`-` for one your messages do not carry), or named ones
    /// such as `sent=/meta/sentAt,device=unitMacId`. A path is a name, a dotted path
    /// (`sensor.timestamp`) or a JSON pointer (`/meta/sentAt`). Only the send time is
    /// required: without seq, loss is counted per topic from the loadgen's sent counts;
    /// without device, the topic stands for the device.
    ///
    /// Use your own schema's names so an iPaaS flow copies them, e.g.
    /// `deviceId,seq,intended_us,lastUpdated`.
    #[arg(
        long,
        env = "IOTLOAD_STAMP_FIELDS",
        value_name = "PATHS",
        default_value = "device,seq,intended_us,sent_us"
    )]
    pub stamp_fields: String,

    /// How the JSON carrier writes times, and the unit of bare numbers it reads: auto
    /// (writes integer µs; reads numbers by magnitude), s (1733412345.123456), ms, us, ns,
    /// iso8601 (2026-11-25T01:02:03.123456Z) or iso8601-local (no offset, in
    /// --time-zone, like Python's datetime.now().isoformat()). Every format is read back
    /// whatever this says.
    #[arg(
        long,
        env = "IOTLOAD_TIME_FORMAT",
        value_name = "FORMAT",
        default_value = "auto"
    )]
    pub time_format: String,

    /// The time zone of ISO-8601 times without an offset, written and read: local (the
    /// machine's zone, or TZ) or an IANA name such as Europe/Berlin or UTC.
    #[arg(
        long,
        env = "IOTLOAD_TIME_ZONE",
        value_name = "ZONE",
        default_value = "local"
    )]
    pub time_zone: String,

    /// Write device ids as strings from this template instead of numbers, e.g.
    /// `VZW_LH_UNIT_{device:03}` (json stamp only; the collector reads either).
    #[arg(long, env = "IOTLOAD_DEVICE_ID", value_name = "TEMPLATE")]
    pub device_id: Option<String>,
}

impl StampArgs {
    /// Refuses a send time read from the broker's record timestamp (`@timestamp`) on a
    /// broker that keeps none: only Kafka does.
    pub fn check_record_time(&self, kind: Option<BrokerKind>) -> Result<(), PlanError> {
        let fields =
            JsonFields::parse(&self.stamp_fields).map_err(|reason| PlanError::BadValue {
                option: "--stamp-fields",
                reason,
            })?;
        if fields.sent.is_record_time() && kind != Some(BrokerKind::Kafka) {
            return Err(PlanError::BadValue {
                option: "--stamp-fields",
                reason: "the send time `@timestamp` is the broker's record timestamp, which \
                         only Kafka keeps; use a JSON field with this broker"
                    .into(),
            });
        }
        Ok(())
    }

    /// The JSON stamp's layout: field paths, time format, zone and device id format.
    pub fn json_format(&self) -> Result<JsonStampFormat, PlanError> {
        let bad =
            |option: &'static str| move |reason: String| PlanError::BadValue { option, reason };
        let device_id = match &self.device_id {
            None => DeviceIdFormat::Number,
            Some(text) => {
                let template = Template::parse(text)?;
                if !template.has_device() {
                    return Err(PlanError::BadValue {
                        option: "--device-id",
                        reason: format!(
                            "`{text}` has no {{device}}, so every device would send the same \
                             id; e.g. VZW_LH_UNIT_{{device:03}}"
                        ),
                    });
                }
                DeviceIdFormat::from_template(&template)
            }
        };
        Ok(JsonStampFormat {
            fields: JsonFields::parse(&self.stamp_fields).map_err(bad("--stamp-fields"))?,
            time_format: self.time_format.parse().map_err(bad("--time-format"))?,
            zone: self.time_zone.parse().map_err(bad("--time-zone"))?,
            device_id,
        })
    }
}

/// How finely the per-second results are stored (`--store-by`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum StoreBy {
    /// A row per topic and second.
    #[default]
    Topic,
    /// A row per instance and second, every topic added up under the topic
    /// [`crate::store::ALL_TOPICS`].
    Instance,
}

/// Where results go and how this instance is named in them.
#[derive(Debug, Clone, Args)]
pub struct StoreArgs {
    /// Where results go: sqlite://FILE (embedded), redis://HOST:PORT/DB or
    /// redis://:PASSWORD@HOST:PORT/DB (shared by many instances), rediss://… for TLS
    /// (?ca_file=PATH&cert_file=PATH&key_file=PATH, #insecure),
    /// redis+cluster://HOST1:PORT1,HOST2:PORT2/ for a Redis Cluster (docs/store.md), or none.
    #[arg(
        long,
        env = "IOTLOAD_STORE",
        value_name = "URL",
        default_value = "sqlite://iotload-results.db"
    )]
    pub store: String,

    /// Also store every message: topic, device, seq, intended, sent and receive times.
    #[arg(long, env = "IOTLOAD_RAW")]
    pub raw: bool,

    /// Stored rows: one per topic and second (`topic`), or one per instance and second
    /// with all its topics added up under the topic `*` (`instance`: for tests with very
    /// many topics, where per-topic rows would outgrow the store; docs/store.md).
    #[arg(
        long,
        env = "IOTLOAD_STORE_BY",
        value_enum,
        value_name = "ROWS",
        default_value = "topic"
    )]
    pub store_by: StoreBy,

    /// Records held while the store is slow or down; beyond this they are dropped and the
    /// summary says how many.
    #[arg(
        long,
        env = "IOTLOAD_STORE_BUFFER",
        value_name = "RECORDS",
        default_value_t = 100_000
    )]
    pub store_buffer: usize,

    /// Run id under which results are stored; give the same to every instance of a fleet.
    /// Generated when not given.
    #[arg(long, env = "IOTLOAD_RUN_ID", value_name = "ID")]
    pub run_id: Option<String>,

    /// This instance's name in stored results (default: host name and process id; in
    /// Kubernetes the pod name).
    #[arg(long, env = "IOTLOAD_INSTANCE", value_name = "NAME")]
    pub instance: Option<String>,

    /// How long an advertised topic or a claim lives in the store without renewal: a dead
    /// instance's topics become available again after it.
    #[arg(long, env = "IOTLOAD_LEASE", value_name = "DURATION", default_value = "10s",
          value_parser = parse_duration)]
    pub lease: Duration,
}

impl StoreArgs {
    /// The store URL, or `None` for `--store none`.
    pub fn url(&self) -> Option<&str> {
        match self.store.trim() {
            "" | "none" => None,
            url => Some(url),
        }
    }

    /// The run id: given, or made from the start time and process id.
    pub fn run_id(&self) -> String {
        self.run_id.clone().unwrap_or_else(|| {
            let now = chrono::Utc::now();
            format!(
                "{}-{:x}",
                now.format("%Y%m%d-%H%M%S"),
                std::process::id() & 0xffff
            )
        })
    }

    /// This instance's name.
    pub fn instance(&self) -> String {
        self.instance.clone().unwrap_or_else(default_instance)
    }
}

/// Host (or pod) name and process id.
pub fn default_instance() -> String {
    let host = std::env::var("POD_NAME")
        .or_else(|_| std::env::var("HOSTNAME"))
        .ok()
        .filter(|h| !h.is_empty())
        .or_else(|| {
            std::fs::read_to_string("/etc/hostname")
                .ok()
                .map(|h| h.trim().to_string())
        })
        .unwrap_or_else(|| "localhost".into());
    format!("{host}-{}", std::process::id())
}
