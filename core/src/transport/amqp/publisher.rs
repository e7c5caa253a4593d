//! AMQP publishers: one channel each, on a connection shared by devices with the same
//! credentials, with publisher confirms when asked for.

use super::*;

/// An AMQP channel that publishes, on a connection it may share with other publishers.
pub struct AmqpPublisher {
    pub(super) connection: Arc<SharedConnection>,
    pub(super) channel: Channel,
    pub(super) exchange: ShortString,
    pub(super) properties: BasicProperties,
    /// The last topic and its routing key: a device publishes to the same topic every time.
    pub(super) last: Option<(String, ShortString)>,
    /// Confirmations not yet seen (confirm mode only).
    pub(super) pending: VecDeque<PublisherConfirm>,
    /// The most confirmations pending; `None` without confirms.
    pub(super) inflight: Option<usize>,
    pub(super) disconnections: u64,
}

impl AmqpPublisher {
    pub(super) fn routing_key(&mut self, topic: &str) -> ShortString {
        match &self.last {
            Some((t, k)) if t == topic => k.clone(),
            _ => {
                let key = ShortString::from(topic_to_routing_key(topic));
                self.last = Some((topic.to_string(), key.clone()));
                key
            }
        }
    }

    pub(super) fn failed(&mut self, e: lapin::Error) -> TransportError {
        if !self.connection.connection.status().connected() {
            self.disconnections += 1;
        }
        TransportError::Publish(e.into())
    }

    /// Awaits one confirmation; a negative one is an error.
    pub(super) async fn settle_one(confirm: PublisherConfirm) -> Result<(), TransportError> {
        match confirm.await {
            Ok(c) if c.is_nack() => Err(TransportError::Publish(
                "the broker refused the message (negative confirmation)".into(),
            )),
            Ok(_) => Ok(()),
            Err(e) => Err(TransportError::Publish(e.into())),
        }
    }
}

pub(super) fn field_table(headers: &[(String, String)]) -> FieldTable {
    let mut table = FieldTable::default();
    for (name, value) in headers {
        table.insert(
            ShortString::from(name.clone()),
            AMQPValue::LongString(LongString::from(value.clone())),
        );
    }
    table
}

pub(super) fn header_pairs(properties: &BasicProperties) -> Vec<(String, String)> {
    let Some(table) = properties.headers() else {
        return Vec::new();
    };
    table
        .inner()
        .iter()
        .map(|(name, value)| {
            let value = match value {
                AMQPValue::LongString(s) => String::from_utf8_lossy(s.as_bytes()).into_owned(),
                AMQPValue::ShortString(s) => s.as_str().to_string(),
                other => format!("{other:?}"),
            };
            (name.as_str().to_string(), value)
        })
        .collect()
}

impl Publisher for AmqpPublisher {
    async fn publish(&mut self, m: Outgoing<'_>) -> Result<(), TransportError> {
        let key = self.routing_key(m.topic);
        let properties = if m.headers.is_empty() {
            self.properties.clone()
        } else {
            self.properties.clone().with_headers(field_table(m.headers))
        };
        if let Some(limit) = self.inflight
            && self.pending.len() >= limit
            && let Some(oldest) = self.pending.pop_front()
        {
            Self::settle_one(oldest).await?;
        }
        let confirm = match self
            .channel
            .basic_publish(
                self.exchange.clone(),
                key,
                BasicPublishOptions::default(),
                m.payload,
                properties,
            )
            .await
        {
            Ok(c) => c,
            Err(e) => return Err(self.failed(e)),
        };
        if self.inflight.is_some() {
            self.pending.push_back(confirm);
        }
        Ok(())
    }

    async fn close(mut self) -> Result<(), TransportError> {
        let mut first = Ok(());
        while let Some(confirm) = self.pending.pop_front() {
            if let Err(e) = Self::settle_one(confirm).await
                && first.is_ok()
            {
                first = Err(e);
            }
        }
        // Closing the channel is ordered after every publish on it, so the broker has
        // routed them all once it answers.
        let _ = self
            .channel
            .close(200, ShortString::from("iotload done"))
            .await;
        self.connection.release().await;
        first
    }

    fn disconnections(&self) -> u64 {
        self.disconnections
    }
}
