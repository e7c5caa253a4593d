//! One conformance suite, run against every results store backend: a fresh Redis server
//! per test and a temporary SQLite file.

// Helpers shared by the tests below: a failing store call must fail the test.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use iotload_core::recorder::LatencyHistogram;
use iotload_core::store::{Backend, Batch, RawRecord, RunRecord, TopicSecond, open};
use iotload_testkit::{MqttBroker, RedisCluster, RedisOptions, RedisServer, RedisTls, TestPki};

/// A store under test and whatever keeps it alive.
struct Subject {
    url: String,
    _redis: Option<RedisServer>,
    _cluster: Option<RedisCluster>,
    _dir: Option<tempfile::TempDir>,
    _pki: Option<TestPki>,
}

async fn redis() -> Subject {
    let server = RedisServer::start().await.expect("redis starts");
    Subject {
        url: server.url(),
        _redis: Some(server),
        _cluster: None,
        _dir: None,
        _pki: None,
    }
}

/// A Redis server that speaks only TLS and wants a client certificate.
async fn tls_redis(require_client_cert: bool) -> (RedisServer, TestPki) {
    let pki = TestPki::generate().expect("test PKI");
    let server = RedisServer::start_with(RedisOptions {
        tls: Some(RedisTls {
            pki: pki.clone(),
            require_client_cert,
        }),
        ..Default::default()
    })
    .await
    .expect("redis starts with TLS");
    (server, pki)
}

/// The store over mutual TLS: `rediss://` with the CA and the client's certificate.
async fn redis_tls() -> Subject {
    let (server, pki) = tls_redis(true).await;
    Subject {
        url: format!(
            "{}?ca_file={}&cert_file={}&key_file={}",
            server.url(),
            pki.ca_pem().display(),
            pki.client_cert().display(),
            pki.client_key().display()
        ),
        _redis: Some(server),
        _cluster: None,
        _dir: None,
        _pki: Some(pki),
    }
}

/// A Redis Cluster of three masters, no replicas.
async fn redis_cluster() -> Subject {
    let cluster = RedisCluster::start(3, 0)
        .await
        .expect("redis cluster starts");
    Subject {
        url: cluster.url(),
        _redis: None,
        _cluster: Some(cluster),
        _dir: None,
        _pki: None,
    }
}

fn sqlite() -> Subject {
    let dir = tempfile::tempdir().expect("temp dir");
    Subject {
        url: format!("sqlite://{}", dir.path().join("results.db").display()),
        _redis: None,
        _cluster: None,
        _dir: Some(dir),
        _pki: None,
    }
}

fn histogram(values: &[u64]) -> Vec<u8> {
    let mut h = LatencyHistogram::new();
    for &v in values {
        h.record(v);
    }
    h.encode()
}

async fn round_trip(subject: Subject) {
    let store = open(&subject.url).await.expect("store opens");
    let run = RunRecord {
        run_id: "rt".into(),
        component: "collector".into(),
        instance: "i1".into(),
        started_us: 10,
        ended_us: 0,
        tool_version: "0.1.0".into(),
        broker: "mqtt://127.0.0.1:1883".into(),
        config: serde_json::json!({"rate": "10"}),
    };
    store.put_run(&run).await.unwrap();
    let ended = RunRecord {
        ended_us: 20,
        ..run.clone()
    };
    store.put_run(&ended).await.unwrap();
    assert_eq!(store.runs().await.unwrap(), vec![ended]);

    let values: Vec<u64> = (1..=1000).map(|v| v * 37).collect();
    let second = |received, sent| TopicSecond {
        run_id: "rt".into(),
        topic: "t/1".into(),
        second: 100,
        instance: "i1".into(),
        sent,
        received,
        gaps: 1,
        duplicates: 2,
        reordered: 3,
        undecodable: 4,
        latency_hdr: histogram(&values),
        corrected_hdr: histogram(&values[..10]),
    };
    let raw = RawRecord {
        device: 7,
        seq: 1,
        intended_us: 1,
        sent_us: 2,
        received_us: 3,
    };
    store
        .write(&Batch {
            id: 0,
            run_id: "rt".into(),
            seconds: vec![second(1000, 0)],
            raw: vec![("t/1".into(), raw)],
        })
        .await
        .unwrap();
    // The same key again merges: counters add, histograms combine.
    store
        .write(&Batch {
            id: 0,
            run_id: "rt".into(),
            seconds: vec![second(1000, 5)],
            raw: vec![],
        })
        .await
        .unwrap();
    let back = store.seconds("rt").await.unwrap();
    assert_eq!(back.len(), 1);
    let s = &back[0];
    assert_eq!(
        (
            s.sent,
            s.received,
            s.gaps,
            s.duplicates,
            s.reordered,
            s.undecodable
        ),
        (5, 2000, 2, 4, 6, 8)
    );
    let h = LatencyHistogram::decode(&s.latency_hdr).unwrap();
    let mut expected = LatencyHistogram::decode(&histogram(&values)).unwrap();
    expected.add(&LatencyHistogram::decode(&histogram(&values)).unwrap());
    assert_eq!(h.len(), 2000);
    assert_eq!(
        h.stats_ms(),
        expected.stats_ms(),
        "histogram identical after read-back"
    );
    assert_eq!(
        LatencyHistogram::decode(&s.corrected_hdr).unwrap().len(),
        20
    );
    assert_eq!(
        store.raw("rt").await.unwrap(),
        vec![("t/1".to_string(), raw)]
    );
}

