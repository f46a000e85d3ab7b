//! Prometheus remote-write: 1.0 (default) and 2.0, over HTTP/1.1 or HTTP/2, with the
//! pipeline's headers, credentials and TLS.
//!
//! Every request carries `Content-Encoding: snappy`, the version's `Content-Type` and
//! `X-Prometheus-Remote-Write-Version`, and the agent's `User-Agent`. Secrets (headers,
//! credentials, TLS material) are resolved for every request; the HTTP client is
//! rebuilt only when the resolved TLS material changes, so rotated certificates are
//! picked up without a restart and without a handshake per request.

pub mod encode;

use std::time::Duration;

use kaas_pipeline::output::{RemoteWriteOutput, RemoteWriteVersion};
use kaas_pipeline::output_url::Destination;
use kaas_proto::remote_write::{self, v1, v2};
use reqwest::header::{CONTENT_ENCODING, CONTENT_TYPE, HeaderName, HeaderValue, USER_AGENT};

use crate::outbound::USER_AGENT as AGENT;
use crate::outbound::auth::ValueSources;
use crate::outbound::destination::TargetUrl;
use crate::outbound::http::Endpoint;
use crate::outbound::retry::SendError;
use crate::outbound::tls::TlsError;
use crate::record::metrics::Batch;

/// Sends batches to one remote-write endpoint.
#[derive(Debug)]
pub struct RemoteWriteExporter {
    url: TargetUrl,
    version: RemoteWriteVersion,
    timeout: Duration,
    endpoint: Endpoint,
}

impl RemoteWriteExporter {
    /// An exporter for a validated output sending to `url` (a [`url::Url`] for a URL
    /// written in place).
    pub fn new(
        output: &RemoteWriteOutput,
        url: impl Into<Destination>,
        version: RemoteWriteVersion,
        timeout: Duration,
        sources: ValueSources,
    ) -> Result<Self, TlsError> {
        Ok(Self {
            url: TargetUrl::new(url.into(), sources.clone()),
            version,
            timeout,
            endpoint: Endpoint::for_output(output, sources)?,
        })
    }

    /// Sends one batch.
    pub async fn send(&self, batch: &Batch) -> Result<(), SendError> {
        match self.version {
            RemoteWriteVersion::V1 => self.post(encode::encode_v1(batch)).await,
            RemoteWriteVersion::V2 => self.post(encode::encode_v2(batch)).await,
        }
    }

    /// Sends an encoded 1.0 `WriteRequest`: compressed and posted as it is for 1.0,
    /// converted for 2.0.
    pub async fn send_encoded(&self, request: &[u8]) -> Result<(), SendError> {
        match self.version {
            RemoteWriteVersion::V1 => self.post(crate::record::metrics::compress(request)).await,
            RemoteWriteVersion::V2 => self.post(encode::encode_v2(&super::decode(request)?)).await,
        }
    }

    /// Sends a request from the sender: a 1.0 body already compressed is posted as it
    /// is.
    pub async fn send_request(
        &self,
        request: &crate::record::metrics::EncodedRequest,
    ) -> Result<(), SendError> {
        match (self.version, request.snappy) {
            (RemoteWriteVersion::V1, true) => self.post(request.body.clone()).await,
            _ => self.send_encoded(&super::raw(request)?).await,
        }
    }

    /// Posts a compressed body of this exporter's version.
    async fn post(&self, body: Vec<u8>) -> Result<(), SendError> {
        let (content_type, version) = match self.version {
            RemoteWriteVersion::V1 => (v1::CONTENT_TYPE, v1::VERSION_HEADER_VALUE),
            RemoteWriteVersion::V2 => (v2::CONTENT_TYPE, v2::VERSION_HEADER_VALUE),
        };
        let headers = [
            (
                CONTENT_ENCODING,
                HeaderValue::from_static(remote_write::CONTENT_ENCODING),
            ),
            (CONTENT_TYPE, HeaderValue::from_static(content_type)),
            (
                HeaderName::from_static(remote_write::VERSION_HEADER),
                HeaderValue::from_static(version),
            ),
            (USER_AGENT, HeaderValue::from_static(AGENT)),
        ];
        self.endpoint
            .post(&self.url, self.timeout, &headers, body)
            .await
            .map(|_| ())
    }
}
