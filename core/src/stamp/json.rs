//! The JSON carrier: the stamp as fields of a compact JSON object (paths, time format and
//! device id format configurable), merged with the user's own body fields and padding;
//! the message is compiled once into literal bytes and value slots, and decoded without
//! building a JSON tree.

use std::fmt;

use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Value};

use super::fields::{DeviceIdFormat, JsonFields};
use super::time::{TimeFormat, TimeReader, Zone, write_time};
use super::values::{DeviceValues, Generator, TemplateError};
use super::{DeviceId, ReceivedStamp, Stamp, StampError, snippet};

/// Name of the padding field appended by [`JsonCarrier::encode`].
const PAD_FIELD: &[u8] = b",\"pad\":\"";
/// Bytes the padding field adds beyond its `x` run: `,"pad":""`.
pub(super) const PAD_OVERHEAD: usize = PAD_FIELD.len() + 1;

pub(super) const EXPECT_DEVICE: &str = "a string or an unsigned 32-bit integer";
pub(super) const EXPECT_U64: &str = "an unsigned integer";
pub(super) const EXPECT_TIME: &str =
    "a time: a non-negative epoch number (s, ms, µs or ns) or an iso-8601 string";

/// Which stamp value a slot of the compiled message holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Slot {
    Device,
    Seq,
    Intended,
    Sent,
}

/// A piece of the compiled message: bytes written as they are, a stamp value, or a
/// template's per-message value (`standalone`: a JSON value of its own, else text inside
/// a string).
#[derive(Debug, Clone, PartialEq, Eq)]
enum Piece {
    Bytes(Vec<u8>),
    Value(Slot),
    Generated { index: usize, standalone: bool },
}

/// Carries a [`Stamp`] as fields of a compact JSON object, merged with the user's own
/// body fields and followed by a padding field.
#[derive(Debug, Clone)]
pub struct JsonCarrier {
    fields: JsonFields,
    format: TimeFormat,
    zone: Zone,
    device_id: DeviceIdFormat,
    /// The message up to (not including) the padding and the closing brace.
    pieces: Vec<Piece>,
    /// Each configured path with the stamp values it carries (bit set), for decoding.
    paths: Vec<(u8, Vec<String>)>,
    /// The payload template's per-message values, by [`Piece::Generated`] index.
    generators: Vec<Generator>,
    pad_to: usize,
}

impl JsonCarrier {
    /// Builds a carrier.
    ///
    /// `body`: the user's JSON payload. Stamp fields come first; body fields follow, and
    /// objects on a stamp field's path are merged (the stamp value wins a clash), and a
    /// field named `pad` is dropped when `pad_to > 0`. `pad_to`: minimum total payload
    /// size in bytes. When the unpadded message is at least 9 bytes (the size of an empty
    /// `,"pad":""`) short of it, a `"pad":"xxxx…"` string field brings it to exactly
    /// `pad_to`; when it is 1 to 8 bytes short, spaces before the closing brace do (valid
    /// JSON whitespace, no pad field); when it is already long enough nothing is added.
    /// The message is compiled once, here.
    pub fn new(
        fields: JsonFields,
        format: TimeFormat,
        body: Option<&Map<String, Value>>,
        pad_to: usize,
    ) -> Self {
        match Self::compile(fields, format, body, pad_to, false) {
            Ok(carrier) => carrier,
            Err(e) => unreachable!("a body without placeholders always compiles: {e}"),
        }
    }

    /// Like [`JsonCarrier::new`], with the body's strings read as a payload template:
    /// placeholders such as `{float:15..30}` (see [`crate::stamp::PLACEHOLDERS`]) are filled per message,
    /// `{{` and `}}` are literal braces. A string that is one placeholder becomes a value
    /// of the placeholder's type (`"{int:0..9}"` → `7`); inside a longer string the value
    /// is written as text.
    pub fn templated(
        fields: JsonFields,
        format: TimeFormat,
        body: Option<&Map<String, Value>>,
        pad_to: usize,
    ) -> Result<Self, TemplateError> {
        Self::compile(fields, format, body, pad_to, true)
    }

