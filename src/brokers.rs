//! Which transport a broker URL names: the dispatch macro and one constructor per broker
//! family. Adding a broker means one match arm and one constructor here.

use std::sync::Arc;

use iotload_core::args::BrokerArgs;
use iotload_core::plan::BrokerUrl;
use iotload_core::transport::TransportError;
use iotload_core::transport::mqtt::MqttTransport;

/// Builds the transport the URL names and runs `$body` with it bound to `$t`. Each arm is
/// monomorphised, so the per-message path never goes through dynamic dispatch.
macro_rules! with_transport {
    ($broker:expr, $url:expr, |$t:ident| $body:expr) => {{
        use iotload_core::plan::BrokerKind;
        match $url.kind {
            BrokerKind::Mqtt => {
                let $t = $crate::brokers::mqtt($broker, $url)?;
                $body
            }
            #[cfg(feature = "nats")]
            BrokerKind::Nats => {
                let $t = $crate::brokers::nats($broker, $url)?;
                $body
            }
            #[cfg(feature = "amqp")]
            BrokerKind::Amqp => {
                let $t = $crate::brokers::amqp($broker, $url)?;
                $body
            }
            #[cfg(feature = "kafka")]
            BrokerKind::Kafka => {
                let $t = $crate::brokers::kafka($broker, $url)?;
                $body
            }
            #[cfg(feature = "pulsar")]
            BrokerKind::Pulsar => {
                let $t = $crate::brokers::pulsar($broker, $url)?;
                $body
            }
            #[cfg(feature = "zmq")]
            BrokerKind::Zmq => {
                let $t = $crate::brokers::zmq($broker, $url)?;
                $body
            }
            #[allow(unreachable_patterns)]
            other => Err($crate::brokers::not_built(other).into()),
        }
    }};
}
pub(crate) use with_transport;

/// The error for a broker family this build left out.
#[allow(dead_code)]
pub(crate) fn not_built(kind: iotload_core::plan::BrokerKind) -> TransportError {
    use iotload_core::plan::BrokerKind;
    let feature = match kind {
        BrokerKind::Mqtt => "mqtt",
        BrokerKind::Nats => "nats",
        BrokerKind::Amqp => "amqp",
        BrokerKind::Kafka => "kafka",
        BrokerKind::Zmq => "zmq",
        BrokerKind::Pulsar => "pulsar",
    };
    TransportError::NotBuilt {
        broker: kind.label(),
        feature,
    }
}

/// Options that only one broker family takes, checked before connecting.
fn only_for(broker: &BrokerArgs, url: &BrokerUrl) -> Result<(), TransportError> {
    use iotload_core::plan::BrokerKind;
    if broker.jetstream && url.kind != BrokerKind::Nats {
        return Err(TransportError::Unsupported(
            "--jetstream needs a NATS broker (nats:// or tls://)".into(),
        ));
    }
    Ok(())
}

pub(crate) fn mqtt(broker: &BrokerArgs, url: BrokerUrl) -> anyhow::Result<Arc<MqttTransport>> {
    only_for(broker, &url)?;
    Ok(Arc::new(MqttTransport::new(url, broker.mqtt_settings()?)?))
}

#[cfg(feature = "nats")]
pub(crate) fn nats(
    broker: &BrokerArgs,
    url: BrokerUrl,
) -> anyhow::Result<Arc<iotload_core::transport::nats::NatsTransport>> {
    only_for(broker, &url)?;
    Ok(Arc::new(iotload_core::transport::nats::NatsTransport::new(
        url,
        broker.nats_settings(),
    )?))
}

#[cfg(feature = "amqp")]
pub(crate) fn amqp(
    broker: &BrokerArgs,
    url: BrokerUrl,
) -> anyhow::Result<Arc<iotload_core::transport::amqp::AmqpTransport>> {
    only_for(broker, &url)?;
    Ok(Arc::new(iotload_core::transport::amqp::AmqpTransport::new(
        url,
        broker.amqp_settings(),
    )?))
}

#[cfg(feature = "kafka")]
pub(crate) fn kafka(
    broker: &BrokerArgs,
    url: BrokerUrl,
) -> anyhow::Result<Arc<iotload_core::transport::kafka::KafkaTransport>> {
    only_for(broker, &url)?;
    Ok(Arc::new(
        iotload_core::transport::kafka::KafkaTransport::new(url, broker.kafka_settings()?)?,
    ))
}

#[cfg(feature = "pulsar")]
pub(crate) fn pulsar(
    broker: &BrokerArgs,
    url: BrokerUrl,
) -> anyhow::Result<Arc<iotload_core::transport::pulsar::PulsarTransport>> {
    only_for(broker, &url)?;
    Ok(Arc::new(
        iotload_core::transport::pulsar::PulsarTransport::new(url, broker.pulsar_settings()?)?,
    ))
}

#[cfg(feature = "zmq")]
pub(crate) fn zmq(
    broker: &BrokerArgs,
    url: BrokerUrl,
) -> anyhow::Result<Arc<iotload_core::transport::zmq::ZmqTransport>> {
    only_for(broker, &url)?;
    Ok(Arc::new(iotload_core::transport::zmq::ZmqTransport::new(
        url,
        broker.zmq_settings()?,
    )?))
}
