//! An MQTT subscriber: polls its rumqttc event loop inline, so a received message costs
//! no extra hop.

use super::*;

/// An MQTT connection subscribed to topic filters.
pub struct MqttSubscriber {
    pub(super) client: Client,
    pub(super) filters: Vec<String>,
    pub(super) qos: rumqttc::QoS,
    pub(super) url: String,
    pub(super) early: std::collections::VecDeque<Incoming>,
    pub(super) failures: u32,
    pub(super) resubscribe: bool,
}

impl Subscriber for MqttSubscriber {
    async fn recv(&mut self) -> Result<Incoming, TransportError> {
        if let Some(m) = self.early.pop_front() {
            return Ok(m);
        }
        if self.failures > 0 {
            tokio::time::sleep(reconnect_delay(self.failures)).await;
        }
        loop {
            match self.client.poll().await {
                Ok(Polled::Message(m)) => {
                    self.failures = 0;
                    return Ok(m);
                }
                Ok(Polled::ConnAck) if self.resubscribe => {
                    // A clean session forgets subscriptions; renew them after a reconnect.
                    self.resubscribe = false;
                    let _ = self.client.subscribe(&self.filters, self.qos);
                }
                Ok(_) => {}
                Err(e) => {
                    self.failures = self.failures.saturating_add(1);
                    self.resubscribe = true;
                    return Err(TransportError::Disconnected {
                        url: self.url.clone(),
                        source: e.into(),
                    });
                }
            }
        }
    }

    async fn close(mut self) -> Result<(), TransportError> {
        let _ = self.client.disconnect();
        let _ = tokio::time::timeout(Duration::from_millis(500), async {
            while let Ok(p) = self.client.poll().await {
                if matches!(p, Polled::DisconnectSent) {
                    break;
                }
            }
        })
        .await;
        Ok(())
    }
}
