//! The direct QoS 0 publisher: MQTT 3.1.1 over plain TCP, each PUBLISH frame written
//! straight into the device's socket by the task that sends it.
//!
//! rumqttc moves every publish through a channel into a per-connection event-loop task;
//! at QoS 0 that hop, not the protocol, was most of the load generator's user-space CPU
//! (BENCHMARKS.md, "Issue #7"). Here a publish is one encode into a reused buffer and one
//! `write`. A small keeper task per connection answers for what a QoS 0 publisher still
//! needs: keep-alive pings, noticing a lost connection, and reconnecting with back-off
//! while publishes queue (up to `--queue-capacity` frames, then `publish` waits).
//! Everything else (QoS 1/2, MQTT 5, TLS, subscribers) stays with rumqttc.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::BytesMut;
use rumqttc::mqttbytes::v4::{ConnectReturnCode, Packet};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::{Mutex, Notify};
use tokio::task::JoinHandle;

use super::Downtime;
use crate::transport::TransportError;
use crate::transport::backoff::reconnect_delay;

/// MQTT 3.1.1 PINGREQ and DISCONNECT packets.
const PINGREQ: [u8; 2] = [0xC0, 0x00];
const DISCONNECT: [u8; 2] = [0xE0, 0x00];

/// Everything needed to open (and reopen) one device's connection.
#[derive(Clone)]
pub(super) struct Dialer {
    /// The broker, as `host:port`.
    pub(super) address: String,
    /// The broker for messages (credentials redacted).
    pub(super) url: String,
    /// Local address to connect from, if not the system's choice.
    pub(super) source: Option<IpAddr>,
    /// The CONNECT packet, encoded once.
    pub(super) connect: Vec<u8>,
    /// How long the TCP connect plus CONNECT/CONNACK may take.
    pub(super) timeout: Duration,
}

/// Why a connection attempt failed.
#[derive(Debug, thiserror::Error)]
pub(super) enum DialError {
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("the broker refused the connection: {0:?}")]
    Refused(ConnectReturnCode),
    #[error("the broker answered CONNECT with something other than CONNACK: {0}")]
    Protocol(String),
    #[error("no CONNACK within {0:?}")]
    Timeout(Duration),
}

impl DialError {
    /// The transport error a caller sees for a first connection that failed.
    pub(super) fn into_transport(self, url: String, client_id: &str) -> TransportError {
        match self {
            DialError::Refused(
                code @ (ConnectReturnCode::BadUserNamePassword | ConnectReturnCode::NotAuthorized),
            ) => TransportError::Auth {
                url,
                client_id: client_id.to_string(),
                reason: format!("{code:?}"),
            },
            DialError::Timeout(waited) => TransportError::Timeout {
                url,
                waited_ms: waited.as_millis() as u64,
                doing: "waiting for CONNACK",
            },
            other => TransportError::Connect {
                url,
                client_id: client_id.to_string(),
                source: other.into(),
            },
        }
    }
}

impl Dialer {
    /// Opens a TCP connection, sends CONNECT and waits for a successful CONNACK.
    pub(super) async fn dial(&self) -> Result<TcpStream, DialError> {
        tokio::time::timeout(self.timeout, self.dial_untimed())
            .await
            .unwrap_or(Err(DialError::Timeout(self.timeout)))
    }

    async fn dial_untimed(&self) -> Result<TcpStream, DialError> {
        let mut last = None;
        for addr in tokio::net::lookup_host(&self.address).await? {
            if self.source.is_some_and(|s| s.is_ipv4() != addr.is_ipv4()) {
                continue;
            }
            match self.connect_tcp(addr).await {
                Ok(stream) => return self.handshake(stream).await,
                Err(e) => last = Some(e),
            }
        }
        Err(last
            .unwrap_or_else(|| {
                std::io::Error::new(
                    std::io::ErrorKind::NotFound,
                    format!(
                        "{} has no address of the family of --source-addresses",
                        self.address
                    ),
                )
            })
            .into())
    }

