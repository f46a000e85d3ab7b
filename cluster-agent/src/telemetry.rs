//! The agent's own metrics, read from the running pipelines at scrape time. Names are
//! a contract (dashboards and alerts use them); label values are bounded by the
//! pipelines and targets the agent runs. The table is what `/metrics` registers: the
//! test below compares it with the registry, family by family.
//!
//! Each signal has its own families for what every data path counts ([`DataPathFamilies`]),
//! as the OpenTelemetry Collector names its exporters' counters per signal: metric
//! pipelines count samples (`kaas_agent_pipeline_*`), log pipelines log records
//! (`kaas_agent_log_pipeline_*`), trace pipelines spans (`kaas_agent_trace_pipeline_*`),
//! and pipelines of different kinds with one name never share a series.
//!
//! | metric | labels |
//! |---|---|
//! | `kaas_agent_pipeline_samples_in_total` | pipeline |
//! | `kaas_agent_pipeline_samples_sent_total` | pipeline |
//! | `kaas_agent_pipeline_samples_failed_total` | pipeline |
//! | `kaas_agent_pipeline_samples_dropped_total` | pipeline, reason |
//! | `kaas_agent_pipeline_errors_total` | pipeline, reason (a condition reason, e.g. BackendUnreachable) |
//! | `kaas_agent_pipeline_requests_total` | pipeline |
//! | `kaas_agent_pipeline_send_duration_seconds` (histogram) | pipeline |
//! | `kaas_agent_pipeline_buffer_bytes` | pipeline |
//! | `kaas_agent_pipeline_buffer_max_bytes` | pipeline |
//! | `kaas_agent_buffer_budget_bytes` | |
//! | `kaas_agent_pipeline_buffer_oldest_age_seconds` | pipeline |
//! | `kaas_agent_pipeline_targets` | pipeline, state (up, down) |
//! | `kaas_agent_target_scrape_errors_total` | pipeline, target |
//! | `kaas_agent_log_pipeline_records_in_total` | pipeline |
//! | `kaas_agent_log_pipeline_records_sent_total` | pipeline |
//! | `kaas_agent_log_pipeline_records_failed_total` | pipeline |
//! | `kaas_agent_log_pipeline_records_dropped_total` | pipeline, reason |
//! | `kaas_agent_log_pipeline_errors_total` | pipeline, reason (a condition reason, e.g. BackendUnreachable) |
//! | `kaas_agent_log_pipeline_requests_total` | pipeline |
//! | `kaas_agent_log_pipeline_send_duration_seconds` (histogram) | pipeline |
//! | `kaas_agent_log_pipeline_buffer_bytes` | pipeline |
//! | `kaas_agent_log_pipeline_buffer_max_bytes` | pipeline |
//! | `kaas_agent_log_pipeline_buffer_oldest_age_seconds` | pipeline |
//! | `kaas_agent_trace_pipeline_spans_in_total` | pipeline |
//! | `kaas_agent_trace_pipeline_spans_sent_total` | pipeline |
//! | `kaas_agent_trace_pipeline_spans_failed_total` | pipeline |
//! | `kaas_agent_trace_pipeline_spans_dropped_total` | pipeline, reason |
//! | `kaas_agent_trace_pipeline_errors_total` | pipeline, reason (a condition reason, e.g. BackendUnreachable) |
//! | `kaas_agent_trace_pipeline_requests_total` | pipeline |
//! | `kaas_agent_trace_pipeline_send_duration_seconds` (histogram) | pipeline |
//! | `kaas_agent_trace_pipeline_buffer_bytes` | pipeline |
//! | `kaas_agent_trace_pipeline_buffer_max_bytes` | pipeline |
//! | `kaas_agent_trace_pipeline_buffer_oldest_age_seconds` | pipeline |
//! | `kaas_agent_log_processing_total` | pipeline, outcome (filtered, body_truncated, json_invalid, ...) |
//! | `kaas_agent_log_input_files_open` | input (files) |
//! | `kaas_agent_log_input_files_tracked` | input (files) |
//! | `kaas_agent_log_input_bytes_read_total` | input (files) |
//! | `kaas_agent_log_input_records_total` | input (files, journal) |
//! | `kaas_agent_log_input_events_total` | input, event (truncation, rotation, oversize_record, read_error, ...) |
//! | `kaas_agent_log_input_consumers` | input |
//! | `kaas_agent_log_input_consumer_lag_batches` | input, pipeline |
//! | `kaas_agent_log_input_consumer_detached` | input, pipeline |
//! | `kaas_agent_log_input_consumer_detachments_total` | input, pipeline |
//! | `kaas_agent_push_samples_received_total` | |
//! | `kaas_agent_push_samples_unrouted_total` | |
//! | `kaas_agent_push_malformed_requests_total` | |
//! | `kaas_agent_push_requests_refused_total` | protocol (remote_write, otlp, otlp_logs), reason |
//! | `kaas_agent_push_spans_enrichment_total` | outcome (enriched, not_matched, other_namespace) |
//! | `kaas_agent_push_log_records_enrichment_total` | outcome (enriched, not_matched, other_namespace) |
//! | `kaas_agent_node_certificates_issued_total` | |
//! | `kaas_agent_node_certificate_requests_refused_total` | reason (malformed, unauthenticated, forbidden, too_large, too_soon, unavailable) |
//! | `kaas_agent_config_reloads_total` | result (success, failure) |
//! | `kaas_agent_config_last_reload_successful` | |
//! | `kaas_self_telemetry_export_failures_total` (with `--otlp-endpoint`) | signal |
//! | `kaas_self_telemetry_spans_dropped_total` (with `--otlp-endpoint`) | |
//! | `kaas_self_telemetry_logs_dropped_total` (with `--otlp-endpoint`) | |

