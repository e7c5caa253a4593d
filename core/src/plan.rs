//! Typed, validated descriptions of what a run does: broker addresses, templates, rates.
//!
//! Command-line and environment values are turned into these types once, at the edge
//! (`resolve`), so the engine never sees an unchecked string.

use std::fmt;
use std::time::Duration;

/// Why a value given by the user cannot be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PlanError {
    /// The broker URL is malformed or uses an unknown scheme.
    #[error("bad broker URL `{value}`: {reason}")]
    BadUrl {
        /// The value as given (credentials redacted).
        value: String,
        /// What is wrong and how to write it.
        reason: String,
    },
    /// A template names a placeholder we do not know.
    #[error("bad template `{value}`: {reason}")]
    BadTemplate {
        /// The template as given.
        value: String,
        /// What is wrong.
        reason: String,
    },
    /// Any other option value that cannot be used.
    #[error("bad value for {option}: {reason}")]
    BadValue {
        /// The flag, e.g. `--rate`.
        option: &'static str,
        /// What is wrong and what to do instead.
        reason: String,
    },
    /// A file named by an option cannot be read.
    #[error("cannot read {option} file {path}")]
    File {
        /// The flag, e.g. `--payload-file`.
        option: &'static str,
        /// The path as given.
        path: String,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
}

pub use crate::transport::BrokerKind;

/// A parsed broker address.
#[derive(Clone, PartialEq, Eq)]
pub struct BrokerUrl {
    /// The broker family.
    pub kind: BrokerKind,
    /// Whether the connection is encrypted (TLS).
    pub tls: bool,
    /// Host name or IP address.
    pub host: String,
    /// TCP port.
    pub port: u16,
    /// User name given in the URL, if any.
    pub username: Option<String>,
    /// Password given in the URL, if any (never printed).
    pub password: Option<String>,
    /// What follows `host:port/`, without the leading slash (the AMQP virtual host, still
    /// percent-encoded); empty when none.
    pub path: String,
}

impl BrokerUrl {
    /// Parses `scheme://[user[:password]@]host[:port][/path]`; only AMQP takes a path
    /// (the virtual host).
    pub fn parse(value: &str) -> Result<Self, PlanError> {
        let bad = |reason: &str| PlanError::BadUrl {
            value: redact_url(value),
            reason: reason.to_string(),
        };
        let (scheme, rest) = value.split_once("://").ok_or_else(|| {
            bad("expected scheme://host:port, e.g. mqtt://127.0.0.1:1883 or mqtts://broker:8883")
        })?;
        let (kind, tls) = BrokerKind::from_scheme(scheme).ok_or_else(|| {
            bad(&format!(
                "unknown scheme `{scheme}`; use {}",
                BrokerKind::all_schemes()
            ))
        })?;
        let default_port = kind.spec().default_port(tls);
        if rest.contains('?') || rest.contains('#') {
            return Err(bad(
                "a query is not supported; give host, port and path only",
            ));
        }
        let (rest, path) = match rest.split_once('/') {
            Some((authority, path)) => (authority, path.trim_end_matches('/').to_string()),
            None => (rest, String::new()),
        };
        if !path.is_empty() && kind.spec().path.is_none() {
            let takers: Vec<String> = BrokerKind::ALL
                .iter()
                .filter_map(|k| {
                    Some(format!(
                        "{}:// ({})",
                        k.spec().scheme(false),
                        k.spec().path?
                    ))
                })
                .collect();
            return Err(bad(&format!(
                "a path (`/{path}`) is only taken by {}; give only host and port",
                takers.join(", ")
            )));
        }
        let (userinfo, hostport) = match rest.rsplit_once('@') {
            Some((u, h)) => (Some(u), h),
            None => (None, rest),
        };
        let (username, password) = match userinfo {
            Some(u) => match u.split_once(':') {
                Some((user, pass)) => (Some(user.to_string()), Some(pass.to_string())),
                None => (Some(u.to_string()), None),
            },
            None => (None, None),
        };
        let (host, port) = split_host_port(hostport, default_port).map_err(|r| bad(&r))?;
        if host.is_empty() {
            return Err(bad("the host is empty"));
        }
        Ok(Self {
            kind,
            tls,
            host,
            port,
            username,
            password,
            path,
        })
    }

