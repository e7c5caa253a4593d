//! The Elasticsearch output (`--elasticsearch URL`): installs the index template, then
//! bulk-indexes the per-second documents into daily indices (`iotload-YYYY.MM.DD`),
//! retrying with backoff what the cluster could not take yet.
//!
//! Documents get a deterministic `_id` (run, second, topic), so shipping a run twice, or
//! retrying a bulk request that partly succeeded, overwrites instead of duplicating.
//! Targeted: Elasticsearch 8.x and 9.x (and 7.10+, which share the bulk and composable
//! index template formats); the client sends plain `application/json`.

use std::fmt::Write as _;
use std::time::Duration;

use clap::Args;
use elasticsearch::auth::Credentials;
use elasticsearch::http::transport::{SingleNodeConnectionPool, TransportBuilder};
use elasticsearch::http::{StatusCode, Url};
use elasticsearch::indices::IndicesPutIndexTemplateParts;
use elasticsearch::{BulkParts, Elasticsearch};
use serde::Deserialize;
use serde_json::{Value, json};

/// Options of the Elasticsearch output.
#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Elasticsearch output")]
pub struct ElasticsearchArgs {
    /// Index the per-second documents into this Elasticsearch, e.g. `http://localhost:9200`
    /// or `https://user:password@es.example:9200` (the password is never printed).
    #[arg(long, env = "IOTLOAD_ELASTICSEARCH", value_name = "URL")]
    pub elasticsearch: Option<String>,

    /// Index name prefix: documents go to PREFIX-YYYY.MM.DD (the day of their second) and
    /// the index template PREFIX matches PREFIX-*. Lower case.
    #[arg(
        long,
        env = "IOTLOAD_ELASTICSEARCH_INDEX",
        value_name = "PREFIX",
        default_value = "iotload"
    )]
    pub elasticsearch_index: String,

    /// API key (the base64 "encoded" form Kibana shows) instead of a user in the URL.
    #[arg(
        long,
        env = "IOTLOAD_ELASTICSEARCH_API_KEY",
        value_name = "KEY",
        hide_env_values = true
    )]
    pub elasticsearch_api_key: Option<String>,

    /// Documents per bulk request.
    #[arg(
        long,
        env = "IOTLOAD_ELASTICSEARCH_BATCH",
        value_name = "N",
        default_value_t = 2000,
        value_parser = clap::value_parser!(u32).range(1..=100_000)
    )]
    pub elasticsearch_batch: u32,

    /// Retries of a request the cluster did not take (unreachable, HTTP 429/502/503/504,
    /// documents refused with 429), with exponential backoff from 200 ms up to 10 s.
    #[arg(
        long,
        env = "IOTLOAD_ELASTICSEARCH_RETRIES",
        value_name = "N",
        default_value_t = 5
    )]
    pub elasticsearch_retries: u32,
}

/// What can go wrong shipping to Elasticsearch.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ElasticsearchError {
    /// The URL or the index prefix is not usable.
    #[error("--elasticsearch{option} `{value}`: {reason}")]
    BadOption {
        /// Which option (suffix after `--elasticsearch`).
        option: &'static str,
        /// The value, password redacted.
        value: String,
        /// Why.
        reason: String,
    },
    /// The cluster could not be reached, or kept answering "busy", through every retry.
    #[error(
        "cannot {what} at {url} after {attempts} attempts: {reason}; is Elasticsearch \
         running there? (--elasticsearch, --elasticsearch-retries)"
    )]
    Unreachable {
        /// What was being done.
        what: &'static str,
        /// The URL, password redacted.
        url: String,
        /// Attempts made.
        attempts: u32,
        /// The last failure.
        reason: String,
    },
    /// The cluster refused the credentials.
    #[error(
        "Elasticsearch at {url} refused the credentials (HTTP {status}) to {what}: give \
         user:password in the URL or --elasticsearch-api-key, with index and template rights"
    )]
    Auth {
        /// What was being done.
        what: &'static str,
        /// The URL, password redacted.
        url: String,
        /// HTTP status.
        status: u16,
    },
    /// The cluster answered with an error that retrying will not fix.
    #[error("Elasticsearch at {url} answered HTTP {status} to {what}: {reason}")]
    Http {
        /// What was being done.
        what: &'static str,
        /// The URL, password redacted.
        url: String,
        /// HTTP status.
        status: u16,
        /// The error Elasticsearch gave.
        reason: String,
    },
    /// Documents were rejected (mapping conflicts, a closed or read-only index...).
    #[error("Elasticsearch rejected {rejected} of {sent} documents; first, in {index}: {reason}")]
    Rejected {
        /// Documents rejected.
        rejected: usize,
        /// Documents in the request.
        sent: usize,
        /// The first rejected document's index.
        index: String,
        /// Its error, as Elasticsearch gave it.
        reason: String,
    },
}

