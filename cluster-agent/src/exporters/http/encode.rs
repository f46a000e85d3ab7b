//! Log records as JSON documents, one per record, for JSON lines and the
//! Elasticsearch/OpenSearch bulk API.
//!
//! **The document** holds every field of the OTLP record, empty ones left out:
//! `@timestamp` (the record's time, else its observed time, RFC 3339 UTC with
//! nanoseconds), `observed_timestamp`, `severity_text`, `severity_number`, `body` (a
//! string as it is, structured bodies as JSON), `attributes`, `resource` (the
//! resource's attributes), `scope` (`name`, `version`, `attributes`), `trace_id` and
//! `span_id` (lower-case hex), `flags`, `event_name` and `dropped_attributes_count`.
//! With de-dotting on, pod label and annotation keys are de-dotted
//! ([`crate::processing::logs::dedot`]) in the document too: records that reached the
//! exporter without the pipeline's processing cannot bring dots back.
//!
//! **The bulk body** is NDJSON: for each record an action line
//! `{"create":{"_index":…}}` and the document line. `create` works for plain indices
//! and data streams alike. The index is the pattern with the record's UTC date
//! (`%Y`, `%m`, `%d`, `%H`) and namespace (`%N`, [`index_namespace`]) filled in.

use kaas_proto::otlp::{ExportLogsServiceRequest, InstrumentationScope, KeyValue, LogRecord};
use serde_json::{Map, Value, json};

use kaas_pipeline::logs::output::{IndexFill, MAX_INDEX_NAMESPACE_LEN, fill_index_pattern};

use crate::processing::logs::dedot::dedot;
use crate::record::logs::{
    RecordInContext, any_value_json, any_value_text, attributes_json, each_record, record_time_ns,
};

/// The attribute `%N` of an index pattern reads.
const NAMESPACE_ATTRIBUTE: &str = "k8s.namespace.name";
/// The namespace `%N` names for records without one.
const NO_NAMESPACE: &str = "none";

/// Seconds in a day.
const DAY_SECONDS: u64 = 86_400;

/// A UTC date and time, down to nanoseconds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UtcTime {
    /// Year.
    pub year: i64,
    /// Month, 1 to 12.
    pub month: u32,
    /// Day of the month, from 1.
    pub day: u32,
    /// Hour, 0 to 23.
    pub hour: u32,
    /// Minute.
    pub minute: u32,
    /// Second.
    pub second: u32,
    /// Nanoseconds within the second.
    pub nanos: u32,
}

impl UtcTime {
    /// The time `ns` nanoseconds after the Unix epoch.
    pub fn from_unix_nanos(ns: u64) -> Self {
        let seconds = ns / 1_000_000_000;
        let (days, in_day) = (seconds / DAY_SECONDS, seconds % DAY_SECONDS);
        // Howard Hinnant's civil_from_days, for days since 1970-01-01 (never negative).
        let z = i64::try_from(days).unwrap_or(i64::MAX / 2) + 719_468;
        let era = z / 146_097;
        let doe = z - era * 146_097;
        let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
        let mp = (5 * doy + 2) / 153;
        let day = doy - (153 * mp + 2) / 5 + 1;
        let month = if mp < 10 { mp + 3 } else { mp - 9 };
        let year = yoe + era * 400 + i64::from(month <= 2);
        // Each part is below its bound (a day, a month, an hour...), so the casts fit.
        Self {
            year,
            month: u32::try_from(month).unwrap_or(1),
            day: u32::try_from(day).unwrap_or(1),
            hour: u32::try_from(in_day / 3600).unwrap_or(0),
            minute: u32::try_from(in_day % 3600 / 60).unwrap_or(0),
            second: u32::try_from(in_day % 60).unwrap_or(0),
            nanos: u32::try_from(ns % 1_000_000_000).unwrap_or(0),
        }
    }

    /// RFC 3339 with nanoseconds, e.g. `2026-12-07T13:05:09.000000123Z`.
    pub fn rfc3339(&self) -> String {
        format!(
            "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:09}Z",
            self.year, self.month, self.day, self.hour, self.minute, self.second, self.nanos
        )
    }
}

/// The namespace `%N` of an index pattern names for a record: its
/// `k8s.namespace.name` as a DNS label (a value pushed over OTLP may be anything:
/// other characters become `-`, at most [`MAX_INDEX_NAMESPACE_LEN`] kept, no `-` at
/// either end), `none` when it has none.
pub fn index_namespace(resource: &[KeyValue], record: &LogRecord) -> String {
    let value = resource
        .iter()
        .chain(&record.attributes)
        .find(|kv| kv.key == NAMESPACE_ATTRIBUTE)
        .and_then(|kv| kv.value.as_ref())
        .map(|v| any_value_text(v).into_owned())
        .unwrap_or_default();
    let label: String = value
        .chars()
        .map(|c| match c {
            'a'..='z' | '0'..='9' => c,
            'A'..='Z' => c.to_ascii_lowercase(),
            _ => '-',
        })
        .take(MAX_INDEX_NAMESPACE_LEN)
        .collect();
    match label.trim_matches('-') {
        "" => NO_NAMESPACE.to_owned(),
        label => label.to_owned(),
    }
}

/// The index for a record of time `time` and namespace `namespace`: `pattern` filled
/// in. Validation refuses patterns that do not fill; such a pattern is used as written.
pub fn index_name(pattern: &str, time: UtcTime, namespace: &str) -> String {
    let fill = IndexFill {
        year: time.year,
        month: time.month,
        day: time.day,
        hour: time.hour,
        namespace,
    };
    fill_index_pattern(pattern, &fill).unwrap_or_else(|_| pattern.to_owned())
}

