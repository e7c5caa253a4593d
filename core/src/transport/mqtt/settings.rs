//! Everything about an MQTT connection that is not in the URL or the client identity.

use std::net::IpAddr;
use std::time::Duration;

use super::TlsSettings;

/// MQTT protocol version.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum MqttVersion {
    /// MQTT 3.1.1.
    #[default]
    V311,
    /// MQTT 5.
    V5,
}

/// Which client library publishes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum MqttPublisherKind {
    /// iotload's direct writer for QoS 0 MQTT 3.1.1 over plain TCP; rumqttc otherwise.
    #[default]
    Direct,
    /// rumqttc for every publisher.
    Rumqttc,
}

/// Everything about an MQTT connection that is not in the URL or the client identity.
#[derive(Debug, Clone)]
pub struct MqttSettings {
    /// Protocol version.
    pub version: MqttVersion,
    /// Quality of service for publishes and subscriptions (0, 1 or 2).
    pub qos: u8,
    /// Keep-alive interval.
    pub keep_alive: Duration,
    /// Start with a clean session.
    pub clean_start: bool,
    /// Set the retain flag on publishes.
    pub retain: bool,
    /// TLS settings (used when the URL is `mqtts://`).
    pub tls: TlsSettings,
    /// Messages a client queues before `publish` waits.
    pub queue_capacity: usize,
    /// QoS 1/2 messages in flight per connection.
    pub inflight: u16,
    /// How long to wait for the broker to accept a connection or subscription.
    pub connect_timeout: Duration,
    /// Largest packet sent (MQTT 3.1.1) or accepted and sent (MQTT 5, where the broker
    /// drops larger packets for this client), in bytes.
    pub max_packet_size: usize,
    /// Which client library publishes.
    pub publisher: MqttPublisherKind,
    /// Local addresses publishers connect from, taken in turn (direct publisher only).
    pub source_addresses: Vec<IpAddr>,
}

/// The largest packet MQTT can carry (a 4-byte remaining length), in bytes.
pub(super) const MQTT_MAX_PACKET: usize = 268_435_455;

impl Default for MqttSettings {
    fn default() -> Self {
        Self {
            version: MqttVersion::V311,
            qos: 0,
            keep_alive: Duration::from_secs(30),
            clean_start: true,
            retain: false,
            tls: TlsSettings::default(),
            queue_capacity: 1024,
            inflight: 100,
            connect_timeout: Duration::from_secs(10),
            max_packet_size: 1 << 20,
            publisher: MqttPublisherKind::Direct,
            source_addresses: Vec::new(),
        }
    }
}
