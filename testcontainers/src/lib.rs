//! iotload's test kit: gives each integration test its own fresh, real server
//! (an MQTT broker run as a private `mosquitto` process, a Redis or a NATS
//! server, an Apache Kafka or Apache Pulsar JVM assembled from Maven Central
//! jars, each on ephemeral loopback ports, or a private virtual host on the
//! machine's RabbitMQ), plus helpers for tests that use the machine's shared
//! servers instead. The API says nothing about *how* a server is started: with
//! env `IOTLOAD_TESTKIT_BACKEND=docker`, MQTT brokers, Redis, NATS, RabbitMQ, Apache
//! Kafka and Apache Pulsar servers run as containers of locally built images instead (`scripts/docker-images`;
//! see [`Backend`]), and no test changes.
//!
//! ```no_run
//! # async fn demo() -> Result<(), iotload_testkit::TestkitError> {
//! let broker = iotload_testkit::MqttBroker::start().await?;
//! let url = broker.url(); // "mqtt://127.0.0.1:PORT"
//! # let _ = url;
//! # Ok(())
//! # }
//! ```

#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod container;
mod error;
mod fsutil;
mod jvm;
mod kafka;
mod mqtt;
mod nats;
mod pki;
mod process;
mod pulsar;
mod rabbitmq;
mod redis;
mod redis_cluster;
mod search;

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

pub use container::{BACKEND_ENV, Backend, IMAGES_SCRIPT, backend};
pub use error::TestkitError;
pub use jvm::{JVM_CACHE_ENV, JVM_SERVERS_INSTALL, jvm_cache_dir};
pub use kafka::{KAFKA_PASSWORD, KAFKA_USER, KAFKA_VERSION, KafkaBroker, kafka_available};
pub use mqtt::{MqttBroker, MqttBrokerOptions};
pub use nats::{DEFAULT_NATS_URL, NATS_URL_ENV, NatsOptions, NatsServer, machine_nats_url};
pub use pki::TestPki;
pub use pulsar::{PULSAR_VERSION, PulsarBroker, PulsarOptions, pulsar_available};
pub use rabbitmq::{
    AMQP_URL_ENV, DEFAULT_AMQP_URL, RABBITMQ_START_HINT, RabbitVhost, machine_amqp_url,
    require_rabbitmq,
};
pub use redis::{
    DEFAULT_REDIS_URL, REDIS_URL_ENV, RedisOptions, RedisServer, RedisTls, machine_redis_url,
};
pub use redis_cluster::RedisCluster;
pub use search::{ELASTICSEARCH_VERSION, SearchNode, SearchNodeOptions, search_available};

/// Environment variable naming the machine's shared MQTT broker.
pub const MQTT_URL_ENV: &str = "IOTLOAD_TEST_MQTT_URL";

/// The shared MQTT broker used when [`MQTT_URL_ENV`] is unset.
pub const DEFAULT_MQTT_URL: &str = "mqtt://127.0.0.1:1883";

/// How long [`require_server`] waits for a TCP connection.
const REQUIRE_TIMEOUT: Duration = Duration::from_secs(2);

/// The machine's shared servers: address from env `IOTLOAD_TEST_MQTT_URL`,
/// default "mqtt://127.0.0.1:1883".
pub fn machine_mqtt_url() -> String {
    std::env::var(MQTT_URL_ENV)
        .ok()
        .filter(|url| !url.trim().is_empty())
        .unwrap_or_else(|| DEFAULT_MQTT_URL.to_owned())
}

/// Whether a server is reachable (TCP connect within 2 s). `addr` may be
/// `host:port` or a URL such as `mqtt://host:port/…`. If it is not reachable:
/// when env `CI` is `true`, panic with a message naming the server, the address
/// and how to start it (`start_hint`); otherwise return `false` so the caller
/// can print "skipped: …" and return.
///
/// # Panics
///
/// When the server is unreachable and `CI=true`, so that CI never silently
/// skips a test.
pub async fn require_server(name: &str, addr: &str, start_hint: &str) -> bool {
    let target = host_port(addr);
    let outcome =
        tokio::time::timeout(REQUIRE_TIMEOUT, tokio::net::TcpStream::connect(target)).await;
    let reason = match outcome {
        Ok(Ok(_stream)) => return true,
        Ok(Err(err)) => err.to_string(),
        Err(_elapsed) => format!("no TCP connection within {REQUIRE_TIMEOUT:?}"),
    };
    let message =
        format!("{name} is not reachable at {addr} ({reason}); start it with: {start_hint}");
    if is_ci() {
        panic!("{message} (CI=true, so this test may not be skipped)");
    }
    tracing::warn!("{message}");
    false
}

