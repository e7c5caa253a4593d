//! The live page (`--ui`) in headless Chromium during a real run, and `--threshold` /
//! `--abort-on-fail` setting the summary's verdicts and the exit code.
#![allow(clippy::unwrap_used)]

mod common;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt};

/// playwright-core as `scripts/test` installs it (npm, under target/tools), or `None` with
/// a message; in CI a missing one fails the test.
fn playwright_core() -> Option<PathBuf> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("target/tools/playwright/node_modules/playwright-core");
    if dir.join("package.json").is_file() {
        return Some(dir);
    }
    assert!(
        !in_ci(),
        "playwright-core is not installed in {} (scripts/test installs it with npm)",
        dir.display()
    );
    eprintln!("skipped: playwright-core is not installed (npm install playwright-core)");
    None
}

/// Reads stderr until the live page line and returns its URL.
async fn page_url(p: &mut Proc) -> String {
    p.wait_for("live page at http://").await;
    let line = p.seen.last().unwrap();
    format!("http://{}", line.split("http://").nth(1).unwrap())
}

/// A tile's number without thousands separators.
fn count(tile: &Value) -> u64 {
    tile.as_str()
        .unwrap()
        .replace(',', "")
        .trim()
        .parse()
        .unwrap_or_else(|e| panic!("{tile}: {e}"))
}

/// The page's final count tiles (sent, received, lost, duplicates, reordered) equal the
/// JSON summary's.
fn assert_counts_are_the_summarys(seen: &Value, summary: &Value) {
    let tiles = &seen["tiles"];
    for (tile, path) in [
        ("sent", "/load/sent"),
        ("received", "/receive/unique"),
        ("lost", "/receive/lost"),
        ("duplicates", "/receive/duplicates"),
        ("reordered", "/receive/reordered"),
    ] {
        assert_eq!(count(&tiles[tile]), u(summary, path), "{tile}: {seen}");
    }
}

