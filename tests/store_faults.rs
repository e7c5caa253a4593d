//! The results store failing mid-run: records wait in the bounded buffer and are written
//! when it returns, or are counted as dropped when the buffer overflows.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::*;
use iotload_core::store::Backend;
use iotload_testkit::RedisServer;
use tokio_util::sync::CancellationToken;

#[tokio::test]
async fn redis_stopped_and_restarted_mid_run_loses_nothing_within_the_buffer() {
    let mut redis = RedisServer::start().await.expect("redis starts");
    let store = redis.url();
    let scratch = Scratch::new();
    let json = scratch.json();
    let mut run = spawn(&[
        "run",
        "--devices",
        "5",
        "--rate",
        "20",
        "--duration",
        "40s",
        "--qos",
        "1",
        "--raw",
        "--store",
        &store,
        "--run-id",
        "outage",
        "--progress",
        "always",
        "--json",
        &json,
    ]);
    run.wait_until(|l| received_at_least(l, 50), "received 50")
        .await;
    redis.stop().await.expect("redis stops");
    // The run goes on while the store is away for 30 s (100 msg/s: 3,000 messages).
    run.wait_until(|l| received_at_least(l, 3050), "received 3050")
        .await;
    redis.restart().await.expect("redis restarts");
    assert_eq!(run.exit_code().await, Some(0));
    let s = scratch.summary();
    assert_valid_summary(&s);
    assert_eq!(u(&s, "/store/dropped"), 0, "{s:#}");
    assert_eq!(u(&s, "/store/unflushed"), 0, "{s:#}");
    assert!(
        u(&s, "/store/failures") > 0,
        "the outage was noticed: {s:#}"
    );
    // Every message is in the store: raw records and per-second counts.
    assert_eq!(u(&s, "/store/raw_written"), u(&s, "/receive/unique"));
    let csv = run_results(&store, &["export", "outage", "--format", "csv"]).await;
    let received: u64 = csv
        .lines()
        .skip(1)
        .map(|l| l.split(',').nth(5).unwrap().parse::<u64>().unwrap())
        .sum();
    assert_eq!(received, u(&s, "/receive/received"));
    let raw = run_results(&store, &["export", "outage", "--raw"]).await;
    assert_eq!(raw.lines().count() as u64 - 1, u(&s, "/receive/unique"));
}

#[tokio::test]
async fn a_full_buffer_counts_exactly_what_it_dropped() {
    let mut redis = RedisServer::start().await.expect("redis starts");
    let store = redis.url();
    let scratch = Scratch::new();
    let json = scratch.json();
    let mut run = spawn(&[
        "run",
        "--devices",
        "5",
        "--rate",
        "50",
        "--duration",
        "4s",
        "--raw",
        "--store-buffer",
        "100",
        "--store",
        &store,
        "--run-id",
        "overflow",
        "--progress",
        "always",
        "--json",
        &json,
    ]);
    run.wait_until(|l| received_at_least(l, 20), "received 20")
        .await;
    redis.stop().await.expect("redis stops");
    run.wait_until(|l| received_at_least(l, 600), "received 600")
        .await;
    redis.restart().await.expect("redis restarts");
    assert_eq!(run.exit_code().await, Some(0));
    let s = scratch.summary();
    let dropped = u(&s, "/store/dropped");
    assert!(dropped > 0, "{s:#}");
    assert!(
        s["warnings"].to_string().contains("were not stored"),
        "{s:#}"
    );
    let raw = run_results(&store, &["export", "overflow", "--raw"]).await;
    let stored = raw.lines().count() as u64 - 1;
    assert_eq!(stored, u(&s, "/store/raw_written"));
    assert!(stored < u(&s, "/receive/unique"));
}

async fn run_results(store: &str, args: &[&str]) -> String {
    let mut all = vec!["results", "--store", store];
    all.extend(args);
    let out = run(&all).await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    out.stdout
}

/// A collector claiming its topics while Redis is frozen for longer than the store's
/// response timeout (10 s): each claim is given up after 5 s and asked again, and once
/// Redis answers the collector holds every topic (before, the claim failed the collector,
/// and against a Redis Cluster node whose answer never came it waited for ever).
#[tokio::test]
async fn claims_asked_while_redis_is_frozen_are_asked_again() {
    let (redis, store) = redis_store().await;
    let topics: Vec<String> = (0..3).map(|i| format!("frozen/{i}")).collect();
    store
        .advertise(&topics, "loadgen", Duration::from_secs(120))
        .await
        .expect("advertised");
    redis.pause().expect("redis freezes");
    let claiming = tokio::spawn({
        let store = Arc::clone(&store);
        async move {
            // A short lease: the claims whose answers were given up run out quickly.
            let lease = Duration::from_secs(2);
            let never = CancellationToken::new();
            let timeout = Duration::from_secs(60);
            collector::claims::claim_topics(&store, 3, "collector", lease, timeout, &never).await
        }
    });
    // The fault itself: frozen for longer than the store's response timeout.
    tokio::time::sleep(Duration::from_secs(12)).await;
    redis.resume().expect("redis resumes");
    let held = tokio::time::timeout(Duration::from_secs(30), claiming)
        .await
        .expect("the claims end once Redis answers")
        .expect("the claiming task")
        .expect("claiming goes on through the freeze");
    assert_eq!(held, topics);
}

/// A store that stops answering while the writer flushes: the run's end waits for the
/// flush deadline, not for the store's response timeout (10 s) or for ever, and every
/// record left unwritten is counted.
#[tokio::test]
async fn a_frozen_store_holds_the_writers_end_no_longer_than_its_flush_deadline() {
    use iotload_core::store::TopicSecond;
    use iotload_core::store::writer::{Record, StoreWriter};
    let (redis, store) = redis_store().await;
    let writer = StoreWriter::spawn(store, "frozen".into(), 1_000);
    redis.pause().expect("redis freezes");
    for topic in 0..10 {
        writer.offer(Record::Second(TopicSecond {
            run_id: "frozen".into(),
            topic: format!("frozen/{topic}"),
            second: 1_000,
            instance: "writer".into(),
            sent: 1,
            ..TopicSecond::default()
        }));
    }
    let started = std::time::Instant::now();
    let report = writer.finish(Duration::from_secs(2)).await;
    let took = started.elapsed();
    redis.resume().expect("redis resumes");
    assert_eq!(report.seconds_written, 0, "{report:?}");
    assert_eq!(report.unflushed, 10, "{report:?}");
    assert!(
        took < Duration::from_secs(6),
        "finish took {took:?} for a 2 s deadline"
    );
}

/// A fresh Redis server and the store opened on it.
async fn redis_store() -> (RedisServer, Arc<dyn Backend>) {
    let redis = RedisServer::start().await.expect("redis starts");
    let store = iotload_core::store::open(&redis.url())
        .await
        .expect("store opens");
    (redis, store)
}
