//! A pipeline's counters. Cumulative since the agent started, as the control contract
//! and Prometheus counters expect; read by health reports and `/metrics`.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::SystemTime;

/// Why samples were given up on; mirrors the contract's `DropReason`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DropReason {
    /// The buffer was full.
    BufferFull,
    /// Older than the buffer's maximum age.
    MaxAgeExceeded,
    /// The backend refused them for good.
    RejectedByBackend,
    /// A buffered record could not be decoded.
    Corrupt,
    /// The buffer could not write them (a full or failing disk).
    BufferWriteFailed,
}

/// The most recent error.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LastError {
    /// When.
    pub at: SystemTime,
    /// A condition reason such as `BackendUnreachable`.
    pub reason: String,
    /// Details; never contains a secret.
    pub message: String,
}

/// The same error is logged at most this often; every occurrence is still counted.
pub const ERROR_LOG_INTERVAL: std::time::Duration = std::time::Duration::from_secs(30);

/// How long requests to the backend take, in seconds: 5 ms to about 10 s in doubling
/// buckets, which separates a local receiver, a remote one, and one that is struggling.
#[derive(Debug)]
pub struct SendLatency(pub prometheus_client::metrics::histogram::Histogram);

impl Default for SendLatency {
    fn default() -> Self {
        Self(prometheus_client::metrics::histogram::Histogram::new(
            prometheus_client::metrics::histogram::exponential_buckets(0.005, 2.0, 12),
        ))
    }
}

/// Counters of one pipeline.
#[derive(Debug, Default)]
pub struct PipelineStats {
    /// The pipeline's name, for log lines.
    pub pipeline: String,
    /// Samples accepted into the buffer.
    pub samples_in: AtomicU64,
    /// Samples the backend acknowledged.
    pub samples_sent: AtomicU64,
    /// Send attempts that failed and will be retried, counted in samples.
    pub samples_failed: AtomicU64,
    dropped_buffer_full: AtomicU64,
    dropped_max_age: AtomicU64,
    dropped_rejected: AtomicU64,
    dropped_corrupt: AtomicU64,
    dropped_write_failed: AtomicU64,
    /// Requests sent, successful or not.
    pub requests: AtomicU64,
    /// Duration of each request, successful or not.
    pub send_latency: SendLatency,
    last_error: Mutex<Option<LastError>>,
    /// Every error occurrence, by reason (a small fixed set of condition reasons, so
    /// the label stays bounded).
    errors: Mutex<std::collections::BTreeMap<String, u64>>,
}

impl PipelineStats {
    /// Counts dropped samples.
    pub fn dropped(&self, reason: DropReason, samples: u64) {
        let counter = match reason {
            DropReason::BufferFull => &self.dropped_buffer_full,
            DropReason::MaxAgeExceeded => &self.dropped_max_age,
            DropReason::RejectedByBackend => &self.dropped_rejected,
            DropReason::Corrupt => &self.dropped_corrupt,
            DropReason::BufferWriteFailed => &self.dropped_write_failed,
        };
        Self::add(counter, samples);
    }

    /// Samples dropped for `reason` so far.
    pub fn dropped_total(&self, reason: DropReason) -> u64 {
        match reason {
            DropReason::BufferFull => &self.dropped_buffer_full,
            DropReason::MaxAgeExceeded => &self.dropped_max_age,
            DropReason::RejectedByBackend => &self.dropped_rejected,
            DropReason::Corrupt => &self.dropped_corrupt,
            DropReason::BufferWriteFailed => &self.dropped_write_failed,
        }
        .load(Ordering::Relaxed)
    }

    /// Counters for the pipeline `name`.
    pub fn named(name: &str) -> Self {
        Self {
            pipeline: name.to_owned(),
            ..Self::default()
        }
    }

    /// Remembers an error and logs it, unless the same error was logged within
    /// [`ERROR_LOG_INTERVAL`]. This is the one place pipeline errors are reported.
    pub fn error(&self, reason: &str, message: impl Into<String>) {
        let error = LastError {
            at: SystemTime::now(),
            reason: reason.to_owned(),
            message: message.into(),
        };
        {
            let mut errors = self.errors.lock().unwrap_or_else(|e| e.into_inner());
            let count = errors.entry(error.reason.clone()).or_default();
            *count = count.saturating_add(1);
        }
        let mut last = self.last_error.lock().unwrap_or_else(|e| e.into_inner());
        let repeat = last.as_ref().is_some_and(|previous| {
            previous.reason == error.reason
                && previous.message == error.message
                && error.at.duration_since(previous.at).unwrap_or_default() < ERROR_LOG_INTERVAL
        });
        if repeat {
            // Keep the first occurrence's time so the interval is measured from it.
            return;
        }
        tracing::warn!(pipeline = %self.pipeline, reason = %error.reason, message = %error.message, "pipeline error");
        *last = Some(error);
    }

    /// How often each reason occurred so far.
    pub fn errors_by_reason(&self) -> Vec<(String, u64)> {
        self.errors
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .map(|(reason, n)| (reason.clone(), *n))
            .collect()
    }

    /// The most recent error.
    pub fn last_error(&self) -> Option<LastError> {
        self.last_error
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Adds to a counter, saturating: amounts can come from pushed data or a backend's
    /// answer, and a counter that wrapped to a small value would read as a reset.
    pub fn add(counter: &AtomicU64, n: u64) {
        // The closure always returns `Some`, so this never fails.
        let _ = counter.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |value| {
            Some(value.saturating_add(n))
        });
    }
}