    async fn connect_tcp(&self, addr: SocketAddr) -> std::io::Result<TcpStream> {
        let socket = if addr.is_ipv4() {
            TcpSocket::new_v4()?
        } else {
            TcpSocket::new_v6()?
        };
        if let Some(source) = self.source {
            socket.bind(SocketAddr::new(source, 0))?;
        }
        let stream = socket.connect(addr).await?;
        // No Nagle delay: it adds tens of ms to every small message.
        stream.set_nodelay(true)?;
        Ok(stream)
    }

    async fn handshake(&self, mut stream: TcpStream) -> Result<TcpStream, DialError> {
        stream.write_all(&self.connect).await?;
        let mut buf = BytesMut::with_capacity(16);
        loop {
            match Packet::read(&mut buf, 64) {
                Ok(Packet::ConnAck(ack)) if ack.code == ConnectReturnCode::Success => {
                    return Ok(stream);
                }
                Ok(Packet::ConnAck(ack)) => return Err(DialError::Refused(ack.code)),
                Ok(other) => return Err(DialError::Protocol(format!("{other:?}"))),
                Err(rumqttc::mqttbytes::Error::InsufficientBytes(_)) => {
                    if stream.read_buf(&mut buf).await? == 0 {
                        return Err(DialError::Io(std::io::ErrorKind::UnexpectedEof.into()));
                    }
                }
                Err(e) => return Err(DialError::Protocol(e.to_string())),
            }
        }
    }
}

/// Encodes one QoS 0 PUBLISH into `frame` (cleared first).
pub(super) fn encode_publish(
    frame: &mut Vec<u8>,
    topic: &str,
    payload: &[u8],
    retain: bool,
    max_packet: usize,
) -> Result<(), TransportError> {
    let remaining = 2 + topic.len() + payload.len();
    if topic.len() > usize::from(u16::MAX) || remaining > super::MQTT_MAX_PACKET {
        return Err(TransportError::Publish(
            format!(
                "a {}-byte topic with a {}-byte payload does not fit one MQTT packet",
                topic.len(),
                payload.len()
            )
            .into(),
        ));
    }
    frame.clear();
    frame.push(0x30 | u8::from(retain));
    let mut rest = remaining;
    loop {
        let digit = (rest % 128) as u8;
        rest /= 128;
        frame.push(if rest > 0 { digit | 0x80 } else { digit });
        if rest == 0 {
            break;
        }
    }
    frame.extend_from_slice(&(topic.len() as u16).to_be_bytes());
    frame.extend_from_slice(topic.as_bytes());
    frame.extend_from_slice(payload);
    if frame.len() > max_packet {
        return Err(TransportError::Publish(
            format!(
                "a {}-byte packet is over the {max_packet}-byte limit (--max-packet-size)",
                frame.len()
            )
            .into(),
        ));
    }
    Ok(())
}

/// The socket's writing side and what waits for it while the connection is down.
struct Conn {
    /// The writing half; `None` while reconnecting.
    writer: Option<OwnedWriteHalf>,
    /// Frames published while down, sent first after the reconnect.
    pending: Vec<u8>,
    /// How many frames `pending` holds.
    pending_frames: usize,
    /// Set by `close`: the keeper must not reconnect.
    closed: bool,
}

impl Conn {
    fn queue(&mut self, frame: &[u8]) {
        self.pending.extend_from_slice(frame);
        self.pending_frames += 1;
    }
}

/// What the publisher and its keeper share.
struct Link {
    conn: Mutex<Conn>,
    /// Frames written so far: the keeper pings only when this has not moved.
    written: AtomicU64,
    /// The publisher saw a write fail (publisher → keeper).
    broken: Notify,
    /// The connection is back (keeper → publishers waiting for queue room).
    up: Notify,
    disconnections: AtomicU64,
    downtime: Downtime,
}