/// Whether env `CI` says this is a CI run.
fn is_ci() -> bool {
    std::env::var("CI")
        .map(|value| value.eq_ignore_ascii_case("true") || value == "1")
        .unwrap_or(false)
}

/// The `host:port` part of `addr`, which may be a URL with scheme, user info
/// and path.
fn host_port(addr: &str) -> &str {
    let rest = addr.split_once("://").map_or(addr, |(_, rest)| rest);
    let rest = rest.split(['/', '?', '#']).next().unwrap_or(rest);
    rest.rsplit_once('@').map_or(rest, |(_, host)| host)
}

/// A topic prefix unique to this test process and call, so tests sharing a
/// broker never see each other's messages. It contains no MQTT wildcard and
/// no trailing `/`, e.g. `iotload/telemetry/4242-1a2b3c-7`.
pub fn unique_topic(prefix: &str) -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    let prefix = prefix.trim_end_matches('/').replace(['+', '#'], "_");
    let id = format!("{}-{nanos:x}-{n}", std::process::id());
    if prefix.is_empty() {
        id
    } else {
        format!("{prefix}/{id}")
    }
}

/// A free loopback TCP port (bind 127.0.0.1:0, read the port, release), never
/// one this process handed out before.
///
/// The kernel may give a released port again at the next bind: two listeners
/// of one server could then be given the same port (CI saw Kafka refuse
/// `PLAINTEXT` and `SASL_PLAINTEXT` both on one port). Every port handed out is
/// remembered for the life of the process, and a port given again is held
/// bound while the next one is asked for, so each call returns a new port.
///
/// # Panics
///
/// When the loopback interface cannot bind any port at all, in which case no
/// network test could run anyway.
pub fn free_port() -> u16 {
    match try_free_port() {
        Ok(port) => port,
        Err(err) => panic!("cannot find a free port on 127.0.0.1: {err}"),
    }
}

/// [`free_port`] without the panic.
pub(crate) fn try_free_port() -> std::io::Result<u16> {
    /// Ports this process handed out; a test process asks for a few dozen.
    static HANDED_OUT: std::sync::Mutex<BTreeSet<u16>> = std::sync::Mutex::new(BTreeSet::new());
    /// Binds tried before giving up: the loopback range holds ~28,000 ports.
    const ATTEMPTS: usize = 64;
    let mut handed_out = HANDED_OUT
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    // Held until a new port is found, so the kernel cannot give them again.
    let mut already_given = Vec::new();
    for _ in 0..ATTEMPTS {
        let listener = std::net::TcpListener::bind(("127.0.0.1", 0))?;
        let port = listener.local_addr()?.port();
        if handed_out.insert(port) {
            return Ok(port);
        }
        already_given.push(listener);
    }
    Err(std::io::Error::new(
        std::io::ErrorKind::AddrInUse,
        format!("{ATTEMPTS} binds on 127.0.0.1 gave only ports this process already handed out"),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_port_strips_url_parts() {
        assert_eq!(host_port("127.0.0.1:1883"), "127.0.0.1:1883");
        assert_eq!(host_port("mqtt://127.0.0.1:1883"), "127.0.0.1:1883");
        assert_eq!(
            host_port("mqtts://u:p@localhost:8883/x?y"),
            "localhost:8883"
        );
    }

    #[test]
    fn unique_topics_differ_and_keep_prefix() {
        let a = unique_topic("iotload/t/");
        let b = unique_topic("iotload/t");
        assert_ne!(a, b);
        assert!(a.starts_with("iotload/t/"), "{a}");
        assert!(!a.contains("//") && !a.ends_with('/'), "{a}");
        assert!(!unique_topic("a/+/#").contains(['+', '#']));
    }

    #[test]
    fn free_ports_are_never_handed_out_twice() {
        let ports: Vec<u16> = (0..200).map(|_| free_port()).collect();
        let distinct: BTreeSet<u16> = ports.iter().copied().collect();
        assert_eq!(distinct.len(), ports.len(), "{ports:?}");
    }

    #[test]
    fn free_port_is_bindable() {
        let port = free_port();
        assert_ne!(port, 0);
        std::net::TcpListener::bind(("127.0.0.1", port)).unwrap();
    }

    #[test]
    fn machine_url_has_a_scheme() {
        assert!(machine_mqtt_url().contains("://"));
    }

    #[tokio::test]
    async fn require_server_on_a_closed_port_skips_or_panics_in_ci() {
        let addr = format!("127.0.0.1:{}", free_port());
        let result =
            tokio::spawn(async move { require_server("nothing", &addr, "nothing to start").await })
                .await;
        if is_ci() {
            assert!(result.unwrap_err().is_panic());
        } else {
            assert!(!result.unwrap());
        }
    }
}
