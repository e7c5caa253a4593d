//! Every broker family iotload knows, one line each. A line names the family's variant,
//! its transport and flag types, the cargo feature that builds it and its URL schemes;
//! from it come [`BrokerKind`], URL parsing and display, the "not built in this binary"
//! error, every family's flags ([`BrokerFlags`]) and the one place that turns a URL into a
//! running transport ([`AnyTransport::open`]).
//!
//! The engine is generic over [`Transport`]; the binary instantiates it once, with
//! [`AnyTransport`], whose publishers and subscribers are enums over the built families:
//! one branch per message, no boxing.

use super::spec::BrokerSpec;
use super::{ClientIdentity, Incoming, Outgoing, Publisher, Subscriber, Transport, TransportError};
use crate::args::BrokerArgs;
use crate::plan::BrokerUrl;

brokers! {
    /// MQTT 3.1.1 / 5 (`mqtt://`, `mqtts://`, `tcp://`, `ssl://`).
    Mqtt => mqtt::{MqttTransport, MqttFlags} if "mqtt",
        BrokerSpec::new("MQTT", &["mqtt", "tcp"], 1883, &["mqtts", "ssl"], 8883);
    /// NATS (`nats://`, `tls://`, `nats+tls://`).
    Nats => nats::{NatsTransport, NatsFlags} if "nats",
        BrokerSpec::new("NATS", &["nats"], 4222, &["tls", "nats+tls"], 4222);
    /// AMQP 0.9.1, e.g. RabbitMQ (`amqp://`, `amqps://`); the path is the virtual host.
    Amqp => amqp::{AmqpTransport, AmqpFlags} if "amqp",
        BrokerSpec::new("AMQP", &["amqp"], 5672, &["amqps"], 5671).with_path("the virtual host");
    /// Kafka protocol (`kafka://`, `kafka+tls://`).
    Kafka => kafka::{KafkaTransport, KafkaFlags} if "kafka",
        BrokerSpec::new("Kafka", &["kafka"], 9092, &["kafka+tls", "kafka+ssl"], 9093);
    /// ZeroMQ PUB/SUB (`zmq+tcp://`): an `iotload zmq-proxy` forwarder or a peer.
    Zmq => zmq::{ZmqTransport, ZmqFlags} if "zmq",
        BrokerSpec::new("ZeroMQ", &["zmq+tcp", "zmq"], 5559, &[], 0);
    /// Apache Pulsar (`pulsar://`, `pulsar+ssl://`).
    Pulsar => pulsar::{PulsarTransport, PulsarFlags} if "pulsar",
        BrokerSpec::new("Pulsar", &["pulsar"], 6650, &["pulsar+ssl"], 6651);
}

/// How the registry builds a family's transport from the command line; each family
/// implements it in its `flags.rs`, next to its flags.
pub trait Registered: Transport + Sized {
    /// The family's own flags, shown under their own help heading.
    type Flags: clap::Args + Clone + std::fmt::Debug;

    /// The transport for `url`, from the flags every family shares and its own.
    fn open(
        url: BrokerUrl,
        broker: &BrokerArgs,
        flags: &Self::Flags,
    ) -> Result<Self, TransportError>;

    /// A flag of this family that was given although the URL names another family.
    fn stray_flag(_flags: &Self::Flags) -> Option<&'static str> {
        None
    }

    /// A flag that makes every subscriber of the family share one consumer group or
    /// queue; `iotload run` refuses it, since its echo and collector must not share one.
    fn shared_consumers_flag(_flags: &Self::Flags) -> Option<&'static str> {
        None
    }

    /// Why the `header` stamp carrier cannot ride on this family with these flags.
    fn header_stamp_problem(_flags: &Self::Flags) -> Option<String> {
        None
    }
}

impl BrokerKind {
    /// The family's name as users know it.
    pub fn label(self) -> &'static str {
        self.spec().label
    }

    /// The family a scheme names, and whether it means TLS.
    pub fn from_scheme(scheme: &str) -> Option<(Self, bool)> {
        let scheme = scheme.to_ascii_lowercase();
        Self::ALL
            .iter()
            .find_map(|&kind| Some((kind, kind.spec().tls_of(&scheme)?)))
    }

    /// Every scheme, for error messages: `mqtt://, mqtts://, ... or pulsar+ssl://`.
    pub fn all_schemes() -> String {
        let schemes: Vec<String> = Self::ALL
            .iter()
            .flat_map(|kind| {
                let spec = kind.spec();
                spec.plain.first().into_iter().chain(spec.tls.first())
            })
            .map(|scheme| format!("{scheme}://"))
            .collect();
        match schemes.split_last() {
            Some((last, rest)) if !rest.is_empty() => format!("{} or {last}", rest.join(", ")),
            _ => schemes.concat(),
        }
    }

    /// How a URL of the family starts: `nats:// or tls://`.
    pub fn schemes(self) -> String {
        let spec = self.spec();
        let mut names = vec![format!("{}://", spec.scheme(false))];
        if !spec.tls.is_empty() {
            names.push(format!("{}://", spec.scheme(true)));
        }
        names.join(" or ")
    }

    fn not_built(self) -> TransportError {
        TransportError::NotBuilt {
            broker: self.label(),
            feature: self.feature(),
        }
    }
}
