//! The Compose demo for real (issue #20): `compose/docker-compose.yml` brought up on a
//! Docker engine with 3 loadgens, 3 collectors, the echo, Redis, Mosquitto, the plotter and
//! Prometheus, from the images `scripts/docker-images --iotload` builds (no registry).
//! Prometheus must scrape every replica while the loadgens run; afterwards the demo's
//! Redis must hold every topic with sent = received, and the plotter must write the HTML
//! report. Everything the test created is removed (`docker-compose down -v`), also when it
//! fails.
//!
//! Needs `docker-compose`, an engine (`DOCKER_HOST`, see `scripts/docker-engine`) and the
//! images; without them the test says so in one line and returns, except in CI.

#![allow(clippy::unwrap_used)]

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

const LOADGENS: usize = 3;
const DEVICES: u64 = 20;
const RATE: u64 = 5;
const SECONDS: u64 = 30;
const IMAGES: [&str; 4] = [
    "iotload:latest",
    "iotload-test/mosquitto:latest",
    "iotload-test/redis:latest",
    "iotload-test/prometheus:latest",
];

/// A Compose project of this test; `down -v` on drop.
struct Demo {
    project: String,
    file: PathBuf,
    env: Vec<(String, String)>,
}

impl Demo {
    fn compose(&self, args: &[&str]) -> Output {
        Command::new("docker-compose")
            .arg("-f")
            .arg(&self.file)
            .args(["-p", &self.project])
            .args(args)
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdin(Stdio::null())
            .output()
            .unwrap()
    }

    /// `docker run --rm` of the iotload image on the demo's network.
    fn iotload(&self, mounts: &[(&Path, &str)], args: &[&str]) -> Output {
        let mut cmd = Command::new("docker");
        cmd.args([
            "run",
            "--rm",
            "--network",
            &format!("{}_default", self.project),
        ]);
        for (host, target) in mounts {
            cmd.arg("-v").arg(format!("{}:{target}", host.display()));
        }
        cmd.arg("iotload:latest").args(args).stdin(Stdio::null());
        cmd.output().unwrap()
    }

    /// The containers of a service and their states (`running`, `exited` …) and exit codes.
    fn states(&self, service: &str) -> Vec<(String, i64)> {
        let ids = self.compose(&["ps", "-q", service]);
        String::from_utf8_lossy(&ids.stdout)
            .split_whitespace()
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_compose_demo_measures_every_message_of_three_loadgens_and_prometheus_scrapes_every_replica()
 {
    if let Err(why) = docker_ready() {
        assert!(
            !common::in_ci(),
            "{why} (CI=true: the demo may not be skipped)"
        );
        eprintln!("skipped: {why}");
        return;
    }
    let repo = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let plotter_port = iotload_testkit::free_port();
    let prometheus_port = iotload_testkit::free_port();
    let run_id = format!("demo-{}", std::process::id());
    let env: Vec<(String, String)> = [
        ("IMAGE", "iotload:latest".to_owned()),
        ("MOSQUITTO_IMAGE", "iotload-test/mosquitto:latest".into()),
        ("REDIS_IMAGE", "iotload-test/redis:latest".into()),
        ("PROMETHEUS_IMAGE", "iotload-test/prometheus:latest".into()),
        ("LOADGENS", LOADGENS.to_string()),
        ("WAIT_FOR", (2 * LOADGENS).to_string()),
        ("DEVICES", DEVICES.to_string()),
        ("RATE", RATE.to_string()),
        ("DURATION", format!("{SECONDS}s")),
        ("RUN_ID", run_id.clone()),
        ("PLOTTER_PORT", format!("127.0.0.1:{plotter_port}")),
        ("PROMETHEUS_PORT", format!("127.0.0.1:{prometheus_port}")),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    let demo = Demo {
        project: format!("iotload-demo-{}", std::process::id()),
        file: repo.join("compose/docker-compose.yml"),
        env,
    };
    let scale = LOADGENS.to_string();
    let started = Instant::now();
    let up = demo.compose(&[
        "up",
        "-d",
        "--no-build",
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
    assert!(
        up.status.success(),
        "docker-compose up failed: {}",
        String::from_utf8_lossy(&up.stderr)
    );
    eprintln!("demo up in {:.1} s", started.elapsed().as_secs_f64());

    // While the loadgens run, Prometheus must find and scrape every replica: 3 loadgens,
    // 3 collectors and the echo (job iotload-components) and the plotter.
    let prometheus = format!("127.0.0.1:{prometheus_port}");
    let mut seen: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let deadline = Instant::now() + Duration::from_secs(SECONDS + 90);
    loop {
        for (job, urls) in targets_up(&prometheus).await {
            seen.entry(job).or_default().extend(urls);
        }
        let loadgens = demo.states("loadgen");
        let done = loadgens.len() == LOADGENS && loadgens.iter().all(|(s, _)| s == "exited");
        if done {
            assert!(
                loadgens.iter().all(|(_, code)| *code == 0),
                "a loadgen failed: {loadgens:?}\n{}",
                demo.logs()
            );
            break;
        }
        assert!(
            Instant::now() < deadline,
            "loadgens still running after {} s: {loadgens:?}\n{}",
            SECONDS + 90,
            demo.logs()
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    eprintln!(
        "loadgens done after {:.1} s",
        started.elapsed().as_secs_f64()
    );
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

    // Collectors drain and flush on SIGTERM (stop_grace_period).
    let stop = demo.compose(&["stop", "-t", "30", "collector", "echo-ipaas"]);
    assert!(
        stop.status.success(),
        "{}",
        String::from_utf8_lossy(&stop.stderr)
    );

    // The demo's store: every topic with sent = received.
    let export = demo.iotload(
        &[],
        &[
            "results",
            "export",
            &run_id,
            "--csv",
            "--store",
            "redis://redis:6379",
        ],
    );
    let csv = String::from_utf8_lossy(&export.stdout);
    assert!(
        export.status.success(),
        "{}",
        String::from_utf8_lossy(&export.stderr)
    );
    let mut lines = csv.lines();
    let header: Vec<&str> = lines.next().unwrap().split(',').collect();
    let column = |name: &str| header.iter().position(|h| *h == name).unwrap();
    let (topic, sent, received) = (column("topic"), column("sent"), column("received"));
    let mut per_topic: BTreeMap<String, (u64, u64)> = BTreeMap::new();
    for line in lines {
        let cells: Vec<&str> = line.split(',').collect();
        let entry = per_topic.entry(cells[topic].to_owned()).or_default();
        entry.0 += cells[sent].parse::<u64>().unwrap_or(0);
        entry.1 += cells[received].parse::<u64>().unwrap_or(0);
    }
    let topics = LOADGENS as u64 * DEVICES;
    assert_eq!(per_topic.len() as u64, topics, "{per_topic:?}");
    for (name, (s, r)) in &per_topic {
        assert_eq!(s, r, "topic {name}: sent {s}, received {r}");
        assert_eq!(*s, RATE * SECONDS, "topic {name}");
    }
    let total: u64 = per_topic.values().map(|(_, r)| r).sum();
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
            &run_id,
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
    assert!(html.contains(&run_id), "the report names the run");
}
