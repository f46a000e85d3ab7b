//! What log record processing (`processing::logs`) did to a batch and the counters it
//! owns: each step that drops, truncates or alters a record names one
//! [`LogProcessingOutcome`]; a batch's outcomes are summed in a
//! [`LogProcessingCounts`], which [`LogRecordsProcessed`] adds to the pipeline's
//! [`LogProcessingStats`]. The outcomes are a fixed set, so the `outcome` label stays
//! bounded. Counted, not logged: a hostile or chatty workload must not be able to
//! flood the agent's own log, and the counts say everything the operator needs.

use std::sync::atomic::{AtomicU64, Ordering};

/// Something log processing did to a record that the operator must be able to see:
/// a record dropped, a body truncated or kept raw, an attribute given up.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum LogProcessingOutcome {
    /// The pipeline's keep/drop filter dropped the record (as configured: not a loss).
    Filtered,
    /// The pipeline's rate limit was exhausted; the record was dropped.
    PipelineRateLimited,
    /// The record's namespace's rate limit was exhausted; the record was dropped.
    NamespaceRateLimited,
    /// A structured body (array or map) larger than the record size cap, which cannot
    /// be cut without changing its meaning; the record was dropped.
    RecordTooLarge,
    /// A text or bytes body longer than the record size cap; the rest was cut off.
    BodyTruncated,
    /// A body that looked like JSON (`{` first) did not parse; it stays raw, with a
    /// parse-error attribute.
    JsonInvalid,
    /// A JSON body nested deeper than the parser allows; it stays raw.
    JsonTooDeep,
    /// A JSON body with more keys or array elements than the parser allows; it stays raw.
    JsonTooLarge,
    /// De-dotting mapped two attribute keys onto one; the losing attribute was dropped.
    DedotCollision,
}

/// How a [`LogProcessingOutcome`] affects the data.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogOutcomeEffect {
    /// The whole record is gone.
    RecordDropped,
    /// Part of the record (the end of its body, or one attribute) is gone.
    PartLost,
    /// Nothing is lost, but the record was not processed as configured.
    NotProcessed,
}

impl LogProcessingOutcome {
    /// Every outcome, in the order of [`LogProcessingCounts`].
    pub const ALL: [LogProcessingOutcome; 9] = [
        Self::Filtered,
        Self::PipelineRateLimited,
        Self::NamespaceRateLimited,
        Self::RecordTooLarge,
        Self::BodyTruncated,
        Self::JsonInvalid,
        Self::JsonTooDeep,
        Self::JsonTooLarge,
        Self::DedotCollision,
    ];

    /// The outcome as counted (the `outcome` label).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Filtered => "filtered",
            Self::PipelineRateLimited => "pipeline_rate_limited",
            Self::NamespaceRateLimited => "namespace_rate_limited",
            Self::RecordTooLarge => "record_too_large",
            Self::BodyTruncated => "body_truncated",
            Self::JsonInvalid => "json_invalid",
            Self::JsonTooDeep => "json_too_deep",
            Self::JsonTooLarge => "json_too_large",
            Self::DedotCollision => "dedot_collision",
        }
    }

    /// What the outcome did to the data.
    pub fn effect(self) -> LogOutcomeEffect {
        match self {
            Self::Filtered
            | Self::PipelineRateLimited
            | Self::NamespaceRateLimited
            | Self::RecordTooLarge => LogOutcomeEffect::RecordDropped,
            Self::BodyTruncated | Self::DedotCollision => LogOutcomeEffect::PartLost,
            Self::JsonInvalid | Self::JsonTooDeep | Self::JsonTooLarge => {
                LogOutcomeEffect::NotProcessed
            }
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

impl std::fmt::Display for LogProcessingOutcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How often each [`LogProcessingOutcome`] occurred in one batch: plain numbers, built
/// without atomics on the processing path and added to the stats once per batch.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LogProcessingCounts {
    counts: [u64; LogProcessingOutcome::ALL.len()],
}

impl LogProcessingCounts {
    /// Counts one occurrence of `outcome`.
    pub fn record(&mut self, outcome: LogProcessingOutcome) {
        self.add(outcome, 1);
    }

    /// Counts `n` occurrences of `outcome`, saturating.
    pub fn add(&mut self, outcome: LogProcessingOutcome, n: u64) {
        let count = &mut self.counts[outcome.index()];
        *count = count.saturating_add(n);
    }

    /// Occurrences of `outcome`.
    pub fn get(&self, outcome: LogProcessingOutcome) -> u64 {
        self.counts[outcome.index()]
    }

    /// The outcomes that occurred, with their counts, in [`LogProcessingOutcome::ALL`]
    /// order.
    pub fn iter(&self) -> impl Iterator<Item = (LogProcessingOutcome, u64)> + '_ {
        LogProcessingOutcome::ALL
            .into_iter()
            .map(|outcome| (outcome, self.get(outcome)))
            .filter(|(_, n)| *n > 0)
    }

    /// Records dropped, over every outcome whose effect is
    /// [`LogOutcomeEffect::RecordDropped`].
    pub fn records_dropped(&self) -> u64 {
        self.iter()
            .filter(|(outcome, _)| outcome.effect() == LogOutcomeEffect::RecordDropped)
            .fold(0, |sum, (_, n)| sum.saturating_add(n))
    }

    /// Whether nothing was counted.
    pub fn is_empty(&self) -> bool {
        self.counts.iter().all(|n| *n == 0)
    }

    /// Adds `other`'s counts to these.
    pub fn merge(&mut self, other: &LogProcessingCounts) {
        for (outcome, n) in other.iter() {
            self.add(outcome, n);
        }
    }
}

