//! `iotload plotter --elasticsearch` against a local HTTP endpoint that answers as
//! Elasticsearch's documented index-template and bulk APIs do, and fails on cue: no
//! Elasticsearch server can be installed on this machine (see README), so what a live
//! cluster would add (mapping checks, real backpressure) is still untested.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};

use common::*;
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
