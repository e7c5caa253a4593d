//! Option groups every component shares: broker connection, credentials, TLS, stamp.
//!
//! Each option is a flag, an `IOTLOAD_*` environment variable and a key of the `--config`
//! YAML file (merged by the binary). `resolve`-style methods here turn them into the
//! typed settings the engine uses; they are the only place these values are checked.

use std::path::PathBuf;
use std::time::Duration;

use clap::Args;

use crate::payload::CarrierKind;
use crate::plan::{BrokerUrl, PlanError, Template, parse_duration};
use crate::stamp::{JsonFields, TimeFormat};
use crate::transport::ClientIdentity;
#[cfg(feature = "amqp")]
use crate::transport::amqp::{AmqpSettings, ExchangeType};
#[cfg(feature = "kafka")]
use crate::transport::kafka::{
    KafkaAcks, KafkaCompression, KafkaSettings, SaslMechanism, parse_option,
};
#[cfg(feature = "mqtt")]
use crate::transport::mqtt::{MqttPublisherKind, MqttSettings, MqttVersion};
#[cfg(feature = "nats")]
use crate::transport::nats::{JetStreamAck, NatsSettings};
#[cfg(feature = "pulsar")]
use crate::transport::pulsar::{PulsarSettings, SubscriptionKind};
#[cfg(any(
    feature = "mqtt",
    feature = "nats",
    feature = "amqp",
    feature = "pulsar"
))]
use crate::transport::tls::TlsSettings;
#[cfg(feature = "zmq")]
use crate::transport::zmq::{ZmqMode, ZmqSettings};

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

    /// MQTT protocol version: 3.1.1 or 5.
    #[arg(
        long,
        env = "IOTLOAD_MQTT_VERSION",
        value_name = "VERSION",
        default_value = "3.1.1"
    )]
    pub mqtt_version: String,

    /// MQTT only: which client publishes. `direct` writes QoS 0 MQTT 3.1.1 publishes over
    /// mqtt:// straight into each device's socket (several times cheaper per message) and
    /// uses rumqttc for everything else; `rumqttc` uses rumqttc for every publisher.
    #[arg(
        long,
        env = "IOTLOAD_MQTT_PUBLISHER",
        value_name = "CLIENT",
        default_value = "direct"
    )]
    pub mqtt_publisher: MqttPublisherArg,

    /// MQTT direct publisher only: local addresses the devices connect from, in turn
    /// (comma-separated, e.g. 127.0.0.2,127.0.0.3). Each one gives about 28,000 connections
    /// to one broker address (the ephemeral port range), so 100,000 devices need four.
    #[arg(
        long,
        env = "IOTLOAD_SOURCE_ADDRESSES",
        value_name = "IPS",
        value_delimiter = ','
    )]
    pub source_addresses: Vec<std::net::IpAddr>,

    /// Quality of service for publishes and subscriptions: 0, 1 or 2.
    #[arg(long, env = "IOTLOAD_QOS", value_name = "LEVEL", default_value_t = 0,
          value_parser = clap::value_parser!(u8).range(0..=2))]
    pub qos: u8,

    /// Keep-alive interval (e.g. 30s); for Pulsar, the interval of pings on the connection.
    #[arg(long, env = "IOTLOAD_KEEP_ALIVE", value_name = "DURATION", default_value = "30s",
          value_parser = parse_duration)]
    pub keep_alive: Duration,

    /// Resume persistent sessions instead of starting clean (clean start is the default).
    #[arg(long, env = "IOTLOAD_NO_CLEAN_START")]
    pub no_clean_start: bool,

    /// Set the retain flag on published messages.
    #[arg(long, env = "IOTLOAD_RETAIN")]
    pub retain: bool,

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

    /// NATS only: publish through JetStream (each message acknowledged once stored), into
    /// streams created for the subscribed subjects when missing.
    #[arg(long, env = "IOTLOAD_JETSTREAM")]
    pub jetstream: bool,

    /// NATS JetStream only: how subscribers acknowledge what their consumers deliver:
    /// explicit (each message), all (cumulative) or none.
    #[arg(
        long,
        env = "IOTLOAD_JETSTREAM_ACK",
        value_name = "POLICY",
        default_value = "explicit"
    )]
    pub jetstream_ack: JetStreamAckArg,

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

    /// AMQP (RabbitMQ) options.
    #[command(flatten)]
    pub amqp: AmqpArgs,

    /// Kafka options.
    #[command(flatten)]
    pub kafka: KafkaArgs,

    /// Apache Pulsar options.
    #[command(flatten)]
    pub pulsar: PulsarArgs,

    /// ZeroMQ options.
    #[command(flatten)]
    pub zmq: ZmqArgs,
}

