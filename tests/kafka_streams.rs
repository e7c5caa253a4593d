//! Kafka Streams as a real iPaaS: the example in `examples/kafka-streams-ipaas` (its jar and
//! runtime dependencies in the JVM cache, from `scripts/jvm-servers kafka-streams-ipaas`)
//! between `iotload run --external-ipaas` and a private Apache Kafka broker. Every request
//! must come back as an action carrying its stamp, counted exactly through the JSON summary;
//! the echo baseline runs on the same broker.

#![cfg(feature = "kafka")]

mod common;

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use common::*;
use iotload_testkit::KafkaBroker;
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, BufReader, Lines};
use tokio::process::{Child, ChildStdout, Command};

/// The example's folder in the JVM cache, as `scripts/jvm-servers` names it.
const JARS: &str = "kafka-streams-ipaas";
/// Its main class.
const MAIN_CLASS: &str = "io.iotload.examples.kstreams.KafkaStreamsIpaas";
/// What it prints on standard output once Kafka Streams is RUNNING.
const READY: &str = "kafka-streams-ipaas: ready";
/// How long a JVM may take to start and join its group on a loaded two-core machine.
const READY_TIMEOUT: Duration = Duration::from_secs(120);
/// 20 devices × 20 msg/s × 3 s.
const MESSAGES: u64 = 1200;

/// The example's `lib/` folder, when it holds the example's own jar. When it does not: with
/// `CI=true` this panics with the command that builds it; otherwise the test is skipped.
fn example_jars() -> Option<PathBuf> {
    let lib = iotload_testkit::jvm_cache_dir().join(JARS).join("lib");
    let built = std::fs::read_dir(&lib).is_ok_and(|entries| {
        entries.flatten().any(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            name.starts_with("kafka-streams-ipaas-") && name.ends_with(".jar")
        })
    });
    if built {
        return Some(lib);
    }
    let message = format!(
        "the Kafka Streams example is not built in {}: run `scripts/jvm-servers kafka-streams-ipaas`",
        lib.display()
    );
    assert!(
        !in_ci(),
        "{message} (CI=true, so this test may not be skipped)"
    );
    eprintln!("skipped: {message}");
    None
}

/// `$JAVA_HOME/bin/java` when `JAVA_HOME` is set, else `java` from `PATH`.
fn java() -> PathBuf {
    std::env::var_os("JAVA_HOME")
        .filter(|home| !home.is_empty())
        .map(|home| Path::new(&home).join("bin").join("java"))
        .filter(|java| java.is_file())
        .unwrap_or_else(|| PathBuf::from("java"))
}

/// The Kafka topic the transport maps an iotload topic to (`/` becomes `.`).
fn kafka_topic(topic: &str) -> String {
    topic.replace('/', ".")
}

/// The example running as a child process; killed on drop.
struct StreamsIpaas {
    child: Child,
    stdout: Lines<BufReader<ChildStdout>>,
    seen: Vec<String>,
    scratch: Scratch,
}

impl StreamsIpaas {
    /// Starts the example between `requests` and `actions` (iotload topics) on `broker` and
    /// waits for its ready line.
    async fn start(
        lib: &Path,
        broker: &KafkaBroker,
        requests: &str,
        actions: &str,
        extra: &[&str],
    ) -> Self {
        let scratch = Scratch::new();
        let stderr = std::fs::File::create(scratch.path("stderr.log")).expect("stderr log");
        let mut classpath = lib.as_os_str().to_owned();
        classpath.push("/*");
        let application_id = format!("iotload-test-{}", kafka_topic(requests));
        let mut child = Command::new(java())
            .args(["-Xms64m", "-Xmx256m", "-XX:+UseSerialGC", "-cp"])
            .arg(classpath)
            .arg(MAIN_CLASS)
            .args([
                "--bootstrap-servers",
                &format!("127.0.0.1:{}", broker.port()),
            ])
            .args(["--request-topic", &kafka_topic(requests)])
            .args(["--action-topic", &kafka_topic(actions)])
            .args(["--application-id", &application_id])
            .args([
                "--config",
                &format!("state.dir={}", scratch.path("state").display()),
            ])
            .args(extra)
            .env_remove("JAVA_TOOL_OPTIONS")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(stderr)
            .kill_on_drop(true)
            .spawn()
            .expect("java starts");
        let stdout = BufReader::new(child.stdout.take().expect("stdout piped")).lines();
        let mut app = Self {
            child,
            stdout,
            seen: Vec::new(),
            scratch,
        };
        let ready = tokio::time::timeout(READY_TIMEOUT, app.read_until(READY)).await;
        assert!(
            matches!(ready, Ok(true)),
            "the Kafka Streams iPaaS did not print `{READY}` within {READY_TIMEOUT:?}: {}",
            app.output()
        );
        app
    }

    /// Reads standard output until a line contains `needle`; false when it ends first.
    async fn read_until(&mut self, needle: &str) -> bool {
        while let Ok(Some(line)) = self.stdout.next_line().await {
            let hit = line.contains(needle);
            self.seen.push(line);
            if hit {
                return true;
            }
        }
        false
    }

    /// What it printed so far, for assertion messages.
    fn output(&self) -> String {
        let stderr = std::fs::read_to_string(self.scratch.path("stderr.log")).unwrap_or_default();
        format!("stdout:\n{}\nstderr:\n{stderr}", self.seen.join("\n"))
    }

