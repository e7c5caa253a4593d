//! A fresh Apache Kafka broker per test: one JVM in KRaft mode (broker and
//! controller in one node), from the Maven Central jars that
//! `scripts/jvm-servers kafka` puts in the cache (see [`crate::jvm`]). The log
//! directory lives in the test's private temporary folder; the JVM is killed on
//! drop.
//!
//! Every broker has two client listeners on loopback: PLAINTEXT ([`KafkaBroker::url`])
//! and SASL_PLAINTEXT ([`KafkaBroker::sasl_port`]) where user
//! [`KAFKA_USER`] logs in with [`KAFKA_PASSWORD`] by PLAIN or SCRAM-SHA-512
//! (the SCRAM credential is written by `kafka-storage format --add-scram`).
//! Topics are created on first use (`auto.create.topics.enable`, Kafka's
//! default), with one partition.
//!
//! With the Docker backend ([`crate::Backend::Docker`]) the broker runs in a container
//! of image `iotload-test/kafka` (the same jars, baked in by `scripts/docker-images`),
//! listening inside on the published host ports themselves so that the addresses it
//! advertises (`127.0.0.1:PORT`) work from the host.
//!
//! Apache Kafka facts this module relies on (4.4.0): `kafka.tools.StorageTool
//! format --standalone` must run once on the log directory before
//! `kafka.Kafka FILE`; the broker logs "Kafka Server started" once it serves;
//! a taken port ends it with "Address already in use".

use std::ffi::OsString;
use std::fmt::Write as _;
use std::path::Path;
use std::time::Duration;

use crate::container::{ContainerSpec, ServerContainer};
use crate::fsutil::write_private;
use crate::jvm::{self, JvmJars};
use crate::process::{Launch, ServerProcess, ServerSpec, accepts};
use crate::{TestkitError, try_free_port};

/// The Kafka version the cache's POM names (`testcontainers/jvm/kafka/pom.xml`).
pub const KAFKA_VERSION: &str = "4.4.0";
/// The user the SASL listener knows.
pub const KAFKA_USER: &str = "iotload";
/// [`KAFKA_USER`]'s password, for PLAIN and SCRAM-SHA-512.
pub const KAFKA_PASSWORD: &str = "iotload-secret";

/// The cache folder's name for Kafka's jars.
const JARS: &str = "kafka";
/// What the broker logs once it serves.
const READY_LINE: &str = "Kafka Server started";
/// A fixed cluster id (22 characters of base64url: 16 bytes); every broker
/// has its own log directory, so they never meet.
const CLUSTER_ID: &str = "aW90bG9hZC10ZXN0a2l0AA";
/// How long a JVM may take to start on a loaded two-core machine.
const READY_TIMEOUT: Duration = Duration::from_secs(90);
/// Log4j 2: warnings, plus the server's start line, to standard output.
const LOG4J2: &str = "\
status = warn
appender.out.type = Console
appender.out.name = OUT
appender.out.layout.type = PatternLayout
appender.out.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = WARN
rootLogger.appenderRef.out.ref = OUT
logger.server.name = kafka.server.KafkaRaftServer
logger.server.level = INFO
";

/// An Apache Kafka broker process or container owned by one test; killed on drop.
#[derive(Debug)]
pub struct KafkaBroker {
    backend: Backend,
}

/// The ways a broker can be run (env `IOTLOAD_TESTKIT_BACKEND`).
#[derive(Debug)]
#[expect(clippy::large_enum_variant, reason = "one value per test server")]
enum Backend {
    Process(ServerProcess),
    Container(ServerContainer),
}

impl KafkaBroker {
    /// Starts a broker and waits until it serves every listener.
    pub async fn start() -> Result<Self, TestkitError> {
        if crate::container::backend()? == crate::Backend::Docker {
            let container = start_container().await?;
            return Ok(Self {
                backend: Backend::Container(container),
            });
        }
        let jars = jvm::jars(JARS)?;
        let dir = tempfile::Builder::new()
            .prefix("iotload-testkit-kafka-")
            .tempdir()?;
        write_private(&dir.path().join("log4j2.properties"), LOG4J2.as_bytes())?;
        let spec = ServerSpec {
            name: "kafka",
            program: "sh".into(),
            dir,
            log_file: "kafka.log",
            logged_ready: |log| log.contains(READY_LINE),
            probe: Some(|port| Box::pin(accepts(port))),
            not_running: "the Kafka broker is not running",
            ready_timeout: READY_TIMEOUT,
        };
        let mut attempt = 0u32;
        let process = ServerProcess::start(spec, |dir| {
            attempt += 1;
            launch(dir, &jars, attempt)
        })
        .await?;
        Ok(Self {
            backend: Backend::Process(process),
        })
    }

    /// Starts a broker when Kafka's jars and Java are here. When they are
    /// not: with `CI=true` this panics (CI never skips silently); otherwise it
    /// warns and returns `None`, so the caller can return early.
    ///
    /// # Panics
    ///
    /// When the jars are missing and `CI=true`, or when they are here but the
    /// broker does not start.
    pub async fn require() -> Option<Self> {
        if !kafka_available() {
            return None;
        }
        match Self::start().await {
            Ok(broker) => Some(broker),
            Err(err) => panic!("Apache Kafka does not start: {err}"),
        }
    }

