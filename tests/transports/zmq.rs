//! ZeroMQ (zeromq crate, iotload's ZMTP publisher) through an in-process `ZmqProxy` on
//! free loopback ports, and in peer mode with no proxy at all.

use std::sync::Arc;
use std::time::Duration;

use iotload_core::plan::BrokerUrl;
use iotload_core::transport::zmq::{ZmqMode, ZmqProxy, ZmqSettings, ZmqTransport};
use iotload_core::transport::{ClientIdentity, Transport, TransportError};

use crate::conformance::Broker;

fn transport(port: u16, mode: ZmqMode) -> ZmqTransport {
    let settings = ZmqSettings {
        mode,
        connect_timeout: Duration::from_secs(3),
        ..ZmqSettings::default()
    };
    let url = BrokerUrl::parse(&format!("zmq+tcp://127.0.0.1:{port}")).expect("url");
    ZmqTransport::new(url, settings).expect("transport")
}

/// A proxy on two consecutive free ports (the URL form needs PORT and PORT + 1).
pub(crate) async fn start_proxy() -> ZmqProxy {
    let mut last = None;
    for _ in 0..20 {
        let port = iotload_testkit::free_port();
        if port == u16::MAX {
            continue;
        }
        let pubs = format!("127.0.0.1:{port}");
        let subs = format!("127.0.0.1:{}", port + 1);
        match ZmqProxy::start(&pubs, &subs).await {
            Ok(proxy) => return proxy,
            Err(e) => last = Some(e),
        }
    }
    panic!("no two consecutive free ports for the proxy: {last:?}");
}

/// An in-process `iotload zmq-proxy`.
pub(crate) struct Proxied {
    proxy: ZmqProxy,
}

impl Broker for Proxied {
    type T = ZmqTransport;

    async fn start() -> Self {
        Self {
            proxy: start_proxy().await,
        }
    }

    fn transport(&self) -> Arc<ZmqTransport> {
        Arc::new(transport(
            self.proxy.publisher_addr().port(),
            ZmqMode::Proxy,
        ))
    }

    fn unreachable(port: u16) -> ZmqTransport {
        transport(port, ZmqMode::Proxy)
    }

    fn with_wrong_password(&self) -> Option<ZmqTransport> {
        // ZeroMQ here has no authentication (no CURVE or PLAIN in the zeromq crate).
        None
    }
}

conformance_suite!(Proxied);

/// No proxy: the subscriber binds a free port and publishers connect to it.
pub(crate) struct Peer {
    port: u16,
}

impl Broker for Peer {
    type T = ZmqTransport;

    async fn start() -> Self {
        Self {
            port: iotload_testkit::free_port(),
        }
    }

    fn transport(&self) -> Arc<ZmqTransport> {
        Arc::new(transport(self.port, ZmqMode::Peer))
    }

    fn unreachable(port: u16) -> ZmqTransport {
        transport(port, ZmqMode::Peer)
    }

    fn with_wrong_password(&self) -> Option<ZmqTransport> {
        None
    }
}