/// One document ready for the bulk API: its target index, id and JSON source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BulkDocument {
    /// The daily index.
    pub index: String,
    /// The deterministic id (run, second, topic).
    pub id: String,
    /// The document, one line of JSON (as `--jsonl` writes it).
    pub source: String,
}

impl BulkDocument {
    /// The document for (run, second, topic), `source` being its JSON.
    pub fn new(prefix: &str, run_id: &str, second: u64, topic: &str, source: String) -> Self {
        Self {
            index: index_name(prefix, second),
            id: document_id(run_id, second, topic),
            source,
        }
    }

    /// The bulk action line (`{"index":{"_index":...,"_id":...}}`), without newline.
    pub fn action_line(&self) -> String {
        json!({"index": {"_index": self.index, "_id": self.id}}).to_string()
    }
}

/// The daily index of a Unix second: `PREFIX-YYYY.MM.DD` (UTC).
pub fn index_name(prefix: &str, second: u64) -> String {
    let day = i64::try_from(second)
        .ok()
        .and_then(|s| chrono::DateTime::from_timestamp(s, 0))
        .map(|t| t.format("%Y.%m.%d").to_string())
        .unwrap_or_else(|| "1970.01.01".into());
    format!("{prefix}-{day}")
}

/// Elasticsearch caps `_id` at 512 bytes.
const MAX_ID_BYTES: usize = 512;

/// `RUN/SECOND/TOPIC`; when that exceeds Elasticsearch's 512-byte id limit, the topic is
/// replaced by a 64-bit FNV-1a hash of run and topic (stable across versions and hosts).
pub fn document_id(run_id: &str, second: u64, topic: &str) -> String {
    let id = format!("{run_id}/{second}/{topic}");
    if id.len() <= MAX_ID_BYTES {
        return id;
    }
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for b in run_id.bytes().chain([0]).chain(topic.bytes()) {
        hash ^= u64::from(b);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    let mut id = String::with_capacity(40);
    let _ = write!(id, "{second}/{hash:016x}");
    id
}

/// The composable index template (`PUT _index_template/PREFIX`) the plotter installs:
/// it maps every field of a document (see `docs/plotter.md`), strictly, so a document
/// that does not match is rejected instead of mapped by guess.
pub fn index_template(prefix: &str) -> Value {
    let latency = json!({
        "properties": {
            "count": {"type": "long"},
            "min": {"type": "double"},
            "mean": {"type": "double"},
            "p50": {"type": "double"},
            "p90": {"type": "double"},
            "p99": {"type": "double"},
            "p999": {"type": "double"},
            "max": {"type": "double"}
        }
    });
    json!({
        "index_patterns": [format!("{prefix}-*")],
        "priority": 200,
        "version": 1,
        "_meta": {
            "description": "iotload plotter: one document per run, second and topic",
            "created_by": format!("iotload {}", env!("CARGO_PKG_VERSION"))
        },
        "template": {
            "settings": {
                "number_of_shards": 1,
                "refresh_interval": "5s"
            },
            "mappings": {
                "dynamic": "strict",
                "properties": {
                    "@timestamp": {"type": "date", "format": "strict_date_optional_time"},
                    "run_id": {"type": "keyword"},
                    "topic": {"type": "keyword"},
                    "instances": {"type": "keyword"},
                    "sent": {"type": "long"},
                    "received": {"type": "long"},
                    "gaps": {"type": "long"},
                    "duplicates": {"type": "long"},
                    "reordered": {"type": "long"},
                    "undecodable": {"type": "long"},
                    "latency_ms": latency,
                    "latency_corrected_ms": latency
                }
            }
        }
    })
}

/// The first backoff; each retry doubles it, up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_millis(200);
/// The longest wait between two attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(10);

/// A connection to one cluster that batches documents into bulk requests.
pub struct Shipper {
    client: Elasticsearch,
    url: String,
    batch: usize,
    retries: u32,
    first_backoff: Duration,
    pending: Vec<BulkDocument>,
    indexed: u64,
}

impl std::fmt::Debug for Shipper {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shipper")
            .field("url", &self.url)
            .field("pending", &self.pending.len())
            .field("indexed", &self.indexed)
            .finish()
    }
}