/// A run read a time slice at a time: the extent names every topic and the first and
/// last second, each slice holds exactly its seconds' rows (several writers, a gap, a
/// topic that starts late, a second written twice), and the slices add up to the run.
async fn time_slices_add_up_to_the_run(subject: Subject) {
    let store = open(&subject.url).await.expect("store opens");
    let run = RunRecord {
        run_id: "ts".into(),
        component: "collector".into(),
        instance: "c/1".into(),
        started_us: 1,
        ended_us: 0,
        tool_version: "0.1.0".into(),
        broker: "mqtt://127.0.0.1:1883".into(),
        config: serde_json::Value::Null,
    };
    store.put_run(&run).await.unwrap();
    assert_eq!(store.extent("ts").await.unwrap(), None, "no rows yet");
    let row = |topic: &str, second: u64, instance: &str, received: u64| TopicSecond {
        run_id: "ts".into(),
        topic: topic.into(),
        second,
        instance: instance.into(),
        sent: 0,
        received,
        latency_hdr: histogram(&[received * 100]),
        ..TopicSecond::default()
    };
    // Topic a: seconds 1000..=1009 by c/1, 1005..=1012 by c2 (1003 missing: a gap);
    // topic b from 1008 only. Second 1001 of a is written twice.
    let mut rows = Vec::new();
    for second in (1000..=1009).filter(|s| *s != 1003) {
        rows.push(row("a", second, "c/1", second - 999));
    }
    for second in 1005..=1012 {
        rows.push(row("a", second, "c2", 1));
    }
    for second in 1008..=1012 {
        rows.push(row("b", second, "c/1", 2));
    }
    for chunk in rows.chunks(7) {
        store
            .write(&Batch {
                id: 0,
                run_id: "ts".into(),
                seconds: chunk.to_vec(),
                raw: vec![],
            })
            .await
            .unwrap();
    }
    store
        .write(&Batch {
            id: 0,
            run_id: "ts".into(),
            seconds: vec![row("a", 1001, "c/1", 10)],
            raw: vec![],
        })
        .await
        .unwrap();
    let extent = store.extent("ts").await.unwrap().unwrap();
    assert_eq!(
        (extent.topics.clone(), extent.first, extent.last),
        (vec!["a".to_string(), "b".to_string()], 1000, 1012)
    );
    let key = |r: &TopicSecond| (r.second, r.topic.clone(), r.instance.clone(), r.received);
    let mut whole: Vec<_> = store.seconds("ts").await.unwrap().iter().map(key).collect();
    whole.sort();
    assert_eq!(whole.len(), rows.len());
    assert!(
        whole.contains(&(1001, "a".into(), "c/1".into(), 12)),
        "{whole:?}"
    );
    // Slices of 2 topic-seconds: one second each; of 5: two seconds; the whole run.
    for per_slice in [2, 5, 1_000] {
        let mut sliced = Vec::new();
        for (from, to) in extent.slices(per_slice) {
            let slice = store.seconds_between("ts", from, to).await.unwrap();
            assert!(
                slice.iter().all(|r| (from..=to).contains(&r.second)),
                "slice {from}..={to}: {slice:?}"
            );
            sliced.extend(slice.iter().map(key));
        }
        sliced.sort();
        assert_eq!(sliced, whole, "slices of {per_slice} rows");
    }
    let gap = store.seconds_between("ts", 1003, 1003).await.unwrap();
    assert!(gap.is_empty(), "{gap:?}");
    let late = store.seconds_between("ts", 1011, 1100).await.unwrap();
    assert_eq!(late.len(), 4, "{late:?}");
    let h = LatencyHistogram::decode(&late[0].latency_hdr).unwrap();
    assert_eq!(h.len(), 1, "histograms come with the slice");
    assert!(matches!(
        store.extent("nope").await,
        Err(iotload_core::store::StoreError::NoSuchRun { .. })
    ));
}

