//! The `http` module: one HTTP/1.1 request on a fresh connection (TLS for `https://`),
//! whose status must be one of the expected ones (any 2xx by default).
//!
//! What it measures, as the blackbox exporter's `http` prober: `probe_http_status_code`
//! (0 when no answer arrived), `probe_dns_lookup_time_seconds` (resolving the URL's
//! host), `probe_ssl_earliest_cert_expiry` for `https://` (the served chain), and the
//! whole exchange as `probe_duration_seconds`, body included: the body is read (up to
//! [`MAX_BODY_BYTES`]) so a server that fails half-way through its answer fails the
//! probe. Redirects are not followed: a 3xx is the answer, and succeeds only if it is
//! listed in `expectedStatus`. Each probe opens its own connection and closes it
//! (`Connection: close`), so a broken listener is never hidden by a pooled connection.

use std::pin::pin;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper::client::conn::http1;
use hyper::header::{ACCEPT, CONNECTION, HOST, USER_AGENT};
use hyper::{Method, Request};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};
use url::{Host, Position, Url};

use crate::egress::EgressPolicy;

use super::config::{HttpMethod, HttpProbe, parse_http_url};
use super::tls::TlsClient;
use super::{ProbeFailure, ProbeOutcome, connect, resolve};

/// How much of an answer's body is read before the probe stops reading and counts the
/// answer as complete: health endpoints answer in bytes, and a probe must not download
/// a large page every interval.
pub const MAX_BODY_BYTES: usize = 1 << 20;
/// What probes call themselves, so server logs can tell them from users.
const PROBE_USER_AGENT: &str = concat!("kaas-observer-prober/", env!("CARGO_PKG_VERSION"));

/// An `http` probe ready to run.
#[derive(Debug)]
pub(crate) struct PreparedHttp {
    host: String,
    port: u16,
    tls: Option<TlsClient>,
    method: Method,
    path_and_query: String,
    host_header: String,
    expected_status: Vec<u16>,
}

impl PreparedHttp {
    /// From a validated `module.http`.
    pub(crate) fn new(http: &HttpProbe) -> Result<Self, String> {
        let url: Url = parse_http_url(&http.url)?;
        let host = match url.host() {
            Some(Host::Domain(name)) => name.to_owned(),
            Some(Host::Ipv4(ip)) => ip.to_string(),
            Some(Host::Ipv6(ip)) => ip.to_string(),
            None => return Err("the URL has no host".to_owned()),
        };
        let port = url.port_or_known_default().ok_or("the URL has no port")?;
        let tls = if url.scheme() == "https" {
            let settings = http.tls.clone().unwrap_or_default();
            Some(TlsClient::new(&settings, &host, &[b"http/1.1"])?)
        } else {
            None
        };
        let host_header = match url.port() {
            Some(port) => format!("{}:{port}", url.host_str().unwrap_or_default()),
            None => url.host_str().unwrap_or_default().to_owned(),
        };
        let method = match http.method {
            HttpMethod::Get => Method::GET,
            HttpMethod::Head => Method::HEAD,
            HttpMethod::Post => Method::POST,
            HttpMethod::Options => Method::OPTIONS,
        };
        Ok(Self {
            host,
            port,
            tls,
            method,
            path_and_query: url[Position::BeforePath..Position::AfterQuery].to_owned(),
            host_header,
            expected_status: http.expected_status.clone(),
        })
    }

    /// Whether `status` counts as success.
    fn expected(&self, status: u16) -> bool {
        if self.expected_status.is_empty() {
            (200..300).contains(&status)
        } else {
            self.expected_status.contains(&status)
        }
    }

    /// Connects, sends the request and reads the answer.
    pub(crate) async fn run(
        &self,
        egress: &EgressPolicy,
        outcome: &mut ProbeOutcome,
    ) -> Result<(), ProbeFailure> {
        outcome.http_status_code = Some(0);
        let addresses = resolve(egress, &self.host, self.port, &mut outcome.dns_lookup).await?;
        let stream = connect(&addresses).await?;
        let status = match &self.tls {
            Some(tls) => {
                let stream = tls.handshake(stream, outcome).await?;
                self.exchange(stream, outcome).await?
            }
            None => self.exchange(stream, outcome).await?,
        };
        if self.expected(status) {
            Ok(())
        } else {
            Err(ProbeFailure::UnexpectedStatus(status))
        }
    }

    /// One request and its answer over `io`; returns the status.
    async fn exchange<S>(&self, io: S, outcome: &mut ProbeOutcome) -> Result<u16, ProbeFailure>
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let request = Request::builder()
            .method(self.method.clone())
            .uri(self.path_and_query.as_str())
            .header(HOST, self.host_header.as_str())
            .header(USER_AGENT, PROBE_USER_AGENT)
            .header(ACCEPT, "*/*")
            .header(CONNECTION, "close")
            .body(Empty::<Bytes>::new())
            .map_err(|e| ProbeFailure::Request(e.to_string()))?;
        let (mut sender, connection) = http1::handshake(TokioIo::new(io))
            .await
            .map_err(ProbeFailure::Http)?;
        let response = async {
            let response = sender
                .send_request(request)
                .await
                .map_err(ProbeFailure::Http)?;
            let status = response.status().as_u16();
            outcome.http_status_code = Some(status);
            let mut body = response.into_body();
            let mut read = 0usize;
            while read < MAX_BODY_BYTES {
                let Some(frame) = body.frame().await else {
                    break;
                };
                let frame = frame.map_err(ProbeFailure::Http)?;
                read += frame.data_ref().map_or(0, Bytes::len);
            }
            Ok(status)
        };
        // The connection future moves the bytes; the response future waits for them.
        // Once the connection is done (the server closed it), what it read is already
        // handed over, so the response future can finish alone.
        let mut response = pin!(response);
        let mut connection = pin!(connection);
        let mut connection_done = false;
        loop {
            tokio::select! {
                status = &mut response => return status,
                _ = &mut connection, if !connection_done => connection_done = true,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn prepared(url: &str, expected: &[u16]) -> PreparedHttp {
        PreparedHttp::new(&HttpProbe {
            url: url.to_owned(),
            method: HttpMethod::Get,
            expected_status: expected.to_vec(),
            tls: None,
        })
        .expect("prepared")
    }

    #[test]
    fn requests_name_the_host_and_path_of_the_url() {
        let plain = prepared("http://shop.example/healthz?full=1#frag", &[]);
        assert_eq!(
            (plain.host.as_str(), plain.port, plain.host_header.as_str()),
            ("shop.example", 80, "shop.example")
        );
        assert_eq!(plain.path_and_query, "/healthz?full=1");
        assert!(plain.tls.is_none());
        let v6 = prepared("https://[::1]:8443", &[]);
        assert_eq!(
            (v6.host.as_str(), v6.port, v6.host_header.as_str()),
            ("::1", 8443, "[::1]:8443")
        );
        assert_eq!(v6.path_and_query, "/");
        assert!(v6.tls.is_some());
    }

    #[test]
    fn any_2xx_succeeds_unless_statuses_are_listed() {
        let default = prepared("http://a.example/", &[]);
        assert!(default.expected(200) && default.expected(204) && default.expected(299));
        assert!(!default.expected(301) && !default.expected(401) && !default.expected(199));
        let listed = prepared("http://a.example/", &[200, 401, 403]);
        assert!(listed.expected(401) && listed.expected(403) && listed.expected(200));
        assert!(!listed.expected(204));
    }
}
