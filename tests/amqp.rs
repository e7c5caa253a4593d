//! End to end on AMQP 0.9.1: the real binary against the machine's RabbitMQ, each test in
//! a fresh virtual host, checked through the JSON summary. Also the echo bridging two
//! brokers (MQTT or NATS devices, AMQP actions), as real pipelines do.

mod common;

use common::*;
use iotload_testkit::{MqttBroker, NatsServer, RabbitVhost, machine_amqp_url, require_rabbitmq};

/// A fresh virtual host, or `None` (test skipped) when RabbitMQ is not running outside CI.
async fn vhost() -> Option<RabbitVhost> {
    let url = machine_amqp_url();
    if !require_rabbitmq().await {
        eprintln!("skipped: no RabbitMQ at {url}");
        return None;
    }
    Some(RabbitVhost::create().await.expect("a fresh virtual host"))
}

/// `iotload run` with 20 devices at 25 msg/s for 2 s: every one of the 1000 messages
/// goes out, through the echo, and back to the collector.
async fn exact_counts(url: &str, extra: &[&str]) -> serde_json::Value {
    let scratch = Scratch::new();
    let json = scratch.json();
    let mut args = vec![
        "run",
        "--broker",
        url,
        "--devices",
        "20",
        "--rate",
        "25",
        "--duration",
        "2s",
        "--json",
        &json,
    ];
    args.extend(EXACT_DRAIN);
    args.extend(extra);
    let out = run(&args).await;
    assert_eq!(out.code, 0, "{}\n{}", out.stdout, out.stderr);
    let s = scratch.summary();
    assert_valid_summary(&s);
    assert_eq!(u(&s, "/load/sent"), 1000, "{s:#}");
    assert_eq!(u(&s, "/echo/published"), 1000, "{s:#}");
    assert_eq!(u(&s, "/receive/unique"), 1000, "{s:#}");
    assert_eq!(u(&s, "/receive/lost"), 0);
    assert_eq!(u(&s, "/receive/duplicates"), 0);
    assert!(f(&s, "/receive/latency_ms/p50") > 0.0);
    s
}

#[tokio::test]
async fn run_on_rabbitmq_receives_every_message() {
    let Some(vhost) = vhost().await else { return };
    let s = exact_counts(&vhost.url(), &[]).await;
    let broker = s.pointer("/broker").and_then(|b| b.as_str()).unwrap_or("");
    assert!(
        broker.starts_with("amqp://guest:***@"),
        "password redacted: {broker}"
    );
    assert!(broker.ends_with(vhost.name()), "{broker}");
}

#[tokio::test]
async fn header_stamp_confirms_and_acks_on_a_declared_exchange() {
    let Some(vhost) = vhost().await else { return };
    exact_counts(
        &vhost.url(),
        &[
            "--stamp",
            "header",
            "--payload",
            "opaque body",
            "--amqp-exchange",
            "iotload.test",
            "--amqp-exchange-type",
            "topic",
            "--amqp-confirms",
            "--amqp-manual-ack",
            "--amqp-prefetch",
            "50",
        ],
    )
    .await;
}

#[tokio::test]
async fn unreachable_rabbitmq_exits_2_and_names_the_url() {
    run_on_a_closed_port("amqp").await;
}

#[tokio::test]
async fn wrong_password_exits_2_with_an_authentication_error() {
    let Some(vhost) = vhost().await else { return };
    let url = vhost.url_with_password("wrong");
    let out = run(&["run", "--broker", &url, "--duration", "1s"]).await;
    assert_eq!(out.code, 2, "{}\n{}", out.stdout, out.stderr);
    assert!(
        out.stderr.contains("refused the credentials"),
        "{}",
        out.stderr
    );
    assert!(
        !out.stderr.contains("wrong"),
        "the password leaked: {}",
        out.stderr
    );
}

#[tokio::test]
async fn run_bridges_mqtt_devices_into_rabbitmq() {
    let Some(vhost) = vhost().await else { return };
    let mqtt = MqttBroker::start().await.expect("mosquitto starts");
    let s = exact_counts(&mqtt.url(), &["--to-broker", &vhost.url()]).await;
    let broker = s.pointer("/broker").and_then(|b| b.as_str()).unwrap_or("");
    assert!(
        broker.starts_with(&format!("{} -> amqp://", mqtt.url())),
        "the summary names both brokers: {broker}"
    );
}

/// The three components as processes: NATS devices, an echo bridging NATS into AMQP, and
/// a collector on AMQP.
#[tokio::test]
async fn standalone_echo_bridges_nats_into_rabbitmq() {
    let Some(vhost) = vhost().await else { return };
    let nats = NatsServer::start().await.expect("nats-server starts");
    let amqp = vhost.url();
    let (_, s) = ThreeProcesses {
        requests: &nats.url(),
        actions: &amqp,
        collector: &["--topic", "iot/+/action"],
        echo: &[],
        loadgen: &[
            "--devices",
            "5",
            "--rate",
            "50",
            "--count",
            "40",
            "--store",
            "none",
        ],
        expected: 200,
    }
    .run()
    .await;
    assert_eq!(u(&s, "/receive/unique"), 200);
    assert_eq!(u(&s, "/receive/lost"), 0);
}

#[tokio::test]
async fn echo_rejects_a_malformed_bridge_url() {
    let out = run(&[
        "echo-ipaas",
        "--broker",
        "mqtt://127.0.0.1:1",
        "--to-broker",
        "kafka//nope",
        "--duration",
        "1s",
    ])
    .await;
    assert_eq!(out.code, 2, "{}", out.stderr);
    assert!(out.stderr.contains("--to-broker"), "{}", out.stderr);
}

#[tokio::test]
async fn run_refuses_one_shared_queue_for_echo_and_collector() {
    // The echo's requests and the collector's actions would compete on one queue.
    let port = iotload_testkit::free_port();
    let url = format!("amqp://127.0.0.1:{port}");
    let out = run(&[
        "run",
        "--broker",
        &url,
        "--amqp-queue",
        "shared",
        "--duration",
        "1s",
    ])
    .await;
    assert_eq!(out.code, 2, "{}", out.stderr);
    assert!(out.stderr.contains("--amqp-queue"), "{}", out.stderr);
}
