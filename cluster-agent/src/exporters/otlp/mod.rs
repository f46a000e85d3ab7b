//! OTLP metrics export over HTTP/protobuf or gRPC, with the pipeline's headers,
//! credentials and TLS (rustls with ring on both transports; for gRPC through a
//! hyper-rustls connector, so `insecureSkipVerify` and `serverName` work the same).
//!
//! Retries follow the OTLP specification: over HTTP, 429 and 5xx; over gRPC, the codes
//! it lists as retryable (`UNAVAILABLE`, `DEADLINE_EXCEEDED`, `RESOURCE_EXHAUSTED`,
//! `ABORTED`, `CANCELLED`, `OUT_OF_RANGE`, `DATA_LOSS`). Anything else drops the batch.

pub mod convert;

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use kaas_pipeline::output::{OtlpOutput, OtlpProtocol};
use kaas_proto::otlp::{
    EXPORT_METRICS_PATH, ExportMetricsServiceRequest, ExportMetricsServiceResponse,
};
use prost::Message;
use reqwest::header::{CONTENT_TYPE, HeaderValue, USER_AGENT};
use tonic::codegen::http::uri::PathAndQuery;
use tonic::metadata::{MetadataKey, MetadataValue};
use tonic::transport::{Channel, Endpoint};
use url::Url;

use super::USER_AGENT as AGENT;
use super::auth::{
    AuthError, Credentials, SecretStore, resolve_headers, tls_material, without_url,
};
use super::retry::{SendError, classify};
use super::tls::{ClientCache, TlsError, TlsMaterial, client_config, http_client};
use crate::batch::Batch;

/// Sends batches to one OTLP endpoint.
#[derive(Debug)]
pub struct OtlpExporter {
    endpoint: Url,
    protocol: OtlpProtocol,
    timeout: Duration,
    output: OtlpOutput,
    store: Arc<dyn SecretStore>,
    credentials: Credentials,
    http: ClientCache<reqwest::Client>,
    grpc: ClientCache<Channel>,
}

impl OtlpExporter {
    /// An exporter for a validated output (`endpoint` already ends in `/v1/metrics`
    /// for HTTP).
    pub fn new(
        output: &OtlpOutput,
        endpoint: Url,
        protocol: OtlpProtocol,
        timeout: Duration,
        store: Arc<dyn SecretStore>,
    ) -> Result<Self, TlsError> {
        let token_client = http_client(&TlsMaterial::default())?;
        Ok(Self {
            endpoint,
            protocol,
            timeout,
            output: output.clone(),
            credentials: Credentials::new(
                output.authentication.as_ref(),
                token_client,
                store.clone(),
            ),
            store,
            http: ClientCache::default(),
            grpc: ClientCache::default(),
        })
    }

    /// Sends one batch.
    pub async fn send(&self, batch: &Batch) -> Result<(), SendError> {
        let request = convert::to_request(batch);
        match self.protocol {
            OtlpProtocol::Http => self.send_http(request).await,
            OtlpProtocol::Grpc => self.send_grpc(request).await,
        }
    }

    async fn send_http(&self, request: ExportMetricsServiceRequest) -> Result<(), SendError> {
        let material = tls_material(self.output.tls.as_ref(), self.store.as_ref())?;
        let client = self
            .http
            .get(&material, http_client)
            .map_err(|e| AuthError::Tls(e.to_string()))?;
        let mut builder = client
            .post(self.endpoint.clone())
            .timeout(self.timeout)
            .header(CONTENT_TYPE, "application/x-protobuf")
            .header(USER_AGENT, HeaderValue::from_static(AGENT));
        for (name, value) in resolve_headers(&self.output.headers, self.store.as_ref())? {
            builder = builder.header(name, value);
        }
        if let Some(authorization) = self.credentials.authorization().await? {
            builder = builder.header(reqwest::header::AUTHORIZATION, authorization);
        }
        let response = builder
            .body(request.encode_to_vec())
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
        let body = response.bytes().await.unwrap_or_default();
        let excerpt = if (200..300).contains(&status) {
            String::new()
        } else {
            String::from_utf8_lossy(&body[..body.len().min(256)])
                .trim()
                .to_owned()
        };
        classify(status, retry_after.as_deref(), &excerpt, SystemTime::now())?;
        partial_success(&ExportMetricsServiceResponse::decode(body.as_ref()).unwrap_or_default())
    }

