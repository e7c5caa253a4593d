//! The measurement-overhead baseline for benchmarks (`scripts/bench-overhead`): the same
//! path as `iotload run` (publisher → broker → echo → broker → receiver) built from raw
//! MQTT 3.1.1 sockets and blocking threads, with no iotload code in it. Each message
//! carries its send time; the receiver prints the round-trip percentiles in µs.
//!
//!     cargo run --release -p loadgen --example mqtt_raw_echo -- 127.0.0.1:1883 1000 10
//!     (broker, messages per second, seconds)

use std::io::Write;
use std::time::{Duration, Instant};

#[path = "support/mqtt_wire.rs"]
mod mqtt_wire;

use mqtt_wire::{connect, publish_frame, read_packet, subscribe};

const STIMULUS: &str = "raw-echo/stimulus";
const ACTION: &str = "raw-echo/action";

fn main() -> std::io::Result<()> {
    let mut args = std::env::args().skip(1);
    let broker = args.next().unwrap_or_else(|| "127.0.0.1:1883".into());
    let rate: f64 = args.next().and_then(|a| a.parse().ok()).unwrap_or(1000.0);
    let secs: f64 = args.next().and_then(|a| a.parse().ok()).unwrap_or(10.0);
    let count = (rate * secs) as usize;
    let origin = Instant::now();

    let mut echo = connect(&broker, "raw-echo-echo")?;
    subscribe(&mut echo, STIMULUS)?;
    let mut receiver = connect(&broker, "raw-echo-receiver")?;
    subscribe(&mut receiver, ACTION)?;
    let mut publisher = connect(&broker, "raw-echo-publisher")?;

    // The echo: every stimulus goes back out on the action topic, body unchanged.
    let mut echo_out = echo.try_clone()?;
    std::thread::spawn(move || -> std::io::Result<()> {
        let mut frame = Vec::new();
        loop {
            let (kind, body) = read_packet(&mut echo)?;
            if kind >> 4 == 3 {
                let topic_len = usize::from(u16::from_be_bytes([body[0], body[1]]));
                publish_frame(&mut frame, ACTION, &body[2 + topic_len..]);
                echo_out.write_all(&frame)?;
            }
        }
    });

    // The receiver: records the round trip of every action.
    let collector = std::thread::spawn(move || -> std::io::Result<Vec<u64>> {
        let mut rtt_ns = Vec::with_capacity(count);
        receiver.set_read_timeout(Some(Duration::from_secs(5)))?;
        while rtt_ns.len() < count {
            let Ok((kind, body)) = read_packet(&mut receiver) else {
                break;
            };
            if kind >> 4 == 3 {
                let topic_len = usize::from(u16::from_be_bytes([body[0], body[1]]));
                let stamp = &body[2 + topic_len..2 + topic_len + 8];
                let sent = u64::from_be_bytes(stamp.try_into().unwrap_or([0; 8]));
                let now = origin.elapsed().as_nanos() as u64;
                rtt_ns.push(now.saturating_sub(sent));
            }
        }
        Ok(rtt_ns)
    });

    // The publisher: 100-byte bodies on an open-loop schedule.
    let period = Duration::from_secs_f64(1.0 / rate);
    let mut frame = Vec::new();
    let mut body = vec![0u8; 100];
    for i in 0..count {
        let due = origin + period * i as u32;
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            // No async runtime here: the baseline is plain blocking threads on purpose.
            #[allow(clippy::disallowed_methods)]
            std::thread::sleep(wait);
        }
        let sent = origin.elapsed().as_nanos() as u64;
        body[..8].copy_from_slice(&sent.to_be_bytes());
        publish_frame(&mut frame, STIMULUS, &body);
        publisher.write_all(&frame)?;
    }
    let mut rtt_ns = collector
        .join()
        .map_err(|_| std::io::Error::other("receiver thread panicked"))??;
    rtt_ns.sort_unstable();
    let pct = |p: f64| -> f64 {
        if rtt_ns.is_empty() {
            return f64::NAN;
        }
        let i = ((p / 100.0) * (rtt_ns.len() - 1) as f64).round() as usize;
        rtt_ns[i] as f64 / 1000.0
    };
    println!(
        "raw echo: {} of {count} received · round trip µs p50 {:.1} p90 {:.1} p99 {:.1} max {:.1}",
        rtt_ns.len(),
        pct(50.0),
        pct(90.0),
        pct(99.0),
        pct(100.0)
    );
    Ok(())
}
