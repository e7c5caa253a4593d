//! A fresh search engine node per test: one Elasticsearch node in one JVM, from the
//! Maven Central jars that `scripts/jvm-servers elasticsearch` builds into the cache
//! (see [`crate::jvm`]): Elasticsearch 7.10.2, the last Apache 2.0 release, with its
//! Netty 4 HTTP module, started by our own main class
//! (`testcontainers/jvm/elasticsearch/src/main/java/io/iotload/testkit/search/SearchNode.java`).
//! Its data lives in the test's private temporary folder; the JVM is killed on drop,
//! and ends by itself when the test process does.
//!
//! The node forms a single-node cluster on 127.0.0.1, answers HTTP on a free port and
//! prints `search-node ready: ENGINE VERSION URL` once `GET /_cluster/health` has
//! answered over HTTP with the cluster formed. With [`SearchNodeOptions::basic_auth`],
//! every HTTP request must carry those credentials (HTTP 401 with Elasticsearch's
//! `security_exception` body otherwise): the node's own plugin enforces it through the
//! server's REST handler wrapper, as Elasticsearch's security module does, since the
//! Apache-licensed 7.10.2 jars have no security module.

use std::ffi::OsString;
use std::path::Path;
use std::time::{Duration, Instant};

use crate::jvm::{self, JvmJars};
use crate::process::{Launch, ServerProcess, ServerSpec, accepts};
use crate::{TestkitError, try_free_port};

/// The Elasticsearch version the cache's POM names
/// (`testcontainers/jvm/elasticsearch/pom.xml`).
pub const ELASTICSEARCH_VERSION: &str = "7.10.2";

/// The cache folder's name for the node's jars.
const JARS: &str = "elasticsearch";
/// The node's main class.
const MAIN_CLASS: &str = "io.iotload.testkit.search.SearchNode";
/// What the node prints once its HTTP port answers.
const READY_LINE: &str = "search-node ready:";
/// How long the JVM may take to start on a loaded two-core machine.
const READY_TIMEOUT: Duration = Duration::from_secs(90);

/// How the test's node is set up. The default needs no credentials.
#[derive(Debug, Default, Clone)]
pub struct SearchNodeOptions {
    /// When set, every HTTP request must carry these basic credentials (user,
    /// password).
    pub basic_auth: Option<(String, String)>,
}

/// A search engine node owned by one test; killed on drop.
#[derive(Debug)]
pub struct SearchNode {
    process: ServerProcess,
    engine: String,
    version: String,
    started_in: Duration,
}

impl SearchNode {
    /// Starts a node without credentials and waits until its HTTP port answers.
    pub async fn start() -> Result<Self, TestkitError> {
        Self::start_with(SearchNodeOptions::default()).await
    }

    /// Starts a node set up as `options` says and waits until its HTTP port answers.
    pub async fn start_with(options: SearchNodeOptions) -> Result<Self, TestkitError> {
        let started = Instant::now();
        let jars = jvm::jars(JARS)?;
        let dir = tempfile::Builder::new()
            .prefix("iotload-testkit-search-")
            .tempdir()?;
        let spec = ServerSpec {
            name: "search-node",
            program: jars.java.clone(),
            dir,
            log_file: "search-node.log",
            logged_ready: |log| log.contains(READY_LINE),
            probe: Some(|port| Box::pin(accepts(port))),
            not_running: "the search node is not running",
            ready_timeout: READY_TIMEOUT,
        };
        let mut attempt = 0u32;
        let process = ServerProcess::start(spec, |dir| {
            attempt += 1;
            launch(dir, &jars, &options, attempt)
        })
        .await?;
        let (engine, version) = ready_line_parts(&process.log()).unwrap_or_default();
        Ok(Self {
            process,
            engine,
            version,
            started_in: started.elapsed(),
        })
    }

    /// Starts a node without credentials when its jars and Java are here. When they
    /// are not: with `CI=true` this panics (CI never skips silently); otherwise it
    /// warns and returns `None`, so the caller can return early.
    ///
    /// # Panics
    ///
    /// When the jars are missing and `CI=true`, or when they are here but the node
    /// does not start.
    pub async fn require() -> Option<Self> {
        Self::require_with(SearchNodeOptions::default()).await
    }

