//! What a trace pipeline does to spans between input and output, in this order: spans
//! matching a `dropSpans` rule are dropped (health checks, `/metrics` calls), attribute
//! rules set, delete or hash span attributes, and the pipeline's span rate limit drops
//! what is over it. Everything dropped is counted, and a sender learns of the spans the
//! rate limit dropped through OTLP's `partial_success`. Sampling comes before all of
//! them ([`super::sampling`]).
//!
//! **Hashing.** `hash` replaces an attribute's value with the lower-case hex of
//! HMAC-SHA256 over the value's text, keyed by the pipeline's `hashKey`, which must come
//! from a Secret. A plain SHA-256 of a user id is undone by hashing every likely id; a
//! keyed hash is not without the key, yet the same id still hashes alike across spans,
//! pipelines and clusters sharing the key, so traces stay joinable.

use regex::Regex;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::errors::{FieldErrors, field, index};
use crate::logs::processors::{ValidatedRate, check_attribute_key, checked_rate};
use crate::policy::ValidationContext;
use crate::processors::regex_reason;
use crate::secret::{SecretKeyRef, ValueSource};

/// Most `dropSpans` rules and most `attributes` rules, each: every span is matched
/// against all of them, so their number is what a tenant's pipeline costs per span.
/// Real pipelines drop a handful of health-check routes and touch a few attributes.
pub const MAX_SPAN_RULES: usize = 64;
/// The fewest bytes a hash key may have; the agent refuses a shorter Secret value
/// (read at run time, so not checked here). 32 bytes is HMAC-SHA256's output size, the
/// key length RFC 2104 recommends.
pub const MIN_HASH_KEY_BYTES: usize = 32;

/// Processing steps.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TraceProcessors {
    /// Spans to drop: a span matching any rule is dropped and counted.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub drop_spans: Vec<SpanMatch>,
    /// Span attribute changes, in order; each key at most once.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub attributes: Vec<SpanAttributeRule>,
    /// The key of `hash` rules (HMAC-SHA256), at least 32 bytes; only from a Secret
    /// (`valueFrom`), and only with a `hash` rule.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hash_key: Option<ValueSource>,
    /// Most spans per second through the pipeline on one agent; what is over is dropped,
    /// counted and reported to the sender in OTLP `partial_success`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_limit: Option<SpanRateLimit>,
}

/// Matches spans by name, or by one attribute's value: `exact` or `regex`, one of them.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SpanMatch {
    /// The span attribute to match, e.g. `url.path`; the span's name when not set. A
    /// span without the attribute does not match.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attribute: Option<String>,
    /// The whole value, exactly.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exact: Option<String>,
    /// A regular expression, searched (not anchored; use `^...$` to match whole values).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub regex: Option<String>,
}

/// One span attribute change.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SpanAttributeRule {
    /// `set`, `delete` or `hash`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub action: Option<SpanAttributeAction>,
    /// The span attribute's key.
    #[serde(default)]
    pub key: String,
    /// The value `set` writes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
}

/// What a span attribute rule does.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum SpanAttributeAction {
    /// Write `value` under `key`, replacing what is there.
    Set,
    /// Remove the attribute at `key`.
    Delete,
    /// Replace the attribute's value with HMAC-SHA256 of it under `hashKey`, in
    /// lower-case hex; a span without the attribute is left as it is.
    Hash,
}

/// A token bucket for spans.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SpanRateLimit {
    /// Spans per second, at least 1.
    #[serde(default)]
    pub spans_per_second: u32,
    /// Spans that may pass at once after a quiet spell; at least `spansPerSecond`
    /// (the default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub burst: Option<u32>,
}

/// Checked processing steps.
#[derive(Clone, Debug, Default)]
pub struct ValidatedTraceProcessors {
    /// Compiled drop rules.
    pub drop_spans: Vec<CompiledSpanMatch>,
    /// Attribute rules, in order, each complete for its action.
    pub attributes: Vec<SpanAttributeRule>,
    /// Where the hash key comes from, when a rule hashes.
    pub hash_key: Option<ValueSource>,
    /// The pipeline's span rate limit (`records_per_second` counts spans).
    pub rate_limit: Option<ValidatedRate>,
}

/// A compiled drop rule.
#[derive(Clone, Debug)]
pub struct CompiledSpanMatch {
    /// The attribute matched; the span name when `None`.
    pub attribute: Option<String>,
    /// How the value is matched.
    pub pattern: SpanPattern,
}

/// How a drop rule matches a value.
#[derive(Clone, Debug)]
pub enum SpanPattern {
    /// Equal to this.
    Exact(String),
    /// This expression, searched.
    Regex(Regex),
}

impl CompiledSpanMatch {
    /// Whether `value` (the span's name or the attribute's text) matches.
    pub fn matches(&self, value: &str) -> bool {
        match &self.pattern {
            SpanPattern::Exact(exact) => exact == value,
            SpanPattern::Regex(regex) => regex.is_match(value),
        }
    }
}

impl TraceProcessors {
    /// The Secret the hash key comes from, if it names one.
    pub fn secret_ref(&self) -> Option<&SecretKeyRef> {
        self.hash_key.as_ref().and_then(ValueSource::secret_ref)
    }

