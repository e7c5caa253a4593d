//! A ZeroMQ subscriber: a `SUB` socket of the zeromq crate, connected to the proxy (or
//! bound, in peer mode), subscribed to the literal prefix of each MQTT-style filter.
//!
//! ZeroMQ filters by byte prefix only, so every message received is matched against the
//! full filters here (`+`, `#`) and dropped when none matches; so are readiness probes.
//!
//! In proxy mode `subscriber()` returns only once its subscriptions are in force at the
//! proxy (the slow-joiner problem): after the real prefixes it subscribes to a private
//! probe topic on the same connection, then a short-lived publisher sends probe messages
//! through the proxy every [`PROBE_INTERVAL`] until one comes back. Subscriptions travel
//! in order on one connection, so the probe arriving proves the others were applied.
//! Messages that arrive meanwhile are kept for `recv`.

use std::collections::{HashSet, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use zeromq::{Socket, SocketOptions, SocketRecv, SubSocket, ZmqMessage};

use super::publisher;
use super::wire::{PROBE_PREFIX, decode_headers, subscription_prefix, topic_matches};
use super::{ZmqMode, ZmqTransport};
use crate::stamp::now_us;
use crate::transport::{ClientIdentity, Incoming, Outgoing, Publisher, Subscriber, TransportError};

/// How often the readiness probe is re-sent until it comes back.
const PROBE_INTERVAL: Duration = Duration::from_millis(20);

/// A ZeroMQ connection that receives.
pub struct ZmqSubscriber {
    socket: SubSocket,
    filters: Vec<String>,
    /// Messages received while waiting for the probe.
    pending: VecDeque<Incoming>,
    url: String,
}

/// Opens the SUB socket, subscribes, and (in proxy mode) proves the subscription works.
pub(crate) async fn open(
    t: &ZmqTransport,
    identity: &ClientIdentity,
    filters: &[String],
) -> Result<ZmqSubscriber, TransportError> {
    let mut options = SocketOptions::default();
    options.connect_timeout(t.settings.connect_timeout);
    let mut socket = SubSocket::with_options(options);
    let endpoint = format!("tcp://{}", t.sub_address());
    match t.settings.mode {
        ZmqMode::Proxy => {
            t.precheck(identity).await?;
            let waited = t.settings.connect_timeout + Duration::from_millis(500);
            match tokio::time::timeout(waited, socket.connect(&endpoint)).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => {
                    return Err(TransportError::Connect {
                        url: t.url.to_string(),
                        client_id: identity.client_id.clone(),
                        source: format!("ZeroMQ SUB to {endpoint}: {e}").into(),
                    });
                }
                Err(_) => return Err(t.timeout("connecting the ZeroMQ subscriber")),
            }
        }
        ZmqMode::Peer => {
            if let Err(e) = socket.bind(&endpoint).await {
                return Err(TransportError::Unsupported(format!(
                    "{}: in peer mode each subscriber binds the URL's port, and {endpoint} \
                     cannot be bound ({e}); is another subscriber there? `iotload run` \
                     needs --to-broker with a second port",
                    t.url
                )));
            }
        }
    }
    let mut prefixes = HashSet::new();
    for filter in filters {
        let prefix = subscription_prefix(filter);
        if prefixes.insert(prefix) {
            socket
                .subscribe(prefix)
                .await
                .map_err(|_| TransportError::Subscribe {
                    url: t.url.to_string(),
                    filter: filter.clone(),
                })?;
        }
    }
    let mut subscriber = ZmqSubscriber {
        socket,
        filters: filters.to_vec(),
        pending: VecDeque::new(),
        url: t.url.to_string(),
    };
    if t.settings.mode == ZmqMode::Proxy {
        subscriber.probe(t, identity).await?;
    }
    Ok(subscriber)
}

