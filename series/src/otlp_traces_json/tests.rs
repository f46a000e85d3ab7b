//! The OTLP/JSON traces decoder against hand-written bodies: the OTLP repository's
//! example request, every span field in each encoding the specification allows, ids
//! checked, and hostile bodies refused by the limit they cross (the shared core's
//! limits are tested in full with the logs decoder).

use kaas_proto::otlp::any_value::Value;
use kaas_proto::otlp::span::{Event, Link};
use kaas_proto::otlp::{AnyValue, InstrumentationScope, KeyValue, Resource, SpanKind, StatusCode};
use prost::Message;

use super::*;

fn json(body: &str) -> Result<ExportTraceServiceRequest, DecodeError> {
    decode(body.as_bytes(), &PushLimits::default())
}

/// Why `body` is refused as malformed (and it must be).
fn malformed(body: &str) -> String {
    let refusal = json(body).expect_err("refused");
    let DecodeError::Malformed(reason) = refusal else {
        panic!("refused, but not as malformed: {refusal:?}");
    };
    reason
}

fn text(key: &str, value: &str) -> KeyValue {
    KeyValue {
        key: key.into(),
        value: Some(AnyValue {
            value: Some(Value::StringValue(value.into())),
        }),
    }
}

fn one_span(body_span: &str) -> Result<Span, DecodeError> {
    let body = format!(r#"{{"resourceSpans":[{{"scopeSpans":[{{"spans":[{body_span}]}}]}}]}}"#);
    let mut request = json(&body)?;
    Ok(request
        .resource_spans
        .remove(0)
        .scope_spans
        .remove(0)
        .spans
        .remove(0))
}

/// `examples/trace.json` of opentelemetry-proto, with every other span field added.
#[test]
fn every_field_decodes() {
    let body = r#"{"resourceSpans":[{
        "resource":{"attributes":[{"key":"service.name","value":{"stringValue":"my.service"}}]},
        "scopeSpans":[{
            "scope":{"name":"my.library","version":"1.0.0",
                "attributes":[{"key":"my.scope.attribute","value":{"stringValue":"some scope attribute"}}]},
            "spans":[{
                "traceId":"5B8EFFF798038103D269B633813FC60C",
                "spanId":"EEE19B7EC3C1B174",
                "parentSpanId":"EEE19B7EC3C1B173",
                "traceState":"ot=th:8,congo=t61rcWkgMzE",
                "flags":257,
                "name":"I'm a server span",
                "startTimeUnixNano":"1544712660000000000",
                "endTimeUnixNano":"1544712661000000000",
                "kind":2,
                "attributes":[{"key":"my.span.attr","value":{"stringValue":"some value"}}],
                "droppedAttributesCount":4,
                "events":[{"timeUnixNano":"1544712660500000000","name":"retry",
                    "attributes":[{"key":"attempt","value":{"intValue":"2"}}],"droppedAttributesCount":1}],
                "droppedEventsCount":5,
                "links":[{"traceId":"0af7651916cd43dd8448eb211c80319c","spanId":"b7ad6b7169203331",
                    "traceState":"ot=th:c","attributes":[{"key":"l","value":{"boolValue":true}}],
                    "droppedAttributesCount":2,"flags":"768"}],
                "droppedLinksCount":6,
                "status":{"message":"boom","code":2}}],
            "schemaUrl":"https://opentelemetry.io/schemas/1.9.0"}],
        "schemaUrl":"https://opentelemetry.io/schemas/1.8.0"}]}"#;
    let expected = ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(Resource {
                attributes: vec![text("service.name", "my.service")],
                ..Resource::default()
            }),
            scope_spans: vec![ScopeSpans {
                scope: Some(InstrumentationScope {
                    name: "my.library".into(),
                    version: "1.0.0".into(),
                    attributes: vec![text("my.scope.attribute", "some scope attribute")],
                    ..InstrumentationScope::default()
                }),
                spans: vec![Span {
                    trace_id: hex::decode("5b8efff798038103d269b633813fc60c").unwrap(),
                    span_id: hex::decode("eee19b7ec3c1b174").unwrap(),
                    parent_span_id: hex::decode("eee19b7ec3c1b173").unwrap(),
                    trace_state: "ot=th:8,congo=t61rcWkgMzE".into(),
                    flags: 257,
                    name: "I'm a server span".into(),
                    start_time_unix_nano: 1_544_712_660_000_000_000,
                    end_time_unix_nano: 1_544_712_661_000_000_000,
                    kind: SpanKind::Server as i32,
                    attributes: vec![text("my.span.attr", "some value")],
                    dropped_attributes_count: 4,
                    events: vec![Event {
                        time_unix_nano: 1_544_712_660_500_000_000,
                        name: "retry".into(),
                        attributes: vec![KeyValue {
                            key: "attempt".into(),
                            value: Some(AnyValue {
                                value: Some(Value::IntValue(2)),
                            }),
                        }],
                        dropped_attributes_count: 1,
                    }],
                    dropped_events_count: 5,
                    links: vec![Link {
                        trace_id: hex::decode("0af7651916cd43dd8448eb211c80319c").unwrap(),
                        span_id: hex::decode("b7ad6b7169203331").unwrap(),
                        trace_state: "ot=th:c".into(),
                        attributes: vec![KeyValue {
                            key: "l".into(),
                            value: Some(AnyValue {
                                value: Some(Value::BoolValue(true)),
                            }),
                        }],
                        dropped_attributes_count: 2,
                        flags: 768,
                    }],
                    dropped_links_count: 6,
                    status: Some(Status {
                        message: "boom".into(),
                        code: StatusCode::Error as i32,
                    }),
                }],
                schema_url: "https://opentelemetry.io/schemas/1.9.0".into(),
            }],
            schema_url: "https://opentelemetry.io/schemas/1.8.0".into(),
        }],
    };
    let decoded = json(body).unwrap();
    assert_eq!(decoded, expected);
    // What was read encodes to protobuf and back unchanged.
    let again = ExportTraceServiceRequest::decode(decoded.encode_to_vec().as_slice()).unwrap();
    assert_eq!(again, expected);
}

