use std::time::Instant;

use super::*;

fn url_of(dir: &tempfile::TempDir) -> String {
    format!("sqlite://{}", dir.path().join("results.db").display())
}

async fn fresh() -> (tempfile::TempDir, SqliteStore) {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(&url_of(&dir)).await.unwrap();
    (dir, store)
}

fn run(run_id: &str, instance: &str, started_us: u64) -> RunRecord {
    RunRecord {
        run_id: run_id.into(),
        component: "collector".into(),
        instance: instance.into(),
        started_us,
        ended_us: 0,
        tool_version: "0.1.0".into(),
        broker: "mqtt://localhost:1883".into(),
        config: serde_json::json!({ "devices": 10, "topic": "t/{device}" }),
    }
}

fn hist(values: impl IntoIterator<Item = u64>) -> Vec<u8> {
    let mut h = LatencyHistogram::new();
    for v in values {
        h.record(v);
    }
    h.encode()
}

fn second(topic: &str, second: u64, received: u64, latencies: &[u64]) -> TopicSecond {
    TopicSecond {
        run_id: "r1".into(),
        topic: topic.into(),
        second,
        instance: "host-a".into(),
        sent: 0,
        received,
        gaps: 1,
        duplicates: 2,
        reordered: 3,
        undecodable: 4,
        latency_hdr: hist(latencies.iter().copied()),
        corrected_hdr: Vec::new(),
    }
}

fn topics(n: usize) -> Vec<String> {
    (0..n).map(|i| format!("devices/{i:04}/action")).collect()
}

const MINUTE: Duration = Duration::from_secs(60);

#[tokio::test]
async fn runs_round_trip_newest_first() {
    let (_dir, store) = fresh().await;
    store.put_run(&run("old", "a", 1_000)).await.unwrap();
    store.put_run(&run("new", "a", 2_000)).await.unwrap();
    let mut ended = run("old", "a", 1_000);
    ended.ended_us = 5_000;
    store.put_run(&ended).await.unwrap();
    let runs = store.runs().await.unwrap();
    assert_eq!(runs, vec![run("new", "a", 2_000), ended]);
}

#[tokio::test]
async fn seconds_round_trip_and_merge() {
    let (_dir, store) = fresh().await;
    store.put_run(&run("r1", "host-a", 1)).await.unwrap();
    let a = second("t/1", 100, 3, &[100, 200, 300]);
    let b = second("t/0", 101, 1, &[50]);
    let c = second("t/0", 100, 2, &[]);
    store
        .write(&Batch {
            id: 0,
            run_id: String::new(),
            seconds: vec![a.clone(), b.clone(), c.clone()],
            raw: Vec::new(),
        })
        .await
        .unwrap();
    let got = store.seconds("r1").await.unwrap();
    assert_eq!(got, vec![c.clone(), b.clone(), a.clone()]);
    let read = LatencyHistogram::decode(&got[2].latency_hdr).unwrap();
    let sent = LatencyHistogram::decode(&a.latency_hdr).unwrap();
    assert_eq!(read.len(), 3);
    assert_eq!(read.inner(), sent.inner());

    // The same key again, twice in one batch: counters add, histograms merge.
    let more = second("t/1", 100, 2, &[400, 500]);
    store
        .write(&Batch {
            id: 0,
            run_id: String::new(),
            seconds: vec![more.clone(), more],
            raw: Vec::new(),
        })
        .await
        .unwrap();
    let got = store.seconds("r1").await.unwrap();
    assert_eq!(got.len(), 3);
    let merged = &got[2];
    assert_eq!((merged.topic.as_str(), merged.second), ("t/1", 100));
    assert_eq!(merged.received, 3 + 2 + 2);
    assert_eq!(merged.gaps, 3);
    assert_eq!(merged.undecodable, 12);
    let h = LatencyHistogram::decode(&merged.latency_hdr).unwrap();
    assert_eq!(h.len(), 7);
    assert_eq!(
        h.percentile_us(100.0),
        LatencyHistogram::decode(&hist([500]))
            .unwrap()
            .percentile_us(100.0)
    );
    assert!(merged.corrected_hdr.is_empty());
}

