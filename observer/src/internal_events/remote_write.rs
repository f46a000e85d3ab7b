//! The fleet writer's event and the counters it owns: [`SeriesWritten`], one round of
//! fleet and probe series remote-written to the central receiver, and how it ended.

use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

/// How a round ended.
#[derive(Debug)]
pub enum WriteOutcome {
    /// 2xx.
    Delivered,
    /// 5xx, 429 or no answer: written again next round.
    Failed(String),
    /// Another 4xx (or a request that could not be encoded, status 0): refused for good.
    Refused(u16, String),
}

impl WriteOutcome {
    /// The `result` label value.
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Delivered => "success",
            Self::Failed(_) => "failure",
            Self::Refused(..) => "dropped",
        }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabels {
    result: &'static str,
}

/// The writer's metrics (names in `docs/metrics.md`).
#[derive(Debug, Default)]
pub struct RemoteWriteMetrics {
    samples: Family<ResultLabels, Counter>,
    last_success: Gauge<f64, AtomicU64>,
}

impl RemoteWriteMetrics {
    /// Registers the metrics (counters get their `_total` suffix there).
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "kaas_observer_remote_write_samples",
            "Fleet and probe samples remote-written to the central receiver, by result (success, failure: written again next round, dropped: refused by the receiver).",
            self.samples.clone(),
        );
        registry.register(
            "kaas_observer_remote_write_last_success_timestamp_seconds",
            "When this replica last remote-wrote successfully, Unix seconds; 0 if it never did.",
            self.last_success.clone(),
        );
    }
}

/// A round of series was written: its samples counted by result, the last success's
/// time set, and logged (a failure as a warning, a refusal as an error, since the
/// receiver will refuse the same content again).
#[derive(Debug)]
pub struct SeriesWritten<'a> {
    /// How it ended.
    pub outcome: &'a WriteOutcome,
    /// Samples the round held.
    pub samples: u64,
    /// When it was sent, Unix milliseconds.
    pub at_ms: i64,
}

impl SeriesWritten<'_> {
    /// Counts and logs the round in `metrics`.
    pub fn emit(self, metrics: &RemoteWriteMetrics) {
        let samples = self.samples;
        match self.outcome {
            WriteOutcome::Delivered => {
                // Milliseconds fit an f64 exactly for the next few hundred thousand years.
                metrics.last_success.set(self.at_ms as f64 / 1000.0);
                tracing::debug!(samples, "series written");
            }
            WriteOutcome::Failed(reason) => {
                tracing::warn!(samples, %reason, "remote-writing the fleet and probe series failed; writing again next round");
            }
            WriteOutcome::Refused(status, body) => {
                tracing::error!(samples, status, %body, "the receiver refused the fleet and probe series; dropped");
            }
        }
        metrics
            .samples
            .get_or_create(&ResultLabels {
                result: self.outcome.as_str(),
            })
            .inc_by(samples);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rounds_count_their_samples_by_result_and_only_deliveries_move_the_last_success() {
        let metrics = RemoteWriteMetrics::default();
        let mut registry = Registry::default();
        metrics.register(&mut registry);
        SeriesWritten {
            outcome: &WriteOutcome::Delivered,
            samples: 3,
            at_ms: 5_000,
        }
        .emit(&metrics);
        SeriesWritten {
            outcome: &WriteOutcome::Failed("down".into()),
            samples: 4,
            at_ms: 9_000,
        }
        .emit(&metrics);
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        for line in [
            r#"kaas_observer_remote_write_samples_total{result="success"} 3"#,
            r#"kaas_observer_remote_write_samples_total{result="failure"} 4"#,
            "kaas_observer_remote_write_last_success_timestamp_seconds 5.0",
        ] {
            assert!(text.contains(line), "{line} in {text}");
        }
    }
}
