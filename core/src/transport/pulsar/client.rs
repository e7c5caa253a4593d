//! The Pulsar transport: settings checked once, one client (one broker connection) per
//! publisher or subscriber, and the subscription each subscriber gets.

use std::collections::{HashMap, VecDeque};
use std::time::Duration;

use pulsar::consumer::InitialPosition;
use pulsar::{
    Authentication, ConnectionRetryOptions, ConsumerOptions, OperationRetryOptions,
    ProducerOptions, Pulsar, SubType, TokioExecutor,
};

use super::discovery::Discovery;
use super::error::{Context, classify};
use super::publisher::PulsarPublisher;
use super::settings::{PulsarSettings, SubscriptionKind};
use super::subscriber::PulsarSubscriber;
use super::topic::{TopicSpace, has_wildcard};
use crate::plan::BrokerUrl;
use crate::stamp::now_us;
use crate::transport::tls::read_certs;
use crate::transport::{ClientIdentity, Transport, TransportError};

/// Times a refused TCP connection is retried (with 20 ms, 40 ms, 80 ms back-off and some
/// jitter) before it is reported: a wrong port fails within about a second, and a
/// broker that restarts during a run is reconnected to on the next publish.
const CONNECT_RETRIES: u32 = 3;

/// Times an operation the broker answers with "not ready" is retried.
const OPERATION_RETRIES: u32 = 5;

/// How long `close` waits for each last step (a batch, a receipt, the close itself)
/// beyond the connect timeout.
pub(super) const CLOSE_GRACE: Duration = Duration::from_secs(1);

/// The Apache Pulsar broker family.
pub struct PulsarTransport {
    url: BrokerUrl,
    settings: PulsarSettings,
    space: TopicSpace,
    /// The CA file's PEM text, checked once.
    ca_chain: Option<Vec<u8>>,
}

impl PulsarTransport {
    /// Checks the settings and reads the CA file once, so every device shares them.
    pub fn new(url: BrokerUrl, settings: PulsarSettings) -> Result<Self, TransportError> {
        let space = TopicSpace::new(settings.persistent, &settings.tenant, &settings.namespace)?;
        if let Some(name) = &settings.subscription
            && name.trim().is_empty()
        {
            return Err(TransportError::Unsupported(
                "--pulsar-subscription is empty: give a name, or leave it out for a private \
                 subscription per subscriber"
                    .into(),
            ));
        }
        let ca_chain = if url.tls { tls_chain(&settings)? } else { None };
        Ok(Self {
            url,
            settings,
            space,
            ca_chain,
        })
    }

    /// The address handed to the client: never with credentials in it.
    fn service_url(&self) -> String {
        let scheme = if self.url.tls { "pulsar+ssl" } else { "pulsar" };
        format!("{scheme}://{}", self.url.host_port())
    }

    /// The JWT for this client: `--pulsar-token`, else the device's password, else the
    /// URL's password.
    fn token(&self, identity: &ClientIdentity) -> Option<String> {
        self.settings
            .token
            .clone()
            .or_else(|| identity.password.clone())
            .or_else(|| self.url.password.clone())
            .filter(|t| !t.is_empty())
    }

    fn context<'a>(&'a self, url: &'a str, client_id: &'a str, doing: &'static str) -> Context<'a> {
        Context {
            url,
            client_id,
            doing,
            waited: self.settings.connect_timeout,
            tls: self.url.tls,
            token: false,
        }
    }

