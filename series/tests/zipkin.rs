//! Zipkin v2 JSON fixtures, written as the Zipkin API (`zipkin2-api.yaml`) defines the
//! span list: every one in `testdata/zipkin/good/` converts to the OTLP request
//! checked here field by field, and every one in `testdata/zipkin/bad/` is refused with
//! exactly the message paired with it below (and every bad fixture has a pair).

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};

use kaas_proto::otlp::any_value::Value;
use kaas_proto::otlp::span::{Event, Link};
use kaas_proto::otlp::{
    AnyValue, ExportTraceServiceRequest, InstrumentationScope, KeyValue, Resource, ResourceSpans,
    ScopeSpans, Span, SpanKind, Status, StatusCode,
};
use kaas_series::zipkin::decode;
use kaas_series::{DecodeError, PushLimits};

fn fixtures(kind: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("testdata/zipkin")
        .join(kind)
}

fn good(name: &str) -> ExportTraceServiceRequest {
    let body = fs::read(fixtures("good").join(name)).expect("the fixture");
    decode(&body, &PushLimits::default()).expect("a good fixture converts")
}

fn string(key: &str, value: &str) -> KeyValue {
    any(key, Value::StringValue(value.into()))
}

fn int(key: &str, value: i64) -> KeyValue {
    any(key, Value::IntValue(value))
}

fn any(key: &str, value: Value) -> KeyValue {
    KeyValue {
        key: key.into(),
        value: Some(AnyValue { value: Some(value) }),
    }
}

// The trace types are gaining the protocol's remaining fields (`schema_url`): the
// update syntax keeps these right before and after.
#[allow(clippy::needless_update)]
fn resource_spans(resource: Resource, scope: ScopeSpans) -> ResourceSpans {
    ResourceSpans {
        resource: Some(resource),
        scope_spans: vec![scope],
        ..ResourceSpans::default()
    }
}

#[allow(clippy::needless_update)]
fn scope_spans(scope: Option<InstrumentationScope>, spans: Vec<Span>) -> ScopeSpans {
    ScopeSpans {
        scope,
        spans,
        ..ScopeSpans::default()
    }
}

fn hex(text: &str) -> Vec<u8> {
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&text[i..i + 2], 16).expect("hex"))
        .collect()
}

/// Every field of the span list, and every tag the translator gives a meaning: tags,
/// annotations as events, link tags as links.
#[test]
fn every_field_converts() {
    let expected = ExportTraceServiceRequest {
        resource_spans: vec![resource_spans(
            Resource {
                attributes: vec![
                    string("service.name", "backend"),
                    string("host.name", "node-7"),
                ],
                ..Resource::default()
            },
            scope_spans(
                Some(InstrumentationScope {
                    name: "brave".into(),
                    version: "5.13".into(),
                    ..InstrumentationScope::default()
                }),
                vec![Span {
                    trace_id: hex("4e441824ec2b6a44ffdc9bb9a6453df3"),
                    span_id: hex("ffdc9bb9a6453df3"),
                    trace_state: "ot=th:8".into(),
                    parent_span_id: hex("6b221d5bc9e6496c"),
                    // debug: the sampled flag; shared: the parent is remote.
                    flags: 0x301,
                    name: "get /api".into(),
                    kind: SpanKind::Server as i32,
                    start_time_unix_nano: 1_556_604_172_355_737_000,
                    end_time_unix_nano: 1_556_604_172_357_168_000,
                    attributes: vec![
                        // Kept: only "true" is removed once it made the status ERROR.
                        string("error", "timeout"),
                        string("http.method", "GET"),
                        string("http.path", "/api"),
                        string("otlp.link.1", "not|a|link"),
                        // The IPv6 address replaces the IPv4 one, as in the Collector.
                        string("net.host.ip", "2001:db8::c001"),
                        int("net.host.port", 3306),
                        string("peer.service", "frontend"),
                        string("net.peer.ip", "172.19.0.2"),
                        int("net.peer.port", 58648),
                    ],
                    events: vec![
                        Event {
                            time_unix_nano: 1_556_604_172_355_800_000,
                            name: "wr".into(),
                            attributes: vec![],
                            dropped_attributes_count: 0,
                        },
                        Event {
                            time_unix_nano: 1_556_604_172_355_900_000,
                            name: "retry".into(),
                            attributes: vec![
                                int("attempt", 2),
                                any("cached", Value::BoolValue(false)),
                                any("delay", Value::DoubleValue(1.5)),
                                string("reason", "timeout"),
                            ],
                            dropped_attributes_count: 1,
                        },
                    ],
                    links: vec![Link {
                        trace_id: hex("5af7183fb1d4cf5f5af7183fb1d4cf5f"),
                        span_id: hex("352bff9a74ca9ad2"),
                        trace_state: "ot=th:c".into(),
                        attributes: vec![string("link.kind", "follows-from")],
                        dropped_attributes_count: 0,
                        flags: 0,
                    }],
                    status: Some(Status {
                        message: "upstream timed out".into(),
                        code: StatusCode::Error as i32,
                    }),
                    ..Span::default()
                }],
            ),
        )],
    };
    assert_eq!(good("every-field.json"), expected);
}

