//! The embedded MQTT broker behind a zero-setup `iotload run`.
//!
//! It is rumqttd, started on its own thread on 127.0.0.1 at an ephemeral port, with an
//! MQTT 3.1.1 and an MQTT 5 listener. It lives until the process ends. It is meant for a
//! first run and quick checks, not as a reference target for broker comparisons.

use std::collections::HashMap;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::{Duration, Instant};

use rumqttd::{Broker, Config, ConnectionSettings, RouterConfig, ServerSettings};

/// Why the embedded broker did not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EmbeddedBrokerError {
    /// No free loopback port could be found.
    #[error("cannot find a free port on 127.0.0.1")]
    NoPort(#[source] std::io::Error),
    /// The broker thread did not start listening in time.
    #[error("the embedded broker did not start listening on {addr} within 10 s")]
    NotListening {
        /// The address it should listen on.
        addr: SocketAddr,
    },
}

/// A running embedded broker.
#[derive(Debug, Clone)]
pub struct EmbeddedBroker {
    v4: SocketAddr,
    v5: SocketAddr,
}

/// Whether a thread of this process (by name) belongs to the embedded broker: the thread
/// that starts it, rumqttd's router (`router-0`) and one per listener (`broker-v4`,
/// `broker-v5`); how `iotload run` tells the broker's CPU time from its own.
pub fn is_broker_thread(name: &str) -> bool {
    name == "embedded-broker" || name.starts_with("broker-v") || name.starts_with("router-")
}

impl EmbeddedBroker {
    /// Starts the broker and returns once both listeners accept connections.
    pub fn start(max_connections: usize) -> Result<Self, EmbeddedBrokerError> {
        let v4 = free_addr()?;
        let v5 = free_addr()?;
        let connections = ConnectionSettings {
            connection_timeout_ms: 60_000,
            max_payload_size: 1 << 20,
            max_inflight_count: 500,
            auth: None,
            external_auth: None,
            dynamic_filters: true,
        };
        let server = |name: &str, listen| ServerSettings {
            name: name.to_string(),
            listen,
            tls: None,
            next_connection_delay_ms: 0,
            connections: connections.clone(),
        };
        let config = Config {
            id: 0,
            router: RouterConfig {
                max_connections: max_connections.max(16),
                max_outgoing_packet_count: 1_000,
                max_segment_size: 100 << 20,
                max_segment_count: 10,
                ..Default::default()
            },
            v4: Some(HashMap::from([("1".to_string(), server("broker-v4", v4))])),
            v5: Some(HashMap::from([("1".to_string(), server("broker-v5", v5))])),
            ..Default::default()
        };
        std::thread::Builder::new()
            .name("embedded-broker".into())
            .spawn(move || {
                let mut broker = Broker::new(config);
                if let Err(e) = broker.start() {
                    tracing::error!("embedded broker stopped: {e}");
                }
            })
            .map_err(EmbeddedBrokerError::NoPort)?;
        for addr in [v4, v5] {
            wait_listening(addr)?;
        }
        Ok(Self { v4, v5 })
    }

    /// `mqtt://127.0.0.1:PORT` of the MQTT 3.1.1 listener.
    pub fn url_v311(&self) -> String {
        format!("mqtt://{}", self.v4)
    }

    /// `mqtt://127.0.0.1:PORT` of the MQTT 5 listener.
    pub fn url_v5(&self) -> String {
        format!("mqtt://{}", self.v5)
    }
}

fn free_addr() -> Result<SocketAddr, EmbeddedBrokerError> {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map_err(EmbeddedBrokerError::NoPort)
}

fn wait_listening(addr: SocketAddr) -> Result<(), EmbeddedBrokerError> {
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
            return Ok(());
        }
        // Readiness has no event to wait on: the broker thread gives no signal.
        #[allow(clippy::disallowed_methods)]
        std::thread::sleep(Duration::from_millis(10));
    }
    Err(EmbeddedBrokerError::NotListening { addr })
}
