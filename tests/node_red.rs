//! The example Node-RED flow (examples/node-red/flows.json), an iPaaS we did not write,
//! between iotload's loadgen and collector on a private Mosquitto: it copies only the send
//! time into an action of another shape, and every message is measured.
#![allow(clippy::unwrap_used)]

mod common;

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use common::*;
use iotload_testkit::MqttBroker;
use tokio::io::{AsyncBufReadExt, BufReader};

/// Node-RED as `scripts/test` installs it (npm, under target/tools/node-red).
fn node_red() -> Option<PathBuf> {
    let bin = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("target/tools/node-red/node_modules/.bin/node-red");
    if bin.is_file() {
        return Some(bin);
    }
    assert!(
        !in_ci(),
        "Node-RED is not installed in target/tools/node-red (scripts/test installs it)"
    );
    eprintln!("skipped: Node-RED is not installed in target/tools/node-red (scripts/test does it)");
    None
}

/// Publishes a probe request until its action comes back: the flow is then subscribed.
async fn wait_for_the_flow(host: &str, port: u16) {
    let mut options = rumqttc::MqttOptions::new("node-red-probe", host, port);
    options.set_keep_alive(Duration::from_secs(30));
    let (client, mut events) = rumqttc::AsyncClient::new(options, 100);
    client
        .subscribe("nodered/probe/act", rumqttc::QoS::AtLeastOnce)
        .await
        .unwrap();
    let probe = r#"{"sent_us":1}"#;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let mut resend = tokio::time::interval(Duration::from_millis(250));
    loop {
        tokio::select! {
            _ = resend.tick() => {
                assert!(tokio::time::Instant::now() < deadline, "the Node-RED flow never answered a probe");
                client
                    .publish("nodered/probe/req", rumqttc::QoS::AtLeastOnce, false, probe)
                    .await
                    .unwrap();
            }
            event = events.poll() => match event {
                Ok(rumqttc::Event::Incoming(rumqttc::Packet::Publish(p))) => {
                    let action: serde_json::Value = serde_json::from_slice(&p.payload).unwrap();
                    assert_eq!(action["timing"]["origin"], 1, "{action}");
                    assert_eq!(action["asset"], "probe", "{action}");
                    break;
                }
                Ok(_) => {}
                Err(e) => panic!("the probe client lost the broker: {e}"),
            }
        }
    }
    let _ = client.disconnect().await;
}

#[tokio::test]
async fn the_node_red_example_flow_is_measured_end_to_end_with_nothing_lost() {
    let Some(node_red) = node_red() else {
        return;
    };
    let broker = MqttBroker::start().await.expect("mosquitto starts");
    let url = broker.url();
    let port = broker.port();
    let scratch = Scratch::new();
    let user_dir = scratch.path("node-red");
    std::fs::create_dir_all(&user_dir).unwrap();
    let flows = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("examples/node-red/flows.json");
    std::fs::copy(&flows, user_dir.join("flows.json")).unwrap();
    let mut flow = tokio::process::Command::new(&node_red)
        .args(["--userDir", &user_dir.display().to_string()])
        // Node-RED's HTTP side, which the test does not use.
        .args([
            "--port",
            &iotload_testkit::free_port().to_string(),
            "flows.json",
        ])
        .env("MQTT_HOST", "127.0.0.1")
        .env("MQTT_PORT", port.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("node-red starts");
    let mut log = BufReader::new(flow.stdout.take().unwrap()).lines();
    let connected = tokio::time::timeout(Duration::from_secs(90), async {
        while let Ok(Some(line)) = log.next_line().await {
            eprintln!("node-red: {line}");
            if line.contains("Connected to broker") {
                return true;
            }
        }
        false
    })
    .await;
    assert_eq!(
        connected,
        Ok(true),
        "Node-RED did not connect to the broker"
    );
    // Keep reading its log so it never blocks on a full pipe.
    tokio::spawn(async move { while let Ok(Some(_)) = log.next_line().await {} });
    wait_for_the_flow("127.0.0.1", port).await;

    let json = scratch.json();
    let mut collector = spawn(&[
        "collector",
        "--broker",
        &url,
        "--topic",
        "nodered/+/act",
        "--qos",
        "1",
        "--stamp-fields",
        "sent=timing.origin",
        "--store",
        "none",
        "--metrics-addr",
        "127.0.0.1:0",
        "--json",
        &json,
    ]);
    collector.wait_for("collector: listening").await;
    let metrics = metrics_addr(&mut collector).await;
    let load_json = scratch.path("loadgen.json").display().to_string();
    let load = run(&[
        "loadgen",
        "--broker",
        &url,
        "--devices",
        "10",
        "--rate",
        "20",
        "--duration",
        "3s",
        "--qos",
        "1",
        "--topic",
        "nodered/unit-{device}/req",
        "--client-id",
        "nr-unit-{device}",
        "--store",
        "none",
        "--json",
        &load_json,
    ])
    .await;
    assert_eq!(load.code, 0, "{}\n{}", load.stdout, load.stderr);
    let sent = u(&read_json(std::path::Path::new(&load_json)), "/load/sent");
    assert_eq!(sent, 600);
    scrape_until(&metrics, "every action received", |s| {
        total(s, "iotload_messages_received_total") == sent as f64
    })
    .await;
    collector.interrupt();
    assert_eq!(collector.exit_code().await, Some(130));
    let s = read_json(std::path::Path::new(&json));
    eprintln!("receive: {}", s["receive"]);
    assert_eq!(u(&s, "/receive/unique"), sent, "nothing lost: {s:#}");
    assert_eq!(u(&s, "/receive/future_stamps"), 0, "{s:#}");
    let undecodable: u64 = s["receive"]["undecodable"]
        .as_object()
        .map_or(0, |m| m.values().filter_map(|v| v.as_u64()).sum());
    assert_eq!(undecodable, 0, "{s:#}");
    let (p50, max) = (
        f(&s, "/receive/latency_ms/p50"),
        f(&s, "/receive/latency_ms/max"),
    );
    assert!(p50 > 0.0 && max < 5_000.0, "p50 {p50} ms, max {max} ms");
    println!("node-red flow: {sent} measured, p50 {p50} ms, max {max} ms");
    let _ = flow.kill().await;
}
