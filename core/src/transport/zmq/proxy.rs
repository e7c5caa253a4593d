//! The XSUB/XPUB forwarder behind `iotload zmq-proxy`: ZeroMQ has no broker, so this
//! stands in for one. Publishers connect their PUB sockets to the XSUB side, subscribers
//! their SUB sockets to the XPUB side, and every message goes from the one to the other.
//!
//! The XSUB side is the zeromq crate's. It subscribes to everything, once, instead of
//! forwarding each subscriber's subscriptions upstream: the crate keeps upstream
//! subscriptions in a set without reference counts, so one subscriber cancelling a prefix
//! would cut off every other subscriber of that prefix. Publishers therefore send
//! everything to the proxy, which filters per subscriber (as ZeroMQ does), and a
//! publisher knows it is ready as soon as the proxy's one subscription arrives. The cost
//! is bandwidth from publishers whose topics nobody wants.
//!
//! The XPUB side is iotload's own ZMTP 3.0 (see `wire.rs`): one task per subscriber with a
//! bounded queue ([`SUBSCRIBER_QUEUE`] messages) written in batches. The crate's XPUB
//! socket writes and flushes every message on its own, which capped the proxy at a tenth
//! of libzmq's rate, and it keeps its subscribers' connections open after it is dropped,
//! which a proxy stopped and restarted in one process cannot have. The forwarder waits
//! for a subscriber whose queue is full rather than dropping messages, which slows every
//! publisher down (visible as their send lag) instead of losing data.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use zeromq::{Socket, SocketRecv, XSubSocket, ZmqMessage};

use super::wire::{Subscriptions, handshake, put_frame};

/// Messages queued per subscriber before the forwarder waits for it.
const SUBSCRIBER_QUEUE: usize = 4096;

/// Bytes written to a subscriber per system call at most.
const BATCH_BYTES: usize = 64 * 1024;

