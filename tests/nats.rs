//! End to end on NATS: the real binary against a private `nats-server` per test (and the
//! machine's NATS server), checked through the JSON summary. Topics are MQTT-style and
//! mapped to NATS subjects by the transport.

mod common;

use common::*;
use iotload_testkit::{NatsOptions, NatsServer, TestPki};

#[tokio::test]
async fn run_on_a_private_nats_server_receives_every_message() {
    let server = NatsServer::start().await.expect("nats-server starts");
    let s = exact_counts(&server.url(), &prefix("nats"), &[]).await;
    assert_eq!(
        s.pointer("/broker").and_then(|b| b.as_str()),
        Some(server.url().as_str()),
        "{s:#}"
    );
}

#[tokio::test]
async fn header_stamp_rides_in_nats_headers() {
    let server = NatsServer::start().await.expect("nats-server starts");
    let s = exact_counts(
        &server.url(),
        &prefix("natshdr"),
        &["--stamp", "header", "--payload", "opaque body"],
    )
    .await;
    assert_eq!(u(&s, "/receive/unique"), 1000);
}

#[tokio::test]
async fn unreachable_nats_server_exits_2_and_names_the_url() {
    run_on_a_closed_port("nats").await;
}

#[tokio::test]
async fn run_on_the_machine_nats_server_receives_every_message() {
    let url = iotload_testkit::machine_nats_url();
    if !iotload_testkit::require_server("nats-server", &url, "nats-server -a 127.0.0.1 -p 4222 &")
        .await
    {
        eprintln!("skipped: no NATS server at {url}");
        return;
    }
    exact_counts(&url, &prefix("machine"), &[]).await;
}

#[tokio::test]
async fn tls_with_the_right_ca_measures_and_a_wrong_ca_is_refused_clearly() {
    let pki = TestPki::generate().expect("pki");
    let server = NatsServer::start_with(NatsOptions {
        tls: Some(pki.clone()),
        ..NatsOptions::default()
    })
    .await
    .expect("nats-server starts");
    let url = server.url();
    let ca = pki.ca_pem().display().to_string();
    exact_counts(&url, &prefix("natstls"), &["--ca-file", &ca]).await;

    let wrong = pki.other_ca_pem().display().to_string();
    let out = run(&[
        "run",
        "--broker",
        &url,
        "--ca-file",
        &wrong,
        "--duration",
        "1s",
        "--connect-timeout",
        "2s",
    ])
    .await;
    assert_eq!(out.code, 2, "{}", out.stderr);
    assert!(out.stderr.contains("TLS"), "{}", out.stderr);
    assert!(
        out.stderr.contains(&wrong),
        "names the CA file: {}",
        out.stderr
    );

    // --insecure skips verification on purpose.
    exact_counts(&url, &prefix("natsinsecure"), &["--insecure"]).await;
}

#[tokio::test]
async fn jetstream_publishes_are_acknowledged_and_all_arrive() {
    let server = NatsServer::start_with(NatsOptions {
        jetstream: true,
        ..NatsOptions::default()
    })
    .await
    .expect("nats-server starts");
    let s = exact_counts(&server.url(), &prefix("natsjs"), &["--jetstream"]).await;
    assert_eq!(u(&s, "/load/sent"), 1000);
}

#[tokio::test]
async fn jetstream_consumers_without_acks_receive_every_message() {
    let server = NatsServer::start_with(NatsOptions {
        jetstream: true,
        ..NatsOptions::default()
    })
    .await
    .expect("nats-server starts");
    exact_counts(
        &server.url(),
        &prefix("natsjsnone"),
        &[
            "--jetstream",
            "--jetstream-ack",
            "none",
            "--stamp",
            "header",
        ],
    )
    .await;
}

#[tokio::test]
async fn jetstream_on_a_server_without_it_is_refused_clearly() {
    let server = NatsServer::start().await.expect("nats-server starts");
    let out = run(&[
        "run",
        "--broker",
        &server.url(),
        "--jetstream",
        "--duration",
        "1s",
        "--connect-timeout",
        "3s",
    ])
    .await;
    assert_eq!(out.code, 2, "{}\n{}", out.stdout, out.stderr);
    assert!(out.stderr.contains("JetStream"), "{}", out.stderr);
}

#[tokio::test]
async fn jetstream_needs_a_nats_broker() {
    let port = iotload_testkit::free_port();
    let url = format!("mqtt://127.0.0.1:{port}");
    let out = run(&["run", "--broker", &url, "--jetstream", "--duration", "1s"]).await;
    assert_eq!(out.code, 2, "{}", out.stderr);
    assert!(
        out.stderr.contains("--jetstream needs a NATS broker"),
        "{}",
        out.stderr
    );
}
