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
mod publisher;
mod settings;
mod subscriber;

pub use flags::NatsFlags;
pub use publisher::NatsPublisher;
pub use settings::{JetStreamAck, NatsSettings};
pub use subscriber::NatsSubscriber;

use publisher::*;
use settings::*;
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
