//! A fresh Apache Pulsar per test: `pulsar standalone` (broker, one bookie and
//! a RocksDB metadata store in one JVM) from the Maven Central jars that
//! `scripts/jvm-servers pulsar` puts in the cache (see [`crate::jvm`]). Its data
//! lives in the test's private temporary folder; the JVM is killed on drop.
//!
//! Pulsar facts this module relies on (4.2.4): the standalone starter is
//! `org.apache.pulsar.PulsarStandaloneStarter --config FILE`; it logs
//! "messaging service is ready" once the broker serves, then creates the
//! `public/default` namespace, which [`PulsarBroker::start`] waits for through
//! the admin REST API; unknown topics are created on first use. With
//! [`PulsarOptions::token_auth`] it requires token (JWT) authentication: the
//! secret key and a token for subject `iotload` (a super-user, which the broker
//! also uses for itself) are made with Pulsar's own `TokensCliUtils`.
//!
//! With the Docker backend ([`crate::Backend::Docker`]) the standalone runs in a
//! container of image `iotload-test/pulsar` (the same jars, baked in by
//! `scripts/docker-images`), listening inside on the published host ports so that the
//! address it advertises (`127.0.0.1:PORT`) works from the host; the token's secret key
//! is made on the host and mounted.

use std::ffi::OsString;
use std::path::Path;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::container::{ContainerSpec, ServerContainer};
use crate::fsutil::write_private;
use crate::jvm::{self, JvmJars};
use crate::process::{Launch, ServerProcess, ServerSpec, accepts};
use crate::{TestkitError, try_free_port};

/// The Pulsar version the cache's POM names (`testcontainers/jvm/pulsar/pom.xml`).
pub const PULSAR_VERSION: &str = "4.2.4";

/// The cache folder's name for Pulsar's jars.
const JARS: &str = "pulsar";
/// What the broker logs once it serves.
const READY_LINE: &str = "messaging service is ready";
/// How long the JVM may take to start on a loaded two-core machine.
const READY_TIMEOUT: Duration = Duration::from_secs(120);
/// Where a container finds the token's secret key (mounted read-only).
const CONTAINER_KEY_FILE: &str = "/run/iotload/secret.key";
/// JVM options: the heap `pulsar standalone` suggests for small machines, one
/// GC thread, and the module openings its metrics want on Java 17.
const JVM_OPTIONS: [&str; 8] = [
    "-Xms256m",
    "-Xmx1g",
    "-XX:MaxDirectMemorySize=512m",
    "-XX:+UseSerialGC",
    "-XX:+ExitOnOutOfMemoryError",
    "-Djava.awt.headless=true",
    "--add-opens=java.base/jdk.internal.platform=ALL-UNNAMED",
    "--add-opens=java.management/sun.management=ALL-UNNAMED",
];
/// Log4j 2: warnings, plus the broker's start lines, to standard output.
const LOG4J2: &str = "\
status = warn
appender.out.type = Console
appender.out.name = OUT
appender.out.layout.type = PatternLayout
appender.out.layout.pattern = [%d] %p %m (%c{1})%n
rootLogger.level = WARN
rootLogger.appenderRef.out.ref = OUT
logger.service.name = org.apache.pulsar.broker.PulsarService
logger.service.level = INFO
";

/// How the test's Pulsar should be set up. The default needs no credentials.
#[derive(Debug, Default, Clone)]
pub struct PulsarOptions {
    /// Require token (JWT) authentication from every client; the valid token is
    /// [`PulsarBroker::token`].
    pub token_auth: bool,
}

/// An Apache Pulsar standalone process or container owned by one test; killed on drop.
#[derive(Debug)]
pub struct PulsarBroker {
    backend: Backend,
    started_in: Duration,
    token: Option<String>,
    /// Holds the secret key file a container mounts.
    _key_dir: Option<tempfile::TempDir>,
}

/// The ways a broker can be run (env `IOTLOAD_TESTKIT_BACKEND`).
#[derive(Debug)]
#[expect(clippy::large_enum_variant, reason = "one value per test server")]
enum Backend {
    Process(ServerProcess),
    Container(ServerContainer),
}

impl PulsarBroker {
    /// Starts Pulsar without authentication and waits until it serves and has
    /// its default namespace.
    pub async fn start() -> Result<Self, TestkitError> {
        Self::start_with(PulsarOptions::default()).await
    }

