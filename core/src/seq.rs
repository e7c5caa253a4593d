//! Loss, duplicate and reorder accounting by per-device sequence number.
//! Each simulated device numbers its messages 0, 1, 2, …; the collector feeds
//! every decoded (device, seq) pair to a [`SequenceTracker`], which classifies
//! the arrival and keeps running totals of unique messages, duplicates,
//! reordered (late) arrivals and gaps (sequence numbers never received).

use std::collections::HashMap;

/// How many of the most recent sequence numbers each device remembers
/// exactly (the sliding bitmap window).
pub const WINDOW: u64 = 1024;
/// Number of 64-bit words in the bitmap window.
const WORDS: usize = (WINDOW / 64) as usize;

/// How one observed message relates to what was seen before from its device.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arrival {
    /// Never seen before, and not lower than any seq seen before.
    New,
    /// Seen before: a repeat.
    Duplicate,
    /// Never seen before, but arriving after a higher seq (reordered).
    Late,
}

/// Totals over all devices.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct SeqCounts {
    /// Distinct messages received.
    pub unique: u64,
    /// Repeated copies of messages already received.
    pub duplicates: u64,
    /// Messages that arrived after a higher seq of the same device.
    pub reordered: u64,
    /// Summed over devices, (highest seq seen + 1) − unique seen: seqs below
    /// the highest that were never received, counting from 0 (so a
    /// subscriber that joined late counts the early ones as gaps).
    /// Saturates at `u64::MAX`.
    pub gaps: u64,
}

/// Per-device state: 144 bytes.
#[derive(Debug, Clone)]
struct DeviceWindow {
    /// Highest seq seen.
    highest: u64,
    /// Distinct seqs seen (always ≥ 1, since the window exists only once a
    /// seq was seen).
    unique: u64,
    /// Repeats of this device's seqs.
    duplicates: u64,
    /// Late arrivals of this device's seqs.
    reordered: u64,
    /// Bit `i` (word `i / 64`, bit `i % 64`) set ⇔ seq `highest − i` was seen.
    bits: [u64; WORDS],
}

impl DeviceWindow {
    fn first(seq: u64) -> Self {
        let mut bits = [0; WORDS];
        bits[0] = 1;
        Self {
            highest: seq,
            unique: 1,
            duplicates: 0,
            reordered: 0,
            bits,
        }
    }

    /// Seqs in `0..=highest` never seen; cannot overflow since `unique ≥ 1`
    /// and `unique − 1 ≤ highest`.
    fn gaps(&self) -> u64 {
        self.highest - (self.unique - 1)
    }

    fn bit(offset: u64) -> (usize, u64) {
        ((offset / 64) as usize, 1 << (offset % 64))
    }

    fn test_and_set(&mut self, offset: u64) -> bool {
        let (word, mask) = Self::bit(offset);
        let was = self.bits[word] & mask != 0;
        self.bits[word] |= mask;
        was
    }

    /// Seqs inside the window (and ≥ 0) not seen.
    fn missing_in_window(&self) -> u64 {
        let positions = self.highest.min(WINDOW - 1) + 1;
        let seen: u64 = self.bits.iter().map(|w| u64::from(w.count_ones())).sum();
        positions - seen
    }

    /// Moves the window up to the new highest seq `seq` (> `highest`) and
    /// marks it seen.
    fn advance_to(&mut self, seq: u64) {
        let by = seq - self.highest;
        if by >= WINDOW {
            self.bits = [0; WORDS];
        } else {
            let words = (by / 64) as usize;
            let shift = (by % 64) as u32;
            for i in (0..WORDS).rev() {
                self.bits[i] = match i.checked_sub(words) {
                    None => 0,
                    Some(src) => {
                        let carry = match src.checked_sub(1) {
                            Some(lower) if shift != 0 => self.bits[lower] >> (64 - shift),
                            _ => 0,
                        };
                        (self.bits[src] << shift) | carry
                    }
                };
            }
        }
        self.bits[0] |= 1;
        self.highest = seq;
        self.unique += 1;
    }
}

