//! NATS publishers: core NATS, or JetStream with acknowledgements kept in flight.

use super::*;

/// A NATS connection that publishes.
pub struct NatsPublisher {
    pub(super) client: async_nats::Client,
    pub(super) statistics: Arc<async_nats::Statistics>,
    /// The last topic and its subject: a device publishes to the same topic every time.
    pub(super) last: Option<(String, Subject)>,
    /// Set when publishing through JetStream.
    pub(super) jetstream: Option<JetStreamPublisher>,
}

/// The JetStream side of a publisher: its context and the acknowledgements not yet seen.
pub(super) struct JetStreamPublisher {
    pub(super) context: async_nats::jetstream::Context,
    pub(super) pending: VecDeque<PublishAckFuture>,
    pub(super) inflight: usize,
}

impl JetStreamPublisher {
    pub(super) async fn publish(
        &mut self,
        subject: Subject,
        headers: Option<HeaderMap>,
        payload: Bytes,
    ) -> Result<(), TransportError> {
        if self.pending.len() >= self.inflight
            && let Some(oldest) = self.pending.pop_front()
        {
            oldest
                .await
                .map_err(|e| TransportError::Publish(e.into()))?;
        }
        let ack = match headers {
            None => self.context.publish(subject, payload).await,
            Some(h) => self.context.publish_with_headers(subject, h, payload).await,
        }
        .map_err(|e| TransportError::Publish(e.into()))?;
        self.pending.push_back(ack);
        Ok(())
    }

    /// Awaits every pending acknowledgement; the first failure is returned.
    pub(super) async fn settle(&mut self) -> Result<(), TransportError> {
        let mut first = Ok(());
        while let Some(ack) = self.pending.pop_front() {
            if let Err(e) = ack.await
                && first.is_ok()
            {
                first = Err(TransportError::Publish(e.into()));
            }
        }
        first
    }
}

impl NatsPublisher {
    pub(super) fn subject(&mut self, topic: &str) -> Subject {
        match &self.last {
            Some((t, s)) if t == topic => s.clone(),
            _ => {
                let subject = Subject::from(topic_to_subject(topic));
                self.last = Some((topic.to_string(), subject.clone()));
                subject
            }
        }
    }
}

pub(super) fn header_map(headers: &[(String, String)]) -> Result<HeaderMap, TransportError> {
    let mut map = HeaderMap::new();
    for (name, value) in headers {
        let name = HeaderName::try_from(name.as_str()).map_err(|e| {
            TransportError::Publish(format!("header name `{name}` cannot be used: {e}").into())
        })?;
        let value = value.parse::<HeaderValue>().map_err(|e| {
            TransportError::Publish(format!("header value `{value}` cannot be used: {e}").into())
        })?;
        map.append(name, value);
    }
    Ok(map)
}

impl Publisher for NatsPublisher {
    async fn publish(&mut self, m: Outgoing<'_>) -> Result<(), TransportError> {
        let subject = self.subject(m.topic);
        let payload = Bytes::copy_from_slice(m.payload);
        if let Some(js) = &mut self.jetstream {
            let headers = if m.headers.is_empty() {
                None
            } else {
                Some(header_map(m.headers)?)
            };
            return js.publish(subject, headers, payload).await;
        }
        if m.headers.is_empty() {
            self.client.publish(subject, payload).await
        } else {
            let headers = header_map(m.headers)?;
            self.client
                .publish_with_headers(subject, headers, payload)
                .await
        }
        .map_err(|e| TransportError::Publish(e.into()))
    }

    async fn close(mut self) -> Result<(), TransportError> {
        let acked = match &mut self.jetstream {
            Some(js) => tokio::time::timeout(CLOSE_FLUSH_TIMEOUT, js.settle())
                .await
                .unwrap_or_else(|_| {
                    Err(TransportError::Publish(
                        "waiting for the last JetStream acknowledgements timed out".into(),
                    ))
                }),
            None => Ok(()),
        };
        // Everything published so far reaches the server before the connection goes.
        let flushed = tokio::time::timeout(CLOSE_FLUSH_TIMEOUT, self.client.flush()).await;
        acked?;
        match flushed {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(TransportError::Publish(e.into())),
            Err(_) => Err(TransportError::Publish(
                "flushing the last messages timed out".into(),
            )),
        }
    }

    fn disconnections(&self) -> u64 {
        // The first connect counts too; every later one followed a lost connection.
        self.statistics
            .connects
            .load(std::sync::atomic::Ordering::Relaxed)
            .saturating_sub(1)
    }
}
