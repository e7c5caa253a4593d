//! A fresh Redis server per test. [`RedisServer`] hides how the server runs:
//! today it is a private `redis-server` process (Debian's package) bound to
//! an ephemeral loopback port, with persistence off and its working
//! directory in a temporary directory; with `IOTLOAD_TESTKIT_BACKEND=docker` it
//! is a container of the `iotload-test/redis` image instead, same API.
//!
//! Redis facts this module relies on (checked with Debian 12's 7.0): every
//! configuration directive can be given on the command line as `--name
//! value`; `--save ""` turns RDB snapshots off while `--appendonly yes` keeps
//! every write across a restart; the server logs "Ready to
//! accept connections" once it listens, and "Address already in use" when
//! its port was taken.

use std::ffi::OsString;
use std::time::Duration;

use crate::container::{ContainerSpec, ServerContainer};
use crate::fsutil::find_program;
use crate::pki::TestPki;
use crate::process::{Launch, ServerProcess, ServerSpec};
use crate::{TestkitError, try_free_port};

/// The server program.
const REDIS_SERVER: &str = "redis-server";
/// Environment variable naming the machine's shared Redis server.
pub const REDIS_URL_ENV: &str = "IOTLOAD_TEST_REDIS_URL";

/// The shared Redis server used when [`REDIS_URL_ENV`] is unset.
pub const DEFAULT_REDIS_URL: &str = "redis://127.0.0.1:6379/0";

/// How to get it on Debian and Ubuntu.
pub(crate) const INSTALL_HINT: &str = "install it with `apt-get install redis-server`";
/// What redis-server logs once it accepts connections.
pub(crate) const READY_LINE: &str = "Ready to accept connections";

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
    /// When set, the server speaks only TLS, with this PKI's server certificate
    /// (process backend only).
    pub tls: Option<RedisTls>,
}

/// A TLS-only Redis server's certificates and client policy.
#[derive(Debug, Clone)]
pub struct RedisTls {
    /// The CA, server certificate and client certificate.
    pub pki: TestPki,
    /// Whether clients must show a certificate signed by the PKI's CA
    /// (`tls-auth-clients yes`); otherwise they may connect without one.
    pub require_client_cert: bool,
}

/// A Redis server process or container owned by one test; killed on drop.
#[derive(Debug)]
pub struct RedisServer {
    backend: Backend,
    password: Option<String>,
    tls: bool,
}

/// The ways a server can be run (env `IOTLOAD_TESTKIT_BACKEND`).
#[derive(Debug)]
#[expect(clippy::large_enum_variant, reason = "one value per test server")]
enum Backend {
    Process(ProcessRedis),
    Container(ServerContainer),
}

impl RedisServer {
    /// Starts a server without a password and waits until it answers.
    pub async fn start() -> Result<Self, TestkitError> {
        Self::start_with(RedisOptions::default()).await
    }

    /// Starts a server set up as `opts` says and waits until it answers.
    pub async fn start_with(opts: RedisOptions) -> Result<Self, TestkitError> {
        let password = opts.password.clone();
        let tls = opts.tls.is_some();
        let backend = match crate::container::backend()? {
            crate::Backend::Process => Backend::Process(ProcessRedis::start(opts, false).await?),
            crate::Backend::Docker if tls => {
                return Err(TestkitError::Docker(
                    "a TLS Redis server runs as a process only; unset IOTLOAD_TESTKIT_BACKEND"
                        .into(),
                ));
            }
            crate::Backend::Docker => Backend::Container(start_container(opts).await?),
        };
        Ok(Self {
            backend,
            password,
            tls,
        })
    }

    /// The server as `redis://127.0.0.1:PORT/0` (`rediss://` when it speaks
    /// TLS), with `:PASSWORD@` when it requires a password.
    pub fn url(&self) -> String {
        let scheme = if self.tls { "rediss" } else { "redis" };
        match &self.password {
            Some(password) => format!("{scheme}://:{password}@127.0.0.1:{}/0", self.port()),
            None => format!("{scheme}://127.0.0.1:{}/0", self.port()),
        }
    }

    /// The server's port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        match &self.backend {
            Backend::Process(server) => server.process.port(),
            Backend::Container(server) => server.port(),
        }
    }

    /// The server's process id; `None` while it is stopped (or when a
    /// backend has no local process).
    pub fn pid(&self) -> Option<u32> {
        match &self.backend {
            Backend::Process(server) => server.process.pid(),
            Backend::Container(server) => server.pid(),
        }
    }

    /// Freezes the server (SIGSTOP): connections stay open but nothing is
    /// answered until [`RedisServer::resume`].
    pub fn pause(&self) -> Result<(), TestkitError> {
        match &self.backend {
            Backend::Process(server) => server.process.pause(),
            Backend::Container(server) => server.pause(),
        }
    }

    /// Lets a paused server run again (SIGCONT).
    pub fn resume(&self) -> Result<(), TestkitError> {
        match &self.backend {
            Backend::Process(server) => server.process.resume(),
            Backend::Container(server) => server.resume(),
        }
    }

    /// Kills the server and waits for it to exit. Does nothing when it is
    /// already stopped.
    pub async fn stop(&mut self) -> Result<(), TestkitError> {
        match &mut self.backend {
            Backend::Process(server) => server.process.stop().await,
            Backend::Container(server) => server.stop().await,
        }
    }

    /// Stops the server (if running) and starts it again on the same port
    /// with the same settings, waiting until it answers. Data is not kept
    /// (no persistence), and clients must reconnect.
    pub async fn restart(&mut self) -> Result<(), TestkitError> {
        match &mut self.backend {
            Backend::Process(server) => server.process.restart().await,
            Backend::Container(server) => server.restart().await,
        }
    }

    /// The server's log so far (all runs), for assertion messages.
    pub fn log(&self) -> String {
        match &self.backend {
            Backend::Process(server) => server.process.log(),
            Backend::Container(server) => server.log(),
        }
    }
}

