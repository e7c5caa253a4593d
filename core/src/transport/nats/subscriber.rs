//! NATS subscribers: a core subscription, or a JetStream consumer per filter.

use super::*;

/// A NATS connection subscribed to topic filters, read as one merged stream.
pub struct NatsSubscriber {
    pub(super) client: async_nats::Client,
    pub(super) filters: Vec<String>,
    pub(super) messages: SelectAll<async_nats::Subscriber>,
    pub(super) url: String,
    pub(super) failures: u32,
    /// Set when reading through JetStream consumers, with their ack policy.
    pub(super) jetstream: Option<JetStreamAck>,
    /// Messages the client dropped because the subscription's buffer was full.
    pub(super) dropped: Arc<AtomicU64>,
    /// A message taken from the subscriptions and not yet returned, with the JetStream
    /// reply subject still to acknowledge: kept here while the ack is queued, so a
    /// receive abandoned at that point (the caller's `select!` chose another branch)
    /// hands it over on the next call instead of leaving it to be redelivered.
    pub(super) taken: Option<(Option<async_nats::Subject>, Incoming)>,
}

impl NatsSubscriber {
    /// The next message, with the reply subject to acknowledge when the ack policy asks
    /// for one; subscribes again first after the subscriptions ended.
    pub(super) async fn next_message(
        &mut self,
    ) -> Result<(Option<async_nats::Subject>, Incoming), TransportError> {
        if self.failures > 0 {
            tokio::time::sleep(reconnect_delay(self.failures)).await;
            if let Err(e) = self.subscribe_all().await {
                self.failures = self.failures.saturating_add(1);
                return Err(TransportError::Disconnected {
                    url: self.url.clone(),
                    source: e.into(),
                });
            }
        }
        let Some(message) = self.messages.next().await else {
            // Every subscription ended (the client gave up); subscribe again next time.
            self.failures = self.failures.saturating_add(1);
            return Err(TransportError::Disconnected {
                url: self.url.clone(),
                source: "all subscriptions ended".into(),
            });
        };
        let received_us = now_us();
        self.failures = 0;
        let reply = match self.jetstream {
            Some(ack) if ack != JetStreamAck::None => message.reply.clone(),
            _ => None,
        };
        let headers = message
            .headers
            .as_ref()
            .map(|h| {
                h.iter()
                    .flat_map(|(name, values)| {
                        values
                            .iter()
                            .map(move |v| (AsRef::<str>::as_ref(name).to_string(), v.to_string()))
                    })
                    .collect()
            })
            .unwrap_or_default();
        let incoming = Incoming {
            topic: subject_to_topic(message.subject.as_str()),
            payload: message.payload,
            headers,
            received_us,
            record_time_us: None,
        };
        Ok((reply, incoming))
    }

    /// Subscribes to every filter, then waits for the server's answer to a PING: the
    /// server handles commands in order, so the subscriptions are in place after it.
    pub(super) async fn subscribe_all(&mut self) -> Result<(), TransportError> {
        let mut messages = SelectAll::new();
        let mut inboxes = Vec::new();
        for filter in &self.filters {
            // A JetStream consumer pushes to an inbox of ours; the core subscription to it
            // exists before the consumer does, so its first message has somewhere to go.
            let subject = match self.jetstream {
                Some(_) => {
                    let inbox = self.client.new_inbox();
                    inboxes.push((filter, inbox.clone()));
                    inbox
                }
                None => topic_to_subject(filter),
            };
            let subscription =
                self.client
                    .subscribe(subject)
                    .await
                    .map_err(|_| TransportError::Subscribe {
                        url: self.url.clone(),
                        filter: filter.clone(),
                    })?;
            messages.push(subscription);
        }
        self.client
            .flush()
            .await
            .map_err(|_| TransportError::Subscribe {
                url: self.url.clone(),
                filter: self.filters.join(", "),
            })?;
        if let Some(ack) = self.jetstream {
            for (filter, inbox) in inboxes {
                self.create_consumer(filter, inbox, ack).await?;
            }
        }
        self.messages = messages;
        Ok(())
    }

    /// An ephemeral push consumer on the stream that stores `filter`, delivering to
    /// `inbox` every message stored from now on.
    pub(super) async fn create_consumer(
        &self,
        filter: &str,
        inbox: String,
        ack: JetStreamAck,
    ) -> Result<(), TransportError> {
        use async_nats::jetstream::consumer::{DeliverPolicy, push};
        let context = async_nats::jetstream::new(self.client.clone());
        let subject = topic_to_subject(filter);
        let failed = |what: &str, e: &dyn std::fmt::Display| {
            TransportError::Unsupported(format!(
                "cannot create a JetStream consumer for `{filter}` ({subject}) on {}: {what}: \
                 {e}",
                self.url
            ))
        };
        let name = context
            .stream_by_subject(subject.clone())
            .await
            .map_err(|e| failed("no stream stores it", &e))?;
        let stream = context
            .get_stream(&name)
            .await
            .map_err(|e| failed("cannot read its stream", &e))?;
        let config = push::Config {
            deliver_subject: inbox,
            filter_subject: subject.clone(),
            deliver_policy: DeliverPolicy::New,
            ack_policy: ack.policy(),
            ..push::Config::default()
        };
        stream
            .create_consumer(config)
            .await
            .map_err(|e| failed("the server refused it", &e))?;
        Ok(())
    }
}

impl Subscriber for NatsSubscriber {
    async fn recv(&mut self) -> Result<Incoming, TransportError> {
        if self.taken.is_none() {
            self.taken = Some(self.next_message().await?);
        }
        if let Some((reply @ Some(_), _)) = &mut self.taken {
            // Queued on the connection; the server takes it as the acknowledgement. Only
            // cleared once queued: an abandoned receive queues it on the next call.
            if let Some(subject) = reply.clone()
                && let Err(e) = self.client.publish(subject, Bytes::new()).await
            {
                self.taken = None;
                return Err(TransportError::Disconnected {
                    url: self.url.clone(),
                    source: e.into(),
                });
            }
            *reply = None;
        }
        match self.taken.take() {
            Some((_, message)) => Ok(message),
            None => Err(TransportError::Disconnected {
                url: self.url.clone(),
                source: "no message to hand over".into(),
            }),
        }
    }

    async fn close(self) -> Result<(), TransportError> {
        let _ = tokio::time::timeout(Duration::from_millis(500), self.client.drain()).await;
        Ok(())
    }

    fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}
