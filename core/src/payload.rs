//! Message bodies and the carrier that puts the stamp into them.
//!
//! The loadgen encodes with the carrier the user chose; receivers detect the carrier of
//! each message (binary magic, stamp headers, else JSON fields), so a collector needs no
//! option to read what any loadgen sends.

use std::path::Path;
use std::str::FromStr;

use crate::plan::PlanError;
use crate::stamp::{
    BinaryCarrier, DeviceIdFormat, DeviceValues, HeaderCarrier, JsonCarrier, JsonFields,
    ReceivedStamp, Stamp, StampError, TimeFormat, Zone,
};

/// Where the stamp rides.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum CarrierKind {
    /// Fields of a JSON object payload (the default: a real iPaaS copies named fields).
    #[default]
    Json,
    /// A fixed 32-byte binary header before the body (fast, for echo-style responders).
    Binary,
    /// Protocol metadata (MQTT 5 user properties); the body stays untouched.
    Header,
}

impl FromStr for CarrierKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "json" => Ok(Self::Json),
            "binary" => Ok(Self::Binary),
            "header" => Ok(Self::Header),
            other => Err(format!(
                "unknown stamp carrier `{other}`; use json, binary or header"
            )),
        }
    }
}

/// The user's message body, before the stamp is added.
#[derive(Debug, Clone, PartialEq, Default)]
pub enum Body {
    /// No body of the user's own.
    #[default]
    Empty,
    /// A JSON object whose fields are sent along with the stamp.
    Json(serde_json::Map<String, serde_json::Value>),
    /// Any other bytes (text, binary).
    Raw(Vec<u8>),
}

impl Body {
    /// A JSON object if the bytes are one, else raw bytes.
    pub fn from_bytes(bytes: Vec<u8>) -> Self {
        if bytes.is_empty() {
            return Self::Empty;
        }
        match serde_json::from_slice::<serde_json::Value>(&bytes) {
            Ok(serde_json::Value::Object(map)) => Self::Json(map),
            _ => Self::Raw(bytes),
        }
    }

    /// Reads a body file (`--payload-file`).
    pub fn from_file(path: &Path) -> Result<Self, PlanError> {
        std::fs::read(path)
            .map(Self::from_bytes)
            .map_err(|source| PlanError::File {
                option: "--payload-file",
                path: path.display().to_string(),
                source,
            })
    }

    fn bytes(&self) -> Vec<u8> {
        match self {
            Body::Empty => Vec::new(),
            Body::Json(map) => serde_json::to_vec(map).expect("a JSON map always serialises"),
            Body::Raw(b) => b.clone(),
        }
    }
}

/// Encodes stamps into outgoing messages with one carrier.
#[derive(Debug)]
pub struct StampEncoder {
    carrier: CarrierKind,
    json: JsonCarrier,
    body: Vec<u8>,
}

impl StampEncoder {
    /// Prepares the body once; `pad_to` is the minimum payload size in bytes.
    pub fn new(
        carrier: CarrierKind,
        json: JsonStampFormat,
        body: &Body,
        pad_to: usize,
    ) -> Result<Self, PlanError> {
        let JsonStampFormat {
            fields,
            time_format,
            zone,
            device_id,
        } = json;
        if carrier != CarrierKind::Json && device_id != DeviceIdFormat::Number {
            return Err(PlanError::BadValue {
                option: "--device-id",
                reason: "string device ids ride in the json stamp; the binary and header \
                         stamps carry numbers, so leave --device-id out or use --stamp json"
                    .into(),
            });
        }
        let json = match (carrier, body) {
            (CarrierKind::Json, Body::Raw(_)) => {
                return Err(PlanError::BadValue {
                    option: "--payload",
                    reason: "the payload is not a JSON object, so the json stamp carrier cannot \
                             add fields to it; give a JSON object or use --stamp binary or \
                             --stamp header"
                        .into(),
                });
            }
            (CarrierKind::Json, Body::Json(map)) => {
                JsonCarrier::templated(fields, time_format, Some(map), pad_to).map_err(|e| {
                    PlanError::BadValue {
                        option: "--payload",
                        reason: e.to_string(),
                    }
                })?
            }
            _ => JsonCarrier::new(fields, time_format, None, pad_to),
        }
        .with_zone(zone)
        .with_device_id(device_id);
        let mut body_bytes = body.bytes();
        let header = match carrier {
            CarrierKind::Binary => BinaryCarrier::HEADER_LEN,
            _ => 0,
        };
        if body_bytes.len() + header < pad_to {
            body_bytes.resize(pad_to - header, b' ');
        }
        Ok(Self {
            carrier,
            json,
            body: body_bytes,
        })
    }

    /// The carrier in use.
    pub fn carrier(&self) -> CarrierKind {
        self.carrier
    }

