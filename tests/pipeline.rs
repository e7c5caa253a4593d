//! End to end: the real binary, real brokers (embedded, a private Mosquitto per test, and
//! the machine's Mosquitto), checked through the JSON summary.

mod common;

use common::*;
use iotload_testkit::MqttBroker;

async fn exact_counts_at_qos1(broker: Option<&str>, topic_prefix: &str) {
    let scratch = Scratch::new();
    let topic = format!("{topic_prefix}/{{device}}/req");
    let action = format!("{topic_prefix}/{{device}}/act");
    let client = format!("{topic_prefix}-{{device}}").replace('/', "-");
    let json = scratch.json();
    let mut args = vec![
        "run",
        "--devices",
        "20",
        "--rate",
        "25",
        "--duration",
        "2s",
        "--qos",
        "1",
        "--topic",
        &topic,
        "--action-topic",
        &action,
        "--client-id",
        &client,
        "--json",
        &json,
    ];
    if let Some(url) = broker {
        args.extend(["--broker", url]);
    }
    args.extend(EXACT_DRAIN);
    let out = run(&args).await;
    assert_eq!(out.code, 0, "{}\n{}", out.stdout, out.stderr);
    let s = scratch.summary();
    assert_valid_summary(&s);
    assert_eq!(u(&s, "/load/planned"), 1000);
    assert_eq!(u(&s, "/load/sent"), 1000, "{s:#}");
    assert_eq!(u(&s, "/receive/unique"), 1000, "{s:#}");
    assert_eq!(u(&s, "/receive/lost"), 0);
    assert_eq!(u(&s, "/receive/duplicates"), 0);
    assert_eq!(u(&s, "/echo/published"), 1000);
    assert!(f(&s, "/receive/latency_ms/p50") > 0.0);
    assert!(out.stdout.contains("latency ms"), "{}", out.stdout);
    // The process's CPU time, split by part: each part did work, the embedded broker's
    // threads are there exactly when it ran, and the parts fit in the process's total.
    for part in ["loadgen_s", "echo_s", "collector_s"] {
        assert!(
            f(&s, &format!("/process/parts/{part}")) > 0.0,
            "{part}: {s:#}"
        );
    }
    let broker_s = s.pointer("/process/parts/embedded_broker_s");
    assert_eq!(broker_s.is_some(), broker.is_none(), "{s:#}");
    let measured: f64 = ["loadgen_s", "echo_s", "collector_s", "embedded_broker_s"]
        .iter()
        .filter_map(|p| s.pointer(&format!("/process/parts/{p}"))?.as_f64())
        .sum();
    let total = f(&s, "/process/cpu_user_s") + f(&s, "/process/cpu_system_s");
    assert!(
        measured <= total * 1.1 + 0.05,
        "parts {measured} s > process {total} s"
    );
    assert!(out.stdout.contains("by part   loadgen"), "{}", out.stdout);
}

#[tokio::test]
async fn run_on_the_embedded_broker_receives_every_message_at_qos1() {
    exact_counts_at_qos1(None, &prefix("emb")).await;
}

#[tokio::test]
async fn run_on_a_private_mosquitto_receives_every_message_at_qos1() {
    let broker = MqttBroker::start().await.expect("mosquitto starts");
    exact_counts_at_qos1(Some(&broker.url()), &prefix("priv")).await;
}

#[tokio::test]
async fn run_on_the_machine_mosquitto_receives_every_message_at_qos1() {
    let url = iotload_testkit::machine_mqtt_url();
    let addr = url.trim_start_matches("mqtt://").to_string();
    if !iotload_testkit::require_server(
        "mosquitto",
        &addr,
        "mosquitto -d -c /etc/mosquitto/mosquitto.conf",
    )
    .await
    {
        eprintln!("skipped: no mosquitto at {addr}");
        return;
    }
    exact_counts_at_qos1(Some(&url), &prefix("machine")).await;
}

#[tokio::test]
async fn echo_delay_of_50ms_shows_as_p50_between_50_and_60ms() {
    let broker = MqttBroker::start().await.expect("mosquitto starts");
    let scratch = Scratch::new();
    let json = scratch.json();
    let out = run(&[
        "run",
        "--broker",
        &broker.url(),
        "--devices",
        "10",
        "--rate",
        "20",
        "--duration",
        "2s",
        "--delay",
        "50ms",
        "--json",
        &json,
    ])
    .await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    let s = scratch.summary();
    let p50 = f(&s, "/receive/latency_ms/p50");
    // 50 ms plus the loop's own median: well under 1 ms on a quiet machine, several ms
    // while the rest of the suite loads both cores.
    assert!((50.0..=60.0).contains(&p50), "p50 {p50} ms\n{s:#}");
    assert_eq!(u(&s, "/receive/lost"), 0);
}

