//! The process machinery shared by the server backends: a [`ServerProcess`]
//! spawns a server program with its output appended to a log file in the
//! server's private temporary directory, waits (with a growing pause) until
//! this run's part of the log has the server's ready line and a readiness
//! probe answers, retries on fresh ports when the server lost the race for
//! its port, and pauses (SIGSTOP), resumes (SIGCONT), stops, restarts on the
//! same ports and kills (on drop) the process.
//!
//! What differs per server is given as a [`ServerSpec`] (program, ready
//! line, probe, names for messages) plus a launch closure that picks the
//! ports and builds the arguments (see [`Launch`]).

use std::ffi::OsString;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use tempfile::TempDir;
use tokio::process::{Child, Command};

use crate::TestkitError;
use crate::fsutil::{LOG_TAIL_LINES, read_lossy, send_signal, tail};

/// How long a native server may take to become ready ([`ServerSpec::ready_timeout`]).
pub(crate) const READY_TIMEOUT: Duration = Duration::from_secs(10);
/// How often a start is retried when another process grabbed the chosen port.
const PORT_ATTEMPTS: usize = 3;
/// The first pause between readiness checks; it doubles up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_millis(10);
/// The longest pause between readiness checks.
const MAX_BACKOFF: Duration = Duration::from_millis(200);
/// What a server logs when its port was taken (compared case-insensitively).
const PORT_IN_USE: &str = "address already in use";

/// Whether something accepts TCP connections on 127.0.0.1:`port` within
/// 500 ms: the readiness probe of most servers.
pub(crate) async fn accepts(port: u16) -> bool {
    let connect = tokio::net::TcpStream::connect(("127.0.0.1", port));
    matches!(
        tokio::time::timeout(Duration::from_millis(500), connect).await,
        Ok(Ok(_stream))
    )
}

/// Whether a server on 127.0.0.1:`port` answers; one call per port and check.
pub(crate) type Probe = fn(u16) -> Pin<Box<dyn Future<Output = bool> + Send>>;

/// What differs between the servers that [`ServerProcess`] runs.
#[derive(Debug)]
pub(crate) struct ServerSpec {
    /// The server's name in messages and logs, e.g. `redis-server`.
    pub(crate) name: &'static str,
    /// The server program (see [`crate::fsutil::find_program`]).
    pub(crate) program: PathBuf,
    /// The server's private directory; holds the log and is removed on drop.
    pub(crate) dir: TempDir,
    /// The log's file name inside `dir`.
    pub(crate) log_file: &'static str,
    /// Whether this run's part of the log says that the server is ready.
    pub(crate) logged_ready: fn(&str) -> bool,
    /// Asked for each port once the log says ready; `None` trusts the log.
    pub(crate) probe: Option<Probe>,
    /// The error message when pausing or resuming a stopped server.
    pub(crate) not_running: &'static str,
    /// How long the server may take to become ready ([`READY_TIMEOUT`] for
    /// native servers; JVM servers need longer on a loaded machine).
    pub(crate) ready_timeout: Duration,
}

/// One start attempt's ports (the first is the main one; all appear in
/// errors and are probed) and the program's arguments for them.
#[derive(Debug)]
pub(crate) struct Launch {
    /// The ports the server listens on, all on 127.0.0.1.
    pub(crate) ports: Vec<u16>,
    /// The program's arguments.
    pub(crate) args: Vec<OsString>,
}

/// A server child process with its private directory; killed on drop.
#[derive(Debug)]
pub(crate) struct ServerProcess {
    spec: ServerSpec,
    launch: Launch,
    child: Option<Child>,
    paused: AtomicBool,
}

impl ServerProcess {
    /// Starts the server with the arguments `launch` builds (it gets the
    /// server's directory) and waits until it is ready; when it lost the race
    /// for a port, `launch` is called again for fresh ports.
    pub(crate) async fn start(
        spec: ServerSpec,
        mut launch: impl FnMut(&Path) -> Result<Launch, TestkitError>,
    ) -> Result<Self, TestkitError> {
        let first = launch(spec.dir.path())?;
        let mut server = Self {
            spec,
            launch: first,
            child: None,
            paused: AtomicBool::new(false),
        };
        let mut attempt = 1;
        loop {
            match server.run().await {
                Err(err @ TestkitError::NotReady { .. })
                    if attempt < PORT_ATTEMPTS && server.lost_port_race() =>
                {
                    tracing::debug!(%err, attempt, "{} lost its port; retrying", server.spec.name);
                    server.stop().await?;
                    attempt += 1;
                    server.launch = launch(server.spec.dir.path())?;
                }
                Err(err) => return Err(err),
                Ok(()) => return Ok(server),
            }
        }
    }

    /// The main port on 127.0.0.1.
    pub(crate) fn port(&self) -> u16 {
        self.launch.ports.first().copied().unwrap_or(0)
    }

    /// Every port of the current launch, the main one first.
    pub(crate) fn ports(&self) -> &[u16] {
        &self.launch.ports
    }

    /// The log file (all runs).
    pub(crate) fn log_path(&self) -> PathBuf {
        self.spec.dir.path().join(self.spec.log_file)
    }

    /// The log so far (all runs).
    pub(crate) fn log(&self) -> String {
        read_lossy(&self.log_path())
    }

