//! Where brokers plug in: the [`Transport`] trait, its errors, and the registry of broker
//! families (`registry.rs`, one line per family).
//!
//! A broker family is a folder here (`transport/<name>/`) that implements [`Transport`]
//! and [`Registered`] (its flags and settings), plus one line in `registry.rs` and one
//! feature in `core/Cargo.toml`. The load engine, measurement and storage are generic
//! over [`Transport`] and never change when a family is added.

#[macro_use]
mod generate;
pub mod backoff;
pub mod identity;
pub mod registry;
pub mod spec;

#[cfg(feature = "amqp")]
pub mod amqp;
#[cfg(feature = "kafka")]
pub mod kafka;
#[cfg(feature = "mqtt")]
pub mod mqtt;
#[cfg(feature = "nats")]
pub mod nats;
#[cfg(feature = "pulsar")]
pub mod pulsar;
#[cfg(feature = "tls")]
pub mod tls;
#[cfg(feature = "zmq")]
pub mod zmq;

use std::future::Future;

use bytes::Bytes;

pub use identity::ClientIdentity;
pub use registry::{AnyTransport, BrokerKind, Registered};

use crate::plan::{BrokerUrl, PlanError};

/// A boxed error from a broker client library.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// What can go wrong talking to a broker.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TransportError {
    /// The broker could not be reached or refused the connection.
    #[error("cannot connect to {url} as `{client_id}`")]
    Connect {
        /// The broker (credentials redacted).
        url: String,
        /// The client id used.
        client_id: String,
        /// Why.
        #[source]
        source: BoxError,
    },
    /// The broker did not answer in time.
    #[error("no answer from {url} within {waited_ms} ms while {doing}")]
    Timeout {
        /// The broker (credentials redacted).
        url: String,
        /// How long we waited.
        waited_ms: u64,
        /// What we were waiting for.
        doing: &'static str,
    },
    /// The broker refused the credentials.
    #[error("{url} refused the credentials of `{client_id}`: {reason}")]
    Auth {
        /// The broker (credentials redacted).
        url: String,
        /// The client id used.
        client_id: String,
        /// The broker's reason code.
        reason: String,
    },
    /// A TLS file could not be used.
    #[error("TLS setup failed for {file}: {reason}")]
    Tls {
        /// The file (CA, certificate or key) or setting at fault.
        file: String,
        /// Why it cannot be used.
        reason: String,
    },
    /// A subscription was refused.
    #[error("{url} refused the subscription to `{filter}`")]
    Subscribe {
        /// The broker.
        url: String,
        /// The topic filter.
        filter: String,
    },
    /// Publishing one message failed.
    #[error("publish failed: {0}")]
    Publish(#[source] BoxError),
    /// The connection was lost; the client reconnects on its own.
    #[error("connection to {url} lost")]
    Disconnected {
        /// The broker.
        url: String,
        /// Why.
        #[source]
        source: BoxError,
    },
    /// The options cannot be used with this broker.
    #[error("{0}")]
    Unsupported(String),
    /// A flag value the family cannot use.
    #[error(transparent)]
    Plan(#[from] PlanError),
    /// The broker family was left out of this build.
    #[error("this build has no {broker} support; rebuild with `--features {feature}`")]
    NotBuilt {
        /// The broker name.
        broker: &'static str,
        /// The cargo feature that adds it.
        feature: &'static str,
    },
}

impl TransportError {
    /// Whether the broker was simply not there (wrong address, not started).
    pub fn is_unreachable(&self) -> bool {
        matches!(self, Self::Connect { .. } | Self::Timeout { .. })
    }
}

/// One message to publish; borrowed so the hot path allocates nothing of its own.
#[derive(Debug, Clone, Copy)]
pub struct Outgoing<'a> {
    /// Destination topic (subject, routing key, ...).
    pub topic: &'a str,
    /// Message body.
    pub payload: &'a [u8],
    /// Protocol metadata (MQTT 5 user properties, headers); empty for most carriers.
    pub headers: &'a [(String, String)],
    /// The record timestamp to set, µs since the Unix epoch, where the broker keeps one
    /// per record (Kafka: ms, as CreateTime); ignored by the others.
    pub record_time_us: Option<u64>,
}

/// One message received, timestamped as soon as the client handed it over.
#[derive(Debug, Clone)]
pub struct Incoming {
    /// The topic it arrived on.
    pub topic: String,
    /// Message body.
    pub payload: Bytes,
    /// Protocol metadata (MQTT 5 user properties, headers).
    pub headers: Vec<(String, String)>,
    /// Receive time in µs since the Unix epoch.
    pub received_us: u64,
    /// The broker record's own timestamp, µs since the Unix epoch, where the broker keeps
    /// one (Kafka's CreateTime or LogAppendTime, ms); `None` for the others.
    pub record_time_us: Option<u64>,
}

/// A broker family. Implemented once per broker.
pub trait Transport: Send + Sync + 'static {
    /// A connection that publishes.
    type Publisher: Publisher;
    /// A connection that receives.
    type Subscriber: Subscriber;

    /// The broker this transport talks to.
    fn url(&self) -> &BrokerUrl;

    /// Opens one publishing connection (one per emulated device). Returns once the broker
    /// has accepted it, so connection errors surface here.
    fn publisher(
        &self,
        identity: &ClientIdentity,
    ) -> impl Future<Output = Result<Self::Publisher, TransportError>> + Send;

    /// Opens one receiving connection subscribed to `filters` (wildcards allowed). Returns
    /// once the subscriptions are confirmed, so no message published afterwards is missed.
    fn subscriber(
        &self,
        identity: &ClientIdentity,
        filters: &[String],
    ) -> impl Future<Output = Result<Self::Subscriber, TransportError>> + Send;
}

/// The sending half of a connection.
pub trait Publisher: Send + 'static {
    /// Hands one message to the client. Waits only when the client's own bounded queue is
    /// full; the wait shows up as send lag.
    fn publish(
        &mut self,
        message: Outgoing<'_>,
    ) -> impl Future<Output = Result<(), TransportError>> + Send;

    /// Sends everything queued, then closes the connection.
    fn close(self) -> impl Future<Output = Result<(), TransportError>> + Send;

    /// How many times the connection was lost so far.
    fn disconnections(&self) -> u64;

    /// How long the connection has been down in total so far (zero for transports that
    /// do not track it).
    fn disconnected_for(&self) -> std::time::Duration {
        std::time::Duration::ZERO
    }
}

/// The receiving half of a connection.
pub trait Subscriber: Send + 'static {
    /// The next message. An error means the connection was lost; calling again reconnects.
    fn recv(&mut self) -> impl Future<Output = Result<Incoming, TransportError>> + Send;

    /// Closes the connection.
    fn close(self) -> impl Future<Output = Result<(), TransportError>> + Send;

    /// Messages the client library dropped because this subscriber did not read them fast
    /// enough (its buffer was full); zero for clients that never drop (they leave the
    /// backlog to the broker instead).
    fn dropped(&self) -> u64 {
        0
    }
}