    /// Opens one client (one connection) and waits until the broker accepted it.
    async fn client(
        &self,
        identity: &ClientIdentity,
    ) -> Result<Pulsar<TokioExecutor>, TransportError> {
        let s = &self.settings;
        let mut builder = Pulsar::builder(self.service_url(), TokioExecutor)
            .with_connection_retry_options(ConnectionRetryOptions {
                min_backoff: Duration::from_millis(20),
                max_backoff: Duration::from_millis(500),
                max_retries: CONNECT_RETRIES,
                connection_timeout: s.connect_timeout,
                keep_alive: s.keep_alive.max(Duration::from_secs(1)),
                ..ConnectionRetryOptions::default()
            })
            .with_operation_retry_options(OperationRetryOptions {
                operation_timeout: s.connect_timeout,
                retry_delay: Duration::from_millis(200),
                max_retries: Some(OPERATION_RETRIES),
            })
            .with_outbound_channel_size(s.queue_capacity.max(1));
        let token = self.token(identity);
        let presented = token.is_some();
        if let Some(token) = token {
            builder = builder.with_auth(Authentication {
                name: "token".into(),
                data: token.into_bytes(),
            });
        }
        if let Some(chain) = &self.ca_chain {
            builder = builder.with_certificate_chain(chain.clone());
        }
        let url = self.url.to_string();
        let cx = Context {
            token: presented,
            ..self.context(&url, &identity.client_id, "connecting")
        };
        match tokio::time::timeout(s.connect_timeout, builder.build()).await {
            Ok(Ok(client)) => Ok(client),
            Ok(Err(e)) => Err(classify(&e, cx)),
            Err(_) => Err(cx.timeout()),
        }
    }

    fn producer_options(&self) -> ProducerOptions {
        let s = &self.settings;
        ProducerOptions {
            block_queue_if_full: true,
            batch_size: s.batching.then_some(s.batch_max_messages.max(2)),
            batch_timeout: s
                .batching
                .then_some(s.batch_max_delay.max(Duration::from_micros(100))),
            ..ProducerOptions::default()
        }
    }
}

/// The CA file's PEM text for `pulsar+ssl://`, after checking that it holds certificates;
/// options the client cannot honour are refused by name.
fn tls_chain(settings: &PulsarSettings) -> Result<Option<Vec<u8>>, TransportError> {
    let tls = &settings.tls;
    if tls.insecure {
        return Err(TransportError::Unsupported(
            "--insecure is not available for pulsar+ssl://: give the broker's CA with --ca-file"
                .into(),
        ));
    }
    if tls.cert_file.is_some() || tls.key_file.is_some() {
        return Err(TransportError::Unsupported(
            "--cert-file and --key-file (mutual TLS) are not available for pulsar+ssl://: \
             authenticate with a token (--pulsar-token or --password)"
                .into(),
        ));
    }
    let Some(path) = &tls.ca_file else {
        return Ok(None);
    };
    if read_certs(path)?.is_empty() {
        return Err(TransportError::Tls {
            file: path.display().to_string(),
            reason: "no PEM certificate in the file".into(),
        });
    }
    let pem = std::fs::read(path).map_err(|e| TransportError::Tls {
        file: path.display().to_string(),
        reason: format!("cannot read: {e}"),
    })?;
    // The client builds its TLS configuration with the process's default provider.
    let _ = rustls::crypto::ring::default_provider().install_default();
    Ok(Some(pem))
}

fn sub_type(kind: SubscriptionKind) -> SubType {
    match kind {
        SubscriptionKind::Exclusive => SubType::Exclusive,
        SubscriptionKind::Shared => SubType::Shared,
        SubscriptionKind::Failover => SubType::Failover,
        SubscriptionKind::KeyShared => SubType::KeyShared,
    }
}

/// A private subscription's name: the client id (made safe) and the time, so no two
/// subscribers share one.
pub(crate) fn private_subscription(client_id: &str, now_us: u64) -> String {
    let safe: String = client_id
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') {
                c
            } else {
                '_'
            }
        })
        .collect();
    format!("iotload-{safe}-{now_us:x}")
}

impl Transport for PulsarTransport {
    type Publisher = PulsarPublisher;
    type Subscriber = PulsarSubscriber;

    fn url(&self) -> &BrokerUrl {
        &self.url
    }

    async fn publisher(
        &self,
        identity: &ClientIdentity,
    ) -> Result<PulsarPublisher, TransportError> {
        let client = self.client(identity).await?;
        Ok(PulsarPublisher {
            client,
            space: self.space.clone(),
            options: self.producer_options(),
            producers: HashMap::new(),
            pending: VecDeque::new(),
            inflight: self.settings.inflight.max(1),
            batching: self.settings.batching,
            url: self.url.to_string(),
            client_id: identity.client_id.clone(),
            timeout: self.settings.connect_timeout,
            tls: self.url.tls,
            disconnections: 0,
        })
    }