use std::sync::Arc;
use std::sync::atomic::Ordering;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Registry;
use tokio::sync::RwLock;

use crate::internal_events::{
    DropReason, EnrichedSignal, InputSnapshot, LogInputStats, LogProcessingOutcome, PushStats,
    ReloadState,
};
use crate::pipeline::data_path::DataPath;
use crate::pipeline::logs::LogPipelines;
use crate::pipeline::runtime::{Pipelines, RunningPipeline};
use crate::pipeline::traces::TracePipelines;

/// Reads the pipelines at scrape time.
#[derive(Debug)]
pub struct AgentCollector {
    pipelines: Arc<RwLock<Pipelines>>,
    log_pipelines: Arc<RwLock<LogPipelines>>,
    trace_pipelines: Arc<RwLock<TracePipelines>>,
    log_inputs: Arc<LogInputStats>,
    reloads: Arc<ReloadState>,
    push: Arc<PushStats>,
    buffer_budget: u64,
}

/// A registry holding the agent's collector; `buffer_budget` is what all pipelines'
/// buffers may use together, `log_inputs` what the node's log inputs read.
pub fn registry(
    pipelines: Arc<RwLock<Pipelines>>,
    log_pipelines: Arc<RwLock<LogPipelines>>,
    trace_pipelines: Arc<RwLock<TracePipelines>>,
    log_inputs: Arc<LogInputStats>,
    reloads: Arc<ReloadState>,
    push: Arc<PushStats>,
    buffer_budget: u64,
) -> Registry {
    let mut registry = Registry::default();
    registry.register_collector(Box::new(AgentCollector {
        pipelines,
        log_pipelines,
        trace_pipelines,
        log_inputs,
        reloads,
        push,
        buffer_budget,
    }));
    registry
}

/// One metric family of the collector: its name as registered (the exposition adds
/// `_total` to counters), its help, its type, and its label names in the order a
/// row gives their values.
struct Family {
    name: &'static str,
    help: &'static str,
    kind: MetricType,
    labels: &'static [&'static str],
}

/// Label values (in the order of [`Family::labels`]) and a value.
type Row<V> = (Vec<String>, V);

impl Family {
    const fn new(
        name: &'static str,
        help: &'static str,
        kind: MetricType,
        labels: &'static [&'static str],
    ) -> Self {
        Self {
            name,
            help,
            kind,
            labels,
        }
    }

    fn label_set<'v>(&self, values: &'v [String]) -> Vec<(&'static str, &'v str)> {
        self.labels
            .iter()
            .copied()
            .zip(values.iter().map(String::as_str))
            .collect()
    }

    fn counters(&self, encoder: &mut DescriptorEncoder, rows: &[Row<u64>]) -> std::fmt::Result {
        let mut metric = encoder.encode_descriptor(self.name, self.help, None, self.kind)?;
        for (values, value) in rows {
            if self.labels.is_empty() {
                // A label set of its own would print as `name{}`.
                return ConstCounter::new(*value).encode(metric);
            }
            ConstCounter::new(*value).encode(metric.encode_family(&self.label_set(values))?)?;
        }
        Ok(())
    }

    fn gauges(&self, encoder: &mut DescriptorEncoder, rows: &[Row<f64>]) -> std::fmt::Result {
        let mut metric = encoder.encode_descriptor(self.name, self.help, None, self.kind)?;
        for (values, value) in rows {
            if self.labels.is_empty() {
                return ConstGauge::new(*value).encode(metric);
            }
            ConstGauge::new(*value).encode(metric.encode_family(&self.label_set(values))?)?;
        }
        Ok(())
    }
}

