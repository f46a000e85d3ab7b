//! OTLP traces as OTLP/JSON (`ExportTraceServiceRequest`, the OTLP/HTTP
//! `application/json` encoding), decoded under [`PushLimits`] by the decoder every
//! signal shares (`otlp_json`, where the limits and the encoding rules are
//! described): this module adds the traces' own messages, with `traceId`, `spanId` and
//! `parentSpanId` in hex and `kind` and the status `code` read as integers or by their
//! protobuf names.

use kaas_proto::otlp::span::{Event, Link};
use kaas_proto::otlp::{ExportTraceServiceRequest, ResourceSpans, ScopeSpans, Span, Status};

use crate::otlp_json::{self, json_messages};
use crate::{DecodeError, PushLimits};

/// Protobuf's names of `Span.SpanKind`, by value.
const SPAN_KIND_NAMES: &[&str] = &[
    "SPAN_KIND_UNSPECIFIED",
    "SPAN_KIND_INTERNAL",
    "SPAN_KIND_SERVER",
    "SPAN_KIND_CLIENT",
    "SPAN_KIND_PRODUCER",
    "SPAN_KIND_CONSUMER",
];

/// Protobuf's names of `Status.StatusCode`, by value.
const STATUS_CODE_NAMES: &[&str] = &["STATUS_CODE_UNSET", "STATUS_CODE_OK", "STATUS_CODE_ERROR"];

/// Decodes an OTLP/JSON traces body (already decompressed) under `limits`.
pub fn decode(raw: &[u8], limits: &PushLimits) -> Result<ExportTraceServiceRequest, DecodeError> {
    otlp_json::decode(raw, limits, "traces")
}

json_messages! {
    ExportTraceServiceRequest {
        "resourceSpans" => resource_spans: repeated,
    }
    ResourceSpans {
        "resource" => resource: optional,
        "scopeSpans" => scope_spans: repeated,
        "schemaUrl" => schema_url: string,
    }
    ScopeSpans {
        "scope" => scope: optional,
        "spans" => spans: repeated,
        "schemaUrl" => schema_url: string,
    }
    Span {
        "traceId" => trace_id: id(16),
        "spanId" => span_id: id(8),
        "traceState" => trace_state: string,
        "parentSpanId" => parent_span_id: id(8),
        "flags" => flags: integer,
        "name" => name: string,
        "kind" => kind: integer(SPAN_KIND_NAMES),
        "startTimeUnixNano" => start_time_unix_nano: integer,
        "endTimeUnixNano" => end_time_unix_nano: integer,
        "attributes" => attributes: repeated,
        "droppedAttributesCount" => dropped_attributes_count: integer,
        "events" => events: repeated,
        "droppedEventsCount" => dropped_events_count: integer,
        "links" => links: repeated,
        "droppedLinksCount" => dropped_links_count: integer,
        "status" => status: optional,
    }
    Event {
        "timeUnixNano" => time_unix_nano: integer,
        "name" => name: string,
        "attributes" => attributes: repeated,
        "droppedAttributesCount" => dropped_attributes_count: integer,
    }
    Link {
        "traceId" => trace_id: id(16),
        "spanId" => span_id: id(8),
        "traceState" => trace_state: string,
        "attributes" => attributes: repeated,
        "droppedAttributesCount" => dropped_attributes_count: integer,
        "flags" => flags: integer,
    }
    Status {
        "message" => message: string,
        "code" => code: integer(STATUS_CODE_NAMES),
    }
}

#[cfg(test)]
mod tests;
