//! A fresh MQTT broker per test. [`MqttBroker`] hides how the broker runs:
//! today it is a private `mosquitto` process with a generated configuration
//! in a temporary directory, listening on ephemeral loopback ports; with
//! `IOTLOAD_TESTKIT_BACKEND=docker` it is a container of the
//! `iotload-test/mosquitto` image reading the same configuration, same API.
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

use tokio::process::Command;

use crate::container::{ContainerSpec, ServerContainer};
use crate::fsutil::{find_program, write_private};
use crate::process::{Launch, ServerProcess, ServerSpec, accepts};
use crate::{TestPki, TestkitError, try_free_port};

/// The broker program.
const MOSQUITTO: &str = "mosquitto";
/// The tool that writes mosquitto password files.
const MOSQUITTO_PASSWD: &str = "mosquitto_passwd";
/// How to get both programs on Debian and Ubuntu.
const INSTALL_HINT: &str = "install it with `apt-get install mosquitto`";

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
    /// Turns Nagle's algorithm off on the broker's sockets (`set_tcp_nodelay true`).
    /// Mosquitto leaves it on: with two processes at 1,000 msg/s each on one broker, a
    /// run's median latency was then 9.5 ms instead of 0.15 ms, in one run of the two and
    /// not the other; tests comparing two runs' latencies need it off.
    pub tcp_nodelay: bool,
}

/// A broker process or container owned by one test; stopped on drop.
#[derive(Debug)]
pub struct MqttBroker {
    backend: Backend,
}

/// The ways a broker can be run (env `IOTLOAD_TESTKIT_BACKEND`).
#[derive(Debug)]
#[expect(clippy::large_enum_variant, reason = "one value per test broker")]
enum Backend {
    Process(ProcessBroker),
    Container(ContainerBroker),
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
        let backend = match crate::container::backend()? {
            crate::Backend::Process => Backend::Process(ProcessBroker::start(opts).await?),
            crate::Backend::Docker => Backend::Container(ContainerBroker::start(opts).await?),
        };
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
            Backend::Process(broker) => broker.process.port(),
            Backend::Container(broker) => broker.container.port(),
        }
    }

    /// The TLS listener's port on 127.0.0.1, when the broker has one.
    pub fn tls_port(&self) -> Option<u16> {
        match &self.backend {
            Backend::Process(broker) => broker.tls_port,
            Backend::Container(broker) => broker.container.ports().get(1).copied(),
        }
    }

    /// The broker's process id; `None` while it is stopped (or when a backend
    /// has no local process).
    pub fn pid(&self) -> Option<u32> {
        match &self.backend {
            Backend::Process(broker) => broker.process.pid(),
            Backend::Container(broker) => broker.container.pid(),
        }
    }

    /// Freezes the broker (SIGSTOP): connections stay open but nothing is
    /// answered until [`MqttBroker::resume`].
    pub fn pause(&self) -> Result<(), TestkitError> {
        match &self.backend {
            Backend::Process(broker) => broker.process.pause(),
            Backend::Container(broker) => broker.container.pause(),
        }
    }

    /// Lets a paused broker run again (SIGCONT).
    pub fn resume(&self) -> Result<(), TestkitError> {
        match &self.backend {
            Backend::Process(broker) => broker.process.resume(),
            Backend::Container(broker) => broker.container.resume(),
        }
    }

    /// Kills the broker and waits for it to exit. Does nothing when it is
    /// already stopped.
    pub async fn stop(&mut self) -> Result<(), TestkitError> {
        match &mut self.backend {
            Backend::Process(broker) => broker.process.stop().await,
            Backend::Container(broker) => broker.container.stop().await,
        }
    }

    /// Stops the broker (if running) and starts it again on the same ports
    /// with the same configuration, waiting until it accepts connections.
    /// Sessions and retained messages are not kept (no persistence).
    pub async fn restart(&mut self) -> Result<(), TestkitError> {
        match &mut self.backend {
            Backend::Process(broker) => broker.process.restart().await,
            Backend::Container(broker) => broker.container.restart().await,
        }
    }

    /// The broker's log so far (all runs), for assertion messages.
    pub fn log(&self) -> String {
        match &self.backend {
            Backend::Process(broker) => broker.process.log(),
            Backend::Container(broker) => broker.container.log(),
        }
    }
}

/// A `mosquitto` child process with its private directory and configuration.
#[derive(Debug)]
struct ProcessBroker {
    /// The process; dropped (killed) first, before the certificates go.
    process: ServerProcess,
    /// The configuration the process reads; tests overwrite it to break it.
    #[cfg_attr(not(test), expect(dead_code, reason = "only tests read it"))]
    config_path: PathBuf,
    tls_port: Option<u16>,
    /// Kept so the certificate files outlive the broker.
    _pki: Option<TestPki>,
}

