//! Core NATS publish/subscribe over TCP or TLS, with async-nats.
//!
//! Each publisher is one NATS connection (one per emulated device); a subscriber is one
//! connection subscribed to every filter, whose subscriptions are read as one merged
//! stream. The client reconnects and resubscribes on its own.
//!
//! # Topics and subjects
//!
//! iotload's topics are MQTT-style (`iot/{device}/telemetry`, filters with `+` and `#`).
//! On the way out they become NATS subjects character by character:
//!
//! | MQTT | NATS |
//! | ---- | ---- |
//! | `/`  | `.`  |
//! | `+`  | `*`  |
//! | `#`  | `>`  |
//!
//! and on the way in (`Incoming::topic`) every `.` becomes `/` again, so templates,
//! filters and the echo's routing work unchanged. Consequences: a `.` inside a topic
//! level becomes a level separator (and comes back as `/`); topics may not start or end
//! with `/` or contain `//` (NATS subjects have no empty tokens) nor spaces; and `a/#`
//! (`a.>`) does not match `a` itself, unlike MQTT.
//!
//! The header stamp carrier rides in NATS message headers.
//!
//! # JetStream
//!
//! With [`NatsSettings::jetstream`] publishers publish through JetStream and keep up to
//! [`NatsSettings::inflight`] acknowledgements pending (the oldest is awaited when the
//! window is full, so a slow store shows as send lag); `close` awaits them all. Each
//! subscriber first makes sure a stream covers every filter: the stream
//! `IOTLOAD_<subject>` (file storage, one hour of messages) is created when missing, and
//! a filter that an existing stream already covers is left alone. Subscribers then read
//! through an ephemeral push consumer per filter (deliver policy "new", the ack policy of
//! [`NatsSettings::jetstream_ack`]), so what they measure includes storing the message.
//! A standalone `loadgen` needs the stream to exist (start the collector or echo first).

mod flags;

pub use flags::NatsFlags;
use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_nats::header::{HeaderMap, HeaderName, HeaderValue};
use async_nats::jetstream::context::PublishAckFuture;
use async_nats::{ConnectErrorKind, ConnectOptions, Subject};
use bytes::Bytes;
use futures_util::StreamExt;
use futures_util::stream::SelectAll;

use super::tls::{TlsSettings, tls_config};
use super::{ClientIdentity, Incoming, Outgoing, Publisher, Subscriber, Transport, TransportError};
use crate::plan::BrokerUrl;
use crate::stamp::now_us;
use crate::transport::backoff::reconnect_delay;

/// How long `close` waits for the last messages to be flushed to the server.
const CLOSE_FLUSH_TIMEOUT: Duration = Duration::from_secs(5);

/// Everything about a NATS connection that is not in the URL or the client identity.
#[derive(Debug, Clone)]
pub struct NatsSettings {
    /// TLS settings (used when the URL is `tls://` or `nats+tls://`).
    pub tls: TlsSettings,
    /// How long to wait for the server to accept a connection or subscription.
    pub connect_timeout: Duration,
    /// Messages a client queues before `publish` waits.
    pub queue_capacity: usize,
    /// Publish through JetStream, into streams created for the subscribed filters.
    pub jetstream: bool,
    /// JetStream acknowledgements a publisher keeps pending before `publish` waits.
    pub inflight: usize,
    /// How subscribers acknowledge what their JetStream consumers deliver.
    pub jetstream_ack: JetStreamAck,
}

/// The ack policy of the JetStream consumers subscribers create.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum JetStreamAck {
    /// Every message is acknowledged on its own (JetStream's default).
    #[default]
    Explicit,
    /// Acknowledging a message acknowledges every earlier one too.
    All,
    /// Nothing is acknowledged: delivered means done.
    None,
}

impl JetStreamAck {
    fn policy(self) -> async_nats::jetstream::consumer::AckPolicy {
        use async_nats::jetstream::consumer::AckPolicy;
        match self {
            Self::Explicit => AckPolicy::Explicit,
            Self::All => AckPolicy::All,
            Self::None => AckPolicy::None,
        }
    }
}

