//! OTLP traces (`ExportTraceServiceRequest`, protobuf) decoded under [`PushLimits`]
//! exactly as OTLP logs are ([`crate::otlp_logs`], whose bounded decode this shares):
//! the body's size first, then a scan that walks it without allocating, counting the
//! messages prost would decode it into ([`PushLimits::max_otlp_messages`]: spans,
//! events, links and attributes are each two bytes on the wire when empty and a struct
//! in memory) and bounding the nesting of attribute values
//! ([`crate::otlp_logs::MAX_VALUE_DEPTH`]), then prost. Spans are kept as they came;
//! sampling and filtering are a trace pipeline's business.

use kaas_proto::otlp::ExportTraceServiceRequest;

use crate::otlp_logs::decode_bounded;
use crate::wire::MessageShape;
use crate::{DecodeError, PushLimits};

/// Decodes an OTLP traces body (already decompressed) under `limits`.
pub fn decode(raw: &[u8], limits: &PushLimits) -> Result<ExportTraceServiceRequest, DecodeError> {
    decode_bounded(raw, limits, Shape::Request, "ExportTraceServiceRequest")
}

/// The message types of the OTLP trace model.
#[derive(Clone, Copy, Debug)]
enum Shape {
    Request,
    ResourceSpans,
    Resource,
    ScopeSpans,
    Scope,
    Span,
    Event,
    Link,
    Status,
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
            (Self::Request, 1) => Self::ResourceSpans,
            (Self::ResourceSpans, 1) => Self::Resource,
            (Self::ResourceSpans, 2) => Self::ScopeSpans,
            (Self::ScopeSpans, 1) => Self::Scope,
            (Self::ScopeSpans, 2) => Self::Span,
            (Self::Span, 11) => Self::Event,
            (Self::Span, 13) => Self::Link,
            (Self::Span, 15) => Self::Status,
            (Self::Resource, 1)
            | (Self::Scope, 3)
            | (Self::Span, 9)
            | (Self::Event, 3)
            | (Self::Link, 4)
            | (Self::KeyValueList, 1) => Self::KeyValue,
            (Self::KeyValue, 2) | (Self::ArrayValue, 1) => Self::AnyValue,
            (Self::AnyValue, 5) => Self::ArrayValue,
            (Self::AnyValue, 6) => Self::KeyValueList,
            _ => return None,
        })
    }
}

#[cfg(test)]
mod tests {
    use kaas_proto::otlp::span::{Event, Link};
    use kaas_proto::otlp::{
        AnyValue, ArrayValue, KeyValue, ResourceSpans, ScopeSpans, Span, Status, any_value,
    };
    use prost::Message;

    use super::*;
    use crate::otlp_logs::MAX_VALUE_DEPTH;

    fn request(spans: Vec<Span>) -> ExportTraceServiceRequest {
        ExportTraceServiceRequest {
            resource_spans: vec![ResourceSpans {
                scope_spans: vec![ScopeSpans {
                    spans,
                    schema_url: "https://opentelemetry.io/schemas/1.26.0".into(),
                    ..ScopeSpans::default()
                }],
                schema_url: "https://opentelemetry.io/schemas/1.26.0".into(),
                ..ResourceSpans::default()
            }],
        }
    }

    fn attribute(key: &str) -> KeyValue {
        KeyValue {
            key: key.into(),
            value: Some(AnyValue {
                value: Some(any_value::Value::StringValue("v".into())),
            }),
        }
    }

    #[test]
    fn a_span_with_every_field_decodes_whole() {
        let span = Span {
            trace_id: vec![1; 16],
            span_id: vec![2; 8],
            trace_state: "ot=th:8".into(),
            parent_span_id: vec![3; 8],
            flags: 0x301,
            name: "GET /".into(),
            kind: 2,
            start_time_unix_nano: 1,
            end_time_unix_nano: 2,
            attributes: vec![attribute("a")],
            dropped_attributes_count: 1,
            events: vec![Event {
                time_unix_nano: 3,
                name: "exception".into(),
                attributes: vec![attribute("e")],
                dropped_attributes_count: 2,
            }],
            dropped_events_count: 3,
            links: vec![Link {
                trace_id: vec![4; 16],
                span_id: vec![5; 8],
                trace_state: "k=v".into(),
                attributes: vec![attribute("l")],
                dropped_attributes_count: 4,
                flags: 0x101,
            }],
            dropped_links_count: 5,
            status: Some(Status {
                message: "boom".into(),
                code: 2,
            }),
        };
        let sent = request(vec![span.clone(), span]);
        let decoded = decode(&sent.encode_to_vec(), &PushLimits::default()).unwrap();
        assert_eq!(decoded, sent);
    }

    /// Empty spans, events and links, two bytes each on the wire, are refused by count
    /// before prost allocates a struct for each.
    #[test]
    fn many_small_messages_are_refused_before_decoding() {
        let limits = PushLimits {
            max_otlp_messages: 100,
            ..PushLimits::default()
        };
        let body = request(vec![Span::default(); 200]).encode_to_vec();
        assert!(matches!(
            decode(&body, &limits),
            Err(DecodeError::TooManyMessages { limit: 100 })
        ));
        for span in [
            Span {
                events: vec![Event::default(); 200],
                ..Span::default()
            },
            Span {
                links: vec![Link::default(); 200],
                ..Span::default()
            },
            Span {
                links: vec![Link {
                    attributes: vec![KeyValue::default(); 200],
                    ..Link::default()
                }],
                ..Span::default()
            },
        ] {
            let body = request(vec![span]).encode_to_vec();
            assert!(matches!(
                decode(&body, &limits),
                Err(DecodeError::TooManyMessages { .. })
            ));
        }
    }

    #[test]
    fn deeply_nested_event_attributes_are_refused() {
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
            request(vec![Span {
                events: vec![Event {
                    attributes: vec![KeyValue {
                        key: "deep".into(),
                        value: Some(nested(depth)),
                    }],
                    ..Event::default()
                }],
                ..Span::default()
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
    fn a_body_over_the_decompressed_limit_or_not_a_request_is_refused() {
        let limits = PushLimits {
            max_decompressed_bytes: 10,
            ..PushLimits::default()
        };
        let body = request(vec![Span::default(); 10]).encode_to_vec();
        assert!(matches!(
            decode(&body, &limits),
            Err(DecodeError::DecompressedTooLarge { .. })
        ));
        assert!(matches!(
            decode(&[0x0a, 0x05, 0x01], &PushLimits::default()),
            Err(DecodeError::Malformed(_))
        ));
    }
}
