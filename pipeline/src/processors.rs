//! What a pipeline does to samples between input and output: Prometheus relabeling
//! (target and metric), keep/drop by metric name, and per-scrape limits.
//!
//! Relabel rules are validated exactly as Prometheus validates them
//! (`model/relabel/relabel.go`): the same defaults (`separator: ";"`, `regex: "(.*)"`,
//! `replacement: "$1"`, `action: replace`), the same action names (case-insensitive), the
//! same required and forbidden fields per action, and regexes anchored as
//! `^(?:regex)$`. Prometheus stops at the first problem; we report them all, each at the
//! field it is about, using Prometheus' wording so search results for it still help.
//!
//! Field names are camelCase like the rest of the pipeline; Prometheus' snake_case names
//! (`source_labels`, `target_label`) are accepted too, so existing `relabel_configs`
//! can be pasted as they are. (The CRD schema lists only the camelCase names.)

use std::num::NonZeroU32;
use std::sync::LazyLock;

use regex::Regex;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::errors::{FieldErrors, ValidationErrors, field, index};
use crate::names::{check_prometheus_label_name, is_prometheus_label_name};

/// Prometheus' default separator between source label values.
pub const DEFAULT_SEPARATOR: &str = ";";
/// Prometheus' default relabel regex: matches anything and captures it as `$1`.
pub const DEFAULT_REGEX: &str = "(.*)";
/// Prometheus' default replacement: the first capture group.
pub const DEFAULT_REPLACEMENT: &str = "$1";

/// Processing steps, applied in this order: target relabeling (before a scrape),
/// metric relabeling (each sample), then the metric-name filter, then limits.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Processors {
    /// Prometheus `relabel_configs`: applied to each discovered target's labels
    /// (including `__meta_kubernetes_*`) before it is scraped; can drop targets.
    #[serde(
        default,
        alias = "relabel_configs",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub relabel_configs: Vec<RelabelConfig>,
    /// Prometheus `metric_relabel_configs`: applied to every sample, scraped or pushed,
    /// before it is buffered; can drop samples and rewrite labels.
    #[serde(
        default,
        alias = "metric_relabel_configs",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub metric_relabel_configs: Vec<RelabelConfig>,
    /// Keep or drop samples by metric name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metrics: Option<MetricNameFilter>,
    /// Limits per scrape, as Prometheus' `sample_limit` and `label_*_limit`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limits: Option<Limits>,
}

/// One Prometheus relabel rule. Unset fields take Prometheus' defaults.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RelabelConfig {
    /// Labels whose values are joined with `separator` and matched against `regex`.
    #[serde(
        default,
        alias = "source_labels",
        skip_serializing_if = "Option::is_none"
    )]
    pub source_labels: Option<Vec<String>>,
    /// Placed between source label values. Default `;`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub separator: Option<String>,
    /// RE2-style regular expression, anchored at both ends. Default `(.*)`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub regex: Option<String>,
    /// Modulus for `hashmod`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub modulus: Option<u64>,
    /// Label written by `replace`, `hashmod`, `lowercase`, `uppercase`, or compared by
    /// `keepequal`/`dropequal`. `replace` may use `$1`-style references.
    #[serde(
        default,
        alias = "target_label",
        skip_serializing_if = "Option::is_none"
    )]
    pub target_label: Option<String>,
    /// Value written by `replace` (with `$1`-style references), or the new label name
    /// for `labelmap`. Default `$1`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replacement: Option<String>,
    /// One of replace (default), keep, drop, keepequal, dropequal, hashmod, labelmap,
    /// labeldrop, labelkeep, lowercase, uppercase; case does not matter.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub action: Option<String>,
}

/// Keep or drop samples by metric name. Each entry is a regular expression anchored at
/// both ends, matched against the metric name. `keep` applies first, then `drop`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MetricNameFilter {
    /// When set, only metrics matching one of these are kept.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub keep: Vec<String>,
    /// Metrics matching one of these are dropped.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub drop: Vec<String>,
}

