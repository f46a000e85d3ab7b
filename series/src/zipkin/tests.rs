//! The mapping rules one at a time, on inline spans; the fixtures of the Zipkin API's
//! schema and the refusals are in `tests/zipkin.rs`.

use super::convert::{RESOURCE_TAGS, is_resource_tag, key_value};
use super::*;
use kaas_proto::otlp::any_value::Value;
use kaas_proto::otlp::span::{Event, Link};
use kaas_proto::otlp::{AnyValue, ResourceSpans, ScopeSpans, Span, Status, StatusCode};

/// The one span of a body of one span.
fn one(span: &str) -> Span {
    let request =
        decode(format!("[{span}]").as_bytes(), &PushLimits::default()).expect("the span converts");
    let [resource] = <[ResourceSpans; 1]>::try_from(request.resource_spans).expect("one service");
    let [scope] = <[ScopeSpans; 1]>::try_from(resource.scope_spans).expect("one scope");
    let [span] = <[Span; 1]>::try_from(scope.spans).expect("one span");
    span
}

fn with_tags(tags: &str) -> Span {
    one(&format!(
        r#"{{"traceId":"1","id":"2","timestamp":1,"tags":{tags}}}"#
    ))
}

fn attribute<'s>(span: &'s Span, key: &str) -> Option<&'s Value> {
    span.attributes
        .iter()
        .find(|attribute| attribute.key == key)
        .and_then(|attribute| attribute.value.as_ref()?.value.as_ref())
}

#[test]
fn the_resource_tags_are_sorted_for_binary_search() {
    assert!(RESOURCE_TAGS.windows(2).all(|pair| pair[0] < pair[1]));
    assert!(is_resource_tag("k8s.namespace.name"));
    assert!(!is_resource_tag("http.method"));
}

