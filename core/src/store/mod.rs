//! Where results go: the [`Store`] trait, its records, and the backend chosen by URL.
//!
//! `redis://host:port/db` is the distributed store our users asked for (many collectors
//! on many hosts); `sqlite://path` is the embedded default, so a first run needs no
//! server. Both also coordinate fleets: loadgens advertise their topics and collectors
//! claim them one to one ([`Coordinator`]). The key layout and tables are documented in
//! `docs/store.md` so other tools can read them.

pub mod redis;
pub mod sqlite;
pub mod writer;

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// What can go wrong with a store.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The URL cannot be used.
    #[error("bad store URL `{url}`: {reason}")]
    BadUrl {
        /// The URL (password redacted).
        url: String,
        /// What is wrong and how to write it.
        reason: String,
    },
    /// The server could not be reached.
    #[error("cannot reach the results store {url}: {reason}")]
    Unreachable {
        /// The URL (password redacted).
        url: String,
        /// Why, with the fix where known.
        reason: String,
    },
    /// The server refused our credentials.
    #[error("the results store {url} refused the credentials: {reason}")]
    Auth {
        /// The URL (password redacted).
        url: String,
        /// The server's answer.
        reason: String,
    },
    /// A read or write failed.
    #[error("results store {url}: {reason}")]
    Io {
        /// The URL (password redacted).
        url: String,
        /// What failed.
        reason: String,
    },
    /// Stored data cannot be decoded.
    #[error("results store {url} holds data iotload cannot read: {reason}")]
    Corrupt {
        /// The URL.
        url: String,
        /// What is wrong.
        reason: String,
    },
    /// The run does not exist.
    #[error("no run `{run}` in {url}; `iotload results list` shows the runs")]
    NoSuchRun {
        /// The URL.
        url: String,
        /// The run id asked for.
        run: String,
    },
}

impl StoreError {
    /// Whether retrying later may succeed (the server is down or busy).
    pub fn is_retryable(&self) -> bool {
        matches!(self, Self::Unreachable { .. } | Self::Io { .. })
    }
}

/// One run of one component instance.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunRecord {
    /// Run id (shared by a fleet when given with `--run-id`).
    pub run_id: String,
    /// Component: run, loadgen, collector, echo-ipaas.
    pub component: String,
    /// Host or pod name.
    pub instance: String,
    /// Start, µs since the Unix epoch.
    pub started_us: u64,
    /// End, µs since the Unix epoch (0 while running).
    pub ended_us: u64,
    /// iotload version.
    pub tool_version: String,
    /// Broker URL, credentials redacted.
    pub broker: String,
    /// The resolved configuration, as JSON (secrets redacted).
    pub config: serde_json::Value,
}

/// Counters of one topic in one second, plus its latency histograms.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct TopicSecond {
    /// Run id.
    pub run_id: String,
    /// Topic.
    pub topic: String,
    /// Second, Unix time.
    pub second: u64,
    /// Writer instance (host or pod name).
    pub instance: String,
    /// Messages sent on this topic (loadgen side).
    pub sent: u64,
    /// Messages received (collector side), including duplicates.
    pub received: u64,
    /// Sequence gaps found this second (see [`crate::loss`]; the stores keep it in
    /// their `lost` column, which always counted the same thing).
    #[serde(alias = "lost")]
    pub gaps: u64,
    /// Duplicates.
    pub duplicates: u64,
    /// Reordered messages.
    pub reordered: u64,
    /// Messages without a readable stamp.
    pub undecodable: u64,
    /// Latency histogram (receive − sent, µs), HdrHistogram V2 + deflate encoding; empty
    /// when no latency was recorded.
    #[serde(with = "base64_bytes")]
    pub latency_hdr: Vec<u8>,
    /// Corrected latency histogram (receive − intended, µs), same encoding.
    #[serde(with = "base64_bytes")]
    pub corrected_hdr: Vec<u8>,
}

impl TopicSecond {
    /// The row's message counters.
    pub fn counts(&self) -> crate::loss::MessageCounts {
        crate::loss::MessageCounts {
            sent: self.sent,
            received: self.received,
            gaps: self.gaps,
            duplicates: self.duplicates,
            reordered: self.reordered,
            undecodable: self.undecodable,
        }
    }
}

/// One received message (`--raw`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct RawRecord {
    /// Device number.
    pub device: u32,
    /// Sequence number.
    pub seq: u64,
    /// Intended send time, µs since the epoch.
    pub intended_us: u64,
    /// Actual send time, µs since the epoch.
    pub sent_us: u64,
    /// Receive time, µs since the epoch.
    pub received_us: u64,
}

