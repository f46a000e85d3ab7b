//! `dropSpans`: a span matching any rule is dropped (health checks, `/metrics` calls).
//!
//! A rule matches the span's name, or one of its attributes' value, exactly or by a
//! regex searched in it, as the model compiles it ([`CompiledSpanMatch`]). An attribute
//! is the span's own (the first entry of its key, as everywhere attributes are read),
//! matched as text: numbers and booleans as JSON writes them, so `http.status_code`
//! matches `"200"`; a missing attribute, an array, a map or bytes match no rule. Rules
//! see the attributes as they arrived, before the attribute rules change them. The
//! model caps the rules at 64 and the `regex` crate matches in time linear in the
//! text, so a span costs at most 64 passes over its name and attribute values.

use kaas_pipeline::traces::processors::CompiledSpanMatch;
use kaas_proto::otlp::Span;

use crate::processing::logs::attributes::{find, scalar_text};

/// Whether one of `rules` matches `span`.
pub fn drops(rules: &[CompiledSpanMatch], span: &Span) -> bool {
    rules.iter().any(|rule| match &rule.attribute {
        None => rule.matches(&span.name),
        Some(key) => find(&span.attributes, key)
            .and_then(scalar_text)
            .is_some_and(|text| rule.matches(&text)),
    })
}

#[cfg(test)]
mod tests {
    use kaas_pipeline::traces::processors::SpanPattern;
    use kaas_proto::otlp::{AnyValue, KeyValue, any_value::Value};
    use regex::Regex;

    use super::*;
    use crate::processing::logs::attributes::string_attribute;

    fn rule(attribute: Option<&str>, pattern: SpanPattern) -> CompiledSpanMatch {
        CompiledSpanMatch {
            attribute: attribute.map(str::to_owned),
            pattern,
        }
    }

    fn exact(text: &str) -> SpanPattern {
        SpanPattern::Exact(text.to_owned())
    }

    fn regex(text: &str) -> SpanPattern {
        SpanPattern::Regex(Regex::new(text).unwrap())
    }

    fn span(name: &str, attributes: Vec<KeyValue>) -> Span {
        Span {
            name: name.to_owned(),
            attributes,
            ..Span::default()
        }
    }

    fn int(key: &str, value: i64) -> KeyValue {
        KeyValue {
            key: key.to_owned(),
            value: Some(AnyValue {
                value: Some(Value::IntValue(value)),
            }),
        }
    }

    #[test]
    fn names_and_attributes_match_exactly_or_by_search() {
        let rules = [
            rule(None, exact("GET /healthz")),
            rule(Some("url.path"), regex("^/metrics")),
            rule(Some("http.response.status_code"), exact("204")),
        ];
        let cases = [
            (span("GET /healthz", vec![]), true),
            (span("GET /healthz/ready", vec![]), false),
            (
                span("GET", vec![string_attribute("url.path", "/metrics/x")]),
                true,
            ),
            (
                span("GET", vec![string_attribute("url.path", "/api/metrics")]),
                false,
            ),
            // The first entry of a repeated key is the one read.
            (
                span(
                    "GET",
                    vec![
                        string_attribute("url.path", "/api"),
                        string_attribute("url.path", "/metrics"),
                    ],
                ),
                false,
            ),
            (
                span("GET", vec![int("http.response.status_code", 204)]),
                true,
            ),
            (
                span("GET", vec![int("http.response.status_code", 200)]),
                false,
            ),
            // The name is not an attribute, and an attribute rule needs the attribute.
            (span("/metrics", vec![]), false),
            (
                span(
                    "GET",
                    vec![KeyValue {
                        key: "url.path".into(),
                        value: None,
                    }],
                ),
                false,
            ),
        ];
        for (span, dropped) in cases {
            assert_eq!(drops(&rules, &span), dropped, "{span:?}");
        }
        assert!(!drops(&[], &span("GET /healthz", vec![])));
    }
}
