//! Pulsar (the `pulsar` crate) against a private Apache Pulsar standalone per test (one
//! JVM from the test kit) that requires token authentication, with a private
//! subscription per subscriber and with one shared subscription. The refused-credentials
//! check presents a token signed with another key.

use std::sync::Arc;
use std::time::Duration;

use iotload_core::plan::BrokerUrl;
use iotload_core::transport::pulsar::{PulsarSettings, PulsarTransport};
use iotload_testkit::{PulsarBroker, PulsarOptions};

use crate::conformance::Broker;

/// A private Pulsar. With `SHARED`, every subscriber joins one shared subscription.
pub(crate) struct Pulsar<const SHARED: bool> {
    broker: PulsarBroker,
}

/// A well-formed HS256 token for subject `iotload`, signed with a key no broker has.
const FOREIGN_TOKEN: &str = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJpb3Rsb2FkIn0.\
                             lgJG0_P5b3RCcO6nndiyHsjtGJNK29YFEjwxMgO9U7M";

/// How long the unreachable check waits: nothing listens, so the refusal is immediate.
/// Transports on a running broker keep the default connect timeout (10 s), which also
/// bounds creating a producer or subscription and a receipt: a Pulsar in a container on a
/// loaded CI machine once took longer than 3 s.
const UNREACHABLE_TIMEOUT: Duration = Duration::from_secs(3);

fn settings(shared: bool, token: Option<&str>) -> PulsarSettings {
    PulsarSettings {
        token: token.map(str::to_string),
        subscription: shared.then(|| "iotload-conformance".to_string()),
        // The default refresh (1 s): a wildcard subscription finds a new topic within a
        // refresh plus the time to subscribe, each attempt run to completion however long
        // a loaded broker takes (docs/transports.md).
        ..PulsarSettings::default()
    }
}

fn transport(url: &str, settings: PulsarSettings) -> PulsarTransport {
    PulsarTransport::new(BrokerUrl::parse(url).expect("url"), settings).expect("transport")
}

impl<const SHARED: bool> Broker for Pulsar<SHARED> {
    type T = PulsarTransport;

    fn available() -> bool {
        iotload_testkit::pulsar_available()
    }

    async fn start() -> Self {
        let broker = PulsarBroker::start_with(PulsarOptions { token_auth: true })
            .await
            .expect("Apache Pulsar starts");
        Self { broker }
    }

    fn transport(&self) -> Arc<PulsarTransport> {
        Arc::new(transport(
            &self.broker.url(),
            settings(SHARED, self.broker.token()),
        ))
    }

    fn unreachable(port: u16) -> PulsarTransport {
        let settings = PulsarSettings {
            connect_timeout: UNREACHABLE_TIMEOUT,
            ..settings(SHARED, None)
        };
        transport(&format!("pulsar://127.0.0.1:{port}"), settings)
    }

    fn with_wrong_password(&self) -> Option<PulsarTransport> {
        Some(transport(
            &self.broker.url(),
            settings(SHARED, Some(FOREIGN_TOKEN)),
        ))
    }
}

mod private_subscription {
    conformance_suite!(super::Pulsar<false>);
}

mod shared_subscription {
    conformance_suite!(super::Pulsar<true>);
}