    async fn subscriber(
        &self,
        identity: &ClientIdentity,
        filters: &[String],
    ) -> Result<PulsarSubscriber, TransportError> {
        let started_ms = now_us() / 1000;
        let pattern = filters.iter().any(|f| has_wildcard(f));
        let regex = if pattern {
            let text = self.space.pattern(filters)?;
            Some(regex::Regex::new(&text).map_err(|e| {
                TransportError::Unsupported(format!(
                    "cannot subscribe to {filters:?}: the topic pattern `{text}` is invalid: {e}"
                ))
            })?)
        } else {
            None
        };
        let client = self.client(identity).await?;
        let private = self.settings.subscription.is_none();
        let name = match &self.settings.subscription {
            Some(name) => name.clone(),
            None => private_subscription(&identity.client_id, now_us()),
        };
        // A pattern subscription reaches a topic only once it exists and the next refresh
        // finds it: start such subscriptions at the earliest message, so nothing published
        // in between is lost (a private one then skips what predates it, below).
        let position = if pattern {
            InitialPosition::Earliest
        } else {
            InitialPosition::Latest
        };
        let options = ConsumerOptions::default()
            .durable(!private)
            .with_initial_position(position);
        let template = client
            .consumer()
            .with_subscription(name)
            .with_subscription_type(sub_type(self.settings.effective_kind()))
            .with_consumer_name(identity.client_id.clone())
            .with_options(options);
        let refresh = self.settings.topic_refresh.max(Duration::from_millis(100));
        let url = self.url.to_string();
        let cx = self.context(&url, &identity.client_id, "subscribing");
        let refused = |e: pulsar::Error| match classify(&e, cx) {
            TransportError::Unsupported(why) => {
                TransportError::Unsupported(format!("{why} (filters {})", filters.join(", ")))
            }
            other => other,
        };
        let wait = self.settings.connect_timeout;
        let (consumers, discovery) = match regex {
            // Our own discovery, which consumes the topics that match now before this
            // returns and looks for new ones every refresh.
            Some(pattern) => {
                let mut discovery = Discovery::new(
                    client.clone(),
                    self.space.namespace().to_string(),
                    pattern,
                    template,
                    refresh,
                );
                let first = tokio::time::timeout(wait, discovery.first()).await;
                match first {
                    Ok(Ok(consumers)) => (consumers, Some(discovery)),
                    Ok(Err(e)) => return Err(refused(e)),
                    Err(_) => return Err(cx.timeout()),
                }
            }
            // The client's consumer over every topic (over several, it subscribes again
            // at the next refresh to one whose consumer failed).
            None => {
                let builder = template
                    .with_topics(filters.iter().map(|f| self.space.full_name(f)))
                    .with_topic_refresh(refresh);
                match tokio::time::timeout(wait, builder.build::<Vec<u8>>()).await {
                    Ok(Ok(consumer)) => (vec![consumer], None),
                    Ok(Err(e)) => return Err(refused(e)),
                    Err(_) => return Err(cx.timeout()),
                }
            }
        };
        Ok(PulsarSubscriber {
            consumers,
            discovery,
            next: 0,
            _client: client,
            space: self.space.clone(),
            published_since_ms: (pattern && private).then_some(started_ms),
            url,
            timeout: self.settings.connect_timeout,
        })
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;
    use crate::transport::tls::TlsSettings;

    fn transport(url: &str, settings: PulsarSettings) -> Result<PulsarTransport, TransportError> {
        PulsarTransport::new(BrokerUrl::parse(url).unwrap(), settings)
    }

    #[test]
    fn the_client_gets_the_address_without_credentials() {
        let t = transport(
            "pulsar://u:secret@127.0.0.1:6650",
            PulsarSettings::default(),
        )
        .unwrap();
        assert_eq!(t.service_url(), "pulsar://127.0.0.1:6650");
        let t = transport("pulsar+ssl://[::1]", PulsarSettings::default()).unwrap();
        assert_eq!(t.service_url(), "pulsar+ssl://[::1]:6651");
    }

    #[test]
    fn the_token_comes_from_the_option_then_the_device_then_the_url() {
        let id = ClientIdentity {
            client_id: "c".into(),
            username: Some("ignored".into()),
            password: Some("device-jwt".into()),
            qos: None,
        };
        let plain = ClientIdentity::default();
        let t = transport("pulsar://:url-jwt@h", PulsarSettings::default()).unwrap();
        assert_eq!(t.token(&id).as_deref(), Some("device-jwt"));
        assert_eq!(t.token(&plain).as_deref(), Some("url-jwt"));
        let settings = PulsarSettings {
            token: Some("option-jwt".into()),
            ..PulsarSettings::default()
        };
        let t = transport("pulsar://h", settings).unwrap();
        assert_eq!(t.token(&id).as_deref(), Some("option-jwt"));
        let t = transport("pulsar://h", PulsarSettings::default()).unwrap();
        assert_eq!(t.token(&plain), None);
    }

    #[test]
    fn batching_is_off_unless_asked_and_publish_waits_when_the_queue_is_full() {
        let t = transport("pulsar://h", PulsarSettings::default()).unwrap();
        let o = t.producer_options();
        assert!(o.block_queue_if_full);
        assert_eq!(o.batch_size, None);
        assert_eq!(o.batch_timeout, None);
        let settings = PulsarSettings {
            batching: true,
            batch_max_messages: 50,
            batch_max_delay: Duration::from_millis(5),
            ..PulsarSettings::default()
        };
        let o = transport("pulsar://h", settings)
            .unwrap()
            .producer_options();
        assert_eq!(o.batch_size, Some(50));
        assert_eq!(o.batch_timeout, Some(Duration::from_millis(5)));
    }

    #[test]
    fn tls_options_the_client_cannot_honour_are_refused_by_name() {
        let insecure = PulsarSettings {
            tls: TlsSettings {
                insecure: true,
                ..TlsSettings::default()
            },
            ..PulsarSettings::default()
        };
        let e = transport("pulsar+ssl://h", insecure)
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("--insecure") && e.contains("--ca-file"), "{e}");
        let mtls = PulsarSettings {
            tls: TlsSettings {
                cert_file: Some(PathBuf::from("c.pem")),
                key_file: Some(PathBuf::from("k.pem")),
                ..TlsSettings::default()
            },
            ..PulsarSettings::default()
        };
        let e = transport("pulsar+ssl://h", mtls).err().unwrap().to_string();
        assert!(e.contains("--cert-file") && e.contains("token"), "{e}");
        // Plain pulsar:// ignores the TLS options.
        let insecure = PulsarSettings {
            tls: TlsSettings {
                insecure: true,
                ..TlsSettings::default()
            },
            ..PulsarSettings::default()
        };
        assert!(transport("pulsar://h", insecure).is_ok());
    }