    /// A device's own state for the payload template's values.
    pub fn device_values(&self, device: u32) -> DeviceValues {
        self.json.device_values(device)
    }

    /// Writes the payload for `stamp` into `out` (cleared first), template values drawn
    /// from the device's `state`, and the stamp headers into `headers` (cleared first;
    /// left empty unless the carrier is `Header`).
    pub fn encode(
        &self,
        stamp: &Stamp,
        state: &mut DeviceValues,
        out: &mut Vec<u8>,
        headers: &mut Vec<(String, String)>,
    ) {
        headers.clear();
        match self.carrier {
            CarrierKind::Json => self.json.encode_for(stamp, state, out),
            CarrierKind::Binary => BinaryCarrier::encode(stamp, &self.body, out),
            CarrierKind::Header => {
                out.clear();
                out.extend_from_slice(&self.body);
                *headers = HeaderCarrier::encode(stamp);
            }
        }
    }
}

/// How the JSON stamp is laid out: where its fields are, how times and device ids are
/// written, and the zone of times without an offset.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct JsonStampFormat {
    /// Where the stamp values are.
    pub fields: JsonFields,
    /// How times are written (and which unit bare numbers are read in).
    pub time_format: TimeFormat,
    /// The zone of ISO-8601 times without an offset.
    pub zone: Zone,
    /// How the loadgen writes device ids.
    pub device_id: DeviceIdFormat,
}

/// Reads stamps from incoming messages, whatever carrier they use.
#[derive(Debug)]
pub struct StampDecoder {
    json: JsonCarrier,
}

impl StampDecoder {
    /// A decoder that looks for the JSON stamp as `json` lays it out.
    pub fn new(json: JsonStampFormat) -> Self {
        Self {
            json: JsonCarrier::new(json.fields, json.time_format, None, 0).with_zone(json.zone),
        }
    }

    /// The stamp of one message: binary header if it starts with the magic, else stamp
    /// headers if present, else JSON fields (and the broker's record timestamp,
    /// `record_time_us`, for a send time given as `@timestamp`).
    pub fn decode(
        &self,
        payload: &[u8],
        headers: &[(String, String)],
        record_time_us: Option<u64>,
    ) -> Result<ReceivedStamp, StampError> {
        if payload.starts_with(b"IOTL") {
            return BinaryCarrier::decode(payload).map(ReceivedStamp::from);
        }
        if HeaderCarrier::carries_stamp(headers.iter().map(|(k, _)| k.as_str())) {
            return HeaderCarrier::decode(headers.iter().map(|(k, v)| (k.as_str(), v.as_str())))
                .map(ReceivedStamp::from);
        }
        self.json.decode_with_record_time(payload, record_time_us)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stamp() -> Stamp {
        Stamp {
            device: 7,
            seq: 3,
            intended_us: 1_700_000_000_000_000,
            sent_us: 1_700_000_000_000_123,
        }
    }

    #[test]
    fn header_names_in_another_case_are_still_the_header_stamp() {
        // Some transports (and iPaaS flows) change the case of header names; detection
        // must match them as decoding does, or every message is "undecodable".
        let decoder = StampDecoder::new(JsonStampFormat::default());
        let headers: Vec<(String, String)> = HeaderCarrier::encode(&stamp())
            .into_iter()
            .map(|(k, v)| (k.to_ascii_uppercase(), v))
            .collect();
        assert_eq!(
            decoder.decode(b"opaque body", &headers, None),
            Ok(stamp().into())
        );
    }

    #[test]
    fn every_carrier_round_trips_through_the_decoder() {
        let decoder = StampDecoder::new(JsonStampFormat::default());
        for carrier in [CarrierKind::Json, CarrierKind::Binary, CarrierKind::Header] {
            let body = Body::from_bytes(br#"{"temp":21.5}"#.to_vec());
            let enc = StampEncoder::new(carrier, JsonStampFormat::default(), &body, 200).unwrap();
            let (mut out, mut headers) = (Vec::new(), Vec::new());
            enc.encode(&stamp(), &mut enc.device_values(7), &mut out, &mut headers);
            assert!(out.len() >= 200, "{carrier:?} padded to {}", out.len());
            assert_eq!(
                decoder.decode(&out, &headers, None).unwrap(),
                stamp().into(),
                "{carrier:?}"
            );
        }
    }

    #[test]
    fn json_carrier_refuses_a_non_json_body() {
        let body = Body::from_bytes(b"plain text".to_vec());
        let err = StampEncoder::new(CarrierKind::Json, JsonStampFormat::default(), &body, 0)
            .unwrap_err()
            .to_string();
        assert!(err.contains("--stamp binary"), "{err}");
    }
}
