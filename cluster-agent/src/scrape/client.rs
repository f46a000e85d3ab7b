//! The HTTP client scrapes go through: hyper's HTTP/1.1 client over rustls, with a
//! fixed read size per connection.
//!
//! The exporters use reqwest; scrapes do not, because of memory. hyper grows a
//! connection's read buffer while a large body streams in (doubling up to about
//! 400 KiB) and the idle keep-alive connection keeps it until the next scrape. With one
//! connection per target that was 8 MiB for 40 targets of 2,500 series (heaptrack),
//! about a fifth of the agent's memory, and reqwest does not expose hyper's read size.
//! Here each connection reads [`READ_BUFFER_BYTES`] at a time.
//!
//! What Prometheus' scrape client does and reqwest did is kept: `Accept-Encoding: gzip`
//! with gzip bodies decoded (the body size limit applies to the decoded body), up to
//! [`MAX_REDIRECTS`] redirects followed (the `Authorization` header is not carried to
//! another scheme, host or port), keep-alive connections, TLS with the pipeline's or the target's
//! settings. Proxies from the environment are not used, as Prometheus does not by
//! default. Errors never contain the URL (its query may hold credentials).

use std::io::Read as _;
use std::time::Duration;

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderValue};
use http_body_util::{BodyExt as _, Empty};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use url::Url;

use super::error::ScrapeError;
use crate::outbound::tls::{TlsError, TlsMaterial, client_config};

/// Bytes read from a target's socket at a time, and so about what an idle keep-alive
/// connection holds: a 200 KB exposition takes seven reads.
pub const READ_BUFFER_BYTES: usize = 32 * 1024;
/// Redirects followed, as Go's HTTP client (which Prometheus scrapes with) follows.
pub const MAX_REDIRECTS: usize = 10;
/// How long an idle connection to a target is kept: longer than the usual scrape
/// intervals (up to a minute), so a target keeps its connection between scrapes.
pub const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(90);

/// A scrape client; cheap to clone, clones share connections.
#[derive(Clone, Debug)]
pub struct ScrapeClient {
    client: Client<HttpsConnector<HttpConnector>, Empty<Bytes>>,
}

impl ScrapeClient {
    /// A client trusting what `material` says (the system roots by default).
    pub fn new(material: &TlsMaterial) -> Result<Self, TlsError> {
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_nodelay(true);
        let mut tls = client_config(material)?;
        // The connector offers the protocols it speaks (HTTP/1.1) itself.
        tls.alpn_protocols.clear();
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http1()
            .wrap_connector(http);
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(POOL_IDLE_TIMEOUT)
            .http1_read_buf_exact_size(READ_BUFFER_BYTES)
            .build(https);
        Ok(Self { client })
    }

    /// GETs `url` with `headers` into `body` (decoded, at most `limit` bytes),
    /// following redirects; returns the response's `Content-Type`.
    pub async fn fetch(
        &self,
        url: &Url,
        mut headers: HeaderMap,
        limit: u64,
        body: &mut Vec<u8>,
    ) -> Result<Option<String>, ScrapeError> {
        headers.insert(header::ACCEPT_ENCODING, HeaderValue::from_static("gzip"));
        let mut url = url.clone();
        let mut redirects = 0;
        let response = loop {
            let uri: http::Uri = url
                .as_str()
                .parse()
                .map_err(|_| ScrapeError::Request("the scrape URL is not a valid URI".into()))?;
            let mut request = http::Request::new(Empty::new());
            *request.uri_mut() = uri;
            *request.headers_mut() = headers.clone();
            let response = self.client.request(request).await.map_err(|e| {
                let chain = kaas_self_telemetry::error_chain(&e);
                if is_untrusted_certificate(&e) {
                    ScrapeError::UntrustedCertificate(chain)
                } else {
                    ScrapeError::Request(chain)
                }
            })?;
            let status = response.status();
            if !status.is_redirection() || status == http::StatusCode::NOT_MODIFIED {
                break response;
            }
            redirects += 1;
            if redirects > MAX_REDIRECTS {
                return Err(ScrapeError::Request(format!(
                    "stopped after {MAX_REDIRECTS} redirects"
                )));
            }
            let next = response
                .headers()
                .get(header::LOCATION)
                .and_then(|location| location.to_str().ok())
                .and_then(|location| url.join(location).ok())
                .ok_or_else(|| {
                    ScrapeError::Request(format!(
                        "redirect (HTTP status {}) without a usable Location",
                        status.as_u16()
                    ))
                })?;
            if next.scheme() != url.scheme()
                || next.host_str() != url.host_str()
                || next.port_or_known_default() != url.port_or_known_default()
            {
                headers.remove(header::AUTHORIZATION);
            }
            url = next;
        };
        if response.status() != http::StatusCode::OK {
            return Err(ScrapeError::Status(response.status().as_u16()));
        }
        let content_type = response
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let gzip = response
            .headers()
            .get(header::CONTENT_ENCODING)
            .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"gzip"));
        let length = response
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        let mut incoming = response.into_body();
        let mut raw = Vec::new();
        let read_into = if gzip { &mut raw } else { &mut *body };
        if let Some(length) = length {
            read_into.reserve(usize::try_from(length.min(limit)).unwrap_or(0));
        }
        while let Some(frame) = incoming.frame().await {
            let frame =
                frame.map_err(|e| ScrapeError::Request(kaas_self_telemetry::error_chain(&e)))?;
            if let Ok(chunk) = frame.into_data() {
                if (read_into.len() + chunk.len()) as u64 > limit {
                    return Err(ScrapeError::BodyTooLarge(limit));
                }
                read_into.extend_from_slice(&chunk);
            }
        }
        if gzip {
            let mut decoder = flate2::read::GzDecoder::new(&raw[..]).take(limit + 1);
            decoder
                .read_to_end(body)
                .map_err(|e| ScrapeError::Request(format!("cannot decode the gzip body: {e}")))?;
            if body.len() as u64 > limit {
                return Err(ScrapeError::BodyTooLarge(limit));
            }
        }
        Ok(content_type)
    }
}

/// Whether the request failed because the server's certificate was not trusted (as
/// opposed to the network or the protocol), found in the error's source chain. The TLS
/// error sits inside `io::Error`s (tokio-rustls wraps it, hyper-rustls wraps that),
/// whose `source` skips what they wrap, so those are opened with `get_ref`.
fn is_untrusted_certificate(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut pending = vec![error];
    while let Some(error) = pending.pop() {
        if let Some(tls) = error.downcast_ref::<rustls::Error>() {
            if matches!(tls, rustls::Error::InvalidCertificate(_)) {
                return true;
            }
        } else if let Some(inner) = error
            .downcast_ref::<std::io::Error>()
            .and_then(std::io::Error::get_ref)
        {
            pending.push(inner);
            continue;
        }
        pending.extend(error.source());
    }
    false
}
