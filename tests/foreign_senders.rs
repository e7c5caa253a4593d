//! Messages iotload did not write, measured correctly: `mosquitto_pub` and a Python
//! paho-mqtt script sending in the format of the team's earlier prototype (a string
//! device id and a naive local `lastUpdated`, no sequence number), and `iotload run`
//! itself with a timestamp-only, nested, string-id stamp.
#![allow(clippy::unwrap_used)]

mod common;

use std::path::PathBuf;
use std::process::Stdio;

use tokio::io::AsyncBufReadExt;

use common::*;
use iotload_testkit::MqttBroker;

/// Messages each sender publishes.
const MESSAGES: u64 = 200;

/// The machine zone the processes of these tests run in (`TZ`), so "local" is not UTC.
const MACHINE_ZONE: &str = "America/New_York";

/// `iotload` with `args`, its local zone set to [`MACHINE_ZONE`].
fn spawn_with_tz(args: &[&str]) -> Proc {
    let mut child = iotload()
        .args(args)
        .env("TZ", MACHINE_ZONE)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("iotload starts");
    let stderr = child.stderr.take().expect("stderr piped");
    Proc::from_child(child, tokio::io::BufReader::new(stderr).lines())
}

/// A collector reading the prototype's format on `broker`, listening on `tracker/+/action`
/// in `zone`, with its metrics address.
async fn prototype_collector(broker: &str, zone: &str, json: &str) -> (Proc, String) {
    let mut collector = spawn_with_tz(&[
        "collector",
        "--broker",
        broker,
        "--topic",
        "tracker/+/action",
        "--qos",
        "1",
        "--stamp-fields",
        "sent=lastUpdated,device=unitMacId",
        "--time-zone",
        zone,
        "--store",
        "none",
        "--metrics-addr",
        "127.0.0.1:0",
        "--progress",
        "never",
        "--json",
        json,
    ]);
    collector.wait_for("collector: listening").await;
    let metrics = metrics_addr(&mut collector).await;
    (collector, metrics)
}

/// The host and port of an `mqtt://HOST:PORT` URL, for clients that take them apart.
fn host_and_port(url: &str) -> (String, String) {
    let (host, port) = url.trim_start_matches("mqtt://").rsplit_once(':').unwrap();
    (host.to_string(), port.to_string())
}

/// Waits until the collector received every message, stops it and checks what a user
/// would: every message measured, none undecodable, latencies of a loopback publish.
async fn every_message_measured(collector: Proc, metrics: &str, json: &str) {
    scrape_until(metrics, "every message received", |s| {
        total(s, "iotload_messages_received_total") == MESSAGES as f64
    })
    .await;
    collector.interrupt();
    assert_eq!(collector.exit_code().await, Some(130));
    let s = read_json(std::path::Path::new(json));
    eprintln!("receive: {:#}", s["receive"]);
    assert_eq!(u(&s, "/receive/received"), MESSAGES, "{s:#}");
    assert_eq!(u(&s, "/receive/unique"), MESSAGES, "{s:#}");
    let undecodable: u64 = s["receive"]["undecodable"]
        .as_object()
        .map_or(0, |m| m.values().filter_map(|v| v.as_u64()).sum());
    assert_eq!(undecodable, 0, "{s:#}");
    assert_eq!(
        u(&s, "/receive/future_stamps"),
        0,
        "a wrong zone puts stamps hours off: {s:#}"
    );
    let p50 = f(&s, "/receive/latency_ms/p50");
    let max = f(&s, "/receive/latency_ms/max");
    // A wrong zone or unit would be off by hours or by a factor of 1,000.
    assert!(
        p50 > 0.0 && max < 5_000.0,
        "p50 {p50} ms, max {max} ms: {s:#}"
    );
}

#[tokio::test]
async fn mosquitto_pub_in_the_prototype_format_is_measured() {
    let Some(mosquitto_pub) = tool(&["mosquitto_pub"], "apt-get install mosquitto-clients") else {
        return;
    };
    let broker = MqttBroker::start().await.expect("mosquitto starts");
    let scratch = Scratch::new();
    let json = scratch.json();
    let zone = "Asia/Kolkata";
    let (collector, metrics) = prototype_collector(&broker.url(), zone, &json).await;
    let (host, port) = host_and_port(&broker.url());
    // One line per message, each with the wall-clock time of the moment it is written, as
    // a shell script on a device would make it (GNU date, µs, no offset).
    let script = format!(
        r#"for i in $(seq 1 {MESSAGES}); do
             printf '{{"unitMacId":"VZW_LH_UNIT_%03d","battery":87,"lastUpdated":"%s"}}\n' \
               $((i % 5)) "$(TZ={zone} date +%Y-%m-%dT%H:%M:%S.%6N)"
           done | {pub} -h {host} -p {port} -q 1 -l -t tracker/VZW/action"#,
        pub = mosquitto_pub.display(),
    );
    let status = tokio::process::Command::new("bash")
        .args(["-c", &script])
        .stdin(Stdio::null())
        .status()
        .await
        .expect("bash runs");
    assert!(status.success(), "the mosquitto_pub loop failed: {status}");
    every_message_measured(collector, &metrics, &json).await;
}

