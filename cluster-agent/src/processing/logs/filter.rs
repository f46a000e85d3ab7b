//! Keep/drop of whole records by a regex on the body or on an attribute.
//!
//! Semantics, as for the metric name filter: when there are keep rules, a record must
//! match at least one of them; then any matching drop rule drops it. An attribute is
//! looked up on the record first, then on its resource (so `k8s.namespace.name`, a
//! resource attribute, can be filtered on). Values are matched as text (numbers and
//! booleans as JSON writes them); a missing attribute, an array, a map, bytes or a
//! structured body match no rule. Regexes arrive compiled; whether they are anchored
//! is the model's choice ([`regex::Regex::is_match`] is used as is). The `regex`
//! crate matches in time linear in the text, so a hostile body cannot make a filter
//! slow.

use kaas_proto::otlp::{KeyValue, LogRecord};
use regex::Regex;

use super::attributes::{find, scalar_text};

/// What a rule matches on.
#[derive(Clone, Debug)]
pub enum MatchTarget {
    /// The body.
    Body,
    /// The attribute with this key (record first, then resource).
    Attribute(String),
}

/// One filter rule.
#[derive(Clone, Debug)]
pub struct MatchRule {
    /// What is matched.
    pub target: MatchTarget,
    /// The compiled pattern.
    pub regex: Regex,
}

impl MatchRule {
    /// Whether the rule matches `record` (with its resource's attributes).
    pub fn matches(&self, record: &LogRecord, resource: &[KeyValue]) -> bool {
        let value = match &self.target {
            MatchTarget::Body => record.body.as_ref(),
            MatchTarget::Attribute(key) => {
                find(&record.attributes, key).or_else(|| find(resource, key))
            }
        };
        value
            .and_then(scalar_text)
            .is_some_and(|text| self.regex.is_match(&text))
    }
}

/// A pipeline's keep and drop rules.
#[derive(Clone, Debug, Default)]
pub struct LogFilter {
    /// When not empty, only records matching one of these are kept.
    pub keep: Vec<MatchRule>,
    /// Records matching one of these are dropped.
    pub drop: Vec<MatchRule>,
}

impl LogFilter {
    /// Whether `record` passes the filter.
    pub fn keeps(&self, record: &LogRecord, resource: &[KeyValue]) -> bool {
        if !self.keep.is_empty() && !self.keep.iter().any(|r| r.matches(record, resource)) {
            return false;
        }
        !self.drop.iter().any(|r| r.matches(record, resource))
    }
}

#[cfg(test)]
mod tests {
    use kaas_proto::otlp::{AnyValue, any_value::Value};

    use super::*;
    use crate::processing::logs::attributes::{string_attribute, string_value};

    fn rule(target: MatchTarget, pattern: &str) -> MatchRule {
        MatchRule {
            target,
            regex: Regex::new(pattern).unwrap(),
        }
    }

    fn attr(key: &str) -> MatchTarget {
        MatchTarget::Attribute(key.into())
    }

    fn record(body: &str, attributes: &[(&str, &str)]) -> LogRecord {
        LogRecord {
            body: Some(string_value(body.into())),
            attributes: attributes
                .iter()
                .map(|(k, v)| string_attribute(k, v))
                .collect(),
            ..LogRecord::default()
        }
    }

    #[test]
    fn keep_then_drop_on_body_record_and_resource_attributes() {
        let filter = LogFilter {
            keep: vec![
                rule(MatchTarget::Body, "^ERROR"),
                rule(attr("k8s.namespace.name"), "^prod$"),
            ],
            drop: vec![rule(attr("path"), "^/healthz$")],
        };
        let prod = [string_attribute("k8s.namespace.name", "prod")];
        let dev = [string_attribute("k8s.namespace.name", "dev")];
        let cases: &[(LogRecord, &[KeyValue], bool)] = &[
            (record("ERROR x", &[]), &[], true),
            (record("info", &[]), &[], false),
            (record("info", &[]), &prod, true),
            (record("info", &[]), &dev, false),
            (
                record("info", &[("k8s.namespace.name", "prod")]),
                &dev,
                true,
            ),
            (record("ERROR x", &[("path", "/healthz")]), &[], false),
            (record("ERROR x", &[("path", "/api")]), &[], true),
        ];
        for (i, (r, resource, kept)) in cases.iter().enumerate() {
            assert_eq!(filter.keeps(r, resource), *kept, "case {i}");
        }
    }

    #[test]
    fn missing_and_structured_values_match_nothing_and_scalars_match_as_text() {
        let drop_all_status = LogFilter {
            keep: vec![],
            drop: vec![rule(attr("status"), ".*")],
        };
        assert!(drop_all_status.keeps(&record("x", &[]), &[]), "missing");
        let mut r = record("x", &[]);
        r.attributes.push(KeyValue {
            key: "status".into(),
            value: Some(AnyValue {
                value: Some(Value::IntValue(503)),
            }),
        });
        let drop_5xx = LogFilter {
            keep: vec![],
            drop: vec![rule(attr("status"), "^5..$")],
        };
        assert!(!drop_5xx.keeps(&r, &[]));
        r.body = Some(AnyValue {
            value: Some(Value::BytesValue(b"ERROR".to_vec())),
        });
        let keep_errors = LogFilter {
            keep: vec![rule(MatchTarget::Body, "ERROR")],
            drop: vec![],
        };
        assert!(!keep_errors.keeps(&r, &[]), "bytes bodies match no rule");
        assert!(LogFilter::default().keeps(&r, &[]));
    }
}
