//! A ZeroMQ publisher: one TCP connection speaking ZMTP 3.0 as a `PUB` socket, driven by
//! one task per device.
//!
//! iotload speaks the publisher side of ZMTP itself rather than through the zeromq
//! crate's `PubSocket`, because a load generator needs four things that socket hides:
//! a refused connection reported at once (the crate retries until its timeout); the
//! subscriptions the peer sent, so `publisher()` can return once they arrived (a PUB
//! drops everything published before that: the slow-joiner problem); waiting instead of
//! dropping when the connection is slow (the wait is send lag, not silent loss); and a
//! `close` that hands every queued message to the kernel and ends with a FIN. On the wire
//! it is an ordinary ZMTP 3.0 PUB, so any SUB or XSUB (libzmq, pyzmq, the zeromq crate)
//! accepts it.
//!
//! Messages go out as three frames, `[topic, headers, payload]`, and only when a
//! subscription of the peer is a prefix of the topic, as a PUB must. A lost connection is
//! counted and re-opened with backoff; until then `publish` fails at once, so the loss is
//! counted as publish errors rather than hidden.

use std::ops::Range;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use bytes::BytesMut;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use super::wire::{HandshakeError, Subscriptions, encode_headers, handshake, put_frame};
use crate::transport::backoff::reconnect_delay;
use crate::transport::{Outgoing, Publisher, TransportError};

/// How long `publisher()` waits for the peer's first subscription. A proxy run by
/// `iotload zmq-proxy` and a subscriber bound in peer mode send theirs at once; another
/// proxy (libzmq's) has none to send while no subscriber is connected.
const SUBSCRIPTION_WAIT: Duration = Duration::from_millis(500);

/// How long `close` waits for the peer to read everything and close its side.
const CLOSE_LINGER: Duration = Duration::from_millis(500);

/// How long `close` waits for the queue to be written.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(10);

/// Bytes written per system call at most when messages queue up.
const BATCH_BYTES: usize = 64 * 1024;

/// Where a publisher connects, and how errors name it.
#[derive(Debug, Clone)]
pub(crate) struct Target {
    pub(crate) host: String,
    pub(crate) port: u16,
    /// The broker URL as users gave it (for errors).
    pub(crate) url: String,
    pub(crate) timeout: Duration,
    /// What should listen there, for the error when nothing does.
    pub(crate) listener: &'static str,
}

impl Target {
    fn address(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }

    fn timed_out(&self) -> TransportError {
        TransportError::Timeout {
            url: format!("{} (port {})", self.url, self.port),
            waited_ms: self.timeout.as_millis() as u64,
            doing: "connecting the ZeroMQ publisher",
        }
    }

    fn refused(&self, client_id: &str, reason: String) -> TransportError {
        TransportError::Connect {
            url: self.url.clone(),
            client_id: client_id.to_string(),
            source: reason.into(),
        }
    }
}

/// State the publishing task shares with its handle.
struct Shared {
    connected: AtomicBool,
    disconnections: AtomicU64,
    /// How many subscriptions the peer holds right now.
    subscriptions: watch::Sender<usize>,
}

/// One message, framed, waiting for the task; `topic` locates the topic bytes.
struct Queued {
    bytes: Vec<u8>,
    topic: Range<usize>,
}

/// A ZeroMQ connection that publishes (one per emulated device).
pub struct ZmqPublisher {
    tx: Option<mpsc::Sender<Queued>>,
    shared: Arc<Shared>,
    task: Option<JoinHandle<Result<(), String>>>,
    url: String,
    headers: Vec<u8>,
}

