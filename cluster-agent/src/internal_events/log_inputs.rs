//! What the node's log inputs did: the file tailer's and the journal reader's
//! counters and the state of the fan-out over each (its consumers, how far each lags,
//! which read on a lane of their own). The reading thread publishes a snapshot after
//! every round ([`LogInputStats::publish`]); `/metrics` reads the last one at scrape
//! time, so a scrape never waits for a round and a round never waits for a scrape
//! longer than a copy.

use std::sync::Mutex;

/// One input's state after a round.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct InputSnapshot {
    /// `files` (the tailer: container logs and plain files) or `journal`.
    pub input: &'static str,
    /// Descriptors the tailer holds open now (0 for the journal).
    pub files_open: u64,
    /// Files the tailer follows now, rotated ones not yet finished included.
    pub files_tracked: u64,
    /// Bytes read from files since the start (0 for the journal).
    pub bytes_read: u64,
    /// Lines (files) or entries (journal) turned into records since the start.
    pub records: u64,
    /// What the input noticed, dropped or cut since the start, by event: a fixed set
    /// of names per input ([`FILE_EVENTS`], [`JOURNAL_EVENTS`]).
    pub events: Vec<(&'static str, u64)>,
    /// The fan-out's consumers: one per log pipeline taking the input.
    pub consumers: Vec<ConsumerLag>,
}

/// The events of the file tailer, in `kaas_agent_log_input_events_total{event}`.
pub const FILE_EVENTS: &[&str] = &[
    "truncation",
    "rotation",
    "lost_file",
    "eviction",
    "read_error",
    "oversize_record",
    "invalid_utf8",
    "unparsed_line",
];

/// The events of the journal reader.
pub const JOURNAL_EVENTS: &[&str] = &["read_error", "oversize_entry"];

/// One fan-out consumer's state.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ConsumerLag {
    /// The log pipeline.
    pub pipeline: String,
    /// Batches offered and not acknowledged yet.
    pub outstanding_batches: u64,
    /// Whether it reads on a lane of its own, behind the shared one.
    pub detached: bool,
    /// Times it was detached.
    pub detachments: u64,
}

/// The last snapshot of every node log input.
#[derive(Debug, Default)]
pub struct LogInputStats(Mutex<Vec<InputSnapshot>>);

impl LogInputStats {
    /// Replaces the snapshot with `inputs` (an input not read any more disappears).
    pub fn publish(&self, inputs: Vec<InputSnapshot>) {
        *self.0.lock().unwrap_or_else(|e| e.into_inner()) = inputs;
    }

    /// The last snapshot.
    pub fn snapshot(&self) -> Vec<InputSnapshot> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}