/// The example span of `zipkin2-api.yaml`: a 64-bit trace id is padded to 128 bits.
#[test]
fn the_zipkin_api_example_converts() {
    let request = good("zipkin-api-example.json");
    let span = &request.resource_spans[0].scope_spans[0].spans[0];
    assert_eq!(span.trace_id, hex("00000000000000005af7183fb1d4cf5f"));
    assert_eq!(span.span_id, hex("352bff9a74ca9ad2"));
    assert_eq!(span.parent_span_id, hex("6b221d5bc9e6496c"));
    assert_eq!(span.flags, 0);
    assert_eq!(span.status, None);
    assert_eq!(
        span.attributes,
        [
            string("http.method", "GET"),
            string("http.path", "/api"),
            string("net.host.ip", "192.168.99.1"),
            int("net.host.port", 3306),
            string("net.peer.ip", "172.19.0.2"),
            int("net.peer.port", 58648),
        ]
    );
    assert_eq!(request.resource_spans[0].scope_spans[0].scope, None);
}

/// One `ResourceSpans` per service, sorted by name (no service first: its name sorts
/// before lowercase ones), one `ScopeSpans` per library; resource tags come from the
/// first span of a service and are dropped from the others.
#[test]
fn spans_are_grouped_by_service_and_library() {
    let request = good("services.json");
    let services: Vec<_> = request
        .resource_spans
        .iter()
        .map(|resource| {
            resource
                .resource
                .as_ref()
                .expect("a resource")
                .attributes
                .clone()
        })
        .collect();
    assert_eq!(
        services,
        [
            vec![],
            vec![string("service.name", "a")],
            vec![
                string("service.name", "b"),
                string("k8s.pod.name", "b-pod"),
                string("service.version", "2"),
            ],
        ]
    );
    let names = |resource: &ResourceSpans| -> Vec<(Option<String>, Vec<String>)> {
        resource
            .scope_spans
            .iter()
            .map(|scope| {
                (
                    scope.scope.as_ref().map(|scope| scope.name.clone()),
                    scope.spans.iter().map(|span| span.name.clone()).collect(),
                )
            })
            .collect()
    };
    assert_eq!(
        names(&request.resource_spans[0]),
        [(None, vec!["orphan".into()])]
    );
    assert_eq!(
        names(&request.resource_spans[1]),
        [
            (None, vec!["a-2".into()]),
            (Some("lib-z".into()), vec!["a-1".into()]),
        ]
    );
    assert_eq!(
        names(&request.resource_spans[2]),
        [(None, vec!["b-1".into(), "b-2".into()])]
    );
    let b2 = &request.resource_spans[2].scope_spans[0].spans[1];
    assert_eq!(
        b2.attributes,
        [string("peer", "y")],
        "a resource tag of a later span is dropped"
    );
    let orphan = &request.resource_spans[0].scope_spans[0].spans[0];
    assert_eq!(orphan.trace_id, hex("000000000000000000000000000000a1"));
    assert_eq!(orphan.span_id, hex("0000000000000003"));
    assert!(
        orphan.attributes.is_empty(),
        "a span with a timestamp has no absent-start attribute; host.name is dropped without a service"
    );
    assert_eq!(
        (orphan.start_time_unix_nano, orphan.end_time_unix_nano),
        (1_002_000, 1_002_000)
    );
}

