//! `iotload plotter --elasticsearch`, two ways:
//!
//! - against a local HTTP endpoint that answers as Elasticsearch's documented
//!   index-template and bulk APIs do, and fails on cue (busy, unavailable, refused
//!   documents, refused credentials, unreachable): the exact requests and the retry paths;
//! - against a live Elasticsearch node the test kit starts ([`SearchNode`]:
//!   Elasticsearch 7.10.2 from Maven Central jars, one JVM per test): the template it
//!   keeps, the daily indices and their strict mapping, overwriting on re-shipping, the
//!   run's figures read back with `_search` aggregations and compared with what
//!   `iotload plotter --jsonl` and `iotload results show` print, basic credentials the
//!   node enforces, and documents it rejects.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};

use base64::Engine as _;
use common::*;
use iotload_testkit::{SearchNode, SearchNodeOptions};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;

/// One HTTP request the endpoint received.
#[derive(Debug, Clone)]
pub(crate) struct Request {
    method: String,
    path: String,
    headers: Vec<(String, String)>,
    body: String,
}

impl Request {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    fn is_bulk(&self) -> bool {
        self.method == "POST" && self.path.starts_with("/_bulk")
    }

    /// The (action, source) pairs of a bulk body.
    fn bulk_pairs(&self) -> Vec<(Value, Value)> {
        assert!(self.body.ends_with('\n'), "a bulk body ends with a newline");
        let lines: Vec<Value> = self
            .body
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
            .collect();
        assert_eq!(lines.len() % 2, 0, "action and source lines pair up");
        lines
            .chunks(2)
            .map(|c| (c[0].clone(), c[1].clone()))
            .collect()
    }
}

/// How the endpoint answers a request: (status, JSON body), given the request and how
/// many requests of the same kind (bulk or not) came before it.
type Answer = Arc<dyn Fn(&Request, usize) -> (u16, Value) + Send + Sync>;

/// A local HTTP/1.1 endpoint that records every request and answers with `answer`.
pub(crate) struct FakeCluster {
    url: String,
    requests: Arc<Mutex<Vec<Request>>>,
}

impl FakeCluster {
    async fn start(answer: Answer) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let requests = Arc::new(Mutex::new(Vec::new()));
        let seen = requests.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let answer = answer.clone();
                let seen = seen.clone();
                tokio::spawn(async move {
                    let (read, mut write) = stream.into_split();
                    let mut read = BufReader::new(read);
                    while let Some(request) = read_request(&mut read).await {
                        let n = {
                            let mut all = seen.lock().unwrap();
                            let n = all
                                .iter()
                                .filter(|r: &&Request| r.is_bulk() == request.is_bulk())
                                .count();
                            all.push(request.clone());
                            n
                        };
                        let (status, body) = answer(&request, n);
                        let body = body.to_string();
                        let head = format!(
                            "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\n\
                             content-length: {}\r\n\r\n",
                            body.len()
                        );
                        if write.write_all(head.as_bytes()).await.is_err()
                            || write.write_all(body.as_bytes()).await.is_err()
                        {
                            return;
                        }
                    }
                });
            }
        });
        Self { url, requests }
    }

    fn requests(&self) -> Vec<Request> {
        self.requests.lock().unwrap().clone()
    }
}

async fn read_request<R: AsyncBufReadExt + Unpin>(read: &mut R) -> Option<Request> {
    let mut line = String::new();
    if read.read_line(&mut line).await.ok()? == 0 {
        return None;
    }
    let mut parts = line.split_whitespace();
    let method = parts.next()?.to_string();
    let path = parts.next()?.to_string();
    let mut headers = Vec::new();
    loop {
        let mut h = String::new();
        read.read_line(&mut h).await.ok()?;
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        let (k, v) = h.split_once(':')?;
        headers.push((k.trim().to_string(), v.trim().to_string()));
    }
    let length: usize = headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
        .map_or(0, |(_, v)| v.parse().unwrap());
    assert!(
        !headers
            .iter()
            .any(|(k, _)| k.eq_ignore_ascii_case("transfer-encoding")),
        "expected a Content-Length body"
    );
    let mut body = vec![0; length];
    read.read_exact(&mut body).await.ok()?;
    Some(Request {
        method,
        path,
        headers,
        body: String::from_utf8(body).unwrap(),
    })
}

