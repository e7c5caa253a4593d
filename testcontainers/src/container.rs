//! The container machinery shared by the server backends when env
//! `IOTLOAD_TESTKIT_BACKEND=docker`: a [`ServerContainer`] runs a server from
//! one of the images `scripts/docker-images` builds (nothing is pulled),
//! publishes its ports on 127.0.0.1, waits until this run's log has the
//! server's ready line and a readiness probe answers, and pauses (`docker
//! pause`), resumes, stops, restarts on the same ports and removes (on drop,
//! also when the test panics) the container. Containers are started and
//! removed by the `testcontainers` crate; the synchronous parts of the API
//! (pause, resume, log) use the `docker` client.
//!
//! Where the engine is: `DOCKER_HOST` (what `scripts/docker-engine start`
//! prints), else Docker's default socket.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use testcontainers::bollard::models::HostConfig;
use testcontainers::core::{ContainerPort, Mount, WaitFor};
use testcontainers::runners::AsyncRunner;
use testcontainers::{ContainerAsync, GenericImage, ImageExt};

use crate::TestkitError;
use crate::fsutil::{LOG_TAIL_LINES, tail};
use crate::process::Probe;

/// Environment variable choosing how servers run: `process` (the default) or
/// `docker`.
pub const BACKEND_ENV: &str = "IOTLOAD_TESTKIT_BACKEND";
/// What builds the images the Docker backend runs.
pub const IMAGES_SCRIPT: &str = "scripts/docker-images";
/// What starts (or finds) a Docker engine.
const ENGINE_HINT: &str =
    "start one with `eval \"$(scripts/docker-engine start)\"` (it prints DOCKER_HOST)";
/// The tag of every image the kit runs.
const TAG: &str = "latest";
/// How often a start is retried when another process grabbed a chosen host port.
const PORT_ATTEMPTS: usize = 3;
/// The longest pause between readiness checks.
const MAX_BACKOFF: Duration = Duration::from_millis(200);

/// How the test kit runs servers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// A private process of the machine's server program (the default).
    Process,
    /// A container of a locally built image on a Docker engine.
    Docker,
}

/// The backend env `IOTLOAD_TESTKIT_BACKEND` asks for (`process` when unset).
///
/// # Errors
///
/// When the variable holds anything else than `process` or `docker`.
pub fn backend() -> Result<Backend, TestkitError> {
    let value = std::env::var(BACKEND_ENV).unwrap_or_default();
    match value.trim().to_ascii_lowercase().as_str() {
        "" | "process" => Ok(Backend::Process),
        "docker" => Ok(Backend::Docker),
        other => Err(TestkitError::Docker(format!(
            "{BACKEND_ENV}={other:?} is not a backend; use `process` or `docker`"
        ))),
    }
}

/// What differs between the servers that [`ServerContainer`] runs.
#[derive(Debug)]
pub(crate) struct ContainerSpec {
    /// The server's name in messages, e.g. `mosquitto`.
    pub(crate) name: &'static str,
    /// The image's repository, e.g. `iotload-test/mosquitto` (tag `latest`).
    pub(crate) image: &'static str,
    /// The container ports to publish on 127.0.0.1; the first is the main one.
    pub(crate) ports: Vec<u16>,
    /// Arguments after the image's entry point.
    pub(crate) args: Vec<String>,
    /// Host files or folders mounted read-only at container paths.
    pub(crate) mounts: Vec<(PathBuf, String)>,
    /// Listen inside on the chosen host ports themselves (ignoring [`ContainerSpec::ports`]'
    /// numbers), for servers that tell clients their address (Kafka's advertised listeners).
    pub(crate) same_ports: bool,
    /// Environment variables, given the host ports chosen for this start.
    pub(crate) env: fn(&[u16]) -> Vec<(String, String)>,
    /// Environment variables that do not depend on the ports.
    pub(crate) extra_env: Vec<(String, String)>,
    /// Whether a run's log (stdout and stderr) says the server is ready.
    pub(crate) logged_ready: fn(&str) -> bool,
    /// An extra check on the published main port once the log says ready.
    pub(crate) probe: Option<Probe>,
    /// How long a start may take.
    pub(crate) ready_timeout: Duration,
}

