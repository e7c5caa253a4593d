//! Everything about a Kafka client that is not in the URL or the client identity, and
//! how it becomes librdkafka configuration.

use std::path::PathBuf;
use std::time::Duration;

/// How many broker acknowledgements a produced message waits for (`acks`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum KafkaAcks {
    /// None: the message counts as delivered once sent.
    #[value(name = "0")]
    Zero,
    /// The partition leader's.
    #[value(name = "1")]
    One,
    /// Every in-sync replica's (Kafka's default).
    All,
}

impl KafkaAcks {
    /// The value of librdkafka's `acks`.
    pub fn as_config(self) -> &'static str {
        match self {
            Self::Zero => "0",
            Self::One => "1",
            Self::All => "all",
        }
    }
}

/// How produced batches are compressed (`compression.codec`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum KafkaCompression {
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

impl KafkaCompression {
    /// The value of librdkafka's `compression.codec`.
    pub fn as_config(self) -> &'static str {
        match self {
            Self::None => "none",
            Self::Gzip => "gzip",
            Self::Snappy => "snappy",
            Self::Lz4 => "lz4",
            Self::Zstd => "zstd",
        }
    }
}

/// The SASL mechanism used when the URL or the identity carries a user name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum SaslMechanism {
    /// User name and password in clear (use with TLS).
    Plain,
    /// SCRAM with SHA-256.
    #[value(name = "scram-sha-256")]
    ScramSha256,
    /// SCRAM with SHA-512.
    #[value(name = "scram-sha-512")]
    ScramSha512,
}

impl SaslMechanism {
    /// The value of librdkafka's `sasl.mechanism`.
    pub fn as_config(self) -> &'static str {
        match self {
            Self::Plain => "PLAIN",
            Self::ScramSha256 => "SCRAM-SHA-256",
            Self::ScramSha512 => "SCRAM-SHA-512",
        }
    }
}

/// Everything about a Kafka connection that is not in the URL or the client identity.
#[derive(Debug, Clone)]
pub struct KafkaSettings {
    /// CA certificates (PEM) that sign the broker's certificate (`kafka+tls://`); the
    /// system's roots if unset.
    pub ca_file: Option<PathBuf>,
    /// Client certificate (PEM) for mutual TLS.
    pub cert_file: Option<PathBuf>,
    /// Client private key (PEM) for mutual TLS.
    pub key_file: Option<PathBuf>,
    /// Accept any broker certificate (testing only).
    pub insecure: bool,
    /// How long to wait for the broker to answer a connection, metadata or topic
    /// creation request.
    pub connect_timeout: Duration,
    /// Deliveries a publisher keeps unacknowledged before `publish` waits.
    pub inflight: usize,
    /// Acknowledgements a message waits for.
    pub acks: KafkaAcks,
    /// How long the producer waits to fill a batch (`linger.ms`).
    pub linger: Duration,
    /// Largest batch in bytes (`batch.size`); librdkafka's default when `None`.
    pub batch_size: Option<u32>,
    /// Batch compression.
    pub compression: KafkaCompression,
    /// Partitions of a topic iotload creates.
    pub partitions: i32,
    /// Replication factor of a topic iotload creates.
    pub replication: i32,
    /// Create a missing topic when a publisher first publishes to it.
    pub create_topics: bool,
    /// The consumer group subscribers join; a fresh one per subscriber when `None`.
    pub group: Option<String>,
    /// The SASL mechanism for credentials.
    pub sasl_mechanism: SaslMechanism,
    /// More librdkafka properties, applied last (they win over iotload's own).
    pub options: Vec<(String, String)>,
}

impl Default for KafkaSettings {
    fn default() -> Self {
        Self {
            ca_file: None,
            cert_file: None,
            key_file: None,
            insecure: false,
            connect_timeout: Duration::from_secs(10),
            inflight: 100,
            acks: KafkaAcks::All,
            linger: Duration::from_millis(1),
            batch_size: None,
            compression: KafkaCompression::None,
            partitions: 1,
            replication: 1,
            create_topics: true,
            group: None,
            sasl_mechanism: SaslMechanism::Plain,
            options: Vec::new(),
        }
    }
}

/// Parses one `KEY=VALUE` librdkafka property.
pub fn parse_option(pair: &str) -> Result<(String, String), String> {
    match pair.split_once('=') {
        Some((key, value)) if !key.trim().is_empty() => {
            Ok((key.trim().to_string(), value.trim().to_string()))
        }
        _ => Err(format!(
            "`{pair}` is not KEY=VALUE (a librdkafka property, e.g. socket.nagle.disable=true)"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_are_key_value_pairs() {
        assert_eq!(
            parse_option("linger.ms = 5").unwrap(),
            ("linger.ms".into(), "5".into())
        );
        assert_eq!(
            parse_option("debug=broker,topic").unwrap(),
            ("debug".into(), "broker,topic".into())
        );
        assert!(parse_option("linger.ms").is_err());
        assert!(parse_option("=5").is_err());
    }
}