impl Default for NatsSettings {
    fn default() -> Self {
        Self {
            tls: TlsSettings::default(),
            connect_timeout: Duration::from_secs(10),
            queue_capacity: 1024,
            jetstream: false,
            inflight: 100,
            jetstream_ack: JetStreamAck::Explicit,
        }
    }
}

/// The NATS broker family (core publish/subscribe).
pub struct NatsTransport {
    url: BrokerUrl,
    settings: NatsSettings,
    tls: Option<Arc<rustls::ClientConfig>>,
}

impl NatsTransport {
    /// Checks the settings and loads TLS files once, so every device shares them.
    pub fn new(url: BrokerUrl, settings: NatsSettings) -> Result<Self, TransportError> {
        let tls = if url.tls {
            Some(Arc::new(tls_config(&settings.tls)?))
        } else {
            None
        };
        Ok(Self { url, settings, tls })
    }

    /// The address handed to the client: never with credentials in it.
    fn server_address(&self) -> String {
        let scheme = if self.url.tls { "tls" } else { "nats" };
        format!("{scheme}://{}", self.url.host_port())
    }

    /// Opens one connection and waits until the server accepted it.
    /// Counts the messages the client drops for a slow subscription into `dropped`.
    async fn connect(
        &self,
        identity: &ClientIdentity,
        dropped: Option<Arc<AtomicU64>>,
    ) -> Result<async_nats::Client, TransportError> {
        let waited = self.settings.connect_timeout;
        let mut options = ConnectOptions::new()
            .name(&identity.client_id)
            .connection_timeout(waited)
            .client_capacity(self.settings.queue_capacity.max(1));
        if let Some(dropped) = dropped {
            // A subscriber buffers up to --queue-capacity messages; past that the client
            // drops each new one and reports a slow-consumer event for it.
            options = options
                .subscription_capacity(self.settings.queue_capacity.max(1))
                .event_callback(move |event| {
                    if matches!(event, async_nats::Event::SlowConsumer(_)) {
                        dropped.fetch_add(1, Ordering::Relaxed);
                    }
                    std::future::ready(())
                });
        }
        if let Some((user, pass)) = identity.login(&self.url) {
            options = options.user_and_password(user, pass);
        }
        if let Some(tls) = &self.tls {
            options = options
                .require_tls(true)
                .tls_client_config(tls.as_ref().clone());
        }
        // The client's own timeout covers each step; this one bounds the whole handshake.
        let attempt = tokio::time::timeout(
            waited + Duration::from_millis(500),
            options.connect(self.server_address()),
        )
        .await;
        match attempt {
            Ok(Ok(client)) => Ok(client),
            Ok(Err(e)) => Err(self.connect_error(e, &identity.client_id)),
            Err(_) => Err(self.timeout("connecting")),
        }
    }

    fn timeout(&self, doing: &'static str) -> TransportError {
        TransportError::Timeout {
            url: self.url.to_string(),
            waited_ms: self.settings.connect_timeout.as_millis() as u64,
            doing,
        }
    }

    fn connect_error(&self, e: async_nats::ConnectError, client_id: &str) -> TransportError {
        let url = self.url.to_string();
        // rustls reports certificate problems as I/O errors of the TLS stream.
        let text = e.to_string();
        let tls = e.kind() == ConnectErrorKind::Tls
            || text.contains("certificate")
            || text.contains("InvalidCertificate");
        match e.kind() {
            ConnectErrorKind::Authentication | ConnectErrorKind::AuthorizationViolation => {
                TransportError::Auth {
                    url,
                    client_id: client_id.to_string(),
                    reason: e.to_string(),
                }
            }
            ConnectErrorKind::TimedOut => self.timeout("connecting"),
            _ if tls => TransportError::Tls {
                file: match &self.settings.tls.ca_file {
                    Some(ca) => {
                        format!("the broker certificate (checked against {})", ca.display())
                    }
                    None => "the broker certificate (checked against the system roots)".into(),
                },
                reason: text,
            },
            _ => TransportError::Connect {
                url,
                client_id: client_id.to_string(),
                source: e.into(),
            },
        }
    }
}