impl ContainerSpec {
    /// A server that tells clients the address to use (Kafka's advertised listeners,
    /// Pulsar's advertised address): it listens inside on the published host ports
    /// themselves, configured by `env` from those ports; ready once its log says so and
    /// the main port accepts a connection. No arguments, mounts or fixed variables.
    pub(crate) fn advertising(
        name: &'static str,
        image: &'static str,
        ports: usize,
        env: fn(&[u16]) -> Vec<(String, String)>,
        logged_ready: fn(&str) -> bool,
        ready_timeout: Duration,
    ) -> Self {
        Self {
            name,
            image,
            // Placeholders: with `same_ports` the host ports are used inside too.
            ports: vec![0; ports],
            args: Vec::new(),
            mounts: Vec::new(),
            same_ports: true,
            env,
            extra_env: Vec::new(),
            logged_ready,
            probe: Some(|port| Box::pin(crate::process::accepts(port))),
            ready_timeout,
        }
    }
}

/// A server container owned by one test; removed on drop.
pub(crate) struct ServerContainer {
    container: ContainerAsync<GenericImage>,
    name: &'static str,
    /// Host ports on 127.0.0.1, in the order of [`ContainerSpec::ports`].
    host_ports: Vec<u16>,
    logged_ready: fn(&str) -> bool,
    probe: Option<Probe>,
    ready_timeout: Duration,
    running: bool,
    /// Where in [`ServerContainer::log`] each restart began, for its marker line.
    restarts: Vec<usize>,
}

impl std::fmt::Debug for ServerContainer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerContainer")
            .field("id", &self.container.id())
            .field("name", &self.name)
            .field("host_ports", &self.host_ports)
            .finish_non_exhaustive()
    }
}

impl ServerContainer {
    /// Checks the engine and the image, then starts the container on free
    /// host ports (new ones when a port was taken meanwhile) and waits until
    /// it is ready.
    pub(crate) async fn start(spec: ContainerSpec) -> Result<Self, TestkitError> {
        require_image(spec.image).await?;
        let mut last_error = None;
        for _ in 0..PORT_ATTEMPTS {
            // Distinct ports: two calls may hand out the same free port, and a server
            // listening inside on them (`same_ports`) cannot take one twice.
            let mut host_ports: Vec<u16> = Vec::with_capacity(spec.ports.len());
            while host_ports.len() < spec.ports.len() {
                let port = crate::try_free_port()?;
                if !host_ports.contains(&port) {
                    host_ports.push(port);
                }
            }
            let mut request = GenericImage::new(spec.image, TAG)
                .with_wait_for(WaitFor::Nothing)
                .with_cmd(spec.args.clone())
                .with_label("iotload.testkit", spec.name)
                // Published on loopback only, whatever the engine's default address.
                .with_host_config_modifier(publish_on_loopback);
            for (host, container) in host_ports.iter().zip(&spec.ports) {
                let inside = if spec.same_ports { *host } else { *container };
                request = request.with_mapped_port(*host, ContainerPort::Tcp(inside));
            }
            for (key, value) in (spec.env)(&host_ports)
                .into_iter()
                .chain(spec.extra_env.iter().cloned())
            {
                request = request.with_env_var(key, value);
            }
            for (host, target) in &spec.mounts {
                request = request.with_mount(
                    Mount::bind_mount(host.display().to_string(), target.clone())
                        .with_access_mode(testcontainers::core::AccessMode::ReadOnly),
                );
            }
            match request.start().await {
                Ok(container) => {
                    let mut server = Self {
                        container,
                        name: spec.name,
                        host_ports,
                        logged_ready: spec.logged_ready,
                        probe: spec.probe,
                        ready_timeout: spec.ready_timeout,
                        running: true,
                        restarts: Vec::new(),
                    };
                    server.wait_ready(0).await?;
                    return Ok(server);
                }
                Err(err) if err.to_string().contains("port is already allocated") => {
                    last_error = Some(err.to_string());
                }
                Err(err) => {
                    return Err(TestkitError::Docker(format!(
                        "starting a {} container from {}:{TAG} failed: {err}",
                        spec.name, spec.image
                    )));
                }
            }
        }
        Err(TestkitError::Docker(format!(
            "no free host port for {} after {PORT_ATTEMPTS} attempts: {}",
            spec.name,
            last_error.unwrap_or_default()
        )))
    }

