//! The truth test: the chaos echo drops, duplicates, reorders and delays messages by a
//! known seed and counts exactly what it did; every output must then report exactly that
//! (the summary, `results show`, `results export`, the plotter's JSONL, CSV, HTML and
//! Prometheus outputs), on real Mosquitto and on NATS, in one process and with the
//! loadgen, the echo and the collector each in its own.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeMap;

use common::*;
use iotload_testkit::{MqttBroker, MqttBrokerOptions, NatsServer};
use serde_json::Value;

/// The faults every run here injects.
const FAULTS: [&str; 10] = [
    "--drop",
    "3%",
    "--duplicate",
    "2%",
    "--reorder",
    "2%",
    "--delay",
    "20ms±5ms",
    "--seed",
    "19",
];

/// What the echo says it did.
#[derive(Debug, PartialEq, Eq, Clone, Copy)]
struct Injected {
    dropped: u64,
    duplicated: u64,
    reordered: u64,
}

impl Injected {
    fn of(summary: &Value) -> Self {
        let injected = Self {
            dropped: u(summary, "/echo/faults/dropped"),
            duplicated: u(summary, "/echo/faults/duplicated"),
            reordered: u(summary, "/echo/faults/reordered"),
        };
        assert!(
            injected.dropped > 0 && injected.duplicated > 0 && injected.reordered > 0,
            "every kind of fault was injected: {summary:#}"
        );
        injected
    }
}

/// Whether a collector's progress line shows at least `n` duplicates (it shows them
/// once there are any).
fn duplicates_at_least(line: &str, n: u64) -> bool {
    n == 0 || count_at_least(line, " · duplicates ", n)
}

/// (lost, duplicates, reordered) as one output reports them.
type Counts = (u64, u64, u64);

fn expected(i: Injected) -> Counts {
    (i.dropped, i.duplicated, i.reordered)
}

/// `iotload run` on `url` through the chaos echo (with `faults`), recorded as `run_id`.
async fn run_loop(url: &str, scratch: &Scratch, run_id: &str, faults: &[&str]) -> Value {
    let topic_prefix = prefix(run_id);
    let topic = format!("{topic_prefix}/{{device}}/req");
    let action = format!("{topic_prefix}/{{device}}/act");
    let client = format!("{topic_prefix}-{{device}}").replace('/', "-");
    let store = store_of(scratch);
    let json = scratch
        .path(&format!("{run_id}.json"))
        .display()
        .to_string();
    let mut args = vec![
        "run",
        "--broker",
        url,
        "--devices",
        "10",
        "--rate",
        "100",
        "--duration",
        "3s",
        "--topic",
        &topic,
        "--action-topic",
        &action,
        "--client-id",
        &client,
        "--store",
        &store,
        "--run-id",
        run_id,
        "--drain-timeout",
        "30s",
        "--json",
        &json,
    ];
    args.extend(faults);
    let out = run(&args).await;
    assert_eq!(out.code, 0, "{}\n{}", out.stdout, out.stderr);
    let s = read_json(std::path::Path::new(&json));
    assert_valid_summary(&s);
    assert_eq!(u(&s, "/load/sent"), 3000, "{s:#}");
    s
}

fn store_of(scratch: &Scratch) -> String {
    format!("sqlite://{}", scratch.path("results.db").display())
}

/// The `(all topics)` row of `results show`: sent, received, lost, dup, reordered.
async fn shown(store: &str, run_id: &str) -> Counts {
    let out = run(&["results", "show", run_id, "--store", store]).await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    let row = out
        .stdout
        .lines()
        .find(|l| l.starts_with("(all topics)"))
        .unwrap_or_else(|| panic!("no totals row in\n{}", out.stdout));
    let n: Vec<u64> = row
        .split_whitespace()
        .skip(2)
        .take(5)
        .map(|v| v.parse().unwrap_or_else(|_| panic!("{row}")))
        .collect();
    (n[2], n[3], n[4])
}

fn sum(rows: &[Value], field: &str) -> u64 {
    rows.iter()
        .map(|r| {
            r[field]
                .as_u64()
                .unwrap_or_else(|| panic!("{field} in {r}"))
        })
        .sum()
}

fn counts_of_rows(rows: &[Value]) -> Counts {
    (
        lost_of_rows(rows),
        sum(rows, "duplicates"),
        sum(rows, "reordered"),
    )
}

/// `results export` (JSON) rows of the run.
async fn exported(store: &str, run_id: &str) -> Counts {
    let out = run(&["results", "export", run_id, "--json", "--store", store]).await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    let v: Value = serde_json::from_str(&out.stdout).unwrap_or_else(|e| panic!("{e}"));
    let rows: Vec<Value> = v["seconds"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["second"].clone())
        .collect();
    counts_of_rows(&rows)
}

