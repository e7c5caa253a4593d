use super::*;
use iotload_testkit::{RedisOptions, RedisServer};
use std::sync::Arc;

async fn server() -> (RedisServer, RedisStore) {
    let server = RedisServer::start().await.unwrap();
    let store = RedisStore::open(&server.url()).await.unwrap();
    (server, store)
}

fn hist(values: &[u64]) -> Vec<u8> {
    let mut h = LatencyHistogram::new();
    for &v in values {
        h.record(v);
    }
    h.encode()
}

fn count(bytes: &[u8]) -> u64 {
    LatencyHistogram::decode(bytes).unwrap().len()
}

fn second(topic: &str, second: u64, instance: &str, sent: u64, lat: &[u64]) -> TopicSecond {
    TopicSecond {
        run_id: "r1".into(),
        topic: topic.into(),
        second,
        instance: instance.into(),
        sent,
        received: sent,
        gaps: 1,
        duplicates: 2,
        reordered: 3,
        undecodable: 4,
        latency_hdr: hist(lat),
        corrected_hdr: hist(&lat.iter().map(|v| v * 2).collect::<Vec<_>>()),
    }
}

fn run_record(run: &str, instance: &str, started_us: u64) -> RunRecord {
    RunRecord {
        run_id: run.into(),
        component: "collector".into(),
        instance: instance.into(),
        started_us,
        ended_us: 0,
        tool_version: "0.1.0".into(),
        broker: "mqtt://127.0.0.1:1883".into(),
        config: serde_json::json!({"rate": 10}),
    }
}

fn raw(device: u32, seq: u64, received_us: u64) -> RawRecord {
    RawRecord {
        device,
        seq,
        intended_us: received_us - 30,
        sent_us: received_us - 20,
        received_us,
    }
}

#[test]
fn raw_records_and_fields_round_trip_as_text() {
    let r = raw(7, 42, 1_700_000_000_000_000);
    assert_eq!(decode_raw(&encode_raw(&r)), Some(r));
    assert_eq!(decode_raw("1,2,3,4"), None);
    assert_eq!(decode_raw("1,2,3,4,5,6"), None);
    assert_eq!(split_field("17/a/b/sent"), Some((17, "a/b", "sent")));
    assert_eq!(split_field("x/a/sent"), None);
}

