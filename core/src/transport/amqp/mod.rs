//! AMQP 0.9.1 (RabbitMQ and compatible brokers) over TCP or TLS, with lapin.
//!
//! Each publisher (emulated device) is one channel. Publishers with the same credentials
//! share a connection, up to [`AmqpSettings::channels_per_connection`] each (100 by
//! default; 1 gives every device a connection of its own, as devices connecting directly
//! would): lapin runs one OS thread per connection, so a connection per device costs a
//! thread and several MiB each. A subscriber is one connection whose queue is bound to the
//! exchange once per filter.
//!
//! # Topics, routing keys and queues
//!
//! Messages go to one exchange ([`AmqpSettings::exchange`], by default RabbitMQ's
//! built-in topic exchange `amq.topic`, which its MQTT plugin also uses). The routing key
//! is the topic with `/` as `.`, and a filter binds with `+` as `*` and `#` as `#`, so
//! `iot/+/telemetry` binds `iot.*.telemetry`. On the way in, every `.` of the routing key
//! becomes `/` again. An exchange whose name does not start with `amq.` is declared (with
//! [`AmqpSettings::exchange_kind`]) by every client, so it exists whoever starts first.
//!
//! A subscriber reads from a private, server-named queue that disappears with it, unless
//! [`AmqpSettings::queue`] names a shared queue: then several subscribers compete for its
//! messages, and with [`AmqpSettings::durable`] it survives restarts (and messages are
//! published persistent).
//!
//! # Acknowledgements
//!
//! With [`AmqpSettings::confirms`] the channel is in confirm mode and each publisher keeps
//! up to [`AmqpSettings::inflight`] confirmations pending (the oldest is awaited when the
//! window is full, so a slow broker shows as send lag); `close` awaits them all. With
//! [`AmqpSettings::manual_ack`] every delivery is acknowledged once received, and the
//! broker sends at most [`AmqpSettings::prefetch`] unacknowledged messages; otherwise
//! deliveries are acknowledged by the broker on sending (no-ack), the fastest mode.
//!
//! Headers (the `header` stamp carrier) ride as AMQP message headers (long strings).

mod flags;
mod publisher;
mod settings;
mod subscriber;

pub use flags::AmqpFlags;
pub use publisher::AmqpPublisher;
pub use settings::{AmqpSettings, ExchangeType};
pub use subscriber::AmqpSubscriber;

use publisher::*;
use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, BasicQosOptions,
    ConfirmSelectOptions, ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions,
};
use lapin::tcp::{OwnedIdentity, OwnedTLSConfig};
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use lapin::{
    Acker, BasicProperties, Channel, Connection, ConnectionBuilder, ConnectionProperties, Consumer,
    ExchangeKind, PublisherConfirm,
};

use super::tls::{TlsSettings, tls_config};
use super::{ClientIdentity, Incoming, Outgoing, Publisher, Subscriber, Transport, TransportError};
use crate::plan::BrokerUrl;
use crate::stamp::now_us;

/// The AMQP 0.9.1 broker family.
pub struct AmqpTransport {
    url: BrokerUrl,
    settings: AmqpSettings,
    tls: Option<OwnedTLSConfig>,
    /// The connection publishers are being added to, per credentials.
    filling: Mutex<HashMap<Credentials, (Arc<SharedConnection>, usize)>>,
}

/// User name and password of a connection: only publishers with the same share one.
type Credentials = (Option<String>, Option<String>);

/// A connection shared by several publishers; the last one to close closes it.
struct SharedConnection {
    connection: Connection,
    open: AtomicUsize,
}

impl SharedConnection {
    /// One publisher is done with it: closes the connection when it was the last.
    async fn release(&self) {
        if self.open.fetch_sub(1, Ordering::AcqRel) == 1 {
            let _ = self
                .connection
                .close(200, ShortString::from("iotload done"))
                .await;
        }
    }
}

impl AmqpTransport {
    /// Checks the settings and loads TLS files once, so every device shares them.
    pub fn new(url: BrokerUrl, settings: AmqpSettings) -> Result<Self, TransportError> {
        if settings.exchange.is_empty() {
            return Err(TransportError::Unsupported(
                "--amqp-exchange is empty: name an exchange (e.g. amq.topic); the default \
                 exchange cannot be bound to"
                    .into(),
            ));
        }
        let tls = if url.tls {
            Some(owned_tls(&settings.tls)?)
        } else {
            None
        };
        Ok(Self {
            url,
            settings,
            tls,
            filling: Mutex::new(HashMap::new()),
        })
    }

