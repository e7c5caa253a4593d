//! ZeroMQ PUB/SUB over TCP (`zmq+tcp://`), with the zeromq crate (pure Rust) for
//! subscribers and the proxy, and iotload's own ZMTP 3.0 publisher.
//!
//! ZeroMQ has no broker. In **proxy mode** (the default) `iotload zmq-proxy` (or any
//! XSUB/XPUB forwarder, e.g. pyzmq's `zmq.proxy`) stands in for one: for
//! `zmq+tcp://HOST:PORT` publishers connect to `PORT` (the proxy's XSUB side) and
//! subscribers to `PORT + 1` (its XPUB side). In **peer mode** there is no proxy: each
//! subscriber binds `HOST:PORT` and publishers connect to it, so one port serves one
//! subscriber.
//!
//! # Messages and topics
//!
//! A message is three frames: the topic (MQTT-style, as UTF-8, unchanged), the headers
//! (`name: value` lines joined by `\n`, empty when none; the `header` stamp carrier rides
//! here) and the payload. ZeroMQ subscriptions are byte prefixes of the first frame: a
//! subscriber subscribes to each filter's text up to its first wildcard and matches the
//! whole filter (`+`, `#`) on what arrives.
//!
//! # Delivery
//!
//! ZeroMQ PUB/SUB is at-most-once: nothing is stored, and a message no connected
//! subscription matches is dropped. iotload's publishers wait rather than drop while
//! the connection is slow (`--queue-capacity` bounds the wait), `iotload zmq-proxy` waits
//! for slow subscribers rather than dropping, and both `publisher()` and `subscriber()`
//! return once subscriptions are in force (see `publisher.rs` and `subscriber.rs`), so
//! a run on one proxy loses nothing unless a connection breaks. Other ZeroMQ peers drop
//! at their high-water mark (libzmq: 1000 messages per connection by default).

mod flags;
mod proxy;
mod publisher;
mod subscriber;
mod wire;

pub use flags::ZmqFlags;

use std::time::Duration;

pub use proxy::{ProxyError, ZmqProxy};
pub use publisher::ZmqPublisher;
pub use subscriber::ZmqSubscriber;

use super::{ClientIdentity, Transport, TransportError};
use crate::plan::BrokerUrl;

/// Whether a proxy sits between publishers and subscribers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ZmqMode {
    /// Publishers connect to the URL's port, subscribers to the next one (a forwarder
    /// such as `iotload zmq-proxy` binds both).
    Proxy,
    /// Each subscriber binds the URL's port; publishers connect to it.
    Peer,
}

/// Everything about a ZeroMQ connection that is not in the URL.
#[derive(Debug, Clone)]
pub struct ZmqSettings {
    /// Proxy or peer topology.
    pub mode: ZmqMode,
    /// How long to wait for a connection, and for a subscription to take effect.
    pub connect_timeout: Duration,
    /// Messages a publisher queues before `publish` waits.
    pub queue_capacity: usize,
}

impl Default for ZmqSettings {
    fn default() -> Self {
        Self {
            mode: ZmqMode::Proxy,
            connect_timeout: Duration::from_secs(10),
            queue_capacity: 1024,
        }
    }
}

/// The ZeroMQ broker family (PUB/SUB).
pub struct ZmqTransport {
    url: BrokerUrl,
    settings: ZmqSettings,
}

impl ZmqTransport {
    /// Checks the URL: ZeroMQ here has neither credentials nor TLS.
    pub fn new(url: BrokerUrl, settings: ZmqSettings) -> Result<Self, TransportError> {
        if url.username.is_some() || url.password.is_some() {
            return Err(TransportError::Unsupported(format!(
                "{url}: ZeroMQ (zmq+tcp://) has no authentication here (the zeromq crate \
                 has no CURVE or PLAIN); remove the user and password from the URL"
            )));
        }
        if settings.mode == ZmqMode::Proxy && url.port == u16::MAX {
            return Err(TransportError::Unsupported(format!(
                "{url}: in proxy mode subscribers use the port after the URL's, and there is \
                 none after 65535; pick a lower port"
            )));
        }
        Ok(Self { url, settings })
    }

    /// The settings in use.
    pub fn settings(&self) -> &ZmqSettings {
        &self.settings
    }

    fn host(&self) -> String {
        if self.url.host.contains(':') {
            format!("[{}]", self.url.host)
        } else {
            self.url.host.clone()
        }
    }

