//! The bulk encoder as it was before it read requests in place: kept only until the
//! new one is compared with it on random requests (`super::tests`).
#![allow(dead_code, missing_docs)]

use kaas_proto::otlp::{
    AnyValue, ExportLogsServiceRequest, InstrumentationScope, KeyValue, LogRecord, any_value,
};

use kaas_pipeline::logs::output::{IndexFill, MAX_INDEX_NAMESPACE_LEN, fill_index_pattern};

use super::super::json_string::write_json_string as write_str;
use crate::processing::logs::dedot::{DEDOT_PREFIXES, dedot};
use crate::record::logs::{any_value_text, record_time_ns};

/// The attribute `%N` of an index pattern reads.
const NAMESPACE_ATTRIBUTE: &str = "k8s.namespace.name";
/// The namespace `%N` names for records without one.
const NO_NAMESPACE: &str = "none";

/// Seconds in a day.
const DAY_SECONDS: u64 = 86_400;
/// Nanoseconds in an hour: an index pattern's finest date field is the hour.
const HOUR_NANOS: u64 = 3_600_000_000_000;

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

    /// Writes [`UtcTime::rfc3339`] into `out`, without formatting machinery: the
    /// fixed-width part after the year is filled in an array and appended at once
    /// (seven small appends per time were 3% of the sender's CPU in log-bench).
    pub fn write_rfc3339(&self, out: &mut Vec<u8>) {
        /// `value`'s last `text.len()` decimal digits into `text`.
        fn fill(text: &mut [u8], mut value: u64) {
            for byte in text.iter_mut().rev() {
                *byte = b'0' + (value % 10) as u8;
                value /= 10;
            }
        }
        // u64 nanoseconds since 1970 end in the year 2554: four digits, more only
        // for a time built by hand.
        let year = u64::try_from(self.year).unwrap_or(0);
        let mut digits = [b'0'; 20];
        let mut at = digits.len();
        let mut rest = year;
        while rest > 0 || at > digits.len() - 4 {
            at -= 1;
            digits[at] = b'0' + (rest % 10) as u8;
            rest /= 10;
        }
        out.extend_from_slice(&digits[at..]);
        let mut text = *b"-00-00T00:00:00.000000000Z";
        fill(&mut text[1..3], u64::from(self.month));
        fill(&mut text[4..6], u64::from(self.day));
        fill(&mut text[7..9], u64::from(self.hour));
        fill(&mut text[10..12], u64::from(self.minute));
        fill(&mut text[13..15], u64::from(self.second));
        fill(&mut text[16..25], u64::from(self.nanos));
        out.extend_from_slice(&text);
    }

    /// RFC 3339 with nanoseconds, e.g. `2026-12-07T13:05:09.000000123Z`.
    pub fn rfc3339(&self) -> String {
        let mut out = Vec::with_capacity(30);
        self.write_rfc3339(&mut out);
        String::from_utf8_lossy(&out).into_owned()
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

/// A JSON string of a time.
fn write_time(out: &mut Vec<u8>, ns: u64) {
    out.push(b'"');
    UtcTime::from_unix_nanos(ns).write_rfc3339(out);
    out.push(b'"');
}

/// A JSON number.
fn write_number(out: &mut Vec<u8>, number: impl serde::Serialize) {
    // Writing into a Vec cannot fail.
    let _ = serde_json::to_writer(&mut *out, &number);
}

/// Lower-case hex as a JSON string.
fn write_hex(out: &mut Vec<u8>, bytes: &[u8]) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    out.push(b'"');
    for byte in bytes {
        out.push(HEX[usize::from(byte >> 4)]);
        out.push(HEX[usize::from(byte & 0x0f)]);
    }
    out.push(b'"');
}

/// An OTLP value as JSON, as [`crate::record::logs::any_value_json`] makes it.
fn write_value(out: &mut Vec<u8>, value: &AnyValue) {
    match &value.value {
        None => out.extend_from_slice(b"null"),
        Some(any_value::Value::StringValue(s)) => write_str(out, s),
        Some(any_value::Value::BoolValue(b)) => {
            out.extend_from_slice(if *b { b"true" } else { b"false" });
        }
        Some(any_value::Value::IntValue(n)) => write_number(out, n),
        Some(any_value::Value::DoubleValue(d)) if d.is_finite() => write_number(out, d),
        Some(any_value::Value::DoubleValue(d)) => write_str(out, &d.to_string()),
        Some(any_value::Value::BytesValue(b)) => write_hex(out, b),
        Some(any_value::Value::ArrayValue(array)) => {
            out.push(b'[');
            for (i, value) in array.values.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_value(out, value);
            }
            out.push(b']');
        }
        Some(any_value::Value::KvlistValue(list)) => write_object(out, &list.values),
    }
}

