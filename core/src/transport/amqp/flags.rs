//! The flags only AMQP takes, and how they and the shared broker flags become
//! [`AmqpSettings`].

use super::{AmqpSettings, AmqpTransport, ExchangeType};
use crate::args::BrokerArgs;
use crate::transport::{BrokerUrl, Registered, TransportError};

/// Options only AMQP brokers take (`amqp://`, `amqps://`).
#[derive(Debug, Clone, clap::Args)]
#[command(next_help_heading = "AMQP options (amqp://, amqps://)")]
pub struct AmqpFlags {
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
    pub amqp_exchange_type: ExchangeType,

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

impl AmqpFlags {
    /// The AMQP connection settings.
    pub fn settings(&self, broker: &BrokerArgs) -> AmqpSettings {
        let a = self;
        AmqpSettings {
            tls: broker.tls_settings(),
            connect_timeout: broker.connect_timeout,
            exchange: a.amqp_exchange.clone(),
            exchange_kind: a.amqp_exchange_type,
            queue: a.amqp_queue.clone(),
            durable: a.amqp_durable,
            confirms: a.amqp_confirms,
            inflight: usize::from(broker.inflight.max(1)),
            manual_ack: a.amqp_manual_ack,
            prefetch: a.amqp_prefetch,
            channels_per_connection: a.amqp_channels_per_connection as usize,
        }
    }
}

impl Registered for AmqpTransport {
    type Flags = AmqpFlags;

    fn open(
        url: BrokerUrl,
        broker: &BrokerArgs,
        flags: &AmqpFlags,
    ) -> Result<Self, TransportError> {
        Self::new(url, flags.settings(broker))
    }

    fn shared_consumers_flag(flags: &AmqpFlags) -> Option<&'static str> {
        flags.amqp_queue.is_some().then_some("--amqp-queue")
    }
}
