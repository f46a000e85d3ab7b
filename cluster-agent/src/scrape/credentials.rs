//! The agent's own credentials on a scrape (today: its service-account token on kubelet
//! scrapes), bound to the exact target discovery produced.
//!
//! A [`ScrapeCredentials`] names the one scheme, host, port and path its token may go
//! to. The scraper asks it for the `Authorization` header with the URL it is about to
//! fetch; for any other URL (relabeling moved the target, or a configuration that never
//! passed validation) it refuses, and the target is not scraped at all: no request
//! leaves, with or without the token. Redirects never carry the token to another
//! scheme, host or port ([`super::client`]).

use std::path::PathBuf;

use http::HeaderValue;
use url::Url;

use super::error::ScrapeError;
use crate::internal_events::ErrorReason;

/// A bearer token file and the only place its token may be sent.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ScrapeCredentials {
    /// The token file, read for every scrape so rotated (projected) service-account
    /// tokens are picked up.
    pub token_file: PathBuf,
    /// The scheme, host, port and path discovery produced for the target.
    pub bound_to: Url,
    /// The pipeline's condition reason when the target's certificate is not trusted.
    pub untrusted_certificate_reason: ErrorReason,
    /// What the condition then says would fix it.
    pub untrusted_certificate_advice: &'static str,
}

impl ScrapeCredentials {
    /// The `Authorization` header for fetching `url`: only when `url` is the target the
    /// credentials are bound to.
    pub fn authorization(&self, url: &Url) -> Result<HeaderValue, ScrapeError> {
        if !same_destination(&self.bound_to, url) {
            return Err(ScrapeError::CredentialsWithheld(format!(
                "the agent's credentials are bound to {}, the target discovery found, but \
                 this target points to {}; it is not scraped",
                destination(&self.bound_to),
                destination(url)
            )));
        }
        let token = std::fs::read_to_string(&self.token_file).map_err(|e| {
            ScrapeError::Request(format!(
                "cannot read the bearer token file {}: {}",
                self.token_file.display(),
                e.kind()
            ))
        })?;
        let mut value =
            HeaderValue::from_str(&format!("Bearer {}", token.trim())).map_err(|_| {
                ScrapeError::Request("the bearer token file holds an invalid token".into())
            })?;
        value.set_sensitive(true);
        Ok(value)
    }
}

/// Whether two URLs name the same scheme, host, port and path; the query may differ
/// (`__param_*` labels add to it).
pub fn same_destination(a: &Url, b: &Url) -> bool {
    a.scheme() == b.scheme()
        && a.host_str() == b.host_str()
        && a.port_or_known_default() == b.port_or_known_default()
        && a.path() == b.path()
}

/// `scheme://host:port/path`, without the query (which may hold credentials).
fn destination(url: &Url) -> String {
    format!(
        "{}://{}:{}{}",
        url.scheme(),
        url.host_str().unwrap_or_default(),
        url.port_or_known_default().unwrap_or_default(),
        url.path()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn credentials(dir: &std::path::Path) -> ScrapeCredentials {
        std::fs::write(dir.join("token"), "agent-token\n").unwrap();
        ScrapeCredentials {
            token_file: dir.join("token"),
            bound_to: Url::parse("https://10.0.0.7:10250/metrics/cadvisor").unwrap(),
            untrusted_certificate_reason: ErrorReason::KubeletCertificateUntrusted,
            untrusted_certificate_advice: "fix it",
        }
    }

    #[test]
    fn the_token_goes_only_where_discovery_pointed() {
        let dir = tempfile::tempdir().unwrap();
        let credentials = credentials(dir.path());
        let header = credentials
            .authorization(&Url::parse("https://10.0.0.7:10250/metrics/cadvisor?x=1").unwrap())
            .unwrap();
        assert_eq!(header.to_str().unwrap(), "Bearer agent-token");
        assert!(header.is_sensitive());
        for elsewhere in [
            "http://10.0.0.7:10250/metrics/cadvisor",
            "https://10.0.0.8:10250/metrics/cadvisor",
            "https://10.0.0.7:10255/metrics/cadvisor",
            "https://10.0.0.7:10250/pods",
            "https://10.0.0.7/metrics/cadvisor",
        ] {
            let refused = credentials
                .authorization(&Url::parse(elsewhere).unwrap())
                .unwrap_err();
            assert!(
                matches!(&refused, ScrapeError::CredentialsWithheld(reason) if reason.contains("bound to https://10.0.0.7:10250/metrics/cadvisor")),
                "{elsewhere}: {refused}"
            );
        }
    }
}
