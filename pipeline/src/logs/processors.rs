//! What a log pipeline does to records between input and output, in this order: JSON
//! bodies parsed into attributes, keep/drop filters by attribute or body, attribute
//! rules (set, rename, delete), rate limits per pipeline and per namespace, and the
//! record size cap. De-dotting belongs to the output that needs it
//! ([`crate::logs::output::HttpLogOutput::dedot`]).

use std::num::{NonZeroU32, NonZeroU64};

use regex::Regex;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::errors::{FieldErrors, field, index};
use crate::processors::regex_reason;
use crate::units::ByteSize;

/// The largest record by default; the rest of a longer line is skipped and counted
/// (issue 16). Ample for a stack trace, small enough that a runaway line without a
/// newline cannot take the agent's memory.
pub const DEFAULT_MAX_RECORD_SIZE: u64 = 1 << 20;
/// The smallest record size cap accepted: below 1 KiB ordinary lines would be cut.
pub const MIN_MAX_RECORD_SIZE: u64 = 1 << 10;
/// The largest record size cap accepted: gRPC's customary 4 MiB message limit, so a
/// record always fits one OTLP/gRPC export.
pub const MAX_MAX_RECORD_SIZE: u64 = 4 << 20;
/// Longest attribute key accepted in filters and attribute rules; OpenTelemetry
/// semantic-convention keys are far shorter.
pub const MAX_ATTRIBUTE_KEY_LEN: usize = 256;

/// Processing steps.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LogProcessors {
    /// Parse JSON bodies into attributes (`message`/`msg` become the body, `level`
    /// the severity, `trace_id`/`span_id` the trace context). Default `true`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parse_json: Option<bool>,
    /// Keep or drop records, in order; a record a `keep` filter does not match, or a
    /// `drop` filter matches, is dropped and counted.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub filters: Vec<LogFilter>,
    /// Attribute changes, in order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub attributes: Vec<AttributeRule>,
    /// Most records per second; what is over is dropped and counted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_limit: Option<RateLimits>,
    /// The largest record, e.g. `256Ki`. Default `1Mi`, from `1Ki` to `4Mi`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_record_size: Option<ByteSize>,
}

/// Keeps or drops records whose attribute (or body) matches a regular expression.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LogFilter {
    /// `keep` or `drop`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub action: Option<FilterAction>,
    /// The attribute to match, e.g. `k8s.namespace.name`; the body when not set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attribute: Option<String>,
    /// A regular expression, searched (not anchored; use `^...$` to match whole values).
    #[serde(default)]
    pub regex: String,
}

/// What a filter does with the records it matches.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum FilterAction {
    /// Only matching records pass.
    Keep,
    /// Matching records are dropped.
    Drop,
}

/// One attribute change.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AttributeRule {
    /// `set`, `rename` or `delete`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub action: Option<AttributeAction>,
    /// The attribute's key.
    #[serde(default)]
    pub key: String,
    /// The value `set` writes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    /// The new key `rename` moves the attribute to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to: Option<String>,
}

/// What an attribute rule does.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum AttributeAction {
    /// Write `value` under `key`, replacing what is there.
    Set,
    /// Move the attribute at `key` to `to`, replacing what is there.
    Rename,
    /// Remove the attribute at `key`.
    Delete,
}

/// Rate limits; records over a limit are dropped and counted.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RateLimits {
    /// For the whole pipeline on one agent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub per_pipeline: Option<RateLimit>,
    /// For each namespace on one agent, so one noisy namespace cannot use up the
    /// pipeline's limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub per_namespace: Option<RateLimit>,
}

/// A token bucket.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RateLimit {
    /// Records per second, at least 1.
    #[serde(default)]
    pub records_per_second: u32,
    /// Records that may pass at once after a quiet spell; at least `recordsPerSecond`
    /// (the default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub burst: Option<u32>,
}