/// Log processing counters of one pipeline, cumulative since the agent started
/// (`kaas_agent_log_processing_total{pipeline, outcome}`).
#[derive(Debug, Default)]
pub struct LogProcessingStats {
    counts: [AtomicU64; LogProcessingOutcome::ALL.len()],
}

impl LogProcessingStats {
    /// Occurrences of `outcome` so far.
    pub fn total(&self, outcome: LogProcessingOutcome) -> u64 {
        self.counts[outcome.index()].load(Ordering::Relaxed)
    }
}

/// A batch went through a pipeline's log processing: its outcomes are added to the
/// pipeline's [`LogProcessingStats`].
#[derive(Clone, Copy, Debug)]
pub struct LogRecordsProcessed(pub LogProcessingCounts);

impl LogRecordsProcessed {
    /// Adds the batch's counts to `stats`, saturating.
    pub fn emit(self, stats: &LogProcessingStats) {
        let Self(counts) = self;
        for (outcome, n) in counts.iter() {
            // The closure always returns `Some`, so this never fails.
            let _ = stats.counts[outcome.index()].fetch_update(
                Ordering::Relaxed,
                Ordering::Relaxed,
                |value| Some(value.saturating_add(n)),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_outcome_has_its_own_slot_and_label() {
        let mut counts = LogProcessingCounts::default();
        for (i, outcome) in LogProcessingOutcome::ALL.into_iter().enumerate() {
            counts.add(outcome, i as u64 + 1);
        }
        for (i, outcome) in LogProcessingOutcome::ALL.into_iter().enumerate() {
            assert_eq!(counts.get(outcome), i as u64 + 1, "{outcome}");
        }
        let labels: std::collections::BTreeSet<_> = LogProcessingOutcome::ALL
            .into_iter()
            .map(LogProcessingOutcome::as_str)
            .collect();
        assert_eq!(labels.len(), LogProcessingOutcome::ALL.len());
    }

    #[test]
    fn dropped_records_sum_only_the_outcomes_that_drop_a_record() {
        let mut counts = LogProcessingCounts::default();
        counts.add(LogProcessingOutcome::Filtered, 2);
        counts.add(LogProcessingOutcome::NamespaceRateLimited, 3);
        counts.add(LogProcessingOutcome::BodyTruncated, 5);
        counts.add(LogProcessingOutcome::JsonInvalid, 7);
        assert_eq!(counts.records_dropped(), 5);
        assert_eq!(
            counts.iter().collect::<Vec<_>>(),
            vec![
                (LogProcessingOutcome::Filtered, 2),
                (LogProcessingOutcome::NamespaceRateLimited, 3),
                (LogProcessingOutcome::BodyTruncated, 5),
                (LogProcessingOutcome::JsonInvalid, 7),
            ]
        );
    }

    #[test]
    fn batches_add_up_in_the_stats_and_saturate() {
        let stats = LogProcessingStats::default();
        let mut batch = LogProcessingCounts::default();
        batch.add(LogProcessingOutcome::DedotCollision, 4);
        LogRecordsProcessed(batch).emit(&stats);
        LogRecordsProcessed(batch).emit(&stats);
        assert_eq!(stats.total(LogProcessingOutcome::DedotCollision), 8);
        batch.add(LogProcessingOutcome::DedotCollision, u64::MAX);
        LogRecordsProcessed(batch).emit(&stats);
        assert_eq!(stats.total(LogProcessingOutcome::DedotCollision), u64::MAX);
        assert_eq!(stats.total(LogProcessingOutcome::Filtered), 0);
    }

    #[test]
    fn merged_counts_are_the_sum() {
        let mut a = LogProcessingCounts::default();
        a.add(LogProcessingOutcome::JsonTooDeep, 1);
        let mut b = LogProcessingCounts::default();
        b.add(LogProcessingOutcome::JsonTooDeep, 2);
        b.add(LogProcessingOutcome::RecordTooLarge, 1);
        a.merge(&b);
        assert_eq!(a.get(LogProcessingOutcome::JsonTooDeep), 3);
        assert_eq!(a.get(LogProcessingOutcome::RecordTooLarge), 1);
        assert!(!a.is_empty());
        assert!(LogProcessingCounts::default().is_empty());
    }
}
