//! Prometheus relabeling with identical semantics, rule for rule.
//!
//! Follows `model/relabel/relabel.go`: source values are joined with the separator;
//! `replace` expands `$1`/`${name}` in both the target label and the replacement (Go's
//! and Rust's expansion rules agree: the longest `[A-Za-z0-9_]` run names the group, a
//! missing group expands to nothing, `$$` is a literal `$`), writes nothing when the
//! regex does not match or the expanded target is not a valid label name, and deletes
//! the target when the replacement expands to nothing; `hashmod` takes the last 8 bytes
//! of the MD5 of the joined values, big-endian, modulo the modulus; `labelmap`,
//! `labeldrop` and `labelkeep` walk a snapshot of the labels (see
//! [`LabelsBuilder::snapshot`]). The rules arrive already validated and compiled
//! ([`RelabelRule`]).

use kaas_pipeline::names::is_prometheus_label_name;
use kaas_pipeline::processors::{RelabelAction, RelabelRule};
use md5::{Digest, Md5};

use crate::labels::{Labels, LabelsBuilder};

/// Applies `rules` in order; `None` when a rule drops the label set.
pub fn process(labels: &Labels, rules: &[RelabelRule]) -> Option<Labels> {
    if rules.is_empty() {
        return Some(labels.clone());
    }
    let mut builder = LabelsBuilder::new(labels);
    for rule in rules {
        if !apply(rule, &mut builder) {
            return None;
        }
    }
    Some(builder.labels())
}

/// Applies one rule; `false` when it drops the label set.
pub fn apply(rule: &RelabelRule, builder: &mut LabelsBuilder<'_>) -> bool {
    let value = joined_source_values(rule, builder);
    match rule.action {
        RelabelAction::Drop => return !rule.regex.is_match(&value),
        RelabelAction::Keep => return rule.regex.is_match(&value),
        RelabelAction::DropEqual => return builder.get(&rule.target_label) != value,
        RelabelAction::KeepEqual => return builder.get(&rule.target_label) == value,
        RelabelAction::Replace => {
            let Some(captures) = rule.regex.captures(&value) else {
                return true;
            };
            let mut target = String::new();
            captures.expand(&rule.target_label, &mut target);
            if !is_prometheus_label_name(&target) {
                return true;
            }
            let mut replacement = String::new();
            captures.expand(&rule.replacement, &mut replacement);
            if replacement.is_empty() {
                builder.del(&target);
            } else {
                builder.set(&target, &replacement);
            }
        }
        RelabelAction::Lowercase => builder.set(&rule.target_label, &value.to_lowercase()),
        RelabelAction::Uppercase => builder.set(&rule.target_label, &value.to_uppercase()),
        RelabelAction::HashMod => {
            let hash = Md5::digest(value.as_bytes());
            let mut tail = [0u8; 8];
            tail.copy_from_slice(&hash[8..16]);
            // Validation guarantees a non-zero modulus; `max(1)` keeps this total.
            let shard = u64::from_be_bytes(tail) % rule.modulus.max(1);
            builder.set(&rule.target_label, &shard.to_string());
        }
        RelabelAction::LabelMap => {
            for label in builder.snapshot() {
                if rule.regex.is_match(&label.name) {
                    let name = rule
                        .regex
                        .replace_all(&label.name, rule.replacement.as_str());
                    builder.set(&name, &label.value);
                }
            }
        }
        RelabelAction::LabelDrop => {
            for label in builder.snapshot() {
                if rule.regex.is_match(&label.name) {
                    builder.del(&label.name);
                }
            }
        }
        RelabelAction::LabelKeep => {
            for label in builder.snapshot() {
                if !rule.regex.is_match(&label.name) {
                    builder.del(&label.name);
                }
            }
        }
    }
    true
}

fn joined_source_values(rule: &RelabelRule, builder: &LabelsBuilder<'_>) -> String {
    let mut value = String::new();
    for (i, name) in rule.source_labels.iter().enumerate() {
        if i > 0 {
            value.push_str(&rule.separator);
        }
        value.push_str(builder.get(name));
    }
    value
}

#[cfg(test)]
mod tests {
    use kaas_pipeline::processors::RelabelConfig;

    use super::*;

    /// Compiles rules written as Prometheus YAML (snake_case accepted).
    fn rules(yaml: &str) -> Vec<RelabelRule> {
        let configs: Vec<RelabelConfig> = serde_yaml::from_str(yaml).unwrap();
        configs
            .iter()
            .map(|c| kaas_pipeline::processors::compile_rule(c).unwrap())
            .collect()
    }

    fn labels(pairs: &[(&str, &str)]) -> Labels {
        Labels::from_pairs(pairs.iter().copied())
    }

    fn run(input: &[(&str, &str)], yaml: &str) -> Option<Labels> {
        process(&labels(input), &rules(yaml))
    }