/// A batch of results for one run.
#[derive(Debug, Clone, Default)]
pub struct Batch {
    /// An id that makes writing the same batch twice (a retry after a lost reply) count
    /// it once, where the backend needs one (Redis; SQLite's transactions do not); 0 for
    /// no such guard. The writer gives each batch a random one.
    pub id: u64,
    /// The run the raw records belong to (aggregates carry their own).
    pub run_id: String,
    /// Per-topic per-second aggregates.
    pub seconds: Vec<TopicSecond>,
    /// Raw records by topic.
    pub raw: Vec<(String, RawRecord)>,
}

/// A topic a loadgen advertised, and who consumes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Advertisement {
    /// The topic to consume (the loadgen's action topic).
    pub topic: String,
    /// The advertising loadgen instance.
    pub owner: String,
    /// The collector instance holding the claim, if any.
    pub claimed_by: Option<String>,
}

/// Results storage: run records, per-topic per-second aggregates, raw records.
///
/// Called per batch from the store writer, never per message.
#[async_trait::async_trait]
pub trait Store: Send + Sync {
    /// The store's URL, password redacted.
    fn url(&self) -> &str;

    /// Inserts or replaces the record of (run id, component, instance).
    async fn put_run(&self, run: &RunRecord) -> Result<(), StoreError>;

    /// Appends a batch of results. Seconds with the same (run, topic, second, instance)
    /// are merged: counters added, histograms combined.
    async fn write(&self, batch: &Batch) -> Result<(), StoreError>;

    /// Every run record, newest first.
    async fn runs(&self) -> Result<Vec<RunRecord>, StoreError>;

    /// The aggregates of one run, ordered by topic, second, instance.
    async fn seconds(&self, run_id: &str) -> Result<Vec<TopicSecond>, StoreError>;

    /// The raw records of one run, ordered by topic then receive time.
    async fn raw(&self, run_id: &str) -> Result<Vec<(String, RawRecord)>, StoreError>;

    /// What one run's aggregates span: its topics and its first and last second; `None`
    /// when the run has no aggregates yet. With [`Store::seconds_between`] a reader goes
    /// through a long run one time slice at a time, in memory that does not grow with the
    /// run. The default reads every row; the stores answer from an index.
    async fn extent(&self, run_id: &str) -> Result<Option<RunExtent>, StoreError> {
        Ok(RunExtent::of(&self.seconds(run_id).await?))
    }

    /// The aggregates of one run's seconds `from..=to`, in no particular order. The
    /// default reads every row and keeps the slice; the stores read only the slice.
    async fn seconds_between(
        &self,
        run_id: &str,
        from: u64,
        to: u64,
    ) -> Result<Vec<TopicSecond>, StoreError> {
        let mut rows = self.seconds(run_id).await?;
        rows.retain(|r| (from..=to).contains(&r.second));
        Ok(rows)
    }
}

/// What a run's aggregates span ([`Store::extent`]).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RunExtent {
    /// Every topic with at least one row, in order.
    pub topics: Vec<String>,
    /// The first second with a row, Unix time.
    pub first: u64,
    /// The last second with a row, Unix time.
    pub last: u64,
}

impl RunExtent {
    /// The extent of `rows`; `None` when there are none.
    pub fn of(rows: &[TopicSecond]) -> Option<Self> {
        let first = rows.iter().map(|r| r.second).min()?;
        let last = rows.iter().map(|r| r.second).max()?;
        let topics: std::collections::BTreeSet<&str> =
            rows.iter().map(|r| r.topic.as_str()).collect();
        Some(Self {
            topics: topics.into_iter().map(str::to_string).collect(),
            first,
            last,
        })
    }

    /// Slices of at most `rows` rows (one row per topic and second; more where several
    /// instances write a topic), as inclusive `(from, to)` second ranges covering the
    /// extent in order. A slice is at least one second, at most an hour.
    pub fn slices(&self, rows: u64) -> impl Iterator<Item = (u64, u64)> + use<> {
        let topics = u64::try_from(self.topics.len()).unwrap_or(u64::MAX).max(1);
        let step = (rows / topics).clamp(1, 3600);
        let (first, last) = (self.first, self.last);
        (first..=last)
            .step_by(usize::try_from(step).unwrap_or(usize::MAX))
            .map(move |from| (from, from.saturating_add(step - 1).min(last)))
    }
}

/// Fleet coordination (R9, R10): loadgens advertise topics, collectors claim them 1:1.
///
/// Every entry has a lease: an advertisement or claim not renewed within its lease
/// disappears, so a dead instance's topics become available again.
#[async_trait::async_trait]
pub trait Coordinator: Send + Sync {
    /// Advertises `topics` as owned by `owner` for `lease`; calling again renews.
    async fn advertise(
        &self,
        topics: &[String],
        owner: &str,
        lease: Duration,
    ) -> Result<(), StoreError>;

