//! OTLP traces into the trace pipelines: `POST /v1/traces` (protobuf or OTLP/JSON,
//! gzip or not) and, through [`super::otlp_grpc`], `TraceService/Export`, with the
//! checks of every push receiver in their order ([`super`]): no trace pipeline → 404 /
//! `UNIMPLEMENTED` (OTLP's "this signal is not served here"); credentials; body size;
//! shape, decoded by `kaas_series::otlp_traces`. Zipkin v2 JSON (`POST /api/v2/spans`
//! on the Zipkin port) takes the same path to the pipelines whose `zipkin` input is on,
//! with that input's authentication and namespaces, decoded and converted to OTLP by
//! `kaas_series::zipkin`, and is answered 202 with an empty body (Zipkin's answer; a
//! rate limit's partial success has no place in it).
//!
//! Before any pipeline takes its copy, every resource is enriched from the sending
//! pod, found by the connection's peer address ([`super::enrichment`]: the
//! HTTP routes read axum's `ConnectInfo`, the gRPC service tonic's `TcpConnectInfo`; a
//! request without either, as a test's `oneshot`, is not enriched from a pod). Then the
//! pusher's proven namespace (a service-account token's) is written to every resource
//! as `k8s.namespace.name`, over whatever the pod lookup or the sender said.
//!
//! A trace pipeline's namespace selector is applied to the pusher's proven namespace
//! (a service-account token's); a request admitted by a push token or without
//! authentication proves none and is judged by the namespace of the pod it came from,
//! as the Kubernetes API knows it ([`super::enrichment::Enrichment`]), so a
//! `kube-system` pod holding a push token is still left out by the default exclusion
//! of system namespaces. With neither (no pod at the address, no pod cache, no peer
//! address) the request is taken whole, as before. A claimed namespace never counts.
//! The answer waits until the spans are durable in every pipeline that takes them;
//! spans a pipeline's rate limit drops are reported in its
//! `partial_success.rejected_spans`. OTLP/JSON (`application/json`) is read by
//! `kaas_series::otlp_traces_json` and answered in OTLP/JSON, as OTLP/HTTP asks.

use std::net::IpAddr;

