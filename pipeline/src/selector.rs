//! Which clusters a pipeline runs on, and which pods a log pipeline reads: label
//! matchers in the shape of a Kubernetes `LabelSelector`, all of which must hold (AND).
//! An empty selector selects every cluster of the pipeline's tenant (every pod).

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::errors::{FieldErrors, field, index, key};
use crate::names::{check_label_key, check_label_value};

/// Selects objects (clusters, pods) by their labels.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ClusterSelector {
    /// Each label must have exactly this value.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub match_labels: BTreeMap<String, String>,
    /// Each expression must hold.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub match_expressions: Vec<LabelSelectorRequirement>,
}

/// One set-based requirement, as in Kubernetes.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LabelSelectorRequirement {
    /// The label key.
    #[serde(default)]
    pub key: String,
    /// `In`, `NotIn`, `Exists` or `DoesNotExist`.
    #[serde(default)]
    pub operator: String,
    /// Values for `In` and `NotIn`; must be empty for `Exists` and `DoesNotExist`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub values: Vec<String>,
}

/// Selects pods by their labels, in the same shape as a [`ClusterSelector`].
pub type PodSelector = ClusterSelector;

impl ClusterSelector {
    /// Whether a cluster with these labels is selected.
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.match_labels
            .iter()
            .all(|(k, v)| labels.get(k) == Some(v))
            && self.match_expressions.iter().all(|requirement| {
                let value = labels.get(&requirement.key);
                match requirement.operator.as_str() {
                    "In" => value.is_some_and(|v| requirement.values.contains(v)),
                    "NotIn" => !value.is_some_and(|v| requirement.values.contains(v)),
                    "Exists" => value.is_some(),
                    "DoesNotExist" => value.is_none(),
                    // Validation refuses other operators; select nothing rather than
                    // everything if an unchecked selector slips through.
                    _ => false,
                }
            })
    }

    pub(crate) fn validate(&self, path: &str, errors: &mut FieldErrors) {
        let labels_path = field(path, "matchLabels");
        for (label, value) in &self.match_labels {
            if let Err(reason) = check_label_key(label) {
                errors.add(key(&labels_path, label), reason);
            }
            if let Err(reason) = check_label_value(value) {
                errors.add(key(&labels_path, label), reason);
            }
        }
        let expressions_path = field(path, "matchExpressions");
        for (i, requirement) in self.match_expressions.iter().enumerate() {
            let path = index(&expressions_path, i);
            if let Err(reason) = check_label_key(&requirement.key) {
                errors.add(field(&path, "key"), reason);
            }
            match requirement.operator.as_str() {
                "In" | "NotIn" => {
                    if requirement.values.is_empty() {
                        errors.add(
                            field(&path, "values"),
                            format!("operator {} needs at least one value", requirement.operator),
                        );
                    }
                    for (j, value) in requirement.values.iter().enumerate() {
                        if let Err(reason) = check_label_value(value) {
                            errors.add(index(&field(&path, "values"), j), reason);
                        }
                    }
                }
                "Exists" | "DoesNotExist" => {
                    if !requirement.values.is_empty() {
                        errors.add(
                            field(&path, "values"),
                            format!("operator {} takes no values", requirement.operator),
                        );
                    }
                }
                other => errors.add(
                    field(&path, "operator"),
                    format!("unknown operator {other:?}; use In, NotIn, Exists or DoesNotExist"),
                ),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    fn requirement(key: &str, operator: &str, values: &[&str]) -> LabelSelectorRequirement {
        LabelSelectorRequirement {
            key: key.into(),
            operator: operator.into(),
            values: values.iter().map(|v| (*v).to_owned()).collect(),
        }
    }

    #[test]
    fn empty_selector_selects_everything() {
        assert!(ClusterSelector::default().matches(&labels(&[])));
        assert!(ClusterSelector::default().matches(&labels(&[("env", "prod")])));
    }

    #[test]
    fn matchers_are_anded() {
        let selector = ClusterSelector {
            match_labels: labels(&[("env", "prod")]),
            match_expressions: vec![
                requirement("region", "In", &["eu-1", "eu-2"]),
                requirement("legacy", "DoesNotExist", &[]),
                requirement("tier", "NotIn", &["free"]),
                requirement("team", "Exists", &[]),
            ],
        };
        let good = labels(&[("env", "prod"), ("region", "eu-2"), ("team", "a")]);
        assert!(selector.matches(&good));
        for (k, v) in [("env", "dev"), ("region", "us-1"), ("tier", "free")] {
            let mut changed = good.clone();
            changed.insert(k.into(), v.into());
            assert!(!selector.matches(&changed), "{k}={v} still matched");
        }
        let mut legacy = good.clone();
        legacy.insert("legacy".into(), "yes".into());
        assert!(!selector.matches(&legacy));
        let mut no_team = good;
        no_team.remove("team");
        assert!(!selector.matches(&no_team));
    }
}
