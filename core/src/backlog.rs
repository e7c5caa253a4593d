//! How far a receiver is behind: bytes that reached this process's TCP sockets and wait
//! unread, as the kernel reports them.
//!
//! A collector that cannot keep up leaves messages in its socket's receive queue (and,
//! once that is full, in the broker), whatever the broker client library hides. Linux
//! lists every socket's unread bytes (`rx_queue`) in `/proc/self/net/tcp{,6}`; the
//! sockets this process holds are the `socket:[inode]` links in `/proc/self/fd`.
//! [`BacklogWatch`] samples their sum once a second on its own thread, off the receive
//! path, and keeps the peak and the time spent at or above [`BEHIND_BYTES`] (each such
//! sample counts the time since the previous one, so a starved sampler still adds up).
//! Other platforms report nothing.
//!
//! The tables list every TCP socket of the network namespace, not only this process's:
//! in a pod that is a handful, but with a fleet of processes on one host (20 loadgens and
//! 20 collectors with 10,000 devices: some 20,000 sockets) one sample took tens of
//! milliseconds and twenty collectors sampling each second cost more CPU than their
//! messages. So the pause after a sample is at least 100 times the CPU time the sample
//! took (its thread's clock: a process held back by a CPU limit still samples every
//! period): the sampler stays within 1 % of a core however many sockets there are.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Unread bytes from which a sample counts as behind: half the data a socket with Linux's
/// default receive buffer (128 KiB) takes before the rest of the backlog waits in the
/// broker. Half, because a full socket holds less than its 64 KiB window when messages
/// arrive in small segments (the kernel charges each segment's overhead to the buffer):
/// full sockets of a starved collector held 47 and 57 KiB on a loaded machine and over a
/// container bridge. A receiver keeping up leaves a few kilobytes at most (0 in every
/// once-a-second sample of `iotload run` at 10,000 and at 20,000 msg/s for 8 s).
pub const BEHIND_BYTES: u64 = 32 * 1024;

/// A sample that took `t` of CPU is followed by a pause of at least `SAMPLER_SHARE × t`.
const SAMPLER_SHARE: u32 = 100;

/// The pause after a sample that took `took`, sampling every `period` where that is cheap.
fn pause_after(period: Duration, took: Duration) -> Duration {
    period.max(took.saturating_mul(SAMPLER_SHARE))
}

/// Unread bytes summed over this process's TCP sockets now, or `None` where the platform
/// does not say.
pub fn unread_tcp_bytes() -> Option<u64> {
    let inodes = own_socket_inodes()?;
    let mut total = 0;
    let mut any_table = false;
    for table in ["/proc/self/net/tcp", "/proc/self/net/tcp6"] {
        if let Ok(text) = std::fs::read_to_string(table) {
            any_table = true;
            total += unread_in_table(&text, &inodes);
        }
    }
    any_table.then_some(total)
}

/// The inodes of the sockets among this process's open files.
fn own_socket_inodes() -> Option<HashSet<u64>> {
    let dir = std::fs::read_dir("/proc/self/fd").ok()?;
    let inodes = dir
        .filter_map(|entry| {
            let target = std::fs::read_link(entry.ok()?.path()).ok()?;
            let target = target.to_str()?;
            target
                .strip_prefix("socket:[")?
                .strip_suffix(']')?
                .parse()
                .ok()
        })
        .collect();
    Some(inodes)
}

/// The `rx_queue` column summed over the rows of a `/proc/net/tcp` table whose inode is
/// one of `inodes`. Rows: `sl local remote st tx_queue:rx_queue tr:when retrnsmt uid
/// timeout inode ...`, queues in hexadecimal.
fn unread_in_table(text: &str, inodes: &HashSet<u64>) -> u64 {
    text.lines()
        .skip(1)
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let inode: u64 = fields.get(9)?.parse().ok()?;
            if !inodes.contains(&inode) {
                return None;
            }
            let (_, rx) = fields.get(4)?.split_once(':')?;
            u64::from_str_radix(rx, 16).ok()
        })
        .sum()
}

