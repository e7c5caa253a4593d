//! Kafka (rdkafka) against a private Apache Kafka broker per test (KRaft, one JVM from
//! the test kit). The refused-credentials check uses the broker's SASL listener with a
//! known user and a wrong password, by SCRAM-SHA-512 and by PLAIN.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use iotload_core::plan::BrokerUrl;
use iotload_core::stamp::now_us;
use iotload_core::transport::kafka::{KafkaSettings, KafkaTransport, SaslMechanism};
use iotload_core::transport::{
    ClientIdentity, Outgoing, Publisher, Subscriber, Transport, TransportError,
};
use iotload_testkit::{KAFKA_PASSWORD, KAFKA_USER, KafkaBroker};

use crate::conformance::{Broker, RECEIVE_TIMEOUT};

/// A private broker (with a SASL listener for the credentials check). With `GROUP`,
/// every subscriber joins one named consumer group.
pub(crate) struct Kafka<const GROUP: bool> {
    broker: KafkaBroker,
}

fn settings(group: Option<&str>) -> KafkaSettings {
    KafkaSettings {
        connect_timeout: Duration::from_secs(3),
        group: group.map(str::to_string),
        ..KafkaSettings::default()
    }
}

fn transport(url: &str, settings: KafkaSettings) -> KafkaTransport {
    KafkaTransport::new(BrokerUrl::parse(url).expect("url"), settings).expect("transport")
}

fn group<const GROUP: bool>() -> Option<&'static str> {
    GROUP.then_some("iotload-conformance")
}

impl<const GROUP: bool> Broker for Kafka<GROUP> {
    type T = KafkaTransport;

    fn available() -> bool {
        iotload_testkit::kafka_available()
    }

    async fn start() -> Self {
        let broker = KafkaBroker::start().await.expect("Apache Kafka starts");
        Self { broker }
    }

    fn transport(&self) -> Arc<KafkaTransport> {
        Arc::new(transport(&self.broker.url(), settings(group::<GROUP>())))
    }

    fn unreachable(port: u16) -> KafkaTransport {
        transport(
            &format!("kafka://127.0.0.1:{port}"),
            settings(group::<GROUP>()),
        )
    }

    fn with_wrong_password(&self) -> Option<KafkaTransport> {
        let url = format!(
            "kafka://{KAFKA_USER}:wrong@127.0.0.1:{}",
            self.broker.sasl_port()
        );
        let settings = KafkaSettings {
            sasl_mechanism: SaslMechanism::ScramSha512,
            ..settings(group::<GROUP>())
        };
        Some(transport(&url, settings))
    }
}

mod own_group {
    conformance_suite!(super::Kafka<false>);
}

mod named_group {
    conformance_suite!(super::Kafka<true>);
}

fn identity(name: &str) -> ClientIdentity {
    ClientIdentity {
        client_id: format!("kafka-{name}-{}", std::process::id()),
        ..ClientIdentity::default()
    }
}

async fn publish(p: &mut impl Publisher, topic: &str, body: &str) {
    p.publish(Outgoing {
        topic,
        payload: body.as_bytes(),
        headers: &[],
        record_time_us: None,
    })
    .await
    .expect("publish");
}

