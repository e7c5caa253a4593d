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

#[cfg(test)]
mod tests {
    use super::*;

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