#[test]
fn short_and_uppercase_ids_are_padded() {
    let span = one(r#"{"traceId":"ABC","id":"F","parentId":"00a"}"#);
    assert_eq!(span.trace_id, [&[0u8; 14][..], &[0x0a, 0xbc]].concat());
    assert_eq!(span.span_id, [0, 0, 0, 0, 0, 0, 0, 0x0f]);
    assert_eq!(span.parent_span_id, [0, 0, 0, 0, 0, 0, 0, 0x0a]);
}

#[test]
fn a_parent_that_is_empty_zero_or_the_span_itself_is_no_parent() {
    for parent in [r#""""#, r#""0000000000000000""#, r#""2""#, "null"] {
        let span = one(&format!(
            r#"{{"traceId":"1","id":"2","parentId":{parent}}}"#
        ));
        assert!(span.parent_span_id.is_empty(), "{parent}");
    }
}

#[test]
fn a_span_without_timestamp_starts_at_zero_and_says_so() {
    let span = one(r#"{"traceId":"1","id":"2","duration":7}"#);
    assert_eq!(
        (span.start_time_unix_nano, span.end_time_unix_nano),
        (0, 7000)
    );
    assert_eq!(
        attribute(&span, START_TIME_ABSENT),
        Some(&Value::BoolValue(true))
    );
}

#[test]
fn kind_comes_from_the_field_or_the_span_kind_tag() {
    for (kind, expected) in [
        ("CLIENT", SpanKind::Client),
        ("SERVER", SpanKind::Server),
        ("PRODUCER", SpanKind::Producer),
        ("CONSUMER", SpanKind::Consumer),
        ("client", SpanKind::Unspecified),
    ] {
        let span = one(&format!(r#"{{"traceId":"1","id":"2","kind":"{kind}"}}"#));
        assert_eq!(span.kind, expected as i32, "{kind}");
    }
    let span = with_tags(r#"{"span.kind":"internal"}"#);
    assert_eq!(span.kind, SpanKind::Internal as i32);
    assert!(span.attributes.is_empty(), "the tag is removed");
    let span = with_tags(r#"{"span.kind":"server"}"#);
    assert_eq!(span.kind, SpanKind::Unspecified as i32);
    assert!(span.attributes.is_empty(), "removed whatever its value");
}

#[test]
fn the_status_comes_from_its_tags() {
    let code = |tags: &str| {
        let span = with_tags(tags);
        let status = span.status.clone().unwrap_or(Status {
            message: String::new(),
            code: 0,
        });
        let keys: Vec<_> = span.attributes.iter().map(|a| a.key.clone()).collect();
        (status.code, status.message, keys)
    };
    let (ok, error, unset) = (
        StatusCode::Ok as i32,
        StatusCode::Error as i32,
        StatusCode::Unset as i32,
    );
    for spelling in ["STATUS_CODE_OK", "Ok", "OK"] {
        assert_eq!(
            code(&format!(r#"{{"otel.status_code":"{spelling}"}}"#)).0,
            ok
        );
    }
    for spelling in ["STATUS_CODE_ERROR", "Error", "ERROR"] {
        assert_eq!(
            code(&format!(r#"{{"otel.status_code":"{spelling}"}}"#)).0,
            error
        );
    }
    assert_eq!(
        code(r#"{"otel.status_code":"bogus"}"#),
        (unset, String::new(), vec![])
    );
    assert_eq!(
        code(r#"{"otel.status_code":"ERROR","otel.status_description":"boom"}"#),
        (error, "boom".into(), vec![])
    );
    assert_eq!(
        code(r#"{"otel.status_description":"alone"}"#),
        (unset, String::new(), vec!["otel.status_description".into()]),
        "a description without a code stays a tag"
    );
    assert_eq!(code(r#"{"error":"true"}"#), (error, String::new(), vec![]));
    assert_eq!(
        code(r#"{"error":"connection refused"}"#),
        (error, String::new(), vec!["error".into()])
    );
    assert_eq!(
        code(r#"{"otel.status_code":"OK","error":"true"}"#).0,
        error,
        "error wins"
    );
}

#[test]
fn the_service_name_source_tag_names_the_resource_attribute() {
    let body = r#"[{"traceId":"1","id":"2","localEndpoint":{"serviceName":"fn"},
        "tags":{"otlp.service.name.source":"faas.name","faas.id":"f-1"}}]"#;
    let request = decode(body.as_bytes(), &PushLimits::default()).expect("converts");
    let resource = request.resource_spans[0]
        .resource
        .as_ref()
        .expect("a resource");
    let keys: Vec<_> = resource.attributes.iter().map(|a| a.key.as_str()).collect();
    assert_eq!(keys, ["faas.name", "faas.id"]);
}

#[test]
fn tags_are_strings_sorted_by_key_and_the_last_of_a_key_wins() {
    let span = with_tags(r#"{"b":"1","a":null,"b":"2"}"#);
    let tags: Vec<_> = span
        .attributes
        .iter()
        .map(|a| (a.key.as_str(), a.value.clone()))
        .collect();
    let text = |value: &str| {
        Some(AnyValue {
            value: Some(Value::StringValue(value.into())),
        })
    };
    assert_eq!(tags, [("a", text("")), ("b", text("2"))]);
}

#[test]
fn endpoints_empty_or_mapped_are_read_as_the_collector_does() {
    let span = one(r#"{"traceId":"1","id":"2","localEndpoint":{},
            "remoteEndpoint":{"ipv6":"::ffff:10.1.2.3","ipv4":""}}"#);
    assert_eq!(
        attribute(&span, "net.peer.ip"),
        Some(&Value::StringValue("10.1.2.3".into())),
        "an IPv4-mapped address is written as IPv4"
    );
    assert_eq!(attribute(&span, "net.host.ip"), None);
    assert_eq!(
        attribute(&span, "net.peer.port"),
        None,
        "no port, no attribute"
    );
}

#[test]
fn annotations_split_only_in_the_collectors_form() {
    let event = |value: &str| {
        let span = one(&format!(
            r#"{{"traceId":"1","id":"2","annotations":[{{"timestamp":5,"value":{value}}}]}}"#
        ));
        let [event] = <[Event; 1]>::try_from(span.events).expect("one event");
        event
    };
    let name = |value: &str| event(value).name;
    assert_eq!(name(r#""a|b""#), "a|b", "one pipe: the whole value");
    assert_eq!(name(r#""a|b|c""#), "a|b|c", "no JSON in the middle");
    assert_eq!(name(r#""a|{not json}|1""#), "a|{not json}|1");
    assert_eq!(name(r#""a|{}|x""#), "a|{}|x", "no count at the end");
    assert_eq!(
        name(r#""a|{\"k\":\"x|y\"}|3""#),
        "a",
        "pipes inside the JSON"
    );
    assert_eq!(
        event(r#""a|{\"n\":1e3,\"big\":18446744073709551615,\"x\":null}|3""#),
        Event {
            time_unix_nano: 5000,
            name: "a".into(),
            attributes: vec![
                key_value(
                    "big".into(),
                    Value::DoubleValue(18_446_744_073_709_551_615.0)
                ),
                key_value("n".into(), Value::IntValue(1000)),
            ],
            dropped_attributes_count: 3,
        }
    );
}

#[test]
fn links_come_from_the_collectors_link_tags() {
    let span = with_tags(
        r#"{"otlp.link.0":"000000000000000000000000000000aa|00000000000000bb|k=v|{\"kind\":\"follows\"}|2",
            "otlp.link.1":"not a link",
            "otlp.link.2":"|||{}|0",
            "otlp.link.4":"000000000000000000000000000000cc|00000000000000dd||{}|0"}"#,
    );
    assert_eq!(
        span.links,
        [
            Link {
                trace_id: [&[0u8; 15][..], &[0xaa]].concat(),
                span_id: vec![0, 0, 0, 0, 0, 0, 0, 0xbb],
                trace_state: "k=v".into(),
                attributes: vec![key_value(
                    "kind".into(),
                    Value::StringValue("follows".into())
                )],
                dropped_attributes_count: 2,
                flags: 0,
            },
            Link {
                trace_id: vec![0; 16],
                span_id: vec![0; 8],
                trace_state: String::new(),
                attributes: vec![],
                dropped_attributes_count: 0,
                flags: 0,
            },
        ]
    );
    let keys: Vec<_> = span.attributes.iter().map(|a| a.key.as_str()).collect();
    assert_eq!(
        keys,
        ["otlp.link.1", "otlp.link.4"],
        "not a link: kept; after a missing index: not read"
    );
}

#[test]
fn the_attributes_of_annotations_count_against_the_limit() {
    let attributes: Vec<_> = (0..50).map(|i| format!(r#"\"k{i}\":1"#)).collect();
    let body = format!(
        r#"[{{"traceId":"1","id":"2","annotations":[{{"timestamp":5,"value":"a|{{{}}}|0"}}]}}]"#,
        attributes.join(",")
    );
    let limits = PushLimits {
        max_otlp_messages: 20,
        ..PushLimits::default()
    };
    assert_eq!(
        decode(body.as_bytes(), &limits),
        Err(DecodeError::TooManyMessages { limit: 20 })
    );
    assert!(decode(body.as_bytes(), &PushLimits::default()).is_ok());
}

#[test]
fn flags_carry_debug_and_shared() {
    let flags = |fields: &str| one(&format!(r#"{{"traceId":"1","id":"2"{fields}}}"#)).flags;
    assert_eq!(flags(""), 0);
    assert_eq!(flags(r#","debug":false,"shared":false"#), 0);
    assert_eq!(flags(r#","debug":true"#), 0x01);
    assert_eq!(flags(r#","shared":true"#), 0x300);
}

#[test]
fn an_empty_list_is_an_empty_request() {
    assert_eq!(
        decode(b" [ ] ", &PushLimits::default()),
        Ok(ExportTraceServiceRequest::default())
    );
}

/// Nesting in a field no span has is skipped without recursion (serde_json skips
/// values iteratively), however deep; in a field that has a type it is refused at the
/// first level (the fixture `deep-nesting.json`).
#[test]
fn deep_nesting_in_unknown_fields_is_skipped_without_recursion() {
    let depth = 1_000_000;
    let body = format!(
        r#"[{{"traceId":"1","id":"2","extra":{}{}}}]"#,
        "[".repeat(depth),
        "]".repeat(depth)
    );
    let request = decode(body.as_bytes(), &PushLimits::default()).expect("skipped");
    assert_eq!(request.resource_spans.len(), 1);
}
