//! Why a scrape failed: the one error the fetch ([`super::client`]), the agent's
//! credentials ([`super::credentials`]) and the scrape loop ([`super::scraper`]) report,
//! kept as the target's last error and turning `up` to 0.

use super::exposition::ParseError;

/// Why a scrape failed.
#[derive(Debug, thiserror::Error)]
pub enum ScrapeError {
    /// The request failed (connection, timeout).
    #[error("request failed: {0}")]
    Request(String),
    /// Not 200.
    #[error("server returned HTTP status {0}")]
    Status(u16),
    /// Too large.
    #[error("body size limit of {0} bytes exceeded")]
    BodyTooLarge(u64),
    /// Unparsable.
    #[error("{0}")]
    Parse(#[from] ParseError),
    /// A series appears twice.
    #[error("duplicate series {0:?} in one scrape")]
    Duplicate(String),
    /// Too many samples (the scrape stops writing at the first one over the limit).
    #[error("sample_limit exceeded: more than {0} samples after metric relabeling")]
    SampleLimit(u32),
    /// A label limit.
    #[error("{0}")]
    LabelLimit(String),
    /// The target is not where the agent's credentials are bound to.
    #[error("{0}")]
    CredentialsWithheld(String),
    /// The target's TLS certificate is not trusted.
    #[error("the server's certificate is not trusted: {0}")]
    UntrustedCertificate(String),
}