const CONFIG_RELOADS: Family = Family::new(
    "kaas_agent_config_reloads",
    "Configuration reloads by result.",
    MetricType::Counter,
    &["result"],
);
const BUFFER_BUDGET: Family = Family::new(
    "kaas_agent_buffer_budget_bytes",
    "Bytes the buffers of all pipelines may use together (--buffer-budget).",
    MetricType::Gauge,
    &[],
);
const LAST_RELOAD_SUCCESSFUL: Family = Family::new(
    "kaas_agent_config_last_reload_successful",
    "Whether the last configuration reload succeeded.",
    MetricType::Gauge,
    &[],
);
const PUSH_RECEIVED: Family = Family::new(
    "kaas_agent_push_samples_received",
    "Samples pushed to the agent.",
    MetricType::Counter,
    &[],
);
const PUSH_UNROUTED: Family = Family::new(
    "kaas_agent_push_samples_unrouted",
    "Pushed samples no pipeline took.",
    MetricType::Counter,
    &[],
);
const PUSH_MALFORMED: Family = Family::new(
    "kaas_agent_push_malformed_requests",
    "Push requests refused as malformed.",
    MetricType::Counter,
    &[],
);
const PUSH_REFUSED: Family = Family::new(
    "kaas_agent_push_requests_refused",
    "Push requests refused before reaching a pipeline, by protocol and reason.",
    MetricType::Counter,
    &["protocol", "reason"],
);
const PUSH_SPANS_ENRICHMENT: Family = Family::new(
    "kaas_agent_push_spans_enrichment",
    "Pushed spans looked up in the pod cache by the sender's address, by outcome.",
    MetricType::Counter,
    &["outcome"],
);
const PUSH_LOG_RECORDS_ENRICHMENT: Family = Family::new(
    "kaas_agent_push_log_records_enrichment",
    "Pushed log records looked up in the pod cache by the sender's address, by outcome.",
    MetricType::Counter,
    &["outcome"],
);
const NODE_CERTIFICATES_ISSUED: Family = Family::new(
    "kaas_agent_node_certificates_issued",
    "Node agents' certificates the cluster-level instance obtained from the observer for them.",
    MetricType::Counter,
    &[],
);
const NODE_CERTIFICATES_REFUSED: Family = Family::new(
    "kaas_agent_node_certificate_requests_refused",
    "Node certificate requests refused, by reason.",
    MetricType::Counter,
    &["reason"],
);
/// The families every data path fills ([`crate::pipeline::data_path`]), for one signal.
struct DataPathFamilies {
    items_in: Family,
    sent: Family,
    failed: Family,
    dropped: Family,
    errors: Family,
    requests: Family,
    send_duration: Family,
    bytes: Family,
    max_bytes: Family,
    age: Family,
}

const METRIC_FAMILIES: DataPathFamilies = DataPathFamilies {
    items_in: Family::new(
        "kaas_agent_pipeline_samples_in",
        "Samples accepted into the pipeline's buffer.",
        MetricType::Counter,
        &["pipeline"],
    ),
    sent: Family::new(
        "kaas_agent_pipeline_samples_sent",
        "Samples the backend acknowledged.",
        MetricType::Counter,
        &["pipeline"],
    ),
    failed: Family::new(
        "kaas_agent_pipeline_samples_failed",
        "Samples in failed send attempts that will be retried.",
        MetricType::Counter,
        &["pipeline"],
    ),
    dropped: Family::new(
        "kaas_agent_pipeline_samples_dropped",
        "Samples given up on, by reason.",
        MetricType::Counter,
        &["pipeline", "reason"],
    ),
    errors: Family::new(
        "kaas_agent_pipeline_errors",
        "Collection and delivery errors, by condition reason (e.g. BackendUnreachable, SecretMissing).",
        MetricType::Counter,
        &["pipeline", "reason"],
    ),
    requests: Family::new(
        "kaas_agent_pipeline_requests",
        "Requests sent to the backend.",
        MetricType::Counter,
        &["pipeline"],
    ),
    send_duration: Family::new(
        "kaas_agent_pipeline_send_duration_seconds",
        "How long requests to the backend take.",
        MetricType::Histogram,
        &["pipeline"],
    ),
    bytes: Family::new(
        "kaas_agent_pipeline_buffer_bytes",
        "Bytes in the pipeline's disk buffer.",
        MetricType::Gauge,
        &["pipeline"],
    ),
    max_bytes: Family::new(
        "kaas_agent_pipeline_buffer_max_bytes",
        "The byte bound of the pipeline's disk buffer: spec.buffer.maxBytes, or less when the agent's buffer budget is shared.",
        MetricType::Gauge,
        &["pipeline"],
    ),
    age: Family::new(
        "kaas_agent_pipeline_buffer_oldest_age_seconds",
        "Age of the oldest undelivered buffered data.",
        MetricType::Gauge,
        &["pipeline"],
    ),
};

