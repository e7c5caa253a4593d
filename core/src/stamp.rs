//! The latency stamp that every iotload stimulus carries, and the three
//! carriers that put it on the wire: a JSON object (the default, with
//! configurable field names, an optional user body and padding), a compact
//! 32-byte binary header for echo-style responders, and transport headers
//! (MQTT 5 user properties, later Kafka/NATS/AMQP headers) that leave the
//! payload untouched. Encoding is on the hot path and writes into a caller's
//! reusable buffer; decoding never builds an intermediate JSON tree.

use std::fmt;
use std::time::{SystemTime, UNIX_EPOCH};

use chrono::{DateTime, Datelike, Local, NaiveDateTime, TimeZone, Timelike};
use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Value};

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

// ---------------------------------------------------------------------------
// JSON carrier
// ---------------------------------------------------------------------------

/// The JSON field names under which the four stamp values travel.
///
/// If two names are equal, decoding gives both stamp values the same JSON
/// value; keep them distinct.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JsonFields {
    /// Field holding the device id (default `"device"`).
    pub device: String,
    /// Field holding the sequence number (default `"seq"`).
    pub seq: String,
    /// Field holding the intended send time (default `"intended_us"`).
    pub intended: String,
    /// Field holding the actual send time (default `"sent_us"`).
    pub sent: String,
}

impl Default for JsonFields {
    /// `"device"`, `"seq"`, `"intended_us"`, `"sent_us"`.
    fn default() -> Self {
        Self {
            device: "device".to_owned(),
            seq: "seq".to_owned(),
            intended: "intended_us".to_owned(),
            sent: "sent_us".to_owned(),
        }
    }
}

/// How [`JsonCarrier::encode`] writes the intended and sent times.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum TimeFormat {
    /// An unsigned integer: microseconds since the Unix epoch.
    #[default]
    Micros,
    /// A string such as `"2026-11-25T01:02:03.123456Z"`: UTC, microseconds,
    /// `Z` suffix. Times past 9999-12-31T23:59:59.999999Z cannot be written
    /// that way and fall back to integer microseconds (which decode the same).
    Iso8601,
}

/// Name of the padding field appended by [`JsonCarrier::encode`].
const PAD_FIELD: &[u8] = b",\"pad\":\"";
/// Bytes the padding field adds beyond its `x` run: `,"pad":""`.
const PAD_OVERHEAD: usize = PAD_FIELD.len() + 1;
/// The last microsecond that ISO-8601 encoding can write with a 4-digit
/// year: 9999-12-31T23:59:59.999999Z.
const MAX_ISO_US: u64 = 253_402_300_799_999_999;

const EXPECT_U32: &str = "an unsigned 32-bit integer";
const EXPECT_U64: &str = "an unsigned integer";
const EXPECT_TIME: &str = "an unsigned integer or an iso-8601 string";

/// Carries a [`Stamp`] as fields of a compact JSON object, optionally
/// followed by the user's own body fields and a padding field.
#[derive(Debug, Clone)]
pub struct JsonCarrier {
    fields: JsonFields,
    time_format: TimeFormat,
    /// `{"device":` with the configured, JSON-escaped name.
    key_device: Vec<u8>,
    /// `,"seq":`
    key_seq: Vec<u8>,
    /// `,"intended_us":`
    key_intended: Vec<u8>,
    /// `,"sent_us":`
    key_sent: Vec<u8>,
    /// The pre-serialised body fields, each as `,"name":value`.
    body: Vec<u8>,
    pad_to: usize,
}

impl JsonCarrier {
    /// Builds a carrier.
    ///
    /// `body`: extra fields of the user's JSON payload, written after the
    /// stamp fields; fields whose names clash with a stamp field are dropped,
    /// and so is a field named `pad` when `pad_to > 0`. `pad_to`: minimum
    /// total payload size in bytes. When the unpadded message is at least 9
    /// bytes (the size of an empty `,"pad":""`) short of it, a
    /// `"pad":"xxxx…"` string field brings it to exactly `pad_to`; when it is
    /// 1 to 8 bytes short, spaces before the closing brace do (valid JSON
    /// whitespace, no pad field); when it is already long enough nothing is
    /// added. The body is serialised once, here.
    pub fn new(
        fields: JsonFields,
        time_format: TimeFormat,
        body: Option<&Map<String, Value>>,
        pad_to: usize,
    ) -> Self {
        let key = |lead: u8, name: &str| {
            let mut k = vec![lead];
            k.extend_from_slice(Value::from(name).to_string().as_bytes());
            k.push(b':');
            k
        };
        let mut body_bytes = Vec::new();
        for (name, value) in body.into_iter().flatten() {
            let clashes = [&fields.device, &fields.seq, &fields.intended, &fields.sent]
                .iter()
                .any(|f| f.as_str() == name)
                || (pad_to > 0 && name == "pad");
            if clashes {
                continue;
            }
            body_bytes.extend_from_slice(&key(b',', name));
            body_bytes.extend_from_slice(value.to_string().as_bytes());
        }
        Self {
            key_device: key(b'{', &fields.device),
            key_seq: key(b',', &fields.seq),
            key_intended: key(b',', &fields.intended),
            key_sent: key(b',', &fields.sent),
            body: body_bytes,
            fields,
            time_format,
            pad_to,
        }
    }

