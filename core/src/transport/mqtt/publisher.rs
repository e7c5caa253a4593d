//! MQTT publishers: the direct writer where it applies, else a rumqttc connection whose
//! event loop runs in a task of its own; both count their downtime.

use super::*;

/// An MQTT connection that publishes.
pub struct MqttPublisher(pub(super) Connection);

/// The client behind a publisher.
pub(super) enum Connection {
    /// The direct QoS 0 writer.
    Direct(direct::DirectPublisher),
    /// rumqttc.
    Rumqttc(RumqttcPublisher),
}

/// A rumqttc connection that publishes; its event loop runs in a task of its own.
pub(super) struct RumqttcPublisher {
    pub(super) sender: Sender,
    pub(super) qos: rumqttc::QoS,
    pub(super) retain: bool,
    pub(super) driver: JoinHandle<()>,
    pub(super) disconnections: Arc<AtomicU64>,
    pub(super) downtime: Arc<Downtime>,
}

/// Time a connection spent down: finished outages plus the current one.
#[derive(Debug, Default)]
pub(super) struct Downtime {
    /// Finished outages, µs.
    pub(super) total_us: AtomicU64,
    /// Start of the current outage (µs since the Unix epoch), 0 while connected.
    pub(super) since_us: AtomicU64,
}

impl Downtime {
    pub(super) fn down(&self) {
        let _ = self.since_us.compare_exchange(
            0,
            now_us().max(1),
            Ordering::Relaxed,
            Ordering::Relaxed,
        );
    }

    pub(super) fn up(&self) {
        let since = self.since_us.swap(0, Ordering::Relaxed);
        if since > 0 {
            self.total_us
                .fetch_add(now_us().saturating_sub(since), Ordering::Relaxed);
        }
    }

    pub(super) fn so_far(&self) -> Duration {
        let since = self.since_us.load(Ordering::Relaxed);
        let current = if since > 0 {
            now_us().saturating_sub(since)
        } else {
            0
        };
        Duration::from_micros(self.total_us.load(Ordering::Relaxed) + current)
    }
}

impl Publisher for MqttPublisher {
    async fn publish(&mut self, m: Outgoing<'_>) -> Result<(), TransportError> {
        match &mut self.0 {
            Connection::Direct(p) => p.publish(m.topic, m.payload).await,
            Connection::Rumqttc(p) => p.publish(m).await,
        }
    }

    async fn close(self) -> Result<(), TransportError> {
        match self.0 {
            Connection::Direct(p) => {
                p.close().await;
                Ok(())
            }
            Connection::Rumqttc(p) => p.close().await,
        }
    }

    fn disconnections(&self) -> u64 {
        match &self.0 {
            Connection::Direct(p) => p.disconnections(),
            Connection::Rumqttc(p) => p.disconnections.load(Ordering::Relaxed),
        }
    }

    fn disconnected_for(&self) -> Duration {
        match &self.0 {
            Connection::Direct(p) => p.disconnected_for(),
            Connection::Rumqttc(p) => p.downtime.so_far(),
        }
    }
}

impl RumqttcPublisher {
    pub(super) async fn publish(&mut self, m: Outgoing<'_>) -> Result<(), TransportError> {
        match &self.sender {
            Sender::V4(c) => c
                .publish(m.topic, self.qos, self.retain, m.payload.to_vec())
                .await
                .map_err(|e| TransportError::Publish(e.into())),
            Sender::V5(c) => {
                let payload = Bytes::copy_from_slice(m.payload);
                if m.headers.is_empty() {
                    c.publish(m.topic, qos5(self.qos), self.retain, payload)
                        .await
                } else {
                    let props = rumqttc::v5::mqttbytes::v5::PublishProperties {
                        user_properties: m.headers.to_vec(),
                        ..Default::default()
                    };
                    c.publish_with_properties(m.topic, qos5(self.qos), self.retain, payload, props)
                        .await
                }
                .map_err(|e| TransportError::Publish(e.into()))
            }
        }
    }

    pub(super) async fn close(self) -> Result<(), TransportError> {
        let sent = match &self.sender {
            Sender::V4(c) => c.disconnect().await.is_ok(),
            Sender::V5(c) => c.disconnect().await.is_ok(),
        };
        let mut driver = self.driver;
        if !sent {
            driver.abort();
            return Ok(());
        }
        if tokio::time::timeout(Duration::from_secs(5), &mut driver)
            .await
            .is_err()
        {
            driver.abort();
        }
        Ok(())
    }
}