/// Attributes as a JSON object: keys in byte order, a repeated key's last value.
fn write_object(out: &mut Vec<u8>, attributes: &[KeyValue]) {
    let mut order: Vec<usize> = (0..attributes.len()).collect();
    // Stable, so equal keys stay in their order and the last of them is kept below.
    order.sort_by(|a, b| attributes[*a].key.cmp(&attributes[*b].key));
    out.push(b'{');
    let mut first = true;
    for (at, &i) in order.iter().enumerate() {
        let key = &attributes[i].key;
        if order
            .get(at + 1)
            .is_some_and(|next| attributes[*next].key == *key)
        {
            continue;
        }
        if !first {
            out.push(b',');
        }
        first = false;
        write_str(out, key);
        out.push(b':');
        match &attributes[i].value {
            Some(value) => write_value(out, value),
            None => out.extend_from_slice(b"null"),
        }
    }
    out.push(b'}');
}

/// Attributes as a JSON object, de-dotted when asked (see the module documentation).
fn write_attributes(out: &mut Vec<u8>, attributes: &[KeyValue], dedotting: bool) {
    let dotted = |kv: &KeyValue| DEDOT_PREFIXES.iter().any(|p| kv.key.starts_with(p));
    if dedotting && attributes.iter().any(dotted) {
        let mut attributes = attributes.to_vec();
        dedot(&mut attributes);
        write_object(out, &attributes);
    } else {
        write_object(out, attributes);
    }
}

/// `"key":`, after a comma unless it is the object's first member.
fn write_key(out: &mut Vec<u8>, key: &str) {
    if out.last() != Some(&b'{') {
        out.push(b',');
    }
    out.push(b'"');
    out.extend_from_slice(key.as_bytes());
    out.extend_from_slice(b"\":");
}

/// The scope's object, when it has anything to say.
fn write_scope(out: &mut Vec<u8>, scope: &InstrumentationScope, dedotting: bool) {
    if scope.name.is_empty() && scope.version.is_empty() && scope.attributes.is_empty() {
        return;
    }
    write_key(out, "scope");
    out.push(b'{');
    if !scope.attributes.is_empty() {
        write_key(out, "attributes");
        write_attributes(out, &scope.attributes, dedotting);
    }
    if !scope.name.is_empty() {
        write_key(out, "name");
        write_str(out, &scope.name);
    }
    if !scope.version.is_empty() {
        write_key(out, "version");
        write_str(out, &scope.version);
    }
    out.push(b'}');
}

/// One record's document (see the module documentation), its members in byte order of
/// their keys; `resource` is the resource's object, already written.
fn write_document(
    out: &mut Vec<u8>,
    record: &LogRecord,
    resource: &[u8],
    scope: Option<&InstrumentationScope>,
    dedotting: bool,
) {
    out.push(b'{');
    let time = record_time_ns(record);
    if time != 0 {
        write_key(out, "@timestamp");
        write_time(out, time);
    }
    if !record.attributes.is_empty() {
        write_key(out, "attributes");
        write_attributes(out, &record.attributes, dedotting);
    }
    if let Some(body) = &record.body {
        write_key(out, "body");
        write_value(out, body);
    }
    if record.dropped_attributes_count != 0 {
        write_key(out, "dropped_attributes_count");
        write_number(out, record.dropped_attributes_count);
    }
    if !record.event_name.is_empty() {
        write_key(out, "event_name");
        write_str(out, &record.event_name);
    }
    if record.flags != 0 {
        write_key(out, "flags");
        write_number(out, record.flags);
    }
    if record.observed_time_unix_nano != 0 {
        write_key(out, "observed_timestamp");
        write_time(out, record.observed_time_unix_nano);
    }
    if !resource.is_empty() {
        write_key(out, "resource");
        out.extend_from_slice(resource);
    }
    if let Some(scope) = scope {
        write_scope(out, scope, dedotting);
    }
    if record.severity_number != 0 {
        write_key(out, "severity_number");
        write_number(out, record.severity_number);
    }
    if !record.severity_text.is_empty() {
        write_key(out, "severity_text");
        write_str(out, &record.severity_text);
    }
    if !record.span_id.is_empty() {
        write_key(out, "span_id");
        write_hex(out, &record.span_id);
    }
    if !record.trace_id.is_empty() {
        write_key(out, "trace_id");
        write_hex(out, &record.trace_id);
    }
    out.push(b'}');
}

