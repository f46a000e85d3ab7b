//! Whether a failed send is worth repeating, and how long to wait: decided where the
//! failure is seen, as Prometheus' remote-write client does. Network errors, timeouts,
//! 5xx and 429 are retried with exponential backoff ([`super::backoff`]), honouring
//! `Retry-After`; any other 4xx means the backend will never accept the batch, so it is
//! dropped and counted.

use std::time::{Duration, SystemTime};

use crate::internal_events::ErrorReason;

/// Longest `Retry-After` honoured; a backend asking for more is retried after this, so
/// a misconfigured header cannot park a pipeline for hours.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(300);

/// Why a send failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SendError {
    /// Try again later.
    #[error("{reason}")]
    Retryable {
        /// What happened; never contains a secret.
        reason: String,
        /// What the backend asked for with `Retry-After`.
        retry_after: Option<Duration>,
        /// The status condition reason: [`ErrorReason::BackendUnreachable`] for the network and
        /// the backend, `SecretMissing` and friends for credentials.
        condition: ErrorReason,
    },
    /// The backend refused the batch for good.
    #[error("{reason}")]
    Permanent {
        /// What happened; never contains a secret.
        reason: String,
    },
}

impl SendError {
    /// A short machine-readable reason for status conditions.
    pub fn condition_reason(&self) -> ErrorReason {
        match self {
            Self::Retryable { condition, .. } => *condition,
            Self::Permanent { .. } => ErrorReason::DataDropped,
        }
    }
}

/// Classifies an HTTP response status.
pub fn classify(
    status: u16,
    retry_after: Option<&str>,
    body_excerpt: &str,
    now: SystemTime,
) -> Result<(), SendError> {
    match status {
        200..=299 => Ok(()),
        429 | 500..=599 => Err(SendError::Retryable {
            reason: format!("server returned HTTP {status}: {body_excerpt}"),
            retry_after: retry_after.and_then(|value| parse_retry_after(value, now)),
            condition: ErrorReason::BackendUnreachable,
        }),
        _ => Err(SendError::Permanent {
            reason: format!("server returned HTTP {status}: {body_excerpt}"),
        }),
    }
}

/// Reads `Retry-After`: delay seconds or an HTTP date; capped at [`MAX_RETRY_AFTER`].
pub fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    let delay = match value.parse::<u64>() {
        Ok(seconds) => Duration::from_secs(seconds),
        Err(_) => httpdate::parse_http_date(value)
            .ok()?
            .duration_since(now)
            .unwrap_or(Duration::ZERO),
    };
    Some(delay.min(MAX_RETRY_AFTER))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_are_classified_like_prometheus() {
        let now = SystemTime::now();
        assert_eq!(classify(204, None, "", now), Ok(()));
        for status in [429, 500, 503] {
            assert!(matches!(
                classify(status, None, "", now),
                Err(SendError::Retryable { .. })
            ));
        }
        for status in [400, 401, 404, 413] {
            assert!(matches!(
                classify(status, None, "", now),
                Err(SendError::Permanent { .. })
            ));
        }
    }

    #[test]
    fn retry_after_in_seconds_and_as_a_date() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000_000);
        assert_eq!(parse_retry_after("7", now), Some(Duration::from_secs(7)));
        let date = httpdate::fmt_http_date(now + Duration::from_secs(30));
        assert_eq!(parse_retry_after(&date, now), Some(Duration::from_secs(30)));
        assert_eq!(parse_retry_after("86400", now), Some(MAX_RETRY_AFTER));
        assert_eq!(parse_retry_after("soon", now), None);
        let Err(SendError::Retryable { retry_after, .. }) = classify(429, Some("2"), "", now)
        else {
            panic!("429 must be retryable");
        };
        assert_eq!(retry_after, Some(Duration::from_secs(2)));
    }
}