const LOG_FAMILIES: DataPathFamilies = DataPathFamilies {
    items_in: Family::new(
        "kaas_agent_log_pipeline_records_in",
        "Log records accepted into the log pipeline's buffer (after its processing).",
        MetricType::Counter,
        &["pipeline"],
    ),
    sent: Family::new(
        "kaas_agent_log_pipeline_records_sent",
        "Log records the backend acknowledged.",
        MetricType::Counter,
        &["pipeline"],
    ),
    failed: Family::new(
        "kaas_agent_log_pipeline_records_failed",
        "Log records in failed send attempts that will be retried.",
        MetricType::Counter,
        &["pipeline"],
    ),
    dropped: Family::new(
        "kaas_agent_log_pipeline_records_dropped",
        "Log records given up on after processing, by reason.",
        MetricType::Counter,
        &["pipeline", "reason"],
    ),
    errors: Family::new(
        "kaas_agent_log_pipeline_errors",
        "Log collection and delivery errors, by condition reason (e.g. BackendUnreachable, BufferFull).",
        MetricType::Counter,
        &["pipeline", "reason"],
    ),
    requests: Family::new(
        "kaas_agent_log_pipeline_requests",
        "Requests sent to the log backend.",
        MetricType::Counter,
        &["pipeline"],
    ),
    send_duration: Family::new(
        "kaas_agent_log_pipeline_send_duration_seconds",
        "How long requests to the log backend take.",
        MetricType::Histogram,
        &["pipeline"],
    ),
    bytes: Family::new(
        "kaas_agent_log_pipeline_buffer_bytes",
        "Bytes in the log pipeline's disk buffer.",
        MetricType::Gauge,
        &["pipeline"],
    ),
    max_bytes: Family::new(
        "kaas_agent_log_pipeline_buffer_max_bytes",
        "The byte bound of the log pipeline's disk buffer: spec.buffer.maxBytes, or less when the agent's buffer budget is shared.",
        MetricType::Gauge,
        &["pipeline"],
    ),
    age: Family::new(
        "kaas_agent_log_pipeline_buffer_oldest_age_seconds",
        "Age of the oldest undelivered buffered log records.",
        MetricType::Gauge,
        &["pipeline"],
    ),
};

const TRACE_FAMILIES: DataPathFamilies = DataPathFamilies {
    items_in: Family::new(
        "kaas_agent_trace_pipeline_spans_in",
        "Spans accepted into the trace pipeline's buffer (after its sampling and processing).",
        MetricType::Counter,
        &["pipeline"],
    ),
    sent: Family::new(
        "kaas_agent_trace_pipeline_spans_sent",
        "Spans the backend acknowledged.",
        MetricType::Counter,
        &["pipeline"],
    ),
    failed: Family::new(
        "kaas_agent_trace_pipeline_spans_failed",
        "Spans in failed send attempts that will be retried.",
        MetricType::Counter,
        &["pipeline"],
    ),
    dropped: Family::new(
        "kaas_agent_trace_pipeline_spans_dropped",
        "Spans given up on after processing, by reason.",
        MetricType::Counter,
        &["pipeline", "reason"],
    ),
    errors: Family::new(
        "kaas_agent_trace_pipeline_errors",
        "Span delivery errors, by condition reason (e.g. BackendUnreachable, BufferFull).",
        MetricType::Counter,
        &["pipeline", "reason"],
    ),
    requests: Family::new(
        "kaas_agent_trace_pipeline_requests",
        "Requests sent to the trace backend.",
        MetricType::Counter,
        &["pipeline"],
    ),
    send_duration: Family::new(
        "kaas_agent_trace_pipeline_send_duration_seconds",
        "How long requests to the trace backend take.",
        MetricType::Histogram,
        &["pipeline"],
    ),
    bytes: Family::new(
        "kaas_agent_trace_pipeline_buffer_bytes",
        "Bytes in the trace pipeline's disk buffer.",
        MetricType::Gauge,
        &["pipeline"],
    ),
    max_bytes: Family::new(
        "kaas_agent_trace_pipeline_buffer_max_bytes",
        "The byte bound of the trace pipeline's disk buffer: spec.buffer.maxBytes, or less when the agent's buffer budget is shared.",
        MetricType::Gauge,
        &["pipeline"],
    ),
    age: Family::new(
        "kaas_agent_trace_pipeline_buffer_oldest_age_seconds",
        "Age of the oldest undelivered buffered spans.",
        MetricType::Gauge,
        &["pipeline"],
    ),
};

const LOG_PROCESSING: Family = Family::new(
    "kaas_agent_log_processing",
    "What log processing did to records, by outcome: dropped (filtered, rate limited, too large), cut (body_truncated, dedot_collision) or left unparsed (json_*).",
    MetricType::Counter,
    &["pipeline", "outcome"],
);
const TARGETS: Family = Family::new(
    "kaas_agent_pipeline_targets",
    "Scrape targets by the outcome of their last scrape.",
    MetricType::Gauge,
    &["pipeline", "state"],
);
const TARGET_SCRAPE_ERRORS: Family = Family::new(
    "kaas_agent_target_scrape_errors",
    "Failed scrapes per target.",
    MetricType::Counter,
    &["pipeline", "target"],
);

