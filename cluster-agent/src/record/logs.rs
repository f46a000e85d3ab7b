//! The log record: the unit a log pipeline buffers and sends, a batch of OTLP
//! `ResourceLogs`, stored in a buffer record as an encoded `ExportLogsServiceRequest`
//! (snappy-compressed by the inlet). OTLP is the richest log format the agent speaks,
//! so every log exporter (OTLP, Loki, HTTP) is fed from it without loss.
//!
//! **Frames.** A frame is one `ResourceLogs` field of the request, tag and length
//! included, so frames join into a request by concatenation and are never decoded on
//! the way. Its key is the encoded `Resource`: a container's file, a journal unit or
//! a pusher's service is one resource, so one stream's records share a shard and keep
//! their order ([`Logs`] as [`ShardingKey`]). Receivers keep a `ResourceLogs` to a
//! bounded number of records, as the sender cuts requests only between frames. The
//! framing and the request type are shared with the trace signal ([`super::otlp`]).

use std::borrow::Cow;

use kaas_proto::otlp::{
    AnyValue, ExportLogsServiceRequest, InstrumentationScope, KeyValue, LogRecord, ResourceLogs,
    any_value,
};

use super::otlp;
pub use super::otlp::{OtlpBatchError as LogBatchError, SettledRecords};
use super::signal::{Frame, FrameEncoding, FrameError, Payload, Settled, ShardingKey};

/// A request as the sender hands it to a log exporter: an encoded
/// `ExportLogsServiceRequest`, which the OTLP exporter sends as it is and the others
/// convert ([`otlp::OtlpRequest`]).
pub type LogRequest = otlp::OtlpRequest<ExportLogsServiceRequest>;

/// A batch of log records, grouped by resource and scope as OTLP groups them.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct LogBatch {
    /// The records per resource.
    pub resource_logs: Vec<ResourceLogs>,
}

impl LogBatch {
    /// Number of log records.
    pub fn records(&self) -> usize {
        self.resource_logs
            .iter()
            .flat_map(|r| &r.scope_logs)
            .map(|s| s.log_records.len())
            .sum()
    }
}

/// When a record happened, Unix nanoseconds: its own time, else when it was observed
/// (OTLP's rule for records without a time); 0 when neither is known.
pub fn record_time_ns(record: &LogRecord) -> u64 {
    time_or_observed_ns(record.time_unix_nano, record.observed_time_unix_nano)
}

/// `time_unix_nano` unless it is 0, else `observed_time_unix_nano` ([`record_time_ns`]
/// of a record's two times).
pub fn time_or_observed_ns(time_unix_nano: u64, observed_time_unix_nano: u64) -> u64 {
    if time_unix_nano != 0 {
        time_unix_nano
    } else {
        observed_time_unix_nano
    }
}

/// Since when a record has been in the agent's hands, Unix nanoseconds: when it was
/// observed (read from a file or the journal, or received), else its own time; 0 when
/// neither is known. The buffer's age bound counts from here: a line written hours ago
/// and read now (an old file read from its beginning, a node back from maintenance) is
/// fresh to the buffer, as it is to Fluent Bit's and the Collector's queues.
pub fn record_buffered_since_ns(record: &LogRecord) -> u64 {
    if record.observed_time_unix_nano != 0 {
        record.observed_time_unix_nano
    } else {
        record.time_unix_nano
    }
}

/// A record with the resource attributes and scope it came with.
#[derive(Clone, Copy, Debug)]
pub struct RecordInContext<'a> {
    /// The resource's attributes.
    pub resource: &'a [KeyValue],
    /// The instrumentation scope.
    pub scope: Option<&'a InstrumentationScope>,
    /// The record.
    pub record: &'a LogRecord,
}

