//! Push input: workloads send metrics, logs and spans to the agent instead of being
//! scraped. The agent accepts Prometheus remote-write 1.0 on `POST /api/v1/write` on
//! its HTTP port (8429), OTLP over HTTP on `POST /v1/metrics` (protobuf),
//! `POST /v1/logs` and `POST /v1/traces` (protobuf or OTLP/JSON) on OTLP's
//! HTTP port (4318), and OTLP over gRPC (`MetricsService`, `LogsService`,
//! `TraceService`) on OTLP's gRPC port (4317, [`otlp_grpc`]): the ports every
//! OpenTelemetry SDK uses without configuration, one convention for every signal.
//!
//! Logs go to the log pipelines with an `otlp` input, through the same checks in the
//! same order ([`otlp_logs`]), decoded by `kaas_series::otlp_logs` or, for
//! `application/json`, `kaas_series::otlp_logs_json` (both count messages and bound
//! value nesting under the same limits), enriched from the sending pod as spans are
//! ([`enrichment`]); the pusher's proven namespace, else the sending pod's, replaces
//! the resource's `k8s.namespace.name`, and the request is answered once the records
//! are durable in every log pipeline that takes them (429/`RESOURCE_EXHAUSTED` with
//! `Retry-After` when a buffer cannot store them).
//!
//! Spans go to the trace pipelines the same way ([`otlp_traces`]), decoded by
//! `kaas_series::otlp_traces` or, for `application/json`,
//! `kaas_series::otlp_traces_json` under the same limits, with 404 / `UNIMPLEMENTED` while no
//! trace pipeline takes them. Zipkin v2 JSON (`POST /api/v2/spans` on Zipkin's port,
//! 9411) goes to the trace pipelines with a `zipkin` input, converted to OTLP by
//! `kaas_series::zipkin`, under the same checks, and is answered 202.
//!
//! The HTTP port still takes `/v1/metrics` as a deprecated alias, for pushers
//! configured before OTLP had its own port. The well-known in-cluster address is the
//! agent's Service.
//!
//! Everything a pusher sends is hostile until checked, and each check comes before the
//! work it protects:
//!
//! 1. Is any pipeline taking this protocol? If not, 404 (gRPC `FAILED_PRECONDITION`,
//!    `UNIMPLEMENTED` for traces) before the body is read.
//! 2. Is the pusher allowed ([`auth`])? Each pipeline's push input names how its
//!    pushers authenticate; a request goes only to the pipelines it authenticates for,
//!    and none means 401 (`UNAUTHENTICATED`), before the body is read.
//! 3. The body is read up to [`PushLimits::max_body_bytes`], then decompressed and
//!    decoded by [`kaas_series`] under the other limits, on a blocking thread, at most
//!    [`MAX_CONCURRENT_DECODES`] at once. Too large is 413 (`RESOURCE_EXHAUSTED`),
//!    malformed or over a per-series limit 400 (`INVALID_ARGUMENT`), each with its
//!    reason, and counted by reason in `kaas_agent_push_requests_refused_total`.
//!
//! Pushed series go to every admitted pipeline, each applying its own namespace filter
//! (on the `namespace` label, which OTLP data gets from `k8s.namespace.name`, and which
//! a service-account token overrides), metric relabeling, name filter and external
//! labels, then into that pipeline's buffer. A request is acknowledged once it is
//! buffered, so the pushing workload never waits for a backend.

pub mod auth;
pub mod enrichment;
mod http_body;
pub mod otlp_grpc;
mod otlp_logs;
pub mod otlp_traces;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use http_body_util::BodyExt;
use kaas_pipeline::input::{PushAuthenticationMode, PushInput};
use kaas_pipeline::secret::ValueSource;
use kaas_proto::otlp::{ExportMetricsServiceResponse, Resource};
use kaas_series::clock::now_ms;
use kaas_series::{DecodeError, PushLimits, Pushed};
use prost::Message;
use tokio::sync::{RwLock, Semaphore};

