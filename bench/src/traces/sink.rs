//! The OTLP/HTTP trace endpoint every gateway in trace-bench exports to: `POST
//! /v1/traces`, protobuf, gzip-compressed or not, answered as a backend answers (200
//! and an empty `ExportTraceServiceResponse`). It reads only the span ids
//! ([`super::workload`] numbers the spans) and counts distinct spans, duplicates and
//! ids it never sent; it stores nothing else, so it costs the gateways little.

use std::sync::{Arc, Mutex, PoisonError};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, StatusCode, Uri, header};
use axum::response::IntoResponse;
use prost::Message;

use crate::serve::Served;

/// The most a request may decompress to.
const MAX_DECOMPRESSED_BYTES: usize = 256 << 20;

/// What arrived so far.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Received {
    /// Distinct spans.
    pub distinct: u64,
    /// Spans whose id had arrived before.
    pub duplicates: u64,
    /// Spans with an id the workload did not send.
    pub unknown: u64,
    /// Export requests.
    pub requests: u64,
}

/// `ExportTraceServiceRequest` down to the span ids: prost skips every other field.
#[derive(Clone, PartialEq, Message)]
struct SpanIds {
    #[prost(message, repeated, tag = "1")]
    resource_spans: Vec<ResourceSpanIds>,
}

#[derive(Clone, PartialEq, Message)]
struct ResourceSpanIds {
    #[prost(message, repeated, tag = "2")]
    scope_spans: Vec<ScopeSpanIds>,
}

#[derive(Clone, PartialEq, Message)]
struct ScopeSpanIds {
    #[prost(message, repeated, tag = "2")]
    spans: Vec<SpanId>,
}

#[derive(Clone, PartialEq, Message)]
struct SpanId {
    #[prost(bytes = "vec", tag = "2")]
    span_id: Vec<u8>,
}

struct Seen {
    received: Received,
    /// One bit per span id.
    bits: Vec<u64>,
}

struct SinkState {
    spans: u64,
    seen: Mutex<Seen>,
}

/// The running sink.
pub struct Sink {
    /// Its port on 127.0.0.1.
    pub port: u16,
    state: Arc<SinkState>,
    _served: Served,
}

impl Sink {
    /// Starts a sink that expects the span ids `0..spans`.
    pub fn start(spans: u64) -> std::io::Result<Self> {
        let state = Arc::new(SinkState {
            spans,
            seen: Mutex::new(Seen {
                received: Received::default(),
                bits: vec![0; spans.div_ceil(64) as usize],
            }),
        });
        // rotel's batches of 8,192 spans of the 40x64 mix are ~30 MiB: over axum's 2 MB
        // default, which would refuse them.
        let app = Router::new()
            .fallback(export)
            .layer(DefaultBodyLimit::max(MAX_DECOMPRESSED_BYTES))
            .with_state(state.clone());
        let served = Served::start("trace-bench-sink", app)?;
        Ok(Self {
            port: served.port,
            state,
            _served: served,
        })
    }

    /// `http://127.0.0.1:port`, to which exporters append `/v1/traces`.
    pub fn base_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// What arrived so far.
    pub fn received(&self) -> Received {
        self.state
            .seen
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .received
            .clone()
    }
}

async fn export(
    State(state): State<Arc<SinkState>>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> impl IntoResponse {
    if uri.path() != "/v1/traces" {
        return (StatusCode::NOT_FOUND, Vec::<u8>::new()).into_response();
    }
    let gzip = headers
        .get(header::CONTENT_ENCODING)
        .is_some_and(|v| v.as_bytes() == b"gzip");
    let decoded = if gzip {
        kaas_series::compression::gzip(&body, MAX_DECOMPRESSED_BYTES)
            .map_err(|e| e.to_string())
            .and_then(|raw| SpanIds::decode(raw.as_slice()).map_err(|e| e.to_string()))
    } else {
        SpanIds::decode(body.as_ref()).map_err(|e| e.to_string())
    };
    let request = match decoded {
        Ok(request) => request,
        Err(error) => return (StatusCode::BAD_REQUEST, error.into_bytes()).into_response(),
    };
    {
        let mut seen = state.seen.lock().unwrap_or_else(PoisonError::into_inner);
        seen.received.requests += 1;
        for span in request
            .resource_spans
            .iter()
            .flat_map(|r| &r.scope_spans)
            .flat_map(|s| &s.spans)
        {
            let id = <[u8; 8]>::try_from(span.span_id.as_slice()).map(u64::from_be_bytes);
            let Some(id) = id.ok().filter(|&id| id < state.spans) else {
                seen.received.unknown += 1;
                continue;
            };
            let (word, mask) = ((id / 64) as usize, 1u64 << (id % 64));
            if seen.bits[word] & mask != 0 {
                seen.received.duplicates += 1;
            } else {
                seen.bits[word] |= mask;
                seen.received.distinct += 1;
            }
        }
    }
    (
        [(header::CONTENT_TYPE, "application/x-protobuf")],
        Vec::<u8>::new(),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::traces::workload::{SpanMix, encode};

    #[test]
    fn counts_distinct_spans_duplicates_and_unknown_ids() {
        let sink = Sink::start(30).unwrap();
        let url = format!("{}/v1/traces", sink.base_url());
        let requests = encode(SpanMix::Small, 40, 20);
        let protobuf = [("Content-Type", "application/x-protobuf")];
        for body in [
            &requests.bodies[0],
            &requests.bodies[0],
            &requests.bodies[1],
        ] {
            let (status, _) = kaas_test_support::http::post(&url, &protobuf, body).unwrap();
            assert_eq!(status, 200);
        }
        assert_eq!(
            sink.received(),
            Received {
                distinct: 30,
                duplicates: 20,
                unknown: 10,
                requests: 3,
            }
        );
        let (status, _) = kaas_test_support::http::post(&url, &protobuf, b"\xff").unwrap();
        assert_eq!(status, 400);
        let (status, _) =
            kaas_test_support::http::post(&format!("{}/other", sink.base_url()), &[], b"").unwrap();
        assert_eq!(status, 404);
    }
}