/// Checked processing steps.
#[derive(Clone, Debug)]
pub struct ValidatedLogProcessors {
    /// Parse JSON bodies.
    pub parse_json: bool,
    /// Compiled filters, in order.
    pub filters: Vec<CompiledFilter>,
    /// Attribute rules, in order, each complete for its action.
    pub attributes: Vec<AttributeRule>,
    /// The pipeline's rate limit.
    pub per_pipeline: Option<ValidatedRate>,
    /// Each namespace's rate limit.
    pub per_namespace: Option<ValidatedRate>,
    /// The largest record.
    pub max_record_size: NonZeroU64,
}

/// A compiled filter.
#[derive(Clone, Debug)]
pub struct CompiledFilter {
    /// Keep or drop.
    pub action: FilterAction,
    /// The attribute matched; the body when `None`.
    pub attribute: Option<String>,
    /// The expression, searched.
    pub regex: Regex,
}

/// A checked token bucket.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ValidatedRate {
    /// Refill per second.
    pub records_per_second: NonZeroU32,
    /// Bucket size.
    pub burst: NonZeroU32,
}

impl LogProcessors {
    pub(crate) fn validate(&self, path: &str, errors: &mut FieldErrors) -> ValidatedLogProcessors {
        let filters_path = field(path, "filters");
        let filters = self
            .filters
            .iter()
            .enumerate()
            .filter_map(|(i, filter)| filter.validate(&index(&filters_path, i), errors))
            .collect();
        let attributes_path = field(path, "attributes");
        for (i, rule) in self.attributes.iter().enumerate() {
            rule.validate(&index(&attributes_path, i), errors);
        }
        let (per_pipeline, per_namespace) = match &self.rate_limit {
            Some(limits) => limits.validate(&field(path, "rateLimit"), errors),
            None => (None, None),
        };
        ValidatedLogProcessors {
            parse_json: self.parse_json.unwrap_or(true),
            filters,
            attributes: self.attributes.clone(),
            per_pipeline,
            per_namespace,
            max_record_size: self.max_record_size(&field(path, "maxRecordSize"), errors),
        }
    }

    fn max_record_size(&self, path: &str, errors: &mut FieldErrors) -> NonZeroU64 {
        let bytes = match self.max_record_size.as_ref().map(ByteSize::bytes) {
            None => DEFAULT_MAX_RECORD_SIZE,
            Some(Err(reason)) => {
                errors.add(path, reason);
                DEFAULT_MAX_RECORD_SIZE
            }
            Some(Ok(bytes)) if bytes < MIN_MAX_RECORD_SIZE => {
                errors.add(
                    path,
                    format!(
                        "{bytes} bytes is below the minimum of 1Ki ({MIN_MAX_RECORD_SIZE} bytes): \
                         ordinary lines would be cut"
                    ),
                );
                DEFAULT_MAX_RECORD_SIZE
            }
            Some(Ok(bytes)) if bytes > MAX_MAX_RECORD_SIZE => {
                errors.add(
                    path,
                    format!(
                        "{bytes} bytes is above the maximum of 4Mi ({MAX_MAX_RECORD_SIZE} bytes), \
                         the largest record one OTLP/gRPC export carries"
                    ),
                );
                DEFAULT_MAX_RECORD_SIZE
            }
            Some(Ok(bytes)) => bytes,
        };
        NonZeroU64::new(bytes).unwrap_or(NonZeroU64::MIN)
    }
}

/// Checks an attribute key: non-empty printable text without spaces, bounded.
pub(crate) fn check_attribute_key(path: &str, key: &str, errors: &mut FieldErrors) {
    if key.is_empty() {
        errors.add(
            path,
            "required: an attribute key such as k8s.namespace.name",
        );
    } else if key.len() > MAX_ATTRIBUTE_KEY_LEN
        || key.chars().any(|c| c.is_whitespace() || c.is_control())
    {
        errors.add(
            path,
            format!(
                "{key:?} is not an attribute key: at most {MAX_ATTRIBUTE_KEY_LEN} bytes without \
                 spaces or control characters"
            ),
        );
    }
}

