//! Faults injected into real servers mid-run (issue #6): a broker frozen for a second, a
//! broker killed and restarted. The run must survive, report what happened, and store
//! what it measured.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::*;
use iotload_testkit::{MqttBroker, NatsServer};

/// `iotload run` on `url`, 10 devices at `rate` msg/s each, with the progress line every
/// second, until `received` messages arrived; returns the running process.
async fn run_until_received(
    url: &str,
    scratch: &Scratch,
    rate: &str,
    extra: &[&str],
    received: u64,
) -> Proc {
    let json = scratch.json();
    let store = format!("sqlite://{}", scratch.path("r.db").display());
    let mut args = vec![
        "run",
        "--broker",
        url,
        "--devices",
        "10",
        "--rate",
        rate,
        "--progress",
        "always",
        "--store",
        &store,
        "--run-id",
        "fault",
        "--json",
        &json,
    ];
    args.extend_from_slice(extra);
    let mut p = spawn(&args);
    p.wait_until(|l| received_at_least(l, received), "messages received")
        .await;
    p
}

/// The coordinated-omission check: with QoS 1, one message in flight and one queued per
/// device, a broker frozen for 1 s blocks the senders, so the raw latency (from the actual
/// send) stays small for all but a few messages while the corrected latency (from the
/// intended send) shows the stall. (With the default 1024-message client queue, sends do
/// not block, and the raw latency shows the stall as well.)
#[tokio::test]
async fn a_broker_frozen_for_one_second_shows_in_corrected_latency_only() {
    let broker = MqttBroker::start().await.expect("mosquitto starts");
    let scratch = Scratch::new();
    // 500 msg/s, not 1,000: at 1,000 a containerised Mosquitto (which queues at most 1,000
    // QoS 1 messages per subscriber) dropped 61 during the catch-up after the stall; the
    // likely reason, not yet measured: with --inflight 1 every client of the run, the
    // echo's included, sends one message per round trip over the container bridge. 8 s
    // keeps 4,000 messages, so the 20 that waited out the stall in flight or queued stay
    // above the raw p99.
    let p = run_until_received(
        &broker.url(),
        &scratch,
        "50",
        &[
            "--duration",
            "8s",
            "--qos",
            "1",
            "--inflight",
            "1",
            "--queue-capacity",
            "1",
            // The drain ends when the last message arrives; the bound is only for a
            // loaded machine, where 2 s (the default) once cut it short.
            "--drain-timeout",
            "30s",
        ],
        500,
    )
    .await;
    broker.pause().unwrap();
    tokio::time::sleep(Duration::from_secs(1)).await;
    broker.resume().unwrap();
    assert_eq!(p.exit_code().await, Some(0));
    let s = scratch.summary();
    eprintln!("load: {}\nreceive: {}", s["load"], s["receive"]);
    let raw_p99 = f(&s, "/receive/latency_ms/p99");
    let corrected_p99 = f(&s, "/receive/latency_corrected_ms/p99");
    let corrected_max = f(&s, "/receive/latency_corrected_ms/max");
    assert!(
        (900.0..1600.0).contains(&corrected_max),
        "corrected max {corrected_max} ms should be the 1 s stall: {s:#}"
    );
    assert!(
        corrected_p99 >= 800.0,
        "corrected p99 {corrected_p99} ms should show the stall: {s:#}"
    );
    // Without the correction both would be the stall (≈ 1 s). The raw p99 is the catch-up
    // burst after the stall draining through broker, echo and collector: 129 ms beside the
    // other fault tests here, 258 ms once in CI (a quarter of the corrected p99 was too
    // tight).
    assert!(
        raw_p99 < corrected_p99 / 2.0,
        "raw p99 {raw_p99} ms vs corrected {corrected_p99} ms: the senders were blocked, \
         so raw latency hides most of the stall"
    );
    assert_eq!(u(&s, "/receive/lost"), 0, "QoS 1 loses nothing: {s:#}");
    assert!(
        f(&s, "/load/send_lag_ms/max") >= 900.0,
        "the blocked sends show as send lag: {s:#}"
    );
}

