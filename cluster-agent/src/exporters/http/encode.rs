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
//! **Writing.** [`Documents::encode`] writes every document of a request once, as
//! bytes, straight from the encoded request read in place
//! ([`crate::record::logs::view`]): strings are escaped from slices of the request's
//! bytes, no record is decoded into owned strings (decoding and freeing them was a
//! quarter of the agent's instructions in log-bench). Keys in byte order, and a key
//! repeated in one object keeps its last value (what a JSON map of the same attributes
//! would serialize to; the tests hold the two equal). A resource's object is written
//! once and copied into each of its records' documents. The date and second of an
//! RFC 3339 time are written once per second ([`TimeText`]). No JSON value tree is
//! built.
//!
//! **The bulk body** is NDJSON: for each record an action line
//! `{"create":{"_index":…}}` and the document line. `create` works for plain indices
//! and data streams alike. The index is the pattern with the record's UTC date
//! (`%Y`, `%m`, `%d`, `%H`) and namespace (`%N`, [`index_namespace`]) filled in; the
//! action line is made once per hour and namespace in a row.

use std::borrow::Cow;

use kaas_pipeline::logs::output::{IndexFill, MAX_INDEX_NAMESPACE_LEN, fill_index_pattern};

use super::json_string::write_json_string as write_str;
use crate::processing::logs::dedot::dedotted;
use crate::record::logs::view::{self, AnyValueView, KeyValues, LogRecordView, ScopeView};
use crate::record::otlp::OtlpBatchError;

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

/// The namespace `%N` of an index pattern names for a record whose
/// `k8s.namespace.name` reads `text` (a string as it is, other values as JSON): a DNS
/// label (a value pushed over OTLP may be anything: other characters become `-`, at
/// most [`MAX_INDEX_NAMESPACE_LEN`] kept, no `-` at either end), `none` when nothing
/// is left.
pub fn index_namespace(text: &str) -> String {
    let label: String = text
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

/// A JSON number.
fn write_number(out: &mut Vec<u8>, number: impl serde::Serialize) {
    // Writing into a Vec cannot fail.
    let _ = serde_json::to_writer(&mut *out, &number);
}

/// Lower-case hex as a JSON string.
fn write_hex(out: &mut Vec<u8>, bytes: &[u8]) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    out.reserve(bytes.len() * 2 + 2);
    out.push(b'"');
    for byte in bytes {
        out.push(HEX[usize::from(byte >> 4)]);
        out.push(HEX[usize::from(byte & 0x0f)]);
    }
    out.push(b'"');
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

/// How deep values may nest: what `prost` decodes (its recursion limit counts the
/// request's own levels too, so it refuses a little earlier). The agent's buffer never
/// holds deeper values, as every record in it was decoded or built within that limit;
/// the bound keeps a damaged request from exhausting the stack.
const MAX_VALUE_DEPTH: usize = 100;

/// Digits of the nanoseconds in an RFC 3339 time.
const NANO_DIGITS: usize = 9;
/// The longest date and second of a time, quote included: `"` and
/// `YYYY-MM-DDTHH:MM:SS.` (a hand-made time's year may be longer; such times are
/// written without the cache).
const TIME_HEAD: usize = 21;

/// A JSON string of a time, its date and second written once per second: a
/// request's records are read in the same few seconds, and the calendar arithmetic of
/// [`UtcTime::from_unix_nanos`] for each of them was a tenth of the document's cost.
#[derive(Debug)]
struct TimeText {
    /// The second `text` holds, plus one (0: none yet).
    second: u64,
    /// `"YYYY-MM-DDTHH:MM:SS.`, then the nanoseconds, `Z` and `"` of the last time.
    text: [u8; TIME_HEAD + NANO_DIGITS + 2],
}

impl TimeText {
    fn new() -> Self {
        Self {
            second: 0,
            text: [b'"'; TIME_HEAD + NANO_DIGITS + 2],
        }
    }

    fn write(&mut self, out: &mut Vec<u8>, ns: u64) {
        let (second, nanos) = (ns / 1_000_000_000, ns % 1_000_000_000);
        if self.second != second + 1 {
            let mut fresh = Vec::with_capacity(32);
            fresh.push(b'"');
            UtcTime::from_unix_nanos(ns).write_rfc3339(&mut fresh);
            if fresh.len() != self.text.len() - 1 {
                // Not the four-digit year every u64 time has; never cached.
                fresh.push(b'"');
                out.extend_from_slice(&fresh);
                return;
            }
            self.text[..TIME_HEAD].copy_from_slice(&fresh[..TIME_HEAD]);
            self.text[TIME_HEAD + NANO_DIGITS..].copy_from_slice(b"Z\"");
            self.second = second + 1;
        }
        let mut rest = nanos;
        for byte in self.text[TIME_HEAD..TIME_HEAD + NANO_DIGITS]
            .iter_mut()
            .rev()
        {
            *byte = b'0' + (rest % 10) as u8;
            rest /= 10;
        }
        out.extend_from_slice(&self.text);
    }
}

/// One member of an object being written: its key (de-dotted when asked), the key as
/// the request has it, its value and its place among the object's members.
#[derive(Debug)]
struct Member<'a> {
    key: Cow<'a, str>,
    original: &'a str,
    /// Whether `key` is a de-dotted label or annotation key: of equal keys, the one
    /// with the smallest original key is written ([`crate::processing::logs::dedot`]).
    dedotted: bool,
    value: Option<AnyValueView<'a>>,
    position: usize,
}