/// The plotter's JSONL, CSV and HTML report of the run.
async fn plotted(scratch: &Scratch, store: &str, run_id: &str) -> (Counts, Counts, String) {
    let (jsonl, csv, html) = (
        scratch.path(&format!("{run_id}.jsonl")),
        scratch.path(&format!("{run_id}.csv")),
        scratch.path(&format!("{run_id}.html")),
    );
    let out = run(&[
        "plotter",
        "--store",
        store,
        "--run",
        run_id,
        "--jsonl",
        &jsonl.display().to_string(),
        "--csv",
        &csv.display().to_string(),
        "--html",
        &html.display().to_string(),
    ])
    .await;
    assert_eq!(out.code, 0, "{}\n{}", out.stdout, out.stderr);
    let docs: Vec<Value> = std::fs::read_to_string(&jsonl)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let mut reader = csv::Reader::from_path(&csv).unwrap();
    let header = reader.headers().unwrap().clone();
    let csv_rows: Vec<Value> = reader
        .records()
        .map(|r| {
            let r = r.unwrap();
            let mut row = serde_json::Map::new();
            for (name, value) in header.iter().zip(r.iter()) {
                let v = value
                    .parse::<u64>()
                    .map(Value::from)
                    .unwrap_or_else(|_| Value::from(value));
                row.insert(name.to_string(), v);
            }
            Value::Object(row)
        })
        .collect();
    let html = std::fs::read_to_string(&html).unwrap();
    (counts_of_rows(&docs), counts_of_rows(&csv_rows), html)
}

