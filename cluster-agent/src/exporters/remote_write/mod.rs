//! Prometheus remote-write: 1.0 (default) and 2.0, over HTTP/1.1 or HTTP/2, with the
//! pipeline's headers, credentials and TLS.
//!
//! Every request carries `Content-Encoding: snappy`, the version's `Content-Type` and
//! `X-Prometheus-Remote-Write-Version`, and the agent's `User-Agent`. Secrets (headers,
//! credentials, TLS material) are resolved for every request; the HTTP client is
//! rebuilt only when the resolved TLS material changes, so rotated certificates are
//! picked up without a restart and without a handshake per request.

pub mod encode;

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use kaas_pipeline::output::{RemoteWriteOutput, RemoteWriteVersion};
use kaas_proto::remote_write::{v1, v2};
use reqwest::header::{CONTENT_ENCODING, CONTENT_TYPE, HeaderName, HeaderValue, USER_AGENT};
use url::Url;

use super::USER_AGENT as AGENT;
use super::auth::{
    AuthError, Credentials, SecretStore, resolve_headers, tls_material, without_url,
};
use super::retry::{SendError, classify};
use super::tls::{ClientCache, TlsError, TlsMaterial, http_client};
use crate::batch::Batch;

/// How much of an error response body is kept for the error message.
const ERROR_BODY_EXCERPT: usize = 256;

/// Sends batches to one remote-write endpoint.
#[derive(Debug)]
pub struct RemoteWriteExporter {
    url: Url,
    version: RemoteWriteVersion,
    timeout: Duration,
    output: RemoteWriteOutput,
    store: Arc<dyn SecretStore>,
    client: ClientCache<reqwest::Client>,
    credentials: Credentials,
}

impl RemoteWriteExporter {
    /// An exporter for a validated output.
    pub fn new(
        output: &RemoteWriteOutput,
        url: Url,
        version: RemoteWriteVersion,
        timeout: Duration,
        store: Arc<dyn SecretStore>,
    ) -> Result<Self, TlsError> {
        // OAuth2 token requests use a plain client with the system roots.
        let token_client = http_client(&TlsMaterial::default())?;
        Ok(Self {
            url,
            version,
            timeout,
            output: output.clone(),
            credentials: Credentials::new(
                output.authentication.as_ref(),
                token_client,
                store.clone(),
            ),
            store,
            client: ClientCache::default(),
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
            RemoteWriteVersion::V1 => self.post(crate::batch::compress(request)).await,
            RemoteWriteVersion::V2 => self.post(encode::encode_v2(&super::decode(request)?)).await,
        }
    }

    /// Posts a compressed body of this exporter's version.
    async fn post(&self, body: Vec<u8>) -> Result<(), SendError> {
        let client = self.client()?;
        let (content_type, version) = match self.version {
            RemoteWriteVersion::V1 => (v1::CONTENT_TYPE, v1::VERSION_HEADER_VALUE),
            RemoteWriteVersion::V2 => (v2::CONTENT_TYPE, v2::VERSION_HEADER_VALUE),
        };
        let mut request = client
            .post(self.url.clone())
            .timeout(self.timeout)
            .header(CONTENT_ENCODING, "snappy")
            .header(CONTENT_TYPE, content_type)
            .header(
                HeaderName::from_static("x-prometheus-remote-write-version"),
                version,
            )
            .header(USER_AGENT, HeaderValue::from_static(AGENT));
        for (name, value) in resolve_headers(&self.output.headers, self.store.as_ref())? {
            request = request.header(name, value);
        }
        if let Some(authorization) = self.credentials.authorization().await? {
            request = request.header(reqwest::header::AUTHORIZATION, authorization);
        }
        let response = request
            .body(body)
            .send()
            .await
            .map_err(|e| SendError::Retryable {
                reason: format!("sending to the backend failed: {}", without_url(&e)),
                retry_after: None,
            })?;
        let status = response.status().as_u16();
        let retry_after = response
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let excerpt = if response.status().is_success() {
            String::new()
        } else {
            let body = response.bytes().await.unwrap_or_default();
            let text = String::from_utf8_lossy(&body[..body.len().min(ERROR_BODY_EXCERPT)]);
            text.trim().to_owned()
        };
        classify(status, retry_after.as_deref(), &excerpt, SystemTime::now())
    }

    /// The HTTP client for the current TLS material.
    fn client(&self) -> Result<reqwest::Client, AuthError> {
        let material = tls_material(self.output.tls.as_ref(), self.store.as_ref())?;
        self.client
            .get(&material, http_client)
            .map_err(|e| AuthError::Tls(e.to_string()))
    }
}
