//! End to end: `iotload run` records into an SQLite store, then `iotload plotter` reads it
//! back into JSON Lines documents and an HTML report, which headless Chromium renders.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeSet;

use common::*;
use serde_json::Value;

/// A short run on the embedded broker into `store`, under `run_id`; returns its summary.
async fn record(scratch: &Scratch, store: &str, run_id: &str, delay: &str) -> Value {
    let json = scratch
        .path(&format!("{run_id}.json"))
        .display()
        .to_string();
    let out = run(&[
        "run",
        "--devices",
        "4",
        "--rate",
        "20",
        "--duration",
        "3s",
        "--delay",
        delay,
        "--store",
        store,
        "--run-id",
        run_id,
        "--json",
        &json,
    ])
    .await;
    assert_eq!(out.code, 0, "{}\n{}", out.stdout, out.stderr);
    read_json(&scratch.path(&format!("{run_id}.json")))
}

fn documents(path: &std::path::Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

fn sum(docs: &[&Value], field: &str) -> u64 {
    docs.iter().map(|d| u(d, &format!("/{field}"))).sum()
}

/// The report must stand alone: no script, no external resource.
fn assert_self_contained(html: &str) {
    for needle in ["<script", "<link", "src=", "href=", "url(", "@import"] {
        assert!(!html.contains(needle), "the report contains `{needle}`");
    }
}

async fn assert_renders_in_chromium(page: &std::path::Path, charts: usize) {
    let Some(chromium) = chromium() else { return };
    let shown = render_in_chromium(&chromium, page).await;
    assert!(
        shown.png.len() > 10_000 && shown.png.starts_with(b"\x89PNG"),
        "screenshot is {} bytes",
        shown.png.len()
    );
    assert!(
        shown.console.is_empty(),
        "console messages: {:#?}",
        shown.console
    );
    assert_eq!(
        shown.dom.matches("<svg").count(),
        charts,
        "rendered SVG charts"
    );
    for id in ["latency-raw", "throughput", "distribution"] {
        let figure = shown
            .dom
            .split(&format!("id=\"{id}\""))
            .nth(1)
            .unwrap_or_else(|| panic!("chart {id} missing from the DOM"));
        let svg = figure.split("</svg>").next().unwrap();
        assert!(svg.contains("<polyline"), "chart {id} has no line");
    }
}

/// The CSV has the JSON Lines documents' rows and counts; the interval log's raw
/// intervals hold every measured latency once, one interval per second.
fn assert_exports_agree(
    jsonl: &std::path::Path,
    csv_path: &std::path::Path,
    hlog: &std::path::Path,
    summary: &Value,
) {
    let docs = documents(jsonl);
    let mut reader = csv::Reader::from_path(csv_path).unwrap();
    let header = reader.headers().unwrap().clone();
    let col = |name: &str| header.iter().position(|h| h == name).unwrap();
    let rows: Vec<csv::StringRecord> = reader.records().map(Result::unwrap).collect();
    assert_eq!(rows.len(), docs.len(), "one CSV row per document");
    for (row, doc) in rows.iter().zip(&docs) {
        assert_eq!(&row[col("timestamp")], doc["@timestamp"].as_str().unwrap());
        assert_eq!(&row[col("topic")], doc["topic"].as_str().unwrap());
        assert_eq!(
            row[col("received")].parse::<u64>().unwrap(),
            u(doc, "/received")
        );
        let p99: f64 = row[col("latency_p99_ms")].parse().unwrap();
        assert!((p99 - f(doc, "/latency_ms/p99")).abs() < 1e-9);
    }

    use hdrhistogram::serialization::Deserializer;
    use hdrhistogram::serialization::interval_log::{IntervalLogIterator, LogEntry};
    let bytes = std::fs::read(hlog).unwrap();
    let (mut raw_count, mut intervals) = (0u64, 0usize);
    for entry in IntervalLogIterator::new(&bytes) {
        if let LogEntry::Interval(h) = entry.unwrap() {
            assert_eq!(h.duration(), std::time::Duration::from_secs(1));
            if h.tag().map(|t| t.as_str()) == Some("raw:plot-one") {
                let decoded = base64::Engine::decode(
                    &base64::engine::general_purpose::STANDARD,
                    h.encoded_histogram(),
                )
                .unwrap();
                let hist: hdrhistogram::Histogram<u64> = Deserializer::new()
                    .deserialize(&mut decoded.as_slice())
                    .unwrap();
                raw_count += hist.len();
                intervals += 1;
            }
        }
    }
    let seconds: BTreeSet<&str> = docs
        .iter()
        .map(|d| d["@timestamp"].as_str().unwrap())
        .collect();
    assert_eq!(intervals, seconds.len(), "one raw interval per second");
    assert_eq!(raw_count, u(summary, "/receive/latency_ms/count"));
}

#[tokio::test]
async fn plotter_writes_one_document_per_second_and_topic_and_a_report() {
    let scratch = Scratch::new();
    let store = format!("sqlite://{}", scratch.path("results.db").display());
    let summary = record(&scratch, &store, "plot-one", "0s").await;
    let jsonl = scratch.path("docs.jsonl");
    let html = scratch.path("report.html");
    let csv = scratch.path("rows.csv");
    let hlog = scratch.path("latency.hlog");
    let out = run(&[
        "plotter",
        "--store",
        &store,
        "--jsonl",
        &jsonl.display().to_string(),
        "--csv",
        &csv.display().to_string(),
        "--hlog",
        &hlog.display().to_string(),
        "--html",
        &html.display().to_string(),
    ])
    .await;
    assert_eq!(out.code, 0, "{}\n{}", out.stdout, out.stderr);
    assert!(out.stdout.contains("run plot-one:"), "{}", out.stdout);
    assert_exports_agree(&jsonl, &csv, &hlog, &summary);

    let docs = documents(&jsonl);
    let topics: BTreeSet<&str> = docs.iter().map(|d| d["topic"].as_str().unwrap()).collect();
    let stamps: BTreeSet<&str> = docs
        .iter()
        .map(|d| d["@timestamp"].as_str().unwrap())
        .collect();
    let seconds: Vec<i64> = stamps
        .iter()
        .map(|t| {
            chrono::DateTime::parse_from_rfc3339(t)
                .unwrap_or_else(|e| panic!("{t} is not ISO-8601: {e}"))
                .timestamp()
        })
        .collect();
    let span = seconds.last().unwrap() - seconds.first().unwrap() + 1;
    assert_eq!(topics.len(), 4, "{topics:?}");
    assert_eq!(span as usize, stamps.len(), "every second present");
    assert_eq!(docs.len(), stamps.len() * topics.len(), "seconds × topics");
    let all: Vec<&Value> = docs.iter().collect();
    assert_eq!(sum(&all, "sent"), u(&summary, "/load/sent"));
    assert_eq!(sum(&all, "received"), u(&summary, "/receive/received"));
    assert_eq!(
        lost_of_rows(all.iter().copied()),
        u(&summary, "/receive/lost")
    );
    assert_eq!(sum(&all, "duplicates"), u(&summary, "/receive/duplicates"));
    assert_eq!(sum(&all, "reordered"), u(&summary, "/receive/reordered"));
    // The summary counts undecodable messages by kind.
    let undecodable: u64 = summary["receive"]["undecodable"]
        .as_object()
        .map(|kinds| kinds.values().filter_map(Value::as_u64).sum())
        .unwrap_or_default();
    assert_eq!(sum(&all, "undecodable"), undecodable);
    assert_eq!(
        sum(&all, "latency_ms/count"),
        u(&summary, "/receive/latency_ms/count")
    );
    for d in &docs {
        assert_eq!(d["run_id"], "plot-one");
        for key in ["min", "mean", "p50", "p90", "p99", "p999", "max"] {
            assert!(d["latency_ms"][key].is_number(), "{key} in {d}");
            assert!(d["latency_corrected_ms"][key].is_number(), "{key} in {d}");
        }
        if u(d, "/received") > 0 {
            assert!(f(d, "/latency_ms/p50") > 0.0, "{d}");
            assert!(f(d, "/latency_corrected_ms/max") >= f(d, "/latency_ms/min"));
            assert!(!d["instances"].as_array().unwrap().is_empty());
        }
    }

    let page = std::fs::read_to_string(&html).unwrap();
    assert!(page.starts_with("<!DOCTYPE html>"));
    for id in [
        "runs-table",
        "latency-raw",
        "latency-corrected",
        "throughput",
        "integrity",
        "distribution",
        "topics",
        "configuration",
    ] {
        assert!(page.contains(&format!("id=\"{id}\"")), "{id} missing");
    }
    assert!(
        !page.contains("id=\"comparison"),
        "one run has no comparison"
    );
    for topic in &topics {
        assert!(
            page.contains(&format!("<td class=\"l\">{topic}</td>")),
            "{topic}"
        );
    }
    assert!(page.contains("--devices"), "configuration shown");
    assert_self_contained(&page);
    assert_renders_in_chromium(&html, 5).await;
}

#[tokio::test]
async fn plotter_compares_two_runs_against_the_first() {
    let scratch = Scratch::new();
    let store = format!("sqlite://{}", scratch.path("results.db").display());
    record(&scratch, &store, "echo-base", "0s").await;
    record(&scratch, &store, "slow-ipaas", "20ms").await;
    let jsonl = scratch.path("both.jsonl");
    let html = scratch.path("both.html");
    // Options from the environment and the config file as well as flags.
    let config = scratch.path("plotter.yaml");
    std::fs::write(&config, "plotter:\n  run: [echo-base, slow-ipaas]\n").unwrap();
    let out = finish(
        iotload()
            .args(["plotter", "--config", &config.display().to_string()])
            .env("IOTLOAD_STORE", &store)
            .env("IOTLOAD_JSONL", &jsonl)
            .arg("--html")
            .arg(&html),
    )
    .await;
    assert_eq!(out.code, 0, "{}\n{}", out.stdout, out.stderr);

    let docs = documents(&jsonl);
    let runs: BTreeSet<&str> = docs.iter().map(|d| d["run_id"].as_str().unwrap()).collect();
    assert_eq!(runs, BTreeSet::from(["echo-base", "slow-ipaas"]));

    let page = std::fs::read_to_string(&html).unwrap();
    assert!(page.contains("echo-base (baseline)"));
    for table in ["comparison-raw", "comparison-corrected"] {
        let t = page
            .split(&format!("id=\"{table}\""))
            .nth(1)
            .and_then(|t| t.split("</table>").next())
            .unwrap();
        let p50 = t
            .split("<td class=\"l\">p50</td>")
            .nth(1)
            .and_then(|r| r.split("</tr>").next())
            .unwrap();
        // The second run's echo waits 20 ms: the difference at p50 is about +20 ms.
        let diff: f64 = p50
            .split("<td class=\"pos\">")
            .nth(1)
            .and_then(|c| c.split("</td>").next())
            .and_then(|c| c.trim_start_matches('+').parse().ok())
            .unwrap_or_else(|| panic!("no positive p50 difference in {p50}"));
        assert!(
            (15.0..30.0).contains(&diff),
            "{table} p50 difference {diff}"
        );
    }
    // Both runs on the same charts: one line per run in the legend.
    assert!(page.contains("p50 · echo-base") && page.contains("p50 · slow-ipaas"));
    assert_self_contained(&page);
    assert_renders_in_chromium(&html, 5).await;
}

#[tokio::test]
async fn plotter_names_a_missing_run_and_asks_for_an_output() {
    let scratch = Scratch::new();
    let store = format!("sqlite://{}", scratch.path("empty.db").display());
    let html = scratch.path("r.html").display().to_string();
    let out = run(&["plotter", "--store", &store, "--html", &html]).await;
    assert_eq!(out.code, 2);
    assert!(out.stderr.contains("holds no runs yet"), "{}", out.stderr);
    let out = run(&[
        "plotter", "--store", &store, "--run", "nope", "--html", &html,
    ])
    .await;
    assert_eq!(out.code, 2);
    assert!(out.stderr.contains("no run `nope`"), "{}", out.stderr);
    let out = run(&["plotter", "--store", &store]).await;
    assert_eq!(out.code, 2);
    assert!(
        out.stderr
            .contains("nothing to do: give --html FILE, --elasticsearch URL"),
        "{}",
        out.stderr
    );
}

/// The console check itself: a page with a script error must be caught, so a clean
/// report is clean for a reason.
#[tokio::test]
async fn chromium_console_check_catches_a_script_error() {
    let Some(chromium) = chromium() else { return };
    let scratch = Scratch::new();
    let page = scratch.path("broken.html");
    std::fs::write(
        &page,
        "<!DOCTYPE html><html><body><p>x</p>\
         <script>throw new Error('deliberate')</script></body></html>",
    )
    .unwrap();
    let shown = render_in_chromium(&chromium, &page).await;
    assert!(
        shown.console.iter().any(|l| l.contains("deliberate")),
        "the console check missed an uncaught error: {:#?}",
        shown.console
    );
    assert!(shown.png.starts_with(b"\x89PNG"));
}

#[tokio::test]
async fn prometheus_scrapes_the_plotter_and_counts_every_message() {
    let prometheus = std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default())
        .chain([std::path::PathBuf::from("/usr/sbin")])
        .map(|d| d.join("prometheus"))
        .find(|p| p.is_file());
    let Some(prometheus) = prometheus else {
        let ci = std::env::var("CI").is_ok_and(|v| v.eq_ignore_ascii_case("true") || v == "1");
        assert!(
            !ci,
            "prometheus is not installed (apt-get install prometheus)"
        );
        eprintln!("skipped: prometheus is not installed (apt-get install prometheus)");
        return;
    };
    let scratch = Scratch::new();
    let store = format!("sqlite://{}", scratch.path("results.db").display());
    let summary = record(&scratch, &store, "prom-run", "0s").await;

    let mut plotter = spawn(&[
        "plotter",
        "--store",
        &store,
        "--run",
        "prom-run",
        "--serve",
        "127.0.0.1:0",
    ]);
    plotter.wait_for("serving Prometheus metrics at").await;
    let target = plotter
        .seen
        .last()
        .and_then(|l| l.split("http://").nth(1))
        .and_then(|rest| rest.strip_suffix("/metrics"))
        .unwrap()
        .to_string();
    let (status, body) = http_get(&target, "/metrics").await.unwrap();
    assert!(status.contains("200"), "{status}");
    assert!(body.contains("# TYPE iotload_messages_received_total counter"));
    assert!(!body.contains("topic="), "no topic labels unless asked");
    let (status, _) = http_get(&target, "/nope").await.unwrap();
    assert!(status.contains("404"), "{status}");

    let port = iotload_testkit::free_port();
    let web = format!("127.0.0.1:{port}");
    let config = scratch.path("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: iotload\n    \
             static_configs:\n      - targets: ['{target}']\n"
        ),
    )
    .unwrap();
    let mut server = tokio::process::Command::new(prometheus)
        .arg(format!("--config.file={}", config.display()))
        .arg(format!(
            "--storage.tsdb.path={}",
            scratch.path("tsdb").display()
        ))
        .arg(format!("--web.listen-address={web}"))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("prometheus starts");

    let query = "/api/v1/query?query=iotload_messages_received_total%7Brun%3D%22prom-run%22%7D";
    let expected = u(&summary, "/receive/received");
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(60);
    let mut last = String::new();
    let found = loop {
        if let Some((_, body)) = http_get(&web, query).await {
            let v: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
            if let Some(value) = v.pointer("/data/result/0/value/1").and_then(Value::as_str) {
                break value.parse::<u64>().ok();
            }
            last = body;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "prometheus never had the series: {last}"
        );
        // Polling Prometheus' API: its scrape is not observable otherwise.
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    };
    assert_eq!(found, Some(expected));
    let _ = server.kill().await;
    plotter.interrupt();
    assert_eq!(plotter.exit_code().await, Some(130));
}
