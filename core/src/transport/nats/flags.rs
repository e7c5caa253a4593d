//! The flags only NATS takes, and how they and the shared broker flags become
//! [`NatsSettings`].

use super::{JetStreamAck, NatsSettings, NatsTransport};
use crate::args::BrokerArgs;
use crate::transport::{BrokerUrl, Registered, TransportError};

/// Options only NATS servers take (`nats://`, `tls://`).
#[derive(Debug, Clone, clap::Args)]
#[command(next_help_heading = "NATS options (nats://, tls://)")]
pub struct NatsFlags {
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
    pub jetstream_ack: JetStreamAck,
}

impl NatsFlags {
    /// The NATS connection settings.
    pub fn settings(&self, broker: &BrokerArgs) -> NatsSettings {
        NatsSettings {
            tls: broker.tls_settings(),
            connect_timeout: broker.connect_timeout,
            queue_capacity: broker.queue_capacity.max(1),
            jetstream: self.jetstream,
            inflight: usize::from(broker.inflight.max(1)),
            jetstream_ack: self.jetstream_ack,
        }
    }
}

impl Registered for NatsTransport {
    type Flags = NatsFlags;

    fn open(
        url: BrokerUrl,
        broker: &BrokerArgs,
        flags: &NatsFlags,
    ) -> Result<Self, TransportError> {
        Self::new(url, flags.settings(broker))
    }

    fn stray_flag(flags: &NatsFlags) -> Option<&'static str> {
        flags.jetstream.then_some("--jetstream")
    }
}
