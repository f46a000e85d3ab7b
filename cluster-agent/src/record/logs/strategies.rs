//! Random OTLP log requests for property tests: every field of a record set or left
//! empty, values nested, keys that de-dot and collide, strings with every character
//! JSON escapes, times that share a second.

use kaas_proto::otlp::{
    AnyValue, ArrayValue, ExportLogsServiceRequest, InstrumentationScope, KeyValue, KeyValueList,
    LogRecord, Resource, ResourceLogs, ScopeLogs, any_value,
};
use proptest::prelude::*;

/// An empty schema URL, or any.
fn schema_url_strategy() -> impl Strategy<Value = String> {
    prop_oneof![Just(String::new()), text_strategy()]
}

fn text_strategy() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-z./_\"\\\\\\x00-\\x1f\u{7f}é€😀]{0,12}",
        prop::collection::vec(any::<char>(), 0..8).prop_map(String::from_iter),
    ]
}

fn key_strategy() -> impl Strategy<Value = String> {
    prop_oneof![
        prop::sample::select(vec![
            "a",
            "b",
            "k8s.namespace.name",
            "k8s.pod.label.a.b",
            "k8s.pod.label.a_b",
            "k8s.pod.label.a/b",
            "k8s.pod.label.",
            "k8s.pod.annotation.x.y",
        ])
        .prop_map(String::from),
        text_strategy(),
    ]
}

fn value_strategy() -> impl Strategy<Value = AnyValue> {
    use any_value::Value as V;
    let leaf = prop_oneof![
        Just(None),
        text_strategy().prop_map(|s| Some(V::StringValue(s))),
        any::<bool>().prop_map(|b| Some(V::BoolValue(b))),
        any::<i64>().prop_map(|n| Some(V::IntValue(n))),
        any::<f64>().prop_map(|d| Some(V::DoubleValue(d))),
        prop::collection::vec(any::<u8>(), 0..6).prop_map(|b| Some(V::BytesValue(b))),
    ]
    .prop_map(|value| AnyValue { value });
    leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(|values| AnyValue {
                value: Some(V::ArrayValue(ArrayValue { values })),
            }),
            prop::collection::vec((key_strategy(), prop::option::of(inner)), 0..4).prop_map(
                |values| AnyValue {
                    value: Some(V::KvlistValue(KeyValueList {
                        values: values
                            .into_iter()
                            .map(|(key, value)| KeyValue { key, value })
                            .collect(),
                    })),
                }
            ),
        ]
    })
}

fn attributes_strategy(most: usize) -> impl Strategy<Value = Vec<KeyValue>> {
    prop::collection::vec(
        (key_strategy(), prop::option::of(value_strategy()))
            .prop_map(|(key, value)| KeyValue { key, value }),
        0..most,
    )
}

/// No time, any time, or a time in one of a few seconds (the time cache's case).
fn time_strategy() -> impl Strategy<Value = u64> {
    prop_oneof![
        Just(0),
        any::<u64>(),
        (1_709_251_199_u64..1_709_251_202, 0_u64..1_000_000_000)
            .prop_map(|(second, nanos)| second * 1_000_000_000 + nanos),
    ]
}

fn record_strategy() -> impl Strategy<Value = LogRecord> {
    (
        (time_strategy(), time_strategy()),
        prop_oneof![Just(0), any::<i32>()],
        text_strategy(),
        prop::option::of(value_strategy()),
        attributes_strategy(5),
        (
            prop_oneof![Just(0), any::<u32>()],
            prop_oneof![Just(0), any::<u32>()],
        ),
        prop::collection::vec(any::<u8>(), 0..17),
        prop::collection::vec(any::<u8>(), 0..9),
        text_strategy(),
    )
        .prop_map(
            |(
                (time_unix_nano, observed_time_unix_nano),
                severity_number,
                severity_text,
                body,
                attributes,
                (dropped_attributes_count, flags),
                trace_id,
                span_id,
                event_name,
            )| LogRecord {
                time_unix_nano,
                observed_time_unix_nano,
                severity_number,
                severity_text,
                body,
                attributes,
                dropped_attributes_count,
                flags,
                trace_id,
                span_id,
                event_name,
            },
        )
}

pub(crate) fn request_strategy() -> impl Strategy<Value = ExportLogsServiceRequest> {
    let scope = (text_strategy(), text_strategy(), attributes_strategy(3)).prop_map(
        |(name, version, attributes)| InstrumentationScope {
            name,
            version,
            attributes,
            ..InstrumentationScope::default()
        },
    );
    let scope_logs = (
        prop::option::of(scope),
        prop::collection::vec(record_strategy(), 0..4),
        schema_url_strategy(),
    )
        .prop_map(|(scope, log_records, schema_url)| ScopeLogs {
            scope,
            log_records,
            schema_url,
        });
    let resource_logs = (
        prop::option::of(attributes_strategy(5)),
        prop::collection::vec(scope_logs, 0..3),
        schema_url_strategy(),
    )
        .prop_map(|(resource, scope_logs, schema_url)| ResourceLogs {
            resource: resource.map(|attributes| Resource {
                attributes,
                ..Resource::default()
            }),
            scope_logs,
            schema_url,
        });
    prop::collection::vec(resource_logs, 0..3)
        .prop_map(|resource_logs| ExportLogsServiceRequest { resource_logs })
}
