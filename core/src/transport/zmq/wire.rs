//! The ZeroMQ wire details iotload relies on: the ZMTP 3.0 frame format and NULL-mechanism
//! handshake (publishers speak it directly, see `publisher.rs`), the message layout
//! `[topic, headers, payload]`, the headers frame, and MQTT-style filters on top of
//! ZeroMQ's byte-prefix subscriptions.
//!
//! ZMTP 3.0 is specified in RFC 23 (<https://rfc.zeromq.org/spec/23/>): a 64-byte greeting
//! each way, a `READY` command each way carrying the socket type, then frames. A frame is
//! one flags byte (`MORE` 0x01, `LONG` 0x02, `COMMAND` 0x04), its size (one byte, or eight
//! big-endian bytes when `LONG`) and its body. A subscriber tells a publisher what it wants
//! with one-frame messages: `0x01` and a prefix to subscribe, `0x00` and a prefix to cancel.

use bytes::{Buf, Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};

/// Topics under this prefix carry iotload's readiness probes; subscribers never hand them
/// on, and MQTT wildcards at the first level do not match them (they start with `$`).
pub(crate) const PROBE_PREFIX: &str = "$iotload/probe/";

const FLAG_MORE: u8 = 0x01;
const FLAG_LONG: u8 = 0x02;
const FLAG_COMMAND: u8 = 0x04;

/// The largest frame a publisher accepts from its peer: peers send only subscriptions.
const MAX_INCOMING_FRAME: u64 = 1 << 20;

/// Our greeting: signature, version 3.0, mechanism NULL, not a server, zero filler.
pub(crate) fn greeting() -> [u8; 64] {
    let mut g = [0u8; 64];
    g[0] = 0xFF;
    g[9] = 0x7F;
    g[10] = 3;
    g[11] = 0;
    g[12..16].copy_from_slice(b"NULL");
    g
}

/// Checks the peer's greeting: a ZMTP 3.x peer using the NULL mechanism.
pub(crate) fn check_greeting(g: &[u8]) -> Result<(), String> {
    if g.len() < 64 || g[0] != 0xFF || g[9] != 0x7F {
        return Err("the peer does not speak ZeroMQ (ZMTP); is this the right port?".into());
    }
    if g[10] < 3 {
        return Err(format!(
            "the peer speaks ZMTP {}.{}; iotload needs 3.0 or later (libzmq 4.x)",
            g[10], g[11]
        ));
    }
    let mechanism = String::from_utf8_lossy(&g[12..32]);
    let mechanism = mechanism.trim_end_matches('\0');
    if mechanism != "NULL" {
        return Err(format!(
            "the peer wants the {mechanism} security mechanism; iotload's ZeroMQ transport \
             has no authentication or encryption (NULL only)"
        ));
    }
    Ok(())
}

/// Appends one frame.
pub(crate) fn put_frame(out: &mut Vec<u8>, body: &[u8], more: bool, command: bool) {
    let mut flags = 0;
    if more {
        flags |= FLAG_MORE;
    }
    if command {
        flags |= FLAG_COMMAND;
    }
    if body.len() > 255 {
        out.push(flags | FLAG_LONG);
        out.extend_from_slice(&(body.len() as u64).to_be_bytes());
    } else {
        out.push(flags);
        out.push(body.len() as u8);
    }
    out.extend_from_slice(body);
}

/// The `READY` command announcing `socket_type` (e.g. `PUB`).
pub(crate) fn ready_command(socket_type: &str) -> Vec<u8> {
    let mut body = Vec::with_capacity(32);
    body.push(5);
    body.extend_from_slice(b"READY");
    body.push(11);
    body.extend_from_slice(b"Socket-Type");
    body.extend_from_slice(&(socket_type.len() as u32).to_be_bytes());
    body.extend_from_slice(socket_type.as_bytes());
    let mut out = Vec::with_capacity(body.len() + 2);
    put_frame(&mut out, &body, false, true);
    out
}

