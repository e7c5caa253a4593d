//! MQTT 3.1.1 and 5 over TCP or TLS.
//!
//! QoS 0 MQTT 3.1.1 publishers over plain TCP write their frames straight to the socket
//! (`direct.rs`), the cheapest path for the load generator. Every other publisher is a
//! rumqttc connection whose event loop runs in its own task; each subscriber polls its
//! rumqttc event loop inline, so a received message costs no extra hop.

mod client;
mod direct;
mod flags;
mod publisher;
mod settings;
mod subscriber;

pub use flags::MqttFlags;
pub use publisher::MqttPublisher;
pub use settings::{MqttPublisherKind, MqttSettings, MqttVersion};
pub use subscriber::MqttSubscriber;

use client::*;
use publisher::*;
use settings::MQTT_MAX_PACKET;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use rumqttc::{TlsConfiguration, Transport as NetTransport};
use tokio::task::JoinHandle;

pub use super::tls::TlsSettings;
use super::tls::tls_config;
use super::{ClientIdentity, Incoming, Outgoing, Publisher, Subscriber, Transport, TransportError};
use crate::plan::BrokerUrl;
use crate::stamp::now_us;
use crate::transport::backoff::reconnect_delay;
/// The MQTT broker family.
pub struct MqttTransport {
    url: BrokerUrl,
    settings: MqttSettings,
    tls: Option<Arc<rustls::ClientConfig>>,
    /// The next publisher's index into `settings.source_addresses`.
    next_source: AtomicUsize,
}

impl MqttTransport {
    /// Checks the settings and loads TLS files once, so every device shares them.
    pub fn new(url: BrokerUrl, settings: MqttSettings) -> Result<Self, TransportError> {
        if settings.qos > 2 {
            return Err(TransportError::Unsupported(format!(
                "QoS {} does not exist; use 0, 1 or 2",
                settings.qos
            )));
        }
        let tls = if url.tls {
            Some(Arc::new(tls_config(&settings.tls)?))
        } else {
            None
        };
        let transport = Self {
            url,
            settings,
            tls,
            next_source: AtomicUsize::new(0),
        };
        if !transport.settings.source_addresses.is_empty() && !transport.publishes_directly() {
            return Err(TransportError::Unsupported(
                "--source-addresses needs the direct publisher: QoS 0, MQTT 3.1.1, mqtt:// \
                 (not mqtts://) and --mqtt-publisher direct"
                    .into(),
            ));
        }
        Ok(transport)
    }

    /// Whether publishers use the direct QoS 0 writer rather than rumqttc.
    pub fn publishes_directly(&self) -> bool {
        self.publishes_directly_at(self.settings.qos)
    }

    /// Whether a publisher at QoS `qos` uses the direct writer (QoS 0 only).
    fn publishes_directly_at(&self, qos: u8) -> bool {
        let s = &self.settings;
        s.publisher == MqttPublisherKind::Direct
            && qos == 0
            && s.version == MqttVersion::V311
            && !self.url.tls
    }

    /// The direct publisher's dialer for one device.
    fn dialer(&self, identity: &ClientIdentity) -> Result<direct::Dialer, TransportError> {
        let s = &self.settings;
        let mut connect = rumqttc::mqttbytes::v4::Connect::new(identity.client_id.as_str());
        connect.keep_alive = s.keep_alive.as_secs().clamp(1, u64::from(u16::MAX)) as u16;
        connect.clean_session = s.clean_start;
        if let Some((u, p)) = identity.login(&self.url) {
            connect.set_login(u, p);
        }
        let mut encoded = bytes::BytesMut::new();
        connect
            .write(&mut encoded)
            .map_err(|e| TransportError::Connect {
                url: self.url.to_string(),
                client_id: identity.client_id.clone(),
                source: e.into(),
            })?;
        let sources = &s.source_addresses;
        let source = (!sources.is_empty())
            .then(|| sources[self.next_source.fetch_add(1, Ordering::Relaxed) % sources.len()]);
        let host = &self.url.host;
        Ok(direct::Dialer {
            address: if host.contains(':') {
                format!("[{host}]:{}", self.url.port)
            } else {
                format!("{host}:{}", self.url.port)
            },
            url: self.url.to_string(),
            source,
            connect: encoded.to_vec(),
            timeout: s.connect_timeout,
        })
    }

