//! The documents against what they must say: a request with every field, the bulk
//! framing, hostile namespaces and damaged requests; and on random requests
//! (proptest), byte for byte what a JSON value tree of the same fields serializes to.

use kaas_proto::otlp::{
    AnyValue, ArrayValue, ExportLogsServiceRequest, InstrumentationScope, KeyValue, KeyValueList,
    LogRecord, Resource, ResourceLogs, ScopeLogs, any_value,
};
use proptest::prelude::*;
use prost::Message;
use serde_json::{Value, json};

use super::*;
use crate::record::logs::strategies::request_strategy;
use crate::record::logs::{any_value_json, attributes_json, each_record, record_time_ns};

#[test]
fn dates_and_index_names() {
    // 2024-02-29T23:59:59.000000007Z, a leap day.
    let time = UtcTime::from_unix_nanos(1_709_251_199_000_000_007);
    assert_eq!(time.rfc3339(), "2024-02-29T23:59:59.000000007Z");
    assert_eq!(
        index_name("logs-%Y.%m.%d-%H%%-%N", time, "shop"),
        "logs-2024.02.29-23%-shop"
    );
    assert_eq!(
        UtcTime::from_unix_nanos(0).rfc3339(),
        "1970-01-01T00:00:00.000000000Z"
    );
    assert_eq!(
        UtcTime::from_unix_nanos(4_102_444_800_000_000_000).rfc3339(),
        "2100-01-01T00:00:00.000000000Z"
    );
    // The largest time there is.
    assert_eq!(
        UtcTime::from_unix_nanos(u64::MAX).rfc3339(),
        "2554-07-21T23:34:33.709551615Z"
    );
}

fn value(value: any_value::Value) -> Option<AnyValue> {
    Some(AnyValue { value: Some(value) })
}

fn kv(key: &str, v: any_value::Value) -> KeyValue {
    KeyValue {
        key: key.into(),
        value: value(v),
    }
}

fn text(key: &str, v: &str) -> KeyValue {
    kv(key, any_value::Value::StringValue(v.into()))
}

/// A record with every field, repeated keys, a nested list, a NaN and bytes, in a
/// resource with a pod label to de-dot.
fn full_request() -> ExportLogsServiceRequest {
    let record = LogRecord {
        time_unix_nano: 1_709_251_199_000_000_007,
        observed_time_unix_nano: 1_709_251_200_000_000_000,
        severity_number: 9,
        severity_text: "INFO".into(),
        body: value(any_value::Value::KvlistValue(KeyValueList {
            values: vec![
                kv("z", any_value::Value::IntValue(-3)),
                kv("a", any_value::Value::DoubleValue(f64::NAN)),
                kv("z", any_value::Value::DoubleValue(1.5)),
                kv(
                    "list",
                    any_value::Value::ArrayValue(ArrayValue {
                        values: vec![
                            AnyValue {
                                value: Some(any_value::Value::BoolValue(true)),
                            },
                            AnyValue { value: None },
                            AnyValue {
                                value: Some(any_value::Value::BytesValue(vec![0xca, 0xfe])),
                            },
                        ],
                    }),
                ),
            ],
        })),
        attributes: vec![
            text("b", "first"),
            text("a", "quote \" and \u{1} control"),
            text("b", "last"),
            KeyValue {
                key: "empty".into(),
                value: None,
            },
        ],
        dropped_attributes_count: 2,
        flags: 1,
        trace_id: vec![0xab; 16],
        span_id: vec![0x01; 8],
        event_name: "evt".into(),
    };
    ExportLogsServiceRequest {
        resource_logs: vec![ResourceLogs {
            resource: Some(Resource {
                attributes: vec![
                    text("k8s.namespace.name", "Shop"),
                    text("k8s.pod.label.app.kubernetes.io/name", "web"),
                ],
                ..Resource::default()
            }),
            scope_logs: vec![ScopeLogs {
                scope: Some(InstrumentationScope {
                    name: "lib".into(),
                    version: "1.0".into(),
                    ..InstrumentationScope::default()
                }),
                log_records: vec![
                    record,
                    LogRecord {
                        observed_time_unix_nano: 3_600_000_000_000,
                        ..LogRecord::default()
                    },
                ],
                ..ScopeLogs::default()
            }],
            ..ResourceLogs::default()
        }],
    }
}