#[tokio::test]
async fn corrupt_histogram_is_reported() {
    let (_dir, store) = fresh().await;
    let mut bad = second("t", 1, 1, &[]);
    bad.latency_hdr = b"not a histogram".to_vec();
    let batch = Batch {
        id: 0,
        run_id: String::new(),
        seconds: vec![bad.clone()],
        raw: Vec::new(),
    };
    store.write(&batch).await.unwrap();
    bad.latency_hdr = hist([7]);
    let err = store
        .write(&Batch {
            id: 0,
            run_id: String::new(),
            seconds: vec![bad],
            raw: Vec::new(),
        })
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Corrupt { .. }), "{err}");
    assert!(err.to_string().contains("topic `t`"), "{err}");
}

#[tokio::test]
async fn raw_round_trip_ordered_by_topic_and_time() {
    let (_dir, store) = fresh().await;
    store.put_run(&run("r1", "host-a", 1)).await.unwrap();
    let rec = |device, received_us| RawRecord {
        device,
        seq: u64::from(device) * 10,
        intended_us: 1,
        sent_us: 2,
        received_us,
    };
    let raw = vec![
        ("t/b".to_string(), rec(1, 30)),
        ("t/a".to_string(), rec(2, 20)),
        ("t/b".to_string(), rec(3, 10)),
        ("t/a".to_string(), rec(4, 5)),
    ];
    // No seconds in the batch: the run comes from put_run.
    store
        .write(&Batch {
            id: 0,
            run_id: String::new(),
            seconds: Vec::new(),
            raw: raw.clone(),
        })
        .await
        .unwrap();
    let got = store.raw("r1").await.unwrap();
    assert_eq!(
        got,
        vec![
            raw[3].clone(),
            raw[1].clone(),
            raw[2].clone(),
            raw[0].clone()
        ]
    );
}

#[tokio::test]
async fn raw_without_a_run_is_refused() {
    let (_dir, store) = fresh().await;
    let err = store
        .write(&Batch {
            id: 0,
            run_id: String::new(),
            seconds: Vec::new(),
            raw: vec![(
                "t".into(),
                RawRecord {
                    device: 1,
                    seq: 1,
                    intended_us: 1,
                    sent_us: 1,
                    received_us: 1,
                },
            )],
        })
        .await
        .unwrap_err();
    assert!(err.to_string().contains("name no run"), "{err}");
}

#[tokio::test]
async fn unknown_run_is_no_such_run() {
    let (_dir, store) = fresh().await;
    assert!(matches!(
        store.seconds("nope").await,
        Err(StoreError::NoSuchRun { ref run, .. }) if run == "nope"
    ));
    assert!(matches!(
        store.raw("nope").await,
        Err(StoreError::NoSuchRun { .. })
    ));
}

#[tokio::test]
async fn reopening_keeps_the_data() {
    let dir = tempfile::tempdir().unwrap();
    let url = url_of(&dir);
    SqliteStore::open(&url)
        .await
        .unwrap()
        .put_run(&run("r1", "a", 1))
        .await
        .unwrap();
    let again = SqliteStore::open(&url).await.unwrap();
    assert_eq!(again.runs().await.unwrap().len(), 1);
    assert_eq!(again.url(), url);
}

#[tokio::test]
async fn bad_paths_name_the_path_and_the_fix() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("no/such/dir/results.db");
    let err = SqliteStore::open(&format!("sqlite://{}", missing.display()))
        .await
        .err()
        .unwrap();
    let text = err.to_string();
    assert!(matches!(err, StoreError::Unreachable { .. }), "{text}");
    assert!(text.contains(&missing.display().to_string()), "{text}");
    assert!(
        text.contains("does not exist") && text.contains("mkdir -p"),
        "{text}"
    );
    assert!(err.is_retryable());

    let err = SqliteStore::open(&format!("sqlite://{}", dir.path().display()))
        .await
        .err()
        .unwrap();
    assert!(err.to_string().contains("is a directory"), "{err}");

    let junk = dir.path().join("junk.db");
    std::fs::write(&junk, vec![b'x'; 4096]).unwrap();
    let err = SqliteStore::open(&format!("sqlite://{}", junk.display()))
        .await
        .err()
        .unwrap();
    assert!(matches!(err, StoreError::Corrupt { .. }), "{err}");

    for url in ["sqlite://", "sqlite:results.db"] {
        let err = SqliteStore::open(url).await.err().unwrap();
        assert!(matches!(err, StoreError::BadUrl { .. }), "{err}");
    }
}

