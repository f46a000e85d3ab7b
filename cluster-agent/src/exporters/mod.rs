//! Sending batches to backends. Each pipeline has its own exporter with its own HTTP
//! client and connection pool, so a slow or dead backend holds up only its own
//! pipeline. The parts every exporter shares: TLS ([`tls`]), credentials and secret
//! resolution ([`auth`]), and how failures are classified and retried ([`retry`]).

pub mod auth;
pub mod otlp;
pub mod remote_write;
pub mod retry;
pub mod tls;

/// The one exporter of a pipeline.
#[derive(Debug)]
pub enum Exporter {
    /// Prometheus remote-write.
    RemoteWrite(remote_write::RemoteWriteExporter),
    /// OTLP over HTTP or gRPC.
    Otlp(otlp::OtlpExporter),
}

impl Exporter {
    /// Sends one batch.
    pub async fn send(&self, batch: &crate::batch::Batch) -> Result<(), retry::SendError> {
        match self {
            Self::RemoteWrite(exporter) => exporter.send(batch).await,
            Self::Otlp(exporter) => exporter.send(batch).await,
        }
    }
}

/// `User-Agent` of every request the agent sends.
pub const USER_AGENT: &str = concat!("kaas-observer-agent/", env!("CARGO_PKG_VERSION"));
