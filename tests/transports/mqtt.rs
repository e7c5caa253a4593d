//! MQTT against a private Mosquitto with a password file: rumqttc in both protocol
//! versions at QoS 1 (3.1.1 has no headers, 5 carries them as user properties), and the
//! direct QoS 0 publisher (3.1.1 at QoS 0).

use std::sync::Arc;
use std::time::Duration;

use iotload_core::plan::BrokerUrl;
use iotload_core::transport::mqtt::{MqttSettings, MqttTransport, MqttVersion};
use iotload_testkit::{MqttBroker, MqttBrokerOptions};

use crate::conformance::Broker;

/// A private Mosquitto; `V5` picks the protocol version the transport speaks, `QOS` its
/// quality of service (QoS 0 over 3.1.1 publishes through the direct writer).
pub(crate) struct Mosquitto<const V5: bool, const QOS: u8> {
    server: MqttBroker,
}

fn transport(url: &str, v5: bool, qos: u8) -> MqttTransport {
    let settings = MqttSettings {
        version: if v5 {
            MqttVersion::V5
        } else {
            MqttVersion::V311
        },
        qos,
        connect_timeout: Duration::from_secs(3),
        ..MqttSettings::default()
    };
    let t = MqttTransport::new(BrokerUrl::parse(url).expect("url"), settings).expect("transport");
    assert_eq!(t.publishes_directly(), !v5 && qos == 0);
    t
}

impl<const V5: bool, const QOS: u8> Broker for Mosquitto<V5, QOS> {
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
            QOS,
        ))
    }

    fn unreachable(port: u16) -> MqttTransport {
        transport(&format!("mqtt://127.0.0.1:{port}"), V5, QOS)
    }

    fn with_wrong_password(&self) -> Option<MqttTransport> {
        let port = self.server.port();
        Some(transport(
            &format!("mqtt://conf:wrong@127.0.0.1:{port}"),
            V5,
            QOS,
        ))
    }
}

mod v311 {
    conformance_suite!(super::Mosquitto<false, 1>);
}

mod v5 {
    conformance_suite!(super::Mosquitto<true, 1>);
}

mod direct_qos0 {
    conformance_suite!(super::Mosquitto<false, 0>);
}