/// A broker killed mid-run and started again on the same port: every device reconnects,
/// the run goes on to its end, the summary counts the disconnections, and what the store
/// holds equals what the summary printed.
#[tokio::test]
async fn a_broker_killed_and_restarted_mid_run_is_survived_and_reported() {
    let mut broker = MqttBroker::start().await.expect("mosquitto starts");
    let scratch = Scratch::new();
    let p = run_until_received(&broker.url(), &scratch, "100", &["--duration", "6s"], 1000).await;
    broker.stop().await.unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    broker.restart().await.unwrap();
    let code = p.exit_code().await;
    let s = scratch.summary();
    eprintln!("load: {}\nreceive: {}", s["load"], s["receive"]);
    assert_eq!(code, Some(0), "{s:#}");
    assert_eq!(
        u(&s, "/load/disconnections"),
        10,
        "every device lost its connection once (one outage, however many attempts): {s:#}"
    );
    assert_eq!(
        u(&s, "/receive/disconnections"),
        1,
        "the collector lost its connection once: {s:#}"
    );
    assert!(
        f(&s, "/load/disconnected_s") > 10.0 * 0.3,
        "each device was down for at least the 0.5 s the broker was: {s:#}"
    );
    let planned = u(&s, "/load/planned");
    let received = u(&s, "/receive/unique");
    assert!(
        received > planned / 2 && received <= planned,
        "messages before and after the restart arrive: \
         {received} of {planned}: {s:#}"
    );
    assert_eq!(
        u(&s, "/receive/lost") + received,
        u(&s, "/load/sent"),
        "every sent message is either received or counted lost: {s:#}"
    );

    // The store holds exactly what the summary says.
    let store = format!("sqlite://{}", scratch.path("r.db").display());
    let docs = stored_documents(&store, "fault").await;
    let stored: u64 = docs.iter().map(|d| u(d, "/received")).sum();
    assert_eq!(stored, u(&s, "/receive/received"), "stored vs printed");
}

