//! A fresh NATS server per test. [`NatsServer`] hides how the server runs:
//! today it is a private `nats-server` process (Debian's package) bound to an
//! ephemeral loopback port, with its JetStream store (when asked for) in a
//! temporary directory; a container backend can be added later without
//! changing the public API.
//!
//! NATS facts this module relies on (checked with Debian 12's 2.9): `-a` and
//! `-p` set the listen address and port, `-js -sd DIR` turns JetStream on
//! with its store in DIR; the server logs "Server is ready" once it listens,
//! and "address already in use" when its port was taken; a client that
//! connects is greeted by an `INFO {...}` line.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use tempfile::TempDir;
use tokio::process::{Child, Command};

use crate::fsutil::{LOG_TAIL_LINES, find_program, read_lossy, tail};
use crate::{TestPki, TestkitError, try_free_port};

/// The server program.
const NATS_SERVER: &str = "nats-server";
/// Environment variable naming the machine's shared NATS server.
pub const NATS_URL_ENV: &str = "IOTLOAD_TEST_NATS_URL";
/// The shared NATS server used when [`NATS_URL_ENV`] is unset.
pub const DEFAULT_NATS_URL: &str = "nats://127.0.0.1:4222";

/// How to get it on Debian and Ubuntu.
const INSTALL_HINT: &str = "install it with `apt-get install nats-server`";
/// How long a server may take to accept connections.
const READY_TIMEOUT: Duration = Duration::from_secs(10);
/// How often a start is retried when another process grabbed the chosen port.
const PORT_ATTEMPTS: usize = 3;
/// What nats-server logs once it accepts connections.
const READY_LINE: &str = "Server is ready";

/// The machine's shared NATS server: address from env
/// `IOTLOAD_TEST_NATS_URL`, default "nats://127.0.0.1:4222".
pub fn machine_nats_url() -> String {
    std::env::var(NATS_URL_ENV)
        .ok()
        .filter(|url| !url.trim().is_empty())
        .unwrap_or_else(|| DEFAULT_NATS_URL.to_owned())
}

/// How the test's NATS server should be set up. The default is core NATS
/// without authentication.
#[derive(Debug, Default, Clone)]
pub struct NatsOptions {
    /// Turn JetStream on (`-js`), storing in the server's temporary directory.
    pub jetstream: bool,
    /// Require TLS with the server certificate of this PKI (`--tls`); the URL
    /// becomes `tls://127.0.0.1:PORT`.
    pub tls: Option<TestPki>,
}

/// A NATS server process (or, later, container) owned by one test; killed on
/// drop.
#[derive(Debug)]
pub struct NatsServer {
    backend: Backend,
}

/// The ways a server can be run. Only a local process today.
#[derive(Debug)]
enum Backend {
    Process(ProcessNats),
}

impl NatsServer {
    /// Starts a core NATS server and waits until it accepts connections.
    pub async fn start() -> Result<Self, TestkitError> {
        Self::start_with(NatsOptions::default()).await
    }

    /// Starts a server set up as `opts` says and waits until it accepts
    /// connections.
    pub async fn start_with(opts: NatsOptions) -> Result<Self, TestkitError> {
        let backend = Backend::Process(ProcessNats::start(opts).await?);
        Ok(Self { backend })
    }

    /// The server as `nats://127.0.0.1:PORT`, or `tls://127.0.0.1:PORT` when it
    /// requires TLS.
    pub fn url(&self) -> String {
        let scheme = match &self.backend {
            Backend::Process(server) if server.opts.tls.is_some() => "tls",
            Backend::Process(_) => "nats",
        };
        format!("{scheme}://127.0.0.1:{}", self.port())
    }

    /// The server's port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        match &self.backend {
            Backend::Process(server) => server.port,
        }
    }

    /// The server's log so far, for assertion messages.
    pub fn log(&self) -> String {
        match &self.backend {
            Backend::Process(server) => read_lossy(&server.log_path()),
        }
    }
}

/// A `nats-server` child process with its private directory.
#[derive(Debug)]
struct ProcessNats {
    program: PathBuf,
    opts: NatsOptions,
    port: u16,
    child: Option<Child>,
    /// The server's log and JetStream store; removed on drop.
    dir: TempDir,
}

impl ProcessNats {
    /// Starts nats-server, retrying on a fresh port when the chosen one was
    /// taken in the meantime.
    async fn start(opts: NatsOptions) -> Result<Self, TestkitError> {
        let program = find_program(NATS_SERVER, INSTALL_HINT)?;
        let dir = tempfile::Builder::new()
            .prefix("iotload-testkit-nats-")
            .tempdir()?;
        let mut server = Self {
            program,
            opts,
            port: 0,
            child: None,
            dir,
        };
        let mut attempt = 1;
        loop {
            server.port = try_free_port()?;
            match server.run().await {
                Err(err @ TestkitError::NotReady { .. })
                    if attempt < PORT_ATTEMPTS && server.lost_port_race() =>
                {
                    tracing::debug!(%err, attempt, "nats-server lost its port; retrying");
                    server.stop().await?;
                    attempt += 1;
                }
                Err(err) => return Err(err),
                Ok(()) => return Ok(server),
            }
        }
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("nats.log")
    }

    /// Whether the last run died because its port was already in use.
    fn lost_port_race(&mut self) -> bool {
        let exited = self
            .child
            .as_mut()
            .is_none_or(|child| matches!(child.try_wait(), Ok(Some(_))));
        exited
            && read_lossy(&self.log_path())
                .to_ascii_lowercase()
                .contains("address already in use")
    }

