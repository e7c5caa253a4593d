//! The Redis backend: results and fleet coordination in one Redis database.
//!
//! Every key starts with `iotload:`; the layout is documented in `docs/store.md` so
//! other tools can read the results. One [`ConnectionManager`] per store multiplexes all
//! calls over one connection and reconnects by itself after the server went away.
//!
//! Writes are one Lua script call per batch (one round trip): counters are added with
//! `HINCRBY`, raw records appended with `RPUSH`, and histograms, which Redis cannot
//! merge, are written compare-and-set: the script first checks that every histogram
//! field still holds what the client based its merge on (or is absent) and writes
//! nothing otherwise, returning the current values; the client merges with those and
//! tries again. So concurrent writers of the same (topic, second, instance) never lose
//! counts, and a batch is applied all or nothing. Coordination (claim, renew, release,
//! withdraw, listing) uses Lua scripts too, so it is atomic across processes.
//!
//! Requires Redis 6.2 or newer (`ZADD … LT`); not for Redis Cluster (scripts touch keys
//! they derive from the advertised topics).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::future::Future;
use std::sync::{LazyLock, Mutex};
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{AsyncConnectionConfig, ErrorKind, RedisError, RedisResult, Script};

use super::{
    Advertisement, Batch, Coordinator, RawRecord, RunRecord, Store, StoreError, TopicSecond,
};
use crate::clock_offset::ClockEstimate;
use crate::recorder::LatencyHistogram;

mod coordination;
mod results;

/// Prefix of every key.
const PREFIX: &str = "iotload:";
/// The runs, by start time.
const RUNS_KEY: &str = "iotload:runs";
/// The advertised topics.
const ADS_KEY: &str = "iotload:ads";
/// Prefix of an advertisement key (followed by the topic).
const AD_PREFIX: &str = "iotload:ad:";
/// Prefix of a claim key (followed by the topic).
const CLAIM_PREFIX: &str = "iotload:claim:";
/// Prefix of a barrier key (followed by its name).
const BARRIER_PREFIX: &str = "iotload:barrier:";
/// The next free device number of a run (`allocate_devices`).
const DEVICES_PREFIX: &str = "iotload:devices:";
/// A run's clock estimates: a hash of instance → "offset_us bound_us".
const CLOCKS_PREFIX: &str = "iotload:clocks:";
/// Histogram field suffix for the latency (receive − sent) histogram.
const HDR_RAW: &str = "raw";
/// Histogram field suffix for the corrected (receive − intended) histogram.
const HDR_CORRECTED: &str = "corrected";
/// How often a write is retried when another writer changed a histogram meanwhile.
const CAS_ATTEMPTS: u32 = 64;
/// How long a connection attempt may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// How long a reply may take.
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(10);
/// What to tell a user whose server cannot be reached.
const UNREACHABLE_HINT: &str = "is redis-server running and listening there? \
    Start it with `service redis-server start` (or `redis-server`), or fix the host and port";

/// Applies a batch; see the module documentation and `docs/store.md`.
///
/// `KEYS`: every key the batch touches. `ARGV`: the counts of counter, histogram, set
/// and raw operations, then the operations:
/// counter: key index, `{second}/{instance}`, the six increments;
/// histogram: key index, field, expected state (`0` absent, `1` present), expected
/// value, new value; set: key index, member; raw: key index, count, values.
/// Returns nothing when applied, else triples (histogram op index, state, value) of
/// every histogram whose field does not hold the expected value, having written nothing.
static WRITE_SCRIPT: LazyLock<Script> =
    LazyLock::new(|| Script::new(include_str!("scripts/write.lua")));

/// Results and coordination in Redis (`redis://[:password@]host[:port][/db]`).
pub struct RedisStore {
    /// The URL, password redacted.
    url: String,
    /// Shared, self-reconnecting connection.
    con: ConnectionManager,
    /// The run of the last [`Store::put_run`], for raw records in batches without
    /// aggregates.
    current_run: Mutex<Option<String>>,
}

impl std::fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisStore")
            .field("url", &self.url)
            .finish_non_exhaustive()
    }
}

