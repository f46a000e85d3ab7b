//! De-dotting for Elasticsearch and OpenSearch, which read a `.` in a field name as
//! nesting (so `app` and `app.kubernetes.io/name` cannot both be fields): in the keys
//! of Kubernetes pod label and annotation attributes ([`DEDOT_PREFIXES`]) every `.`
//! and `/` after the prefix becomes `_`
//! (`k8s.pod.label.app.kubernetes.io/name` → `k8s.pod.label.app_kubernetes_io_name`).
//! The prefix itself and every other key, such as the semantic-convention
//! `k8s.pod.name`, are unchanged.
//!
//! **Collisions.** Two keys can map to one (`k8s.pod.label.a.b` and
//! `k8s.pod.label.a_b`, or a key that repeats). Exactly one entry survives: the one
//! whose *original* key is the smallest in byte order, the first of them when the
//! original keys are equal. The rule depends only on the keys, not on the order the
//! attributes arrive in, so the same pod always yields the same document. Every
//! entry given up is counted (`dedot_collision`).

use std::collections::HashMap;

use kaas_proto::otlp::KeyValue;

/// The attribute key prefixes whose remainder is de-dotted: the semantic-convention
/// keys for pod labels and annotations, whose remainders are Kubernetes label and
/// annotation keys (`prefix/name`, DNS subdomains with dots).
pub const DEDOT_PREFIXES: [&str; 2] = ["k8s.pod.label.", "k8s.pod.annotation."];

/// The de-dotted form of `key`, when it has a prefix of [`DEDOT_PREFIXES`]; the key
/// as it is otherwise.
pub fn dedotted(key: &str) -> Option<String> {
    let prefix = DEDOT_PREFIXES.iter().find(|p| key.starts_with(*p))?;
    let rest = &key[prefix.len()..];
    let mut out = String::with_capacity(key.len());
    out.push_str(prefix);
    out.extend(
        rest.chars()
            .map(|c| if c == '.' || c == '/' { '_' } else { c }),
    );
    Some(out)
}

/// De-dots `attributes` in place; returns how many entries collisions removed.
/// Linear in the number of attributes.
pub fn dedot(attributes: &mut Vec<KeyValue>) -> u64 {
    if !attributes
        .iter()
        .any(|kv| DEDOT_PREFIXES.iter().any(|p| kv.key.starts_with(p)))
    {
        return 0;
    }
    // The original key of each de-dotted entry, by position.
    let mut originals: Vec<Option<String>> = vec![None; attributes.len()];
    // De-dotted key -> position of the entry that survives so far.
    let mut winners: HashMap<String, usize> = HashMap::new();
    let mut losers = vec![false; attributes.len()];
    for (i, kv) in attributes.iter_mut().enumerate() {
        let Some(new_key) = dedotted(&kv.key) else {
            continue;
        };
        let original = std::mem::replace(&mut kv.key, new_key);
        originals[i] = Some(original);
        match winners.get_mut(&kv.key) {
            None => {
                winners.insert(kv.key.clone(), i);
            }
            Some(winner) => {
                if originals[i] < originals[*winner] {
                    losers[*winner] = true;
                    *winner = i;
                } else {
                    losers[i] = true;
                }
            }
        }
    }
    let mut removed = 0;
    let mut position = 0;
    attributes.retain(|_| {
        let lost = losers[position];
        position += 1;
        removed += u64::from(lost);
        !lost
    });
    removed
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::processing::logs::attributes::string_attribute;

    fn attrs(pairs: &[(&str, &str)]) -> Vec<KeyValue> {
        pairs.iter().map(|(k, v)| string_attribute(k, v)).collect()
    }

    #[test]
    fn label_and_annotation_keys_are_dedotted_and_others_are_not() {
        let cases: &[(&str, &str)] = &[
            (
                "k8s.pod.label.app.kubernetes.io/name",
                "k8s.pod.label.app_kubernetes_io_name",
            ),
            (
                "k8s.pod.annotation.prometheus.io/scrape",
                "k8s.pod.annotation.prometheus_io_scrape",
            ),
            ("k8s.pod.label.app", "k8s.pod.label.app"),
            ("k8s.pod.label.", "k8s.pod.label."),
            ("k8s.pod.name", "k8s.pod.name"),
            ("k8s.namespace.name", "k8s.namespace.name"),
            ("log.file.path", "log.file.path"),
            ("k8s.pod.labels.a.b", "k8s.pod.labels.a.b"),
        ];
        for (key, expected) in cases {
            let mut attributes = attrs(&[(key, "v")]);
            assert_eq!(dedot(&mut attributes), 0);
            assert_eq!(attributes[0].key, *expected);
        }
    }

    #[test]
    fn collisions_keep_the_smallest_original_key_whatever_the_order() {
        let entries = [
            ("k8s.pod.label.a_b", "underscored"),
            ("k8s.pod.label.a.b", "dotted"),
            ("k8s.pod.label.a/b", "slashed"),
            ("k8s.pod.name", "pod"),
        ];
        // Every order of the three colliding entries gives the same result.
        let orders = [
            [0, 1, 2, 3],
            [2, 1, 0, 3],
            [1, 3, 2, 0],
            [3, 2, 0, 1],
            [0, 2, 3, 1],
        ];
        for order in orders {
            let mut attributes: Vec<KeyValue> = order
                .iter()
                .map(|&i| string_attribute(entries[i].0, entries[i].1))
                .collect();
            assert_eq!(dedot(&mut attributes), 2, "{order:?}");
            let mut sorted = attributes.clone();
            sorted.sort_by(|a, b| a.key.cmp(&b.key));
            assert_eq!(
                sorted,
                attrs(&[("k8s.pod.label.a_b", "dotted"), ("k8s.pod.name", "pod")]),
                "'.' sorts before '/' and '_': the dotted original wins, {order:?}"
            );
        }
    }

    #[test]
    fn repeated_keys_keep_the_first() {
        let mut attributes = attrs(&[
            ("k8s.pod.annotation.x.y", "first"),
            ("k8s.pod.annotation.x.y", "second"),
        ]);
        assert_eq!(dedot(&mut attributes), 1);
        assert_eq!(attributes, attrs(&[("k8s.pod.annotation.x_y", "first")]));
    }
}