/// One frame read from the peer.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Frame {
    /// More frames of the same message follow.
    pub(crate) more: bool,
    /// A command (READY, ERROR, SUBSCRIBE, ...), not message data.
    pub(crate) command: bool,
    pub(crate) body: Bytes,
}

/// Takes one complete frame off the front of `buf`; `None` when more bytes are needed.
pub(crate) fn take_frame(buf: &mut BytesMut) -> Result<Option<Frame>, String> {
    let Some(&flags) = buf.first() else {
        return Ok(None);
    };
    if flags & !(FLAG_MORE | FLAG_LONG | FLAG_COMMAND) != 0 {
        return Err(format!(
            "the peer sent a frame with unknown flags {flags:#04x}"
        ));
    }
    let (header, size) = if flags & FLAG_LONG != 0 {
        let Some(size) = buf.get(1..9) else {
            return Ok(None);
        };
        let mut b = [0u8; 8];
        b.copy_from_slice(size);
        (9, u64::from_be_bytes(b))
    } else {
        match buf.get(1) {
            Some(&size) => (2, u64::from(size)),
            None => return Ok(None),
        }
    };
    if size > MAX_INCOMING_FRAME {
        return Err(format!(
            "the peer sent a {size}-byte frame; a subscriber only sends subscriptions"
        ));
    }
    let size = size as usize;
    if buf.len() < header + size {
        return Ok(None);
    }
    buf.advance(header);
    Ok(Some(Frame {
        more: flags & FLAG_MORE != 0,
        command: flags & FLAG_COMMAND != 0,
        body: buf.split_to(size).freeze(),
    }))
}

/// A command frame, decoded.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Command {
    /// The peer's handshake, with its socket type.
    Ready { socket_type: Option<String> },
    /// The peer refused the handshake.
    Error(String),
    /// ZMTP 3.1 subscription as a command.
    Subscribe(Bytes),
    /// ZMTP 3.1 cancellation as a command.
    Cancel(Bytes),
    /// Anything else (PING, ...), ignored.
    Other,
}

/// Decodes a command frame's body.
pub(crate) fn parse_command(body: &Bytes) -> Result<Command, String> {
    let bad = || "the peer sent a malformed command".to_string();
    let name_len = usize::from(*body.first().ok_or_else(bad)?);
    let name = body.get(1..1 + name_len).ok_or_else(bad)?;
    let rest = body.slice(1 + name_len..);
    Ok(match name {
        b"READY" => Command::Ready {
            socket_type: property(&rest, "Socket-Type"),
        },
        b"ERROR" => {
            let len = usize::from(rest.first().copied().unwrap_or(0));
            let reason = rest.get(1..1 + len).unwrap_or_default();
            Command::Error(String::from_utf8_lossy(reason).into_owned())
        }
        b"SUBSCRIBE" => Command::Subscribe(rest),
        b"CANCEL" => Command::Cancel(rest),
        _ => Command::Other,
    })
}

/// One property of a READY command's metadata (names compare case-insensitively).
fn property(mut meta: &[u8], wanted: &str) -> Option<String> {
    while let Some(&len) = meta.first() {
        let len = usize::from(len);
        let name = meta.get(1..1 + len)?;
        let size = meta.get(1 + len..5 + len)?;
        let size = u32::from_be_bytes([size[0], size[1], size[2], size[3]]) as usize;
        let value = meta.get(5 + len..5 + len + size)?;
        if name.eq_ignore_ascii_case(wanted.as_bytes()) {
            return Some(String::from_utf8_lossy(value).into_owned());
        }
        meta = &meta[5 + len + size..];
    }
    None
}

/// Why a handshake failed.
#[derive(Debug)]
pub(crate) enum HandshakeError {
    /// The connection itself failed.
    Io(std::io::Error),
    /// The peer does not speak ZMTP as expected, or is the wrong socket type.
    Protocol(String),
}

