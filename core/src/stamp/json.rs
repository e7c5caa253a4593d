//! The JSON carrier: the stamp as fields of a compact JSON object (names and time format
//! configurable), optionally followed by the user's own body fields and padding; decoded
//! without building a JSON tree.

use std::fmt;

use chrono::{DateTime, Datelike, Local, NaiveDateTime, TimeZone, Timelike};
use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Value};

use super::{Stamp, StampError, snippet};

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
pub(super) const PAD_OVERHEAD: usize = PAD_FIELD.len() + 1;
/// The last microsecond that ISO-8601 encoding can write with a 4-digit
/// year: 9999-12-31T23:59:59.999999Z.
pub(super) const MAX_ISO_US: u64 = 253_402_300_799_999_999;

pub(super) const EXPECT_U32: &str = "an unsigned 32-bit integer";
pub(super) const EXPECT_U64: &str = "an unsigned integer";
pub(super) const EXPECT_TIME: &str = "an unsigned integer or an iso-8601 string";

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
pub(super) fn parse_iso_us(s: &str) -> Option<u64> {
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