/// Whether a failed attempt is worth another.
enum Attempt<T> {
    Done(T),
    Retry(String),
}

impl Shipper {
    /// Connects to the cluster `args` names and installs the index template.
    pub async fn connect(args: &ElasticsearchArgs) -> Result<Self, ElasticsearchError> {
        let raw = args.elasticsearch.as_deref().unwrap_or_default();
        check_prefix(&args.elasticsearch_index)?;
        let (url, credentials) = parse_url(raw)?;
        let shown = url.to_string();
        let credentials = match &args.elasticsearch_api_key {
            Some(key) => Some(Credentials::EncodedApiKey(key.clone())),
            None => credentials,
        };
        let mut builder = TransportBuilder::new(SingleNodeConnectionPool::new(url))
            .timeout(Duration::from_secs(60))
            .enable_meta_header(false);
        if let Some(c) = credentials {
            builder = builder.auth(c);
        }
        let transport = builder.build().map_err(|e| ElasticsearchError::BadOption {
            option: "",
            value: shown.clone(),
            reason: e.to_string(),
        })?;
        let mut shipper = Self {
            client: Elasticsearch::new(transport),
            url: shown,
            batch: args.elasticsearch_batch as usize,
            retries: args.elasticsearch_retries,
            first_backoff: FIRST_BACKOFF,
            pending: Vec::new(),
            indexed: 0,
        };
        shipper.install_template(&args.elasticsearch_index).await?;
        Ok(shipper)
    }

    /// Waits `first` instead of 200 ms before the first retry (tests).
    pub fn with_first_backoff(mut self, first: Duration) -> Self {
        self.first_backoff = first;
        self
    }

    /// Documents indexed so far.
    pub fn indexed(&self) -> u64 {
        self.indexed
    }

    /// Queues a document; sends a bulk request once a batch is full.
    pub async fn push(&mut self, doc: BulkDocument) -> Result<(), ElasticsearchError> {
        self.pending.push(doc);
        if self.pending.len() >= self.batch {
            self.flush().await?;
        }
        Ok(())
    }

    /// Sends what is queued.
    pub async fn flush(&mut self) -> Result<(), ElasticsearchError> {
        let mut attempt = 0;
        while !self.pending.is_empty() {
            match self.bulk_once().await? {
                Attempt::Done(()) => return Ok(()),
                Attempt::Retry(reason) => {
                    attempt += 1;
                    self.before_retry("index documents", attempt, reason)
                        .await?;
                }
            }
        }
        Ok(())
    }

    /// After failed attempt number `attempt` (from 1) at `what`: the error once the retries
    /// are used up, else a warning and the backoff wait.
    async fn before_retry(
        &self,
        what: &'static str,
        attempt: u32,
        reason: String,
    ) -> Result<(), ElasticsearchError> {
        if attempt > self.retries {
            return Err(ElasticsearchError::Unreachable {
                what,
                url: self.url.clone(),
                attempts: attempt,
                reason,
            });
        }
        tracing::warn!("Elasticsearch: cannot {what}: {reason}; retry {attempt}");
        tokio::time::sleep(self.backoff(attempt)).await;
        Ok(())
    }

