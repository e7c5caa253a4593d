//! The [`KafkaTransport`]: librdkafka configuration from the URL and settings, the
//! client context that turns librdkafka's error and log callbacks into something we can
//! report, and the connection check that makes a wrong address fail fast.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rdkafka::ClientContext;
use rdkafka::config::{ClientConfig, RDKafkaLogLevel};
use rdkafka::consumer::{BaseConsumer, ConsumerContext, Rebalance};
use rdkafka::error::{KafkaError, KafkaResult, RDKafkaErrorCode};
use rdkafka::metadata::Metadata;
use tokio::sync::Notify;

use super::publisher::{KafkaPublisher, SharedProducer};
use super::settings::KafkaSettings;
use super::subscriber::KafkaSubscriber;
use crate::plan::BrokerUrl;
use crate::transport::{ClientIdentity, Transport, TransportError};

/// User name and password a client authenticates with; `None` without SASL.
pub(super) type Credentials = Option<(String, String)>;

/// What librdkafka told us through its callbacks, shared by a client and its handles.
#[derive(Default)]
pub(crate) struct Events {
    /// The latest error the client reported, with librdkafka's explanation.
    last: Mutex<Option<(Option<RDKafkaErrorCode>, String)>>,
    /// The broker refused the credentials.
    auth: Mutex<Option<String>>,
    /// The TLS handshake failed.
    tls: Mutex<Option<String>>,
    /// Connections to a broker that failed or were lost.
    transport_failures: AtomicU64,
    /// Signalled after each partition assignment of a consumer.
    pub(super) assigned: Notify,
}

/// Added to a connection error when the broker closed the connection: what a SASL
/// listener does to a client without credentials.
const AUTH_HINT: &str = " (does the broker require authentication: --username and --password?)";

impl Events {
    fn record(&self, code: Option<RDKafkaErrorCode>, text: String) {
        match code {
            Some(
                RDKafkaErrorCode::Authentication
                | RDKafkaErrorCode::SaslAuthenticationFailed
                | RDKafkaErrorCode::IllegalSASLState
                | RDKafkaErrorCode::UnsupportedSASLMechanism,
            ) => set(&self.auth, text.clone()),
            Some(RDKafkaErrorCode::SSL) => set(&self.tls, text.clone()),
            Some(RDKafkaErrorCode::BrokerTransportFailure) => {
                self.transport_failures.fetch_add(1, Ordering::Relaxed);
            }
            _ => {}
        }
        set(&self.last, (code, text));
    }

    /// Records a librdkafka log line about a failure, classified by its text.
    fn record_log(&self, text: &str) {
        let code = if text.contains("SASL") || text.contains("uthentication") {
            Some(RDKafkaErrorCode::Authentication)
        } else if text.contains("SSL") || text.contains("certificate") {
            Some(RDKafkaErrorCode::SSL)
        } else {
            None
        };
        match code {
            Some(RDKafkaErrorCode::Authentication) => set(&self.auth, text.to_string()),
            Some(_) => set(&self.tls, text.to_string()),
            None => {}
        }
        set(&self.last, (code, text.to_string()));
    }

    /// How many times a broker connection failed or was lost.
    pub(super) fn transport_failures(&self) -> u64 {
        self.transport_failures.load(Ordering::Relaxed)
    }

    fn take<T>(slot: &Mutex<Option<T>>) -> Option<T> {
        slot.lock().ok().and_then(|mut s| s.take())
    }
}

fn set<T>(slot: &Mutex<Option<T>>, value: T) {
    if let Ok(mut s) = slot.lock() {
        *s = Some(value);
    }
}

/// The context of every iotload Kafka client: records errors in [`Events`] and sends
/// librdkafka's log to `tracing` at debug level (errors that matter are returned as
/// [`TransportError`]s instead).
#[derive(Clone)]
pub(crate) struct KafkaContext {
    pub(super) events: Arc<Events>,
}

impl ClientContext for KafkaContext {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, log_message: &str) {
        tracing::debug!(target: "librdkafka", ?level, fac, "{log_message}");
        // A consumer's error events carry only a code; the log says what happened.
        let severe = matches!(
            level,
            RDKafkaLogLevel::Emerg
                | RDKafkaLogLevel::Alert
                | RDKafkaLogLevel::Critical
                | RDKafkaLogLevel::Error
        );
        if severe || fac == "FAIL" {
            self.events.record_log(log_message);
        }
    }

    fn error(&self, error: KafkaError, reason: &str) {
        tracing::debug!(target: "librdkafka", %error, "{reason}");
        self.events
            .record(error.rdkafka_error_code(), reason.to_string());
    }
}

impl ConsumerContext for KafkaContext {
    fn post_rebalance(&self, _consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Assign(_) = rebalance {
            self.events.assigned.notify_one();
        }
    }
}

