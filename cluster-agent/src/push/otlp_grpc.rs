//! OTLP over gRPC into the agent: the Collector's
//! `opentelemetry.proto.collector.metrics.v1.MetricsService/Export` ([`OtlpGrpc`]),
//! `opentelemetry.proto.collector.logs.v1.LogsService/Export` ([`OtlpLogsGrpc`]) and
//! `opentelemetry.proto.collector.trace.v1.TraceService/Export` ([`OtlpTracesGrpc`]),
//! served on their own port (OTLP's 4317 by default) and admitted, bounded and routed exactly
//! like the HTTP receiver ([`super::PushReceiver`]).
//!
//! The one unary method is served by hand rather than through tonic's codec, so that
//! the request passes the same checks in the same order as over HTTP: pipelines and
//! credentials from the headers before the body is read, the body (one gRPC message,
//! gzip-compressed when `grpc-encoding: gzip`) read up to the body limit, and the
//! message decoded by [`kaas_series::otlp`] under the push limits. Refusals are gRPC
//! statuses with the HTTP receiver's reasons: `RESOURCE_EXHAUSTED` for too large,
//! `INVALID_ARGUMENT` for malformed, `UNAUTHENTICATED`, `UNAVAILABLE`,
//! `FAILED_PRECONDITION` when no pipeline takes OTLP metrics or logs, `UNIMPLEMENTED`
//! when no trace pipeline takes spans.

use std::convert::Infallible;
use std::marker::PhantomData;
use std::net::IpAddr;

use bytes::Bytes;
use http_body::Frame;
use kaas_proto::otlp::{
    EXPORT_LOGS_PATH, EXPORT_METRICS_PATH, EXPORT_TRACES_PATH, ExportLogsServiceResponse,
    ExportMetricsServiceResponse,
};
use kaas_series::{DecodeError, PushLimits, compression};
use prost::Message;
use tonic::codegen::{BoxFuture, Context, Poll, Service, http};

use super::{Protocol, PushReceiver, Refusal};

/// The gRPC message header: a compressed flag and a big-endian length.
const FRAME_HEADER_BYTES: usize = 5;

/// One OTLP signal's `Export` method: its service, path and protocol, and how a
/// request that passed [`unary`] is decoded, routed and answered.
pub trait OtlpExport: Send + Sync + 'static {
    /// The gRPC service name.
    const SERVICE: &'static str;
    /// The unary method's path.
    const PATH: &'static str;
    /// The push protocol, for refusals and metrics.
    const PROTOCOL: Protocol;

    /// Admits, decodes and routes one request from `peer` (when known) through
    /// `receiver`; the gRPC answer.
    fn export(
        receiver: PushReceiver,
        peer: Option<IpAddr>,
        headers: http::HeaderMap,
        body: axum::body::Body,
        gzip: bool,
    ) -> BoxFuture<http::Response<tonic::body::Body>, Infallible>;
}

/// The gRPC service of one OTLP signal ([`OtlpGrpc`], [`OtlpLogsGrpc`],
/// [`OtlpTracesGrpc`]).
pub struct OtlpService<S> {
    receiver: PushReceiver,
    signal: PhantomData<fn() -> S>,
}

impl<S> Clone for OtlpService<S> {
    fn clone(&self) -> Self {
        Self {
            receiver: self.receiver.clone(),
            signal: PhantomData,
        }
    }
}

impl<S: OtlpExport> OtlpService<S> {
    /// A service feeding `receiver`'s pipelines.
    pub fn new(receiver: PushReceiver) -> Self {
        Self {
            receiver,
            signal: PhantomData,
        }
    }
}

impl<S: OtlpExport> tonic::server::NamedService for OtlpService<S> {
    const NAME: &'static str = S::SERVICE;
}

impl<S: OtlpExport> Service<http::Request<tonic::body::Body>> for OtlpService<S> {
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<tonic::body::Body>) -> Self::Future {
        let receiver = self.receiver.clone();
        Box::pin(async move {
            match unary(request, S::PATH, S::PROTOCOL, &receiver) {
                Ok(Unary {
                    peer,
                    headers,
                    body,
                    gzip,
                }) => S::export(receiver, peer, headers, body, gzip).await,
                Err(answer) => Ok(answer),
            }
        })
    }
}

/// `MetricsService/Export`, for metric pipelines with an `otlp` input.
pub struct MetricsExport;
/// The gRPC metrics service.
pub type OtlpGrpc = OtlpService<MetricsExport>;

impl OtlpExport for MetricsExport {
    const SERVICE: &'static str = "opentelemetry.proto.collector.metrics.v1.MetricsService";
    const PATH: &'static str = EXPORT_METRICS_PATH;
    const PROTOCOL: Protocol = Protocol::Otlp;