async fn every_topic_is_claimed_exactly_once(subject: Subject) {
    let lease = Duration::from_secs(30);
    let mut advertisers = tokio::task::JoinSet::new();
    for i in 0..200 {
        let url = subject.url.clone();
        advertisers.spawn(async move {
            let store = open(&url).await.expect("store opens");
            store
                .advertise(&[format!("topic/{i:03}")], &format!("loadgen-{i}"), lease)
                .await
                .unwrap();
        });
    }
    while advertisers.join_next().await.is_some() {}
    let mut claimers = tokio::task::JoinSet::new();
    for i in 0..200 {
        let url = subject.url.clone();
        claimers.spawn(async move {
            let store = open(&url).await.expect("store opens");
            store
                .claim(1, &format!("collector-{i}"), lease)
                .await
                .unwrap()
        });
    }
    let mut claimed = Vec::new();
    while let Some(got) = claimers.join_next().await {
        claimed.extend(got.unwrap());
    }
    let distinct: BTreeSet<&String> = claimed.iter().collect();
    assert_eq!(claimed.len(), 200, "every claimer got one topic");
    assert_eq!(distinct.len(), 200, "no topic was claimed twice");
    let store = open(&subject.url).await.unwrap();
    assert!(
        store
            .advertisements()
            .await
            .unwrap()
            .iter()
            .all(|a| a.claimed_by.is_some())
    );
}

async fn a_dead_claimers_topics_are_claimable_after_its_lease(subject: Subject) {
    let store: Arc<dyn Backend> = open(&subject.url).await.unwrap();
    let topics: Vec<String> = (0..5).map(|i| format!("dead/{i}")).collect();
    store
        .advertise(&topics, "loadgen", Duration::from_secs(30))
        .await
        .unwrap();
    // Long enough for the next claim to run inside it on a loaded machine.
    let lease = Duration::from_secs(1);
    assert_eq!(store.claim(5, "dies", lease).await.unwrap().len(), 5);
    // Held: nobody else gets them.
    assert!(store.claim(5, "other", lease).await.unwrap().is_empty());
    // The claimer dies (never renews); after its lease the topics are free again.
    tokio::time::sleep(lease + Duration::from_millis(200)).await;
    let mut again = store
        .claim(5, "other", Duration::from_secs(30))
        .await
        .unwrap();
    again.sort();
    assert_eq!(again, topics);
}

/// 50 concurrent callers (each with its own connection) reserve 100 device numbers each:
/// the blocks are disjoint, cover 0..5000 without a gap, and another run starts at 0.
async fn device_blocks_are_disjoint(subject: Subject) {
    let mut callers = tokio::task::JoinSet::new();
    for _ in 0..50 {
        let url = subject.url.clone();
        callers.spawn(async move {
            let store = open(&url).await.expect("store opens");
            store.allocate_devices("blocks", 100).await.unwrap()
        });
    }
    let mut firsts = Vec::new();
    while let Some(first) = callers.join_next().await {
        firsts.push(first.unwrap());
    }
    firsts.sort_unstable();
    let expected: Vec<u32> = (0..50).map(|i| i * 100).collect();
    assert_eq!(
        firsts, expected,
        "one block of 100 each, no overlap, no gap"
    );
    let store = open(&subject.url).await.unwrap();
    assert_eq!(store.allocate_devices("another-run", 7).await.unwrap(), 0);
    assert_eq!(store.allocate_devices("blocks", 1).await.unwrap(), 5000);
}

