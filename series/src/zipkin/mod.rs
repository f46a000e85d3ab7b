//! Zipkin v2 JSON spans (the body of `POST /api/v2/spans`, already decompressed),
//! decoded under [`PushLimits`] and converted to OTLP the way the OpenTelemetry
//! Collector's Zipkin receiver converts them (its translator,
//! `pkg/translator/zipkin/zipkinv2/to_translator.go` in opentelemetry-collector-contrib),
//! so that a span sent to the agent reaches the backend as it would through the
//! Collector. The body is a JSON array of spans as the Zipkin API
//! (`zipkin2-api.yaml`, `ListOfSpans`) defines them.
//!
//! # Decoding
//!
//! The body's size is checked first, then one streaming pass of `serde_json` reads the
//! spans (no `serde_json::Value` tree), refusing as soon as a limit is crossed, so a
//! hostile body costs at most the limits' worth of work and memory:
//! - every span, tag, annotation and attribute of an annotation or link counts as one
//!   message of the OTLP request it becomes, against [`PushLimits::max_otlp_messages`];
//! - a span has at most [`MAX_TAGS_PER_SPAN`] tags and [`MAX_ANNOTATIONS_PER_SPAN`]
//!   annotations;
//! - tag keys are at most [`PushLimits::max_label_name_bytes`] long; span and service
//!   names at most [`PushLimits::max_label_value_bytes`]; tag and annotation values at
//!   most [`MAX_VALUE_BYTES`]; ids and addresses are read only up to a few dozen bytes;
//! - unknown fields are skipped without allocating; `serde_json`'s bound of 128 nested
//!   arrays and objects stops deep nesting before it can exhaust the stack.
//!
//! Everything is linear in the body, or `n log n` for the sorted tags and groups.
//! A refusal is a [`DecodeError`] naming the limit, the field and the span's index.
//!
//! # Mapping (as the Collector's translator)
//!
//! | Zipkin | OTLP |
//! | --- | --- |
//! | `traceId` (1 to 32 hex digits, 64 or 128 bits) | `trace_id`, left-padded with zeros to 16 bytes |
//! | `id`, `parentId` (1 to 16 hex digits) | `span_id`, `parent_span_id` (none when empty, zero or equal to `id`) |
//! | `name` | `name` |
//! | `kind` `CLIENT`, `SERVER`, `PRODUCER`, `CONSUMER` | `kind`; without one, the tag `span.kind` = `internal` gives `INTERNAL` (the tag is removed) |
//! | `timestamp`, `duration` (µs) | `start_time_unix_nano`, `end_time_unix_nano`; without a timestamp the span starts at 0 and gets `otel.zipkin.absentField.startTime` = `true` |
//! | `localEndpoint.serviceName` | resource `service.name` (or the key the tag `otlp.service.name.source` names); one `ResourceSpans` per service, sorted by name; no service gives a resource without attributes |
//! | `localEndpoint.ipv4`/`ipv6`, `port` | attributes `net.host.ip`, `net.host.port` |
//! | `remoteEndpoint.serviceName`, `ipv4`/`ipv6`, `port` | attributes `peer.service`, `net.peer.ip`, `net.peer.port` |
//! | tags | string attributes; resource conventions (`host.name`, `k8s.*`, `service.*`, … as semantic conventions 1.6.1 list them) go to the resource from the first span of each service and are dropped from the others |
//! | tags `otel.library.name`, `otel.library.version` | the instrumentation scope; one `ScopeSpans` per library |
//! | tag `w3c.tracestate` | `trace_state` |
//! | tags `otel.status_code`, `otel.status_description` | `status`; a tag `error` makes it `ERROR` (and is removed when it is `"true"`) |
//! | annotations | span events (see below) |
//! | tags `otlp.link.<n>` (`traceId\|spanId\|traceState\|{json attributes}\|dropped`, the Collector's exporter's form) | span links, from `otlp.link.0` up to the first missing index (at most 128) |
//!
//! # Where this differs from the Collector, and why
//!
//! - `otel.status_code` is also read as `OK`, `ERROR` and `UNSET`, the values the
//!   OpenTelemetry specification's Zipkin exporter writes (the Collector reads only its
//!   own exporter's spellings, and would leave such a span's status unset).
//! - An annotation in the Collector's exporter form `name|{json attributes}|dropped` is
//!   split into the event's name, attributes and dropped count; any other value is the
//!   event's name whole (the Collector refuses the whole request when the middle is not
//!   JSON, and keeps only the part before a `|`).
//! - `debug: true` (a B3 "force sample") sets the W3C sampled flag in `flags`;
//!   `shared: true` (the server half of a span the client started) sets the
//!   "parent is remote" bits (`0x300`), since its parent is on the client's host. The
//!   Collector drops both.
//! - Ids of all zeros, IP addresses that do not parse, negative or overflowing times,
//!   tag values that are not strings, and annotations without a timestamp are refused
//!   with their reason (the Collector's JSON reader refuses most of these too, some
//!   silently wraps).
//! - A tag `otlp.link.<n>` that is not in the exporter's form (ids that are not hex,
//!   attributes that are not a JSON object, a count that is not a number) stays a tag,
//!   where the Collector refuses the whole request.