/// What another client publishes onto the collector's topics: (kind, payload).
fn hostile_payloads(now_us: u64) -> Vec<(&'static str, Vec<u8>)> {
    let mut rng = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = move || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    let mut out = Vec::new();
    for i in 0..10_000u64 {
        let item = match i % 8 {
            0 => ("random", (0..64).map(|_| next() as u8 | 0x80).collect()),
            1 => ("truncated", br#"{"device":1,"seq":"#.to_vec()),
            2 => (
                "wrong_type",
                // (A string device id is valid since #22; an array is no id at all.)
                format!(r#"{{"device":["d{i}"],"seq":{i},"intended_us":1,"sent_us":1}}"#)
                    .into_bytes(),
            ),
            3 => ("missing", format!(r#"{{"device":{i}}}"#).into_bytes()),
            4 => ("not_object", b"[1,2,3]".to_vec()),
            5 => ("empty", Vec::new()),
            6 if i % 400 == 6 => ("huge", vec![b'{'; 1 << 20]),
            6 => (
                "negative",
                br#"{"device":-1,"seq":-5,"intended_us":-1,"sent_us":-1}"#.to_vec(),
            ),
            _ => (
                "future",
                format!(
                    r#"{{"device":7,"seq":{},"intended_us":{t},"sent_us":{t}}}"#,
                    i / 8,
                    t = now_us + 3_600_000_000
                )
                .into_bytes(),
            ),
        };
        out.push(item);
    }
    out
}

/// How many QoS 1 messages Mosquitto queues for a subscriber (its default
/// `max_queued_messages`) before it drops new ones.
const BROKER_QUEUE: usize = 1000;

/// 10,000 malformed or foreign messages (random bytes, truncated JSON, wrong types,
/// missing fields, JSON that is not an object (counted as not_json, like the body
/// decoder's tests say), empty and 1 MiB payloads, stamps an hour in the future) published onto
/// a collector's topics by another client: all counted, by kind, no crash, memory bounded.
#[tokio::test]
async fn ten_thousand_hostile_messages_are_counted_by_kind_without_harm() {
    let broker = MqttBroker::start().await.expect("mosquitto starts");
    let scratch = Scratch::new();
    let json = scratch.json();
    let mut collector = spawn(&[
        "collector",
        "--broker",
        &broker.url(),
        "--topic",
        "hostile/+/action",
        "--qos",
        "1",
        "--store",
        "none",
        "--metrics-addr",
        "127.0.0.1:0",
        "--progress",
        "never",
        "--json",
        &json,
    ]);
    collector.wait_for("collector: listening").await;
    let metrics = metrics_addr(&mut collector).await;

    let now_us = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_micros() as u64;
    let payloads = hostile_payloads(now_us);
    let mut expected: std::collections::BTreeMap<&str, u64> = Default::default();
    for (kind, _) in &payloads {
        *expected.entry(kind).or_default() += 1;
    }
    let (host, port) = broker
        .url()
        .trim_start_matches("mqtt://")
        .rsplit_once(':')
        .map(|(h, p)| (h.to_string(), p.parse::<u16>().unwrap()))
        .unwrap();
    let mut options = rumqttc::MqttOptions::new("hostile-publisher", host, port);
    options.set_max_packet_size(4 << 20, 4 << 20);
    let (client, mut events) = rumqttc::AsyncClient::new(options, 100);
    let connection = tokio::spawn(async move {
        loop {
            match events.poll().await {
                Ok(rumqttc::Event::Outgoing(rumqttc::Outgoing::Disconnect)) => break,
                Ok(_) => {}
                Err(e) => panic!("the hostile publisher lost its connection: {e}"),
            }
        }
    });
    // Sent BROKER_QUEUE at a time, each batch received before the next: on a loaded
    // machine the collector (decoding 1 MiB payloads among them) fell further behind than
    // that. The collector's received counter is updated once a second.
    let count = payloads.len();
    for (n, (_, payload)) in payloads.into_iter().enumerate() {
        client
            .publish(
                format!("hostile/{}/action", n % 7),
                rumqttc::QoS::AtLeastOnce,
                false,
                payload,
            )
            .await
            .unwrap();
        let sent = n + 1;
        if sent % BROKER_QUEUE == 0 || sent == count {
            scrape_until(&metrics, &format!("{sent} received"), |s| {
                total(s, "iotload_messages_received_total") == sent as f64
            })
            .await;
        }
    }
    client.disconnect().await.unwrap();
    connection.await.unwrap();
    collector.interrupt();
    assert_eq!(collector.exit_code().await, Some(130));

    let s = scratch.summary();
    eprintln!("receive: {}\nprocess: {}", s["receive"], s["process"]);
    assert_eq!(u(&s, "/receive/received"), 10_000, "{s:#}");
    let undecodable = &s["receive"]["undecodable"];
    let by_kind = |k: &str| undecodable[k].as_u64().unwrap_or(0);
    let total: u64 = undecodable
        .as_object()
        .unwrap()
        .values()
        .map(|v| v.as_u64().unwrap())
        .sum();
    assert_eq!(
        total + u(&s, "/receive/future_stamps"),
        10_000,
        "every message is counted as undecodable or as a future stamp: {s:#}"
    );
    assert_eq!(u(&s, "/receive/future_stamps"), expected["future"], "{s:#}");
    assert_eq!(
        by_kind("not_json"),
        expected["random"]
            + expected["truncated"]
            + expected["empty"]
            + expected["huge"]
            + expected["not_object"],
        "{s:#}"
    );
    assert_eq!(by_kind("missing_field"), expected["missing"], "{s:#}");
    assert_eq!(
        by_kind("wrong_type"),
        expected["wrong_type"] + expected["negative"],
        "{s:#}"
    );
    assert_eq!(
        u(&s, "/receive/lost"),
        0,
        "future stamps carry one device's gap-free sequence: {s:#}"
    );
    assert_eq!(
        u(&s, "/receive/latency_ms/count"),
        0,
        "nothing was measured"
    );
    assert!(
        f(&s, "/process/peak_rss_mib") < 150.0,
        "memory stays bounded: {s:#}"
    );
}

/// SIGTERM mid-run, then a second signal during the drain: the drain is cut short (the
/// echo holds every message 10 s, so a full drain would take that long), and still the
/// summary is written, the exit code is 130 and the store holds what the summary says.
#[tokio::test]
async fn a_second_signal_shortens_the_drain_but_results_are_flushed() {
    let scratch = Scratch::new();
    let store = format!("sqlite://{}", scratch.path("r.db").display());
    let json = scratch.json();
    let mut p = spawn(&[
        "run",
        "--devices",
        "5",
        "--rate",
        "50",
        "--duration",
        "60s",
        "--delay",
        "10s",
        "--drain-timeout",
        "60s",
        "--progress",
        "always",
        "--store",
        &store,
        "--run-id",
        "signals",
        "--json",
        &json,
    ]);
    p.wait_until(|l| received_at_least(l, 200), "received 200")
        .await;
    p.signal("-TERM");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let second = std::time::Instant::now();
    p.signal("-INT");
    let code = p.exit_code().await;
    let took = second.elapsed();
    assert_eq!(code, Some(130));
    // A full drain would take about 9.7 s more (the echo's hold).
    assert!(
        took < Duration::from_secs(5),
        "the second signal should end the 10 s drain early, took {took:?}"
    );
    let s = scratch.summary();
    assert!(s["interrupted"].as_bool().unwrap());
    assert!(
        u(&s, "/receive/lost") > 0,
        "the cut drain leaves messages in the echo: {s:#}"
    );

    let docs = stored_documents(&store, "signals").await;
    let sum = |field: &str| -> u64 { docs.iter().map(|d| u(d, field)).sum() };
    assert_eq!(
        sum("/received"),
        u(&s, "/receive/received"),
        "stored vs printed"
    );
    assert_eq!(sum("/sent"), u(&s, "/load/sent"), "stored vs printed");
}

/// A cgroup (v1 `cpu` controller) that caps the CPU time of the processes put in it;
/// removed on drop. `None` where one cannot be made (not root, no v1 cpu hierarchy).
struct CpuCap {
    dir: std::path::PathBuf,
}

impl CpuCap {
    /// At most `quota_us` (1,000 or more) of CPU time in every 200 ms: short periods spread the little
    /// CPU over each second, so every thread of the process (the collector's socket
    /// sampler too) still runs now and then.
    fn new(name: &str, quota_us: u32) -> Option<Self> {
        let dir = std::path::Path::new("/sys/fs/cgroup/cpu").join(name);
        std::fs::create_dir(&dir).ok()?;
        let cap = Self { dir };
        std::fs::write(cap.dir.join("cpu.cfs_period_us"), "200000").ok()?;
        std::fs::write(cap.dir.join("cpu.cfs_quota_us"), quota_us.to_string()).ok()?;
        Some(cap)
    }

    fn add(&self, pid: u32) {
        std::fs::write(self.dir.join("cgroup.procs"), pid.to_string()).unwrap();
    }
}

impl Drop for CpuCap {
    fn drop(&mut self) {
        // The capped process has exited by now; an empty cgroup can be removed.
        let _ = std::fs::remove_dir(&self.dir);
    }
}

/// A collector on `url` (with `extra` options) held to 5 ms of CPU per second by a cgroup
/// while a loadgen sends 10 devices × 1,000 msg/s for 4 s (40,000 messages); the
/// collector's summary, or `None` outside CI where no cpu cgroup can be made.
async fn slow_collector(url: &str, extra: &[&str]) -> Option<serde_json::Value> {
    let scratch = Scratch::new();
    let json = scratch.json();
    let mut args = vec![
        "collector",
        "--broker",
        url,
        "--topic",
        "slow/+/action",
        "--duration",
        "8s",
        "--store",
        "none",
        "--progress",
        "never",
        "--json",
        &json,
    ];
    args.extend_from_slice(extra);
    let mut collector = spawn(&args);
    collector.wait_for("collector: listening").await;
    let pid = collector.child.id().unwrap();
    let Some(cap) = CpuCap::new(&format!("iotload-test-{pid}"), 1000) else {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "cannot create a cpu cgroup under /sys/fs/cgroup/cpu (needs root and cgroup v1)"
        );
        eprintln!("skipped: no cpu cgroup");
        return None;
    };
    cap.add(pid);
    let out = run(&[
        "loadgen",
        "--broker",
        url,
        "--devices",
        "10",
        "--rate",
        "1000",
        "--duration",
        "4s",
        "--topic",
        "slow/{device}/action",
        "--store",
        "none",
    ])
    .await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(collector.exit_code().await, Some(0));
    drop(cap);
    let s = scratch.summary();
    eprintln!("receive: {}\nprocess: {}", s["receive"], s["process"]);
    Some(s)
}

/// A slow consumer: a collector held to 5 ms of CPU per second while 10,000 msg/s arrive
/// for 4 s. The backlog stays in the broker and the socket, not in iotload: its memory
/// stays flat, the latency it reports includes the time messages waited for it, and it
/// says it fell behind: its socket held 32 KiB or more unread for seconds.
#[tokio::test]
async fn a_collector_that_cannot_keep_up_keeps_its_memory_bounded() {
    let broker = MqttBroker::start().await.expect("mosquitto starts");
    let Some(s) = slow_collector(&broker.url(), &[]).await else {
        return;
    };
    let received = u(&s, "/receive/unique");
    assert!(
        received < 40_000,
        "a collector at 5 ms of CPU per second cannot take 40,000 messages in 8 s: {s:#}"
    );
    assert!(
        f(&s, "/receive/latency_ms/p99") > 1000.0,
        "the wait for the slow collector shows in the latency: {s:#}"
    );
    assert!(
        f(&s, "/process/peak_rss_mib") < 64.0,
        "memory stays bounded while messages wait: {s:#}"
    );
    assert!(
        f(&s, "/receive/socket_backlog_behind_s") >= 2.0,
        "the unread backlog is reported: {s:#}"
    );
    let warnings = s["warnings"].to_string();
    assert!(warnings.contains("the receiver fell behind"), "{warnings}");
}

/// The same slow consumer on NATS: the client buffers up to --queue-capacity messages per
/// subscription and drops the rest; the collector counts those drops, warns, and its
/// memory stays bounded by the buffer.
#[tokio::test]
async fn a_slow_nats_collector_counts_what_its_client_dropped() {
    let nats = NatsServer::start().await.expect("nats-server starts");
    let Some(s) = slow_collector(&nats.url(), &["--queue-capacity", "1000"]).await else {
        return;
    };
    let dropped = u(&s, "/receive/dropped_by_client");
    assert!(dropped > 0, "the full buffer dropped messages: {s:#}");
    assert!(u(&s, "/receive/unique") + dropped <= 40_000, "{s:#}");
    let warnings = s["warnings"].to_string();
    assert!(
        warnings.contains("the collector could not keep up"),
        "{warnings}"
    );
    assert!(
        f(&s, "/process/peak_rss_mib") < 64.0,
        "memory is bounded by the buffer: {s:#}"
    );
}
