//! Sending batches to backends. Each pipeline has its own exporter with its own HTTP
//! client and connection pool, so a slow or dead backend holds up only its own
//! pipeline. The plumbing every exporter shares (the endpoint with its headers,
//! credentials and client, TLS, secret resolution, and how failures are classified and
//! retried) is [`crate::outbound`].

pub mod otlp;
pub mod remote_write;

use crate::outbound::retry;

use crate::record::metrics::{Batch, EncodedRequest, Metrics};
use crate::record::signal::{FrameEncoding, Signal};

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

/// The one exporter of a pipeline.
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