/// A bulk response for `request` where document `i` gets `status(i)`.
fn bulk_answer(request: &Request, status: impl Fn(usize) -> u16) -> Value {
    let items: Vec<Value> = (0..request.bulk_pairs().len())
        .map(|i| match status(i) {
            s @ 200..=299 => json!({"index": {"status": s}}),
            429 => json!({"index": {"status": 429, "error": {
                "type": "es_rejected_execution_exception", "reason": "rejected execution"}}}),
            s => json!({"index": {"status": s, "error": {
                "type": "document_parsing_exception",
                "reason": "[1:20] failed to parse field [sent] of type [long]"}}}),
        })
        .collect();
    let errors = (0..items.len()).any(|i| status(i) >= 300);
    json!({"errors": errors, "items": items})
}

/// A cluster that accepts everything.
fn healthy() -> Answer {
    Arc::new(|r, _| {
        if r.is_bulk() {
            (200, bulk_answer(r, |_| 201))
        } else {
            (200, json!({"acknowledged": true}))
        }
    })
}

/// Records a short run on the embedded broker into a fresh SQLite store.
async fn recorded_store(scratch: &Scratch, run_id: &str) -> String {
    let store = format!("sqlite://{}", scratch.path("results.db").display());
    let out = run(&[
        "run",
        "--devices",
        "3",
        "--rate",
        "20",
        "--duration",
        "2s",
        "--store",
        &store,
        "--run-id",
        run_id,
    ])
    .await;
    assert_eq!(out.code, 0, "{}\n{}", out.stdout, out.stderr);
    store
}

async fn plotter(store: &str, url: &str, extra: &[&str]) -> Finished {
    let mut args = vec!["plotter", "--store", store, "--elasticsearch", url];
    args.extend_from_slice(extra);
    run(&args).await
}

/// Every indexed document's id, from the bulk requests the cluster accepted (status 2xx).
fn accepted_ids(cluster: &FakeCluster, accepted: impl Fn(usize, usize) -> bool) -> Vec<String> {
    let mut ids = Vec::new();
    for (n, r) in cluster
        .requests()
        .iter()
        .filter(|r| r.is_bulk())
        .enumerate()
    {
        for (i, (action, _)) in r.bulk_pairs().iter().enumerate() {
            if accepted(n, i) {
                ids.push(action["index"]["_id"].as_str().unwrap().to_string());
            }
        }
    }
    ids
}

