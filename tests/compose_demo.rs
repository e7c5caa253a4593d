//! The Compose demo for real (issue #20): `compose/docker-compose.yml` brought up on a
//! Docker engine with 3 loadgens, 3 collectors, the echo, Redis, Mosquitto, the plotter and
//! Prometheus, from the images `scripts/docker-images --iotload` builds (no registry).
//! Prometheus must scrape every replica while the loadgens run; afterwards the demo's
//! Redis must hold every topic with sent = received, and the plotter must write the HTML
//! report. With the nats, rabbitmq and kafka additions, each completes a short run with every
//! message measured, and a collector cut off the demo's network mid-run (a partition)
//! recovers and stores exactly what its summary printed. Everything a test created is
//! removed (`docker-compose down -v`), also when it fails.
//!
//! Needs `docker-compose`, an engine (`DOCKER_HOST`, see `scripts/docker-engine`) and the
//! images; without them the test says so in one line and returns, except in CI.

#![allow(clippy::unwrap_used)]

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::Value;

const LOADGENS: usize = 3;
const DEVICES: u64 = 20;
const RATE: u64 = 5;
const SECONDS: u64 = 30;
const IMAGES: [&str; 8] = [
    "iotload:latest",
    "iotload-test/mosquitto:latest",
    "iotload-test/redis:latest",
    "iotload-test/prometheus:latest",
    "iotload-test/nats:latest",
    "iotload-test/rabbitmq:latest",
    "iotload-test/kafka:latest",
    "iotload-test/elasticsearch:latest",
];

/// The measured loop: broker, store, echo, collectors and loadgens (no plotter or
/// Prometheus).
const LOOP: [&str; 5] = ["mosquitto", "redis", "echo-ipaas", "collector", "loadgen"];