    /// The address as `host:port`.
    pub fn host_port(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

fn split_host_port(hostport: &str, default_port: u16) -> Result<(String, u16), String> {
    if let Some(rest) = hostport.strip_prefix('[') {
        let (host, after) = rest
            .split_once(']')
            .ok_or_else(|| "unclosed `[` in an IPv6 address".to_string())?;
        let port = match after.strip_prefix(':') {
            Some(p) => parse_port(p)?,
            None if after.is_empty() => default_port,
            None => return Err(format!("unexpected `{after}` after the address")),
        };
        return Ok((host.to_string(), port));
    }
    match hostport.rsplit_once(':') {
        Some((host, port)) => Ok((host.to_string(), parse_port(port)?)),
        None => Ok((hostport.to_string(), default_port)),
    }
}

fn parse_port(p: &str) -> Result<u16, String> {
    match p.parse::<u16>() {
        Ok(0) | Err(_) => Err(format!("port `{p}` is not a number between 1 and 65535")),
        Ok(port) => Ok(port),
    }
}

/// Prints the URL with any password replaced by `***`.
impl fmt::Display for BrokerUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let scheme = self.kind.spec().scheme(self.tls);
        write!(f, "{scheme}://")?;
        if let Some(user) = &self.username {
            write!(f, "{user}")?;
            if self.password.is_some() {
                write!(f, ":***")?;
            }
            write!(f, "@")?;
        }
        write!(f, "{}", self.host_port())?;
        if !self.path.is_empty() {
            write!(f, "/{}", self.path)?;
        }
        Ok(())
    }
}

impl fmt::Debug for BrokerUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "BrokerUrl({self})")
    }
}

/// Replaces the password of anything that looks like `scheme://user:password@host`.
pub fn redact_url(value: &str) -> String {
    let Some((scheme, rest)) = value.split_once("://") else {
        return value.to_string();
    };
    match rest.rsplit_once('@') {
        Some((userinfo, host)) => match userinfo.split_once(':') {
            Some((user, _)) => format!("{scheme}://{user}:***@{host}"),
            None => value.to_string(),
        },
        None => value.to_string(),
    }
}

/// A string with `{device}` placeholders, rendered once per emulated device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    parts: Vec<TemplatePart>,
    source: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum TemplatePart {
    Literal(String),
    /// The device number, zero-padded to at least this many digits (`{device:03}`).
    Device(usize),
}

/// One piece of a [`Template`], for renderers of its own (e.g. straight into JSON).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TemplatePiece<'a> {
    /// Literal text.
    Literal(&'a str),
    /// The device number, zero-padded to at least `width` digits.
    Device {
        /// Minimum digits (0: as many as the number has).
        width: usize,
    },
}

impl Template {
    /// Parses a template; `{device}` is the device number (`{device:03}`: zero-padded to
    /// 3 digits), `{{` and `}}` are literal braces.
    pub fn parse(value: &str) -> Result<Self, PlanError> {
        let mut parts = Vec::new();
        let mut literal = String::new();
        let mut chars = value.chars().peekable();
        while let Some(c) = chars.next() {
            match c {
                '{' if chars.peek() == Some(&'{') => {
                    chars.next();
                    literal.push('{');
                }
                '}' if chars.peek() == Some(&'}') => {
                    chars.next();
                    literal.push('}');
                }
                '{' => {
                    let name: String = chars.by_ref().take_while(|&c| c != '}').collect();
                    let width = match name.split_once(':') {
                        None if name == "device" => Some(0),
                        Some(("device", spec)) => spec.parse::<usize>().ok().filter(|w| *w <= 20),
                        _ => None,
                    };
                    let Some(width) = width else {
                        return Err(PlanError::BadTemplate {
                            value: value.to_string(),
                            reason: format!(
                                "unknown placeholder `{{{name}}}`; the only one is {{device}}, \
                                 optionally zero-padded as {{device:03}}"
                            ),
                        });
                    };
                    if !literal.is_empty() {
                        parts.push(TemplatePart::Literal(std::mem::take(&mut literal)));
                    }
                    parts.push(TemplatePart::Device(width));
                }
                other => literal.push(other),
            }
        }
        if !literal.is_empty() {
            parts.push(TemplatePart::Literal(literal));
        }
        Ok(Self {
            parts,
            source: value.to_string(),
        })
    }

    /// Whether the template varies per device.
    pub fn has_device(&self) -> bool {
        self.parts
            .iter()
            .any(|p| matches!(p, TemplatePart::Device(_)))
    }

