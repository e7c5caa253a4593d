//! The header carrier: the stamp in transport headers (MQTT 5 user properties, NATS,
//! Kafka, AMQP, Pulsar and ZeroMQ headers) as decimal strings; the payload is untouched.

use super::{Stamp, StampError, snippet};

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