/// How long a connecting subscriber has for the ZMTP handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Why the proxy could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ProxyError {
    /// The address cannot be bound (in use, not local, malformed).
    #[error("cannot bind the {side} side of the proxy to {addr}")]
    Bind {
        /// `publisher` (XSUB) or `subscriber` (XPUB).
        side: &'static str,
        /// The address as given.
        addr: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The ZeroMQ socket of the publisher side refused the listener or the subscription.
    #[error("cannot start the publisher side of the proxy")]
    Socket(#[source] zeromq::ZmqError),
}

/// A running XSUB/XPUB forwarder; stops when dropped or on [`ZmqProxy::stop`].
pub struct ZmqProxy {
    publishers: SocketAddr,
    subscribers: SocketAddr,
    forwarded: Arc<AtomicU64>,
    stop: CancellationToken,
    tasks: TaskTracker,
    forwarder: Option<JoinHandle<()>>,
}

fn bind(side: &'static str, addr: &str) -> Result<(std::net::TcpListener, SocketAddr), ProxyError> {
    let failed = |source| ProxyError::Bind {
        side,
        addr: addr.to_string(),
        source,
    };
    let listener = std::net::TcpListener::bind(addr).map_err(failed)?;
    let local = listener.local_addr().map_err(failed)?;
    listener.set_nonblocking(true).map_err(failed)?;
    Ok((listener, local))
}

impl ZmqProxy {
    /// Binds the publisher side (XSUB) to `publishers` and the subscriber side (XPUB) to
    /// `subscribers` (`host:port`; port 0 picks a free one), then forwards in tasks.
    pub async fn start(publishers: &str, subscribers: &str) -> Result<Self, ProxyError> {
        let (pub_listener, pub_addr) = bind("publisher", publishers)?;
        let (sub_listener, sub_addr) = bind("subscriber", subscribers)?;
        let sub_listener =
            TcpListener::from_std(sub_listener).map_err(|source| ProxyError::Bind {
                side: "subscriber",
                addr: subscribers.to_string(),
                source,
            })?;
        let mut xsub = XSubSocket::new();
        // Remembered, and sent to every publisher as it connects.
        xsub.subscribe("").await.map_err(ProxyError::Socket)?;
        xsub.bind_listener(pub_listener)
            .await
            .map_err(ProxyError::Socket)?;
        let stop = CancellationToken::new();
        let tasks = TaskTracker::new();
        let forwarded = Arc::new(AtomicU64::new(0));
        let (joined, joins) = mpsc::channel(64);
        tasks.spawn(accept(sub_listener, joined, stop.clone(), tasks.clone()));
        let forwarder = tokio::spawn(forward(xsub, joins, stop.clone(), forwarded.clone()));
        Ok(Self {
            publishers: pub_addr,
            subscribers: sub_addr,
            forwarded,
            stop,
            tasks,
            forwarder: Some(forwarder),
        })
    }

    /// Where publishers connect (the XSUB side).
    pub fn publisher_addr(&self) -> SocketAddr {
        self.publishers
    }

    /// Where subscribers connect (the XPUB side).
    pub fn subscriber_addr(&self) -> SocketAddr {
        self.subscribers
    }

    /// Messages received from publishers so far (forwarded to every matching subscriber).
    pub fn forwarded(&self) -> u64 {
        self.forwarded.load(Ordering::Relaxed)
    }

    /// Stops forwarding, closes every connection and returns how many messages went
    /// through.
    pub async fn stop(mut self) -> u64 {
        self.stop.cancel();
        if let Some(forwarder) = self.forwarder.take() {
            let _ = forwarder.await;
        }
        self.tasks.close();
        self.tasks.wait().await;
        self.forwarded()
    }
}

impl Drop for ZmqProxy {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// A subscriber as the forwarder sees it.
struct Downstream {
    subscriptions: Arc<Mutex<Subscriptions>>,
    queue: mpsc::Sender<Bytes>,
}

/// Accepts subscribers; each gets its own task once its handshake is done.
async fn accept(
    listener: TcpListener,
    joined: mpsc::Sender<Downstream>,
    stop: CancellationToken,
    tasks: TaskTracker,
) {
    loop {
        let accepted = tokio::select! {
            _ = stop.cancelled() => return,
            accepted = listener.accept() => accepted,
        };
        match accepted {
            Ok((stream, peer)) => {
                tasks.spawn(serve_subscriber(stream, peer, joined.clone(), stop.clone()));
            }
            Err(e) => {
                // Out of file descriptors and the like: let some connections end first.
                tracing::warn!("zmq-proxy: accepting a subscriber failed: {e}");
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tokio::time::sleep(Duration::from_millis(100)) => {}
                }
            }
        }
    }
}

/// One subscriber: handshake, then apply its subscriptions and write what is queued.
async fn serve_subscriber(
    stream: TcpStream,
    peer: SocketAddr,
    joined: mpsc::Sender<Downstream>,
    stop: CancellationToken,
) {
    let _ = stream.set_nodelay(true);
    let mut conn = match tokio::time::timeout(
        HANDSHAKE_TIMEOUT,
        handshake(stream, "XPUB", &["SUB", "XSUB"]),
    )
    .await
    {
        Ok(Ok(conn)) => conn,
        Ok(Err(e)) => {
            tracing::debug!("zmq-proxy: subscriber {peer} failed its handshake: {e:?}");
            return;
        }
        Err(_) => return,
    };
    let subscriptions = Arc::new(Mutex::new(Subscriptions::default()));
    let (queue, mut queued) = mpsc::channel::<Bytes>(SUBSCRIBER_QUEUE);
    let downstream = Downstream {
        subscriptions: subscriptions.clone(),
        queue,
    };
    if joined.send(downstream).await.is_err() {
        return;
    }
    let absorb = |buf: &mut bytes::BytesMut| match subscriptions.lock() {
        Ok(mut s) => s.absorb(buf).map(|_| ()),
        Err(_) => Err("the subscription table is poisoned".to_string()),
    };
    if let Err(e) = absorb(&mut conn.inbuf) {
        tracing::debug!("zmq-proxy: subscriber {peer}: {e}");
        return;
    }
    let mut out = Vec::with_capacity(BATCH_BYTES);
    loop {
        tokio::select! {
            biased;
            _ = stop.cancelled() => return,
            read = conn.reader.read_buf(&mut conn.inbuf) => match read {
                Ok(0) | Err(_) => return,
                Ok(_) => {
                    if let Err(e) = absorb(&mut conn.inbuf) {
                        tracing::debug!("zmq-proxy: subscriber {peer}: {e}");
                        return;
                    }
                }
            },
            next = queued.recv() => {
                let Some(first) = next else { return };
                out.clear();
                out.extend_from_slice(&first);
                while out.len() < BATCH_BYTES {
                    match queued.try_recv() {
                        Ok(more) => out.extend_from_slice(&more),
                        Err(_) => break,
                    }
                }
                if conn.writer.write_all(&out).await.is_err() {
                    return;
                }
            }
        }
    }
}

/// The message framed once for every subscriber.
fn frame(message: &ZmqMessage) -> Bytes {
    let size: usize = message.iter().map(|f| f.len() + 9).sum();
    let mut out = Vec::with_capacity(size);
    let last = message.len().saturating_sub(1);
    for (i, body) in message.iter().enumerate() {
        put_frame(&mut out, body, i < last, false);
    }
    Bytes::from(out)
}

/// Messages from publishers go to every subscriber with a matching subscription.
async fn forward(
    mut xsub: XSubSocket,
    mut joins: mpsc::Receiver<Downstream>,
    stop: CancellationToken,
    forwarded: Arc<AtomicU64>,
) {
    let mut downstream: Vec<Downstream> = Vec::new();
    loop {
        let message = tokio::select! {
            _ = stop.cancelled() => break,
            Some(joined) = joins.recv() => {
                downstream.retain(|d| !d.queue.is_closed());
                downstream.push(joined);
                continue;
            }
            message = xsub.recv() => message,
        };
        let message = match message {
            Ok(message) => message,
            Err(e) => {
                tracing::debug!("zmq-proxy: a publisher's connection failed: {e}");
                continue;
            }
        };
        while let Ok(joined) = joins.try_recv() {
            downstream.push(joined);
        }
        forwarded.fetch_add(1, Ordering::Relaxed);
        let Some(topic) = message.get(0) else {
            continue;
        };
        let mut framed = None;
        let mut gone = false;
        for d in &downstream {
            let wanted = d.subscriptions.lock().is_ok_and(|s| s.matches(topic));
            if wanted {
                let bytes = framed.get_or_insert_with(|| frame(&message)).clone();
                gone |= d.queue.send(bytes).await.is_err();
            }
        }
        if gone {
            downstream.retain(|d| !d.queue.is_closed());
        }
    }
    // Closes every publisher connection (the XSUB socket clears its peers).
    drop(xsub.close().await);
}
