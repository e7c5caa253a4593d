//! MQTT 3.1.1 and 5 over TCP or TLS.
//!
//! QoS 0 MQTT 3.1.1 publishers over plain TCP write their frames straight to the socket
//! (`direct.rs`), the cheapest path for the load generator. Every other publisher is a
//! rumqttc connection whose event loop runs in its own task; each subscriber polls its
//! rumqttc event loop inline, so a received message costs no extra hop.

mod direct;
mod flags;

pub use flags::MqttFlags;

use std::net::IpAddr;
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

/// MQTT protocol version.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum MqttVersion {
    /// MQTT 3.1.1.
    #[default]
    V311,
    /// MQTT 5.
    V5,
}

/// Which client library publishes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum MqttPublisherKind {
    /// iotload's direct writer for QoS 0 MQTT 3.1.1 over plain TCP; rumqttc otherwise.
    #[default]
    Direct,
    /// rumqttc for every publisher.
    Rumqttc,
}

/// Everything about an MQTT connection that is not in the URL or the client identity.
#[derive(Debug, Clone)]
pub struct MqttSettings {
    /// Protocol version.
    pub version: MqttVersion,
    /// Quality of service for publishes and subscriptions (0, 1 or 2).
    pub qos: u8,
    /// Keep-alive interval.
    pub keep_alive: Duration,
    /// Start with a clean session.
    pub clean_start: bool,
    /// Set the retain flag on publishes.
    pub retain: bool,
    /// TLS settings (used when the URL is `mqtts://`).
    pub tls: TlsSettings,
    /// Messages a client queues before `publish` waits.
    pub queue_capacity: usize,
    /// QoS 1/2 messages in flight per connection.
    pub inflight: u16,
    /// How long to wait for the broker to accept a connection or subscription.
    pub connect_timeout: Duration,
    /// Largest packet sent (MQTT 3.1.1) or accepted and sent (MQTT 5, where the broker
    /// drops larger packets for this client), in bytes.
    pub max_packet_size: usize,
    /// Which client library publishes.
    pub publisher: MqttPublisherKind,
    /// Local addresses publishers connect from, taken in turn (direct publisher only).
    pub source_addresses: Vec<IpAddr>,
}

/// The largest packet MQTT can carry (a 4-byte remaining length), in bytes.
const MQTT_MAX_PACKET: usize = 268_435_455;

