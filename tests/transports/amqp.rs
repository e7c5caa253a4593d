//! AMQP 0.9.1 (lapin) against the machine's RabbitMQ, in a fresh virtual host per test.

use std::sync::Arc;
use std::time::Duration;

use iotload_core::plan::BrokerUrl;
use iotload_core::transport::amqp::{AmqpSettings, AmqpTransport};
use iotload_testkit::{RabbitVhost, require_rabbitmq};

use crate::conformance::Broker;

/// A private virtual host; `CONFIRMS` turns publisher confirms and manual acks on.
pub(crate) struct Rabbit<const CONFIRMS: bool> {
    vhost: RabbitVhost,
}

fn transport(url: &str, confirms: bool) -> AmqpTransport {
    let settings = AmqpSettings {
        connect_timeout: Duration::from_secs(3),
        confirms,
        manual_ack: confirms,
        ..AmqpSettings::default()
    };
    AmqpTransport::new(BrokerUrl::parse(url).expect("url"), settings).expect("transport")
}

impl<const CONFIRMS: bool> Broker for Rabbit<CONFIRMS> {
    type T = AmqpTransport;

    async fn start() -> Self {
        assert!(
            require_rabbitmq().await,
            "RabbitMQ is needed for the AMQP conformance suite"
        );
        let vhost = RabbitVhost::create().await.expect("a fresh virtual host");
        Self { vhost }
    }

    fn transport(&self) -> Arc<AmqpTransport> {
        Arc::new(transport(&self.vhost.url(), CONFIRMS))
    }

    fn unreachable(port: u16) -> AmqpTransport {
        transport(&format!("amqp://127.0.0.1:{port}"), CONFIRMS)
    }

    fn with_wrong_password(&self) -> Option<AmqpTransport> {
        Some(transport(&self.vhost.url_with_password("wrong"), CONFIRMS))
    }
}

mod no_ack {
    conformance_suite!(super::Rabbit<false>);
}

mod confirmed {
    conformance_suite!(super::Rabbit<true>);
}