/// Every record of a request in order, each with its resource and scope.
pub fn each_record(
    request: &ExportLogsServiceRequest,
) -> impl Iterator<Item = RecordInContext<'_>> {
    request.resource_logs.iter().flat_map(|resource_logs| {
        let resource = resource_logs
            .resource
            .as_ref()
            .map_or(&[][..], |r| r.attributes.as_slice());
        resource_logs.scope_logs.iter().flat_map(move |scope_logs| {
            scope_logs
                .log_records
                .iter()
                .map(move |record| RecordInContext {
                    resource,
                    scope: scope_logs.scope.as_ref(),
                    record,
                })
        })
    })
}

/// `ResourceLogs.resource` and `ScopeLogs.scope`.
const FIRST: u32 = 1;
/// `ResourceLogs.scope_logs` and `ScopeLogs.log_records`.
const ITEMS: u32 = 2;
/// `ResourceLogs.schema_url` and `ScopeLogs.schema_url`.
const SCHEMA_URL: u32 = 3;

/// The size of a length-delimited field `tag` of `len` bytes.
fn delimited_len(tag: u32, len: usize) -> usize {
    prost::encoding::key_len(tag) + prost::encoding::encoded_len_varint(len as u64) + len
}

/// The key and length of a length-delimited field `tag` of `len` bytes.
fn write_delimiter(tag: u32, len: usize, out: &mut Vec<u8>) {
    prost::encoding::encode_key(tag, prost::encoding::WireType::LengthDelimited, out);
    prost::encoding::encode_varint(len as u64, out);
}

/// The encoded `ExportLogsServiceRequest` of `resources`, byte for byte what `prost`
/// writes (fields in tag order, empty ones left out), with each record's length
/// computed once: `prost` computes a nested message's length again at every level that
/// encloses it (request, resource, scope, record), so encoding a batch cost several
/// passes over every record before one wrote it.
fn encode_resource_logs(resources: &[ResourceLogs]) -> Vec<u8> {
    use prost::Message;
    use prost::encoding::{message, string};
    let mut record_lens = Vec::new();
    let mut scope_lens = Vec::new();
    let mut resource_lens = Vec::with_capacity(resources.len());
    let mut total = 0;
    for resource_logs in resources {
        let mut len = resource_logs
            .resource
            .as_ref()
            .map_or(0, |r| message::encoded_len(FIRST, r));
        for scope_logs in &resource_logs.scope_logs {
            let mut scope_len = scope_logs
                .scope
                .as_ref()
                .map_or(0, |s| message::encoded_len(FIRST, s));
            for record in &scope_logs.log_records {
                let record_len = record.encoded_len();
                record_lens.push(record_len);
                scope_len += delimited_len(ITEMS, record_len);
            }
            if !scope_logs.schema_url.is_empty() {
                scope_len += string::encoded_len(SCHEMA_URL, &scope_logs.schema_url);
            }
            scope_lens.push(scope_len);
            len += delimited_len(ITEMS, scope_len);
        }
        if !resource_logs.schema_url.is_empty() {
            len += string::encoded_len(SCHEMA_URL, &resource_logs.schema_url);
        }
        resource_lens.push(len);
        total += delimited_len(FIRST, len);
    }
    let mut out = Vec::with_capacity(total);
    let (mut record_lens, mut scope_lens) = (record_lens.into_iter(), scope_lens.into_iter());
    for (resource_logs, len) in resources.iter().zip(resource_lens) {
        write_delimiter(FIRST, len, &mut out);
        if let Some(resource) = &resource_logs.resource {
            message::encode(FIRST, resource, &mut out);
        }
        for scope_logs in &resource_logs.scope_logs {
            write_delimiter(ITEMS, scope_lens.next().unwrap_or_default(), &mut out);
            if let Some(scope) = &scope_logs.scope {
                message::encode(FIRST, scope, &mut out);
            }
            for record in &scope_logs.log_records {
                write_delimiter(ITEMS, record_lens.next().unwrap_or_default(), &mut out);
                // What `message::encode` writes after the length it computes.
                record.encode_raw(&mut out);
            }
            if !scope_logs.schema_url.is_empty() {
                string::encode(SCHEMA_URL, &scope_logs.schema_url, &mut out);
            }
        }
        if !resource_logs.schema_url.is_empty() {
            string::encode(SCHEMA_URL, &resource_logs.schema_url, &mut out);
        }
    }
    out
}

