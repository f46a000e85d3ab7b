//! OTLP export of metrics, logs and traces over HTTP/protobuf or gRPC, with the pipeline's headers,
//! credentials and TLS (rustls with ring on both transports; for gRPC through a
//! hyper-rustls connector, so `insecureSkipVerify` and `serverName` work the same).
//!
//! Retries follow the OTLP specification: over HTTP, 429 and 5xx; over gRPC, the codes
//! it lists as retryable (`UNAVAILABLE`, `DEADLINE_EXCEEDED`, `RESOURCE_EXHAUSTED`,
//! `ABORTED`, `CANCELLED`, `OUT_OF_RANGE`, `DATA_LOSS`). Anything else drops the batch.
//! A partial success drops what the backend refused: a metric batch whole, of a log or
//! trace request only the refused records or spans (counted), the rest being stored.
//!
//! Logs and traces travel as the buffer holds them: the encoded
//! `ExportLogsServiceRequest` or `ExportTraceServiceRequest` is sent without decoding
//! it, over HTTP as the body, over gRPC as the message ([`Encoded`]), so even fields
//! this version does not know are forwarded.

pub mod convert;

use std::time::Duration;

use kaas_pipeline::output::{OtlpOutput, OtlpProtocol};
use kaas_pipeline::output_url::Destination;
use kaas_proto::otlp::{
    EXPORT_LOGS_PATH, EXPORT_METRICS_PATH, EXPORT_TRACES_PATH, ExportLogsServiceResponse,
    ExportMetricsServiceResponse, ExportTraceServiceResponse,
};
use prost::Message;
use reqwest::header::{CONTENT_TYPE, HeaderValue, USER_AGENT};
use tonic::codegen::http::uri::PathAndQuery;
use tonic::metadata::{MetadataKey, MetadataValue};
use tonic::transport::Channel;
use url::Url;

use crate::internal_events::{ErrorReason, PipelineStats};
use crate::outbound::USER_AGENT as AGENT;
use crate::outbound::auth::{AuthError, ValueSources};
use crate::outbound::destination::TargetUrl;
use crate::outbound::http::Endpoint;
use crate::outbound::retry::SendError;
use crate::outbound::tls::{ClientCache, TlsError, TlsMaterial, client_config};
use crate::record::logs::LogRequest;
use crate::record::metrics::Batch;
use crate::record::otlp::OtlpRequest;
use crate::record::traces::TraceRequest;

/// Sends batches to one OTLP endpoint.
#[derive(Debug)]
pub struct OtlpExporter {
    url: TargetUrl,
    protocol: OtlpProtocol,
    timeout: Duration,
    endpoint: Endpoint,
    grpc: ClientCache<Channel>,
}

impl OtlpExporter {
    /// An exporter for a validated output (`url` already ends in `/v1/metrics` or
    /// `/v1/logs` for HTTP).
    pub fn new(
        output: &OtlpOutput,
        url: impl Into<Destination>,
        protocol: OtlpProtocol,
        timeout: Duration,
        sources: ValueSources,
    ) -> Result<Self, TlsError> {
        Ok(Self {
            url: TargetUrl::new(url.into(), sources.clone()),
            protocol,
            timeout,
            endpoint: Endpoint::for_output(output, sources)?,
            grpc: ClientCache::default(),
        })
    }

    /// Sends one metric batch.
    pub async fn send(&self, batch: &Batch) -> Result<(), SendError> {
        let request = convert::to_request(batch);
        let response: ExportMetricsServiceResponse = match self.protocol {
            OtlpProtocol::Http => self.post_http(request.encode_to_vec()).await?,
            OtlpProtocol::Grpc => self.call_grpc(request, EXPORT_METRICS_PATH).await?,
        };
        partial_success(&response)
    }

    /// Sends one log request: its encoded body as it is, over either transport. Records
    /// the backend refused in a partial success are counted as dropped in `stats`; the
    /// rest is delivered.
    pub async fn send_logs(
        &self,
        request: &LogRequest,
        stats: &PipelineStats,
    ) -> Result<(), SendError> {
        let response: ExportLogsServiceResponse =
            self.send_encoded(request, EXPORT_LOGS_PATH).await?;
        if let Some(partial) = response.partial_success {
            rejected_items(
                request,
                stats,
                partial.rejected_log_records,
                &partial.error_message,
                "log records",
            );
        }
        Ok(())
    }

    /// Sends one trace request as [`Self::send_logs`] sends a log request: spans the
    /// backend refused in a partial success are counted as dropped, not the batch.
    pub async fn send_traces(
        &self,
        request: &TraceRequest,
        stats: &PipelineStats,
    ) -> Result<(), SendError> {
        let response: ExportTraceServiceResponse =
            self.send_encoded(request, EXPORT_TRACES_PATH).await?;
        if let Some(partial) = response.partial_success {
            rejected_items(
                request,
                stats,
                partial.rejected_spans,
                &partial.error_message,
                "spans",
            );
        }
        Ok(())
    }

    /// Sends an encoded export request as it is: over HTTP as the body, over gRPC as
    /// the message of `path`.
    async fn send_encoded<M: Message + Default, Response>(
        &self,
        request: &OtlpRequest<M>,
        path: &'static str,
    ) -> Result<Response, SendError>
    where
        Response: Message + Default + Send + Sync + 'static,
    {
        let body = super::damaged(request.raw())?.into_owned();
        match self.protocol {
            OtlpProtocol::Http => self.post_http(body).await,
            OtlpProtocol::Grpc => self.call_grpc(Encoded(body), path).await,
        }
    }