impl NatsTransport {
    /// Makes sure a JetStream stream covers each filter, creating `IOTLOAD_<subject>`
    /// when none does.
    async fn ensure_streams(
        &self,
        client: &async_nats::Client,
        filters: &[String],
    ) -> Result<(), TransportError> {
        let context = async_nats::jetstream::new(client.clone());
        for filter in filters {
            let subject = topic_to_subject(filter);
            let config = async_nats::jetstream::stream::Config {
                name: stream_name(&subject),
                subjects: vec![subject.clone()],
                max_age: Duration::from_secs(3600),
                ..Default::default()
            };
            if let Err(e) = context.get_or_create_stream(config).await {
                let text = e.to_string();
                // Another stream already stores these subjects: nothing to create.
                if !text.contains("overlap") {
                    return Err(TransportError::Unsupported(format!(
                        "cannot create a JetStream stream for `{filter}` ({subject}) on {}: \
                         {text}; is JetStream enabled on the server (nats-server -js)?",
                        self.url
                    )));
                }
            }
        }
        Ok(())
    }
}

/// The JetStream stream iotload creates for `subject`: `IOTLOAD_` and the subject with
/// `.` as `_`, `*` as `STAR` and `>` as `ALL` (stream names cannot hold those).
pub fn stream_name(subject: &str) -> String {
    let mut name = String::from("IOTLOAD_");
    for c in subject.chars() {
        match c {
            '.' => name.push('_'),
            '*' => name.push_str("STAR"),
            '>' => name.push_str("ALL"),
            c if c.is_ascii_alphanumeric() || c == '-' || c == '_' => name.push(c),
            _ => name.push('_'),
        }
    }
    name
}

impl Transport for NatsTransport {
    type Publisher = NatsPublisher;
    type Subscriber = NatsSubscriber;

    fn url(&self) -> &BrokerUrl {
        &self.url
    }

    async fn publisher(&self, identity: &ClientIdentity) -> Result<NatsPublisher, TransportError> {
        let client = self.connect(identity, None).await?;
        let jetstream = self.settings.jetstream.then(|| JetStreamPublisher {
            context: async_nats::jetstream::new(client.clone()),
            pending: VecDeque::new(),
            inflight: self.settings.inflight.max(1),
        });
        Ok(NatsPublisher {
            statistics: client.statistics(),
            client,
            last: None,
            jetstream,
        })
    }

    async fn subscriber(
        &self,
        identity: &ClientIdentity,
        filters: &[String],
    ) -> Result<NatsSubscriber, TransportError> {
        let dropped = Arc::new(AtomicU64::new(0));
        let client = self.connect(identity, Some(dropped.clone())).await?;
        if self.settings.jetstream {
            let waited = self.settings.connect_timeout;
            match tokio::time::timeout(waited, self.ensure_streams(&client, filters)).await {
                Ok(result) => result?,
                Err(_) => return Err(self.timeout("creating JetStream streams")),
            }
        }
        let mut subscriber = NatsSubscriber {
            client,
            filters: filters.to_vec(),
            messages: SelectAll::new(),
            url: self.url.to_string(),
            failures: 0,
            jetstream: self
                .settings
                .jetstream
                .then_some(self.settings.jetstream_ack),
            dropped,
            taken: None,
        };
        let waited = self.settings.connect_timeout;
        match tokio::time::timeout(waited, subscriber.subscribe_all()).await {
            Ok(result) => result?,
            Err(_) => return Err(self.timeout("subscribing")),
        }
        Ok(subscriber)
    }
}

/// The NATS subject for an MQTT-style topic or filter: `/`→`.`, `+`→`*`, `#`→`>`.
pub fn topic_to_subject(topic: &str) -> String {
    topic
        .chars()
        .map(|c| match c {
            '/' => '.',
            '+' => '*',
            '#' => '>',
            c => c,
        })
        .collect()
}

