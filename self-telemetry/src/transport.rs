//! One OTLP client for the three signals, over gRPC (tonic on a hyper-rustls connector) or
//! HTTP/protobuf (reqwest), with rustls and the ring provider on both, the configured
//! CA bundle or the system roots, and an optional client certificate.
//!
//! No retries: metrics are cumulative, so the next push carries everything a failed one
//! had, and a span batch that fails is dropped and counted (self-telemetry must not
//! grow memory while its receiver is down), as is a batch of log records. Errors never quote header values.

use std::sync::Arc;
use std::time::Duration;

use kaas_proto::otlp::{
    EXPORT_LOGS_PATH, EXPORT_METRICS_PATH, EXPORT_TRACES_PATH, ExportLogsServiceRequest,
    ExportLogsServiceResponse, ExportMetricsServiceRequest, ExportMetricsServiceResponse,
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use kaas_tls::http::HttpClientSettings;
use kaas_tls::{ClientTls, Trust};
use prost::Message;
use reqwest::header::{CONTENT_TYPE, HeaderName, HeaderValue, USER_AGENT};
use rustls::pki_types::CertificateDer;
use rustls::{ClientConfig, RootCertStore};
use tonic::codegen::http::uri::PathAndQuery;
use tonic::metadata::{MetadataKey, MetadataValue};
use tonic::transport::Channel;
use url::Url;

use crate::settings::{OtlpProtocol, OtlpSettings};

/// What the three signals are called in metrics and logs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Signal {
    /// The process's metrics.
    Metrics,
    /// Its spans.
    Traces,
    /// Its log events.
    Logs,
}

impl Signal {
    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Signal::Metrics => "metrics",
            Signal::Traces => "traces",
            Signal::Logs => "logs",
        }
    }
}

/// Why the client cannot be built (bad files; reported at start-up).
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// A file cannot be read.
    #[error("--{flag}: cannot read {path}: {source}")]
    Read {
        /// The flag naming the file.
        flag: &'static str,
        /// The file.
        path: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// A file holds no usable PEM.
    #[error("--{flag}: {path} holds no valid PEM {what}")]
    Pem {
        /// The flag naming the file.
        flag: &'static str,
        /// The file.
        path: String,
        /// certificate or private key.
        what: &'static str,
    },
    /// rustls refused the material.
    #[error("TLS configuration refused: {0}")]
    Tls(#[from] rustls::Error),
    /// The client could not be built.
    #[error("cannot build the OTLP client: {0}")]
    Client(String),
}

/// Why one export failed.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ExportError(pub String);

/// Sends OTLP requests to the configured receiver.
#[derive(Clone, Debug)]
pub struct OtlpClient {
    transport: Transport,
    headers: Arc<[(HeaderName, HeaderValue)]>,
    timeout: Duration,
}

#[derive(Clone, Debug)]
enum Transport {
    Http {
        client: reqwest::Client,
        urls: Box<SignalUrls>,
    },
    Grpc(Channel),
}

/// The OTLP/HTTP URL of each signal.
#[derive(Clone, Debug)]
struct SignalUrls {
    metrics: Url,
    traces: Url,
    logs: Url,
}

/// The part of every export response that matters: refused items.
trait PartialSuccess {
    fn rejected(&self) -> Option<(i64, &str)>;
}

impl PartialSuccess for ExportMetricsServiceResponse {
    fn rejected(&self) -> Option<(i64, &str)> {
        let p = self.partial_success.as_ref()?;
        (p.rejected_data_points > 0).then_some((p.rejected_data_points, &p.error_message))
    }
}

impl PartialSuccess for ExportLogsServiceResponse {
    fn rejected(&self) -> Option<(i64, &str)> {
        let p = self.partial_success.as_ref()?;
        (p.rejected_log_records > 0).then_some((p.rejected_log_records, &p.error_message))
    }
}

impl PartialSuccess for ExportTraceServiceResponse {
    fn rejected(&self) -> Option<(i64, &str)> {
        let p = self.partial_success.as_ref()?;
        (p.rejected_spans > 0).then_some((p.rejected_spans, &p.error_message))
    }
}

impl OtlpClient {
    /// Reads the TLS files and builds the client; connects lazily.
    pub fn new(settings: &OtlpSettings) -> Result<Self, BuildError> {
        let transport = match settings.protocol {
            OtlpProtocol::Http => Transport::Http {
                client: kaas_tls::http::http_client(HttpClientSettings::new(
                    client_tls(settings)?,
                    crate::USER_AGENT,
                ))
                .map_err(|e| BuildError::Client(e.to_string()))?,
                urls: Box::new(SignalUrls {
                    metrics: settings.metrics_url(),
                    traces: settings.traces_url(),
                    logs: settings.logs_url(),
                }),
            },
            OtlpProtocol::Grpc => {
                let tls = kaas_tls::client_config(client_tls(settings)?)
                    .map_err(|e| BuildError::Client(e.to_string()))?;
                Transport::Grpc(grpc_channel(&settings.endpoint, tls, settings.timeout)?)
            }
        };
        Ok(Self {
            transport,
            headers: settings.headers.clone().into(),
            timeout: settings.timeout,
        })
    }

    /// Sends metrics.
    pub async fn export_metrics(
        &self,
        request: ExportMetricsServiceRequest,
    ) -> Result<(), ExportError> {
        self.export::<_, ExportMetricsServiceResponse>(Signal::Metrics, request)
            .await
    }

    /// Sends spans.
    pub async fn export_traces(
        &self,
        request: ExportTraceServiceRequest,
    ) -> Result<(), ExportError> {
        self.export::<_, ExportTraceServiceResponse>(Signal::Traces, request)
            .await
    }

    /// Sends log records.
    pub async fn export_logs(&self, request: ExportLogsServiceRequest) -> Result<(), ExportError> {
        self.export::<_, ExportLogsServiceResponse>(Signal::Logs, request)
            .await
    }

    async fn export<Req, Resp>(&self, signal: Signal, request: Req) -> Result<(), ExportError>
    where
        Req: Message + Send + Sync + 'static,
        Resp: Message + Default + PartialSuccess + Send + Sync + 'static,
    {
        let response: Resp = match &self.transport {
            Transport::Http { client, urls } => {
                let url = match signal {
                    Signal::Metrics => &urls.metrics,
                    Signal::Traces => &urls.traces,
                    Signal::Logs => &urls.logs,
                };
                self.post(client, url, request.encode_to_vec()).await?
            }
            Transport::Grpc(channel) => self.unary(channel.clone(), signal, request).await?,
        };
        match response.rejected() {
            Some((count, message)) => Err(ExportError(format!(
                "the receiver rejected {count} items: {message}"
            ))),
            None => Ok(()),
        }
    }

    async fn post<Resp: Message + Default>(
        &self,
        client: &reqwest::Client,
        url: &Url,
        body: Vec<u8>,
    ) -> Result<Resp, ExportError> {
        let mut request = client
            .post(url.clone())
            .timeout(self.timeout)
            .header(CONTENT_TYPE, "application/x-protobuf")
            .header(USER_AGENT, crate::USER_AGENT);
        for (name, value) in self.headers.iter() {
            request = request.header(name, value);
        }
        let response =
            request.body(body).send().await.map_err(|e| {
                ExportError(format!("cannot reach {url}: {}", crate::error_chain(&e)))
            })?;
        let status = response.status();
        let body = response.bytes().await.unwrap_or_default();
        if !status.is_success() {
            return Err(ExportError(format!("{url} answered {status}")));
        }
        // An empty or undecodable body is a plain success.
        Ok(Resp::decode(body.as_ref()).unwrap_or_default())
    }

    async fn unary<Req, Resp>(
        &self,
        channel: Channel,
        signal: Signal,
        request: Req,
    ) -> Result<Resp, ExportError>
    where
        Req: Message + Send + Sync + 'static,
        Resp: Message + Default + Send + Sync + 'static,
    {
        let mut grpc = tonic::client::Grpc::new(channel);
        grpc.ready()
            .await
            .map_err(|e| ExportError(format!("the gRPC channel is not ready: {e}")))?;
        let mut call = tonic::Request::new(request);
        call.set_timeout(self.timeout);
        for (name, value) in self.headers.iter() {
            // Header names were validated; gRPC metadata keys are their lowercase form.
            if let (Ok(key), Ok(value)) = (
                MetadataKey::from_bytes(name.as_str().as_bytes()),
                MetadataValue::try_from(value.as_bytes()),
            ) {
                call.metadata_mut().insert(key, value);
            }
        }
        let path = match signal {
            Signal::Metrics => EXPORT_METRICS_PATH,
            Signal::Traces => EXPORT_TRACES_PATH,
            Signal::Logs => EXPORT_LOGS_PATH,
        };
        let codec = tonic_prost::ProstCodec::<Req, Resp>::default();
        grpc.unary(call, PathAndQuery::from_static(path), codec)
            .await
            .map(tonic::Response::into_inner)
            .map_err(|status| {
                ExportError(format!(
                    "gRPC status {:?}: {}",
                    status.code(),
                    status.message()
                ))
            })
    }
}

fn read(flag: &'static str, path: &std::path::Path) -> Result<Vec<u8>, BuildError> {
    std::fs::read(path).map_err(|source| BuildError::Read {
        flag,
        path: path.display().to_string(),
        source,
    })
}

fn certificates(
    flag: &'static str,
    path: &std::path::Path,
) -> Result<Vec<CertificateDer<'static>>, BuildError> {
    kaas_tls::certificates(&read(flag, path)?, flag).map_err(|_| BuildError::Pem {
        flag,
        path: path.display().to_string(),
        what: "certificate",
    })
}

