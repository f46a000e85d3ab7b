//! OTLP over gRPC into the agent: the Collector's
//! `opentelemetry.proto.collector.metrics.v1.MetricsService/Export`, served on its own
//! port (OTLP's 4317 by default) and routed exactly like the HTTP receiver. Written as
//! a tonic service by hand, the way tonic's generated servers are, since the OTLP
//! messages are hand-written too.

use kaas_proto::otlp::{
    EXPORT_METRICS_PATH, ExportMetricsServiceRequest, ExportMetricsServiceResponse,
};
use tonic::codegen::{Body, BoxFuture, Context, Poll, Service, StdError, http};

use super::{MAX_PUSH_BODY_BYTES, Protocol, PushState, otlp, route};

/// The gRPC service.
#[derive(Clone)]
pub struct OtlpGrpc {
    state: PushState,
}

impl OtlpGrpc {
    /// A service feeding the given pipelines.
    pub fn new(
        pipelines: std::sync::Arc<tokio::sync::RwLock<crate::pipeline::runtime::Pipelines>>,
        stats: std::sync::Arc<super::PushStats>,
    ) -> Self {
        Self {
            state: PushState { pipelines, stats },
        }
    }
}

impl tonic::server::NamedService for OtlpGrpc {
    const NAME: &'static str = "opentelemetry.proto.collector.metrics.v1.MetricsService";
}

impl<B> Service<http::Request<B>> for OtlpGrpc
where
    B: Body + Send + 'static,
    B::Error: Into<StdError> + Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = std::convert::Infallible;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        if request.uri().path() != EXPORT_METRICS_PATH {
            return Box::pin(async {
                let mut response = http::Response::new(tonic::body::Body::default());
                let headers = response.headers_mut();
                headers.insert(
                    tonic::Status::GRPC_STATUS,
                    (tonic::Code::Unimplemented as i32).into(),
                );
                headers.insert(
                    http::header::CONTENT_TYPE,
                    tonic::metadata::GRPC_CONTENT_TYPE,
                );
                Ok(response)
            });
        }
        let state = self.state.clone();
        Box::pin(async move {
            let codec = tonic_prost::ProstCodec::<
                ExportMetricsServiceResponse,
                ExportMetricsServiceRequest,
            >::default();
            let mut grpc = tonic::server::Grpc::new(codec)
                .apply_max_message_size_config(Some(MAX_PUSH_BODY_BYTES), None);
            Ok(grpc.unary(Export(state), request).await)
        })
    }
}

struct Export(PushState);

impl tonic::server::UnaryService<ExportMetricsServiceRequest> for Export {
    type Response = ExportMetricsServiceResponse;
    type Future = BoxFuture<tonic::Response<Self::Response>, tonic::Status>;

    fn call(&mut self, request: tonic::Request<ExportMetricsServiceRequest>) -> Self::Future {
        let state = self.0.clone();
        Box::pin(async move {
            let (samples, metadata) = otlp::to_samples(request.get_ref());
            route(&state, Protocol::Otlp, samples, metadata).await;
            Ok(tonic::Response::new(ExportMetricsServiceResponse::default()))
        })
    }
}

/// Serves the service on `listener` until the process ends.
pub async fn serve(
    listener: tokio::net::TcpListener,
    service: OtlpGrpc,
) -> Result<(), tonic::transport::Error> {
    tonic::transport::Server::builder()
        .add_service(service)
        .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener))
        .await
}
