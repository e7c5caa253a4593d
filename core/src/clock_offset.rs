//! Cross-host clocks: how far this process's clock is from the results store's, by an
//! NTP-style exchange (ask the store for its time, halve the round trip), so a collector
//! can tell how far its clock is from each loadgen's and say how much that shifts the
//! latencies it measured.

use serde::Serialize;

use crate::stamp::now_us;
use crate::store::{Coordinator, StoreError};

/// One process's clock against the store's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClockEstimate {
    /// Store clock minus this clock, µs.
    pub offset_us: i64,
    /// The estimate is within this many µs of the true offset (half the round trip of the
    /// best exchange, plus the clocks' 1 µs resolution).
    pub bound_us: u64,
}

/// A collector's clock against one loadgen's, as reported in the summary.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ClockOffset {
    /// The loadgen instance.
    pub instance: String,
    /// Loadgen clock minus collector clock, µs: add it to a latency measured between them
    /// to get the true one.
    pub offset_us: i64,
    /// Error bound of `offset_us`, µs.
    pub bound_us: u64,
}

/// Estimates this clock against `store`'s from `exchanges` round trips, keeping the one
/// with the shortest round trip (the tightest bound).
pub async fn estimate(
    store: &dyn Coordinator,
    exchanges: usize,
) -> Result<ClockEstimate, StoreError> {
    let mut best: Option<ClockEstimate> = None;
    for _ in 0..exchanges.max(1) {
        // The round trip is timed on the monotonic clock: timed on the wall clock, a
        // step during the exchange could make it look near zero and win as "best".
        let before = now_us();
        let started = std::time::Instant::now();
        let server = store.server_time_us().await?;
        let round_trip_us = started.elapsed().as_micros() as u64;
        let midpoint = before + round_trip_us / 2;
        let candidate = ClockEstimate {
            offset_us: server as i64 - midpoint as i64,
            bound_us: round_trip_us / 2 + 1,
        };
        if best.is_none_or(|b| candidate.bound_us < b.bound_us) {
            best = Some(candidate);
        }
    }
    Ok(best.unwrap_or(ClockEstimate {
        offset_us: 0,
        bound_us: u64::MAX,
    }))
}

/// A collector's offsets to the loadgens that stored their estimates, from its own.
pub fn offsets_to(own: ClockEstimate, loadgens: &[(String, ClockEstimate)]) -> Vec<ClockOffset> {
    loadgens
        .iter()
        .map(|(instance, l)| ClockOffset {
            instance: instance.clone(),
            // (store − collector) − (store − loadgen) = loadgen − collector.
            offset_us: own.offset_us - l.offset_us,
            bound_us: own.bound_us.saturating_add(l.bound_us),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_loadgen_ahead_of_the_collector_has_a_positive_offset() {
        // Store at 1,000,000; collector reads 999,000 (1 ms behind the store), loadgen
        // 1,002,000 (2 ms ahead): the loadgen is 3 ms ahead of the collector.
        let collector = ClockEstimate {
            offset_us: 1_000,
            bound_us: 50,
        };
        let loadgen = ClockEstimate {
            offset_us: -2_000,
            bound_us: 70,
        };
        let got = offsets_to(collector, &[("lg".into(), loadgen)]);
        assert_eq!(
            got,
            [ClockOffset {
                instance: "lg".into(),
                offset_us: 3_000,
                bound_us: 120
            }]
        );
    }
}