/// Per-scrape limits. Unset or 0 takes the agent's default (Prometheus reads 0 as no
/// limit; the agent never scrapes without one).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Limits {
    /// A scrape with more samples than this (after metric relabeling) fails. Default
    /// 100000.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sample_limit: Option<u32>,
    /// A scrape with a series carrying more labels than this fails. Default 64.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label_limit: Option<u32>,
    /// A scrape with a longer label name than this fails. Default 256 bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label_name_length_limit: Option<u32>,
    /// A scrape with a longer label value than this fails. Default 4096 bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label_value_length_limit: Option<u32>,
}

/// The scrape limits a pipeline sets; `None` where it sets none, or 0 (which
/// Prometheus reads as "no limit"): the agent then applies its own default, so no
/// target gets the agent's memory without a bound.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ValidatedLimits {
    /// Most samples per scrape.
    pub sample_limit: Option<NonZeroU32>,
    /// Most labels per series.
    pub label_limit: Option<NonZeroU32>,
    /// Longest label name.
    pub label_name_length_limit: Option<NonZeroU32>,
    /// Longest label value.
    pub label_value_length_limit: Option<NonZeroU32>,
}

impl From<Option<&Limits>> for ValidatedLimits {
    fn from(limits: Option<&Limits>) -> Self {
        let limit =
            |value: fn(&Limits) -> Option<u32>| limits.and_then(value).and_then(NonZeroU32::new);
        Self {
            sample_limit: limit(|l| l.sample_limit),
            label_limit: limit(|l| l.label_limit),
            label_name_length_limit: limit(|l| l.label_name_length_limit),
            label_value_length_limit: limit(|l| l.label_value_length_limit),
        }
    }
}

/// What a relabel rule does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RelabelAction {
    /// Write `replacement` (expanded) into `target_label` when `regex` matches.
    Replace,
    /// Keep only when `regex` matches the joined source values.
    Keep,
    /// Drop when `regex` matches the joined source values.
    Drop,
    /// Keep only when the joined source values equal `target_label`'s value.
    KeepEqual,
    /// Drop when the joined source values equal `target_label`'s value.
    DropEqual,
    /// Set `target_label` to the MD5 hash of the joined source values modulo `modulus`.
    HashMod,
    /// Copy every label whose name matches `regex` to the name `replacement`.
    LabelMap,
    /// Remove every label whose name matches `regex`.
    LabelDrop,
    /// Remove every label whose name does not match `regex`.
    LabelKeep,
    /// Set `target_label` to the joined source values in lower case.
    Lowercase,
    /// Set `target_label` to the joined source values in upper case.
    Uppercase,
}

impl RelabelAction {
    /// Parses an action name the way Prometheus does: case-insensitively.
    pub fn parse(name: &str) -> Option<Self> {
        Some(match name.to_ascii_lowercase().as_str() {
            "replace" => Self::Replace,
            "keep" => Self::Keep,
            "drop" => Self::Drop,
            "keepequal" => Self::KeepEqual,
            "dropequal" => Self::DropEqual,
            "hashmod" => Self::HashMod,
            "labelmap" => Self::LabelMap,
            "labeldrop" => Self::LabelDrop,
            "labelkeep" => Self::LabelKeep,
            "lowercase" => Self::Lowercase,
            "uppercase" => Self::Uppercase,
            _ => return None,
        })
    }

    /// The Prometheus name of the action.
    pub fn name(self) -> &'static str {
        match self {
            Self::Replace => "replace",
            Self::Keep => "keep",
            Self::Drop => "drop",
            Self::KeepEqual => "keepequal",
            Self::DropEqual => "dropequal",
            Self::HashMod => "hashmod",
            Self::LabelMap => "labelmap",
            Self::LabelDrop => "labeldrop",
            Self::LabelKeep => "labelkeep",
            Self::Lowercase => "lowercase",
            Self::Uppercase => "uppercase",
        }
    }
}