impl ZmqSubscriber {
    /// Sends probes through the proxy until one arrives: the subscriptions are in force.
    async fn probe(
        &mut self,
        t: &ZmqTransport,
        identity: &ClientIdentity,
    ) -> Result<(), TransportError> {
        let topic = probe_topic();
        self.socket
            .subscribe(&topic)
            .await
            .map_err(|_| TransportError::Subscribe {
                url: self.url.clone(),
                filter: topic.clone(),
            })?;
        let deadline = tokio::time::Instant::now() + t.settings.connect_timeout;
        let mut prober = publisher::connect(
            Arc::new(t.pub_target()),
            &format!("{}-probe", identity.client_id),
            16,
        )
        .await?;
        let arrived = loop {
            prober
                .publish(Outgoing {
                    topic: &topic,
                    payload: b"",
                    headers: &[],
                    record_time_us: None,
                })
                .await?;
            let until = (tokio::time::Instant::now() + PROBE_INTERVAL).min(deadline);
            match self.until_probe(&topic, until).await {
                Some(Ok(())) => break true,
                Some(Err(e)) => return Err(e),
                None if tokio::time::Instant::now() >= deadline => break false,
                None => {}
            }
        };
        let _ = prober.close().await;
        let _ = self.socket.unsubscribe(&topic).await;
        if arrived {
            Ok(())
        } else {
            Err(t.timeout("waiting for the subscription to take effect at the proxy"))
        }
    }

    /// Receives until the probe `topic` arrives (`Some(Ok)`) or `until` passes (`None`),
    /// keeping other wanted messages for `recv`.
    async fn until_probe(
        &mut self,
        topic: &str,
        until: tokio::time::Instant,
    ) -> Option<Result<(), TransportError>> {
        loop {
            let message = match tokio::time::timeout_at(until, self.socket.recv()).await {
                Ok(Ok(m)) => m,
                Ok(Err(e)) => {
                    return Some(Err(TransportError::Disconnected {
                        url: self.url.clone(),
                        source: e.into(),
                    }));
                }
                Err(_) => return None,
            };
            if message
                .get(0)
                .is_some_and(|t| t.as_ref() == topic.as_bytes())
            {
                return Some(Ok(()));
            }
            if let Some(m) = self.accept(message, now_us()) {
                self.pending.push_back(m);
            }
        }
    }

    /// The message as an [`Incoming`], or `None` when no filter wants it.
    fn accept(&self, message: ZmqMessage, received_us: u64) -> Option<Incoming> {
        let mut frames = message.into_vecdeque();
        let topic = frames.pop_front()?;
        let topic = String::from_utf8_lossy(&topic).into_owned();
        if topic.starts_with(PROBE_PREFIX) || !self.filters.iter().any(|f| topic_matches(f, &topic))
        {
            return None;
        }
        let (headers, payload) = match (frames.pop_front(), frames.pop_front()) {
            (None, _) => (Vec::new(), Bytes::new()),
            (Some(payload), None) => (Vec::new(), payload),
            (Some(headers), Some(payload)) => (decode_headers(&headers), payload),
        };
        Some(Incoming {
            topic,
            payload,
            headers,
            received_us,
            record_time_us: None,
        })
    }
}

/// A topic no one else subscribes to.
fn probe_topic() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    format!(
        "{PROBE_PREFIX}{}-{:x}-{}",
        std::process::id(),
        now_us(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

impl Subscriber for ZmqSubscriber {
    async fn recv(&mut self) -> Result<Incoming, TransportError> {
        if let Some(m) = self.pending.pop_front() {
            return Ok(m);
        }
        loop {
            let message = self
                .socket
                .recv()
                .await
                .map_err(|e| TransportError::Disconnected {
                    url: self.url.clone(),
                    source: e.into(),
                })?;
            if let Some(m) = self.accept(message, now_us()) {
                return Ok(m);
            }
        }
    }

    async fn close(self) -> Result<(), TransportError> {
        // Unbinds (peer mode); connections close as the socket drops.
        let _ = self.socket.close().await;
        Ok(())
    }
}
