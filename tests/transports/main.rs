//! Every transport through the same conformance suite (`conformance.rs` here), each
//! on a real server: one module per broker family, compiled when its feature is on.

#![allow(clippy::unwrap_used)]

#[macro_use]
mod conformance;

#[cfg(feature = "amqp")]
mod amqp;
#[cfg(feature = "kafka")]
mod kafka;
mod mqtt;
#[cfg(feature = "nats")]
mod nats;
#[cfg(feature = "pulsar")]
mod pulsar;
#[cfg(feature = "zmq")]
mod zmq;