/// The Compose variables of a run of one loadgen (and so one collector), plus `more`.
fn one_loadgen(
    devices: u64,
    rate: u64,
    seconds: u64,
    more: &[(&'static str, String)],
) -> Vec<(&'static str, String)> {
    let mut settings = vec![
        ("LOADGENS", "1".to_owned()),
        ("WAIT_FOR", "2".into()),
        ("DEVICES", devices.to_string()),
        ("RATE", rate.to_string()),
        ("DURATION", format!("{seconds}s")),
    ];
    settings.extend(more.iter().cloned());
    settings
}

/// A Compose project of this test; `down -v` on drop.
struct Demo {
    project: String,
    /// `compose/docker-compose.yml`, then the additions (e.g. `compose/nats.yml`).
    files: Vec<PathBuf>,
    env: Vec<(String, String)>,
    run_id: String,
}

impl Demo {
    /// A project named after `name` and this process, of the demo's file plus
    /// `additions` (files in `compose/`), with the locally built images and `settings`
    /// (Compose file variables) on top.
    fn new(name: &str, additions: &[&str], settings: &[(&str, String)]) -> Self {
        let run_id = format!("{name}-{}", std::process::id());
        let mut env: Vec<(String, String)> = [
            ("IMAGE", "iotload:latest".to_owned()),
            ("MOSQUITTO_IMAGE", "iotload-test/mosquitto:latest".into()),
            ("REDIS_IMAGE", "iotload-test/redis:latest".into()),
            ("NATS_IMAGE", "iotload-test/nats:latest".into()),
            ("RABBITMQ_IMAGE", "iotload-test/rabbitmq:latest".into()),
            ("KAFKA_IMAGE", "iotload-test/kafka:latest".into()),
            (
                "ELASTICSEARCH_IMAGE",
                "iotload-test/elasticsearch:latest".into(),
            ),
            ("PROMETHEUS_IMAGE", "iotload-test/prometheus:latest".into()),
            ("RUN_ID", run_id.clone()),
            // Nothing is published unless a test asks: ports of their own otherwise.
            (
                "PLOTTER_PORT",
                format!("127.0.0.1:{}", iotload_testkit::free_port()),
            ),
            (
                "PROMETHEUS_PORT",
                format!("127.0.0.1:{}", iotload_testkit::free_port()),
            ),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect();
        for (key, value) in settings {
            env.retain(|(k, _)| k != key);
            env.push(((*key).to_owned(), value.clone()));
        }
        Self {
            project: format!("iotload-{name}-{}", std::process::id()),
            files: std::iter::once("docker-compose.yml")
                .chain(additions.iter().copied())
                .map(|f| {
                    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
                        .join("compose")
                        .join(f)
                })
                .collect(),
            env,
            run_id,
        }
    }

    fn compose(&self, args: &[&str]) -> Output {
        let mut cmd = Command::new("docker-compose");
        for file in &self.files {
            cmd.arg("-f").arg(file);
        }
        cmd.args(["-p", &self.project])
            .args(args)
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdin(Stdio::null())
            .output()
            .unwrap()
    }

    /// `docker-compose ARGS`, which must succeed.
    fn compose_ok(&self, args: &[&str]) {
        let out = self.compose(args);
        assert!(
            out.status.success(),
            "docker-compose {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// `docker-compose up -d` of `services` (and what they depend on), which must succeed.
    fn up(&self, services: &[&str]) {
        let mut args = vec!["up", "-d", "--no-build"];
        args.extend(services);
        self.compose_ok(&args);
    }

    /// The demo's network (`docker network connect/disconnect`, one-off containers).
    fn network(&self) -> String {
        format!("{}_default", self.project)
    }

    /// `docker run --rm` of the iotload image on the demo's network.
    fn iotload(&self, mounts: &[(&Path, &str)], args: &[&str]) -> Output {
        let mut cmd = Command::new("docker");
        cmd.args(["run", "--rm", "--network", &self.network()]);
        for (host, target) in mounts {
            cmd.arg("-v").arg(format!("{}:{target}", host.display()));
        }
        cmd.arg("iotload:latest").args(args).stdin(Stdio::null());
        cmd.output().unwrap()
    }

    /// The container ids of a service.
    fn containers(&self, service: &str) -> Vec<String> {
        let ids = self.compose(&["ps", "-q", service]);
        String::from_utf8_lossy(&ids.stdout)
            .split_whitespace()
            .map(str::to_owned)
            .collect()
    }

    /// The containers of a service and their states (`running`, `exited` …) and exit codes.
    fn states(&self, service: &str) -> Vec<(String, i64)> {
        self.containers(service)
            .iter()
            .map(|id| {
                let out = Command::new("docker")
                    .args(["inspect", "-f", "{{.State.Status}} {{.State.ExitCode}}", id])
                    .output()
                    .unwrap();
                let text = String::from_utf8_lossy(&out.stdout).trim().to_owned();
                let (state, code) = text.split_once(' ').unwrap_or((&text, "-1"));
                (state.to_owned(), code.parse().unwrap_or(-1))
            })
            .collect()
    }

    fn logs(&self) -> String {
        let out = self.compose(&["logs", "--no-color", "--tail", "40"]);
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// What one service's containers wrote (stdout and stderr).
    fn service_log(&self, service: &str) -> String {
        self.containers(service)
            .iter()
            .map(|id| {
                let out = Command::new("docker").args(["logs", id]).output().unwrap();
                format!(
                    "{}{}",
                    String::from_utf8_lossy(&out.stdout),
                    String::from_utf8_lossy(&out.stderr)
                )
            })
            .collect()
    }

    /// Waits until a service's log has `line` (a broker's ready line).
    async fn wait_for_log(&self, service: &str, line: &str, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        while !self.service_log(service).contains(line) {
            assert!(
                Instant::now() < deadline,
                "{service} did not log {line:?} within {timeout:?}\n{}",
                self.logs()
            );
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    /// Waits until all `count` loadgens exited, each with status 0; `while_waiting` runs
    /// about once a second meanwhile.
    async fn wait_for_loadgens<F, Fut>(&self, count: usize, timeout: Duration, mut while_waiting: F)
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = ()>,
    {
        let deadline = Instant::now() + timeout;
        loop {
            while_waiting().await;
            let loadgens = self.states("loadgen");
            if loadgens.len() == count && loadgens.iter().all(|(s, _)| s == "exited") {
                assert!(
                    loadgens.iter().all(|(_, code)| *code == 0),
                    "a loadgen failed: {loadgens:?}\n{}",
                    self.logs()
                );
                return;
            }
            assert!(
                Instant::now() < deadline,
                "loadgens still running after {timeout:?}: {loadgens:?}\n{}",
                self.logs()
            );
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }

    /// Stops the collectors and the echo (they drain and flush on SIGTERM); each must
    /// exit as stopped (130: "interrupted", after a clean drain).
    fn stop_consumers(&self) {
        self.compose_ok(&["stop", "-t", "30", "collector", "echo-ipaas"]);
        for service in ["collector", "echo-ipaas"] {
            let states = self.states(service);
            assert!(
                states.iter().all(|(_, code)| *code == 0 || *code == 130),
                "{service} exited with {states:?}\n{}",
                self.logs()
            );
        }
    }

    /// The demo store's per-second rows of this run, summed per topic.
    fn totals_per_topic(&self) -> BTreeMap<String, Totals> {
        totals_from_csv(&self.export_csv())
    }

    /// `iotload results export RUN --csv` of the demo's store (a one-off container).
    fn export_csv(&self) -> String {
        let export = self.iotload(
            &[],
            &[
                "results",
                "export",
                &self.run_id,
                "--csv",
                "--store",
                "redis://redis:6379",
            ],
        );
        assert!(
            export.status.success(),
            "{}",
            String::from_utf8_lossy(&export.stderr)
        );
        String::from_utf8_lossy(&export.stdout).into_owned()
    }
}

/// `iotload results export --csv` rows summed per topic.
fn totals_from_csv(csv: &str) -> BTreeMap<String, Totals> {
    let mut lines = csv.lines();
    let header: Vec<&str> = lines.next().unwrap().split(',').collect();
    let column = |name: &str| header.iter().position(|h| *h == name).unwrap();
    let columns = [
        column("topic"),
        column("sent"),
        column("received"),
        column("duplicates"),
        column("second"),
    ];
    let mut per_topic: BTreeMap<String, Totals> = BTreeMap::new();
    for line in lines {
        let cells: Vec<&str> = line.split(',').collect();
        let number = |i: usize| cells[columns[i]].parse::<u64>().unwrap_or(0);
        let entry = per_topic.entry(cells[columns[0]].to_owned()).or_default();
        entry.sent += number(1);
        entry.received += number(2);
        entry.duplicates += number(3);
        if number(2) > 0 {
            entry.last_received_second = entry.last_received_second.max(number(4));
        }
    }
    per_topic
}

/// One topic's sums over the run's stored seconds.
#[derive(Debug, Default, Clone, Copy)]
struct Totals {
    sent: u64,
    received: u64,
    duplicates: u64,
    /// The last second (Unix time) in which a message of the topic was received.
    last_received_second: u64,
}

impl Drop for Demo {
    fn drop(&mut self) {
        let out = self.compose(&["down", "-v", "--remove-orphans", "-t", "10"]);
        if !out.status.success() {
            eprintln!(
                "docker-compose down failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
}

/// Whether the engine answers and has the images; otherwise why not.
fn docker_ready() -> Result<(), String> {
    let compose = Command::new("docker-compose").arg("version").output();
    if !matches!(compose, Ok(ref out) if out.status.success()) {
        return Err("docker-compose is missing (apt-get install docker-compose)".into());
    }
    let out = Command::new("docker")
        .args(["image", "inspect", "--format", "{{.Id}}"])
        .args(IMAGES)
        .output()
        .map_err(|e| format!("no docker client: {e}"))?;
    if out.status.success() {
        return Ok(());
    }
    Err(format!(
        "the Docker engine (DOCKER_HOST={}) or its images are missing: {}; run `eval \"$(scripts/docker-engine start)\"` and `scripts/docker-images --iotload`",
        std::env::var("DOCKER_HOST").unwrap_or_else(|_| "unset".into()),
        String::from_utf8_lossy(&out.stderr).trim()
    ))
}

/// The distinct instances Prometheus has up per job, from its targets API.
async fn targets_up(prometheus: &str) -> BTreeMap<String, BTreeSet<String>> {
    let mut up: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let Some((status, body)) = common::http_get(prometheus, "/api/v1/targets").await else {
        return up;
    };
    if !status.contains("200") {
        return up;
    }
    let v: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
    for t in v["data"]["activeTargets"].as_array().into_iter().flatten() {
        if t["health"] == "up" {
            up.entry(t["labels"]["job"].as_str().unwrap_or("").to_owned())
                .or_default()
                .insert(t["scrapeUrl"].as_str().unwrap_or("").to_owned());
        }
    }
    up
}

/// `Some(why)` when the engine, the Compose tool or the images are missing outside CI
/// (the caller returns); in CI that is a failure.
fn skip_without_docker() -> bool {
    match docker_ready() {
        Ok(()) => false,
        Err(why) => {
            assert!(
                !common::in_ci(),
                "{why} (CI=true: the demo may not be skipped)"
            );
            eprintln!("skipped: {why}");
            true
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_compose_demo_measures_every_message_of_three_loadgens_and_prometheus_scrapes_every_replica()
 {
    if skip_without_docker() {
        return;
    }
    let prometheus_port = iotload_testkit::free_port();
    let demo = Demo::new(
        "demo",
        &[],
        &[
            ("LOADGENS", LOADGENS.to_string()),
            ("WAIT_FOR", (2 * LOADGENS).to_string()),
            ("DEVICES", DEVICES.to_string()),
            ("RATE", RATE.to_string()),
            ("DURATION", format!("{SECONDS}s")),
            ("PROMETHEUS_PORT", format!("127.0.0.1:{prometheus_port}")),
        ],
    );
    let scale = LOADGENS.to_string();
    let started = Instant::now();
    demo.up(&[
        "--scale",
        &format!("loadgen={scale}"),
        "--scale",
        &format!("collector={scale}"),
        "mosquitto",
        "redis",
        "echo-ipaas",
        "collector",
        "loadgen",
        "plotter",
        "prometheus",
    ]);
    eprintln!("demo up in {:.1} s", started.elapsed().as_secs_f64());

    // While the loadgens run, Prometheus must find and scrape every replica: 3 loadgens,
    // 3 collectors and the echo (job iotload-components) and the plotter.
    let prometheus = format!("127.0.0.1:{prometheus_port}");
    let seen: std::cell::RefCell<BTreeMap<String, BTreeSet<String>>> = Default::default();
    demo.wait_for_loadgens(LOADGENS, Duration::from_secs(SECONDS + 90), || async {
        for (job, urls) in targets_up(&prometheus).await {
            seen.borrow_mut().entry(job).or_default().extend(urls);
        }
    })
    .await;
    eprintln!(
        "loadgens done after {:.1} s",
        started.elapsed().as_secs_f64()
    );
    let seen = seen.into_inner();
    let components = seen.get("iotload-components").cloned().unwrap_or_default();
    assert_eq!(
        components.len(),
        2 * LOADGENS + 1,
        "Prometheus scraped {components:?}, not every loadgen, collector and the echo"
    );
    assert_eq!(
        seen.get("iotload-plotter").map(BTreeSet::len),
        Some(1),
        "{seen:?}"
    );

    // The demo's store: every topic with sent = received.
    demo.stop_consumers();
    let per_topic = demo.totals_per_topic();
    let topics = LOADGENS as u64 * DEVICES;
    assert_eq!(per_topic.len() as u64, topics, "{per_topic:?}");
    for (name, t) in &per_topic {
        assert_eq!(t.sent, t.received, "topic {name}: {t:?}");
        assert_eq!(t.sent, RATE * SECONDS, "topic {name}");
    }
    let total: u64 = per_topic.values().map(|t| t.received).sum();
    eprintln!(
        "demo: {topics} topics, {total} messages, every one measured ({:.1} s in all)",
        started.elapsed().as_secs_f64()
    );

    // The plotter's HTML report of the run, written by a one-off container.
    let reports = tempfile::tempdir().unwrap();
    std::fs::set_permissions(
        reports.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o777),
    )
    .unwrap();
    let plot = demo.iotload(
        &[(reports.path(), "/reports")],
        &[
            "plotter",
            "--store",
            "redis://redis:6379",
            "--run",
            &demo.run_id,
            "--html",
            "/reports/report.html",
        ],
    );
    assert!(
        plot.status.success(),
        "{}",
        String::from_utf8_lossy(&plot.stderr)
    );
    let html = std::fs::read_to_string(reports.path().join("report.html")).unwrap();
    assert!(html.contains(&demo.run_id), "the report names the run");
}

/// A short run of one loadgen on another broker (its addition to the demo's file,
/// `compose/BROKER.yml`, service `BROKER`): every message measured.
async fn short_run_on_broker(name: &str, broker: &str, ready_line: &str) {
    if skip_without_docker() {
        return;
    }
    const DEVICES: u64 = 10;
    const SECONDS: u64 = 10;
    let addition = format!("{name}.yml");
    let demo = Demo::new(
        name,
        &[&addition],
        &one_loadgen(DEVICES, RATE, SECONDS, &[("BROKER", broker.to_owned())]),
    );
    let started = Instant::now();
    // The broker first: the components' first connection is not retried, and RabbitMQ
    // and Kafka take seconds to serve (compose/README.md says the same to users).
    demo.up(&[name, "redis"]);
    demo.wait_for_log(name, ready_line, Duration::from_secs(120))
        .await;
    let broker_ready = started.elapsed();
    demo.up(&LOOP);
    demo.wait_for_loadgens(1, Duration::from_secs(SECONDS + 90), || async {})
        .await;
    demo.stop_consumers();
    let per_topic = demo.totals_per_topic();
    assert_eq!(per_topic.len() as u64, DEVICES, "{per_topic:?}");
    for (name, t) in &per_topic {
        assert_eq!(t.sent, RATE * SECONDS, "topic {name}: {t:?}");
        assert_eq!(t.received, t.sent, "topic {name}: {t:?}");
    }
    eprintln!(
        "{name}.yml: broker ready in {:.1} s, {} messages on {DEVICES} topics, every one measured ({:.1} s in all)",
        broker_ready.as_secs_f64(),
        per_topic.values().map(|t| t.received).sum::<u64>(),
        started.elapsed().as_secs_f64()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_nats_addition_completes_a_short_run() {
    short_run_on_broker("nats", "nats://nats:4222", "Server is ready").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_rabbitmq_addition_completes_a_short_run() {
    short_run_on_broker(
        "rabbitmq",
        "amqp://guest:guest@rabbitmq:5672/%2f",
        "Starting broker... completed",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_kafka_addition_completes_a_short_run() {
    short_run_on_broker("kafka", "kafka://kafka:9092", "Kafka Server started").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_report_addition_ships_the_run_to_elasticsearch_and_writes_the_html_report() {
    if skip_without_docker() {
        return;
    }
    const DEVICES: u64 = 10;
    const SECONDS: u64 = 10;
    let reports = tempfile::tempdir().unwrap();
    std::fs::set_permissions(
        reports.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o777),
    )
    .unwrap();
    let search_port = iotload_testkit::free_port();
    let demo = Demo::new(
        "report",
        &["report.yml"],
        &one_loadgen(
            DEVICES,
            RATE,
            SECONDS,
            &[
                ("ELASTICSEARCH_PORT", format!("127.0.0.1:{search_port}")),
                ("REPORTS_DIR", reports.path().display().to_string()),
            ],
        ),
    );
    // Kibana has no image here (no Debian package, no registry): the report goes to
    // Elasticsearch and the HTML file.
    demo.up(&LOOP);
    demo.up(&["elasticsearch"]);
    demo.wait_for_loadgens(1, Duration::from_secs(SECONDS + 90), || async {})
        .await;
    demo.stop_consumers();
    demo.wait_for_log(
        "elasticsearch",
        "search-node ready:",
        Duration::from_secs(120),
    )
    .await;
    let report = demo.compose(&["run", "--rm", "-T", "report"]);
    let printed = format!(
        "{}{}",
        String::from_utf8_lossy(&report.stdout),
        String::from_utf8_lossy(&report.stderr)
    );
    assert!(report.status.success(), "the report failed:\n{printed}");
    let html = std::fs::read_to_string(reports.path().join("report.html")).unwrap();
    assert!(html.contains(&demo.run_id), "the report names the run");
    // Every stored topic-second is a document in the run's daily index.
    let rows = demo.export_csv().lines().count() as u64 - 1;
    let search = format!("127.0.0.1:{search_port}");
    // What was indexed becomes searchable at the next refresh (every second); now.
    common::http_get(&search, "/iotload-*/_refresh")
        .await
        .expect("Elasticsearch answers on its published port");
    let (status, body) = common::http_get(&search, "/iotload-*/_count")
        .await
        .expect("Elasticsearch answers on its published port");
    assert!(status.contains("200"), "{status}\n{body}");
    let count = serde_json::from_str::<Value>(&body).unwrap()["count"]
        .as_u64()
        .unwrap_or(0);
    // The plotter says "… N documents, N indexed into Elasticsearch".
    let indexed = printed
        .split(" indexed into Elasticsearch")
        .next()
        .and_then(|before| before.split_whitespace().last())
        .and_then(|n| n.parse::<u64>().ok());
    assert!(count > 0, "no documents shipped: {body}\n{printed}");
    assert_eq!(Some(count), indexed, "{printed}");
    eprintln!(
        "report.yml: {count} documents in Elasticsearch from {rows} stored rows (the loadgen's and the collector's per topic-second); HTML report written\n{printed}"
    );
}

/// The received count on a component's summary line ("received    N (…/s) · lost …").
fn printed_received(log: &str) -> Option<u64> {
    log.lines()
        .rev()
        .find_map(|line| line.trim_start().strip_prefix("received"))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_collector_cut_off_the_network_recovers_and_stores_what_it_printed() {
    if skip_without_docker() {
        return;
    }
    const DEVICES: u64 = 10;
    const SECONDS: u64 = 30;
    const RATE: u64 = 10;
    let demo = Demo::new("partition", &[], &one_loadgen(DEVICES, RATE, SECONDS, &[]));
    demo.up(&LOOP);
    let collector = demo.containers("collector").pop().unwrap();
    // Once messages flow (the loadgen's progress shows), cut the collector off for 8 s.
    demo.wait_for_log("collector", "received", Duration::from_secs(60))
        .await;
    tokio::time::sleep(Duration::from_secs(5)).await;
    let docker = |args: &[&str]| {
        let out = Command::new("docker").args(args).output().unwrap();
        assert!(
            out.status.success(),
            "docker {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        );
    };
    let network = demo.network();
    docker(&["network", "disconnect", &network, &collector]);
    let cut = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    tokio::time::sleep(Duration::from_secs(8)).await;
    docker(&[
        "network",
        "connect",
        "--alias",
        "collector",
        &network,
        &collector,
    ]);
    let healed = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    demo.wait_for_loadgens(1, Duration::from_secs(SECONDS + 90), || async {})
        .await;
    demo.stop_consumers();

    let per_topic = demo.totals_per_topic();
    assert_eq!(per_topic.len() as u64, DEVICES, "{per_topic:?}");
    let sent: u64 = per_topic.values().map(|t| t.sent).sum();
    let received: u64 = per_topic.values().map(|t| t.received).sum();
    assert_eq!(sent, DEVICES * RATE * SECONDS, "{per_topic:?}");
    for (name, t) in &per_topic {
        assert!(t.received - t.duplicates <= t.sent, "topic {name}: {t:?}");
        // Measuring went on after the partition healed.
        assert!(
            t.last_received_second > healed,
            "topic {name}: nothing received after the partition healed at {healed}: {t:?}"
        );
    }
    // What the collector printed when it stopped is what the store holds, and it took
    // its topic claims back once the store answered again (nobody else claimed them).
    let log = demo.service_log("collector");
    assert!(
        !log.contains("other collectors claimed them"),
        "the collector did not take its claims back\n{log}"
    );
    assert_eq!(
        printed_received(&log),
        Some(received),
        "collector summary vs store\n{log}"
    );
    eprintln!(
        "partition of 8 s (from {cut}): sent {sent}, received {received}, lost {}; collector said:\n{}",
        sent.saturating_sub(received),
        log.lines()
            .filter(|l| l.contains("lost") || l.contains("connection") || l.contains("reconnect"))
            .collect::<Vec<_>>()
            .join("\n")
    );
}

/// Every summary line's count for `label` ("sent", "received"), one per component that
/// ended, and their sum.
fn printed_counts(log: &str, label: &str) -> Vec<u64> {
    log.lines()
        .filter_map(|line| {
            let rest = line.trim_start().strip_prefix(label)?;
            let mut words = rest.split_whitespace();
            let n = words.next()?.parse().ok()?;
            words.next()?.starts_with('(').then_some(n)
        })
        .collect()
}

/// Runs `docker ARGS`, which must succeed; its standard output.
fn docker_ok(args: &[&str]) -> String {
    let out = Command::new("docker")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "docker {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The demo's file deployed as a Swarm stack on a single-node swarm (made by the test
/// when the engine is not in one, and left again); removed on drop.
struct Stack {
    name: String,
    made_swarm: bool,
    /// `docker service logs --follow` of each followed service: removed tasks' logs go
    /// with their containers, so they are kept from the start.
    followers: Vec<(String, std::process::Child, PathBuf)>,
    scratch: tempfile::TempDir,
}

impl Stack {
    /// `docker stack config` of the demo's file with `settings`, without the plotter and
    /// Prometheus (Swarm publishes ports on every interface; tests publish on loopback
    /// only), then `docker stack deploy`.
    fn deploy(name: &str, settings: &[(&str, String)]) -> Self {
        let state = docker_ok(&["info", "--format", "{{.Swarm.LocalNodeState}}"]);
        let made_swarm = state.trim() == "inactive";
        if made_swarm {
            docker_ok(&["swarm", "init", "--advertise-addr", "127.0.0.1"]);
        }
        let scratch = tempfile::tempdir().unwrap();
        let file = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("compose/docker-compose.yml");
        let config = Command::new("docker")
            .args(["stack", "config", "-c"])
            .arg(&file)
            .envs(settings.iter().map(|(k, v)| (*k, v.as_str())))
            .output()
            .unwrap();
        assert!(
            config.status.success(),
            "docker stack config (a Docker CLI of 24 or later): {}",
            String::from_utf8_lossy(&config.stderr)
        );
        let mut kept = Vec::new();
        let mut skipping = false;
        let rendered = String::from_utf8_lossy(&config.stdout);
        for line in rendered.lines() {
            if let Some(service) = line.strip_prefix("  ").and_then(|l| l.strip_suffix(':')) {
                if !service.starts_with(' ') {
                    skipping = service == "plotter" || service == "prometheus";
                }
            } else if !line.starts_with(' ') {
                skipping = false;
            }
            if !skipping {
                kept.push(line);
            }
        }
        let stack_file = scratch.path().join("stack.yml");
        std::fs::write(&stack_file, kept.join("\n")).unwrap();
        let stack = Self {
            name: name.to_owned(),
            made_swarm,
            followers: Vec::new(),
            scratch,
        };
        docker_ok(&[
            "stack",
            "deploy",
            "-c",
            &stack_file.display().to_string(),
            name,
        ]);
        stack
    }

    fn service(&self, name: &str) -> String {
        format!("{}_{name}", self.name)
    }

    /// Keeps every task's log of `service` from now on.
    fn follow(&mut self, service: &str) {
        let path = self.scratch.path().join(format!("{service}.log"));
        let file = std::fs::File::create(&path).unwrap();
        let child = Command::new("docker")
            .args([
                "service",
                "logs",
                "--follow",
                "--raw",
                &self.service(service),
            ])
            .stdout(file.try_clone().unwrap())
            .stderr(file)
            .stdin(Stdio::null())
            .spawn()
            .unwrap();
        self.followers.push((service.to_owned(), child, path));
    }

    /// What the followed tasks of `service` wrote so far.
    fn log(&self, service: &str) -> String {
        self.followers
            .iter()
            .find(|(name, _, _)| name == service)
            .map(|(_, _, path)| std::fs::read_to_string(path).unwrap_or_default())
            .unwrap_or_default()
    }

    /// Waits until `done` holds for the log of `service`.
    async fn wait_for(
        &self,
        service: &str,
        what: &str,
        timeout: Duration,
        done: impl Fn(&str) -> bool,
    ) {
        let deadline = Instant::now() + timeout;
        while !done(&self.log(service)) {
            assert!(
                Instant::now() < deadline,
                "{service}: {what} did not happen within {timeout:?}\n{}\n{}",
                self.log(service),
                docker_ok(&["stack", "ps", "--no-trunc", &self.name])
            );
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }

    /// `docker service scale` of several services at once.
    fn scale(&self, replicas: &[(&str, usize)]) {
        let mut args = vec![
            "service".to_owned(),
            "scale".to_owned(),
            "--detach".to_owned(),
        ];
        args.extend(
            replicas
                .iter()
                .map(|(service, n)| format!("{}={n}", self.service(service))),
        );
        docker_ok(&args.iter().map(String::as_str).collect::<Vec<_>>());
    }

    /// A running container of `service`.
    fn container(&self, service: &str) -> String {
        docker_ok(&[
            "ps",
            "-q",
            "--filter",
            &format!(
                "label=com.docker.swarm.service.name={}",
                self.service(service)
            ),
        ])
        .split_whitespace()
        .next()
        .unwrap_or_default()
        .to_owned()
    }
}

impl Drop for Stack {
    #[expect(
        clippy::disallowed_methods,
        reason = "drop is synchronous; it polls the engine until the stack's containers are gone"
    )]
    fn drop(&mut self) {
        for (_, child, _) in &mut self.followers {
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = Command::new("docker")
            .args(["stack", "rm", &self.name])
            .output();
        // The stack's containers and network go in the background; wait for them.
        for _ in 0..120 {
            let left = Command::new("docker")
                .args([
                    "ps",
                    "-aq",
                    "--filter",
                    &format!("label=com.docker.stack.namespace={}", self.name),
                ])
                .output()
                .map(|o| !o.stdout.is_empty())
                .unwrap_or(false);
            if !left {
                break;
            }
            std::thread::sleep(Duration::from_millis(500));
        }
        if self.made_swarm {
            let _ = Command::new("docker")
                .args(["swarm", "leave", "--force"])
                .output();
            // The bridge `swarm init` made for the node's containers stays otherwise.
            let _ = Command::new("docker")
                .args(["network", "rm", "docker_gwbridge"])
                .output();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_as_a_swarm_stack_scales_loadgens_and_collectors_during_a_run() {
    if skip_without_docker() {
        return;
    }
    const DEVICES: u64 = 10;
    const SECONDS: u64 = 60;
    let run_id = format!("swarm-{}", std::process::id());
    let settings = [
        ("IMAGE", "iotload:latest".to_owned()),
        ("MOSQUITTO_IMAGE", "iotload-test/mosquitto:latest".into()),
        ("REDIS_IMAGE", "iotload-test/redis:latest".into()),
        ("LOADGENS", "2".into()),
        ("WAIT_FOR", "4".into()),
        ("DEVICES", DEVICES.to_string()),
        ("RATE", RATE.to_string()),
        ("DURATION", format!("{SECONDS}s")),
        ("RUN_ID", run_id.clone()),
    ];
    let started = Instant::now();
    let mut stack = Stack::deploy(&format!("iotload-swarm-{}", std::process::id()), &settings);
    stack.follow("loadgen");
    stack.follow("collector");
    let listening = |n: usize| move |log: &str| log.matches("collector: listening on").count() >= n;
    // Swarm starts services in no order: a component that found no Redis yet exits 2 and
    // is started again (restart_policy on-failure).
    stack
        .wait_for(
            "collector",
            "2 collectors listening",
            Duration::from_secs(120),
            listening(2),
        )
        .await;
    stack
        .wait_for("loadgen", "sending", Duration::from_secs(120), |log| {
            log.contains("· sent")
        })
        .await;
    eprintln!(
        "stack sending after {:.1} s",
        started.elapsed().as_secs_f64()
    );

    // One more loadgen and collector during the run: the loadgen reserves the next block
    // of devices, the collector claims its topics.
    stack.scale(&[("loadgen", 3), ("collector", 3)]);
    stack
        .wait_for(
            "collector",
            "a 3rd collector listening",
            Duration::from_secs(90),
            listening(3),
        )
        .await;
    tokio::time::sleep(Duration::from_secs(10)).await;
    // And down again: the removed loadgen and collector stop on SIGTERM, drain, flush
    // and print their summaries.
    stack.scale(&[("loadgen", 2), ("collector", 2)]);
    stack
        .wait_for(
            "loadgen",
            "3 loadgen summaries",
            Duration::from_secs(SECONDS + 120),
            |log| printed_counts(log, "sent").len() >= 3,
        )
        .await;
    stack.scale(&[("collector", 0)]);
    stack
        .wait_for(
            "collector",
            "3 collector summaries",
            Duration::from_secs(90),
            |log| printed_counts(log, "received").len() >= 3,
        )
        .await;

    let echo = stack.container("echo-ipaas");
    let csv = docker_ok(&[
        "exec",
        &echo,
        "iotload",
        "results",
        "export",
        &run_id,
        "--csv",
        "--store",
        "redis://redis:6379",
    ]);
    let per_topic = totals_from_csv(&csv);
    let (loadgens, collectors) = (stack.log("loadgen"), stack.log("collector"));
    let printed_sent = printed_counts(&loadgens, "sent");
    let printed_received = printed_counts(&collectors, "received");
    let sent: u64 = per_topic.values().map(|t| t.sent).sum();
    let received: u64 = per_topic.values().map(|t| t.received).sum();
    // The store holds what the summaries printed.
    assert_eq!(
        printed_sent.iter().sum::<u64>(),
        sent,
        "{printed_sent:?}\n{loadgens}"
    );
    assert_eq!(
        printed_received.iter().sum::<u64>(),
        received,
        "{printed_received:?}\n{collectors}"
    );
    // Three loadgens' topics, each measured by a collector; every message measured or
    // counted lost; a loadgen that ran throughout sent its whole schedule (Swarm picks
    // which replica a scale-down removes: the new one or an original).
    assert_eq!(per_topic.len() as u64, 3 * DEVICES, "{per_topic:?}");
    for (name, t) in &per_topic {
        assert!(t.received > 0, "topic {name} was never measured: {t:?}");
        assert!(t.received - t.duplicates <= t.sent, "topic {name}: {t:?}");
    }
    let whole = per_topic
        .values()
        .filter(|t| t.sent == RATE * SECONDS)
        .count() as u64;
    assert!(whole >= DEVICES, "{per_topic:?}");
    eprintln!(
        "swarm stack: loadgens printed sent {printed_sent:?}, collectors received {printed_received:?}; store: {} topics, sent {sent}, received {received}, lost {} ({:.1} s in all)",
        per_topic.len(),
        sent.saturating_sub(received),
        started.elapsed().as_secs_f64()
    );
}
