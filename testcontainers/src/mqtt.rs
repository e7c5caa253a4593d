//! A fresh MQTT broker per test. [`MqttBroker`] hides how the broker runs:
//! today it is a private `mosquitto` process with a generated configuration
//! in a temporary directory, listening on ephemeral loopback ports; a
//! container backend can be added as another [`Backend`] variant without
//! changing the public API.
//!
//! Mosquitto facts this module relies on (checked with Debian 12's 2.0.11):
//! started as root, mosquitto drops its privileges to the `mosquitto` user
//! unless the configuration says `user root`, and then cannot read the
//! password file in our private (0700) temporary directory, so it exits with
//! status 13. The generated configuration therefore always says `user root`,
//! which mosquitto ignores when it is not started as root. Password files
//! must hold hashed passwords, so they are made with `mosquitto_passwd`
//! (shipped in the same Debian package); all generated files are mode 0600.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use tempfile::TempDir;
use tokio::process::{Child, Command};

use crate::fsutil::{LOG_TAIL_LINES, find_program, read_lossy, send_signal, tail, write_private};
use crate::{TestPki, TestkitError, try_free_port};

/// The broker program.
const MOSQUITTO: &str = "mosquitto";
/// The tool that writes mosquitto password files.
const MOSQUITTO_PASSWD: &str = "mosquitto_passwd";
/// How to get both programs on Debian and Ubuntu.
const INSTALL_HINT: &str = "install it with `apt-get install mosquitto`";
/// How long a broker may take to accept TCP connections.
const READY_TIMEOUT: Duration = Duration::from_secs(10);
/// How often a start is retried when another process grabbed the chosen port.
const PORT_ATTEMPTS: usize = 3;

/// How the test's broker should be set up. The default is an anonymous,
/// plain-TCP broker without a connection limit.
#[derive(Debug, Default, Clone)]
pub struct MqttBrokerOptions {
    /// When non-empty, anonymous clients are refused and only these
    /// `(username, password)` pairs may connect.
    pub users: Vec<(String, String)>,
    /// Adds a TLS listener that presents this PKI's server certificate (see
    /// [`MqttBroker::tls_url`]).
    pub tls: Option<TestPki>,
    /// Requires a client certificate signed by the PKI's CA on the TLS
    /// listener (mutual TLS). Ignored without [`MqttBrokerOptions::tls`].
    pub require_client_cert: bool,
    /// The most clients each listener accepts at once; further connections
    /// are closed by the broker.
    pub max_connections: Option<usize>,
}

/// A broker process (or, later, container) owned by one test; stopped on drop.
#[derive(Debug)]
pub struct MqttBroker {
    backend: Backend,
}

/// The ways a broker can be run. Only a local process today.
#[derive(Debug)]
enum Backend {
    Process(ProcessBroker),
}

impl MqttBroker {
    /// Starts an anonymous, plain-TCP broker and waits until it accepts
    /// connections.
    pub async fn start() -> Result<Self, TestkitError> {
        Self::start_with(MqttBrokerOptions::default()).await
    }

    /// Starts a broker set up as `opts` says and waits until every listener
    /// accepts connections.
    pub async fn start_with(opts: MqttBrokerOptions) -> Result<Self, TestkitError> {
        let backend = Backend::Process(ProcessBroker::start(opts).await?);
        Ok(Self { backend })
    }

