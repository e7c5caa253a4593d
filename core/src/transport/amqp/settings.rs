//! Everything about an AMQP connection that is not in the URL or the client identity.

use super::*;

/// The exchange types an iotload client can declare.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ExchangeType {
    /// Routing keys matched against binding patterns with `*` and `#` (the default).
    Topic,
    /// Routing keys matched exactly: filters must not contain wildcards.
    Direct,
    /// Every bound queue gets every message; routing keys are ignored.
    Fanout,
}

impl ExchangeType {
    pub(super) fn kind(self) -> ExchangeKind {
        match self {
            Self::Topic => ExchangeKind::Topic,
            Self::Direct => ExchangeKind::Direct,
            Self::Fanout => ExchangeKind::Fanout,
        }
    }
}

/// Everything about an AMQP connection that is not in the URL or the client identity.
#[derive(Debug, Clone)]
pub struct AmqpSettings {
    /// TLS settings (used when the URL is `amqps://`).
    pub tls: TlsSettings,
    /// How long to wait for the broker to accept a connection, declaration or consumer.
    pub connect_timeout: Duration,
    /// The exchange every message goes through.
    pub exchange: String,
    /// The type declared for an exchange not named `amq.*`.
    pub exchange_kind: ExchangeType,
    /// A shared queue subscribers consume from; a private one per subscriber when `None`.
    pub queue: Option<String>,
    /// Durable exchange and queue, persistent messages.
    pub durable: bool,
    /// Publisher confirms: each message is confirmed by the broker.
    pub confirms: bool,
    /// Confirmations a publisher keeps pending before `publish` waits.
    pub inflight: usize,
    /// Acknowledge each delivery (instead of no-ack consumption).
    pub manual_ack: bool,
    /// Unacknowledged deliveries the broker sends ahead (with `manual_ack`).
    pub prefetch: u16,
    /// Publishers (one channel each) sharing one connection; 1 gives every device its own.
    pub channels_per_connection: usize,
}

impl Default for AmqpSettings {
    fn default() -> Self {
        Self {
            tls: TlsSettings::default(),
            connect_timeout: Duration::from_secs(10),
            exchange: "amq.topic".into(),
            exchange_kind: ExchangeType::Topic,
            queue: None,
            durable: false,
            confirms: false,
            inflight: 100,
            manual_ack: false,
            prefetch: 1000,
            channels_per_connection: 100,
        }
    }
}
