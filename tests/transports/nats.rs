//! NATS core (async-nats) against a private `nats-server` that requires a password.

use std::sync::Arc;
use std::time::Duration;

use iotload_core::plan::BrokerUrl;
use iotload_core::transport::nats::{NatsSettings, NatsTransport};
use iotload_testkit::{NatsOptions, NatsServer};

use crate::conformance::Broker;

pub(crate) struct Nats {
    server: NatsServer,
}

fn transport(url: &str) -> NatsTransport {
    let settings = NatsSettings {
        connect_timeout: Duration::from_secs(3),
        ..NatsSettings::default()
    };
    NatsTransport::new(BrokerUrl::parse(url).expect("url"), settings).expect("transport")
}

impl Broker for Nats {
    type T = NatsTransport;

    async fn start() -> Self {
        let server = NatsServer::start_with(NatsOptions {
            user: Some(("conf".into(), "secret".into())),
            ..NatsOptions::default()
        })
        .await
        .expect("nats-server starts");
        Self { server }
    }

    fn transport(&self) -> Arc<NatsTransport> {
        let port = self.server.port();
        Arc::new(transport(&format!("nats://conf:secret@127.0.0.1:{port}")))
    }

    fn unreachable(port: u16) -> NatsTransport {
        transport(&format!("nats://127.0.0.1:{port}"))
    }

    fn with_wrong_password(&self) -> Option<NatsTransport> {
        let port = self.server.port();
        Some(transport(&format!("nats://conf:wrong@127.0.0.1:{port}")))
    }
}

conformance_suite!(Nats);