    /// The plain-TCP listener, as `mqtt://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("mqtt://127.0.0.1:{}", self.port())
    }

    /// The TLS listener, as `mqtts://127.0.0.1:TLSPORT`, when the broker has
    /// one. Its certificate is also valid for `mqtts://localhost:TLSPORT`.
    pub fn tls_url(&self) -> Option<String> {
        self.tls_port()
            .map(|port| format!("mqtts://127.0.0.1:{port}"))
    }

    /// The plain-TCP listener's port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        match &self.backend {
            Backend::Process(broker) => broker.port,
        }
    }

    /// The TLS listener's port on 127.0.0.1, when the broker has one.
    pub fn tls_port(&self) -> Option<u16> {
        match &self.backend {
            Backend::Process(broker) => broker.tls_port,
        }
    }

    /// The broker's process id; `None` while it is stopped (or when a backend
    /// has no local process).
    pub fn pid(&self) -> Option<u32> {
        match &self.backend {
            Backend::Process(broker) => broker.pid(),
        }
    }

    /// Freezes the broker (SIGSTOP): connections stay open but nothing is
    /// answered until [`MqttBroker::resume`].
    pub fn pause(&self) -> Result<(), TestkitError> {
        match &self.backend {
            Backend::Process(broker) => broker.pause(),
        }
    }

    /// Lets a paused broker run again (SIGCONT).
    pub fn resume(&self) -> Result<(), TestkitError> {
        match &self.backend {
            Backend::Process(broker) => broker.resume(),
        }
    }

    /// Kills the broker and waits for it to exit. Does nothing when it is
    /// already stopped.
    pub async fn stop(&mut self) -> Result<(), TestkitError> {
        match &mut self.backend {
            Backend::Process(broker) => broker.stop().await,
        }
    }

    /// Stops the broker (if running) and starts it again on the same ports
    /// with the same configuration, waiting until it accepts connections.
    /// Sessions and retained messages are not kept (no persistence).
    pub async fn restart(&mut self) -> Result<(), TestkitError> {
        match &mut self.backend {
            Backend::Process(broker) => broker.restart().await,
        }
    }

    /// The broker's log so far (all runs), for assertion messages.
    pub fn log(&self) -> String {
        match &self.backend {
            Backend::Process(broker) => read_lossy(&broker.log_path),
        }
    }
}

/// A `mosquitto` child process with its private directory.
#[derive(Debug)]
struct ProcessBroker {
    program: PathBuf,
    config_path: PathBuf,
    log_path: PathBuf,
    port: u16,
    tls_port: Option<u16>,
    max_connections: Option<usize>,
    child: Option<Child>,
    paused: AtomicBool,
    /// Kept so the certificate files outlive the broker.
    _pki: Option<TestPki>,
    /// Holds the configuration, password file and log; removed on drop.
    _dir: TempDir,
}

impl ProcessBroker {
    /// Writes the configuration and starts mosquitto, retrying on a fresh
    /// port when the chosen one was taken in the meantime.
    async fn start(opts: MqttBrokerOptions) -> Result<Self, TestkitError> {
        let program = find_program(MOSQUITTO, INSTALL_HINT)?;
        let dir = tempfile::Builder::new()
            .prefix("iotload-testkit-mosquitto-")
            .tempdir()?;
        let password_file = if opts.users.is_empty() {
            None
        } else {
            let path = dir.path().join("passwords");
            write_password_file(&path, &opts.users).await?;
            Some(path)
        };
        let mut broker = Self {
            program,
            config_path: dir.path().join("mosquitto.conf"),
            log_path: dir.path().join("mosquitto.log"),
            port: 0,
            tls_port: None,
            max_connections: opts.max_connections,
            child: None,
            paused: AtomicBool::new(false),
            _pki: opts.tls.clone(),
            _dir: dir,
        };
        let mut attempt = 1;
        loop {
            broker.port = try_free_port()?;
            broker.tls_port = match opts.tls {
                Some(_) => Some(loop {
                    let port = try_free_port()?;
                    if port != broker.port {
                        break port;
                    }
                }),
                None => None,
            };
            let config = render_config(
                &opts,
                broker.port,
                broker.tls_port,
                password_file.as_deref(),
            );
            write_private(&broker.config_path, config.as_bytes())?;
            match broker.run().await {
                Err(err @ TestkitError::NotReady { .. })
                    if attempt < PORT_ATTEMPTS && broker.lost_port_race() =>
                {
                    tracing::debug!(%err, attempt, "mosquitto lost its port; retrying");
                    broker.stop().await?;
                    attempt += 1;
                }
                Err(err) => return Err(err),
                Ok(()) => return Ok(broker),
            }
        }
    }

    /// Whether the last run died because its port was already in use.
    fn lost_port_race(&mut self) -> bool {
        let exited = self
            .child
            .as_mut()
            .is_none_or(|child| matches!(child.try_wait(), Ok(Some(_))));
        exited && read_lossy(&self.log_path).contains("Address already in use")
    }