#[tokio::test]
async fn renewing_takes_back_expired_claims_nobody_else_took() {
    let (_dir, store) = fresh().await;
    let all = topics(2);
    store.advertise(&all, "loadgen-1", MINUTE).await.unwrap();
    let short = Duration::from_millis(50);
    assert_eq!(store.claim(2, "c1", short).await.unwrap(), all);
    tokio::time::sleep(Duration::from_millis(100)).await;
    // c2's claim also clears the expired rows; c1 gets back only the other topic.
    assert_eq!(store.claim(1, "c2", MINUTE).await.unwrap(), all[..1]);
    assert_eq!(
        store.renew_claims(&all, "c1", MINUTE).await.unwrap(),
        all[1..]
    );
    assert!(store.claim(5, "c3", MINUTE).await.unwrap().is_empty());
}

#[tokio::test]
async fn advertise_claim_renew_release() {
    let (_dir, store) = fresh().await;
    let all = topics(3);
    store.advertise(&all, "loadgen-1", MINUTE).await.unwrap();
    assert_eq!(store.claim(2, "c1", MINUTE).await.unwrap(), all[..2]);
    assert_eq!(store.claim(5, "c2", MINUTE).await.unwrap(), all[2..]);
    assert!(store.claim(5, "c3", MINUTE).await.unwrap().is_empty());

    let ads = store.advertisements().await.unwrap();
    let claimers: Vec<_> = ads.iter().map(|a| a.claimed_by.as_deref()).collect();
    assert_eq!(claimers, [Some("c1"), Some("c1"), Some("c2")]);
    assert!(ads.iter().all(|a| a.owner == "loadgen-1"));

    // c2 cannot renew c1's topics.
    assert_eq!(
        store.renew_claims(&all, "c1", MINUTE).await.unwrap(),
        all[..2]
    );
    assert_eq!(
        store.renew_claims(&all, "c2", MINUTE).await.unwrap(),
        all[2..]
    );

    // Releasing someone else's claim does nothing; releasing one's own frees it.
    store.release(&all[..1], "c2").await.unwrap();
    assert!(store.claim(5, "c3", MINUTE).await.unwrap().is_empty());
    store.release(&all[..1], "c1").await.unwrap();
    assert_eq!(store.claim(5, "c3", MINUTE).await.unwrap(), all[..1]);
    assert_eq!(
        store.renew_claims(&all, "c1", MINUTE).await.unwrap(),
        all[1..2]
    );

    // Last advertiser wins; withdrawing by the old owner then does nothing.
    store
        .advertise(&all[..1], "loadgen-2", MINUTE)
        .await
        .unwrap();
    store.withdraw(&all, "loadgen-1").await.unwrap();
    let ads = store.advertisements().await.unwrap();
    assert_eq!(ads.len(), 1);
    assert_eq!(
        ads[0],
        Advertisement {
            topic: all[0].clone(),
            owner: "loadgen-2".into(),
            claimed_by: Some("c3".into()),
        }
    );
}

#[tokio::test]
async fn expired_claims_and_advertisements_lapse() {
    let (_dir, store) = fresh().await;
    let all = topics(1);
    store.advertise(&all, "lg", MINUTE).await.unwrap();
    assert_eq!(
        store
            .claim(1, "a", Duration::from_millis(50))
            .await
            .unwrap(),
        all
    );
    assert!(store.claim(1, "b", MINUTE).await.unwrap().is_empty());
    tokio::time::sleep(Duration::from_millis(120)).await;
    assert_eq!(store.claim(1, "b", MINUTE).await.unwrap(), all);
    assert!(
        store
            .renew_claims(&all, "a", MINUTE)
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(store.renew_claims(&all, "b", MINUTE).await.unwrap(), all);

    store
        .advertise(&all, "lg", Duration::from_millis(50))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(120)).await;
    assert!(store.advertisements().await.unwrap().is_empty());
    store.release(&all, "b").await.unwrap();
    assert!(store.claim(1, "c", MINUTE).await.unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 8)]