/// The documents are what the JSON of their fields says (a repeated key keeps its
/// last value), written with their keys in order and once each: written again from
/// the parsed value (whose map is ordered and has no repeats), the bytes are equal.
#[test]
fn documents_hold_every_field_in_key_order_with_the_last_of_repeated_keys() {
    let documents = Documents::encode(&full_request().encode_to_vec(), true).unwrap();
    assert_eq!(documents.len(), 2);
    let first: Value = serde_json::from_slice(documents.json(0)).unwrap();
    assert_eq!(
        first,
        json!({
            "@timestamp": "2024-02-29T23:59:59.000000007Z",
            "observed_timestamp": "2024-03-01T00:00:00.000000000Z",
            "severity_number": 9,
            "severity_text": "INFO",
            "body": {"a": "NaN", "list": [true, null, "cafe"], "z": 1.5},
            "attributes": {"a": "quote \" and \u{1} control", "b": "last", "empty": null},
            "resource": {"k8s.namespace.name": "Shop", "k8s.pod.label.app_kubernetes_io_name": "web"},
            "scope": {"name": "lib", "version": "1.0"},
            "trace_id": "ab".repeat(16),
            "span_id": "01".repeat(8),
            "flags": 1,
            "event_name": "evt",
            "dropped_attributes_count": 2,
        })
    );
    assert_eq!(serde_json::to_vec(&first).unwrap(), documents.json(0));
    let second: Value = serde_json::from_slice(documents.json(1)).unwrap();
    assert_eq!(
        second["@timestamp"],
        json!("1970-01-01T01:00:00.000000000Z")
    );
    assert_eq!(serde_json::to_vec(&second).unwrap(), documents.json(1));
    let lines = documents.json_lines();
    let lines: Vec<&[u8]> = lines.split(|b| *b == b'\n').collect();
    assert_eq!(lines, [documents.json(0), documents.json(1), b""]);
}