    /// Spawns the process with the current configuration and waits until it
    /// is ready.
    async fn run(&mut self) -> Result<(), TestkitError> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log_path)?;
        let log_start = log.metadata()?.len();
        let child = Command::new(&self.program)
            .arg("-c")
            .arg(&self.config_path)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .map_err(|source| TestkitError::Spawn {
                program: self.program.display().to_string(),
                source,
            })?;
        tracing::debug!(
            pid = child.id(),
            port = self.port,
            tls_port = self.tls_port,
            "spawned mosquitto"
        );
        self.child = Some(child);
        self.paused.store(false, Ordering::SeqCst);
        self.wait_ready(log_start).await
    }

    /// Waits, with a growing pause between checks, until this run (whose log
    /// starts at byte `log_start`) has logged that it is running and every
    /// listener accepts a TCP connection; fails when the process exits or
    /// [`READY_TIMEOUT`] passes.
    ///
    /// With `max_connections` set, the TCP probes are skipped: mosquitto
    /// counts a probe against the limit until it notices the close, which
    /// would make the test's first client be refused. The "running" line is
    /// written only after all listeners are listening, so it suffices.
    async fn wait_ready(&mut self, log_start: u64) -> Result<(), TestkitError> {
        let started = Instant::now();
        let mut pending: Vec<u16> = if self.max_connections.is_some() {
            Vec::new()
        } else {
            std::iter::once(self.port).chain(self.tls_port).collect()
        };
        let mut running = false;
        let mut backoff = Duration::from_millis(10);
        loop {
            let exited = match self.child.as_mut() {
                Some(child) => child.try_wait()?,
                None => None,
            };
            if let Some(status) = exited {
                return Err(self.not_ready(format!("mosquitto (exited: {status})"), started));
            }
            if !running {
                running = self.logged_running_since(log_start);
            }
            if running {
                while let Some(&port) = pending.first() {
                    let connect = tokio::net::TcpStream::connect(("127.0.0.1", port));
                    match tokio::time::timeout(Duration::from_millis(500), connect).await {
                        Ok(Ok(_stream)) => {
                            pending.remove(0);
                        }
                        _ => break,
                    }
                }
                if pending.is_empty() {
                    return Ok(());
                }
            }
            if started.elapsed() >= READY_TIMEOUT {
                return Err(self.not_ready("mosquitto".to_owned(), started));
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_millis(200));
        }
    }

    /// Whether the log, from byte `log_start` on, has mosquitto's
    /// "mosquitto version X running" line.
    fn logged_running_since(&self, log_start: u64) -> bool {
        let log = std::fs::read(&self.log_path).unwrap_or_default();
        let start = usize::try_from(log_start)
            .unwrap_or(usize::MAX)
            .min(log.len());
        String::from_utf8_lossy(&log[start..])
            .lines()
            .any(|line| line.contains("mosquitto version") && line.trim_end().ends_with(" running"))
    }

    /// A `NotReady` error with the log's tail.
    fn not_ready(&self, what: String, started: Instant) -> TestkitError {
        let ports = std::iter::once(self.port).chain(self.tls_port);
        let addr = ports
            .map(|port| format!("127.0.0.1:{port}"))
            .collect::<Vec<_>>()
            .join(", ");
        TestkitError::NotReady {
            what,
            addr,
            waited: started.elapsed(),
            log: tail(&read_lossy(&self.log_path), LOG_TAIL_LINES),
        }
    }

    fn pid(&self) -> Option<u32> {
        self.child.as_ref().and_then(Child::id)
    }

    fn running_pid(&self) -> Result<u32, TestkitError> {
        self.pid().ok_or_else(|| {
            TestkitError::Io(std::io::Error::other("the MQTT broker is not running"))
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
            // SIGKILL ends a stopped process too, but a resumed one dies cleanly
            // even if someone swaps the signal later.
            let _ = send_signal(pid, "CONT");
        }
        // Fails only when the process has already been reaped.
        let _ = child.start_kill();
        let status = child.wait().await?;
        tracing::debug!(%status, port = self.port, "mosquitto stopped");
        Ok(())
    }

    async fn restart(&mut self) -> Result<(), TestkitError> {
        self.stop().await?;
        let mut log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log_path)?;
        std::io::Write::write_all(&mut log, b"--- iotload-testkit: restarting mosquitto ---\n")?;
        self.run().await
    }
}