/// Options only AMQP brokers take (`amqp://`, `amqps://`).
#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "AMQP options (amqp://, amqps://)")]
pub struct AmqpArgs {
    /// Exchange every message goes through. One not named amq.* is declared with
    /// --amqp-exchange-type.
    #[arg(
        long,
        env = "IOTLOAD_AMQP_EXCHANGE",
        value_name = "NAME",
        default_value = "amq.topic"
    )]
    pub amqp_exchange: String,

    /// Type of an exchange iotload declares: topic, direct or fanout.
    #[arg(
        long,
        env = "IOTLOAD_AMQP_EXCHANGE_TYPE",
        value_name = "TYPE",
        default_value = "topic"
    )]
    pub amqp_exchange_type: AmqpExchangeType,

    /// Shared queue subscribers consume from (competing consumers); each subscriber gets
    /// a private, auto-deleted queue when not given.
    #[arg(long, env = "IOTLOAD_AMQP_QUEUE", value_name = "NAME")]
    pub amqp_queue: Option<String>,

    /// Durable exchange and queue, persistent messages.
    #[arg(long, env = "IOTLOAD_AMQP_DURABLE")]
    pub amqp_durable: bool,

    /// Publisher confirms: the broker confirms each message (up to --inflight pending).
    #[arg(long, env = "IOTLOAD_AMQP_CONFIRMS")]
    pub amqp_confirms: bool,

    /// Acknowledge each delivery instead of consuming with no-ack.
    #[arg(long, env = "IOTLOAD_AMQP_MANUAL_ACK")]
    pub amqp_manual_ack: bool,

    /// Unacknowledged deliveries the broker sends ahead (with --amqp-manual-ack).
    #[arg(
        long,
        env = "IOTLOAD_AMQP_PREFETCH",
        value_name = "MESSAGES",
        default_value_t = 1000
    )]
    pub amqp_prefetch: u16,

    /// Devices (one channel each) sharing one AMQP connection; 1 gives each device its own
    /// connection. Devices share only when their credentials are the same.
    #[arg(
        long,
        env = "IOTLOAD_AMQP_CHANNELS_PER_CONNECTION",
        value_name = "N",
        default_value_t = 100,
        value_parser = clap::value_parser!(u32).range(1..=2047)
    )]
    pub amqp_channels_per_connection: u32,
}

/// The ack policies of JetStream consumers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum JetStreamAckArg {
    /// Each message acknowledged on its own.
    Explicit,
    /// Acknowledging one acknowledges every earlier one.
    All,
    /// No acknowledgements.
    None,
}

