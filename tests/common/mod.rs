//! Helpers for the end-to-end tests: run the real `iotload` binary and read its summary.
#![allow(dead_code, unreachable_pub, clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::Stdio;

use serde_json::Value;
use tokio::io::Lines;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, ChildStderr, Command};

/// The `iotload` binary under test, with no IOTLOAD_* variables inherited.
pub fn iotload() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_iotload"));
    for (key, _) in std::env::vars() {
        if key.starts_with("IOTLOAD_") {
            cmd.env_remove(key);
        }
    }
    cmd.env("IOTLOAD_PROGRESS", "never")
        .current_dir(work_dir())
        .stdin(Stdio::null())
        .kill_on_drop(true);
    cmd
}

/// A directory for the default results file, away from the source tree: under cargo's
/// scratch directory for integration tests (inside `target/`, gone with `cargo clean`),
/// one per test process so no two processes share a SQLite file.
pub fn work_dir() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("iotload-tests-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("test work dir");
    dir
}

/// The finished output of a command.
pub struct Finished {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

/// Runs `iotload ARGS` to the end.
pub async fn run(args: &[&str]) -> Finished {
    finish(iotload().args(args)).await
}

pub async fn finish(cmd: &mut Command) -> Finished {
    let out = cmd.output().await.expect("iotload starts");
    Finished {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// A temp dir with a JSON summary path inside.
pub struct Scratch {
    pub dir: tempfile::TempDir,
}

impl Scratch {
    pub fn new() -> Self {
        Self {
            dir: tempfile::tempdir().expect("temp dir"),
        }
    }
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
    pub fn json(&self) -> String {
        self.path("summary.json").display().to_string()
    }
    pub fn summary(&self) -> Value {
        read_json(&self.path("summary.json"))
    }
}

pub fn read_json(path: &Path) -> Value {
    let text = std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("summary {} missing: {e}", path.display()));
    serde_json::from_str(&text).expect("summary is JSON")
}

/// Checks a summary against the committed schema.
pub fn assert_valid_summary(summary: &Value) {
    let schema: Value = serde_json::from_str(include_str!("../../docs/summary.schema.json"))
        .expect("schema is JSON");
    let validator = jsonschema::validator_for(&schema).expect("schema compiles");
    let errors: Vec<String> = validator
        .iter_errors(summary)
        .map(|e| e.to_string())
        .collect();
    assert!(
        errors.is_empty(),
        "summary violates the schema: {errors:#?}\n{summary:#}"
    );
}

pub fn u(v: &Value, path: &str) -> u64 {
    v.pointer(path)
        .and_then(Value::as_u64)
        .unwrap_or_else(|| panic!("{path} missing in {v:#}"))
}

pub fn f(v: &Value, path: &str) -> f64 {
    v.pointer(path)
        .and_then(Value::as_f64)
        .unwrap_or_else(|| panic!("{path} missing in {v:#}"))
}

/// "Lost" over per-second, per-topic documents or rows (plotter JSONL, Elasticsearch,
/// `results export`): their counters summed per topic, then the loss model applied to
/// each topic and the topics added (docs/measurement.md).
pub fn lost_of_rows<'a>(rows: impl IntoIterator<Item = &'a Value>) -> u64 {
    use iotload_core::loss::MessageCounts;
    let mut topics: std::collections::BTreeMap<String, MessageCounts> = Default::default();
    for row in rows {
        let topic = row["topic"].as_str().unwrap_or_default().to_string();
        let field = |name: &str| {
            row[name]
                .as_u64()
                .unwrap_or_else(|| panic!("{name} in {row}"))
        };
        *topics.entry(topic).or_default() += MessageCounts {
            sent: field("sent"),
            received: field("received"),
            gaps: field("gaps"),
            duplicates: field("duplicates"),
            reordered: field("reordered"),
            undecodable: field("undecodable"),
        };
    }
    topics.values().map(MessageCounts::lost).sum()
}

/// `promtool check metrics` accepts the exposition (parse errors and lint problems such
/// as a counter without `_total` or a non-base unit fail).
pub async fn promtool_accepts(text: &str) {
    let promtool = if std::path::Path::new("/usr/bin/promtool").exists() {
        "/usr/bin/promtool"
    } else {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "promtool (Debian package prometheus) is missing: scripts/test installs it"
        );
        eprintln!("skipping the promtool check: not installed");
        return;
    };
    use tokio::io::AsyncWriteExt;
    let mut child = tokio::process::Command::new(promtool)
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("promtool starts");
    let mut stdin = child.stdin.take().expect("promtool's stdin");
    stdin
        .write_all(text.as_bytes())
        .await
        .expect("promtool reads the exposition");
    drop(stdin);
    let out = child.wait_with_output().await.expect("promtool ends");
    assert!(
        out.status.success(),
        "promtool: {}{}\n{text}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A unique topic prefix so tests sharing a broker never see each other's messages.
pub fn prefix(name: &str) -> String {
    iotload_testkit::unique_topic(name)
}

/// A running `iotload` whose stderr lines a test can wait on.
pub struct Proc {
    pub child: Child,
    lines: Lines<BufReader<ChildStderr>>,
    pub seen: Vec<String>,
}

/// Spawns `iotload ARGS` with stdout and stderr piped.
pub fn spawn(args: &[&str]) -> Proc {
    let mut child = iotload()
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("iotload starts");
    let stderr = child.stderr.take().expect("stderr piped");
    Proc {
        child,
        lines: BufReader::new(stderr).lines(),
        seen: Vec::new(),
    }
}

impl Proc {
    /// Wraps a child started elsewhere (e.g. in a network namespace) whose stderr is piped.
    pub fn from_child(child: Child, lines: Lines<BufReader<ChildStderr>>) -> Self {
        Proc {
            child,
            lines,
            seen: Vec::new(),
        }
    }

    /// Reads stderr until a line contains `needle`.
    pub async fn wait_for(&mut self, needle: &str) {
        self.wait_until(|l| l.contains(needle), needle).await;
    }

    /// Reads stderr until a line satisfies `pred`.
    pub async fn wait_until(&mut self, pred: impl Fn(&str) -> bool, what: &str) {
        while let Ok(Some(line)) = self.lines.next_line().await {
            let hit = pred(&line);
            self.seen.push(line);
            if hit {
                return;
            }
        }
        panic!("stderr ended without `{what}`: {:#?}", self.seen);
    }

    /// Sends SIGINT, as Ctrl-C would.
    pub fn interrupt(&self) {
        self.signal("-INT");
    }

    /// Sends a signal by name (`-TERM`, `-INT`).
    pub fn signal(&self, name: &str) {
        let pid = self.child.id().expect("child runs");
        let status = std::process::Command::new("kill")
            .args([name, &pid.to_string()])
            .status()
            .expect("kill runs");
        assert!(status.success());
    }

    /// Waits for the exit code and returns it with every stderr line.
    pub async fn finish(mut self) -> (Option<i32>, Vec<String>) {
        while let Ok(Some(line)) = self.lines.next_line().await {
            self.seen.push(line);
        }
        let code = self.child.wait().await.expect("child ends").code();
        (code, self.seen)
    }

    /// Waits for the exit code, reading the rest of stderr meanwhile.
    pub async fn exit_code(mut self) -> Option<i32> {
        while let Ok(Some(line)) = self.lines.next_line().await {
            self.seen.push(line);
        }
        self.child.wait().await.expect("child ends").code()
    }
}

/// Whether a progress line shows at least `n` messages received.
pub fn received_at_least(line: &str, n: u64) -> bool {
    count_at_least(line, "received ", n)
}

/// Whether a progress line shows a count of at least `n` right after `label` (e.g.
/// `"received "`, `" · duplicates "`); false when the line does not show it.
pub fn count_at_least(line: &str, label: &str, n: u64) -> bool {
    line.split(label)
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|count| count.parse::<u64>().ok())
        .is_some_and(|count| count >= n)
}

/// Whether the suite runs in CI (`CI=true`), where a missing server or tool is a failure.
pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v.eq_ignore_ascii_case("true") || v == "1")
}