impl Drop for ProcessBroker {
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

/// Creates a mosquitto password file (hashed passwords) with
/// `mosquitto_passwd -b`, mode 0600.
async fn write_password_file(path: &Path, users: &[(String, String)]) -> Result<(), TestkitError> {
    let tool = find_program(MOSQUITTO_PASSWD, INSTALL_HINT)?;
    for (index, (user, password)) in users.iter().enumerate() {
        let mut command = Command::new(&tool);
        command.arg("-b");
        if index == 0 {
            command.arg("-c");
        }
        let output = command
            .arg(path)
            .arg(user)
            .arg(password)
            .stdin(Stdio::null())
            .output()
            .await
            .map_err(|source| TestkitError::Spawn {
                program: tool.display().to_string(),
                source,
            })?;
        if !output.status.success() {
            return Err(TestkitError::Io(std::io::Error::other(format!(
                "`{} -b` failed for user {user:?} ({}): {}{}",
                tool.display(),
                output.status,
                String::from_utf8_lossy(&output.stdout).trim(),
                String::from_utf8_lossy(&output.stderr).trim(),
            ))));
        }
    }
    let contents = std::fs::read(path)?;
    write_private(path, &contents)?;
    Ok(())
}

/// The mosquitto configuration for `opts` on the given ports.
fn render_config(
    opts: &MqttBrokerOptions,
    port: u16,
    tls_port: Option<u16>,
    password_file: Option<&Path>,
) -> String {
    let mut conf = String::from("# Generated by iotload-testkit for one test.\n");
    let mut line = |text: String| {
        conf.push_str(&text);
        conf.push('\n');
    };
    line("per_listener_settings false".into());
    line("persistence false".into());
    // Without this, mosquitto started as root switches to the `mosquitto`
    // user and cannot read our private files; ignored when not root.
    line("user root".into());
    line("log_dest stderr".into());
    line("log_timestamp_format %Y-%m-%dT%H:%M:%S".into());
    line("connection_messages true".into());
    match password_file {
        Some(path) => {
            line("allow_anonymous false".into());
            line(format!("password_file {}", path.display()));
        }
        None => line("allow_anonymous true".into()),
    }
    let max_connections = |line: &mut dyn FnMut(String)| {
        if let Some(max) = opts.max_connections {
            line(format!("max_connections {max}"));
        }
    };
    line(format!("listener {port} 127.0.0.1"));
    max_connections(&mut line);
    if let (Some(tls_port), Some(pki)) = (tls_port, opts.tls.as_ref()) {
        line(format!("listener {tls_port} 127.0.0.1"));
        max_connections(&mut line);
        line(format!("cafile {}", pki.ca_pem().display()));
        line(format!("certfile {}", pki.server_cert().display()));
        line(format!("keyfile {}", pki.server_key().display()));
        line(format!("require_certificate {}", opts.require_client_cert));
        line("use_identity_as_username false".into());
    }
    conf
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_config_is_anonymous_plain_tcp() {
        let conf = render_config(&MqttBrokerOptions::default(), 41000, None, None);
        assert!(conf.contains("\nlistener 41000 127.0.0.1\n"), "{conf}");
        assert!(conf.contains("\nallow_anonymous true\n"), "{conf}");
        assert!(conf.contains("\nuser root\n"), "{conf}");
        assert!(!conf.contains("max_connections"), "{conf}");
        assert!(!conf.contains("certfile"), "{conf}");
    }

    #[test]
    fn full_config_has_passwords_limits_and_tls() {
        let pki = TestPki::generate().unwrap();
        let opts = MqttBrokerOptions {
            users: vec![("u".into(), "p".into())],
            tls: Some(pki.clone()),
            require_client_cert: true,
            max_connections: Some(3),
        };
        let conf = render_config(&opts, 41000, Some(41001), Some(Path::new("/x/pw")));
        assert!(
            conf.contains("\nallow_anonymous false\npassword_file /x/pw\n"),
            "{conf}"
        );
        assert!(
            conf.contains("\nlistener 41001 127.0.0.1\nmax_connections 3\n"),
            "{conf}"
        );
        assert_eq!(conf.matches("max_connections 3").count(), 2, "{conf}");
        assert!(conf.contains("require_certificate true"), "{conf}");
        assert!(conf.contains(&format!("keyfile {}", pki.server_key().display())));
    }

    #[tokio::test]
    async fn a_broker_that_exits_reports_not_ready_with_its_log() {
        let mut broker = MqttBroker::start().await.unwrap();
        let Backend::Process(process) = &broker.backend;
        write_private(&process.config_path, b"no_such_option 1\n").unwrap();
        let err = broker.restart().await.unwrap_err();
        let TestkitError::NotReady {
            what, addr, log, ..
        } = &err
        else {
            panic!("unexpected error: {err}");
        };
        assert!(what.contains("exited"), "{err}");
        assert_eq!(addr, &format!("127.0.0.1:{}", broker.port()));
        assert!(log.contains("no_such_option"), "{err}");
        assert!(err.to_string().contains("not ready after"), "{err}");
    }
}
