//! What the iotload process itself costs: CPU time and peak memory, from getrusage.
//!
//! Reported in every summary so users can see the tool is not the bottleneck, and used by
//! the benchmarks for CPU µs per message.

use serde::Serialize;

/// CPU time and peak resident memory of this process so far.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct ProcessUsage {
    /// User-mode CPU seconds.
    pub cpu_user_s: f64,
    /// Kernel-mode CPU seconds.
    pub cpu_system_s: f64,
    /// Peak resident set size, MiB.
    pub peak_rss_mib: f64,
}

impl ProcessUsage {
    /// Reads the counters now; zeroes where the platform does not report them.
    pub fn now() -> Self {
        use nix::sys::resource::{UsageWho, getrusage};
        match getrusage(UsageWho::RUSAGE_SELF) {
            Ok(u) => {
                let secs = |t: nix::sys::time::TimeVal| {
                    t.tv_sec() as f64 + t.tv_usec() as f64 / 1_000_000.0
                };
                Self {
                    cpu_user_s: secs(u.user_time()),
                    cpu_system_s: secs(u.system_time()),
                    // Linux reports ru_maxrss in KiB.
                    peak_rss_mib: u.max_rss() as f64 / 1024.0,
                }
            }
            Err(_) => Self::default(),
        }
    }

    /// Total CPU seconds.
    pub fn cpu_s(&self) -> f64 {
        self.cpu_user_s + self.cpu_system_s
    }
}

/// CPU seconds used so far by this process's threads whose name `is_part` accepts (Linux:
/// `/proc/self/task/*/comm` and `schedstat`; 0 elsewhere). Threads that already ended
/// are not counted.
pub fn threads_cpu_s(is_part: impl Fn(&str) -> bool) -> f64 {
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return 0.0;
    };
    let mut nanos = 0u64;
    for task in tasks.flatten() {
        let dir = task.path();
        let Ok(name) = std::fs::read_to_string(dir.join("comm")) else {
            continue;
        };
        if !is_part(name.trim_end()) {
            continue;
        }
        // The first field of schedstat is the time spent on a CPU, ns.
        let on_cpu = std::fs::read_to_string(dir.join("schedstat"))
            .ok()
            .and_then(|s| {
                s.split_whitespace()
                    .next()
                    .and_then(|n| n.parse::<u64>().ok())
            });
        nanos = nanos.saturating_add(on_cpu.unwrap_or(0));
    }
    nanos as f64 / 1e9
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_named_thread_is_measured_and_others_are_not() {
        let busy = std::thread::Builder::new()
            .name("usage-test-busy".into())
            .spawn(|| {
                let mut x = 0u64;
                for i in 0..50_000_000u64 {
                    x = x.wrapping_mul(31).wrapping_add(i);
                }
                let used = threads_cpu_s(|name| name == "usage-test-busy");
                (std::hint::black_box(x), used)
            })
            .unwrap();
        let (_, used) = busy.join().unwrap();
        assert!(used > 0.001, "measured {used} s");
        assert_eq!(threads_cpu_s(|name| name == "no-such-thread"), 0.0);
    }

    #[test]
    fn usage_grows_with_work() {
        let before = ProcessUsage::now();
        let mut x = 0u64;
        for i in 0..20_000_000u64 {
            x = x.wrapping_mul(31).wrapping_add(i);
        }
        std::hint::black_box(x);
        let after = ProcessUsage::now();
        assert!(after.cpu_s() > before.cpu_s());
        assert!(after.peak_rss_mib > 1.0);
    }
}