#[tokio::test]
async fn plotter_installs_the_template_and_indexes_every_document_once() {
    let scratch = Scratch::new();
    let store = recorded_store(&scratch, "es-run").await;
    let cluster = FakeCluster::start(healthy()).await;
    let jsonl = scratch.path("docs.jsonl");
    let out = plotter(
        &store,
        &cluster.url,
        &[
            "--elasticsearch-batch",
            "5",
            "--jsonl",
            &jsonl.display().to_string(),
        ],
    )
    .await;
    assert_eq!(out.code, 0, "{}\n{}", out.stdout, out.stderr);
    let lines: Vec<String> = std::fs::read_to_string(&jsonl)
        .unwrap()
        .lines()
        .map(String::from)
        .collect();
    assert!(lines.len() >= 3 * 2, "{} documents", lines.len());
    assert!(
        out.stdout
            .contains(&format!("{} indexed into Elasticsearch", lines.len())),
        "{}",
        out.stdout
    );

    let requests = cluster.requests();
    let template = &requests[0];
    assert_eq!(
        (template.method.as_str(), template.path.as_str()),
        ("PUT", "/_index_template/iotload"),
        "the template comes first"
    );
    let body: Value = serde_json::from_str(&template.body).unwrap();
    assert_eq!(body["index_patterns"], json!(["iotload-*"]));
    assert_eq!(
        body["template"]["mappings"]["properties"]["@timestamp"]["type"],
        "date"
    );

    // Plain JSON, which Elasticsearch 7, 8 and 9 and OpenSearch all take; not Elasticsearch
    // 8's `compatible-with` media type, which Elasticsearch 7.10 answers with HTTP 406.
    for r in &requests {
        for name in ["content-type", "accept"] {
            let value = r.header(name).unwrap_or_default();
            assert!(
                value.starts_with("application/json") && !value.contains("compatible-with"),
                "{} {}: {name}: {value}",
                r.method,
                r.path
            );
        }
    }
    let bulks: Vec<&Request> = requests.iter().filter(|r| r.is_bulk()).collect();
    assert_eq!(bulks.len(), lines.len().div_ceil(5), "batches of 5");
    assert_eq!(requests.len(), 1 + bulks.len(), "nothing else was asked");
    let mut sources = Vec::new();
    let mut ids = BTreeSet::new();
    for r in &bulks {
        let ct = r.header("content-type").unwrap_or_default();
        assert!(ct.contains("json"), "bulk content type {ct}");
        let pairs = r.bulk_pairs();
        assert!(pairs.len() <= 5);
        for (action, source) in pairs {
            let meta = &action["index"];
            let ts = source["@timestamp"].as_str().unwrap();
            let day = ts[..10].replace('-', ".");
            assert_eq!(meta["_index"], format!("iotload-{day}"), "daily index");
            let id = format!(
                "es-run/{}/{}",
                chrono::DateTime::parse_from_rfc3339(ts)
                    .unwrap()
                    .timestamp(),
                source["topic"].as_str().unwrap()
            );
            assert_eq!(meta["_id"], id.as_str());
            assert!(ids.insert(id), "each id once");
            sources.push(source);
        }
    }
    let jsonl_docs: Vec<Value> = lines
        .iter()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(
        sources, jsonl_docs,
        "indexed documents are the JSON Lines ones"
    );
}

#[tokio::test]
async fn busy_and_unavailable_answers_are_retried_until_everything_is_indexed() {
    let scratch = Scratch::new();
    let store = recorded_store(&scratch, "es-retry").await;
    // Template: 503 once. Bulk: the first request 429 as a whole, the second refuses its
    // first document with 429 (the rest indexed), then everything is accepted.
    let cluster = FakeCluster::start(Arc::new(|r, n| {
        if !r.is_bulk() {
            return match n {
                0 => (503, json!({"error": "unavailable"})),
                _ => (200, json!({"acknowledged": true})),
            };
        }
        match n {
            0 => (
                429,
                json!({"error": {"type": "circuit_breaking_exception",
                "reason": "busy"}}),
            ),
            1 => (200, bulk_answer(r, |i| if i == 0 { 429 } else { 201 })),
            _ => (200, bulk_answer(r, |_| 201)),
        }
    }))
    .await;
    let out = plotter(&store, &cluster.url, &["--elasticsearch-batch", "1000"]).await;
    assert_eq!(out.code, 0, "{}\n{}", out.stdout, out.stderr);
    let bulks: Vec<Request> = cluster
        .requests()
        .into_iter()
        .filter(Request::is_bulk)
        .collect();
    assert_eq!(bulks.len(), 3, "one batch, sent three times");
    let all = bulks[0].bulk_pairs().len();
    assert_eq!(bulks[1].bulk_pairs().len(), all, "the whole batch again");
    assert_eq!(bulks[2].bulk_pairs().len(), 1, "only the refused document");
    let ids = accepted_ids(&cluster, |n, i| n == 2 || (n == 1 && i > 0));
    let unique: BTreeSet<&String> = ids.iter().collect();
    assert_eq!((ids.len(), unique.len()), (all, all), "each document once");
    assert!(
        out.stdout
            .contains(&format!("{all} indexed into Elasticsearch")),
        "{}",
        out.stdout
    );
}

