//! A fresh RabbitMQ virtual host per test on the machine's RabbitMQ server.
//!
//! RabbitMQ takes seconds to start, so tests do not run their own server: each test gets
//! a private virtual host (`iotload-test-PID-N`) on the machine's server, created with
//! `rabbitmqctl add_vhost`, opened to the `guest` user, and deleted when the
//! [`RabbitVhost`] is dropped. Exchanges, queues and messages of one test are invisible
//! to every other test.

use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::TestkitError;
use crate::fsutil::find_program;

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

/// A virtual host of the machine's RabbitMQ owned by one test; deleted on drop.
#[derive(Debug)]
pub struct RabbitVhost {
    name: String,
    base_url: String,
}

impl RabbitVhost {
    /// Creates a fresh virtual host and gives `guest` full permissions on it.
    pub async fn create() -> Result<Self, TestkitError> {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let name = format!("iotload-test-{}-{n}", std::process::id());
        let vhost = Self {
            name: name.clone(),
            base_url: machine_amqp_url().trim_end_matches('/').to_string(),
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
        if let Ok(program) = find_program("rabbitmqctl", RABBITMQ_START_HINT) {
            let _ = Command::new(program)
                .args(["delete_vhost", &self.name])
                .output();
        }
    }
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
