//! What the OTLP signals (logs, [`super::logs`]; traces, [`super::traces`]) share: a
//! record is an encoded export request (`ExportLogsServiceRequest`,
//! `ExportTraceServiceRequest`), and the sender hands exporters an [`OtlpRequest`].
//!
//! **Frames.** Both requests have the same shape on the wire: field 1 of the request is
//! one resource's items (`ResourceLogs`, `ResourceSpans`), whose field 1 is the
//! `Resource` and field 2 a scope's items (`ScopeLogs`, `ScopeSpans`), whose field 2 is
//! one item (`LogRecord`, `Span`). So one framing serves both ([`resource_frames`]): a
//! frame is one resource field of the request, tag and length included, so frames join
//! into a request by concatenation and are never decoded on the way; its key is the
//! encoded `Resource`, so one resource's items share a shard and keep their order
//! ([`resource_shard_key`]), and a request is cut only between resources.

use std::borrow::Cow;
use std::hash::BuildHasher;
use std::marker::PhantomData;
use std::sync::Mutex;

use prost::Message;
use prost::bytes::Buf;
use prost::encoding::{WireType, decode_key, decode_varint};

use super::signal::{Frame, FrameError, Settled};

/// The request's resource items (`resource_logs`, `resource_spans`).
const REQUEST_RESOURCES: u32 = 1;
/// A resource item's `resource`.
const RESOURCE_ITEMS_RESOURCE: u32 = 1;
/// A resource item's scopes (`scope_logs`, `scope_spans`).
const RESOURCE_ITEMS_SCOPES: u32 = 2;
/// A scope's items (`log_records`, `spans`).
const SCOPE_ITEMS: u32 = 2;

/// A buffered OTLP record or request that cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum OtlpBatchError {
    /// Not snappy.
    #[error("cannot decompress a buffered batch: {0}")]
    Snappy(#[from] snap::Error),
    /// Not the export request it should be.
    #[error("cannot decode a buffered batch: {0}")]
    Decode(#[from] prost::DecodeError),
    /// Read in place ([`super::logs::view`]), not the export request it should be.
    #[error("cannot read a buffered batch: {0}")]
    Damaged(&'static str),
}

/// A request as the sender hands it to an OTLP signal's exporter: an encoded export
/// request `M` (`ExportLogsServiceRequest`, `ExportTraceServiceRequest`), which an OTLP
/// exporter sends as it is and the others convert.
#[derive(Debug)]
pub struct OtlpRequest<M> {
    /// The encoded request, snappy-compressed when `snappy` is set.
    pub body: Vec<u8>,
    /// Whether `body` is snappy-compressed (a buffered record sent as it is).
    pub snappy: bool,
    /// Items in it: log records, or spans.
    pub records: u64,
    /// Its oldest item, Unix milliseconds.
    pub oldest_ms: i64,
    /// Which items earlier attempts settled, for backends that answer per item.
    pub settled: SettledRecords,
    message: PhantomData<fn() -> M>,
}

impl<M: Message + Default> OtlpRequest<M> {
    /// A request of an uncompressed body.
    pub fn new(body: Vec<u8>, records: u64, oldest_ms: i64) -> Self {
        Self {
            body,
            snappy: false,
            records,
            oldest_ms,
            settled: SettledRecords::default(),
            message: PhantomData,
        }
    }

    /// A request of a snappy-compressed body: a buffered record sent as it is stored.
    pub fn snappy(compressed: Vec<u8>, records: u64, oldest_ms: i64) -> Self {
        Self {
            snappy: true,
            ..Self::new(compressed, records, oldest_ms)
        }
    }

    /// The uncompressed request, decompressing if needed.
    pub fn raw(&self) -> Result<Cow<'_, [u8]>, OtlpBatchError> {
        if self.snappy {
            Ok(Cow::Owned(
                snap::raw::Decoder::new().decompress_vec(&self.body)?,
            ))
        } else {
            Ok(Cow::Borrowed(&self.body))
        }
    }

    /// The request decoded.
    pub fn decode(&self) -> Result<M, OtlpBatchError> {
        Ok(M::decode(self.raw()?.as_ref())?)
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

/// One field of a protobuf message: its number, its whole bytes (key included) and,
/// for length-delimited fields, its content.
struct Field<'a> {
    number: u32,
    whole: &'a [u8],
    content: &'a [u8],
}

/// The fields of an encoded message, in order, without decoding their content.
fn fields(mut bytes: &[u8]) -> Result<Vec<Field<'_>>, FrameError> {
    let fail = |e: prost::DecodeError| FrameError(format!("an OTLP batch is damaged: {e}"));
    let mut out = Vec::new();
    while !bytes.is_empty() {
        let start = bytes;
        let (number, wire_type) = decode_key(&mut bytes).map_err(fail)?;
        let content: &[u8] = match wire_type {
            WireType::LengthDelimited => {
                let len =
                    usize::try_from(decode_varint(&mut bytes).map_err(fail)?).unwrap_or(usize::MAX);
                if len > bytes.len() {
                    return Err(FrameError("an OTLP batch is truncated".into()));
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
                    return Err(FrameError("an OTLP batch is truncated".into()));
                }
                bytes.advance(len);
                &[]
            }
            WireType::StartGroup | WireType::EndGroup => {
                return Err(FrameError("an OTLP batch uses protobuf groups".into()));
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

/// The resource and item count of an encoded `ResourceLogs` or `ResourceSpans`.
fn resource_and_items(resource_items: &[u8]) -> Result<(&[u8], usize), FrameError> {
    let mut resource: &[u8] = &[];
    let mut items = 0;
    for field in fields(resource_items)? {
        match field.number {
            RESOURCE_ITEMS_RESOURCE => resource = field.content,
            RESOURCE_ITEMS_SCOPES => {
                items += fields(field.content)?
                    .iter()
                    .filter(|f| f.number == SCOPE_ITEMS)
                    .count();
            }
            _ => {}
        }
    }
    Ok((resource, items))
}

/// Splits an encoded export request into its frames: one per resource field, keyed by
/// the encoded `Resource` (see the module documentation).
pub fn resource_frames(payload: &[u8]) -> Result<Vec<Frame<'_>>, FrameError> {
    fields(payload)?
        .into_iter()
        .filter(|field| field.number == REQUEST_RESOURCES)
        .map(|field| {
            let (key, items) = resource_and_items(field.content)?;
            Ok(Frame::Items {
                body: field.whole,
                key,
                items,
            })
        })
        .collect()
}

/// The payload of a batch of resource items: the export request's encoding, field by
/// field, without cloning the items into a request first.
pub fn encode_resources<R: Message>(resources: &[R]) -> Vec<u8> {
    let len = resources
        .iter()
        .map(|r| prost::encoding::message::encoded_len(REQUEST_RESOURCES, r))
        .sum();
    let mut out = Vec::with_capacity(len);
    for resource in resources {
        prost::encoding::message::encode(REQUEST_RESOURCES, resource, &mut out);
    }
    out
}

/// The shard of a frame keyed by its encoded `Resource`.
pub fn resource_shard_key(resource: &[u8]) -> u64 {
    foldhash::fast::FixedState::with_seed(0).hash_one(resource)
}
