//! What the echo does to each request besides copying it: a processing delay (fixed or
//! with jitter) and, on request, injected faults (drops, duplicates, reordering) drawn from
//! a seeded random source, so a run can be repeated and its outputs checked against
//! exactly what was done.

use std::time::Duration;

use clap::Args;
use iotload_core::plan::parse_duration;

/// The delay and faults to inject (`--delay`, `--drop`, `--duplicate`, `--reorder`).
#[derive(Debug, Clone, Args, Default)]
pub struct FaultArgs {
    /// Processing time to emulate before each action is published: a duration (50ms) or
    /// a duration with a uniform jitter (20ms±5ms, also written 20ms+-5ms). Actions of
    /// one request topic keep their order whatever the jitter.
    #[arg(long, env = "IOTLOAD_DELAY", value_name = "DURATION[±JITTER]", default_value = "0s",
          value_parser = parse_delay)]
    pub delay: Delay,

    /// Drop this share of the requests (0.01 or 1%): never answered.
    #[arg(long = "drop", env = "IOTLOAD_DROP", value_name = "P", default_value = "0",
          value_parser = parse_probability)]
    pub drop: f64,

    /// Answer this share of the requests twice (0.01 or 1%).
    #[arg(long, env = "IOTLOAD_DUPLICATE", value_name = "P", default_value = "0",
          value_parser = parse_probability)]
    pub duplicate: f64,

    /// Hold back this share of the requests (0.01 or 1%) and answer each right after the
    /// next answer on its topic, so it arrives after a later message of its device; one
    /// with no later request within 500 ms is answered then, in order (not counted).
    #[arg(long, env = "IOTLOAD_REORDER", value_name = "P", default_value = "0",
          value_parser = parse_probability)]
    pub reorder: f64,

    /// Seed of the fault draws, so a run can be repeated exactly; a random one (printed
    /// in the summary) when not given.
    #[arg(long, env = "IOTLOAD_SEED", value_name = "N")]
    pub seed: Option<u64>,

    /// Simulate an iPaaS with this throughput (e.g. 500/s): requests are served one at a
    /// time, each taking 1/N s, and what exceeds the throughput queues (up to
    /// --max-delayed, then in the broker), so latency grows once the load passes N/s. Any
    /// --delay is added after service. Without it the echo answers as fast as it can.
    #[arg(long, env = "IOTLOAD_CAPACITY", value_name = "N/s", value_parser = parse_capacity)]
    pub capacity: Option<f64>,

    /// The most delayed actions held at once; when it is full the echo stops taking
    /// requests until the oldest is due (they wait in the broker), and counts each time.
    #[arg(long, env = "IOTLOAD_MAX_DELAYED", value_name = "N", default_value_t = 1_000_000,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub max_delayed: u64,
}

impl FaultArgs {
    /// Whether any drop, duplicate or reorder is asked for.
    pub fn injects_faults(&self) -> bool {
        self.drop > 0.0 || self.duplicate > 0.0 || self.reorder > 0.0
    }
}

/// A processing delay: `base` plus a uniform draw in `[-jitter, +jitter]`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Delay {
    /// The mean delay.
    pub base: Duration,
    /// Half the width of the uniform jitter.
    pub jitter: Duration,
}

impl Delay {
    /// Whether no delay is applied at all.
    pub fn is_zero(&self) -> bool {
        self.base.is_zero() && self.jitter.is_zero()
    }

    /// One delay; `unit` is a uniform draw in [0, 1).
    pub fn sample(&self, unit: f64) -> Duration {
        if self.jitter.is_zero() {
            return self.base;
        }
        let offset = self.jitter.as_secs_f64() * (2.0 * unit - 1.0);
        Duration::from_secs_f64((self.base.as_secs_f64() + offset).max(0.0))
    }
}

impl std::fmt::Display for Delay {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", humantime::format_duration(self.base))?;
        if !self.jitter.is_zero() {
            write!(f, "±{}", humantime::format_duration(self.jitter))?;
        }
        Ok(())
    }
}

/// Parses `50ms`, `20ms±5ms` or `20ms+-5ms`; the jitter may not exceed the delay.
pub fn parse_delay(value: &str) -> Result<Delay, String> {
    let (base, jitter) = match value.split_once('±').or_else(|| value.split_once("+-")) {
        Some((b, j)) => (parse_duration(b)?, parse_duration(j)?),
        None => (parse_duration(value)?, Duration::ZERO),
    };
    if jitter > base {
        return Err(format!(
            "`{value}`: the jitter is larger than the delay, which would make delays \
             negative; give e.g. 20ms±5ms"
        ));
    }
    Ok(Delay { base, jitter })
}

/// Parses a throughput: `500/s` or `500` (requests per second, above zero).
pub fn parse_capacity(value: &str) -> Result<f64, String> {
    match iotload_core::plan::parse_per_second(value) {
        Some(n) if n.is_finite() && n > 0.0 => Ok(n),
        _ => Err(format!(
            "`{value}` is not a throughput; give requests per second above zero, e.g. 500/s"
        )),
    }
}

/// Parses a probability: `0.01` or `1%`, from 0 to 1 (100 %).
pub fn parse_probability(value: &str) -> Result<f64, String> {
    let v = value.trim();
    let p = match v.strip_suffix('%') {
        Some(percent) => percent.trim().parse::<f64>().map(|p| p / 100.0),
        None => v.parse::<f64>(),
    }
    .map_err(|_| format!("`{value}` is not a probability; give e.g. 0.01 or 1%"))?;
    if !(0.0..=1.0).contains(&p) {
        return Err(format!("`{value}` is outside 0..1 (0 %..100 %)"));
    }
    Ok(p)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_parse_with_and_without_jitter() {
        let ms = Duration::from_millis;
        assert_eq!(parse_delay("50ms").unwrap().base, ms(50));
        let d = parse_delay("20ms±5ms").unwrap();
        assert_eq!((d.base, d.jitter), (ms(20), ms(5)));
        assert_eq!(parse_delay("20ms+-5ms").unwrap(), d);
        assert!(parse_delay("5ms±20ms").unwrap_err().contains("jitter"));
        assert!(parse_delay("soon").is_err());
        assert_eq!(d.to_string(), "20ms±5ms");
    }

    #[test]
    fn jittered_delays_stay_within_their_bounds() {
        let d = parse_delay("20ms±5ms").unwrap();
        assert_eq!(d.sample(0.0), Duration::from_millis(15));
        assert_eq!(d.sample(0.5), Duration::from_millis(20));
        assert!(d.sample(0.999_999) <= Duration::from_millis(25));
    }

    #[test]
    fn capacities_parse_as_requests_per_second() {
        assert_eq!(parse_capacity("500/s").unwrap(), 500.0);
        assert_eq!(parse_capacity("2.5").unwrap(), 2.5);
        assert!(parse_capacity("0/s").unwrap_err().contains("e.g. 500/s"));
        assert!(parse_capacity("fast").is_err());
    }

    #[test]
    fn probabilities_parse_as_shares_or_percentages() {
        assert_eq!(parse_probability("0.25").unwrap(), 0.25);
        assert_eq!(parse_probability("1%").unwrap(), 0.01);
        assert!(parse_probability("150%").is_err());
        assert!(parse_probability("-0.1").is_err());
        assert!(parse_probability("often").is_err());
    }
}