#[tokio::test]
async fn every_message_is_lost_when_no_ipaas_answers() {
    let broker = MqttBroker::start().await.expect("mosquitto starts");
    let scratch = Scratch::new();
    let json = scratch.json();
    let out = run(&[
        "run",
        "--broker",
        &broker.url(),
        "--external-ipaas",
        "--devices",
        "5",
        "--rate",
        "10",
        "--duration",
        "1s",
        "--drain-timeout",
        "300ms",
        "--json",
        &json,
    ])
    .await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    let s = scratch.summary();
    assert_eq!(u(&s, "/load/sent"), 50);
    assert_eq!(u(&s, "/receive/received"), 0);
    assert_eq!(u(&s, "/receive/lost"), 50);
    assert!(s["warnings"].to_string().contains("drain ended"), "{s:#}");
}

#[tokio::test]
async fn messages_before_a_late_ipaas_starts_count_as_lost() {
    let broker = MqttBroker::start().await.expect("mosquitto starts");
    let scratch = Scratch::new();
    let json = scratch.json();
    let url = broker.url();
    let mut run = spawn(&[
        "run",
        "--broker",
        &url,
        "--external-ipaas",
        "--devices",
        "4",
        "--rate",
        "50",
        "--count",
        "400",
        "--progress",
        "always",
        "--per-device",
        "--json",
        &json,
    ]);
    // Sending has started once the progress line counts sent messages; it goes on for
    // 8 s, time enough for the echo to start and subscribe on a loaded machine.
    run.wait_until(
        |l| l.contains("sent ") && !l.contains("sent 0 "),
        "sent > 0",
    )
    .await;
    let mut echo = spawn(&["echo-ipaas", "--broker", &url, "--progress", "never"]);
    echo.wait_for("echo-ipaas:").await;
    assert_eq!(run.exit_code().await, Some(0));
    echo.interrupt();
    let _ = echo.exit_code().await;
    let s = scratch.summary();
    let (sent, unique, lost) = (
        u(&s, "/load/sent"),
        u(&s, "/receive/unique"),
        u(&s, "/receive/lost"),
    );
    assert_eq!(sent, 1600);
    assert!(lost > 0 && unique > 0, "{s:#}");
    assert_eq!(lost + unique, sent);
    assert_valid_summary(&s);
    let devices = s["receive"]["per_device"]
        .as_array()
        .expect("per-device counts");
    assert_eq!(devices.len(), 4, "{s:#}");
    let per_device_unique: u64 = devices.iter().map(|d| u(d, "/unique")).sum();
    assert_eq!(per_device_unique, unique);
    // The echo joined late, so every device missed its first messages.
    assert!(devices.iter().all(|d| u(d, "/gaps") > 0), "{s:#}");
}

#[tokio::test]
async fn separate_loadgen_echo_and_collector_processes_measure_every_message() {
    let broker = MqttBroker::start().await.expect("mosquitto starts");
    let url = broker.url();
    let (load, s) = ThreeProcesses {
        requests: &url,
        actions: &url,
        collector: &["--qos", "1"],
        echo: &["--qos", "1"],
        loadgen: &[
            "--qos",
            "1",
            "--devices",
            "5",
            "--rate",
            "100",
            "--count",
            "50",
        ],
        expected: 250,
    }
    .run()
    .await;
    assert_eq!(u(&load, "/load/sent"), 250);
    assert_eq!(u(&s, "/receive/unique"), 250);
    assert_eq!(u(&s, "/receive/lost"), 0);
    assert!(s["interrupted"].as_bool().unwrap_or(false));
}

