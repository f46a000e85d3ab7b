//! The one way the project builds an HTTP client (feature `reqwest`): reqwest on a
//! rustls configuration from [`client_config`], so what an HTTP client trusts is
//! decided where every other outbound connection's trust is, and no client falls back
//! to reqwest's own root store or provider.
//!
//! The client always offers HTTP/2 and HTTP/1.1 ([`http_alpn`]); the caller chooses
//! whom it trusts (the observer's clients: [`system_roots_and`](crate::system_roots_and) a CA file), its
//! user agent and its timeouts.

use std::time::Duration;

use crate::{ClientTls, TlsError, client_config, http_alpn};

/// What an HTTP client is built from ([`http_client`]).
#[derive(Debug)]
pub struct HttpClientSettings {
    /// Trust, verify name and client identity; its ALPN list is replaced by
    /// [`http_alpn`].
    pub tls: ClientTls,
    /// The `User-Agent` of every request, e.g. `kaas-observer/1.2.3`.
    pub user_agent: String,
    /// How long a whole request may take; `None`: no limit.
    pub timeout: Option<Duration>,
    /// How long connecting may take; `None`: no limit of its own.
    pub connect_timeout: Option<Duration>,
}

impl HttpClientSettings {
    /// Settings trusting `tls`, sending `user_agent`, without timeouts.
    pub fn new(tls: ClientTls, user_agent: impl Into<String>) -> Self {
        Self {
            tls,
            user_agent: user_agent.into(),
            timeout: None,
            connect_timeout: None,
        }
    }
}

/// Why an HTTP client cannot be built.
#[derive(Debug, thiserror::Error)]
pub enum HttpClientError {
    /// The TLS configuration cannot be built.
    #[error(transparent)]
    Tls(#[from] TlsError),
    /// reqwest refused the settings.
    #[error("cannot build the HTTP client: {0}")]
    Build(#[source] reqwest::Error),
}

/// An HTTP client with `settings`; connects lazily.
pub fn http_client(settings: HttpClientSettings) -> Result<reqwest::Client, HttpClientError> {
    let HttpClientSettings {
        mut tls,
        user_agent,
        timeout,
        connect_timeout,
    } = settings;
    tls.alpn = http_alpn();
    let mut builder = reqwest::Client::builder()
        .use_preconfigured_tls(client_config(tls)?)
        .user_agent(user_agent);
    if let Some(timeout) = timeout {
        builder = builder.timeout(timeout);
    }
    if let Some(timeout) = connect_timeout {
        builder = builder.connect_timeout(timeout);
    }
    builder.build().map_err(HttpClientError::Build)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builds_a_client_with_every_kind_of_trust() {
        for trust in [crate::Trust::System, crate::Trust::AnyServer] {
            let settings = HttpClientSettings {
                timeout: Some(Duration::from_secs(1)),
                connect_timeout: Some(Duration::from_secs(1)),
                ..HttpClientSettings::new(
                    ClientTls {
                        trust,
                        ..ClientTls::default()
                    },
                    "kaas-test/0",
                )
            };
            assert!(http_client(settings).is_ok());
        }
    }
}
