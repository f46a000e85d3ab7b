//! The trace record: the unit a trace pipeline buffers and sends, a batch of OTLP
//! `ResourceSpans` ([`TraceBatch`]), stored in a buffer record as an encoded
//! `ExportTraceServiceRequest` (snappy-compressed by the inlet), and the trace signal
//! ([`Traces`]).
//!
//! **Frames.** Exactly the log signal's ([`super::otlp`]): a frame is one
//! `ResourceSpans` field of the request, never decoded on the way; its key is the
//! encoded `Resource`, so one service's spans share a shard and keep their order, and
//! a request is cut only between resources. A sender keeps a `ResourceSpans` as the
//! pusher grouped it, so one request bounds a frame (the push limits bound a request).
//!
//! **Age.** Spans carry no time of arrival, and their own times say when the work ran
//! (a long span ends long after it started, a sender's clock may be off), so a batch
//! says nothing of its age ([`Payload::oldest_ms`] is `None`) and the buffer's age bound
//! counts from when the inlet stored it.

use kaas_proto::otlp::{ExportTraceServiceRequest, ResourceSpans};

use super::otlp;
use super::signal::{Frame, FrameEncoding, FrameError, Payload, Settled, ShardingKey};

/// A request as the sender hands it to the trace exporter: an encoded
/// `ExportTraceServiceRequest`, sent as it is ([`otlp::OtlpRequest`]).
pub type TraceRequest = otlp::OtlpRequest<ExportTraceServiceRequest>;

/// A batch of spans, grouped by resource and scope as OTLP groups them.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct TraceBatch {
    /// The spans per resource.
    pub resource_spans: Vec<ResourceSpans>,
}

/// How many spans `resource_spans` hold.
pub fn span_count(resource_spans: &[ResourceSpans]) -> usize {
    resource_spans
        .iter()
        .flat_map(|r| &r.scope_spans)
        .map(|s| s.spans.len())
        .sum()
}

impl Payload for TraceBatch {
    fn payload(&self) -> Vec<u8> {
        otlp::encode_resources(&self.resource_spans)
    }

    fn items(&self) -> usize {
        span_count(&self.resource_spans)
    }

    fn oldest_ms(&self) -> Option<i64> {
        None
    }
}

/// The trace signal: records are `ExportTraceServiceRequest`s; a `ResourceSpans` is a
/// frame, sharded by its resource, and nothing is shared between requests.
#[derive(Clone, Copy, Debug)]
pub struct Traces;

impl FrameEncoding for Traces {
    type Request = TraceRequest;

    fn frames(payload: &[u8]) -> Result<Vec<Frame<'_>>, FrameError> {
        otlp::resource_frames(payload)
    }

    fn request(frames: &[&[u8]], _shared: &[&[u8]], items: u64, oldest_ms: i64) -> TraceRequest {
        TraceRequest::new(frames.concat(), items, oldest_ms)
    }

    fn whole_record(compressed: Vec<u8>, items: u64, oldest_ms: i64) -> TraceRequest {
        TraceRequest::snappy(compressed, items, oldest_ms)
    }

    fn items(request: &TraceRequest) -> u64 {
        request.records
    }

    fn oldest_ms(request: &TraceRequest) -> i64 {
        request.oldest_ms
    }

    fn settled(request: &TraceRequest) -> Settled {
        request.settled.counts()
    }
}

impl ShardingKey for Traces {
    fn shard_key(resource: &[u8]) -> u64 {
        otlp::resource_shard_key(resource)
    }
}

#[cfg(test)]
mod tests {
    use kaas_proto::otlp::span::{Event, Link};
    use kaas_proto::otlp::{AnyValue, KeyValue, Resource, ScopeSpans, Span, any_value};
    use prost::Message;

    use super::*;

    fn resource_spans(service: &str, spans: usize) -> ResourceSpans {
        ResourceSpans {
            resource: Some(Resource {
                attributes: vec![KeyValue {
                    key: "service.name".into(),
                    value: Some(AnyValue {
                        value: Some(any_value::Value::StringValue(service.into())),
                    }),
                }],
                ..Resource::default()
            }),
            scope_spans: vec![ScopeSpans {
                spans: (0..spans)
                    .map(|i| Span {
                        name: format!("{service}-{i}"),
                        events: vec![Event::default()],
                        links: vec![Link::default()],
                        ..Span::default()
                    })
                    .collect(),
                schema_url: "scope-schema".into(),
                ..ScopeSpans::default()
            }],
            schema_url: "resource-schema".into(),
        }
    }

    /// One frame per resource, keyed by the resource and counting its spans (not its
    /// events or links); frames joined back are the request, every field kept.
    #[test]
    fn a_batch_frames_per_resource_and_joins_back_whole() {
        let batch = TraceBatch {
            resource_spans: vec![resource_spans("a", 3), resource_spans("b", 2)],
        };
        assert_eq!(batch.items(), 5);
        assert_eq!(batch.oldest_ms(), None);
        let payload = batch.payload();
        let frames = Traces::frames(&payload).unwrap();
        let mut bodies = Vec::new();
        let mut keys = Vec::new();
        for frame in &frames {
            let Frame::Items { body, key, items } = frame else {
                panic!("no shared frames");
            };
            bodies.push(*body);
            keys.push(Traces::shard_key(key));
            assert!(*items == 3 || *items == 2);
        }
        assert_eq!(frames.len(), 2);
        assert_ne!(keys[0], keys[1]);
        let request = Traces::request(&bodies, &[], 5, 42);
        assert_eq!(Traces::items(&request), 5);
        let decoded = request.decode().unwrap();
        assert_eq!(
            decoded,
            ExportTraceServiceRequest {
                resource_spans: batch.resource_spans.clone()
            }
        );
        // A whole record sent as stored decompresses to the same request.
        let compressed = snap::raw::Encoder::new().compress_vec(&payload).unwrap();
        let whole = Traces::whole_record(compressed, 5, 42);
        assert_eq!(whole.decode().unwrap().encode_to_vec(), payload);
    }
}
