//! The latency stamp that every iotload stimulus carries, and the three
//! carriers that put it on the wire: a JSON object (the default, with
//! configurable field paths, time formats and device ids, an optional user body
//! and padding), a compact
//! 32-byte binary header for echo-style responders, and transport headers
//! (MQTT 5 user properties, later Kafka/NATS/AMQP headers) that leave the
//! payload untouched. Encoding is on the hot path and writes into a caller's
//! reusable buffer; decoding never builds an intermediate JSON tree.

mod binary;
mod fields;
mod header;
mod json;
mod time;
mod values;

use std::time::{SystemTime, UNIX_EPOCH};

pub use binary::BinaryCarrier;
pub use fields::{DeviceIdFormat, DeviceIdPart, FieldPath, JsonFields};
pub use header::HeaderCarrier;
pub use json::JsonCarrier;
pub use time::{TimeFormat, TimeReader, Zone};
pub use values::{DeviceValues, PLACEHOLDERS, TemplateError};

/// What every stimulus carries so the collector can compute latency.
///
/// All times are microseconds since the Unix epoch (UTC).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stamp {
    /// Id of the simulated device that produced the message.
    pub device: u32,
    /// Per-device sequence number: starts at 0 and increases by 1 per message.
    pub seq: u64,
    /// When the schedule intended the message to go out (µs since the Unix
    /// epoch); measuring from here avoids coordinated omission.
    pub intended_us: u64,
    /// When the message was actually handed to the transport (µs since the
    /// Unix epoch).
    pub sent_us: u64,
}

/// A stamp as a receiver reads it: the send time always; the device and sequence
/// number when the message carries them (the JSON carrier can be told to expect only a
/// time, as iPaaS flows that copy one timestamp give).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReceivedStamp {
    /// The device id, if the message carries one.
    pub device: Option<DeviceId>,
    /// The per-device sequence number, if the message carries one.
    pub seq: Option<u64>,
    /// When the schedule intended the message to go out (µs since the epoch); the send
    /// time when the message does not say.
    pub intended_us: u64,
    /// When the message was handed to the transport (µs since the epoch).
    pub sent_us: u64,
}

/// A device id as messages carry it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum DeviceId {
    /// A number (iotload's own devices).
    Number(u32),
    /// A string (an IMEI, a MAC, `VZW_LH_UNIT_007`).
    Name(String),
}

impl From<Stamp> for ReceivedStamp {
    fn from(s: Stamp) -> Self {
        Self {
            device: Some(DeviceId::Number(s.device)),
            seq: Some(s.seq),
            intended_us: s.intended_us,
            sent_us: s.sent_us,
        }
    }
}

/// Why a payload or a set of headers could not be decoded into a [`Stamp`].
#[derive(Debug, thiserror::Error, PartialEq, Eq, Clone)]
#[non_exhaustive]
pub enum StampError {
    /// The payload is not valid JSON, or its top level is not a JSON object.
    #[error("payload is not a json object")]
    NotJson,
    /// A required stamp field is absent from the JSON object.
    #[error("missing field `{field}`")]
    Missing {
        /// The configured name of the absent field.
        field: String,
    },
    /// A stamp field is present but holds a value of the wrong JSON type or range.
    #[error("field `{field}` has the wrong type, expected {expected}")]
    WrongType {
        /// The configured name of the offending field.
        field: String,
        /// What the field should have held.
        expected: &'static str,
    },
    /// A time field holds a string that is not a supported ISO-8601 time.
    #[error("field `{field}` is not a valid time: {value:?}")]
    BadTime {
        /// The configured name of the offending field.
        field: String,
        /// The offending string (cut to its first 64 characters).
        value: String,
    },
    /// A binary payload is shorter than its fixed header.
    #[error("payload is {len} bytes, need at least {need}")]
    TooShort {
        /// Length of the payload received.
        len: usize,
        /// Minimum length required.
        need: usize,
    },
    /// A binary payload does not start with the `IOTL` magic.
    #[error("payload does not start with the binary stamp magic")]
    BadMagic,
    /// A required stamp header is absent.
    #[error("missing header `{name}`")]
    MissingHeader {
        /// Name of the absent header.
        name: &'static str,
    },
    /// A stamp header is present but its value is not a valid number.
    #[error("header `{name}` has an invalid value {value:?}")]
    BadHeader {
        /// Name of the offending header.
        name: &'static str,
        /// The offending value (cut to its first 64 characters).
        value: String,
    },
    /// A user-supplied JSON body is valid JSON but not a JSON object.
    #[error("body is not a json object")]
    BodyNotObject,
}

impl StampError {
    /// A short, stable, snake_case label per variant, used to count
    /// undecodable messages by kind.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::NotJson => "not_json",
            Self::Missing { .. } => "missing_field",
            Self::WrongType { .. } => "wrong_type",
            Self::BadTime { .. } => "bad_time",
            Self::TooShort { .. } => "too_short",
            Self::BadMagic => "bad_magic",
            Self::MissingHeader { .. } => "missing_header",
            Self::BadHeader { .. } => "bad_header",
            Self::BodyNotObject => "body_not_object",
        }
    }
}

/// The current wall-clock time in microseconds since the Unix epoch; a clock
/// set before 1970 gives 0 (and one past the year 586 000 saturates).
pub fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
}

/// Cut an offending value for inclusion in an error, so a huge bad payload
/// does not produce a huge error.
fn snippet(s: &str) -> String {
    s.chars().take(64).collect()
}

#[cfg(test)]
mod tests;