    fn compile(
        fields: JsonFields,
        format: TimeFormat,
        body: Option<&Map<String, Value>>,
        pad_to: usize,
        templated: bool,
    ) -> Result<Self, TemplateError> {
        let mut root: Vec<(String, Node)> = Vec::new();
        let mut paths: Vec<(u8, Vec<String>)> = Vec::new();
        let stamp_paths = [
            (&fields.device, Slot::Device, F_DEVICE),
            (&fields.seq, Slot::Seq, F_SEQ),
            (&Some(fields.sent.clone()), Slot::Sent, F_SENT),
            (&fields.intended, Slot::Intended, F_INTENDED),
        ];
        for (path, slot, bit) in stamp_paths {
            if let Some(path) = path.as_ref().filter(|p| !p.is_record_time()) {
                insert_slot(&mut root, path.segments(), slot);
                paths.push((bit, path.segments().to_vec()));
            }
        }
        // The stamp's fields first, in the order device, seq, intended, sent.
        root.sort_by_key(|(_, node)| node.first_slot_rank());
        if let Some(body) = body {
            merge_body(&mut root, body, pad_to > 0);
        }
        let mut compiled = Compiled {
            pieces: Vec::new(),
            generators: Vec::new(),
            walks: 0,
            templated,
        };
        compiled.object(&root, false)?;
        Ok(Self {
            fields,
            format,
            zone: Zone::Local,
            device_id: DeviceIdFormat::Number,
            pieces: compiled.pieces,
            paths,
            generators: compiled.generators,
            pad_to,
        })
    }

    /// A device's own state for the template's values (its random numbers and walks).
    pub fn device_values(&self, device: u32) -> DeviceValues {
        DeviceValues::new(device, &self.generators)
    }

    /// The zone of ISO-8601 times without an offset, written and read (default: local).
    #[must_use]
    pub fn with_zone(mut self, zone: Zone) -> Self {
        self.zone = zone;
        self
    }