const LOG_INPUT_FILES_OPEN: Family = Family::new(
    "kaas_agent_log_input_files_open",
    "Descriptors the node's file tailer holds open (bounded by its open-descriptor limit).",
    MetricType::Gauge,
    &["input"],
);
const LOG_INPUT_FILES_TRACKED: Family = Family::new(
    "kaas_agent_log_input_files_tracked",
    "Files the node's file tailer follows, rotated ones not yet read to their end included.",
    MetricType::Gauge,
    &["input"],
);
const LOG_INPUT_BYTES_READ: Family = Family::new(
    "kaas_agent_log_input_bytes_read",
    "Bytes of log files the node's file tailer read.",
    MetricType::Counter,
    &["input"],
);
const LOG_INPUT_RECORDS: Family = Family::new(
    "kaas_agent_log_input_records",
    "Records a node log input read: lines of files, entries of the journal.",
    MetricType::Counter,
    &["input"],
);
const LOG_INPUT_EVENTS: Family = Family::new(
    "kaas_agent_log_input_events",
    "What a node log input noticed, cut or skipped, by event: truncation, rotation, lost_file, eviction, read_error, oversize_record, invalid_utf8, unparsed_line (files); read_error, oversize_entry (journal).",
    MetricType::Counter,
    &["input", "event"],
);
const LOG_INPUT_CONSUMERS: Family = Family::new(
    "kaas_agent_log_input_consumers",
    "Log pipelines a node log input's fan-out feeds.",
    MetricType::Gauge,
    &["input"],
);
const LOG_INPUT_CONSUMER_LAG: Family = Family::new(
    "kaas_agent_log_input_consumer_lag_batches",
    "Batches a node log input offered a log pipeline that it has not acknowledged (durable or dropped) yet.",
    MetricType::Gauge,
    &["input", "pipeline"],
);
const LOG_INPUT_CONSUMER_DETACHED: Family = Family::new(
    "kaas_agent_log_input_consumer_detached",
    "1 while a log pipeline reads a node log input on a lane of its own because it fell behind the others.",
    MetricType::Gauge,
    &["input", "pipeline"],
);
const LOG_INPUT_CONSUMER_DETACHMENTS: Family = Family::new(
    "kaas_agent_log_input_consumer_detachments",
    "Times a log pipeline fell behind a node log input's shared reader and was detached.",
    MetricType::Counter,
    &["input", "pipeline"],
);

/// The node log inputs' families, from their last published snapshot.
fn encode_log_inputs(
    encoder: &mut DescriptorEncoder,
    inputs: &[InputSnapshot],
) -> std::fmt::Result {
    let input = |snapshot: &InputSnapshot| vec![snapshot.input.to_owned()];
    let files: Vec<&InputSnapshot> = inputs.iter().filter(|i| i.input == "files").collect();
    let gauge = |value: u64| value as f64;
    LOG_INPUT_FILES_OPEN.gauges(
        encoder,
        &files
            .iter()
            .map(|i| (input(i), gauge(i.files_open)))
            .collect::<Vec<_>>(),
    )?;
    LOG_INPUT_FILES_TRACKED.gauges(
        encoder,
        &files
            .iter()
            .map(|i| (input(i), gauge(i.files_tracked)))
            .collect::<Vec<_>>(),
    )?;
    LOG_INPUT_BYTES_READ.counters(
        encoder,
        &files
            .iter()
            .map(|i| (input(i), i.bytes_read))
            .collect::<Vec<_>>(),
    )?;
    LOG_INPUT_RECORDS.counters(
        encoder,
        &inputs
            .iter()
            .map(|i| (input(i), i.records))
            .collect::<Vec<_>>(),
    )?;
    let mut events = Vec::new();
    let (mut consumers, mut lag, mut detached, mut detachments) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for snapshot in inputs {
        for (event, n) in &snapshot.events {
            events.push((vec![snapshot.input.to_owned(), (*event).to_owned()], *n));
        }
        consumers.push((input(snapshot), snapshot.consumers.len() as f64));
        for consumer in &snapshot.consumers {
            let labels = || vec![snapshot.input.to_owned(), consumer.pipeline.clone()];
            lag.push((labels(), gauge(consumer.outstanding_batches)));
            detached.push((labels(), f64::from(u8::from(consumer.detached))));
            detachments.push((labels(), consumer.detachments));
        }
    }
    LOG_INPUT_EVENTS.counters(encoder, &events)?;
    LOG_INPUT_CONSUMERS.gauges(encoder, &consumers)?;
    LOG_INPUT_CONSUMER_LAG.gauges(encoder, &lag)?;
    LOG_INPUT_CONSUMER_DETACHED.gauges(encoder, &detached)?;
    LOG_INPUT_CONSUMER_DETACHMENTS.counters(encoder, &detachments)
}