    /// Parses a user-supplied body (for example from a config file) into the
    /// map [`JsonCarrier::new`] takes: [`StampError::NotJson`] if it is not
    /// JSON, [`StampError::BodyNotObject`] if it is JSON but not an object.
    pub fn parse_body(text: &str) -> Result<Map<String, Value>, StampError> {
        match serde_json::from_str::<Value>(text) {
            Ok(Value::Object(map)) => Ok(map),
            Ok(_) => Err(StampError::BodyNotObject),
            Err(_) => Err(StampError::NotJson),
        }
    }

    /// The field names this carrier reads and writes.
    pub fn fields(&self) -> &JsonFields {
        &self.fields
    }

    /// Clears `out` and writes one compact JSON object: stamp fields first,
    /// then body fields, then padding. Allocates nothing beyond `out`'s growth.
    pub fn encode(&self, stamp: &Stamp, out: &mut Vec<u8>) {
        out.clear();
        out.reserve(self.pad_to.max(self.body.len() + 128));
        let mut digits = itoa::Buffer::new();
        out.extend_from_slice(&self.key_device);
        out.extend_from_slice(digits.format(stamp.device).as_bytes());
        out.extend_from_slice(&self.key_seq);
        out.extend_from_slice(digits.format(stamp.seq).as_bytes());
        out.extend_from_slice(&self.key_intended);
        self.write_time(stamp.intended_us, &mut digits, out);
        out.extend_from_slice(&self.key_sent);
        self.write_time(stamp.sent_us, &mut digits, out);
        out.extend_from_slice(&self.body);
        let unpadded = out.len() + 1;
        if let Some(short) = self.pad_to.checked_sub(unpadded) {
            if short >= PAD_OVERHEAD {
                out.extend_from_slice(PAD_FIELD);
                out.resize(out.len() + short - PAD_OVERHEAD, b'x');
                out.push(b'"');
            } else {
                out.resize(out.len() + short, b' ');
            }
        }
        out.push(b'}');
    }

    fn write_time(&self, us: u64, digits: &mut itoa::Buffer, out: &mut Vec<u8>) {
        if self.time_format == TimeFormat::Iso8601 && write_iso(us, out) {
            return;
        }
        out.extend_from_slice(digits.format(us).as_bytes());
    }

    /// Decodes a stamp from a JSON payload without building a JSON tree:
    /// only the four configured fields are parsed, everything else is
    /// skipped.
    ///
    /// `device` must be an unsigned integer fitting `u32`, `seq` an unsigned
    /// integer; the two times each an unsigned integer (µs since the epoch)
    /// or an ISO-8601 / RFC 3339 string (`T` or space separator, optional
    /// fractional seconds; with `Z` or an offset, or without an offset,
    /// meaning local time — the earlier of two readings in a DST overlap, a
    /// [`StampError::BadTime`] inside a DST gap). A missing intended time
    /// falls back to the sent time. Trailing non-whitespace after the object
    /// is [`StampError::NotJson`].
    pub fn decode(&self, payload: &[u8]) -> Result<Stamp, StampError> {
        let mut de = serde_json::Deserializer::from_slice(payload);
        let result = StampSeed {
            fields: &self.fields,
        }
        .deserialize(&mut de)
        .map_err(|_| StampError::NotJson)?;
        de.end().map_err(|_| StampError::NotJson)?;
        result
    }
}

/// Writes `"YYYY-MM-DDTHH:MM:SS.ffffffZ"` (with quotes) for `us`, or returns
/// false (writing nothing) if `us` is past year 9999.
fn write_iso(us: u64, out: &mut Vec<u8>) -> bool {
    if us > MAX_ISO_US {
        return false;
    }
    let Some(dt) = i64::try_from(us)
        .ok()
        .and_then(DateTime::from_timestamp_micros)
    else {
        return false;
    };
    let Ok(year) = u32::try_from(dt.year()) else {
        return false;
    };
    out.push(b'"');
    push_digits(out, year, 4);
    out.push(b'-');
    push_digits(out, dt.month(), 2);
    out.push(b'-');
    push_digits(out, dt.day(), 2);
    out.push(b'T');
    push_digits(out, dt.hour(), 2);
    out.push(b':');
    push_digits(out, dt.minute(), 2);
    out.push(b':');
    push_digits(out, dt.second(), 2);
    out.push(b'.');
    push_digits(out, dt.timestamp_subsec_micros(), 6);
    out.extend_from_slice(b"Z\"");
    true
}

/// Writes the last `width` (≤ 10) decimal digits of `value`, zero-padded.
fn push_digits(out: &mut Vec<u8>, value: u32, width: usize) {
    let mut buf = [b'0'; 10];
    let mut rest = value;
    for slot in buf[..width].iter_mut().rev() {
        *slot = b'0' + (rest % 10) as u8;
        rest /= 10;
    }
    out.extend_from_slice(&buf[..width]);
}

/// Parses an ISO-8601 / RFC 3339 time into µs since the Unix epoch.
fn parse_iso_us(s: &str) -> Option<u64> {
    let micros = match DateTime::parse_from_rfc3339(s) {
        Ok(dt) => dt.timestamp_micros(),
        Err(_) => {
            let format = if s.as_bytes().get(10) == Some(&b' ') {
                "%Y-%m-%d %H:%M:%S%.f"
            } else {
                "%Y-%m-%dT%H:%M:%S%.f"
            };
            let naive = NaiveDateTime::parse_from_str(s, format).ok()?;
            Local
                .from_local_datetime(&naive)
                .earliest()?
                .timestamp_micros()
        }
    };
    u64::try_from(micros).ok()
}

/// Bits saying which stamp values a JSON key carries.
const F_DEVICE: u8 = 1;
const F_SEQ: u8 = 2;
const F_INTENDED: u8 = 4;
const F_SENT: u8 = 8;