/// Options only Pulsar brokers take (`pulsar://`, `pulsar+ssl://`).
#[derive(Debug, Clone, Args)]
#[command(
    next_help_heading = "Pulsar options (pulsar://, pulsar+ssl://; untested against a live broker)"
)]
pub struct PulsarArgs {
    /// Tenant that holds the topics: topic a/b is persistent://TENANT/NAMESPACE/a.b.
    #[arg(
        long,
        env = "IOTLOAD_PULSAR_TENANT",
        value_name = "NAME",
        default_value = "public"
    )]
    pub pulsar_tenant: String,

    /// Namespace (inside the tenant) that holds the topics.
    #[arg(
        long,
        env = "IOTLOAD_PULSAR_NAMESPACE",
        value_name = "NAME",
        default_value = "default"
    )]
    pub pulsar_namespace: String,

    /// Use non-persistent topics (non-persistent://): not stored, lost when no consumer is
    /// connected, and faster.
    #[arg(long, env = "IOTLOAD_PULSAR_NON_PERSISTENT")]
    pub pulsar_non_persistent: bool,

    /// Durable subscription that subscribers share (competing consumers, shared by
    /// default); each subscriber gets a private, non-durable, exclusive one when not given.
    #[arg(long, env = "IOTLOAD_PULSAR_SUBSCRIPTION", value_name = "NAME")]
    pub pulsar_subscription: Option<String>,

    /// Subscription type: exclusive, shared, failover or key-shared (default: exclusive,
    /// or shared with --pulsar-subscription).
    #[arg(long, env = "IOTLOAD_PULSAR_SUBSCRIPTION_TYPE", value_name = "TYPE")]
    pub pulsar_subscription_type: Option<PulsarSubscriptionType>,

    /// Batch messages in the producer (trades latency for throughput; off by default).
    #[arg(long, env = "IOTLOAD_PULSAR_BATCHING")]
    pub pulsar_batching: bool,

    /// With --pulsar-batching, the most messages in one batch.
    #[arg(
        long,
        env = "IOTLOAD_PULSAR_BATCH_SIZE",
        value_name = "MESSAGES",
        default_value_t = 1000
    )]
    pub pulsar_batch_size: u32,

    /// With --pulsar-batching, the longest a message waits for its batch (e.g. 1ms).
    #[arg(long, env = "IOTLOAD_PULSAR_BATCH_DELAY", value_name = "DURATION", default_value = "1ms",
          value_parser = parse_duration)]
    pub pulsar_batch_delay: Duration,

    /// JWT for token authentication, the same for every device; without it, the
    /// device's --password is sent as its token (--username is not used).
    ///
    /// Prefer the IOTLOAD_PULSAR_TOKEN variable: command lines are visible to other users
    /// of the machine.
    #[arg(
        long,
        env = "IOTLOAD_PULSAR_TOKEN",
        value_name = "JWT",
        hide_env_values = true
    )]
    pub pulsar_token: Option<String>,

    /// How often a subscription with wildcards looks for new matching topics; the first
    /// messages on a new topic can wait this long.
    #[arg(long, env = "IOTLOAD_PULSAR_TOPIC_REFRESH", value_name = "DURATION", default_value = "1s",
          value_parser = parse_duration)]
    pub pulsar_topic_refresh: Duration,
}

/// The Pulsar subscription types.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum PulsarSubscriptionType {
    /// One consumer per subscription.
    Exclusive,
    /// Consumers share the messages round robin.
    Shared,
    /// One active consumer; the others take over when it goes.
    Failover,
    /// Consumers share the messages by key.
    KeyShared,
}

/// The exchange types iotload can declare.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum AmqpExchangeType {
    /// Routing keys matched against patterns with `*` and `#`.
    Topic,
    /// Routing keys matched exactly.
    Direct,
    /// Every bound queue gets every message.
    Fanout,
}

/// Options only Kafka brokers take (`kafka://`, `kafka+tls://`).
#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Kafka options (kafka://, kafka+tls://)")]
pub struct KafkaArgs {
    /// Acknowledgements each produced message waits for: 0 (none), 1 (the leader) or all
    /// (every in-sync replica).
    #[arg(
        long,
        env = "IOTLOAD_KAFKA_ACKS",
        value_name = "ACKS",
        default_value = "all"
    )]
    pub kafka_acks: KafkaAcksArg,

    /// How long the producer waits to fill a batch before sending (linger.ms); every
    /// millisecond adds to the measured latency.
    #[arg(long, env = "IOTLOAD_KAFKA_LINGER", value_name = "DURATION", default_value = "1ms",
          value_parser = parse_duration)]
    pub kafka_linger: Duration,

    /// Largest batch the producer sends per partition (batch.size); librdkafka's default
    /// (1000000) when not given.
    #[arg(long, env = "IOTLOAD_KAFKA_BATCH_SIZE", value_name = "BYTES")]
    pub kafka_batch_size: Option<u32>,

    /// Batch compression: none, gzip, snappy, lz4 or zstd.
    #[arg(
        long,
        env = "IOTLOAD_KAFKA_COMPRESSION",
        value_name = "CODEC",
        default_value = "none"
    )]
    pub kafka_compression: KafkaCompressionArg,

    /// Partitions of each topic iotload creates.
    #[arg(
        long,
        env = "IOTLOAD_KAFKA_PARTITIONS",
        value_name = "COUNT",
        default_value_t = 1
    )]
    pub kafka_partitions: i32,

    /// Replication factor of each topic iotload creates.
    #[arg(
        long,
        env = "IOTLOAD_KAFKA_REPLICATION",
        value_name = "COUNT",
        default_value_t = 1
    )]
    pub kafka_replication: i32,

    /// Do not create missing topics: publishing to a topic that does not exist then fails
    /// (or the broker creates it, if it is set up to).
    #[arg(long, env = "IOTLOAD_KAFKA_NO_CREATE_TOPICS")]
    pub kafka_no_create_topics: bool,

    /// Consumer group every subscriber joins (competing consumers, committed offsets);
    /// each subscriber gets a fresh group of its own when not given.
    #[arg(long, env = "IOTLOAD_KAFKA_GROUP", value_name = "NAME")]
    pub kafka_group: Option<String>,

    /// SASL mechanism used with a user name: plain, scram-sha-256 or scram-sha-512.
    #[arg(
        long,
        env = "IOTLOAD_KAFKA_SASL_MECHANISM",
        value_name = "MECHANISM",
        default_value = "plain"
    )]
    pub kafka_sasl_mechanism: KafkaSaslArg,

    /// A librdkafka property as KEY=VALUE, applied after iotload's own (so it wins), e.g.
    /// enable.idempotence=true. Repeat the flag for more; in the variable, separate
    /// pairs with `;`.
    #[arg(
        long,
        env = "IOTLOAD_KAFKA_OPTION",
        value_name = "KEY=VALUE",
        value_delimiter = ';'
    )]
    pub kafka_option: Vec<String>,
}

