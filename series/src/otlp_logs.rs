//! OTLP logs (`ExportLogsServiceRequest`, protobuf) decoded under [`PushLimits`]: the
//! body's size first, then a scan that walks it without allocating and counts the
//! messages prost would decode it into ([`PushLimits::max_otlp_messages`]: an empty
//! `LogRecord`, `KeyValue` or `AnyValue` is two bytes on the wire and a struct in
//! memory), and the nesting of attribute values ([`MAX_VALUE_DEPTH`]: `AnyValue` is
//! recursive through arrays and key-value lists), then prost. Records are kept as
//! they came: what a log pipeline does with them is its processing's business.

use kaas_proto::otlp::ExportLogsServiceRequest;
use prost::Message;

use crate::wire::{MessageShape, scan};
use crate::{DecodeError, PushLimits};

/// Deepest nesting of attribute and body values (arrays and key-value lists inside
/// each other): far more than any structured log needs, and well inside prost's own
/// recursion limit of 100, so a deep value is refused with a reason rather than a
/// decode error.
pub const MAX_VALUE_DEPTH: usize = 32;

/// Decodes an OTLP logs body (already decompressed) under `limits`.
pub fn decode(raw: &[u8], limits: &PushLimits) -> Result<ExportLogsServiceRequest, DecodeError> {
    decode_bounded(raw, limits, Shape::Request, "ExportLogsServiceRequest")
}

/// Decodes an OTLP request body (already decompressed) of message `M` under `limits`:
/// its size, then a scan of `shape` (the request's message tree) counting messages and
/// bounding value nesting, then prost. Shared by the OTLP signals' decoders
/// ([`crate::otlp_traces`]), which differ only in their shape; `name` is the message's
/// name for refusals.
pub(crate) fn decode_bounded<M: Message + Default, S: MessageShape>(
    raw: &[u8],
    limits: &PushLimits,
    shape: S,
    name: &str,
) -> Result<M, DecodeError> {
    if raw.len() > limits.max_decompressed_bytes {
        return Err(DecodeError::DecompressedTooLarge {
            limit: limits.max_decompressed_bytes,
            size: Some(raw.len() as u64),
        });
    }
    let mut messages = 0;
    scan(
        raw,
        shape,
        0,
        MAX_VALUE_DEPTH,
        &mut messages,
        limits.max_otlp_messages,
    )?;
    M::decode(raw).map_err(|e| DecodeError::Malformed(format!("the body is not an {name}: {e}")))
}

/// The message types of the OTLP logs model.
#[derive(Clone, Copy, Debug)]
enum Shape {
    Request,
    ResourceLogs,
    Resource,
    ScopeLogs,
    Scope,
    LogRecord,
    KeyValue,
    AnyValue,
    ArrayValue,
    KeyValueList,
}

impl MessageShape for Shape {
    fn nests_values(self) -> bool {
        matches!(self, Self::AnyValue)
    }

    fn child(self, number: u32) -> Option<Self> {
        Some(match (self, number) {
            (Self::Request, 1) => Self::ResourceLogs,
            (Self::ResourceLogs, 1) => Self::Resource,
            (Self::ResourceLogs, 2) => Self::ScopeLogs,
            (Self::ScopeLogs, 1) => Self::Scope,
            (Self::ScopeLogs, 2) => Self::LogRecord,
            (Self::Resource, 1)
            | (Self::Scope, 3)
            | (Self::LogRecord, 6)
            | (Self::KeyValueList, 1) => Self::KeyValue,
            (Self::LogRecord, 5) | (Self::KeyValue, 2) | (Self::ArrayValue, 1) => Self::AnyValue,
            (Self::AnyValue, 5) => Self::ArrayValue,
            (Self::AnyValue, 6) => Self::KeyValueList,
            _ => return None,
        })
    }
}

#[cfg(test)]
mod tests {
    use kaas_proto::otlp::{
        AnyValue, ArrayValue, KeyValue, LogRecord, ResourceLogs, ScopeLogs, any_value,
    };

    use super::*;

    fn request(records: Vec<LogRecord>) -> ExportLogsServiceRequest {
        ExportLogsServiceRequest {
            resource_logs: vec![ResourceLogs {
                scope_logs: vec![ScopeLogs {
                    log_records: records,
                    ..ScopeLogs::default()
                }],
                ..ResourceLogs::default()
            }],
        }
    }

    #[test]
    fn a_request_within_the_limits_decodes_whole() {
        let record = LogRecord {
            body: Some(AnyValue {
                value: Some(any_value::Value::StringValue("hello".into())),
            }),
            attributes: vec![KeyValue {
                key: "k".into(),
                value: None,
            }],
            ..LogRecord::default()
        };
        let sent = request(vec![record.clone(), record]);
        let decoded = decode(&sent.encode_to_vec(), &PushLimits::default()).unwrap();
        assert_eq!(decoded, sent);
    }

    /// Issue 16: many empty records, each two bytes on the wire, are refused by count
    /// before prost allocates a struct for each.
    #[test]
    fn many_small_messages_are_refused_before_decoding() {
        let limits = PushLimits {
            max_otlp_messages: 100,
            ..PushLimits::default()
        };
        let body = request(vec![LogRecord::default(); 200]).encode_to_vec();
        assert!(matches!(
            decode(&body, &limits),
            Err(DecodeError::TooManyMessages { limit: 100 })
        ));
        let attributes = LogRecord {
            attributes: vec![KeyValue::default(); 200],
            ..LogRecord::default()
        };
        let body = request(vec![attributes]).encode_to_vec();
        assert!(matches!(
            decode(&body, &limits),
            Err(DecodeError::TooManyMessages { .. })
        ));
    }

    /// Issue 16: a body nested in arrays deeper than [`MAX_VALUE_DEPTH`] is refused
    /// with that reason; at the bound it decodes.
    #[test]
    fn deeply_nested_values_are_refused() {
        fn nested(depth: usize) -> AnyValue {
            let mut value = AnyValue::default();
            for _ in 1..depth {
                value = AnyValue {
                    value: Some(any_value::Value::ArrayValue(ArrayValue {
                        values: vec![value],
                    })),
                };
            }
            value
        }
        let body = |depth| {
            request(vec![LogRecord {
                body: Some(nested(depth)),
                ..LogRecord::default()
            }])
            .encode_to_vec()
        };
        assert!(decode(&body(MAX_VALUE_DEPTH), &PushLimits::default()).is_ok());
        let Err(DecodeError::Malformed(reason)) =
            decode(&body(MAX_VALUE_DEPTH + 1), &PushLimits::default())
        else {
            panic!("accepted");
        };
        assert!(reason.contains("nested more than 32"), "{reason}");
    }

    #[test]
    fn a_body_over_the_decompressed_limit_is_refused() {
        let limits = PushLimits {
            max_decompressed_bytes: 10,
            ..PushLimits::default()
        };
        let body = request(vec![LogRecord::default(); 10]).encode_to_vec();
        assert!(matches!(
            decode(&body, &limits),
            Err(DecodeError::DecompressedTooLarge { .. })
        ));
    }
}