#[test]
fn enums_read_as_numbers_or_names_and_integers_as_strings_or_numbers() {
    let span = one_span(
        r#"{"kind":"SPAN_KIND_CONSUMER","status":{"code":"STATUS_CODE_OK"},
            "startTimeUnixNano":1e3,"endTimeUnixNano":"2000","flags":"1"}"#,
    )
    .unwrap();
    assert_eq!(span.kind, SpanKind::Consumer as i32);
    assert_eq!(span.status.unwrap().code, StatusCode::Ok as i32);
    assert_eq!(
        (span.start_time_unix_nano, span.end_time_unix_nano),
        (1000, 2000)
    );
    assert_eq!(span.flags, 1);
    // null is the default; the protobuf names are unknown fields, skipped.
    let span =
        one_span(r#"{"name":null,"status":null,"trace_id":"00","parent_span_id":1,"kind":null}"#)
            .unwrap();
    assert_eq!(span, Span::default());
    for (bad, reason) in [
        (r#"{"kind":"SERVER"}"#, "is not an integer"),
        (r#"{"kind":2147483648}"#, "out of the field's range"),
        (r#"{"flags":-1}"#, "out of the field's range"),
        (r#"{"startTimeUnixNano":"-1"}"#, "out of the field's range"),
        (r#"{"status":{"code":1.5}}"#, "not an integer"),
    ] {
        let refused = malformed(&format!(
            r#"{{"resourceSpans":[{{"scopeSpans":[{{"spans":[{bad}]}}]}}]}}"#
        ));
        assert!(refused.contains(reason), "{bad}: {refused}");
        assert!(
            refused.starts_with("the body is not OTLP/JSON traces"),
            "{refused}"
        );
    }
}

/// Ids are hex of their exact length, in either case, or empty; base64 (protobuf's
/// own JSON mapping of bytes) is refused rather than misread.
#[test]
fn ids_are_hex_of_their_length_or_empty() {
    let span = one_span(r#"{"traceId":"","spanId":"","parentSpanId":""}"#).unwrap();
    assert!(span.trace_id.is_empty() && span.span_id.is_empty() && span.parent_span_id.is_empty());
    let span = one_span(r#"{"traceId":"0af7651916cd43dd8448eb211c80319c"}"#).unwrap();
    assert_eq!(span.trace_id.len(), 16);
    for bad in [
        r#"{"traceId":"CvdlGRbNQ92ESOshHIAxnA=="}"#,
        r#"{"traceId":"0af7651916cd43dd8448eb211c80319"}"#,
        r#"{"traceId":"0af7651916cd43dd8448eb211c80319c00"}"#,
        r#"{"spanId":"b7ad6b7169203331aa"}"#,
        r#"{"links":[{"traceId":"0af7"}]}"#,
        r#"{"links":[{"spanId":"b7ad6b71692033"}]}"#,
        r#"{"parentSpanId":"zzad6b7169203331"}"#,
        r#"{"spanId":42}"#,
    ] {
        let refused = malformed(&format!(
            r#"{{"resourceSpans":[{{"scopeSpans":[{{"spans":[{bad}]}}]}}]}}"#
        ));
        assert!(
            refused.contains("hex digits") || refused.contains("invalid type"),
            "{bad}: {refused}"
        );
    }
}

/// The message count and the value nesting bound hold for spans as for log records.
#[test]
fn hostile_bodies_are_refused_by_the_limit_they_cross() {
    let limits = PushLimits {
        max_otlp_messages: 1_000,
        ..PushLimits::default()
    };
    let many = vec!["{}"; 5_000].join(",");
    for body in [
        format!(r#"{{"resourceSpans":[{{"scopeSpans":[{{"spans":[{many}]}}]}}]}}"#),
        format!(
            r#"{{"resourceSpans":[{{"scopeSpans":[{{"spans":[{{"attributes":[{many}]}}]}}]}}]}}"#
        ),
    ] {
        assert_eq!(
            decode(body.as_bytes(), &limits),
            Err(DecodeError::TooManyMessages { limit: 1_000 })
        );
    }
    // Request, ResourceSpans, ScopeSpans, Span, Status: 5.
    let body = r#"{"resourceSpans":[{"scopeSpans":[{"spans":[{"status":{}}]}]}]}"#;
    for (limit, accepted) in [(4, false), (5, true)] {
        let limits = PushLimits {
            max_otlp_messages: limit,
            ..PushLimits::default()
        };
        assert_eq!(
            decode(body.as_bytes(), &limits).is_ok(),
            accepted,
            "{limit}"
        );
    }
    let mut value = r#"{"stringValue":"leaf"}"#.to_owned();
    for _ in 0..crate::otlp_logs::MAX_VALUE_DEPTH {
        value = format!(r#"{{"arrayValue":{{"values":[{value}]}}}}"#);
    }
    let deep = format!(r#"{{"attributes":[{{"key":"k","value":{value}}}]}}"#);
    let refused = malformed(&format!(
        r#"{{"resourceSpans":[{{"scopeSpans":[{{"spans":[{deep}]}}]}}]}}"#
    ));
    assert!(refused.contains("nested more than 32 deep"), "{refused}");
    let tight = PushLimits {
        max_decompressed_bytes: 10,
        ..PushLimits::default()
    };
    let over = DecodeError::DecompressedTooLarge {
        limit: 10,
        size: Some(20),
    };
    assert_eq!(decode(br#"{"resourceSpans":[]}"#, &tight), Err(over));
    for broken in [
        "",
        "[]",
        r#"{"resourceSpans":[null]}"#,
        r#"{"resourceSpans":{}}"#,
    ] {
        malformed(broken);
    }
}
