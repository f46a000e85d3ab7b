//! OTLP logs into the log pipelines with an `otlp` input: `POST /v1/logs` (protobuf or
//! OTLP/JSON, gzip or not) and, through [`super::otlp_grpc`], `LogsService/Export`,
//! with the checks of every push receiver in their order ([`super`]), decoded by
//! `kaas_series::otlp_logs` or `kaas_series::otlp_logs_json` under the same limits.
//!
//! Before any pipeline takes its copy, every resource is enriched from the sending pod,
//! found by the connection's peer address, exactly as pushed spans are
//! ([`super::enrichment`]): the pod's `k8s.namespace.name` replaces what the sender
//! wrote, and its pod, uid, Deployment and node are added. Then the pusher's proven
//! namespace (a service-account token's) is written to every resource, over both.
//!
//! A log pipeline's namespace selector judges each resource's `k8s.namespace.name` as
//! it is then: the token's namespace when one was proven, else the sending pod's as the
//! Kubernetes API knows it, so a `kube-system` pod holding a push token is still left
//! out by the default exclusion of system namespaces whatever it claims. Only when
//! neither is known (no pod at the address: a sender outside the cluster or on the host
//! network; no pod cache: a standalone agent) is the resource's own claim judged, as
//! the only information there is; it can steer records only among the pipelines the
//! pusher authenticated for. Records without an observed time get the time they
//! arrived, as the agent's own inputs stamp theirs (an Elasticsearch data stream
//! refuses a document without `@timestamp`). The answer waits until the records are
//! durable in every pipeline that takes them (429 / `RESOURCE_EXHAUSTED` with
//! `Retry-After` when a buffer cannot store them).

use std::net::IpAddr;

use axum::extract::{Request, State};
use axum::http::HeaderMap;
use axum::response::Response;
use kaas_proto::otlp::{ExportLogsServiceRequest, ExportLogsServiceResponse, ResourceLogs};
use kaas_series::{DecodeError, PushLimits};
use prost::Message;

use super::http_body::OtlpHttpRequest;
use super::{Admitted, NAMESPACE_ATTRIBUTE, Protocol, PushReceiver, Refusal};
use super::{read_body, set_namespace};
use crate::internal_events::EnrichedSignal;
use crate::log_inputs::resource::now_unix_nano;
use crate::pipeline::logs::Buffered;
use crate::processing::logs::attributes::find;
use crate::topology::inlet::{Ack, Stored};

impl PushReceiver {
    /// Admits, reads, decodes and routes one OTLP logs request sent from `peer` (when
    /// known); counts a refusal.
    pub(super) async fn accept_logs(
        &self,
        peer: Option<IpAddr>,
        headers: &HeaderMap,
        body: axum::body::Body,
        decode: impl FnOnce(&[u8], &PushLimits) -> Result<ExportLogsServiceRequest, DecodeError>
        + Send
        + 'static,
    ) -> Result<(), Refusal> {
        let result = async {
            let admitted = self.admit(Protocol::OtlpLogs, headers).await?;
            let body = read_body(headers, body, self.limits.max_body_bytes).await?;
            let request = self.decode(body, decode).await?;
            self.route_logs(request, peer, &admitted).await
        }
        .await;
        self.note(Protocol::OtlpLogs, &result);
        result
    }