#[tokio::test]
async fn the_page_updates_each_second_and_ends_with_the_summary_numbers() {
    let (Some(chromium), Some(node), Some(playwright)) = (
        chromium(),
        tool(&["node", "nodejs"], "apt-get install nodejs"),
        playwright_core(),
    ) else {
        return;
    };
    let scratch = Scratch::new();
    let json = scratch.json();
    let mut run = spawn(&[
        "run",
        "--devices",
        "10",
        "--rate",
        "50",
        "--duration",
        "10s",
        "--ui",
        "127.0.0.1:0",
        "--threshold",
        "p99<10s",
        "--threshold",
        "loss<=0",
        "--json",
        &json,
    ]);
    let url = page_url(&mut run).await;
    let viewer = tokio::process::Command::new(node)
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/peers/live_page_viewer.cjs"
        ))
        .arg(&url)
        .env("PLAYWRIGHT_CORE", &playwright)
        .env("CHROMIUM", &chromium)
        .kill_on_drop(true)
        .output();
    let (viewer, (code, stderr)) = tokio::join!(viewer, run.finish());
    let viewer = viewer.unwrap();
    assert!(
        viewer.status.success(),
        "viewer: {}\niotload: {stderr:#?}",
        String::from_utf8_lossy(&viewer.stderr)
    );
    assert_eq!(code, Some(0), "{stderr:#?}");
    let seen: Value = serde_json::from_slice(&viewer.stdout).unwrap();
    let summary = scratch.summary();
    assert_valid_summary(&summary);

    // Offline and clean: nothing fetched from elsewhere, nothing logged.
    assert_eq!(seen["requests"], Value::Array(vec![]), "{seen}");
    assert_eq!(seen["console"], Value::Array(vec![]), "{seen}");
    // Two uPlot charts, drawn on canvases, gaining a point each second.
    assert!(seen["canvases"].as_u64().unwrap() >= 2, "{seen}");
    let (early, later) = (
        seen["points_early"].as_u64().unwrap(),
        seen["points_later"].as_u64().unwrap(),
    );
    assert!(later > early, "{seen}");
    assert!(
        seen["points_final"].as_u64().unwrap() >= 8,
        "about one point per second of a 10 s run: {seen}"
    );
    assert!(
        count(&seen["received_later"]) >= count(&seen["received_early"]),
        "{seen}"
    );
    assert!(seen["topic_rows"].as_u64().unwrap() >= 1, "{seen}");

    // The numbers shown at the end are the JSON summary's.
    let tiles = &seen["tiles"];
    assert_counts_are_the_summarys(&seen, &summary);
    for (tile, path) in [
        ("p50", "/receive/latency_ms/p50"),
        ("p99", "/receive/latency_ms/p99"),
        ("max", "/receive/latency_ms/max"),
    ] {
        assert_eq!(
            tiles[tile].as_str().unwrap(),
            format!("{:.3} ms", f(&summary, path)),
            "{tile}: {seen}"
        );
    }
    assert_eq!(tiles["connected"].as_str().unwrap(), "10 / 10");
    assert_eq!(u(&summary, "/receive/unique"), 10 * 50 * 10);
    // The thresholds' verdicts, as the summary has them.
    let verdicts: Vec<(String, String)> = seen["thresholds"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| {
            (
                t["threshold"].as_str().unwrap().to_string(),
                t["passed"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(
        verdicts,
        [
            ("p99<10s".to_string(), "true".to_string()),
            ("loss<=0".to_string(), "true".to_string())
        ]
    );
    assert!(
        seen["status"]
            .as_str()
            .unwrap()
            .contains("thresholds passed"),
        "{seen}"
    );
}

#[tokio::test]
async fn the_plotter_page_follows_a_run_while_it_is_recorded() {
    let (Some(chromium), Some(node), Some(playwright)) = (
        chromium(),
        tool(&["node", "nodejs"], "apt-get install nodejs"),
        playwright_core(),
    ) else {
        return;
    };
    let scratch = Scratch::new();
    let store = format!("sqlite://{}", scratch.path("results.db").display());
    let json = scratch.json();
    // The page starts on an empty store and waits for a run.
    let mut plotter = spawn(&["plotter", "--store", &store, "--ui", "127.0.0.1:0"]);
    let url = page_url(&mut plotter).await;
    let mut viewer = tokio::process::Command::new(node)
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/peers/store_page_viewer.cjs"
        ))
        .args([&url, "5"])
        .env("PLAYWRIGHT_CORE", &playwright)
        .env("CHROMIUM", &chromium)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = tokio::io::BufReader::new(viewer.stdout.take().unwrap()).lines();
    let first = lines.next_line().await.unwrap();
    if first.as_deref() != Some("waiting") {
        let out = viewer.wait_with_output().await.unwrap();
        panic!(
            "viewer did not see the page wait: {first:?}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    // A run recorded into that store by another process.
    let run = run(&[
        "run",
        "--devices",
        "5",
        "--rate",
        "100",
        "--duration",
        "6s",
        "--store",
        &store,
        "--json",
        &json,
    ])
    .await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    let summary = scratch.summary();
    let report = lines.next_line().await.unwrap();
    let out = viewer.wait_with_output().await.unwrap();
    assert!(
        out.status.success(),
        "viewer: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let seen: Value = serde_json::from_str(&report.unwrap_or_default()).unwrap();
    plotter.interrupt();
    let (code, stderr) = plotter.finish().await;
    assert_eq!(
        code,
        Some(130),
        "Ctrl-C ends the plotter's server: {stderr:#?}"
    );

    assert_eq!(seen["requests"], Value::Array(vec![]), "{seen}");
    assert_eq!(seen["console"], Value::Array(vec![]), "{seen}");
    assert!(
        seen["waiting_status"]
            .as_str()
            .unwrap()
            .contains("waiting for a run"),
        "{seen}"
    );
    assert!(
        seen["recording_status"]
            .as_str()
            .unwrap()
            .contains("recording"),
        "{seen}"
    );
    assert_eq!(
        seen["run_id"], summary["store"]["run_id"],
        "it follows the new run"
    );
    // The charts grew while the run was being recorded, a point per stored second.
    assert!(seen["canvases"].as_u64().unwrap() >= 2, "{seen}");
    assert!(
        seen["points_later"].as_u64().unwrap() > seen["points_early"].as_u64().unwrap(),
        "{seen}"
    );
    assert!(seen["points_final"].as_u64().unwrap() >= 6, "{seen}");
    assert!(seen["status"].as_str().unwrap().contains("final"), "{seen}");
    assert_eq!(
        seen["device_tiles_shown"], false,
        "a store has no device counts"
    );
    assert_eq!(seen["topic_rows"].as_array().unwrap().len(), 5, "{seen}");

    // The final numbers are the run's, as the store holds them.
    let tiles = &seen["tiles"];
    assert_counts_are_the_summarys(&seen, &summary);
    let run_id = summary["store"]["run_id"].as_str().unwrap();
    let shown = common::run(&["results", "show", run_id, "--store", &store]).await;
    assert_eq!(shown.code, 0, "{}", shown.stderr);
    let all: Vec<&str> = shown
        .stdout
        .lines()
        .find(|l| l.starts_with("(all topics)"))
        .unwrap_or_else(|| panic!("{}", shown.stdout))
        .split_whitespace()
        .collect();
    let [.., p50, p99, max] = all[..] else {
        panic!("{all:?}")
    };
    for (tile, value) in [("p50", p50), ("p99", p99), ("max", max)] {
        assert_eq!(
            tiles[tile].as_str().unwrap(),
            format!("{value} ms"),
            "{seen}"
        );
    }
}

#[tokio::test]
async fn a_viewer_that_never_reads_does_not_hold_up_the_run() {
    let scratch = Scratch::new();
    let json = scratch.json();
    let started = Instant::now();
    let mut run = spawn(&[
        "run",
        "--devices",
        "20",
        "--rate",
        "200",
        "--duration",
        "3s",
        "--ui",
        "127.0.0.1:0",
        "--json",
        &json,
        EXACT_DRAIN[0],
        EXACT_DRAIN[1],
    ]);
    let url = page_url(&mut run).await;
    let addr = url.trim_start_matches("http://").trim_end_matches('/');
    // Subscribes to the event stream and the page's largest asset, then never reads.
    let mut stuck = Vec::new();
    for path in ["/events", "/vendor/uPlot.iife.min.js", "/events"] {
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        s.write_all(format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\n\r\n").as_bytes())
            .await
            .unwrap();
        stuck.push(s);
    }
    let (code, stderr) = run.finish().await;
    assert_eq!(code, Some(0), "{stderr:#?}");
    let summary = scratch.summary();
    assert_eq!(u(&summary, "/receive/lost"), 0);
    assert_eq!(u(&summary, "/receive/unique"), 20 * 200 * 3);
    // The page waits at most 2 s for viewers at the end.
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "{:?}",
        started.elapsed()
    );
    drop(stuck);
}

#[tokio::test]
async fn the_page_serves_its_assets_and_samples_as_json() {
    let scratch = Scratch::new();
    let json = scratch.json();
    let mut run = spawn(&[
        "run",
        "--devices",
        "2",
        "--rate",
        "10",
        "--duration",
        "3s",
        "--ui",
        "127.0.0.1:0",
        "--json",
        &json,
    ]);
    let url = page_url(&mut run).await;
    let addr = url
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .to_string();
    let (status, page) = http_get(&addr, "/").await.unwrap();
    assert!(status.contains("200"), "{status}");
    assert!(page.contains("/vendor/uPlot.iife.min.js"), "{page}");
    let (_, js) = http_get(&addr, "/vendor/uPlot.iife.min.js").await.unwrap();
    assert!(js.contains("uPlot"), "the charting library is served");
    let (status, _) = http_get(&addr, "/api/summary").await.unwrap();
    assert!(
        status.contains("404"),
        "no summary before the end: {status}"
    );
    let (_, info) = http_get(&addr, "/api/info").await.unwrap();
    let info: Value = serde_json::from_str(&info).unwrap();
    assert_eq!(info["component"], "run");
    let (code, stderr) = run.finish().await;
    assert_eq!(code, Some(0), "{stderr:#?}");
}

/// `iotload run` on the embedded broker with `extra`; the exit code and the summary.
async fn run_with(extra: &[&str]) -> (i32, String, Value) {
    let scratch = Scratch::new();
    let json = scratch.json();
    let mut args = vec![
        "run",
        "--devices",
        "5",
        "--rate",
        "100",
        "--json",
        &json,
        "--store",
        "none",
    ];
    args.extend_from_slice(extra);
    let out = run(&args).await;
    let summary = if scratch.path("summary.json").exists() {
        scratch.summary()
    } else {
        Value::Null
    };
    (out.code, out.stdout + &out.stderr, summary)
}

fn verdicts(summary: &Value) -> Vec<(String, bool)> {
    summary["thresholds"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| {
            (
                t["threshold"].as_str().unwrap().to_string(),
                t["passed"].as_bool().unwrap(),
            )
        })
        .collect()
}

#[tokio::test]
async fn thresholds_that_hold_pass_and_exit_zero() {
    let (code, out, summary) = run_with(&[
        "--duration",
        "2s",
        "--threshold",
        "p99<10s",
        "--threshold",
        "loss<0.1%",
        "--threshold",
        "rate>=100/s",
        "--threshold",
        "send_lag.p99<1s",
    ])
    .await;
    assert_eq!(code, 0, "{out}");
    assert_valid_summary(&summary);
    assert_eq!(
        verdicts(&summary),
        [
            ("p99<10s".to_string(), true),
            ("loss<0.1%".to_string(), true),
            ("rate>=100/s".to_string(), true),
            ("send_lag.p99<1s".to_string(), true)
        ]
    );
    assert!(out.contains("threshold   p99<10s"), "{out}");
    assert!(out.contains("pass"), "{out}");
}

#[tokio::test]
async fn a_failed_threshold_is_shown_and_exits_one() {
    let (code, out, summary) = run_with(&[
        "--duration",
        "2s",
        "--threshold",
        "p99<1us",
        "--threshold",
        "rate>=1000000/s",
        "--threshold",
        "dup<=0",
    ])
    .await;
    assert_eq!(code, 1, "{out}");
    assert_valid_summary(&summary);
    assert_eq!(
        verdicts(&summary),
        [
            ("p99<1us".to_string(), false),
            ("rate>=1000000/s".to_string(), false),
            ("dup<=0".to_string(), true)
        ]
    );
    assert!(out.contains("FAIL"), "{out}");
    // The run itself completed: every message arrived.
    assert_eq!(u(&summary, "/receive/lost"), 0);
    assert_eq!(summary["thresholds"][0]["unit"], "ms");
}

#[tokio::test]
async fn abort_on_fail_stops_the_run_early() {
    let started = Instant::now();
    let (code, out, summary) = run_with(&[
        "--duration",
        "60s",
        "--threshold",
        "max<1us",
        "--threshold",
        "rate>=1/s",
        "--abort-on-fail",
    ])
    .await;
    assert_eq!(code, 1, "{out}");
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "stopped early: {:?}",
        started.elapsed()
    );
    assert_valid_summary(&summary);
    assert!(out.contains("stopping the run (--abort-on-fail)"), "{out}");
    let first = &summary["thresholds"][0];
    assert_eq!(first["passed"], false);
    assert_eq!(first["aborted_run"], true);
    assert_eq!(summary["interrupted"], false);
    // Stopped like a first Ctrl-C: what was sent was drained and counted.
    assert!(u(&summary, "/load/sent") > 0);
    assert_eq!(u(&summary, "/receive/lost"), 0, "{summary}");
}

#[tokio::test]
async fn thresholds_come_from_the_environment_and_the_config_file() {
    let scratch = Scratch::new();
    let config = scratch.path("iotload.yaml");
    std::fs::write(&config, "threshold:\n  - p99<10s\n  - max<1us\n").unwrap();
    let json = scratch.json();
    let config_arg = config.display().to_string();
    let out = run(&[
        "--config",
        &config_arg,
        "run",
        "--duration",
        "1s",
        "--store",
        "none",
        "--json",
        &json,
    ])
    .await;
    assert_eq!(out.code, 1, "{}{}", out.stdout, out.stderr);
    assert_eq!(
        verdicts(&scratch.summary()),
        [
            ("p99<10s".to_string(), true),
            ("max<1us".to_string(), false)
        ]
    );

    let out = finish(
        iotload()
            .args([
                "run",
                "--duration",
                "1s",
                "--store",
                "none",
                "--json",
                &json,
            ])
            .env("IOTLOAD_THRESHOLD", "p99<10s,loss<=0"),
    )
    .await;
    assert_eq!(out.code, 0, "{}{}", out.stdout, out.stderr);
    assert_eq!(
        verdicts(&scratch.summary()),
        [("p99<10s".to_string(), true), ("loss<=0".to_string(), true)]
    );
}

#[tokio::test]
async fn thresholds_a_command_cannot_judge_are_refused_before_connecting() {
    for (args, says) in [
        (
            vec!["run", "--threshold", "p98<5ms"],
            "unknown metric 'p98'",
        ),
        (
            vec![
                "loadgen",
                "--broker",
                "mqtt://127.0.0.1:1",
                "--threshold",
                "p99<5ms",
            ],
            "needs the collector's numbers",
        ),
        (
            vec![
                "collector",
                "--broker",
                "mqtt://127.0.0.1:1",
                "--threshold",
                "sent_rate>=5",
            ],
            "needs the devices' numbers",
        ),
        (
            vec!["run", "--abort-on-fail"],
            "needs at least one --threshold",
        ),
    ] {
        let out = run(&args).await;
        assert_eq!(out.code, 2, "{args:?}: {}{}", out.stdout, out.stderr);
        assert!(out.stderr.contains(says), "{args:?}: {}", out.stderr);
    }
}