    /// The template's pieces in order.
    pub fn pieces(&self) -> impl Iterator<Item = TemplatePiece<'_>> {
        self.parts.iter().map(|p| match p {
            TemplatePart::Literal(s) => TemplatePiece::Literal(s),
            TemplatePart::Device(width) => TemplatePiece::Device { width: *width },
        })
    }

    /// The text for one device.
    pub fn render(&self, device: u32) -> String {
        let mut out = String::with_capacity(self.source.len() + 8);
        for part in &self.parts {
            match part {
                TemplatePart::Literal(s) => out.push_str(s),
                TemplatePart::Device(width) => {
                    let digits = itoa::Buffer::new().format(device).to_owned();
                    for _ in digits.len()..*width {
                        out.push('0');
                    }
                    out.push_str(&digits);
                }
            }
        }
        out
    }

    /// The text with `{device}` replaced by any string (e.g. a captured topic segment).
    pub fn render_str(&self, device: &str) -> String {
        let mut out = String::with_capacity(self.source.len() + device.len());
        for part in &self.parts {
            match part {
                TemplatePart::Literal(s) => out.push_str(s),
                TemplatePart::Device(_) => out.push_str(device),
            }
        }
        out
    }

    /// The MQTT topic filter matching every rendering: `{device}` becomes `+`.
    pub fn to_filter(&self) -> String {
        self.render_str("+")
    }

    /// The template as written.
    pub fn as_str(&self) -> &str {
        &self.source
    }
}

/// A per-device message rate in messages per second (fractional rates allowed).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rate(f64);

impl Rate {
    /// Accepts any finite rate above zero.
    pub fn new(per_s: f64) -> Result<Self, PlanError> {
        if per_s.is_finite() && per_s > 0.0 {
            Ok(Self(per_s))
        } else {
            Err(PlanError::BadValue {
                option: "--rate",
                reason: format!(
                    "{per_s} msg/s is not a positive rate; give e.g. 10 or 0.2 (one message every 5 s)"
                ),
            })
        }
    }

    /// Messages per second.
    pub fn per_s(self) -> f64 {
        self.0
    }

    /// Time between two messages of one device.
    pub fn period(self) -> Duration {
        Duration::from_secs_f64(1.0 / self.0)
    }
}

/// Parses a duration such as `30s`, `2m`, `1h30m` or `500ms`; a bare number means seconds.
pub fn parse_duration(value: &str) -> Result<Duration, String> {
    let v = value.trim();
    if v.starts_with('-') {
        return Err(format!(
            "`{value}` is negative; give a duration such as 30s or 2m"
        ));
    }
    if let Ok(secs) = v.parse::<f64>()
        && secs.is_finite()
        && secs >= 0.0
    {
        return Ok(Duration::from_secs_f64(secs));
    }
    humantime::parse_duration(v)
        .map_err(|e| format!("`{value}` is not a duration ({e}); give e.g. 30s, 2m, 500ms"))
}

/// Parses a figure per second written `100/s` or `100`; `None` when it is no number.
pub fn parse_per_second(value: &str) -> Option<f64> {
    let v = value.trim();
    v.strip_suffix("/s").unwrap_or(v).trim().parse().ok()
}