/// Acknowledgements a produced message waits for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum KafkaAcksArg {
    /// None: delivered once sent.
    #[value(name = "0")]
    Zero,
    /// The partition leader's.
    #[value(name = "1")]
    One,
    /// Every in-sync replica's.
    All,
}

/// Batch compression codecs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum KafkaCompressionArg {
    /// Not compressed.
    None,
    /// gzip.
    Gzip,
    /// Snappy.
    Snappy,
    /// LZ4.
    Lz4,
    /// Zstandard.
    Zstd,
}

/// SASL mechanisms.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum KafkaSaslArg {
    /// PLAIN: user name and password in clear (use with kafka+tls://).
    Plain,
    /// SCRAM-SHA-256.
    #[value(name = "scram-sha-256")]
    ScramSha256,
    /// SCRAM-SHA-512.
    #[value(name = "scram-sha-512")]
    ScramSha512,
}

/// Options only ZeroMQ takes (`zmq+tcp://`).
#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "ZeroMQ options (zmq+tcp://)")]
pub struct ZmqArgs {
    /// Topology: proxy (publishers connect to the URL's port and subscribers to the next
    /// one, where `iotload zmq-proxy` or another XSUB/XPUB forwarder listens) or peer (no
    /// proxy: each subscriber binds the URL's port and publishers connect to it).
    #[arg(
        long,
        env = "IOTLOAD_ZMQ_MODE",
        value_name = "MODE",
        default_value = "proxy"
    )]
    pub zmq_mode: ZmqModeArg,
}

/// `--mqtt-publisher` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum MqttPublisherArg {
    /// The direct QoS 0 writer where it applies, rumqttc elsewhere.
    Direct,
    /// rumqttc for every publisher.
    Rumqttc,
}

/// The ZeroMQ topologies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ZmqModeArg {
    /// Through an XSUB/XPUB forwarder such as `iotload zmq-proxy`.
    Proxy,
    /// Publishers connect straight to a subscriber, which binds.
    Peer,
}

impl BrokerArgs {
    /// The broker URL, parsed; `None` when not given.
    pub fn url(&self) -> Result<Option<BrokerUrl>, PlanError> {
        self.broker.as_deref().map(BrokerUrl::parse).transpose()
    }