/// The MQTT-style topic for a NATS subject: `.`→`/`.
pub fn subject_to_topic(subject: &str) -> String {
    subject.replace('.', "/")
}

/// A NATS connection that publishes.
pub struct NatsPublisher {
    client: async_nats::Client,
    statistics: Arc<async_nats::Statistics>,
    /// The last topic and its subject: a device publishes to the same topic every time.
    last: Option<(String, Subject)>,
    /// Set when publishing through JetStream.
    jetstream: Option<JetStreamPublisher>,
}

/// The JetStream side of a publisher: its context and the acknowledgements not yet seen.
struct JetStreamPublisher {
    context: async_nats::jetstream::Context,
    pending: VecDeque<PublishAckFuture>,
    inflight: usize,
}

impl JetStreamPublisher {
    async fn publish(
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
    async fn settle(&mut self) -> Result<(), TransportError> {
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
    fn subject(&mut self, topic: &str) -> Subject {
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

fn header_map(headers: &[(String, String)]) -> Result<HeaderMap, TransportError> {
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

/// A NATS connection subscribed to topic filters, read as one merged stream.
pub struct NatsSubscriber {
    client: async_nats::Client,
    filters: Vec<String>,
    messages: SelectAll<async_nats::Subscriber>,
    url: String,
    failures: u32,
    /// Set when reading through JetStream consumers, with their ack policy.
    jetstream: Option<JetStreamAck>,
    /// Messages the client dropped because the subscription's buffer was full.
    dropped: Arc<AtomicU64>,
    /// A message taken from the subscriptions and not yet returned, with the JetStream
    /// reply subject still to acknowledge: kept here while the ack is queued, so a
    /// receive abandoned at that point (the caller's `select!` chose another branch)
    /// hands it over on the next call instead of leaving it to be redelivered.
    taken: Option<(Option<async_nats::Subject>, Incoming)>,
}

impl NatsSubscriber {
    /// The next message, with the reply subject to acknowledge when the ack policy asks
    /// for one; subscribes again first after the subscriptions ended.
    async fn next_message(
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
        };
        Ok((reply, incoming))
    }

    /// Subscribes to every filter, then waits for the server's answer to a PING: the
    /// server handles commands in order, so the subscriptions are in place after it.
    async fn subscribe_all(&mut self) -> Result<(), TransportError> {
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
    async fn create_consumer(
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topics_map_to_subjects_and_back() {
        assert_eq!(topic_to_subject("iot/7/telemetry"), "iot.7.telemetry");
        assert_eq!(topic_to_subject("iot/+/telemetry"), "iot.*.telemetry");
        assert_eq!(topic_to_subject("iot/#"), "iot.>");
        assert_eq!(subject_to_topic("iot.7.telemetry"), "iot/7/telemetry");
        let topic = "a/b/c";
        assert_eq!(subject_to_topic(&topic_to_subject(topic)), topic);
    }

    #[test]
    fn stream_names_hold_no_subject_wildcards_or_dots() {
        assert_eq!(stream_name("iot.*.telemetry"), "IOTLOAD_iot_STAR_telemetry");
        assert_eq!(stream_name("iot.>"), "IOTLOAD_iot_ALL");
    }

    #[test]
    fn header_map_keeps_names_and_values() {
        let map = header_map(&[("iotload-seq".into(), "42".into())]).unwrap();
        assert_eq!(
            map.get("iotload-seq").map(|v| v.as_str().to_string()),
            Some("42".into())
        );
        assert!(header_map(&[("bad:name".into(), "x".into())]).is_err());
    }

    #[test]
    fn tls_url_needs_usable_files() {
        let url = BrokerUrl::parse("tls://127.0.0.1:4222").unwrap();
        let settings = NatsSettings {
            tls: TlsSettings {
                ca_file: Some("/nonexistent/ca.pem".into()),
                ..TlsSettings::default()
            },
            ..NatsSettings::default()
        };
        let e = NatsTransport::new(url, settings).err().unwrap().to_string();
        assert!(e.contains("/nonexistent/ca.pem"), "{e}");
    }
}
