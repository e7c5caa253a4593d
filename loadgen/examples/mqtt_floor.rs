//! The floor for benchmarks (`scripts/bench-floor`): the cheapest way this machine sends
//! and receives iotload's workload over MQTT 3.1.1 at QoS 0, with no measurement at all.
//! The sender opens one connection per device and writes pre-encoded PUBLISH frames on
//! the same open-loop schedule as the loadgen (device phases spread over one period), from
//! one blocking thread; the receiver is one subscription that reads in 256 KiB chunks and
//! counts PUBLISH frames. Each prints one JSON line with its CPU time per message, counted
//! from its first message, so connecting is not in the figure.
//!
//! The `-tokio` modes do the same work on a tokio runtime as iotload runs it (a spawned
//! task on the multi-thread runtime, waits through tokio's timer and reactor): the cost
//! of the runtime alone, so what iotload adds above it shows apart from what the runtime
//! costs. `FLOOR_RUNTIME=current_thread` runs them on a current-thread runtime instead.
//!
//!     mqtt_floor receive|receive-tokio BROKER FILTER MESSAGES
//!     mqtt_floor send|send-tokio BROKER DEVICES RATE SECS PAYLOAD_BYTES TOPIC_PREFIX

use std::io::{Read, Write};
use std::time::{Duration, Instant};

use iotload_core::usage::ProcessUsage;

#[path = "support/mqtt_wire.rs"]
mod mqtt_wire;

fn main() -> std::io::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let arg = |i: usize, name: &str| -> std::io::Result<&str> {
        args.get(i)
            .map(String::as_str)
            .ok_or_else(|| std::io::Error::other(format!("missing {name}; see the file's doc")))
    };
    let number = |i: usize, name: &str| -> std::io::Result<f64> {
        arg(i, name)?
            .parse()
            .map_err(|_| std::io::Error::other(format!("{name} is not a number")))
    };
    let mode = arg(0, "mode (send, receive, send-tokio or receive-tokio)")?;
    let on_tokio = mode.ends_with("-tokio");
    match mode.trim_end_matches("-tokio") {
        "receive" => {
            let (broker, filter) = (arg(1, "BROKER")?, arg(2, "FILTER")?);
            let expected = number(3, "MESSAGES")? as u64;
            if on_tokio {
                on_runtime(receive_tokio(
                    broker.to_owned(),
                    filter.to_owned(),
                    expected,
                ))
            } else {
                receive(broker, filter, expected)
            }
        }
        "send" => {
            let plan = SendPlan {
                broker: arg(1, "BROKER")?.to_owned(),
                devices: number(2, "DEVICES")? as usize,
                rate: number(3, "RATE")?,
                secs: number(4, "SECS")?,
                payload_bytes: number(5, "PAYLOAD_BYTES")? as usize,
                prefix: arg(6, "TOPIC_PREFIX")?.to_owned(),
            };
            if on_tokio {
                on_runtime(send_tokio(plan))
            } else {
                send(&plan)
            }
        }
        other => Err(std::io::Error::other(format!("unknown mode {other}"))),
    }
}

/// What a sender sends: the loadgen's schedule in its terms.
struct SendPlan {
    broker: String,
    devices: usize,
    rate: f64,
    secs: f64,
    payload_bytes: usize,
    prefix: String,
}

impl SendPlan {
    /// Connects every device and encodes each one's PUBLISH frame once.
    fn connect(&self) -> std::io::Result<(Vec<std::net::TcpStream>, Vec<Vec<u8>>)> {
        let mut connections = Vec::with_capacity(self.devices);
        let mut frames = Vec::with_capacity(self.devices);
        let payload = vec![b'x'; self.payload_bytes];
        for d in 0..self.devices {
            connections.push(mqtt_wire::connect(&self.broker, &format!("floor-{d}"))?);
            let mut frame = Vec::new();
            mqtt_wire::publish_frame(&mut frame, &format!("{}/{d}/t", self.prefix), &payload);
            frames.push(frame);
        }
        Ok((connections, frames))
    }

    fn total(&self) -> u64 {
        (self.devices as f64 * self.rate * self.secs).round() as u64
    }

    /// The due time of message `i`, counted from the start.
    fn due(&self, i: u64) -> Duration {
        Duration::from_secs_f64(i as f64 / (self.devices as f64 * self.rate))
    }
}

/// Runs `work` as a spawned task on a multi-thread runtime, as iotload's `main` does.
fn on_runtime<F>(work: F) -> std::io::Result<()>
where
    F: std::future::Future<Output = std::io::Result<()>> + Send + 'static,
{
    let mut builder = if std::env::var("FLOOR_RUNTIME").as_deref() == Ok("current_thread") {
        tokio::runtime::Builder::new_current_thread()
    } else {
        tokio::runtime::Builder::new_multi_thread()
    };
    let runtime = builder.enable_all().build()?;
    runtime.block_on(async { tokio::spawn(work).await.map_err(std::io::Error::other)? })
}

/// Prints the JSON line of one side.
fn report(role: &str, messages: u64, since: ProcessUsage, elapsed: Duration) {
    let now = ProcessUsage::now();
    let user = now.cpu_user_s - since.cpu_user_s;
    let system = now.cpu_system_s - since.cpu_system_s;
    let per = |s: f64| {
        if messages == 0 {
            0.0
        } else {
            s * 1e6 / messages as f64
        }
    };
    println!(
        "{{\"role\":\"{role}\",\"messages\":{messages},\"elapsed_s\":{:.3},\"cpu_user_s\":{user:.3},\"cpu_system_s\":{system:.3},\"cpu_us_per_message\":{:.2},\"user_us\":{:.2},\"kernel_us\":{:.2},\"peak_rss_mib\":{:.1}}}",
        elapsed.as_secs_f64(),
        per(user + system),
        per(user),
        per(system),
        now.peak_rss_mib
    );
}