    /// The MQTT connection settings.
    #[cfg(feature = "mqtt")]
    pub fn mqtt_settings(&self) -> Result<MqttSettings, PlanError> {
        let version = match self.mqtt_version.as_str() {
            "3.1.1" | "311" | "4" => MqttVersion::V311,
            "5" | "5.0" => MqttVersion::V5,
            other => {
                return Err(PlanError::BadValue {
                    option: "--mqtt-version",
                    reason: format!("`{other}` is not an MQTT version; use 3.1.1 or 5"),
                });
            }
        };
        Ok(MqttSettings {
            version,
            qos: self.qos,
            keep_alive: self.keep_alive,
            clean_start: !self.no_clean_start,
            retain: self.retain,
            tls: self.tls_settings(),
            queue_capacity: self.queue_capacity.max(1),
            inflight: self.inflight.max(1),
            connect_timeout: self.connect_timeout,
            publisher: match self.mqtt_publisher {
                MqttPublisherArg::Direct => MqttPublisherKind::Direct,
                MqttPublisherArg::Rumqttc => MqttPublisherKind::Rumqttc,
            },
            source_addresses: self.source_addresses.clone(),
            ..MqttSettings::default()
        })
    }

    /// The NATS connection settings.
    #[cfg(feature = "nats")]
    pub fn nats_settings(&self) -> NatsSettings {
        NatsSettings {
            tls: self.tls_settings(),
            connect_timeout: self.connect_timeout,
            queue_capacity: self.queue_capacity.max(1),
            jetstream: self.jetstream,
            inflight: usize::from(self.inflight.max(1)),
            jetstream_ack: match self.jetstream_ack {
                JetStreamAckArg::Explicit => JetStreamAck::Explicit,
                JetStreamAckArg::All => JetStreamAck::All,
                JetStreamAckArg::None => JetStreamAck::None,
            },
        }
    }

    /// The AMQP connection settings.
    #[cfg(feature = "amqp")]
    pub fn amqp_settings(&self) -> AmqpSettings {
        let a = &self.amqp;
        AmqpSettings {
            tls: self.tls_settings(),
            connect_timeout: self.connect_timeout,
            exchange: a.amqp_exchange.clone(),
            exchange_kind: match a.amqp_exchange_type {
                AmqpExchangeType::Topic => ExchangeType::Topic,
                AmqpExchangeType::Direct => ExchangeType::Direct,
                AmqpExchangeType::Fanout => ExchangeType::Fanout,
            },
            queue: a.amqp_queue.clone(),
            durable: a.amqp_durable,
            confirms: a.amqp_confirms,
            inflight: usize::from(self.inflight.max(1)),
            manual_ack: a.amqp_manual_ack,
            prefetch: a.amqp_prefetch,
            channels_per_connection: a.amqp_channels_per_connection as usize,
        }
    }

