//! Stamp times on the wire: the formats the JSON carrier writes, and how any of them is
//! read back (epoch numbers in s/ms/µs/ns, ISO-8601 with or without an offset) into µs
//! since the Unix epoch.

use std::str::FromStr;

use chrono::{DateTime, Datelike, Local, NaiveDateTime, Offset, TimeZone, Timelike, Utc};
use chrono_tz::Tz;

/// How the JSON carrier writes a time, and which unit it assumes for bare numbers.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum TimeFormat {
    /// Writes integer µs; reads numbers by magnitude (10 digits s, 13 ms, 16 µs, 19 ns,
    /// anything else µs).
    #[default]
    Auto,
    /// Seconds since the epoch as a decimal with 6 fractional digits
    /// (`1733412345.123456`, Python's `time.time()`).
    Seconds,
    /// Integer milliseconds since the epoch (JavaScript's `Date.now()`).
    Millis,
    /// Integer microseconds since the epoch.
    Micros,
    /// Integer nanoseconds since the epoch.
    Nanos,
    /// ISO-8601 in UTC with µs and a `Z`: `"2026-11-25T01:02:03.123456Z"`. Times past
    /// 9999-12-31T23:59:59.999999Z fall back to integer µs (which read back the same).
    Iso8601,
    /// ISO-8601 without an offset, in the carrier's time zone: `"2026-11-25T02:02:03.123456"`
    /// (Python's `datetime.now().isoformat()`).
    Iso8601Local,
}

impl TimeFormat {
    /// The names `--time-format` accepts, for error messages.
    pub const NAMES: &'static str = "auto, s, ms, us, ns, iso8601 or iso8601-local";

    /// The unit bare numbers are read in, `None` to tell it by magnitude.
    fn number_unit(self) -> Option<u64> {
        match self {
            Self::Seconds => Some(1_000_000),
            Self::Millis => Some(1_000),
            // The ISO formats fall back to integer µs for times they cannot write.
            Self::Micros | Self::Iso8601 | Self::Iso8601Local => Some(1),
            Self::Nanos => Some(0),
            Self::Auto => None,
        }
    }
}

impl FromStr for TimeFormat {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        Ok(match s {
            "auto" => Self::Auto,
            "s" | "seconds" => Self::Seconds,
            "ms" | "millis" => Self::Millis,
            "us" | "micros" => Self::Micros,
            "ns" | "nanos" => Self::Nanos,
            "iso8601" | "iso" => Self::Iso8601,
            "iso8601-local" | "local" => Self::Iso8601Local,
            other => {
                return Err(format!(
                    "`{other}` is not a time format; use {}",
                    Self::NAMES
                ));
            }
        })
    }
}

/// The time zone of ISO-8601 times written or read without an offset.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Zone {
    /// The machine's local zone (the `TZ` variable, else the system's setting).
    #[default]
    Local,
    /// A zone of the IANA database, e.g. `Europe/Berlin` or `UTC`.
    Named(Tz),
}

impl FromStr for Zone {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        if s == "local" {
            return Ok(Self::Local);
        }
        s.parse::<Tz>().map(Self::Named).map_err(|_| {
            format!(
                "`{s}` is not a time zone; use local or an IANA name such as Europe/Berlin or UTC"
            )
        })
    }
}

impl Zone {
    /// µs since the epoch of a wall-clock time in this zone: the earlier of two readings
    /// in a DST overlap, `None` inside a DST gap.
    fn to_epoch_us(self, naive: &NaiveDateTime) -> Option<i64> {
        match self {
            Self::Local => Some(
                Local
                    .from_local_datetime(naive)
                    .earliest()?
                    .timestamp_micros(),
            ),
            Self::Named(tz) => Some(tz.from_local_datetime(naive).earliest()?.timestamp_micros()),
        }
    }

    /// The wall-clock time in this zone of a UTC instant.
    fn wall_clock(self, utc: &DateTime<Utc>) -> NaiveDateTime {
        let offset = match self {
            Self::Local => Local.offset_from_utc_datetime(&utc.naive_utc()).fix(),
            Self::Named(tz) => tz.offset_from_utc_datetime(&utc.naive_utc()).fix(),
        };
        utc.naive_utc() + offset
    }
}

/// The last microsecond that ISO-8601 encoding can write with a 4-digit year:
/// 9999-12-31T23:59:59.999999Z.
pub(super) const MAX_ISO_US: u64 = 253_402_300_799_999_999;

