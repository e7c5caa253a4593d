//! MQTT 3.1.1 on a blocking socket, as little as the raw benchmark baselines need:
//! CONNECT, SUBSCRIBE at QoS 0, PUBLISH frames and reading one packet.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::TcpStream;

/// Connects as `client_id` and waits for an accepting CONNACK.
pub(crate) fn connect(broker: &str, client_id: &str) -> std::io::Result<TcpStream> {
    let mut s = TcpStream::connect(broker)?;
    s.set_nodelay(true)?;
    let mut body = Vec::new();
    body.extend_from_slice(&[0, 4, b'M', b'Q', b'T', b'T', 4, 0x02, 0, 60]);
    body.extend_from_slice(&(client_id.len() as u16).to_be_bytes());
    body.extend_from_slice(client_id.as_bytes());
    s.write_all(&frame(0x10, &body))?;
    let (kind, ack) = read_packet(&mut s)?;
    if kind != 0x20 || ack.get(1) != Some(&0) {
        return Err(std::io::Error::other(format!("CONNACK refused: {ack:?}")));
    }
    Ok(s)
}

pub(crate) fn subscribe(s: &mut TcpStream, filter: &str) -> std::io::Result<()> {
    let mut body = vec![0, 1];
    body.extend_from_slice(&(filter.len() as u16).to_be_bytes());
    body.extend_from_slice(filter.as_bytes());
    body.push(0);
    s.write_all(&frame(0x82, &body))?;
    let (kind, _) = read_packet(s)?;
    if kind != 0x90 {
        return Err(std::io::Error::other("no SUBACK"));
    }
    Ok(())
}

pub(crate) fn publish_frame(out: &mut Vec<u8>, topic: &str, payload: &[u8]) {
    let mut body = Vec::with_capacity(2 + topic.len() + payload.len());
    body.extend_from_slice(&(topic.len() as u16).to_be_bytes());
    body.extend_from_slice(topic.as_bytes());
    body.extend_from_slice(payload);
    *out = frame(0x30, &body);
}

pub(crate) fn frame(header: u8, body: &[u8]) -> Vec<u8> {
    let mut out = vec![header];
    let mut rest = body.len();
    loop {
        let digit = (rest % 128) as u8;
        rest /= 128;
        out.push(if rest > 0 { digit | 0x80 } else { digit });
        if rest == 0 {
            break;
        }
    }
    out.extend_from_slice(body);
    out
}

pub(crate) fn read_packet(s: &mut TcpStream) -> std::io::Result<(u8, Vec<u8>)> {
    let mut byte = [0u8; 1];
    s.read_exact(&mut byte)?;
    let kind = byte[0];
    let mut length = 0usize;
    for shift in [0, 7, 14, 21] {
        s.read_exact(&mut byte)?;
        length |= usize::from(byte[0] & 0x7f) << shift;
        if byte[0] & 0x80 == 0 {
            break;
        }
    }
    let mut body = vec![0u8; length];
    s.read_exact(&mut body)?;
    Ok((kind, body))
}