    /// The PLAINTEXT listener as `kafka://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("kafka://127.0.0.1:{}", self.port())
    }

    /// The PLAINTEXT listener's port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.ports()[0]
    }

    fn ports(&self) -> &[u16] {
        match &self.backend {
            Backend::Process(process) => process.ports(),
            Backend::Container(container) => container.ports(),
        }
    }

    /// The SASL_PLAINTEXT listener's port on 127.0.0.1 (user [`KAFKA_USER`]).
    pub fn sasl_port(&self) -> u16 {
        self.ports().get(1).copied().unwrap_or(0)
    }

    /// The broker's process id while it runs (for memory figures).
    pub fn pid(&self) -> Option<u32> {
        match &self.backend {
            Backend::Process(process) => process.pid(),
            Backend::Container(container) => container.pid(),
        }
    }

    /// The broker's log so far, for assertion messages.
    pub fn log(&self) -> String {
        match &self.backend {
            Backend::Process(process) => process.log(),
            Backend::Container(container) => container.log(),
        }
    }
}

/// A broker container (image `iotload-test/kafka`, see its `kafka-start`): PLAINTEXT
/// and SASL_PLAINTEXT listeners on the published ports, advertised as 127.0.0.1.
async fn start_container() -> Result<ServerContainer, TestkitError> {
    ServerContainer::start(ContainerSpec::advertising(
        "kafka",
        "iotload-test/kafka",
        2,
        |ports| {
            vec![
                ("KAFKA_PORT".into(), ports[0].to_string()),
                ("KAFKA_SASL_PORT".into(), ports[1].to_string()),
                ("KAFKA_ADVERTISED_HOST".into(), "127.0.0.1".into()),
                ("KAFKA_USER".into(), KAFKA_USER.into()),
                ("KAFKA_PASSWORD".into(), KAFKA_PASSWORD.into()),
            ]
        },
        |log| log.contains(READY_LINE),
        READY_TIMEOUT,
    ))
    .await
}

/// The ports, the configuration files and the command line of one start
/// attempt: format a fresh log directory, then run the broker in its place.
fn launch(dir: &Path, jars: &JvmJars, attempt: u32) -> Result<Launch, TestkitError> {
    let [plain, sasl, controller] = [try_free_port()?, try_free_port()?, try_free_port()?];
    let data = dir.join(format!("data-{attempt}"));
    let config = dir.join(format!("server-{attempt}.properties"));
    write_private(
        &config,
        server_properties(&data, plain, sasl, controller).as_bytes(),
    )?;
    let log4j = dir.join("log4j2.properties");
    let java = |class: &str, args: &str| -> String {
        let mut line = format!("'{}'", jars.java.display());
        for option in jvm::SMALL_JVM {
            let _ = write!(line, " {option}");
        }
        // RocksDB (Kafka Streams' state, not the broker's) and other native libraries
        // unpack into java.io.tmpdir: in the server's folder they go with it.
        let _ = write!(line, " -Djava.io.tmpdir='{}'", dir.display());
        let _ = write!(
            line,
            " -Dlog4j2.configurationFile='{}' -cp '{}' {class} {args}",
            log4j.display(),
            Path::new(&jars.classpath).display(),
        );
        line
    };
    let scram = format!("SCRAM-SHA-512=[name={KAFKA_USER},password={KAFKA_PASSWORD}]");
    let format_args = format!(
        "format --standalone -t {CLUSTER_ID} -c '{}' --add-scram '{scram}'",
        config.display()
    );
    // `exec` makes the broker the process the kit kills.
    let script = format!(
        "{} && exec {}",
        java("kafka.tools.StorageTool", &format_args),
        java("kafka.Kafka", &format!("'{}'", config.display())),
    );
    let args: Vec<OsString> = vec!["-c".into(), script.into()];
    Ok(Launch {
        ports: vec![plain, sasl, controller],
        args,
    })
}

/// A single-node KRaft configuration: PLAINTEXT for clients and between
/// brokers, SASL_PLAINTEXT (PLAIN and SCRAM-SHA-512) for clients that log in,
/// and the controller listener, all on 127.0.0.1.
fn server_properties(data: &Path, plain: u16, sasl: u16, controller: u16) -> String {
    format!(
        "process.roles=broker,controller
node.id=1
controller.quorum.bootstrap.servers=127.0.0.1:{controller}
listeners=PLAINTEXT://127.0.0.1:{plain},SASL_PLAINTEXT://127.0.0.1:{sasl},CONTROLLER://127.0.0.1:{controller}
advertised.listeners=PLAINTEXT://127.0.0.1:{plain},SASL_PLAINTEXT://127.0.0.1:{sasl}
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,SASL_PLAINTEXT:SASL_PLAINTEXT,CONTROLLER:PLAINTEXT
sasl.enabled.mechanisms=PLAIN,SCRAM-SHA-512
listener.name.sasl_plaintext.plain.sasl.jaas.config=org.apache.kafka.common.security.plain.PlainLoginModule required user_{KAFKA_USER}=\"{KAFKA_PASSWORD}\";
listener.name.sasl_plaintext.scram-sha-512.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required;
log.dirs={data}
num.partitions=1
auto.create.topics.enable=true
offsets.topic.replication.factor=1
offsets.topic.num.partitions=1
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
group.initial.rebalance.delay.ms=0
",
        data = data.display(),
    )
}

/// Whether Kafka's jars and Java are here. When they are not: with `CI=true`
/// this panics with the command that resolves them; otherwise it warns and
/// returns `false`.
///
/// # Panics
///
/// When the jars are missing and `CI=true`.
pub fn kafka_available() -> bool {
    jvm::available(JARS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn starts_listens_and_stops_on_drop() {
        let Some(broker) = KafkaBroker::require().await else {
            return;
        };
        let (port, sasl) = (broker.port(), broker.sasl_port());
        assert_eq!(broker.url(), format!("kafka://127.0.0.1:{port}"));
        assert!(accepts(port).await && accepts(sasl).await);
        assert!(broker.log().contains(READY_LINE), "{}", broker.log());
        drop(broker);
        let mut closed = false;
        for _ in 0..100 {
            if !accepts(port).await {
                closed = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(closed, "the broker must stop when dropped");
    }
}
