//! A fresh RabbitMQ virtual host per test on the machine's RabbitMQ server.
//!
//! RabbitMQ takes seconds to start, so tests do not run their own server: each test gets
//! a private virtual host (`iotload-test-PID-N`) on the machine's server, created with
//! `rabbitmqctl add_vhost`, opened to the `guest` user, and deleted when the
//! [`RabbitVhost`] is dropped. Exchanges, queues and messages of one test are invisible
//! to every other test.
//!
//! With the Docker backend ([`crate::Backend::Docker`]) each test gets a RabbitMQ
//! container of its own instead (image `iotload-test/rabbitmq`, 5-10 s to start), and
//! the virtual host is made in it (`docker exec … rabbitmqctl`); the container goes with
//! the [`RabbitVhost`].

use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::TestkitError;
use crate::container::{ContainerSpec, ServerContainer};
use crate::fsutil::find_program;
use crate::process::accepts;

/// Environment variable naming the machine's RabbitMQ server.
pub const AMQP_URL_ENV: &str = "IOTLOAD_TEST_AMQP_URL";

/// The machine's RabbitMQ server used when [`AMQP_URL_ENV`] is unset.
pub const DEFAULT_AMQP_URL: &str = "amqp://guest:guest@127.0.0.1:5672";

/// How to get RabbitMQ on Debian and Ubuntu.
pub const RABBITMQ_START_HINT: &str =
    "`apt-get install rabbitmq-server && service rabbitmq-server start`";

/// The machine's RabbitMQ: address from env `IOTLOAD_TEST_AMQP_URL`, default
/// "amqp://guest:guest@127.0.0.1:5672" (no virtual host in the path).
pub fn machine_amqp_url() -> String {
    std::env::var(AMQP_URL_ENV)
        .ok()
        .filter(|url| !url.trim().is_empty())
        .unwrap_or_else(|| DEFAULT_AMQP_URL.to_owned())
}

/// What RabbitMQ (Debian's 3.10) prints on standard output once it serves.
const READY_LINE: &str = "Starting broker... completed";
/// How long a RabbitMQ container may take to start on a loaded two-core machine.
const READY_TIMEOUT: Duration = Duration::from_secs(120);

/// Whether virtual hosts can be made: with the Docker backend always (each test has its
/// own container); otherwise when the machine's RabbitMQ answers, see
/// [`crate::require_server`] (with `CI=true` it panics when it does not).
///
/// # Panics
///
/// When the machine's RabbitMQ is unreachable and `CI=true`.
pub async fn require_rabbitmq() -> bool {
    if crate::backend().is_ok_and(|b| b == crate::Backend::Docker) {
        return true;
    }
    crate::require_server("RabbitMQ", &machine_amqp_url(), RABBITMQ_START_HINT).await
}

/// A virtual host of the machine's RabbitMQ (or of a container of its own) owned by one
/// test; deleted on drop.
#[derive(Debug)]
pub struct RabbitVhost {
    name: String,
    base_url: String,
    /// The test's own server with the Docker backend.
    container: Option<ServerContainer>,
}

impl RabbitVhost {
    /// Creates a fresh virtual host and gives `guest` full permissions on it.
    pub async fn create() -> Result<Self, TestkitError> {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let name = format!("iotload-test-{}-{n}", std::process::id());
        if crate::backend()? == crate::Backend::Docker {
            let container = start_container().await?;
            container.exec(&["rabbitmqctl", "add_vhost", &name]).await?;
            container
                .exec(&[
                    "rabbitmqctl",
                    "set_permissions",
                    "-p",
                    &name,
                    "guest",
                    ".*",
                    ".*",
                    ".*",
                ])
                .await?;
            return Ok(Self {
                name,
                base_url: format!("amqp://guest:guest@127.0.0.1:{}", container.port()),
                container: Some(container),
            });
        }
        let vhost = Self {
            name: name.clone(),
            base_url: machine_amqp_url().trim_end_matches('/').to_string(),
            container: None,
        };
        ctl(&["add_vhost", &name]).await?;
        ctl(&["set_permissions", "-p", &name, "guest", ".*", ".*", ".*"]).await?;
        Ok(vhost)
    }

    /// The virtual host's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// `amqp://guest:guest@127.0.0.1:5672/VHOST`.
    pub fn url(&self) -> String {
        format!("{}/{}", self.base_url, self.name)
    }

    /// The same, with `password` instead of the right one.
    pub fn url_with_password(&self, password: &str) -> String {
        let url = self.url();
        match url.split_once("://").and_then(|(s, rest)| {
            let (userinfo, host) = rest.split_once('@')?;
            let user = userinfo.split(':').next()?;
            Some(format!("{s}://{user}:{password}@{host}"))
        }) {
            Some(u) => u,
            None => url,
        }
    }
}

impl Drop for RabbitVhost {
    fn drop(&mut self) {
        if self.container.is_some() {
            return; // removed with its container
        }
        if let Ok(program) = find_program("rabbitmqctl", RABBITMQ_START_HINT) {
            let _ = Command::new(program)
                .args(["delete_vhost", &self.name])
                .output();
        }
    }
}

/// A RabbitMQ container (image `iotload-test/rabbitmq`: `guest` may connect from
/// outside the container).
async fn start_container() -> Result<ServerContainer, TestkitError> {
    ServerContainer::start(ContainerSpec {
        name: "rabbitmq",
        image: "iotload-test/rabbitmq",
        ports: vec![5672],
        args: Vec::new(),
        mounts: Vec::new(),
        same_ports: false,
        extra_env: Vec::new(),
        env: |_| Vec::new(),
        logged_ready: |log| log.contains(READY_LINE),
        probe: Some(|port| Box::pin(accepts(port))),
        ready_timeout: READY_TIMEOUT,
    })
    .await
}

/// Runs `rabbitmqctl ARGS`, failing with its output.
async fn ctl(args: &[&str]) -> Result<(), TestkitError> {
    let program = find_program("rabbitmqctl", RABBITMQ_START_HINT)?;
    let output = tokio::process::Command::new(&program)
        .args(args)
        .output()
        .await
        .map_err(|source| TestkitError::Spawn {
            program: program.display().to_string(),
            source,
        })?;
    if output.status.success() {
        Ok(())
    } else {
        Err(TestkitError::Admin {
            command: format!("rabbitmqctl {}", args.join(" ")),
            output: format!(
                "{}{}",
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            ),
        })
    }
}
