//! The binary carrier: the stamp in a fixed 32-byte header in front of the body, for
//! echo-style responders that copy bytes.

use super::{Stamp, StampError};

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