    /// How the device id is written (default: a number).
    #[must_use]
    pub fn with_device_id(mut self, device_id: DeviceIdFormat) -> Self {
        self.device_id = device_id;
        self
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

    /// The field paths this carrier reads and writes.
    pub fn fields(&self) -> &JsonFields {
        &self.fields
    }

    /// Clears `out` and writes one compact JSON object, with template values from a
    /// state of no particular device (see [`JsonCarrier::encode_for`]).
    pub fn encode(&self, stamp: &Stamp, out: &mut Vec<u8>) {
        self.encode_for(stamp, &mut DeviceValues::detached(), out);
    }

    /// Clears `out` and writes one compact JSON object, template values drawn from the
    /// device's `state`. Allocates nothing beyond `out`'s growth.
    pub fn encode_for(&self, stamp: &Stamp, state: &mut DeviceValues, out: &mut Vec<u8>) {
        out.clear();
        out.reserve(self.pad_to.max(128));
        let mut digits = itoa::Buffer::new();
        for piece in &self.pieces {
            match piece {
                Piece::Bytes(bytes) => out.extend_from_slice(bytes),
                Piece::Value(Slot::Device) => self.device_id.write(stamp.device, out),
                Piece::Value(Slot::Seq) => {
                    out.extend_from_slice(digits.format(stamp.seq).as_bytes())
                }
                Piece::Value(Slot::Intended) => {
                    write_time(stamp.intended_us, self.format, self.zone, out);
                }
                Piece::Value(Slot::Sent) => write_time(stamp.sent_us, self.format, self.zone, out),
                Piece::Generated { index, standalone } => {
                    if let Some(generator) = self.generators.get(*index) {
                        generator.write(stamp, self.zone, state, *standalone, out);
                    }
                }
            }
        }
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

    /// Decodes a stamp from a JSON payload without building a JSON tree: only the
    /// configured paths are parsed, everything else is skipped.
    ///
    /// The device id is a string or an unsigned integer fitting `u32`, the sequence an
    /// unsigned integer; a time is an epoch number (integer or fractional, in the unit
    /// `--time-format` forces, else told by magnitude: 10 digits s, 13 ms, 16 µs, 19 ns,
    /// anything else µs) or an ISO-8601 / RFC 3339 string (`T` or space separator,
    /// optional fraction; with `Z` or an offset, or without one, meaning the carrier's
    /// zone — the earlier of two readings in a DST overlap, a [`StampError::BadTime`]
    /// inside a DST gap), or a number in a string. A configured field that is absent is
    /// [`StampError::Missing`]; a missing intended time falls back to the sent time.
    /// Trailing non-whitespace after the object is [`StampError::NotJson`].
    pub fn decode(&self, payload: &[u8]) -> Result<ReceivedStamp, StampError> {
        self.decode_with_record_time(payload, None)
    }

    /// Like [`JsonCarrier::decode`], with the broker's record timestamp for a send time
    /// given as `@timestamp`; when that is the only stamp value, the payload is not read
    /// at all (it need not be JSON).
    pub fn decode_with_record_time(
        &self,
        payload: &[u8],
        record_time_us: Option<u64>,
    ) -> Result<ReceivedStamp, StampError> {
        let mut found = Found::default();
        if self.fields.sent.is_record_time() {
            found.sent = record_time_us;
            if self.paths.is_empty() {
                return found.finish(&self.fields);
            }
        }
        let mut de = serde_json::Deserializer::from_slice(payload);
        let seed = ObjectSeed {
            carrier: self,
            depth: 0,
            active: u8::MAX,
            found: &mut found,
        };
        seed.deserialize(&mut de).map_err(|_| StampError::NotJson)?;
        de.end().map_err(|_| StampError::NotJson)?;
        found.finish(&self.fields)
    }

    fn reader(&self) -> TimeReader {
        TimeReader {
            format: self.format,
            zone: self.zone,
        }
    }
}

/// The message as a tree while it is compiled.
#[derive(Debug)]
enum Node {
    Object(Vec<(String, Node)>),
    Slot(Slot),
    Value(Value),
}

impl Node {
    /// Order of the first stamp value in this node (device first), for laying out the
    /// stamp fields in a fixed order.
    fn first_slot_rank(&self) -> u8 {
        match self {
            Self::Slot(slot) => match slot {
                Slot::Device => 0,
                Slot::Seq => 1,
                Slot::Intended => 2,
                Slot::Sent => 3,
            },
            Self::Object(children) => children
                .iter()
                .map(|(_, n)| n.first_slot_rank())
                .min()
                .unwrap_or(u8::MAX),
            Self::Value(_) => u8::MAX,
        }
    }
}

/// Puts `slot` at `path` below `entries`, creating objects on the way; a path that ends on
/// or passes through a field already holding a value is left out (the first one wins).
fn insert_slot(entries: &mut Vec<(String, Node)>, path: &[String], slot: Slot) {
    let Some((first, rest)) = path.split_first() else {
        return;
    };
    match entries.iter_mut().find(|(k, _)| k == first) {
        None if rest.is_empty() => entries.push((first.clone(), Node::Slot(slot))),
        None => {
            let mut children = Vec::new();
            insert_slot(&mut children, rest, slot);
            entries.push((first.clone(), Node::Object(children)));
        }
        Some((_, Node::Object(children))) if !rest.is_empty() => insert_slot(children, rest, slot),
        Some(_) => {}
    }
}

/// Adds the body's fields after the stamp's, merging objects on a stamp path.
fn merge_body(entries: &mut Vec<(String, Node)>, body: &Map<String, Value>, drop_pad: bool) {
    for (name, value) in body {
        if drop_pad && name == "pad" {
            continue;
        }
        match entries.iter_mut().find(|(k, _)| k == name) {
            None => entries.push((name.clone(), Node::Value(value.clone()))),
            Some((_, Node::Object(children))) => {
                if let Value::Object(inner) = value {
                    merge_body(children, inner, false);
                }
            }
            Some(_) => {}
        }
    }
}

/// The message being compiled into pieces.
struct Compiled {
    pieces: Vec<Piece>,
    generators: Vec<Generator>,
    walks: usize,
    /// Whether the body's strings are templates.
    templated: bool,
}

impl Compiled {
    /// Appends `bytes` to the last literal piece, or starts one.
    fn bytes(&mut self, bytes: &[u8]) {
        if let Some(Piece::Bytes(last)) = self.pieces.last_mut() {
            last.extend_from_slice(bytes);
        } else {
            self.pieces.push(Piece::Bytes(bytes.to_vec()));
        }
    }

    /// An object; the top level is left open for padding.
    fn object(&mut self, entries: &[(String, Node)], close: bool) -> Result<(), TemplateError> {
        self.bytes(b"{");
        for (i, (name, node)) in entries.iter().enumerate() {
            if i > 0 {
                self.bytes(b",");
            }
            self.bytes(Value::from(name.as_str()).to_string().as_bytes());
            self.bytes(b":");
            match node {
                Node::Slot(slot) => self.pieces.push(Piece::Value(*slot)),
                Node::Value(value) => self.value(value)?,
                Node::Object(children) => self.object(children, true)?,
            }
        }
        if close {
            self.bytes(b"}");
        }
        Ok(())
    }

    /// A body value: strings are templates when `templated`, containers are walked.
    fn value(&mut self, value: &Value) -> Result<(), TemplateError> {
        match value {
            Value::String(text) if self.templated => self.template(text),
            Value::Array(items) if self.templated => {
                self.bytes(b"[");
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        self.bytes(b",");
                    }
                    self.value(item)?;
                }
                self.bytes(b"]");
                Ok(())
            }
            Value::Object(map) if self.templated => {
                self.bytes(b"{");
                for (i, (name, item)) in map.iter().enumerate() {
                    if i > 0 {
                        self.bytes(b",");
                    }
                    self.bytes(Value::from(name.as_str()).to_string().as_bytes());
                    self.bytes(b":");
                    self.value(item)?;
                }
                self.bytes(b"}");
                Ok(())
            }
            other => {
                self.bytes(other.to_string().as_bytes());
                Ok(())
            }
        }
    }