/// The first of `names` found on PATH (or in the tools venv `scripts/test` makes under
/// `target/tools`), or `None` with a message; in CI a missing tool fails the test instead.
pub fn tool(names: &[&str], install: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let venv = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/tools/venv/bin");
    let found = std::env::split_paths(&path)
        .chain([venv])
        .flat_map(|dir| names.iter().map(move |name| dir.join(name)))
        .find(|p| p.is_file());
    if found.is_none() {
        assert!(
            !in_ci(),
            "{} is not installed ({install}; scripts/test does it)",
            names[0]
        );
        eprintln!("skipped: {} is not installed ({install})", names[0]);
    }
    found
}

/// Headless Chromium (Debian package `chromium`), or `None` with a message when it is not
/// installed; with `CI=true` a missing Chromium fails the test instead.
pub fn chromium() -> Option<PathBuf> {
    tool(
        &["chromium", "chromium-browser"],
        "apt-get install chromium",
    )
}

/// What headless Chromium made of a page.
pub struct Rendered {
    /// The DOM after loading (`--dump-dom`).
    pub dom: String,
    /// The screenshot (`--screenshot`), PNG bytes.
    pub png: Vec<u8>,
    /// Console messages and uncaught errors Chromium logged while loading the page.
    pub console: Vec<String>,
}