/// Samples [`unread_tcp_bytes`] periodically on its own thread and keeps the peak.
pub struct BacklogWatch {
    peak: Arc<AtomicU64>,
    behind_ms: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl BacklogWatch {
    /// Starts sampling every `period` (the first sample at once).
    pub fn start(period: Duration) -> Self {
        let peak = Arc::new(AtomicU64::new(0));
        let behind_ms = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (peak, behind_ms, stop) = (peak.clone(), behind_ms.clone(), stop.clone());
            std::thread::Builder::new()
                .name("iotload-backlog".into())
                .spawn(move || {
                    let mut previous = Instant::now();
                    while !stop.load(Ordering::Acquire) {
                        let cpu_before = crate::cpu_meter::thread_cpu_nanos();
                        let Some(bytes) = unread_tcp_bytes() else {
                            return;
                        };
                        let now = Instant::now();
                        peak.fetch_max(bytes, Ordering::Relaxed);
                        if bytes >= BEHIND_BYTES {
                            let ms = now.duration_since(previous).as_millis() as u64;
                            behind_ms.fetch_add(ms, Ordering::Relaxed);
                        }
                        previous = now;
                        let took = crate::cpu_meter::thread_cpu_nanos().saturating_sub(cpu_before);
                        std::thread::park_timeout(pause_after(period, Duration::from_nanos(took)));
                    }
                })
                .ok()
        };
        Self {
            peak,
            behind_ms,
            stop,
            thread,
        }
    }

    /// The most unread bytes seen so far.
    pub fn peak(&self) -> u64 {
        self.peak.load(Ordering::Relaxed)
    }

    /// Time at or above [`BEHIND_BYTES`] so far: for each such sample, the time since
    /// the previous sample.
    pub fn behind(&self) -> Duration {
        Duration::from_millis(self.behind_ms.load(Ordering::Relaxed))
    }

    /// Stops sampling; returns the peak and the time at or above [`BEHIND_BYTES`]. No
    /// last sample: what arrives after a receiver stops reading is not a backlog.
    pub fn finish(mut self) -> (u64, Duration) {
        self.halt();
        (self.peak(), self.behind())
    }

    fn halt(&mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(t) = self.thread.take() {
            t.thread().unpark();
            let _ = t.join();
        }
    }
}

impl Drop for BacklogWatch {
    fn drop(&mut self) {
        self.halt();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::net::{TcpListener, TcpStream};

    #[test]
    fn table_rows_of_own_sockets_are_summed() {
        let table = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n\
   0: 0100007F:075B 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 111 1 0000000000000000 100 0 0 10 0\n\
   1: 0100007F:D2F0 0100007F:075B 01 00000000:00000400 00:00000000 00000000     0        0 222 1 0000000000000000 20 4 30 10 -1\n\
   2: 0100007F:D2F2 0100007F:075B 01 00000000:00000010 00:00000000 00000000     0        0 333 1 0000000000000000 20 4 30 10 -1\n";
        let inodes: HashSet<u64> = [111, 222].into_iter().collect();
        assert_eq!(unread_in_table(table, &inodes), 0x400);
        assert_eq!(unread_in_table("garbage\nmore garbage", &inodes), 0);
    }

    #[test]
    fn an_expensive_sample_stretches_the_pause() {
        let second = Duration::from_secs(1);
        assert_eq!(pause_after(second, Duration::from_micros(200)), second);
        assert_eq!(
            pause_after(second, Duration::from_millis(25)),
            Duration::from_millis(2500)
        );
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn bytes_nobody_read_are_counted() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let mut sender = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (_unread, _) = listener.accept().unwrap();
        let before = unread_tcp_bytes().unwrap();
        sender.write_all(&[7u8; 5000]).unwrap();
        let mut now = before;
        for _ in 0..200 {
            now = unread_tcp_bytes().unwrap();
            if now >= before + 5000 {
                break;
            }
            std::thread::yield_now();
        }
        assert!(now >= before + 5000, "before {before}, now {now}");
        let watch = BacklogWatch::start(Duration::from_millis(10));
        while watch.peak() == 0 {
            std::thread::yield_now();
        }
        let (peak, behind) = watch.finish();
        assert!(peak >= 5000, "{peak}");
        assert_eq!(behind, Duration::ZERO, "5000 bytes are not a full socket");
    }
}
