//! Everything about a Pulsar client that is not in the URL or the client identity.

use std::time::Duration;

use super::super::tls::TlsSettings;

/// How subscribers share a subscription.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum SubscriptionKind {
    /// One consumer per subscription: every subscriber gets every message.
    Exclusive,
    /// Consumers of one subscription share its messages round robin.
    Shared,
    /// One active consumer, the others take over when it goes.
    Failover,
    /// Consumers share the messages by key; messages without a key go to one.
    KeyShared,
}

/// Everything about a Pulsar client that is not in the URL or the client identity.
#[derive(Clone)]
pub struct PulsarSettings {
    /// TLS settings (used when the URL is `pulsar+ssl://`); only the CA file applies.
    pub tls: TlsSettings,
    /// How long to wait for the broker to accept a connection, producer or subscription;
    /// also how long a message may wait for its send receipt.
    pub connect_timeout: Duration,
    /// Interval of the client's pings on an idle connection.
    pub keep_alive: Duration,
    /// Messages a connection queues before `publish` waits.
    pub queue_capacity: usize,
    /// Send receipts a publisher keeps pending before `publish` waits for the oldest.
    pub inflight: usize,
    /// The tenant iotload's topics live in.
    pub tenant: String,
    /// The namespace (inside the tenant) iotload's topics live in.
    pub namespace: String,
    /// `persistent://` topics (stored by BookKeeper); `non-persistent://` when false.
    pub persistent: bool,
    /// A named, durable subscription that subscribers share; a private, non-durable one
    /// per subscriber when `None`.
    pub subscription: Option<String>,
    /// The subscription type; exclusive for private subscriptions and shared for a named
    /// one when `None`.
    pub subscription_kind: Option<SubscriptionKind>,
    /// Producer-side batching (off by default: every message is sent at once).
    pub batching: bool,
    /// With batching, the most messages in one batch.
    pub batch_max_messages: u32,
    /// With batching, the longest a message waits for its batch to fill.
    pub batch_max_delay: Duration,
    /// A JWT sent as token authentication to every connection; the device's password
    /// is used when `None`.
    pub token: Option<String>,
    /// How often a pattern subscription looks for new topics that match it.
    pub topic_refresh: Duration,
}

impl Default for PulsarSettings {
    fn default() -> Self {
        Self {
            tls: TlsSettings::default(),
            connect_timeout: Duration::from_secs(10),
            keep_alive: Duration::from_secs(30),
            queue_capacity: 1024,
            inflight: 100,
            tenant: "public".into(),
            namespace: "default".into(),
            persistent: true,
            subscription: None,
            subscription_kind: None,
            batching: false,
            batch_max_messages: 1000,
            batch_max_delay: Duration::from_millis(1),
            token: None,
            topic_refresh: Duration::from_secs(1),
        }
    }
}

impl PulsarSettings {
    /// The subscription type in force.
    pub fn effective_kind(&self) -> SubscriptionKind {
        match (self.subscription_kind, &self.subscription) {
            (Some(kind), _) => kind,
            (None, Some(_)) => SubscriptionKind::Shared,
            (None, None) => SubscriptionKind::Exclusive,
        }
    }
}

impl std::fmt::Debug for PulsarSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PulsarSettings")
            .field("tls", &self.tls)
            .field("connect_timeout", &self.connect_timeout)
            .field("keep_alive", &self.keep_alive)
            .field("queue_capacity", &self.queue_capacity)
            .field("inflight", &self.inflight)
            .field("tenant", &self.tenant)
            .field("namespace", &self.namespace)
            .field("persistent", &self.persistent)
            .field("subscription", &self.subscription)
            .field("subscription_kind", &self.subscription_kind)
            .field("batching", &self.batching)
            .field("batch_max_messages", &self.batch_max_messages)
            .field("batch_max_delay", &self.batch_max_delay)
            .field("token", &self.token.as_ref().map(|_| "***"))
            .field("topic_refresh", &self.topic_refresh)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subscription_type_follows_the_subscription_name_unless_given() {
        let mut s = PulsarSettings::default();
        assert_eq!(s.effective_kind(), SubscriptionKind::Exclusive);
        s.subscription = Some("collectors".into());
        assert_eq!(s.effective_kind(), SubscriptionKind::Shared);
        s.subscription_kind = Some(SubscriptionKind::Failover);
        assert_eq!(s.effective_kind(), SubscriptionKind::Failover);
    }

    #[test]
    fn debug_hides_the_token() {
        let s = PulsarSettings {
            token: Some("eyJsecret".into()),
            ..PulsarSettings::default()
        };
        let text = format!("{s:?}");
        assert!(
            !text.contains("eyJsecret") && text.contains("***"),
            "{text}"
        );
    }
}