impl From<std::io::Error> for HandshakeError {
    fn from(e: std::io::Error) -> Self {
        Self::Io(e)
    }
}

impl From<String> for HandshakeError {
    fn from(e: String) -> Self {
        Self::Protocol(e)
    }
}

/// Both halves of a connection after the handshake, and what the peer sent after its
/// READY (often its first subscriptions).
pub(crate) struct Handshaken {
    pub(crate) reader: OwnedReadHalf,
    pub(crate) writer: OwnedWriteHalf,
    pub(crate) inbuf: BytesMut,
}

/// Greeting both ways, then READY both ways, as a `socket_type` socket whose peer must be
/// one of `peers`.
pub(crate) async fn handshake(
    stream: TcpStream,
    socket_type: &str,
    peers: &[&str],
) -> Result<Handshaken, HandshakeError> {
    let (mut reader, mut writer) = stream.into_split();
    writer.write_all(&greeting()).await?;
    let mut inbuf = BytesMut::with_capacity(4096);
    while inbuf.len() < 64 {
        if reader.read_buf(&mut inbuf).await? == 0 {
            return Err(String::from("the peer closed the connection during the greeting").into());
        }
    }
    check_greeting(&inbuf[..64])?;
    inbuf.advance(64);
    writer.write_all(&ready_command(socket_type)).await?;
    loop {
        if let Some(frame) = take_frame(&mut inbuf)? {
            if !frame.command {
                return Err(String::from("the peer sent data before its READY command").into());
            }
            return match parse_command(&frame.body)? {
                Command::Ready { socket_type: peer } => match peer.as_deref() {
                    Some(t) if peers.contains(&t) => Ok(Handshaken {
                        reader,
                        writer,
                        inbuf,
                    }),
                    other => Err(format!(
                        "the peer's socket type is {}, but a {socket_type} needs {}",
                        other.unwrap_or("missing"),
                        peers.join(" or ")
                    )
                    .into()),
                },
                Command::Error(reason) => {
                    Err(format!("the peer refused the handshake: {reason}").into())
                }
                _ => Err(String::from("the peer did not answer with READY").into()),
            };
        }
        if reader.read_buf(&mut inbuf).await? == 0 {
            return Err(String::from("the peer closed the connection during the handshake").into());
        }
    }
}

/// The subscriptions a SUB or XSUB peer holds, kept up to date from what it sends.
#[derive(Debug, Default)]
pub(crate) struct Subscriptions {
    /// Byte prefixes; repeats allowed, as ZeroMQ counts them.
    prefixes: Vec<Bytes>,
    /// Inside a multi-frame message from the peer (not a subscription: skipped).
    skipping: bool,
}

impl Subscriptions {
    /// Applies every complete message in `buf`; true when the subscriptions changed.
    pub(crate) fn absorb(&mut self, buf: &mut BytesMut) -> Result<bool, String> {
        let mut changed = false;
        while let Some(frame) = take_frame(buf)? {
            if frame.command {
                match parse_command(&frame.body)? {
                    Command::Subscribe(prefix) => self.prefixes.push(prefix),
                    Command::Cancel(prefix) => self.cancel(&prefix),
                    _ => continue,
                }
                changed = true;
                continue;
            }
            if self.skipping || frame.more {
                self.skipping = frame.more;
                continue;
            }
            match frame.body.first() {
                Some(1) => self.prefixes.push(frame.body.slice(1..)),
                Some(0) => self.cancel(&frame.body[1..]),
                _ => continue,
            }
            changed = true;
        }
        Ok(changed)
    }

    fn cancel(&mut self, prefix: &[u8]) {
        if let Some(at) = self.prefixes.iter().position(|s| s == prefix) {
            self.prefixes.swap_remove(at);
        }
    }

    /// How many subscriptions are held.
    pub(crate) fn len(&self) -> usize {
        self.prefixes.len()
    }