/// Loads `page` in headless Chromium twice, offline: once for the DOM and once for a
/// 1280×2000 screenshot, collecting every console message from its log on stderr (it
/// logs each as `...:CONSOLE...`, errors and uncaught exceptions included).
pub async fn render_in_chromium(chromium: &Path, page: &Path) -> Rendered {
    let dir = tempfile::tempdir().expect("temp dir");
    let url = format!("file://{}", page.display());
    let run = |extra: Vec<String>, profile: &str| {
        let mut cmd = Command::new(chromium);
        cmd.args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--no-first-run",
            "--enable-logging=stderr",
            "--v=0",
        ])
        .arg(format!(
            "--user-data-dir={}",
            dir.path().join(profile).display()
        ))
        .args(extra)
        .arg(&url)
        .stdin(Stdio::null())
        .kill_on_drop(true);
        cmd
    };
    let shot = dir.path().join("shot.png");
    let dump = finish(&mut run(vec!["--dump-dom".into()], "dom")).await;
    let picture = finish(&mut run(
        vec![
            format!("--screenshot={}", shot.display()),
            "--window-size=1280,2000".into(),
            "--hide-scrollbars".into(),
        ],
        "shot",
    ))
    .await;
    assert_eq!(dump.code, 0, "chromium --dump-dom failed: {}", dump.stderr);
    assert_eq!(
        picture.code, 0,
        "chromium --screenshot failed: {}",
        picture.stderr
    );
    let console = dump
        .stderr
        .lines()
        .chain(picture.stderr.lines())
        .filter(|l| l.contains(":CONSOLE") || l.contains("Uncaught"))
        .map(str::to_string)
        .collect();
    Rendered {
        dom: dump.stdout,
        png: std::fs::read(&shot).unwrap_or_default(),
        console,
    }
}

/// A drain long enough for a loaded machine: tests that count every message give the
/// last ones time to arrive (a drain ends as soon as they all did, so it costs nothing
/// when they do; the default 2 s is for users, who see the warning).
pub const EXACT_DRAIN: [&str; 2] = ["--drain-timeout", "30s"];

/// `iotload run` with 20 devices at 25 msg/s for 2 s: every one of the 1000 messages
/// goes out, through the echo, and back to the collector.
pub async fn exact_counts(url: &str, topic_prefix: &str, extra: &[&str]) -> Value {
    let scratch = Scratch::new();
    let topic = format!("{topic_prefix}/{{device}}/req");
    let action = format!("{topic_prefix}/{{device}}/act");
    let client = format!("{topic_prefix}-{{device}}").replace('/', "-");
    let json = scratch.json();
    let mut args = vec![
        "run",
        "--broker",
        url,
        "--devices",
        "20",
        "--rate",
        "25",
        "--duration",
        "2s",
        "--topic",
        &topic,
        "--action-topic",
        &action,
        "--client-id",
        &client,
        "--json",
        &json,
    ];
    if !extra.contains(&"--drain-timeout") {
        args.extend(EXACT_DRAIN);
    }
    args.extend(extra);
    let out = run(&args).await;
    assert_eq!(out.code, 0, "{}\n{}", out.stdout, out.stderr);
    let s = scratch.summary();
    assert_valid_summary(&s);
    assert_eq!(u(&s, "/load/planned"), 1000);
    assert_eq!(u(&s, "/load/sent"), 1000, "{s:#}");
    assert_eq!(u(&s, "/receive/received"), 1000, "{s:#}");
    assert_eq!(u(&s, "/receive/unique"), 1000, "{s:#}");
    assert_eq!(u(&s, "/receive/lost"), 0);
    assert_eq!(u(&s, "/receive/duplicates"), 0);
    assert_eq!(u(&s, "/echo/published"), 1000);
    assert!(f(&s, "/receive/latency_ms/p50") > 0.0);
    assert!(out.stdout.contains("latency ms"), "{}", out.stdout);
    s
}

/// The loop as three processes, as a deployment runs it: a collector listening on the
/// actions broker, an echo from the requests broker to the actions broker (one
/// `--broker` when they are the same), then a loadgen on the requests broker, run to its
/// end. Each gets its own extra flags.
pub struct ThreeProcesses<'a> {
    /// The devices' broker, where the echo takes requests.
    pub requests: &'a str,
    /// Where the echo answers and the collector listens.
    pub actions: &'a str,
    /// The collector's extra flags.
    pub collector: &'a [&'a str],
    /// The echo's extra flags.
    pub echo: &'a [&'a str],
    /// The loadgen's extra flags (devices, rate, count, ...).
    pub loadgen: &'a [&'a str],
    /// Messages the collector must receive before it is stopped.
    pub expected: u64,
}

