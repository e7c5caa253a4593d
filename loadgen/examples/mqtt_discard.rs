//! A minimal MQTT 3.1.1 sink for benchmarks (`scripts/bench-cpu`): accepts any CONNECT,
//! acknowledges QoS 1 publishes, answers pings, and throws every message away, so the
//! load generator, not the broker, is what is measured. Prints messages per second.
//!
//!     cargo run --release -p loadgen --example mqtt_discard -- 127.0.0.1:18830

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:18830".into());
    let listener = TcpListener::bind(&addr).await?;
    eprintln!("mqtt_discard listening on {}", listener.local_addr()?);
    let received = Arc::new(AtomicU64::new(0));
    let counter = received.clone();
    tokio::spawn(async move {
        let mut last = 0;
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        loop {
            tick.tick().await;
            let now = counter.load(Ordering::Relaxed);
            if now != last {
                eprintln!("{} msg/s, {now} in all", now - last);
            }
            last = now;
        }
    });
    loop {
        let (socket, _) = listener.accept().await?;
        let _ = socket.set_nodelay(true);
        let received = received.clone();
        tokio::spawn(async move {
            let _ = serve(socket, &received).await;
        });
    }
}

/// Reads packets until the client leaves.
async fn serve(socket: TcpStream, received: &AtomicU64) -> std::io::Result<()> {
    let (read, mut write) = socket.into_split();
    let mut read = BufReader::with_capacity(64 * 1024, read);
    let mut body = Vec::new();
    loop {
        let header = read.read_u8().await?;
        // Remaining length: up to four 7-bit groups.
        let mut length = 0usize;
        for shift in [0, 7, 14, 21] {
            let byte = read.read_u8().await?;
            length |= usize::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                break;
            }
        }
        body.resize(length, 0);
        read.read_exact(&mut body).await?;
        match header >> 4 {
            1 => write.write_all(&[0x20, 0x02, 0x00, 0x00]).await?, // CONNECT → CONNACK
            3 => {
                received.fetch_add(1, Ordering::Relaxed);
                if (header >> 1) & 0x03 > 0 {
                    // QoS 1/2: the packet id follows the topic; acknowledge it (PUBACK).
                    let topic_len = usize::from(u16::from_be_bytes([body[0], body[1]]));
                    let id = &body[2 + topic_len..4 + topic_len];
                    write.write_all(&[0x40, 0x02, id[0], id[1]]).await?;
                }
            }
            8 => {
                // SUBSCRIBE → SUBACK granting QoS 0 to each filter (nothing is ever sent).
                let mut filters = 0u8;
                let mut at = 2;
                while at + 2 <= body.len() {
                    at += 2 + usize::from(u16::from_be_bytes([body[at], body[at + 1]])) + 1;
                    filters = filters.saturating_add(1);
                }
                let mut ack = vec![0x90, 2 + filters, body[0], body[1]];
                ack.extend(std::iter::repeat_n(0u8, usize::from(filters)));
                write.write_all(&ack).await?;
            }
            12 => write.write_all(&[0xd0, 0x00]).await?, // PINGREQ → PINGRESP
            14 => return Ok(()),                         // DISCONNECT
            _ => {}
        }
    }
}