    /// The main port on 127.0.0.1.
    pub(crate) fn port(&self) -> u16 {
        self.host_ports[0]
    }

    /// All published ports on 127.0.0.1, in the spec's order.
    pub(crate) fn ports(&self) -> &[u16] {
        &self.host_ports
    }

    /// The container's log so far (stdout, then stderr; all runs), with a marker line
    /// where each restart began, as the process backend writes.
    pub(crate) fn log(&self) -> String {
        let mut log = self.engine_log();
        for &at in self.restarts.iter().rev() {
            if log.is_char_boundary(at) {
                log.insert_str(
                    at,
                    &format!("--- iotload-testkit: restarting {} ---\n", self.name),
                );
            }
        }
        log
    }

    /// The server's host process id (`docker inspect`), `None` while it is stopped.
    pub(crate) fn pid(&self) -> Option<u32> {
        let output = self
            .docker(&["inspect", "--format", "{{.State.Pid}}"])
            .ok()?;
        let pid: u32 = String::from_utf8_lossy(&output.stdout)
            .trim()
            .parse()
            .ok()?;
        (pid != 0).then_some(pid)
    }

    /// `docker logs`: what the container wrote so far (stdout, then stderr).
    fn engine_log(&self) -> String {
        match self.docker(&["logs"]) {
            Ok(output) => format!(
                "{}{}",
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            ),
            Err(err) => format!("(`docker logs` failed: {err})"),
        }
    }

    /// Freezes the container (`docker pause`): connections stay open but
    /// nothing is answered until [`ServerContainer::resume`].
    pub(crate) fn pause(&self) -> Result<(), TestkitError> {
        self.docker_ok(&["pause"])
    }

    /// Lets a paused container run again (`docker unpause`).
    pub(crate) fn resume(&self) -> Result<(), TestkitError> {
        self.docker_ok(&["unpause"])
    }

    /// Kills the server (the container stays, stopped). Does nothing when it
    /// is already stopped.
    pub(crate) async fn stop(&mut self) -> Result<(), TestkitError> {
        if !self.running {
            return Ok(());
        }
        self.container
            .stop_with_timeout(Some(0))
            .await
            .map_err(|err| TestkitError::Docker(format!("stopping {}: {err}", self.name)))?;
        self.running = false;
        Ok(())
    }

    /// Stops the container (if running) and starts it again on the same host
    /// ports with the same settings, waiting until it is ready.
    pub(crate) async fn restart(&mut self) -> Result<(), TestkitError> {
        self.stop().await?;
        let before = self.engine_log().len();
        self.restarts.push(before);
        self.container
            .start()
            .await
            .map_err(|err| TestkitError::Docker(format!("restarting {}: {err}", self.name)))?;
        self.running = true;
        self.wait_ready(before).await
    }

