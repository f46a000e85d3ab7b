//! The agent's notable events, in vector's `internal_events` style: each event is one
//! type whose `emit` counts it with bounded labels, names its condition reason
//! (`kaas_pipeline::status::reasons`) and logs it, so a call site is one line and what
//! `/metrics` shows ([`crate::telemetry`]) cannot drift from what is logged. The events
//! own the counters they add to; the telemetry collector only reads them.
//!
//! | event | counts | reason |
//! |---|---|---|
//! | [`ConfigLoaded`] | `kaas_agent_config_last_reload_successful` = 1 (a first load is no reload) | `Applied` |
//! | [`ConfigReloaded`] | `kaas_agent_config_reloads_total{result="success"}`, the gauge = 1 | `Applied` |
//! | [`ConfigRefused`] | `kaas_agent_config_reloads_total{result="failure"}`, the gauge = 0 | `ConfigRejected` |
//! | [`PipelineFailed`] | `kaas_agent_pipeline_errors_total{pipeline, reason}`, the health report's last error | [`ErrorReason::condition`] |
//! | [`SamplesDropped`], [`BufferDropped`] | `kaas_agent_pipeline_samples_dropped_total{pipeline, reason}`, the health report's drops | `DataDropped` |
//! | [`PushRefused`] | `kaas_agent_push_refused_total{protocol, reason}` (and `kaas_agent_push_malformed_requests_total`) | none: the pusher is told |
//! | [`PushRouted`] | `kaas_agent_push_samples_received_total`, `kaas_agent_push_samples_unrouted_total` | none |
//! | [`PushEnriched`] | `kaas_agent_push_spans_enrichment_total{outcome}`, `kaas_agent_push_log_records_enrichment_total{outcome}` | none |
//! | [`NodeCertificateIssued`] | `kaas_agent_node_certificates_issued_total` | none |
//! | [`NodeCertificateRefused`] | `kaas_agent_node_certificate_requests_refused_total{reason}` | none: the node agent is told |
//! | [`LogRecordsProcessed`] | `kaas_agent_log_processing_total{pipeline, outcome}` ([`LogProcessingOutcome`]) | none: counted, not logged |
//! | [`LogInputStats::publish`] | `kaas_agent_log_input_*{input}` (files open, bytes and records read, events) and `kaas_agent_log_input_consumer_*{input, pipeline}` (lag, detached) | none: a snapshot per round |
//!
//! The reload events log a debug line naming the event, its labels and its reason; the
//! operator-facing line with the detail (the refused fields, the file's error) stays
//! where that detail is. [`PipelineFailed`] is the operator-facing line of a pipeline's
//! errors itself (a warning, rate-limited per error).
//!
//! This module is a leaf of the agent's map: it uses nothing of the agent, so every
//! stage of the data path, the control stream and `/metrics` may use it.

mod log_inputs;
mod logs;
mod pipeline;
mod push;
mod reload;

pub use log_inputs::{ConsumerLag, FILE_EVENTS, InputSnapshot, JOURNAL_EVENTS, LogInputStats};
pub use logs::{
    LogOutcomeEffect, LogProcessingCounts, LogProcessingOutcome, LogProcessingStats,
    LogRecordsProcessed,
};
pub use pipeline::{
    BufferDropped, DropReason, ERROR_LOG_INTERVAL, ErrorReason, LastError, PipelineFailed,
    PipelineRecovered, PipelineStats, SamplesDropped, SendLatency,
};
pub use push::{
    EnrichedSignal, EnrichmentOutcome, NodeCertificateIssued, NodeCertificateRefused, PushEnriched,
    PushRefused, PushRouted, PushStats,
};
pub use reload::{ConfigLoaded, ConfigRefused, ConfigReloaded, ConfigSource, ReloadState};
