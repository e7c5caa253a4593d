//! A fresh Redis server per test. [`RedisServer`] hides how the server runs:
//! today it is a private `redis-server` process (Debian's package) bound to
//! an ephemeral loopback port, with persistence off and its working
//! directory in a temporary directory; a container backend can be added as
//! another [`Backend`] variant without changing the public API.
//!
//! Redis facts this module relies on (checked with Debian 12's 7.0): every
//! configuration directive can be given on the command line as `--name
//! value`; `--save ""` turns RDB snapshots off while `--appendonly yes` keeps
//! every write across a restart; the server logs "Ready to
//! accept connections" once it listens, and "Address already in use" when
//! its port was taken.

use std::path::PathBuf;
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use tempfile::TempDir;
use tokio::process::{Child, Command};

use crate::fsutil::{LOG_TAIL_LINES, find_program, read_lossy, send_signal, tail};
use crate::{TestkitError, try_free_port};

/// The server program.
const REDIS_SERVER: &str = "redis-server";
/// Environment variable naming the machine's shared Redis server.
pub const REDIS_URL_ENV: &str = "IOTLOAD_TEST_REDIS_URL";

/// The shared Redis server used when [`REDIS_URL_ENV`] is unset.
pub const DEFAULT_REDIS_URL: &str = "redis://127.0.0.1:6379/0";

/// How to get it on Debian and Ubuntu.
const INSTALL_HINT: &str = "install it with `apt-get install redis-server`";
/// How long a server may take to accept connections.
const READY_TIMEOUT: Duration = Duration::from_secs(10);
/// How often a start is retried when another process grabbed the chosen port.
const PORT_ATTEMPTS: usize = 3;
/// What redis-server logs once it accepts connections.
const READY_LINE: &str = "Ready to accept connections";

/// The machine's shared Redis server: address from env
/// `IOTLOAD_TEST_REDIS_URL`, default "redis://127.0.0.1:6379/0".
pub fn machine_redis_url() -> String {
    std::env::var(REDIS_URL_ENV)
        .ok()
        .filter(|url| !url.trim().is_empty())
        .unwrap_or_else(|| DEFAULT_REDIS_URL.to_owned())
}

/// How the test's Redis server should be set up. The default needs no
/// password.
#[derive(Debug, Default, Clone)]
pub struct RedisOptions {
    /// When set, clients must authenticate with this password
    /// (`requirepass`).
    pub password: Option<String>,
}

/// A Redis server process (or, later, container) owned by one test; killed
/// on drop.
#[derive(Debug)]
pub struct RedisServer {
    backend: Backend,
}

/// The ways a server can be run. Only a local process today.
#[derive(Debug)]
enum Backend {
    Process(ProcessRedis),
}

impl RedisServer {
    /// Starts a server without a password and waits until it answers.
    pub async fn start() -> Result<Self, TestkitError> {
        Self::start_with(RedisOptions::default()).await
    }

    /// Starts a server set up as `opts` says and waits until it answers.
    pub async fn start_with(opts: RedisOptions) -> Result<Self, TestkitError> {
        let backend = Backend::Process(ProcessRedis::start(opts).await?);
        Ok(Self { backend })
    }

    /// The server as `redis://127.0.0.1:PORT/0`, with `:PASSWORD@` when it
    /// requires a password.
    pub fn url(&self) -> String {
        match &self.backend {
            Backend::Process(server) => match &server.password {
                Some(password) => format!("redis://:{password}@127.0.0.1:{}/0", server.port),
                None => format!("redis://127.0.0.1:{}/0", server.port),
            },
        }
    }

