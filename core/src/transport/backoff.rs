//! How long a client waits before reconnecting, shared by every family.

use std::time::Duration;

use crate::stamp::now_us;

/// The wait before the next attempt after `failures` failed ones: doubling from 100 ms
/// up to 5 s, with jitter that spreads the reconnects of many devices so a restarted
/// broker is not stormed.
pub fn reconnect_delay(failures: u32) -> Duration {
    let base_ms = 100u64.saturating_mul(1 << failures.min(6)).min(5_000);
    let jitter = now_us() % (base_ms / 2 + 1);
    Duration::from_millis(base_ms / 2 + jitter)
}
