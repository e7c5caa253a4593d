//! Fleets coordinated only through the results store: loadgens advertise their topics,
//! collectors claim them one to one, and `iotload results` shows every topic.

mod common;

use common::*;
use iotload_testkit::{MqttBroker, RedisCluster, RedisServer};

#[tokio::test]
async fn two_loadgens_and_two_collectors_pair_through_redis_and_results_show_every_topic() {
    let redis = RedisServer::start().await.expect("redis starts");
    let broker = MqttBroker::start().await.expect("mosquitto starts");
    let (store, url) = (redis.url(), broker.url());
    let p = prefix("fleet").replace('/', "-");
    let run_id = format!("{p}-run");
    let (req, act) = (format!("{p}/{{device}}/t"), format!("{p}/{{device}}/a"));
    let scratch = Scratch::new();

    let mut echo = spawn(&[
        "echo-ipaas",
        "--broker",
        &url,
        "--qos",
        "1",
        "--from",
        &format!("{p}/+/t"),
        "--to",
        &act,
    ]);
    echo.wait_for("echo-ipaas:").await;

    let mut collectors = Vec::new();
    for i in 0..2 {
        let json = scratch.path(&format!("c{i}.json")).display().to_string();
        let c = spawn(&[
            "collector",
            "--broker",
            &url,
            "--qos",
            "1",
            "--store",
            &store,
            "--run-id",
            &run_id,
            "--instance",
            &format!("collector-{i}"),
            "--claim",
            "3",
            "--claim-timeout",
            "30s",
            "--lease",
            "3s",
            "--progress",
            "always",
            "--json",
            &json,
        ]);
        collectors.push(c);
    }
    // Both loadgens get the same settings but their names: `--first-device auto` gives
    // each its own block of device numbers (0-2 and 3-5, in either order).
    let mut loadgens = Vec::new();
    for i in 0..2u32 {
        let l = spawn(&[
            "loadgen",
            "--broker",
            &url,
            "--qos",
            "1",
            "--store",
            &store,
            "--run-id",
            &run_id,
            "--instance",
            &format!("loadgen-{i}"),
            "--devices",
            "3",
            "--first-device",
            "auto",
            "--topic",
            &req,
            "--action-topic",
            &act,
            "--client-id",
            &format!("{p}-{{device}}"),
            "--advertise",
            "--wait-for",
            "4",
            "--lease",
            "3s",
            "--rate",
            "20",
            "--count",
            "20",
        ]);
        loadgens.push(l);
    }
    for l in loadgens {
        assert_eq!(l.exit_code().await, Some(0));
    }
    for c in &mut collectors {
        c.wait_until(|l| received_at_least(l, 60), "received 60")
            .await;
    }
    for c in &collectors {
        c.interrupt();
    }
    let mut claimed = Vec::new();
    for (i, c) in collectors.into_iter().enumerate() {
        assert_eq!(c.exit_code().await, Some(130));
        let s = read_json(&scratch.path(&format!("c{i}.json")));
        assert_eq!(u(&s, "/receive/unique"), 60, "collector {i}: {s:#}");
        assert_eq!(u(&s, "/store/dropped"), 0);
        claimed.push(s);
    }
    echo.interrupt();
    let _ = echo.exit_code().await;

    let out = run(&["results", "show", &run_id, "--store", &store]).await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    for device in 0..6 {
        let topic = format!("{p}/{device}/a");
        let row = out
            .stdout
            .lines()
            .find(|l| l.starts_with(&format!("{topic} ")))
            .unwrap_or_else(|| panic!("{topic} missing:\n{}", out.stdout));
        let cols: Vec<&str> = row.split_whitespace().collect();
        assert_eq!(&cols[1..6], ["20", "20", "0", "0", "0"], "{row}");
    }
    for who in ["collector-0", "collector-1", "loadgen-0", "loadgen-1"] {
        assert!(out.stdout.contains(who), "{who} missing:\n{}", out.stdout);
    }
}