    fn export(
        receiver: PushReceiver,
        _peer: Option<IpAddr>,
        headers: http::HeaderMap,
        body: axum::body::Body,
        gzip: bool,
    ) -> BoxFuture<http::Response<tonic::body::Body>, Infallible> {
        Box::pin(async move {
            let decode = move |body: &[u8], limits: &PushLimits| {
                decode_message(body, gzip, limits, kaas_series::otlp::decode)
            };
            let accepted = receiver.accept(Self::PROTOCOL, &headers, body, decode);
            Ok(match accepted.await {
                Ok(()) => exported(&ExportMetricsServiceResponse::default()),
                Err(refusal) => status(&refusal).into_http(),
            })
        })
    }
}

/// `LogsService/Export`, for log pipelines with an `otlp` input.
pub struct LogsExport;
/// The gRPC logs service.
pub type OtlpLogsGrpc = OtlpService<LogsExport>;

impl OtlpExport for LogsExport {
    const SERVICE: &'static str = "opentelemetry.proto.collector.logs.v1.LogsService";
    const PATH: &'static str = EXPORT_LOGS_PATH;
    const PROTOCOL: Protocol = Protocol::OtlpLogs;

    fn export(
        receiver: PushReceiver,
        peer: Option<IpAddr>,
        headers: http::HeaderMap,
        body: axum::body::Body,
        gzip: bool,
    ) -> BoxFuture<http::Response<tonic::body::Body>, Infallible> {
        Box::pin(async move {
            let decode = move |body: &[u8], limits: &PushLimits| {
                decode_message(body, gzip, limits, kaas_series::otlp_logs::decode)
            };
            Ok(
                match receiver.accept_logs(peer, &headers, body, decode).await {
                    Ok(()) => exported(&ExportLogsServiceResponse::default()),
                    Err(refusal) => status(&refusal).into_http(),
                },
            )
        })
    }
}

/// `TraceService/Export`, for trace pipelines (their `otlp` input); the answer names
/// spans rate limits rejected ([`super::otlp_traces`]).
pub struct TracesExport;
/// The gRPC trace service.
pub type OtlpTracesGrpc = OtlpService<TracesExport>;

impl OtlpExport for TracesExport {
    const SERVICE: &'static str = "opentelemetry.proto.collector.trace.v1.TraceService";
    const PATH: &'static str = EXPORT_TRACES_PATH;
    const PROTOCOL: Protocol = Protocol::OtlpTraces;

    fn export(
        receiver: PushReceiver,
        peer: Option<IpAddr>,
        headers: http::HeaderMap,
        body: axum::body::Body,
        gzip: bool,
    ) -> BoxFuture<http::Response<tonic::body::Body>, Infallible> {
        Box::pin(async move {
            let decode = move |body: &[u8], limits: &PushLimits| {
                decode_message(body, gzip, limits, kaas_series::otlp_traces::decode)
            };
            let accepted = receiver.accept_traces(Self::PROTOCOL, peer, &headers, body, decode);
            Ok(match accepted.await {
                Ok(rejected) => exported(&rejected.response()),
                Err(refusal) => status(&refusal).into_http(),
            })
        })
    }
}

/// One unary request, as [`unary`] passed it.
struct Unary {
    /// Where it came from: tonic's `TcpConnectInfo`, which its server adds to every
    /// request it accepts (what `tonic::Request::remote_addr` reads); `None` for a
    /// request handed to the service directly.
    peer: Option<IpAddr>,
    headers: http::HeaderMap,
    body: axum::body::Body,
    /// Whether its message may be gzipped.
    gzip: bool,
}

/// The one unary request; the answer for a request to another method or with an
/// unknown encoding.
#[allow(clippy::result_large_err)]
fn unary(
    request: http::Request<tonic::body::Body>,
    path: &str,
    protocol: Protocol,
    receiver: &PushReceiver,
) -> Result<Unary, http::Response<tonic::body::Body>> {
    if request.uri().path() != path {
        return Err(tonic::Status::unimplemented(format!("only {path} is served")).into_http());
    }
    let (parts, body) = request.into_parts();
    let peer = (parts.extensions)
        .get::<tonic::transport::server::TcpConnectInfo>()
        .and_then(tonic::transport::server::TcpConnectInfo::remote_addr)
        .map(|address| address.ip());
    match grpc_encoding(&parts.headers) {
        Ok(gzip) => Ok(Unary {
            peer,
            headers: parts.headers,
            body: axum::body::Body::new(body),
            gzip,
        }),
        Err(refusal) => {
            refusal.count(protocol, &receiver.stats);
            Err(status(&refusal).into_http())
        }
    }
}

fn status(refusal: &Refusal) -> tonic::Status {
    tonic::Status::new(refusal.grpc_code(), refusal.message())
}