    /// The Kafka client settings.
    #[cfg(feature = "kafka")]
    pub fn kafka_settings(&self) -> Result<KafkaSettings, PlanError> {
        let k = &self.kafka;
        let options = k
            .kafka_option
            .iter()
            .filter(|pair| !pair.trim().is_empty())
            .map(|pair| parse_option(pair))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|reason| PlanError::BadValue {
                option: "--kafka-option",
                reason,
            })?;
        for (option, value) in [
            ("--kafka-partitions", k.kafka_partitions),
            ("--kafka-replication", k.kafka_replication),
        ] {
            if value < 1 {
                return Err(PlanError::BadValue {
                    option,
                    reason: format!("{value} is not a count of at least 1"),
                });
            }
        }
        Ok(KafkaSettings {
            ca_file: self.ca_file.clone(),
            cert_file: self.cert_file.clone(),
            key_file: self.key_file.clone(),
            insecure: self.insecure,
            connect_timeout: self.connect_timeout,
            inflight: usize::from(self.inflight.max(1)),
            acks: match k.kafka_acks {
                KafkaAcksArg::Zero => KafkaAcks::Zero,
                KafkaAcksArg::One => KafkaAcks::One,
                KafkaAcksArg::All => KafkaAcks::All,
            },
            linger: k.kafka_linger,
            batch_size: k.kafka_batch_size,
            compression: match k.kafka_compression {
                KafkaCompressionArg::None => KafkaCompression::None,
                KafkaCompressionArg::Gzip => KafkaCompression::Gzip,
                KafkaCompressionArg::Snappy => KafkaCompression::Snappy,
                KafkaCompressionArg::Lz4 => KafkaCompression::Lz4,
                KafkaCompressionArg::Zstd => KafkaCompression::Zstd,
            },
            partitions: k.kafka_partitions,
            replication: k.kafka_replication,
            create_topics: !k.kafka_no_create_topics,
            group: k.kafka_group.clone().filter(|g| !g.trim().is_empty()),
            sasl_mechanism: match k.kafka_sasl_mechanism {
                KafkaSaslArg::Plain => SaslMechanism::Plain,
                KafkaSaslArg::ScramSha256 => SaslMechanism::ScramSha256,
                KafkaSaslArg::ScramSha512 => SaslMechanism::ScramSha512,
            },
            options,
        })
    }

    /// The Pulsar client settings.
    #[cfg(feature = "pulsar")]
    pub fn pulsar_settings(&self) -> Result<PulsarSettings, PlanError> {
        let p = &self.pulsar;
        if p.pulsar_batching && p.pulsar_batch_size < 2 {
            return Err(PlanError::BadValue {
                option: "--pulsar-batch-size",
                reason: format!(
                    "{} messages is no batch; give 2 or more, or leave out --pulsar-batching",
                    p.pulsar_batch_size
                ),
            });
        }
        if p.pulsar_topic_refresh < Duration::from_millis(100) {
            return Err(PlanError::BadValue {
                option: "--pulsar-topic-refresh",
                reason: "less than 100ms would ask the broker for the topic list all the time"
                    .into(),
            });
        }
        Ok(PulsarSettings {
            tls: self.tls_settings(),
            connect_timeout: self.connect_timeout,
            keep_alive: self.keep_alive,
            queue_capacity: self.queue_capacity.max(1),
            inflight: usize::from(self.inflight.max(1)),
            tenant: p.pulsar_tenant.clone(),
            namespace: p.pulsar_namespace.clone(),
            persistent: !p.pulsar_non_persistent,
            subscription: p.pulsar_subscription.clone(),
            subscription_kind: p.pulsar_subscription_type.map(|t| match t {
                PulsarSubscriptionType::Exclusive => SubscriptionKind::Exclusive,
                PulsarSubscriptionType::Shared => SubscriptionKind::Shared,
                PulsarSubscriptionType::Failover => SubscriptionKind::Failover,
                PulsarSubscriptionType::KeyShared => SubscriptionKind::KeyShared,
            }),
            batching: p.pulsar_batching,
            batch_max_messages: p.pulsar_batch_size,
            batch_max_delay: p.pulsar_batch_delay,
            token: p.pulsar_token.clone().filter(|t| !t.is_empty()),
            topic_refresh: p.pulsar_topic_refresh,
        })
    }

    /// The ZeroMQ settings; TLS and credential options are refused, since the transport
    /// has neither.
    #[cfg(feature = "zmq")]
    pub fn zmq_settings(&self) -> Result<ZmqSettings, PlanError> {
        let tls = [
            ("--ca-file", self.ca_file.is_some()),
            ("--cert-file", self.cert_file.is_some()),
            ("--key-file", self.key_file.is_some()),
            ("--insecure", self.insecure),
        ];
        if let Some(&(option, _)) = tls.iter().find(|(_, given)| *given) {
            return Err(PlanError::BadValue {
                option,
                reason: "ZeroMQ (zmq+tcp://) has no TLS here (the zeromq crate has no CURVE); \
                         leave out the TLS options or use another broker"
                    .into(),
            });
        }
        let credentials = [
            ("--username", self.username.is_some()),
            ("--password", self.password.is_some()),
            ("--password-file", self.password_file.is_some()),
            ("--credentials-file", self.credentials_file.is_some()),
        ];
        if let Some(&(option, _)) = credentials.iter().find(|(_, given)| *given) {
            return Err(PlanError::BadValue {
                option,
                reason: "ZeroMQ (zmq+tcp://) has no authentication here; leave out the \
                         credentials"
                    .into(),
            });
        }
        Ok(ZmqSettings {
            mode: match self.zmq.zmq_mode {
                ZmqModeArg::Proxy => ZmqMode::Proxy,
                ZmqModeArg::Peer => ZmqMode::Peer,
            },
            connect_timeout: self.connect_timeout,
            queue_capacity: self.queue_capacity.max(1),
        })
    }

    #[cfg(any(
        feature = "mqtt",
        feature = "nats",
        feature = "amqp",
        feature = "pulsar"
    ))]
    fn tls_settings(&self) -> TlsSettings {
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
            },
            Credentials::Table(rows) => {
                let row = rows.get(device as usize);
                ClientIdentity {
                    client_id,
                    username: row.map(|r| r.0.clone()),
                    password: row.map(|r| r.1.clone()),
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

    /// Names of the JSON stamp fields, in the order device,seq,intended,sent.
    ///
    /// Use your own schema's names so an iPaaS flow copies them, e.g.
    /// `deviceId,seq,intended_us,lastUpdated`.
    #[arg(
        long,
        env = "IOTLOAD_STAMP_FIELDS",
        value_name = "NAMES",
        default_value = "device,seq,intended_us,sent_us"
    )]
    pub stamp_fields: String,

    /// How the JSON carrier writes times: us (integer µs since the epoch) or iso8601
    /// (e.g. 2026-11-25T01:02:03.123456Z). Either is read back.
    #[arg(
        long,
        env = "IOTLOAD_TIME_FORMAT",
        value_name = "FORMAT",
        default_value = "us"
    )]
    pub time_format: String,
}