/// Seed for the top-level object; its value is the decoded stamp or the
/// first field-level problem (JSON syntax errors surface as serde errors).
struct StampSeed<'a> {
    fields: &'a JsonFields,
}

impl<'de> DeserializeSeed<'de> for StampSeed<'_> {
    type Value = Result<Stamp, StampError>;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for StampSeed<'_> {
    type Value = Result<Stamp, StampError>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a json object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut found = Found::default();
        let mut failure = None;
        while let Some(mask) = map.next_key_seed(KeySeed {
            fields: self.fields,
        })? {
            if mask == 0 || failure.is_some() {
                map.next_value::<IgnoredAny>()?;
                continue;
            }
            let value = map.next_value_seed(ValueSeed {
                time: mask & (F_INTENDED | F_SENT) != 0,
            })?;
            if let Err(e) = found.apply(mask, &value, self.fields) {
                failure = Some(e);
            }
        }
        Ok(match failure {
            Some(e) => Err(e),
            None => found.finish(self.fields),
        })
    }
}

/// The stamp values seen so far in one object.
#[derive(Default)]
struct Found {
    device: Option<u32>,
    seq: Option<u64>,
    intended: Option<u64>,
    sent: Option<u64>,
}

impl Found {
    fn apply(&mut self, mask: u8, value: &Scalar, fields: &JsonFields) -> Result<(), StampError> {
        if mask & F_DEVICE != 0 {
            let wrong = || wrong_type(&fields.device, EXPECT_U32);
            let v = value.int().ok_or_else(wrong)?;
            self.device = Some(u32::try_from(v).map_err(|_| wrong())?);
        }
        if mask & F_SEQ != 0 {
            self.seq = Some(
                value
                    .int()
                    .ok_or_else(|| wrong_type(&fields.seq, EXPECT_U64))?,
            );
        }
        if mask & F_INTENDED != 0 {
            self.intended = Some(value.time(&fields.intended)?);
        }
        if mask & F_SENT != 0 {
            self.sent = Some(value.time(&fields.sent)?);
        }
        Ok(())
    }

    fn finish(self, fields: &JsonFields) -> Result<Stamp, StampError> {
        let missing = |name: &String| StampError::Missing {
            field: name.clone(),
        };
        let device = self.device.ok_or_else(|| missing(&fields.device))?;
        let seq = self.seq.ok_or_else(|| missing(&fields.seq))?;
        let sent_us = self.sent.ok_or_else(|| missing(&fields.sent))?;
        Ok(Stamp {
            device,
            seq,
            intended_us: self.intended.unwrap_or(sent_us),
            sent_us,
        })
    }
}

fn wrong_type(field: &str, expected: &'static str) -> StampError {
    StampError::WrongType {
        field: field.to_owned(),
        expected,
    }
}

/// Seed for an object key: compares it (borrowed or transient, never
/// allocated) against the configured names and yields a field mask, 0 for
/// keys to skip.
struct KeySeed<'a> {
    fields: &'a JsonFields,
}

impl<'de> DeserializeSeed<'de> for KeySeed<'_> {
    type Value = u8;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<u8, D::Error> {
        deserializer.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for KeySeed<'_> {
    type Value = u8;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a field name")
    }

    fn visit_str<E: de::Error>(self, key: &str) -> Result<u8, E> {
        let f = self.fields;
        let mut mask = 0;
        for (name, bit) in [
            (&f.device, F_DEVICE),
            (&f.seq, F_SEQ),
            (&f.intended, F_INTENDED),
            (&f.sent, F_SENT),
        ] {
            if name.as_str() == key {
                mask |= bit;
            }
        }
        Ok(mask)
    }
}

/// A stamp field's value, reduced to what the stamp can use.
enum Scalar {
    /// A non-negative integer.
    Int(u64),
    /// A string that parsed as a time (µs since the epoch).
    Time(u64),
    /// A string that did not parse as a time (cut for the error).
    BadTime(String),
    /// Anything else: negative or fractional numbers, booleans, null,
    /// arrays, objects, or strings where no time is allowed.
    Other,
}

impl Scalar {
    fn int(&self) -> Option<u64> {
        match self {
            Self::Int(v) => Some(*v),
            _ => None,
        }
    }

    fn time(&self, field: &str) -> Result<u64, StampError> {
        match self {
            Self::Int(v) | Self::Time(v) => Ok(*v),
            Self::BadTime(value) => Err(StampError::BadTime {
                field: field.to_owned(),
                value: value.clone(),
            }),
            Self::Other => Err(wrong_type(field, EXPECT_TIME)),
        }
    }
}

/// Seed for a stamp field's value; `time` says whether strings should be
/// parsed as ISO-8601 times.
struct ValueSeed {
    time: bool,
}