/// The drop reasons as their label values, in the order they are reported.
const DROP_REASONS: [(&str, DropReason); 5] = [
    ("buffer_full", DropReason::BufferFull),
    ("max_age_exceeded", DropReason::MaxAgeExceeded),
    ("rejected_by_backend", DropReason::RejectedByBackend),
    ("corrupt", DropReason::Corrupt),
    ("buffer_write_failed", DropReason::BufferWriteFailed),
];

/// The rows of one signal's data-path families, gathered in one pass over its
/// pipelines.
#[derive(Default)]
struct DataPathRows {
    items_in: Vec<Row<u64>>,
    sent: Vec<Row<u64>>,
    failed: Vec<Row<u64>>,
    dropped: Vec<Row<u64>>,
    errors: Vec<Row<u64>>,
    requests: Vec<Row<u64>>,
    bytes: Vec<Row<f64>>,
    max_bytes: Vec<Row<f64>>,
    age: Vec<Row<f64>>,
}

impl DataPathRows {
    fn add(&mut self, name: &str, path: &DataPath, now_ms: i64) {
        let label = || vec![name.to_owned()];
        let with = |value: &str| vec![name.to_owned(), value.to_owned()];
        let stats = &path.stats;
        self.items_in
            .push((label(), stats.samples_in.load(Ordering::Relaxed)));
        self.sent
            .push((label(), stats.samples_sent.load(Ordering::Relaxed)));
        self.failed
            .push((label(), stats.samples_failed.load(Ordering::Relaxed)));
        self.requests
            .push((label(), stats.requests.load(Ordering::Relaxed)));
        for (reason, n) in stats.errors_by_reason() {
            self.errors.push((with(reason.as_str()), n));
        }
        for (reason, kind) in DROP_REASONS {
            self.dropped.push((with(reason), stats.dropped_total(kind)));
        }
        self.max_bytes
            .push((label(), path.buffer_grant.max_bytes as f64));
        if let Some((bytes, age)) = path.buffer_state(now_ms) {
            self.bytes.push((label(), bytes as f64));
            self.age.push((label(), age));
        }
    }

    fn encode<'p>(
        &self,
        families: &DataPathFamilies,
        encoder: &mut DescriptorEncoder,
        paths: impl Iterator<Item = (&'p String, &'p DataPath)>,
    ) -> std::fmt::Result {
        families.items_in.counters(encoder, &self.items_in)?;
        families.sent.counters(encoder, &self.sent)?;
        families.failed.counters(encoder, &self.failed)?;
        families.dropped.counters(encoder, &self.dropped)?;
        families.errors.counters(encoder, &self.errors)?;
        families.requests.counters(encoder, &self.requests)?;
        {
            let family = &families.send_duration;
            let mut metric =
                encoder.encode_descriptor(family.name, family.help, None, family.kind)?;
            for (name, path) in paths {
                let values = [name.clone()];
                let labels = family.label_set(&values);
                path.stats
                    .send_latency
                    .0
                    .encode(metric.encode_family(&labels)?)?;
            }
        }
        families.bytes.gauges(encoder, &self.bytes)?;
        families.max_bytes.gauges(encoder, &self.max_bytes)?;
        families.age.gauges(encoder, &self.age)
    }
}

/// The scrape targets' rows of one scrape.
#[derive(Default)]
struct TargetRows {
    targets: Vec<Row<f64>>,
    scrape_errors: Vec<Row<u64>>,
}

impl TargetRows {
    fn add(&mut self, name: &str, pipeline: &RunningPipeline) {
        let with = |value: &str| vec![name.to_owned(), value.to_owned()];
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
            self.scrape_errors
                .push((with(target.labels.get("instance")), health.scrape_errors));
        }
        self.targets.push((with("up"), f64::from(up)));
        self.targets.push((with("down"), f64::from(down)));
    }

    fn encode(&self, encoder: &mut DescriptorEncoder) -> std::fmt::Result {
        TARGETS.gauges(encoder, &self.targets)?;
        TARGET_SCRAPE_ERRORS.counters(encoder, &self.scrape_errors)
    }
}

/// The metric pipelines' families.
fn encode_metric_pipelines(
    encoder: &mut DescriptorEncoder,
    pipelines: &Pipelines,
    now_ms: i64,
) -> std::fmt::Result {
    let mut rows = DataPathRows::default();
    let mut targets = TargetRows::default();
    for (name, pipeline) in pipelines {
        rows.add(name, &pipeline.data_path, now_ms);
        targets.add(name, pipeline);
    }
    let paths = pipelines.iter().map(|(n, p)| (n, &p.data_path));
    rows.encode(&METRIC_FAMILIES, encoder, paths)?;
    targets.encode(encoder)
}