    /// Stops it with SIGTERM, as a container runtime would, and returns its exit code and
    /// the line it printed on the way out.
    async fn stop(mut self) -> (Option<i32>, String) {
        let pid = self.child.id().expect("the iPaaS runs");
        let status = std::process::Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status()
            .expect("kill runs");
        assert!(status.success());
        let stopped =
            tokio::time::timeout(Duration::from_secs(30), self.read_until("stopped after")).await;
        assert!(
            matches!(stopped, Ok(true)),
            "no `stopped after` line: {}",
            self.output()
        );
        let code = tokio::time::timeout(Duration::from_secs(30), self.child.wait())
            .await
            .expect("the iPaaS exits after SIGTERM")
            .expect("wait works")
            .code();
        (code, self.seen.last().cloned().unwrap_or_default())
    }
}

/// `iotload run` with 20 devices × 20 msg/s × 3 s between `requests` and `actions`: the
/// summary, checked for exact counts (every message sent, received once, none lost).
async fn run_exactly(broker: &KafkaBroker, requests: &str, actions: &str, extra: &[&str]) -> Value {
    let scratch = Scratch::new();
    let json = scratch.json();
    let url = broker.url();
    let mut args = vec![
        "run",
        "--broker",
        &url,
        "--topic",
        requests,
        "--action-topic",
        actions,
        "--devices",
        "20",
        "--rate",
        "20",
        "--duration",
        "3s",
        "--drain-timeout",
        "30s",
        "--store",
        "none",
        "--json",
        &json,
    ];
    args.extend(extra);
    let out = run(&args).await;
    assert_eq!(out.code, 0, "{}\n{}", out.stdout, out.stderr);
    let s = scratch.summary();
    assert_valid_summary(&s);
    assert_eq!(u(&s, "/load/planned"), MESSAGES, "{s:#}");
    assert_eq!(u(&s, "/load/sent"), MESSAGES, "{s:#}");
    assert_eq!(u(&s, "/load/publish_errors"), 0, "{s:#}");
    assert_eq!(u(&s, "/receive/received"), MESSAGES, "{s:#}");
    assert_eq!(u(&s, "/receive/unique"), MESSAGES, "{s:#}");
    assert_eq!(u(&s, "/receive/lost"), 0, "{s:#}");
    assert_eq!(u(&s, "/receive/duplicates"), 0, "{s:#}");
    assert_eq!(
        s.pointer("/receive/undecodable"),
        Some(&serde_json::json!({})),
        "{s:#}"
    );
    assert!(f(&s, "/receive/latency_ms/p50") > 0.0, "{s:#}");
    s
}

#[tokio::test]
async fn kafka_streams_answers_every_request_and_the_echo_baseline_runs_alongside() {
    let Some(lib) = example_jars() else { return };
    let Some(broker) = KafkaBroker::require().await else {
        return;
    };
    let topics = prefix("kstreams");
    let (requests, actions) = (format!("{topics}/requests"), format!("{topics}/actions"));
    let app = StreamsIpaas::start(&lib, &broker, &requests, &actions, &[]).await;

    let s = run_exactly(&broker, &requests, &actions, &["--external-ipaas"]).await;
    assert!(
        s.get("echo").is_none(),
        "no built-in echo with --external-ipaas: {s:#}"
    );

    let (code, last) = app.stop().await;
    assert_eq!(
        last,
        format!("kafka-streams-ipaas: stopped after {MESSAGES} actions")
    );
    // The JVM ends with 128 + SIGTERM once its shutdown hook has closed Kafka Streams.
    assert_eq!(code, Some(143));

    // The same workload through the built-in echo, on topics the application does not read.
    let baseline = prefix("baseline");
    let s = run_exactly(
        &broker,
        &format!("{baseline}/requests"),
        &format!("{baseline}/actions"),
        &[],
    )
    .await;
    assert_eq!(u(&s, "/echo/published"), MESSAGES, "{s:#}");
}

#[tokio::test]
async fn custom_iso8601_stamp_fields_and_the_header_stamp_cross_kafka_streams() {
    let Some(lib) = example_jars() else { return };
    let Some(broker) = KafkaBroker::require().await else {
        return;
    };
    let fields = "deviceId,seq,intended,lastUpdated";
    let topics = prefix("kstreamsiso");
    let (requests, actions) = (format!("{topics}/requests"), format!("{topics}/actions"));
    let app = StreamsIpaas::start(
        &lib,
        &broker,
        &requests,
        &actions,
        &["--stamp-fields", fields],
    )
    .await;

    // Times as ISO-8601 strings under the application's own field names: copied as they are.
    run_exactly(
        &broker,
        &requests,
        &actions,
        &[
            "--external-ipaas",
            "--stamp-fields",
            fields,
            "--time-format",
            "iso8601",
        ],
    )
    .await;
    // The stamp in record headers and an opaque body: the action's body has no stamp, and
    // the headers Kafka Streams forwards carry it. The first run's actions on the same topic
    // are older than this run's subscription, so they are not counted.
    run_exactly(
        &broker,
        &requests,
        &actions,
        &[
            "--external-ipaas",
            "--stamp",
            "header",
            "--payload",
            "opaque body",
        ],
    )
    .await;
    let (_, last) = app.stop().await;
    assert_eq!(
        last,
        format!(
            "kafka-streams-ipaas: stopped after {} actions",
            2 * MESSAGES
        )
    );
}