use self::auth::{Review, ReviewError, TokenReviewer, bearer_token, token_matches};
use self::http_body::{media_type, otlp_decoder, otlp_encoding, otlp_protobuf_encoding};
use crate::internal_events::{EnrichedSignal, PushEnriched, PushRefused, PushRouted, PushStats};
use crate::labels::{Labels, LabelsBuilder};
use crate::outbound::auth::{ValueSources, resolve};
use crate::pipeline::logs::LogPipelines;
use crate::pipeline::runtime::Pipelines;
use crate::pipeline::traces::TracePipelines;
use crate::processing::logs::attributes::string_attribute;
use crate::processing::process_sample;
use crate::record::metrics::Batch;
use crate::topology::inlet::Ack;

/// Most push bodies decompressed and decoded at once. Each may hold up to the
/// decompressed limit and what it decodes into; two (the agent's usual core count)
/// bound that memory while a third request waits for a slot with only its compressed
/// body in hand.
pub const MAX_CONCURRENT_DECODES: usize = 2;

/// What a pusher is told to wait (`Retry-After`) when a pipeline's buffer cannot store
/// its data: a full data volume frees space as the sender delivers, which takes seconds
/// to minutes, so retrying sooner only repeats the refusal.
const BUFFER_RETRY_AFTER: std::time::Duration = std::time::Duration::from_secs(30);

/// The label a service-account token's namespace is written to.
const NAMESPACE_LABEL: &str = "namespace";
/// The resource attribute a service-account token's namespace is written to (logs).
const NAMESPACE_ATTRIBUTE: &str = "k8s.namespace.name";

/// Which push protocol a request came in with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Protocol {
    /// Prometheus remote-write.
    RemoteWrite,
    /// OTLP metrics.
    Otlp,
    /// OTLP logs, for log pipelines.
    OtlpLogs,
    /// OTLP traces, for trace pipelines.
    OtlpTraces,
    /// Zipkin v2 JSON spans, for trace pipelines with a `zipkin` input.
    Zipkin,
}

impl Protocol {
    /// The name in metrics and messages.
    pub fn name(self) -> &'static str {
        match self {
            Self::RemoteWrite => "remote_write",
            Self::Otlp => "otlp",
            Self::OtlpLogs => "otlp_logs",
            Self::OtlpTraces => "otlp_traces",
            Self::Zipkin => "zipkin",
        }
    }

    /// The push input of a metric pipeline for this protocol.
    fn input(self, inputs: &kaas_pipeline::input::ValidatedInputs) -> Option<&PushInput> {
        match self {
            Self::RemoteWrite => inputs.remote_write.as_ref(),
            Self::Otlp => inputs.otlp.as_ref(),
            Self::OtlpLogs | Self::OtlpTraces | Self::Zipkin => None,
        }
    }
}

/// Why a push request is refused.
#[derive(Debug)]
pub enum Refusal {
    /// No pipeline takes this protocol.
    NoPipeline(Protocol),
    /// No pipeline that takes it admits this pusher.
    Unauthenticated(String),
    /// Service-account tokens cannot be checked right now.
    AuthUnavailable(String),
    /// Not a content type or encoding the receiver reads.
    UnsupportedMediaType(String),
    /// The body is too large or invalid.
    Decode(DecodeError),
    /// A pipeline that takes the data could not store it durably (its buffer is full
    /// and drops new data, or its data volume is full or failing); the pusher should
    /// retry. The pipeline's condition says why.
    BufferUnavailable(String),
    /// A log or trace pipeline that takes the records or spans could not store them
    /// (as [`Refusal::BufferUnavailable`]); answered as OTLP asks a receiver under
    /// back-pressure: 429 / `RESOURCE_EXHAUSTED`, with `Retry-After`.
    OtlpBufferFull(String),
    /// The agent is draining before it stops (SIGTERM, [`PushReceiver::drain`]): the
    /// pusher should send again, which the push Service routes to another replica.
    Draining,
}

