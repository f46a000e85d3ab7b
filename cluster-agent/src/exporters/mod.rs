//! Sending batches to backends. Each pipeline has its own exporter with its own HTTP
//! client and connection pool, so a slow or dead backend holds up only its own
//! pipeline. The plumbing every exporter shares (the endpoint with its headers,
//! credentials and client, TLS, secret resolution, and how failures are classified and
//! retried) is [`crate::outbound`].
//!
//! Every signal goes through [`Export`]: metric pipelines through [`Exporter`]
//! (remote-write, OTLP), log pipelines through [`LogExporter`] (OTLP, Loki, HTTP),
//! built from a validated output by [`LogExporter::new`], trace pipelines through
//! [`TraceExporter`] (OTLP). A log backend that refuses
//! some records of a request for good while storing the others (an OTLP partial
//! success, the bulk API's per-item errors) has them counted as dropped where the
//! answer is read ([`count_rejected`]).

pub mod http;
pub mod loki;
pub mod otlp;
pub mod remote_write;

use std::sync::Arc;

use kaas_pipeline::logs::output::ValidatedLogOutput;
use kaas_pipeline::traces::output::ValidatedTraceOutput;

use crate::internal_events::{
    DropReason, ErrorReason, PipelineFailed, PipelineStats, SamplesDropped,
};
use crate::outbound::auth::ValueSources;
use crate::outbound::retry;
use crate::outbound::tls::TlsError;
use crate::record::logs::{LogRequest, Logs};
use crate::record::metrics::{Batch, EncodedRequest, Metrics};
use crate::record::signal::{FrameEncoding, Signal};
use crate::record::traces::{TraceRequest, Traces};

/// The request type of an exporter's signal.
pub type RequestOf<E> = <<E as Export>::Signal as FrameEncoding>::Request;

/// Where a sender's requests go: the pipeline's exporter, for one signal.
pub trait Export: Send + Sync + 'static {
    /// The signal it sends.
    type Signal: Signal;

    /// Sends one request; says whether a failure is worth retrying.
    fn send(
        &self,
        request: &RequestOf<Self>,
    ) -> impl std::future::Future<Output = Result<(), retry::SendError>> + Send;
}

/// The one exporter of a metric pipeline.
#[derive(Debug)]
pub enum Exporter {
    /// Prometheus remote-write.
    RemoteWrite(remote_write::RemoteWriteExporter),
    /// OTLP over HTTP or gRPC.
    Otlp(otlp::OtlpExporter),
}

impl Export for Exporter {
    type Signal = Metrics;

    /// Sends one request. Remote-write 1.0 sends the encoded body as it is (compressed
    /// bodies without touching them); the other protocols decode it first.
    async fn send(&self, request: &EncodedRequest) -> Result<(), retry::SendError> {
        match self {
            Self::RemoteWrite(exporter) => exporter.send_request(request).await,
            Self::Otlp(exporter) => exporter.send(&decode(&raw(request)?)?).await,
        }
    }
}

/// The uncompressed body of a request; one that does not decompress can never be
/// sent, so it is dropped (and counted) rather than retried.
pub(crate) fn raw(
    request: &EncodedRequest,
) -> Result<std::borrow::Cow<'_, [u8]>, retry::SendError> {
    request.raw().map_err(|e| retry::SendError::Permanent {
        reason: format!("a buffered batch is damaged: {e}"),
    })
}

/// Decodes an encoded request; one that does not decode can never be sent, so it is
/// dropped (and counted) rather than retried.
pub(crate) fn decode(body: &[u8]) -> Result<Batch, retry::SendError> {
    Batch::from_request_bytes(body).map_err(|e| retry::SendError::Permanent {
        reason: format!("a buffered batch is damaged: {e}"),
    })
}

/// The one exporter of a log pipeline, with the pipeline's counters for records a
/// backend refuses one by one.
#[derive(Debug)]
pub struct LogExporter {
    backend: LogBackend,
    stats: Arc<PipelineStats>,
}

/// Where a log pipeline sends.
#[derive(Debug)]
enum LogBackend {
    /// OTLP over HTTP or gRPC.
    Otlp(otlp::OtlpExporter),
    /// Loki's push API.
    Loki(loki::LokiExporter),
    /// JSON lines or the Elasticsearch/OpenSearch bulk API.
    Http(http::HttpLogExporter),
}