    /// The server's port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        match &self.backend {
            Backend::Process(server) => server.port,
        }
    }

    /// The server's process id; `None` while it is stopped (or when a
    /// backend has no local process).
    pub fn pid(&self) -> Option<u32> {
        match &self.backend {
            Backend::Process(server) => server.pid(),
        }
    }

    /// Freezes the server (SIGSTOP): connections stay open but nothing is
    /// answered until [`RedisServer::resume`].
    pub fn pause(&self) -> Result<(), TestkitError> {
        match &self.backend {
            Backend::Process(server) => server.pause(),
        }
    }

    /// Lets a paused server run again (SIGCONT).
    pub fn resume(&self) -> Result<(), TestkitError> {
        match &self.backend {
            Backend::Process(server) => server.resume(),
        }
    }

    /// Kills the server and waits for it to exit. Does nothing when it is
    /// already stopped.
    pub async fn stop(&mut self) -> Result<(), TestkitError> {
        match &mut self.backend {
            Backend::Process(server) => server.stop().await,
        }
    }

    /// Stops the server (if running) and starts it again on the same port
    /// with the same settings, waiting until it answers. Data is not kept
    /// (no persistence), and clients must reconnect.
    pub async fn restart(&mut self) -> Result<(), TestkitError> {
        match &mut self.backend {
            Backend::Process(server) => server.restart().await,
        }
    }

    /// The server's log so far (all runs), for assertion messages.
    pub fn log(&self) -> String {
        match &self.backend {
            Backend::Process(server) => read_lossy(&server.log_path()),
        }
    }
}

/// A `redis-server` child process with its private directory.
#[derive(Debug)]
struct ProcessRedis {
    program: PathBuf,
    password: Option<String>,
    port: u16,
    child: Option<Child>,
    paused: AtomicBool,
    /// The server's working directory and log; removed on drop.
    dir: TempDir,
}

impl ProcessRedis {
    /// Starts redis-server, retrying on a fresh port when the chosen one was
    /// taken in the meantime.
    async fn start(opts: RedisOptions) -> Result<Self, TestkitError> {
        let program = find_program(REDIS_SERVER, INSTALL_HINT)?;
        let dir = tempfile::Builder::new()
            .prefix("iotload-testkit-redis-")
            .tempdir()?;
        let mut server = Self {
            program,
            password: opts.password,
            port: 0,
            child: None,
            paused: AtomicBool::new(false),
            dir,
        };
        let mut attempt = 1;
        loop {
            server.port = try_free_port()?;
            match server.run().await {
                Err(err @ TestkitError::NotReady { .. })
                    if attempt < PORT_ATTEMPTS && server.lost_port_race() =>
                {
                    tracing::debug!(%err, attempt, "redis-server lost its port; retrying");
                    server.stop().await?;
                    attempt += 1;
                }
                Err(err) => return Err(err),
                Ok(()) => return Ok(server),
            }
        }
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("redis.log")
    }

    /// Whether the last run died because its port was already in use.
    fn lost_port_race(&mut self) -> bool {
        let exited = self
            .child
            .as_mut()
            .is_none_or(|child| matches!(child.try_wait(), Ok(Some(_))));
        exited && read_lossy(&self.log_path()).contains("Address already in use")
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
            .arg("--port")
            .arg(self.port.to_string())
            .arg("--bind")
            .arg("127.0.0.1")
            .arg("--save")
            .arg("")
            // Every acknowledged write survives `stop` (a kill) and `restart`, as on a
            // production server with an append-only file: outage tests rely on it.
            .arg("--appendonly")
            .arg("yes")
            .arg("--appendfsync")
            .arg("always")
            .arg("--daemonize")
            .arg("no")
            .arg("--dir")
            .arg(self.dir.path());
        if let Some(password) = &self.password {
            command.arg("--requirepass").arg(password);
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
        tracing::debug!(pid = child.id(), port = self.port, "spawned redis-server");
        self.child = Some(child);
        self.paused.store(false, Ordering::SeqCst);
        self.wait_ready(log_start).await
    }

    /// Waits, with a growing pause between checks, until this run (whose log
    /// starts at byte `log_start`) has logged that it accepts connections and
    /// answers a `PING`; fails when the process exits or [`READY_TIMEOUT`]
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
                return Err(self.not_ready(format!("redis-server (exited: {status})"), started));
            }
            if self.logged_ready_since(log_start) && ping(self.port).await {
                return Ok(());
            }
            if started.elapsed() >= READY_TIMEOUT {
                return Err(self.not_ready("redis-server".to_owned(), started));
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

    fn pid(&self) -> Option<u32> {
        self.child.as_ref().and_then(Child::id)
    }

    fn running_pid(&self) -> Result<u32, TestkitError> {
        self.pid().ok_or_else(|| {
            TestkitError::Io(std::io::Error::other("the Redis server is not running"))
        })
    }

    fn pause(&self) -> Result<(), TestkitError> {
        send_signal(self.running_pid()?, "STOP")?;
        self.paused.store(true, Ordering::SeqCst);
        Ok(())
    }

    fn resume(&self) -> Result<(), TestkitError> {
        send_signal(self.running_pid()?, "CONT")?;
        self.paused.store(false, Ordering::SeqCst);
        Ok(())
    }

    async fn stop(&mut self) -> Result<(), TestkitError> {
        let Some(mut child) = self.child.take() else {
            return Ok(());
        };
        if self.paused.swap(false, Ordering::SeqCst)
            && let Some(pid) = child.id()
        {
            let _ = send_signal(pid, "CONT");
        }
        // Fails only when the process has already been reaped.
        let _ = child.start_kill();
        let status = child.wait().await?;
        tracing::debug!(%status, port = self.port, "redis-server stopped");
        Ok(())
    }

    async fn restart(&mut self) -> Result<(), TestkitError> {
        self.stop().await?;
        let mut log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())?;
        std::io::Write::write_all(
            &mut log,
            b"--- iotload-testkit: restarting redis-server ---\n",
        )?;
        self.run().await
    }
}

