//! Apache Pulsar producers and consumers over TCP or TLS, with the `pulsar` crate.
//!
//! Tested against Apache Pulsar 4.2.4 standalone (the test kit's JVM): the transport
//! conformance suite and `iotload run` end to end; connection failures also on loopback
//! fault injectors. Token authentication and TLS are not tested against a broker.
//!
//! Each publisher is one client (one broker connection) with one producer per topic it
//! publishes to, created on its first message and cached; a subscriber is one client with
//! one consumer over every filter or, for a pattern subscription, one consumer per topic
//! it has found.
//!
//! # Topics
//!
//! A topic `iot/7/telemetry` is the Pulsar topic
//! `persistent://{tenant}/{namespace}/iot.7.telemetry` ([`PulsarSettings::tenant`],
//! [`PulsarSettings::namespace`], `non-persistent://` without
//! [`PulsarSettings::persistent`]): `/` becomes `.` and back on the way in, as for NATS
//! and AMQP. Filters without wildcards subscribe to their topics by name. Filters with
//! `+` or `#` become one anchored pattern over the namespace's topic names (`+` one
//! level, `a/#` `a` and everything below it; partitions match as their topic): a
//! pattern subscription. It consumes the topics that match when it starts, then lists
//! the namespace's topics every [`PulsarSettings::topic_refresh`] and subscribes to new
//! matches itself, not with the crate's pattern consumer (which starts an unfinished
//! attempt over at every refresh): each attempt runs to completion in a task of its own,
//! one at a time, so a busy broker slows discovery down but cannot stop it.
//!
//! # Subscriptions
//!
//! By default every subscriber has a private, non-durable, exclusive subscription that
//! disappears with it. With [`PulsarSettings::subscription`] subscribers share one
//! durable subscription of that name (shared by default, see
//! [`PulsarSettings::subscription_kind`]), so they compete for its messages.
//!
//! A pattern subscription reaches a topic only once the topic exists and a refresh has
//! found it, so it starts each topic at the earliest retained message; a private one then
//! skips messages published before it started (by their publish time), so nothing
//! published after `subscriber` returns is missed and nothing older is counted. The
//! first messages on a new topic wait up to one refresh interval (and the time to
//! subscribe), which shows in their latency. Receiving takes from the consumers in turn,
//! so a busy topic does not starve the others.
//!
//! # Publishing
//!
//! Messages are sent without waiting for their receipt; up to [`PulsarSettings::inflight`]
//! receipts stay pending (the oldest is awaited when the window is full, so a slow broker
//! shows as send lag) and `close` awaits them all, after sending any open batch.
//! Batching ([`PulsarSettings::batching`]) is off by default, since it trades latency for
//! throughput. Headers (the `header` stamp carrier) ride as message properties.
//!
//! # Authentication and TLS
//!
//! Token authentication: [`PulsarSettings::token`], else the device's password (the user
//! name is not used), else the URL's password. `pulsar+ssl://` checks the broker's
//! certificate against the CA file and the client's built-in web roots; `--insecure` and
//! client certificates are not available.

mod client;
mod discovery;
mod error;
mod flags;
mod publisher;
mod settings;
mod subscriber;
mod topic;

pub use flags::PulsarFlags;

pub use client::PulsarTransport;
pub use publisher::PulsarPublisher;
pub use settings::{PulsarSettings, SubscriptionKind};
pub use subscriber::PulsarSubscriber;
pub use topic::{TopicSpace, has_wildcard, local_name_to_topic, topic_to_local_name};