/// Claimers as separate `iotload collector --claim 1` processes.
async fn claimer_processes_split_the_topics(subject: Subject) {
    const N: usize = 30;
    let broker = MqttBroker::start().await.expect("mosquitto starts");
    let store = open(&subject.url).await.unwrap();
    let topics: Vec<String> = (0..N).map(|i| format!("proc/{i:02}")).collect();
    store
        .advertise(&topics, "loadgen", Duration::from_secs(60))
        .await
        .unwrap();
    let mut procs = Vec::new();
    for i in 0..N {
        procs.push(common::spawn(&[
            "collector",
            "--broker",
            &broker.url(),
            "--store",
            &subject.url,
            "--run-id",
            "procs",
            "--instance",
            &format!("c{i}"),
            "--claim",
            "1",
            "--claim-timeout",
            "20s",
        ]));
    }
    let mut listening = BTreeSet::new();
    for p in &mut procs {
        p.wait_for("collector: listening on").await;
        let line = p.seen.last().cloned().unwrap_or_default();
        assert!(
            listening.insert(line.clone()),
            "a topic was claimed twice: {line}"
        );
    }
    assert_eq!(listening.len(), N);
    for p in &procs {
        p.interrupt();
    }
    for p in procs {
        assert_eq!(p.exit_code().await, Some(130));
    }
    // Released on exit: all claimable again at once.
    assert_eq!(
        store
            .claim(N, "after", Duration::from_secs(10))
            .await
            .unwrap()
            .len(),
        N
    );
}

#[tokio::test]
async fn wrong_password_and_unreachable_server_name_the_store_and_the_fix() {
    let server = RedisServer::start_with(iotload_testkit::RedisOptions {
        password: Some("right".into()),
        ..Default::default()
    })
    .await
    .expect("redis starts");
    let wrong = format!("redis://:wrong@127.0.0.1:{}/0", server.port());
    let err = open(&wrong).await.err().expect("refused").to_string();
    assert!(
        err.contains("refused the credentials") && !err.contains("wrong"),
        "{err}"
    );
    let right = format!("redis://:right@127.0.0.1:{}/0", server.port());
    assert!(open(&right).await.is_ok());
    let port = iotload_testkit::free_port();
    let err = open(&format!("redis://127.0.0.1:{port}/0"))
        .await
        .err()
        .expect("unreachable")
        .to_string();
    assert!(
        err.contains(&format!("127.0.0.1:{port}")) && err.contains("redis-server"),
        "{err}"
    );
    let err = open("sqlite:///nonexistent-dir/x.db")
        .await
        .err()
        .expect("bad path")
        .to_string();
    assert!(err.contains("/nonexistent-dir"), "{err}");
}

#[tokio::test]
async fn tls_to_redis_checks_the_server_and_names_what_is_missing() {
    let (server, pki) = tls_redis(true).await;
    let url = server.url();
    let ca = pki.ca_pem().display().to_string();
    let (cert, key) = (pki.client_cert().display(), pki.client_key().display());
    // Everything right: connects.
    let good = format!("{url}?ca_file={ca}&cert_file={cert}&key_file={key}");
    open(&good).await.expect("mutual TLS connects");
    // A CA that did not sign the server's certificate: refused, with the fix.
    let other = pki.other_ca_pem().display();
    let err = open(&format!(
        "{url}?ca_file={other}&cert_file={cert}&key_file={key}"
    ))
    .await
    .err()
    .expect("an unknown CA is refused")
    .to_string();
    assert!(
        err.contains("not trusted") && err.contains("ca_file"),
        "{err}"
    );
    // No client certificate where the server wants one: refused, with the fix.
    let err = open(&format!("{url}?ca_file={ca}"))
        .await
        .err()
        .expect("no client certificate is refused")
        .to_string();
    assert!(
        err.contains("wants a client certificate") && err.contains("cert_file"),
        "{err}"
    );
    // Plain Redis to a TLS port: refused (never silently unencrypted).
    let plain = url.replacen("rediss://", "redis://", 1);
    assert!(open(&plain).await.is_err());

    // A server that does not ask for a client certificate: the CA alone does, and
    // `#insecure` skips the check (test servers only).
    let (server, pki) = tls_redis(false).await;
    let url = server.url();
    open(&format!("{url}?ca_file={}", pki.ca_pem().display()))
        .await
        .expect("TLS with the CA connects");
    open(&format!("{url}#insecure"))
        .await
        .expect("#insecure connects without a CA");
}