/// The checks that fit peer mode: a subscriber binds, so it cannot be "unreachable".
mod peer {
    use super::Peer;
    use crate::conformance;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn peer_round_trip_is_intact_and_counted() {
        conformance::round_trip::<Peer>().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn peer_filters_deliver_only_what_they_match() {
        conformance::filters_match::<Peer>().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn peer_close_delivers_everything_queued() {
        conformance::close_flushes::<Peer>().await;
    }
}

fn id(name: &str) -> ClientIdentity {
    ClientIdentity {
        client_id: name.to_string(),
        ..ClientIdentity::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peer_mode_publisher_with_no_subscriber_is_a_clear_connect_error() {
    let port = iotload_testkit::free_port();
    match transport(port, ZmqMode::Peer).publisher(&id("p")).await {
        Ok(_) => panic!("a publisher connected to a port nobody listens on"),
        Err(e) => {
            assert!(e.is_unreachable(), "{e:?}");
            let text = anyhow_like(&e);
            assert!(text.contains(&port.to_string()), "{text}");
            assert!(text.contains("peer mode"), "{text}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_peer_mode_subscriber_on_one_port_is_refused_clearly() {
    let port = iotload_testkit::free_port();
    let t = transport(port, ZmqMode::Peer);
    let _first = t
        .subscriber(&id("s1"), &["a/#".into()])
        .await
        .expect("bind");
    match t.subscriber(&id("s2"), &["a/#".into()]).await {
        Ok(_) => panic!("two subscribers bound one port"),
        Err(e) => {
            let text = e.to_string();
            assert!(text.contains("--to-broker"), "{text}");
            assert!(text.contains(&port.to_string()), "{text}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_publisher_aimed_at_the_subscriber_port_says_so() {
    let proxy = start_proxy().await;
    let wrong = proxy.subscriber_addr().port();
    match transport(wrong, ZmqMode::Proxy).publisher(&id("p")).await {
        Ok(_) => panic!("a publisher accepted the proxy's XPUB side"),
        Err(e) => {
            let text = anyhow_like(&e);
            assert!(text.contains("XPUB"), "{text}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_published_after_subscribe_is_missed_by_a_late_subscriber() {
    use iotload_core::transport::{Outgoing, Publisher, Subscriber};
    let proxy = start_proxy().await;
    let t = transport(proxy.publisher_addr().port(), ZmqMode::Proxy);
    // The publisher is connected (and publishing) before the subscriber exists.
    let mut p = t.publisher(&id("early")).await.expect("publisher");
    let topic = iotload_testkit::unique_topic("late");
    for _ in 0..10 {
        p.publish(Outgoing {
            topic: &format!("{topic}/x"),
            payload: b"before",
            headers: &[],
            record_time_us: None,
        })
        .await
        .expect("publish");
    }
    let mut sub = t
        .subscriber(&id("late-sub"), &[format!("{topic}/#")])
        .await
        .expect("subscribe");
    p.publish(Outgoing {
        topic: &format!("{topic}/x"),
        payload: b"after",
        headers: &[],
        record_time_us: None,
    })
    .await
    .expect("publish");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let m = tokio::time::timeout_at(deadline, sub.recv())
            .await
            .expect("the message published after subscribe arrives")
            .expect("recv");
        if &m.payload[..] == b"after" {
            break;
        }
    }
    p.close().await.expect("close");
    sub.close().await.expect("close");
    assert!(proxy.stop().await >= 11);
}

/// The error with its sources, as the binary prints it.
fn anyhow_like(e: &TransportError) -> String {
    let mut text = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_proxy_is_reconnected_and_the_loss_counted() {
    use iotload_core::transport::{Outgoing, Publisher, Subscriber};
    let proxy = start_proxy().await;
    let (pubs, subs) = (proxy.publisher_addr(), proxy.subscriber_addr());
    let t = transport(pubs.port(), ZmqMode::Proxy);
    let topic = iotload_testkit::unique_topic("restart");
    let mut sub = t
        .subscriber(&id("restart-sub"), &[format!("{topic}/#")])
        .await
        .expect("subscribe");
    let mut p = t.publisher(&id("restart-pub")).await.expect("publisher");
    let message = Outgoing {
        topic: &topic,
        payload: b"x",
        headers: &[],
        record_time_us: None,
    };
    p.publish(message).await.expect("publish");
    sub.recv().await.expect("first message");
    proxy.stop().await;
    let _again = ZmqProxy::start(&pubs.to_string(), &subs.to_string())
        .await
        .expect("the proxy restarts on the same ports");
    // No event tells when both sides are back: publish until a message comes through.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        assert!(
            tokio::time::Instant::now() < deadline,
            "nothing arrived after the restart"
        );
        let _ = p.publish(message).await;
        if let Ok(Ok(m)) = tokio::time::timeout(Duration::from_millis(100), sub.recv()).await {
            assert_eq!(m.topic, topic);
            break;
        }
    }
    assert_eq!(p.disconnections(), 1);
    p.close().await.expect("close");
    sub.close().await.expect("close");
}