/// Connects, then waits (briefly) until the peer's subscriptions arrived.
pub(crate) async fn connect(
    target: Arc<Target>,
    client_id: &str,
    queue_capacity: usize,
) -> Result<ZmqPublisher, TransportError> {
    let conn = open(&target, client_id).await?;
    let (tx, rx) = mpsc::channel(queue_capacity.max(1));
    let (subscriptions, mut seen) = watch::channel(0usize);
    let shared = Arc::new(Shared {
        connected: AtomicBool::new(true),
        disconnections: AtomicU64::new(0),
        subscriptions,
    });
    let url = target.url.clone();
    let wait = SUBSCRIPTION_WAIT.min(target.timeout);
    let task = tokio::spawn(run(conn, rx, shared.clone(), target));
    // The slow joiner: a PUB drops what no subscription matches, so wait for them.
    let _ = tokio::time::timeout(wait, seen.wait_for(|n| *n > 0)).await;
    Ok(ZmqPublisher {
        tx: Some(tx),
        shared,
        task: Some(task),
        url,
        headers: Vec::new(),
    })
}

impl Publisher for ZmqPublisher {
    async fn publish(&mut self, m: Outgoing<'_>) -> Result<(), TransportError> {
        if !self.shared.connected.load(Ordering::Relaxed) {
            return Err(TransportError::Disconnected {
                url: self.url.clone(),
                source: "the connection is down; reconnecting".into(),
            });
        }
        self.headers.clear();
        encode_headers(m.headers, &mut self.headers)
            .map_err(|e| TransportError::Publish(e.into()))?;
        let mut bytes =
            Vec::with_capacity(m.topic.len() + self.headers.len() + m.payload.len() + 24);
        put_frame(&mut bytes, m.topic.as_bytes(), true, false);
        let topic = bytes.len() - m.topic.len()..bytes.len();
        put_frame(&mut bytes, &self.headers, true, false);
        put_frame(&mut bytes, m.payload, false, false);
        let Some(tx) = &self.tx else {
            return Err(TransportError::Publish("the publisher is closed".into()));
        };
        tx.send(Queued { bytes, topic })
            .await
            .map_err(|_| TransportError::Publish("the connection task ended".into()))
    }

    async fn close(mut self) -> Result<(), TransportError> {
        drop(self.tx.take());
        let Some(task) = self.task.take() else {
            return Ok(());
        };
        match tokio::time::timeout(CLOSE_TIMEOUT, task).await {
            Ok(Ok(Ok(()))) => Ok(()),
            Ok(Ok(Err(e))) => Err(TransportError::Publish(e.into())),
            Ok(Err(e)) => Err(TransportError::Publish(e.into())),
            Err(_) => Err(TransportError::Publish(
                "writing the last messages timed out".into(),
            )),
        }
    }

    fn disconnections(&self) -> u64 {
        self.shared.disconnections.load(Ordering::Relaxed)
    }
}

/// One open connection.
struct Conn {
    reader: OwnedReadHalf,
    writer: OwnedWriteHalf,
    inbuf: BytesMut,
    subscriptions: Subscriptions,
}

/// Opens a TCP connection and runs the ZMTP handshake, within the connect timeout.
async fn open(target: &Target, client_id: &str) -> Result<Conn, TransportError> {
    let attempt = tokio::time::timeout(target.timeout, async {
        let stream = TcpStream::connect((target.host.as_str(), target.port)).await?;
        stream.set_nodelay(true)?;
        handshake(stream, "PUB", &["SUB", "XSUB"]).await
    })
    .await;
    match attempt {
        Ok(Ok(h)) => Ok(Conn {
            reader: h.reader,
            writer: h.writer,
            inbuf: h.inbuf,
            subscriptions: Subscriptions::default(),
        }),
        Ok(Err(HandshakeError::Io(e))) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
            Err(target.refused(
                client_id,
                format!(
                    "nothing listens at {} ({e}); start {} first",
                    target.address(),
                    target.listener
                ),
            ))
        }
        Ok(Err(HandshakeError::Io(e))) => Err(target.refused(
            client_id,
            format!("connecting to {}: {e}", target.address()),
        )),
        Ok(Err(HandshakeError::Protocol(reason))) => Err(target.refused(
            client_id,
            format!(
                "ZeroMQ handshake with {}: {reason} (publishers connect to the proxy's \
                 publisher port, or to a subscriber bound in peer mode)",
                target.address()
            ),
        )),
        Err(_) => Err(target.timed_out()),
    }
}