/// The plotter's `/metrics` for the run: lost, duplicates, reordered.
async fn scraped(store: &str, run_id: &str) -> Counts {
    let mut plotter = spawn(&[
        "plotter",
        "--store",
        store,
        "--run",
        run_id,
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
    promtool_accepts(&body).await;
    plotter.interrupt();
    let _ = plotter.exit_code().await;
    let s: BTreeMap<String, f64> = samples(&body);
    let get = |name: &str| s[&format!("{name}{{run=\"{run_id}\"}}")] as u64;
    (
        get("iotload_messages_lost"),
        get("iotload_messages_duplicate_total"),
        get("iotload_messages_reordered_total"),
    )
}

/// Every output of a stored run reports `want`.
async fn every_output_reports(scratch: &Scratch, run_id: &str, want: Counts, sent: u64) {
    let store = store_of(scratch);
    assert_eq!(shown(&store, run_id).await, want, "results show");
    assert_eq!(exported(&store, run_id).await, want, "results export");
    let (jsonl, csv, html) = plotted(scratch, &store, run_id).await;
    assert_eq!(jsonl, want, "plotter --jsonl");
    assert_eq!(csv, want, "plotter --csv");
    let (lost, dup, reordered) = want;
    let row = format!(
        "<td>{sent}</td><td>{}</td><td>{lost}</td><td>{dup}</td><td>{reordered}</td>",
        sent - lost + dup
    );
    assert!(html.contains(&row), "the report's runs table lacks {row}");
    assert_eq!(scraped(&store, run_id).await, want, "plotter --serve");
}

/// One process: the summary and every stored output against what the echo did; then the
/// median latency of a run with a fixed 20 ms delay against that delay plus the loop's
/// own median, measured by a run without delay at the same time on the same broker,
/// within max(1 %, 20 µs). (With jitter, the median of delay plus loop cost would move
/// with the loop cost's tail, so the check would measure the machine, not iotload.)
async fn truth_in_one_process(url: &str, name: &str) {
    let scratch = Scratch::new();
    let chaos_id = format!("truth-{name}");
    let chaos = run_loop(url, &scratch, &chaos_id, &FAULTS).await;
    let injected = Injected::of(&chaos);
    let want = expected(injected);
    let summary = (
        u(&chaos, "/receive/lost"),
        u(&chaos, "/receive/duplicates"),
        u(&chaos, "/receive/reordered"),
    );
    assert_eq!(summary, want, "the summary: {chaos:#}");
    every_output_reports(&scratch, &chaos_id, want, 3000).await;

    let (delayed_id, base_id) = (format!("delayed-{name}"), format!("base-{name}"));
    let (delayed, base) = tokio::join!(
        run_loop(url, &scratch, &delayed_id, &["--delay", "20ms"]),
        run_loop(url, &scratch, &base_id, &[])
    );
    assert_eq!(u(&delayed, "/receive/lost"), 0, "{delayed:#}");
    assert_eq!(u(&base, "/receive/lost"), 0, "{base:#}");
    let delay = f(&delayed, "/echo/delay_ms/p50");
    let loop_cost = f(&base, "/receive/latency_ms/p50");
    let measured = f(&delayed, "/receive/latency_ms/p50");
    // On tokio's 1 ms timer the hold overshot by about 1 ms; on the microsecond timer it
    // is within 20 µs on a quiet machine, and a few hundred µs while the rest of the
    // suite loads both cores (the echo task waits for a core).
    assert!(
        (delay - 20.0).abs() <= 0.5,
        "the echo held answers {delay} ms for --delay 20ms (± 0.5 ms)"
    );
    let precision = (20.0 * 0.01_f64).max(0.020);
    // Two runs side by side on a machine running the rest of the suite: the loop's own
    // cost varies between them (a median of 9 ms was seen under full load) by about its
    // spread, measured in the same run (p90 - p50 of the run without delay: tenths of a
    // millisecond on a quiet machine, so a timer's 1 ms tick would still fail this).
    let spread = f(&base, "/receive/latency_ms/p90") - loop_cost;
    let tolerance = precision + 0.1 * loop_cost + spread;
    eprintln!(
        "p50 {measured} ms = held {delay} + loop {loop_cost} (spread {spread}) ± {tolerance}"
    );
    assert!(
        (measured - (delay + loop_cost)).abs() <= tolerance,
        "p50 {measured} ms, echo held {delay} ms + loop {loop_cost} ms (± {tolerance} ms)"
    );
}

#[tokio::test]
async fn every_output_reports_what_the_chaos_echo_did_on_mosquitto() {
    // Two runs side by side on one broker compare their latencies: with Nagle's algorithm
    // on its writes (Mosquitto's default) one of them measured 10 ms more than the other.
    let broker = MqttBroker::start_with(MqttBrokerOptions {
        tcp_nodelay: true,
        ..MqttBrokerOptions::default()
    })
    .await
    .expect("mosquitto starts");
    truth_in_one_process(&broker.url(), "mqtt").await;
}

#[tokio::test]
async fn every_output_reports_what_the_chaos_echo_did_on_nats() {
    let server = NatsServer::start().await.expect("nats-server starts");
    truth_in_one_process(&server.url(), "nats").await;
}

/// Three processes sharing a store: the loadgen's sent counts and the collector's rows
/// together report exactly what the echo (a third process) did.
#[tokio::test]
async fn separate_processes_store_what_the_chaos_echo_did() {
    let broker = MqttBroker::start().await.expect("mosquitto starts");
    let url = broker.url();
    let scratch = Scratch::new();
    let store = store_of(&scratch);
    let run_id = "truth-apart";
    let p = prefix("apart");
    let (requests, actions) = (format!("{p}/+/req"), format!("{p}/+/act"));
    let (topic, action) = (format!("{p}/{{device}}/req"), format!("{p}/{{device}}/act"));
    let to = format!("{p}/{{device}}/act");
    let (c_json, e_json, l_json) = (
        scratch.path("c.json").display().to_string(),
        scratch.path("e.json").display().to_string(),
        scratch.path("l.json").display().to_string(),
    );
    let mut collector = spawn(&[
        "collector",
        "--broker",
        &url,
        "--topic",
        &actions,
        "--store",
        &store,
        "--run-id",
        run_id,
        "--progress",
        "always",
        "--json",
        &c_json,
    ]);
    collector.wait_for("collector: listening").await;
    let mut echo_args = vec![
        "echo-ipaas",
        "--broker",
        &url,
        "--from",
        &requests,
        "--to",
        &to,
        "--progress",
        "always",
        "--json",
        &e_json,
    ];
    echo_args.extend(FAULTS);
    let mut echo = spawn(&echo_args);
    echo.wait_for("Ctrl-C to stop").await;
    let out = run(&[
        "loadgen",
        "--broker",
        &url,
        "--devices",
        "10",
        "--rate",
        "100",
        "--duration",
        "3s",
        "--topic",
        &topic,
        "--action-topic",
        &action,
        "--store",
        &store,
        "--run-id",
        run_id,
        "--json",
        &l_json,
    ])
    .await;
    assert_eq!(out.code, 0, "{}\n{}", out.stdout, out.stderr);
    let sent = u(&read_json(std::path::Path::new(&l_json)), "/load/sent");
    assert_eq!(sent, 3000);
    let all_requests = format!("of {sent} requests");
    echo.wait_until(|l| l.contains(&all_requests), "every request taken")
        .await;
    // Stopping answers what is still delayed or held back.
    echo.interrupt();
    assert_eq!(echo.exit_code().await, Some(130));
    let e = read_json(&scratch.path("e.json"));
    let injected = Injected::of(&e);
    let answered = sent - injected.dropped;
    // The second copy of a duplicated request may trail the last distinct answer.
    let copies = injected.duplicated;
    collector
        .wait_until(
            |l| received_at_least(l, answered) && duplicates_at_least(l, copies),
            "every answer and every second copy",
        )
        .await;
    collector.interrupt();
    assert_eq!(collector.exit_code().await, Some(130));
    let c = read_json(&scratch.path("c.json"));
    // The collector alone knows no sent count: its gaps miss drops after a device's last
    // arrival, which only the store's sent counts reveal.
    assert!(u(&c, "/receive/lost") <= injected.dropped, "{c:#}");
    assert_eq!(u(&c, "/receive/duplicates"), injected.duplicated, "{c:#}");
    assert_eq!(u(&c, "/receive/reordered"), injected.reordered, "{c:#}");
    let want = expected(injected);
    every_output_reports(&scratch, run_id, want, sent).await;
}