/// A checked relabel rule: defaults filled in and the regex compiled and anchored.
#[derive(Clone, Debug)]
pub struct RelabelRule {
    /// The action.
    pub action: RelabelAction,
    /// Source labels, in order.
    pub source_labels: Vec<String>,
    /// Separator between source values.
    pub separator: String,
    /// The anchored regex.
    pub regex: Regex,
    /// Modulus for hashmod; 0 otherwise.
    pub modulus: u64,
    /// Target label (may contain `$` references for replace); empty when unused.
    pub target_label: String,
    /// Replacement template.
    pub replacement: String,
}

/// Compiles `pattern` anchored as Prometheus anchors relabel regexes.
pub fn anchored_regex(pattern: &str) -> Result<Regex, regex::Error> {
    Regex::new(&format!("^(?:{pattern})$"))
}

/// The shape Prometheus requires of a `target_label` with `$` references and of a
/// `labelmap` replacement.
static RELABEL_TARGET: LazyLock<Regex> = LazyLock::new(|| {
    #[allow(clippy::unwrap_used)] // constant pattern, covered by tests
    Regex::new(r"^(?:(?:[a-zA-Z_]|\$(?:\{\w+\}|\w+))+\w*)+$").unwrap()
});

pub(crate) fn regex_reason(error: &regex::Error) -> String {
    // The regex crate's message spans several lines with a caret diagram; keep the
    // last line, which names the problem.
    let text = error.to_string();
    let summary = text
        .lines()
        .rev()
        .find(|line| !line.trim().is_empty())
        .unwrap_or("invalid regular expression")
        .trim()
        .trim_start_matches("error: ")
        .to_owned();
    format!("does not compile: {summary}")
}

impl RelabelConfig {
    /// Checks the rule as Prometheus does and builds the compiled rule.
    pub(crate) fn validate(&self, path: &str, errors: &mut FieldErrors) -> Option<RelabelRule> {
        let before = errors.len();
        let action = self.action(path, errors)?;
        for (i, label) in self.source_labels.iter().flatten().enumerate() {
            if let Err(reason) = check_prometheus_label_name(label) {
                errors.add(index(&field(path, "sourceLabels"), i), reason);
            }
        }
        let regex = match anchored_regex(self.regex.as_deref().unwrap_or(DEFAULT_REGEX)) {
            Ok(regex) => Some(regex),
            Err(error) => {
                errors.add(field(path, "regex"), regex_reason(&error));
                None
            }
        };
        let target = self.target_label.as_deref().unwrap_or("");
        let replacement = self.replacement.as_deref().unwrap_or(DEFAULT_REPLACEMENT);
        let separator = self.separator.as_deref().unwrap_or(DEFAULT_SEPARATOR);
        if action == RelabelAction::HashMod && self.modulus.unwrap_or(0) == 0 {
            errors.add(
                field(path, "modulus"),
                "relabel configuration for hashmod requires non-zero modulus",
            );
        }
        check_target(action, target, path, errors);
        self.check_fields_of(action, path, errors);
        if errors.len() != before {
            return None;
        }
        Some(RelabelRule {
            action,
            source_labels: self.source_labels.clone().unwrap_or_default(),
            separator: separator.to_owned(),
            regex: regex?,
            modulus: self.modulus.unwrap_or(0),
            target_label: target.to_owned(),
            replacement: replacement.to_owned(),
        })
    }

    /// The action, `replace` when unset; `None` (with the error) when unknown.
    fn action(&self, path: &str, errors: &mut FieldErrors) -> Option<RelabelAction> {
        match &self.action {
            None => Some(RelabelAction::Replace),
            Some(name) if name.is_empty() => {
                errors.add(field(path, "action"), "relabel action cannot be empty");
                None
            }
            Some(name) => {
                let action = RelabelAction::parse(name);
                if action.is_none() {
                    errors.add(
                        field(path, "action"),
                        format!(
                            "unknown relabel action {name:?}; use one of replace, keep, drop, \
                             keepequal, dropequal, hashmod, labelmap, labeldrop, labelkeep, \
                             lowercase, uppercase"
                        ),
                    );
                }
                action
            }
        }
    }