/// The Kafka broker family (`kafka://`, `kafka+tls://`).
pub struct KafkaTransport {
    pub(super) url: BrokerUrl,
    pub(super) settings: KafkaSettings,
    /// One producer per distinct set of credentials, shared by every publisher using it.
    producers: tokio::sync::Mutex<HashMap<Credentials, Arc<SharedProducer>>>,
}

impl KafkaTransport {
    /// Checks the settings (TLS files, options) once, so every device shares them.
    pub fn new(url: BrokerUrl, settings: KafkaSettings) -> Result<Self, TransportError> {
        if url.tls {
            for file in [&settings.ca_file, &settings.cert_file, &settings.key_file]
                .into_iter()
                .flatten()
            {
                std::fs::metadata(file).map_err(|e| TransportError::Tls {
                    file: file.display().to_string(),
                    reason: format!("cannot read: {e}"),
                })?;
            }
            match (&settings.cert_file, &settings.key_file) {
                (Some(_), None) => {
                    return Err(TransportError::Tls {
                        file: "--cert-file".into(),
                        reason: "a client certificate needs --key-file too".into(),
                    });
                }
                (None, Some(_)) => {
                    return Err(TransportError::Tls {
                        file: "--key-file".into(),
                        reason: "a client key needs --cert-file too".into(),
                    });
                }
                _ => {}
            }
        }
        if settings.partitions < 1 || settings.replication < 1 {
            return Err(TransportError::Unsupported(
                "--kafka-partitions and --kafka-replication must be at least 1".into(),
            ));
        }
        // Build one configuration now, so a bad --kafka-option fails before any device.
        let probe = Self {
            url,
            settings,
            producers: tokio::sync::Mutex::new(HashMap::new()),
        };
        let mut config = probe.config(&None, "iotload-check");
        probe.apply_options(&mut config);
        config.create_native_config().map_err(|e| {
            TransportError::Unsupported(format!("the Kafka client refused its settings: {e}"))
        })?;
        Ok(probe)
    }

    /// The configuration every client starts from: address, timeouts, security.
    pub(super) fn config(&self, credentials: &Credentials, client_id: &str) -> ClientConfig {
        let s = &self.settings;
        let mut c = ClientConfig::new();
        let setup_ms = s.connect_timeout.as_millis().clamp(1_000, 2_147_483_647);
        c.set("bootstrap.servers", self.url.host_port())
            .set("client.id", client_id)
            .set("socket.connection.setup.timeout.ms", setup_ms.to_string())
            .set_log_level(RDKafkaLogLevel::Warning);
        let protocol = match (self.url.tls, credentials.is_some()) {
            (false, false) => "plaintext",
            (false, true) => "sasl_plaintext",
            (true, false) => "ssl",
            (true, true) => "sasl_ssl",
        };
        c.set("security.protocol", protocol);
        if let Some((user, pass)) = credentials {
            c.set("sasl.mechanism", s.sasl_mechanism.as_config())
                .set("sasl.username", user)
                .set("sasl.password", pass);
        }
        if self.url.tls {
            if let Some(ca) = &s.ca_file {
                c.set("ssl.ca.location", ca.display().to_string());
            }
            if let (Some(cert), Some(key)) = (&s.cert_file, &s.key_file) {
                c.set("ssl.certificate.location", cert.display().to_string())
                    .set("ssl.key.location", key.display().to_string());
            }
            if s.insecure {
                c.set("enable.ssl.certificate.verification", "false")
                    .set("ssl.endpoint.identification.algorithm", "none");
            }
        }
        c
    }

    /// Applies the user's `--kafka-option`s, which win over iotload's own settings.
    pub(super) fn apply_options(&self, c: &mut ClientConfig) {
        for (key, value) in &self.settings.options {
            c.set(key, value);
        }
    }

    /// A fresh context and its events.
    pub(super) fn context() -> KafkaContext {
        KafkaContext {
            events: Arc::new(Events::default()),
        }
    }

    /// Asks the broker for its metadata within the connect timeout: librdkafka connects
    /// lazily and never fails on creation, so this is where a wrong address, refused
    /// credentials or a bad certificate show up. Returns the cluster's topic names.
    /// Classify a failure with
    /// [`Self::classify`] once the client's events have been served.
    pub(super) async fn fetch_metadata(
        &self,
        fetch: impl FnOnce(Duration) -> KafkaResult<Metadata> + Send + 'static,
    ) -> KafkaResult<Vec<String>> {
        let waited = self.settings.connect_timeout;
        let names = move || {
            fetch(waited).map(|m| m.topics().iter().map(|t| t.name().to_string()).collect())
        };
        match tokio::task::spawn_blocking(names).await {
            Ok(result) => result,
            Err(_) => Err(KafkaError::MetadataFetch(RDKafkaErrorCode::Fail)),
        }
    }