impl RedisStore {
    /// Connects to the server `url` names and checks it answers `PING`.
    ///
    /// Errors: `BadUrl` when the URL cannot be parsed, `Unreachable` when nothing
    /// answers there, `Auth` when the password is wrong or missing.
    pub async fn open(url: &str) -> Result<Self, StoreError> {
        let redacted = crate::plan::redact_url(url);
        let client = redis::Client::open(url).map_err(|e| StoreError::BadUrl {
            url: redacted.clone(),
            reason: format!(
                "{}; write it as redis://[:password@]host[:port][/db], e.g. redis://127.0.0.1:6379/0",
                e.detail().unwrap_or(&e.to_string())
            ),
        })?;
        // One plain attempt first: the manager retries every failure with backoff,
        // which would only delay a clear answer (refused, wrong password).
        let probe_config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(CONNECT_TIMEOUT))
            .set_response_timeout(Some(RESPONSE_TIMEOUT));
        let mut probe = client
            .get_multiplexed_async_connection_with_config(&probe_config)
            .await
            .map_err(|e| map_error(&redacted, &e))?;
        let _: String = redis::cmd("PING")
            .query_async(&mut probe)
            .await
            .map_err(|e| map_error(&redacted, &e))?;
        drop(probe);
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(CONNECT_TIMEOUT))
            .set_response_timeout(Some(RESPONSE_TIMEOUT))
            .set_number_of_retries(2)
            .set_min_delay(Duration::from_millis(100))
            .set_max_delay(Duration::from_secs(1));
        let con = ConnectionManager::new_with_config(client, config)
            .await
            .map_err(|e| map_error(&redacted, &e))?;
        Ok(Self {
            url: redacted,
            con,
            current_run: Mutex::new(None),
        })
    }

    /// Runs `op` on the connection; when the connection turned out to be dropped (the
    /// manager then reconnects), runs it once more. Only for idempotent operations.
    async fn idempotent<T, F, Fut>(&self, op: F) -> Result<T, StoreError>
    where
        F: Fn(ConnectionManager) -> Fut,
        Fut: Future<Output = RedisResult<T>>,
    {
        match op(self.con.clone()).await {
            Err(e) if e.is_connection_dropped() || e.is_unrecoverable_error() => {
                tracing::debug!(url = %self.url, "redis connection lost ({e}); retrying once");
                op(self.con.clone()).await.map_err(|e| self.error(&e))
            }
            other => other.map_err(|e| self.error(&e)),
        }
    }

    fn error(&self, e: &RedisError) -> StoreError {
        map_error(&self.url, e)
    }

    fn corrupt(&self, reason: String) -> StoreError {
        StoreError::Corrupt {
            url: self.url.clone(),
            reason,
        }
    }

    /// Fails with `NoSuchRun` unless `run_id` has a run record or results; returns the
    /// run's topics, sorted.
    async fn run_topics(&self, run_id: &str) -> Result<Vec<String>, StoreError> {
        let topics_key = topics_key(run_id);
        let (score, mut topics): (Option<f64>, Vec<String>) = self
            .idempotent(|mut con| {
                let topics_key = &topics_key;
                async move {
                    redis::pipe()
                        .cmd("ZSCORE")
                        .arg(RUNS_KEY)
                        .arg(run_id)
                        .cmd("SMEMBERS")
                        .arg(topics_key)
                        .query_async(&mut con)
                        .await
                }
            })
            .await?;
        if score.is_none() && topics.is_empty() {
            return Err(StoreError::NoSuchRun {
                url: self.url.clone(),
                run: run_id.to_owned(),
            });
        }
        topics.sort();
        Ok(topics)
    }

    /// The run raw records of `batch` belong to: the batch's run id, else that of its
    /// first aggregate, else that of the last `put_run`.
    fn batch_run(&self, batch: &Batch) -> Option<String> {
        if !batch.run_id.is_empty() {
            return Some(batch.run_id.clone());
        }
        if let Some(first) = batch.seconds.first() {
            return Some(first.run_id.clone());
        }
        self.current_run
            .lock()
            .map(|run| run.clone())
            .unwrap_or_else(|poisoned| poisoned.into_inner().clone())
    }
}

/// Turns a client error into a [`StoreError`] for the store at `url` (redacted).
fn map_error(url: &str, e: &RedisError) -> StoreError {
    let text = e.to_string();
    let lower = text.to_ascii_lowercase();
    if e.kind() == ErrorKind::AuthenticationFailed
        || matches!(e.code(), Some("NOAUTH" | "WRONGPASS"))
        || lower.contains("noauth")
        || lower.contains("wrongpass")
        || lower.contains("invalid password")
        || lower.contains("invalid username-password")
    {
        return StoreError::Auth {
            url: url.to_owned(),
            reason: format!("{text}; give the password as redis://:PASSWORD@host:port/db"),
        };
    }
    if e.kind() == ErrorKind::InvalidClientConfig {
        return StoreError::BadUrl {
            url: url.to_owned(),
            reason: text,
        };
    }
    if e.is_io_error()
        || e.is_connection_refusal()
        || e.is_timeout()
        || e.is_connection_dropped()
        || e.kind() == ErrorKind::Server(redis::ServerErrorKind::BusyLoading)
    {
        return StoreError::Unreachable {
            url: url.to_owned(),
            reason: format!("{text}; {UNREACHABLE_HINT}"),
        };
    }
    StoreError::Io {
        url: url.to_owned(),
        reason: text,
    }
}