use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use kaas_pipeline::input::PushInput;
use kaas_proto::otlp::{
    ExportTracePartialSuccess, ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use kaas_series::{DecodeError, PushLimits};
use prost::Message;

use super::http_body::{OtlpHttpRequest, peer_of};
use super::{
    Admitted, Protocol, PushReceiver, Refusal, media_type, otlp_decoder, otlp_encoding, read_body,
    set_namespace,
};
use crate::internal_events::EnrichedSignal;
use crate::pipeline::traces::IntakeError;
use crate::topology::inlet::{Ack, Stored};

impl PushReceiver {
    /// Admits, reads, decodes and routes one OTLP traces request sent from `peer`
    /// (when known); counts a refusal. The answer is how many spans processing
    /// rejected (rate limits).
    pub(super) async fn accept_traces(
        &self,
        protocol: Protocol,
        peer: Option<IpAddr>,
        headers: &HeaderMap,
        body: axum::body::Body,
        decode: impl FnOnce(&[u8], &PushLimits) -> Result<ExportTraceServiceRequest, DecodeError>
        + Send
        + 'static,
    ) -> Result<RejectedSpans, Refusal> {
        let result = async {
            let admitted = self.admit(protocol, headers).await?;
            let body = read_body(headers, body, self.limits.max_body_bytes).await?;
            let request = self.decode(body, decode).await?;
            self.route_traces(protocol, request, peer, &admitted).await
        }
        .await;
        self.note(protocol, &result);
        result
    }
}

impl PushReceiver {
    /// Hands pushed spans to every admitted trace pipeline whose namespace selector
    /// admits the pusher's proven namespace (a service-account token's), or, when the
    /// admission proves none (a pipeline's push token, no authentication), the
    /// namespace of the pod found by `peer`; with neither the request is taken whole (a
    /// namespace the sender claims in its resource is never trusted). Every resource is first enriched from the pod sending from
    /// `peer` ([`super::enrichment`]), then the proven namespace is written to it
    /// as `k8s.namespace.name`. Each pipeline processes and buffers its copy through its
    /// intake; the answer waits until the spans are durable in every pipeline that
    /// takes them, and a pipeline that cannot store them fails the request (429 /
    /// `RESOURCE_EXHAUSTED`; 503 / `UNAVAILABLE` when its hash key cannot be read), so
    /// the pusher retries. Spans a pipeline's rate limit dropped are the answer's
    /// partial success.
    async fn route_traces(
        &self,
        protocol: Protocol,
        mut request: ExportTraceServiceRequest,
        peer: Option<IpAddr>,
        admitted: &[Admitted],
    ) -> Result<RejectedSpans, Refusal> {
        let spans = (request.resource_spans.iter())
            .flat_map(|r| &r.scope_spans)
            .map(|s| s.spans.len() as u64)
            .sum();
        let resources = request.resource_spans.iter_mut().map(|r| &mut r.resource);
        let enrichment =
            self.enrich_pushed(resources, peer, admitted, EnrichedSignal::Spans, spans);
        let mut durable = Vec::new();
        let mut not_stored = Vec::new();
        let mut unavailable = Vec::new();
        let mut rejected = RejectedSpans::default();
        let pipelines = self.trace_pipelines.read().await;
        for admission in admitted {
            let Some(pipeline) = pipelines.get(&admission.pipeline) else {
                continue;
            };
            let Some(input) = trace_input(&pipeline.pipeline.inputs, protocol) else {
                continue;
            };
            // Judged by the token's namespace, else by the sending pod's (the token's
            // namespace already written over the pod's); never by a claim.
            let judged = (admission.namespace.as_deref()).or(enrichment.pod_namespace.as_deref());
            if judged.is_some_and(|namespace| !input.namespaces.admits(namespace)) {
                continue;
            }
            let mut taken = request.resource_spans.clone();
            if let Some(namespace) = &admission.namespace {
                for resource_spans in &mut taken {
                    set_namespace(&mut resource_spans.resource, namespace);
                }
            }
            let (on_durable, stored) = tokio::sync::oneshot::channel();
            let ack = Ack::new(move || {
                let _ = on_durable.send(());
            });
            match pipeline.intake.buffer(taken, ack) {
                Ok(buffered) => {
                    rejected.note(pipeline.intake.name(), buffered.spans.rate_limited);
                    if buffered.stored == Stored::Kept {
                        durable.push((admission.pipeline.as_str(), stored));
                    } else {
                        not_stored.push(admission.pipeline.as_str());
                    }
                }
                Err(IntakeError::HashKeyUnavailable(reason)) => {
                    unavailable.push(format!("{}: {reason}", admission.pipeline));
                }
                Err(IntakeError::Buffer(_)) => not_stored.push(admission.pipeline.as_str()),
            }
        }
        for (pipeline, stored) in durable {
            if stored.await.is_err() {
                not_stored.push(pipeline);
            }
        }
        if !unavailable.is_empty() {
            return Err(Refusal::BufferUnavailable(format!(
                "trace pipeline(s) cannot process spans now; retry later ({})",
                unavailable.join("; ")
            )));
        }
        if !not_stored.is_empty() {
            return Err(Refusal::OtlpBufferFull(format!(
                "trace pipeline(s) {} could not store the spans (their buffer is full or cannot write); retry later",
                not_stored.join(", ")
            )));
        }
        Ok(rejected)
    }
}

/// Spans trace pipelines' processing rejected (their rate limits), for the answer's
/// partial success: the most any one pipeline rejected (a span two pipelines both
/// rejected is one span), and which pipelines.
#[derive(Debug, Default)]
pub(super) struct RejectedSpans {
    spans: u64,
    pipelines: Vec<String>,
}

impl RejectedSpans {
    fn note(&mut self, pipeline: &str, spans: u64) {
        if spans > 0 {
            self.spans = self.spans.max(spans);
            self.pipelines.push(pipeline.to_owned());
        }
    }

    /// The answer in OTLP/JSON: `{}`, or the partial success (its `int64` count a
    /// decimal string, as OTLP/JSON encodes 64-bit integers).
    pub(super) fn json(&self) -> String {
        match self.response().partial_success {
            None => "{}".into(),
            Some(partial) => serde_json::json!({
                "partialSuccess": {
                    "rejectedSpans": partial.rejected_spans.to_string(),
                    "errorMessage": partial.error_message,
                }
            })
            .to_string(),
        }
    }

    /// The answer: an empty response, or a partial success naming the rejected spans.
    pub(super) fn response(&self) -> ExportTraceServiceResponse {
        ExportTraceServiceResponse {
            partial_success: (self.spans > 0).then(|| ExportTracePartialSuccess {
                rejected_spans: i64::try_from(self.spans).unwrap_or(i64::MAX),
                error_message: format!(
                    "spans over the rate limit of trace pipeline(s) {} were dropped",
                    self.pipelines.join(", ")
                ),
            }),
        }
    }
}

/// `POST /v1/traces`: OTLP/HTTP traces, protobuf or OTLP/JSON, gzip or not.
pub(super) async fn otlp_http_traces(
    State(receiver): State<PushReceiver>,
    request: Request,
) -> Response {
    let request = match OtlpHttpRequest::of(&receiver, request, Protocol::OtlpTraces, "traces") {
        Ok(request) => request,
        Err(refusal) => return refusal.into_response(),
    };
    let (encoding, headers) = (request.encoding, &request.headers);
    let decode = encoding.decoder(
        request.gzip,
        kaas_series::otlp_traces::decode,
        kaas_series::otlp_traces_json::decode,
    );
    let accepted = receiver.accept_traces(
        Protocol::OtlpTraces,
        request.peer,
        headers,
        request.body,
        decode,
    );
    match accepted.await {
        Ok(rejected) => encoding.accepted(rejected.response().encode_to_vec(), rejected.json()),
        Err(refusal) => refusal.into_response(),
    }
}

/// `POST /api/v2/spans`: Zipkin v2 JSON spans, gzip or not, converted to OTLP;
/// answered 202 with an empty body, as Zipkin's own server does.
pub(super) async fn zipkin_spans(
    State(receiver): State<PushReceiver>,
    request: Request,
) -> Response {
    let (parts, body) = request.into_parts();
    let headers = &parts.headers;
    let peer = peer_of(&parts.extensions);
    let gzip = match zipkin_encoding(headers) {
        Ok(gzip) => gzip,
        Err(refusal) => {
            refusal.count(Protocol::Zipkin, &receiver.stats);
            return refusal.into_response();
        }
    };
    let decode = otlp_decoder(gzip, kaas_series::zipkin::decode);
    match (receiver.accept_traces(Protocol::Zipkin, peer, headers, body, decode)).await {
        Ok(_) => StatusCode::ACCEPTED.into_response(),
        Err(refusal) => refusal.into_response(),
    }
}

/// Whether a Zipkin body is gzip-compressed; refuses anything but JSON (Zipkin's
/// protobuf and Thrift encodings are not read).
fn zipkin_encoding(headers: &HeaderMap) -> Result<bool, Refusal> {
    if media_type(headers) == "application/json" {
        otlp_encoding(headers)
    } else {
        Err(Refusal::UnsupportedMediaType(
            "send Zipkin spans as application/json (Zipkin v2 JSON)".into(),
        ))
    }
}

/// A trace pipeline's push input for `protocol`: `otlp` or `zipkin`.
pub(super) fn trace_input(
    inputs: &kaas_pipeline::traces::input::ValidatedTraceInputs,
    protocol: Protocol,
) -> Option<&PushInput> {
    match protocol {
        Protocol::Zipkin => inputs.zipkin.as_ref(),
        _ => inputs.otlp.as_ref(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Nothing rejected is an empty answer; rejections by two pipelines are the larger
    /// count (a span both rejected is one span), naming both pipelines.
    #[test]
    fn rate_limited_spans_are_the_answers_partial_success() {
        let mut rejected = RejectedSpans::default();
        rejected.note("quiet", 0);
        assert_eq!(rejected.response().partial_success, None);
        assert_eq!(rejected.json(), "{}");
        rejected.note("first", 3);
        rejected.note("second", 5);
        let partial = rejected
            .response()
            .partial_success
            .expect("a partial success");
        assert_eq!(partial.rejected_spans, 5);
        assert!(
            partial.error_message.contains("first, second"),
            "{}",
            partial.error_message
        );
        let json: serde_json::Value = serde_json::from_str(&rejected.json()).unwrap();
        assert_eq!(json["partialSuccess"]["rejectedSpans"], "5");
        assert_eq!(
            json["partialSuccess"]["errorMessage"],
            partial.error_message
        );
    }
}