    /// [`SearchNode::require`] with options.
    ///
    /// # Panics
    ///
    /// As [`SearchNode::require`].
    pub async fn require_with(options: SearchNodeOptions) -> Option<Self> {
        if !search_available() {
            return None;
        }
        match Self::start_with(options).await {
            Ok(node) => Some(node),
            Err(err) => panic!("the search node does not start: {err}"),
        }
    }

    /// The HTTP API, `http://127.0.0.1:PORT` (no credentials in it).
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port())
    }

    /// The HTTP port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.process.port()
    }

    /// The engine the node runs, as it announced itself: `elasticsearch`.
    pub fn engine(&self) -> &str {
        &self.engine
    }

    /// The engine's version, as the running node reported it, e.g. `7.10.2`.
    pub fn version(&self) -> &str {
        &self.version
    }

    /// How long the start took, until the HTTP port answered.
    pub fn started_in(&self) -> Duration {
        self.started_in
    }

    /// The JVM's process id while it runs (for memory figures).
    pub fn pid(&self) -> Option<u32> {
        self.process.pid()
    }

    /// The node's log so far, for assertion messages.
    pub fn log(&self) -> String {
        self.process.log()
    }
}

/// The port and the command line of one start attempt: a fresh home folder, so an
/// attempt that lost its port leaves nothing to the next.
fn launch(
    dir: &Path,
    jars: &JvmJars,
    options: &SearchNodeOptions,
    attempt: u32,
) -> Result<Launch, TestkitError> {
    let port = try_free_port()?;
    let home = dir.join(format!("home-{attempt}"));
    let mut args: Vec<OsString> = jvm::SMALL_JVM.iter().map(OsString::from).collect();
    args.extend([
        "-cp".into(),
        jars.classpath.clone(),
        MAIN_CLASS.into(),
        "--home".into(),
        home.into_os_string(),
        "--http-port".into(),
        port.to_string().into(),
        // The node ends with the test process, even when that one is killed.
        "--parent-pid".into(),
        std::process::id().to_string().into(),
    ]);
    if let Some((user, password)) = &options.basic_auth {
        args.extend([
            "--user".into(),
            user.into(),
            "--password".into(),
            password.into(),
        ]);
    }
    Ok(Launch {
        ports: vec![port],
        args,
    })
}

/// `(engine, version)` from the ready line `search-node ready: ENGINE VERSION URL …`.
fn ready_line_parts(log: &str) -> Option<(String, String)> {
    let line = log.lines().rev().find(|l| l.starts_with(READY_LINE))?;
    let mut words = line[READY_LINE.len()..].split_whitespace();
    Some((words.next()?.to_owned(), words.next()?.to_owned()))
}

/// Whether the node's jars and Java are here. When they are not: with `CI=true` this
/// panics with the command that resolves them; otherwise it warns and returns `false`.
///
/// # Panics
///
/// When the jars are missing and `CI=true`.
pub fn search_available() -> bool {
    jvm::available(JARS)
}

#[cfg(test)]
mod tests {
    use tokio::io::AsyncReadExt;

    use super::*;

    #[test]
    fn the_ready_line_names_engine_and_version() {
        let log = "[t] INFO started\nsearch-node ready: elasticsearch 7.10.2 \
                   http://127.0.0.1:9200 (started in 3000 ms)\n";
        assert_eq!(
            ready_line_parts(log),
            Some(("elasticsearch".into(), "7.10.2".into()))
        );
        assert_eq!(ready_line_parts("starting\n"), None);
    }

    #[tokio::test]
    async fn starts_announces_its_version_and_stops_on_drop() {
        let Some(node) = SearchNode::require().await else {
            return;
        };
        let port = node.port();
        assert_eq!(node.url(), format!("http://127.0.0.1:{port}"));
        assert_eq!(
            (node.engine(), node.version()),
            ("elasticsearch", ELASTICSEARCH_VERSION),
            "{}",
            node.log()
        );
        // An idle connection to the node ends when its process does.
        let mut idle = tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .expect("the node accepts connections");
        let pid = node.pid().unwrap_or_default();
        drop(node);
        let mut byte = [0u8; 1];
        let ended = tokio::time::timeout(Duration::from_secs(30), idle.read(&mut byte)).await;
        assert!(
            matches!(ended, Ok(Ok(0) | Err(_))),
            "the node (pid {pid}) must stop when dropped: {ended:?}"
        );
        // (Not "the port no longer accepts": with tests in parallel, another server may
        // already have been given the same ephemeral port.)
    }
}