    fn qos(&self) -> rumqttc::QoS {
        qos_level(self.settings.qos)
    }

    fn net_transport(&self) -> NetTransport {
        match &self.tls {
            Some(cfg) => NetTransport::tls_with_config(TlsConfiguration::Rustls(cfg.clone())),
            None => NetTransport::tcp(),
        }
    }

    fn client(&self, identity: &ClientIdentity) -> Client {
        let s = &self.settings;
        match s.version {
            MqttVersion::V311 => {
                let mut o =
                    rumqttc::MqttOptions::new(&identity.client_id, &self.url.host, self.url.port);
                o.set_keep_alive(s.keep_alive.max(Duration::from_secs(1)))
                    .set_clean_session(s.clean_start)
                    .set_inflight(s.inflight.max(1))
                    // Accept any packet MQTT allows: a foreign oversized message is then read
                    // and counted as undecodable, instead of breaking the connection (and
                    // losing everything published while it reconnects).
                    .set_max_packet_size(MQTT_MAX_PACKET, s.max_packet_size)
                    .set_transport(self.net_transport());
                if let Some((u, p)) = identity.login(&self.url) {
                    o.set_credentials(u, p);
                }
                let (client, mut events) = rumqttc::AsyncClient::new(o, s.queue_capacity.max(1));
                events.set_network_options(self.network_options());
                Client::V4(client, events)
            }
            MqttVersion::V5 => {
                let mut o = rumqttc::v5::MqttOptions::new(
                    &identity.client_id,
                    &self.url.host,
                    self.url.port,
                );
                o.set_keep_alive(s.keep_alive.max(Duration::from_secs(1)))
                    .set_clean_start(s.clean_start)
                    .set_outgoing_inflight_upper_limit(s.inflight.max(1))
                    .set_max_packet_size(Some(s.max_packet_size as u32))
                    .set_network_options(self.network_options())
                    .set_transport(self.net_transport());
                if let Some((u, p)) = identity.login(&self.url) {
                    o.set_credentials(u, p);
                }
                let (client, events) = rumqttc::v5::AsyncClient::new(o, s.queue_capacity.max(1));
                Client::V5(client, events)
            }
        }
    }

    /// Socket options: no Nagle delay (it adds tens of ms to every small message).
    fn network_options(&self) -> rumqttc::NetworkOptions {
        let mut n = rumqttc::NetworkOptions::new();
        n.set_tcp_nodelay(true);
        n.set_connection_timeout(self.settings.connect_timeout.as_secs().max(1));
        n
    }

    /// Polls a fresh connection until the broker's CONNACK, with the connect timeout.
    async fn connect(&self, client: &mut Client, client_id: &str) -> Result<(), TransportError> {
        let waited = self.settings.connect_timeout;
        let result = tokio::time::timeout(waited, async {
            loop {
                match client.poll().await {
                    Ok(Polled::ConnAck) => return Ok(()),
                    Ok(_) => {}
                    Err(e) => return Err(e),
                }
            }
        })
        .await;
        match result {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(self.connect_error(e, client_id)),
            Err(_) => Err(TransportError::Timeout {
                url: self.url.to_string(),
                waited_ms: waited.as_millis() as u64,
                doing: "waiting for CONNACK",
            }),
        }
    }

    fn connect_error(&self, e: PollError, client_id: &str) -> TransportError {
        let url = self.url.to_string();
        match e {
            PollError::Refused { auth: true, code } => TransportError::Auth {
                url,
                client_id: client_id.to_string(),
                reason: code,
            },
            PollError::Tls(reason) => TransportError::Tls {
                file: match &self.settings.tls.ca_file {
                    Some(ca) => {
                        format!("the broker certificate (checked against {})", ca.display())
                    }
                    None => "the broker certificate (checked against the system roots)".into(),
                },
                reason,
            },
            other => TransportError::Connect {
                url,
                client_id: client_id.to_string(),
                source: other.into(),
            },
        }
    }
}