#[tokio::test]
async fn runs_seconds_and_raw_round_trip() {
    let (_server, store) = server().await;
    assert!(store.runs().await.unwrap().is_empty());
    let err = store.seconds("r1").await.unwrap_err();
    assert!(matches!(err, StoreError::NoSuchRun { .. }), "{err}");
    assert!(matches!(
        store.raw("nope").await.unwrap_err(),
        StoreError::NoSuchRun { .. }
    ));

    store.put_run(&run_record("r0", "a", 100)).await.unwrap();
    store.put_run(&run_record("r1", "b", 300)).await.unwrap();
    store.put_run(&run_record("r1", "a", 200)).await.unwrap();
    let mut ended = run_record("r1", "a", 200);
    ended.ended_us = 900;
    store.put_run(&ended).await.unwrap();
    let runs = store.runs().await.unwrap();
    let order: Vec<_> = runs
        .iter()
        .map(|r| (r.run_id.as_str(), r.instance.as_str()))
        .collect();
    assert_eq!(order, [("r1", "b"), ("r1", "a"), ("r0", "a")]);
    assert_eq!(runs[1], ended);

    let batch = Batch {
        id: 0,
        run_id: String::new(),
        seconds: vec![
            second("t/b", 11, "c1", 5, &[100, 200]),
            second("t/a", 12, "c1", 3, &[50]),
            second("t/a", 11, "c2", 2, &[]),
            second("t/a", 11, "c1", 4, &[10, 20, 30]),
        ],
        raw: vec![
            ("t/b".into(), raw(1, 2, 2000)),
            ("t/a".into(), raw(1, 1, 3000)),
            ("t/b".into(), raw(2, 1, 1000)),
        ],
    };
    store.write(&batch).await.unwrap();
    let got = store.seconds("r1").await.unwrap();
    let order: Vec<_> = got
        .iter()
        .map(|s| (s.topic.as_str(), s.second, s.instance.as_str()))
        .collect();
    assert_eq!(
        order,
        [
            ("t/a", 11, "c1"),
            ("t/a", 11, "c2"),
            ("t/a", 12, "c1"),
            ("t/b", 11, "c1")
        ]
    );
    assert_eq!(got[0], batch.seconds[3]);
    assert_eq!(got[1], batch.seconds[2]);
    assert!(got[1].latency_hdr.is_empty());
    assert_eq!(count(&got[3].latency_hdr), 2);
    assert_eq!(count(&got[3].corrected_hdr), 2);

    // The same second again (a second batch, and twice within one batch): merged.
    let again = Batch {
        id: 0,
        run_id: String::new(),
        seconds: vec![
            second("t/a", 11, "c1", 6, &[40, 50]),
            second("t/a", 11, "c1", 1, &[60]),
        ],
        raw: vec![],
    };
    store.write(&again).await.unwrap();
    let got = store.seconds("r1").await.unwrap();
    assert_eq!(got.len(), 4);
    let m = &got[0];
    assert_eq!((m.sent, m.received, m.gaps, m.undecodable), (11, 11, 3, 12));
    assert_eq!(count(&m.latency_hdr), 6);
    assert_eq!(count(&m.corrected_hdr), 6);
    let merged = LatencyHistogram::decode(&m.latency_hdr).unwrap();
    assert_eq!(merged.percentile_us(100.0), 60);

    let raws = store.raw("r1").await.unwrap();
    let order: Vec<_> = raws
        .iter()
        .map(|(t, r)| (t.as_str(), r.received_us))
        .collect();
    assert_eq!(order, [("t/a", 3000), ("t/b", 1000), ("t/b", 2000)]);
    assert_eq!(raws[2].1, raw(1, 2, 2000));

    // Raw records alone go to the run of the last put_run.
    store.put_run(&run_record("r2", "a", 400)).await.unwrap();
    let only_raw = Batch {
        id: 0,
        run_id: String::new(),
        seconds: vec![],
        raw: vec![("t/c".into(), raw(3, 3, 500))],
    };
    store.write(&only_raw).await.unwrap();
    assert_eq!(
        store.raw("r2").await.unwrap(),
        [("t/c".into(), raw(3, 3, 500))]
    );
    assert!(store.seconds("r2").await.unwrap().is_empty());
}

