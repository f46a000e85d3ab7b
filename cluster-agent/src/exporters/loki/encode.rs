//! Log records as a Loki push request: Loki's `logproto.PushRequest`
//! ([`kaas_proto::loki`], field numbers as in its published `pkg/push/push.proto`),
//! snappy block compressed as remote-write is.
//!
//! **Mapping**, close to Loki's own OTLP ingestion:
//! - stream labels: the configured attributes ([`LokiSettings::labels`], already
//!   checked against the allow-list, at most [`MAX_LOKI_STREAM_LABELS`]) found among
//!   the resource's attributes, then the record's, and the record's `severity_text`;
//!   names with every character outside `[A-Za-z0-9_]` as `_` (`k8s.pod.name` →
//!   `k8s_pod_name`), as Loki's label names allow. Attributes that would make a stream
//!   per record ([`HIGH_CARDINALITY_ATTRIBUTES`]) are never labels, whatever the list
//!   says. A record without any label gets `service_name="unknown_service"`, as Loki
//!   names such streams itself (it refuses a stream without labels).
//! - structured metadata: every other resource and record attribute (names as for
//!   labels), and, when set, `scope_name`, `scope_version`, `severity_text`,
//!   `severity_number`, `trace_id` and `span_id` (lower-case hex), `flags`,
//!   `event_name`, `observed_timestamp` (Unix nanoseconds) and `dropped_attributes_count`.
//!   Values that are not strings are written as JSON.
//! - the line: the body, a string as it is and anything else as JSON.
//! - the timestamp: the record's time, else its observed time.
//!
//! Streams are listed in the order their first record came, each stream's entries in
//! the order of the records.

use std::collections::HashMap;

use kaas_pipeline::logs::output::{HIGH_CARDINALITY_ATTRIBUTES, MAX_LOKI_STREAM_LABELS};
use kaas_proto::otlp::{ExportLogsServiceRequest, KeyValue, LogRecord};
use prost::Message;

use super::LokiSettings;
use crate::record::logs::{RecordInContext, any_value_text, each_record, record_time_ns};

/// The label Loki gives streams without one.
const FALLBACK_LABEL: (&str, &str) = ("service_name", "unknown_service");
/// The record field that may be a stream label besides attributes.
const SEVERITY_TEXT: &str = "severity_text";

pub use kaas_proto::loki::{EntryAdapter, LabelPairAdapter, PushRequest, StreamAdapter, Timestamp};

/// A Loki label or structured-metadata name for an attribute key.
pub fn label_name(key: &str) -> String {
    let mut name: String = key
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    if name.starts_with(|c: char| c.is_ascii_digit()) || name.is_empty() {
        name.insert(0, '_');
    }
    name
}

