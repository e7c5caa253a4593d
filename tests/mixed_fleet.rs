//! A mixed fleet from a `--fleet` file: groups with their own count, rate, body, topics,
//! QoS and credentials driven by one `iotload run` against Mosquitto, watched on the wire
//! by a client of our own, with the summary and the store broken down by group.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::*;
use iotload_testkit::{MqttBroker, MqttBrokerOptions};
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};

const ADMIN: (&str, &str) = ("admin", "a-secret");
const METER: (&str, &str) = ("meter", "m-secret");

async fn broker() -> MqttBroker {
    MqttBroker::start_with(MqttBrokerOptions {
        users: vec![
            (ADMIN.0.into(), ADMIN.1.into()),
            (METER.0.into(), METER.1.into()),
        ],
        ..MqttBrokerOptions::default()
    })
    .await
    .expect("mosquitto starts (apt-get install mosquitto)")
}

/// One message seen on the wire.
struct Seen {
    qos: QoS,
    topic: String,
    payload: serde_json::Value,
}

/// Subscribes to `filter` at QoS 2 (so each message arrives at the QoS it was published
/// with) and returns once the subscription is confirmed, with a task collecting
/// `expected` messages (or what came within 30 s).
async fn watch(url: &str, filter: &str, expected: usize) -> tokio::task::JoinHandle<Vec<Seen>> {
    let (host, port) = url.trim_start_matches("mqtt://").rsplit_once(':').unwrap();
    let mut options = MqttOptions::new("fleet-watcher", host, port.parse().unwrap());
    options.set_credentials(ADMIN.0, ADMIN.1);
    options.set_max_packet_size(1 << 20, 1 << 20);
    let (client, mut events) = AsyncClient::new(options, 1_000);
    client.subscribe(filter, QoS::ExactlyOnce).await.unwrap();
    loop {
        match tokio::time::timeout(Duration::from_secs(10), events.poll()).await {
            Ok(Ok(Event::Incoming(Packet::SubAck(_)))) => break,
            Ok(Ok(_)) => {}
            other => panic!("the watcher could not subscribe: {other:?}"),
        }
    }
    tokio::spawn(async move {
        let _client = client;
        let mut seen = Vec::new();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        while seen.len() < expected {
            let event = tokio::select! {
                e = events.poll() => e,
                _ = tokio::time::sleep_until(deadline) => break,
            };
            if let Ok(Event::Incoming(Packet::Publish(p))) = event {
                seen.push(Seen {
                    qos: p.qos,
                    topic: p.topic.clone(),
                    payload: serde_json::from_slice(&p.payload).unwrap_or_default(),
                });
            }
        }
        seen
    })
}

fn group<'a>(summary: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    summary["groups"]
        .as_array()
        .unwrap_or_else(|| panic!("no groups in {summary:#}"))
        .iter()
        .find(|g| g["name"] == name)
        .unwrap_or_else(|| panic!("no group {name} in {summary:#}"))
}

