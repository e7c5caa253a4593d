//! The flags only Pulsar takes, and how they and the shared broker flags become
//! [`PulsarSettings`].

use super::{PulsarSettings, PulsarTransport, SubscriptionKind};
use crate::args::BrokerArgs;
use crate::plan::{PlanError, parse_duration};
use crate::transport::{BrokerUrl, Registered, TransportError};
use std::time::Duration;
/// Options only Pulsar brokers take (`pulsar://`, `pulsar+ssl://`).
#[derive(Debug, Clone, clap::Args)]
#[command(next_help_heading = "Pulsar options (pulsar://, pulsar+ssl://)")]
pub struct PulsarFlags {
    /// Tenant that holds the topics: topic a/b is persistent://TENANT/NAMESPACE/a.b.
    #[arg(
        long,
        env = "IOTLOAD_PULSAR_TENANT",
        value_name = "NAME",
        default_value = "public"
    )]
    pub pulsar_tenant: String,

    /// Namespace (inside the tenant) that holds the topics.
    #[arg(
        long,
        env = "IOTLOAD_PULSAR_NAMESPACE",
        value_name = "NAME",
        default_value = "default"
    )]
    pub pulsar_namespace: String,

    /// Use non-persistent topics (non-persistent://): not stored, lost when no consumer is
    /// connected, and faster.
    #[arg(long, env = "IOTLOAD_PULSAR_NON_PERSISTENT")]
    pub pulsar_non_persistent: bool,

    /// Durable subscription that subscribers share (competing consumers, shared by
    /// default); each subscriber gets a private, non-durable, exclusive one when not given.
    #[arg(long, env = "IOTLOAD_PULSAR_SUBSCRIPTION", value_name = "NAME")]
    pub pulsar_subscription: Option<String>,

    /// Subscription type: exclusive, shared, failover or key-shared (default: exclusive,
    /// or shared with --pulsar-subscription).
    #[arg(long, env = "IOTLOAD_PULSAR_SUBSCRIPTION_TYPE", value_name = "TYPE")]
    pub pulsar_subscription_type: Option<SubscriptionKind>,

    /// Batch messages in the producer (trades latency for throughput; off by default).
    #[arg(long, env = "IOTLOAD_PULSAR_BATCHING")]
    pub pulsar_batching: bool,

    /// With --pulsar-batching, the most messages in one batch.
    #[arg(
        long,
        env = "IOTLOAD_PULSAR_BATCH_SIZE",
        value_name = "MESSAGES",
        default_value_t = 1000
    )]
    pub pulsar_batch_size: u32,

    /// With --pulsar-batching, the longest a message waits for its batch (e.g. 1ms).
    #[arg(long, env = "IOTLOAD_PULSAR_BATCH_DELAY", value_name = "DURATION", default_value = "1ms",
          value_parser = parse_duration)]
    pub pulsar_batch_delay: Duration,

    /// JWT for token authentication, the same for every device; without it, the
    /// device's --password is sent as its token (--username is not used).
    ///
    /// Prefer the IOTLOAD_PULSAR_TOKEN variable: command lines are visible to other users
    /// of the machine.
    #[arg(
        long,
        env = "IOTLOAD_PULSAR_TOKEN",
        value_name = "JWT",
        hide_env_values = true
    )]
    pub pulsar_token: Option<String>,

    /// How often a subscription with wildcards looks for new matching topics; the first
    /// messages on a new topic can wait this long.
    #[arg(long, env = "IOTLOAD_PULSAR_TOPIC_REFRESH", value_name = "DURATION", default_value = "1s",
          value_parser = parse_duration)]
    pub pulsar_topic_refresh: Duration,
}

impl PulsarFlags {
    /// The Pulsar client settings.
    pub fn settings(&self, broker: &BrokerArgs) -> Result<PulsarSettings, PlanError> {
        let p = self;
        if p.pulsar_batching && p.pulsar_batch_size < 2 {
            return Err(PlanError::BadValue {
                option: "--pulsar-batch-size",
                reason: format!(
                    "{} messages is no batch; give 2 or more, or leave out --pulsar-batching",
                    p.pulsar_batch_size
                ),
            });
        }
        if p.pulsar_topic_refresh < Duration::from_millis(100) {
            return Err(PlanError::BadValue {
                option: "--pulsar-topic-refresh",
                reason: "less than 100ms would ask the broker for the topic list all the time"
                    .into(),
            });
        }
        Ok(PulsarSettings {
            tls: broker.tls_settings(),
            connect_timeout: broker.connect_timeout,
            keep_alive: broker.keep_alive,
            queue_capacity: broker.queue_capacity.max(1),
            inflight: usize::from(broker.inflight.max(1)),
            tenant: p.pulsar_tenant.clone(),
            namespace: p.pulsar_namespace.clone(),
            persistent: !p.pulsar_non_persistent,
            subscription: p.pulsar_subscription.clone(),
            subscription_kind: p.pulsar_subscription_type,
            batching: p.pulsar_batching,
            batch_max_messages: p.pulsar_batch_size,
            batch_max_delay: p.pulsar_batch_delay,
            token: p.pulsar_token.clone().filter(|t| !t.is_empty()),
            topic_refresh: p.pulsar_topic_refresh,
        })
    }
}