#[tokio::test]
async fn concurrent_writers_of_one_second_lose_nothing() {
    let server = RedisServer::start().await.unwrap();
    // Several writers of one (topic, second, instance) only happen when instances
    // share a name; three are enough to exercise the compare-and-set merge without
    // making the test depend on how busy the machine is.
    let mut tasks = Vec::new();
    for _ in 0..3 {
        let store = RedisStore::open(&server.url()).await.unwrap();
        tasks.push(tokio::spawn(async move {
            for i in 0..20 {
                let batch = Batch {
                    id: 0,
                    run_id: String::new(),
                    seconds: vec![second("t", 1, "same", 1, &[i + 1])],
                    raw: vec![],
                };
                store.write(&batch).await.unwrap();
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    let store = RedisStore::open(&server.url()).await.unwrap();
    let got = store.seconds("r1").await.unwrap();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].sent, 60);
    assert_eq!(count(&got[0].latency_hdr), 60);
}

#[tokio::test]
async fn two_hundred_claimers_claim_each_topic_once() {
    let server = RedisServer::start().await.unwrap();
    let loadgen = RedisStore::open(&server.url()).await.unwrap();
    let topics: Vec<String> = (0..200).map(|i| format!("act/{i:03}")).collect();
    let lease = Duration::from_secs(30);
    loadgen
        .advertise(&topics[..100], "lg-1", lease)
        .await
        .unwrap();
    loadgen
        .advertise(&topics[100..], "lg-2", lease)
        .await
        .unwrap();
    // An advertisement that has expired is not claimable.
    loadgen
        .advertise(&["gone".to_owned()], "lg-3", Duration::from_millis(1))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(20)).await;

    let barrier = Arc::new(tokio::sync::Barrier::new(200));
    let mut tasks = Vec::new();
    for c in 0..200 {
        let store = RedisStore::open(&server.url()).await.unwrap();
        let barrier = barrier.clone();
        tasks.push(tokio::spawn(async move {
            let owner = format!("col-{c}");
            barrier.wait().await;
            let mut mine = Vec::new();
            loop {
                let got = store.claim(2, &owner, lease).await.unwrap();
                if got.is_empty() {
                    break;
                }
                mine.extend(got.into_iter().map(|t| (t, owner.clone())));
            }
            mine
        }));
    }
    let mut claimed = Vec::new();
    for task in tasks {
        claimed.extend(task.await.unwrap());
    }
    claimed.sort();
    let names: Vec<&String> = claimed.iter().map(|(t, _)| t).collect();
    assert_eq!(names, topics.iter().collect::<Vec<_>>());

    let ads = loadgen.advertisements().await.unwrap();
    assert_eq!(ads.len(), 200, "expired advertisement must be pruned");
    for (ad, (topic, owner)) in ads.iter().zip(&claimed) {
        assert_eq!(&ad.topic, topic);
        assert_eq!(ad.claimed_by.as_ref(), Some(owner));
    }
    assert_eq!(ads[0].owner, "lg-1");
    assert_eq!(ads[150].owner, "lg-2");
}

#[tokio::test]
async fn claims_expire_renew_and_release() {
    let (_server, store) = server().await;
    let topics = vec!["a".to_owned(), "b".to_owned()];
    store
        .advertise(&topics, "lg", Duration::from_secs(60))
        .await
        .unwrap();
    // Long enough for the next five calls to run inside it on a loaded machine.
    let short = Duration::from_secs(1);
    assert_eq!(store.claim(5, "c1", short).await.unwrap(), topics);
    assert!(store.claim(5, "c2", short).await.unwrap().is_empty());
    // Nobody else can renew or release c1's claims.
    assert!(
        store
            .renew_claims(&topics, "c2", short)
            .await
            .unwrap()
            .is_empty()
    );
    store.release(&topics, "c2").await.unwrap();
    assert!(store.claim(5, "c2", short).await.unwrap().is_empty());

    tokio::time::sleep(short + Duration::from_millis(200)).await;
    // c1's leases ran out: claimable again; c1 takes back only what nobody else took
    // meanwhile (a collector cut off from the store longer than its lease).
    assert_eq!(
        store.claim(1, "c2", Duration::from_secs(60)).await.unwrap(),
        ["a"]
    );
    assert_eq!(
        store.renew_claims(&topics, "c1", short).await.unwrap(),
        ["b"]
    );
    store.release(&["b".to_owned()], "c1").await.unwrap();
    assert_eq!(
        store
            .renew_claims(&topics[..1], "c2", Duration::from_secs(60))
            .await
            .unwrap(),
        ["a"]
    );

    store.release(&["a".to_owned()], "c2").await.unwrap();
    let ads = store.advertisements().await.unwrap();
    assert_eq!(ads[0].claimed_by, None);
    assert_eq!(store.claim(5, "c3", short).await.unwrap(), topics);

    // Withdrawn topics can no longer be claimed; only the owner may withdraw.
    store.release(&topics, "c3").await.unwrap();
    store.withdraw(&topics, "someone-else").await.unwrap();
    assert_eq!(store.advertisements().await.unwrap().len(), 2);
    store.withdraw(&topics[..1], "lg").await.unwrap();
    assert_eq!(store.claim(5, "c4", short).await.unwrap(), ["b"]);
    let ads = store.advertisements().await.unwrap();
    assert_eq!(ads.len(), 1);
    assert_eq!(ads[0].claimed_by.as_deref(), Some("c4"));
}

#[tokio::test]
async fn barrier_counts_distinct_members() {
    let (_server, store) = server().await;
    assert_eq!(store.barrier_size("start").await.unwrap(), 0);
    assert_eq!(store.join_barrier("start", "a").await.unwrap(), 1);
    assert_eq!(store.join_barrier("start", "b").await.unwrap(), 2);
    assert_eq!(store.join_barrier("start", "a").await.unwrap(), 2);
    assert_eq!(store.barrier_size("start").await.unwrap(), 2);
    assert_eq!(store.barrier_size("other").await.unwrap(), 0);
}

#[tokio::test]
async fn stopped_server_is_unreachable_and_names_the_url() {
    let mut server = RedisServer::start_with(RedisOptions {
        password: Some("pw".into()),
        ..Default::default()
    })
    .await
    .unwrap();
    let url = server.url();
    let store = RedisStore::open(&url).await.unwrap();
    server.stop().await.unwrap();
    let err = store.runs().await.unwrap_err();
    assert!(matches!(err, StoreError::Unreachable { .. }), "{err}");
    assert!(err.is_retryable());
    let text = err.to_string();
    let redacted = format!("redis://:***@127.0.0.1:{}/0", server.port());
    assert!(text.contains(&redacted), "{text}");
    assert!(!text.contains(":pw@"), "{text}");

    let err = RedisStore::open(&url).await.unwrap_err();
    assert!(matches!(err, StoreError::Unreachable { .. }), "{err}");
    let text = err.to_string();
    assert!(text.contains(&redacted), "{text}");
    assert!(text.contains("service redis-server start"), "{text}");
}

#[tokio::test]
async fn wrong_or_missing_password_is_an_auth_error() {
    let server = RedisServer::start_with(RedisOptions {
        password: Some("right".into()),
        ..Default::default()
    })
    .await
    .unwrap();
    let port = server.port();
    for url in [
        format!("redis://:wrong@127.0.0.1:{port}/0"),
        format!("redis://127.0.0.1:{port}/0"),
    ] {
        let err = RedisStore::open(&url).await.unwrap_err();
        assert!(matches!(err, StoreError::Auth { .. }), "{url}: {err}");
        assert!(!err.to_string().contains("wrong@"), "{err}");
    }
    RedisStore::open(&server.url()).await.unwrap();
}

#[tokio::test]
async fn malformed_urls_are_bad_urls() {
    for url in ["redis://127.0.0.1:notaport/0", "redis://127.0.0.1:6379/db"] {
        let err = RedisStore::open(url).await.unwrap_err();
        assert!(matches!(err, StoreError::BadUrl { .. }), "{url}: {err}");
    }
}

#[tokio::test]
async fn the_store_reconnects_after_a_restart() {
    let (mut server, store) = server().await;
    store.put_run(&run_record("r1", "a", 1)).await.unwrap();
    server.restart().await.unwrap();
    // The test server keeps an append-only file: the data survives, and the same
    // store works again once it has reconnected.
    let mut result = store.runs().await;
    for _ in 0..20 {
        if result.is_ok() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        result = store.runs().await;
    }
    assert_eq!(result.unwrap().len(), 1);
    store.put_run(&run_record("r2", "a", 2)).await.unwrap();
    assert_eq!(store.runs().await.unwrap().len(), 2);
    store
        .write(&Batch {
            id: 0,
            run_id: String::new(),
            seconds: vec![second("t", 1, "i", 1, &[5])],
            raw: vec![],
        })
        .await
        .unwrap();
}

#[tokio::test]
#[ignore = "benchmark: prints raw records per second"]
async fn raw_write_throughput() {
    let (_server, store) = server().await;
    store.put_run(&run_record("bench", "a", 1)).await.unwrap();
    for batch_size in [1_000_usize, 10_000] {
        let total = 500_000_usize;
        let batches: Vec<Batch> = (0..total / batch_size)
            .map(|b| Batch {
                id: 0,
                run_id: String::new(),
                seconds: vec![],
                raw: (0..batch_size)
                    .map(|i| {
                        let n = (b * batch_size + i) as u64;
                        (
                            format!("bench/{}", n % 100),
                            raw((n % 1000) as u32, n, 1_700_000_000_000_000 + n),
                        )
                    })
                    .collect(),
            })
            .collect();
        let started = std::time::Instant::now();
        for batch in &batches {
            store.write(batch).await.unwrap();
        }
        let elapsed = started.elapsed();
        println!(
            "raw write, batches of {batch_size}: {total} records in {elapsed:?} = {:.0} records/s",
            total as f64 / elapsed.as_secs_f64()
        );
    }
    let started = std::time::Instant::now();
    let all = store.raw("bench").await.unwrap();
    println!("raw read: {} records in {:?}", all.len(), started.elapsed());
    assert_eq!(all.len(), 1_000_000);
}

#[tokio::test]
async fn a_batch_written_twice_under_one_id_counts_once() {
    // A retry after a lost reply sends the same batch again: it must not count twice.
    let (_server, store) = server().await;
    store.put_run(&run_record("r1", "a", 100)).await.unwrap();
    let batch = |id: u64| Batch {
        id,
        run_id: String::new(),
        seconds: vec![second("t", 5, "c1", 3, &[10])],
        raw: vec![],
    };
    store.write(&batch(7)).await.unwrap();
    store.write(&batch(7)).await.unwrap();
    let got = store.seconds("r1").await.unwrap();
    assert_eq!(got[0].sent, 3, "the same id twice counts once");
    assert_eq!(count(&got[0].latency_hdr), 1);
    store.write(&batch(8)).await.unwrap();
    store.write(&batch(0)).await.unwrap();
    let got = store.seconds("r1").await.unwrap();
    assert_eq!(got[0].sent, 9, "other ids, and id 0, count again");
}

/// A run written before the writers' spans were kept (no `writers` hash) is still read:
/// its extent and slices come from reading it whole.
#[tokio::test]
async fn runs_without_writer_spans_are_read_whole() {
    let (_server, store) = server().await;
    store.put_run(&run_record("r1", "c1", 1)).await.unwrap();
    let batch = Batch {
        id: 0,
        run_id: String::new(),
        seconds: vec![
            second("t/a", 11, "c1", 1, &[10]),
            second("t/a", 12, "c1", 2, &[20]),
            second("t/b", 13, "c2", 3, &[30]),
        ],
        raw: vec![],
    };
    store.write(&batch).await.unwrap();
    let spans = store
        .writer_spans("r1", &["t/a".into(), "t/b".into()])
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        spans,
        vec![
            vec![("c1".to_string(), (11, 12))],
            vec![("c2".to_string(), (13, 13))]
        ]
    );
    let sliced = store.seconds_between("r1", 12, 13).await.unwrap();
    let mut del = redis::cmd("DEL");
    for topic in ["t/a", "t/b"] {
        del.arg(store.keys.topic("r1", topic, "writers"));
    }
    store.query_one::<redis::Value>(&del).await.unwrap();
    assert_eq!(
        store
            .writer_spans("r1", &["t/a".into(), "t/b".into()])
            .await
            .unwrap(),
        None
    );
    let extent = store.extent("r1").await.unwrap().unwrap();
    assert_eq!((extent.first, extent.last), (11, 13));
    assert_eq!(extent.topics, ["t/a", "t/b"]);
    let mut legacy = store.seconds_between("r1", 12, 13).await.unwrap();
    legacy.sort_by_key(|r| r.second);
    let mut sliced = sliced;
    sliced.sort_by_key(|r| r.second);
    assert_eq!(legacy, sliced);
    assert_eq!(legacy.len(), 2);
    assert_eq!(legacy[1], batch.seconds[2]);
}