    /// Withdraws `owner`'s advertisements of `topics`.
    async fn withdraw(&self, topics: &[String], owner: &str) -> Result<(), StoreError>;

    /// Atomically claims up to `n` advertised topics that nobody else holds, for `lease`.
    /// A topic is never held by two claimers at once.
    async fn claim(
        &self,
        n: usize,
        owner: &str,
        lease: Duration,
    ) -> Result<Vec<String>, StoreError>;

    /// Renews `owner`'s claims and takes back those whose lease ran out while nobody else
    /// claimed them (a collector cut off from the store for longer than its lease);
    /// returns the topics it holds.
    async fn renew_claims(
        &self,
        topics: &[String],
        owner: &str,
        lease: Duration,
    ) -> Result<Vec<String>, StoreError>;

    /// Releases `owner`'s claims of `topics`.
    async fn release(&self, topics: &[String], owner: &str) -> Result<(), StoreError>;

    /// Every live advertisement with its claimer, ordered by topic.
    async fn advertisements(&self) -> Result<Vec<Advertisement>, StoreError>;

    /// Adds `member` to the start barrier `name`; returns how many members it has.
    async fn join_barrier(&self, name: &str, member: &str) -> Result<u64, StoreError>;

    /// How many members the start barrier `name` has.
    async fn barrier_size(&self, name: &str) -> Result<u64, StoreError>;

    /// Reserves `count` device numbers in run `run` that no other caller gets, and returns
    /// the first: replicas started with the same settings use distinct devices and topics
    /// (`--first-device auto`). Blocks are handed out from 0 upwards.
    async fn allocate_devices(&self, run: &str, count: u32) -> Result<u32, StoreError>;

    /// The store's clock, µs since the Unix epoch (for a local file, this host's clock),
    /// for clock-offset exchanges ([`crate::clock_offset`]).
    async fn server_time_us(&self) -> Result<u64, StoreError>;

    /// Stores `instance`'s clock estimate in run `run`, replacing an earlier one.
    async fn put_clock(
        &self,
        run: &str,
        instance: &str,
        clock: crate::clock_offset::ClockEstimate,
    ) -> Result<(), StoreError>;

    /// Every clock estimate stored in run `run`, by instance.
    async fn clocks(
        &self,
        run: &str,
    ) -> Result<Vec<(String, crate::clock_offset::ClockEstimate)>, StoreError>;
}

/// The first number of a block of `count` device numbers that ends (exclusive) at `end`,
/// if the whole block fits in u32 ([`Coordinator::allocate_devices`]).
fn block_start(end: u64, count: u32) -> Option<u32> {
    u32::try_from(end).ok()?;
    u32::try_from(end.checked_sub(u64::from(count))?).ok()
}

/// The topic of rows that add up all of an instance's topics (`--store-by instance`).
pub const ALL_TOPICS: &str = "*";

/// A store that also coordinates fleets: what `open` returns.
pub trait Backend: Store + Coordinator {}
impl<T: Store + Coordinator> Backend for T {}

/// Opens the store a URL names: `redis://[:password@]host[:port][/db]` (`rediss://`
/// for TLS, `redis+cluster://host1:port1,host2:port2/` for a Redis Cluster) or
/// `sqlite://path` (relative to the working directory; `sqlite:///abs/path` for an
/// absolute one). Checks the connection, so a wrong address fails here.
pub async fn open(url: &str) -> Result<std::sync::Arc<dyn Backend>, StoreError> {
    let redacted = crate::plan::redact_url(url);
    match url.split_once("://").map(|(scheme, _)| scheme) {
        Some("redis" | "rediss" | "redis+cluster" | "rediss+cluster") => {
            Ok(std::sync::Arc::new(redis::RedisStore::open(url).await?))
        }
        Some("sqlite") => Ok(std::sync::Arc::new(sqlite::SqliteStore::open(url).await?)),
        _ => Err(StoreError::BadUrl {
            url: redacted,
            reason: "use redis://host:6379/0, redis+cluster://host1:7000,host2:7001/ or \
                     sqlite://iotload-results.db"
                .into(),
        }),
    }
}

/// Serialises byte fields as base64 strings in JSON.
mod base64_bytes {
    use base64::Engine;
    use serde::{Deserialize, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(bytes: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&base64::engine::general_purpose::STANDARD.encode(bytes))
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let text = String::deserialize(d)?;
        base64::engine::general_purpose::STANDARD
            .decode(text.as_bytes())
            .map_err(serde::de::Error::custom)
    }
}