    fn backoff(&self, attempt: u32) -> Duration {
        let exp = self
            .first_backoff
            .saturating_mul(1 << attempt.saturating_sub(1).min(16));
        let capped = exp.min(MAX_BACKOFF);
        // Jitter: 50–100 % of the step, so many plotters do not retry in lockstep.
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        capped.mul_f64(0.5 + f64::from(nanos % 1000) / 2000.0)
    }

    async fn install_template(&mut self, prefix: &str) -> Result<(), ElasticsearchError> {
        const WHAT: &str = "install the index template";
        let template = index_template(prefix);
        let mut attempt = 0;
        loop {
            let sent = self
                .client
                .indices()
                .put_index_template(IndicesPutIndexTemplateParts::Name(prefix))
                .body(template.clone())
                .send()
                .await;
            let reason = match sent {
                Err(e) => e.to_string(),
                Ok(response) => {
                    let status = response.status_code();
                    if status.is_success() {
                        return Ok(());
                    }
                    let body = response.text().await.unwrap_or_default();
                    self.classify(WHAT, status, &body)?
                }
            };
            attempt += 1;
            self.before_retry(WHAT, attempt, reason).await?;
        }
    }

    /// A non-success status: `Ok(reason)` when retrying may help, the error otherwise.
    fn classify(
        &self,
        what: &'static str,
        status: StatusCode,
        body: &str,
    ) -> Result<String, ElasticsearchError> {
        let code = status.as_u16();
        match code {
            429 | 502 | 503 | 504 => Ok(format!("HTTP {code}: {}", error_reason(body))),
            401 | 403 => Err(ElasticsearchError::Auth {
                what,
                url: self.url.clone(),
                status: code,
            }),
            _ => Err(ElasticsearchError::Http {
                what,
                url: self.url.clone(),
                status: code,
                reason: error_reason(body),
            }),
        }
    }

    /// One bulk request of everything pending; keeps only what must be retried.
    async fn bulk_once(&mut self) -> Result<Attempt<()>, ElasticsearchError> {
        const WHAT: &str = "index documents";
        let actions: Vec<String> = self.pending.iter().map(BulkDocument::action_line).collect();
        let mut lines: Vec<&str> = Vec::with_capacity(self.pending.len() * 2);
        for (action, doc) in actions.iter().zip(&self.pending) {
            lines.push(action);
            lines.push(&doc.source);
        }
        let sent = self
            .client
            .bulk(BulkParts::None)
            .filter_path(&["errors", "items.*.status", "items.*.error"])
            .body(lines)
            .send()
            .await;
        let response = match sent {
            Err(e) => return Ok(Attempt::Retry(e.to_string())),
            Ok(r) => r,
        };
        let status = response.status_code();
        let body = response.text().await.unwrap_or_default();
        if !status.is_success() {
            return self.classify(WHAT, status, &body).map(Attempt::Retry);
        }
        let parsed: BulkResponse =
            serde_json::from_str(&body).map_err(|e| ElasticsearchError::Http {
                what: WHAT,
                url: self.url.clone(),
                status: status.as_u16(),
                reason: format!("unreadable bulk response ({e}): {}", clip(&body)),
            })?;
        let sent_count = self.pending.len();
        if !parsed.errors {
            self.indexed += sent_count as u64;
            self.pending.clear();
            return Ok(Attempt::Done(()));
        }
        let mut retry = Vec::new();
        let mut rejected = Vec::new();
        for (doc, item) in self.pending.drain(..).zip(parsed.items.iter()) {
            let result = item.values().next();
            match result.map_or(0, |r| r.status) {
                200..=299 => self.indexed += 1,
                429 => retry.push(doc),
                _ => rejected.push((doc, result.and_then(|r| r.error.clone()))),
            }
        }
        if let Some((doc, error)) = rejected.first() {
            return Err(ElasticsearchError::Rejected {
                rejected: rejected.len(),
                sent: sent_count,
                index: doc.index.clone(),
                reason: error.as_ref().map_or_else(String::new, describe_error),
            });
        }
        let waiting = retry.len();
        self.pending = retry;
        if waiting == 0 {
            Ok(Attempt::Done(()))
        } else {
            Ok(Attempt::Retry(format!(
                "{waiting} of {sent_count} documents refused with HTTP 429 (cluster busy)"
            )))
        }
    }
}