/// Classifies (device, seq) arrivals and keeps loss, duplicate and reorder
/// totals.
///
/// Each device remembers its highest seq and a bitmap of the last
/// [`WINDOW`] seqs below and including it, so duplicates and late arrivals
/// are told apart exactly within that window. A seq older than the window
/// cannot be told apart in general: if the device has gaps older than the
/// window it is counted as Late (reordered) and unique — even if it really is
/// a repeat — and otherwise (nothing older is missing) as a Duplicate.
///
/// `observe` is O(1) (a window shift touches 16 words) and allocates only
/// when a device is first seen; `counts` is O(1) from running totals.
#[derive(Debug, Clone, Default)]
pub struct SequenceTracker {
    devices: HashMap<u32, DeviceWindow>,
    unique: u64,
    duplicates: u64,
    reordered: u64,
    /// Wide enough that the sum over 2³² devices of u64 gaps cannot overflow.
    gaps: u128,
}

impl SequenceTracker {
    /// An empty tracker.
    pub fn new() -> Self {
        Self::default()
    }

    /// Records one arrival of `seq` from `device` and classifies it.
    pub fn observe(&mut self, device: u32, seq: u64) -> Arrival {
        let Some(window) = self.devices.get_mut(&device) else {
            self.devices.insert(device, DeviceWindow::first(seq));
            self.unique += 1;
            self.gaps += u128::from(seq);
            return Arrival::New;
        };
        if seq > window.highest {
            self.gaps += u128::from(seq - window.highest - 1);
            window.advance_to(seq);
            self.unique += 1;
            return Arrival::New;
        }
        let offset = window.highest - seq;
        let repeat = if offset < WINDOW {
            window.test_and_set(offset)
        } else {
            // Older than the window: only a repeat for sure when nothing
            // older than the window is missing.
            window.gaps() == window.missing_in_window()
        };
        if repeat {
            window.duplicates += 1;
            self.duplicates += 1;
            return Arrival::Duplicate;
        }
        window.reordered += 1;
        window.unique += 1;
        self.unique += 1;
        self.reordered += 1;
        self.gaps -= 1;
        Arrival::Late
    }

    /// Records one arrival of a message without a sequence number: unique, since
    /// repeats cannot be told apart (loss is then sent − unique, per topic).
    pub fn observe_unnumbered(&mut self) -> Arrival {
        self.unique += 1;
        Arrival::New
    }

    /// Totals over all devices (O(1)).
    pub fn counts(&self) -> SeqCounts {
        SeqCounts {
            unique: self.unique,
            duplicates: self.duplicates,
            reordered: self.reordered,
            gaps: u64::try_from(self.gaps).unwrap_or(u64::MAX),
        }
    }

    /// Distinct seqs received from `device` (0 if never seen).
    pub fn unique_for(&self, device: u32) -> u64 {
        self.devices.get(&device).map_or(0, |w| w.unique)
    }

    /// Number of devices seen.
    pub fn devices(&self) -> usize {
        self.devices.len()
    }