/// Fixture file name → the exact refusal.
const BAD: &[(&str, &str)] = &[
    (
        "not-an-array.json",
        "the body is not a Zipkin v2 JSON list of spans: invalid type: map, expected a JSON array of Zipkin v2 spans at line 1 column 0",
    ),
    (
        "span-not-an-object.json",
        "the body is not a Zipkin v2 JSON list of spans: invalid type: string \"get /api\", expected a Zipkin v2 span object at line 1 column 11",
    ),
    (
        "trace-id-missing.json",
        "the body is not a Zipkin v2 JSON list of spans: the span at index 0: traceId is missing at line 1 column 141",
    ),
    (
        "id-missing.json",
        "the body is not a Zipkin v2 JSON list of spans: the span at index 0: id is missing at line 1 column 146",
    ),
    (
        "trace-id-not-hex.json",
        "the body is not a Zipkin v2 JSON list of spans: the span at index 0: traceId \"5af7183fb1d4cf5g\" is not 1 to 32 hex digits at line 1 column 172",
    ),
    (
        "trace-id-too-long.json",
        "the body is not a Zipkin v2 JSON list of spans: the span at index 0: traceId \"4e441824ec2b6a44ffdc9bb9a6453df3a\" is not 1 to 32 hex digits at line 1 column 189",
    ),
    (
        "trace-id-all-zeros.json",
        "the body is not a Zipkin v2 JSON list of spans: the span at index 0: traceId is all zeros at line 1 column 188",
    ),
    (
        "trace-id-a-number.json",
        "the body is not a Zipkin v2 JSON list of spans: invalid type: integer `1234`, expected a string for the traceId at line 1 column 17",
    ),
    (
        "id-too-long.json",
        "the body is not a Zipkin v2 JSON list of spans: the span at index 0: id \"352bff9a74ca9ad2a\" is not 1 to 16 hex digits at line 1 column 173",
    ),
    (
        "id-too-long-to-read.json",
        "the id of the span at index 0 is 80 bytes long, more than the limit of 64",
    ),
    (
        "parent-id-not-hex.json",
        "the body is not a Zipkin v2 JSON list of spans: the span at index 0: parentId \"6b221d5bc9e6496x\" is not 1 to 16 hex digits at line 1 column 204",
    ),
    (
        "timestamp-negative.json",
        "the body is not a Zipkin v2 JSON list of spans: invalid value: integer `-1`, expected u64 at line 1 column 94",
    ),
    (
        "timestamp-a-string.json",
        "the body is not a Zipkin v2 JSON list of spans: invalid type: string \"1556604172355737\", expected u64 at line 1 column 110",
    ),
    (
        "timestamp-past-2554.json",
        "the body is not a Zipkin v2 JSON list of spans: the span at index 0: the timestamp 99999999999999999 µs is past the latest time OTLP holds (year 2554) at line 1 column 173",
    ),
    (
        "duration-past-2554.json",
        "the body is not a Zipkin v2 JSON list of spans: the span at index 0: the timestamp plus the duration is past the latest time OTLP holds (year 2554) at line 1 column 173",
    ),
    (
        "debug-not-a-boolean.json",
        "the body is not a Zipkin v2 JSON list of spans: invalid type: string \"yes\", expected a boolean at line 1 column 187",
    ),
    (
        "tag-value-a-number.json",
        "the body is not a Zipkin v2 JSON list of spans: invalid type: integer `200`, expected a string for the value of tag \"http.status_code\" at line 1 column 205",
    ),
    (
        "tags-an-array.json",
        "the body is not a Zipkin v2 JSON list of spans: invalid type: sequence, expected an object of string tags at line 1 column 182",
    ),
    (
        "too-many-tags.json",
        "the span at index 0 has more than 128 tags",
    ),
    (
        "too-many-annotations.json",
        "the span at index 0 has more than 128 annotations",
    ),
    (
        "annotation-without-timestamp.json",
        "the body is not a Zipkin v2 JSON list of spans: the span at index 0: an annotation has no timestamp at line 1 column 204",
    ),
    (
        "tag-value-too-long.json",
        "the value of tag \"db.statement\" of the span at index 0 is 16385 bytes long, more than the limit of 16384",
    ),
    (
        "tag-key-too-long.json",
        "a tag key of the span at index 0 is 257 bytes long, more than the limit of 256",
    ),
    (
        "name-too-long.json",
        "the name of the span at index 0 is 4097 bytes long, more than the limit of 4096",
    ),
    (
        "service-name-too-long.json",
        "the serviceName of the span at index 0 is 4097 bytes long, more than the limit of 4096",
    ),
    (
        "ipv4-not-an-address.json",
        "the body is not a Zipkin v2 JSON list of spans: the span at index 0: remoteEndpoint.ipv4 \"300.1.1.1\" is not an IP address at line 1 column 211",
    ),
    (
        "port-out-of-range.json",
        "the body is not a Zipkin v2 JSON list of spans: invalid value: integer `70000`, expected u16 at line 1 column 225",
    ),
    (
        "kind-an-object.json",
        "the body is not a Zipkin v2 JSON list of spans: invalid type: map, expected a string for the kind at line 1 column 182",
    ),
    (
        "deep-nesting.json",
        "the body is not a Zipkin v2 JSON list of spans: invalid type: sequence, expected an endpoint object for localEndpoint at line 1 column 72",
    ),
    (
        "trailing-garbage.json",
        "the body is not a Zipkin v2 JSON list of spans: trailing characters at line 1 column 4",
    ),
    (
        "empty.json",
        "the body is not a Zipkin v2 JSON list of spans: EOF while parsing a value at line 1 column 0",
    ),
    (
        "truncated.json",
        "the body is not a Zipkin v2 JSON list of spans: EOF while parsing a string at line 1 column 42",
    ),
];

