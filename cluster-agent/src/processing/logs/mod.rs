//! What happens to log records between collection and the buffer, per pipeline
//! (issue 16, "Processing"). It works on OTLP logs (`kaas_proto::otlp`) and is
//! configured by [`LogProcessing`], plain compiled values that the agent builds from
//! the validated `LogPipeline`; it knows nothing of the model itself.
//!
//! Each record goes through these steps, in this order:
//!
//! 1. [`body::cap`]: the body is cut to the record size cap (a structured body over
//!    it drops the record), so no later step reads more than the cap;
//! 2. [`body::parse_json`]: a JSON-object body becomes attributes ([`json`], bounded
//!    in depth, keys and elements), the original kept as `log.original`;
//! 3. [`body::move_message`]: `message`/`msg` moves into an empty body (and is capped
//!    in turn: a pushed record's attribute did not pass step 1);
//! 4. [`severity`]: `level`/`log.level`/`severity` into the severity fields;
//! 5. [`trace_context`]: `traceparent` or `trace_id`/`span_id`/`trace_flags` into the
//!    trace fields;
//! 6. [`filter`]: keep/drop by body or attribute regex;
//! 7. [`rate_limit`]: the namespace's and the pipeline's token buckets (after the
//!    filter, so filtered records take no tokens; before the remaining steps, so
//!    dropped records cost no more work);
//! 8. [`attributes`]: the configured set/rename/delete actions;
//! 9. [`dedot`]: pod label and annotation keys de-dotted, when the output needs it
//!    (the resource's attributes once per resource, the record's per record).
//!
//! Every step that drops, truncates or gives up something counts it in the batch's
//! [`LogProcessingCounts`], which the caller hands to
//! [`crate::internal_events::LogRecordsProcessed`]. Scopes and resources left without
//! records are removed, so nothing empty reaches the buffer. Time comes from the
//! caller, so rate limits are exact under a fake clock.

pub mod attributes;
pub mod body;
pub mod dedot;
pub mod filter;
pub mod json;
pub mod rate_limit;
pub mod severity;
pub mod trace_context;

#[cfg(test)]
pub(crate) mod tests;

use std::time::Instant;

use kaas_proto::otlp::{KeyValue, LogRecord, ResourceLogs, any_value::Value};

pub use attributes::AttributeAction;
pub use body::DEFAULT_MAX_RECORD_BYTES;
pub use filter::{LogFilter, MatchRule, MatchTarget};
pub use rate_limit::{RateLimit, RateLimiter};

use crate::internal_events::{LogProcessingCounts, LogProcessingOutcome};

/// The resource attribute naming a record's namespace, for the per-namespace limit.
pub const NAMESPACE_KEY: &str = "k8s.namespace.name";

/// A pipeline's log processing, compiled: what the agent builds from the validated
/// `LogPipeline`.
#[derive(Clone, Debug)]
pub struct LogProcessing {
    /// Whether JSON-object bodies are parsed into attributes.
    pub parse_json: bool,
    /// Whether a parsed body's original text is kept as `log.original`
    /// (`keepOriginalBody`).
    pub keep_original_body: bool,
    /// Keep/drop rules.
    pub filter: LogFilter,
    /// Attribute actions, in order.
    pub attribute_actions: Vec<AttributeAction>,
    /// Whether pod label and annotation keys are de-dotted (Elasticsearch-style
    /// outputs).
    pub dedot: bool,
    /// The record size cap in bytes.
    pub max_record_bytes: usize,
    /// The pipeline's rate limit, if any.
    pub pipeline_rate_limit: Option<RateLimit>,
    /// Each namespace's rate limit, if any.
    pub namespace_rate_limit: Option<RateLimit>,
}

impl Default for LogProcessing {
    /// JSON parsed with the original kept (Kyma's defaults), no filter, no actions, no
    /// de-dotting, the default size cap, no rate limits.
    fn default() -> Self {
        Self {
            parse_json: true,
            keep_original_body: true,
            filter: LogFilter::default(),
            attribute_actions: Vec::new(),
            dedot: false,
            max_record_bytes: DEFAULT_MAX_RECORD_BYTES,
            pipeline_rate_limit: None,
            namespace_rate_limit: None,
        }
    }
}

/// A pipeline's log processing with its rate limit state: one per pipeline, used by
/// one task at a time.
#[derive(Debug)]
pub struct LogProcessor {
    settings: LogProcessing,
    limiter: RateLimiter,
}