    /// POSTs an encoded OTLP request; the decoded answer (an empty answer, or one that
    /// does not decode, as the default: the request was accepted).
    async fn post_http<Response: Message + Default>(
        &self,
        body: Vec<u8>,
    ) -> Result<Response, SendError> {
        let headers = [
            (
                CONTENT_TYPE,
                HeaderValue::from_static("application/x-protobuf"),
            ),
            (USER_AGENT, HeaderValue::from_static(AGENT)),
        ];
        let body = self
            .endpoint
            .post(&self.url, self.timeout, &headers, body)
            .await?;
        Ok(Response::decode(body.as_ref()).unwrap_or_default())
    }

    #[tracing::instrument(name = "export", level = "debug", skip_all, err(level = "debug"), fields(otel.kind = "client", rpc.system = "grpc"))]
    async fn call_grpc<Request, Response>(
        &self,
        request: Request,
        path: &'static str,
    ) -> Result<Response, SendError>
    where
        Request: Message + Send + Sync + 'static,
        Response: Message + Default + Send + Sync + 'static,
    {
        let material = self.endpoint.tls_material()?;
        let (url, timeout) = (self.url.current()?, self.timeout);
        let channel = self
            .grpc
            .get_for(url.as_str(), &material, |m| grpc_channel(&url, m, timeout))
            .map_err(|e| AuthError::Tls(e.to_string()))?;
        let mut grpc = tonic::client::Grpc::new(channel);
        grpc.ready().await.map_err(|e| SendError::Retryable {
            reason: format!("the gRPC channel is not ready: {e}"),
            retry_after: None,
            condition: ErrorReason::BackendUnreachable,
        })?;
        let mut call = tonic::Request::new(request);
        call.set_timeout(self.timeout);
        for (name, value) in self.endpoint.request_headers().await? {
            insert_metadata(&mut call, name.as_str(), value.as_bytes())?;
        }
        let codec = tonic_prost::ProstCodec::<Request, Response>::default();
        match grpc
            .unary(call, PathAndQuery::from_static(path), codec)
            .await
        {
            Ok(response) => Ok(response.into_inner()),
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

/// A message already encoded, sent as it is: prost writes its bytes, so a buffered
/// request needs no decoding to go over gRPC. Never decoded (answers are decoded as
/// their own types), so reading one only skips its fields.
#[derive(Clone, Debug, Default, PartialEq)]
struct Encoded(Vec<u8>);

impl Message for Encoded {
    fn encode_raw(&self, buf: &mut impl prost::bytes::BufMut) {
        buf.put_slice(&self.0);
    }

    fn merge_field(
        &mut self,
        tag: u32,
        wire_type: prost::encoding::WireType,
        buf: &mut impl prost::bytes::Buf,
        ctx: prost::encoding::DecodeContext,
    ) -> Result<(), prost::DecodeError> {
        prost::encoding::skip_field(wire_type, tag, buf, ctx)
    }

    fn encoded_len(&self) -> usize {
        self.0.len()
    }

    fn clear(&mut self) {
        self.0.clear();
    }
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
    let endpoint =
        tonic::transport::Endpoint::from_shared(endpoint.as_str().trim_end_matches('/').to_owned())
            .map_err(|e| TlsError::Client(e.to_string()))?
            .user_agent(AGENT)
            .map_err(|e| TlsError::Client(e.to_string()))?
            .connect_timeout(timeout)
            .timeout(timeout);
    Ok(endpoint.connect_with_connector_lazy(connector))
}

/// Counts the `rejected` items (`what`) of `request` a partial success refused for good
/// as dropped (at most the request's items), and marks them settled so the request is
/// not counted as sent whole.
fn rejected_items<M>(
    request: &OtlpRequest<M>,
    stats: &PipelineStats,
    rejected: i64,
    message: &str,
    what: &str,
) {
    if rejected <= 0 {
        return;
    }
    let count = u64::try_from(rejected)
        .unwrap_or(u64::MAX)
        .min(request.records);
    request.settled.refused_unnamed(count);
    super::count_rejected(
        stats,
        count,
        format!("the backend rejected {rejected} {what}: {message}"),
    );
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
            condition: ErrorReason::BackendUnreachable,
        },
        _ => SendError::Permanent { reason },
    }
}

#[cfg(test)]
mod tests {
    use kaas_proto::otlp::{ExportLogsServiceRequest, LogRecord, ResourceLogs, ScopeLogs};

    use super::*;

    #[test]
    fn an_encoded_message_is_sent_byte_for_byte() {
        let request = ExportLogsServiceRequest {
            resource_logs: vec![ResourceLogs {
                scope_logs: vec![ScopeLogs {
                    log_records: vec![LogRecord {
                        severity_text: "INFO".into(),
                        ..Default::default()
                    }],
                    ..Default::default()
                }],
                ..Default::default()
            }],
        };
        let mut bytes = request.encode_to_vec();
        // A field the official protocol may add later travels along.
        bytes.extend([0x98, 0x06, 0x01]);
        let encoded = Encoded(bytes.clone());
        assert_eq!(encoded.encoded_len(), bytes.len());
        assert_eq!(encoded.encode_to_vec(), bytes);
        assert_eq!(Encoded::decode(bytes.as_slice()), Ok(Encoded::default()));
    }
}