/// Trust in the configured CA or the system roots, and the client identity.
fn client_tls(settings: &OtlpSettings) -> Result<ClientTls, BuildError> {
    let trust = match &settings.ca_file {
        Some(path) => {
            let mut roots = RootCertStore::empty();
            for cert in certificates("otlp-ca-file", path)? {
                roots.add(cert)?;
            }
            Trust::Roots(Arc::new(roots))
        }
        None => Trust::System,
    };
    let identity = match &settings.client_identity {
        Some((cert, key)) => {
            let chain = certificates("otlp-client-cert", cert)?;
            let key_pem = read("otlp-client-key", key)?;
            let key = kaas_tls::private_key(&key_pem, "otlp-client-key").map_err(|_| {
                BuildError::Pem {
                    flag: "otlp-client-key",
                    path: key.display().to_string(),
                    what: "private key",
                }
            })?;
            Some((chain, key))
        }
        None => None,
    };
    Ok(ClientTls {
        trust,
        identity,
        ..ClientTls::default()
    })
}

/// A lazily connecting gRPC channel doing TLS with `tls` for https endpoints.
fn grpc_channel(
    endpoint: &Url,
    tls: ClientConfig,
    timeout: Duration,
) -> Result<Channel, BuildError> {
    let connector = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_or_http()
        .enable_http2()
        .build();
    let endpoint =
        tonic::transport::Endpoint::from_shared(endpoint.as_str().trim_end_matches('/').to_owned())
            .map_err(|e| BuildError::Client(e.to_string()))?
            .user_agent(crate::USER_AGENT)
            .map_err(|e| BuildError::Client(e.to_string()))?
            .connect_timeout(timeout)
            .timeout(timeout);
    Ok(endpoint.connect_with_connector_lazy(connector))
}
