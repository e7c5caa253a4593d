//! The loss model: the message counters every output keeps, and the one way "lost" is
//! derived from them (docs/measurement.md, "Loss, duplicates, reordering").
//!
//! Every counter only grows. `gaps` counts sequence numbers found missing when a higher
//! one of the same device arrived; `reordered` counts late arrivals, each of which fills
//! one of those gaps. "Lost" is never stored or summed: it is derived from the totals of
//! a topic or a run, by [`MessageCounts::lost`].

use std::ops::AddAssign;

use serde::{Deserialize, Serialize};

/// Message counters of a topic, a second, a run or any sum of them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MessageCounts {
    /// Messages the loadgen side sent (0 when no loadgen reported).
    pub sent: u64,
    /// Messages the collector side received, duplicates and undecodable ones included.
    pub received: u64,
    /// Sequence numbers found missing when a higher one of the same device arrived
    /// (counting from 0, so a collector that joined late counts what it missed).
    pub gaps: u64,
    /// Repeated copies of messages already received.
    pub duplicates: u64,
    /// Late arrivals: messages that came after a higher sequence number of their device;
    /// each fills one gap counted before.
    pub reordered: u64,
    /// Messages without a readable stamp.
    pub undecodable: u64,
}

impl MessageCounts {
    /// Distinct messages received: received − duplicates − undecodable.
    pub fn unique(&self) -> u64 {
        self.received
            .saturating_sub(self.duplicates)
            .saturating_sub(self.undecodable)
    }

    /// Messages never received. When the sent count is known (`sent > 0`) it is
    /// sent − unique, which also counts messages after a device's last arrival; otherwise
    /// gaps − late arrivals. Meaningful for totals (a topic, a run), not for one second,
    /// where a message sent in one second may arrive in the next.
    pub fn lost(&self) -> u64 {
        if self.sent > 0 {
            self.sent.saturating_sub(self.unique())
        } else {
            self.open_gaps()
        }
    }

    /// Gaps not filled (yet) by a late arrival: gaps − reordered.
    pub fn open_gaps(&self) -> u64 {
        self.gaps.saturating_sub(self.reordered)
    }
}

impl AddAssign for MessageCounts {
    fn add_assign(&mut self, o: Self) {
        self.sent = self.sent.saturating_add(o.sent);
        self.received = self.received.saturating_add(o.received);
        self.gaps = self.gaps.saturating_add(o.gaps);
        self.duplicates = self.duplicates.saturating_add(o.duplicates);
        self.reordered = self.reordered.saturating_add(o.reordered);
        self.undecodable = self.undecodable.saturating_add(o.undecodable);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counts(sent: u64, received: u64, gaps: u64, dup: u64, late: u64) -> MessageCounts {
        MessageCounts {
            sent,
            received,
            gaps,
            duplicates: dup,
            reordered: late,
            undecodable: 0,
        }
    }

    #[test]
    fn a_reordered_message_is_not_lost() {
        // Seq 1 arrives before seq 0: one gap opened, then filled.
        let per_second = [counts(0, 1, 1, 0, 0), counts(0, 1, 0, 0, 1)];
        let mut total = MessageCounts::default();
        for s in per_second {
            total += s;
        }
        assert_eq!(total.lost(), 0);
    }

    #[test]
    fn with_the_sent_count_the_tail_counts_too() {
        // 10 sent, 0..=7 received, 3 duplicated, 8 and 9 lost after the last arrival.
        let c = counts(10, 11, 0, 3, 0);
        assert_eq!((c.unique(), c.lost()), (8, 2));
        // The collector alone sees no gap for them.
        assert_eq!(counts(0, 11, 0, 3, 0).lost(), 0);
    }

    #[test]
    fn undecodable_messages_are_not_unique() {
        let c = MessageCounts {
            sent: 5,
            received: 5,
            undecodable: 2,
            ..MessageCounts::default()
        };
        assert_eq!(c.lost(), 2);
    }
}