    /// A template string: literal text, `{{`/`}}` for braces, `{placeholder}`s.
    fn template(&mut self, text: &str) -> Result<(), TemplateError> {
        let mut parts: Vec<(String, Option<Generator>)> = Vec::new();
        let mut literal = String::new();
        let mut rest = text;
        while let Some(i) = rest.find(['{', '}']) {
            literal.push_str(&rest[..i]);
            let (brace, after) = (rest.as_bytes()[i], &rest[i + 1..]);
            if after.as_bytes().first() == Some(&brace) {
                literal.push(brace as char);
                rest = &after[1..];
                continue;
            }
            if brace == b'}' {
                literal.push('}');
                rest = after;
                continue;
            }
            let Some(end) = after.find('}') else {
                return Err(TemplateError {
                    placeholder: after.to_owned(),
                    reason: "it is not closed; write {{ for a literal brace".into(),
                });
            };
            let generator = Generator::parse(&after[..end], &mut self.walks)?;
            parts.push((std::mem::take(&mut literal), Some(generator)));
            rest = &after[end + 1..];
        }
        literal.push_str(rest);
        if let [(prefix, Some(_))] = parts.as_slice()
            && prefix.is_empty()
            && literal.is_empty()
        {
            if let Some((_, Some(generator))) = parts.pop() {
                self.generated(generator, true);
            }
            return Ok(());
        }
        if parts.is_empty() {
            self.bytes(Value::from(literal).to_string().as_bytes());
            return Ok(());
        }
        self.bytes(b"\"");
        for (prefix, generator) in parts {
            self.bytes(escaped(&prefix).as_bytes());
            if let Some(generator) = generator {
                self.generated(generator, false);
            }
        }
        self.bytes(escaped(&literal).as_bytes());
        self.bytes(b"\"");
        Ok(())
    }

    fn generated(&mut self, generator: Generator, standalone: bool) {
        self.pieces.push(Piece::Generated {
            index: self.generators.len(),
            standalone,
        });
        self.generators.push(generator);
    }
}

