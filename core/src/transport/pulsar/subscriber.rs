//! The receiving half: messages taken in turn from the subscriber's consumers (one over
//! exact topics, or one per topic a pattern subscription found), each acknowledged as it
//! arrives.

use std::future::poll_fn;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;
use futures_util::future::join_all;
use pulsar::consumer::Message;
use pulsar::{Consumer, Pulsar, TokioExecutor};

use super::client::CLOSE_GRACE;
use super::discovery::Discovery;
use super::topic::TopicSpace;
use crate::stamp::now_us;
use crate::transport::{Incoming, Subscriber, TransportError};

/// A consumer of raw message bodies, as every subscriber reads them.
pub(super) type PulsarConsumer = Consumer<Vec<u8>, TokioExecutor>;

/// A message taken from a consumer, and that consumer's index (to acknowledge it there).
type Taken = (usize, Message<Vec<u8>>);

/// A Pulsar connection that receives.
pub struct PulsarSubscriber {
    /// Exact topics: one consumer over all of them. A pattern subscription: one consumer
    /// per topic (or partition) found so far.
    pub(super) consumers: Vec<PulsarConsumer>,
    /// For a pattern subscription, how it finds new topics.
    pub(super) discovery: Option<Discovery>,
    /// The consumer polled first by the next receive, so a busy topic cannot starve the
    /// others.
    pub(super) next: usize,
    /// Keeps the client (and its connection) for as long as the consumers.
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

impl PulsarSubscriber {
    /// The next message and the index of the consumer it came from. Takes in the
    /// consumers of newly found topics first, then polls every consumer once, starting
    /// at `next`. Nothing is taken unless it is returned, so a receive dropped
    /// while this is pending loses nothing.
    fn poll_message(&mut self, cx: &mut Context<'_>) -> Poll<Result<Taken, TransportError>> {
        if let Some(discovery) = &mut self.discovery {
            self.consumers.extend(discovery.poll_new_consumers(cx));
        }
        let mut tried = 0;
        while tried < self.consumers.len() {
            let index = (self.next + tried) % self.consumers.len();
            let why = match self.consumers[index].poll_next_unpin(cx) {
                Poll::Pending => {
                    tried += 1;
                    continue;
                }
                Poll::Ready(Some(Ok(message))) => {
                    self.next = (index + 1) % self.consumers.len();
                    return Poll::Ready(Ok((index, message)));
                }
                Poll::Ready(Some(Err(e))) => e.to_string(),
                Poll::Ready(None) => "the consumer was closed".to_string(),
            };
            let Some(discovery) = &mut self.discovery else {
                return Poll::Ready(Err(TransportError::Disconnected {
                    url: self.url.clone(),
                    source: why.into(),
                }));
            };
            // A pattern subscription drops the failed consumer and subscribes to its
            // topic again at the next refresh.
            let failed = self.consumers.remove(index);
            for topic in failed.topics() {
                tracing::warn!(
                    "pulsar: consuming {topic} failed (subscribing again at the next \
                     refresh): {why}"
                );
                discovery.forget(&topic);
            }
            tried = 0;
        }
        Poll::Pending
    }
}

impl Subscriber for PulsarSubscriber {
    async fn recv(&mut self) -> Result<Incoming, TransportError> {
        loop {
            let (index, message) = poll_fn(|cx| self.poll_message(cx)).await?;
            let received_us = now_us();
            // The acknowledgement is queued to the consumer's engine on an unbounded
            // channel, so it completes without waiting and a receive dropped after the
            // message was taken cannot be dropped here.
            self.consumers[index].ack(&message).await.map_err(|e| {
                TransportError::Disconnected {
                    url: self.url.clone(),
                    source: e.into(),
                }
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
        let closing = async {
            if let Some(discovery) = &mut self.discovery {
                let late = discovery.stop().await;
                self.consumers.extend(late);
            }
            join_all(self.consumers.iter_mut().map(|c| c.close()))
                .await
                .into_iter()
                .find_map(Result::err)
        };
        let outcome = tokio::time::timeout(self.timeout + CLOSE_GRACE, closing).await;
        match outcome {
            Ok(None) => Ok(()),
            Ok(Some(e)) => Err(TransportError::Disconnected {
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