    /// The fields an action does not take, or takes only in some form: `replacement`
    /// and the fields of the equality and label-name actions.
    fn check_fields_of(&self, action: RelabelAction, path: &str, errors: &mut FieldErrors) {
        use RelabelAction as A;
        let name = action.name();
        let target = self.target_label.as_deref().unwrap_or("");
        let replacement = self.replacement.as_deref().unwrap_or(DEFAULT_REPLACEMENT);
        let separator = self.separator.as_deref().unwrap_or(DEFAULT_SEPARATOR);
        if matches!(
            action,
            A::Lowercase | A::Uppercase | A::KeepEqual | A::DropEqual
        ) && replacement != DEFAULT_REPLACEMENT
        {
            errors.add(
                field(path, "replacement"),
                format!("'replacement' can not be set for {name} action"),
            );
        }
        if action == A::LabelMap && !RELABEL_TARGET.is_match(replacement) {
            errors.add(
                field(path, "replacement"),
                format!("{replacement:?} is invalid 'replacement' for {name} action"),
            );
        }
        if matches!(action, A::KeepEqual | A::DropEqual)
            && (self.regex.as_deref().unwrap_or(DEFAULT_REGEX) != DEFAULT_REGEX
                || self.modulus.unwrap_or(0) != 0
                || separator != DEFAULT_SEPARATOR)
        {
            errors.add(
                path,
                format!(
                    "{name} action requires only 'source_labels' and `target_label`, and no other \
                     fields"
                ),
            );
        }
        if matches!(action, A::LabelDrop | A::LabelKeep)
            && (self.source_labels.is_some()
                || !target.is_empty()
                || self.modulus.unwrap_or(0) != 0
                || separator != DEFAULT_SEPARATOR
                || replacement != DEFAULT_REPLACEMENT)
        {
            errors.add(
                path,
                format!("{name} action requires only 'regex', and no other fields"),
            );
        }
    }
}

/// The target label: required by the actions that write one, a label name (or, for
/// `replace`, a template of one).
fn check_target(action: RelabelAction, target: &str, path: &str, errors: &mut FieldErrors) {
    use RelabelAction as A;
    let name = action.name();
    let target_path = field(path, "targetLabel");
    let needs_target = matches!(
        action,
        A::Replace | A::HashMod | A::Lowercase | A::Uppercase | A::KeepEqual | A::DropEqual
    );
    if !needs_target {
        return;
    }
    if target.is_empty() {
        errors.add(
            &target_path,
            format!("relabel configuration for {name} action requires 'target_label' value"),
        );
        return;
    }
    let valid = if action == A::Replace && target.contains('$') {
        RELABEL_TARGET.is_match(target)
    } else {
        is_prometheus_label_name(target)
    };
    if !valid {
        errors.add(
            &target_path,
            format!("{target:?} is invalid 'target_label' for {name} action"),
        );
    }
}

/// Checks and compiles one rule on its own, e.g. for tests and tools; error paths are
/// relative to the rule.
pub fn compile_rule(config: &RelabelConfig) -> Result<RelabelRule, ValidationErrors> {
    let mut errors = FieldErrors::default();
    let rule = config.validate("", &mut errors);
    errors.into_result()?;
    rule.ok_or_else(|| ValidationErrors::single("", "invalid relabel rule"))
}

/// The checked processors.
#[derive(Clone, Debug, Default)]
pub struct ValidatedProcessors {
    /// Target relabeling rules.
    pub relabel: Vec<RelabelRule>,
    /// Metric relabeling rules.
    pub metric_relabel: Vec<RelabelRule>,
    /// Anchored metric-name patterns to keep; empty keeps everything.
    pub keep_metrics: Vec<Regex>,
    /// Anchored metric-name patterns to drop.
    pub drop_metrics: Vec<Regex>,
}