#[tokio::test]
async fn results_list_show_and_export_read_what_run_stored_in_sqlite() {
    let scratch = Scratch::new();
    let db = format!("sqlite://{}", scratch.path("r.db").display());
    let out = run(&[
        "run",
        "--devices",
        "3",
        "--rate",
        "20",
        "--count",
        "20",
        "--qos",
        "1",
        "--raw",
        "--store",
        &db,
        "--run-id",
        "sqlite-run",
    ])
    .await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(
        out.stdout.contains("results     sqlite://"),
        "{}",
        out.stdout
    );

    let list = run(&["results", "list", "--store", &db]).await;
    assert!(list.stdout.contains("sqlite-run"), "{}", list.stdout);

    let show = run(&["results", "show", "latest", "--store", &db]).await;
    assert_eq!(show.code, 0, "{}", show.stderr);
    for device in 0..3 {
        let row = show
            .stdout
            .lines()
            .find(|l| l.starts_with(&format!("iot/{device}/action ")))
            .unwrap_or_else(|| panic!("device {device} missing:\n{}", show.stdout));
        let cols: Vec<&str> = row.split_whitespace().collect();
        assert_eq!(&cols[1..3], ["20", "20"], "{row}");
    }

    let csv = run(&[
        "results",
        "export",
        "sqlite-run",
        "--store",
        &db,
        "--format",
        "csv",
    ])
    .await;
    assert_eq!(csv.code, 0, "{}", csv.stderr);
    assert!(
        csv.stdout
            .starts_with("run_id,topic,second,instance,sent,received"),
        "{}",
        csv.stdout
    );
    let received: u64 = csv
        .stdout
        .lines()
        .skip(1)
        .map(|l| l.split(',').nth(5).unwrap().parse::<u64>().unwrap())
        .sum();
    assert_eq!(received, 60);

    let raw = run(&["results", "export", "latest", "--store", &db, "--raw"]).await;
    assert_eq!(raw.stdout.lines().count(), 61, "{}", raw.stdout);

    let hdr = run(&[
        "results", "export", "latest", "--store", &db, "--format", "hdr",
    ])
    .await;
    assert_eq!(hdr.code, 0, "{}", hdr.stderr);
    assert!(hdr.stdout.contains("Tag=iot/0/action"), "{}", hdr.stdout);

    let missing = run(&["results", "show", "nope", "--store", &db]).await;
    assert_eq!(missing.code, 2);
    assert!(
        missing.stderr.contains("no run `nope`"),
        "{}",
        missing.stderr
    );
}

