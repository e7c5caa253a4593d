//! iotload's engine, shared by every component: the stamp each stimulus carries, the
//! open-loop schedule, sequence accounting, latency recording, the run summary, and the
//! broker transports behind one [`transport::Transport`] trait.
//!
//! Nothing here parses command lines or prints to a terminal except [`args`] (the
//! option groups every component shares) and [`summary`] (the end-of-run table).
#![warn(missing_docs)]

pub mod args;
pub mod backlog;
pub mod clock_offset;
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
pub mod summary;
pub mod threshold;
pub mod timer;
pub mod transport;
pub mod usage;