impl Processors {
    pub(crate) fn validate(&self, path: &str, errors: &mut FieldErrors) -> ValidatedProcessors {
        let rules = |list: &[RelabelConfig], list_path: String, errors: &mut FieldErrors| {
            list.iter()
                .enumerate()
                .filter_map(|(i, rule)| rule.validate(&index(&list_path, i), errors))
                .collect::<Vec<_>>()
        };
        let relabel = rules(&self.relabel_configs, field(path, "relabelConfigs"), errors);
        let metric_relabel = rules(
            &self.metric_relabel_configs,
            field(path, "metricRelabelConfigs"),
            errors,
        );
        let mut keep_metrics = Vec::new();
        let mut drop_metrics = Vec::new();
        if let Some(filter) = &self.metrics {
            let filter_path = field(path, "metrics");
            for (list_name, list, out) in [
                ("keep", &filter.keep, &mut keep_metrics),
                ("drop", &filter.drop, &mut drop_metrics),
            ] {
                for (i, pattern) in list.iter().enumerate() {
                    let entry_path = index(&field(&filter_path, list_name), i);
                    if pattern.is_empty() {
                        errors.add(entry_path, "must not be empty; it would match no metric");
                        continue;
                    }
                    match anchored_regex(pattern) {
                        Ok(regex) => out.push(regex),
                        Err(error) => errors.add(entry_path, regex_reason(&error)),
                    }
                }
            }
        }
        ValidatedProcessors {
            relabel,
            metric_relabel,
            keep_metrics,
            drop_metrics,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(rule: &RelabelConfig) -> Vec<String> {
        let mut errors = FieldErrors::default();
        rule.validate("r", &mut errors);
        errors.into_lines()
    }

    #[test]
    fn defaults_are_prometheus_defaults() {
        let mut errors = FieldErrors::default();
        let rule = RelabelConfig {
            source_labels: Some(vec!["__meta_kubernetes_pod_name".into()]),
            target_label: Some("pod".into()),
            ..Default::default()
        }
        .validate("r", &mut errors)
        .unwrap();
        assert_eq!(rule.action, RelabelAction::Replace);
        assert_eq!(rule.separator, ";");
        assert_eq!(rule.replacement, "$1");
        assert_eq!(rule.regex.as_str(), "^(?:(.*))$");
    }

    #[test]
    fn regexes_are_anchored() {
        let regex = anchored_regex("a|b").unwrap();
        assert!(regex.is_match("a"));
        assert!(!regex.is_match("xa"));
        assert!(!regex.is_match("ab"));
    }

    #[test]
    fn action_names_are_case_insensitive() {
        assert_eq!(
            RelabelAction::parse("LabelDrop"),
            Some(RelabelAction::LabelDrop)
        );
        assert_eq!(
            RelabelAction::parse("keepEqual"),
            Some(RelabelAction::KeepEqual)
        );
        assert_eq!(RelabelAction::parse("delete"), None);
    }

    #[test]
    fn templated_target_labels_are_allowed_for_replace_only() {
        let replace = RelabelConfig {
            source_labels: Some(vec!["a".into()]),
            regex: Some("(.+)".into()),
            target_label: Some("${1}_x".into()),
            ..Default::default()
        };
        assert!(check(&replace).is_empty());
        let hashmod = RelabelConfig {
            action: Some("hashmod".into()),
            modulus: Some(4),
            target_label: Some("${1}".into()),
            ..Default::default()
        };
        assert_eq!(
            check(&hashmod),
            [r#"r.targetLabel: "${1}" is invalid 'target_label' for hashmod action"#]
        );
    }

    #[test]
    fn explicit_defaults_are_not_extra_fields() {
        // Prometheus compares with the defaults, so spelling them out is allowed.
        let rule = RelabelConfig {
            action: Some("keepequal".into()),
            source_labels: Some(vec!["a".into()]),
            target_label: Some("b".into()),
            separator: Some(";".into()),
            regex: Some("(.*)".into()),
            ..Default::default()
        };
        assert!(check(&rule).is_empty());
    }
}
