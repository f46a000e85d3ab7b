//! What every exporter's endpoint shares: the configured headers and credentials,
//! resolved for each request, the TLS material, and an HTTP client rebuilt only when
//! that material changes; plus one POST that classifies the answer for retries and
//! reads at most [`MAX_RESPONSE_BODY`] of it.

use std::time::{Duration, SystemTime};

use kaas_pipeline::output::{Authentication, Header, Tls};
use reqwest::header::{HeaderName, HeaderValue};

use super::auth::{
    AuthError, Credentials, ValueSources, resolve_headers, tls_material, without_url,
};
use super::destination::TargetUrl;
use super::retry::{SendError, classify};
use super::tls::{ClientCache, TlsError, TlsMaterial, http_client};
use crate::internal_events::ErrorReason;

/// How much of an error response body is kept for the error message.
const ERROR_BODY_EXCERPT: usize = 256;
/// The most of an answer's body that is read. The largest answer an exporter reads is
/// a bulk answer, which names every document of a request (a few hundred bytes each
/// with an error, so well under 1 MiB for a request of the sender's default 2,000
/// records); the rest of a longer answer is never read, so a broken or hostile backend
/// cannot make the agent hold an answer of any size.
pub const MAX_RESPONSE_BODY: usize = 8 << 20;

/// An output's settings that make its endpoint: headers, credentials, TLS.
pub trait OutputEndpoint {
    /// The headers, authentication and TLS settings.
    fn endpoint_parts(&self) -> (&[Header], Option<&Authentication>, Option<&Tls>);
}

macro_rules! output_endpoint {
    ($($output:ty),*) => {$(
        impl OutputEndpoint for $output {
            fn endpoint_parts(&self) -> (&[Header], Option<&Authentication>, Option<&Tls>) {
                (&self.headers, self.authentication.as_ref(), self.tls.as_ref())
            }
        }
    )*};
}

output_endpoint!(
    kaas_pipeline::output::RemoteWriteOutput,
    kaas_pipeline::output::OtlpOutput,
    kaas_pipeline::logs::output::LokiOutput,
    kaas_pipeline::logs::output::HttpLogOutput
);

/// One backend endpoint's settings and clients.
#[derive(Debug)]
pub struct Endpoint {
    headers: Vec<Header>,
    tls: Option<Tls>,
    sources: ValueSources,
    credentials: Credentials,
    http: ClientCache<reqwest::Client>,
}

impl Endpoint {
    /// An endpoint with these settings.
    fn new(
        headers: &[Header],
        authentication: Option<&Authentication>,
        tls: Option<&Tls>,
        sources: ValueSources,
    ) -> Result<Self, TlsError> {
        // OAuth2 token requests use a plain client with the system roots.
        let token_client = http_client(&TlsMaterial::default())?;
        Ok(Self {
            headers: headers.to_vec(),
            tls: tls.cloned(),
            credentials: Credentials::new(authentication, token_client, sources.clone()),
            sources,
            http: ClientCache::default(),
        })
    }

    /// The endpoint of an output's settings.
    pub fn for_output(
        output: &impl OutputEndpoint,
        sources: ValueSources,
    ) -> Result<Self, TlsError> {
        let (headers, authentication, tls) = output.endpoint_parts();
        Self::new(headers, authentication, tls, sources)
    }

    /// The TLS settings with their secrets resolved now.
    pub fn tls_material(&self) -> Result<TlsMaterial, AuthError> {
        tls_material(self.tls.as_ref(), &self.sources)
    }

    /// The configured headers and `Authorization`, resolved now.
    pub async fn request_headers(&self) -> Result<Vec<(HeaderName, HeaderValue)>, AuthError> {
        let mut headers = resolve_headers(&self.headers, &self.sources)?;
        if let Some(authorization) = self.credentials.authorization().await? {
            headers.push((reqwest::header::AUTHORIZATION, authorization));
        }
        Ok(headers)
    }

    /// POSTs `body` to `target`'s current URL with the protocol's headers plus the
    /// endpoint's; the answer's body on success, a classified error otherwise. The span
    /// names the host of a URL written in place only, never one read from a Secret.
    #[tracing::instrument(name = "export", level = "debug", skip_all, err(level = "debug"), fields(otel.kind = "client", server.address = target.shown_host()))]
    pub async fn post(
        &self,
        target: &TargetUrl,
        timeout: Duration,
        protocol_headers: &[(HeaderName, HeaderValue)],
        body: Vec<u8>,
    ) -> Result<bytes::Bytes, SendError> {
        let url = target.current()?;
        let material = self.tls_material()?;
        let client = self
            .http
            .get(&material, http_client)
            .map_err(|e| AuthError::Tls(e.to_string()))?;
        let mut request = client.post(url).timeout(timeout);
        for (name, value) in protocol_headers
            .iter()
            .cloned()
            .chain(self.request_headers().await?)
        {
            request = request.header(name, value);
        }
        let response = request
            .body(body)
            .send()
            .await
            .map_err(|e| SendError::Retryable {
                reason: format!("sending to the backend failed: {}", without_url(&e)),
                retry_after: None,
                condition: ErrorReason::BackendUnreachable,
            })?;
        let status = response.status().as_u16();
        let retry_after = response
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let body = read_bounded(response, MAX_RESPONSE_BODY).await;
        let excerpt = if (200..300).contains(&status) {
            String::new()
        } else {
            String::from_utf8_lossy(&body[..body.len().min(ERROR_BODY_EXCERPT)])
                .trim()
                .to_owned()
        };
        classify(status, retry_after.as_deref(), &excerpt, SystemTime::now())?;
        Ok(body)
    }
}

/// The first `max` bytes of a response's body (what arrived of it if reading fails).
async fn read_bounded(mut response: reqwest::Response, max: usize) -> bytes::Bytes {
    let mut body = bytes::BytesMut::new();
    while body.len() < max {
        match response.chunk().await {
            Ok(Some(chunk)) => {
                let room = max - body.len();
                body.extend_from_slice(&chunk[..chunk.len().min(room)]);
            }
            Ok(None) | Err(_) => break,
        }
    }
    body.freeze()
}