impl LogProcessor {
    /// A processor for `settings`, its rate limits starting full at `now`.
    pub fn new(settings: LogProcessing, now: Instant) -> Self {
        let limiter = RateLimiter::new(
            settings.pipeline_rate_limit,
            settings.namespace_rate_limit,
            now,
        );
        Self { settings, limiter }
    }

    /// As [`LogProcessor::new`] with a given rate limiter (tests bound its map).
    pub fn with_limiter(settings: LogProcessing, limiter: RateLimiter) -> Self {
        Self { settings, limiter }
    }

    /// The settings.
    pub fn settings(&self) -> &LogProcessing {
        &self.settings
    }

    /// Processes a batch in place at `now`: records dropped are removed, the others
    /// changed as configured; returns what was counted.
    pub fn process(&mut self, batch: &mut Vec<ResourceLogs>, now: Instant) -> LogProcessingCounts {
        let mut counts = LogProcessingCounts::default();
        for resource_logs in batch.iter_mut() {
            let ResourceLogs {
                resource,
                scope_logs,
                ..
            } = resource_logs;
            let resource_attributes: &[KeyValue] = match resource.as_mut() {
                Some(resource) => {
                    if self.settings.dedot {
                        let lost = dedot::dedot(&mut resource.attributes);
                        counts.add(LogProcessingOutcome::DedotCollision, lost);
                    }
                    &resource.attributes
                }
                None => &[],
            };
            let namespace = namespace_of(resource_attributes);
            let mut context = RecordContext {
                settings: &self.settings,
                limiter: &mut self.limiter,
                resource: resource_attributes,
                namespace,
                now,
                counts: &mut counts,
            };
            for scope in scope_logs.iter_mut() {
                scope
                    .log_records
                    .retain_mut(|record| context.process(record));
            }
            scope_logs.retain(|scope| !scope.log_records.is_empty());
        }
        batch.retain(|resource_logs| !resource_logs.scope_logs.is_empty());
        counts
    }
}

/// The namespace of a resource, when it names one as text.
fn namespace_of(resource: &[KeyValue]) -> Option<&str> {
    match attributes::find(resource, NAMESPACE_KEY)?.value.as_ref()? {
        Value::StringValue(name) if !name.is_empty() => Some(name),
        _ => None,
    }
}

/// What processing one record needs from its batch and resource.
struct RecordContext<'a> {
    settings: &'a LogProcessing,
    limiter: &'a mut RateLimiter,
    resource: &'a [KeyValue],
    namespace: Option<&'a str>,
    now: Instant,
    counts: &'a mut LogProcessingCounts,
}

impl RecordContext<'_> {
    /// Runs the steps on `record`; `false` when it is dropped.
    fn process(&mut self, record: &mut LogRecord) -> bool {
        let settings = self.settings;
        if !self.cap(record) {
            return false;
        }
        if settings.parse_json
            && let Some(outcome) = body::parse_json(record, settings.keep_original_body)
        {
            self.counts.record(outcome);
        }
        // A message attribute that did not come from the capped body (a pushed
        // record's) may be larger than the cap.
        if body::move_message(record) && !self.cap(record) {
            return false;
        }
        severity::apply(record);
        trace_context::apply(record);
        if !settings.filter.keeps(record, self.resource) {
            return self.drop(LogProcessingOutcome::Filtered);
        }
        if let Err(outcome) = self.limiter.admit(self.namespace, self.now) {
            return self.drop(outcome);
        }
        attributes::apply(&settings.attribute_actions, &mut record.attributes);
        if settings.dedot {
            let lost = dedot::dedot(&mut record.attributes);
            self.counts.add(LogProcessingOutcome::DedotCollision, lost);
        }
        true
    }

    /// Applies the size cap; `false` when the record is dropped.
    fn cap(&mut self, record: &mut LogRecord) -> bool {
        match body::cap(record, self.settings.max_record_bytes) {
            Some(LogProcessingOutcome::RecordTooLarge) => {
                self.drop(LogProcessingOutcome::RecordTooLarge)
            }
            Some(outcome) => {
                self.counts.record(outcome);
                true
            }
            None => true,
        }
    }

    /// Counts a dropped record; `false` for `retain`.
    fn drop(&mut self, outcome: LogProcessingOutcome) -> bool {
        self.counts.record(outcome);
        false
    }
}
