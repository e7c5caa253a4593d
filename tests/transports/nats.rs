//! NATS core (async-nats) against a private `nats-server` that requires a password.

use std::sync::Arc;
use std::time::Duration;

use iotload_core::plan::BrokerUrl;
use iotload_core::transport::nats::{JetStreamAck, NatsSettings, NatsTransport};
use iotload_core::transport::{ClientIdentity, Subscriber, Transport};
use iotload_testkit::{NatsOptions, NatsServer};

use crate::conformance::Broker;

pub(crate) struct Nats {
    server: NatsServer,
}

fn transport(url: &str) -> NatsTransport {
    transport_with(url, None)
}

fn transport_with(url: &str, jetstream: Option<JetStreamAck>) -> NatsTransport {
    let settings = NatsSettings {
        connect_timeout: Duration::from_secs(3),
        jetstream: jetstream.is_some(),
        jetstream_ack: jetstream.unwrap_or_default(),
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

/// JetStream: publishes acknowledged once stored, subscribers read through consumers
/// with explicit acks. One stream stores every test subject (`conf.>`), created by a
/// first subscriber, so the filter check can publish to topics no test filter matches.
pub(crate) struct JetStream {
    server: NatsServer,
}

impl Broker for JetStream {
    type T = NatsTransport;

    async fn start() -> Self {
        let server = NatsServer::start_with(NatsOptions {
            jetstream: true,
            user: Some(("conf".into(), "secret".into())),
            ..NatsOptions::default()
        })
        .await
        .expect("nats-server -js starts");
        let broker = Self { server };
        let creator = broker
            .transport()
            .subscriber(&ClientIdentity::default(), &["conf/#".to_string()])
            .await
            .expect("the stream for conf.> is created");
        creator.close().await.expect("close");
        broker
    }

    fn transport(&self) -> Arc<NatsTransport> {
        let port = self.server.port();
        Arc::new(transport_with(
            &format!("nats://conf:secret@127.0.0.1:{port}"),
            Some(JetStreamAck::Explicit),
        ))
    }

    fn unreachable(port: u16) -> NatsTransport {
        transport_with(
            &format!("nats://127.0.0.1:{port}"),
            Some(JetStreamAck::Explicit),
        )
    }

    fn with_wrong_password(&self) -> Option<NatsTransport> {
        let port = self.server.port();
        Some(transport_with(
            &format!("nats://conf:wrong@127.0.0.1:{port}"),
            Some(JetStreamAck::Explicit),
        ))
    }
}

mod jetstream {
    conformance_suite!(super::JetStream);
}