/// A label value quoted as in Prometheus' notation.
fn quoted(value: &str) -> String {
    let mut out = String::with_capacity(value.len() + 2);
    out.push('"');
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// The attributes that may be stream labels: the configured ones less the
/// high-cardinality ones, at most [`MAX_LOKI_STREAM_LABELS`].
fn stream_labels(settings: &LokiSettings) -> Vec<&str> {
    settings
        .labels
        .iter()
        .map(String::as_str)
        .filter(|label| !HIGH_CARDINALITY_ATTRIBUTES.contains(label))
        .take(MAX_LOKI_STREAM_LABELS)
        .collect()
}

fn push_pair(pairs: &mut Vec<LabelPairAdapter>, name: &str, value: String) {
    pairs.push(LabelPairAdapter {
        name: label_name(name),
        value,
    });
}

/// One record's stream labels and entry.
fn entry(
    record: &LogRecord,
    resource: &[KeyValue],
    scope: Option<&kaas_proto::otlp::InstrumentationScope>,
    labels: &[&str],
) -> (String, EntryAdapter) {
    let mut stream: Vec<(String, String)> = Vec::new();
    let mut metadata = Vec::new();
    for kv in resource.iter().chain(&record.attributes) {
        let value = kv
            .value
            .as_ref()
            .map(|v| any_value_text(v).into_owned())
            .unwrap_or_default();
        if labels.contains(&kv.key.as_str()) {
            let name = label_name(&kv.key);
            // The resource's value wins over a record attribute of the same key.
            if !stream.iter().any(|(n, _)| *n == name) {
                stream.push((name, value));
            }
        } else {
            push_pair(&mut metadata, &kv.key, value);
        }
    }
    if !record.severity_text.is_empty() {
        if labels.contains(&SEVERITY_TEXT) {
            stream.push((SEVERITY_TEXT.to_owned(), record.severity_text.clone()));
        } else {
            push_pair(&mut metadata, SEVERITY_TEXT, record.severity_text.clone());
        }
    }
    if let Some(scope) = scope {
        if !scope.name.is_empty() {
            push_pair(&mut metadata, "scope_name", scope.name.clone());
        }
        if !scope.version.is_empty() {
            push_pair(&mut metadata, "scope_version", scope.version.clone());
        }
    }
    let numbers = [
        ("severity_number", i64::from(record.severity_number)),
        ("flags", i64::from(record.flags)),
        (
            "dropped_attributes_count",
            i64::from(record.dropped_attributes_count),
        ),
    ];
    for (name, value) in numbers {
        if value != 0 {
            push_pair(&mut metadata, name, value.to_string());
        }
    }
    for (name, bytes) in [("trace_id", &record.trace_id), ("span_id", &record.span_id)] {
        if !bytes.is_empty() {
            push_pair(&mut metadata, name, hex::encode(bytes));
        }
    }
    if !record.event_name.is_empty() {
        push_pair(&mut metadata, "event_name", record.event_name.clone());
    }
    if record.observed_time_unix_nano != 0 {
        push_pair(
            &mut metadata,
            "observed_timestamp",
            record.observed_time_unix_nano.to_string(),
        );
    }
    if stream.is_empty() {
        stream.push((FALLBACK_LABEL.0.to_owned(), FALLBACK_LABEL.1.to_owned()));
    }
    stream.sort();
    let labels = format!(
        "{{{}}}",
        stream
            .iter()
            .map(|(name, value)| format!("{name}={}", quoted(value)))
            .collect::<Vec<_>>()
            .join(", ")
    );
    let ns = record_time_ns(record);
    let entry = EntryAdapter {
        timestamp: Some(Timestamp {
            seconds: i64::try_from(ns / 1_000_000_000).unwrap_or(i64::MAX),
            // Below 10^9, so it fits.
            nanos: i32::try_from(ns % 1_000_000_000).unwrap_or_default(),
        }),
        line: record
            .body
            .as_ref()
            .map(|b| any_value_text(b).into_owned())
            .unwrap_or_default(),
        structured_metadata: metadata,
    };
    (labels, entry)
}

/// The push request for `request`, before compression.
pub fn push_request(request: &ExportLogsServiceRequest, settings: &LokiSettings) -> PushRequest {
    let labels = stream_labels(settings);
    let mut streams: Vec<StreamAdapter> = Vec::new();
    let mut index: HashMap<String, usize> = HashMap::new();
    for RecordInContext {
        resource,
        scope,
        record,
    } in each_record(request)
    {
        let (stream, entry) = entry(record, resource, scope, &labels);
        let at = *index.entry(stream.clone()).or_insert_with(|| {
            streams.push(StreamAdapter {
                labels: stream,
                entries: Vec::new(),
                hash: 0,
            });
            streams.len() - 1
        });
        streams[at].entries.push(entry);
    }
    PushRequest { streams }
}

/// The body of a push: the request encoded and snappy block compressed.
pub fn encode(request: &ExportLogsServiceRequest, settings: &LokiSettings) -> Vec<u8> {
    crate::record::metrics::compress(&push_request(request, settings).encode_to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_names_are_loki_names() {
        assert_eq!(label_name("k8s.pod.name"), "k8s_pod_name");
        assert_eq!(
            label_name("app.kubernetes.io/name"),
            "app_kubernetes_io_name"
        );
        assert_eq!(label_name("1x"), "_1x");
        assert_eq!(quoted("a\"b\\c\nd"), r#""a\"b\\c\nd""#);
    }

    #[test]
    fn high_cardinality_attributes_never_become_labels_and_at_most_fifteen_do() {
        let settings = LokiSettings {
            url: "http://127.0.0.1/loki/api/v1/push"
                .parse::<url::Url>()
                .unwrap()
                .into(),
            tenant_id: None,
            labels: std::iter::once("k8s.pod.uid".to_owned())
                .chain((0..20).map(|i| format!("l{i}")))
                .collect(),
            timeout: std::time::Duration::from_secs(1),
        };
        let labels = stream_labels(&settings);
        assert_eq!(labels.len(), MAX_LOKI_STREAM_LABELS);
        assert!(!labels.contains(&"k8s.pod.uid"));
    }
}
