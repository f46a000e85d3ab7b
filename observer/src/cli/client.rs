//! The command line's REST client: one [`ApiClient`] per invocation, bearer token on
//! every request, JSON in and out, and errors a person can act on ([`ClientError`]).
//!
//! TLS is rustls with the ring provider (installed as the process default, as the
//! cluster-agent does), verifying the server with the platform's roots or `--ca-file`.

use std::path::Path;
use std::time::Duration;

use kaas_tls::http::{HttpClientSettings, http_client};
use reqwest::{Method, StatusCode};
use serde::Serialize;
use serde::de::DeserializeOwned;
use url::Url;

use crate::api::model::{ErrorBody, FieldProblem};

/// Default `--server`: an observer on this machine with its default listen address.
pub const DEFAULT_SERVER: &str = "http://127.0.0.1:8080";
/// How long one request may take. Listing a few hundred clusters with their reports is
/// well under a second; 30s only trips on an observer that hangs.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// How long connecting may take; an unreachable observer should fail fast.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Why a request failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// `--server` is not a usable URL.
    #[error("--server {url:?} is not an http(s) URL: {reason}")]
    BadServer {
        /// What was given.
        url: String,
        /// Why it is refused.
        reason: String,
    },
    /// `--ca-file` cannot be used.
    #[error("cannot use --ca-file {path}: {reason}")]
    CaFile {
        /// The file.
        path: String,
        /// Why.
        reason: String,
    },
    /// No connection (refused, DNS, TLS, timeout).
    #[error("cannot reach the observer at {url}: {reason}")]
    Unreachable {
        /// The server URL.
        url: String,
        /// What failed, with its causes.
        reason: String,
    },
    /// 401 with a token.
    #[error(
        "the token was refused by the observer at {url} (401): check --token or KAAS_OBSERVER_TOKEN"
    )]
    TokenRefused {
        /// The server URL.
        url: String,
    },
    /// 401 without a token.
    #[error("the observer at {url} needs a token: pass --token or set KAAS_OBSERVER_TOKEN")]
    TokenMissing {
        /// The server URL.
        url: String,
    },
    /// Any other error answer; `fields` lists field errors of a 422.
    #[error("{message} ({status})")]
    Api {
        /// The HTTP status.
        status: u16,
        /// The observer's reason.
        message: String,
        /// Every invalid field, for 422 answers.
        fields: Vec<FieldProblem>,
    },
    /// A success answer that could not be read.
    #[error("unexpected answer from the observer ({status}): {reason}")]
    BadAnswer {
        /// The HTTP status.
        status: u16,
        /// Why it could not be read.
        reason: String,
    },
}

/// A client for one observer.
#[derive(Debug, Clone)]
pub struct ApiClient {
    base: Url,
    token: Option<String>,
    http: reqwest::Client,
}

impl ApiClient {
    /// A client for `server` (e.g. `http://127.0.0.1:8080`), sending `token` if given.
    pub fn new(
        server: &str,
        token: Option<String>,
        ca_file: Option<&Path>,
    ) -> Result<Self, ClientError> {
        let bad = |reason: String| ClientError::BadServer {
            url: server.to_owned(),
            reason,
        };
        let mut base = Url::parse(server).map_err(|e| bad(e.to_string()))?;
        if !matches!(base.scheme(), "http" | "https") || !base.has_host() {
            return Err(bad(
                "expected http://HOST:PORT or https://HOST:PORT".to_owned()
            ));
        }
        if !base.path().ends_with('/') {
            let path = format!("{}/", base.path());
            base.set_path(&path);
        }
        let trust = match ca_file {
            Some(path) => {
                let ca_error = |reason: String| ClientError::CaFile {
                    path: path.display().to_string(),
                    reason,
                };
                let pem = std::fs::read(path).map_err(|e| ca_error(e.to_string()))?;
                kaas_tls::system_roots_and(&pem, "--ca-file")
                    .map_err(|e| ca_error(e.to_string()))?
            }
            None => kaas_tls::Trust::System,
        };
        let http = http_client(HttpClientSettings {
            timeout: Some(REQUEST_TIMEOUT),
            connect_timeout: Some(CONNECT_TIMEOUT),
            ..HttpClientSettings::new(
                kaas_tls::ClientTls {
                    trust,
                    ..kaas_tls::ClientTls::default()
                },
                concat!("kaas-observer-cli/", env!("CARGO_PKG_VERSION")),
            )
        })
        .map_err(|e| ClientError::Unreachable {
            url: server.to_owned(),
            reason: kaas_self_telemetry::error_chain(&e),
        })?;
        Ok(Self {
            base,
            token: token.filter(|t| !t.is_empty()),
            http,
        })
    }