    /// Spawns the process on the current port and waits until it is ready.
    async fn run(&mut self) -> Result<(), TestkitError> {
        let log_path = self.log_path();
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)?;
        let log_start = log.metadata()?.len();
        let mut command = Command::new(&self.program);
        command
            .arg("-a")
            .arg("127.0.0.1")
            .arg("-p")
            .arg(self.port.to_string());
        if self.opts.jetstream {
            command
                .arg("-js")
                .arg("-sd")
                .arg(self.dir.path().join("jetstream"));
        }
        if let Some(pki) = &self.opts.tls {
            command
                .arg("--tls")
                .arg("--tlscert")
                .arg(pki.server_cert())
                .arg("--tlskey")
                .arg(pki.server_key());
        }
        let child = command
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .map_err(|source| TestkitError::Spawn {
                program: self.program.display().to_string(),
                source,
            })?;
        tracing::debug!(pid = child.id(), port = self.port, "spawned nats-server");
        self.child = Some(child);
        self.wait_ready(log_start).await
    }

    /// Waits, with a growing pause between checks, until this run (whose log
    /// starts at byte `log_start`) has logged that it is ready and greets a
    /// client with `INFO`; fails when the process exits or [`READY_TIMEOUT`]
    /// passes.
    async fn wait_ready(&mut self, log_start: u64) -> Result<(), TestkitError> {
        let started = Instant::now();
        let mut backoff = Duration::from_millis(10);
        loop {
            let exited = match self.child.as_mut() {
                Some(child) => child.try_wait()?,
                None => None,
            };
            if let Some(status) = exited {
                return Err(self.not_ready(format!("nats-server (exited: {status})"), started));
            }
            if self.logged_ready_since(log_start) && greets(self.port).await {
                return Ok(());
            }
            if started.elapsed() >= READY_TIMEOUT {
                return Err(self.not_ready("nats-server".to_owned(), started));
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_millis(200));
        }
    }

    /// Whether the log, from byte `log_start` on, says the server is ready.
    fn logged_ready_since(&self, log_start: u64) -> bool {
        let log = std::fs::read(self.log_path()).unwrap_or_default();
        let start = usize::try_from(log_start)
            .unwrap_or(usize::MAX)
            .min(log.len());
        String::from_utf8_lossy(&log[start..]).contains(READY_LINE)
    }

    /// A `NotReady` error with the log's tail.
    fn not_ready(&self, what: String, started: Instant) -> TestkitError {
        TestkitError::NotReady {
            what,
            addr: format!("127.0.0.1:{}", self.port),
            waited: started.elapsed(),
            log: tail(&read_lossy(&self.log_path()), LOG_TAIL_LINES),
        }
    }

    async fn stop(&mut self) -> Result<(), TestkitError> {
        let Some(mut child) = self.child.take() else {
            return Ok(());
        };
        // Fails only when the process has already been reaped.
        let _ = child.start_kill();
        let status = child.wait().await?;
        tracing::debug!(%status, port = self.port, "nats-server stopped");
        Ok(())
    }
}

impl Drop for ProcessNats {
    fn drop(&mut self) {
        if let Some(child) = self.child.as_mut() {
            // `kill_on_drop` would do the same; being explicit keeps the
            // intent visible. The runtime reaps the process in the background.
            let _ = child.start_kill();
        }
    }
}

/// Whether a NATS server on 127.0.0.1:`port` greets a new connection with
/// `INFO` within 500 ms.
async fn greets(port: u16) -> bool {
    let exchange = async {
        let stream = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
        let mut greeting = [0_u8; 16];
        loop {
            stream.readable().await?;
            match stream.try_read(&mut greeting) {
                Ok(n) => return Ok::<bool, std::io::Error>(greeting[..n].starts_with(b"INFO")),
                Err(err) if err.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(err) => return Err(err),
            }
        }
    };
    matches!(
        tokio::time::timeout(Duration::from_millis(500), exchange).await,
        Ok(Ok(true))
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn starts_greets_and_stops_on_drop() {
        let server = NatsServer::start().await.unwrap();
        let port = server.port();
        assert_eq!(server.url(), format!("nats://127.0.0.1:{port}"));
        assert!(greets(port).await);
        assert!(server.log().contains(READY_LINE), "{}", server.log());
        drop(server);
        let mut closed = false;
        for _ in 0..50 {
            if !greets(port).await {
                closed = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(closed, "the server must stop when dropped");
    }

    #[tokio::test]
    async fn jetstream_server_starts() {
        let server = NatsServer::start_with(NatsOptions {
            jetstream: true,
            ..NatsOptions::default()
        })
        .await
        .unwrap();
        assert!(greets(server.port()).await);
        assert!(server.log().contains("JetStream"), "{}", server.log());
    }

    #[tokio::test]
    async fn tls_server_starts_with_a_tls_url() {
        let pki = TestPki::generate().unwrap();
        let server = NatsServer::start_with(NatsOptions {
            tls: Some(pki),
            ..NatsOptions::default()
        })
        .await
        .unwrap();
        assert_eq!(server.url(), format!("tls://127.0.0.1:{}", server.port()));
    }

    #[test]
    fn machine_url_is_a_nats_url() {
        assert!(machine_nats_url().starts_with("nats"));
    }
}
