//! A pipeline's events and the counters they own: [`PipelineFailed`] (an error with
//! its [`ErrorReason`]) and [`SamplesDropped`] (samples given up on, with their
//! [`DropReason`]) are the only ways to count a pipeline's errors and drops, so every
//! one is counted, remembered for the health report and logged alike. The counters are
//! cumulative since the agent started, as the control contract and Prometheus counters
//! expect; health reports (`control::health`) and `/metrics` (`telemetry`) read them.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::SystemTime;

use kaas_pipeline::status::Reason;

/// Why a pipeline failed, as the agent reports it (the `reason` of its health report's
/// last error and the `reason` label of `kaas_agent_pipeline_errors_total`): a fixed set,
/// so the label stays bounded. The observer shows each as the condition reason
/// [`ErrorReason::condition`]: the reasons the product's vocabulary names
/// (`kaas_pipeline::status::Reason`) as themselves, the agent's finer ones as
/// `FlowInterrupted` with the agent's reason in the message.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ErrorReason {
    /// The backend could not be reached, or answered 429 or 5xx.
    BackendUnreachable,
    /// The backend refused data for good; it was dropped.
    DataDropped,
    /// A referenced Secret, key or credentials file does not exist.
    SecretMissing,
    /// A referenced Secret key holds a value the agent refuses (a bound URL a pipeline
    /// may not send to).
    SecretInvalid,
    /// Credentials could not be turned into a request (a bad header value, an OAuth2
    /// token endpoint failing, a client certificate that does not load).
    AuthenticationFailed,
    /// The buffer is full: new or old samples were dropped.
    BufferFull,
    /// A buffered record could not be decoded and was dropped.
    BufferCorrupt,
    /// The buffer could not be read.
    BufferError,
    /// The buffer could not store data (a full or failing volume).
    BufferWriteFailed,
    /// The pipeline runs with a smaller buffer than its `maxBytes`.
    BufferBudgetExceeded,
    /// Kubelet access cannot be set up (no CA, no token).
    KubeletAccessUnavailable,
    /// A kubelet's serving certificate is not signed by the cluster CA.
    KubeletCertificateUntrusted,
    /// A static target scraped with the agent's credentials (a control-plane
    /// component) serves a certificate the cluster CA did not sign.
    TargetCertificateUntrusted,
    /// An input needs the Kubernetes API, which this agent has no access to.
    KubernetesUnavailable,
    /// A target carrying the agent's credentials was moved by relabeling.
    TargetSealed,
    /// A send task failed unexpectedly; the data is kept and sent again.
    InternalError,
    /// A log input of the pipeline is not read on this node: it cannot open (no
    /// journal directory, say; tried again), or the node already reads container logs
    /// with as many distinct multiline/`startAt` settings as it may. Also: a raw scrape
    /// job's target file cannot be read, or its targets exceed its `target_limit`.
    InputNotRead,
}

impl ErrorReason {
    /// Every reason.
    pub const ALL: [ErrorReason; 17] = [
        Self::BackendUnreachable,
        Self::DataDropped,
        Self::SecretMissing,
        Self::SecretInvalid,
        Self::AuthenticationFailed,
        Self::BufferFull,
        Self::BufferCorrupt,
        Self::BufferError,
        Self::BufferWriteFailed,
        Self::BufferBudgetExceeded,
        Self::KubeletAccessUnavailable,
        Self::KubeletCertificateUntrusted,
        Self::TargetCertificateUntrusted,
        Self::KubernetesUnavailable,
        Self::TargetSealed,
        Self::InternalError,
        Self::InputNotRead,
    ];