impl Drop for ProcessRedis {
    fn drop(&mut self) {
        if let Some(child) = self.child.as_mut() {
            if self.paused.load(Ordering::SeqCst)
                && let Some(pid) = child.id()
            {
                let _ = send_signal(pid, "CONT");
            }
            // `kill_on_drop` would do the same; being explicit keeps the
            // intent visible. The runtime reaps the process in the background.
            let _ = child.start_kill();
        }
    }
}

/// Whether a Redis server on 127.0.0.1:`port` answers an inline `PING`
/// within 500 ms. `+PONG` and an authentication error (`-NOAUTH`) both count:
/// the server is up either way.
async fn ping(port: u16) -> bool {
    let exchange = async {
        let stream = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
        let request = b"PING\r\n";
        let mut written = 0;
        while written < request.len() {
            stream.writable().await?;
            match stream.try_write(&request[written..]) {
                Ok(n) => written += n,
                Err(err) if err.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(err) => return Err(err),
            }
        }
        let mut reply = [0_u8; 64];
        loop {
            stream.readable().await?;
            match stream.try_read(&mut reply) {
                Ok(0) => return Ok(false),
                Ok(n) => {
                    return Ok(
                        reply[..n].starts_with(b"+PONG") || reply[..n].starts_with(b"-NOAUTH")
                    );
                }
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
    async fn starts_answers_restarts_and_stops() {
        let mut server = RedisServer::start().await.unwrap();
        let port = server.port();
        assert_eq!(server.url(), format!("redis://127.0.0.1:{port}/0"));
        assert!(ping(port).await);
        server.restart().await.unwrap();
        assert_eq!(server.port(), port);
        assert!(ping(port).await);
        server.pause().unwrap();
        assert!(!ping(port).await, "a paused server must not answer");
        server.resume().unwrap();
        assert!(ping(port).await);
        server.stop().await.unwrap();
        assert!(!ping(port).await);
        assert!(server.pid().is_none());
        assert!(server.log().contains(READY_LINE), "{}", server.log());
    }

    #[test]
    fn machine_url_is_a_redis_url() {
        assert!(machine_redis_url().starts_with("redis"));
    }

    #[tokio::test]
    async fn password_goes_into_the_url() {
        let server = RedisServer::start_with(RedisOptions {
            password: Some("s3cret".into()),
        })
        .await
        .unwrap();
        assert_eq!(
            server.url(),
            format!("redis://:s3cret@127.0.0.1:{}/0", server.port())
        );
        assert!(ping(server.port()).await);
    }
}
