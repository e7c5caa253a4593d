//! The flags only Kafka takes, and how they and the shared broker flags become
//! [`KafkaSettings`].

use super::{
    KafkaAcks, KafkaCompression, KafkaSettings, KafkaTransport, SaslMechanism, parse_option,
};
use crate::args::BrokerArgs;
use crate::plan::{PlanError, parse_duration};
use crate::transport::{BrokerUrl, Registered, TransportError};
use std::time::Duration;
/// Options only Kafka brokers take (`kafka://`, `kafka+tls://`).
#[derive(Debug, Clone, clap::Args)]
#[command(next_help_heading = "Kafka options (kafka://, kafka+tls://)")]
pub struct KafkaFlags {
    /// Acknowledgements each produced message waits for: 0 (none), 1 (the leader) or all
    /// (every in-sync replica).
    #[arg(
        long,
        env = "IOTLOAD_KAFKA_ACKS",
        value_name = "ACKS",
        default_value = "all"
    )]
    pub kafka_acks: KafkaAcks,

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
    pub kafka_compression: KafkaCompression,

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
    pub kafka_sasl_mechanism: SaslMechanism,

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

impl KafkaFlags {
    /// The Kafka client settings.
    pub fn settings(&self, broker: &BrokerArgs) -> Result<KafkaSettings, PlanError> {
        let k = self;
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
            ca_file: broker.ca_file.clone(),
            cert_file: broker.cert_file.clone(),
            key_file: broker.key_file.clone(),
            insecure: broker.insecure,
            connect_timeout: broker.connect_timeout,
            inflight: usize::from(broker.inflight.max(1)),
            acks: k.kafka_acks,
            linger: k.kafka_linger,
            batch_size: k.kafka_batch_size,
            compression: k.kafka_compression,
            partitions: k.kafka_partitions,
            replication: k.kafka_replication,
            create_topics: !k.kafka_no_create_topics,
            group: k.kafka_group.clone().filter(|g| !g.trim().is_empty()),
            sasl_mechanism: k.kafka_sasl_mechanism,
            options,
        })
    }
}

impl Registered for KafkaTransport {
    type Flags = KafkaFlags;

    fn open(
        url: BrokerUrl,
        broker: &BrokerArgs,
        flags: &KafkaFlags,
    ) -> Result<Self, TransportError> {
        Self::new(url, flags.settings(broker)?)
    }

    fn shared_consumers_flag(flags: &KafkaFlags) -> Option<&'static str> {
        flags.kafka_group.is_some().then_some("--kafka-group")
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn settings(args: &[&str]) -> Result<KafkaSettings, PlanError> {
        let broker = BrokerArgs::parse_for_tests(args).expect("the flags parse");
        broker.family.kafka.settings(&broker)
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