/// One device's connection, publishing QoS 0 frames from the caller's task.
pub(super) struct DirectPublisher {
    link: Arc<Link>,
    frame: Vec<u8>,
    retain: bool,
    queue_capacity: usize,
    max_packet: usize,
    keeper: JoinHandle<()>,
}

impl DirectPublisher {
    /// Connects (errors surface here) and starts the connection's keeper.
    pub(super) async fn connect(
        dialer: Dialer,
        keep_alive: Duration,
        retain: bool,
        queue_capacity: usize,
        max_packet: usize,
    ) -> Result<Self, DialError> {
        let (reader, writer) = dialer.dial().await?.into_split();
        let link = Arc::new(Link {
            conn: Mutex::new(Conn {
                writer: Some(writer),
                pending: Vec::new(),
                pending_frames: 0,
                closed: false,
            }),
            written: AtomicU64::new(0),
            broken: Notify::new(),
            up: Notify::new(),
            disconnections: AtomicU64::new(0),
            downtime: Downtime::default(),
        });
        let keeper = tokio::spawn(keep(link.clone(), dialer, reader, keep_alive));
        Ok(Self {
            link,
            frame: Vec::new(),
            retain,
            queue_capacity: queue_capacity.max(1),
            max_packet,
            keeper,
        })
    }

    /// Writes one QoS 0 PUBLISH; while the connection is down, queues it instead.
    pub(super) async fn publish(
        &mut self,
        topic: &str,
        payload: &[u8],
    ) -> Result<(), TransportError> {
        encode_publish(
            &mut self.frame,
            topic,
            payload,
            self.retain,
            self.max_packet,
        )?;
        loop {
            let mut conn = self.link.conn.lock().await;
            if let Some(writer) = conn.writer.as_mut() {
                if writer.write_all(&self.frame).await.is_err() {
                    // Part of it may have reached the dead connection; all of it goes on the
                    // next one.
                    conn.writer = None;
                    conn.queue(&self.frame);
                    self.link.broken.notify_one();
                }
                self.link.written.fetch_add(1, Ordering::Relaxed);
                return Ok(());
            }
            if conn.closed {
                return Err(TransportError::Publish("the connection is closed".into()));
            }
            if conn.pending_frames < self.queue_capacity {
                conn.queue(&self.frame);
                return Ok(());
            }
            // Created under the lock, so the keeper's wake-up cannot slip in between.
            let up = self.link.up.notified();
            drop(conn);
            up.await;
        }
    }

    /// Sends DISCONNECT once what is queued is written (waiting up to 5 s for a reconnect),
    /// then closes.
    pub(super) async fn close(self) {
        let link = self.link.clone();
        let flushed = tokio::time::timeout(Duration::from_secs(5), async {
            loop {
                let mut conn = link.conn.lock().await;
                if conn.writer.is_some() || conn.pending_frames == 0 {
                    conn.closed = true;
                    if let Some(mut writer) = conn.writer.take() {
                        let _ = writer.write_all(&DISCONNECT).await;
                        let _ = writer.shutdown().await;
                    }
                    return;
                }
                let up = link.up.notified();
                drop(conn);
                up.await;
            }
        })
        .await;
        if flushed.is_err() {
            link.conn.lock().await.closed = true;
        }
        // The keeper reads until the broker closes its side, so nothing unread makes the
        // kernel reset the connection (and drop what is still unsent).
        let mut keeper = self.keeper;
        if tokio::time::timeout(Duration::from_secs(2), &mut keeper)
            .await
            .is_err()
        {
            keeper.abort();
        }
    }

    pub(super) fn disconnections(&self) -> u64 {
        self.link.disconnections.load(Ordering::Relaxed)
    }

    pub(super) fn disconnected_for(&self) -> Duration {
        self.link.downtime.so_far()
    }
}