    /// The clearest error for a failed request, from what the callbacks recorded.
    pub(super) fn classify(
        &self,
        events: &Events,
        error: &KafkaError,
        client_id: &str,
    ) -> TransportError {
        let url = self.url.to_string();
        if let Some(reason) = Events::take(&events.auth) {
            return TransportError::Auth {
                url,
                client_id: client_id.to_string(),
                reason,
            };
        }
        if let Some(reason) = Events::take(&events.tls) {
            return TransportError::Tls {
                file: match &self.settings.ca_file {
                    Some(ca) => {
                        format!("the broker certificate (checked against {})", ca.display())
                    }
                    None => "the broker certificate (checked against the system roots)".into(),
                },
                reason,
            };
        }
        match Events::take(&events.last) {
            Some((_, reason)) => {
                // tansu resets the connection; Apache Kafka's SASL listener closes it
                // as soon as the first request is not a SASL handshake.
                let hint = if reason.contains("Disconnected while requesting ApiVersion")
                    || reason.contains("reset by peer")
                    || reason.contains("closed by peer")
                {
                    AUTH_HINT
                } else {
                    ""
                };
                TransportError::Connect {
                    url,
                    client_id: client_id.to_string(),
                    source: format!("{reason}{hint}").into(),
                }
            }
            None if error.rdkafka_error_code() == Some(RDKafkaErrorCode::OperationTimedOut) => {
                TransportError::Timeout {
                    url,
                    waited_ms: self.settings.connect_timeout.as_millis() as u64,
                    doing: "fetching the cluster metadata",
                }
            }
            // The connection failed before librdkafka said why (its events lag on a busy
            // machine): a listener that closes at once is the likely cause.
            None if error.rdkafka_error_code()
                == Some(RDKafkaErrorCode::BrokerTransportFailure) =>
            {
                TransportError::Connect {
                    url,
                    client_id: client_id.to_string(),
                    source: format!("{error}{AUTH_HINT}").into(),
                }
            }
            None => TransportError::Connect {
                url,
                client_id: client_id.to_string(),
                source: error.to_string().into(),
            },
        }
    }
}

impl Transport for KafkaTransport {
    type Publisher = KafkaPublisher;
    type Subscriber = KafkaSubscriber;

    fn url(&self) -> &BrokerUrl {
        &self.url
    }

    async fn publisher(&self, identity: &ClientIdentity) -> Result<KafkaPublisher, TransportError> {
        let credentials = identity.login(&self.url);
        let mut producers = self.producers.lock().await;
        if let Some(shared) = producers.get(&credentials) {
            return Ok(KafkaPublisher::new(shared.clone(), false));
        }
        let shared = Arc::new(SharedProducer::connect(self, identity, &credentials).await?);
        producers.insert(credentials, shared.clone());
        Ok(KafkaPublisher::new(shared, true))
    }

    async fn subscriber(
        &self,
        identity: &ClientIdentity,
        filters: &[String],
    ) -> Result<KafkaSubscriber, TransportError> {
        KafkaSubscriber::connect(self, identity, filters).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn transport(url: &str, settings: KafkaSettings) -> Result<KafkaTransport, TransportError> {
        KafkaTransport::new(BrokerUrl::parse(url).unwrap(), settings)
    }

    #[test]
    fn security_protocol_follows_tls_and_credentials() {
        let t = transport("kafka+tls://u:p@127.0.0.1:9093", KafkaSettings::default()).unwrap();
        let c = t.config(&ClientIdentity::default().login(&t.url), "x");
        assert_eq!(c.get("security.protocol"), Some("sasl_ssl"));
        assert_eq!(c.get("sasl.mechanism"), Some("PLAIN"));
        assert_eq!(c.get("bootstrap.servers"), Some("127.0.0.1:9093"));
        let t = transport("kafka://127.0.0.1", KafkaSettings::default()).unwrap();
        assert_eq!(
            t.config(&None, "x").get("security.protocol"),
            Some("plaintext")
        );
    }

    #[test]
    fn missing_tls_files_and_bad_options_are_refused_by_name() {
        let settings = KafkaSettings {
            ca_file: Some("/nonexistent/ca.pem".into()),
            ..KafkaSettings::default()
        };
        let e = transport("kafka+tls://127.0.0.1", settings)
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("/nonexistent/ca.pem"), "{e}");
        let settings = KafkaSettings {
            options: vec![("no.such.property".into(), "1".into())],
            ..KafkaSettings::default()
        };
        let e = transport("kafka://127.0.0.1", settings)
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("no.such.property"), "{e}");
    }
}