impl Registered for PulsarTransport {
    type Flags = PulsarFlags;

    fn open(
        url: BrokerUrl,
        broker: &BrokerArgs,
        flags: &PulsarFlags,
    ) -> Result<Self, TransportError> {
        Self::new(url, flags.settings(broker)?)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn pulsar(args: &[&str]) -> Result<PulsarSettings, String> {
        let broker = BrokerArgs::parse_for_tests(args).map_err(|e| e.to_string())?;
        broker
            .family
            .pulsar
            .settings(&broker)
            .map_err(|e| e.to_string())
    }

    #[test]
    fn pulsar_defaults_are_a_private_exclusive_subscription_without_batching() {
        let s = pulsar(&[]).unwrap();
        assert_eq!(
            (s.tenant.as_str(), s.namespace.as_str()),
            ("public", "default")
        );
        assert!(s.persistent);
        assert_eq!(s.subscription, None);
        assert_eq!(s.effective_kind(), SubscriptionKind::Exclusive);
        assert!(!s.batching);
        assert_eq!(s.token, None);
        assert_eq!(s.topic_refresh, Duration::from_secs(1));
        assert_eq!(s.inflight, 100);
        assert_eq!(s.connect_timeout, Duration::from_secs(10));
    }

    #[test]
    fn pulsar_flags_reach_the_settings() {
        let s = pulsar(&[
            "--pulsar-tenant",
            "acme",
            "--pulsar-namespace",
            "edge",
            "--pulsar-non-persistent",
            "--pulsar-subscription",
            "collectors",
            "--pulsar-batching",
            "--pulsar-batch-size",
            "50",
            "--pulsar-batch-delay",
            "5ms",
            "--pulsar-token",
            "eyJ.token",
            "--pulsar-topic-refresh",
            "250ms",
            "--ca-file",
            "ca.pem",
            "--connect-timeout",
            "3s",
        ])
        .unwrap();
        assert_eq!((s.tenant.as_str(), s.namespace.as_str()), ("acme", "edge"));
        assert!(!s.persistent);
        assert_eq!(s.subscription.as_deref(), Some("collectors"));
        assert_eq!(s.effective_kind(), SubscriptionKind::Shared);
        assert!(s.batching);
        assert_eq!(s.batch_max_messages, 50);
        assert_eq!(s.batch_max_delay, Duration::from_millis(5));
        assert_eq!(s.token.as_deref(), Some("eyJ.token"));
        assert_eq!(s.topic_refresh, Duration::from_millis(250));
        assert_eq!(
            s.tls.ca_file.as_deref(),
            Some(std::path::Path::new("ca.pem"))
        );
        assert_eq!(s.connect_timeout, Duration::from_secs(3));
        let s = pulsar(&["--pulsar-subscription-type", "key-shared"]).unwrap();
        assert_eq!(s.effective_kind(), SubscriptionKind::KeyShared);
    }

    #[test]
    fn bad_pulsar_values_name_the_option() {
        let e = pulsar(&["--pulsar-batching", "--pulsar-batch-size", "1"]).unwrap_err();
        assert!(e.contains("--pulsar-batch-size"), "{e}");
        // Without batching the size is not used, so it is not checked.
        assert!(pulsar(&["--pulsar-batch-size", "1"]).is_ok());
        let e = pulsar(&["--pulsar-topic-refresh", "10ms"]).unwrap_err();
        assert!(e.contains("--pulsar-topic-refresh"), "{e}");
        let e = pulsar(&["--pulsar-subscription-type", "bogus"]).unwrap_err();
        assert!(e.contains("exclusive") && e.contains("key-shared"), "{e}");
        let s = pulsar(&["--pulsar-token", ""]).unwrap();
        assert_eq!(s.token, None, "an empty token is no token");
    }
}
