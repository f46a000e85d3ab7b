//! The OTLP/JSON decoder against hand-written bodies: every field and every encoding
//! the specification allows, and hostile bodies refused by the limit they cross.

use kaas_proto::otlp::any_value::Value;
use kaas_proto::otlp::{
    AnyValue, ArrayValue, EntityRef, InstrumentationScope, KeyValue, KeyValueList, Resource,
};

use super::*;
use crate::otlp_logs::MAX_VALUE_DEPTH;

fn text(value: &str) -> Option<AnyValue> {
    Some(AnyValue {
        value: Some(Value::StringValue(value.into())),
    })
}

fn one_record(record: LogRecord) -> ExportLogsServiceRequest {
    ExportLogsServiceRequest {
        resource_logs: vec![ResourceLogs {
            scope_logs: vec![ScopeLogs {
                log_records: vec![record],
                ..ScopeLogs::default()
            }],
            ..ResourceLogs::default()
        }],
    }
}

fn json(body: &str) -> Result<ExportLogsServiceRequest, DecodeError> {
    decode(body.as_bytes(), &PushLimits::default())
}

fn malformed(body: &str) -> String {
    match json(body) {
        Err(DecodeError::Malformed(reason)) => reason,
        other => panic!("not refused as malformed: {other:?}"),
    }
}

/// Every field of every message, in the encodings the OTLP specification's example
/// uses (64-bit integers as strings, hex ids, integer enums).
#[test]
fn every_field_decodes() {
    let body = r#"{"resourceLogs":[{
        "resource":{"attributes":[{"key":"service.name","value":{"stringValue":"cart"}}],
            "droppedAttributesCount":1,
            "entityRefs":[{"schemaUrl":"s","type":"service","idKeys":["service.name"],"descriptionKeys":["d"]}]},
        "scopeLogs":[{
            "scope":{"name":"lib","version":"1.2","attributes":[{"key":"a","value":{"boolValue":true}}],"droppedAttributesCount":2},
            "logRecords":[{
                "timeUnixNano":"1544712660300000000",
                "observedTimeUnixNano":"1544712660300000001",
                "severityNumber":10,
                "severityText":"Information",
                "body":{"kvlistValue":{"values":[
                    {"key":"i","value":{"intValue":"-42"}},
                    {"key":"d","value":{"doubleValue":2.5}},
                    {"key":"b","value":{"bytesValue":"AAEC/w=="}},
                    {"key":"arr","value":{"arrayValue":{"values":[{"stringValue":"x"},{}]}}}]}},
                "attributes":[{"key":"string.attribute","value":{"stringValue":"some string"}}],
                "droppedAttributesCount":3,
                "flags":1,
                "traceId":"5B8EFFF798038103D269B633813FC60C",
                "spanId":"eee19b7ec3c1b174",
                "eventName":"checkout"}],
            "schemaUrl":"scope-schema"}],
        "schemaUrl":"resource-schema"}]}"#;
    let keyed = |key: &str, value: Value| KeyValue {
        key: key.into(),
        value: Some(AnyValue { value: Some(value) }),
    };
    let expected = ExportLogsServiceRequest {
        resource_logs: vec![ResourceLogs {
            resource: Some(Resource {
                attributes: vec![keyed("service.name", Value::StringValue("cart".into()))],
                dropped_attributes_count: 1,
                entity_refs: vec![EntityRef {
                    schema_url: "s".into(),
                    r#type: "service".into(),
                    id_keys: vec!["service.name".into()],
                    description_keys: vec!["d".into()],
                }],
            }),
            scope_logs: vec![ScopeLogs {
                scope: Some(InstrumentationScope {
                    name: "lib".into(),
                    version: "1.2".into(),
                    attributes: vec![keyed("a", Value::BoolValue(true))],
                    dropped_attributes_count: 2,
                }),
                log_records: vec![LogRecord {
                    time_unix_nano: 1_544_712_660_300_000_000,
                    observed_time_unix_nano: 1_544_712_660_300_000_001,
                    severity_number: 10,
                    severity_text: "Information".into(),
                    body: Some(AnyValue {
                        value: Some(Value::KvlistValue(KeyValueList {
                            values: vec![
                                keyed("i", Value::IntValue(-42)),
                                keyed("d", Value::DoubleValue(2.5)),
                                keyed("b", Value::BytesValue(vec![0, 1, 2, 255])),
                                keyed(
                                    "arr",
                                    Value::ArrayValue(ArrayValue {
                                        values: vec![text("x").unwrap(), AnyValue::default()],
                                    }),
                                ),
                            ],
                        })),
                    }),
                    attributes: vec![keyed(
                        "string.attribute",
                        Value::StringValue("some string".into()),
                    )],
                    dropped_attributes_count: 3,
                    flags: 1,
                    trace_id: hex::decode("5b8efff798038103d269b633813fc60c").unwrap(),
                    span_id: hex::decode("eee19b7ec3c1b174").unwrap(),
                    event_name: "checkout".into(),
                }],
                schema_url: "scope-schema".into(),
            }],
            schema_url: "resource-schema".into(),
        }],
    };
    assert_eq!(json(body).unwrap(), expected);
}

