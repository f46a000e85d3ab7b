//! Batches and their acknowledgement: each [`Batch`] carries an opaque [`AckToken`]
//! holding the positions its records reach. Tokens may be committed in any order, but a
//! batch's positions apply only once it and every batch before it are committed, so a
//! committed position never covers a record that is not durable downstream.

use std::collections::VecDeque;

use crate::discover::FileId;
use crate::record::LogRecord;
use crate::tail::file::FileMark;

/// Proof that a batch was handed out; give it back to [`crate::Tailer::commit`] once its
/// records are durable (or deliberately dropped and counted) downstream.
#[derive(Debug, PartialEq, Eq)]
#[must_use = "a batch's position is committed only with its token"]
pub struct AckToken {
    /// `None` for a batch read while too many were outstanding: nothing to commit.
    sequence: Option<u64>,
}

/// The records of one poll and the token that commits them. Commit every batch's
/// token, also of a batch without records: it may carry positions (lines skipped,
/// a rotated file finished) that later batches' positions wait for.
#[derive(Debug)]
#[must_use = "records read and not delivered are re-read after a restart only if not committed"]
pub struct Batch {
    /// Records in the order read: per file and stream in file order; a rotated file's
    /// records before its successor's.
    pub records: Vec<LogRecord>,
    /// Commits this batch's positions.
    pub token: AckToken,
}

/// A file's position after a batch, for the file's content generation it was read from.
#[derive(Debug, Clone, Copy)]
pub struct PendingMark {
    /// The file.
    pub id: FileId,
    /// The content generation the mark belongs to.
    pub generation: u64,
    /// The position.
    pub mark: FileMark,
}

struct PendingBatch {
    marks: Vec<PendingMark>,
    acknowledged: bool,
}

/// Batches handed out and not yet applied, oldest first.
#[derive(Default)]
pub struct AckQueue {
    first_sequence: u64,
    pending: VecDeque<PendingBatch>,
}

impl AckQueue {
    /// Batches not yet applied.
    pub fn len(&self) -> usize {
        self.pending.len()
    }

    /// Registers a new batch's marks and returns its token.
    pub fn push(&mut self, marks: Vec<PendingMark>) -> AckToken {
        let sequence = self.first_sequence + self.pending.len() as u64;
        self.pending.push_back(PendingBatch {
            marks,
            acknowledged: false,
        });
        AckToken {
            sequence: Some(sequence),
        }
    }

    /// The token of a batch that read nothing because the queue is full; it takes no
    /// place in the queue, so polling a stalled consumer does not grow it.
    pub fn empty_token() -> AckToken {
        AckToken { sequence: None }
    }

    /// Acknowledges a batch; returns the marks that may now be applied, in order.
    pub fn acknowledge(&mut self, token: AckToken) -> Vec<PendingMark> {
        let Some(index) = token
            .sequence
            .and_then(|s| s.checked_sub(self.first_sequence))
        else {
            return Vec::new();
        };
        if let Some(batch) = self.pending.get_mut(index as usize) {
            batch.acknowledged = true;
        }
        let mut ready = Vec::new();
        while self.pending.front().is_some_and(|b| b.acknowledged) {
            if let Some(batch) = self.pending.pop_front() {
                ready.extend(batch.marks);
                self.first_sequence += 1;
            }
        }
        ready
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mark(offset: u64) -> Vec<PendingMark> {
        vec![PendingMark {
            id: FileId { dev: 1, ino: 1 },
            generation: 0,
            mark: FileMark {
                offset,
                resume: [offset; 3],
            },
        }]
    }

    #[test]
    fn a_later_batch_applies_only_after_every_earlier_one() {
        let mut queue = AckQueue::default();
        let first = queue.push(mark(10));
        let second = queue.push(mark(20));
        let third = queue.push(mark(30));
        assert!(
            queue.acknowledge(second).is_empty(),
            "the first batch is not durable yet"
        );
        let applied: Vec<u64> = queue
            .acknowledge(first)
            .iter()
            .map(|m| m.mark.offset)
            .collect();
        assert_eq!(applied, vec![10, 20]);
        assert_eq!(queue.len(), 1);
        assert_eq!(queue.acknowledge(third)[0].mark.offset, 30);
        assert_eq!(queue.len(), 0);
        assert!(queue.acknowledge(AckQueue::empty_token()).is_empty());
        assert_eq!(queue.len(), 0);
    }
}