/// Writes `us` in `format` (strings with their quotes); allocates nothing beyond `out`'s
/// growth.
pub(super) fn write_time(us: u64, format: TimeFormat, zone: Zone, out: &mut Vec<u8>) {
    let mut digits = itoa::Buffer::new();
    match format {
        TimeFormat::Auto | TimeFormat::Micros => {
            out.extend_from_slice(digits.format(us).as_bytes())
        }
        TimeFormat::Millis => out.extend_from_slice(digits.format(us / 1_000).as_bytes()),
        TimeFormat::Nanos => {
            out.extend_from_slice(digits.format(u128::from(us) * 1_000).as_bytes());
        }
        TimeFormat::Seconds => {
            out.extend_from_slice(digits.format(us / 1_000_000).as_bytes());
            out.push(b'.');
            push_digits(out, (us % 1_000_000) as u32, 6);
        }
        TimeFormat::Iso8601 | TimeFormat::Iso8601Local => {
            let utc = (us <= MAX_ISO_US)
                .then(|| {
                    i64::try_from(us)
                        .ok()
                        .and_then(DateTime::from_timestamp_micros)
                })
                .flatten();
            let Some(utc) = utc else {
                out.extend_from_slice(digits.format(us).as_bytes());
                return;
            };
            if format == TimeFormat::Iso8601 {
                write_iso(&utc.naive_utc(), out, b"Z");
            } else {
                write_iso(&zone.wall_clock(&utc), out, b"");
            }
        }
    }
}

/// Writes `"YYYY-MM-DDTHH:MM:SS.ffffff<suffix>"` with its quotes.
fn write_iso(t: &NaiveDateTime, out: &mut Vec<u8>, suffix: &[u8]) {
    out.push(b'"');
    push_digits(out, u32::try_from(t.year()).unwrap_or(0), 4);
    out.push(b'-');
    push_digits(out, t.month(), 2);
    out.push(b'-');
    push_digits(out, t.day(), 2);
    out.push(b'T');
    push_digits(out, t.hour(), 2);
    out.push(b':');
    push_digits(out, t.minute(), 2);
    out.push(b':');
    push_digits(out, t.second(), 2);
    out.push(b'.');
    push_digits(out, t.and_utc().timestamp_subsec_micros(), 6);
    out.extend_from_slice(suffix);
    out.push(b'"');
}

/// Writes the last `width` (≤ 10) decimal digits of `value`, zero-padded.
pub(super) fn push_digits(out: &mut Vec<u8>, value: u32, width: usize) {
    let mut buf = [b'0'; 10];
    let mut rest = value;
    for slot in buf[..width].iter_mut().rev() {
        *slot = b'0' + (rest % 10) as u8;
        rest /= 10;
    }
    out.extend_from_slice(&buf[..width]);
}

/// Reads times in every [`TimeFormat`] the JSON carrier writes, and in the ones other
/// senders use.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TimeReader {
    /// The unit of bare numbers (`Auto`: by magnitude; the ISO formats: µs, their
    /// fallback).
    pub format: TimeFormat,
    /// The zone of ISO-8601 times without an offset.
    pub zone: Zone,
}

/// Epoch values that can only be one unit, for times between 2001-09-09 and 2286-11-20:
/// 10 digits are seconds, 13 milliseconds, 16 microseconds, 19 nanoseconds. Anything
/// else is read as microseconds (iotload's own format) unless a unit is forced.
const WINDOWS: [(f64, f64, f64); 4] = [
    (1e9, 1e10, 1e6),
    (1e12, 1e13, 1e3),
    (1e15, 1e16, 1.0),
    (1e18, 1e19, 1e-3),
];

impl TimeReader {
    /// An integer time in µs.
    pub fn integer(self, v: u64) -> Option<u64> {
        match self.format.number_unit() {
            Some(0) => Some(v / 1_000),
            Some(unit) => v.checked_mul(unit),
            None => {
                let f = v as f64;
                match WINDOWS.iter().find(|(lo, hi, _)| (*lo..*hi).contains(&f)) {
                    Some((_, _, scale)) if *scale >= 1.0 => v.checked_mul(*scale as u64),
                    Some(_) => Some(v / 1_000),
                    None => Some(v),
                }
            }
        }
    }

    /// A fractional time in µs; `None` if negative or not finite.
    pub fn float(self, v: f64) -> Option<u64> {
        if !v.is_finite() || v < 0.0 {
            return None;
        }
        let scale = match self.format.number_unit() {
            Some(0) => 1e-3,
            Some(unit) => unit as f64,
            None => WINDOWS
                .iter()
                .find(|(lo, hi, _)| (*lo..*hi).contains(&v))
                .map_or(1.0, |w| w.2),
        };
        let us = (v * scale).round();
        (us < u64::MAX as f64).then_some(us as u64)
    }

    /// A time written as a string: ISO-8601 / RFC 3339 (`T` or space, optional fraction,
    /// `Z`, an offset, or none: then in [`TimeReader::zone`]), or a number in a string.
    pub fn text(self, s: &str) -> Option<u64> {
        if let Ok(dt) = DateTime::parse_from_rfc3339(s) {
            return u64::try_from(dt.timestamp_micros()).ok();
        }
        let format = match s.as_bytes().get(10) {
            Some(b' ') => "%Y-%m-%d %H:%M:%S%.f",
            Some(b'T') => "%Y-%m-%dT%H:%M:%S%.f",
            _ => {
                if let Ok(v) = s.parse::<u64>() {
                    return self.integer(v);
                }
                return s.parse::<f64>().ok().and_then(|v| self.float(v));
            }
        };
        let naive = NaiveDateTime::parse_from_str(s, format).ok()?;
        u64::try_from(self.zone.to_epoch_us(&naive)?).ok()
    }
}