    /// Starts Pulsar set up as `opts` says and waits until it serves and has
    /// its default namespace.
    pub async fn start_with(opts: PulsarOptions) -> Result<Self, TestkitError> {
        let started = Instant::now();
        let jars = jvm::jars(JARS)?;
        if crate::container::backend()? == crate::Backend::Docker {
            return Self::start_container(opts, &jars, started).await;
        }
        let dir = tempfile::Builder::new()
            .prefix("iotload-testkit-pulsar-")
            .tempdir()?;
        write_private(&dir.path().join("log4j2.properties"), LOG4J2.as_bytes())?;
        let auth = match opts.token_auth {
            true => Some(make_token(&jars, dir.path()).await?),
            false => None,
        };
        let spec = ServerSpec {
            name: "pulsar",
            program: "sh".into(),
            dir,
            log_file: "pulsar.log",
            logged_ready: |log| log.contains(READY_LINE),
            probe: Some(|port| Box::pin(accepts(port))),
            not_running: "Pulsar is not running",
            ready_timeout: READY_TIMEOUT,
        };
        let mut attempt = 0u32;
        let process = ServerProcess::start(spec, |dir| {
            attempt += 1;
            launch(dir, &jars, attempt, auth.as_ref())
        })
        .await?;
        let mut broker = Self {
            backend: Backend::Process(process),
            started_in: Duration::ZERO,
            token: auth.map(|auth| auth.token),
            _key_dir: None,
        };
        broker.wait_for_namespace(started).await?;
        broker.started_in = started.elapsed();
        Ok(broker)
    }

    /// A container of image `iotload-test/pulsar` (see its `pulsar-start`), listening
    /// inside on the published host ports themselves, since Pulsar tells clients the
    /// address to use; the token's secret key is made here and mounted.
    async fn start_container(
        opts: PulsarOptions,
        jars: &JvmJars,
        started: Instant,
    ) -> Result<Self, TestkitError> {
        let key_dir = tempfile::Builder::new()
            .prefix("iotload-testkit-pulsar-")
            .tempdir()?;
        let auth = match opts.token_auth {
            true => Some(make_token(jars, key_dir.path()).await?),
            false => None,
        };
        if let Some(auth) = &auth {
            // The broker in the container runs as another user than this test may.
            std::fs::set_permissions(
                &auth.key_file,
                std::os::unix::fs::PermissionsExt::from_mode(0o644),
            )?;
        }
        let mut spec = ContainerSpec::advertising(
            "pulsar",
            "iotload-test/pulsar",
            2,
            |ports| {
                vec![
                    ("PULSAR_PORT".into(), ports[0].to_string()),
                    ("PULSAR_WEB_PORT".into(), ports[1].to_string()),
                    ("PULSAR_ADVERTISED_HOST".into(), "127.0.0.1".into()),
                ]
            },
            |log| log.contains(READY_LINE),
            READY_TIMEOUT,
        );
        let token = auth.as_ref().map(|auth| auth.token.clone());
        if let Some(auth) = &auth {
            spec.mounts
                .push((auth.key_file.clone(), CONTAINER_KEY_FILE.into()));
            spec.extra_env = vec![
                ("PULSAR_TOKEN_KEY".into(), CONTAINER_KEY_FILE.into()),
                ("PULSAR_TOKEN".into(), auth.token.clone()),
            ];
        }
        let container = ServerContainer::start(spec).await?;
        let mut broker = Self {
            backend: Backend::Container(container),
            started_in: Duration::ZERO,
            token,
            _key_dir: Some(key_dir),
        };
        broker.wait_for_namespace(started).await?;
        broker.started_in = started.elapsed();
        Ok(broker)
    }

    /// Starts Pulsar when its jars and Java are here. When they are not: with
    /// `CI=true` this panics (CI never skips silently); otherwise it warns and
    /// returns `None`, so the caller can return early.
    ///
    /// # Panics
    ///
    /// When the jars are missing and `CI=true`, or when they are here but
    /// Pulsar does not start.
    pub async fn require() -> Option<Self> {
        if !pulsar_available() {
            return None;
        }
        match Self::start().await {
            Ok(broker) => Some(broker),
            Err(err) => panic!("Apache Pulsar does not start: {err}"),
        }
    }

