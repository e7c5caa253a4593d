//! Per-message values in a payload template: placeholders such as `{float:15..30}` or
//! `{walk:0..100:0.5}` inside the JSON body's strings, parsed once into generators that
//! write their value straight into the outgoing buffer, without allocating.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use super::Stamp;
use super::time::{TimeFormat, Zone, push_digits, write_time};

/// Placeholders a template may use, for error messages.
pub const PLACEHOLDERS: &str = "{device} or {device:03}, {seq}, {counter}, {now} or {now:FORMAT}, \
    {int:A..B}, {float:A..B} or {float:A..B:DECIMALS}, {walk:A..B:STEP}, {choice:a|b|c}, \
    {pad:N}";

/// Why a template cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("bad placeholder `{{{placeholder}}}` in the payload template: {reason}")]
pub struct TemplateError {
    /// The placeholder as written, without its braces.
    pub placeholder: String,
    /// What is wrong and what was expected.
    pub reason: String,
}

/// One per-message value.
#[derive(Debug, Clone)]
pub(super) enum Generator {
    /// The device number, zero-padded to at least this many digits.
    Device(usize),
    /// The per-device sequence number.
    Seq,
    /// A count of messages over the whole carrier (and its clones), from 0.
    Counter(Arc<AtomicU64>),
    /// The send time in a format.
    Now(TimeFormat),
    /// A uniform integer in `lo..=hi`.
    Int { lo: i64, hi: i64 },
    /// A uniform number in `lo..hi`, written with `decimals` fractional digits.
    Float { lo: f64, hi: f64, decimals: u8 },
    /// A random walk per device: starts mid-range, moves by up to ±`step` per message,
    /// stays within `lo..=hi`, written one digit finer than the step; `slot` is its place
    /// in [`DeviceValues`].
    Walk {
        lo: f64,
        hi: f64,
        step: f64,
        decimals: u8,
        slot: usize,
    },
    /// One of the options: each as a quoted JSON string and as escaped text.
    Choice(Vec<(Vec<u8>, Vec<u8>)>),
    /// `n` times `x`.
    Pad(usize),
}

/// A device's own state for its generators: a random number generator seeded by the
/// device number (the same values every run) and the position of each random walk.
#[derive(Debug, Clone)]
pub struct DeviceValues {
    rng: fastrand::Rng,
    walks: Vec<f64>,
}

impl DeviceValues {
    /// The state of `device` for a template with these generators.
    pub(super) fn new(device: u32, generators: &[Generator]) -> Self {
        let walks = generators
            .iter()
            .filter_map(|g| match g {
                Generator::Walk { lo, hi, .. } => Some((lo + hi) / 2.0),
                _ => None,
            })
            .collect();
        Self {
            rng: fastrand::Rng::with_seed(
                0x107_10ad ^ u64::from(device).wrapping_mul(0x9e37_79b9_7f4a_7c15),
            ),
            walks,
        }
    }

    /// A state for messages of no particular device (tests, one-off encodes).
    pub fn detached() -> Self {
        Self {
            rng: fastrand::Rng::with_seed(0),
            walks: Vec::new(),
        }
    }
}

impl Generator {
    /// Parses the inside of one placeholder; `walks` counts the walks so far.
    pub(super) fn parse(text: &str, walks: &mut usize) -> Result<Self, TemplateError> {
        let bad = |reason: String| TemplateError {
            placeholder: text.to_owned(),
            reason,
        };
        let (name, args) = text.split_once(':').unwrap_or((text, ""));
        let no_args = |g: Self| {
            if args.is_empty() {
                Ok(g)
            } else {
                Err(bad(format!("{{{name}}} takes no arguments")))
            }
        };
        match name {
            "device" if args.is_empty() => Ok(Self::Device(0)),
            "device" => args
                .parse::<usize>()
                .ok()
                .filter(|w| *w <= 20)
                .map(Self::Device)
                .ok_or_else(|| bad("expected {device} or {device:03} (zero-padded digits)".into())),
            "seq" => no_args(Self::Seq),
            "counter" => no_args(Self::Counter(Arc::default())),
            "now" if args.is_empty() => Ok(Self::Now(TimeFormat::Auto)),
            "now" => args.parse().map(Self::Now).map_err(bad),
            "int" => {
                let (lo, hi) = range::<i64>(args).ok_or_else(|| {
                    bad("expected {int:A..B} with integers A ≤ B, e.g. {int:0..100}".into())
                })?;
                Ok(Self::Int { lo, hi })
            }
            "float" => {
                let (span, decimals) = split_decimals(args);
                let (lo, hi) = range::<f64>(span).filter(|(lo, hi)| lo.is_finite() && hi.is_finite()).ok_or_else(|| {
                    bad("expected {float:A..B} or {float:A..B:DECIMALS} with A ≤ B, e.g. {float:15..30:1}".into())
                })?;
                let decimals = decimals.ok_or_else(|| bad("DECIMALS must be 0 to 9".into()))?;
                Ok(Self::Float { lo, hi, decimals })
            }
            "walk" => {
                let parsed = args.rsplit_once(':').and_then(|(span, step)| {
                    let (lo, hi) = range::<f64>(span)?;
                    let step = step.parse::<f64>().ok()?;
                    (lo.is_finite() && hi.is_finite() && step.is_finite() && step >= 0.0)
                        .then_some((lo, hi, step))
                });
                let (lo, hi, step) = parsed.ok_or_else(|| {
                    bad("expected {walk:A..B:STEP} with A ≤ B and STEP ≥ 0, e.g. {walk:-20..40:0.5}".into())
                })?;
                *walks += 1;
                // One digit finer than the step is written, at least 2, at most 9.
                let step_digits = args
                    .rsplit_once(':')
                    .and_then(|(_, step)| step.split_once('.'))
                    .map_or(0, |(_, fraction)| fraction.len());
                Ok(Self::Walk {
                    lo,
                    hi,
                    step,
                    decimals: (step_digits + 1).clamp(2, 9) as u8,
                    slot: *walks - 1,
                })
            }
            "choice" => {
                if args.is_empty() {
                    return Err(bad(
                        "expected {choice:a|b|c} with at least one option".into()
                    ));
                }
                Ok(Self::Choice(
                    args.split('|')
                        .map(|option| {
                            let quoted = serde_json::Value::from(option).to_string().into_bytes();
                            let inner = quoted[1..quoted.len() - 1].to_vec();
                            (quoted, inner)
                        })
                        .collect(),
                ))
            }
            "pad" => args
                .parse::<usize>()
                .ok()
                .filter(|n| *n <= 1 << 20)
                .map(Self::Pad)
                .ok_or_else(|| bad("expected {pad:N} with N up to 1048576, e.g. {pad:200}".into())),
            _ => Err(bad(format!("unknown placeholder; use {PLACEHOLDERS}"))),
        }
    }