/// The Python of the tools venv `scripts/test` makes, if it has paho-mqtt.
fn python_with_paho() -> Option<PathBuf> {
    let python = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/tools/venv/bin/python3");
    let has_paho = std::process::Command::new(&python)
        .args(["-c", "import paho.mqtt.client"])
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !has_paho {
        assert!(
            !in_ci(),
            "paho-mqtt is not installed in target/tools/venv (scripts/test installs it)"
        );
        eprintln!(
            "skipped: paho-mqtt is not installed in target/tools/venv (scripts/test does it)"
        );
        return None;
    }
    Some(python)
}

#[tokio::test]
async fn a_python_paho_script_in_the_prototype_format_is_measured() {
    let Some(python) = python_with_paho() else {
        return;
    };
    let broker = MqttBroker::start().await.expect("mosquitto starts");
    let scratch = Scratch::new();
    let json = scratch.json();
    // The prototype's sender, as it was written: datetime.now().isoformat() in the
    // machine's zone (here set by TZ), read by the collector in its default zone (local).
    let (collector, metrics) = prototype_collector(&broker.url(), "local", &json).await;
    let (host, port) = host_and_port(&broker.url());
    let script = format!(
        r#"
import json, sys
from datetime import datetime
import paho.mqtt.client as mqtt

client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="prototype-tracker")
client.connect("{host}", {port})
client.loop_start()
for i in range({MESSAGES}):
    body = {{
        "unitMacId": "VZW_LH_UNIT_%03d" % (i % 7),
        "location": {{"lat": 40.7 + i / 1e4, "lon": -74.0}},
        "lastUpdated": datetime.now().isoformat(),
    }}
    client.publish("tracker/%d/action" % (i % 7), json.dumps(body), qos=1).wait_for_publish()
client.loop_stop()
client.disconnect()
"#
    );
    let status = tokio::process::Command::new(&python)
        .args(["-c", &script])
        .env("TZ", MACHINE_ZONE)
        .stdin(Stdio::null())
        .status()
        .await
        .expect("python runs");
    assert!(status.success(), "the paho script failed: {status}");
    every_message_measured(collector, &metrics, &json).await;
}

#[tokio::test]
async fn run_measures_a_timestamp_only_nested_stamp_with_string_ids_and_counts_loss_by_topic() {
    let scratch = Scratch::new();
    let json = scratch.json();
    let p = prefix("tsonly");
    let topic = format!("{p}/{{device}}/req");
    let action = format!("{p}/{{device}}/act");
    let out = run(&[
        "run",
        "--devices",
        "10",
        "--rate",
        "20",
        "--duration",
        "2s",
        "--qos",
        "1",
        "--topic",
        &topic,
        "--action-topic",
        &action,
        "--stamp-fields",
        "sent=/meta/sentAt,device=meta.unit",
        "--device-id",
        "VZW_LH_UNIT_{device:03}",
        "--time-format",
        "iso8601-local",
        "--time-zone",
        "Europe/Berlin",
        "--payload",
        r#"{"meta":{"kind":"tracker"},"battery":87}"#,
        "--json",
        &json,
    ])
    .await;
    assert_eq!(out.code, 0, "{}\n{}", out.stdout, out.stderr);
    let s = scratch.summary();
    assert_valid_summary(&s);
    assert_eq!(u(&s, "/load/sent"), 400, "{s:#}");
    assert_eq!(u(&s, "/receive/unique"), 400, "{s:#}");
    assert_eq!(u(&s, "/receive/lost"), 0, "{s:#}");
    assert_eq!(u(&s, "/receive/future_stamps"), 0, "{s:#}");
    assert!(f(&s, "/receive/latency_ms/p50") > 0.0, "{s:#}");
    assert!(f(&s, "/receive/latency_ms/max") < 5_000.0, "{s:#}");
}

#[tokio::test]
async fn bad_stamp_options_are_refused_before_any_connection() {
    let cases: [(&[&str], &str); 5] = [
        (
            &["--stamp-fields", "device,seq,intended"],
            "four comma-separated",
        ),
        (&["--stamp-fields", "device=unitMacId"], "send-time"),
        (&["--time-format", "epoch"], "auto, s, ms"),
        (&["--time-zone", "Mars/Olympus"], "IANA"),
        (&["--device-id", "UNIT_{id}"], "unknown placeholder `{id}`"),
    ];
    for (flags, expected) in cases {
        // A closed port: a plan error must come before any attempt to connect.
        let mut args = vec!["run", "--broker", "mqtt://127.0.0.1:9", "--duration", "1s"];
        args.extend_from_slice(flags);
        let out = run(&args).await;
        assert_eq!(out.code, 2, "{flags:?}: {}", out.stderr);
        assert!(out.stderr.contains(expected), "{flags:?}: {}", out.stderr);
        assert!(!out.stderr.contains("connect"), "{flags:?}: {}", out.stderr);
    }
}
