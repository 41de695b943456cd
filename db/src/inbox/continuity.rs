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
//! is needed. Should offsets skip again (a producer batching more than
//! `rewind`), the reader goes back twice as far, up to [`MAX_DOUBLINGS`]
//! times, before it takes the skip as records gone from the broker (logged).
//!
//! A claim whose committed offset is unknown (none yet, or it could not be
//! read) starts from its first message `F`: fetching restarts at `F −
//! rewind`, and the first message at or before `F` starts the partition.
//! The batch before `F` held at most `rewind` records, so this cannot begin
//! after the committed offset; it may apply again (the inbox turns them
//! into no-ops) and store again up to `rewind` offsets below it.
//!
//! Apache Kafka answers from the batch that holds the offset, so production
//! keeps `rewind` at 0 and this code never runs.

use std::collections::HashMap;

/// How many times a repeated skip doubles the distance fetched back.
pub(super) const MAX_DOUBLINGS: u32 = 4;

/// What the reader does with one message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Verdict {
    /// The next message of its partition: hand it to the worker.
    Take,
    /// Already handed out (or applied before this claim), or fetched before
    /// a rewind: drop it.
    Drop,
    /// Offsets were skipped: drop it and seek the partition back to here.
    Rewind(i64),
}

/// Where each partition stands, when the repair is on.
#[derive(Debug, Default)]
pub(super) struct Continuity {
    rewind: i64,
    partitions: HashMap<i32, State>,
}

#[derive(Debug, Clone, Copy)]
enum State {
    /// The next offset to take; `doublings` rewinds were asked for it.
    Next { offset: i64, doublings: u32 },
    /// A claim without a known start was sought back from its first message
    /// at `upto`: the first message at or before it starts the partition.
    Replaying { upto: i64 },
}

impl Continuity {
    /// `rewind` 0 turns the repair off.
    pub(super) fn new(rewind: u32) -> Self {
        Self {
            rewind: i64::from(rewind),
            partitions: HashMap::new(),
        }
    }

    pub(super) fn is_on(&self) -> bool {
        self.rewind > 0
    }

    /// A new claim of `partition` starts at `committed` (`None`: unknown;
    /// its first message decides, see the module's documentation).
    pub(super) fn start(&mut self, partition: i32, committed: Option<i64>) {
        match committed {
            Some(offset) => {
                let state = State::Next {
                    offset,
                    doublings: 0,
                };
                self.partitions.insert(partition, state);
            }
            None => {
                self.partitions.remove(&partition);
            }
        }
    }

    /// Keeps only the partitions `owned` says this member still owns.
    pub(super) fn retain(&mut self, owned: impl Fn(i32) -> bool) {
        self.partitions.retain(|p, _| owned(*p));
    }

    /// Where fetching should restart so that it skips nothing before `from`.
    pub(super) fn restart_before(&self, from: i64) -> i64 {
        (from - self.rewind).max(0)
    }

    /// The next offset expected of `partition`, if known.
    pub(super) fn expected(&self, partition: i32) -> Option<i64> {
        match self.partitions.get(&partition) {
            Some(State::Next { offset, .. }) => Some(*offset),
            _ => None,
        }
    }

    /// Judges the message at `offset` of `partition`.
    pub(super) fn check(&mut self, partition: i32, offset: i64) -> Verdict {
        if !self.is_on() {
            return Verdict::Take;
        }
        let taken = State::Next {
            offset: offset + 1,
            doublings: 0,
        };
        let Some(state) = self.partitions.get_mut(&partition) else {
            self.partitions
                .insert(partition, State::Replaying { upto: offset });
            return Verdict::Rewind(self.restart_before(offset));
        };
        match *state {
            State::Replaying { upto } if offset > upto => Verdict::Drop,
            State::Replaying { .. } => {
                *state = taken;
                Verdict::Take
            }
            State::Next { offset: next, .. } if offset < next => Verdict::Drop,
            State::Next { offset: next, .. } if offset == next => {
                *state = taken;
                Verdict::Take
            }
            State::Next {
                offset: next,
                doublings,
            } if doublings <= MAX_DOUBLINGS => {
                *state = State::Next {
                    offset: next,
                    doublings: doublings + 1,
                };
                Verdict::Rewind((next - (self.rewind << doublings)).max(0))
            }
            State::Next { offset: next, .. } => {
                tracing::error!(
                    partition,
                    expected = next,
                    offset,
                    "offsets missing after repeated rewinds: taken as gone from the broker"
                );
                *state = taken;
                Verdict::Take
            }
        }
    }

    /// A rewind could not be asked (the seek failed): the next skip asks again.
    pub(super) fn rewind_failed(&mut self, partition: i32) {
        match self.partitions.get_mut(&partition) {
            Some(State::Next { doublings, .. }) => *doublings = doublings.saturating_sub(1),
            Some(State::Replaying { .. }) => {
                self.partitions.remove(&partition);
            }
            None => {}
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
        assert_eq!(c.expected(0), Some(15));
    }

    #[test]
    fn a_repeated_skip_goes_back_twice_as_far_before_it_is_taken_as_gone() {
        let mut c = Continuity::new(5);
        c.start(0, Some(100));
        let mut asked = Vec::new();
        while let Verdict::Rewind(to) = c.check(0, 140) {
            asked.push(to);
        }
        assert_eq!(asked, [95, 90, 80, 60, 20]);
        assert_eq!(c.expected(0), Some(141), "then taken");
    }

    #[test]
    fn an_unknown_start_rewinds_from_the_first_message_and_starts_at_or_before_it() {
        let mut c = Continuity::new(5);
        c.start(1, None);
        assert_eq!(c.check(1, 30), Verdict::Rewind(25));
        // Fetched before the seek took effect.
        assert_eq!(c.check(1, 31), Verdict::Drop);
        // The replay: the batch at 27 starts the partition.
        assert_eq!(c.check(1, 27), Verdict::Take);
        assert_eq!(c.check(1, 28), Verdict::Take);
        assert_eq!(c.expected(1), Some(29));
    }

    #[test]
    fn a_failed_seek_is_asked_again() {
        let mut c = Continuity::new(5);
        c.start(0, Some(10));
        assert_eq!(c.check(0, 20), Verdict::Rewind(5));
        c.rewind_failed(0);
        assert_eq!(c.check(0, 20), Verdict::Rewind(5));
        c.start(1, None);
        assert_eq!(c.check(1, 3), Verdict::Rewind(0));
        c.rewind_failed(1);
        assert_eq!(c.check(1, 3), Verdict::Rewind(0));
    }

    #[test]
    fn partitions_no_longer_owned_are_forgotten() {
        let mut c = Continuity::new(5);
        c.start(0, Some(10));
        c.start(1, Some(10));
        c.retain(|p| p == 1);
        assert_eq!(c.expected(0), None);
        assert_eq!(c.expected(1), Some(10));
    }
}