impl StampArgs {
    /// The JSON field names.
    pub fn fields(&self) -> Result<JsonFields, PlanError> {
        let names: Vec<&str> = self.stamp_fields.split(',').map(str::trim).collect();
        match names.as_slice() {
            [d, s, i, t] if names.iter().all(|n| !n.is_empty()) => Ok(JsonFields {
                device: d.to_string(),
                seq: s.to_string(),
                intended: i.to_string(),
                sent: t.to_string(),
            }),
            _ => Err(PlanError::BadValue {
                option: "--stamp-fields",
                reason: format!(
                    "`{}` must be four comma-separated names: device,seq,intended,sent",
                    self.stamp_fields
                ),
            }),
        }
    }

    /// The time format for the JSON carrier.
    pub fn time_format(&self) -> Result<TimeFormat, PlanError> {
        match self.time_format.as_str() {
            "us" | "micros" => Ok(TimeFormat::Micros),
            "iso8601" | "iso" => Ok(TimeFormat::Iso8601),
            other => Err(PlanError::BadValue {
                option: "--time-format",
                reason: format!("`{other}` is not a time format; use us or iso8601"),
            }),
        }
    }
}

/// Where results go and how this instance is named in them.
#[derive(Debug, Clone, Args)]
pub struct StoreArgs {
    /// Where results go: sqlite://FILE (embedded), redis://HOST:PORT/DB or
    /// redis://:PASSWORD@HOST:PORT/DB (shared by many instances), or none.
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

#[cfg(all(test, feature = "kafka"))]
mod kafka_tests {
    use clap::Parser;

    use super::*;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        broker: BrokerArgs,
    }

    fn settings(args: &[&str]) -> Result<KafkaSettings, PlanError> {
        let argv = std::iter::once("iotload").chain(args.iter().copied());
        Cli::try_parse_from(argv)
            .expect("the flags parse")
            .broker
            .kafka_settings()
    }

    #[test]
    fn kafka_flags_become_client_settings() {
        let s = settings(&[
            "--kafka-acks",
            "0",
            "--kafka-linger",
            "0ms",
            "--kafka-compression",
            "lz4",
            "--kafka-partitions",
            "3",
            "--kafka-sasl-mechanism",
            "scram-sha-512",
            "--kafka-option",
            "socket.nagle.disable=true;debug=broker,topic",
            "--kafka-option",
            "client.rack=r1",
            "--inflight",
            "7",
        ])
        .unwrap();
        assert_eq!(s.acks, KafkaAcks::Zero);
        assert_eq!(s.linger, Duration::ZERO);
        assert_eq!(s.compression, KafkaCompression::Lz4);
        assert_eq!(s.partitions, 3);
        assert_eq!(s.sasl_mechanism, SaslMechanism::ScramSha512);
        assert_eq!(s.inflight, 7);
        assert!(s.create_topics);
        assert_eq!(s.group, None);
        assert_eq!(
            s.options,
            vec![
                ("socket.nagle.disable".to_string(), "true".to_string()),
                ("debug".to_string(), "broker,topic".to_string()),
                ("client.rack".to_string(), "r1".to_string()),
            ]
        );
        let defaults = settings(&[]).unwrap();
        assert_eq!(defaults.acks, KafkaAcks::All);
        assert_eq!(defaults.linger, Duration::from_millis(1));
    }