/// Each document has its own action line with its hour and namespace, also when
/// only some documents are sent.
#[test]
fn bulk_bodies_name_each_documents_index() {
    let documents = Documents::encode(&full_request().encode_to_vec(), false).unwrap();
    let body = documents.bulk([0, 1], "logs-%N-%Y.%m.%d.%H");
    let lines: Vec<Value> = body
        .split(|b| *b == b'\n')
        .filter(|l| !l.is_empty())
        .map(|l| serde_json::from_slice(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 4);
    assert_eq!(
        lines[0],
        json!({"create": {"_index": "logs-shop-2024.02.29.23"}})
    );
    assert_eq!(
        lines[1]["resource"]["k8s.pod.label.app.kubernetes.io/name"],
        "web"
    );
    assert_eq!(
        lines[2],
        json!({"create": {"_index": "logs-shop-1970.01.01.01"}})
    );
    let only_second = documents.bulk([1], "logs");
    let mut expected = b"{\"create\":{\"_index\":\"logs\"}}\n".to_vec();
    expected.extend_from_slice(documents.json(1));
    expected.push(b'\n');
    assert_eq!(only_second, expected);
}

/// A request whose only record's resource names `namespace`.
fn namespace(value: any_value::Value) -> String {
    let request = ExportLogsServiceRequest {
        resource_logs: vec![ResourceLogs {
            resource: Some(Resource {
                attributes: vec![kv(NAMESPACE_ATTRIBUTE, value)],
                ..Resource::default()
            }),
            scope_logs: vec![ScopeLogs {
                log_records: vec![LogRecord::default()],
                ..ScopeLogs::default()
            }],
            ..ResourceLogs::default()
        }],
    };
    let documents = Documents::encode(&request.encode_to_vec(), false).unwrap();
    documents.namespaces[documents.placed[0].namespace].clone()
}

/// A pushed record may claim any namespace; the index stays a valid name.
#[test]
fn hostile_namespaces_make_valid_index_names() {
    let text = |s: &str| namespace(any_value::Value::StringValue(s.into()));
    assert_eq!(text("shop"), "shop");
    assert_eq!(text("-Evil/../*,ns-"), "evil------ns");
    assert_eq!(text("///"), NO_NAMESPACE);
    assert_eq!(text(&"x".repeat(500)).len(), MAX_INDEX_NAMESPACE_LEN);
    assert_eq!(namespace(any_value::Value::IntValue(-42)), "42");
    assert_eq!(index_namespace(""), NO_NAMESPACE);
    let request = ExportLogsServiceRequest {
        resource_logs: vec![ResourceLogs {
            scope_logs: vec![ScopeLogs {
                log_records: vec![LogRecord::default()],
                ..ScopeLogs::default()
            }],
            ..ResourceLogs::default()
        }],
    };
    let documents = Documents::encode(&request.encode_to_vec(), false).unwrap();
    assert_eq!(documents.namespaces, [NO_NAMESPACE]);
}

/// A request that does not read is refused, never read past its end: cut short,
/// with a string that is not UTF-8, with a field of the wrong wire type, or with
/// values nested deeper than protobuf decoding allows.
#[test]
fn damaged_requests_are_refused() {
    let bytes = full_request().encode_to_vec();
    assert!(Documents::encode(&bytes[..bytes.len() - 1], false).is_err());
    // A record whose severity text (field 3) is not UTF-8.
    let record = [0x1a, 0x02, 0xc3, 0x28];
    let scope = [&[0x12, 0x04][..], &record].concat();
    let resource = [&[0x12, 0x06][..], &scope].concat();
    let request = [&[0x0a, 0x08][..], &resource].concat();
    assert!(ExportLogsServiceRequest::decode(&request[..]).is_err());
    assert!(Documents::encode(&request, false).is_err());
    // The same record whose time (field 1, fixed64) comes as a varint.
    let record = [0x08, 0x01];
    let scope = [&[0x12, 0x02][..], &record].concat();
    let resource = [&[0x12, 0x04][..], &scope].concat();
    let request = [&[0x0a, 0x06][..], &resource].concat();
    assert!(ExportLogsServiceRequest::decode(&request[..]).is_err());
    assert!(Documents::encode(&request, false).is_err());
    // A body of arrays nested 150 deep.
    let mut value = AnyValue { value: None };
    for _ in 0..150 {
        value = AnyValue {
            value: Some(any_value::Value::ArrayValue(ArrayValue {
                values: vec![value],
            })),
        };
    }
    let mut request = full_request();
    request.resource_logs[0].scope_logs[0].log_records[0].body = Some(value);
    assert!(Documents::encode(&request.encode_to_vec(), false).is_err());
}

/// Attributes as the JSON object a document holds: de-dotted as the pipeline's
/// processing de-dots, a repeated key's last value.
fn attributes_value(attributes: &[KeyValue], dedotting: bool) -> Value {
    let mut attributes = attributes.to_vec();
    if dedotting {
        crate::processing::logs::dedot::dedot(&mut attributes);
    }
    Value::Object(attributes_json(&attributes))
}

/// A record's document as a JSON value tree (see the module documentation).
fn document_value(
    resource: &[KeyValue],
    scope: Option<&InstrumentationScope>,
    record: &LogRecord,
    dedotting: bool,
) -> Value {
    let mut document = serde_json::Map::new();
    let mut set = |key: &str, value: Value| document.insert(key.to_owned(), value);
    let time = |ns: u64| Value::from(UtcTime::from_unix_nanos(ns).rfc3339());
    if record_time_ns(record) != 0 {
        set("@timestamp", time(record_time_ns(record)));
    }
    if record.observed_time_unix_nano != 0 {
        set("observed_timestamp", time(record.observed_time_unix_nano));
    }
    if !record.attributes.is_empty() {
        set(
            "attributes",
            attributes_value(&record.attributes, dedotting),
        );
    }
    if let Some(body) = &record.body {
        set("body", any_value_json(body));
    }
    if !resource.is_empty() {
        set("resource", attributes_value(resource, dedotting));
    }
    if let Some(scope) =
        scope.filter(|s| !(s.name.is_empty() && s.version.is_empty() && s.attributes.is_empty()))
    {
        let mut object = serde_json::Map::new();
        if !scope.attributes.is_empty() {
            object.insert(
                "attributes".into(),
                attributes_value(&scope.attributes, dedotting),
            );
        }
        if !scope.name.is_empty() {
            object.insert("name".into(), scope.name.clone().into());
        }
        if !scope.version.is_empty() {
            object.insert("version".into(), scope.version.clone().into());
        }
        set("scope", Value::Object(object));
    }
    let numbers = [
        (
            "dropped_attributes_count",
            i64::from(record.dropped_attributes_count),
        ),
        ("flags", i64::from(record.flags)),
        ("severity_number", i64::from(record.severity_number)),
    ];
    for (key, number) in numbers.into_iter().filter(|(_, n)| *n != 0) {
        set(key, number.into());
    }
    let texts = [
        ("event_name", &record.event_name),
        ("severity_text", &record.severity_text),
    ];
    for (key, text) in texts.into_iter().filter(|(_, t)| !t.is_empty()) {
        set(key, text.clone().into());
    }
    for (key, bytes) in [("span_id", &record.span_id), ("trace_id", &record.trace_id)] {
        if !bytes.is_empty() {
            set(key, hex::encode(bytes).into());
        }
    }
    Value::Object(document)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    /// Each document is, byte for byte, what a JSON value tree of the record's fields
    /// serializes to (keys in order, a repeated key's last value, de-dotting as the
    /// processing's), in request order.
    #[test]
    fn documents_are_what_a_value_tree_of_the_record_serializes_to(
        request in request_strategy(),
        dedotting in any::<bool>(),
    ) {
        let documents = Documents::encode(&request.encode_to_vec(), dedotting).unwrap();
        let records: Vec<_> = each_record(&request).collect();
        prop_assert_eq!(documents.len(), records.len());
        for (index, record) in records.iter().enumerate() {
            let expected = document_value(record.resource, record.scope, record.record, dedotting);
            let expected = String::from_utf8(serde_json::to_vec(&expected).unwrap()).unwrap();
            prop_assert_eq!(String::from_utf8_lossy(documents.json(index)), expected);
        }
    }

    /// A request cut anywhere reads exactly when `prost` decodes it, and then to the
    /// documents of what `prost` decoded.
    #[test]
    fn cut_requests_read_exactly_when_they_decode(
        request in request_strategy(),
        cut in any::<prop::sample::Index>(),
    ) {
        let bytes = request.encode_to_vec();
        let bytes = &bytes[..cut.index(bytes.len() + 1)];
        let documents = Documents::encode(bytes, false);
        match ExportLogsServiceRequest::decode(bytes) {
            Ok(decoded) => {
                let documents = documents.unwrap();
                let whole = Documents::encode(&decoded.encode_to_vec(), false).unwrap();
                prop_assert_eq!(documents.json_lines(), whole.json_lines());
            }
            Err(_) => prop_assert!(documents.is_err()),
        }
    }

    /// Any bytes at all, or a valid request with one byte changed, are read or refused,
    /// never a panic.
    #[test]
    fn any_bytes_are_read_or_refused(
        noise in prop::collection::vec(any::<u8>(), 0..64),
        request in request_strategy(),
        at in any::<prop::sample::Index>(),
        byte in any::<u8>(),
    ) {
        let _ = Documents::encode(&noise, true);
        let mut bytes = request.encode_to_vec();
        if !bytes.is_empty() {
            let at = at.index(bytes.len());
            bytes[at] = byte;
        }
        let _ = Documents::encode(&bytes, true);
    }
}
