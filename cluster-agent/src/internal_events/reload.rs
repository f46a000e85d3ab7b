//! Configuration loads and reloads, from the file, the observer or the last-known-good
//! copy: what readiness and the reload metrics read.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use kaas_pipeline::status::reasons::{APPLIED, CONFIG_REJECTED};

/// Outcomes of configuration reloads.
#[derive(Debug, Default)]
pub struct ReloadState {
    /// Whether a configuration has been applied (readiness).
    pub applied: AtomicBool,
    /// Whether the agent is draining before it stops: not ready, whatever it applied.
    pub draining: AtomicBool,
    /// Successful reloads.
    pub successes: AtomicU64,
    /// Refused reloads.
    pub failures: AtomicU64,
    /// Whether the last reload succeeded.
    pub last_successful: AtomicBool,
}

/// Where a configuration came from: a bounded label of the events' log lines.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConfigSource {
    /// The configuration file (standalone mode).
    File,
    /// The observer's control stream.
    Observer,
    /// The last-known-good copy on disk, applied before the observer answers.
    LastKnownGood,
}

impl ConfigSource {
    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::File => "file",
            Self::Observer => "observer",
            Self::LastKnownGood => "last_known_good",
        }
    }
}

/// The first configuration of a run was applied: not a reload, but the last one
/// succeeded.
#[derive(Clone, Copy, Debug)]
pub struct ConfigLoaded(
    /// Where it came from.
    pub ConfigSource,
);

impl ConfigLoaded {
    /// Records the event in `reloads` and logs it.
    pub fn emit(self, reloads: &ReloadState) {
        reloads.last_successful.store(true, Ordering::Relaxed);
        tracing::debug!(
            source = self.0.as_str(),
            reason = APPLIED,
            "configuration loaded"
        );
    }
}

/// A new configuration replaced the running one.
#[derive(Clone, Copy, Debug)]
pub struct ConfigReloaded(
    /// Where it came from.
    pub ConfigSource,
);

impl ConfigReloaded {
    /// Counts a successful reload in `reloads` and logs it.
    pub fn emit(self, reloads: &ReloadState) {
        reloads.successes.fetch_add(1, Ordering::Relaxed);
        reloads.last_successful.store(true, Ordering::Relaxed);
        tracing::debug!(
            source = self.0.as_str(),
            reason = APPLIED,
            "configuration reloaded"
        );
    }
}

/// A new configuration was refused; the running one stays.
#[derive(Clone, Copy, Debug)]
pub struct ConfigRefused(
    /// Where it came from.
    pub ConfigSource,
);

impl ConfigRefused {
    /// Counts a refused reload in `reloads` and logs it.
    pub fn emit(self, reloads: &ReloadState) {
        reloads.failures.fetch_add(1, Ordering::Relaxed);
        reloads.last_successful.store(false, Ordering::Relaxed);
        tracing::debug!(
            source = self.0.as_str(),
            reason = CONFIG_REJECTED,
            "configuration refused"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reloads_count_by_result_and_the_last_one_decides_the_gauge() {
        let reloads = ReloadState::default();
        ConfigLoaded(ConfigSource::LastKnownGood).emit(&reloads);
        assert!(reloads.last_successful.load(Ordering::Relaxed));
        assert_eq!(
            reloads.successes.load(Ordering::Relaxed),
            0,
            "a load is no reload"
        );
        ConfigRefused(ConfigSource::Observer).emit(&reloads);
        assert!(!reloads.last_successful.load(Ordering::Relaxed));
        ConfigReloaded(ConfigSource::File).emit(&reloads);
        assert!(reloads.last_successful.load(Ordering::Relaxed));
        assert_eq!(reloads.successes.load(Ordering::Relaxed), 1);
        assert_eq!(reloads.failures.load(Ordering::Relaxed), 1);
    }
}
