//! The way to Thanos receive: one remote-write 1.0 request per admitted batch, with
//! the tenant in the tenant header the gateway sets (an agent's own headers are never
//! passed on), over TLS trusting the upstream's CA and, when Thanos asks for it,
//! presenting the gateway's client certificate. The way to the central Loki
//! (`--loki-upstream-url`) is the same with a Loki push and `X-Scope-OrgID`.
//!
//! The upstream's answer is passed back so that the agent does what Prometheus'
//! remote-write client does: 2xx delivered, 429 and 5xx retried from its buffer, any
//! other 4xx dropped and counted. A connection failure or timeout is 503 (retried).

use std::time::Duration;

use axum::http::StatusCode;
use kaas_proto::loki;
use kaas_proto::remote_write::{CONTENT_ENCODING, VERSION_HEADER, v1};
use kaas_series::PushedSeries;
use prost::Message as _;

/// How long one upstream request may take: Thanos receive answers within its own
/// forward timeout (5s by default) plus replication, and an agent's request timeout
/// (30s by default) must not expire first.
pub const UPSTREAM_TIMEOUT: Duration = Duration::from_secs(20);
/// How long connecting to the upstream may take.
pub const UPSTREAM_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Why the upstream client cannot be built.
#[derive(Debug, thiserror::Error)]
pub enum ForwardError {
    /// The TLS settings or the HTTP client are unusable.
    #[error(transparent)]
    Client(#[from] kaas_tls::http::HttpClientError),
    /// The tenant header is not a header name.
    #[error("{0:?} is not an HTTP header name")]
    Header(String),
}

/// What the upstream said, as the agent is told.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UpstreamAnswer {
    /// The status to answer with.
    pub status: StatusCode,
    /// A short reason for the log and the agent (never the upstream's body in full).
    pub reason: String,
}

/// The upstream's client and where it sends.
#[derive(Clone, Debug)]
pub struct Upstream {
    client: reqwest::Client,
    url: url::Url,
    tenant_header: reqwest::header::HeaderName,
}

/// Most bytes of an upstream error body quoted back.
const MAX_QUOTED_UPSTREAM_BODY: usize = 256;

impl Upstream {
    /// A client for `url` with `tls`, sending the tenant in `tenant_header`.
    pub fn new(
        url: url::Url,
        tls: kaas_tls::ClientTls,
        tenant_header: &str,
    ) -> Result<Self, ForwardError> {
        let tenant_header = reqwest::header::HeaderName::from_bytes(tenant_header.as_bytes())
            .map_err(|_| ForwardError::Header(tenant_header.to_owned()))?;
        let mut settings = kaas_tls::http::HttpClientSettings::new(tls, super::USER_AGENT);
        settings.timeout = Some(UPSTREAM_TIMEOUT);
        settings.connect_timeout = Some(UPSTREAM_CONNECT_TIMEOUT);
        Ok(Self {
            client: kaas_tls::http::http_client(settings)?,
            url,
            tenant_header,
        })
    }

    /// Sends `series` (and `metadata`) as `tenant`.
    pub async fn send(
        &self,
        tenant: &str,
        series: Vec<PushedSeries>,
        metadata: Vec<v1::MetricMetadata>,
    ) -> UpstreamAnswer {
        let headers = [
            (reqwest::header::CONTENT_TYPE.as_str(), v1::CONTENT_TYPE),
            (reqwest::header::CONTENT_ENCODING.as_str(), CONTENT_ENCODING),
            (VERSION_HEADER, v1::VERSION_HEADER_VALUE),
        ];
        self.post(tenant, &encode(series, metadata), &headers).await
    }

    /// Sends a Loki push `request` as `tenant` (an upstream built for Loki, whose
    /// tenant header is `X-Scope-OrgID`).
    pub async fn send_loki(&self, tenant: &str, request: &loki::PushRequest) -> UpstreamAnswer {
        let headers = [
            (reqwest::header::CONTENT_TYPE.as_str(), loki::CONTENT_TYPE),
            (
                reqwest::header::CONTENT_ENCODING.as_str(),
                loki::CONTENT_ENCODING,
            ),
        ];
        self.post(tenant, &request.encode_to_vec(), &headers).await
    }

    /// Posts `raw` snappy compressed with `headers` and the tenant header, and says
    /// what the upstream answered.
    async fn post(&self, tenant: &str, raw: &[u8], headers: &[(&str, &str)]) -> UpstreamAnswer {
        let body = match snap::raw::Encoder::new().compress_vec(raw) {
            Ok(body) => body,
            Err(error) => {
                return UpstreamAnswer {
                    status: StatusCode::INTERNAL_SERVER_ERROR,
                    reason: format!("snappy: {error}"),
                };
            }
        };
        let mut request = self.client.post(self.url.clone());
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let sent = request
            .header(self.tenant_header.clone(), tenant)
            .body(body)
            .send()
            .await;
        let response = match sent {
            Ok(response) => response,
            Err(error) => {
                tracing::warn!(error = %error.without_url(), "the upstream is unreachable");
                return UpstreamAnswer {
                    status: StatusCode::SERVICE_UNAVAILABLE,
                    reason: "the upstream receiver is unreachable".to_owned(),
                };
            }
        };
        let status =
            StatusCode::from_u16(response.status().as_u16()).unwrap_or(StatusCode::BAD_GATEWAY);
        if status.is_success() {
            return UpstreamAnswer {
                status: StatusCode::NO_CONTENT,
                reason: String::new(),
            };
        }
        let text = response.text().await.unwrap_or_default();
        let quoted: String = text.chars().take(MAX_QUOTED_UPSTREAM_BODY).collect();
        UpstreamAnswer {
            status,
            reason: format!("the upstream receiver answered {status}: {}", quoted.trim()),
        }
    }
}

/// A remote-write 1.0 request (uncompressed) of `series`.
pub fn encode(series: Vec<PushedSeries>, metadata: Vec<v1::MetricMetadata>) -> Vec<u8> {
    v1::WriteRequest {
        timeseries: series
            .into_iter()
            .map(|one| v1::TimeSeries {
                labels: one
                    .labels
                    .iter()
                    .map(|l| v1::Label {
                        name: l.name.clone(),
                        value: l.value.clone(),
                    })
                    .collect(),
                samples: one
                    .samples
                    .into_iter()
                    .map(|(timestamp, value)| v1::Sample { value, timestamp })
                    .collect(),
            })
            .collect(),
        metadata,
    }
    .encode_to_vec()
}