    pub(crate) fn validate(
        &self,
        path: &str,
        context: &ValidationContext,
        errors: &mut FieldErrors,
    ) -> ValidatedTraceProcessors {
        let drop_path = field(path, "dropSpans");
        check_rule_count(&drop_path, self.drop_spans.len(), errors);
        let drop_spans = self
            .drop_spans
            .iter()
            .enumerate()
            .filter_map(|(i, rule)| rule.validate(&index(&drop_path, i), errors))
            .collect();
        let attributes_path = field(path, "attributes");
        check_rule_count(&attributes_path, self.attributes.len(), errors);
        let mut seen = std::collections::BTreeMap::new();
        for (i, rule) in self.attributes.iter().enumerate() {
            let rule_path = index(&attributes_path, i);
            rule.validate(&rule_path, errors);
            if let Some(first) = seen.insert(rule.key.as_str(), i)
                && !rule.key.is_empty()
            {
                errors.add(
                    field(&rule_path, "key"),
                    format!(
                        "{:?} is already changed by attributes[{first}]; one rule per key, \
                         since a later rule would undo or see through the earlier one",
                        rule.key
                    ),
                );
            }
        }
        let hashes = self
            .attributes
            .iter()
            .any(|r| r.action == Some(SpanAttributeAction::Hash));
        self.check_hash_key(&field(path, "hashKey"), hashes, context, errors);
        let rate_limit = self
            .rate_limit
            .as_ref()
            .and_then(|limit| limit.validate(&field(path, "rateLimit"), errors));
        ValidatedTraceProcessors {
            drop_spans,
            attributes: self.attributes.clone(),
            hash_key: self.hash_key.clone(),
            rate_limit,
        }
    }

    fn check_hash_key(
        &self,
        path: &str,
        hashes: bool,
        context: &ValidationContext,
        errors: &mut FieldErrors,
    ) {
        match (&self.hash_key, hashes) {
            (None, true) => errors.add(
                path,
                "required by hash rules: reference the Secret holding the key (at least 32 \
                 bytes) with valueFrom.secretKeyRef",
            ),
            (Some(_), false) => errors.add(
                path,
                "only used by hash rules, and no rule hashes; remove it or add a hash rule",
            ),
            (Some(key), true) if key.value.is_some() => errors.add(
                field(path, "value"),
                "an inline hash key would be stored and shown with the pipeline, and anyone \
                 reading it could undo the hashes; put it in a Secret and reference it with \
                 valueFrom.secretKeyRef",
            ),
            (Some(key), true) => key.validate(path, context, errors),
            (None, false) => {}
        }
    }
}

fn check_rule_count(path: &str, count: usize, errors: &mut FieldErrors) {
    if count > MAX_SPAN_RULES {
        errors.add(
            path,
            format!(
                "{count} rules, more than the {MAX_SPAN_RULES} allowed: every span is checked \
                 against each of them"
            ),
        );
    }
}

impl SpanMatch {
    fn validate(&self, path: &str, errors: &mut FieldErrors) -> Option<CompiledSpanMatch> {
        if let Some(attribute) = &self.attribute {
            check_attribute_key(&field(path, "attribute"), attribute, errors);
        }
        let pattern = match (&self.exact, &self.regex) {
            (Some(exact), None) => SpanPattern::Exact(exact.clone()),
            (None, Some(text)) => {
                let regex_path = field(path, "regex");
                if text.is_empty() {
                    errors.add(
                        regex_path,
                        "must not be empty: it would match every span; use exact for a value",
                    );
                    return None;
                }
                let regex = Regex::new(text)
                    .map_err(|error| errors.add(regex_path, regex_reason(&error)))
                    .ok()?;
                SpanPattern::Regex(regex)
            }
            (None, None) => {
                errors.add(
                    path,
                    "set exact or regex: the span name (or the attribute's value) to drop",
                );
                return None;
            }
            (Some(_), Some(_)) => {
                errors.add(path, "set either exact or regex, not both");
                return None;
            }
        };
        Some(CompiledSpanMatch {
            attribute: self.attribute.clone(),
            pattern,
        })
    }
}

impl SpanAttributeRule {
    fn validate(&self, path: &str, errors: &mut FieldErrors) {
        check_attribute_key(&field(path, "key"), &self.key, errors);
        let Some(action) = self.action else {
            errors.add(field(path, "action"), "required: set, delete or hash");
            return;
        };
        match (action, &self.value) {
            (SpanAttributeAction::Set, None) => {
                errors.add(field(path, "value"), "required by set: the value to write")
            }
            (SpanAttributeAction::Delete | SpanAttributeAction::Hash, Some(_)) => errors.add(
                field(path, "value"),
                "only used by set; delete and hash take no value",
            ),
            _ => {}
        }
    }
}

impl SpanRateLimit {
    fn validate(&self, path: &str, errors: &mut FieldErrors) -> Option<ValidatedRate> {
        let rate = ("spansPerSecond", "spans", self.spans_per_second);
        checked_rate(path, rate, self.burst, errors)
    }
}
