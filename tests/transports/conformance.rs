//! The transport conformance suite: the same checks, on a real server, for every broker
//! family. A broker module implements [`Broker`] (how to get a server and a transport on
//! it) and invokes `conformance_suite!(ItsBroker)`, which expands to one test per check.
//!
//! What every transport must do, whatever the broker:
//! - connect, publish N messages from several publishers, receive exactly N on a
//!   wildcard filter, each with its topic, body and headers intact and a receive time
//!   after its send time;
//! - keep each publisher's order where the broker promises it;
//! - deliver only what the filters match;
//! - deliver everything queued when a publisher closes right after publishing, and close
//!   a subscriber cleanly;
//! - lose nothing when a receive is abandoned half way (the collector and the echo wait
//!   for a message in a `select!` with timers, so `recv` must be cancel-safe);
//! - fail fast with a connection error that names the address when nobody listens;
//! - report refused credentials as an authentication error, where the broker has them.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use iotload_core::stamp::now_us;
use iotload_core::transport::{
    ClientIdentity, Incoming, Outgoing, Publisher, Subscriber, Transport, TransportError,
};

/// How long a check waits for the messages it expects before failing.
pub(crate) const RECEIVE_TIMEOUT: Duration = Duration::from_secs(30);

/// A broker family under test: a private server (or a private corner of a shared one)
/// and transports on it.
pub(crate) trait Broker: Send + Sync + Sized + 'static {
    /// The transport under test.
    type T: Transport;
    /// Whether one publisher's messages arrive in publish order.
    const ORDERED: bool = true;
    /// Whether headers travel with the message (the `header` stamp carrier).
    const HEADERS: bool = true;

    /// Whether a server can be had on this machine; `false` skips the checks that need
    /// one (only outside CI: with `CI=true` an implementation panics instead).
    fn available() -> bool {
        true
    }
    /// Starts (or reaches) a server for one test; dropped at the end of the test.
    fn start() -> impl Future<Output = Self> + Send;
    /// A transport with valid credentials on that server.
    fn transport(&self) -> Arc<Self::T>;
    /// A transport aimed at `127.0.0.1:port`, where nothing listens, with a short
    /// connect timeout.
    fn unreachable(port: u16) -> Self::T;
    /// A transport whose credentials the server refuses; `None` when the broker has no
    /// authentication to test.
    fn with_wrong_password(&self) -> Option<Self::T>;
    /// Turns a test's topic prefix into one this broker accepts, if it restricts names.
    fn prefix(name: &str) -> String {
        iotload_testkit::unique_topic(&format!("conf/{name}"))
    }
}

/// Expands to one `#[tokio::test]` per conformance check for `$broker`.
macro_rules! conformance_suite {
    ($broker:ty) => {
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn conformance_round_trip_is_intact_and_counted() {
            $crate::conformance::round_trip::<$broker>().await;
        }

        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn conformance_filters_deliver_only_what_they_match() {
            $crate::conformance::filters_match::<$broker>().await;
        }

        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn conformance_close_delivers_everything_queued() {
            $crate::conformance::close_flushes::<$broker>().await;
        }

        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn conformance_abandoned_receives_lose_nothing() {
            $crate::conformance::abandoned_receives::<$broker>().await;
        }

        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn conformance_unreachable_broker_is_a_clear_connect_error() {
            $crate::conformance::unreachable::<$broker>().await;
        }

        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn conformance_wrong_password_is_an_auth_error() {
            $crate::conformance::wrong_password::<$broker>().await;
        }
    };
}

fn identity(name: &str) -> ClientIdentity {
    ClientIdentity {
        client_id: format!("conf-{name}-{}", std::process::id()),
        ..ClientIdentity::default()
    }
}

/// One message as a publisher sent it.
#[derive(Debug, Clone)]
struct Sent {
    topic: String,
    payload: Vec<u8>,
    headers: Vec<(String, String)>,
    sent_us: u64,
}