/// A `redis-server` child process with its private directory.
#[derive(Debug)]
pub(crate) struct ProcessRedis {
    pub(crate) process: ServerProcess,
}

impl ProcessRedis {
    /// Starts redis-server, retrying on a fresh port when the chosen one was
    /// taken in the meantime; it is ready once it has logged that it accepts
    /// connections and answers a `PING`. A `cluster` node starts empty, waiting to be
    /// joined into a cluster (`redis-cli --cluster create`), with its cluster bus on a
    /// free port of its own.
    pub(crate) async fn start(opts: RedisOptions, cluster: bool) -> Result<Self, TestkitError> {
        let program = find_program(REDIS_SERVER, INSTALL_HINT)?;
        let dir = tempfile::Builder::new()
            .prefix("iotload-testkit-redis-")
            .tempdir()?;
        let spec = ServerSpec {
            name: REDIS_SERVER,
            program,
            dir,
            log_file: "redis.log",
            logged_ready: |log| log.contains(READY_LINE),
            // A TLS port does not answer a plain PING; its log line is the signal.
            probe: if opts.tls.is_some() {
                None
            } else {
                Some(|port| Box::pin(ping(port)))
            },
            not_running: "the Redis server is not running",
            ready_timeout: crate::process::READY_TIMEOUT,
        };
        let password = opts.password;
        let tls = opts.tls;
        let process = ServerProcess::start(spec, |dir| {
            let port = try_free_port()?;
            let (plain_port, tls_port) = match tls {
                Some(_) => (0, port),
                None => (port, 0),
            };
            let mut args: Vec<OsString> = vec![
                "--port".into(),
                plain_port.to_string().into(),
                "--tls-port".into(),
                tls_port.to_string().into(),
                "--bind".into(),
                "127.0.0.1".into(),
                "--save".into(),
                "".into(),
                // Every acknowledged write survives `stop` (a kill) and `restart`, as on a
                // production server with an append-only file: outage tests rely on it.
                "--appendonly".into(),
                "yes".into(),
                "--appendfsync".into(),
                "always".into(),
                "--daemonize".into(),
                "no".into(),
                "--dir".into(),
                dir.into(),
            ];
            if let Some(password) = &password {
                args.extend(["--requirepass".into(), password.into()]);
            }
            if cluster {
                args.extend(
                    [
                        "--cluster-enabled",
                        "yes",
                        "--cluster-config-file",
                        "nodes.conf",
                        // Fail-over within about two seconds of a master's death.
                        "--cluster-node-timeout",
                        "1000",
                        // The other shards keep serving while one is down.
                        "--cluster-require-full-coverage",
                        "no",
                    ]
                    .map(OsString::from),
                );
                args.extend(["--cluster-port".into(), try_free_port()?.to_string().into()]);
            }
            if let Some(tls) = &tls {
                args.extend([
                    "--tls-cert-file".into(),
                    tls.pki.server_cert().into(),
                    "--tls-key-file".into(),
                    tls.pki.server_key().into(),
                    "--tls-ca-cert-file".into(),
                    tls.pki.ca_pem().into(),
                    "--tls-auth-clients".into(),
                    if tls.require_client_cert { "yes" } else { "no" }.into(),
                ]);
            }
            Ok(Launch {
                ports: vec![port],
                args,
            })
        })
        .await?;
        Ok(Self { process })
    }
}

/// A `redis-server` container (image `iotload-test/redis`) with the same
/// settings as the process: append-only file (kept across a restart, which
/// keeps the container's file system), no snapshots.
async fn start_container(opts: RedisOptions) -> Result<ServerContainer, TestkitError> {
    let mut args: Vec<String> = [
        "--port",
        "6379",
        "--save",
        "",
        "--appendonly",
        "yes",
        "--appendfsync",
        "always",
        "--dir",
        "/tmp",
    ]
    .map(String::from)
    .to_vec();
    if let Some(password) = &opts.password {
        args.extend(["--requirepass".into(), password.clone()]);
    }
    ServerContainer::start(ContainerSpec {
        name: REDIS_SERVER,
        image: "iotload-test/redis",
        ports: vec![6379],
        args,
        mounts: Vec::new(),
        same_ports: false,
        extra_env: Vec::new(),
        env: |_| Vec::new(),
        logged_ready: |log| log.contains(READY_LINE),
        probe: Some(|port| Box::pin(ping(port))),
        ready_timeout: crate::process::READY_TIMEOUT,
    })
    .await
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
            ..Default::default()
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