/// The trace pipelines' families.
fn encode_trace_pipelines(
    encoder: &mut DescriptorEncoder,
    pipelines: &TracePipelines,
    now_ms: i64,
) -> std::fmt::Result {
    let mut rows = DataPathRows::default();
    for (name, pipeline) in pipelines {
        rows.add(name, &pipeline.data_path, now_ms);
    }
    let paths = pipelines.iter().map(|(n, p)| (n, &p.data_path));
    rows.encode(&TRACE_FAMILIES, encoder, paths)
}

/// The log pipelines' families.
fn encode_log_pipelines(
    encoder: &mut DescriptorEncoder,
    pipelines: &LogPipelines,
    now_ms: i64,
) -> std::fmt::Result {
    let mut rows = DataPathRows::default();
    let mut processing = Vec::new();
    for (name, pipeline) in pipelines {
        rows.add(name, &pipeline.data_path, now_ms);
        for outcome in LogProcessingOutcome::ALL {
            let values = vec![name.clone(), outcome.as_str().to_owned()];
            processing.push((values, pipeline.intake.processing.total(outcome)));
        }
    }
    let paths = pipelines.iter().map(|(n, p)| (n, &p.data_path));
    rows.encode(&LOG_FAMILIES, encoder, paths)?;
    LOG_PROCESSING.counters(encoder, &processing)
}

impl AgentCollector {
    /// The families that do not depend on a pipeline: reloads, the budget, pushes.
    fn encode_agent(&self, encoder: &mut DescriptorEncoder) -> std::fmt::Result {
        let reloads = &self.reloads;
        CONFIG_RELOADS.counters(
            encoder,
            &[
                (
                    vec!["success".into()],
                    reloads.successes.load(Ordering::Relaxed),
                ),
                (
                    vec!["failure".into()],
                    reloads.failures.load(Ordering::Relaxed),
                ),
            ],
        )?;
        BUFFER_BUDGET.gauges(encoder, &[(vec![], self.buffer_budget as f64)])?;
        let last = reloads.last_successful.load(Ordering::Relaxed);
        LAST_RELOAD_SUCCESSFUL.gauges(encoder, &[(vec![], f64::from(u8::from(last)))])?;
        for (family, value) in [
            (&PUSH_RECEIVED, self.push.received()),
            (&PUSH_UNROUTED, self.push.unrouted()),
            (&PUSH_MALFORMED, self.push.malformed_requests()),
        ] {
            family.counters(encoder, &[(vec![], value)])?;
        }
        let refused: Vec<Row<u64>> = self
            .push
            .refused()
            .into_iter()
            .map(|((protocol, reason), n)| (vec![protocol.to_owned(), reason.to_owned()], n))
            .collect();
        PUSH_REFUSED.counters(encoder, &refused)?;
        for (family, signal) in [
            (&PUSH_SPANS_ENRICHMENT, EnrichedSignal::Spans),
            (&PUSH_LOG_RECORDS_ENRICHMENT, EnrichedSignal::LogRecords),
        ] {
            let enrichment: Vec<Row<u64>> = (self.push.enrichment(signal).into_iter())
                .map(|(outcome, n)| (vec![outcome.to_owned()], n))
                .collect();
            family.counters(encoder, &enrichment)?;
        }
        NODE_CERTIFICATES_ISSUED
            .counters(encoder, &[(vec![], self.push.node_certificates_issued())])?;
        let refused: Vec<Row<u64>> = self
            .push
            .node_certificates_refused()
            .into_iter()
            .map(|(reason, n)| (vec![reason.to_owned()], n))
            .collect();
        NODE_CERTIFICATES_REFUSED.counters(encoder, &refused)
    }
}