/// Keeps one connection alive: pings when idle, notices it is lost, reconnects with
/// back-off and sends what was queued meanwhile. Ends once the publisher closes.
async fn keep(link: Arc<Link>, dialer: Dialer, mut reader: OwnedReadHalf, keep_alive: Duration) {
    let ping_every = (keep_alive / 2).max(Duration::from_millis(500));
    loop {
        watch(&link, &mut reader, ping_every).await;
        {
            let mut conn = link.conn.lock().await;
            if conn.closed {
                return;
            }
            conn.writer = None;
        }
        link.disconnections.fetch_add(1, Ordering::Relaxed);
        link.downtime.down();
        let mut failures = 0u32;
        reader = loop {
            failures = failures.saturating_add(1);
            tokio::time::sleep(reconnect_delay(failures)).await;
            let Ok(stream) = dialer.dial().await else {
                tracing::debug!(broker = %dialer.url, "reconnect attempt {failures} failed");
                continue;
            };
            let (reader, mut writer) = stream.into_split();
            let mut conn = link.conn.lock().await;
            if conn.closed {
                return;
            }
            if !conn.pending.is_empty() {
                if writer.write_all(&conn.pending).await.is_err() {
                    continue;
                }
                conn.pending = Vec::new();
                conn.pending_frames = 0;
            }
            conn.writer = Some(writer);
            drop(conn);
            link.downtime.up();
            link.up.notify_waiters();
            break reader;
        };
    }
}

/// Watches a live connection until it is lost (or closed): drains what the broker sends
/// (a QoS 0 publisher only gets PINGRESP), pings when nothing was written for
/// `ping_every`, and calls the connection lost when a ping goes unanswered that long.
async fn watch(link: &Link, reader: &mut OwnedReadHalf, ping_every: Duration) {
    let mut buf = [0u8; 64];
    let mut tick = tokio::time::interval(ping_every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    let mut seen = link.written.load(Ordering::Relaxed);
    let mut awaiting_pong = false;
    loop {
        tokio::select! {
            read = reader.read(&mut buf) => match read {
                Ok(0) | Err(_) => return,
                Ok(_) => awaiting_pong = false,
            },
            () = link.broken.notified() => {
                // A permit left from before a reconnect is stale: only a missing writer
                // means the publisher gave this connection up.
                if link.conn.lock().await.writer.is_none() {
                    return;
                }
            }
            _ = tick.tick() => {
                if awaiting_pong {
                    tracing::debug!("no PINGRESP within {ping_every:?}");
                    return;
                }
                let now = link.written.load(Ordering::Relaxed);
                if now == seen {
                    let mut conn = link.conn.lock().await;
                    let Some(writer) = conn.writer.as_mut() else { return };
                    if writer.write_all(&PINGREQ).await.is_err() {
                        return;
                    }
                    awaiting_pong = true;
                }
                seen = now;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn publish_frames_read_back_as_rumqttc_decodes_them() {
        let mut frame = Vec::new();
        for (topic, len) in [("a/b", 0usize), ("dev/1/t", 100), ("x", 200), ("y", 20_000)] {
            let payload: Vec<u8> = (0..len).map(|i| i as u8).collect();
            encode_publish(&mut frame, topic, &payload, len == 100, 1 << 20).unwrap();
            let mut bytes = BytesMut::from(&frame[..]);
            match Packet::read(&mut bytes, 1 << 20).unwrap() {
                Packet::Publish(p) => {
                    assert_eq!(p.topic, topic);
                    assert_eq!(&p.payload[..], &payload[..]);
                    assert_eq!(p.qos, rumqttc::QoS::AtMostOnce);
                    assert_eq!(p.retain, len == 100);
                }
                other => panic!("not a PUBLISH: {other:?}"),
            }
            assert!(bytes.is_empty(), "the frame is exactly one packet");
        }
    }

    #[test]
    fn oversized_publishes_are_refused_with_the_limit_named() {
        let mut frame = Vec::new();
        let e = encode_publish(&mut frame, "t", &[0; 2000], false, 1000).unwrap_err();
        assert!(e.to_string().contains("1000-byte limit"), "{e}");
    }
}