impl Default for MqttSettings {
    fn default() -> Self {
        Self {
            version: MqttVersion::V311,
            qos: 0,
            keep_alive: Duration::from_secs(30),
            clean_start: true,
            retain: false,
            tls: TlsSettings::default(),
            queue_capacity: 1024,
            inflight: 100,
            connect_timeout: Duration::from_secs(10),
            max_packet_size: 1 << 20,
            publisher: MqttPublisherKind::Direct,
            source_addresses: Vec::new(),
        }
    }
}

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
        let s = &self.settings;
        s.publisher == MqttPublisherKind::Direct
            && s.qos == 0
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
        match self.settings.qos {
            0 => rumqttc::QoS::AtMostOnce,
            1 => rumqttc::QoS::AtLeastOnce,
            _ => rumqttc::QoS::ExactlyOnce,
        }
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
        if self.publishes_directly() {
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
            qos: self.qos(),
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

/// An MQTT connection that publishes.
pub struct MqttPublisher(Connection);

/// The client behind a publisher.
enum Connection {
    /// The direct QoS 0 writer.
    Direct(direct::DirectPublisher),
    /// rumqttc.
    Rumqttc(RumqttcPublisher),
}

/// A rumqttc connection that publishes; its event loop runs in a task of its own.
struct RumqttcPublisher {
    sender: Sender,
    qos: rumqttc::QoS,
    retain: bool,
    driver: JoinHandle<()>,
    disconnections: Arc<AtomicU64>,
    downtime: Arc<Downtime>,
}

/// Time a connection spent down: finished outages plus the current one.
#[derive(Debug, Default)]
struct Downtime {
    /// Finished outages, µs.
    total_us: AtomicU64,
    /// Start of the current outage (µs since the Unix epoch), 0 while connected.
    since_us: AtomicU64,
}

impl Downtime {
    fn down(&self) {
        let _ = self.since_us.compare_exchange(
            0,
            now_us().max(1),
            Ordering::Relaxed,
            Ordering::Relaxed,
        );
    }

    fn up(&self) {
        let since = self.since_us.swap(0, Ordering::Relaxed);
        if since > 0 {
            self.total_us
                .fetch_add(now_us().saturating_sub(since), Ordering::Relaxed);
        }
    }

    fn so_far(&self) -> Duration {
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
    async fn publish(&mut self, m: Outgoing<'_>) -> Result<(), TransportError> {
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

    async fn close(self) -> Result<(), TransportError> {
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

/// An MQTT connection subscribed to topic filters.
pub struct MqttSubscriber {
    client: Client,
    filters: Vec<String>,
    qos: rumqttc::QoS,
    url: String,
    early: std::collections::VecDeque<Incoming>,
    failures: u32,
    resubscribe: bool,
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

fn qos5(q: rumqttc::QoS) -> rumqttc::v5::mqttbytes::QoS {
    match q {
        rumqttc::QoS::AtMostOnce => rumqttc::v5::mqttbytes::QoS::AtMostOnce,
        rumqttc::QoS::AtLeastOnce => rumqttc::v5::mqttbytes::QoS::AtLeastOnce,
        rumqttc::QoS::ExactlyOnce => rumqttc::v5::mqttbytes::QoS::ExactlyOnce,
    }
}

/// A client of either protocol version together with its event loop.
// One per connection, never per message: the size difference does not matter.
#[allow(clippy::large_enum_variant)]
enum Client {
    V4(rumqttc::AsyncClient, rumqttc::EventLoop),
    V5(rumqttc::v5::AsyncClient, rumqttc::v5::EventLoop),
}

/// The request side of a client.
enum Sender {
    V4(rumqttc::AsyncClient),
    V5(rumqttc::v5::AsyncClient),
}

/// The event side of a client.
#[allow(clippy::large_enum_variant)]
enum Events {
    V4(rumqttc::EventLoop),
    V5(rumqttc::v5::EventLoop),
}

/// What one poll of an event loop produced, in protocol-neutral terms.
enum Polled {
    ConnAck,
    SubAck { ok: bool },
    Message(Incoming),
    DisconnectSent,
    Other,
}

#[derive(Debug, thiserror::Error)]
enum PollError {
    #[error("broker refused the connection: {code}")]
    Refused { auth: bool, code: String },
    #[error("TLS handshake failed: {0}")]
    Tls(String),
    #[error("{0}")]
    Io(String),
    #[error("client closed")]
    RequestsDone,
}

impl Client {
    fn split(self) -> (Sender, Events) {
        match self {
            Client::V4(c, e) => (Sender::V4(c), Events::V4(e)),
            Client::V5(c, e) => (Sender::V5(c), Events::V5(e)),
        }
    }

    async fn poll(&mut self) -> Result<Polled, PollError> {
        match self {
            Client::V4(_, e) => poll_v4(e).await,
            Client::V5(_, e) => poll_v5(e).await,
        }
    }

    fn subscribe(&self, filters: &[String], qos: rumqttc::QoS) -> Result<(), PollError> {
        let err = |e: rumqttc::ClientError| PollError::Io(e.to_string());
        match self {
            Client::V4(c, _) => c
                .try_subscribe_many(
                    filters
                        .iter()
                        .map(|f| rumqttc::SubscribeFilter::new(f.clone(), qos)),
                )
                .map_err(err),
            Client::V5(c, _) => c
                .try_subscribe_many(
                    filters
                        .iter()
                        .map(|f| rumqttc::v5::mqttbytes::v5::Filter::new(f.clone(), qos5(qos))),
                )
                .map_err(|e| PollError::Io(e.to_string())),
        }
    }

    fn disconnect(&self) -> Result<(), PollError> {
        match self {
            Client::V4(c, _) => c.try_disconnect().map_err(|e| PollError::Io(e.to_string())),
            Client::V5(c, _) => c.try_disconnect().map_err(|e| PollError::Io(e.to_string())),
        }
    }
}

impl Events {
    async fn poll(&mut self) -> Result<Polled, PollError> {
        match self {
            Events::V4(e) => poll_v4(e).await,
            Events::V5(e) => poll_v5(e).await,
        }
    }
}

async fn poll_v4(events: &mut rumqttc::EventLoop) -> Result<Polled, PollError> {
    use rumqttc::{ConnectionError as E, Event, Packet};
    match events.poll().await {
        Ok(Event::Incoming(Packet::Publish(p))) => Ok(Polled::Message(Incoming {
            received_us: now_us(),
            topic: p.topic,
            payload: p.payload,
            headers: Vec::new(),
        })),
        Ok(Event::Incoming(Packet::ConnAck(_))) => Ok(Polled::ConnAck),
        Ok(Event::Incoming(Packet::SubAck(s))) => Ok(Polled::SubAck {
            ok: s
                .return_codes
                .iter()
                .all(|c| !matches!(c, rumqttc::SubscribeReasonCode::Failure)),
        }),
        Ok(Event::Outgoing(rumqttc::Outgoing::Disconnect)) => Ok(Polled::DisconnectSent),
        Ok(_) => Ok(Polled::Other),
        Err(E::RequestsDone) => Err(PollError::RequestsDone),
        Err(E::ConnectionRefused(code)) => Err(PollError::Refused {
            auth: matches!(
                code,
                rumqttc::ConnectReturnCode::BadUserNamePassword
                    | rumqttc::ConnectReturnCode::NotAuthorized
            ),
            code: format!("{code:?}"),
        }),
        Err(E::Tls(e)) => Err(PollError::Tls(e.to_string())),
        Err(e) => Err(classify_io(e.to_string())),
    }
}

async fn poll_v5(events: &mut rumqttc::v5::EventLoop) -> Result<Polled, PollError> {
    use rumqttc::v5::mqttbytes::v5::{ConnectReturnCode as C, Packet, SubscribeReasonCode as S};
    use rumqttc::v5::{ConnectionError as E, Event};
    match events.poll().await {
        Ok(Event::Incoming(Packet::Publish(p))) => {
            let received_us = now_us();
            Ok(Polled::Message(Incoming {
                received_us,
                topic: String::from_utf8_lossy(&p.topic).into_owned(),
                payload: p.payload,
                headers: p
                    .properties
                    .map(|pr| pr.user_properties)
                    .unwrap_or_default(),
            }))
        }
        Ok(Event::Incoming(Packet::ConnAck(_))) => Ok(Polled::ConnAck),
        Ok(Event::Incoming(Packet::SubAck(s))) => Ok(Polled::SubAck {
            ok: s.return_codes.iter().all(|c| matches!(c, S::Success(_))),
        }),
        Ok(Event::Outgoing(rumqttc::Outgoing::Disconnect)) => Ok(Polled::DisconnectSent),
        Ok(_) => Ok(Polled::Other),
        Err(E::RequestsDone) => Err(PollError::RequestsDone),
        Err(E::ConnectionRefused(code)) => Err(PollError::Refused {
            auth: matches!(
                code,
                C::BadUserNamePassword | C::NotAuthorized | C::BadAuthenticationMethod
            ),
            code: format!("{code:?}"),
        }),
        Err(E::Tls(e)) => Err(PollError::Tls(e.to_string())),
        Err(e) => Err(classify_io(e.to_string())),
    }
}

fn classify_io(text: String) -> PollError {
    // rustls reports certificate problems as I/O errors of the TLS stream.
    if text.contains("certificate") || text.contains("InvalidCertificate") {
        PollError::Tls(text)
    } else {
        PollError::Io(text)
    }
}
