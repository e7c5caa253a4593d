//! The flags only MQTT takes, and how they and the shared broker flags become
//! [`MqttSettings`].

use super::{MqttPublisherKind, MqttSettings, MqttTransport, MqttVersion};
use crate::args::BrokerArgs;
use crate::plan::PlanError;
use crate::transport::{BrokerUrl, Registered, TransportError};

/// Options only MQTT brokers take (`mqtt://`, `mqtts://`).
#[derive(Debug, Clone, clap::Args)]
#[command(next_help_heading = "MQTT options (mqtt://, mqtts://)")]
pub struct MqttFlags {
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
    pub mqtt_publisher: MqttPublisherKind,
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
    /// Resume persistent sessions instead of starting clean (clean start is the default).
    #[arg(long, env = "IOTLOAD_NO_CLEAN_START")]
    pub no_clean_start: bool,
    /// Set the retain flag on published messages.
    #[arg(long, env = "IOTLOAD_RETAIN")]
    pub retain: bool,
}

impl MqttFlags {
    /// The protocol version `--mqtt-version` names.
    pub fn version(&self) -> Result<MqttVersion, PlanError> {
        match self.mqtt_version.as_str() {
            "3.1.1" | "311" | "4" => Ok(MqttVersion::V311),
            "5" | "5.0" => Ok(MqttVersion::V5),
            other => Err(PlanError::BadValue {
                option: "--mqtt-version",
                reason: format!("`{other}` is not an MQTT version; use 3.1.1 or 5"),
            }),
        }
    }

    /// The MQTT connection settings.
    pub fn settings(&self, broker: &BrokerArgs) -> Result<MqttSettings, PlanError> {
        let version = self.version()?;
        Ok(MqttSettings {
            version,
            qos: self.qos,
            keep_alive: broker.keep_alive,
            clean_start: !self.no_clean_start,
            retain: self.retain,
            tls: broker.tls_settings(),
            queue_capacity: broker.queue_capacity.max(1),
            inflight: broker.inflight.max(1),
            connect_timeout: broker.connect_timeout,
            publisher: self.mqtt_publisher,
            source_addresses: self.source_addresses.clone(),
            ..MqttSettings::default()
        })
    }
}

impl Registered for MqttTransport {
    type Flags = MqttFlags;

    fn open(
        url: BrokerUrl,
        broker: &BrokerArgs,
        flags: &MqttFlags,
    ) -> Result<Self, TransportError> {
        Self::new(url, flags.settings(broker)?)
    }

    fn header_stamp_problem(flags: &MqttFlags) -> Option<String> {
        (!matches!(flags.version(), Ok(MqttVersion::V5))).then(|| {
            "the header carrier uses MQTT 5 user properties; add --mqtt-version 5 or use \
             --stamp json or binary"
                .to_string()
        })
    }
}