impl ProcessBroker {
    /// Writes the configuration and starts mosquitto, retrying on a fresh
    /// port when the chosen one was taken in the meantime.
    ///
    /// With `max_connections` set, the TCP probes are skipped: mosquitto
    /// counts a probe against the limit until it notices the close, which
    /// would make the test's first client be refused. The "running" line is
    /// written only after all listeners are listening, so it suffices.
    async fn start(opts: MqttBrokerOptions) -> Result<Self, TestkitError> {
        let program = find_program(MOSQUITTO, INSTALL_HINT)?;
        let (dir, password_file) = private_dir(&opts.users).await?;
        let config_path = dir.path().join("mosquitto.conf");
        let spec = ServerSpec {
            name: MOSQUITTO,
            program,
            dir,
            log_file: "mosquitto.log",
            logged_ready: logged_running,
            probe: match opts.max_connections {
                Some(_) => None,
                None => Some(|port| Box::pin(accepts(port))),
            },
            not_running: "the MQTT broker is not running",
            ready_timeout: crate::process::READY_TIMEOUT,
        };
        let mut tls_port = None;
        let process = ServerProcess::start(spec, |_dir| {
            let port = try_free_port()?;
            tls_port = match opts.tls {
                Some(_) => Some(try_free_port()?),
                None => None,
            };
            let tls_files = opts.tls.as_ref().map(|pki| TlsFiles {
                ca: pki.ca_pem().display().to_string(),
                cert: pki.server_cert().display().to_string(),
                key: pki.server_key().display().to_string(),
            });
            let listeners = Listeners {
                address: "127.0.0.1",
                port,
                tls_port,
            };
            let password_file = password_file
                .as_ref()
                .map(|path| path.display().to_string());
            let config = render_config(
                &opts,
                &listeners,
                password_file.as_deref(),
                tls_files.as_ref(),
            );
            write_private(&config_path, config.as_bytes())?;
            Ok(Launch {
                ports: std::iter::once(port).chain(tls_port).collect(),
                args: vec!["-c".into(), config_path.clone().into()],
            })
        })
        .await?;
        Ok(Self {
            process,
            config_path,
            tls_port,
            _pki: opts.tls,
        })
    }
}

/// A `mosquitto` container (image `iotload-test/mosquitto`) reading a
/// configuration from the test's private directory, mounted at
/// [`CONTAINER_DIR`], with the TLS files mounted beside it.
#[derive(Debug)]
struct ContainerBroker {
    /// The container; dropped (removed) first, before its files go.
    container: ServerContainer,
    /// Holds the configuration and password file the container reads; tests
    /// overwrite the configuration to break it.
    _dir: tempfile::TempDir,
    /// Kept so the certificate files outlive the broker.
    _pki: Option<TestPki>,
}

/// Where a container sees the test's private directory.
const CONTAINER_DIR: &str = "/testkit";
/// The plain and TLS listeners' ports inside a container.
const CONTAINER_PORTS: [u16; 2] = [1883, 8883];

impl ContainerBroker {
    /// Writes the configuration (and password file) and starts the container.
    /// With `max_connections` set, only the log is checked (see
    /// [`ProcessBroker::start`]).
    async fn start(opts: MqttBrokerOptions) -> Result<Self, TestkitError> {
        let (dir, password_file) = private_dir(&opts.users).await?;
        let password_file = password_file.map(|_| format!("{CONTAINER_DIR}/passwords"));
        let mut mounts = vec![(dir.path().to_path_buf(), CONTAINER_DIR.to_owned())];
        let tls_files = opts.tls.as_ref().map(|pki| {
            let files = TlsFiles {
                ca: "/tls/ca.pem".into(),
                cert: "/tls/server.pem".into(),
                key: "/tls/server.key".into(),
            };
            mounts.push((pki.ca_pem().to_path_buf(), files.ca.clone()));
            mounts.push((pki.server_cert().to_path_buf(), files.cert.clone()));
            mounts.push((pki.server_key().to_path_buf(), files.key.clone()));
            files
        });
        let listeners = Listeners {
            address: "0.0.0.0",
            port: CONTAINER_PORTS[0],
            tls_port: tls_files.as_ref().map(|_| CONTAINER_PORTS[1]),
        };
        let config = render_config(
            &opts,
            &listeners,
            password_file.as_deref(),
            tls_files.as_ref(),
        );
        write_private(&dir.path().join("mosquitto.conf"), config.as_bytes())?;
        let spec = ContainerSpec {
            name: MOSQUITTO,
            image: "iotload-test/mosquitto",
            ports: match opts.tls {
                Some(_) => CONTAINER_PORTS.to_vec(),
                None => CONTAINER_PORTS[..1].to_vec(),
            },
            args: vec!["-c".into(), format!("{CONTAINER_DIR}/mosquitto.conf")],
            mounts,
            same_ports: false,
            extra_env: Vec::new(),
            env: |_| Vec::new(),
            logged_ready: logged_running,
            probe: match opts.max_connections {
                Some(_) => None,
                None => Some(|port| Box::pin(accepts(port))),
            },
            ready_timeout: crate::process::READY_TIMEOUT,
        };
        let container = ServerContainer::start(spec).await?;
        Ok(Self {
            container,
            _dir: dir,
            _pki: opts.tls,
        })
    }
}