async fn concurrent_claimers_never_share_a_topic() {
    let dir = tempfile::tempdir().unwrap();
    let url = url_of(&dir);
    let all = topics(200);
    SqliteStore::open(&url)
        .await
        .unwrap()
        .advertise(&all, "loadgen", MINUTE)
        .await
        .unwrap();
    let claimers: Vec<_> = (0..200)
        .map(|i| {
            let url = url.clone();
            tokio::spawn(async move {
                // Each claimer has its own connection, like a separate process.
                let store = SqliteStore::open(&url).await.unwrap();
                let owner = format!("collector-{i}");
                let got = store.claim(1, &owner, MINUTE).await.unwrap();
                (owner, got)
            })
        })
        .collect();
    let mut claimed = BTreeSet::new();
    for claimer in claimers {
        let (owner, got) = claimer.await.unwrap();
        assert_eq!(got.len(), 1, "{owner} claimed {got:?}");
        assert!(claimed.insert(got[0].clone()), "{} claimed twice", got[0]);
    }
    assert_eq!(claimed.into_iter().collect::<Vec<_>>(), all);
    let store = SqliteStore::open(&url).await.unwrap();
    let ads = store.advertisements().await.unwrap();
    let owners: BTreeSet<_> = ads.iter().filter_map(|a| a.claimed_by.clone()).collect();
    assert_eq!(owners.len(), 200);
}

#[tokio::test]
async fn barriers_count_distinct_members() {
    let (_dir, store) = fresh().await;
    assert_eq!(store.barrier_size("start").await.unwrap(), 0);
    assert_eq!(store.join_barrier("start", "a").await.unwrap(), 1);
    assert_eq!(store.join_barrier("start", "a").await.unwrap(), 1);
    assert_eq!(store.join_barrier("start", "b").await.unwrap(), 2);
    assert_eq!(store.join_barrier("other", "a").await.unwrap(), 1);
    assert_eq!(store.barrier_size("start").await.unwrap(), 2);
}

/// Raw insert throughput; run with
/// `cargo test -p iotload-core --release store::sqlite -- --ignored --nocapture`.
/// 1000 topics interleaved, one million rows, in big and in small batches.
#[tokio::test]
#[ignore = "measurement, not a test"]
async fn raw_insert_throughput() {
    for (batches, per_batch) in [(20u64, 50_000u64), (200, 5_000)] {
        let (_dir, store) = fresh().await;
        store.put_run(&run("bench", "a", 1)).await.unwrap();
        let make = |b: u64| Batch {
            id: 0,
            run_id: String::new(),
            seconds: Vec::new(),
            raw: (0..per_batch)
                .map(|i| {
                    let n = b * per_batch + i;
                    let t = 1_700_000_000_000_000 + n * 10;
                    let record = RawRecord {
                        device: u32::try_from(n % 1000).unwrap(),
                        seq: n / 1000,
                        intended_us: t,
                        sent_us: t + 3,
                        received_us: t + 900,
                    };
                    (format!("devices/{:05}/action", n % 1000), record)
                })
                .collect(),
        };
        let prepared: Vec<_> = (0..batches).map(make).collect();
        let started = Instant::now();
        for batch in &prepared {
            store.write(batch).await.unwrap();
        }
        let elapsed = started.elapsed();
        let rows = batches * per_batch;
        println!(
            "raw insert: {rows} rows in {elapsed:.2?} = {:.0} rows/s ({per_batch} rows per batch)",
            rows as f64 / elapsed.as_secs_f64()
        );
        assert_eq!(store.raw("bench").await.unwrap().len() as u64, rows);
    }
}