/// The parts of a bulk response the shipper reads.
#[derive(Debug, Deserialize)]
struct BulkResponse {
    errors: bool,
    #[serde(default)]
    items: Vec<std::collections::HashMap<String, BulkItem>>,
}

#[derive(Debug, Deserialize)]
struct BulkItem {
    status: u16,
    #[serde(default)]
    error: Option<Value>,
}

/// `type: reason` of an Elasticsearch error object.
fn describe_error(error: &Value) -> String {
    match (error.get("type"), error.get("reason")) {
        (Some(t), Some(r)) => format!(
            "{}: {}",
            t.as_str().unwrap_or_default(),
            r.as_str().unwrap_or_default()
        ),
        _ => clip(&error.to_string()),
    }
}

/// The error of an Elasticsearch error response body, or the body itself.
fn error_reason(body: &str) -> String {
    match serde_json::from_str::<Value>(body) {
        Ok(v) => match v.get("error") {
            Some(e) if e.is_object() => describe_error(e),
            Some(e) => clip(&e.to_string()),
            None => clip(body),
        },
        Err(_) if body.trim().is_empty() => "empty response".into(),
        Err(_) => clip(body),
    }
}

fn clip(text: &str) -> String {
    let text = text.trim();
    match text.char_indices().nth(300) {
        Some((i, _)) => format!("{}…", &text[..i]),
        None => text.to_string(),
    }
}

/// The URL without user and password, and the credentials it carried.
fn parse_url(raw: &str) -> Result<(Url, Option<Credentials>), ElasticsearchError> {
    let bad = |reason: String| ElasticsearchError::BadOption {
        option: "",
        value: redact(raw),
        reason,
    };
    let mut url = Url::parse(raw).map_err(|e| bad(format!("{e}; e.g. http://localhost:9200")))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(bad("the scheme must be http or https".into()));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(bad("no host; e.g. http://localhost:9200".into()));
    }
    let credentials = if url.username().is_empty() {
        None
    } else {
        let decode = |s: &str| {
            percent_encoding::percent_decode_str(s)
                .decode_utf8_lossy()
                .into_owned()
        };
        Some(Credentials::Basic(
            decode(url.username()),
            decode(url.password().unwrap_or_default()),
        ))
    };
    let _ = url.set_username("");
    let _ = url.set_password(None);
    Ok((url, credentials))
}

/// `raw` with any password replaced by `***`.
fn redact(raw: &str) -> String {
    match (raw.find("://"), raw.rfind('@')) {
        (Some(s), Some(at)) if at > s => match raw[s + 3..at].find(':') {
            Some(c) => format!("{}:***{}", &raw[..s + 3 + c], &raw[at..]),
            None => raw.to_string(),
        },
        _ => raw.to_string(),
    }
}