    #[test]
    fn replace_with_groups_and_templated_target() {
        let out = run(
            &[("a", "foo"), ("b", "bar")],
            r#"
- source_labels: [a, b]
  regex: "f(.*);(.*)r"
  target_label: "${1}_${2}"
  replacement: "$2-$1"
"#,
        );
        assert_eq!(
            out,
            Some(labels(&[("a", "foo"), ("b", "bar"), ("oo_ba", "ba-oo")]))
        );
    }

    #[test]
    fn replace_without_match_changes_nothing_and_empty_result_deletes() {
        let input = [("a", "foo"), ("b", "x")];
        let unmatched = run(
            &input,
            "- {source_labels: [a], regex: 'nope', target_label: b}",
        );
        assert_eq!(unmatched, Some(labels(&input)));
        let emptied = run(
            &input,
            "- {source_labels: [a], regex: 'foo', target_label: b, replacement: ''}",
        );
        assert_eq!(emptied, Some(labels(&[("a", "foo")])));
    }

    #[test]
    fn dollar_names_take_the_longest_run_as_go_does() {
        // "$1x" names group "1x", which does not exist, so it expands to nothing.
        let out = run(
            &[("a", "foo")],
            "- {source_labels: [a], regex: '(f)oo', target_label: t, replacement: '$1x-$$-${1}x'}",
        );
        assert_eq!(out.unwrap().get("t"), "-$-fx");
    }

    #[test]
    fn invalid_expanded_target_is_skipped() {
        let out = run(
            &[("a", "some-thing")],
            "- {source_labels: [a], regex: '(.*)', target_label: '${1}', replacement: v}",
        );
        assert_eq!(out, Some(labels(&[("a", "some-thing")])));
    }

    #[test]
    fn keep_drop_and_their_equal_forms() {
        let input = [("a", "foo"), ("b", "foo"), ("c", "bar")];
        assert!(run(&input, "- {action: keep, source_labels: [a], regex: 'f.*'}").is_some());
        assert!(run(&input, "- {action: keep, source_labels: [a], regex: 'f'}").is_none());
        assert!(run(&input, "- {action: drop, source_labels: [c], regex: 'bar'}").is_none());
        assert!(
            run(
                &input,
                "- {action: keepequal, source_labels: [a], target_label: b}"
            )
            .is_some()
        );
        assert!(
            run(
                &input,
                "- {action: keepequal, source_labels: [a], target_label: c}"
            )
            .is_none()
        );
        assert!(
            run(
                &input,
                "- {action: dropequal, source_labels: [a], target_label: b}"
            )
            .is_none()
        );
        // A missing source label joins as the empty string, as in Prometheus.
        assert!(
            run(
                &input,
                "- {action: keep, source_labels: [missing], regex: ''}"
            )
            .is_some()
        );
    }

    #[test]
    fn hashmod_matches_prometheus_values() {
        // md5("foo") = acbd18db4cc2f85cedef654fccc4a4d8; last 8 bytes 0xedef654fccc4a4d8.
        let out = run(
            &[("a", "foo")],
            "- {action: hashmod, source_labels: [a], modulus: 1000, target_label: h}",
        );
        assert_eq!(
            out.unwrap().get("h"),
            (0xedef654fccc4a4d8_u64 % 1000).to_string()
        );
    }

    #[test]
    fn labelmap_copies_and_later_labels_win() {
        let out = run(
            &[
                ("__meta_kubernetes_pod_label_app", "web"),
                ("__meta_kubernetes_pod_label_tier", "front"),
                ("app", "old"),
            ],
            "- {action: labelmap, regex: '__meta_kubernetes_pod_label_(.+)'}",
        );
        let out = out.unwrap();
        assert_eq!(out.get("app"), "web");
        assert_eq!(out.get("tier"), "front");
        assert_eq!(out.get("__meta_kubernetes_pod_label_app"), "web");
    }

    #[test]
    fn labeldrop_and_labelkeep_match_names() {
        let input = [("a", "1"), ("b_x", "2"), ("b_y", "3")];
        assert_eq!(
            run(&input, "- {action: labeldrop, regex: 'b_.*'}"),
            Some(labels(&[("a", "1")]))
        );
        assert_eq!(
            run(&input, "- {action: labelkeep, regex: 'b_.*'}"),
            Some(labels(&[("b_x", "2"), ("b_y", "3")]))
        );
    }

    #[test]
    fn case_actions() {
        let input = [("a", "MiXeD"), ("b", "x")];
        let out = run(
            &input,
            "- {action: lowercase, source_labels: [a, b], target_label: l}\n- {action: uppercase, source_labels: [a], target_label: u}",
        )
        .unwrap();
        assert_eq!(out.get("l"), "mixed;x");
        assert_eq!(out.get("u"), "MIXED");
    }

    #[test]
    fn rules_see_earlier_rules_results() {
        let out = run(
            &[("a", "1")],
            "- {source_labels: [a], target_label: b}\n- {source_labels: [b], regex: '1', target_label: c, replacement: seen}\n- {action: labeldrop, regex: a}",
        );
        assert_eq!(out, Some(labels(&[("b", "1"), ("c", "seen")])));
    }
}