    /// The binary protocol's address, `pulsar://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("pulsar://127.0.0.1:{}", self.port())
    }

    /// The binary protocol's port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.ports()[0]
    }

    fn ports(&self) -> &[u16] {
        match &self.backend {
            Backend::Process(process) => process.ports(),
            Backend::Container(container) => container.ports(),
        }
    }

    /// The admin REST API, `http://127.0.0.1:PORT`.
    pub fn web_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.web_port())
    }

    /// The token Pulsar accepts, when it requires one ([`PulsarOptions::token_auth`]).
    pub fn token(&self) -> Option<&str> {
        self.token.as_deref()
    }

    /// How long the start took, up to the default namespace.
    pub fn started_in(&self) -> Duration {
        self.started_in
    }

    /// The JVM's process id while it runs (for memory figures).
    pub fn pid(&self) -> Option<u32> {
        match &self.backend {
            Backend::Process(process) => process.pid(),
            Backend::Container(container) => container.pid(),
        }
    }

    /// The log so far, for assertion messages.
    pub fn log(&self) -> String {
        match &self.backend {
            Backend::Process(process) => process.log(),
            Backend::Container(container) => container.log(),
        }
    }

    fn web_port(&self) -> u16 {
        self.ports().get(1).copied().unwrap_or(0)
    }

    /// Polls the admin API until the standalone has created `public/default`.
    async fn wait_for_namespace(&self, started: Instant) -> Result<(), TestkitError> {
        let mut pause = Duration::from_millis(20);
        loop {
            let body = http_get(self.web_port(), "/admin/v2/namespaces/public", self.token()).await;
            if body.as_deref().is_ok_and(|b| b.contains("public/default")) {
                return Ok(());
            }
            if started.elapsed() >= READY_TIMEOUT {
                return Err(TestkitError::NotReady {
                    what: "pulsar (namespace public/default)".into(),
                    addr: self.web_url(),
                    waited: started.elapsed(),
                    log: crate::fsutil::tail(&self.log(), crate::fsutil::LOG_TAIL_LINES),
                });
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_millis(250));
        }
    }
}

/// The secret key file and a token signed with it.
#[derive(Debug)]
struct TokenAuth {
    key_file: std::path::PathBuf,
    token: String,
}

/// Makes a secret key in `dir` and a token for subject `iotload` with Pulsar's
/// `TokensCliUtils` (two short JVM runs).
async fn make_token(jars: &JvmJars, dir: &Path) -> Result<TokenAuth, TestkitError> {
    let key_file = dir.join("secret.key");
    let key_url = format!("file://{}", key_file.display());
    let tokens = |args: &[&str]| {
        let mut command = tokio::process::Command::new(&jars.java);
        command
            .arg("-cp")
            .arg(&jars.classpath)
            .arg("org.apache.pulsar.utils.auth.tokens.TokensCliUtils")
            .args(args)
            .stdin(std::process::Stdio::null());
        command
    };
    let key_path = key_file.display().to_string();
    let key = tokens(&["create-secret-key", "--output", &key_path])
        .output()
        .await?;
    let token = tokens(&["create", "--secret-key", &key_url, "--subject", "iotload"])
        .output()
        .await?;
    let text = String::from_utf8_lossy(&token.stdout).trim().to_owned();
    if !key.status.success() || !token.status.success() || text.is_empty() {
        return Err(TestkitError::Admin {
            command: "TokensCliUtils create-secret-key / create".into(),
            output: format!(
                "{}{}",
                String::from_utf8_lossy(&key.stderr),
                String::from_utf8_lossy(&token.stderr)
            ),
        });
    }
    Ok(TokenAuth {
        key_file,
        token: text,
    })
}