impl ThreeProcesses<'_> {
    /// Runs the loop; returns the loadgen's summary and the collector's, written when
    /// Ctrl-C stopped it after `expected` messages. Both summaries are checked valid.
    pub async fn run(&self) -> (Value, Value) {
        let scratch = Scratch::new();
        let json = scratch.json();
        let mut args = vec![
            "collector",
            "--broker",
            self.actions,
            "--progress",
            "always",
            "--json",
            &json,
        ];
        args.extend(self.collector);
        let mut collector = spawn(&args);
        collector.wait_for("collector: listening").await;
        let mut args = if self.requests == self.actions {
            vec!["echo-ipaas", "--broker", self.requests]
        } else {
            vec![
                "echo-ipaas",
                "--from-broker",
                self.requests,
                "--to-broker",
                self.actions,
            ]
        };
        args.extend(["--progress", "never"]);
        args.extend(self.echo);
        let mut echo = spawn(&args);
        echo.wait_for("echo-ipaas:").await;
        let load_json = scratch.path("load.json").display().to_string();
        let mut args = vec!["loadgen", "--broker", self.requests, "--json", &load_json];
        args.extend(self.loadgen);
        let out = run(&args).await;
        assert_eq!(out.code, 0, "{}", out.stderr);
        let load = read_json(&scratch.path("load.json"));
        assert_valid_summary(&load);
        let expected = self.expected;
        collector
            .wait_until(|l| received_at_least(l, expected), "every message received")
            .await;
        collector.interrupt();
        assert_eq!(collector.exit_code().await, Some(130));
        echo.interrupt();
        let _ = echo.exit_code().await;
        let received = scratch.summary();
        assert_valid_summary(&received);
        (load, received)
    }
}

/// `iotload run` against `SCHEME://127.0.0.1:PORT` where nothing listens: it must exit 2
/// and name the URL. Returns the output for broker-specific checks.
pub async fn run_on_a_closed_port(scheme: &str) -> Finished {
    let port = iotload_testkit::free_port();
    let url = format!("{scheme}://127.0.0.1:{port}");
    let out = run(&[
        "run",
        "--broker",
        &url,
        "--duration",
        "1s",
        "--connect-timeout",
        "2s",
    ])
    .await;
    assert_eq!(out.code, 2, "{}\n{}", out.stdout, out.stderr);
    assert!(
        out.stderr.contains(&format!("cannot connect to {url}")),
        "{}",
        out.stderr
    );
    out
}

/// A plain HTTP/1.0 GET on loopback: (status line, body).
pub async fn http_get(addr: &str, path: &str) -> Option<(String, String)> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.ok()?;
    s.write_all(format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").as_bytes())
        .await
        .ok()?;
    let mut text = String::new();
    s.read_to_string(&mut text).await.ok()?;
    let (head, body) = text.split_once("\r\n\r\n")?;
    Some((head.lines().next()?.to_string(), body.to_string()))
}

/// The per-second documents `iotload plotter --jsonl` makes of `run` in `store`: what the
/// store holds, for comparing with a printed summary.
pub async fn stored_documents(store: &str, run_id: &str) -> Vec<Value> {
    let scratch = Scratch::new();
    let docs = scratch.path("docs.jsonl");
    let out = run(&[
        "plotter",
        "--store",
        store,
        "--run",
        run_id,
        "--jsonl",
        &docs.display().to_string(),
    ])
    .await;
    assert_eq!(out.code, 0, "{}", out.stderr);
    std::fs::read_to_string(&docs)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

/// Reads stderr until the metrics line and returns the address it names.
pub async fn metrics_addr(p: &mut Proc) -> String {
    p.wait_for("serving live metrics at http://").await;
    let line = p.seen.last().unwrap();
    line.split("http://")
        .nth(1)
        .and_then(|rest| rest.strip_suffix("/metrics"))
        .unwrap()
        .to_string()
}

/// The samples of one exposition: series (name and labels, as written) → value.
pub fn samples(text: &str) -> std::collections::BTreeMap<String, f64> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|l| {
            let (series, value) = l.rsplit_once(' ').unwrap();
            (series.to_string(), value.parse().unwrap())
        })
        .collect()
}

pub fn total(samples: &std::collections::BTreeMap<String, f64>, name: &str) -> f64 {
    samples
        .iter()
        .filter(|(s, _)| s.split('{').next() == Some(name))
        .map(|(_, v)| v)
        .sum()
}

/// Scrapes `addr` until `done` holds for the samples (each scrape is a fresh read of the
/// counters, which the components update as they go; the collector's once a second).
pub async fn scrape_until(
    addr: &str,
    what: &str,
    done: impl Fn(&std::collections::BTreeMap<String, f64>) -> bool,
) -> String {
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(20);
    let mut last = String::new();
    while tokio::time::Instant::now() < deadline {
        if let Some((status, body)) = http_get(addr, "/metrics").await {
            assert!(status.contains("200"), "{status}");
            if done(&samples(&body)) {
                return body;
            }
            last = body;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    panic!("{addr}/metrics never showed {what}; last scrape:\n{last}");
}