    /// Where subscribers connect (proxy mode) or bind (peer mode), as `host:port`.
    fn sub_address(&self) -> String {
        format!("{}:{}", self.host(), self.sub_port())
    }

    fn sub_port(&self) -> u16 {
        match self.settings.mode {
            ZmqMode::Proxy => self.url.port.saturating_add(1),
            ZmqMode::Peer => self.url.port,
        }
    }

    /// Where publishers connect.
    fn pub_target(&self) -> publisher::Target {
        publisher::Target {
            host: self.url.host.clone(),
            port: self.url.port,
            url: self.url.to_string(),
            timeout: self.settings.connect_timeout,
            listener: match self.settings.mode {
                ZmqMode::Proxy => "the proxy (`iotload zmq-proxy`)",
                ZmqMode::Peer => "the subscriber (peer mode: it binds the port)",
            },
        }
    }

    fn timeout(&self, doing: &'static str) -> TransportError {
        TransportError::Timeout {
            url: self.url.to_string(),
            waited_ms: self.settings.connect_timeout.as_millis() as u64,
            doing,
        }
    }

    /// A plain TCP connect to the subscriber port: ZeroMQ itself connects lazily and
    /// retries a refused connection until its timeout, which would hide a wrong port.
    async fn precheck(&self, identity: &ClientIdentity) -> Result<(), TransportError> {
        let port = self.sub_port();
        let attempt = tokio::time::timeout(
            self.settings.connect_timeout,
            tokio::net::TcpStream::connect((self.url.host.as_str(), port)),
        )
        .await;
        match attempt {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err(TransportError::Connect {
                url: self.url.to_string(),
                client_id: identity.client_id.clone(),
                source: format!(
                    "nothing accepts subscribers at {}:{port} ({e}); in proxy mode \
                     subscribers connect to the port after the URL's: start `iotload \
                     zmq-proxy` first, or use --zmq-mode peer",
                    self.host()
                )
                .into(),
            }),
            Err(_) => Err(TransportError::Timeout {
                url: format!("{} (subscriber port {port})", self.url),
                waited_ms: self.settings.connect_timeout.as_millis() as u64,
                doing: "connecting the ZeroMQ subscriber",
            }),
        }
    }
}

impl Transport for ZmqTransport {
    type Publisher = ZmqPublisher;
    type Subscriber = ZmqSubscriber;

    fn url(&self) -> &BrokerUrl {
        &self.url
    }

    async fn publisher(&self, identity: &ClientIdentity) -> Result<ZmqPublisher, TransportError> {
        publisher::connect(
            std::sync::Arc::new(self.pub_target()),
            &identity.client_id,
            self.settings.queue_capacity,
        )
        .await
    }

    async fn subscriber(
        &self,
        identity: &ClientIdentity,
        filters: &[String],
    ) -> Result<ZmqSubscriber, TransportError> {
        subscriber::open(self, identity, filters).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_in_the_url_are_refused() {
        let url = BrokerUrl::parse("zmq+tcp://u:p@127.0.0.1:5559").unwrap();
        let e = ZmqTransport::new(url, ZmqSettings::default())
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("no authentication"), "{e}");
        assert!(!e.contains(":p@"), "password leaked: {e}");
    }

    #[test]
    fn subscribers_use_the_next_port_in_proxy_mode_and_the_same_in_peer_mode() {
        let url = BrokerUrl::parse("zmq+tcp://127.0.0.1:7000").unwrap();
        let proxy = ZmqTransport::new(url.clone(), ZmqSettings::default()).unwrap();
        assert_eq!(proxy.sub_address(), "127.0.0.1:7001");
        let peer = ZmqTransport::new(
            url,
            ZmqSettings {
                mode: ZmqMode::Peer,
                ..ZmqSettings::default()
            },
        )
        .unwrap();
        assert_eq!(peer.sub_address(), "127.0.0.1:7000");
        let last = BrokerUrl::parse("zmq+tcp://127.0.0.1:65535").unwrap();
        assert!(ZmqTransport::new(last, ZmqSettings::default()).is_err());
    }

    #[test]
    fn ipv6_hosts_are_bracketed() {
        let url = BrokerUrl::parse("zmq+tcp://[::1]:7000").unwrap();
        let t = ZmqTransport::new(url, ZmqSettings::default()).unwrap();
        assert_eq!(t.sub_address(), "[::1]:7001");
    }
}