/// 64-bit integers as numbers or strings, enums as integers or names, doubles as
/// strings, URL-safe unpadded base64 and `null` fields all read as protobuf's JSON
/// mapping reads them; unknown and snake_case fields are skipped.
#[test]
fn the_alternative_encodings_read_the_same() {
    let as_strings = json(
        r#"{"resourceLogs":[{"scopeLogs":[{"logRecords":[{"timeUnixNano":"7","severityNumber":"SEVERITY_NUMBER_WARN","flags":"1","body":{"doubleValue":"Infinity"}}]}]}]}"#,
    )
    .unwrap();
    let as_numbers = json(
        r#"{"resourceLogs":[{"scopeLogs":[{"logRecords":[{"timeUnixNano":7,"severityNumber":13,"flags":1.0,"body":{"doubleValue":"Infinity"},"traceId":null,"attributes":null,"time_unix_nano":"99","unknownField":{"deep":[[[1]]]}}]}]}]}"#,
    )
    .unwrap();
    let expected = one_record(LogRecord {
        time_unix_nano: 7,
        severity_number: 13,
        flags: 1,
        body: Some(AnyValue {
            value: Some(Value::DoubleValue(f64::INFINITY)),
        }),
        ..LogRecord::default()
    });
    assert_eq!(as_strings, expected);
    assert_eq!(as_numbers, expected);
    let bytes = json(
        r#"{"resourceLogs":[{"scopeLogs":[{"logRecords":[{"body":{"bytesValue":"-_8"}}]}]}]}"#,
    )
    .unwrap();
    assert_eq!(
        bytes.resource_logs[0].scope_logs[0].log_records[0].body,
        Some(AnyValue {
            value: Some(Value::BytesValue(vec![0xfb, 0xff]))
        })
    );
    assert_eq!(json("{}").unwrap(), ExportLogsServiceRequest::default());
}