/// Parses a count such as `1000`, `10k` or `1m` (thousands and millions).
pub fn parse_count(value: &str) -> Result<u64, String> {
    let v = value.trim().to_ascii_lowercase();
    let (digits, factor) = if let Some(d) = v.strip_suffix('k') {
        (d, 1_000)
    } else if let Some(d) = v.strip_suffix('m') {
        (d, 1_000_000)
    } else {
        (v.as_str(), 1)
    };
    digits
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(factor))
        .ok_or_else(|| format!("`{value}` is not a count; give e.g. 100, 10k or 1m"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn broker_url_defaults_port_by_scheme() {
        let u = BrokerUrl::parse("mqtt://localhost").unwrap();
        assert_eq!((u.host.as_str(), u.port, u.tls), ("localhost", 1883, false));
        let u = BrokerUrl::parse("mqtts://broker.example").unwrap();
        assert_eq!((u.port, u.tls), (8883, true));
    }

    #[test]
    fn broker_url_display_redacts_password() {
        let u = BrokerUrl::parse("mqtt://alice:s3cret@127.0.0.1:1884").unwrap();
        assert_eq!(u.to_string(), "mqtt://alice:***@127.0.0.1:1884");
        assert_eq!(u.password.as_deref(), Some("s3cret"));
        assert!(!format!("{u:?}").contains("s3cret"));
    }

    #[test]
    fn broker_url_parses_nats_schemes() {
        let u = BrokerUrl::parse("nats://127.0.0.1").unwrap();
        assert_eq!((u.kind, u.port, u.tls), (BrokerKind::Nats, 4222, false));
        assert_eq!(u.to_string(), "nats://127.0.0.1:4222");
        for scheme in ["tls", "nats+tls", "NATS+TLS"] {
            let u = BrokerUrl::parse(&format!("{scheme}://bob:pw@nats.example:4443")).unwrap();
            assert_eq!((u.kind, u.port, u.tls), (BrokerKind::Nats, 4443, true));
            assert_eq!(u.to_string(), "tls://bob:***@nats.example:4443");
        }
    }

    #[test]
    fn broker_url_rejects_unknown_scheme_and_bad_port() {
        let e = BrokerUrl::parse("http://x:1").unwrap_err().to_string();
        assert!(e.contains("unknown scheme `http`"), "{e}");
        let e = BrokerUrl::parse("mqtt://x:99999").unwrap_err().to_string();
        assert!(e.contains("port `99999`"), "{e}");
        let e = BrokerUrl::parse("localhost:1883").unwrap_err().to_string();
        assert!(e.contains("expected scheme://"), "{e}");
    }

    #[test]
    fn broker_url_parses_every_broker_family() {
        let cases = [
            ("amqp://h", BrokerKind::Amqp, false, 5672),
            ("amqps://h", BrokerKind::Amqp, true, 5671),
            ("kafka://h", BrokerKind::Kafka, false, 9092),
            ("kafka+tls://h", BrokerKind::Kafka, true, 9093),
            ("zmq+tcp://h", BrokerKind::Zmq, false, 5559),
            ("pulsar://h", BrokerKind::Pulsar, false, 6650),
            ("pulsar+ssl://h", BrokerKind::Pulsar, true, 6651),
        ];
        for (url, kind, tls, port) in cases {
            let u = BrokerUrl::parse(url).unwrap();
            assert_eq!((u.kind, u.tls, u.port), (kind, tls, port), "{url}");
            assert_eq!(
                BrokerUrl::parse(&u.to_string()).unwrap(),
                u,
                "{url} round trip"
            );
        }
    }

    #[test]
    fn broker_url_takes_a_path_only_for_amqp() {
        let u = BrokerUrl::parse("amqp://guest:pw@127.0.0.1:5672/test%2Fa").unwrap();
        assert_eq!(u.path, "test%2Fa");
        assert_eq!(u.to_string(), "amqp://guest:***@127.0.0.1:5672/test%2Fa");
        assert_eq!(BrokerUrl::parse("mqtt://h:1883/").unwrap().path, "");
        let e = BrokerUrl::parse("mqtt://h:1883/x").unwrap_err().to_string();
        assert!(e.contains("only taken by amqp://"), "{e}");
        let e = BrokerUrl::parse("amqp://h/v?x=1").unwrap_err().to_string();
        assert!(e.contains("query is not supported"), "{e}");
    }

    #[test]
    fn broker_url_accepts_ipv6() {
        let u = BrokerUrl::parse("mqtt://[::1]:1884").unwrap();
        assert_eq!((u.host.as_str(), u.port), ("::1", 1884));
        assert_eq!(u.host_port(), "[::1]:1884");
    }

    #[test]
    fn template_renders_device_number() {
        let t = Template::parse("iot/{device}/telemetry").unwrap();
        assert_eq!(t.render(42), "iot/42/telemetry");
        assert!(t.has_device());
        assert_eq!(Template::parse("a{{b}}").unwrap().render(1), "a{b}");
    }

    #[test]
    fn template_rejects_unknown_placeholder() {
        let e = Template::parse("dev-{id}").unwrap_err().to_string();
        assert!(e.contains("unknown placeholder `{id}`"), "{e}");
    }

    #[test]
    fn rate_rejects_zero_and_negative() {
        assert!(Rate::new(0.0).is_err());
        assert!(Rate::new(-1.0).is_err());
        assert!(Rate::new(f64::NAN).is_err());
        assert_eq!(Rate::new(0.2).unwrap().period(), Duration::from_secs(5));
    }

    #[test]
    fn durations_and_counts_parse_with_units() {
        assert_eq!(parse_duration("30s").unwrap(), Duration::from_secs(30));
        assert_eq!(parse_duration("1.5").unwrap(), Duration::from_millis(1500));
        assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
        assert!(parse_duration("-5s").unwrap_err().contains("negative"));
        assert_eq!(parse_count("10k").unwrap(), 10_000);
        assert_eq!(parse_count("1m").unwrap(), 1_000_000);
        assert!(parse_count("ten").is_err());
    }
}
