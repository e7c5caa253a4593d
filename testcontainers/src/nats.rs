//! A fresh NATS server per test. [`NatsServer`] hides how the server runs:
//! today it is a private `nats-server` process (Debian's package) bound to an
//! ephemeral loopback port, with its JetStream store (when asked for) in a
//! temporary directory; with `IOTLOAD_TESTKIT_BACKEND=docker` it is a container
//! of the `iotload-test/nats` image instead (`crate::container`), same API.
//!
//! NATS facts this module relies on (checked with Debian 12's 2.9): `-a` and
//! `-p` set the listen address and port, `-js -sd DIR` turns JetStream on
//! with its store in DIR; the server logs "Server is ready" once it listens,
//! and "address already in use" when its port was taken; a client that
//! connects is greeted by an `INFO {...}` line.

use std::ffi::OsString;
use std::time::Duration;

use crate::container::{ContainerSpec, ServerContainer};
use crate::fsutil::find_program;
use crate::process::{Launch, ServerProcess, ServerSpec};
use crate::{TestPki, TestkitError, try_free_port};

/// The server program.
const NATS_SERVER: &str = "nats-server";
/// Environment variable naming the machine's shared NATS server.
pub const NATS_URL_ENV: &str = "IOTLOAD_TEST_NATS_URL";
/// The shared NATS server used when [`NATS_URL_ENV`] is unset.
pub const DEFAULT_NATS_URL: &str = "nats://127.0.0.1:4222";

/// How to get it on Debian and Ubuntu.
const INSTALL_HINT: &str = "install it with `apt-get install nats-server`";
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
    /// Require this `(user, password)` from every client (`--user`, `--pass`).
    pub user: Option<(String, String)>,
}

/// A NATS server process or container owned by one test; killed on drop.
#[derive(Debug)]
pub struct NatsServer {
    backend: Backend,
    tls: bool,
}

/// The ways a server can be run (env `IOTLOAD_TESTKIT_BACKEND`).
#[derive(Debug)]
#[expect(clippy::large_enum_variant, reason = "one value per test server")]
enum Backend {
    Process(ProcessNats),
    Container(ContainerNats),
}

impl NatsServer {
    /// Starts a core NATS server and waits until it accepts connections.
    pub async fn start() -> Result<Self, TestkitError> {
        Self::start_with(NatsOptions::default()).await
    }

    /// Starts a server set up as `opts` says and waits until it accepts
    /// connections.
    pub async fn start_with(opts: NatsOptions) -> Result<Self, TestkitError> {
        let tls = opts.tls.is_some();
        let backend = match crate::container::backend()? {
            crate::Backend::Process => Backend::Process(ProcessNats::start(opts).await?),
            crate::Backend::Docker => Backend::Container(ContainerNats::start(opts).await?),
        };
        Ok(Self { backend, tls })
    }

    /// The server as `nats://127.0.0.1:PORT`, or `tls://127.0.0.1:PORT` when it
    /// requires TLS.
    pub fn url(&self) -> String {
        let scheme = if self.tls { "tls" } else { "nats" };
        format!("{scheme}://127.0.0.1:{}", self.port())
    }

    /// The server's port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        match &self.backend {
            Backend::Process(server) => server.process.port(),
            Backend::Container(server) => server.container.port(),
        }
    }

    /// The server's log so far, for assertion messages.
    pub fn log(&self) -> String {
        match &self.backend {
            Backend::Process(server) => server.process.log(),
            Backend::Container(server) => server.container.log(),
        }
    }
}

/// A `nats-server` child process with its private directory.
#[derive(Debug)]
struct ProcessNats {
    process: ServerProcess,
    /// Kept so the certificate files outlive the server.
    _pki: Option<TestPki>,
}

/// A `nats-server` container (image `iotload-test/nats`), with the TLS files
/// mounted when the options ask for TLS.
#[derive(Debug)]
struct ContainerNats {
    container: ServerContainer,
    /// Kept so the certificate files outlive the server.
    _pki: Option<TestPki>,
}

impl ContainerNats {
    /// Starts the container with the same flags as the process.
    async fn start(opts: NatsOptions) -> Result<Self, TestkitError> {
        let mut args: Vec<String> = vec!["-p".into(), "4222".into()];
        let mut mounts = Vec::new();
        if opts.jetstream {
            args.extend(["-js".into(), "-sd".into(), "/tmp/jetstream".into()]);
        }
        if let Some(pki) = &opts.tls {
            mounts.push((
                pki.server_cert().to_path_buf(),
                "/tls/server.pem".to_owned(),
            ));
            mounts.push((pki.server_key().to_path_buf(), "/tls/server.key".to_owned()));
            args.extend(
                [
                    "--tls",
                    "--tlscert",
                    "/tls/server.pem",
                    "--tlskey",
                    "/tls/server.key",
                ]
                .map(String::from),
            );
        }
        if let Some((user, pass)) = &opts.user {
            args.extend(["--user".into(), user.clone(), "--pass".into(), pass.clone()]);
        }
        let container = ServerContainer::start(ContainerSpec {
            name: NATS_SERVER,
            image: "iotload-test/nats",
            ports: vec![4222],
            args,
            mounts,
            same_ports: false,
            extra_env: Vec::new(),
            env: |_| Vec::new(),
            logged_ready: |log| log.contains(READY_LINE),
            probe: Some(|port| Box::pin(greets(port))),
            ready_timeout: crate::process::READY_TIMEOUT,
        })
        .await?;
        Ok(Self {
            container,
            _pki: opts.tls,
        })
    }
}

impl ProcessNats {
    /// Starts nats-server, retrying on a fresh port when the chosen one was
    /// taken in the meantime; it is ready once it has logged so and greets a
    /// client with `INFO`.
    async fn start(opts: NatsOptions) -> Result<Self, TestkitError> {
        let program = find_program(NATS_SERVER, INSTALL_HINT)?;
        let dir = tempfile::Builder::new()
            .prefix("iotload-testkit-nats-")
            .tempdir()?;
        let spec = ServerSpec {
            name: NATS_SERVER,
            program,
            dir,
            log_file: "nats.log",
            logged_ready: |log| log.contains(READY_LINE),
            probe: Some(|port| Box::pin(greets(port))),
            not_running: "the NATS server is not running",
            ready_timeout: crate::process::READY_TIMEOUT,
        };
        let process = ServerProcess::start(spec, |dir| {
            let port = try_free_port()?;
            let mut args: Vec<OsString> = vec![
                "-a".into(),
                "127.0.0.1".into(),
                "-p".into(),
                port.to_string().into(),
            ];
            if opts.jetstream {
                args.extend(["-js".into(), "-sd".into(), dir.join("jetstream").into()]);
            }
            if let Some(pki) = &opts.tls {
                args.extend([
                    "--tls".into(),
                    "--tlscert".into(),
                    pki.server_cert().into(),
                    "--tlskey".into(),
                    pki.server_key().into(),
                ]);
            }
            if let Some((user, pass)) = &opts.user {
                args.extend(["--user".into(), user.into(), "--pass".into(), pass.into()]);
            }
            Ok(Launch {
                ports: vec![port],
                args,
            })
        })
        .await?;
        Ok(Self {
            process,
            _pki: opts.tls,
        })
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