#[test]
fn every_bad_fixture_is_refused_with_its_message() {
    let mut failures = Vec::new();
    for (name, expected) in BAD {
        let body = fs::read(fixtures("bad").join(name)).expect("the fixture");
        match decode(&body, &PushLimits::default()) {
            Ok(_) => failures.push(format!("{name}: accepted")),
            Err(error) if error.to_string() != *expected => {
                failures.push(format!("{name}: {error}"));
            }
            Err(error) => assert!(
                !error.is_too_large(),
                "{name}: a content refusal is a 400, not a 413"
            ),
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn every_bad_fixture_has_its_message() {
    let on_disk: BTreeSet<String> = fs::read_dir(fixtures("bad"))
        .expect("the fixtures")
        .map(|entry| {
            entry
                .expect("an entry")
                .file_name()
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    let paired: BTreeSet<String> = BAD.iter().map(|(name, _)| (*name).to_owned()).collect();
    assert_eq!(on_disk, paired);
}

/// The refusals that depend on the limits: the body's size, and the messages all spans
/// make together (checked while reading, so a huge array stops at the limit).
#[test]
fn the_request_limits_refuse_before_the_body_is_read_whole() {
    let span = r#"{"traceId":"5af7183fb1d4cf5f","id":"352bff9a74ca9ad2","tags":{"a":"b"}}"#;
    let body = format!("[{}]", vec![span; 1000].join(","));
    let limits = PushLimits {
        max_decompressed_bytes: 1000,
        ..PushLimits::default()
    };
    assert_eq!(
        decode(body.as_bytes(), &limits),
        Err(DecodeError::DecompressedTooLarge {
            limit: 1000,
            size: Some(body.len() as u64)
        })
    );
    let limits = PushLimits {
        max_otlp_messages: 100,
        ..PushLimits::default()
    };
    let refusal = decode(body.as_bytes(), &limits).expect_err("too many spans");
    assert_eq!(refusal, DecodeError::TooManyMessages { limit: 100 });
    assert!(refusal.is_too_large(), "413");
    // Refused where the limit is crossed: the broken end of the body is never read.
    let body = format!("[{},{{\"broken", vec![span; 1000].join(","));
    assert_eq!(
        decode(body.as_bytes(), &limits),
        Err(DecodeError::TooManyMessages { limit: 100 })
    );
}
