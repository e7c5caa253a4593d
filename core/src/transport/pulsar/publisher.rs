//! The publishing half: one client per device, one cached producer per topic, and a
//! bounded window of pending send receipts.

use std::collections::{HashMap, VecDeque};
use std::time::Duration;

use pulsar::producer::{Message as OutMessage, SendFuture};
use pulsar::{Producer, ProducerOptions, Pulsar, TokioExecutor};

use super::client::CLOSE_GRACE;
use super::error::{Context, classify, is_connection_loss};
use super::topic::TopicSpace;
use crate::transport::{Outgoing, Publisher, TransportError};

/// A Pulsar connection that publishes, with one producer per topic it has published to.
pub struct PulsarPublisher {
    pub(super) client: Pulsar<TokioExecutor>,
    pub(super) space: TopicSpace,
    pub(super) options: ProducerOptions,
    /// Producers by MQTT-style topic: a device publishes to the same topic every time.
    pub(super) producers: HashMap<String, Producer<TokioExecutor>>,
    /// Send receipts not yet seen, oldest first.
    pub(super) pending: VecDeque<SendFuture>,
    pub(super) inflight: usize,
    pub(super) batching: bool,
    pub(super) url: String,
    pub(super) client_id: String,
    pub(super) timeout: Duration,
    pub(super) tls: bool,
    pub(super) disconnections: u64,
}

impl PulsarPublisher {
    /// Creates (and caches) the producer for `topic`.
    async fn create_producer(&mut self, topic: &str) -> Result<(), TransportError> {
        let cx = Context {
            url: &self.url,
            client_id: &self.client_id,
            doing: "creating a producer",
            waited: self.timeout,
            tls: self.tls,
            token: false,
        };
        let build = self
            .client
            .producer()
            .with_topic(self.space.full_name(topic))
            .with_options(self.options.clone())
            .build();
        let producer = match tokio::time::timeout(self.timeout, build).await {
            Ok(Ok(p)) => p,
            Ok(Err(e)) => return Err(TransportError::Publish(Box::new(classify(&e, cx)))),
            Err(_) => return Err(TransportError::Publish(Box::new(cx.timeout()))),
        };
        self.producers.insert(topic.to_string(), producer);
        Ok(())
    }

    /// Awaits one send receipt; a missing one is an error.
    async fn settle(&mut self, receipt: SendFuture) -> Result<(), TransportError> {
        match tokio::time::timeout(self.timeout + CLOSE_GRACE, receipt).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => {
                if is_connection_loss(&e) {
                    self.disconnections += 1;
                }
                Err(TransportError::Publish(e.into()))
            }
            Err(_) => Err(TransportError::Publish(
                format!(
                    "no send receipt from {} within {} ms",
                    self.url,
                    self.timeout.as_millis()
                )
                .into(),
            )),
        }
    }
}

impl Publisher for PulsarPublisher {
    async fn publish(&mut self, m: Outgoing<'_>) -> Result<(), TransportError> {
        // A failed receipt belongs to an older message: this one is still sent, and the
        // failure is reported in its place.
        let settled = if self.pending.len() >= self.inflight
            && let Some(oldest) = self.pending.pop_front()
        {
            self.settle(oldest).await
        } else {
            Ok(())
        };
        if !self.producers.contains_key(m.topic) {
            self.create_producer(m.topic).await?;
        }
        let Some(producer) = self.producers.get_mut(m.topic) else {
            return Err(TransportError::Publish(
                format!("no producer for `{}`", m.topic).into(),
            ));
        };
        let message = OutMessage {
            payload: m.payload.to_vec(),
            properties: m.headers.iter().cloned().collect(),
            ..OutMessage::default()
        };
        match producer.send_non_blocking(message).await {
            Ok(receipt) => {
                self.pending.push_back(receipt);
                settled
            }
            Err(e) => {
                if is_connection_loss(&e) {
                    self.disconnections += 1;
                }
                Err(TransportError::Publish(e.into()))
            }
        }
    }

    async fn close(mut self) -> Result<(), TransportError> {
        let mut first = Ok(());
        let grace = self.timeout + CLOSE_GRACE;
        if self.batching {
            for producer in self.producers.values_mut() {
                // Sends what waits in the batch now rather than at the batch delay.
                if let Ok(Err(e)) = tokio::time::timeout(grace, producer.send_batch()).await
                    && first.is_ok()
                {
                    first = Err(TransportError::Publish(e.into()));
                }
            }
        }
        while let Some(receipt) = self.pending.pop_front() {
            if let Err(e) = self.settle(receipt).await
                && first.is_ok()
            {
                first = Err(e);
            }
        }
        for producer in self.producers.values_mut() {
            let _ = tokio::time::timeout(grace, producer.close()).await;
        }
        first
    }

    fn disconnections(&self) -> u64 {
        self.disconnections
    }
}