impl Refusal {
    /// Counts this refusal of a `protocol` request in `stats`.
    fn count(&self, protocol: Protocol, stats: &PushStats) {
        PushRefused {
            protocol: protocol.name(),
            reason: self.reason(),
            malformed: matches!(
                self,
                Refusal::UnsupportedMediaType(_) | Refusal::Decode(DecodeError::Malformed(_))
            ),
        }
        .emit(stats);
    }

    /// A short, fixed name for metrics.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::NoPipeline(_) => "no_pipeline",
            Self::Unauthenticated(_) => "unauthenticated",
            Self::AuthUnavailable(_) => "auth_unavailable",
            Self::Draining => "draining",
            Self::UnsupportedMediaType(_) => "unsupported_media_type",
            Self::Decode(error) => error.reason(),
            Self::BufferUnavailable(_) | Self::OtlpBufferFull(_) => "buffer_unavailable",
        }
    }

    /// What the pusher is told.
    pub fn message(&self) -> String {
        match self {
            Self::NoPipeline(protocol) => format!(
                "no pipeline takes {} pushes on this agent",
                match protocol {
                    Protocol::RemoteWrite => "remote-write",
                    Protocol::Otlp => "OTLP metrics",
                    Protocol::OtlpLogs => "OTLP logs",
                    Protocol::OtlpTraces => "OTLP traces",
                    Protocol::Zipkin => "Zipkin",
                }
            ),
            Self::Unauthenticated(reason)
            | Self::AuthUnavailable(reason)
            | Self::UnsupportedMediaType(reason)
            | Self::BufferUnavailable(reason)
            | Self::OtlpBufferFull(reason) => reason.clone(),
            Self::Decode(error) => error.to_string(),
            Self::Draining => "the agent is stopping; send again (to another replica)".into(),
        }
    }

    fn status(&self) -> StatusCode {
        match self {
            Self::NoPipeline(_) => StatusCode::NOT_FOUND,
            Self::Unauthenticated(_) => StatusCode::UNAUTHORIZED,
            Self::AuthUnavailable(_) | Self::BufferUnavailable(_) | Self::Draining => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            Self::OtlpBufferFull(_) => StatusCode::TOO_MANY_REQUESTS,
            Self::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Self::Decode(error) if error.is_too_large() => StatusCode::PAYLOAD_TOO_LARGE,
            Self::Decode(_) => StatusCode::BAD_REQUEST,
        }
    }

    /// The gRPC status for the same refusal.
    pub fn grpc_code(&self) -> tonic::Code {
        match self {
            // OTLP's answer for a signal a receiver does not take, which SDKs treat as
            // "stop sending" rather than retry.
            Self::NoPipeline(Protocol::OtlpTraces) => tonic::Code::Unimplemented,
            Self::NoPipeline(_) => tonic::Code::FailedPrecondition,
            Self::Unauthenticated(_) => tonic::Code::Unauthenticated,
            Self::AuthUnavailable(_) | Self::BufferUnavailable(_) | Self::Draining => {
                tonic::Code::Unavailable
            }
            Self::OtlpBufferFull(_) => tonic::Code::ResourceExhausted,
            Self::UnsupportedMediaType(_) => tonic::Code::Unimplemented,
            Self::Decode(error) if error.is_too_large() => tonic::Code::ResourceExhausted,
            Self::Decode(_) => tonic::Code::InvalidArgument,
        }
    }

    fn into_response(self) -> Response {
        let status = self.status();
        let message = self.message();
        if status == StatusCode::UNAUTHORIZED {
            return (status, [(header::WWW_AUTHENTICATE, "Bearer")], message).into_response();
        }
        if matches!(
            self,
            Self::BufferUnavailable(_) | Self::OtlpBufferFull(_) | Self::Draining
        ) {
            let retry_after = BUFFER_RETRY_AFTER.as_secs().to_string();
            return (status, [(header::RETRY_AFTER, retry_after)], message).into_response();
        }
        (status, message).into_response()
    }
}

