//! Publishing: one librdkafka producer shared by every publisher with the same
//! credentials, and a per-publisher window of deliveries not yet acknowledged.
//!
//! A librdkafka client runs several threads and a connection per broker, so one client
//! per emulated device would cost thousands of threads at a few thousand devices, while
//! a Kafka client is built to carry many producers' traffic: it batches per partition
//! and pipelines requests. Each [`KafkaPublisher`] is a handle on the shared producer
//! with its own bounded window of pending deliveries (`--inflight`): when the window is
//! full, `publish` awaits the oldest delivery, so a slow broker shows as send lag.

use std::collections::{HashSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord, Producer};
use rdkafka::util::Timeout;

use super::client::{Credentials, Events, KafkaContext, KafkaTransport};
use super::names::topic_to_kafka;
use crate::transport::{ClientIdentity, Outgoing, Publisher, TransportError};

/// The shortest time `close` waits for the last acknowledgements.
const MIN_CLOSE_WAIT: Duration = Duration::from_secs(5);

/// librdkafka's own queue limit. Publishers bound their own windows, so this only has
/// to be larger than all windows together.
const QUEUE_MAX_MESSAGES: &str = "10000000";

/// A producer (and, when topics are created, an admin client) shared by publishers.
pub(crate) struct SharedProducer {
    producer: FutureProducer<KafkaContext>,
    admin: Option<AdminClient<KafkaContext>>,
    events: Arc<Events>,
    /// Kafka topics known to exist (created by us or found existing).
    known: Mutex<HashSet<String>>,
    url: String,
    timeout: Duration,
    partitions: i32,
    replication: i32,
    inflight: usize,
}

impl SharedProducer {
    /// Creates the producer and checks, within the connect timeout, that the broker
    /// answers.
    pub(super) async fn connect(
        transport: &KafkaTransport,
        identity: &ClientIdentity,
        credentials: &Credentials,
    ) -> Result<Self, TransportError> {
        let s = &transport.settings;
        let context = KafkaTransport::context();
        let events = context.events.clone();
        let mut config = transport.config(credentials, &identity.client_id);
        config
            .set("acks", s.acks.as_config())
            .set("linger.ms", (s.linger.as_secs_f64() * 1000.0).to_string())
            .set("compression.codec", s.compression.as_config())
            .set("queue.buffering.max.messages", QUEUE_MAX_MESSAGES);
        if let Some(bytes) = s.batch_size {
            config.set("batch.size", bytes.to_string());
        }
        transport.apply_options(&mut config);
        let refused = |e: KafkaError| {
            TransportError::Unsupported(format!("the Kafka client refused its settings: {e}"))
        };
        let producer: FutureProducer<KafkaContext> = config
            .create_with_context(context.clone())
            .map_err(refused)?;
        let check = producer.clone();
        // The producer's own thread serves its events, so the failure is recorded by now.
        let existing = transport
            .fetch_metadata(move |waited| check.client().fetch_metadata(None, waited))
            .await
            .map_err(|e| transport.classify(&events, &e, &identity.client_id))?;
        let admin = if s.create_topics {
            let mut admin_config = transport.config(credentials, &identity.client_id);
            transport.apply_options(&mut admin_config);
            Some(admin_config.create_with_context(context).map_err(refused)?)
        } else {
            None
        };
        Ok(Self {
            producer,
            admin,
            events,
            known: Mutex::new(existing.into_iter().collect()),
            url: transport.url.to_string(),
            timeout: s.connect_timeout,
            partitions: s.partitions,
            replication: s.replication,
            inflight: s.inflight.max(1),
        })
    }

    fn is_known(&self, name: &str) -> bool {
        self.known.lock().map(|k| k.contains(name)).unwrap_or(false)
    }

    /// Creates `name` unless it is known to exist (or creation is off).
    async fn ensure_topic(&self, name: &str) -> Result<(), TransportError> {
        let Some(admin) = &self.admin else {
            return Ok(());
        };
        if self.is_known(name) {
            return Ok(());
        }
        let topic = NewTopic::new(
            name,
            self.partitions,
            TopicReplication::Fixed(self.replication),
        );
        let options = AdminOptions::new()
            .operation_timeout(Some(self.timeout))
            .request_timeout(Some(self.timeout));
        let failed = |why: String| {
            TransportError::Publish(
                format!(
                    "cannot create topic `{name}` on {}: {why}; create it yourself and give \
                     --kafka-no-create-topics",
                    self.url
                )
                .into(),
            )
        };
        let waited = self.timeout + Duration::from_secs(1);
        let results =
            match tokio::time::timeout(waited, admin.create_topics([&topic], &options)).await {
                Ok(Ok(results)) => results,
                Ok(Err(e)) => return Err(failed(e.to_string())),
                Err(_) => return Err(failed(format!("no answer within {waited:?}"))),
            };
        for result in results {
            match result {
                Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
                Err((_, code)) => return Err(failed(code.to_string())),
            }
        }
        if let Ok(mut known) = self.known.lock() {
            known.insert(name.to_string());
        }
        Ok(())
    }
}

