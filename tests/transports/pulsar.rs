//! Pulsar (the `pulsar` crate) against a private Apache Pulsar standalone per test (one
//! JVM from the test kit), with a private subscription per subscriber and with one
//! shared subscription. The standalone runs without authentication, so the
//! refused-credentials check does not apply (token refusals are unit-tested).

use std::sync::Arc;
use std::time::Duration;

use iotload_core::plan::BrokerUrl;
use iotload_core::transport::pulsar::{PulsarSettings, PulsarTransport};
use iotload_testkit::PulsarBroker;

use crate::conformance::Broker;

/// A private Pulsar. With `SHARED`, every subscriber joins one shared subscription.
pub(crate) struct Pulsar<const SHARED: bool> {
    broker: PulsarBroker,
}

fn settings(shared: bool) -> PulsarSettings {
    PulsarSettings {
        connect_timeout: Duration::from_secs(3),
        subscription: shared.then(|| "iotload-conformance".to_string()),
        // The default refresh (1 s): a shorter one restarts, and so never finishes, the
        // pulsar crate's discovery of new topics on a loaded broker (docs/transports.md).
        ..PulsarSettings::default()
    }
}

fn transport(url: &str, shared: bool) -> PulsarTransport {
    PulsarTransport::new(BrokerUrl::parse(url).expect("url"), settings(shared)).expect("transport")
}

impl<const SHARED: bool> Broker for Pulsar<SHARED> {
    type T = PulsarTransport;

    fn available() -> bool {
        iotload_testkit::pulsar_available()
    }

    async fn start() -> Self {
        let broker = PulsarBroker::start().await.expect("Apache Pulsar starts");
        Self { broker }
    }

    fn transport(&self) -> Arc<PulsarTransport> {
        Arc::new(transport(&self.broker.url(), SHARED))
    }

    fn unreachable(port: u16) -> PulsarTransport {
        transport(&format!("pulsar://127.0.0.1:{port}"), SHARED)
    }

    fn with_wrong_password(&self) -> Option<PulsarTransport> {
        None
    }
}

mod private_subscription {
    conformance_suite!(super::Pulsar<false>);
}

mod shared_subscription {
    conformance_suite!(super::Pulsar<true>);
}