#[tokio::test]
async fn ctrl_c_stops_sending_and_keeps_every_result() {
    let scratch = Scratch::new();
    let json = scratch.json();
    let mut child = spawn(&[
        "run",
        "--devices",
        "10",
        "--rate",
        "50",
        "--duration",
        "60s",
        "--qos",
        "1",
        "--progress",
        "always",
        "--json",
        &json,
    ]);
    child
        .wait_until(|l| received_at_least(l, 100), "received >= 100")
        .await;
    child.interrupt();
    assert_eq!(child.exit_code().await, Some(130));
    let s = scratch.summary();
    assert_valid_summary(&s);
    assert!(s["interrupted"].as_bool().unwrap_or(false));
    let sent = u(&s, "/load/sent");
    assert!((100..30_000).contains(&sent), "{s:#}");
    assert_eq!(
        u(&s, "/receive/unique"),
        sent,
        "the drain keeps every sent message"
    );
    assert_eq!(u(&s, "/receive/lost"), 0);
}

#[tokio::test]
async fn mqtt5_user_property_stamp_round_trips_through_mosquitto() {
    let broker = MqttBroker::start().await.expect("mosquitto starts");
    let scratch = Scratch::new();
    let json = scratch.json();
    let out = run(&[
        "run",
        "--broker",
        &broker.url(),
        "--mqtt-version",
        "5",
        "--stamp",
        "header",
        "--payload",
        "opaque body",
        "--devices",
        "3",
        "--rate",
        "20",
        "--count",
        "20",
        "--qos",
        "1",
        "--json",
        &json,
    ])
    .await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    let s = scratch.summary();
    assert_eq!(u(&s, "/receive/unique"), 60, "{s:#}");
    assert_eq!(u(&s, "/receive/lost"), 0);
}

#[tokio::test]
async fn custom_json_fields_with_iso8601_times_and_binary_stamps_both_measure() {
    let broker = MqttBroker::start().await.expect("mosquitto starts");
    for extra in [
        &[
            "--stamp-fields",
            "deviceId,seq,intended,lastUpdated",
            "--time-format",
            "iso8601",
            "--payload",
            r#"{"temp":21.5}"#,
        ][..],
        &["--stamp", "binary", "--payload-size", "100"][..],
    ] {
        let scratch = Scratch::new();
        let json = scratch.json();
        let url = broker.url();
        let mut args = vec![
            "run",
            "--broker",
            &url,
            "--devices",
            "2",
            "--rate",
            "20",
            "--count",
            "10",
            "--qos",
            "1",
            "--json",
            &json,
        ];
        args.extend(extra);
        let out = run(&args).await;
        assert_eq!(out.code, 0, "{extra:?}: {}", out.stderr);
        let s = scratch.summary();
        assert_eq!(u(&s, "/receive/unique"), 20, "{extra:?}: {s:#}");
        assert_eq!(
            s["receive"]["undecodable"],
            serde_json::json!({}),
            "{extra:?}"
        );
    }
}

#[tokio::test]
async fn sigterm_stops_a_loadgen_and_its_summary_matches_what_the_broker_got() {
    let broker = MqttBroker::start().await.expect("mosquitto starts");
    let url = broker.url();
    let scratch = Scratch::new();
    let json = scratch.json();
    let collector_json = scratch.path("c.json").display().to_string();
    let mut collector = spawn(&[
        "collector",
        "--broker",
        &url,
        "--topic",
        "iot/+/telemetry",
        "--qos",
        "1",
        "--progress",
        "always",
        "--json",
        &collector_json,
    ]);
    collector.wait_for("collector: listening").await;
    let mut load = spawn(&[
        "loadgen",
        "--broker",
        &url,
        "--qos",
        "1",
        "--devices",
        "5",
        "--rate",
        "50",
        "--duration",
        "60s",
        "--progress",
        "always",
        "--json",
        &json,
    ]);
    load.wait_until(
        |l| l.contains("sent ") && !l.contains("sent 0 "),
        "sent > 0",
    )
    .await;
    load.signal("-TERM");
    assert_eq!(load.exit_code().await, Some(130));
    let s = scratch.summary();
    assert_valid_summary(&s);
    let sent = u(&s, "/load/sent");
    assert!(sent > 0 && sent < 15_000, "{s:#}");
    collector
        .wait_until(|l| received_at_least(l, sent), "everything sent")
        .await;
    collector.signal("-TERM");
    assert_eq!(collector.exit_code().await, Some(130));
    let c = read_json(&scratch.path("c.json"));
    assert_eq!(
        u(&c, "/receive/unique"),
        sent,
        "every message the loadgen counted arrived"
    );
    assert_eq!(u(&c, "/receive/lost"), 0);
}