    #[test]
    fn bad_kafka_values_name_their_flag() {
        let e = settings(&["--kafka-option", "linger.ms"])
            .unwrap_err()
            .to_string();
        assert!(e.contains("--kafka-option"), "{e}");
        let e = settings(&["--kafka-partitions", "0"])
            .unwrap_err()
            .to_string();
        assert!(e.contains("--kafka-partitions"), "{e}");
    }
}

#[cfg(all(test, feature = "pulsar"))]
mod pulsar_tests {
    use std::time::Duration;

    use clap::Parser;

    use super::*;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        broker: BrokerArgs,
    }

    fn pulsar(args: &[&str]) -> Result<PulsarSettings, String> {
        let mut argv = vec!["iotload"];
        argv.extend_from_slice(args);
        let cli = Cli::try_parse_from(argv).map_err(|e| e.to_string())?;
        cli.broker.pulsar_settings().map_err(|e| e.to_string())
    }

    #[test]
    fn pulsar_defaults_are_a_private_exclusive_subscription_without_batching() {
        let s = pulsar(&[]).unwrap();
        assert_eq!(
            (s.tenant.as_str(), s.namespace.as_str()),
            ("public", "default")
        );
        assert!(s.persistent);
        assert_eq!(s.subscription, None);
        assert_eq!(s.effective_kind(), SubscriptionKind::Exclusive);
        assert!(!s.batching);
        assert_eq!(s.token, None);
        assert_eq!(s.topic_refresh, Duration::from_secs(1));
        assert_eq!(s.inflight, 100);
        assert_eq!(s.connect_timeout, Duration::from_secs(10));
    }

    #[test]
    fn pulsar_flags_reach_the_settings() {
        let s = pulsar(&[
            "--pulsar-tenant",
            "acme",
            "--pulsar-namespace",
            "edge",
            "--pulsar-non-persistent",
            "--pulsar-subscription",
            "collectors",
            "--pulsar-batching",
            "--pulsar-batch-size",
            "50",
            "--pulsar-batch-delay",
            "5ms",
            "--pulsar-token",
            "eyJ.token",
            "--pulsar-topic-refresh",
            "250ms",
            "--ca-file",
            "ca.pem",
            "--connect-timeout",
            "3s",
        ])
        .unwrap();
        assert_eq!((s.tenant.as_str(), s.namespace.as_str()), ("acme", "edge"));
        assert!(!s.persistent);
        assert_eq!(s.subscription.as_deref(), Some("collectors"));
        assert_eq!(s.effective_kind(), SubscriptionKind::Shared);
        assert!(s.batching);
        assert_eq!(s.batch_max_messages, 50);
        assert_eq!(s.batch_max_delay, Duration::from_millis(5));
        assert_eq!(s.token.as_deref(), Some("eyJ.token"));
        assert_eq!(s.topic_refresh, Duration::from_millis(250));
        assert_eq!(
            s.tls.ca_file.as_deref(),
            Some(std::path::Path::new("ca.pem"))
        );
        assert_eq!(s.connect_timeout, Duration::from_secs(3));
        let s = pulsar(&["--pulsar-subscription-type", "key-shared"]).unwrap();
        assert_eq!(s.effective_kind(), SubscriptionKind::KeyShared);
    }

    #[test]
    fn bad_pulsar_values_name_the_option() {
        let e = pulsar(&["--pulsar-batching", "--pulsar-batch-size", "1"]).unwrap_err();
        assert!(e.contains("--pulsar-batch-size"), "{e}");
        // Without batching the size is not used, so it is not checked.
        assert!(pulsar(&["--pulsar-batch-size", "1"]).is_ok());
        let e = pulsar(&["--pulsar-topic-refresh", "10ms"]).unwrap_err();
        assert!(e.contains("--pulsar-topic-refresh"), "{e}");
        let e = pulsar(&["--pulsar-subscription-type", "bogus"]).unwrap_err();
        assert!(e.contains("exclusive") && e.contains("key-shared"), "{e}");
        let s = pulsar(&["--pulsar-token", ""]).unwrap();
        assert_eq!(s.token, None, "an empty token is no token");
    }
}
