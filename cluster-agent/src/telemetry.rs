//! The agent's own metrics, read from the running pipelines at scrape time. Names are
//! a contract (dashboards and alerts use them); label values are bounded by the
//! pipelines and targets the agent runs.
//!
//! | metric | labels |
//! |---|---|
//! | `kaas_agent_pipeline_samples_in_total` | pipeline |
//! | `kaas_agent_pipeline_samples_sent_total` | pipeline |
//! | `kaas_agent_pipeline_samples_failed_total` | pipeline |
//! | `kaas_agent_pipeline_samples_dropped_total` | pipeline, reason |
//! | `kaas_agent_pipeline_requests_total` | pipeline |
//! | `kaas_agent_pipeline_send_duration_seconds` (histogram) | pipeline |
//! | `kaas_agent_pipeline_buffer_bytes` | pipeline |
//! | `kaas_agent_pipeline_buffer_max_bytes` | pipeline |
//! | `kaas_agent_buffer_budget_bytes` | |
//! | `kaas_agent_pipeline_buffer_oldest_age_seconds` | pipeline |
//! | `kaas_agent_pipeline_targets` | pipeline, state (up, down) |
//! | `kaas_agent_target_scrape_errors_total` | pipeline, instance |
//! | `kaas_agent_push_samples_received_total` | |
//! | `kaas_agent_push_samples_unrouted_total` | |
//! | `kaas_agent_push_malformed_requests_total` | |
//! | `kaas_agent_push_requests_refused_total` | protocol (remote_write, otlp), reason |
//! | `kaas_agent_config_reloads_total` | result (success, failure) |
//! | `kaas_agent_config_last_reload_successful` | |

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Registry;
use tokio::sync::RwLock;

use crate::pipeline::runtime::Pipelines;
use crate::push::PushStats;
use crate::topology::stats::DropReason;

/// Outcomes of configuration reloads.
#[derive(Debug, Default)]
pub struct ReloadState {
    /// Whether a configuration has been applied (readiness).
    pub applied: AtomicBool,
    /// Successful reloads.
    pub successes: AtomicU64,
    /// Refused reloads.
    pub failures: AtomicU64,
    /// Whether the last reload succeeded.
    pub last_successful: AtomicBool,
}

/// Reads the pipelines at scrape time.
#[derive(Debug)]
pub struct AgentCollector {
    pipelines: Arc<RwLock<Pipelines>>,
    reloads: Arc<ReloadState>,
    push: Arc<PushStats>,
    buffer_budget: u64,
}

/// A registry holding the agent's collector; `buffer_budget` is what all pipelines'
/// buffers may use together.
pub fn registry(
    pipelines: Arc<RwLock<Pipelines>>,
    reloads: Arc<ReloadState>,
    push: Arc<PushStats>,
    buffer_budget: u64,
) -> Registry {
    let mut registry = Registry::default();
    registry.register_collector(Box::new(AgentCollector {
        pipelines,
        reloads,
        push,
        buffer_budget,
    }));
    registry
}

fn counter(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    rows: &[(Vec<(&str, String)>, u64)],
) -> Result<(), std::fmt::Error> {
    let mut metric = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
    for (labels, value) in rows {
        ConstCounter::new(*value).encode(metric.encode_family(labels)?)?;
    }
    Ok(())
}

fn gauge(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    rows: &[(Vec<(&str, String)>, f64)],
) -> Result<(), std::fmt::Error> {
    let mut metric = encoder.encode_descriptor(name, help, None, MetricType::Gauge)?;
    for (labels, value) in rows {
        if labels.is_empty() {
            // A label set of its own would print as `name{}`.
            return ConstGauge::new(*value).encode(metric);
        }
        ConstGauge::new(*value).encode(metric.encode_family(labels)?)?;
    }
    Ok(())
}