    /// The process id; `None` while the server is stopped.
    pub(crate) fn pid(&self) -> Option<u32> {
        self.child.as_ref().and_then(Child::id)
    }

    /// Freezes the server (SIGSTOP).
    pub(crate) fn pause(&self) -> Result<(), TestkitError> {
        send_signal(self.running_pid()?, "STOP")?;
        self.paused.store(true, Ordering::SeqCst);
        Ok(())
    }

    /// Lets a paused server run again (SIGCONT).
    pub(crate) fn resume(&self) -> Result<(), TestkitError> {
        send_signal(self.running_pid()?, "CONT")?;
        self.paused.store(false, Ordering::SeqCst);
        Ok(())
    }

    /// Kills the server (resuming it first when paused) and waits for it to
    /// exit. Does nothing when it is already stopped.
    pub(crate) async fn stop(&mut self) -> Result<(), TestkitError> {
        let Some(mut child) = self.child.take() else {
            return Ok(());
        };
        if self.paused.swap(false, Ordering::SeqCst)
            && let Some(pid) = child.id()
        {
            // SIGKILL ends a stopped process too, but a resumed one dies cleanly
            // even if someone swaps the signal later.
            let _ = send_signal(pid, "CONT");
        }
        // Fails only when the process has already been reaped.
        let _ = child.start_kill();
        let status = child.wait().await?;
        tracing::debug!(%status, ports = ?self.launch.ports, "{} stopped", self.spec.name);
        Ok(())
    }

    /// Stops the server (if running) and starts it again with the same ports
    /// and arguments, waiting until it is ready.
    pub(crate) async fn restart(&mut self) -> Result<(), TestkitError> {
        self.stop().await?;
        let mut log = self.open_log()?;
        let marker = format!("--- iotload-testkit: restarting {} ---\n", self.spec.name);
        std::io::Write::write_all(&mut log, marker.as_bytes())?;
        self.run().await
    }

    fn running_pid(&self) -> Result<u32, TestkitError> {
        self.pid()
            .ok_or_else(|| TestkitError::Io(std::io::Error::other(self.spec.not_running)))
    }

    fn open_log(&self) -> std::io::Result<std::fs::File> {
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
    }

    /// Whether the last run died because its port was already in use.
    fn lost_port_race(&mut self) -> bool {
        let exited = self
            .child
            .as_mut()
            .is_none_or(|child| matches!(child.try_wait(), Ok(Some(_))));
        exited && self.log().to_ascii_lowercase().contains(PORT_IN_USE)
    }

    /// Spawns the process with the current arguments and waits until it is
    /// ready.
    async fn run(&mut self) -> Result<(), TestkitError> {
        let log = self.open_log()?;
        let log_start = log.metadata()?.len();
        let child = Command::new(&self.spec.program)
            .args(&self.launch.args)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .map_err(|source| TestkitError::Spawn {
                program: self.spec.program.display().to_string(),
                source,
            })?;
        tracing::debug!(
            pid = child.id(),
            ports = ?self.launch.ports,
            "spawned {}",
            self.spec.name
        );
        self.child = Some(child);
        self.paused.store(false, Ordering::SeqCst);
        self.wait_ready(log_start).await
    }

    /// Waits, with a growing pause between checks, until this run (whose log
    /// starts at byte `log_start`) has logged that it is ready and every port
    /// answers the probe; fails when the process exits or `ready_timeout`
    /// passes.
    async fn wait_ready(&mut self, log_start: u64) -> Result<(), TestkitError> {
        let started = Instant::now();
        let mut pending: Vec<u16> = match self.spec.probe {
            Some(_) => self.launch.ports.clone(),
            None => Vec::new(),
        };
        let mut logged_ready = false;
        let mut backoff = FIRST_BACKOFF;
        loop {
            let exited = match self.child.as_mut() {
                Some(child) => child.try_wait()?,
                None => None,
            };
            if let Some(status) = exited {
                let what = format!("{} (exited: {status})", self.spec.name);
                return Err(self.not_ready(what, started));
            }
            if !logged_ready {
                logged_ready = (self.spec.logged_ready)(&self.log_since(log_start));
            }
            if logged_ready {
                while let (Some(&port), Some(probe)) = (pending.first(), self.spec.probe) {
                    if !probe(port).await {
                        break;
                    }
                    pending.remove(0);
                }
                if pending.is_empty() {
                    return Ok(());
                }
            }
            if started.elapsed() >= self.spec.ready_timeout {
                return Err(self.not_ready(self.spec.name.to_owned(), started));
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
    }

    /// The log from byte `log_start` on, as (lossy) UTF-8.
    fn log_since(&self, log_start: u64) -> String {
        let log = std::fs::read(self.log_path()).unwrap_or_default();
        let start = usize::try_from(log_start)
            .unwrap_or(usize::MAX)
            .min(log.len());
        String::from_utf8_lossy(&log[start..]).into_owned()
    }

    /// A `NotReady` error naming every port, with the log's tail.
    fn not_ready(&self, what: String, started: Instant) -> TestkitError {
        let addr = self
            .launch
            .ports
            .iter()
            .map(|port| format!("127.0.0.1:{port}"))
            .collect::<Vec<_>>()
            .join(", ");
        TestkitError::NotReady {
            what,
            addr,
            waited: started.elapsed(),
            log: tail(&self.log(), LOG_TAIL_LINES),
        }
    }
}

impl Drop for ServerProcess {
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
