//! Receiving: one librdkafka consumer per subscriber, subscribed to one pattern per
//! filter.
//!
//! # Only what is published after `subscriber()` returns
//!
//! A subscriber must see every message published after it subscribed, including those
//! on topics created later (a publisher creates its topic on its first message), but
//! none left in a topic by earlier runs. Each subscriber therefore joins a fresh
//! consumer group (unless `--kafka-group` names one) that starts at the earliest offset
//! of every partition it is assigned, and drops messages whose Kafka timestamp is older
//! than the moment it subscribed. Starting from the end instead would lose the first
//! messages of a topic created between the subscription and the assignment; seeking by
//! time on assignment would save reading old messages but adds a blocking broker
//! round trip inside the rebalance. The cost of this choice is reading (and dropping)
//! whatever old messages the matching topics still hold, once, at the start.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use rdkafka::Message;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{BorrowedMessage, Headers};
use tokio::sync::Notify;

use super::client::{KafkaContext, KafkaTransport};
use super::names::{filter_matches, filter_to_pattern, kafka_to_topic};
use crate::stamp::now_us;
use crate::transport::backoff::reconnect_delay;
use crate::transport::{ClientIdentity, Incoming, Subscriber, TransportError};

/// How often the consumer looks for new topics matching its patterns: a message on a
/// topic created after the subscription waits up to this long (plus a rebalance).
const METADATA_REFRESH_MS: &str = "250";

/// The longest the broker may hold a fetch while it has nothing new. Apache Kafka answers
/// as soon as data arrives, so this costs only idle requests there; brokers that hold a
/// fetch for the whole wait (tansu 0.6) add up to this much to every hop.
const FETCH_WAIT_MAX_MS: &str = "10";

/// At most how many queued events a failed connection check serves.
const EVENTS_TO_SERVE: usize = 100;

/// How long a failed connection check waits for one more queued event.
const EVENT_WAIT: Duration = Duration::from_millis(20);

/// How long `close` waits for the consumer to leave its group.
const CLOSE_WAIT: Duration = Duration::from_secs(5);

/// A Kafka consumer subscribed to topic filters.
pub struct KafkaSubscriber {
    consumer: Option<Arc<StreamConsumer<KafkaContext>>>,
    /// Messages read while waiting for the first assignment.
    early: VecDeque<Incoming>,
    /// Messages with an older Kafka timestamp (ms since the Unix epoch) are dropped.
    since_ms: i64,
    url: String,
    failures: u32,
    /// Per topic and partition, the offset after the last message delivered: a partition
    /// assigned again after a rebalance starts over at its earliest offset (no offsets
    /// are committed), and what was delivered before is skipped, not counted twice.
    next_offsets: HashMap<String, Vec<i64>>,
}

/// Whether the message at `offset` of `topic`/`partition` is new, remembering it if so.
fn first_delivery(
    next_offsets: &mut HashMap<String, Vec<i64>>,
    topic: &str,
    partition: i32,
    offset: i64,
) -> bool {
    let Ok(slot) = usize::try_from(partition) else {
        return true;
    };
    let offsets = match next_offsets.get_mut(topic) {
        Some(offsets) => offsets,
        None => next_offsets.entry(topic.to_owned()).or_default(),
    };
    if offsets.len() <= slot {
        offsets.resize(slot + 1, 0);
    }
    if offset < offsets[slot] {
        return false;
    }
    offsets[slot] = offset + 1;
    true
}

impl KafkaSubscriber {
    /// Creates the consumer, checks that the broker answers and subscribes.
    pub(super) async fn connect(
        transport: &KafkaTransport,
        identity: &ClientIdentity,
        filters: &[String],
    ) -> Result<Self, TransportError> {
        let since_ms = (now_us() / 1_000) as i64;
        let patterns = filters
            .iter()
            .map(|f| filter_to_pattern(f))
            .collect::<Result<Vec<_>, _>>()
            .map_err(TransportError::Unsupported)?;
        let s = &transport.settings;
        let credentials = identity.login(&transport.url);
        let mut config = transport.config(&credentials, &identity.client_id);
        let group = match &s.group {
            Some(g) => g.clone(),
            None => format!("iotload-{}-{:x}", identity.client_id, now_us()),
        };
        config
            .set("group.id", group)
            .set("auto.offset.reset", "earliest")
            .set("enable.auto.commit", s.group.is_some().to_string())
            .set("enable.partition.eof", "false")
            // A new topic adds partitions without revoking the others: an eager
            // rebalance would stop every partition and, without committed offsets,
            // re-read them from the start.
            .set("partition.assignment.strategy", "cooperative-sticky")
            .set("topic.metadata.refresh.interval.ms", METADATA_REFRESH_MS)
            .set("fetch.wait.max.ms", FETCH_WAIT_MAX_MS);
        transport.apply_options(&mut config);
        let context = KafkaTransport::context();
        let events = context.events.clone();
        let consumer: StreamConsumer<KafkaContext> =
            config.create_with_context(context).map_err(|e| {
                TransportError::Unsupported(format!("the Kafka client refused its settings: {e}"))
            })?;
        let consumer = Arc::new(consumer);
        let check = consumer.clone();
        let existing = match transport
            .fetch_metadata(move |waited| check.client().fetch_metadata(None, waited))
            .await
        {
            Ok(names) => names,
            Err(e) => {
                // A consumer's log and error events wait in its queue until it is polled:
                // serve them (nothing is subscribed yet, so no message is lost), so the
                // error says what happened.
                for _ in 0..EVENTS_TO_SERVE {
                    if tokio::time::timeout(EVENT_WAIT, consumer.recv())
                        .await
                        .is_err()
                    {
                        break;
                    }
                }
                return Err(transport.classify(&events, &e, &identity.client_id));
            }
        };
        let refs: Vec<&str> = patterns.iter().map(String::as_str).collect();
        consumer
            .subscribe(&refs)
            .map_err(|_| TransportError::Subscribe {
                url: transport.url.to_string(),
                filter: filters.join(", "),
            })?;
        let mut subscriber = Self {
            consumer: Some(consumer),
            early: VecDeque::new(),
            since_ms,
            url: transport.url.to_string(),
            failures: 0,
            next_offsets: HashMap::new(),
        };
        // The group assigns partitions only once a topic matches; until then there is
        // nothing to wait for.
        let matching = existing
            .iter()
            .any(|name| filters.iter().any(|f| filter_matches(f, name)));
        if matching {
            let started = std::time::Instant::now();
            let joined = subscriber
                .await_assignment(&events.assigned, s.connect_timeout)
                .await;
            tracing::debug!(joined, waited = ?started.elapsed(), "kafka consumer group joined");
        }
        Ok(subscriber)
    }