/// Writes documents from views of one request, with what it keeps between them.
#[derive(Debug)]
struct Writer<'a> {
    dedotting: bool,
    /// The members of the objects being written, a nested object's after its
    /// parent's: one buffer for every object of the request.
    members: Vec<Member<'a>>,
    /// The records' times and, apart, their observed times: a file's lines were
    /// written seconds or hours before they were read, so one cache for both would
    /// miss on every time.
    time: TimeText,
    observed: TimeText,
}

impl<'a> Writer<'a> {
    fn new(dedotting: bool) -> Self {
        Self {
            dedotting,
            members: Vec::new(),
            time: TimeText::new(),
            observed: TimeText::new(),
        }
    }

    /// An OTLP value as JSON, as [`crate::record::logs::any_value_json`] makes it;
    /// `depth` values enclose it.
    fn value(
        &mut self,
        out: &mut Vec<u8>,
        value: AnyValueView<'a>,
        depth: usize,
    ) -> Result<(), OtlpBatchError> {
        if depth > MAX_VALUE_DEPTH {
            return Err(OtlpBatchError::Damaged(
                "a value is nested deeper than protobuf decoding allows",
            ));
        }
        match value {
            AnyValueView::Empty => out.extend_from_slice(b"null"),
            AnyValueView::String(s) => write_str(out, s),
            AnyValueView::Bool(b) => out.extend_from_slice(if b { b"true" } else { b"false" }),
            AnyValueView::Int(n) => write_number(out, n),
            AnyValueView::Double(d) if d.is_finite() => write_number(out, d),
            AnyValueView::Double(d) => write_str(out, &d.to_string()),
            AnyValueView::Bytes(b) => write_hex(out, b),
            AnyValueView::Array(values) => {
                out.push(b'[');
                for (i, value) in values.enumerate() {
                    if i > 0 {
                        out.push(b',');
                    }
                    self.value(out, value?, depth + 1)?;
                }
                out.push(b']');
            }
            AnyValueView::Kvlist(list) => self.object(out, list, false, depth + 1)?,
        }
        Ok(())
    }

    /// Attributes as a JSON object: keys in byte order, a repeated key's last value;
    /// with `dedot`, label and annotation keys de-dotted, of colliding ones the
    /// smallest original key's value (see the module documentation).
    fn object(
        &mut self,
        out: &mut Vec<u8>,
        attributes: KeyValues<'a>,
        dedot: bool,
        depth: usize,
    ) -> Result<(), OtlpBatchError> {
        let start = self.members.len();
        for (position, kv) in attributes.enumerate() {
            let kv = kv?;
            let renamed = if dedot { dedotted(kv.key) } else { None };
            self.members.push(Member {
                dedotted: renamed.is_some(),
                key: match renamed {
                    Some(key) if key != kv.key => Cow::Owned(key),
                    _ => Cow::Borrowed(kv.key),
                },
                original: kv.key,
                value: kv.value,
                position,
            });
        }
        let end = self.members.len();
        self.members[start..]
            .sort_unstable_by(|a, b| a.key.cmp(&b.key).then(a.position.cmp(&b.position)));
        out.push(b'{');
        let mut at = start;
        while at < end {
            let mut next = at + 1;
            while next < end && self.members[next].key == self.members[at].key {
                next += 1;
            }
            let winner = if self.members[at].dedotted {
                (at..next)
                    .min_by(|a, b| {
                        let (a, b) = (&self.members[*a], &self.members[*b]);
                        a.original.cmp(b.original).then(a.position.cmp(&b.position))
                    })
                    .unwrap_or(at)
            } else {
                next - 1
            };
            if at > start {
                out.push(b',');
            }
            write_str(out, &self.members[winner].key);
            out.push(b':');
            match self.members[winner].value {
                Some(value) => self.value(out, value, depth)?,
                None => out.extend_from_slice(b"null"),
            }
            at = next;
        }
        out.push(b'}');
        self.members.truncate(start);
        Ok(())
    }