    /// The server URL as given.
    pub fn server(&self) -> &str {
        self.base.as_str().trim_end_matches('/')
    }

    /// Sends a request to the path made of `path`'s segments (each percent-encoded) and
    /// reads the JSON answer.
    pub async fn call<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &[&str],
        query: &[(&str, String)],
        body: Option<&dyn ErasedSerialize>,
    ) -> Result<T, ClientError> {
        let (status, bytes) = self.send(method, path, query, body).await?;
        serde_json::from_slice(&bytes).map_err(|e| ClientError::BadAnswer {
            status: status.as_u16(),
            reason: e.to_string(),
        })
    }

    /// Sends a request whose answer has no body (204).
    pub async fn call_empty(
        &self,
        method: Method,
        path: &[&str],
        query: &[(&str, String)],
    ) -> Result<(), ClientError> {
        self.send(method, path, query, None).await.map(|_| ())
    }

    async fn send(
        &self,
        method: Method,
        path: &[&str],
        query: &[(&str, String)],
        body: Option<&dyn ErasedSerialize>,
    ) -> Result<(StatusCode, Vec<u8>), ClientError> {
        let mut url = self.base.clone();
        url.path_segments_mut()
            .map_err(|()| ClientError::BadServer {
                url: self.server().to_owned(),
                reason: "cannot be a base URL".to_owned(),
            })?
            .pop_if_empty()
            .extend(path);
        if !query.is_empty() {
            url.query_pairs_mut()
                .extend_pairs(query.iter().map(|(k, v)| (*k, v.as_str())));
        }
        let mut request = self.http.request(method, url);
        if let Some(token) = &self.token {
            request = request.bearer_auth(token);
        }
        if let Some(body) = body {
            let json = body.to_json().map_err(|e| ClientError::BadAnswer {
                status: 0,
                reason: format!("cannot encode the request: {e}"),
            })?;
            request = request.json(&json);
        }
        let unreachable = |e: reqwest::Error| ClientError::Unreachable {
            url: self.server().to_owned(),
            reason: kaas_self_telemetry::error_chain(&e),
        };
        let response = request.send().await.map_err(unreachable)?;
        let status = response.status();
        let bytes = response.bytes().await.map_err(unreachable)?.to_vec();
        if status.is_success() {
            return Ok((status, bytes));
        }
        if status == StatusCode::UNAUTHORIZED {
            let url = self.server().to_owned();
            return Err(if self.token.is_some() {
                ClientError::TokenRefused { url }
            } else {
                ClientError::TokenMissing { url }
            });
        }
        let (message, fields) = match serde_json::from_slice::<ErrorBody>(&bytes) {
            Ok(body) => (body.error, body.fields),
            Err(_) => (
                status
                    .canonical_reason()
                    .unwrap_or("error")
                    .to_ascii_lowercase(),
                Vec::new(),
            ),
        };
        Err(ClientError::Api {
            status: status.as_u16(),
            message,
            fields,
        })
    }
}

/// A request body: anything serializable, behind a trait object so `call` stays simple.
pub trait ErasedSerialize {
    /// The body as JSON.
    fn to_json(&self) -> Result<serde_json::Value, serde_json::Error>;
}

impl<T: Serialize> ErasedSerialize for T {
    fn to_json(&self) -> Result<serde_json::Value, serde_json::Error> {
        serde_json::to_value(self)
    }
}