/// A pipeline a request was admitted to, and the namespace its token proved.
#[derive(Debug)]
struct Admitted {
    pipeline: String,
    namespace: Option<String>,
}

/// What a pipeline asks of its pushers.
struct Taker {
    pipeline: String,
    mode: PushAuthenticationMode,
    token: Option<ValueSource>,
    sources: ValueSources,
}

/// The push receivers' shared state.
#[derive(Clone)]
pub struct PushReceiver {
    pipelines: Arc<RwLock<Pipelines>>,
    log_pipelines: Arc<RwLock<LogPipelines>>,
    trace_pipelines: Arc<RwLock<TracePipelines>>,
    enrichment: Arc<enrichment::PushEnrichment>,
    stats: Arc<PushStats>,
    limits: PushLimits,
    reviewer: Arc<TokenReviewer>,
    decodes: Arc<Semaphore>,
    /// Set once the agent drains before stopping: every push is refused from then on.
    draining: Arc<AtomicBool>,
}

impl PushReceiver {
    /// Receivers feeding `pipelines` (metrics) and `log_pipelines` (OTLP logs),
    /// decoding under `limits`, checking service-account tokens with `reviewer`.
    pub fn new(
        pipelines: Arc<RwLock<Pipelines>>,
        log_pipelines: Arc<RwLock<LogPipelines>>,
        stats: Arc<PushStats>,
        limits: PushLimits,
        reviewer: TokenReviewer,
    ) -> Self {
        Self {
            pipelines,
            log_pipelines,
            trace_pipelines: Arc::default(),
            enrichment: Arc::default(),
            stats,
            limits,
            reviewer: Arc::new(reviewer),
            decodes: Arc::new(Semaphore::new(MAX_CONCURRENT_DECODES)),
            draining: Arc::default(),
        }
    }

    /// The same receivers feeding `trace_pipelines` with OTLP traces too.
    pub fn with_trace_pipelines(mut self, trace_pipelines: Arc<RwLock<TracePipelines>>) -> Self {
        self.trace_pipelines = trace_pipelines;
        self
    }

    /// The same receivers enriching pushed spans and log records by `enrichment`
    /// ([`enrichment`]).
    pub fn with_enrichment(mut self, enrichment: Arc<enrichment::PushEnrichment>) -> Self {
        self.enrichment = enrichment;
        self
    }

    /// Refuses every push from now on ([`Refusal::Draining`]: 503 or `UNAVAILABLE`
    /// with `Retry-After`), so the pipelines can ship what they hold before the agent
    /// stops. Every receiver of every protocol shares the switch.
    pub fn drain(&self) {
        self.draining.store(true, Ordering::Release);
    }

    /// The routes of the agent's HTTP port: `/api/v1/write`, and `/v1/metrics` as a
    /// deprecated alias of the OTLP/HTTP port's.
    pub fn routes(&self) -> Router {
        Router::new()
            .route("/api/v1/write", post(remote_write))
            .route("/v1/metrics", post(otlp_http))
            .with_state(self.clone())
    }

    /// The routes of the Zipkin port: `/api/v2/spans`.
    pub fn zipkin_routes(&self) -> Router {
        Router::new()
            .route("/api/v2/spans", post(otlp_traces::zipkin_spans))
            .with_state(self.clone())
    }

    /// The routes of the OTLP/HTTP port: `/v1/metrics`, `/v1/logs` and `/v1/traces`.
    pub fn otlp_http_routes(&self) -> Router {
        Router::new()
            .route("/v1/metrics", post(otlp_http))
            .route("/v1/logs", post(otlp_logs::otlp_http_logs))
            .route("/v1/traces", post(otlp_traces::otlp_http_traces))
            .with_state(self.clone())
    }

