//! MQTT (rumqttc) against a private Mosquitto with a password file, in both protocol
//! versions: 3.1.1 has no headers, 5 carries them as user properties.

use std::sync::Arc;
use std::time::Duration;

use iotload_core::plan::BrokerUrl;
use iotload_core::transport::mqtt::{MqttSettings, MqttTransport, MqttVersion};
use iotload_testkit::{MqttBroker, MqttBrokerOptions};

use crate::conformance::Broker;

/// A private Mosquitto; `V5` picks the protocol version the transport speaks.
pub(crate) struct Mosquitto<const V5: bool> {
    server: MqttBroker,
}

fn transport(url: &str, v5: bool) -> MqttTransport {
    let settings = MqttSettings {
        version: if v5 {
            MqttVersion::V5
        } else {
            MqttVersion::V311
        },
        qos: 1,
        connect_timeout: Duration::from_secs(3),
        ..MqttSettings::default()
    };
    MqttTransport::new(BrokerUrl::parse(url).expect("url"), settings).expect("transport")
}

impl<const V5: bool> Broker for Mosquitto<V5> {
    type T = MqttTransport;
    const HEADERS: bool = V5;

    async fn start() -> Self {
        let server = MqttBroker::start_with(MqttBrokerOptions {
            users: vec![("conf".into(), "secret".into())],
            ..MqttBrokerOptions::default()
        })
        .await
        .expect("mosquitto starts");
        Self { server }
    }

    fn transport(&self) -> Arc<MqttTransport> {
        let port = self.server.port();
        Arc::new(transport(
            &format!("mqtt://conf:secret@127.0.0.1:{port}"),
            V5,
        ))
    }

    fn unreachable(port: u16) -> MqttTransport {
        transport(&format!("mqtt://127.0.0.1:{port}"), V5)
    }

    fn with_wrong_password(&self) -> Option<MqttTransport> {
        let port = self.server.port();
        Some(transport(
            &format!("mqtt://conf:wrong@127.0.0.1:{port}"),
            V5,
        ))
    }
}

mod v311 {
    conformance_suite!(super::Mosquitto<false>);
}

mod v5 {
    conformance_suite!(super::Mosquitto<true>);
}