impl Conn {
    /// Applies every complete subscription message received so far.
    fn absorb(&mut self, shared: &Shared) -> Result<(), String> {
        if self.subscriptions.absorb(&mut self.inbuf)? {
            shared.subscriptions.send_replace(self.subscriptions.len());
        }
        Ok(())
    }

    /// Appends `q` to `out` when a subscription matches its topic.
    fn queue(&self, out: &mut Vec<u8>, q: &Queued) {
        if self.subscriptions.matches(&q.bytes[q.topic.clone()]) {
            out.extend_from_slice(&q.bytes);
        }
    }

    /// Sends FIN after everything written, then waits (briefly) for the peer to have read
    /// it all and closed its side.
    async fn close(mut self) -> Result<(), String> {
        self.writer
            .shutdown()
            .await
            .map_err(|e| format!("closing the connection: {e}"))?;
        let mut sink = [0u8; 1024];
        let _ = tokio::time::timeout(CLOSE_LINGER, async {
            while let Ok(n) = self.reader.read(&mut sink).await {
                if n == 0 {
                    break;
                }
            }
        })
        .await;
        Ok(())
    }
}

/// How a connection ended.
enum Ended {
    /// The handle was closed: flush and close.
    Closed,
    /// The connection broke.
    Lost(String),
}

/// The publishing task: serve the connection, re-open it when lost, until closed.
async fn run(
    mut conn: Conn,
    mut rx: mpsc::Receiver<Queued>,
    shared: Arc<Shared>,
    target: Arc<Target>,
) -> Result<(), String> {
    loop {
        match serve(&mut conn, &mut rx, &shared).await {
            Ended::Closed => return conn.close().await,
            Ended::Lost(reason) => {
                shared.connected.store(false, Ordering::Relaxed);
                shared.disconnections.fetch_add(1, Ordering::Relaxed);
                shared.subscriptions.send_replace(0);
                tracing::debug!(url = %target.url, "ZeroMQ publisher connection lost: {reason}");
            }
        }
        match reconnect(&target, &mut rx).await {
            Some(c) => {
                conn = c;
                shared.connected.store(true, Ordering::Relaxed);
            }
            None => return Ok(()),
        }
    }
}

/// Writes queued messages and reads subscriptions until the handle closes or the
/// connection breaks.
async fn serve(conn: &mut Conn, rx: &mut mpsc::Receiver<Queued>, shared: &Shared) -> Ended {
    if let Err(e) = conn.absorb(shared) {
        return Ended::Lost(e);
    }
    let mut out = Vec::with_capacity(BATCH_BYTES);
    loop {
        tokio::select! {
            biased;
            read = conn.reader.read_buf(&mut conn.inbuf) => match read {
                Ok(0) => return Ended::Lost("the peer closed the connection".into()),
                Ok(_) => {
                    if let Err(e) = conn.absorb(shared) {
                        return Ended::Lost(e);
                    }
                }
                Err(e) => return Ended::Lost(e.to_string()),
            },
            next = rx.recv() => {
                let Some(first) = next else {
                    return Ended::Closed;
                };
                out.clear();
                conn.queue(&mut out, &first);
                while out.len() < BATCH_BYTES {
                    match rx.try_recv() {
                        Ok(q) => conn.queue(&mut out, &q),
                        Err(_) => break,
                    }
                }
                if !out.is_empty()
                    && let Err(e) = conn.writer.write_all(&out).await
                {
                    return Ended::Lost(e.to_string());
                }
            }
        }
    }
}

/// Re-opens the connection with backoff, dropping what was queued meanwhile; `None` once
/// the handle is closed.
async fn reconnect(target: &Target, rx: &mut mpsc::Receiver<Queued>) -> Option<Conn> {
    let mut failures = 0u32;
    loop {
        let until = tokio::time::Instant::now() + reconnect_delay(failures);
        loop {
            tokio::select! {
                biased;
                next = rx.recv() => {
                    next.as_ref()?;
                }
                _ = tokio::time::sleep_until(until) => break,
            }
        }
        match open(target, "reconnect").await {
            Ok(conn) => return Some(conn),
            Err(_) => failures = failures.saturating_add(1),
        }
    }
}