impl Collector for AgentCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        self.encode_agent(&mut encoder)?;
        // A pipeline change in progress holds a lock; report its kind next scrape.
        let now_ms = kaas_series::clock::now_ms();
        if let Ok(pipelines) = self.pipelines.try_read() {
            encode_metric_pipelines(&mut encoder, &pipelines, now_ms)?;
        }
        if let Ok(pipelines) = self.log_pipelines.try_read() {
            encode_log_pipelines(&mut encoder, &pipelines, now_ms)?;
        }
        if let Ok(pipelines) = self.trace_pipelines.try_read() {
            encode_trace_pipelines(&mut encoder, &pipelines, now_ms)?;
        }
        encode_log_inputs(&mut encoder, &self.log_inputs.snapshot())
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    /// Every family the collector encodes, for their label names.
    fn families() -> Vec<&'static Family> {
        let mut families = vec![
            &CONFIG_RELOADS,
            &BUFFER_BUDGET,
            &LAST_RELOAD_SUCCESSFUL,
            &PUSH_RECEIVED,
            &PUSH_UNROUTED,
            &PUSH_MALFORMED,
            &PUSH_REFUSED,
            &PUSH_SPANS_ENRICHMENT,
            &PUSH_LOG_RECORDS_ENRICHMENT,
            &NODE_CERTIFICATES_ISSUED,
            &NODE_CERTIFICATES_REFUSED,
            &TARGETS,
            &TARGET_SCRAPE_ERRORS,
            &LOG_PROCESSING,
            &LOG_INPUT_FILES_OPEN,
            &LOG_INPUT_FILES_TRACKED,
            &LOG_INPUT_BYTES_READ,
            &LOG_INPUT_RECORDS,
            &LOG_INPUT_EVENTS,
            &LOG_INPUT_CONSUMERS,
            &LOG_INPUT_CONSUMER_LAG,
            &LOG_INPUT_CONSUMER_DETACHED,
            &LOG_INPUT_CONSUMER_DETACHMENTS,
        ];
        for signal in [&METRIC_FAMILIES, &LOG_FAMILIES, &TRACE_FAMILIES] {
            families.extend([
                &signal.items_in,
                &signal.sent,
                &signal.failed,
                &signal.dropped,
                &signal.errors,
                &signal.requests,
                &signal.send_duration,
                &signal.bytes,
                &signal.max_bytes,
                &signal.age,
            ]);
        }
        families
    }

    /// The exposition name of a family: counters gain `_total`.
    fn exposed(name: &str, kind: &str) -> String {
        match kind {
            "counter" => format!("{name}_total"),
            _ => name.to_owned(),
        }
    }

    /// The module doc's table: metric name → label names (value lists in parentheses
    /// and remarks after the names left out).
    fn documented() -> BTreeMap<String, Vec<String>> {
        let mut table = BTreeMap::new();
        for line in include_str!("telemetry.rs").lines() {
            let Some(row) = line.strip_prefix("//! | `") else {
                continue;
            };
            let (name, rest) = row.split_once('`').expect("a closing backtick");
            let labels = rest.rsplit_once(" | ").map_or("", |(_, l)| l);
            let mut bare = String::new();
            let mut depth = 0;
            for c in labels.trim().trim_end_matches('|').chars() {
                match c {
                    '(' => depth += 1,
                    ')' => depth -= 1,
                    _ if depth == 0 => bare.push(c),
                    _ => {}
                }
            }
            let labels = bare
                .split(',')
                .map(str::trim)
                .filter(|l| !l.is_empty())
                .map(str::to_owned)
                .collect();
            table.insert(name.to_owned(), labels);
        }
        table
    }

    /// What `/metrics` registers with self-telemetry on: family names from `# TYPE`.
    fn registered() -> Vec<String> {
        let flags = kaas_self_telemetry::OtlpFlags {
            otlp_endpoint: Some("http://127.0.0.1:4317".into()),
            otlp_push_interval: kaas_self_telemetry::settings::DEFAULT_PUSH_INTERVAL.into(),
            ..kaas_self_telemetry::OtlpFlags::default()
        };
        let service = kaas_self_telemetry::Service {
            name: "kaas-cluster-agent",
            version: "test",
        };
        let telemetry = kaas_self_telemetry::SelfTelemetry::new(&flags, service).unwrap();
        let mut registry = registry(
            Arc::new(RwLock::new(Pipelines::new())),
            Arc::new(RwLock::new(LogPipelines::new())),
            Arc::new(RwLock::new(TracePipelines::new())),
            Arc::new(LogInputStats::default()),
            Arc::new(ReloadState::default()),
            Arc::new(PushStats::default()),
            1 << 30,
        );
        telemetry.register(&mut registry);
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        text.lines()
            .filter_map(|line| line.strip_prefix("# TYPE "))
            .map(|rest| {
                let (name, kind) = rest.split_once(' ').unwrap();
                exposed(name, kind)
            })
            .collect()
    }

    /// A labelled counter prometheus-client leaves out of the exposition until it has
    /// a series: the first failed OTLP export creates one.
    const SHOWN_ONCE_COUNTED: &str = "kaas_self_telemetry_export_failures_total";

    #[test]
    fn the_metric_table_lists_exactly_what_is_registered() {
        let table = documented();
        let mut registered = registered();
        assert!(!registered.iter().any(|name| name == SHOWN_ONCE_COUNTED));
        registered.push(SHOWN_ONCE_COUNTED.to_owned());
        let listed: Vec<&String> = table.keys().collect();
        let mut sorted: Vec<&String> = registered.iter().collect();
        sorted.sort();
        assert_eq!(
            listed, sorted,
            "the module doc's table (left) and the registry (right) differ"
        );
        assert_eq!(
            registered.len(),
            table.len(),
            "a family is registered twice"
        );
    }

    #[test]
    fn the_metric_table_names_each_familys_labels() {
        let table = documented();
        for family in families() {
            let name = exposed(family.name, family.kind.as_str());
            let labels = table
                .get(&name)
                .unwrap_or_else(|| panic!("{name} is not in the table"));
            assert_eq!(*labels, family.labels, "the labels of {name}");
        }
    }
}
