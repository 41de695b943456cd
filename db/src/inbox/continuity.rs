//! The repair of test-broker defect 1, off unless `INBOX_GAP_REWIND` is set.
//!
//! tansu 0.6.0 answers a fetch that starts inside a record batch from the
//! next batch on, skipping the rest of the batch. A consumer starts a fetch
//! at an arbitrary offset when it takes a partition (from the committed
//! offset) and when it resumes a paused one (from the last message it
//! handed out), so with producers that batch, a restart or a pause could
//! lose the messages behind that offset in its batch.
//!
//! Our producers and topics leave no holes in a partition's offsets
//! (idempotent, not transactional, never compacted), so a skip shows as a
//! message whose offset is beyond the next one expected. The reader then
//! seeks back `rewind` offsets before the expected one and drops what comes
//! again before it. With producer batches of at most `rewind` records
//! (`batch.num.messages`), the batch holding the expected offset starts at
//! or after the new fetch position, so the second fetch skips nothing that
//! is needed. A second skip of the same offset would mean the records are
//! gone (retention), not skipped: it is logged and accepted.
//!
//! Apache Kafka answers from the batch that holds the offset, so production
//! keeps `rewind` at 0 and this code never runs.

use std::collections::HashMap;

/// What the reader does with one message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Verdict {
    /// The next message of its partition: hand it to the worker.
    Take,
    /// Already handed out (or applied before this claim): drop it.
    Drop,
    /// Offsets were skipped: drop it and seek the partition back to here.
    Rewind(i64),
}

/// The next offset expected per partition, when the repair is on.
#[derive(Debug, Default)]
pub(super) struct Continuity {
    rewind: i64,
    next: HashMap<i32, Next>,
}

#[derive(Debug, Clone, Copy)]
struct Next {
    offset: i64,
    /// Set when a rewind for `offset` was asked: a second skip is accepted.
    rewound: bool,
}

impl Continuity {
    /// `rewind` 0 turns the repair off.
    pub(super) fn new(rewind: u32) -> Self {
        Self {
            rewind: i64::from(rewind),
            next: HashMap::new(),
        }
    }

    pub(super) fn is_on(&self) -> bool {
        self.rewind > 0
    }

    /// A new claim of `partition` starts at `committed` (`None`: nothing
    /// committed, or it could not be read; the first message sets it).
    pub(super) fn start(&mut self, partition: i32, committed: Option<i64>) {
        match committed {
            Some(offset) => {
                self.next.insert(
                    partition,
                    Next {
                        offset,
                        rewound: false,
                    },
                );
            }
            None => {
                self.next.remove(&partition);
            }
        }
    }

    /// Where fetching `partition` should restart so that it skips nothing
    /// before `from`: `rewind` offsets earlier (`None` when the repair is off).
    pub(super) fn restart_before(&self, from: i64) -> Option<i64> {
        self.is_on().then(|| (from - self.rewind).max(0))
    }

    /// The next offset expected of `partition`, if known.
    pub(super) fn expected(&self, partition: i32) -> Option<i64> {
        self.next.get(&partition).map(|n| n.offset)
    }

    /// Judges the message at `offset` of `partition`.
    pub(super) fn check(&mut self, partition: i32, offset: i64) -> Verdict {
        if !self.is_on() {
            return Verdict::Take;
        }
        let next = self.next.entry(partition).or_insert(Next {
            offset,
            rewound: false,
        });
        if offset < next.offset {
            return Verdict::Drop;
        }
        if offset > next.offset && !next.rewound {
            next.rewound = true;
            return Verdict::Rewind((next.offset - self.rewind).max(0));
        }
        if offset > next.offset {
            tracing::error!(
                partition,
                expected = next.offset,
                offset,
                "offsets missing after a rewind: taken as gone from the broker"
            );
        }
        *next = Next {
            offset: offset + 1,
            rewound: false,
        };
        Verdict::Take
    }

    /// A rewind could not be asked (the seek failed): the next skip asks again.
    pub(super) fn rewind_failed(&mut self, partition: i32) {
        if let Some(next) = self.next.get_mut(&partition) {
            next.rewound = false;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn off_takes_everything() {
        let mut c = Continuity::new(0);
        c.start(0, Some(10));
        assert_eq!(c.check(0, 3), Verdict::Take);
        assert_eq!(c.check(0, 30), Verdict::Take);
    }

    #[test]
    fn a_skip_at_the_start_rewinds_and_the_replay_is_dropped_up_to_the_committed_offset() {
        let mut c = Continuity::new(5);
        c.start(0, Some(12));
        assert_eq!(c.check(0, 15), Verdict::Rewind(7));
        // The broker answers from the batch that starts at 10.
        assert_eq!(c.check(0, 10), Verdict::Drop);
        assert_eq!(c.check(0, 11), Verdict::Drop);
        assert_eq!(c.check(0, 12), Verdict::Take);
        assert_eq!(c.check(0, 13), Verdict::Take);
        // A later skip (a resumed partition) is repaired the same way.
        assert_eq!(c.check(0, 20), Verdict::Rewind(9));
        assert_eq!(c.check(0, 14), Verdict::Take);
    }

    #[test]
    fn a_second_skip_of_the_same_offset_is_accepted() {
        let mut c = Continuity::new(5);
        c.start(0, Some(2));
        assert_eq!(c.check(0, 40), Verdict::Rewind(0));
        assert_eq!(c.check(0, 40), Verdict::Take);
        assert_eq!(c.check(0, 41), Verdict::Take);
    }

    #[test]
    fn nothing_committed_starts_at_the_first_message() {
        let mut c = Continuity::new(5);
        c.start(1, None);
        assert_eq!(c.check(1, 0), Verdict::Take);
        assert_eq!(c.check(1, 1), Verdict::Take);
        assert_eq!(c.check(1, 3), Verdict::Rewind(0));
        c.rewind_failed(1);
        assert_eq!(c.check(1, 3), Verdict::Rewind(0));
    }
}