    /// Whether a subscription is a prefix of `topic`.
    pub(crate) fn matches(&self, topic: &[u8]) -> bool {
        self.prefixes.iter().any(|p| topic.starts_with(p))
    }
}

/// Encodes headers as the second frame: one `name: value` line each, joined by `\n`.
pub(crate) fn encode_headers(
    headers: &[(String, String)],
    out: &mut Vec<u8>,
) -> Result<(), String> {
    for (i, (name, value)) in headers.iter().enumerate() {
        if name.is_empty() || name.contains([':', '\n', '\r']) {
            return Err(format!(
                "header name `{name}` cannot be sent over ZeroMQ (empty, or holds `:` or a line break)"
            ));
        }
        if value.contains(['\n', '\r']) {
            return Err(format!(
                "the value of header `{name}` cannot be sent over ZeroMQ (holds a line break)"
            ));
        }
        if i > 0 {
            out.push(b'\n');
        }
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
    }
    Ok(())
}

/// Decodes the headers frame; lines without a `:` are skipped.
pub(crate) fn decode_headers(frame: &[u8]) -> Vec<(String, String)> {
    if frame.is_empty() {
        return Vec::new();
    }
    String::from_utf8_lossy(frame)
        .lines()
        .filter_map(|line| {
            let (name, value) = line.split_once(':')?;
            let value = value.strip_prefix(' ').unwrap_or(value);
            Some((name.to_string(), value.to_string()))
        })
        .collect()
}

/// The byte prefix to subscribe to for an MQTT-style filter: the filter up to its first
/// wildcard, without the `/` before a final `#` (so `a/#` also receives `a`).
pub(crate) fn subscription_prefix(filter: &str) -> &str {
    match filter.find(['+', '#']) {
        Some(at) => {
            let prefix = &filter[..at];
            if filter[at..].starts_with('#') {
                prefix.strip_suffix('/').unwrap_or(prefix)
            } else {
                prefix
            }
        }
        None => filter,
    }
}