    /// The URI handed to lapin: credentials from the identity (or the URL), the virtual
    /// host from the URL's path (`/` when none).
    fn uri(&self, identity: &ClientIdentity) -> String {
        let scheme = if self.url.tls { "amqps" } else { "amqp" };
        let user = identity
            .username
            .clone()
            .or_else(|| self.url.username.clone())
            .unwrap_or_else(|| "guest".into());
        let pass = identity
            .password
            .clone()
            .or_else(|| self.url.password.clone())
            .unwrap_or_else(|| "guest".into());
        let vhost = if self.url.path.is_empty() {
            "%2f"
        } else {
            &self.url.path
        };
        format!(
            "{scheme}://{}:{}@{}/{vhost}",
            encode(&user),
            encode(&pass),
            self.url.host_port()
        )
    }

    fn timeout(&self, doing: &'static str) -> TransportError {
        TransportError::Timeout {
            url: self.url.to_string(),
            waited_ms: self.settings.connect_timeout.as_millis() as u64,
            doing,
        }
    }

    /// Runs one broker step within the connect timeout.
    async fn step<T>(
        &self,
        doing: &'static str,
        client_id: &str,
        fut: impl Future<Output = lapin::Result<T>>,
    ) -> Result<T, TransportError> {
        match tokio::time::timeout(self.settings.connect_timeout, fut).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(self.error(e, client_id, doing)),
            Err(_) => Err(self.timeout(doing)),
        }
    }

    fn error(&self, e: lapin::Error, client_id: &str, doing: &'static str) -> TransportError {
        let text = e.to_string();
        let url = self.url.to_string();
        if text.contains("ACCESS_REFUSED") || text.contains("access refused") {
            return TransportError::Auth {
                url,
                client_id: client_id.to_string(),
                reason: text,
            };
        }
        if doing != "connecting" {
            return TransportError::Unsupported(format!("{url} refused {doing}: {text}"));
        }
        if self.url.tls && (text.contains("certificate") || text.contains("InvalidCertificate")) {
            return TransportError::Tls {
                file: match &self.settings.tls.ca_file {
                    Some(ca) => {
                        format!("the broker certificate (checked against {})", ca.display())
                    }
                    None => "the broker certificate (checked against the system roots)".into(),
                },
                reason: text,
            };
        }
        let hint = if text.contains("vhost") || text.contains("NOT_ALLOWED") {
            " (does the virtual host in the URL path exist, and may this user use it?)"
        } else {
            ""
        };
        TransportError::Connect {
            url,
            client_id: client_id.to_string(),
            source: format!("{text}{hint}").into(),
        }
    }

    /// Opens one connection and waits until the broker accepted it.
    async fn connect(&self, identity: &ClientIdentity) -> Result<Connection, TransportError> {
        let id = identity.client_id.as_str();
        let properties = ConnectionProperties::default()
            .with_connection_name(LongString::from(identity.client_id.clone()));
        let mut builder = ConnectionBuilder::new()
            .map_err(|e| self.error(e, id, "connecting"))?
            .with_uri_str(self.uri(identity))
            .with_properties(properties);
        if let Some(tls) = &self.tls {
            builder = builder.with_tls_config(tls.clone());
        }
        self.step("connecting", id, builder.connect()).await
    }

    /// Opens a channel, declaring the exchange when it is ours.
    async fn channel(
        &self,
        connection: &Connection,
        identity: &ClientIdentity,
    ) -> Result<Channel, TransportError> {
        let id = identity.client_id.as_str();
        let channel = self
            .step("opening a channel", id, connection.create_channel())
            .await?;
        if !self.settings.exchange.starts_with("amq.") {
            let options = ExchangeDeclareOptions {
                durable: self.settings.durable,
                ..ExchangeDeclareOptions::default()
            };
            self.step(
                "declaring the exchange",
                id,
                channel.exchange_declare(
                    ShortString::from(self.settings.exchange.clone()),
                    self.settings.exchange_kind.kind(),
                    options,
                    FieldTable::default(),
                ),
            )
            .await?;
        }
        Ok(channel)
    }

    /// A connection for one more publisher: the one being filled for these credentials,
    /// or a new one when it is full (or gone).
    async fn shared_connection(
        &self,
        identity: &ClientIdentity,
    ) -> Result<Arc<SharedConnection>, TransportError> {
        let key = (identity.username.clone(), identity.password.clone());
        let limit = self.settings.channels_per_connection.max(1);
        {
            let mut filling = lock(&self.filling);
            if let Some((shared, used)) = filling.get_mut(&key)
                && *used < limit
                && shared.connection.status().connected()
            {
                *used += 1;
                shared.open.fetch_add(1, Ordering::AcqRel);
                return Ok(shared.clone());
            }
        }
        let shared = Arc::new(SharedConnection {
            connection: self.connect(identity).await?,
            open: AtomicUsize::new(1),
        });
        lock(&self.filling).insert(key, (shared.clone(), 1));
        Ok(shared)
    }

    /// Declares the queue, binds it to every filter and starts consuming.
    async fn consume(
        &self,
        channel: &Channel,
        identity: &ClientIdentity,
        filters: &[String],
    ) -> Result<Consumer, TransportError> {
        let id = identity.client_id.as_str();
        if self.settings.manual_ack {
            self.step(
                "setting the prefetch",
                id,
                channel.basic_qos(self.settings.prefetch, BasicQosOptions::default()),
            )
            .await?;
        }
        let (name, options) = match &self.settings.queue {
            Some(name) => (
                name.clone(),
                QueueDeclareOptions {
                    durable: self.settings.durable,
                    ..QueueDeclareOptions::default()
                },
            ),
            None => (
                String::new(),
                QueueDeclareOptions {
                    exclusive: true,
                    auto_delete: true,
                    ..QueueDeclareOptions::default()
                },
            ),
        };
        let queue = self
            .step(
                "declaring the queue",
                id,
                channel.queue_declare(ShortString::from(name), options, FieldTable::default()),
            )
            .await?;
        let queue_name = queue.name().clone();
        for filter in filters {
            if self.settings.exchange_kind == ExchangeType::Direct
                && (filter.contains('+') || filter.contains('#'))
            {
                return Err(TransportError::Unsupported(format!(
                    "the filter `{filter}` has a wildcard, which a direct exchange cannot \
                     match; use --amqp-exchange-type topic"
                )));
            }
            self.step(
                "binding the queue",
                id,
                channel.queue_bind(
                    queue_name.clone(),
                    ShortString::from(self.settings.exchange.clone()),
                    ShortString::from(filter_to_binding(filter)),
                    QueueBindOptions::default(),
                    FieldTable::default(),
                ),
            )
            .await
            .map_err(|e| match e {
                TransportError::Unsupported(_) => TransportError::Subscribe {
                    url: self.url.to_string(),
                    filter: filter.clone(),
                },
                other => other,
            })?;
        }
        let options = BasicConsumeOptions {
            no_ack: !self.settings.manual_ack,
            ..BasicConsumeOptions::default()
        };
        self.step(
            "starting the consumer",
            id,
            channel.basic_consume(
                queue_name,
                ShortString::from(identity.client_id.clone()),
                options,
                FieldTable::default(),
            ),
        )
        .await
    }
}