mod convert;
mod read;

use std::collections::BTreeMap;
use std::net::IpAddr;

use kaas_proto::otlp::span::{Event, Link};
use kaas_proto::otlp::{ExportTraceServiceRequest, SpanKind};

use crate::{DecodeError, PushLimits};

/// Most tags on one span: the OpenTelemetry SDKs' default attribute count limit (128);
/// Zipkin instrumentation (Brave, zipkin-go, Envoy) sets a dozen or two.
pub const MAX_TAGS_PER_SPAN: usize = 128;

/// Most annotations on one span: the OpenTelemetry SDKs' default event count limit
/// (128); Zipkin instrumentation records a few (`ws`, `wr`, an error).
pub const MAX_ANNOTATIONS_PER_SPAN: usize = 128;

/// Longest tag or annotation value in bytes. Tags carry SQL statements, URLs and, in
/// an `error` tag, stack traces, mostly under 8 KiB; 16 KiB keeps those whole while
/// one span's tags stay a few MiB at worst (and the body bounds the request anyway).
pub const MAX_VALUE_BYTES: usize = 16 * 1024;

/// Longest id read: 32 hex digits are a 128-bit trace id; a longer string is refused
/// as a bad id, and one over this bound before it is copied.
const MAX_ID_TEXT_BYTES: usize = 64;

/// Longest IP address read (the longest IPv6 text is 45 characters).
const MAX_IP_TEXT_BYTES: usize = 64;

/// The service name of spans without a local service (the Collector's
/// `ResourceNoServiceName`): their resource has no attributes.
pub const NO_SERVICE_NAME: &str = "OTLPResourceNoServiceName";

/// The tag naming the resource attribute the local service name is written to.
const SERVICE_NAME_SOURCE: &str = "otlp.service.name.source";

/// The attribute marking a span that came without a timestamp.
pub const START_TIME_ABSENT: &str = "otel.zipkin.absentField.startTime";

/// The tags naming the instrumentation scope.
const LIBRARY_NAME: &str = "otel.library.name";
const LIBRARY_VERSION: &str = "otel.library.version";

/// The links a span can have (`otlp.link.0` to `otlp.link.127`, as the Collector
/// reads them).
const MAX_LINKS: usize = 128;

/// The W3C sampled flag, set for `debug` spans.
const FLAG_SAMPLED: u32 = 0x01;
/// `SPAN_FLAGS_CONTEXT_HAS_IS_REMOTE_MASK | SPAN_FLAGS_CONTEXT_IS_REMOTE_MASK`, set for
/// `shared` spans.
const FLAGS_PARENT_IS_REMOTE: u32 = 0x300;

/// Decodes a Zipkin v2 JSON body (already decompressed) under `limits` into the OTLP
/// request the Collector's Zipkin receiver would make of it.
pub fn decode(raw: &[u8], limits: &PushLimits) -> Result<ExportTraceServiceRequest, DecodeError> {
    if raw.len() > limits.max_decompressed_bytes {
        return Err(DecodeError::DecompressedTooLarge {
            limit: limits.max_decompressed_bytes,
            size: Some(raw.len() as u64),
        });
    }
    read::spans(raw, limits).map(convert::to_otlp)
}

/// One span as read, checked, before it is converted.
struct ZipkinSpan {
    trace_id: [u8; 16],
    id: [u8; 8],
    parent_id: Option<[u8; 8]>,
    name: String,
    kind: Option<SpanKind>,
    start: u64,
    end: u64,
    start_absent: bool,
    flags: u32,
    local: Option<Endpoint>,
    remote: Option<Endpoint>,
    events: Vec<Event>,
    links: Vec<Link>,
    tags: BTreeMap<String, String>,
}

#[derive(Default)]
struct Endpoint {
    service_name: String,
    ipv4: Option<IpAddr>,
    ipv6: Option<IpAddr>,
    port: u16,
}

#[cfg(test)]
mod tests;