    /// The scope's object, when it has anything to say.
    fn scope(&mut self, out: &mut Vec<u8>, scope: &ScopeView<'a>) -> Result<(), OtlpBatchError> {
        if scope.name.is_empty() && scope.version.is_empty() && scope.attributes.is_empty() {
            return Ok(());
        }
        write_key(out, "scope");
        out.push(b'{');
        if !scope.attributes.is_empty() {
            write_key(out, "attributes");
            self.object(out, scope.attributes, self.dedotting, 0)?;
        }
        if !scope.name.is_empty() {
            write_key(out, "name");
            write_str(out, scope.name);
        }
        if !scope.version.is_empty() {
            write_key(out, "version");
            write_str(out, scope.version);
        }
        out.push(b'}');
        Ok(())
    }

    /// One record's document (see the module documentation), its members in byte
    /// order of their keys; `resource` is the resource's object, already written.
    fn document(
        &mut self,
        out: &mut Vec<u8>,
        record: &LogRecordView<'a>,
        resource: &[u8],
        scope: Option<&ScopeView<'a>>,
    ) -> Result<(), OtlpBatchError> {
        out.push(b'{');
        let time = record.time_ns();
        if time != 0 {
            write_key(out, "@timestamp");
            self.time.write(out, time);
        }
        if !record.attributes.is_empty() {
            write_key(out, "attributes");
            self.object(out, record.attributes, self.dedotting, 0)?;
        }
        if let Some(body) = record.body {
            write_key(out, "body");
            self.value(out, body, 0)?;
        }
        if record.dropped_attributes_count != 0 {
            write_key(out, "dropped_attributes_count");
            write_number(out, record.dropped_attributes_count);
        }
        if !record.event_name.is_empty() {
            write_key(out, "event_name");
            write_str(out, record.event_name);
        }
        if record.flags != 0 {
            write_key(out, "flags");
            write_number(out, record.flags);
        }
        if record.observed_time_unix_nano != 0 {
            write_key(out, "observed_timestamp");
            self.observed.write(out, record.observed_time_unix_nano);
        }
        if !resource.is_empty() {
            write_key(out, "resource");
            out.extend_from_slice(resource);
        }
        if let Some(scope) = scope {
            self.scope(out, scope)?;
        }
        if record.severity_number != 0 {
            write_key(out, "severity_number");
            write_number(out, record.severity_number);
        }
        if !record.severity_text.is_empty() {
            write_key(out, "severity_text");
            write_str(out, record.severity_text);
        }
        if !record.span_id.is_empty() {
            write_key(out, "span_id");
            write_hex(out, record.span_id);
        }
        if !record.trace_id.is_empty() {
            write_key(out, "trace_id");
            write_hex(out, record.trace_id);
        }
        out.push(b'}');
        Ok(())
    }

    /// The namespace `%N` names for the first `k8s.namespace.name` of `attributes`;
    /// `None` when there is none.
    fn namespace(&mut self, attributes: KeyValues<'a>) -> Result<Option<String>, OtlpBatchError> {
        for kv in attributes {
            let kv = kv?;
            if kv.key != NAMESPACE_ATTRIBUTE {
                continue;
            }
            let namespace = match kv.value {
                None | Some(AnyValueView::Empty) => index_namespace(""),
                Some(AnyValueView::String(text)) => index_namespace(text),
                Some(value) => {
                    let mut json = Vec::new();
                    self.value(&mut json, value, 0)?;
                    index_namespace(&String::from_utf8_lossy(&json))
                }
            };
            return Ok(Some(namespace));
        }
        Ok(None)
    }
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
    /// Writes every record of `request`, an encoded `ExportLogsServiceRequest`; a
    /// request that does not read is the error.
    pub fn encode(request: &[u8], dedotting: bool) -> Result<Self, OtlpBatchError> {
        let mut documents = Self {
            // The documents repeat their resource and spell out their keys: a
            // request's JSON is a few times its protobuf.
            bytes: Vec::with_capacity(request.len().saturating_mul(3)),
            ..Self::default()
        };
        let mut writer = Writer::new(dedotting);
        let mut resource_json = Vec::new();
        for resource_logs in view::resource_logs(request) {
            let resource_logs = resource_logs?;
            let resource = resource_logs.resource;
            resource_json.clear();
            if !resource.is_empty() {
                writer.object(&mut resource_json, resource, dedotting, 0)?;
            }
            // The resource's namespace, when it names one, is every record's.
            let shared = writer
                .namespace(resource)?
                .map(|namespace| documents.namespace(namespace));
            for scope_logs in resource_logs.scope_logs() {
                let scope_logs = scope_logs?;
                for record in scope_logs.records() {
                    let record = record?;
                    let namespace = match shared {
                        Some(namespace) => namespace,
                        None => {
                            let named = writer.namespace(record.attributes)?;
                            documents.namespace(named.unwrap_or_else(|| index_namespace("")))
                        }
                    };
                    writer.document(
                        &mut documents.bytes,
                        &record,
                        &resource_json,
                        scope_logs.scope.as_ref(),
                    )?;
                    documents.placed.push(Placed {
                        end: documents.bytes.len(),
                        time_ns: record.time_ns(),
                        namespace,
                    });
                }
            }
        }
        Ok(documents)
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

#[cfg(test)]
mod tests;
