//! The `AgentControl` gRPC service with small codec buffers on the `Connect` stream.
//!
//! A `Connect` stream lives as long as its agent is connected, and tonic gives every
//! stream a decode buffer and an encode buffer of 8 KiB each (its `BufferSettings`
//! default). With 10,000 agents that is 160 MiB for buffers that are nearly always
//! empty: agents send a few hundred bytes every 30 s and the observer a configuration
//! now and then. [`CompactAgentControl`] serves `Connect` itself with buffers of
//! [`STREAM_BUFFER_SIZE`], which grow when a larger message arrives, and passes every
//! other call (`Join`) to the generated server unchanged. Both decode at most
//! [`MAX_AGENT_MESSAGE_BYTES`] and encode at most [`MAX_OBSERVER_MESSAGE_BYTES`]
//! (tonic's defaults are 4 MiB and unlimited).

use std::convert::Infallible;
use std::marker::PhantomData;
use std::task::{Context, Poll};

use kaas_proto::control::v1::agent_control_server::{
    AgentControl, AgentControlServer, SERVICE_NAME,
};
use kaas_proto::control::v1::{AgentMessage, ObserverMessage};
use tonic::codec::{BufferSettings, Codec};
use tonic::codegen::{Body, BoxFuture, StdError, http};
use tonic::server::{Grpc, NamedService, StreamingService};
use tonic_prost::{ProstDecoder, ProstEncoder};

use super::service::ControlService;
use super::{MAX_AGENT_MESSAGE_BYTES, MAX_OBSERVER_MESSAGE_BYTES};

/// Initial size of a `Connect` stream's decode and encode buffers: a heartbeat, a config
/// status or a health report fits; a bigger message grows the buffer for as long as it
/// needs it.
pub const STREAM_BUFFER_SIZE: usize = 1024;
/// How much encoded data tonic gathers before it hands a chunk to HTTP/2 (its default):
/// only a large configuration reaches it.
const STREAM_YIELD_THRESHOLD: usize = 32 * 1024;

/// The `Connect` path.
const CONNECT_PATH: &str = "/kaas.control.v1.AgentControl/Connect";

/// `AgentControl` with `Connect` served on small buffers; see the module documentation.
#[derive(Clone)]
pub struct CompactAgentControl {
    service: ControlService,
    generated: AgentControlServer<ControlService>,
}

impl CompactAgentControl {
    /// Serves `service`.
    pub fn new(service: ControlService) -> Self {
        Self {
            generated: AgentControlServer::new(service.clone())
                .max_decoding_message_size(MAX_AGENT_MESSAGE_BYTES)
                .max_encoding_message_size(MAX_OBSERVER_MESSAGE_BYTES),
            service,
        }
    }
}

impl NamedService for CompactAgentControl {
    const NAME: &'static str = SERVICE_NAME;
}

impl<B> tonic::codegen::Service<http::Request<B>> for CompactAgentControl
where
    B: Body + Send + 'static,
    B::Error: Into<StdError> + Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        if request.uri().path() != CONNECT_PATH {
            return self.generated.call(request);
        }
        let method = ConnectMethod(self.service.clone());
        Box::pin(async move {
            let mut grpc = Grpc::new(CompactCodec::<ObserverMessage, AgentMessage>::default())
                .apply_max_message_size_config(
                    Some(MAX_AGENT_MESSAGE_BYTES),
                    Some(MAX_OBSERVER_MESSAGE_BYTES),
                );
            Ok(grpc.streaming(method, request).await)
        })
    }
}

/// `Connect` as a tonic streaming method.
struct ConnectMethod(ControlService);

impl StreamingService<AgentMessage> for ConnectMethod {
    type Response = ObserverMessage;
    type ResponseStream = <ControlService as AgentControl>::ConnectStream;
    type Future = BoxFuture<tonic::Response<Self::ResponseStream>, tonic::Status>;

    fn call(&mut self, request: tonic::Request<tonic::Streaming<AgentMessage>>) -> Self::Future {
        let service = self.0.clone();
        Box::pin(async move { service.connect(request).await })
    }
}

/// Protobuf, as tonic's own codec, with [`STREAM_BUFFER_SIZE`] buffers.
struct CompactCodec<T, U>(PhantomData<(T, U)>);

impl<T, U> Default for CompactCodec<T, U> {
    fn default() -> Self {
        Self(PhantomData)
    }
}

fn buffer_settings() -> BufferSettings {
    BufferSettings::new(STREAM_BUFFER_SIZE, STREAM_YIELD_THRESHOLD)
}

impl<T, U> Codec for CompactCodec<T, U>
where
    T: prost::Message + Send + 'static,
    U: prost::Message + Default + Send + 'static,
{
    type Encode = T;
    type Decode = U;
    type Encoder = ProstEncoder<T>;
    type Decoder = ProstDecoder<U>;

    fn encoder(&mut self) -> Self::Encoder {
        ProstEncoder::new(buffer_settings())
    }

    fn decoder(&mut self) -> Self::Decoder {
        ProstDecoder::new(buffer_settings())
    }
}
