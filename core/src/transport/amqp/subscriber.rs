//! AMQP subscribers: a consumer on a private or shared queue bound once per filter.

use super::*;

/// An AMQP connection that receives.
pub struct AmqpSubscriber {
    pub(super) connection: Connection,
    pub(super) channel: Channel,
    pub(super) consumer: Consumer,
    pub(super) manual_ack: bool,
    pub(super) url: String,
    /// A delivery taken from the consumer and not yet returned: kept here while its
    /// acknowledgement is sent, so a receive abandoned at that point (the caller's
    /// `select!` chose another branch) hands it over on the next call instead of losing it.
    pub(super) taken: Option<(Acker, Incoming)>,
}

impl AmqpSubscriber {
    pub(super) fn disconnected(
        &self,
        source: impl Into<crate::transport::BoxError>,
    ) -> TransportError {
        TransportError::Disconnected {
            url: self.url.clone(),
            source: source.into(),
        }
    }
}

impl Subscriber for AmqpSubscriber {
    async fn recv(&mut self) -> Result<Incoming, TransportError> {
        if self.taken.is_none() {
            let delivery = match self.consumer.next().await {
                Some(Ok(delivery)) => delivery,
                Some(Err(e)) => return Err(self.disconnected(e)),
                None => return Err(self.disconnected("the broker cancelled the consumer")),
            };
            let message = Incoming {
                topic: routing_key_to_topic(delivery.routing_key.as_str()),
                headers: header_pairs(&delivery.properties),
                payload: Bytes::from(delivery.data),
                received_us: now_us(),
                record_time_us: None,
            };
            self.taken = Some((delivery.acker, message));
        }
        if self.manual_ack
            && let Some((acker, _)) = &self.taken
            // The ack is sent when first polled; calling again after an abandoned receive
            // sends nothing more (lapin answers `Ok(false)` for a used acker).
            && let Err(e) = acker.ack(BasicAckOptions::default()).await
        {
            self.taken = None;
            return Err(self.disconnected(e));
        }
        match self.taken.take() {
            Some((_, message)) => Ok(message),
            None => Err(self.disconnected("no delivery to hand over")),
        }
    }

    async fn close(self) -> Result<(), TransportError> {
        let _ = self
            .channel
            .close(200, ShortString::from("iotload done"))
            .await;
        self.connection
            .close(200, ShortString::from("iotload done"))
            .await
            .map_err(|e| TransportError::Disconnected {
                url: self.url,
                source: e.into(),
            })
    }
}
