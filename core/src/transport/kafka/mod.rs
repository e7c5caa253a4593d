//! Kafka (and Kafka-protocol brokers) over TCP or TLS, with rdkafka (librdkafka).
//!
//! Publishers are handles on one producer shared per set of credentials (see
//! `publisher.rs` for why); each subscriber is its own consumer in its own consumer
//! group unless [`KafkaSettings::group`] names a shared one (see `subscriber.rs` for how
//! it avoids old messages without missing new ones).
//!
//! # Topics
//!
//! iotload's topics are MQTT-style; Kafka topic names cannot hold `/`, so `/` becomes
//! `.` on the way out and `.` becomes `/` on the way in. Filters with `+` and `#`
//! become anchored regular expressions, which librdkafka matches against the cluster's
//! topics, picking up new ones on each metadata refresh (every 250 ms). Messages are
//! keyed by their iotload topic, so one device's messages stay on one partition, in
//! order. Kafka does not create topics on first use everywhere (and tansu never does),
//! so a publisher creates a missing topic through the admin API the first time it
//! publishes to it ([`KafkaSettings::create_topics`]).
//!
//! The header stamp carrier rides in Kafka record headers.

mod client;
mod flags;
mod names;
mod publisher;
mod settings;
mod subscriber;

pub use flags::KafkaFlags;

pub use client::KafkaTransport;
pub use names::{filter_matches, filter_to_pattern, kafka_to_topic, topic_to_kafka};
pub use publisher::KafkaPublisher;
pub use settings::{KafkaAcks, KafkaCompression, KafkaSettings, SaslMechanism, parse_option};
pub use subscriber::KafkaSubscriber;