#[tokio::test]
async fn rejected_documents_fail_the_plotter_with_elasticsearch_reason() {
    let scratch = Scratch::new();
    let store = recorded_store(&scratch, "es-reject").await;
    let cluster = FakeCluster::start(Arc::new(|r, _| {
        if r.is_bulk() {
            (200, bulk_answer(r, |i| if i == 1 { 400 } else { 201 }))
        } else {
            (200, json!({"acknowledged": true}))
        }
    }))
    .await;
    let out = plotter(&store, &cluster.url, &[]).await;
    assert_ne!(out.code, 0, "{}", out.stdout);
    assert!(
        out.stderr.contains("Elasticsearch rejected 1 of")
            && out
                .stderr
                .contains("document_parsing_exception: [1:20] failed to parse field [sent]"),
        "{}",
        out.stderr
    );
}

#[tokio::test]
async fn refused_credentials_and_errors_are_explained_without_the_password() {
    let scratch = Scratch::new();
    let store = recorded_store(&scratch, "es-auth").await;
    let cluster = FakeCluster::start(Arc::new(|_, _| {
        (401, json!({"error": {"type": "security_exception", "reason": "unable to authenticate"}, "status": 401}))
    }))
    .await;
    let url = cluster.url.replace("http://", "http://elastic:s3cret@");
    let out = plotter(&store, &url, &[]).await;
    assert_ne!(out.code, 0);
    assert!(
        out.stderr.contains("refused the credentials (HTTP 401)"),
        "{}",
        out.stderr
    );
    assert!(!out.stderr.contains("s3cret") && !out.stdout.contains("s3cret"));
    let sent = &cluster.requests()[0];
    let auth = sent.header("authorization").unwrap_or_default();
    assert!(
        auth.starts_with("Basic "),
        "credentials sent as basic auth: {auth}"
    );

    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let out = plotter(
        &store,
        &format!("http://127.0.0.1:{closed}"),
        &["--elasticsearch-retries", "1"],
    )
    .await;
    assert_ne!(out.code, 0);
    assert!(
        out.stderr.contains(&format!(
            "cannot install the index template at http://127.0.0.1:{closed}/ after 2 attempts"
        )) && out.stderr.contains("is Elasticsearch running there?"),
        "{}",
        out.stderr
    );

    let out = plotter(&store, "localhost:9200", &[]).await;
    assert_ne!(out.code, 0);
    assert!(
        out.stderr.contains("--elasticsearch `localhost:9200`"),
        "{}",
        out.stderr
    );
}

// ---------------------------------------------------------------------------------------
// Against a live Elasticsearch node.

/// The user and password the credentials test's node enforces; the password has a
/// character the URL must percent-encode.
const LIVE_USER: &str = "iotload";
const LIVE_PASSWORD: &str = "s3cr@t";

/// A live node's HTTP API, for reading what the plotter left there (HTTP/1.0, one
/// connection per call, JSON bodies).
struct Rest {
    port: u16,
    authorization: Option<String>,
}

impl Rest {
    fn new(node: &SearchNode, credentials: Option<(&str, &str)>) -> Self {
        Self {
            port: node.port(),
            authorization: credentials.map(|(user, password)| {
                let pair = format!("{user}:{password}");
                format!(
                    "Basic {}",
                    base64::engine::general_purpose::STANDARD.encode(pair)
                )
            }),
        }
    }

