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
//! bounded number of records, as the sender cuts requests only between frames.

use std::borrow::Cow;
use std::hash::BuildHasher;
use std::sync::Mutex;

use kaas_proto::otlp::{
    AnyValue, ExportLogsServiceRequest, InstrumentationScope, KeyValue, LogRecord, ResourceLogs,
    any_value,
};
use prost::Message;
use prost::bytes::Buf;
use prost::encoding::{WireType, decode_key, decode_varint};

use super::signal::{Frame, FrameEncoding, FrameError, Payload, Settled, ShardingKey};

/// `ExportLogsServiceRequest.resource_logs`.
const REQUEST_RESOURCE_LOGS: u32 = 1;
/// `ResourceLogs.resource`.
const RESOURCE_LOGS_RESOURCE: u32 = 1;
/// `ResourceLogs.scope_logs`.
const RESOURCE_LOGS_SCOPE_LOGS: u32 = 2;
/// `ScopeLogs.log_records`.
const SCOPE_LOGS_LOG_RECORDS: u32 = 2;

/// A batch of log records, grouped by resource and scope as OTLP groups them.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct LogBatch {
    /// The records per resource.
    pub resource_logs: Vec<ResourceLogs>,
}

/// A buffered log record or request that cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum LogBatchError {
    /// Not snappy.
    #[error("cannot decompress a buffered log batch: {0}")]
    Snappy(#[from] snap::Error),
    /// Not an `ExportLogsServiceRequest`.
    #[error("cannot decode a buffered log batch: {0}")]
    Decode(#[from] prost::DecodeError),
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
    if record.time_unix_nano != 0 {
        record.time_unix_nano
    } else {
        record.observed_time_unix_nano
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

impl Payload for LogBatch {
    fn payload(&self) -> Vec<u8> {
        // The request's encoding, field by field, without cloning the records into
        // an `ExportLogsServiceRequest` first.
        let len = self
            .resource_logs
            .iter()
            .map(|r| prost::encoding::message::encoded_len(REQUEST_RESOURCE_LOGS, r))
            .sum();
        let mut out = Vec::with_capacity(len);
        for resource_logs in &self.resource_logs {
            prost::encoding::message::encode(REQUEST_RESOURCE_LOGS, resource_logs, &mut out);
        }
        out
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

/// A request as the sender hands it to a log exporter: an encoded
/// `ExportLogsServiceRequest`, which the OTLP exporter sends as it is and the others
/// convert.
#[derive(Debug)]
pub struct LogRequest {
    /// The encoded request, snappy-compressed when `snappy` is set.
    pub body: Vec<u8>,
    /// Whether `body` is snappy-compressed (a buffered record sent as it is).
    pub snappy: bool,
    /// Log records in it.
    pub records: u64,
    /// Its oldest record, Unix milliseconds.
    pub oldest_ms: i64,
    /// Which records earlier attempts settled, for backends that answer per record.
    pub settled: SettledRecords,
}

impl LogRequest {
    /// A request of an uncompressed body.
    pub fn new(body: Vec<u8>, records: u64, oldest_ms: i64) -> Self {
        Self {
            body,
            snappy: false,
            records,
            oldest_ms,
            settled: SettledRecords::default(),
        }
    }

    /// The uncompressed `ExportLogsServiceRequest`, decompressing if needed.
    pub fn raw(&self) -> Result<Cow<'_, [u8]>, LogBatchError> {
        if self.snappy {
            Ok(Cow::Owned(
                snap::raw::Decoder::new().decompress_vec(&self.body)?,
            ))
        } else {
            Ok(Cow::Borrowed(&self.body))
        }
    }

    /// The request decoded.
    pub fn decode(&self) -> Result<ExportLogsServiceRequest, LogBatchError> {
        Ok(ExportLogsServiceRequest::decode(self.raw()?.as_ref())?)
    }
}

/// The records of a request that earlier attempts settled: delivered, or refused for
/// good and counted. A backend that answers per record (the bulk API) accepts some
/// records of a request and asks for others again; the sender retries the whole
/// request, and the exporter sends only the records not settled yet, so nothing is
/// stored twice and no refusal is counted twice. Indexes are records in request order.
/// The counts tell the sender how many records to count as sent, failed or expired
/// ([`crate::record::signal::Settled`]), so a refused record is never counted as sent.
#[derive(Debug, Default)]
pub struct SettledRecords(Mutex<SettledState>);

#[derive(Debug, Default)]
struct SettledState {
    settled: Vec<bool>,
    counts: Settled,
}

impl SettledRecords {
    /// Whether record `index` is settled.
    pub fn is_settled(&self, index: usize) -> bool {
        self.lock().settled.get(index).copied().unwrap_or(false)
    }

    /// Marks record `index` stored by the backend.
    pub fn settle(&self, index: usize) {
        if self.mark(index) {
            self.lock().counts.stored += 1;
        }
    }

    /// Marks record `index` refused for good (and counted as dropped by the caller).
    pub fn settle_refused(&self, index: usize) {
        if self.mark(index) {
            self.lock().counts.refused += 1;
        }
    }

    /// Counts `records` refused for good by a backend that does not say which (an
    /// OTLP partial success); the request is not retried after such an answer.
    pub fn refused_unnamed(&self, records: u64) {
        self.lock().counts.refused += records;
    }

    /// How many records are settled, by outcome.
    pub fn counts(&self) -> Settled {
        self.lock().counts
    }

    /// Marks `index` settled; whether it was not before.
    fn mark(&self, index: usize) -> bool {
        let mut state = self.lock();
        if state.settled.len() <= index {
            state.settled.resize(index + 1, false);
        }
        !std::mem::replace(&mut state.settled[index], true)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, SettledState> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The log signal: records are `ExportLogsServiceRequest`s; a `ResourceLogs` is a
/// frame, sharded by its resource, and nothing is shared between requests.
#[derive(Clone, Copy, Debug)]
pub struct Logs;

/// One field of a protobuf message: its number, its whole bytes (key included) and,
/// for length-delimited fields, its content.
struct Field<'a> {
    number: u32,
    whole: &'a [u8],
    content: &'a [u8],
}

/// The fields of an encoded message, in order, without decoding their content.
fn fields(mut bytes: &[u8]) -> Result<Vec<Field<'_>>, FrameError> {
    let fail = |e: prost::DecodeError| FrameError(format!("a log batch is damaged: {e}"));
    let mut out = Vec::new();
    while !bytes.is_empty() {
        let start = bytes;
        let (number, wire_type) = decode_key(&mut bytes).map_err(fail)?;
        let content: &[u8] = match wire_type {
            WireType::LengthDelimited => {
                let len =
                    usize::try_from(decode_varint(&mut bytes).map_err(fail)?).unwrap_or(usize::MAX);
                if len > bytes.len() {
                    return Err(FrameError("a log batch is truncated".into()));
                }
                let content = &bytes[..len];
                bytes.advance(len);
                content
            }
            WireType::Varint => {
                decode_varint(&mut bytes).map_err(fail)?;
                &[]
            }
            WireType::SixtyFourBit | WireType::ThirtyTwoBit => {
                let len = if wire_type == WireType::SixtyFourBit {
                    8
                } else {
                    4
                };
                if len > bytes.len() {
                    return Err(FrameError("a log batch is truncated".into()));
                }
                bytes.advance(len);
                &[]
            }
            WireType::StartGroup | WireType::EndGroup => {
                return Err(FrameError("a log batch uses protobuf groups".into()));
            }
        };
        let whole = &start[..start.len() - bytes.len()];
        out.push(Field {
            number,
            whole,
            content,
        });
    }
    Ok(out)
}

/// The resource and record count of an encoded `ResourceLogs`.
fn resource_and_records(resource_logs: &[u8]) -> Result<(&[u8], usize), FrameError> {
    let mut resource: &[u8] = &[];
    let mut records = 0;
    for field in fields(resource_logs)? {
        match field.number {
            RESOURCE_LOGS_RESOURCE => resource = field.content,
            RESOURCE_LOGS_SCOPE_LOGS => {
                records += fields(field.content)?
                    .iter()
                    .filter(|f| f.number == SCOPE_LOGS_LOG_RECORDS)
                    .count();
            }
            _ => {}
        }
    }
    Ok((resource, records))
}

impl FrameEncoding for Logs {
    type Request = LogRequest;

    fn frames(payload: &[u8]) -> Result<Vec<Frame<'_>>, FrameError> {
        fields(payload)?
            .into_iter()
            .filter(|field| field.number == REQUEST_RESOURCE_LOGS)
            .map(|field| {
                let (key, items) = resource_and_records(field.content)?;
                Ok(Frame::Items {
                    body: field.whole,
                    key,
                    items,
                })
            })
            .collect()
    }

    fn request(frames: &[&[u8]], _shared: &[&[u8]], items: u64, oldest_ms: i64) -> LogRequest {
        LogRequest::new(frames.concat(), items, oldest_ms)
    }

    fn whole_record(compressed: Vec<u8>, items: u64, oldest_ms: i64) -> LogRequest {
        LogRequest {
            snappy: true,
            ..LogRequest::new(compressed, items, oldest_ms)
        }
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
        foldhash::fast::FixedState::with_seed(0).hash_one(resource)
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

#[cfg(test)]
mod tests;