fn message(topic: &str, device: u32, seq: u32, headers: bool) -> Sent {
    let sent_us = now_us();
    let payload = format!(r#"{{"device":{device},"seq":{seq},"ts":{sent_us}}}"#).into_bytes();
    let headers = if headers {
        vec![
            ("iotload-ts".to_string(), sent_us.to_string()),
            ("iotload-seq".to_string(), seq.to_string()),
        ]
    } else {
        Vec::new()
    };
    Sent {
        topic: topic.to_string(),
        payload,
        headers,
        sent_us,
    }
}

async fn publish(publisher: &mut impl Publisher, m: &Sent) {
    publisher
        .publish(Outgoing {
            topic: &m.topic,
            payload: &m.payload,
            headers: &m.headers,
            record_time_us: None,
        })
        .await
        .expect("publish");
}

/// Receives exactly `n` messages (or fails after [`RECEIVE_TIMEOUT`]), then makes sure
/// no further message arrives within `quiet`.
async fn receive(sub: &mut impl Subscriber, n: usize, quiet: Duration) -> Vec<Incoming> {
    let mut got = Vec::with_capacity(n);
    let deadline = tokio::time::Instant::now() + RECEIVE_TIMEOUT;
    while got.len() < n {
        match tokio::time::timeout_at(deadline, sub.recv()).await {
            Ok(Ok(m)) => got.push(m),
            Ok(Err(e)) => panic!("receive failed after {} of {n}: {e:#}", got.len()),
            Err(_) => panic!(
                "only {} of {n} messages arrived within {RECEIVE_TIMEOUT:?}",
                got.len()
            ),
        }
    }
    if let Ok(Ok(extra)) = tokio::time::timeout(quiet, sub.recv()).await {
        panic!("an unexpected extra message arrived: {extra:?}");
    }
    got
}

fn seq_of(m: &Incoming) -> (u32, u32) {
    let v: serde_json::Value = serde_json::from_slice(&m.payload)
        .unwrap_or_else(|e| panic!("body is not the JSON sent ({e}): {:?}", m.payload));
    let field = |k: &str| {
        v.get(k)
            .and_then(serde_json::Value::as_u64)
            .unwrap_or_else(|| panic!("no `{k}` in {v}")) as u32
    };
    (field("device"), field("seq"))
}

/// 3 publishers × 100 messages through one wildcard subscriber.
pub(crate) async fn round_trip<B: Broker>() {
    if !B::available() {
        return;
    }
    const DEVICES: u32 = 3;
    const PER_DEVICE: u32 = 100;
    let broker = B::start().await;
    let t = broker.transport();
    let prefix = B::prefix("rt");
    let mut sub = t
        .subscriber(&identity("rt-sub"), &[format!("{prefix}/+/t")])
        .await
        .expect("subscribe");
    let mut sent = HashMap::new();
    let mut pubs = Vec::new();
    for d in 0..DEVICES {
        pubs.push(
            t.publisher(&identity(&format!("rt-pub{d}")))
                .await
                .expect("connect a publisher"),
        );
    }
    for seq in 0..PER_DEVICE {
        for (d, p) in pubs.iter_mut().enumerate() {
            let d = d as u32;
            let m = message(&format!("{prefix}/{d}/t"), d, seq, B::HEADERS);
            publish(p, &m).await;
            sent.insert((d, seq), m);
        }
    }
    let got = receive(
        &mut sub,
        (DEVICES * PER_DEVICE) as usize,
        Duration::from_millis(300),
    )
    .await;

    let mut last: HashMap<u32, u32> = HashMap::new();
    let mut seen = std::collections::HashSet::new();
    for m in &got {
        let key = seq_of(m);
        assert!(seen.insert(key), "duplicate {key:?}");
        let s = sent
            .get(&key)
            .unwrap_or_else(|| panic!("never sent: {key:?}"));
        assert_eq!(m.topic, s.topic, "topic of {key:?}");
        assert_eq!(&m.payload[..], &s.payload[..], "body of {key:?}");
        for h in &s.headers {
            assert!(
                m.headers.contains(h),
                "header {h:?} of {key:?} lost: {:?}",
                m.headers
            );
        }
        assert!(
            m.received_us >= s.sent_us,
            "received ({}) before sent ({}) for {key:?}",
            m.received_us,
            s.sent_us
        );
        if B::ORDERED
            && let Some(prev) = last.insert(key.0, key.1)
        {
            assert!(
                prev < key.1,
                "device {} out of order: {prev} then {}",
                key.0,
                key.1
            );
        }
    }
    assert_eq!(seen.len(), sent.len());
    for p in pubs {
        p.close().await.expect("publisher closes cleanly");
    }
    sub.close().await.expect("subscriber closes cleanly");
}

/// A filter on `.../+/a` sees `1/a` and `2/a` but neither `1/b` nor a deeper `1/a/x`.
pub(crate) async fn filters_match<B: Broker>() {
    if !B::available() {
        return;
    }
    let broker = B::start().await;
    let t = broker.transport();
    let prefix = B::prefix("flt");
    let mut sub = t
        .subscriber(&identity("flt-sub"), &[format!("{prefix}/+/a")])
        .await
        .expect("subscribe");
    let mut p = t.publisher(&identity("flt-pub")).await.expect("connect");
    let wanted = [
        message(&format!("{prefix}/1/a"), 1, 0, false),
        message(&format!("{prefix}/2/a"), 2, 0, false),
    ];
    let unwanted = [
        message(&format!("{prefix}/1/b"), 1, 1, false),
        message(&format!("{prefix}/1/a/x"), 1, 2, false),
        message(&format!("{prefix}x/1/a"), 1, 3, false),
    ];
    for m in unwanted.iter().chain(&wanted) {
        publish(&mut p, m).await;
    }
    let got = receive(&mut sub, wanted.len(), Duration::from_millis(500)).await;
    let mut topics: Vec<_> = got.iter().map(|m| m.topic.clone()).collect();
    topics.sort();
    assert_eq!(
        topics,
        vec![wanted[0].topic.clone(), wanted[1].topic.clone()]
    );
    p.close().await.expect("publisher closes cleanly");
    sub.close().await.expect("subscriber closes cleanly");
}

/// 500 messages published back to back, then `close` at once: all 500 arrive.
pub(crate) async fn close_flushes<B: Broker>() {
    if !B::available() {
        return;
    }
    const N: u32 = 500;
    let broker = B::start().await;
    let t = broker.transport();
    let prefix = B::prefix("cls");
    let mut sub = t
        .subscriber(&identity("cls-sub"), &[format!("{prefix}/+/t")])
        .await
        .expect("subscribe");
    let mut p = t.publisher(&identity("cls-pub")).await.expect("connect");
    for seq in 0..N {
        publish(
            &mut p,
            &message(&format!("{prefix}/7/t"), 7, seq, B::HEADERS),
        )
        .await;
    }
    p.close().await.expect("close sends what is queued");
    let got = receive(&mut sub, N as usize, Duration::from_millis(200)).await;
    assert_eq!(got.len(), N as usize);
    sub.close().await.expect("subscriber closes cleanly");
}

/// 300 messages received through receives that are polled once and dropped, or cut
/// short by a 1 ms timeout, as a `select!` drops them when another branch wins: every
/// message still arrives exactly once.
pub(crate) async fn abandoned_receives<B: Broker>() {
    if !B::available() {
        return;
    }
    const N: u32 = 300;
    let broker = B::start().await;
    let t = broker.transport();
    let prefix = B::prefix("abn");
    let mut sub = t
        .subscriber(&identity("abn-sub"), &[format!("{prefix}/+/t")])
        .await
        .expect("subscribe");
    let mut p = t.publisher(&identity("abn-pub")).await.expect("connect");
    for seq in 0..N {
        publish(
            &mut p,
            &message(&format!("{prefix}/3/t"), 3, seq, B::HEADERS),
        )
        .await;
    }
    p.close().await.expect("close sends what is queued");
    let mut got = Vec::with_capacity(N as usize);
    let (mut abandoned, mut cut) = (0u32, 0u32);
    // Once messages flow, well under a redelivery timeout (JetStream's 30 s ack wait): a
    // message only redelivered after an abandoned receive dropped it counts as lost here.
    // Until the first one arrives, the usual receive timeout: a pattern subscription
    // (Pulsar) reaches a new topic only at its next topic refresh and once its consumer
    // is created, which can take seconds on a loaded CI machine.
    const FLOWING: Duration = Duration::from_secs(10);
    let mut deadline = tokio::time::Instant::now() + RECEIVE_TIMEOUT;
    let mut flowing = false;
    while got.len() < N as usize {
        if !flowing && !got.is_empty() {
            flowing = true;
            deadline = deadline.min(tokio::time::Instant::now() + FLOWING);
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "only {} of {N} messages arrived through abandoned receives \
             ({abandoned} polled once and dropped, {cut} cut short)",
            got.len()
        );
        let once = {
            let mut receive = std::pin::pin!(sub.recv());
            std::future::poll_fn(|cx| Poll::Ready(receive.as_mut().poll(cx))).await
        };
        match once {
            Poll::Ready(m) => {
                got.push(m.expect("receive"));
                continue;
            }
            Poll::Pending => abandoned += 1,
        }
        match tokio::time::timeout(Duration::from_millis(1), sub.recv()).await {
            Ok(m) => got.push(m.expect("receive")),
            Err(_) => cut += 1,
        }
    }
    if let Ok(Ok(extra)) = tokio::time::timeout(Duration::from_millis(200), sub.recv()).await {
        panic!("an unexpected extra message arrived: {extra:?}");
    }
    let mut seqs: Vec<u32> = got.iter().map(|m| seq_of(m).1).collect();
    seqs.sort_unstable();
    seqs.dedup();
    assert_eq!(seqs.len(), N as usize, "every message exactly once");
    eprintln!("{abandoned} receives polled once and dropped, {cut} cut short");
    sub.close().await.expect("subscriber closes cleanly");
}

/// Nothing listens: both halves fail within the connect timeout, naming the address.
pub(crate) async fn unreachable<B: Broker>() {
    let port = iotload_testkit::free_port();
    let t = B::unreachable(port);
    let started = std::time::Instant::now();
    let check = |e: TransportError| {
        assert!(e.is_unreachable(), "not a connection error: {e:?}");
        let text = e.to_string();
        assert!(
            text.contains(&port.to_string()),
            "the error must name the address: {text}"
        );
    };
    match t.publisher(&identity("unr-pub")).await {
        Ok(_) => panic!("a publisher connected to a port nobody listens on"),
        Err(e) => check(e),
    }
    match t
        .subscriber(&identity("unr-sub"), &["x/+/t".to_string()])
        .await
    {
        Ok(_) => panic!("a subscriber connected to a port nobody listens on"),
        Err(e) => check(e),
    }
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "took {:?} to give up",
        started.elapsed()
    );
}

/// Refused credentials surface as [`TransportError::Auth`].
pub(crate) async fn wrong_password<B: Broker>() {
    if !B::available() {
        return;
    }
    let broker = B::start().await;
    let Some(t) = broker.with_wrong_password() else {
        return;
    };
    match t.publisher(&identity("auth-pub")).await {
        Ok(_) => panic!("the broker accepted a wrong password"),
        Err(TransportError::Auth { .. }) => {}
        Err(e) => panic!("expected an authentication error, got {e:?}"),
    }
}