    /// `METHOD path` with an optional JSON body: (status, JSON answer; `null` if empty).
    async fn call(&self, method: &str, path: &str, body: Option<&Value>) -> (u16, Value) {
        let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", self.port))
            .await
            .unwrap();
        let body = body.map(Value::to_string).unwrap_or_default();
        let mut request = format!(
            "{method} {path} HTTP/1.0\r\nHost: 127.0.0.1\r\nConnection: close\r\n\
             Content-Type: application/json\r\nContent-Length: {}\r\n",
            body.len()
        );
        if let Some(auth) = &self.authorization {
            request.push_str(&format!("Authorization: {auth}\r\n"));
        }
        request.push_str("\r\n");
        request.push_str(&body);
        stream.write_all(request.as_bytes()).await.unwrap();
        let mut answer = String::new();
        stream.read_to_string(&mut answer).await.unwrap();
        let (head, text) = answer
            .split_once("\r\n\r\n")
            .unwrap_or_else(|| panic!("{method} {path}: no HTTP answer: {answer}"));
        let status = head
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("{method} {path}: {head}"));
        let json = if text.trim().is_empty() {
            Value::Null
        } else {
            serde_json::from_str(text).unwrap_or_else(|e| panic!("{method} {path}: {e}: {text}"))
        };
        (status, json)
    }

    /// `call`, asserting HTTP 200.
    async fn ok(&self, method: &str, path: &str, body: Option<&Value>) -> Value {
        let (status, json) = self.call(method, path, body).await;
        assert_eq!(status, 200, "{method} {path}: {json}");
        json
    }

    /// Makes every indexed document searchable (the template's refresh interval is 5 s).
    async fn refresh(&self) {
        self.ok("POST", "/iotload-*/_refresh", None).await;
    }

    /// Every document of `run_id`, oldest second first, with `_index`, `_id` and
    /// `_version`.
    async fn hits(&self, run_id: &str) -> Vec<Value> {
        let found = self
            .ok(
                "POST",
                "/iotload-*/_search",
                Some(&json!({
                    "size": 10000,
                    "version": true,
                    "track_total_hits": true,
                    "query": {"term": {"run_id": run_id}},
                    "sort": [{"@timestamp": "asc"}, {"topic": "asc"}]
                })),
            )
            .await;
        let hits = found["hits"]["hits"].as_array().unwrap().clone();
        assert_eq!(
            found["hits"]["total"]["value"].as_u64(),
            Some(hits.len() as u64),
            "{found}"
        );
        hits
    }
}

/// `node`'s URL with `user:password@` (percent-encoded) in it.
fn url_with_credentials(node: &SearchNode, user: &str, password: &str) -> String {
    let password = password.replace('%', "%25").replace('@', "%40");
    node.url()
        .replace("http://", &format!("http://{user}:{password}@"))
}

/// The documents of a `--jsonl` file.
fn jsonl_documents(path: &std::path::Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// A document's second as Unix seconds.
fn second_of(doc: &Value) -> i64 {
    chrono::DateTime::parse_from_rfc3339(doc["@timestamp"].as_str().unwrap())
        .unwrap()
        .timestamp()
}

/// The rows of `iotload results show`'s per-topic table: topic → its columns (sent,
/// received, lost, dup, reordered, p50 ms, p99 ms, max ms), as printed.
fn shown_rows(stdout: &str) -> std::collections::BTreeMap<String, Vec<String>> {
    stdout
        .lines()
        .skip_while(|l| !l.starts_with("topic "))
        .skip(1)
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let (topic, rest) = match l.strip_prefix("(all topics)") {
                Some(rest) => ("(all topics)", rest),
                None => l.split_once(' ').unwrap(),
            };
            let columns: Vec<String> = rest.split_whitespace().map(String::from).collect();
            assert_eq!(columns.len(), 8, "{l}");
            (topic.to_string(), columns)
        })
        .collect()
}