/// A handle on a shared producer, with its own window of pending deliveries.
pub struct KafkaPublisher {
    shared: Arc<SharedProducer>,
    pending: VecDeque<DeliveryFuture>,
    /// The last topic and its Kafka name: a device publishes to the same topic every time.
    last: Option<(String, String)>,
    /// Whether this handle reports the producer's disconnections (only one per producer
    /// does, so the sum over devices counts each once).
    primary: bool,
}

impl KafkaPublisher {
    pub(super) fn new(shared: Arc<SharedProducer>, primary: bool) -> Self {
        Self {
            pending: VecDeque::with_capacity(shared.inflight),
            shared,
            last: None,
            primary,
        }
    }

    /// The Kafka name of `topic`, created on the broker when new; remembered (once it
    /// exists) for the next message, which a device sends to the same topic.
    async fn kafka_topic(&mut self, topic: &str) -> Result<String, TransportError> {
        if let Some((t, name)) = &self.last
            && t == topic
        {
            return Ok(name.clone());
        }
        let name = topic_to_kafka(topic).map_err(|e| TransportError::Publish(e.into()))?;
        self.shared.ensure_topic(&name).await?;
        self.last = Some((topic.to_string(), name.clone()));
        Ok(name)
    }

    /// Awaits the oldest pending delivery, if any.
    async fn settle_oldest(&mut self) -> Result<(), TransportError> {
        match self.pending.pop_front() {
            Some(delivery) => settle(delivery).await,
            None => Ok(()),
        }
    }
}

/// Awaits one delivery report; a failed delivery is an error.
async fn settle(delivery: DeliveryFuture) -> Result<(), TransportError> {
    match delivery.await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err((e, _))) => Err(TransportError::Publish(e.into())),
        Err(_) => Err(TransportError::Publish(
            "the producer shut down before the delivery was reported".into(),
        )),
    }
}

fn owned_headers(headers: &[(String, String)]) -> OwnedHeaders {
    headers.iter().fold(
        OwnedHeaders::new_with_capacity(headers.len()),
        |h, (k, v)| {
            h.insert(Header {
                key: k,
                value: Some(v.as_bytes()),
            })
        },
    )
}

impl Publisher for KafkaPublisher {
    async fn publish(&mut self, m: Outgoing<'_>) -> Result<(), TransportError> {
        let name = self.kafka_topic(m.topic).await?;
        if self.pending.len() >= self.shared.inflight {
            self.settle_oldest().await?;
        }
        let mut record = FutureRecord::to(&name).key(m.topic).payload(m.payload);
        if let Some(us) = m
            .record_time_us
            .and_then(|us| i64::try_from(us / 1_000).ok())
        {
            record = record.timestamp(us);
        }
        if !m.headers.is_empty() {
            record = record.headers(owned_headers(m.headers));
        }
        loop {
            match self.shared.producer.send_result(record) {
                Ok(delivery) => {
                    self.pending.push_back(delivery);
                    return Ok(());
                }
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                    record = back;
                    if self.pending.is_empty() {
                        // Other publishers filled the client's queue: let the client wait
                        // for room, then for this message's delivery.
                        let waited = Timeout::After(self.shared.timeout);
                        return match self.shared.producer.send(record, waited).await {
                            Ok(_) => Ok(()),
                            Err((e, _)) => Err(TransportError::Publish(e.into())),
                        };
                    }
                    self.settle_oldest().await?;
                }
                Err((e, _)) => return Err(TransportError::Publish(e.into())),
            }
        }
    }

    async fn close(mut self) -> Result<(), TransportError> {
        let waited = self.shared.timeout.max(MIN_CLOSE_WAIT);
        let left = self.pending.len();
        let settle_all = async {
            let mut first = Ok(());
            while let Some(delivery) = self.pending.pop_front() {
                if let Err(e) = settle(delivery).await
                    && first.is_ok()
                {
                    first = Err(e);
                }
            }
            first
        };
        match tokio::time::timeout(waited, settle_all).await {
            Ok(result) => result,
            Err(_) => Err(TransportError::Publish(
                format!(
                    "{left} messages were still unacknowledged by {} after {waited:?}",
                    self.shared.url
                )
                .into(),
            )),
        }
    }

    fn disconnections(&self) -> u64 {
        if self.primary {
            self.shared.events.transport_failures()
        } else {
            0
        }
    }
}