/// Index names: lower case, no `\ / * ? " < > | , # :` or spaces, not starting with
/// `-`, `_` or `+`.
fn check_prefix(prefix: &str) -> Result<(), ElasticsearchError> {
    let bad = |reason: &str| ElasticsearchError::BadOption {
        option: "-index",
        value: prefix.to_string(),
        reason: reason.to_string(),
    };
    if prefix.is_empty() {
        return Err(bad("empty"));
    }
    if prefix.starts_with(['-', '_', '+']) {
        return Err(bad("an index name cannot start with -, _ or +"));
    }
    if prefix.chars().any(|c| c.is_uppercase()) {
        return Err(bad("index names are lower case"));
    }
    if let Some(c) = prefix
        .chars()
        .find(|c| "\\/*?\"<>|,#: ".contains(*c) || c.is_control())
    {
        return Err(bad(&format!("an index name cannot contain `{c}`")));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::aggregate::{CellStats, MessageCounts, TopicSecondStats};
    use crate::document::Document;

    #[test]
    fn daily_index_and_stable_ids() {
        assert_eq!(index_name("iotload", 1_700_000_000), "iotload-2023.11.14");
        assert_eq!(index_name("x", 0), "x-1970.01.01");
        assert_eq!(document_id("r1", 5, "iot/1/action"), "r1/5/iot/1/action");
        let long = "t".repeat(600);
        let id = document_id("r1", 5, &long);
        assert!(id.len() <= MAX_ID_BYTES, "{id}");
        assert_eq!(id, document_id("r1", 5, &long), "stable");
        assert_ne!(id, document_id("r2", 5, &long), "run is part of the hash");
    }

    #[test]
    fn bulk_lines_follow_the_bulk_api_format() {
        let doc = BulkDocument::new("iotload", "r\"1", 1_700_000_000, "a/b", "{}".into());
        let action: Value = serde_json::from_str(&doc.action_line()).unwrap();
        assert_eq!(action["index"]["_index"], "iotload-2023.11.14");
        assert_eq!(action["index"]["_id"], "r\"1/1700000000/a/b");
        assert_eq!(action.as_object().unwrap().len(), 1, "one action per line");
        assert!(!doc.action_line().contains('\n'));
    }

    /// Every field a document has is mapped with the type its JSON value needs, and the
    /// template has the documented shape of a composable index template.
    #[test]
    fn template_maps_every_document_field() {
        let template = index_template("iotload");
        assert_eq!(template["index_patterns"][0], "iotload-*");
        assert_eq!(template["template"]["mappings"]["dynamic"], "strict");
        let empty = iotload_core::recorder::LatencyHistogram::stored_precision();
        let cell = TopicSecondStats {
            second: 1_700_000_000,
            topic: "t",
            instances: vec!["i"],
            stats: CellStats {
                counts: MessageCounts {
                    sent: 1,
                    ..MessageCounts::default()
                },
                ..CellStats::default()
            },
            latency: &empty,
            corrected: &empty,
        };
        let doc = serde_json::to_value(Document::new("r", &cell)).unwrap();
        let mapping = &template["template"]["mappings"]["properties"];
        fn check(doc: &Value, mapping: &Value, path: &str) {
            let Value::Object(fields) = doc else {
                panic!("{path} is not an object")
            };
            for (name, value) in fields {
                let m = &mapping[name];
                assert!(!m.is_null(), "field {path}{name} is not mapped");
                match value {
                    Value::Object(_) => check(value, &m["properties"], &format!("{path}{name}.")),
                    Value::Number(n) if n.is_u64() => {
                        assert_eq!(m["type"], "long", "{path}{name}")
                    }
                    Value::Number(_) => assert_eq!(m["type"], "double", "{path}{name}"),
                    Value::String(_) | Value::Array(_) => assert!(
                        m["type"] == "keyword" || m["type"] == "date",
                        "{path}{name}: {m}"
                    ),
                    other => panic!("{path}{name}: unexpected {other}"),
                }
            }
        }
        check(&doc, mapping, "");
        assert_eq!(mapping["@timestamp"]["type"], "date");
    }

    #[test]
    fn urls_lose_their_credentials_and_are_redacted() {
        let (url, creds) = parse_url("https://elastic:p%40ss@es.example:9200").unwrap();
        assert_eq!(url.as_str(), "https://es.example:9200/");
        match creds {
            Some(Credentials::Basic(u, p)) => {
                assert_eq!(u, "elastic");
                assert_eq!(p, "p@ss");
            }
            other => panic!("{other:?}"),
        }
        let err = parse_url("ftp://u:secret@h").unwrap_err().to_string();
        assert!(err.contains("http or https"), "{err}");
        assert!(!err.contains("secret"), "{err}");
        assert!(err.contains("u:***@h"), "{err}");
        assert!(parse_url("localhost:9200").is_err());
    }

    #[test]
    fn index_prefixes_are_checked() {
        assert!(check_prefix("iotload").is_ok());
        for bad in ["", "IoT", "_x", "a b", "a/b", "a*"] {
            assert!(check_prefix(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn error_bodies_are_summarised() {
        let body = r#"{"error":{"type":"index_closed_exception","reason":"closed"},"status":400}"#;
        assert_eq!(error_reason(body), "index_closed_exception: closed");
        assert_eq!(error_reason(""), "empty response");
        assert_eq!(
            error_reason("<html>bad gateway</html>"),
            "<html>bad gateway</html>"
        );
    }
}