impl LogFilter {
    fn validate(&self, path: &str, errors: &mut FieldErrors) -> Option<CompiledFilter> {
        if self.action.is_none() {
            errors.add(field(path, "action"), "required: keep or drop");
        }
        if let Some(attribute) = &self.attribute {
            check_attribute_key(&field(path, "attribute"), attribute, errors);
        }
        let regex_path = field(path, "regex");
        let regex = if self.regex.is_empty() {
            errors.add(
                &regex_path,
                "required: a regular expression the attribute or body is matched with",
            );
            None
        } else {
            Regex::new(&self.regex)
                .map_err(|error| errors.add(&regex_path, regex_reason(&error)))
                .ok()
        };
        Some(CompiledFilter {
            action: self.action?,
            attribute: self.attribute.clone(),
            regex: regex?,
        })
    }
}

impl AttributeRule {
    fn validate(&self, path: &str, errors: &mut FieldErrors) {
        check_attribute_key(&field(path, "key"), &self.key, errors);
        let Some(action) = self.action else {
            errors.add(field(path, "action"), "required: set, rename or delete");
            return;
        };
        let (value_used, to_used) = match action {
            AttributeAction::Set => (true, false),
            AttributeAction::Rename => (false, true),
            AttributeAction::Delete => (false, false),
        };
        match (&self.value, value_used) {
            (None, true) => errors.add(field(path, "value"), "required by set: the value to write"),
            (Some(_), false) => errors.add(field(path, "value"), "only used by set"),
            _ => {}
        }
        match (&self.to, to_used) {
            (None, true) => errors.add(field(path, "to"), "required by rename: the new key"),
            (Some(_), false) => errors.add(field(path, "to"), "only used by rename"),
            (Some(to), true) if *to == self.key => errors.add(
                field(path, "to"),
                format!("renames {to:?} to itself; remove the rule"),
            ),
            (Some(to), true) => check_attribute_key(&field(path, "to"), to, errors),
            (None, false) => {}
        }
    }
}

impl RateLimits {
    fn validate(
        &self,
        path: &str,
        errors: &mut FieldErrors,
    ) -> (Option<ValidatedRate>, Option<ValidatedRate>) {
        let pipeline = self
            .per_pipeline
            .as_ref()
            .and_then(|limit| limit.validate(&field(path, "perPipeline"), errors));
        let namespace = self
            .per_namespace
            .as_ref()
            .and_then(|limit| limit.validate(&field(path, "perNamespace"), errors));
        if let (Some(pipeline), Some(namespace)) = (pipeline, namespace)
            && namespace.records_per_second > pipeline.records_per_second
        {
            errors.add(
                field(&field(path, "perNamespace"), "recordsPerSecond"),
                format!(
                    "{} is above the pipeline's limit of {}, so it would never apply",
                    namespace.records_per_second, pipeline.records_per_second
                ),
            );
        }
        (pipeline, namespace)
    }
}

impl RateLimit {
    fn validate(&self, path: &str, errors: &mut FieldErrors) -> Option<ValidatedRate> {
        let rate = ("recordsPerSecond", "records", self.records_per_second);
        checked_rate(path, rate, self.burst, errors)
    }
}

/// Checks a token bucket given as `(rate field, what it counts, rate)` and its burst:
/// the rate at least 1, the burst (default the rate) not below it. Log and trace
/// pipelines' rate limits share it.
pub(crate) fn checked_rate(
    path: &str,
    (rate_field, noun, rate): (&str, &str, u32),
    burst: Option<u32>,
    errors: &mut FieldErrors,
) -> Option<ValidatedRate> {
    let Some(rate) = NonZeroU32::new(rate) else {
        errors.add(
            field(path, rate_field),
            "must be at least 1; remove the limit to have none",
        );
        return None;
    };
    let burst = burst.unwrap_or(rate.get());
    if burst < rate.get() {
        errors.add(
            field(path, "burst"),
            format!(
                "{burst} is below {rate_field} ({rate}): a second's worth of {noun} could \
                 never pass at once"
            ),
        );
        return None;
    }
    Some(ValidatedRate {
        records_per_second: rate,
        burst: NonZeroU32::new(burst).unwrap_or(rate),
    })
}