    /// The pipelines taking `protocol` pushes, with what they ask of pushers.
    async fn takers(&self, protocol: Protocol) -> Vec<Taker> {
        let taker = |name: &str, input: Option<&PushInput>, sources: &ValueSources| {
            let input = input?;
            Some(Taker {
                pipeline: name.to_owned(),
                mode: input.mode(),
                token: input
                    .authentication
                    .as_ref()
                    .and_then(|a| a.bearer_token.clone()),
                sources: sources.clone(),
            })
        };
        match protocol {
            Protocol::OtlpTraces | Protocol::Zipkin => (self.trace_pipelines.read().await.values())
                .filter_map(|p| {
                    taker(
                        p.pipeline.name(),
                        otlp_traces::trace_input(&p.pipeline.inputs, protocol),
                        &p.value_sources,
                    )
                })
                .collect(),
            Protocol::OtlpLogs => (self.log_pipelines.read().await.values())
                .filter_map(|p| {
                    taker(
                        p.pipeline.name(),
                        p.pipeline.inputs.otlp.as_ref(),
                        &p.value_sources,
                    )
                })
                .collect(),
            Protocol::RemoteWrite | Protocol::Otlp => (self.pipelines.read().await.values())
                .filter_map(|p| {
                    let input = protocol.input(&p.pipeline.inputs);
                    taker(p.pipeline.name(), input, &p.value_sources)
                })
                .collect(),
        }
    }

