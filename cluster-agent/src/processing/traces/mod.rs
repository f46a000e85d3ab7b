//! What happens to spans between a push receiver and a trace pipeline's buffer (issue
//! 17, "Processing"), per pipeline, in place on OTLP spans (`kaas_proto::otlp`):
//!
//! 1. [`sampling`]: consistent probability sampling by the pipeline's ratio, the
//!    threshold applied written to each kept span's `tracestate` ([`tracestate`]);
//! 2. [`filter`]: `dropSpans`, by name or attribute;
//! 3. [`rate_limit`]: the pipeline's span token bucket;
//! 4. [`attributes`]: `set`, `delete` and `hash` (HMAC-SHA256).
//!
//! The model lists the attribute rules before the rate limit; they run after it here,
//! which changes no result (attribute rules drop nothing, so the same spans reach the
//! bucket in the same order) and spares hashing spans that are then dropped.
//!
//! [`TraceProcessing`] is built once per pipeline (and again when its hash key
//! changes, [`TraceProcessing::rebuilt`], keeping the rate limit's bucket) and shared
//! by the tasks receiving pushes: everything but the rate limit's bucket is
//! immutable. Each step is linear in the spans' size, with per-span costs bounded by
//! the model (64 rules each); nothing is remembered per trace, span or
//! sender. Dropped spans are counted in the batch's [`TraceOutcome`] by the step that
//! dropped them (the rate limit's for OTLP `partial_success`); scopes and resources
//! left without spans are removed, so nothing empty reaches the buffer.

pub mod attributes;
pub mod filter;
pub mod rate_limit;
pub mod sampling;
pub mod tracestate;

#[cfg(test)]
mod tests;

use std::time::Instant;

use kaas_pipeline::traces::ValidatedTracePipeline;
use kaas_pipeline::traces::processors::CompiledSpanMatch;
use kaas_proto::otlp::ResourceSpans;

pub use attributes::{HashKeyError, SpanAttributeRules, check_hash_key};
pub use rate_limit::SpanRateLimit;
pub use sampling::Sampler;

/// What one batch's processing did, in spans.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TraceOutcome {
    /// Spans left in the batch.
    pub kept: u64,
    /// Spans dropped by sampling.
    pub sampled_out: u64,
    /// Spans dropped by a `dropSpans` rule.
    pub filtered: u64,
    /// Spans dropped by the rate limit: what OTLP `partial_success` reports as
    /// rejected.
    pub rate_limited: u64,
}

/// A trace pipeline's processing, compiled, with its rate limit's state.
#[derive(Debug)]
pub struct TraceProcessing {
    sampler: Option<Sampler>,
    drop_spans: Vec<CompiledSpanMatch>,
    rate_limit: SpanRateLimit,
    attributes: SpanAttributeRules,
    hash_key_error: Option<HashKeyError>,
}

impl TraceProcessing {
    /// The processing of `pipeline`, with its hash key's bytes (read from the Secret
    /// its `hashKey` names; `None` when it has none). A key [`check_hash_key`] refuses
    /// is not used: `hash` rules then delete their attributes, and
    /// [`TraceProcessing::hash_key_error`] says why. The rate limit starts full.
    pub fn new(pipeline: &ValidatedTracePipeline, hash_key: Option<&[u8]>) -> Self {
        let rate_limit =
            SpanRateLimit::new(pipeline.processors.rate_limit.as_ref(), Instant::now());
        Self::with_rate_limit(pipeline, hash_key, rate_limit)
    }

    /// The processing of `pipeline` with another hash key, replacing this one: the
    /// rate limit's bucket is this one's, as it is, when the rate is the same (a
    /// rotated key must not refill it), a full one otherwise.
    pub fn rebuilt(&self, pipeline: &ValidatedTracePipeline, hash_key: Option<&[u8]>) -> Self {
        let rate = pipeline.processors.rate_limit.as_ref();
        let rate_limit = self.rate_limit.kept_for(rate, Instant::now());
        Self::with_rate_limit(pipeline, hash_key, rate_limit)
    }

    fn with_rate_limit(
        pipeline: &ValidatedTracePipeline,
        hash_key: Option<&[u8]>,
        rate_limit: SpanRateLimit,
    ) -> Self {
        let processors = &pipeline.processors;
        Self {
            sampler: Sampler::new(pipeline.sampling.ratio),
            drop_spans: processors.drop_spans.clone(),
            rate_limit,
            attributes: SpanAttributeRules::new(&processors.attributes, hash_key),
            hash_key_error: check_hash_key(&processors.attributes, hash_key).err(),
        }
    }

    /// Why the hash key is not used, if it is not (for the pipeline's status).
    pub fn hash_key_error(&self) -> Option<&HashKeyError> {
        self.hash_key_error.as_ref()
    }

    /// Sampling, dropSpans, the rate limit and the attribute rules (the order the
    /// module documentation gives), in place.
    pub fn process(&self, spans: &mut Vec<ResourceSpans>) -> TraceOutcome {
        self.process_at(spans, Instant::now())
    }

    /// As [`TraceProcessing::process`] at `now` (tests drive the rate limit's clock).
    pub fn process_at(&self, batch: &mut Vec<ResourceSpans>, now: Instant) -> TraceOutcome {
        let mut outcome = TraceOutcome::default();
        // Sampling and dropSpans: no shared state.
        let mut candidates = 0;
        for scope in batch.iter_mut().flat_map(|r| &mut r.scope_spans) {
            scope.spans.retain_mut(|span| {
                if self.sampler.as_ref().is_some_and(|s| !s.keeps(span)) {
                    outcome.sampled_out += 1;
                    false
                } else if filter::drops(&self.drop_spans, span) {
                    outcome.filtered += 1;
                    false
                } else {
                    candidates += 1;
                    true
                }
            });
        }
        // The rate limit admits the first `admitted` of the rest, in order.
        let admitted = self.rate_limit.admit(candidates, now);
        outcome.rate_limited = candidates - admitted;
        outcome.kept = admitted;
        let mut left = admitted;
        for resource in batch.iter_mut() {
            for scope in resource.scope_spans.iter_mut() {
                scope.spans.retain_mut(|span| {
                    if left == 0 {
                        return false;
                    }
                    left -= 1;
                    self.attributes.apply(&mut span.attributes);
                    true
                });
            }
            resource.scope_spans.retain(|scope| !scope.spans.is_empty());
        }
        batch.retain(|resource| !resource.scope_spans.is_empty());
        outcome
    }
}