/// Each rule of the encoding refuses what breaks it, with a reason.
#[test]
fn invalid_bodies_are_refused_with_their_reason() {
    let record = |fields: &str| {
        format!(r#"{{"resourceLogs":[{{"scopeLogs":[{{"logRecords":[{{{fields}}}]}}]}}]}}"#)
    };
    for (fields, reason) in [
        (
            r#""traceId":"5B8EFFF798038103""#,
            "traceId is not 32 hex digits",
        ),
        (
            r#""traceId":"W4737/eAOBA9JptjOBP8YM==""#,
            "traceId is not 32 hex digits",
        ),
        (r#""spanId":"zz""#, "spanId is not 16 hex digits"),
        (r#""timeUnixNano":"-1""#, "out of the field's range"),
        (r#""timeUnixNano":1.5"#, "not an integer"),
        (r#""severityNumber":"LOUD""#, "\"LOUD\" is not an integer"),
        (r#""flags":4294967296"#, "out of the field's range"),
        (
            r#""body":{"intValue":"9223372036854775808"}"#,
            "intValue 9223372036854775808 is out of range",
        ),
        (
            r#""body":{"stringValue":"a","intValue":1}"#,
            "more than one value",
        ),
        (r#""body":{"bytesValue":"%%%"}"#, "not base64"),
        (r#""body":{"doubleValue":"fast"}"#, "is not a number"),
        (r#""attributes":{"key":"a"}"#, "expected an array or null"),
        (r#""body":"text""#, "expected an OTLP AnyValue object"),
    ] {
        let refused = malformed(&record(fields));
        assert!(refused.contains(reason), "{fields}: {refused}");
        assert!(
            refused.starts_with("the body is not OTLP/JSON logs"),
            "{refused}"
        );
    }
    for broken in [
        "",
        "[]",
        "{\"resourceLogs\":[{}]} trailing",
        "{\"resourceLogs\":[null]}",
    ] {
        malformed(broken);
    }
}

/// A long string the parser quotes in its message comes back cut, not whole.
#[test]
fn a_refusal_quotes_little_of_the_body() {
    let long = "x".repeat(100_000);
    let refused = malformed(&format!(r#"{{"resourceLogs":"{long}"}}"#));
    assert!(refused.len() < 300, "{} bytes", refused.len());
}

/// Values nested deeper than [`MAX_VALUE_DEPTH`] are refused as the protobuf decoder
/// refuses them; at the bound they decode. Nesting far beyond anything OTLP allows
/// (a million brackets, in a known or an unknown field) is refused without exhausting
/// the stack.
#[test]
fn deep_nesting_is_refused_with_its_reason() {
    let nested = |depth: usize| {
        let mut value = r#"{"stringValue":"leaf"}"#.to_owned();
        for _ in 1..depth {
            value = format!(r#"{{"arrayValue":{{"values":[{value}]}}}}"#);
        }
        format!(r#"{{"resourceLogs":[{{"scopeLogs":[{{"logRecords":[{{"body":{value}}}]}}]}}]}}"#)
    };
    let decoded = json(&nested(MAX_VALUE_DEPTH)).unwrap();
    assert!(
        decoded.resource_logs[0].scope_logs[0].log_records[0]
            .body
            .is_some()
    );
    let refused = malformed(&nested(MAX_VALUE_DEPTH + 1));
    assert!(refused.contains("nested more than 32 deep"), "{refused}");

    for bomb in [
        format!("{}{}", "[".repeat(1_000_000), "]".repeat(1_000_000)),
        format!(r#"{{"unknown":{}}}"#, "[".repeat(1_000_000)),
        format!(
            r#"{{"resourceLogs":[{{"scopeLogs":[{{"logRecords":[{{"body":{}}}]}}]}}]}}"#,
            r#"{"kvlistValue":{"values":[{"key":"k","value":"#.repeat(100_000)
        ),
    ] {
        assert!(matches!(json(&bomb), Err(DecodeError::Malformed(_))));
    }
}

/// Huge arrays are refused by the message count where they cross it, before the rest
/// is built: empty objects, empty attributes, empty strings in a repeated field.
#[test]
fn huge_arrays_are_refused_by_the_message_count() {
    let limits = PushLimits {
        max_otlp_messages: 1_000,
        ..PushLimits::default()
    };
    let many = |element: &str| vec![element; 5_000].join(",");
    for body in [
        format!(r#"{{"resourceLogs":[{}]}}"#, many("{}")),
        format!(
            r#"{{"resourceLogs":[{{"scopeLogs":[{{"logRecords":[{{"attributes":[{}]}}]}}]}}]}}"#,
            many("{}")
        ),
        format!(
            r#"{{"resourceLogs":[{{"resource":{{"entityRefs":[{{"idKeys":[{}]}}]}}}}]}}"#,
            many(r#""""#)
        ),
        format!(
            r#"{{"resourceLogs":[{{"scopeLogs":[{{"logRecords":[{{"body":{{"arrayValue":{{"values":[{}]}}}}}}]}}]}}]}}"#,
            many("{}")
        ),
    ] {
        assert_eq!(
            decode(body.as_bytes(), &limits),
            Err(DecodeError::TooManyMessages { limit: 1_000 }),
            "{}",
            &body[..80]
        );
    }
    // Arrays in unknown fields build nothing and count nothing.
    let ignored = format!(r#"{{"unknown":[{}]}}"#, many("{}"));
    assert!(decode(ignored.as_bytes(), &limits).is_ok());
}

#[test]
fn a_body_over_the_decompressed_limit_is_refused() {
    let limits = PushLimits {
        max_decompressed_bytes: 10,
        ..PushLimits::default()
    };
    assert!(matches!(
        decode(br#"{"resourceLogs":[]}"#, &limits),
        Err(DecodeError::DecompressedTooLarge { .. })
    ));
}

/// A request the protobuf decoder reads is read the same from JSON written by hand
/// from it: the two decoders agree on the message count for the same content.
#[test]
fn the_json_and_protobuf_decoders_count_alike() {
    use prost::Message;
    let request = one_record(LogRecord {
        body: text("x"),
        attributes: vec![KeyValue::default(); 3],
        ..LogRecord::default()
    });
    let body = r#"{"resourceLogs":[{"scopeLogs":[{"logRecords":[{"body":{"stringValue":"x"},"attributes":[{},{},{}]}]}]}]}"#;
    // Request, ResourceLogs, ScopeLogs, LogRecord, the body, three attributes: 8.
    for limit in [7, 8] {
        let limits = PushLimits {
            max_otlp_messages: limit,
            ..PushLimits::default()
        };
        let from_protobuf = crate::otlp_logs::decode(&request.encode_to_vec(), &limits);
        let from_json = decode(body.as_bytes(), &limits);
        assert_eq!(from_protobuf.is_ok(), from_json.is_ok(), "limit {limit}");
        if let Ok(from_json) = from_json {
            assert_eq!(from_json, request);
        }
    }
}
