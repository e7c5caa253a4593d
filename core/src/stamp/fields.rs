//! Where the JSON stamp's values live in a message: a field path per value (a top-level
//! name, a dotted path or a JSON pointer), only the send time required, and how the
//! device id is written (a number, or a string rendered from a template).

use std::fmt;

use crate::plan::{Template, TemplatePiece};

/// One field of a JSON message, addressed by a plain name (`sent_us`), a dotted path
/// (`sensor.timestamp`) or a JSON pointer (`/meta/sentAt`, with `~1` for `/` and `~0`
/// for `~` inside names).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldPath {
    written: String,
    segments: Vec<String>,
}

impl FieldPath {
    /// The path that names the broker's record timestamp instead of a JSON field (Kafka's,
    /// which Kafka Streams forwards from input to output).
    pub const RECORD_TIME: &'static str = "@timestamp";

    /// Whether this is [`FieldPath::RECORD_TIME`].
    pub fn is_record_time(&self) -> bool {
        self.written == Self::RECORD_TIME
    }

    /// Parses a path; an empty path or an empty segment is an error naming it.
    pub fn parse(text: &str) -> Result<Self, String> {
        let segments: Vec<String> = if let Some(pointer) = text.strip_prefix('/') {
            pointer
                .split('/')
                .map(|s| s.replace("~1", "/").replace("~0", "~"))
                .collect()
        } else {
            text.split('.').map(str::to_owned).collect()
        };
        if text.is_empty() || segments.iter().any(String::is_empty) {
            return Err(format!(
                "`{text}` is not a field path; give a name (sent_us), a dotted path \
                 (meta.sentAt) or a JSON pointer (/meta/sentAt)"
            ));
        }
        Ok(Self {
            written: text.to_owned(),
            segments,
        })
    }

    /// The object keys from the top level down to the field.
    pub fn segments(&self) -> &[String] {
        &self.segments
    }

    /// The path as the user wrote it.
    pub fn as_str(&self) -> &str {
        &self.written
    }
}

impl fmt::Display for FieldPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.written)
    }
}

/// Where the four stamp values travel in a JSON message. Only the send time is
/// required: without a sequence field there is no per-message loss, duplicate or reorder
/// accounting (loss is counted per topic from the loadgen's sent counts); without a
/// device field the topic identifies the device; without an intended time the send time
/// stands in for it.
///
/// If two paths are equal, decoding gives both stamp values the same JSON value and
/// encoding writes the field once (the send time).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JsonFields {
    /// Field holding the device id (default `device`).
    pub device: Option<FieldPath>,
    /// Field holding the sequence number (default `seq`).
    pub seq: Option<FieldPath>,
    /// Field holding the intended send time (default `intended_us`).
    pub intended: Option<FieldPath>,
    /// Field holding the actual send time (default `sent_us`).
    pub sent: FieldPath,
}

impl Default for JsonFields {
    /// `device`, `seq`, `intended_us`, `sent_us`.
    fn default() -> Self {
        let path = |s: &str| FieldPath {
            written: s.to_owned(),
            segments: vec![s.to_owned()],
        };
        Self {
            device: Some(path("device")),
            seq: Some(path("seq")),
            intended: Some(path("intended_us")),
            sent: path("sent_us"),
        }
    }
}

impl JsonFields {
    /// What `--stamp-fields` expects, for error messages.
    pub const SYNTAX: &'static str = "four comma-separated paths device,seq,intended,sent \
        (`-` for one the messages do not carry), or named ones such as \
        `sent=/meta/sentAt,device=unitMacId` (sent is required)";

    /// Parses `--stamp-fields`: `device,seq,intended,sent` with `-` for an absent one, or
    /// `name=path` pairs (names `device`, `seq`, `intended`, `sent`). The send time may be
    /// `@timestamp`: the broker's record timestamp (Kafka) rather than a JSON field.
    pub fn parse(spec: &str) -> Result<Self, String> {
        let items: Vec<&str> = spec.split(',').map(str::trim).collect();
        let mut slots: [Option<&str>; 4] = [None; 4];
        if items.iter().any(|i| i.contains('=')) {
            for item in &items {
                let Some((name, path)) = item.split_once('=') else {
                    return Err(format!("`{item}` has no `=`; {}", Self::SYNTAX));
                };
                let index = match name.trim() {
                    "device" => 0,
                    "seq" => 1,
                    "intended" => 2,
                    "sent" => 3,
                    other => {
                        return Err(format!(
                            "`{other}` is not a stamp value; use device, seq, intended or sent"
                        ));
                    }
                };
                if slots[index].replace(path.trim()).is_some() {
                    return Err(format!("`{}` is given twice", name.trim()));
                }
            }
        } else if let [d, s, i, t] = items.as_slice() {
            slots = [*d, *s, *i, *t].map(|p| (p != "-").then_some(p));
        } else {
            return Err(format!("`{spec}` is not {}", Self::SYNTAX));
        }
        if slots[..3]
            .iter()
            .flatten()
            .any(|p| *p == FieldPath::RECORD_TIME)
        {
            return Err(format!(
                "`{}` (the broker's record timestamp) can only be the send time, e.g. \
                 `sent=@timestamp,device=deviceId`",
                FieldPath::RECORD_TIME
            ));
        }
        let parse = |p: Option<&str>| p.map(FieldPath::parse).transpose();
        let Some(sent) = slots[3] else {
            return Err(format!(
                "`{spec}` has no send-time field; the send time is the one value every \
                 message must carry"
            ));
        };
        Ok(Self {
            device: parse(slots[0])?,
            seq: parse(slots[1])?,
            intended: parse(slots[2])?,
            sent: FieldPath::parse(sent)?,
        })
    }
}

/// How the loadgen writes the device id into the JSON stamp.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum DeviceIdFormat {
    /// A JSON number: the device's index.
    #[default]
    Number,
    /// A JSON string rendered from a template such as `VZW_LH_UNIT_{device:03}`; the
    /// parts are pre-escaped for JSON.
    Text(Vec<DeviceIdPart>),
}

/// One part of a device id template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeviceIdPart {
    /// Literal text, already escaped for a JSON string.
    Literal(Vec<u8>),
    /// The device's index, zero-padded to at least this many digits.
    Index(usize),
}

impl DeviceIdFormat {
    /// Writes the id of `device` (a string with its quotes, or a number).
    pub(super) fn write(&self, device: u32, out: &mut Vec<u8>) {
        let mut digits = itoa::Buffer::new();
        let Self::Text(parts) = self else {
            out.extend_from_slice(digits.format(device).as_bytes());
            return;
        };
        out.push(b'"');
        for part in parts {
            match part {
                DeviceIdPart::Literal(bytes) => out.extend_from_slice(bytes),
                DeviceIdPart::Index(width) => {
                    let text = digits.format(device);
                    out.resize(out.len() + width.saturating_sub(text.len()), b'0');
                    out.extend_from_slice(text.as_bytes());
                }
            }
        }
        out.push(b'"');
    }
}

impl DeviceIdFormat {
    /// String ids rendered from `template` (`{device}` / `{device:03}` is the index).
    pub fn from_template(template: &Template) -> Self {
        Self::Text(
            template
                .pieces()
                .map(|piece| match piece {
                    TemplatePiece::Literal(text) => {
                        let quoted = serde_json::Value::from(text).to_string();
                        let escaped = &quoted[1..quoted.len() - 1];
                        DeviceIdPart::Literal(escaped.as_bytes().to_vec())
                    }
                    TemplatePiece::Device { width } => DeviceIdPart::Index(width),
                })
                .collect(),
        )
    }
}