/// Where the broker listens (inside its process's or container's network).
struct Listeners {
    address: &'static str,
    port: u16,
    tls_port: Option<u16>,
}

/// The TLS files' paths as the broker sees them.
struct TlsFiles {
    ca: String,
    cert: String,
    key: String,
}

/// Whether this run's log has mosquitto's "mosquitto version X running" line.
fn logged_running(log: &str) -> bool {
    log.lines()
        .any(|line| line.contains("mosquitto version") && line.trim_end().ends_with(" running"))
}

/// The broker's private directory, with a password file for `users` when
/// there are any (its path is returned).
async fn private_dir(
    users: &[(String, String)],
) -> Result<(tempfile::TempDir, Option<PathBuf>), TestkitError> {
    let dir = tempfile::Builder::new()
        .prefix("iotload-testkit-mosquitto-")
        .tempdir()?;
    if users.is_empty() {
        return Ok((dir, None));
    }
    let path = dir.path().join("passwords");
    write_password_file(&path, users).await?;
    Ok((dir, Some(path)))
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

/// The mosquitto configuration for `opts` on the given listeners.
fn render_config(
    opts: &MqttBrokerOptions,
    listeners: &Listeners,
    password_file: Option<&str>,
    tls_files: Option<&TlsFiles>,
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
    if opts.tcp_nodelay {
        line("set_tcp_nodelay true".into());
    }
    match password_file {
        Some(path) => {
            line("allow_anonymous false".into());
            line(format!("password_file {path}"));
        }
        None => line("allow_anonymous true".into()),
    }
    let max_connections = |line: &mut dyn FnMut(String)| {
        if let Some(max) = opts.max_connections {
            line(format!("max_connections {max}"));
        }
    };
    let address = listeners.address;
    line(format!("listener {} {address}", listeners.port));
    max_connections(&mut line);
    if let (Some(tls_port), Some(files)) = (listeners.tls_port, tls_files) {
        line(format!("listener {tls_port} {address}"));
        max_connections(&mut line);
        line(format!("cafile {}", files.ca));
        line(format!("certfile {}", files.cert));
        line(format!("keyfile {}", files.key));
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
        let listeners = Listeners {
            address: "127.0.0.1",
            port: 41000,
            tls_port: None,
        };
        let conf = render_config(&MqttBrokerOptions::default(), &listeners, None, None);
        assert!(conf.contains("\nlistener 41000 127.0.0.1\n"), "{conf}");
        assert!(conf.contains("\nallow_anonymous true\n"), "{conf}");
        assert!(conf.contains("\nuser root\n"), "{conf}");
        assert!(!conf.contains("max_connections"), "{conf}");
        assert!(!conf.contains("set_tcp_nodelay"), "{conf}");
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
            tcp_nodelay: true,
        };
        let listeners = Listeners {
            address: "127.0.0.1",
            port: 41000,
            tls_port: Some(41001),
        };
        let files = TlsFiles {
            ca: "/t/ca.pem".into(),
            cert: "/t/server.pem".into(),
            key: "/t/server.key".into(),
        };
        let conf = render_config(&opts, &listeners, Some("/x/pw"), Some(&files));
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
        assert!(conf.contains("\nkeyfile /t/server.key\n"), "{conf}");
    }

    #[tokio::test]
    async fn a_broker_that_exits_reports_not_ready_with_its_log() {
        let mut broker = MqttBroker::start().await.unwrap();
        let config_path = match &broker.backend {
            Backend::Process(broker) => broker.config_path.clone(),
            Backend::Container(broker) => broker._dir.path().join("mosquitto.conf"),
        };
        write_private(&config_path, b"no_such_option 1\n").unwrap();
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