#[tokio::test]
async fn live_elasticsearch_keeps_the_template_daily_strict_indices_and_the_runs_figures() {
    let scratch = Scratch::new();
    let run_id = "es-live";
    let (node, store) = tokio::join!(SearchNode::require(), recorded_store(&scratch, run_id));
    let Some(node) = node else {
        return;
    };
    assert_eq!(
        (node.engine(), node.version()),
        ("elasticsearch", iotload_testkit::ELASTICSEARCH_VERSION)
    );
    let es = Rest::new(&node, None);
    let jsonl = scratch.path("docs.jsonl");
    let out = plotter(
        &store,
        &node.url(),
        &[
            "--elasticsearch-batch",
            "7",
            "--jsonl",
            &jsonl.display().to_string(),
        ],
    )
    .await;
    assert_eq!(
        out.code,
        0,
        "{}\n{}\n{}",
        out.stdout,
        out.stderr,
        node.log()
    );
    let docs = jsonl_documents(&jsonl);
    assert!(docs.len() >= 3 * 2, "{} documents", docs.len());
    assert!(
        out.stdout
            .contains(&format!("{} indexed into Elasticsearch", docs.len())),
        "{}",
        out.stdout
    );

    // The template, as the node keeps it.
    let sent_template = plotter::elasticsearch::index_template("iotload");
    let kept = es.ok("GET", "/_index_template/iotload", None).await;
    let kept = &kept["index_templates"][0];
    assert_eq!(kept["name"], "iotload", "{kept}");
    let kept = &kept["index_template"];
    assert_eq!(kept["index_patterns"], json!(["iotload-*"]), "{kept}");
    assert_eq!(kept["priority"], 200, "{kept}");
    assert_eq!(
        kept["template"]["mappings"], sent_template["template"]["mappings"],
        "the node keeps the mapping the plotter sent"
    );

    // Daily indices, each with the template's strict mapping.
    es.refresh().await;
    let days: BTreeSet<String> = docs
        .iter()
        .map(|d| {
            format!(
                "iotload-{}",
                d["@timestamp"].as_str().unwrap()[..10].replace('-', ".")
            )
        })
        .collect();
    let mappings = es.ok("GET", "/iotload-*/_mapping", None).await;
    let indices: BTreeSet<String> = mappings.as_object().unwrap().keys().cloned().collect();
    assert_eq!(indices, days, "one index per day of the run's seconds");
    for (index, mapping) in mappings.as_object().unwrap() {
        assert_eq!(
            mapping["mappings"], sent_template["template"]["mappings"],
            "{index}"
        );
    }
    let day = days.iter().next().unwrap();
    let mut stray = docs[0].clone();
    stray["unmapped_field"] = json!(1);
    let (status, refused) = es
        .call("PUT", &format!("/{day}/_doc/stray"), Some(&stray))
        .await;
    assert_eq!(status, 400, "{refused}");
    assert_eq!(
        refused["error"]["type"], "strict_dynamic_mapping_exception",
        "{refused}"
    );

    // Every document once, in the index of its day, with its deterministic id, as the
    // JSON Lines file has it.
    let hits = es.hits(run_id).await;
    assert_eq!(hits.len(), docs.len());
    let by_id: std::collections::BTreeMap<String, &Value> = docs
        .iter()
        .map(|d| {
            let id = format!("{run_id}/{}/{}", second_of(d), d["topic"].as_str().unwrap());
            (id, d)
        })
        .collect();
    assert_eq!(by_id.len(), docs.len(), "ids are unique");
    for hit in &hits {
        let id = hit["_id"].as_str().unwrap();
        let doc = by_id
            .get(id)
            .unwrap_or_else(|| panic!("unexpected id {id}"));
        assert_eq!(&hit["_source"], *doc, "{id}");
        let day = doc["@timestamp"].as_str().unwrap()[..10].replace('-', ".");
        assert_eq!(hit["_index"], format!("iotload-{day}"), "{id}");
        assert_eq!(hit["_version"], 1, "{id}");
    }

    // The p99 of every second and topic, through a date histogram: the documents' values.
    let per_second = es
        .ok(
            "POST",
            "/iotload-*/_search",
            Some(&json!({
                "size": 0,
                "query": {"term": {"run_id": run_id}},
                "aggs": {"seconds": {
                    "date_histogram": {"field": "@timestamp", "fixed_interval": "1s",
                                       "min_doc_count": 1},
                    "aggs": {"topics": {
                        "terms": {"field": "topic", "size": 100},
                        "aggs": {
                            "p99": {"max": {"field": "latency_ms.p99"}},
                            "corrected_p99": {"max": {"field": "latency_corrected_ms.p99"}}
                        }
                    }}
                }}
            })),
        )
        .await;
    let mut from_search = std::collections::BTreeMap::new();
    for second in per_second["aggregations"]["seconds"]["buckets"]
        .as_array()
        .unwrap()
    {
        let key_ms = second["key"].as_i64().unwrap();
        for topic in second["topics"]["buckets"].as_array().unwrap() {
            assert_eq!(topic["doc_count"], 1, "one document per second and topic");
            from_search.insert(
                (key_ms / 1000, topic["key"].as_str().unwrap().to_string()),
                (
                    topic["p99"]["value"].as_f64().unwrap(),
                    topic["corrected_p99"]["value"].as_f64().unwrap(),
                ),
            );
        }
    }
    let from_documents: std::collections::BTreeMap<(i64, String), (f64, f64)> = docs
        .iter()
        .map(|d| {
            (
                (second_of(d), d["topic"].as_str().unwrap().to_string()),
                (
                    d["latency_ms"]["p99"].as_f64().unwrap(),
                    d["latency_corrected_ms"]["p99"].as_f64().unwrap(),
                ),
            )
        })
        .collect();
    assert_eq!(from_search, from_documents, "p99 per second and topic");
    assert!(
        from_documents.values().any(|(p99, _)| *p99 > 0.0),
        "the run has latencies: {from_documents:?}"
    );

    // The run's totals per topic, aggregated by the node, are what `results show` prints.
    let per_topic = es
        .ok(
            "POST",
            "/iotload-*/_search",
            Some(&json!({
                "size": 0,
                "query": {"term": {"run_id": run_id}},
                "aggs": {
                    "topics": {
                        "terms": {"field": "topic", "size": 100},
                        "aggs": {
                            "sent": {"sum": {"field": "sent"}},
                            "received": {"sum": {"field": "received"}},
                            "gaps": {"sum": {"field": "gaps"}},
                            "duplicates": {"sum": {"field": "duplicates"}},
                            "reordered": {"sum": {"field": "reordered"}},
                            "undecodable": {"sum": {"field": "undecodable"}},
                            "max": {"max": {"field": "latency_ms.max"}}
                        }
                    },
                    "sent": {"sum": {"field": "sent"}},
                    "received": {"sum": {"field": "received"}},
                    "max": {"max": {"field": "latency_ms.max"}}
                }
            })),
        )
        .await;
    let shown = run(&["results", "show", run_id, "--store", &store]).await;
    assert_eq!(shown.code, 0, "{}", shown.stderr);
    let rows = shown_rows(&shown.stdout);
    let aggs = &per_topic["aggregations"];
    let topics = aggs["topics"]["buckets"].as_array().unwrap();
    assert_eq!(topics.len() + 1, rows.len(), "{}", shown.stdout);
    let count = |v: &Value| format!("{}", v["value"].as_f64().unwrap() as u64);
    let ms = |v: &Value| format!("{:.3}", v["value"].as_f64().unwrap());
    for bucket in topics {
        let topic = bucket["key"].as_str().unwrap();
        let row = rows
            .get(topic)
            .unwrap_or_else(|| panic!("{topic} not in\n{}", shown.stdout));
        let total = |name: &str| bucket[name]["value"].as_f64().unwrap() as u64;
        let lost = iotload_core::loss::MessageCounts {
            sent: total("sent"),
            received: total("received"),
            gaps: total("gaps"),
            duplicates: total("duplicates"),
            reordered: total("reordered"),
            undecodable: total("undecodable"),
        }
        .lost();
        let searched = [
            count(&bucket["sent"]),
            count(&bucket["received"]),
            lost.to_string(),
            count(&bucket["duplicates"]),
            count(&bucket["reordered"]),
            ms(&bucket["max"]),
        ];
        let printed = [&row[0], &row[1], &row[2], &row[3], &row[4], &row[7]];
        assert_eq!(
            searched.iter().collect::<Vec<_>>(),
            printed,
            "{topic}: sent, received, lost, dup, reordered, max ms\n{}",
            shown.stdout
        );
    }
    let all = &rows["(all topics)"];
    assert_eq!(
        [
            count(&aggs["sent"]),
            count(&aggs["received"]),
            ms(&aggs["max"])
        ],
        [all[0].clone(), all[1].clone(), all[7].clone()],
        "{}",
        shown.stdout
    );

    // Shipping the run again overwrites: the same ids, no more documents, version 2.
    let out = plotter(&store, &node.url(), &[]).await;
    assert_eq!(out.code, 0, "{}\n{}", out.stdout, out.stderr);
    es.refresh().await;
    let again = es.hits(run_id).await;
    let ids = |hits: &[Value]| -> Vec<String> {
        hits.iter()
            .map(|h| h["_id"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(ids(&again), ids(&hits));
    for hit in &again {
        assert_eq!(hit["_version"], 2, "{hit}");
    }
    let counted = es.ok("GET", "/iotload-*/_count", None).await;
    assert_eq!(
        counted["count"].as_u64(),
        Some(docs.len() as u64),
        "{counted}"
    );
}

#[tokio::test]
async fn live_elasticsearch_refuses_wrong_credentials_and_rejections_fail_the_plotter() {
    let scratch = Scratch::new();
    let run_id = "es-live-auth";
    let options = SearchNodeOptions {
        basic_auth: Some((LIVE_USER.into(), LIVE_PASSWORD.into())),
    };
    let (node, store) = tokio::join!(
        SearchNode::require_with(options),
        recorded_store(&scratch, run_id)
    );
    let Some(node) = node else {
        return;
    };
    // The node does enforce the credentials.
    let (status, refused) = Rest::new(&node, None).call("GET", "/", None).await;
    assert_eq!(status, 401, "{refused}");
    let es = Rest::new(&node, Some((LIVE_USER, LIVE_PASSWORD)));

    for url in [
        url_with_credentials(&node, LIVE_USER, "wrong-pass"),
        node.url(),
    ] {
        let out = plotter(&store, &url, &[]).await;
        assert_ne!(out.code, 0, "{url}: {}", out.stdout);
        assert!(
            out.stderr.contains(
                "refused the credentials (HTTP 401) to install the index template: give \
                 user:password in the URL or --elasticsearch-api-key"
            ),
            "{url}: {}",
            out.stderr
        );
        assert!(!format!("{}{}", out.stdout, out.stderr).contains("wrong-pass"));
    }
    let (status, _) = es.call("GET", "/_index_template/iotload", None).await;
    assert_eq!(status, 404, "nothing was installed without the credentials");

    let url = url_with_credentials(&node, LIVE_USER, LIVE_PASSWORD);
    let out = plotter(&store, &url, &[]).await;
    assert_eq!(
        out.code,
        0,
        "{}\n{}\n{}",
        out.stdout,
        out.stderr,
        node.log()
    );
    assert!(!out.stdout.contains(LIVE_PASSWORD) && !out.stderr.contains(LIVE_PASSWORD));
    es.refresh().await;
    let indexed = es.hits(run_id).await.len();
    assert!(
        out.stdout
            .contains(&format!("{indexed} indexed into Elasticsearch")),
        "{indexed} documents on the node; {}",
        out.stdout
    );

    // Documents into a closed index are rejected one by one: the plotter names the index
    // and the node's reason, and fails with the error exit code.
    let closed = es.ok("POST", "/iotload-*/_close", None).await;
    assert_eq!(closed["acknowledged"], true, "{closed}");
    let out = plotter(&store, &url, &[]).await;
    assert_eq!(out.code, 2, "{}\n{}", out.stdout, out.stderr);
    assert!(
        out.stderr.contains(&format!(
            "Elasticsearch rejected {indexed} of {indexed} documents; first, in iotload-"
        )) && out.stderr.contains(": index_closed_exception: closed"),
        "{}",
        out.stderr
    );
}
