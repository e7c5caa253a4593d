//! The receiving half: one consumer over exact topics or a topic pattern, every message
//! acknowledged as it arrives.

use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;
use pulsar::{Consumer, Pulsar, TokioExecutor};

use super::client::CLOSE_GRACE;
use super::topic::TopicSpace;
use crate::stamp::now_us;
use crate::transport::{Incoming, Subscriber, TransportError};

/// A Pulsar connection that receives.
pub struct PulsarSubscriber {
    pub(super) consumer: Consumer<Vec<u8>, TokioExecutor>,
    /// Keeps the client (and its connection) for as long as the consumer.
    pub(super) _client: Pulsar<TokioExecutor>,
    pub(super) space: TopicSpace,
    /// For a private pattern subscription (which starts at the earliest message), the
    /// time it started: messages published before it are skipped.
    pub(super) published_since_ms: Option<u64>,
    pub(super) url: String,
    pub(super) timeout: Duration,
}

/// Whether a message published at `publish_ms` predates a subscription that started at
/// `since_ms` (both in ms since the epoch, by the publisher's and our clock).
pub(crate) fn predates(publish_ms: u64, since_ms: Option<u64>) -> bool {
    since_ms.is_some_and(|since| publish_ms < since)
}

impl Subscriber for PulsarSubscriber {
    async fn recv(&mut self) -> Result<Incoming, TransportError> {
        loop {
            let message = match self.consumer.next().await {
                Some(Ok(message)) => message,
                Some(Err(e)) => {
                    return Err(TransportError::Disconnected {
                        url: self.url.clone(),
                        source: e.into(),
                    });
                }
                None => {
                    return Err(TransportError::Disconnected {
                        url: self.url.clone(),
                        source: "the consumer was closed".into(),
                    });
                }
            };
            let received_us = now_us();
            self.consumer
                .ack(&message)
                .await
                .map_err(|e| TransportError::Disconnected {
                    url: self.url.clone(),
                    source: e.into(),
                })?;
            let metadata = &message.payload.metadata;
            if predates(metadata.publish_time, self.published_since_ms) {
                continue;
            }
            let headers = metadata
                .properties
                .iter()
                .map(|kv| (kv.key.clone(), kv.value.clone()))
                .collect();
            return Ok(Incoming {
                topic: self.space.topic_of(&message.topic),
                headers,
                payload: Bytes::from(message.payload.data),
                received_us,
                record_time_us: None,
            });
        }
    }

    async fn close(mut self) -> Result<(), TransportError> {
        match tokio::time::timeout(self.timeout + CLOSE_GRACE, self.consumer.close()).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(TransportError::Disconnected {
                url: self.url,
                source: e.into(),
            }),
            Err(_) => Err(TransportError::Timeout {
                url: self.url,
                waited_ms: u64::try_from(self.timeout.as_millis()).unwrap_or(u64::MAX),
                doing: "closing the consumer",
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_private_pattern_subscription_skips_older_messages() {
        assert!(predates(999, Some(1000)));
        assert!(!predates(1000, Some(1000)));
        assert!(!predates(1, None));
    }
}
