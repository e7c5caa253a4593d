//! iotload's engine, shared by every component. Sending: [`schedule`] → device shards
//! (in `loadgen`) → [`transport`] → [`stamp`]. Receiving: [`transport`] → [`seq`] →
//! [`recorder`] → [`store`]. The broker families sit behind one [`transport::Transport`]
//! trait, listed in `transport/registry.rs`.
//!
//! Nothing here prints to a terminal; the only command-line flags are the option groups
//! every component shares ([`args`]) and each broker family's own (in its folder).
#![warn(missing_docs)]

pub mod args;
pub mod backlog;
pub mod clock_offset;
pub mod cpu_meter;
#[cfg(feature = "embedded-broker")]
pub mod embedded_broker;
pub mod loss;
pub mod payload;
pub mod plan;
pub mod recorder;
pub mod schedule;
pub mod seq;
pub mod shutdown;
pub mod stamp;
pub mod store;
pub mod timer;
pub mod transport;
pub mod usage;