    /// Enriches a request's resources from the pod sending from `peer`
    /// ([`enrichment`]), over what it claims and under the namespace the admissions
    /// proved (one token per request: every admission through it proves the same), and
    /// counts its `items` (spans or log records) by what the lookup found.
    fn enrich_pushed<'a>(
        &self,
        resources: impl IntoIterator<Item = &'a mut Option<Resource>>,
        peer: Option<std::net::IpAddr>,
        admitted: &[Admitted],
        signal: EnrichedSignal,
        items: u64,
    ) -> enrichment::Enrichment {
        let proven = admitted.iter().find_map(|a| a.namespace.as_deref());
        let enrichment = self.enrichment.enrich(resources, peer, proven);
        if let Some(outcome) = enrichment.outcome {
            PushEnriched {
                signal,
                outcome,
                items,
            }
            .emit(&self.stats);
        }
        enrichment
    }

    /// Steps 1 and 2 of the module documentation: the pipelines this request goes to.
    async fn admit(
        &self,
        protocol: Protocol,
        headers: &HeaderMap,
    ) -> Result<Vec<Admitted>, Refusal> {
        if self.draining.load(Ordering::Acquire) {
            return Err(Refusal::Draining);
        }
        let takers = self.takers(protocol).await;
        if takers.is_empty() {
            return Err(Refusal::NoPipeline(protocol));
        }
        let token = bearer_token(headers);
        let mut review: Option<Result<Review, ReviewError>> = None;
        let mut admitted = Vec::new();
        for taker in takers {
            let namespace = match taker.mode {
                PushAuthenticationMode::Unauthenticated => None,
                PushAuthenticationMode::BearerToken => {
                    let expected = taker
                        .token
                        .as_ref()
                        .and_then(|source| resolve(source, &taker.sources).ok());
                    match (token, expected) {
                        (Some(token), Some(expected))
                            if token_matches(token, expected.expose()) =>
                        {
                            None
                        }
                        _ => continue,
                    }
                }
                PushAuthenticationMode::ServiceAccount => {
                    let Some(token) = token else { continue };
                    if review.is_none() {
                        review = Some(self.reviewer.review(token).await);
                    }
                    match &review {
                        Some(Ok(Review::ServiceAccount { namespace, .. })) => {
                            Some(namespace.clone())
                        }
                        _ => continue,
                    }
                }
            };
            admitted.push(Admitted {
                pipeline: taker.pipeline,
                namespace,
            });
        }
        if !admitted.is_empty() {
            return Ok(admitted);
        }
        Err(match (token, review) {
            (_, Some(Err(ReviewError::Api(reason)))) => Refusal::AuthUnavailable(reason),
            (_, Some(Err(error @ ReviewError::NoApi))) => {
                Refusal::Unauthenticated(error.to_string())
            }
            (_, Some(Ok(Review::Refused(reason)))) => Refusal::Unauthenticated(reason),
            (None, _) => Refusal::Unauthenticated(
                "send a bearer token: a service-account token, or the pipeline's push token".into(),
            ),
            (Some(_), _) => Refusal::Unauthenticated(
                "the bearer token is not accepted by any pipeline that takes these pushes".into(),
            ),
        })
    }

    /// Admits, reads, decodes and routes one request; counts a refusal.
    async fn accept(
        &self,
        protocol: Protocol,
        headers: &HeaderMap,
        body: axum::body::Body,
        decode: impl FnOnce(&[u8], &PushLimits) -> Result<Pushed, DecodeError> + Send + 'static,
    ) -> Result<(), Refusal> {
        let result = async {
            let admitted = self.admit(protocol, headers).await?;
            let body = read_body(headers, body, self.limits.max_body_bytes).await?;
            let pushed = self.decode(body, decode).await?;
            self.route(protocol, pushed, &admitted).await
        }
        .await;
        self.note(protocol, &result);
        result
    }

    /// Counts and logs a refused request.
    fn note<T>(&self, protocol: Protocol, result: &Result<T, Refusal>) {
        if let Err(refusal) = result {
            refusal.count(protocol, &self.stats);
            tracing::debug!(
                protocol = protocol.name(),
                reason = refusal.reason(),
                message = %refusal.message(),
                "push refused"
            );
        }
    }

    /// Step 3: decompresses and decodes on a blocking thread, holding a decode slot.
    async fn decode<T: Send + 'static>(
        &self,
        body: Bytes,
        decode: impl FnOnce(&[u8], &PushLimits) -> Result<T, DecodeError> + Send + 'static,
    ) -> Result<T, Refusal> {
        let _slot = self
            .decodes
            .acquire()
            .await
            .map_err(|_| Refusal::AuthUnavailable("the agent is shutting down".into()))?;
        let limits = self.limits;
        tokio::task::spawn_blocking(move || decode(&body, &limits))
            .await
            .map_err(|_| Refusal::Decode(DecodeError::Malformed("decoding failed".into())))?
            .map_err(Refusal::Decode)
    }

    /// Hands pushed series to every admitted pipeline that takes them. A pipeline whose
    /// buffer does not store them durably (full, or a failed write; the inlet counts
    /// and reports that) makes the request fail, so the pusher retries instead of
    /// believing its data was kept.
    async fn route(
        &self,
        protocol: Protocol,
        pushed: Pushed,
        admitted: &[Admitted],
    ) -> Result<(), Refusal> {
        let received = pushed.samples() as u64;
        let pipelines = self.pipelines.read().await;
        let mut routed_anywhere = vec![false; pushed.series.len()];
        let mut not_stored = Vec::new();
        for admission in admitted {
            let Some(pipeline) = pipelines.get(&admission.pipeline) else {
                continue;
            };
            let Some(input) = protocol.input(&pipeline.pipeline.inputs) else {
                continue;
            };
            let mut kept = Vec::new();
            for (index, series) in pushed.series.iter().enumerate() {
                let overridden;
                let labels = match &admission.namespace {
                    Some(namespace) => {
                        overridden = with_namespace(&series.labels, namespace);
                        &overridden
                    }
                    None => &series.labels,
                };
                let namespace = labels.get(NAMESPACE_LABEL);
                if !namespace.is_empty() && !input.namespaces.admits(namespace) {
                    continue;
                }
                if let Some(processed) = process_sample(labels, &pipeline.pipeline.processors) {
                    routed_anywhere[index] = true;
                    kept.push((processed, series.samples.clone()));
                }
            }
            if kept.is_empty() {
                continue;
            }
            let batch =
                Batch::from_series(kept, pushed.metadata.clone(), &pipeline.external_labels);
            // "Accepted" means durable: answer success only once the record's
            // acknowledgement fired (a full buffer or a failed write never fires it).
            let (durable, stored) = tokio::sync::oneshot::channel();
            let ack = Ack::new(move || {
                let _ = durable.send(());
            });
            let pushed = pipeline.data_path.inlet.push_acked(&batch, now_ms(), ack);
            if pushed.is_err() || stored.await.is_err() {
                not_stored.push(admission.pipeline.as_str());
            }
        }
        let unrouted: u64 = pushed
            .series
            .iter()
            .zip(&routed_anywhere)
            .filter(|(_, routed)| !**routed)
            .map(|(series, _)| series.samples.len() as u64)
            .sum();
        PushRouted { received, unrouted }.emit(&self.stats);
        if not_stored.is_empty() {
            Ok(())
        } else {
            Err(Refusal::BufferUnavailable(format!(
                "pipeline(s) {} could not store the data (their buffer is full or cannot write); retry later",
                not_stored.join(", ")
            )))
        }
    }
}