fn send(plan: &SendPlan) -> std::io::Result<()> {
    let (mut connections, frames) = plan.connect()?;
    let total = plan.total();
    let usage = ProcessUsage::now();
    let start = Instant::now();
    for i in 0..total {
        let due = start + plan.due(i);
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            // A blocking thread on purpose: the kernel's sleep (with its timer slack) is
            // the cheapest wait there is.
            #[allow(clippy::disallowed_methods)]
            std::thread::sleep(wait);
        }
        let d = (i % plan.devices as u64) as usize;
        connections[d].write_all(&frames[d])?;
    }
    report("send", total, usage, start.elapsed());
    Ok(())
}

/// The same schedule from one task: the loadgen's precise timer (a `timerfd` in tokio's
/// reactor; tokio's own timer wakes only on millisecond ticks) between sends, async writes.
async fn send_tokio(plan: SendPlan) -> std::io::Result<()> {
    use tokio::io::AsyncWriteExt;
    let (blocking, frames) = plan.connect()?;
    let mut connections = Vec::with_capacity(blocking.len());
    for socket in blocking {
        socket.set_nonblocking(true)?;
        connections.push(tokio::net::TcpStream::from_std(socket)?);
    }
    let mut timer = iotload_core::timer::PreciseTimer::new()?;
    let total = plan.total();
    let usage = ProcessUsage::now();
    let start = Instant::now();
    for i in 0..total {
        let due = start + plan.due(i);
        if due > Instant::now() {
            timer.sleep_until(due).await?;
        }
        let d = (i % plan.devices as u64) as usize;
        connections[d].write_all(&frames[d]).await?;
    }
    report("send-tokio", total, usage, start.elapsed());
    Ok(())
}

fn receive(broker: &str, filter: &str, expected: u64) -> std::io::Result<()> {
    let mut socket = mqtt_wire::connect(broker, &format!("floor-receiver-{}", std::process::id()))?;
    mqtt_wire::subscribe(&mut socket, filter)?;
    println!("subscribed");
    std::io::stdout().flush()?;
    let mut tally = Tally::new();
    socket.set_read_timeout(Some(Duration::from_secs(10)))?;
    while tally.received < expected {
        let n = match socket.read(tally.space()) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
            Err(e) if e.kind() == std::io::ErrorKind::TimedOut => break,
            Err(e) => return Err(e),
        };
        tally.add(n);
    }
    tally.report("receive");
    Ok(())
}

/// The same subscription read through tokio's reactor in 256 KiB chunks.
async fn receive_tokio(broker: String, filter: String, expected: u64) -> std::io::Result<()> {
    use tokio::io::AsyncReadExt;
    let mut blocking =
        mqtt_wire::connect(&broker, &format!("floor-receiver-{}", std::process::id()))?;
    mqtt_wire::subscribe(&mut blocking, &filter)?;
    blocking.set_nonblocking(true)?;
    let mut socket = tokio::net::TcpStream::from_std(blocking)?;
    println!("subscribed");
    std::io::stdout().flush()?;
    let mut tally = Tally::new();
    while tally.received < expected {
        let read = tokio::time::timeout(Duration::from_secs(10), socket.read(tally.space()));
        let n = match read.await {
            Err(_) | Ok(Ok(0)) => break,
            Ok(Ok(n)) => n,
            Ok(Err(e)) => return Err(e),
        };
        tally.add(n);
    }
    tally.report("receive-tokio");
    Ok(())
}

/// A receiver's buffer and counts: whole PUBLISH packets counted as reads fill it, a
/// partial packet kept for the next read, CPU counted from the first read.
struct Tally {
    buffer: Vec<u8>,
    filled: usize,
    received: u64,
    reads: u64,
    first: Option<(ProcessUsage, Instant)>,
}

impl Tally {
    fn new() -> Self {
        Self {
            buffer: vec![0u8; 256 * 1024],
            filled: 0,
            received: 0,
            reads: 0,
            first: None,
        }
    }

    /// Where the next read goes.
    fn space(&mut self) -> &mut [u8] {
        &mut self.buffer[self.filled..]
    }

    /// Counts the packets `n` more bytes completed.
    fn add(&mut self, n: usize) {
        if self.first.is_none() {
            self.first = Some((ProcessUsage::now(), Instant::now()));
        }
        self.reads += 1;
        self.filled += n;
        let mut at = 0;
        while let Some((kind, len)) = packet_at(&self.buffer[at..self.filled]) {
            if kind >> 4 == 3 {
                self.received += 1;
            }
            at += len;
        }
        self.buffer.copy_within(at..self.filled, 0);
        self.filled -= at;
    }

    fn report(self, role: &str) {
        let (usage, since) = self.first.unwrap_or((ProcessUsage::now(), Instant::now()));
        eprintln!("{} reads for {} messages", self.reads, self.received);
        report(role, self.received, usage, since.elapsed());
    }
}

/// The type byte and whole length of the packet at the start of `bytes`, if complete.
fn packet_at(bytes: &[u8]) -> Option<(u8, usize)> {
    let kind = *bytes.first()?;
    let mut length = 0usize;
    for (i, shift) in [0, 7, 14, 21].into_iter().enumerate() {
        let byte = *bytes.get(1 + i)?;
        length |= usize::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            let total = 2 + i + length;
            return (bytes.len() >= total).then_some((kind, total));
        }
    }
    None
}