fn attributes(attributes: &[KeyValue], dedotting: bool) -> Map<String, Value> {
    if dedotting {
        let mut attributes = attributes.to_vec();
        dedot(&mut attributes);
        attributes_json(&attributes)
    } else {
        attributes_json(attributes)
    }
}

/// One record as a document (see the module documentation).
pub fn document(
    record: &LogRecord,
    resource: &[KeyValue],
    scope: Option<&InstrumentationScope>,
    dedotting: bool,
) -> Value {
    let mut doc = Map::new();
    let time = record_time_ns(record);
    if time != 0 {
        doc.insert(
            "@timestamp".into(),
            json!(UtcTime::from_unix_nanos(time).rfc3339()),
        );
    }
    if record.observed_time_unix_nano != 0 {
        let observed = UtcTime::from_unix_nanos(record.observed_time_unix_nano);
        doc.insert("observed_timestamp".into(), json!(observed.rfc3339()));
    }
    if !record.severity_text.is_empty() {
        doc.insert("severity_text".into(), json!(record.severity_text));
    }
    if record.severity_number != 0 {
        doc.insert("severity_number".into(), json!(record.severity_number));
    }
    if let Some(body) = &record.body {
        doc.insert("body".into(), any_value_json(body));
    }
    if !record.attributes.is_empty() {
        doc.insert(
            "attributes".into(),
            Value::Object(attributes(&record.attributes, dedotting)),
        );
    }
    if !resource.is_empty() {
        doc.insert(
            "resource".into(),
            Value::Object(attributes(resource, dedotting)),
        );
    }
    if let Some(scope) = scope {
        let mut object = Map::new();
        if !scope.name.is_empty() {
            object.insert("name".into(), json!(scope.name));
        }
        if !scope.version.is_empty() {
            object.insert("version".into(), json!(scope.version));
        }
        if !scope.attributes.is_empty() {
            object.insert(
                "attributes".into(),
                Value::Object(attributes(&scope.attributes, dedotting)),
            );
        }
        if !object.is_empty() {
            doc.insert("scope".into(), Value::Object(object));
        }
    }
    for (name, bytes) in [("trace_id", &record.trace_id), ("span_id", &record.span_id)] {
        if !bytes.is_empty() {
            doc.insert(name.into(), json!(hex::encode(bytes)));
        }
    }
    if record.flags != 0 {
        doc.insert("flags".into(), json!(record.flags));
    }
    if !record.event_name.is_empty() {
        doc.insert("event_name".into(), json!(record.event_name));
    }
    if record.dropped_attributes_count != 0 {
        doc.insert(
            "dropped_attributes_count".into(),
            json!(record.dropped_attributes_count),
        );
    }
    Value::Object(doc)
}

/// One record's document with what its bulk index is made of.
#[derive(Clone, Debug)]
pub struct Document {
    /// The record's time, Unix nanoseconds.
    pub time_ns: u64,
    /// The namespace `%N` names.
    pub namespace: String,
    /// The document.
    pub json: Value,
}

/// Every record of a request as a document, in request order.
pub fn documents(request: &ExportLogsServiceRequest, dedotting: bool) -> Vec<Document> {
    each_record(request)
        .map(
            |RecordInContext {
                 resource,
                 scope,
                 record,
             }| Document {
                time_ns: record_time_ns(record),
                namespace: index_namespace(resource, record),
                json: document(record, resource, scope, dedotting),
            },
        )
        .collect()
}

/// A JSON lines body: one document per line.
pub fn json_lines<'a>(documents: impl IntoIterator<Item = &'a Value>) -> Vec<u8> {
    let mut body = Vec::new();
    for doc in documents {
        // Writing a `Value` into a Vec cannot fail.
        let _ = serde_json::to_writer(&mut body, doc);
        body.push(b'\n');
    }
    body
}

/// A bulk body: an action line and a document line per record.
pub fn bulk<'a>(documents: impl IntoIterator<Item = &'a Document>, index_pattern: &str) -> Vec<u8> {
    let mut body = Vec::new();
    for doc in documents {
        let time = UtcTime::from_unix_nanos(doc.time_ns);
        let action = json!({"create": {"_index": index_name(index_pattern, time, &doc.namespace)}});
        for line in [&action, &doc.json] {
            // Writing a `Value` into a Vec cannot fail.
            let _ = serde_json::to_writer(&mut body, line);
            body.push(b'\n');
        }
    }
    body
}

#[cfg(test)]
mod tests {
    use super::*;

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
    }
}

#[cfg(test)]
mod namespace_tests {
    use kaas_proto::otlp::{AnyValue, any_value};

    use super::*;

    fn namespace(value: &str) -> String {
        let resource = [KeyValue {
            key: NAMESPACE_ATTRIBUTE.into(),
            value: Some(AnyValue {
                value: Some(any_value::Value::StringValue(value.into())),
            }),
        }];
        index_namespace(&resource, &LogRecord::default())
    }

    /// A pushed record may claim any namespace; the index stays a valid name.
    #[test]
    fn hostile_namespaces_make_valid_index_names() {
        assert_eq!(namespace("shop"), "shop");
        assert_eq!(namespace("-Evil/../*,ns-"), "evil------ns");
        assert_eq!(namespace("///"), NO_NAMESPACE);
        assert_eq!(namespace(&"x".repeat(500)).len(), MAX_INDEX_NAMESPACE_LEN);
        assert_eq!(index_namespace(&[], &LogRecord::default()), NO_NAMESPACE);
    }
}