#[tokio::test]
async fn one_run_drives_every_group_and_breaks_results_down_by_group() {
    let broker = broker().await;
    let url = broker.url();
    let scratch = Scratch::new();
    let p = prefix("fleet");
    // Trackers: 6 devices, 5 messages each at QoS 0, string ids and generated values, the
    // command line's credentials. Meters: 3 devices, 12 messages each at 20/s, QoS 1,
    // their own login, a body from a file next to the fleet file.
    std::fs::write(scratch.path("meter.json"), r#"{"kwh": "{float:0..10:2}"}"#).unwrap();
    let fleet = format!(
        r#"
groups:
  - name: trackers
    devices: 6
    rate: 10/s
    topic: {p}/trackers/{{device}}/up
    action_topic: {p}/trackers/{{device}}/act
    device_id: 'VZW_LH_UNIT_{{device:03}}'
    payload:
      battery: '{{walk:20..100:0.5}}'
      status: '{{choice:moving|parked}}'
  - name: meters
    devices: 3
    rate: 20
    count: 12
    qos: 1
    username: {meter}
    password: {meter_password}
    client_id: meter-{{device}}
    topic: {p}/meters/{{device}}/up
    action_topic: {p}/meters/{{device}}/act
    payload_file: meter.json
"#,
        meter = METER.0,
        meter_password = METER.1,
    );
    let fleet_path = scratch.path("fleet.yaml");
    std::fs::write(&fleet_path, fleet).unwrap();
    let wire = watch(&url, &format!("{p}/+/+/up"), 6 * 5 + 3 * 12).await;
    let store = format!("sqlite://{}", scratch.path("results.db").display());
    let json = scratch.json();
    let out = run(&[
        "run",
        "--broker",
        &url,
        "--username",
        ADMIN.0,
        "--password",
        ADMIN.1,
        "--fleet",
        fleet_path.to_str().unwrap(),
        "--count",
        "5",
        "--store",
        &store,
        "--json",
        &json,
    ])
    .await;
    assert_eq!(out.code, 0, "{}\n{}", out.stdout, out.stderr);
    let s = scratch.summary();
    assert_valid_summary(&s);
    assert_eq!(u(&s, "/load/devices"), 9);
    assert_eq!(u(&s, "/receive/unique"), 66, "{s:#}");
    let trackers = group(&s, "trackers");
    let meters = group(&s, "meters");
    for (g, devices, first, sent) in [(trackers, 6, 0, 30), (meters, 3, 6, 36)] {
        assert_eq!(u(g, "/devices"), devices, "{g:#}");
        assert_eq!(u(g, "/first_device"), first, "{g:#}");
        assert_eq!(u(g, "/planned"), sent, "{g:#}");
        assert_eq!(u(g, "/sent"), sent, "{g:#}");
        assert_eq!(u(g, "/received"), sent, "{g:#}");
        assert_eq!(u(g, "/lost"), 0, "{g:#}");
        assert!(f(g, "/latency_ms/p50") > 0.0, "{g:#}");
    }
    assert_eq!(f(trackers, "/rate_per_device"), 10.0);
    assert_eq!(f(meters, "/rate_per_device"), 20.0);
    assert!(out.stdout.contains("trackers"), "{}", out.stdout);

    // On the wire: each group's topics, QoS and body.
    let seen = wire.await.unwrap();
    assert_eq!(
        seen.len(),
        66,
        "the watcher saw {} of 66 messages",
        seen.len()
    );
    let mut per_group: BTreeMap<&str, usize> = BTreeMap::new();
    for m in &seen {
        let kind = m.topic.split('/').rev().nth(2).unwrap();
        *per_group
            .entry(if kind == "trackers" {
                "trackers"
            } else {
                "meters"
            })
            .or_default() += 1;
        let body = &m.payload;
        if kind == "trackers" {
            assert_eq!(m.qos, QoS::AtMostOnce, "{}", m.topic);
            let id = body["device"].as_str().unwrap_or_default();
            assert!(id.starts_with("VZW_LH_UNIT_00"), "device id {body}");
            let battery = body["battery"].as_f64().unwrap();
            assert!((20.0..=100.0).contains(&battery), "battery {body}");
            let status = body["status"].as_str().unwrap();
            assert!(["moving", "parked"].contains(&status), "status {body}");
        } else {
            assert_eq!(kind, "meters", "{}", m.topic);
            assert_eq!(m.qos, QoS::AtLeastOnce, "{}", m.topic);
            let kwh = body["kwh"].as_f64().unwrap();
            assert!((0.0..=10.0).contains(&kwh), "kwh {body}");
            let device = body["device"].as_u64().unwrap();
            assert!((6..9).contains(&device), "meter device {body}");
        }
    }
    assert_eq!(per_group["trackers"], 30);
    assert_eq!(per_group["meters"], 36);

    // The store: `results show` breaks the run down by group.
    let shown = run(&["results", "--store", &store, "show", "latest"]).await;
    assert_eq!(shown.code, 0, "{}", shown.stderr);
    let row = |name: &str| {
        shown
            .stdout
            .lines()
            .find(|l| l.split_whitespace().next() == Some(name))
            .unwrap_or_else(|| panic!("no {name} row in\n{}", shown.stdout))
            .split_whitespace()
            .map(str::to_string)
            .collect::<Vec<_>>()
    };
    assert_eq!(row("trackers")[1..4], ["30", "30", "0"], "{}", shown.stdout);
    assert_eq!(row("meters")[1..4], ["36", "36", "0"], "{}", shown.stdout);
}

#[tokio::test]
async fn a_group_with_a_wrong_password_fails_alone() {
    // The group's own login is used: with a wrong one its devices cannot connect, while
    // the other group, on the command line's login, runs.
    let broker = broker().await;
    let url = broker.url();
    let scratch = Scratch::new();
    let p = prefix("fleetauth");
    let fleet = format!(
        r#"
groups:
  - name: good
    devices: 2
    topic: {p}/good/{{device}}
    action_topic: {p}/good/{{device}}/act
  - name: intruders
    devices: 2
    username: meter
    password: wrong
    topic: {p}/bad/{{device}}
    action_topic: {p}/bad/{{device}}/act
"#
    );
    let fleet_path = scratch.path("fleet.yaml");
    std::fs::write(&fleet_path, fleet).unwrap();
    let json = scratch.json();
    let out = run(&[
        "run",
        "--broker",
        &url,
        "--username",
        ADMIN.0,
        "--password",
        ADMIN.1,
        "--fleet",
        fleet_path.to_str().unwrap(),
        "--count",
        "3",
        "--store",
        "none",
        "--json",
        &json,
    ])
    .await;
    let s = scratch.summary();
    assert_valid_summary(&s);
    assert_eq!(u(&s, "/load/connected"), 2, "{s:#}\n{}", out.stderr);
    assert_eq!(u(group(&s, "good"), "/sent"), 6, "{s:#}");
    assert_eq!(u(group(&s, "good"), "/lost"), 0, "{s:#}");
    assert_eq!(u(group(&s, "intruders"), "/sent"), 0, "{s:#}");
    let warnings = s["warnings"].to_string();
    assert!(
        warnings.contains("2 of 4 devices could not connect"),
        "{warnings}"
    );
}

#[tokio::test]
async fn bad_fleet_files_are_refused_before_connecting() {
    let scratch = Scratch::new();
    let path = scratch.path("fleet.yaml");
    let cases: &[(&str, &str)] = &[
        ("groups: []", "has no groups"),
        ("groups:\n  - name: a\n", "devices"),
        (
            "groups:\n  - name: a\n    devices: 1\n    colour: red\n",
            "colour",
        ),
        (
            "groups:\n  - name: a\n    devices: 1\n  - name: a\n    devices: 1\n",
            "two groups are named `a`",
        ),
        (
            "groups:\n  - name: a\n    devices: 1\n    qos: 3\n",
            "group `a`: bad value for qos: 3 is not an MQTT QoS",
        ),
        (
            "groups:\n  - name: a\n    devices: 1\n    rate: fast\n",
            "`fast` is not a rate",
        ),
        (
            "groups:\n  - name: a\n    devices: 1\n    payload: '{\"v\": \"{nope}\"}'\n",
            "group `a`",
        ),
        (
            "groups:\n  - name: a\n    devices: 2\n    action_topic: same\n  - name: b\n    devices: 1\n    topic: b/{device}\n    action_topic: same\n",
            "share the action topic `same`",
        ),
        (
            "groups:\n  - name: a\n    devices: 1\n    action_topic: x/{device}\n  - name: b\n    devices: 1\n    action_topic: y/{device}\n",
            "publish on the same topics",
        ),
    ];
    for (text, expected) in cases {
        std::fs::write(&path, text).unwrap();
        // A closed port: an error before connecting is the only way to see `expected`.
        let out = run(&[
            "run",
            "--broker",
            "mqtt://127.0.0.1:1",
            "--fleet",
            path.to_str().unwrap(),
            "--store",
            "none",
        ])
        .await;
        assert_eq!(out.code, 2, "{text}: {}", out.stderr);
        assert!(
            out.stderr.contains(expected),
            "{text}: expected `{expected}` in\n{}",
            out.stderr
        );
    }
    let missing = run(&[
        "loadgen",
        "--broker",
        "mqtt://127.0.0.1:1",
        "--fleet",
        "/nonexistent/fleet.yaml",
    ])
    .await;
    assert!(
        missing.stderr.contains("cannot read --fleet file"),
        "{}",
        missing.stderr
    );
    std::fs::write(&path, "groups:\n  - name: a\n    devices: 1\n    qos: 1\n").unwrap();
    let on_nats = run(&[
        "loadgen",
        "--broker",
        "nats://127.0.0.1:1",
        "--fleet",
        path.to_str().unwrap(),
    ])
    .await;
    assert!(
        on_nats.stderr.contains("QoS levels are MQTT's"),
        "{}",
        on_nats.stderr
    );
}