fn instances_key(run: &str) -> String {
    format!("{PREFIX}run:{run}:instances")
}

fn topics_key(run: &str) -> String {
    format!("{PREFIX}run:{run}:topics")
}

fn topic_key(run: &str, topic: &str, what: &str) -> String {
    format!("{PREFIX}run:{run}:topic:{topic}:{what}")
}

/// Milliseconds of a lease, at least 1.
fn lease_ms(lease: Duration) -> u64 {
    u64::try_from(lease.as_millis()).unwrap_or(u64::MAX).max(1)
}

/// A raw record as stored: `device,seq,intended_us,sent_us,received_us`.
fn encode_raw(r: &RawRecord) -> String {
    let mut out = String::with_capacity(64);
    let mut buf = itoa::Buffer::new();
    out.push_str(buf.format(r.device));
    for v in [r.seq, r.intended_us, r.sent_us, r.received_us] {
        out.push(',');
        out.push_str(buf.format(v));
    }
    out
}

/// The inverse of [`encode_raw`].
fn decode_raw(text: &str) -> Option<RawRecord> {
    let mut parts = text.split(',');
    let device = parts.next()?.parse().ok()?;
    let mut next = || parts.next().and_then(|p| p.parse::<u64>().ok());
    let record = RawRecord {
        device,
        seq: next()?,
        intended_us: next()?,
        sent_us: next()?,
        received_us: next()?,
    };
    if parts.next().is_some() {
        return None;
    }
    Some(record)
}

/// Splits a hash field `{second}/{instance}/{name}` (the instance may contain `/`).
fn split_field(field: &str) -> Option<(u64, &str, &str)> {
    let (second, rest) = field.split_once('/')?;
    let (instance, name) = rest.rsplit_once('/')?;
    Some((second.parse().ok()?, instance, name))
}

/// Adds two encoded histograms.
fn merge_hdr(a: &[u8], b: &[u8]) -> Result<Vec<u8>, String> {
    if a.is_empty() {
        return Ok(b.to_vec());
    }
    if b.is_empty() {
        return Ok(a.to_vec());
    }
    let mut sum = LatencyHistogram::decode(a).map_err(|e| format!("bad histogram: {e}"))?;
    let other = LatencyHistogram::decode(b).map_err(|e| format!("bad histogram: {e}"))?;
    sum.add(&other);
    Ok(sum.encode())
}

/// A pause of up to `attempt` ms, varying between callers, against livelock.
fn jitter(attempt: u32) -> Duration {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    Duration::from_micros(u64::from(nanos % (attempt.min(50) * 1000)))
}

/// Queues `SADD` of `topic` to the run's topic set.
fn add_topic(keys: &mut Keys, run: &str, topic: &str, set_args: &mut Vec<Vec<u8>>) {
    let k = keys.of(topics_key(run));
    set_args.push(k.to_string().into_bytes());
    set_args.push(topic.as_bytes().to_vec());
}

/// Counter as a `HINCRBY` increment.
fn increment(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// One histogram to write compare-and-set.
struct HdrOp {
    key: usize,
    field: String,
    /// This batch's contribution.
    own: Vec<u8>,
    /// What the field is expected to hold (`None`: absent).
    expected: Option<Vec<u8>>,
    /// What to write: `own` merged with `expected`.
    value: Vec<u8>,
}

/// Distinct keys, numbered from 1 as Lua's `KEYS` is.
#[derive(Default)]
struct Keys {
    index: HashMap<String, usize>,
    list: Vec<String>,
}

impl Keys {
    fn of(&mut self, key: String) -> usize {
        if let Some(&i) = self.index.get(&key) {
            return i;
        }
        self.list.push(key.clone());
        let i = self.list.len();
        self.index.insert(key, i);
        i
    }
}

#[cfg(test)]
mod tests {
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
        let short = Duration::from_millis(200);
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

        tokio::time::sleep(Duration::from_millis(300)).await;
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
}