/// `--store-by instance` on a Redis Cluster: one row per second for all topics (topic
/// `*`), read back by `results` and the plotter, adding up to what was sent.
#[tokio::test]
async fn rows_per_instance_on_a_redis_cluster_add_up_every_topic() {
    let cluster = RedisCluster::start(3, 0)
        .await
        .expect("redis cluster starts");
    let store = cluster.url();
    let scratch = Scratch::new();
    let out = run(&[
        "run",
        "--devices",
        "5",
        "--rate",
        "20",
        "--count",
        "40",
        "--qos",
        "1",
        "--store",
        &store,
        "--store-by",
        "instance",
        "--run-id",
        "by-instance",
    ])
    .await;
    assert_eq!(out.code, 0, "{}", out.stderr);

    let csv = run(&[
        "results",
        "export",
        "by-instance",
        "--store",
        &store,
        "--format",
        "csv",
    ])
    .await;
    assert_eq!(csv.code, 0, "{}", csv.stderr);
    let rows: Vec<Vec<&str>> = csv
        .stdout
        .lines()
        .skip(1)
        .map(|l| l.split(',').collect())
        .collect();
    assert!(!rows.is_empty(), "{}", csv.stdout);
    assert!(rows.iter().all(|r| r[1] == "*"), "{}", csv.stdout);
    let sum =
        |column: usize| -> u64 { rows.iter().map(|r| r[column].parse::<u64>().unwrap()).sum() };
    assert_eq!(
        (sum(4), sum(5)),
        (200, 200),
        "sent, received:\n{}",
        csv.stdout
    );

    let show = run(&["results", "show", "by-instance", "--store", &store]).await;
    assert_eq!(show.code, 0, "{}", show.stderr);
    let row = show
        .stdout
        .lines()
        .find(|l| l.starts_with("* "))
        .unwrap_or_else(|| panic!("no `*` row:\n{}", show.stdout));
    let cols: Vec<&str> = row.split_whitespace().collect();
    assert_eq!(&cols[1..3], ["200", "200"], "{row}");

    let jsonl = scratch.path("docs.jsonl");
    let plot = run(&[
        "plotter",
        "--store",
        &store,
        "--run",
        "by-instance",
        "--jsonl",
        &jsonl.display().to_string(),
    ])
    .await;
    assert_eq!(plot.code, 0, "{}", plot.stderr);
    let docs = std::fs::read_to_string(&jsonl).unwrap();
    let received: u64 = docs
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|d| d["topic"] == "*")
        .map(|d| d["received"].as_u64().unwrap_or(0))
        .sum();
    assert_eq!(received, 200, "{docs}");
}

#[tokio::test]
async fn an_unreachable_or_misaddressed_store_is_named_with_the_fix() {
    let port = iotload_testkit::free_port();
    let store = format!("redis://127.0.0.1:{port}/0");
    let out = run(&["run", "--store", &store, "--duration", "1s"]).await;
    assert_eq!(out.code, 2);
    assert!(
        out.stderr.contains(&format!("127.0.0.1:{port}")) && out.stderr.contains("--store none"),
        "{}",
        out.stderr
    );
    let out = run(&["run", "--store", "postgres://x/y", "--duration", "1s"]).await;
    assert_eq!(out.code, 2);
    assert!(
        out.stderr.contains("bad store URL") && out.stderr.contains("redis://"),
        "{}",
        out.stderr
    );
}

#[tokio::test]
async fn first_device_auto_without_a_store_says_what_it_needs() {
    let out = run(&[
        "loadgen",
        "--broker",
        "mqtt://127.0.0.1:1",
        "--first-device",
        "auto",
        "--store",
        "none",
    ])
    .await;
    assert_ne!(out.code, 0);
    assert!(
        out.stderr.contains("--first-device auto") && out.stderr.contains("--store redis://"),
        "{}",
        out.stderr
    );
    let out = run(&["loadgen", "--first-device", "first", "--dry-run"]).await;
    assert_ne!(out.code, 0);
    assert!(
        out.stderr.contains("neither a device number") && out.stderr.contains("auto"),
        "{}",
        out.stderr
    );
}

/// A collector that finds nothing to claim does not wait for ever: when --claim-timeout
/// ends it exits 2 and says what to start.
#[tokio::test]
async fn a_collector_with_nothing_to_claim_exits_when_its_claim_timeout_ends() {
    let redis = RedisServer::start().await.expect("redis starts");
    let broker = MqttBroker::start().await.expect("mosquitto starts");
    let (store, url) = (redis.url(), broker.url());
    let args = [
        "collector",
        "--broker",
        &url,
        "--store",
        &store,
        "--claim",
        "2",
        "--claim-timeout",
        "2s",
    ];
    let out = tokio::time::timeout(std::time::Duration::from_secs(60), run(&args))
        .await
        .expect("the collector gives up within a minute of its 2 s claim timeout");
    assert_eq!(out.code, 2, "{}", out.stderr);
    assert!(
        out.stderr
            .contains("no advertised topic could be claimed within 2 s")
            && out.stderr.contains("--advertise"),
        "{}",
        out.stderr
    );
}
