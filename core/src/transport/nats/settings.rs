//! Everything about a NATS connection that is not in the URL or the client identity.

use super::*;

/// How long `close` waits for the last messages to be flushed to the server.
pub(super) const CLOSE_FLUSH_TIMEOUT: Duration = Duration::from_secs(5);

/// Everything about a NATS connection that is not in the URL or the client identity.
#[derive(Debug, Clone)]
pub struct NatsSettings {
    /// TLS settings (used when the URL is `tls://` or `nats+tls://`).
    pub tls: TlsSettings,
    /// How long to wait for the server to accept a connection or subscription.
    pub connect_timeout: Duration,
    /// Messages a client queues before `publish` waits.
    pub queue_capacity: usize,
    /// Publish through JetStream, into streams created for the subscribed filters.
    pub jetstream: bool,
    /// JetStream acknowledgements a publisher keeps pending before `publish` waits.
    pub inflight: usize,
    /// How subscribers acknowledge what their JetStream consumers deliver.
    pub jetstream_ack: JetStreamAck,
}

/// The ack policy of the JetStream consumers subscribers create.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum JetStreamAck {
    /// Every message is acknowledged on its own (JetStream's default).
    #[default]
    Explicit,
    /// Acknowledging a message acknowledges every earlier one too.
    All,
    /// Nothing is acknowledged: delivered means done.
    None,
}

impl JetStreamAck {
    pub(super) fn policy(self) -> async_nats::jetstream::consumer::AckPolicy {
        use async_nats::jetstream::consumer::AckPolicy;
        match self {
            Self::Explicit => AckPolicy::Explicit,
            Self::All => AckPolicy::All,
            Self::None => AckPolicy::None,
        }
    }
}

impl Default for NatsSettings {
    fn default() -> Self {
        Self {
            tls: TlsSettings::default(),
            connect_timeout: Duration::from_secs(10),
            queue_capacity: 1024,
            jetstream: false,
            inflight: 100,
            jetstream_ack: JetStreamAck::Explicit,
        }
    }
}