/// `text` escaped for the inside of a JSON string (no quotes).
fn escaped(text: &str) -> String {
    let quoted = Value::from(text).to_string();
    quoted[1..quoted.len() - 1].to_owned()
}

/// Bits saying which stamp values a JSON key carries.
const F_DEVICE: u8 = 1;
const F_SEQ: u8 = 2;
const F_INTENDED: u8 = 4;
const F_SENT: u8 = 8;

/// Seed for an object at `depth` on the way to the `active` paths; it records what it
/// finds in `found`. The top level must be an object; below it, a value that is not one
/// is skipped (its fields are then missing).
struct ObjectSeed<'a> {
    carrier: &'a JsonCarrier,
    depth: usize,
    active: u8,
    found: &'a mut Found,
}

impl<'de> DeserializeSeed<'de> for ObjectSeed<'_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        if self.depth == 0 {
            deserializer.deserialize_map(self)
        } else {
            deserializer.deserialize_any(self)
        }
    }
}

impl<'de> Visitor<'de> for ObjectSeed<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a json object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        while let Some((leaf, deeper)) = map.next_key_seed(KeySeed {
            paths: &self.carrier.paths,
            depth: self.depth,
            active: self.active,
        })? {
            if leaf != 0 && self.found.failure.is_none() {
                let value = map.next_value_seed(ValueSeed {
                    reader: self.carrier.reader(),
                    time: leaf & (F_INTENDED | F_SENT) != 0,
                    text: leaf & F_DEVICE != 0,
                })?;
                self.found.apply(leaf, value, self.carrier);
            } else if deeper != 0 {
                map.next_value_seed(ObjectSeed {
                    carrier: self.carrier,
                    depth: self.depth + 1,
                    active: deeper,
                    found: self.found,
                })?;
            } else {
                map.next_value::<IgnoredAny>()?;
            }
        }
        Ok(())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(())
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<(), E> {
        Ok(())
    }

    fn visit_i64<E: de::Error>(self, _: i64) -> Result<(), E> {
        Ok(())
    }

    fn visit_u64<E: de::Error>(self, _: u64) -> Result<(), E> {
        Ok(())
    }

    fn visit_f64<E: de::Error>(self, _: f64) -> Result<(), E> {
        Ok(())
    }

    fn visit_str<E: de::Error>(self, _: &str) -> Result<(), E> {
        Ok(())
    }

    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        Ok(())
    }
}

/// The stamp values seen so far in one message, and the first problem with one.
#[derive(Default)]
struct Found {
    device: Option<DeviceId>,
    seq: Option<u64>,
    intended: Option<u64>,
    sent: Option<u64>,
    failure: Option<StampError>,
}

impl Found {
    fn apply(&mut self, mask: u8, value: Scalar, carrier: &JsonCarrier) {
        if let Err(e) = self.try_apply(mask, value, carrier) {
            self.failure = Some(e);
        }
    }

    fn try_apply(
        &mut self,
        mask: u8,
        mut value: Scalar,
        carrier: &JsonCarrier,
    ) -> Result<(), StampError> {
        let fields = &carrier.fields;
        // Borrowed: the names are only copied into an error.
        fn name(p: &Option<super::FieldPath>) -> &str {
            p.as_ref().map_or("", super::FieldPath::as_str)
        }
        if mask & F_DEVICE != 0 {
            let wrong = || wrong_type(name(&fields.device), EXPECT_DEVICE);
            self.device = Some(match &mut value {
                Scalar::Int(v) => DeviceId::Number(u32::try_from(*v).map_err(|_| wrong())?),
                // The id moves out, unless the same field is read again below.
                Scalar::Text(s) if mask == F_DEVICE => DeviceId::Name(std::mem::take(s)),
                Scalar::Text(s) => DeviceId::Name(s.clone()),
                _ => return Err(wrong()),
            });
        }
        if mask & F_SEQ != 0 {
            self.seq = Some(
                value
                    .int()
                    .ok_or_else(|| wrong_type(name(&fields.seq), EXPECT_U64))?,
            );
        }
        let reader = carrier.reader();
        if mask & F_INTENDED != 0 {
            self.intended = Some(value.time(name(&fields.intended), reader)?);
        }
        if mask & F_SENT != 0 {
            self.sent = Some(value.time(fields.sent.as_str(), reader)?);
        }
        Ok(())
    }