    /// Hands pushed log records to every admitted log pipeline by the module's rules:
    /// stamped, enriched from the pod sending from `peer`, the proven namespace written,
    /// each pipeline's namespace selector applied, then its intake (processing,
    /// buffer). Answers only once the records are durable in every pipeline that takes
    /// them; a pipeline that cannot store them fails the request, so the pusher
    /// retries.
    async fn route_logs(
        &self,
        mut request: ExportLogsServiceRequest,
        peer: Option<IpAddr>,
        admitted: &[Admitted],
    ) -> Result<(), Refusal> {
        stamp_observed_time(&mut request, now_unix_nano());
        let records = (request.resource_logs.iter())
            .flat_map(|r| &r.scope_logs)
            .map(|s| s.log_records.len() as u64)
            .sum();
        let resources = request.resource_logs.iter_mut().map(|r| &mut r.resource);
        self.enrich_pushed(
            resources,
            peer,
            admitted,
            EnrichedSignal::LogRecords,
            records,
        );
        let mut durable = Vec::new();
        let mut not_stored = Vec::new();
        let pipelines = self.log_pipelines.read().await;
        for admission in admitted {
            let Some(pipeline) = pipelines.get(&admission.pipeline) else {
                continue;
            };
            let Some(input) = pipeline.pipeline.inputs.otlp.as_ref() else {
                continue;
            };
            let mut kept = request.resource_logs.clone();
            if let Some(namespace) = &admission.namespace {
                for resource_logs in &mut kept {
                    set_namespace(&mut resource_logs.resource, namespace);
                }
            }
            // The token's namespace, else the pod's (enrichment wrote it), else the
            // claim: see the module's documentation.
            kept.retain(|resource_logs| {
                let namespace = resource_namespace(resource_logs);
                namespace.is_empty() || input.namespaces.admits(namespace)
            });
            if kept.is_empty() {
                continue;
            }
            let (on_durable, stored) = tokio::sync::oneshot::channel();
            let ack = Ack::new(move || {
                let _ = on_durable.send(());
            });
            match pipeline.intake.buffer(kept, ack) {
                Ok(Buffered {
                    stored: Stored::Kept,
                    ..
                }) => durable.push((admission.pipeline.as_str(), stored)),
                Ok(_) | Err(_) => not_stored.push(admission.pipeline.as_str()),
            }
        }
        for (pipeline, stored) in durable {
            if stored.await.is_err() {
                not_stored.push(pipeline);
            }
        }
        if not_stored.is_empty() {
            return Ok(());
        }
        Err(Refusal::OtlpBufferFull(format!(
            "log pipeline(s) {} could not store the records (their buffer is full or cannot write); retry later",
            not_stored.join(", ")
        )))
    }
}

/// Sets the observed time of records that have none to `now` (Unix nanoseconds).
fn stamp_observed_time(request: &mut ExportLogsServiceRequest, now: u64) {
    request
        .resource_logs
        .iter_mut()
        .flat_map(|r| &mut r.scope_logs)
        .flat_map(|s| &mut s.log_records)
        .filter(|record| record.observed_time_unix_nano == 0)
        .for_each(|record| record.observed_time_unix_nano = now);
}

/// A resource's `k8s.namespace.name`, empty when it names none.
fn resource_namespace(resource_logs: &ResourceLogs) -> &str {
    resource_logs
        .resource
        .as_ref()
        .and_then(|r| find(&r.attributes, NAMESPACE_ATTRIBUTE))
        .and_then(|value| match value.value.as_ref()? {
            kaas_proto::otlp::any_value::Value::StringValue(text) => Some(text.as_str()),
            _ => None,
        })
        .unwrap_or_default()
}

/// `POST /v1/logs`: OTLP/HTTP logs, protobuf or OTLP/JSON, gzip or not.
pub(super) async fn otlp_http_logs(
    State(receiver): State<PushReceiver>,
    request: Request,
) -> Response {
    let request = match OtlpHttpRequest::of(&receiver, request, Protocol::OtlpLogs, "logs") {
        Ok(request) => request,
        Err(refusal) => return refusal.into_response(),
    };
    let (encoding, headers) = (request.encoding, &request.headers);
    let decode = encoding.decoder(
        request.gzip,
        kaas_series::otlp_logs::decode,
        kaas_series::otlp_logs_json::decode,
    );
    match (receiver.accept_logs(request.peer, headers, request.body, decode)).await {
        Ok(()) => encoding.accepted(
            ExportLogsServiceResponse::default().encode_to_vec(),
            "{}".into(),
        ),
        Err(refusal) => refusal.into_response(),
    }
}
