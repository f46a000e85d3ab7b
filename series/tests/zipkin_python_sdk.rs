//! Zipkin v2 JSON as a real sender writes it: the OpenTelemetry Python SDK's Zipkin
//! exporter (`opentelemetry-exporter-zipkin-json`, installed by `scripts/test.sh`)
//! posts two spans (`tests/fixtures/zipkin_spans.py`), and what it posted converts to
//! the OTLP the Collector's translator makes of it.

use std::path::Path;
use std::process::Command;

use kaas_proto::otlp::any_value::Value;
use kaas_proto::otlp::{KeyValue, SpanKind, StatusCode};
use kaas_series::PushLimits;
use kaas_series::zipkin::decode;

fn posted_by_the_python_sdk() -> Vec<u8> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/zipkin_spans.py");
    let output = Command::new("python3")
        .arg(&script)
        .output()
        .expect("python3 runs");
    assert!(
        output.status.success(),
        "the Python SDK's Zipkin exporter ran: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    output.stdout
}

fn text(attributes: &[KeyValue], key: &str) -> Option<String> {
    let attribute = attributes.iter().find(|attribute| attribute.key == key)?;
    match attribute.value.as_ref()?.value.as_ref()? {
        Value::StringValue(value) => Some(value.clone()),
        Value::IntValue(value) => Some(value.to_string()),
        other => Some(format!("{other:?}")),
    }
}

#[test]
fn the_python_sdks_zipkin_spans_convert() {
    let request = decode(&posted_by_the_python_sdk(), &PushLimits::default())
        .expect("the SDK's body is accepted");
    assert_eq!(request.resource_spans.len(), 1, "one service");
    let resource_spans = &request.resource_spans[0];
    let resource = &resource_spans
        .resource
        .as_ref()
        .expect("a resource")
        .attributes;
    assert_eq!(text(resource, "service.name").as_deref(), Some("checkout"));
    assert_eq!(
        text(resource, "telemetry.sdk.language").as_deref(),
        Some("python")
    );
    assert!(text(resource, "service.instance.id").is_some());
    assert_eq!(resource_spans.scope_spans.len(), 1, "one library");
    let scope = resource_spans.scope_spans[0]
        .scope
        .as_ref()
        .expect("a scope");
    assert_eq!(
        (scope.name.as_str(), scope.version.as_str()),
        ("shop.checkout", "2.1.0")
    );

    let spans = &resource_spans.scope_spans[0].spans;
    let server = spans
        .iter()
        .find(|span| span.name == "POST /orders")
        .expect("the server span");
    let child = spans
        .iter()
        .find(|span| span.name == "load cart")
        .expect("the child span");
    assert_eq!(server.trace_id.len(), 16);
    assert_eq!(child.trace_id, server.trace_id);
    assert_eq!(child.parent_span_id, server.span_id);
    assert!(server.parent_span_id.is_empty());
    assert_eq!(server.kind, SpanKind::Server as i32);
    assert_eq!(
        child.kind,
        SpanKind::Unspecified as i32,
        "internal is sent as no kind"
    );
    assert_eq!(
        (server.start_time_unix_nano, server.end_time_unix_nano),
        (1_700_000_000_000_000_000, 1_700_000_000_002_000_000)
    );
    assert_eq!(
        (child.start_time_unix_nano, child.end_time_unix_nano),
        (1_700_000_000_000_500_000, 1_700_000_000_000_900_000)
    );
    assert_eq!(server.flags, 0x01, "the SDK marks sampled spans debug");
    let status = server.status.as_ref().expect("a status");
    assert_eq!(status.code, StatusCode::Error as i32);
    let attributes = &server.attributes;
    for (key, value) in [
        ("http.method", "POST"),
        ("http.status_code", "500"),
        ("retry", "true"),
        ("error", "payment failed"),
        ("net.host.ip", "10.1.2.3"),
        ("net.host.port", "8080"),
    ] {
        assert_eq!(text(attributes, key).as_deref(), Some(value), "{key}");
    }
    for moved in ["service.name", "otel.library.name", "otel.status_code"] {
        assert_eq!(
            text(attributes, moved),
            None,
            "{moved} is not a span attribute"
        );
    }
    // The SDK writes an event as JSON, not in the Collector's `name|{…}|n` form: it is
    // the event's name whole, as the Collector reads it.
    assert_eq!(server.events.len(), 1);
    assert_eq!(server.events[0].time_unix_nano, 1_700_000_000_001_000_000);
    assert_eq!(
        server.events[0].name,
        r#"{"payment declined": {"card.kind": "visa"}}"#
    );
}