    async fn send_grpc(&self, request: ExportMetricsServiceRequest) -> Result<(), SendError> {
        let material = tls_material(self.output.tls.as_ref(), self.store.as_ref())?;
        let endpoint = self.endpoint.clone();
        let timeout = self.timeout;
        let channel = self
            .grpc
            .get(&material, |m| grpc_channel(&endpoint, m, timeout))
            .map_err(|e| AuthError::Tls(e.to_string()))?;
        let mut grpc = tonic::client::Grpc::new(channel);
        grpc.ready().await.map_err(|e| SendError::Retryable {
            reason: format!("the gRPC channel is not ready: {e}"),
            retry_after: None,
        })?;
        let mut call = tonic::Request::new(request);
        call.set_timeout(self.timeout);
        for (name, value) in resolve_headers(&self.output.headers, self.store.as_ref())? {
            insert_metadata(&mut call, name.as_str(), value.as_bytes())?;
        }
        if let Some(authorization) = self.credentials.authorization().await? {
            insert_metadata(&mut call, "authorization", authorization.as_bytes())?;
        }
        let codec = tonic_prost::ProstCodec::<
            ExportMetricsServiceRequest,
            ExportMetricsServiceResponse,
        >::default();
        match grpc
            .unary(call, PathAndQuery::from_static(EXPORT_METRICS_PATH), codec)
            .await
        {
            Ok(response) => partial_success(response.get_ref()),
            Err(status) => Err(grpc_error(&status)),
        }
    }
}

fn insert_metadata<T>(
    call: &mut tonic::Request<T>,
    name: &str,
    value: &[u8],
) -> Result<(), SendError> {
    let key = MetadataKey::from_bytes(name.to_ascii_lowercase().as_bytes())
        .map_err(|_| AuthError::InvalidHeaderValue(name.to_owned()))?;
    let value = MetadataValue::try_from(value)
        .map_err(|_| AuthError::InvalidHeaderValue(name.to_owned()))?;
    call.metadata_mut().insert(key, value);
    Ok(())
}

/// A lazily connecting channel that does TLS with our rustls configuration.
fn grpc_channel(
    endpoint: &Url,
    material: &TlsMaterial,
    timeout: Duration,
) -> Result<Channel, TlsError> {
    let mut config = client_config(material)?;
    // The connector sets ALPN itself (h2 for gRPC) and refuses a preset list.
    config.alpn_protocols.clear();
    let connector = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(config)
        .https_or_http()
        .enable_http2()
        .build();
    let endpoint = Endpoint::from_shared(endpoint.as_str().trim_end_matches('/').to_owned())
        .map_err(|e| TlsError::Client(e.to_string()))?
        .user_agent(AGENT)
        .map_err(|e| TlsError::Client(e.to_string()))?
        .connect_timeout(timeout)
        .timeout(timeout);
    Ok(endpoint.connect_with_connector_lazy(connector))
}

/// A partial success means the backend refused some points for good.
fn partial_success(response: &ExportMetricsServiceResponse) -> Result<(), SendError> {
    match &response.partial_success {
        Some(partial) if partial.rejected_data_points > 0 => Err(SendError::Permanent {
            reason: format!(
                "the backend rejected {} data points: {}",
                partial.rejected_data_points, partial.error_message
            ),
        }),
        _ => Ok(()),
    }
}

fn grpc_error(status: &tonic::Status) -> SendError {
    use tonic::Code;
    let reason = format!(
        "server returned gRPC status {:?}: {}",
        status.code(),
        status.message()
    );
    match status.code() {
        Code::Unavailable
        | Code::DeadlineExceeded
        | Code::ResourceExhausted
        | Code::Aborted
        | Code::Cancelled
        | Code::OutOfRange
        | Code::DataLoss => SendError::Retryable {
            reason,
            retry_after: None,
        },
        _ => SendError::Permanent { reason },
    }
}