impl LogExporter {
    /// The exporter a validated log output asks for; records refused one by one are
    /// counted in `stats`, the pipeline's counters.
    pub fn new(
        output: &ValidatedLogOutput,
        sources: ValueSources,
        stats: Arc<PipelineStats>,
    ) -> Result<Self, TlsError> {
        let sources = sources.reporting_to(stats.clone());
        let backend = match output {
            ValidatedLogOutput::Otlp {
                endpoint,
                protocol,
                timeout,
                settings,
            } => LogBackend::Otlp(otlp::OtlpExporter::new(
                settings,
                endpoint.clone(),
                *protocol,
                *timeout,
                sources,
            )?),
            ValidatedLogOutput::Loki {
                url,
                tenant_id,
                labels,
                timeout,
                settings,
            } => LogBackend::Loki(loki::LokiExporter::new(
                settings,
                loki::LokiSettings {
                    url: url.clone(),
                    tenant_id: tenant_id.clone(),
                    labels: labels.clone(),
                    timeout: *timeout,
                },
                sources,
            )?),
            ValidatedLogOutput::Http {
                url,
                format,
                index,
                dedot,
                timeout,
                settings,
            } => LogBackend::Http(http::HttpLogExporter::new(
                settings,
                http::HttpLogSettings {
                    url: url.clone(),
                    format: *format,
                    index: index.clone(),
                    dedot: *dedot,
                    timeout: *timeout,
                },
                sources,
            )?),
        };
        Ok(Self { backend, stats })
    }
}

impl Export for LogExporter {
    type Signal = Logs;

    async fn send(&self, request: &LogRequest) -> Result<(), retry::SendError> {
        match &self.backend {
            LogBackend::Otlp(exporter) => exporter.send_logs(request, &self.stats).await,
            LogBackend::Loki(exporter) => exporter.send(request).await,
            LogBackend::Http(exporter) => exporter.send(request, &self.stats).await,
        }
    }
}

/// The one exporter of a trace pipeline: OTLP over HTTP or gRPC, with the pipeline's
/// counters for spans a backend refuses in a partial success.
#[derive(Debug)]
pub struct TraceExporter {
    otlp: otlp::OtlpExporter,
    stats: Arc<PipelineStats>,
}

impl TraceExporter {
    /// The exporter a validated trace output asks for; spans refused in a partial
    /// success are counted in `stats`, the pipeline's counters.
    pub fn new(
        output: &ValidatedTraceOutput,
        sources: ValueSources,
        stats: Arc<PipelineStats>,
    ) -> Result<Self, TlsError> {
        Ok(Self {
            otlp: otlp::OtlpExporter::new(
                &output.settings,
                output.endpoint.clone(),
                output.protocol,
                output.timeout,
                sources.reporting_to(stats.clone()),
            )?,
            stats,
        })
    }
}

impl Export for TraceExporter {
    type Signal = Traces;

    /// Untraced: the agent's own spans may go to its own trace pipelines, and a traced
    /// export would make a span for the next export to carry, for ever.
    async fn send(&self, request: &TraceRequest) -> Result<(), retry::SendError> {
        let sent = self.otlp.send_traces(request, &self.stats);
        kaas_self_telemetry::spans::untraced(sent).await
    }
}

/// Counts records a backend refused for good while it stored the rest of their
/// request: `kaas_agent_pipeline_samples_dropped_total{reason="RejectedByBackend"}` and
/// a `DataDropped` error saying why.
pub(crate) fn count_rejected(stats: &PipelineStats, records: u64, reason: String) {
    SamplesDropped {
        reason: DropReason::RejectedByBackend,
        samples: records,
    }
    .emit(stats);
    PipelineFailed::new(ErrorReason::DataDropped, reason).emit(stats);
}

/// A buffered log or trace request that does not read can never be sent: dropped (and
/// counted by the sender) rather than retried.
pub(crate) fn damaged<T>(
    result: Result<T, crate::record::otlp::OtlpBatchError>,
) -> Result<T, retry::SendError> {
    result.map_err(|e| retry::SendError::Permanent {
        reason: e.to_string(),
    })
}
