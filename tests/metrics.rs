//! Live `/metrics` (`--metrics-addr`) of the standalone components on a private
//! Mosquitto: the loadgen's counters while it sends, the echo's and the collector's once
//! every message went through; checked by `promtool check metrics` (Prometheus' own
//! parser and linter) and against docs/metrics.md.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::{BTreeMap, BTreeSet};

use common::*;
use iotload_testkit::MqttBroker;

/// Every `iotload_*` name in the table of docs/metrics.md.
/// The metrics docs/metrics.md lists for the components' live endpoint.
fn documented_names() -> BTreeSet<String> {
    let doc = include_str!("../docs/metrics.md");
    doc.lines()
        .filter(|l| {
            l.split('|')
                .nth(3)
                .is_some_and(|endpoint| endpoint.contains("live"))
        })
        .filter_map(|l| l.strip_prefix("| `iotload_"))
        .filter_map(|l| l.split('`').next())
        .map(|n| format!("iotload_{n}"))
        .collect()
}

/// Buckets of one histogram series set are cumulative and end at `_count`.
fn assert_histogram(samples: &BTreeMap<String, f64>, name: &str, labels: &str, count: f64) {
    let mut buckets: Vec<(f64, f64)> = samples
        .iter()
        .filter(|(s, _)| s.starts_with(&format!("{name}_bucket{{{labels},le=")))
        .map(|(s, v)| {
            let le = s.split("le=\"").nth(1).unwrap().trim_end_matches("\"}");
            let bound = match le {
                "+Inf" => f64::INFINITY,
                _ => le.parse().unwrap(),
            };
            (bound, *v)
        })
        .collect();
    buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
    let buckets: Vec<f64> = buckets.into_iter().map(|(_, v)| v).collect();
    assert!(
        buckets.len() > 10,
        "{name}{{{labels}}} buckets: {buckets:?}"
    );
    assert!(
        buckets.windows(2).all(|w| w[0] <= w[1]),
        "{name} buckets are not cumulative: {buckets:?}"
    );
    assert_eq!(*buckets.last().unwrap(), count, "{name}{{{labels}}} +Inf");
    assert_eq!(samples[&format!("{name}_count{{{labels}}}")], count);
}

#[tokio::test]
async fn every_component_serves_live_metrics_that_prometheus_accepts() {
    let broker = MqttBroker::start().await.expect("mosquitto starts");
    let url = broker.url();
    let scratch = Scratch::new();
    let store = format!("sqlite://{}", scratch.path("r.db").display());
    let mut collector = spawn(&[
        "collector",
        "--broker",
        &url,
        "--store",
        &store,
        "--run-id",
        "live",
        "--metrics-addr",
        "127.0.0.1:0",
        "--metrics-topic-labels",
        "--progress",
        "never",
    ]);
    collector.wait_for("collector: listening").await;
    let collector_addr = metrics_addr(&mut collector).await;
    let mut echo = spawn(&[
        "echo-ipaas",
        "--broker",
        &url,
        "--metrics-addr",
        "127.0.0.1:0",
        "--progress",
        "never",
    ]);
    echo.wait_for("echo-ipaas:").await;
    let echo_addr = metrics_addr(&mut echo).await;
    let mut loadgen = spawn(&[
        "loadgen",
        "--broker",
        &url,
        "--devices",
        "5",
        "--rate",
        "50",
        "--count",
        "100",
        "--store",
        "none",
        "--run-id",
        "live",
        "--metrics-addr",
        "127.0.0.1:0",
        "--progress",
        "never",
    ]);
    let loadgen_addr = metrics_addr(&mut loadgen).await;
    let load_text = scrape_until(&loadgen_addr, "5 devices sending", |s| {
        total(s, "iotload_devices_connected") == 5.0
            && total(s, "iotload_messages_sent_total") > 0.0
    })
    .await;
    assert!(
        load_text.contains("iotload_messages_sent_total{run=\"live\"}"),
        "{load_text}"
    );
    assert_eq!(loadgen.exit_code().await, Some(0));

    let echo_text = scrape_until(&echo_addr, "500 echoed", |s| {
        total(s, "iotload_echo_published_total") == 500.0
    })
    .await;
    let text = scrape_until(&collector_addr, "500 received", |s| {
        total(s, "iotload_messages_received_total") == 500.0
    })
    .await;
    let s = samples(&text);
    let topics: Vec<&String> = s
        .keys()
        .filter(|k| k.starts_with("iotload_messages_received_total{"))
        .collect();
    assert_eq!(topics.len(), 5, "one series per topic: {topics:?}");
    for device in 0..5 {
        let labels = format!("run=\"live\",topic=\"iot/{device}/action\"");
        assert_eq!(
            s[&format!("iotload_messages_received_total{{{labels}}}")],
            100.0
        );
        assert_histogram(&s, "iotload_latency_seconds", &labels, 100.0);
        assert_histogram(&s, "iotload_latency_corrected_seconds", &labels, 100.0);
    }
    assert_eq!(total(&s, "iotload_sequence_gaps_total"), 0.0);
    assert_eq!(total(&s, "iotload_messages_duplicate_total"), 0.0);
    collector.interrupt();
    assert_eq!(collector.exit_code().await, Some(130));
    echo.interrupt();
    let _ = echo.exit_code().await;

    let mut exposed = BTreeSet::new();
    for body in [&load_text, &echo_text, &text] {
        promtool_accepts(body).await;
        for line in body.lines().filter(|l| l.starts_with("# TYPE ")) {
            exposed.insert(line.split_whitespace().nth(2).unwrap().to_string());
        }
    }
    assert_eq!(
        exposed,
        documented_names(),
        "docs/metrics.md lists exactly what the components expose"
    );
}

#[tokio::test]
async fn metrics_addr_that_cannot_be_bound_is_a_clear_error() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let out = run(&["run", "--duration", "1s", "--metrics-addr", &addr]).await;
    assert_eq!(out.code, 2, "{}", out.stderr);
    assert!(
        out.stderr
            .contains(&format!("cannot listen on --metrics-addr {addr}")),
        "{}",
        out.stderr
    );
}

#[tokio::test]
async fn an_idle_client_does_not_hold_up_a_scrape() {
    // A connection that never sends its request (a port scanner, a stuck proxy) used to
    // block every scrape behind it: the server answered one connection at a time.
    let broker = MqttBroker::start().await.expect("mosquitto starts");
    let mut collector = spawn(&[
        "collector",
        "--broker",
        &broker.url(),
        "--store",
        "none",
        "--metrics-addr",
        "127.0.0.1:0",
        "--progress",
        "never",
    ]);
    collector.wait_for("collector: listening").await;
    let addr = metrics_addr(&mut collector).await;
    let idle = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let half_sent = {
        use tokio::io::AsyncWriteExt;
        let mut slow = tokio::net::TcpStream::connect(&addr).await.unwrap();
        slow.write_all(b"GET /metrics HTTP/1.0\r\n").await.unwrap();
        slow
    };
    let scrape = tokio::time::timeout(
        std::time::Duration::from_secs(3),
        http_get(&addr, "/metrics"),
    )
    .await
    .expect("a scrape must not wait for an idle connection");
    let (status, body) = scrape.expect("the scrape is answered");
    assert!(status.contains("200"), "{status}");
    assert!(body.contains("iotload_"), "{body}");
    drop((idle, half_sent));
    collector.child.kill().await.unwrap();
}