/// Whether messages may be gzip-compressed, from `grpc-encoding`.
fn grpc_encoding(headers: &http::HeaderMap) -> Result<bool, Refusal> {
    match headers
        .get("grpc-encoding")
        .map(|v| v.to_str().unwrap_or("?"))
    {
        None | Some("identity") => Ok(false),
        Some("gzip") => Ok(true),
        Some(_) => Err(Refusal::UnsupportedMediaType(
            "grpc-encoding is not supported; send gzip or identity".into(),
        )),
    }
}

/// Decodes the one gRPC message of a unary request body with `decode`.
fn decode_message<T>(
    body: &[u8],
    gzip: bool,
    limits: &PushLimits,
    decode: fn(&[u8], &PushLimits) -> Result<T, DecodeError>,
) -> Result<T, DecodeError> {
    let Some((header, message)) = body.split_first_chunk::<FRAME_HEADER_BYTES>() else {
        return Err(DecodeError::Malformed(
            "the body holds no gRPC message".into(),
        ));
    };
    let [compressed, length @ ..] = *header;
    let length = u32::from_be_bytes(length) as usize;
    if length != message.len() {
        return Err(DecodeError::Malformed(format!(
            "the gRPC message declares {length} bytes and {} follow; send exactly one message",
            message.len()
        )));
    }
    match (compressed, gzip) {
        (0, _) => decode(message, limits),
        (1, true) => {
            let raw = compression::gzip(message, limits.max_decompressed_bytes)?;
            decode(&raw, limits)
        }
        (1, false) => Err(DecodeError::Malformed(
            "the message is compressed but grpc-encoding names no compression".into(),
        )),
        (flag, _) => Err(DecodeError::Malformed(format!(
            "invalid gRPC compressed flag {flag}"
        ))),
    }
}

/// The successful answer: one `response` (an empty export response) and status OK.
fn exported(response: &impl Message) -> http::Response<tonic::body::Body> {
    let message = response.encode_to_vec();
    let mut frame = Vec::with_capacity(FRAME_HEADER_BYTES + message.len());
    frame.push(0);
    frame.extend_from_slice(&u32::try_from(message.len()).unwrap_or(0).to_be_bytes());
    frame.extend_from_slice(&message);
    let mut trailers = http::HeaderMap::new();
    trailers.insert("grpc-status", http::HeaderValue::from_static("0"));
    let frames = futures_util::stream::iter([
        Ok::<_, Infallible>(Frame::data(Bytes::from(frame))),
        Ok(Frame::trailers(trailers)),
    ]);
    let mut response = http::Response::new(tonic::body::Body::new(
        http_body_util::StreamBody::new(frames),
    ));
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        tonic::metadata::GRPC_CONTENT_TYPE,
    );
    response
}

/// Serves the services on `listener` until the process ends.
pub async fn serve(
    listener: tokio::net::TcpListener,
    service: OtlpGrpc,
    logs: OtlpLogsGrpc,
    traces: OtlpTracesGrpc,
) -> Result<(), tonic::transport::Error> {
    tonic::transport::Server::builder()
        .add_service(service)
        .add_service(logs)
        .add_service(traces)
        .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener))
        .await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(compressed: u8, message: &[u8]) -> Vec<u8> {
        let mut body = vec![compressed];
        body.extend_from_slice(&(message.len() as u32).to_be_bytes());
        body.extend_from_slice(message);
        body
    }

    #[test]
    fn one_message_per_request_and_only_declared_compression() {
        let limits = PushLimits::default();
        assert!(decode_message(&frame(0, &[]), false, &limits, kaas_series::otlp::decode).is_ok());
        for (body, gzip) in [
            (vec![0, 0, 0], false),
            (frame(1, b"x"), false),
            (frame(2, b""), false),
            ([frame(0, b""), frame(0, b"")].concat(), false),
            (frame(1, b"not gzip"), true),
        ] {
            let error =
                decode_message(&body, gzip, &limits, kaas_series::otlp::decode).unwrap_err();
            assert_eq!(error.reason(), "malformed", "{body:?}: {error}");
        }
    }

    /// Issue 13, finding 4: a gzip bomb in a gRPC message is refused at the
    /// decompressed limit.
    #[test]
    fn a_gzip_bomb_in_a_grpc_message_is_resource_exhausted() {
        use std::io::Write;
        let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        encoder.write_all(&vec![0u8; 40 << 20]).unwrap();
        let bomb = encoder.finish().unwrap();
        let error = decode_message(
            &frame(1, &bomb),
            true,
            &PushLimits::default(),
            kaas_series::otlp::decode,
        )
        .unwrap_err();
        assert_eq!(error.reason(), "decompressed_too_large");
        assert_eq!(
            Refusal::Decode(error).grpc_code(),
            tonic::Code::ResourceExhausted
        );
    }
}