    /// Writes this message's value: as a JSON value of its own type when `standalone`
    /// (numbers bare, text quoted), else as text inside a JSON string.
    pub(super) fn write(
        &self,
        stamp: &Stamp,
        zone: Zone,
        state: &mut DeviceValues,
        standalone: bool,
        out: &mut Vec<u8>,
    ) {
        let mut digits = itoa::Buffer::new();
        match self {
            Self::Device(width) => {
                // Zero-padded digits are not a JSON number: alone, they are a string.
                let quote = standalone && *width > 0;
                if quote {
                    out.push(b'"');
                }
                let text = digits.format(stamp.device);
                out.resize(out.len() + width.saturating_sub(text.len()), b'0');
                out.extend_from_slice(text.as_bytes());
                if quote {
                    out.push(b'"');
                }
            }
            Self::Seq => out.extend_from_slice(digits.format(stamp.seq).as_bytes()),
            Self::Counter(count) => {
                let n = count.fetch_add(1, Ordering::Relaxed);
                out.extend_from_slice(digits.format(n).as_bytes());
            }
            Self::Now(format) => {
                let start = out.len();
                write_time(stamp.sent_us, *format, zone, out);
                // Inside a string the ISO formats lose their own quotes.
                if !standalone && out.get(start) == Some(&b'"') {
                    out.remove(start);
                    out.pop();
                }
            }
            Self::Int { lo, hi } => {
                let v = state.rng.i64(*lo..=*hi);
                out.extend_from_slice(digits.format(v).as_bytes());
            }
            Self::Float { lo, hi, decimals } => {
                let v = lo + (hi - lo) * state.rng.f64();
                write_fixed(v, *decimals, out);
            }
            Self::Walk {
                lo,
                hi,
                step,
                decimals,
                slot,
            } => {
                let Some(position) = state.walks.get_mut(*slot) else {
                    write_fixed((lo + hi) / 2.0, *decimals, out);
                    return;
                };
                let moved = *position + step * (2.0 * state.rng.f64() - 1.0);
                *position = moved.clamp(*lo, *hi);
                write_fixed(*position, *decimals, out);
            }
            Self::Choice(options) => {
                let (quoted, inner) = &options[state.rng.usize(..options.len())];
                out.extend_from_slice(if standalone { quoted } else { inner });
            }
            Self::Pad(n) => {
                if standalone {
                    out.push(b'"');
                }
                out.resize(out.len() + n, b'x');
                if standalone {
                    out.push(b'"');
                }
            }
        }
    }
}

/// `A..B` with A ≤ B.
fn range<T: std::str::FromStr + PartialOrd>(text: &str) -> Option<(T, T)> {
    let (lo, hi) = text.split_once("..")?;
    let (lo, hi) = (lo.trim().parse::<T>().ok()?, hi.trim().parse::<T>().ok()?);
    (lo <= hi).then_some((lo, hi))
}

/// `A..B` or `A..B:DECIMALS` (default 2, at most 9): the range and the decimals.
fn split_decimals(args: &str) -> (&str, Option<u8>) {
    match args.rsplit_once(':') {
        Some((span, d)) => (span, d.parse::<u8>().ok().filter(|d| *d <= 9)),
        None => (args, Some(2)),
    }
}

/// Writes `v` with exactly `decimals` fractional digits (rounded), without allocating.
fn write_fixed(v: f64, decimals: u8, out: &mut Vec<u8>) {
    let scale = 10f64.powi(i32::from(decimals));
    let scaled = (v.abs() * scale).round();
    if !scaled.is_finite() || scaled >= 1e18 {
        out.push(b'0');
        return;
    }
    let scaled = scaled as u64;
    if v < 0.0 && scaled > 0 {
        out.push(b'-');
    }
    let unit = 10u64.pow(u32::from(decimals));
    out.extend_from_slice(itoa::Buffer::new().format(scaled / unit).as_bytes());
    if decimals > 0 {
        out.push(b'.');
        push_digits(out, (scaled % unit) as u32, usize::from(decimals));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fixed_point_numbers_are_rounded_and_signed() {
        let text = |v: f64, d: u8| {
            let mut out = Vec::new();
            write_fixed(v, d, &mut out);
            String::from_utf8(out).unwrap()
        };
        assert_eq!(text(21.456, 2), "21.46");
        assert_eq!(text(-0.004, 2), "0.00");
        assert_eq!(text(-3.5, 1), "-3.5");
        assert_eq!(text(7.0, 0), "7");
        assert_eq!(text(f64::NAN, 2), "0");
    }
}