/// The pool's lock; a panic while holding it cannot leave the map inconsistent.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Percent-encodes a URI user-info part.
fn encode(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for b in value.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// lapin's TLS settings: the CA file as the trusted chain, the client certificate and
/// key as a PKCS#8 identity. The files are first checked with our own loader, so a bad
/// file is reported by name.
fn owned_tls(s: &TlsSettings) -> Result<OwnedTLSConfig, TransportError> {
    if s.insecure {
        return Err(TransportError::Unsupported(
            "--insecure is not available for amqps://: give the broker's CA with --ca-file".into(),
        ));
    }
    tls_config(s)?;
    let read = |path: &std::path::Path| {
        std::fs::read(path).map_err(|e| TransportError::Tls {
            file: path.display().to_string(),
            reason: format!("cannot read: {e}"),
        })
    };
    let cert_chain = match &s.ca_file {
        Some(ca) => Some(String::from_utf8_lossy(&read(ca)?).into_owned()),
        None => None,
    };
    let identity = match (&s.cert_file, &s.key_file) {
        (Some(cert), Some(key)) => Some(OwnedIdentity::PKCS8 {
            pem: read(cert)?,
            key: read(key)?,
        }),
        _ => None,
    };
    Ok(OwnedTLSConfig {
        identity,
        cert_chain,
    })
}

/// The routing key for an MQTT-style topic: `/`→`.`.
pub fn topic_to_routing_key(topic: &str) -> String {
    topic.replace('/', ".")
}

/// The binding key for an MQTT-style filter: `/`→`.`, `+`→`*` (`#` stays `#`).
pub fn filter_to_binding(filter: &str) -> String {
    filter
        .chars()
        .map(|c| match c {
            '/' => '.',
            '+' => '*',
            c => c,
        })
        .collect()
}

/// The MQTT-style topic for a routing key: `.`→`/`.
pub fn routing_key_to_topic(key: &str) -> String {
    key.replace('.', "/")
}

impl Transport for AmqpTransport {
    type Publisher = AmqpPublisher;
    type Subscriber = AmqpSubscriber;

    fn url(&self) -> &BrokerUrl {
        &self.url
    }

    async fn publisher(&self, identity: &ClientIdentity) -> Result<AmqpPublisher, TransportError> {
        let connection = self.shared_connection(identity).await?;
        let channel = match self.channel(&connection.connection, identity).await {
            Ok(c) => c,
            Err(e) => {
                connection.release().await;
                return Err(e);
            }
        };
        if self.settings.confirms {
            self.step(
                "turning on publisher confirms",
                &identity.client_id,
                channel.confirm_select(ConfirmSelectOptions::default()),
            )
            .await?;
        }
        let mut properties = BasicProperties::default();
        if self.settings.durable {
            properties = properties.with_delivery_mode(2);
        }
        Ok(AmqpPublisher {
            connection,
            channel,
            exchange: ShortString::from(self.settings.exchange.clone()),
            properties,
            last: None,
            pending: VecDeque::new(),
            inflight: self
                .settings
                .confirms
                .then_some(self.settings.inflight.max(1)),
            disconnections: 0,
        })
    }

    async fn subscriber(
        &self,
        identity: &ClientIdentity,
        filters: &[String],
    ) -> Result<AmqpSubscriber, TransportError> {
        let connection = self.connect(identity).await?;
        let channel = self.channel(&connection, identity).await?;
        let consumer = self.consume(&channel, identity, filters).await?;
        Ok(AmqpSubscriber {
            connection,
            channel,
            consumer,
            manual_ack: self.settings.manual_ack,
            url: self.url.to_string(),
            taken: None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topics_map_to_routing_keys_and_back() {
        assert_eq!(topic_to_routing_key("iot/42/telemetry"), "iot.42.telemetry");
        assert_eq!(filter_to_binding("iot/+/telemetry"), "iot.*.telemetry");
        assert_eq!(filter_to_binding("iot/#"), "iot.#");
        assert_eq!(routing_key_to_topic("iot.42.telemetry"), "iot/42/telemetry");
    }

    #[test]
    fn uri_takes_identity_credentials_and_the_vhost() {
        let url = BrokerUrl::parse("amqp://u:p@127.0.0.1:5672/test").unwrap();
        let t = AmqpTransport::new(url, AmqpSettings::default()).unwrap();
        let id = ClientIdentity {
            client_id: "c".into(),
            username: Some("dev 1".into()),
            password: Some("p@ss".into()),
            qos: None,
        };
        assert_eq!(t.uri(&id), "amqp://dev%201:p%40ss@127.0.0.1:5672/test");
        let plain = ClientIdentity::default();
        assert_eq!(t.uri(&plain), "amqp://u:p@127.0.0.1:5672/test");
        let default_vhost = BrokerUrl::parse("amqp://127.0.0.1").unwrap();
        let t = AmqpTransport::new(default_vhost, AmqpSettings::default()).unwrap();
        assert_eq!(t.uri(&plain), "amqp://guest:guest@127.0.0.1:5672/%2f");
    }

    #[test]
    fn insecure_tls_is_refused_with_a_hint() {
        let url = BrokerUrl::parse("amqps://127.0.0.1").unwrap();
        let settings = AmqpSettings {
            tls: TlsSettings {
                insecure: true,
                ..TlsSettings::default()
            },
            ..AmqpSettings::default()
        };
        let e = AmqpTransport::new(url, settings).err().unwrap().to_string();
        assert!(e.contains("--ca-file"), "{e}");
    }
}