/// Sets `k8s.namespace.name` on a resource to the pusher's proven namespace.
fn set_namespace(resource: &mut Option<Resource>, namespace: &str) {
    let resource = resource.get_or_insert_with(Default::default);
    resource
        .attributes
        .retain(|attribute| attribute.key != NAMESPACE_ATTRIBUTE);
    resource
        .attributes
        .push(string_attribute(NAMESPACE_ATTRIBUTE, namespace));
}

/// `labels` with the `namespace` label set to `namespace`, whatever it claimed.
fn with_namespace(labels: &Labels, namespace: &str) -> Labels {
    let mut builder = LabelsBuilder::new(labels);
    builder.set(NAMESPACE_LABEL, namespace);
    builder.labels()
}

/// Reads a body of at most `limit` bytes; a declared length over it is refused before
/// anything is read.
async fn read_body(
    headers: &HeaderMap,
    body: axum::body::Body,
    limit: usize,
) -> Result<Bytes, Refusal> {
    let too_large = || Refusal::Decode(DecodeError::BodyTooLarge { limit });
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|length| length > limit as u64) {
        return Err(too_large());
    }
    match http_body_util::Limited::new(body, limit).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(error) if error.is::<http_body_util::LengthLimitError>() => Err(too_large()),
        Err(error) => Err(Refusal::Decode(DecodeError::Malformed(format!(
            "cannot read the body: {error}"
        )))),
    }
}

async fn remote_write(State(receiver): State<PushReceiver>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let decode = |body: &[u8], limits: &PushLimits| kaas_series::remote_write::decode(body, limits);
    match receiver
        .accept(Protocol::RemoteWrite, &parts.headers, body, decode)
        .await
    {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(refusal) => refusal.into_response(),
    }
}

/// The start of a header value for a message.
fn excerpt(text: &str) -> &str {
    let mut end = text.len().min(kaas_series::limits::MAX_QUOTED_BYTES);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

async fn otlp_http(State(receiver): State<PushReceiver>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let headers = &parts.headers;
    let gzip = match otlp_protobuf_encoding(headers) {
        Ok(gzip) => gzip,
        Err(refusal) => {
            refusal.count(Protocol::Otlp, &receiver.stats);
            return refusal.into_response();
        }
    };
    let decode = otlp_decoder(gzip, kaas_series::otlp::decode);
    match receiver.accept(Protocol::Otlp, headers, body, decode).await {
        Ok(()) => (
            StatusCode::OK,
            [(header::CONTENT_TYPE, "application/x-protobuf")],
            ExportMetricsServiceResponse::default().encode_to_vec(),
        )
            .into_response(),
        Err(refusal) => refusal.into_response(),
    }
}

#[cfg(test)]
mod tests;