    /// Serves the consumer until its group gave it its first assignment (or `waited`
    /// passed), keeping any message read meanwhile, so that the first messages published
    /// after `subscriber()` returns do not wait for the group to form.
    async fn await_assignment(&mut self, assigned: &Notify, waited: Duration) -> bool {
        let Some(consumer) = self.consumer.clone() else {
            return false;
        };
        let deadline = tokio::time::Instant::now() + waited;
        let notified = assigned.notified();
        tokio::pin!(notified);
        loop {
            tokio::select! {
                biased;
                _ = &mut notified => return true,
                _ = tokio::time::sleep_until(deadline) => return false,
                m = consumer.recv() => {
                    if let Ok(m) = m
                        && first_delivery(&mut self.next_offsets, m.topic(), m.partition(), m.offset())
                        && let Some(message) = incoming(&m, self.since_ms, now_us())
                    {
                        self.early.push_back(message);
                    }
                }
            }
        }
    }
}

/// The message as iotload sees it, or `None` when it is older than the subscription.
fn incoming(m: &BorrowedMessage<'_>, since_ms: i64, received_us: u64) -> Option<Incoming> {
    if let Some(ts) = m.timestamp().to_millis()
        && ts < since_ms
    {
        return None;
    }
    let headers = m
        .headers()
        .map(|h| {
            h.iter()
                .map(|header| {
                    let value = header
                        .value
                        .map(|v| String::from_utf8_lossy(v).into_owned())
                        .unwrap_or_default();
                    (header.key.to_string(), value)
                })
                .collect()
        })
        .unwrap_or_default();
    Some(Incoming {
        topic: kafka_to_topic(m.topic()),
        payload: Bytes::copy_from_slice(m.payload().unwrap_or_default()),
        headers,
        received_us,
        record_time_us: m
            .timestamp()
            .to_millis()
            .and_then(|ms| u64::try_from(ms).ok())
            .map(|ms| ms.saturating_mul(1_000)),
    })
}

impl Subscriber for KafkaSubscriber {
    async fn recv(&mut self) -> Result<Incoming, TransportError> {
        if let Some(m) = self.early.pop_front() {
            return Ok(m);
        }
        let Some(consumer) = &self.consumer else {
            return Err(TransportError::Disconnected {
                url: self.url.clone(),
                source: "the subscriber is closed".into(),
            });
        };
        if self.failures > 0 {
            tokio::time::sleep(reconnect_delay(self.failures)).await;
        }
        loop {
            match consumer.recv().await {
                Ok(m) => {
                    let received_us = now_us();
                    self.failures = 0;
                    if !first_delivery(&mut self.next_offsets, m.topic(), m.partition(), m.offset())
                    {
                        continue;
                    }
                    if let Some(message) = incoming(&m, self.since_ms, received_us) {
                        return Ok(message);
                    }
                }
                // A topic that matches a pattern but is still being created (or was
                // just deleted) is reported per partition; the consumer carries on.
                Err(KafkaError::MessageConsumption(
                    RDKafkaErrorCode::UnknownTopicOrPartition
                    | RDKafkaErrorCode::UnknownTopic
                    | RDKafkaErrorCode::UnknownPartition,
                )) => {
                    tracing::debug!("a matching topic is not available yet");
                }
                Err(e) => {
                    self.failures = self.failures.saturating_add(1);
                    return Err(TransportError::Disconnected {
                        url: self.url.clone(),
                        source: e.into(),
                    });
                }
            }
        }
    }

    async fn close(mut self) -> Result<(), TransportError> {
        let Some(consumer) = self.consumer.take() else {
            return Ok(());
        };
        consumer.unsubscribe();
        // Dropping the consumer leaves the group, which blocks until the broker answers.
        let leave = tokio::task::spawn_blocking(move || drop(consumer));
        let _ = tokio::time::timeout(CLOSE_WAIT, leave).await;
        Ok(())
    }
}

#[cfg(test)]
mod offset_tests {
    use super::*;

    #[test]
    fn a_partition_read_again_after_a_rebalance_delivers_only_what_is_new() {
        let mut seen = HashMap::new();
        for offset in 0..5 {
            assert!(first_delivery(&mut seen, "iot.1.act", 0, offset));
        }
        // Reassigned without committed offsets: read again from the earliest offset.
        for offset in 0..5 {
            assert!(
                !first_delivery(&mut seen, "iot.1.act", 0, offset),
                "{offset}"
            );
        }
        assert!(first_delivery(&mut seen, "iot.1.act", 0, 5));
        // Other partitions and topics keep their own positions.
        assert!(first_delivery(&mut seen, "iot.1.act", 2, 0));
        assert!(first_delivery(&mut seen, "iot.2.act", 0, 0));
    }
}