/// Bodies received until `n` arrived (or the receive timeout), then for `quiet` more.
async fn bodies(sub: &mut impl Subscriber, n: usize, quiet: Duration) -> Vec<String> {
    let mut got = Vec::new();
    let deadline = tokio::time::Instant::now() + RECEIVE_TIMEOUT;
    while got.len() < n {
        match tokio::time::timeout_at(deadline, sub.recv()).await {
            Ok(Ok(m)) => got.push(String::from_utf8_lossy(&m.payload).into_owned()),
            Ok(Err(e)) => panic!("receive failed after {} of {n}: {e}", got.len()),
            Err(_) => panic!("only {} of {n} arrived: {got:?}", got.len()),
        }
    }
    while let Ok(Ok(m)) = tokio::time::timeout(quiet, sub.recv()).await {
        got.push(String::from_utf8_lossy(&m.payload).into_owned());
    }
    got
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_left_by_an_earlier_run_are_not_delivered() {
    let Some(broker) = KafkaBroker::require().await else {
        return;
    };
    let t = transport(&broker.url(), settings(None));
    let topic = iotload_testkit::unique_topic("kafka/old");
    let mut p = t.publisher(&identity("old-pub")).await.expect("connect");
    for i in 0..5 {
        publish(&mut p, &format!("{topic}/t"), &format!("old {i}")).await;
    }
    p.close().await.expect("close");
    // Kafka timestamps have millisecond resolution: start the subscription in a later
    // millisecond than the last old message.
    let after = now_us() / 1_000 + 1;
    while now_us() / 1_000 < after {
        tokio::task::yield_now().await;
    }
    let mut sub = t
        .subscriber(&identity("old-sub"), &[format!("{topic}/+")])
        .await
        .expect("subscribe");
    let mut p = t.publisher(&identity("new-pub")).await.expect("connect");
    publish(&mut p, &format!("{topic}/t"), "new").await;
    p.close().await.expect("close");
    let got = bodies(&mut sub, 1, Duration::from_millis(500)).await;
    assert_eq!(got, vec!["new".to_string()]);
    sub.close().await.expect("close");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn competing_subscribers_in_one_group_share_the_messages() {
    const TOPICS: usize = 4;
    const ROUNDS: usize = 20;
    let Some(broker) = KafkaBroker::require().await else {
        return;
    };
    // The second subscriber waits for an assignment only until the connect timeout: the
    // first member, not polled meanwhile in this single task, cannot answer the
    // rebalance any sooner.
    let t = transport(
        &broker.url(),
        KafkaSettings {
            connect_timeout: Duration::from_secs(1),
            ..settings(Some("competing"))
        },
    );
    let prefix = iotload_testkit::unique_topic("kafka/cmp");
    let topics: Vec<String> = (0..TOPICS).map(|i| format!("{prefix}/{i}")).collect();
    // Create the topics first, so both subscribers are assigned partitions at once.
    let mut p = t.publisher(&identity("cmp-pub")).await.expect("connect");
    for topic in &topics {
        publish(&mut p, topic, "setup").await;
    }
    let filter = vec![format!("{prefix}/+")];
    let mut a = t.subscriber(&identity("cmp-a"), &filter).await.expect("a");
    let mut b = t.subscriber(&identity("cmp-b"), &filter).await.expect("b");
    // Rounds of one message per topic until the group has settled and both members
    // have received some; every message must arrive once the rounds are over.
    let mut sent = HashSet::new();
    let mut all = HashSet::new();
    let (mut got_a, mut got_b) = (0usize, 0usize);
    let deadline = tokio::time::Instant::now() + RECEIVE_TIMEOUT;
    let mut round = 0;
    while round < ROUNDS || got_a == 0 || got_b == 0 {
        for topic in &topics {
            let body = format!("{topic} {round}");
            publish(&mut p, topic, &body).await;
            sent.insert(body);
        }
        round += 1;
        while all.len() < sent.len() {
            let (m, from_a) = tokio::select! {
                m = a.recv() => (m, true),
                m = b.recv() => (m, false),
                _ = tokio::time::sleep_until(deadline) => panic!(
                    "{} of {} arrived (a {got_a}, b {got_b})", all.len(), sent.len()
                ),
            };
            let body = String::from_utf8_lossy(&m.expect("receive").payload).into_owned();
            if body == "setup" {
                continue;
            }
            if from_a {
                got_a += 1;
            } else {
                got_b += 1;
            }
            all.insert(body);
        }
    }
    p.close().await.expect("close");
    assert_eq!(all, sent, "together they receive every message");
    let (a, b) = tokio::join!(a.close(), b.close());
    a.expect("close");
    b.expect("close");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_requiring_authentication_names_the_likely_cause() {
    let Some(broker) = KafkaBroker::require().await else {
        return;
    };
    let url = format!("kafka://127.0.0.1:{}", broker.sasl_port());
    let t = transport(&url, settings(None));
    match t.publisher(&identity("noauth")).await {
        Ok(_) => panic!("a broker requiring authentication accepted a client without"),
        Err(e @ TransportError::Connect { .. }) => {
            let text = format!("{e} {:?}", std::error::Error::source(&e));
            assert!(text.contains("authentication"), "{text}");
        }
        Err(e) => panic!("expected a connection error, got {e:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_right_credentials_log_in_by_plain_and_by_scram() {
    let Some(broker) = KafkaBroker::require().await else {
        return;
    };
    let url = format!(
        "kafka://{KAFKA_USER}:{KAFKA_PASSWORD}@127.0.0.1:{}",
        broker.sasl_port()
    );
    for mechanism in [SaslMechanism::Plain, SaslMechanism::ScramSha512] {
        let t = transport(
            &url,
            KafkaSettings {
                sasl_mechanism: mechanism,
                ..settings(None)
            },
        );
        let topic = iotload_testkit::unique_topic("kafka/sasl");
        let mut sub = t
            .subscriber(&identity("sasl-sub"), std::slice::from_ref(&topic))
            .await
            .unwrap_or_else(|e| panic!("{mechanism:?} subscriber: {e}\n{}", broker.log()));
        let mut p = t
            .publisher(&identity("sasl-pub"))
            .await
            .unwrap_or_else(|e| panic!("{mechanism:?} publisher: {e}"));
        publish(&mut p, &topic, "logged in").await;
        p.close().await.expect("close");
        let got = bodies(&mut sub, 1, Duration::ZERO).await;
        assert_eq!(got, vec!["logged in".to_string()], "{mechanism:?}");
        sub.close().await.expect("close");
    }
}
