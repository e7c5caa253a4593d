//! A fresh Kafka-protocol broker per test. [`KafkaBroker`] hides how the
//! broker runs: today it is a private `tansu` process (a Kafka-compatible
//! broker written in Rust, installed with `cargo install`) bound to an
//! ephemeral loopback port with in-memory storage; a container backend can be
//! added later without changing the public API.
//!
//! tansu facts this module relies on (checked with tansu 0.6.0 built with the
//! `dynostore` feature): `tansu broker --listener-url tcp://HOST:PORT
//! --advertised-listener-url tcp://HOST:PORT --storage-engine memory://tansu/`
//! serves the Kafka protocol with nothing stored on disk; it prints "ready in"
//! once it listens and "Address already in use" when its port was taken;
//! `--authentication` makes it require SASL (PLAIN accepts any password;
//! SCRAM users can only be added by an authenticated client); it creates no
//! topic on first use; `--cert`/`--key` are accepted but TLS is not served.

use std::ffi::OsString;
use std::path::PathBuf;
use std::time::Duration;

use crate::fsutil::find_program;
use crate::process::{Launch, ServerProcess, ServerSpec};
use crate::{TestkitError, is_ci, try_free_port};

/// The broker program.
const TANSU: &str = "tansu";
/// The command that installs it (about 20 minutes on two cores).
pub const TANSU_INSTALL: &str = "cargo install tansu --locked --features dynostore";
/// What tansu prints once it accepts connections.
const READY_LINE: &str = "ready in";

/// How the test's broker should be set up. The default needs no credentials.
#[derive(Debug, Default, Clone)]
pub struct KafkaOptions {
    /// Require SASL authentication from every client (`--authentication`).
    pub authentication: bool,
}

/// A Kafka-protocol broker process (or, later, container) owned by one test;
/// killed on drop.
#[derive(Debug)]
pub struct KafkaBroker {
    backend: Backend,
}

/// The ways a broker can be run. Only a local process today.
#[derive(Debug)]
enum Backend {
    Process(ServerProcess),
}

impl KafkaBroker {
    /// Starts a broker without authentication and waits until it listens.
    pub async fn start() -> Result<Self, TestkitError> {
        Self::start_with(KafkaOptions::default()).await
    }

    /// Starts a broker set up as `opts` says and waits until it listens.
    pub async fn start_with(opts: KafkaOptions) -> Result<Self, TestkitError> {
        let program = tansu_program()?;
        let dir = tempfile::Builder::new()
            .prefix("iotload-testkit-kafka-")
            .tempdir()?;
        let spec = ServerSpec {
            name: TANSU,
            program,
            dir,
            log_file: "tansu.log",
            logged_ready: |log| log.contains(READY_LINE),
            probe: Some(|port| Box::pin(accepts(port))),
            not_running: "the Kafka broker is not running",
        };
        let process = ServerProcess::start(spec, |_dir| {
            let port = try_free_port()?;
            let url = format!("tcp://127.0.0.1:{port}");
            let mut args: Vec<OsString> = vec![
                "broker".into(),
                "--listener-url".into(),
                url.clone().into(),
                "--advertised-listener-url".into(),
                url.into(),
                "--storage-engine".into(),
                "memory://tansu/".into(),
            ];
            if opts.authentication {
                args.push("--authentication".into());
            }
            Ok(Launch {
                ports: vec![port],
                args,
            })
        })
        .await?;
        Ok(Self {
            backend: Backend::Process(process),
        })
    }

    /// Starts a broker when tansu is installed. When it is not: with `CI=true`
    /// this panics (CI never skips silently); otherwise it warns and returns
    /// `None`, so the caller can print "skipped" and return.
    ///
    /// # Panics
    ///
    /// When tansu is missing and `CI=true`, or when it is installed but does
    /// not start.
    pub async fn require(opts: KafkaOptions) -> Option<Self> {
        if !tansu_available() {
            return None;
        }
        match Self::start_with(opts).await {
            Ok(broker) => Some(broker),
            Err(err) => panic!("tansu does not start: {err}"),
        }
    }

    /// The broker as `kafka://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("kafka://127.0.0.1:{}", self.port())
    }

    /// The broker's port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        match &self.backend {
            Backend::Process(process) => process.port(),
        }
    }

    /// The broker's log so far, for assertion messages.
    pub fn log(&self) -> String {
        match &self.backend {
            Backend::Process(process) => process.log(),
        }
    }
}

/// Whether tansu can be run here. When it cannot: with `CI=true` this panics
/// with the install command; otherwise it warns and returns `false`.
///
/// # Panics
///
/// When tansu is missing and `CI=true`.
pub fn tansu_available() -> bool {
    match tansu_program() {
        Ok(_) => true,
        Err(err) if is_ci() => panic!("{err} (CI=true, so this test may not be skipped)"),
        Err(err) => {
            tracing::warn!("skipped: {err}");
            eprintln!("skipped: {err}");
            false
        }
    }
}

/// tansu on `PATH`, or where `cargo install` puts it (`$CARGO_HOME/bin`,
/// `~/.cargo/bin`), which a test's `PATH` often lacks.
fn tansu_program() -> Result<PathBuf, TestkitError> {
    let hint = format!("install it with `{TANSU_INSTALL}` (about 20 minutes)");
    find_program(TANSU, &hint).or_else(|err| {
        let cargo_bins = [
            std::env::var_os("CARGO_HOME").map(|h| PathBuf::from(h).join("bin")),
            std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cargo").join("bin")),
        ];
        cargo_bins
            .into_iter()
            .flatten()
            .map(|dir| dir.join(TANSU))
            .find(|candidate| candidate.is_file())
            .ok_or(err)
    })
}

/// Whether something accepts TCP connections on 127.0.0.1:`port` within
/// 500 ms.
async fn accepts(port: u16) -> bool {
    matches!(
        tokio::time::timeout(
            Duration::from_millis(500),
            tokio::net::TcpStream::connect(("127.0.0.1", port)),
        )
        .await,
        Ok(Ok(_))
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn starts_listens_and_stops_on_drop() {
        let Some(broker) = KafkaBroker::require(KafkaOptions::default()).await else {
            return;
        };
        let port = broker.port();
        assert_eq!(broker.url(), format!("kafka://127.0.0.1:{port}"));
        assert!(accepts(port).await);
        assert!(broker.log().contains(READY_LINE), "{}", broker.log());
        drop(broker);
        let mut closed = false;
        for _ in 0..50 {
            if !accepts(port).await {
                closed = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(closed, "the broker must stop when dropped");
    }
}