impl Transport for MqttTransport {
    type Publisher = MqttPublisher;
    type Subscriber = MqttSubscriber;

    fn url(&self) -> &BrokerUrl {
        &self.url
    }

    async fn publisher(&self, identity: &ClientIdentity) -> Result<MqttPublisher, TransportError> {
        let qos = identity.qos.unwrap_or(self.settings.qos);
        if self.publishes_directly_at(qos) {
            let s = &self.settings;
            let publisher = direct::DirectPublisher::connect(
                self.dialer(identity)?,
                s.keep_alive,
                s.retain,
                s.queue_capacity,
                s.max_packet_size,
            )
            .await
            .map_err(|e| e.into_transport(self.url.to_string(), &identity.client_id))?;
            return Ok(MqttPublisher(Connection::Direct(publisher)));
        }
        let mut client = self.client(identity);
        self.connect(&mut client, &identity.client_id).await?;
        let disconnections = Arc::new(AtomicU64::new(0));
        let downtime = Arc::new(Downtime::default());
        let (sender, mut events) = client.split();
        let lost = disconnections.clone();
        let down = downtime.clone();
        let driver = tokio::spawn(async move {
            let mut failures = 0u32;
            let mut closing = false;
            loop {
                match events.poll().await {
                    Ok(Polled::DisconnectSent) => closing = true,
                    // Every publish passes here: touch the shared downtime only after an
                    // outage, not once per message.
                    Ok(_) if failures > 0 => {
                        failures = 0;
                        down.up();
                    }
                    Ok(_) => {}
                    Err(PollError::RequestsDone) => break,
                    Err(_) if closing => break,
                    Err(_) => {
                        if failures == 0 {
                            lost.fetch_add(1, Ordering::Relaxed);
                            down.down();
                        }
                        failures = failures.saturating_add(1);
                        tokio::time::sleep(reconnect_delay(failures)).await;
                    }
                }
            }
        });
        Ok(MqttPublisher(Connection::Rumqttc(RumqttcPublisher {
            sender,
            qos: qos_level(qos),
            retain: self.settings.retain,
            driver,
            disconnections,
            downtime,
        })))
    }

    async fn subscriber(
        &self,
        identity: &ClientIdentity,
        filters: &[String],
    ) -> Result<MqttSubscriber, TransportError> {
        let mut client = self.client(identity);
        self.connect(&mut client, &identity.client_id).await?;
        client
            .subscribe(filters, self.qos())
            .map_err(|e| TransportError::Connect {
                url: self.url.to_string(),
                client_id: identity.client_id.clone(),
                source: e.into(),
            })?;
        let waited = self.settings.connect_timeout;
        let mut early = std::collections::VecDeque::new();
        let acked = tokio::time::timeout(waited, async {
            loop {
                match client.poll().await {
                    Ok(Polled::SubAck { ok }) => return Ok(ok),
                    Ok(Polled::Message(m)) => early.push_back(m),
                    Ok(_) => {}
                    Err(e) => return Err(e),
                }
            }
        })
        .await;
        match acked {
            Ok(Ok(true)) => {}
            Ok(Ok(false)) => {
                return Err(TransportError::Subscribe {
                    url: self.url.to_string(),
                    filter: filters.join(", "),
                });
            }
            Ok(Err(e)) => return Err(self.connect_error(e, &identity.client_id)),
            Err(_) => {
                return Err(TransportError::Timeout {
                    url: self.url.to_string(),
                    waited_ms: waited.as_millis() as u64,
                    doing: "waiting for SUBACK",
                });
            }
        }
        Ok(MqttSubscriber {
            client,
            filters: filters.to_vec(),
            qos: self.qos(),
            url: self.url.to_string(),
            early,
            failures: 0,
            resubscribe: false,
        })
    }
}

/// rumqttc's level for QoS `n` (checked to be 0–2 where it is read).
fn qos_level(n: u8) -> rumqttc::QoS {
    match n {
        0 => rumqttc::QoS::AtMostOnce,
        1 => rumqttc::QoS::AtLeastOnce,
        _ => rumqttc::QoS::ExactlyOnce,
    }
}