impl<'de> DeserializeSeed<'de> for ValueSeed {
    type Value = Scalar;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Scalar, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for ValueSeed {
    type Value = Scalar;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a json value")
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Scalar, E> {
        Ok(Scalar::Int(v))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Scalar, E> {
        Ok(u64::try_from(v).map_or(Scalar::Other, Scalar::Int))
    }

    fn visit_f64<E: de::Error>(self, _: f64) -> Result<Scalar, E> {
        Ok(Scalar::Other)
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<Scalar, E> {
        Ok(Scalar::Other)
    }

    fn visit_unit<E: de::Error>(self) -> Result<Scalar, E> {
        Ok(Scalar::Other)
    }

    fn visit_str<E: de::Error>(self, s: &str) -> Result<Scalar, E> {
        if !self.time {
            return Ok(Scalar::Other);
        }
        Ok(match parse_iso_us(s) {
            Some(us) => Scalar::Time(us),
            None => Scalar::BadTime(snippet(s)),
        })
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Scalar, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(Scalar::Other)
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Scalar, A::Error> {
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        Ok(Scalar::Other)
    }
}

// ---------------------------------------------------------------------------
// Binary carrier
// ---------------------------------------------------------------------------

/// Carries a [`Stamp`] in a fixed 32-byte little-endian header — magic
/// `IOTL`, device `u32`, seq `u64`, intended_us `u64`, sent_us `u64` —
/// followed by the body bytes.
#[derive(Debug, Clone, Copy, Default)]
pub struct BinaryCarrier;

impl BinaryCarrier {
    /// Length of the fixed header in bytes.
    pub const HEADER_LEN: usize = 32;
    /// The four bytes every binary payload starts with.
    pub const MAGIC: [u8; 4] = *b"IOTL";

    /// Clears `out` and writes the header for `stamp` followed by `body`.
    pub fn encode(stamp: &Stamp, body: &[u8], out: &mut Vec<u8>) {
        out.clear();
        out.reserve(Self::HEADER_LEN + body.len());
        out.extend_from_slice(&Self::MAGIC);
        out.extend_from_slice(&stamp.device.to_le_bytes());
        out.extend_from_slice(&stamp.seq.to_le_bytes());
        out.extend_from_slice(&stamp.intended_us.to_le_bytes());
        out.extend_from_slice(&stamp.sent_us.to_le_bytes());
        out.extend_from_slice(body);
    }

    /// Decodes the stamp from the header of `payload`; the body is ignored.
    pub fn decode(payload: &[u8]) -> Result<Stamp, StampError> {
        let too_short = || StampError::TooShort {
            len: payload.len(),
            need: Self::HEADER_LEN,
        };
        let (magic, rest) = payload.split_first_chunk::<4>().ok_or_else(too_short)?;
        let (device, rest) = rest.split_first_chunk::<4>().ok_or_else(too_short)?;
        let (seq, rest) = rest.split_first_chunk::<8>().ok_or_else(too_short)?;
        let (intended, rest) = rest.split_first_chunk::<8>().ok_or_else(too_short)?;
        let (sent, _) = rest.split_first_chunk::<8>().ok_or_else(too_short)?;
        if *magic != Self::MAGIC {
            return Err(StampError::BadMagic);
        }
        Ok(Stamp {
            device: u32::from_le_bytes(*device),
            seq: u64::from_le_bytes(*seq),
            intended_us: u64::from_le_bytes(*intended),
            sent_us: u64::from_le_bytes(*sent),
        })
    }

    /// The body bytes after the header (empty if the payload is shorter than
    /// the header).
    pub fn body(payload: &[u8]) -> &[u8] {
        payload.get(Self::HEADER_LEN..).unwrap_or_default()
    }
}

// ---------------------------------------------------------------------------
// Header carrier
// ---------------------------------------------------------------------------

/// Carries a [`Stamp`] in transport headers (MQTT 5 user properties, later
/// Kafka/NATS/AMQP headers) as decimal strings, leaving the payload untouched.
#[derive(Debug, Clone, Copy, Default)]
pub struct HeaderCarrier;

impl HeaderCarrier {
    /// Header holding the device id.
    pub const DEVICE: &'static str = "iotload-device";
    /// Header holding the sequence number.
    pub const SEQ: &'static str = "iotload-seq";
    /// Header holding the intended send time (µs since the Unix epoch).
    pub const INTENDED: &'static str = "iotload-intended-us";
    /// Header holding the actual send time (µs since the Unix epoch).
    pub const SENT: &'static str = "iotload-sent-us";

    /// The four headers for `stamp`, as (name, decimal value) pairs.
    pub fn encode(stamp: &Stamp) -> Vec<(String, String)> {
        let mut digits = itoa::Buffer::new();
        vec![
            (
                Self::DEVICE.to_owned(),
                digits.format(stamp.device).to_owned(),
            ),
            (Self::SEQ.to_owned(), digits.format(stamp.seq).to_owned()),
            (
                Self::INTENDED.to_owned(),
                digits.format(stamp.intended_us).to_owned(),
            ),
            (
                Self::SENT.to_owned(),
                digits.format(stamp.sent_us).to_owned(),
            ),
        ]
    }

    /// Whether `headers` carry a stamp: a sequence header, its name matched as
    /// [`HeaderCarrier::decode`] matches it (ASCII case-insensitively).
    pub fn carries_stamp<'a>(headers: impl IntoIterator<Item = &'a str>) -> bool {
        headers
            .into_iter()
            .any(|name| name.eq_ignore_ascii_case(Self::SEQ))
    }

    /// Decodes a stamp from (name, value) headers. Names match ASCII
    /// case-insensitively (some transports lower-case header names); unknown
    /// headers are ignored; when a header repeats, the last one wins. A
    /// missing intended header falls back to the sent time, as in JSON.
    pub fn decode<'a>(
        headers: impl IntoIterator<Item = (&'a str, &'a str)>,
    ) -> Result<Stamp, StampError> {
        let (mut device, mut seq, mut intended, mut sent) = (None, None, None, None);
        for (name, value) in headers {
            let slot = if name.eq_ignore_ascii_case(Self::DEVICE) {
                &mut device
            } else if name.eq_ignore_ascii_case(Self::SEQ) {
                &mut seq
            } else if name.eq_ignore_ascii_case(Self::INTENDED) {
                &mut intended
            } else if name.eq_ignore_ascii_case(Self::SENT) {
                &mut sent
            } else {
                continue;
            };
            *slot = Some(value);
        }
        let device = parse_header::<u32>(Self::DEVICE, device)?;
        let seq = parse_header::<u64>(Self::SEQ, seq)?;
        let intended = parse_header::<u64>(Self::INTENDED, intended);
        let sent_us = parse_header::<u64>(Self::SENT, sent)?;
        let intended_us = match intended {
            Ok(v) => v,
            Err(StampError::MissingHeader { .. }) => sent_us,
            Err(e) => return Err(e),
        };
        Ok(Stamp {
            device,
            seq,
            intended_us,
            sent_us,
        })
    }
}

fn parse_header<T: std::str::FromStr>(
    name: &'static str,
    value: Option<&str>,
) -> Result<T, StampError> {
    let value = value.ok_or(StampError::MissingHeader { name })?;
    value.parse().map_err(|_| StampError::BadHeader {
        name,
        value: snippet(value),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const STAMP: Stamp = Stamp {
        device: 42,
        seq: 7,
        intended_us: 1_795_568_523_123_456,
        sent_us: 1_795_568_523_124_000,
    };

    fn carrier(format: TimeFormat) -> JsonCarrier {
        JsonCarrier::new(JsonFields::default(), format, None, 0)
    }

    fn encode(c: &JsonCarrier, stamp: &Stamp) -> Vec<u8> {
        let mut out = Vec::new();
        c.encode(stamp, &mut out);
        out
    }

    fn json_err(payload: &str) -> StampError {
        carrier(TimeFormat::Micros)
            .decode(payload.as_bytes())
            .unwrap_err()
    }

    fn local_us(naive: &str) -> u64 {
        let naive = NaiveDateTime::parse_from_str(naive, "%Y-%m-%dT%H:%M:%S%.f").unwrap();
        let local = Local.from_local_datetime(&naive).earliest().unwrap();
        u64::try_from(local.timestamp_micros()).unwrap()
    }

    fn body() -> Map<String, Value> {
        JsonCarrier::parse_body(
            r#"{"temp":21.5,"name":"sensor \"a\"","tags":["x",{"y":null}],"seq":999,"pad":1}"#,
        )
        .unwrap()
    }

    #[test]
    fn micros_encoding_is_compact_json_with_stamp_fields_first() {
        let out = encode(&carrier(TimeFormat::Micros), &STAMP);
        assert_eq!(
            std::str::from_utf8(&out).unwrap(),
            r#"{"device":42,"seq":7,"intended_us":1795568523123456,"sent_us":1795568523124000}"#
        );
    }

    #[test]
    fn iso8601_encoding_writes_utc_microseconds_with_z() {
        let out = encode(&carrier(TimeFormat::Iso8601), &STAMP);
        assert_eq!(
            std::str::from_utf8(&out).unwrap(),
            r#"{"device":42,"seq":7,"intended_us":"2026-11-25T01:02:03.123456Z","sent_us":"2026-11-25T01:02:03.124000Z"}"#
        );
    }

    #[test]
    fn iso8601_encoding_covers_epoch_and_year_9999_and_falls_back_to_micros_beyond() {
        let c = carrier(TimeFormat::Iso8601);
        let mut stamp = Stamp {
            intended_us: 0,
            sent_us: MAX_ISO_US,
            ..STAMP
        };
        let text = String::from_utf8(encode(&c, &stamp)).unwrap();
        assert!(text.contains(r#""intended_us":"1970-01-01T00:00:00.000000Z""#));
        assert!(text.contains(r#""sent_us":"9999-12-31T23:59:59.999999Z""#));
        assert_eq!(c.decode(text.as_bytes()), Ok(stamp));
        stamp.sent_us = MAX_ISO_US + 1;
        let text = String::from_utf8(encode(&c, &stamp)).unwrap();
        assert!(text.contains(r#""sent_us":253402300800000000}"#));
        assert_eq!(c.decode(text.as_bytes()), Ok(stamp));
    }

    #[test]
    fn json_round_trips_in_both_time_formats() {
        for format in [TimeFormat::Micros, TimeFormat::Iso8601] {
            let c = carrier(format);
            assert_eq!(c.decode(&encode(&c, &STAMP)), Ok(STAMP));
        }
    }

    #[test]
    fn encode_clears_what_was_in_the_buffer() {
        let c = carrier(TimeFormat::Micros);
        let mut out = b"garbage".to_vec();
        c.encode(&STAMP, &mut out);
        assert_eq!(c.decode(&out), Ok(STAMP));
    }

    #[test]
    fn custom_field_names_round_trip_and_are_escaped() {
        let fields = JsonFields {
            device: "deviceId".into(),
            seq: "n\"o".into(),
            intended: "t0".into(),
            sent: "lastUpdated".into(),
        };
        let c = JsonCarrier::new(fields, TimeFormat::Iso8601, None, 0);
        let out = encode(&c, &STAMP);
        let value: Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(value["deviceId"], 42);
        assert_eq!(value["n\"o"], 7);
        assert_eq!(value["lastUpdated"], "2026-11-25T01:02:03.124000Z");
        assert_eq!(c.decode(&out), Ok(STAMP));
    }

    #[test]
    fn escaped_keys_in_payload_match_configured_names() {
        let payload = r#"{"dev\u0069ce":1,"seq":2,"sent_us":3}"#;
        let stamp = carrier(TimeFormat::Micros)
            .decode(payload.as_bytes())
            .unwrap();
        assert_eq!(stamp.device, 1);
    }

    #[test]
    fn foreign_payload_with_naive_last_updated_decodes_as_local_time() {
        let fields = JsonFields {
            device: "deviceId".into(),
            sent: "lastUpdated".into(),
            ..JsonFields::default()
        };
        let c = JsonCarrier::new(fields, TimeFormat::Micros, None, 0);
        let payload =
            br#"{"temp":21.5,"deviceId":3,"seq":9,"lastUpdated":"2026-11-25T01:02:03.123456"}"#;
        let expected = local_us("2026-11-25T01:02:03.123456");
        assert_eq!(
            c.decode(payload),
            Ok(Stamp {
                device: 3,
                seq: 9,
                intended_us: expected,
                sent_us: expected,
            })
        );
    }

    #[test]
    fn missing_intended_time_falls_back_to_sent_time() {
        let stamp = carrier(TimeFormat::Micros)
            .decode(br#"{"device":1,"seq":2,"sent_us":3}"#)
            .unwrap();
        assert_eq!(stamp.intended_us, 3);
    }

    #[test]
    fn iso_times_accept_offsets_space_separator_and_missing_fraction() {
        let z = 1_795_568_523_123_456;
        assert_eq!(parse_iso_us("2026-11-25T01:02:03.123456Z"), Some(z));
        assert_eq!(
            parse_iso_us("2026-11-25T01:02:03.123456+01:00"),
            Some(z - 3_600_000_000)
        );
        assert_eq!(parse_iso_us("2026-11-25 01:02:03.123456Z"), Some(z));
        assert_eq!(parse_iso_us("2026-11-25T01:02:03Z"), Some(z - 123_456));
        assert_eq!(parse_iso_us("2026-11-25T01:02:03.123456789Z"), Some(z));
        assert_eq!(
            parse_iso_us("2026-11-25 01:02:03.123456"),
            Some(local_us("2026-11-25T01:02:03.123456"))
        );
        assert_eq!(
            parse_iso_us("2026-11-25T01:02:03"),
            Some(local_us("2026-11-25T01:02:03"))
        );
        assert_eq!(parse_iso_us("1969-12-31T23:59:59Z"), None);
        assert_eq!(parse_iso_us("yesterday"), None);
    }

    #[test]
    fn padding_gives_exact_lengths_whenever_the_message_is_shorter() {
        let unpadded = encode(&carrier(TimeFormat::Micros), &STAMP).len();
        for pad_to in 0..unpadded + 300 {
            let c = JsonCarrier::new(JsonFields::default(), TimeFormat::Micros, None, pad_to);
            let out = encode(&c, &STAMP);
            assert_eq!(out.len(), pad_to.max(unpadded), "pad_to {pad_to}");
            assert_eq!(c.decode(&out), Ok(STAMP));
            let value: Value = serde_json::from_slice(&out).unwrap();
            let has_pad = value.get("pad").is_some();
            assert_eq!(
                has_pad,
                pad_to >= unpadded + PAD_OVERHEAD,
                "pad_to {pad_to}"
            );
        }
    }

    #[test]
    fn body_fields_are_preserved_after_the_stamp_and_clashes_are_dropped() {
        let body = body();
        let c = JsonCarrier::new(JsonFields::default(), TimeFormat::Micros, Some(&body), 0);
        let out = encode(&c, &STAMP);
        let value: Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(value["temp"], 21.5);
        assert_eq!(value["name"], "sensor \"a\"");
        assert_eq!(value["tags"], body["tags"]);
        assert_eq!(value["seq"], 7);
        assert_eq!(value["pad"], 1, "pad kept when padding is off");
        let text = std::str::from_utf8(&out).unwrap();
        assert_eq!(text.matches("\"seq\"").count(), 1);
        assert!(text.starts_with(r#"{"device":42,"seq":7,"#));
        assert_eq!(c.decode(&out), Ok(STAMP));

        let padded = JsonCarrier::new(JsonFields::default(), TimeFormat::Micros, Some(&body), 400);
        let out = encode(&padded, &STAMP);
        assert_eq!(out.len(), 400);
        let value: Value = serde_json::from_slice(&out).unwrap();
        assert!(value["pad"].as_str().unwrap().bytes().all(|b| b == b'x'));
        assert_eq!(value["temp"], 21.5);
    }

    #[test]
    fn parse_body_rejects_non_json_and_non_objects() {
        assert_eq!(JsonCarrier::parse_body("{"), Err(StampError::NotJson));
        assert_eq!(
            JsonCarrier::parse_body("[1]"),
            Err(StampError::BodyNotObject)
        );
        assert_eq!(JsonCarrier::parse_body("{}"), Ok(Map::new()));
    }

    #[test]
    fn truncated_or_foreign_payloads_are_not_json() {
        let full = encode(&carrier(TimeFormat::Micros), &STAMP);
        for cut in 0..full.len() {
            assert_eq!(
                carrier(TimeFormat::Micros).decode(&full[..cut]),
                Err(StampError::NotJson),
                "cut at {cut}"
            );
        }
        for bad in [
            "",
            "[1,2]",
            "42",
            "\"x\"",
            "null",
            "{\"a\":1} x",
            "{\"a\":}",
        ] {
            assert_eq!(json_err(bad), StampError::NotJson, "{bad}");
        }
        assert_eq!(
            carrier(TimeFormat::Micros).decode(&[0xff, 0x00, 0x7b, 0x13]),
            Err(StampError::NotJson)
        );
    }

    #[test]
    fn missing_device_seq_or_sent_is_reported_by_name() {
        let missing = |f: &str| StampError::Missing { field: f.into() };
        assert_eq!(json_err(r#"{"seq":1,"sent_us":2}"#), missing("device"));
        assert_eq!(json_err(r#"{"device":1,"sent_us":2}"#), missing("seq"));
        assert_eq!(
            json_err(r#"{"device":1,"seq":2,"intended_us":3}"#),
            missing("sent_us")
        );
        assert_eq!(json_err("{}"), missing("device"));
    }

    #[test]
    fn values_of_the_wrong_type_or_range_are_wrong_type() {
        let wrong = |f: &str, e| StampError::WrongType {
            field: f.into(),
            expected: e,
        };
        let cases = [
            (
                r#"{"device":"1","seq":1,"sent_us":2}"#,
                wrong("device", EXPECT_U32),
            ),
            (
                r#"{"device":4294967296,"seq":1,"sent_us":2}"#,
                wrong("device", EXPECT_U32),
            ),
            (
                r#"{"device":-1,"seq":1,"sent_us":2}"#,
                wrong("device", EXPECT_U32),
            ),
            (
                r#"{"device":1,"seq":1.5,"sent_us":2}"#,
                wrong("seq", EXPECT_U64),
            ),
            (
                r#"{"device":1,"seq":-3,"sent_us":2}"#,
                wrong("seq", EXPECT_U64),
            ),
            (
                r#"{"device":1,"seq":[1],"sent_us":2}"#,
                wrong("seq", EXPECT_U64),
            ),
            (
                r#"{"device":1,"seq":1,"sent_us":{"a":[1]}}"#,
                wrong("sent_us", EXPECT_TIME),
            ),
            (
                r#"{"device":1,"seq":1,"intended_us":true,"sent_us":2}"#,
                wrong("intended_us", EXPECT_TIME),
            ),
            (
                r#"{"device":1,"seq":1,"sent_us":null}"#,
                wrong("sent_us", EXPECT_TIME),
            ),
            (
                r#"{"device":1,"seq":1,"sent_us":1e3}"#,
                wrong("sent_us", EXPECT_TIME),
            ),
        ];
        for (payload, expected) in cases {
            assert_eq!(json_err(payload), expected, "{payload}");
        }
        assert_eq!(
            json_err(r#"{"device":"x","seq":"y"}"#),
            wrong("device", EXPECT_U32),
            "the first problem wins"
        );
    }

    #[test]
    fn unparseable_time_strings_are_bad_time() {
        assert_eq!(
            json_err(r#"{"device":1,"seq":1,"sent_us":"noon"}"#),
            StampError::BadTime {
                field: "sent_us".into(),
                value: "noon".into()
            }
        );
        let long = "9".repeat(500);
        let err = json_err(&format!(
            r#"{{"device":1,"seq":1,"intended_us":"{long}","sent_us":1}}"#
        ));
        assert_eq!(
            err,
            StampError::BadTime {
                field: "intended_us".into(),
                value: "9".repeat(64)
            }
        );
    }

    #[test]
    fn unknown_fields_of_any_shape_are_skipped() {
        let payload = r#"{"x":{"a":[1,{"b":"c"}]},"device":1,"y":[[[]]],"seq":2,"z":"s","sent_us":3,"w":-1.5e9}"#;
        let stamp = carrier(TimeFormat::Micros)
            .decode(payload.as_bytes())
            .unwrap();
        assert_eq!((stamp.device, stamp.seq, stamp.sent_us), (1, 2, 3));
    }

    #[test]
    fn binary_carrier_round_trips_and_keeps_the_body() {
        let mut out = vec![9; 3];
        BinaryCarrier::encode(&STAMP, b"hello", &mut out);
        assert_eq!(out.len(), BinaryCarrier::HEADER_LEN + 5);
        assert_eq!(&out[..4], b"IOTL");
        assert_eq!(BinaryCarrier::decode(&out), Ok(STAMP));
        assert_eq!(BinaryCarrier::body(&out), b"hello");
        assert_eq!(BinaryCarrier::body(b"short"), b"");
    }

    #[test]
    fn binary_carrier_rejects_short_payloads_and_bad_magic() {
        let mut out = Vec::new();
        BinaryCarrier::encode(&STAMP, b"", &mut out);
        assert_eq!(
            BinaryCarrier::decode(&out[..31]),
            Err(StampError::TooShort { len: 31, need: 32 })
        );
        assert_eq!(
            BinaryCarrier::decode(b""),
            Err(StampError::TooShort { len: 0, need: 32 })
        );
        out[0] = b'X';
        assert_eq!(BinaryCarrier::decode(&out), Err(StampError::BadMagic));
    }

    #[test]
    fn header_carrier_round_trips_and_ignores_unknown_headers() {
        let mut headers = HeaderCarrier::encode(&STAMP);
        headers.insert(1, ("content-type".into(), "application/json".into()));
        let pairs = headers.iter().map(|(n, v)| (n.as_str(), v.as_str()));
        assert_eq!(HeaderCarrier::decode(pairs), Ok(STAMP));
    }

    #[test]
    fn header_names_match_case_insensitively_and_intended_falls_back() {
        let headers = [
            ("IOTLOAD-DEVICE", "5"),
            ("Iotload-Seq", "6"),
            ("iotload-sent-us", "7"),
        ];
        assert_eq!(
            HeaderCarrier::decode(headers),
            Ok(Stamp {
                device: 5,
                seq: 6,
                intended_us: 7,
                sent_us: 7
            })
        );
    }

    #[test]
    fn header_carrier_reports_missing_and_bad_headers() {
        assert_eq!(
            HeaderCarrier::decode([("iotload-seq", "1"), ("iotload-sent-us", "1")]),
            Err(StampError::MissingHeader {
                name: HeaderCarrier::DEVICE
            })
        );
        assert_eq!(
            HeaderCarrier::decode([("iotload-device", "1"), ("iotload-seq", "1")]),
            Err(StampError::MissingHeader {
                name: HeaderCarrier::SENT
            })
        );
        assert_eq!(
            HeaderCarrier::decode([
                ("iotload-device", "4294967296"),
                ("iotload-seq", "1"),
                ("iotload-sent-us", "1"),
            ]),
            Err(StampError::BadHeader {
                name: HeaderCarrier::DEVICE,
                value: "4294967296".into()
            })
        );
        assert_eq!(
            HeaderCarrier::decode([
                ("iotload-device", "1"),
                ("iotload-seq", "1"),
                ("iotload-intended-us", "-2"),
                ("iotload-sent-us", "1"),
            ]),
            Err(StampError::BadHeader {
                name: HeaderCarrier::INTENDED,
                value: "-2".into()
            })
        );
    }

    #[test]
    fn every_error_has_a_distinct_kind_and_a_lowercase_message() {
        let errors = [
            StampError::NotJson,
            StampError::Missing { field: "f".into() },
            StampError::WrongType {
                field: "f".into(),
                expected: EXPECT_U32,
            },
            StampError::BadTime {
                field: "f".into(),
                value: "v".into(),
            },
            StampError::TooShort { len: 1, need: 32 },
            StampError::BadMagic,
            StampError::MissingHeader {
                name: HeaderCarrier::SEQ,
            },
            StampError::BadHeader {
                name: HeaderCarrier::SEQ,
                value: "v".into(),
            },
            StampError::BodyNotObject,
        ];
        let kinds: std::collections::HashSet<_> = errors.iter().map(StampError::kind).collect();
        assert_eq!(kinds.len(), errors.len());
        for e in &errors {
            assert!(
                e.kind()
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b == b'_')
            );
            let msg = e.to_string();
            assert!(msg.starts_with(|c: char| c.is_ascii_lowercase()), "{msg}");
            assert!(!msg.ends_with('.'), "{msg}");
        }
    }

    #[test]
    fn now_us_is_after_2024() {
        assert!(now_us() > 1_704_067_200_000_000);
    }

    fn any_stamp() -> impl Strategy<Value = Stamp> {
        let time = prop_oneof![0..=MAX_ISO_US, any::<u64>(), Just(u64::MAX), Just(0)];
        (any::<u32>(), any::<u64>(), time.clone(), time).prop_map(
            |(device, seq, intended_us, sent_us)| Stamp {
                device,
                seq,
                intended_us,
                sent_us,
            },
        )
    }

    proptest! {
        #[test]
        fn json_round_trips_any_stamp_with_body_and_padding(
            stamp in any_stamp(),
            iso in any::<bool>(),
            with_body in any::<bool>(),
            pad_to in 0usize..600,
        ) {
            let format = if iso { TimeFormat::Iso8601 } else { TimeFormat::Micros };
            let body = body();
            let c = JsonCarrier::new(
                JsonFields::default(), format, with_body.then_some(&body), pad_to,
            );
            let out = encode(&c, &stamp);
            prop_assert!(out.len() >= pad_to);
            prop_assert_eq!(c.decode(&out), Ok(stamp));
            prop_assert!(serde_json::from_slice::<Value>(&out).is_ok());
        }

        #[test]
        fn binary_round_trips_any_stamp(stamp in any_stamp(), body in proptest::collection::vec(any::<u8>(), 0..64)) {
            let mut out = Vec::new();
            BinaryCarrier::encode(&stamp, &body, &mut out);
            prop_assert_eq!(BinaryCarrier::decode(&out), Ok(stamp));
            prop_assert_eq!(BinaryCarrier::body(&out), &body[..]);
        }

        #[test]
        fn headers_round_trip_any_stamp(stamp in any_stamp()) {
            let headers = HeaderCarrier::encode(&stamp);
            let pairs = headers.iter().map(|(n, v)| (n.as_str(), v.as_str()));
            prop_assert_eq!(HeaderCarrier::decode(pairs), Ok(stamp));
        }

        #[test]
        fn decoders_never_panic_on_arbitrary_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
            let _ = carrier(TimeFormat::Micros).decode(&bytes);
            let _ = BinaryCarrier::decode(&bytes);
            let text = String::from_utf8_lossy(&bytes);
            let _ = HeaderCarrier::decode([(HeaderCarrier::DEVICE, &*text), (HeaderCarrier::SENT, &*text)]);
        }

        #[test]
        fn json_decode_never_panics_on_json_like_text(text in r#"\{("(device|seq|sent_us|intended_us|x)":(-?[0-9]{1,25}|"[0-9T:. Z+-]{0,30}"|\[|\{|true|null|1\.5)[,}]?){0,6}"#) {
            let _ = carrier(TimeFormat::Micros).decode(text.as_bytes());
        }

        #[test]
        fn every_truncation_of_a_valid_payload_is_not_json(stamp in any_stamp(), cut in 0usize..100) {
            let c = carrier(TimeFormat::Iso8601);
            let out = encode(&c, &stamp);
            let cut = cut.min(out.len() - 1);
            prop_assert_eq!(c.decode(&out[..cut]), Err(StampError::NotJson));
        }
    }
}