impl Collector for AgentCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let reloads = &self.reloads;
        counter(
            &mut encoder,
            "kaas_agent_config_reloads",
            "Configuration reloads by result.",
            &[
                (
                    vec![("result", "success".into())],
                    reloads.successes.load(Ordering::Relaxed),
                ),
                (
                    vec![("result", "failure".into())],
                    reloads.failures.load(Ordering::Relaxed),
                ),
            ],
        )?;
        gauge(
            &mut encoder,
            "kaas_agent_buffer_budget_bytes",
            "Bytes the buffers of all pipelines may use together (--buffer-budget).",
            &[(vec![], self.buffer_budget as f64)],
        )?;
        gauge(
            &mut encoder,
            "kaas_agent_config_last_reload_successful",
            "Whether the last configuration reload succeeded.",
            &[(
                vec![],
                f64::from(u8::from(reloads.last_successful.load(Ordering::Relaxed))),
            )],
        )?;
        for (name, help, value) in [
            (
                "kaas_agent_push_samples_received",
                "Samples pushed to the agent.",
                &self.push.received,
            ),
            (
                "kaas_agent_push_samples_unrouted",
                "Pushed samples no pipeline took.",
                &self.push.unrouted,
            ),
            (
                "kaas_agent_push_malformed_requests",
                "Push requests refused as malformed.",
                &self.push.malformed_requests,
            ),
        ] {
            let metric = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
            ConstCounter::new(value.load(Ordering::Relaxed)).encode(metric)?;
        }
        let refused: Vec<(Vec<(&str, String)>, u64)> = self
            .push
            .refused()
            .into_iter()
            .map(|((protocol, reason), n)| {
                (
                    vec![
                        ("protocol", protocol.to_owned()),
                        ("reason", reason.to_owned()),
                    ],
                    n,
                )
            })
            .collect();
        counter(
            &mut encoder,
            "kaas_agent_push_requests_refused",
            "Push requests refused before reaching a pipeline, by protocol and reason.",
            &refused,
        )?;
        // A pipeline change in progress holds the lock; report pipelines next scrape.
        let Ok(pipelines) = self.pipelines.try_read() else {
            return Ok(());
        };
        let now_ms = kaas_series::clock::now_ms();
        let mut samples_in = Vec::new();
        let mut sent = Vec::new();
        let mut failed = Vec::new();
        let mut dropped = Vec::new();
        let mut requests = Vec::new();
        let mut bytes = Vec::new();
        let mut max_bytes = Vec::new();
        let mut age = Vec::new();
        let mut targets = Vec::new();
        let mut scrape_errors = Vec::new();
        let mut errors = Vec::new();
        for (name, pipeline) in pipelines.iter() {
            let label = || vec![("pipeline", name.clone())];
            let stats = &pipeline.stats;
            samples_in.push((label(), stats.samples_in.load(Ordering::Relaxed)));
            sent.push((label(), stats.samples_sent.load(Ordering::Relaxed)));
            failed.push((label(), stats.samples_failed.load(Ordering::Relaxed)));
            requests.push((label(), stats.requests.load(Ordering::Relaxed)));
            for (reason, n) in stats.errors_by_reason() {
                errors.push((vec![("pipeline", name.clone()), ("reason", reason)], n));
            }
            for (reason, kind) in [
                ("buffer_full", DropReason::BufferFull),
                ("max_age_exceeded", DropReason::MaxAgeExceeded),
                ("rejected_by_backend", DropReason::RejectedByBackend),
                ("corrupt", DropReason::Corrupt),
                ("buffer_write_failed", DropReason::BufferWriteFailed),
            ] {
                dropped.push((
                    vec![("pipeline", name.clone()), ("reason", reason.to_owned())],
                    stats.dropped_total(kind),
                ));
            }
            max_bytes.push((label(), pipeline.buffer_grant.max_bytes as f64));
            if let Ok(buffer) = pipeline.buffer.try_lock() {
                bytes.push((label(), buffer.bytes() as f64));
                let oldest = buffer
                    .oldest_timestamp_ms()
                    .map_or(0.0, |ts| (now_ms.saturating_sub(ts)) as f64 / 1000.0);
                age.push((label(), oldest));
            }
            let (mut up, mut down) = (0u32, 0u32);
            for target in &pipeline.target_states() {
                let health = target
                    .health
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .clone();
                if health.up {
                    up += 1;
                } else if health.last_scrape.is_some() {
                    down += 1;
                }
                scrape_errors.push((
                    vec![
                        ("pipeline", name.clone()),
                        ("target", target.labels.get("instance").to_owned()),
                    ],
                    health.scrape_errors,
                ));
            }
            targets.push((
                vec![("pipeline", name.clone()), ("state", "up".into())],
                f64::from(up),
            ));
            targets.push((
                vec![("pipeline", name.clone()), ("state", "down".into())],
                f64::from(down),
            ));
        }
        counter(
            &mut encoder,
            "kaas_agent_pipeline_samples_in",
            "Samples accepted into the pipeline's buffer.",
            &samples_in,
        )?;
        counter(
            &mut encoder,
            "kaas_agent_pipeline_samples_sent",
            "Samples the backend acknowledged.",
            &sent,
        )?;
        counter(
            &mut encoder,
            "kaas_agent_pipeline_samples_failed",
            "Samples in failed send attempts that will be retried.",
            &failed,
        )?;
        counter(
            &mut encoder,
            "kaas_agent_pipeline_samples_dropped",
            "Samples given up on, by reason.",
            &dropped,
        )?;
        counter(
            &mut encoder,
            "kaas_agent_pipeline_errors",
            "Collection and delivery errors, by condition reason (e.g. BackendUnreachable, SecretMissing).",
            &errors,
        )?;
        counter(
            &mut encoder,
            "kaas_agent_pipeline_requests",
            "Requests sent to the backend.",
            &requests,
        )?;
        {
            let mut metric = encoder.encode_descriptor(
                "kaas_agent_pipeline_send_duration_seconds",
                "How long requests to the backend take.",
                None,
                MetricType::Histogram,
            )?;
            for (name, pipeline) in pipelines.iter() {
                let labels = vec![("pipeline", name.clone())];
                pipeline
                    .stats
                    .send_latency
                    .0
                    .encode(metric.encode_family(&labels)?)?;
            }
        }
        gauge(
            &mut encoder,
            "kaas_agent_pipeline_buffer_bytes",
            "Bytes in the pipeline's disk buffer.",
            &bytes,
        )?;
        gauge(
            &mut encoder,
            "kaas_agent_pipeline_buffer_max_bytes",
            "The byte bound of the pipeline's disk buffer: spec.buffer.maxBytes, or less when the agent's buffer budget is shared.",
            &max_bytes,
        )?;
        gauge(
            &mut encoder,
            "kaas_agent_pipeline_buffer_oldest_age_seconds",
            "Age of the oldest undelivered buffered data.",
            &age,
        )?;
        gauge(
            &mut encoder,
            "kaas_agent_pipeline_targets",
            "Scrape targets by the outcome of their last scrape.",
            &targets,
        )?;
        counter(
            &mut encoder,
            "kaas_agent_target_scrape_errors",
            "Failed scrapes per target.",
            &scrape_errors,
        )?;
        Ok(())
    }
}