    /// Counts of each device seen, in device order.
    pub fn per_device(&self) -> Vec<(u32, SeqCounts)> {
        let mut all: Vec<(u32, SeqCounts)> = self
            .devices
            .iter()
            .map(|(&device, w)| {
                (
                    device,
                    SeqCounts {
                        unique: w.unique,
                        duplicates: w.duplicates,
                        reordered: w.reordered,
                        gaps: w.gaps(),
                    },
                )
            })
            .collect();
        all.sort_unstable_by_key(|(d, _)| *d);
        all
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::{HashMap, HashSet};

    fn counts(unique: u64, duplicates: u64, reordered: u64, gaps: u64) -> SeqCounts {
        SeqCounts {
            unique,
            duplicates,
            reordered,
            gaps,
        }
    }

    #[test]
    fn per_device_state_stays_small() {
        assert!(std::mem::size_of::<DeviceWindow>() <= 168);
    }

    #[test]
    fn in_order_sequence_has_no_gaps_duplicates_or_reordering() {
        let mut t = SequenceTracker::new();
        for seq in 0..5000 {
            assert_eq!(t.observe(1, seq), Arrival::New);
        }
        assert_eq!(t.counts(), counts(5000, 0, 0, 0));
        assert_eq!(t.unique_for(1), 5000);
        assert_eq!(t.devices(), 1);
    }

    #[test]
    fn skipped_seq_is_one_gap_until_it_arrives_late() {
        let mut t = SequenceTracker::new();
        for seq in [0, 1, 3] {
            t.observe(1, seq);
        }
        assert_eq!(t.counts(), counts(3, 0, 0, 1));
        assert_eq!(t.observe(1, 2), Arrival::Late);
        assert_eq!(t.counts(), counts(4, 0, 1, 0));
    }

    #[test]
    fn repeats_within_the_window_are_duplicates() {
        let mut t = SequenceTracker::new();
        for seq in 0..10 {
            t.observe(1, seq);
        }
        assert_eq!(t.observe(1, 9), Arrival::Duplicate);
        assert_eq!(t.observe(1, 0), Arrival::Duplicate);
        assert_eq!(t.observe(1, 5), Arrival::Duplicate);
        assert_eq!(t.counts(), counts(10, 3, 0, 0));
    }

    #[test]
    fn late_joiner_counts_early_seqs_as_gaps() {
        let mut t = SequenceTracker::new();
        assert_eq!(t.observe(7, 100), Arrival::New);
        assert_eq!(t.counts().gaps, 100);
        assert_eq!(t.observe(7, 99), Arrival::Late);
        assert_eq!(t.counts().gaps, 99);
    }

    #[test]
    fn window_shifts_keep_every_remembered_bit_in_place() {
        for jump in [1, 63, 64, 65, 127, 128, 500, 1023, 1024, 1025, 5000] {
            let mut t = SequenceTracker::new();
            // Every even seq below 2000 seen, then a jump.
            for seq in (0..2000).step_by(2) {
                t.observe(1, seq);
            }
            let top = 1998 + jump;
            assert_eq!(t.observe(1, top), Arrival::New);
            let before = t.counts();
            assert_eq!(before.gaps, top - 1000, "jump {jump}");
            for seq in (top + 1).saturating_sub(WINDOW)..top {
                let expected = if seq < 2000 && seq % 2 == 0 {
                    Arrival::Duplicate
                } else {
                    Arrival::Late
                };
                assert_eq!(t.observe(1, seq), expected, "jump {jump}, seq {seq}");
            }
        }
    }

    #[test]
    fn shift_by_exactly_64_1023_1024_and_1025() {
        for jump in [64, 1023, 1024, 1025] {
            let mut t = SequenceTracker::new();
            t.observe(1, 0);
            assert_eq!(t.observe(1, jump), Arrival::New);
            assert_eq!(t.counts(), counts(2, 0, 0, jump - 1), "jump {jump}");
            // seq 0 is in the window only while jump < 1024; at 1024 it has
            // just left, but nothing older is missing, so it must be a
            // repeat; at 1025 seq 1 is missing below the window, so it
            // cannot be told apart and counts as late.
            let expected = if jump <= 1024 {
                Arrival::Duplicate
            } else {
                Arrival::Late
            };
            assert_eq!(t.observe(1, 0), expected, "jump {jump}");
            assert_eq!(t.observe(1, jump - 1), Arrival::Late, "jump {jump}");
            assert_eq!(t.observe(1, jump - 1), Arrival::Duplicate, "jump {jump}");
        }
    }

    #[test]
    fn seqs_older_than_the_window_count_as_late_and_unique_when_gaps_exist() {
        let mut t = SequenceTracker::new();
        t.observe(1, 5000);
        assert_eq!(t.observe(1, 3), Arrival::Late);
        assert_eq!(
            t.observe(1, 3),
            Arrival::Late,
            "a repeat this old cannot be told apart"
        );
        assert_eq!(t.counts(), counts(3, 0, 2, 4998));
    }

    #[test]
    fn old_repeat_with_nothing_missing_is_a_duplicate_and_gaps_never_underflow() {
        let mut t = SequenceTracker::new();
        for seq in 0..3000 {
            t.observe(1, seq);
        }
        assert_eq!(t.observe(1, 0), Arrival::Duplicate);
        assert_eq!(t.counts(), counts(3000, 1, 0, 0));
    }

    #[test]
    fn huge_jumps_near_u64_max_do_not_overflow() {
        let mut t = SequenceTracker::new();
        assert_eq!(t.observe(1, 0), Arrival::New);
        assert_eq!(t.observe(1, u64::MAX - 1), Arrival::New);
        assert_eq!(t.observe(1, u64::MAX), Arrival::New);
        assert_eq!(t.observe(1, u64::MAX), Arrival::Duplicate);
        assert_eq!(t.counts().gaps, u64::MAX - 2);
        assert_eq!(t.observe(1, 5), Arrival::Late);
        assert_eq!(t.observe(1, u64::MAX - 2), Arrival::Late);
        assert_eq!(t.counts(), counts(5, 1, 2, u64::MAX - 4));
        assert_eq!(t.observe(2, u64::MAX), Arrival::New);
        assert_eq!(t.counts().gaps, u64::MAX, "the total saturates");
        assert_eq!(t.observe(2, 0), Arrival::Late);
        assert_eq!(t.observe(1, 6), Arrival::Late);
        assert_eq!(t.unique_for(2), 2);
    }

    #[test]
    fn devices_are_tracked_independently() {
        let mut t = SequenceTracker::new();
        assert_eq!(t.observe(1, 0), Arrival::New);
        assert_eq!(t.observe(2, 0), Arrival::New);
        assert_eq!(t.observe(2, 2), Arrival::New);
        assert_eq!(t.observe(1, 1), Arrival::New);
        assert_eq!(t.observe(1, 0), Arrival::Duplicate);
        assert_eq!(t.observe(2, 1), Arrival::Late);
        assert_eq!(t.observe(3, 4), Arrival::New);
        assert_eq!(t.devices(), 3);
        assert_eq!(
            (t.unique_for(1), t.unique_for(2), t.unique_for(3)),
            (2, 3, 1)
        );
        assert_eq!(t.unique_for(99), 0);
        assert_eq!(t.counts(), counts(6, 1, 1, 4));
    }

    #[test]
    fn counts_serialize_as_a_flat_json_object() {
        let json = serde_json::to_string(&counts(1, 2, 3, 4)).unwrap();
        assert_eq!(
            json,
            r#"{"unique":1,"duplicates":2,"reordered":3,"gaps":4}"#
        );
    }

    /// Per seq: kept?, extra copies, jitter of the original, jitter of copies.
    fn plan() -> impl Strategy<Value = Vec<(bool, u8, u64, u64)>> {
        (1usize..=3000).prop_flat_map(|n| {
            proptest::collection::vec(
                (proptest::bool::weighted(0.85), 0u8..3, 0u64..512, 0u64..512),
                n,
            )
        })
    }

    proptest! {
        #[test]
        fn totals_match_a_reference_for_reordered_lossy_duplicated_streams(
            plan in plan(),
            device in any::<u32>(),
        ) {
            // Sorting by seq + jitter (< 512) keeps every arrival within 512
            // of the highest seq seen before it, well inside the window.
            let mut arrivals = Vec::new();
            for (seq, &(kept, copies, jitter, copy_jitter)) in (0u64..).zip(&plan) {
                if kept {
                    arrivals.push((seq + jitter, seq));
                    for c in 0..u64::from(copies) {
                        arrivals.push((seq + (copy_jitter + c * 97) % 512, seq));
                    }
                }
            }
            arrivals.sort();

            let mut t = SequenceTracker::new();
            let mut seen = HashSet::new();
            let mut max = None;
            let mut reordered = 0;
            let mut copies_of = HashMap::new();
            for &(_, seq) in &arrivals {
                let expected = if !seen.insert(seq) {
                    *copies_of.entry(seq).or_insert(0u64) += 1;
                    Arrival::Duplicate
                } else if max.is_some_and(|m| seq < m) {
                    reordered += 1;
                    Arrival::Late
                } else {
                    Arrival::New
                };
                max = max.max(Some(seq));
                prop_assert_eq!(t.observe(device, seq), expected);
            }

            let kept = plan.iter().filter(|p| p.0).count() as u64;
            let extra: u64 = plan.iter().filter(|p| p.0).map(|p| u64::from(p.1)).sum();
            let removed_below_max = max.map_or(0, |m| {
                (0..m).filter(|&s| !plan[s as usize].0).count() as u64
            });
            prop_assert_eq!(t.counts(), counts(kept, extra, reordered, removed_below_max));
            prop_assert_eq!(t.unique_for(device), kept);
            prop_assert_eq!(copies_of.values().sum::<u64>(), extra);
        }
    }
}
