//! How one target is scraped: interval, timeout, Prometheus' `honor_*` settings, the
//! limits (defaults in [`super::limits`]) and the agent's own credentials.

use std::num::{NonZeroU32, NonZeroU64};
use std::time::Duration;

use kaas_pipeline::processors::ValidatedLimits;

use super::limits::{
    DEFAULT_BODY_SIZE_LIMIT, DEFAULT_LABEL_LIMIT, DEFAULT_LABEL_NAME_LENGTH_LIMIT,
    DEFAULT_LABEL_VALUE_LENGTH_LIMIT, DEFAULT_SAMPLE_LIMIT,
};

/// How one target is scraped.
#[derive(Clone, Debug)]
pub struct ScrapeConfig {
    /// Interval.
    pub interval: Duration,
    /// Timeout.
    pub timeout: Duration,
    /// Prometheus `honor_labels`.
    pub honor_labels: bool,
    /// Prometheus `honor_timestamps`.
    pub honor_timestamps: bool,
    /// Largest body accepted.
    pub body_size_limit: NonZeroU64,
    /// Most samples written per scrape, after metric relabeling.
    pub sample_limit: NonZeroU32,
    /// Most labels per series.
    pub label_limit: NonZeroU32,
    /// The agent's own credentials, bound to the target discovery produced.
    pub credentials: Option<super::credentials::ScrapeCredentials>,
    /// Longest label name.
    pub label_name_length_limit: NonZeroU32,
    /// Longest label value.
    pub label_value_length_limit: NonZeroU32,
}

impl ScrapeConfig {
    /// Prometheus' defaults for a scrape every `interval` within `timeout`:
    /// `honor_timestamps` on, `honor_labels` off, no bearer token; and the agent's
    /// default limits (body size, samples, labels), which Prometheus leaves unlimited.
    pub fn new(interval: Duration, timeout: Duration) -> Self {
        Self {
            interval,
            timeout,
            honor_labels: false,
            honor_timestamps: true,
            body_size_limit: DEFAULT_BODY_SIZE_LIMIT,
            sample_limit: DEFAULT_SAMPLE_LIMIT,
            label_limit: DEFAULT_LABEL_LIMIT,
            credentials: None,
            label_name_length_limit: DEFAULT_LABEL_NAME_LENGTH_LIMIT,
            label_value_length_limit: DEFAULT_LABEL_VALUE_LENGTH_LIMIT,
        }
    }
}

impl ScrapeConfig {
    /// These settings with the limits a pipeline (or a raw scrape job) sets; every
    /// limit it leaves unset (or 0, which Prometheus reads as "no limit") keeps the
    /// agent's default, so no target gets the agent's memory without a bound.
    pub fn limited_by(self, limits: ValidatedLimits) -> Self {
        Self {
            sample_limit: limits.sample_limit.unwrap_or(DEFAULT_SAMPLE_LIMIT),
            label_limit: limits.label_limit.unwrap_or(DEFAULT_LABEL_LIMIT),
            label_name_length_limit: limits
                .label_name_length_limit
                .unwrap_or(DEFAULT_LABEL_NAME_LENGTH_LIMIT),
            label_value_length_limit: limits
                .label_value_length_limit
                .unwrap_or(DEFAULT_LABEL_VALUE_LENGTH_LIMIT),
            ..self
        }
    }
}