    #[test]
    fn a_bad_ca_file_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let not_pem = dir.path().join("ca.pem");
        std::fs::write(&not_pem, "not a certificate").unwrap();
        for path in [not_pem, dir.path().join("missing.pem")] {
            let settings = PulsarSettings {
                tls: TlsSettings {
                    ca_file: Some(path.clone()),
                    ..TlsSettings::default()
                },
                ..PulsarSettings::default()
            };
            let e = transport("pulsar+ssl://h", settings).err().unwrap();
            assert!(matches!(e, TransportError::Tls { .. }), "{e:?}");
            assert!(e.to_string().contains(&path.display().to_string()), "{e}");
        }
    }

    #[test]
    fn an_empty_subscription_name_is_refused() {
        let settings = PulsarSettings {
            subscription: Some(" ".into()),
            ..PulsarSettings::default()
        };
        let e = transport("pulsar://h", settings).err().unwrap().to_string();
        assert!(e.contains("--pulsar-subscription"), "{e}");
    }

    #[test]
    fn private_subscriptions_are_unique_and_safe() {
        let a = private_subscription("dev 1/x", 0x1234);
        assert_eq!(a, "iotload-dev_1_x-1234");
        assert_ne!(a, private_subscription("dev 1/x", 0x1235));
    }
}