    /// Waits until the log written after byte `since` says ready and the probe
    /// answers, or fails with the log's tail after the timeout or when the
    /// container exited.
    async fn wait_ready(&mut self, since: usize) -> Result<(), TestkitError> {
        let started = Instant::now();
        let mut pause = Duration::from_millis(10);
        loop {
            let log = self.engine_log();
            let this_run = log.get(since..).unwrap_or(&log);
            if (self.logged_ready)(this_run) {
                let probed = match self.probe {
                    Some(probe) => probe(self.port()).await,
                    None => true,
                };
                if probed {
                    return Ok(());
                }
            }
            let exited = !self.container.is_running().await.unwrap_or(true);
            if exited || started.elapsed() > self.ready_timeout {
                // The engine may still be copying an exited container's last output.
                let mut log = log;
                for _ in 0..20 {
                    if !exited || log.len() > since {
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    log = self.engine_log();
                }
                let this_run = log.get(since..).unwrap_or(&log);
                return Err(TestkitError::NotReady {
                    what: format!(
                        "{} container {}{}",
                        self.name,
                        self.container.id(),
                        if exited { " (exited)" } else { "" }
                    ),
                    addr: format!("127.0.0.1:{}", self.port()),
                    waited: started.elapsed(),
                    log: tail(this_run, LOG_TAIL_LINES),
                });
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(MAX_BACKOFF);
        }
    }

    /// Runs `command` inside the container (`docker exec`), failing with its output.
    pub(crate) async fn exec(&self, command: &[&str]) -> Result<(), TestkitError> {
        let output = tokio::process::Command::new("docker")
            .arg("exec")
            .arg(self.container.id())
            .args(command)
            .stdin(Stdio::null())
            .output()
            .await;
        succeeded(
            format!("docker exec {} {}", self.container.id(), command.join(" ")),
            output,
        )
    }

    /// Runs `docker ARGS… ID` with the docker client (synchronously).
    fn docker(&self, args: &[&str]) -> std::io::Result<std::process::Output> {
        std::process::Command::new("docker")
            .args(args)
            .arg(self.container.id())
            .stdin(Stdio::null())
            .output()
    }

    /// [`ServerContainer::docker`], failing with its output when it fails.
    fn docker_ok(&self, args: &[&str]) -> Result<(), TestkitError> {
        succeeded(
            format!("docker {} {}", args.join(" "), self.container.id()),
            self.docker(args),
        )
    }
}

/// Ok when the docker client ran `command` successfully; else why not, with its output.
fn succeeded(
    command: String,
    output: std::io::Result<std::process::Output>,
) -> Result<(), TestkitError> {
    let output = output.map_err(|source| TestkitError::Spawn {
        program: "docker".into(),
        source,
    })?;
    if output.status.success() {
        return Ok(());
    }
    Err(TestkitError::Admin {
        command,
        output: format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        )
        .trim()
        .to_owned(),
    })
}

/// Sets 127.0.0.1 as the host address of every published port.
fn publish_on_loopback(config: &mut HostConfig) {
    for bindings in config
        .port_bindings
        .iter_mut()
        .flat_map(|map| map.values_mut())
    {
        for binding in bindings.iter_mut().flatten() {
            binding.host_ip = Some("127.0.0.1".into());
        }
    }
}

/// Fails unless a Docker engine answers and has `image:latest` (nothing is
/// pulled: there may be no registry).
async fn require_image(image: &str) -> Result<(), TestkitError> {
    let reference = format!("{image}:{TAG}");
    let output = tokio::process::Command::new("docker")
        .args(["image", "inspect", "--format", "{{.Id}}", &reference])
        .stdin(Stdio::null())
        .output()
        .await
        .map_err(|source| TestkitError::Spawn {
            program: "docker (the Docker client; apt-get install docker.io)".into(),
            source,
        })?;
    if output.status.success() {
        return Ok(());
    }
    let stderr = String::from_utf8_lossy(&output.stderr);
    if stderr.contains("No such image") {
        return Err(TestkitError::Docker(format!(
            "image {reference} is not on the Docker engine; build it with `{IMAGES_SCRIPT}` (nothing is pulled)"
        )));
    }
    Err(TestkitError::Docker(format!(
        "no Docker engine answers (DOCKER_HOST={}): {}; {ENGINE_HINT}",
        std::env::var("DOCKER_HOST").unwrap_or_else(|_| "unset".into()),
        stderr.trim()
    )))
}