impl Payload for LogBatch {
    fn payload(&self) -> Vec<u8> {
        encode_resource_logs(&self.resource_logs)
    }

    fn items(&self) -> usize {
        self.records()
    }

    fn oldest_ms(&self) -> Option<i64> {
        self.resource_logs
            .iter()
            .flat_map(|r| &r.scope_logs)
            .flat_map(|s| &s.log_records)
            .map(record_buffered_since_ns)
            .filter(|ns| *ns != 0)
            .min()
            .map(|ns| i64::try_from(ns / 1_000_000).unwrap_or(i64::MAX))
    }
}

/// The log signal: records are `ExportLogsServiceRequest`s; a `ResourceLogs` is a
/// frame, sharded by its resource, and nothing is shared between requests.
#[derive(Clone, Copy, Debug)]
pub struct Logs;

impl FrameEncoding for Logs {
    type Request = LogRequest;

    fn frames(payload: &[u8]) -> Result<Vec<Frame<'_>>, FrameError> {
        otlp::resource_frames(payload)
    }

    fn request(frames: &[&[u8]], _shared: &[&[u8]], items: u64, oldest_ms: i64) -> LogRequest {
        LogRequest::new(frames.concat(), items, oldest_ms)
    }

    fn whole_record(compressed: Vec<u8>, items: u64, oldest_ms: i64) -> LogRequest {
        LogRequest::snappy(compressed, items, oldest_ms)
    }

    fn items(request: &LogRequest) -> u64 {
        request.records
    }

    fn oldest_ms(request: &LogRequest) -> i64 {
        request.oldest_ms
    }

    fn settled(request: &LogRequest) -> Settled {
        request.settled.counts()
    }
}

impl ShardingKey for Logs {
    fn shard_key(resource: &[u8]) -> u64 {
        otlp::resource_shard_key(resource)
    }
}

/// An OTLP value as JSON: scalars as themselves (doubles that JSON cannot carry, NaN
/// and infinities, as strings), arrays and maps nested, bytes as lower-case hex, an
/// empty value as `null`. Keys repeated in a map keep their last value.
pub fn any_value_json(value: &AnyValue) -> serde_json::Value {
    use serde_json::Value as Json;
    match &value.value {
        None => Json::Null,
        Some(any_value::Value::StringValue(s)) => Json::String(s.clone()),
        Some(any_value::Value::BoolValue(b)) => Json::Bool(*b),
        Some(any_value::Value::IntValue(n)) => Json::from(*n),
        Some(any_value::Value::DoubleValue(d)) => serde_json::Number::from_f64(*d)
            .map_or_else(|| Json::String(d.to_string()), Json::Number),
        Some(any_value::Value::BytesValue(b)) => Json::String(hex::encode(b)),
        Some(any_value::Value::ArrayValue(array)) => {
            Json::Array(array.values.iter().map(any_value_json).collect())
        }
        Some(any_value::Value::KvlistValue(list)) => Json::Object(attributes_json(&list.values)),
    }
}

/// Attributes as a JSON object, by key.
pub fn attributes_json(attributes: &[KeyValue]) -> serde_json::Map<String, serde_json::Value> {
    attributes
        .iter()
        .map(|kv| {
            let value = kv
                .value
                .as_ref()
                .map_or(serde_json::Value::Null, any_value_json);
            (kv.key.clone(), value)
        })
        .collect()
}

/// An OTLP value as one line of text: a string as it is, anything else as JSON.
pub fn any_value_text(value: &AnyValue) -> Cow<'_, str> {
    match &value.value {
        Some(any_value::Value::StringValue(s)) => Cow::Borrowed(s),
        None => Cow::Borrowed(""),
        Some(_) => Cow::Owned(any_value_json(value).to_string()),
    }
}

pub mod view;

#[cfg(test)]
pub(crate) mod strategies;
#[cfg(test)]
mod tests;