/// Where one document is in [`Documents`] and what its bulk index is made of.
#[derive(Clone, Copy, Debug)]
struct Placed {
    /// Its end in the documents' bytes (it starts where the one before ends).
    end: usize,
    /// The record's time, Unix nanoseconds.
    time_ns: u64,
    /// Its namespace, an index into [`Documents::namespaces`].
    namespace: usize,
}

/// Every record of a request as a document, written once, in request order.
#[derive(Debug, Default)]
pub struct Documents {
    /// The documents, back to back.
    bytes: Vec<u8>,
    placed: Vec<Placed>,
    /// The namespaces `%N` names, each once in a row.
    namespaces: Vec<String>,
}

impl Documents {
    /// Writes every record of `request`.
    pub fn encode(request: &ExportLogsServiceRequest, dedotting: bool) -> Self {
        let mut documents = Self::default();
        let mut resource_json = Vec::new();
        for resource_logs in &request.resource_logs {
            let resource = resource_logs
                .resource
                .as_ref()
                .map_or(&[][..], |r| r.attributes.as_slice());
            resource_json.clear();
            if !resource.is_empty() {
                write_attributes(&mut resource_json, resource, dedotting);
            }
            // The resource's namespace, when it names one, is every record's.
            let shared = resource
                .iter()
                .any(|kv| kv.key == NAMESPACE_ATTRIBUTE)
                .then(|| documents.namespace(index_namespace(resource, &LogRecord::default())));
            for scope_logs in &resource_logs.scope_logs {
                for record in &scope_logs.log_records {
                    let namespace = match shared {
                        Some(namespace) => namespace,
                        None => documents.namespace(index_namespace(resource, record)),
                    };
                    write_document(
                        &mut documents.bytes,
                        record,
                        &resource_json,
                        scope_logs.scope.as_ref(),
                        dedotting,
                    );
                    documents.placed.push(Placed {
                        end: documents.bytes.len(),
                        time_ns: record_time_ns(record),
                        namespace,
                    });
                }
            }
        }
        documents
    }

    /// The slot of `namespace`: the last one when it is the same.
    fn namespace(&mut self, namespace: String) -> usize {
        if self.namespaces.last() != Some(&namespace) {
            self.namespaces.push(namespace);
        }
        self.namespaces.len() - 1
    }

    /// How many documents there are.
    pub fn len(&self) -> usize {
        self.placed.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.placed.is_empty()
    }

    /// Document `index`'s JSON.
    pub fn json(&self, index: usize) -> &[u8] {
        let start = index
            .checked_sub(1)
            .and_then(|before| self.placed.get(before))
            .map_or(0, |p| p.end);
        let end = self.placed.get(index).map_or(start, |p| p.end);
        &self.bytes[start..end]
    }

    /// A JSON lines body: one document per line.
    pub fn json_lines(&self) -> Vec<u8> {
        let mut body = Vec::with_capacity(self.bytes.len() + self.placed.len());
        for index in 0..self.len() {
            body.extend_from_slice(self.json(index));
            body.push(b'\n');
        }
        body
    }

    /// A bulk body of the documents `which`: an action line and a document line each.
    pub fn bulk(&self, which: impl IntoIterator<Item = usize>, index_pattern: &str) -> Vec<u8> {
        let mut body = Vec::with_capacity(self.bytes.len() + self.placed.len() * 48);
        // The action line of the last document's hour and namespace.
        let mut action: Option<(u64, usize, Vec<u8>)> = None;
        for index in which {
            let Some(placed) = self.placed.get(index) else {
                continue;
            };
            let hour = placed.time_ns / HOUR_NANOS;
            if action
                .as_ref()
                .is_none_or(|(h, n, _)| (*h, *n) != (hour, placed.namespace))
            {
                let time = UtcTime::from_unix_nanos(placed.time_ns);
                let name = index_name(index_pattern, time, &self.namespaces[placed.namespace]);
                let mut line = b"{\"create\":{\"_index\":".to_vec();
                write_str(&mut line, &name);
                line.extend_from_slice(b"}}\n");
                action = Some((hour, placed.namespace, line));
            }
            if let Some((_, _, line)) = &action {
                body.extend_from_slice(line);
            }
            body.extend_from_slice(self.json(index));
            body.push(b'\n');
        }
        body
    }
}