/// The ports, the configuration file and the command line of one start
/// attempt, all state in a fresh folder of `dir`.
fn launch(
    dir: &Path,
    jars: &JvmJars,
    attempt: u32,
    auth: Option<&TokenAuth>,
) -> Result<Launch, TestkitError> {
    let [broker, web, bookie, zk] = [
        try_free_port()?,
        try_free_port()?,
        try_free_port()?,
        try_free_port()?,
    ];
    let data = dir.join(format!("data-{attempt}"));
    std::fs::create_dir_all(&data)?;
    let config = data.join("standalone.conf");
    let mut conf = standalone_conf(broker, web);
    if let Some(auth) = auth {
        conf.push_str(&format!(
            "authenticationEnabled=true
authorizationEnabled=false
authenticationProviders=org.apache.pulsar.broker.authentication.AuthenticationProviderToken
tokenSecretKey=file://{}
superUserRoles=iotload
brokerClientAuthenticationPlugin=org.apache.pulsar.client.impl.auth.AuthenticationToken
brokerClientAuthenticationParameters=token:{}
",
            auth.key_file.display(),
            auth.token
        ));
    }
    write_private(&config, conf.as_bytes())?;
    let mut line = format!("cd '{}' && exec '{}'", data.display(), jars.java.display());
    for option in JVM_OPTIONS {
        line.push(' ');
        line.push_str(option);
    }
    // RocksDB unpacks its native library into java.io.tmpdir and never removes it: in
    // the server's own folder it goes with the folder.
    line.push_str(&format!(" -Djava.io.tmpdir='{}'", dir.display()));
    line.push_str(&format!(
        " -Dlog4j2.configurationFile='{}' -cp '{}' org.apache.pulsar.PulsarStandaloneStarter \
         --config '{}' --no-functions-worker --no-stream-storage --zookeeper-port {zk} \
         --bookkeeper-port {bookie} --bookkeeper-dir '{}' --metadata-dir '{}'",
        dir.join("log4j2.properties").display(),
        Path::new(&jars.classpath).display(),
        config.display(),
        data.join("bookkeeper").display(),
        data.join("metadata").display(),
    ));
    Ok(Launch {
        ports: vec![broker, web],
        args: vec![OsString::from("-c"), line.into()],
    })
}

/// The broker's settings: loopback only, one copy of everything, topics
/// created on first use, no functions, transactions or system topics.
fn standalone_conf(broker: u16, web: u16) -> String {
    format!(
        "clusterName=standalone
advertisedAddress=127.0.0.1
bindAddress=127.0.0.1
brokerServicePort={broker}
webServicePort={web}
managedLedgerDefaultEnsembleSize=1
managedLedgerDefaultWriteQuorum=1
managedLedgerDefaultAckQuorum=1
allowAutoTopicCreation=true
allowAutoTopicCreationType=non-partitioned
functionsWorkerEnabled=false
transactionCoordinatorEnabled=false
brokerDeleteInactiveTopicsEnabled=false
"
    )
}

/// Whether Pulsar's jars and Java are here. When they are not: with `CI=true`
/// this panics with the command that resolves them; otherwise it warns and
/// returns `false`.
///
/// # Panics
///
/// When the jars are missing and `CI=true`.
pub fn pulsar_available() -> bool {
    jvm::available(JARS)
}

/// The answer to `GET path` on 127.0.0.1:`port` (HTTP/1.0, so the server
/// closes the connection after it), with `token` as a bearer token, within 2 s.
async fn http_get(port: u16, path: &str, token: Option<&str>) -> std::io::Result<String> {
    let exchange = async {
        let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
        let auth = token.map_or(String::new(), |t| format!("Authorization: Bearer {t}\r\n"));
        let request = format!("GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n{auth}\r\n");
        stream.write_all(request.as_bytes()).await?;
        let mut answer = Vec::new();
        stream.read_to_end(&mut answer).await?;
        Ok(String::from_utf8_lossy(&answer).into_owned())
    };
    tokio::time::timeout(Duration::from_secs(2), exchange)
        .await
        .unwrap_or_else(|_| Err(std::io::ErrorKind::TimedOut.into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn starts_with_the_default_namespace_and_stops_on_drop() {
        let Some(broker) = PulsarBroker::require().await else {
            return;
        };
        let port = broker.port();
        assert_eq!(broker.url(), format!("pulsar://127.0.0.1:{port}"));
        let namespaces = http_get(broker.web_port(), "/admin/v2/namespaces/public", None).await;
        assert!(
            namespaces
                .as_deref()
                .is_ok_and(|b| b.contains("public/default")),
            "{namespaces:?}"
        );
        drop(broker);
        let mut closed = false;
        for _ in 0..100 {
            if !accepts(port).await {
                closed = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(closed, "Pulsar must stop when dropped");
    }
}
