//! The Redis backend: results and fleet coordination in one Redis database or a Redis
//! Cluster.
//!
//! Every key starts with `iotload:`; the layout is documented in `docs/store.md` so
//! other tools can read the results. One connection (`connection.rs`) per store multiplexes all calls
//! and reconnects by itself after the server went away.
//!
//! Writes are one Lua script call per batch (one round trip; per topic on a cluster): counters are added with
//! `HINCRBY`, raw records appended with `RPUSH`, and histograms, which Redis cannot
//! merge, are written compare-and-set: the script first checks that every histogram
//! field still holds what the client based its merge on (or is absent) and writes
//! nothing otherwise, returning the current values; the client merges with those and
//! tries again. So concurrent writers of the same (topic, second, instance) never lose
//! counts, and a batch is applied all or nothing. Coordination (claim, renew, release,
//! withdraw, listing) uses Lua scripts too, so it is atomic across processes.
//!
//! On a Redis Cluster (`redis+cluster://h1:p1,h2:p2/`) the keys carry hash tags
//! (`keys.rs`) and a batch is written per topic, each part all or nothing with its own
//! marker; reads go out per key, concurrently, as the slots spread them.
//!
//! Requires Redis 6.2 or newer (`ZADD … LT`).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::future::Future;
use std::sync::{LazyLock, Mutex};
use std::time::Duration;

use redis::{ErrorKind, FromRedisValue, RedisError, RedisResult, Script};

use super::{
    Advertisement, Batch, Coordinator, RawRecord, RunExtent, RunRecord, Store, StoreError,
    TopicSecond,
};
use crate::clock_offset::ClockEstimate;
use crate::recorder::LatencyHistogram;

mod cluster_link;
mod connection;
mod coordination;
mod keys;
mod results;
mod tls;

use connection::Connection;
use keys::KeyLayout;

/// The counter field suffixes of a row, in the order the write script increments them.
const COUNTER_FIELDS: [&str; 6] = [
    "sent",
    "received",
    "lost",
    "duplicates",
    "reordered",
    "undecodable",
];
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
/// How many commands a cluster store has on the way at once when it reads key by key.
const CLUSTER_READS_IN_FLIGHT: usize = 64;
/// What to tell a user whose cluster node cannot be reached.
const CLUSTER_UNREACHABLE_HINT: &str = "are the cluster's nodes up and is every slot served? \
    While a master fails over (a few seconds) its keys cannot be written; check with \
    `redis-cli -p PORT cluster info`";
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

/// Results and coordination in Redis (`redis://[:password@]host[:port][/db]`,
/// `rediss://…` with TLS options in the URL, `redis+cluster://h1:p1,h2:p2/` for a Redis
/// Cluster: docs/store.md).
pub struct RedisStore {
    /// The URL, password redacted.
    url: String,
    /// Shared, self-reconnecting connection.
    con: Connection,
    /// The key names (hash-tagged on a cluster).
    keys: KeyLayout,
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
        let client = tls::client(url, &redacted)?;
        let con = Connection::open(client, &redacted).await?;
        Ok(Self {
            url: redacted,
            keys: KeyLayout::new(con.is_cluster()),
            con,
            current_run: Mutex::new(None),
        })
    }

    /// Runs `op` on the connection; when the connection turned out to be dropped (the
    /// manager then reconnects), runs it once more. Only for idempotent operations.
    async fn idempotent<T, F, Fut>(&self, op: F) -> Result<T, StoreError>
    where
        F: Fn(Connection) -> Fut,
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

    /// Sends `cmds` and returns their replies in order: one pipeline on one server; on a
    /// cluster, whose pipelines must stay within a slot, each command on its own, a
    /// bounded number at once. Only for reads and other idempotent commands.
    async fn query_each<T: FromRedisValue>(
        &self,
        cmds: &[redis::Cmd],
    ) -> Result<Vec<T>, StoreError> {
        if cmds.is_empty() {
            return Ok(Vec::new());
        }
        if !self.con.is_cluster() {
            return self
                .idempotent(|mut con| async move {
                    let mut pipe = redis::pipe();
                    for cmd in cmds {
                        pipe.add_command(cmd.clone());
                    }
                    pipe.query_async(&mut con).await
                })
                .await;
        }
        let mut replies = Vec::with_capacity(cmds.len());
        for chunk in cmds.chunks(CLUSTER_READS_IN_FLIGHT) {
            replies.extend(
                futures_util::future::try_join_all(chunk.iter().map(|cmd| self.query_one(cmd)))
                    .await?,
            );
        }
        Ok(replies)
    }

    /// Sends one idempotent command.
    async fn query_one<T: FromRedisValue>(&self, cmd: &redis::Cmd) -> Result<T, StoreError> {
        self.idempotent(|mut con| async move { cmd.query_async(&mut con).await })
            .await
    }

    /// Fails with `NoSuchRun` unless `run_id` has a run record or results; returns the
    /// run's topics, sorted.
    async fn run_topics(&self, run_id: &str) -> Result<Vec<String>, StoreError> {
        let mut score = redis::cmd("ZSCORE");
        score.arg(self.keys.runs()).arg(run_id);
        let mut members = redis::cmd("SMEMBERS");
        members.arg(self.keys.topics(run_id));
        let score: Option<f64> = self.query_one(&score).await?;
        let mut topics: Vec<String> = self.query_one(&members).await?;
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
    if url.starts_with("rediss")
        && let Some(hint) = tls_hint(&lower)
    {
        return StoreError::Unreachable {
            url: url.to_owned(),
            reason: format!("{text}; {hint}"),
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
        let hint = if url.contains("+cluster://") {
            CLUSTER_UNREACHABLE_HINT
        } else {
            UNREACHABLE_HINT
        };
        return StoreError::Unreachable {
            url: url.to_owned(),
            reason: format!("{text}; {hint}"),
        };
    }
    StoreError::Io {
        url: url.to_owned(),
        reason: text,
    }
}

/// What to do about a failed TLS handshake, when `lower` (the error, lower case) is one.
fn tls_hint(lower: &str) -> Option<&'static str> {
    if lower.contains("certificaterequired") || lower.contains("certificate required") {
        Some("the server wants a client certificate: add &cert_file=PATH&key_file=PATH to the URL")
    } else if lower.contains("unknownissuer")
        || lower.contains("invalid peer certificate")
        || lower.contains("notvalidforname")
    {
        Some(
            "the server's certificate is not trusted: give the CA that signed it as \
             ?ca_file=PATH (or #insecure for a test server)",
        )
    } else if lower.contains("tls") || lower.contains("handshake") || lower.contains("alert") {
        Some(
            "the TLS handshake failed: check ?ca_file= (the server's CA) and, if the server \
             asks for one, &cert_file=&key_file= (the client's certificate)",
        )
    } else {
        None
    }
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
mod tests;