    fn finish(self, fields: &JsonFields) -> Result<ReceivedStamp, StampError> {
        if let Some(e) = self.failure {
            return Err(e);
        }
        let missing = |path: &super::FieldPath| StampError::Missing {
            field: path.as_str().to_owned(),
        };
        if let (Some(path), None) = (&fields.device, &self.device) {
            return Err(missing(path));
        }
        if let (Some(path), None) = (&fields.seq, self.seq) {
            return Err(missing(path));
        }
        let sent_us = self.sent.ok_or_else(|| missing(&fields.sent))?;
        Ok(ReceivedStamp {
            device: self.device,
            seq: self.seq,
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

/// Seed for an object key at `depth`: compares it (borrowed or transient, never
/// allocated) with the `active` paths' segment there and yields the values that end here
/// and the paths that go deeper, (0, 0) for keys to skip.
struct KeySeed<'a> {
    paths: &'a [(u8, Vec<String>)],
    depth: usize,
    active: u8,
}

impl<'de> DeserializeSeed<'de> for KeySeed<'_> {
    type Value = (u8, u8);

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(u8, u8), D::Error> {
        deserializer.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for KeySeed<'_> {
    type Value = (u8, u8);

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a field name")
    }

    fn visit_str<E: de::Error>(self, key: &str) -> Result<(u8, u8), E> {
        let (mut leaf, mut deeper) = (0, 0);
        for (bit, segments) in self.paths {
            if self.active & bit == 0 || segments.get(self.depth).map(String::as_str) != Some(key) {
                continue;
            }
            if segments.len() == self.depth + 1 {
                leaf |= bit;
            } else {
                deeper |= bit;
            }
        }
        Ok((leaf, deeper))
    }
}

/// A stamp field's value, reduced to what the stamp can use.
enum Scalar {
    /// A non-negative integer.
    Int(u64),
    /// A fractional number.
    Float(f64),
    /// A string kept as it is (a device id).
    Text(String),
    /// A string that parsed as a time (µs since the epoch).
    Time(u64),
    /// A string that did not parse as a time (cut for the error).
    BadTime(String),
    /// Anything else: negative numbers, booleans, null, arrays, objects, or strings
    /// where none is allowed.
    Other,
}

impl Scalar {
    fn int(&self) -> Option<u64> {
        match self {
            Self::Int(v) => Some(*v),
            _ => None,
        }
    }

    fn time(&self, field: &str, reader: TimeReader) -> Result<u64, StampError> {
        let bad_time = |value: &str| StampError::BadTime {
            field: field.to_owned(),
            value: snippet(value),
        };
        match self {
            Self::Int(v) => reader
                .integer(*v)
                .ok_or_else(|| wrong_type(field, EXPECT_TIME)),
            Self::Float(v) => reader
                .float(*v)
                .ok_or_else(|| wrong_type(field, EXPECT_TIME)),
            Self::Time(v) => Ok(*v),
            Self::Text(s) => reader.text(s).ok_or_else(|| bad_time(s)),
            Self::BadTime(value) => Err(bad_time(value)),
            Self::Other => Err(wrong_type(field, EXPECT_TIME)),
        }
    }
}

/// Seed for a stamp field's value; `time`: strings may be times (parsed here, without
/// allocating), `text`: strings are kept (device ids).
struct ValueSeed {
    reader: TimeReader,
    time: bool,
    text: bool,
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

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Scalar, E> {
        Ok(Scalar::Float(v))
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<Scalar, E> {
        Ok(Scalar::Other)
    }

    fn visit_unit<E: de::Error>(self) -> Result<Scalar, E> {
        Ok(Scalar::Other)
    }

    fn visit_str<E: de::Error>(self, s: &str) -> Result<Scalar, E> {
        if self.text {
            return Ok(Scalar::Text(s.to_owned()));
        }
        if !self.time {
            return Ok(Scalar::Other);
        }
        Ok(match self.reader.text(s) {
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