/// A collector killed with SIGKILL cannot release its claims; they expire with its lease.
async fn a_killed_collectors_topics_return_after_its_lease(subject: Subject) {
    let broker = MqttBroker::start().await.expect("mosquitto starts");
    let store = open(&subject.url).await.unwrap();
    let topics = vec!["killed/0".to_string(), "killed/1".to_string()];
    store
        .advertise(&topics, "loadgen", Duration::from_secs(60))
        .await
        .unwrap();
    let mut victim = common::spawn(&[
        "collector",
        "--broker",
        &broker.url(),
        "--store",
        &subject.url,
        "--run-id",
        "kill",
        "--claim",
        "2",
        "--lease",
        "3s",
    ]);
    victim.wait_for("collector: listening on").await;
    // Held (the lease is long enough to outlast a loaded machine's pause before this).
    assert!(
        store
            .claim(2, "heir", Duration::from_secs(10))
            .await
            .unwrap()
            .is_empty()
    );
    victim.signal("-KILL");
    let _ = victim.exit_code().await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let mut got = Vec::new();
    while got.len() < 2 && tokio::time::Instant::now() < deadline {
        // Polling the store is the only way to observe a lease running out.
        tokio::time::sleep(Duration::from_millis(100)).await;
        got.extend(
            store
                .claim(2 - got.len(), "heir", Duration::from_secs(10))
                .await
                .unwrap(),
        );
    }
    got.sort();
    assert_eq!(got, topics, "re-claimed within the lease plus a margin");
}

/// Each scenario as a test against each backend: `redis::<scenario>` on a fresh Redis
/// server, `redis_tls::` on one speaking only TLS, `redis_cluster::` on a fresh
/// three-master Redis Cluster, `sqlite::<scenario>` on a temporary SQLite file.
macro_rules! against_every_backend {
    ($($scenario:ident),* $(,)?) => {
        mod redis {
            $(
                #[tokio::test]
                async fn $scenario() {
                    super::$scenario(super::redis().await).await;
                }
            )*
        }
        mod redis_tls {
            $(
                #[tokio::test]
                async fn $scenario() {
                    super::$scenario(super::redis_tls().await).await;
                }
            )*
        }
        mod redis_cluster {
            $(
                #[tokio::test]
                async fn $scenario() {
                    super::$scenario(super::redis_cluster().await).await;
                }
            )*
        }
        mod sqlite {
            $(
                #[tokio::test]
                async fn $scenario() {
                    super::$scenario(super::sqlite()).await;
                }
            )*
        }
    };
}

against_every_backend!(
    device_blocks_are_disjoint,
    round_trip,
    time_slices_add_up_to_the_run,
    every_topic_is_claimed_exactly_once,
    a_dead_claimers_topics_are_claimable_after_its_lease,
    claimer_processes_split_the_topics,
    a_killed_collectors_topics_return_after_its_lease,
);

/// A Redis Cluster master killed (SIGKILL) while a store writer streams aggregates to
/// the cluster: its replica takes over, the writer retries what failed meanwhile, and
/// every record offered ends up either in the store exactly once or counted in the
/// writer's report (dropped, unflushed). Nothing is lost without being counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_failover_loses_nothing_silently() {
    use iotload_core::store::writer::{Record, StoreWriter};
    const TOPICS: u64 = 60;
    const SECONDS: u64 = 40;
    const KILL_AT: u64 = 10;
    let mut cluster = RedisCluster::start(3, 1)
        .await
        .expect("redis cluster starts");
    let store = open(&cluster.url()).await.unwrap();
    let run = "failover";
    let writer = StoreWriter::spawn(store.clone(), run.into(), 100_000);
    for second in 0..SECONDS {
        for topic in 0..TOPICS {
            writer.offer(Record::Second(TopicSecond {
                run_id: run.into(),
                topic: format!("device/{topic}"),
                second: 1_000 + second,
                instance: "writer".into(),
                sent: 1,
                received: 1,
                latency_hdr: histogram(&[100 + second]),
                ..TopicSecond::default()
            }));
        }
        if second == KILL_AT {
            let masters = cluster.master_ports().await.unwrap();
            cluster.kill(masters[0]).await.unwrap();
        }
        // The records' pace (a second's worth every 100 ms), not a synchronisation.
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let report = writer.finish(Duration::from_secs(60)).await;
    let stored = store.seconds(run).await.unwrap();
    let offered = TOPICS * SECONDS;
    let stored_received: u64 = stored.iter().map(|s| s.received).sum();
    eprintln!(
        "offered {offered}, stored {stored_received} in {} rows; writer: {report:?}",
        stored.len()
    );
    for row in &stored {
        assert_eq!(row.received, 1, "written once: {row:?}");
        let hdr = LatencyHistogram::decode(&row.latency_hdr).unwrap();
        assert_eq!(hdr.len(), 1, "one latency per row: {row:?}");
    }
    assert_eq!(
        stored_received + report.dropped + report.unflushed,
        offered,
        "every record is stored or counted as lost: {report:?}\n{}",
        cluster.log()
    );
}