    /// The reason as reported and counted.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::BackendUnreachable => "BackendUnreachable",
            Self::DataDropped => "DataDropped",
            Self::SecretMissing => "SecretMissing",
            Self::SecretInvalid => "SecretInvalid",
            Self::AuthenticationFailed => "AuthenticationFailed",
            Self::BufferFull => "BufferFull",
            Self::BufferCorrupt => "BufferCorrupt",
            Self::BufferError => "BufferError",
            Self::BufferWriteFailed => "BufferWriteFailed",
            Self::BufferBudgetExceeded => "BufferBudgetExceeded",
            Self::KubeletAccessUnavailable => "KubeletAccessUnavailable",
            Self::KubeletCertificateUntrusted => "KubeletCertificateUntrusted",
            Self::TargetCertificateUntrusted => "TargetCertificateUntrusted",
            Self::KubernetesUnavailable => "KubernetesUnavailable",
            Self::TargetSealed => "TargetSealed",
            Self::InternalError => "InternalError",
            Self::InputNotRead => "InputNotRead",
        }
    }

    /// The condition reason the observer shows for this error: the product's own where
    /// it names the same thing, else `FlowInterrupted`.
    pub fn condition(self) -> Reason {
        match self {
            Self::BackendUnreachable => Reason::BackendUnreachable,
            Self::DataDropped => Reason::DataDropped,
            Self::SecretMissing => Reason::SecretMissing,
            Self::SecretInvalid => Reason::SecretInvalid,
            Self::BufferWriteFailed => Reason::BufferWriteFailed,
            Self::BufferBudgetExceeded => Reason::BufferBudgetExceeded,
            Self::KubeletCertificateUntrusted => Reason::KubeletCertificateUntrusted,
            Self::TargetSealed => Reason::TargetSealed,
            Self::AuthenticationFailed
            | Self::BufferFull
            | Self::BufferCorrupt
            | Self::BufferError
            | Self::KubeletAccessUnavailable
            | Self::TargetCertificateUntrusted
            | Self::KubernetesUnavailable
            | Self::InternalError
            | Self::InputNotRead => Reason::FlowInterrupted,
        }
    }
}

impl std::fmt::Display for ErrorReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A pipeline failed: counted by reason in
/// `kaas_agent_pipeline_errors_total{pipeline, reason}`, remembered as the pipeline's
/// last error for its health report, and logged as a warning (the same error at most
/// every [`ERROR_LOG_INTERVAL`]). The message never contains a secret.
#[derive(Clone, Debug)]
pub struct PipelineFailed {
    /// Why.
    pub reason: ErrorReason,
    /// What happened, for the operator.
    pub message: String,
}

impl PipelineFailed {
    /// An error for `reason` saying `message`.
    pub fn new(reason: ErrorReason, message: impl Into<String>) -> Self {
        Self {
            reason,
            message: message.into(),
        }
    }

    /// Counts, remembers and logs the error in `stats`.
    pub fn emit(self, stats: &PipelineStats) {
        stats.error(self.reason, self.message);
    }
}

/// A pipeline's error that no longer holds (a log input that could not open reads
/// now): withdrawn as the pipeline's last error if it still is, so its health report
/// stops showing it, and logged. The error's count stays.
#[derive(Clone, Copy, Debug)]
pub struct PipelineRecovered {
    /// The reason that no longer holds.
    pub reason: ErrorReason,
}

impl PipelineRecovered {
    /// `reason` no longer holds.
    pub fn new(reason: ErrorReason) -> Self {
        Self { reason }
    }

    /// Withdraws the error from `stats` and logs it.
    pub fn emit(self, stats: &PipelineStats) {
        if stats.withdraw_error(self.reason) {
            tracing::info!(pipeline = %stats.pipeline, reason = %self.reason, "pipeline error no longer holds");
        }
    }
}

/// Samples a pipeline gave up on: counted in
/// `kaas_agent_pipeline_samples_dropped_total{pipeline, reason}`. Drops are counted, not
/// logged: the error that caused them ([`PipelineFailed`]) is logged where it happens,
/// and drops the buffer makes on its own (age, corruption) are in the health report.
#[derive(Clone, Copy, Debug)]
pub struct SamplesDropped {
    /// Why.
    pub reason: DropReason,
    /// How many samples.
    pub samples: u64,
}

impl SamplesDropped {
    /// Counts the drop in `stats`.
    pub fn emit(self, stats: &PipelineStats) {
        stats.dropped(self.reason, self.samples);
    }
}