/// Whether `topic` matches the MQTT-style `filter` (`+` one level, `#` the rest, and a
/// leading wildcard never matches a topic starting with `$`).
pub(crate) fn topic_matches(filter: &str, topic: &str) -> bool {
    if topic.starts_with('$') && (filter.starts_with('+') || filter.starts_with('#')) {
        return false;
    }
    let mut f = filter.split('/');
    let mut t = topic.split('/');
    loop {
        match (f.next(), t.next()) {
            (Some("#"), _) => return true,
            (Some("+"), Some(_)) => {}
            (Some(a), Some(b)) if a == b => {}
            (None, None) => return true,
            _ => return false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn greeting_is_64_bytes_of_zmtp_3_null() {
        let g = greeting();
        assert_eq!(g.len(), 64);
        check_greeting(&g).unwrap();
        let mut old = g;
        old[10] = 2;
        assert!(check_greeting(&old).unwrap_err().contains("3.0"));
        let mut curve = g;
        curve[12..17].copy_from_slice(b"CURVE");
        assert!(check_greeting(&curve).unwrap_err().contains("CURVE"));
        assert!(check_greeting(b"HTTP/1.1 400 Bad Request").is_err());
    }

    #[test]
    fn frames_round_trip_short_and_long() {
        let mut out = Vec::new();
        put_frame(&mut out, b"topic", true, false);
        put_frame(&mut out, &[7u8; 300], false, false);
        let mut buf = BytesMut::from(&out[..]);
        let a = take_frame(&mut buf).unwrap().unwrap();
        assert!(a.more && !a.command);
        assert_eq!(&a.body[..], b"topic");
        let b = take_frame(&mut buf).unwrap().unwrap();
        assert!(!b.more);
        assert_eq!(b.body.len(), 300);
        assert!(take_frame(&mut buf).unwrap().is_none());
    }

    #[test]
    fn a_partial_frame_waits_for_more_bytes() {
        let mut out = Vec::new();
        put_frame(&mut out, &[1u8; 400], false, false);
        let mut buf = BytesMut::from(&out[..5]);
        assert!(take_frame(&mut buf).unwrap().is_none());
        buf.extend_from_slice(&out[5..]);
        assert_eq!(take_frame(&mut buf).unwrap().unwrap().body.len(), 400);
    }

    #[test]
    fn ready_command_carries_the_socket_type() {
        let mut buf = BytesMut::from(&ready_command("PUB")[..]);
        let frame = take_frame(&mut buf).unwrap().unwrap();
        assert!(frame.command);
        assert_eq!(
            parse_command(&frame.body).unwrap(),
            Command::Ready {
                socket_type: Some("PUB".into())
            }
        );
    }

    #[test]
    fn subscriptions_follow_subscribe_and_cancel_messages_and_commands() {
        let mut out = Vec::new();
        put_frame(&mut out, b"\x01iot/", false, false);
        put_frame(&mut out, b"\x01", false, false);
        // A two-frame message is not a subscription.
        put_frame(&mut out, b"\x01x", true, false);
        put_frame(&mut out, b"y", false, false);
        let mut buf = BytesMut::from(&out[..]);
        let mut subs = Subscriptions::default();
        assert!(subs.absorb(&mut buf).unwrap());
        assert_eq!(subs.len(), 2);
        assert!(subs.matches(b"anything"));
        let mut out = Vec::new();
        put_frame(&mut out, b"\x00", false, false);
        let mut cancel_cmd = vec![6u8];
        cancel_cmd.extend_from_slice(b"CANCEL");
        cancel_cmd.extend_from_slice(b"iot/");
        put_frame(&mut out, &cancel_cmd, false, true);
        let mut buf = BytesMut::from(&out[..]);
        assert!(subs.absorb(&mut buf).unwrap());
        assert_eq!(subs.len(), 0);
        assert!(!subs.matches(b"iot/1"));
    }

    #[test]
    fn headers_round_trip_and_bad_names_are_refused() {
        let headers = vec![
            ("iotload-seq".to_string(), "42".to_string()),
            ("x".to_string(), "a: b".to_string()),
        ];
        let mut out = Vec::new();
        encode_headers(&headers, &mut out).unwrap();
        assert_eq!(out, b"iotload-seq: 42\nx: a: b");
        assert_eq!(decode_headers(&out), headers);
        assert!(decode_headers(b"").is_empty());
        assert!(encode_headers(&[("a:b".into(), "1".into())], &mut Vec::new()).is_err());
        assert!(encode_headers(&[("a".into(), "1\n2".into())], &mut Vec::new()).is_err());
    }

    #[test]
    fn prefixes_stop_at_the_first_wildcard() {
        assert_eq!(subscription_prefix("iot/+/telemetry"), "iot/");
        assert_eq!(subscription_prefix("iot/7/telemetry"), "iot/7/telemetry");
        assert_eq!(subscription_prefix("iot/#"), "iot");
        assert_eq!(subscription_prefix("#"), "");
        assert_eq!(subscription_prefix("+/x"), "");
    }

    #[test]
    fn filters_match_like_mqtt() {
        assert!(topic_matches("iot/+/t", "iot/7/t"));
        assert!(!topic_matches("iot/+/t", "iot/7/t/x"));
        assert!(!topic_matches("iot/+/t", "iotx/7/t"));
        assert!(topic_matches("iot/#", "iot"));
        assert!(topic_matches("iot/#", "iot/a/b"));
        assert!(!topic_matches("iot/#", "iotx"));
        assert!(topic_matches("#", "a/b"));
        assert!(!topic_matches("#", "$iotload/probe/1"));
        assert!(!topic_matches("+/probe/#", "$iotload/probe/1"));
        assert!(topic_matches("a/b", "a/b"));
        assert!(!topic_matches("a/b", "a/b/c"));
    }
}
