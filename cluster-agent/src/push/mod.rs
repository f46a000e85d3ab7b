//! Push input: workloads send metrics to the agent instead of being scraped. The agent
//! accepts Prometheus remote-write 1.0 on `POST /api/v1/write` and OTLP over
//! HTTP/protobuf on `POST /v1/metrics`, on its HTTP port, and OTLP over gRPC on its own
//! port ([`otlp_grpc`]); the well-known in-cluster address is the agent's Service.
//!
//! Pushed series go to every pipeline whose `input.remoteWrite` (or `input.otlp`) is
//! enabled, each applying its own namespace filter (on the `namespace` label, which OTLP
//! data gets from `k8s.namespace.name`), metric relabeling, name filter and external
//! labels, then into that pipeline's buffer. A request is acknowledged once it is
//! buffered, so the pushing workload never waits for a backend.

pub mod otlp;
pub mod otlp_grpc;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use kaas_pipeline::input::WorkloadInput;
use kaas_proto::otlp::{ExportMetricsServiceRequest, ExportMetricsServiceResponse};
use kaas_proto::remote_write::v1::{MetricMetadata, WriteRequest};
use prost::Message;
use tokio::sync::RwLock;

use crate::batch::Batch;
use crate::labels::Labels;
use crate::pipeline::runtime::Pipelines;
use crate::processing::process_sample;

/// Largest pushed body accepted (compressed for remote-write). Matches the scrape body
/// limit: far above any sane request, low enough to protect the agent's memory.
pub const MAX_PUSH_BODY_BYTES: usize = 64 << 20;

/// Which push protocol a request came in with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Protocol {
    /// Prometheus remote-write.
    RemoteWrite,
    /// OTLP.
    Otlp,
}

/// Counters of pushed samples.
#[derive(Debug, Default)]
pub struct PushStats {
    /// Samples received.
    pub received: AtomicU64,
    /// Samples no pipeline took (none enabled the input, or all filtered them out).
    pub unrouted: AtomicU64,
    /// Requests refused as malformed.
    pub malformed_requests: AtomicU64,
}

#[derive(Clone)]
struct PushState {
    pipelines: Arc<RwLock<Pipelines>>,
    stats: Arc<PushStats>,
}

/// The push routes.
pub fn routes(pipelines: Arc<RwLock<Pipelines>>, stats: Arc<PushStats>) -> Router {
    Router::new()
        .route("/api/v1/write", post(remote_write))
        .route("/v1/metrics", post(otlp_http))
        .layer(axum::extract::DefaultBodyLimit::max(MAX_PUSH_BODY_BYTES))
        .with_state(PushState { pipelines, stats })
}

fn bad_request(state: &PushState, reason: String) -> Response {
    state
        .stats
        .malformed_requests
        .fetch_add(1, Ordering::Relaxed);
    (StatusCode::BAD_REQUEST, reason).into_response()
}

async fn remote_write(State(state): State<PushState>, body: Bytes) -> Response {
    let raw = match snap::raw::Decoder::new().decompress_vec(&body) {
        Ok(raw) => raw,
        Err(e) => return bad_request(&state, format!("body is not snappy-compressed: {e}")),
    };
    let request = match WriteRequest::decode(raw.as_slice()) {
        Ok(request) => request,
        Err(e) => {
            return bad_request(
                &state,
                format!("body is not a remote-write 1.0 WriteRequest: {e}"),
            );
        }
    };
    let mut samples = Vec::new();
    for series in request.timeseries {
        let labels = Labels::from_pairs(series.labels.into_iter().map(|l| (l.name, l.value)));
        for sample in series.samples {
            samples.push((labels.clone(), sample.timestamp, sample.value));
        }
    }
    route(&state, Protocol::RemoteWrite, samples, request.metadata).await;
    StatusCode::NO_CONTENT.into_response()
}

async fn otlp_http(State(state): State<PushState>, headers: HeaderMap, body: Bytes) -> Response {
    let content_type = headers
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if !content_type.starts_with("application/x-protobuf") {
        state
            .stats
            .malformed_requests
            .fetch_add(1, Ordering::Relaxed);
        return (
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "send OTLP as application/x-protobuf",
        )
            .into_response();
    }
    let request = match ExportMetricsServiceRequest::decode(body.as_ref()) {
        Ok(request) => request,
        Err(e) => {
            return bad_request(
                &state,
                format!("body is not an ExportMetricsServiceRequest: {e}"),
            );
        }
    };
    let (samples, metadata) = otlp::to_samples(&request);
    route(&state, Protocol::Otlp, samples, metadata).await;
    (
        StatusCode::OK,
        [(axum::http::header::CONTENT_TYPE, "application/x-protobuf")],
        ExportMetricsServiceResponse::default().encode_to_vec(),
    )
        .into_response()
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// Hands pushed samples to every pipeline that takes them.
async fn route(
    state: &PushState,
    protocol: Protocol,
    samples: Vec<(Labels, i64, f64)>,
    metadata: Vec<MetricMetadata>,
) {
    let total = samples.len() as u64;
    state.stats.received.fetch_add(total, Ordering::Relaxed);
    let pipelines = state.pipelines.read().await;
    let mut routed_anywhere = vec![false; samples.len()];
    for pipeline in pipelines.values() {
        let input = &pipeline.pipeline.spec().input;
        let Some(accepts) = (match protocol {
            Protocol::RemoteWrite => input.remote_write.as_ref(),
            Protocol::Otlp => input.otlp.as_ref(),
        })
        .filter(|i: &&WorkloadInput| i.enabled) else {
            continue;
        };
        let mut kept = Vec::new();
        for (index, (labels, timestamp, value)) in samples.iter().enumerate() {
            if !accepts.namespaces.admits(labels.get("namespace"))
                && !labels.get("namespace").is_empty()
            {
                continue;
            }
            if let Some(processed) = process_sample(labels, &pipeline.pipeline.processors) {
                routed_anywhere[index] = true;
                kept.push((processed, *timestamp, *value));
            }
        }
        if kept.is_empty() {
            continue;
        }
        let batch = Batch::from_samples(kept, metadata.clone(), &pipeline.external_labels);
        // A failed write is counted and reported by the inlet.
        let _ = pipeline.inlet.push(&batch, now_ms());
    }
    let unrouted = routed_anywhere.iter().filter(|r| !**r).count() as u64;
    state.stats.unrouted.fetch_add(unrouted, Ordering::Relaxed);
}