/// What the disk buffer gave up on by itself while it was written or read (room made
/// for new records, records past their age, damaged records): each part counted as
/// [`SamplesDropped`] with its reason.
#[derive(Clone, Debug)]
pub struct BufferDropped(pub kaas_buffer::Dropped);

impl BufferDropped {
    /// Counts each part in `stats`.
    pub fn emit(self, stats: &PipelineStats) {
        let Self(dropped) = self;
        for (reason, samples) in [
            (DropReason::BufferFull, dropped.full),
            (DropReason::MaxAgeExceeded, dropped.expired),
            (DropReason::Corrupt, dropped.corrupt),
        ] {
            stats.dropped(reason, samples);
        }
    }
}

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
    /// Why.
    pub reason: ErrorReason,
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
    /// Every error occurrence, by reason.
    errors: Mutex<std::collections::BTreeMap<ErrorReason, u64>>,
}

impl PipelineStats {
    /// Counts dropped samples ([`SamplesDropped`]).
    fn dropped(&self, reason: DropReason, samples: u64) {
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
    /// [`ERROR_LOG_INTERVAL`] ([`PipelineFailed`]).
    fn error(&self, reason: ErrorReason, message: String) {
        let error = LastError {
            at: SystemTime::now(),
            reason,
            message,
        };
        {
            let mut errors = self.errors.lock().unwrap_or_else(|e| e.into_inner());
            let count = errors.entry(error.reason).or_default();
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

    /// Forgets the last error if its reason is `reason`; says whether it did.
    fn withdraw_error(&self, reason: ErrorReason) -> bool {
        let mut last = self.last_error.lock().unwrap_or_else(|e| e.into_inner());
        let withdrawn = last.as_ref().is_some_and(|error| error.reason == reason);
        if withdrawn {
            *last = None;
        }
        withdrawn
    }

    /// How often each reason occurred so far.
    pub fn errors_by_reason(&self) -> Vec<(ErrorReason, u64)> {
        self.errors
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .map(|(reason, n)| (*reason, *n))
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

#[cfg(test)]
mod tests {
    use super::*;

    /// The condition the observer derives from a reported reason (the agent errors of
    /// the vocabulary as themselves, `FlowInterrupted` for the rest) is the one
    /// [`ErrorReason::condition`] documents, for every reason.
    #[test]
    fn each_reason_names_the_condition_the_observer_shows() {
        for reason in ErrorReason::ALL {
            let shown = Reason::parse(reason.as_str())
                .filter(|reason| reason.is_agent_error())
                .unwrap_or(Reason::FlowInterrupted);
            assert_eq!(reason.condition(), shown, "{reason}");
        }
    }

    #[test]
    fn a_failure_is_counted_remembered_and_repeated_failures_counted_once_each() {
        let stats = PipelineStats::named("p");
        PipelineFailed::new(ErrorReason::BackendUnreachable, "down").emit(&stats);
        PipelineFailed::new(ErrorReason::BackendUnreachable, "down").emit(&stats);
        PipelineFailed::new(ErrorReason::BufferFull, "full").emit(&stats);
        assert_eq!(
            stats.errors_by_reason(),
            vec![
                (ErrorReason::BackendUnreachable, 2),
                (ErrorReason::BufferFull, 1)
            ]
        );
        let last = stats.last_error().unwrap();
        assert_eq!(
            (last.reason, last.message.as_str()),
            (ErrorReason::BufferFull, "full")
        );
    }

    #[test]
    fn drops_are_counted_by_reason() {
        let stats = PipelineStats::named("p");
        SamplesDropped {
            reason: DropReason::Corrupt,
            samples: 3,
        }
        .emit(&stats);
        SamplesDropped {
            reason: DropReason::Corrupt,
            samples: u64::MAX,
        }
        .emit(&stats);
        assert_eq!(
            stats.dropped_total(DropReason::Corrupt),
            u64::MAX,
            "saturates"
        );
        assert_eq!(stats.dropped_total(DropReason::BufferFull), 0);
    }
}
