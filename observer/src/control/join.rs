//! `Join`: an unauthenticated caller trades a single-use join token and a CSR for an
//! agent certificate (see the module documentation of [`crate::control`]).
//!
//! # Hostile callers
//!
//! Anyone who reaches the control port can call `Join`, so what it costs them and what
//! it leaves behind is bounded before anything else happens:
//!
//! 1. **Rate limit per source address** ([`JoinRateLimiter`]): a token bucket per IPv4
//!    address or IPv6 /64, [`DEFAULT_JOIN_RATE_PER_SECOND`] with bursts of
//!    [`DEFAULT_JOIN_BURST`], in a map of at most [`DEFAULT_JOIN_TRACKED_ADDRESSES`]
//!    entries. Beyond it: `RESOURCE_EXHAUSTED` with the time to wait. Many agents behind
//!    one NAT address, or a benchmark joining thousands of agents from 127.0.0.1, raise
//!    it with `observer serve --join-rate-limit` / `--join-burst`.
//! 2. **Field sizes** ([`MAX_JOIN_TOKEN_LEN`], [`MAX_CSR_PEM_LEN`],
//!    [`MAX_JOIN_TEXT_FIELD_LEN`]) and the instance name's syntax: `INVALID_ARGUMENT`.
//! 3. **The token is read, not written** ([`Store::check_join_token`]): unknown, expired
//!    and used tokens never take the store's single writer. Only for a valid token is
//!    the CSR checked and signed, and then the token is redeemed and the certificate
//!    recorded in one short transaction.
//! 4. **Logs**: every field the caller chose is logged through [`loggable`], truncated
//!    to [`MAX_LOGGED_FIELD_CHARS`] and escaped, never the token.
//!
//! Every refusal is counted by reason in `kaas_observer_join_failures_total` (a fixed
//! set of labels, [`JoinFailure`]).

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use kaas_pipeline::names::check_instance_name;
use kaas_proto::control::v1::{JoinRequest, JoinResponse};
use tonic::Status;

use crate::identity::{ClusterCa, DEFAULT_INSTANCE};
use crate::internal_events::{JoinMetrics, JoinRefusal, JoinRefused};
use crate::store::certificates::{JoinTokenCheck, NewAgentCertificate, csr_sha256};
use crate::store::{Cluster, RedeemError, Store, StoreError, now_ms};

/// Joins per second one source address may make on average: an onboarding wave of 300
/// clusters a minute behind one NAT address passes, while one address cannot make the
/// observer verify CSRs and read tokens at network speed.
pub const DEFAULT_JOIN_RATE_PER_SECOND: f64 = 5.0;
/// Joins one source address may make at once before the rate applies: an agent's
/// retries and a small batch of clusters installed together.
pub const DEFAULT_JOIN_BURST: u32 = 20;
/// Source addresses whose budgets are remembered: far more than join at once in any
/// real onboarding, and a few hundred KiB at most. When it is full, the fullest
/// (idle) budgets are forgotten first, then the least recently used.
pub const DEFAULT_JOIN_TRACKED_ADDRESSES: usize = 10_000;
/// Longest join token accepted; the observer's are `kjt_` and 43 characters.
pub const MAX_JOIN_TOKEN_LEN: usize = 128;
/// Longest CSR accepted: an ECDSA request is under 1 KiB, an RSA-4096 one under 4 KiB.
pub const MAX_CSR_PEM_LEN: usize = 16 * 1024;
/// Longest agent instance id or version accepted (a pod UID is 36 characters).
pub const MAX_JOIN_TEXT_FIELD_LEN: usize = 256;
/// How much of a caller-chosen field a log line shows.
pub const MAX_LOGGED_FIELD_CHARS: usize = 64;

/// How `Join` is limited; see the module documentation.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct JoinLimits {
    /// Average joins per second per source address; `0` disables the limit.
    pub rate_per_second: f64,
    /// Joins at once per source address.
    pub burst: u32,
    /// Source addresses remembered at most.
    pub tracked_addresses: usize,
}

impl Default for JoinLimits {
    fn default() -> Self {
        Self {
            rate_per_second: DEFAULT_JOIN_RATE_PER_SECOND,
            burst: DEFAULT_JOIN_BURST,
            tracked_addresses: DEFAULT_JOIN_TRACKED_ADDRESSES,
        }
    }
}

/// The refusal a redeem error is counted as.
fn refusal(error: &RedeemError) -> JoinRefusal {
    match error {
        RedeemError::Unknown => JoinRefusal::UnknownToken,
        RedeemError::Expired => JoinRefusal::ExpiredToken,
        RedeemError::AlreadyUsed => JoinRefusal::UsedToken,
        RedeemError::ClusterGone => JoinRefusal::ClusterGone,
    }
}

/// `text` fit for a log line: at most [`MAX_LOGGED_FIELD_CHARS`] characters, control
/// and non-ASCII characters escaped, `…` marking a cut. A caller cannot forge log lines
/// or fill the log with a megabyte field.
pub fn loggable(text: &str) -> String {
    let mut shown: String = text
        .chars()
        .take(MAX_LOGGED_FIELD_CHARS)
        .flat_map(char::escape_default)
        .collect();
    if text.chars().nth(MAX_LOGGED_FIELD_CHARS).is_some() {
        shown.push('…');
    }
    shown
}

/// The key a source address is limited under: an IPv4 address, or the /64 an IPv6
/// address belongs to (one host usually holds a whole /64).
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
enum AddressKey {
    V4(u32),
    V6Prefix(u64),
    /// No address known (a listener that does not tell): one shared budget.
    Unknown,
}

impl AddressKey {
    fn of(address: Option<IpAddr>) -> Self {
        match address.map(|ip| ip.to_canonical()) {
            Some(IpAddr::V4(ip)) => Self::V4(u32::from(ip)),
            Some(IpAddr::V6(ip)) => Self::V6Prefix((u128::from(ip) >> 64) as u64),
            None => Self::Unknown,
        }
    }
}

#[derive(Clone, Copy, Debug)]
struct Bucket {
    tokens: f64,
    updated: Instant,
}

/// Token buckets per source address (see the module documentation).
#[derive(Debug)]
pub struct JoinRateLimiter {
    limits: JoinLimits,
    buckets: Mutex<HashMap<AddressKey, Bucket>>,
}

impl JoinRateLimiter {
    /// A limiter with `limits`.
    pub fn new(limits: JoinLimits) -> Self {
        Self {
            limits,
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Takes one join from `address`'s budget at `now`, or says how long to wait.
    pub fn take(&self, address: Option<IpAddr>, now: Instant) -> Result<(), Duration> {
        let JoinLimits {
            rate_per_second: rate,
            burst,
            tracked_addresses,
        } = self.limits;
        if rate <= 0.0 {
            return Ok(());
        }
        let burst = f64::from(burst.max(1));
        let key = AddressKey::of(address);
        let mut buckets = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        let refilled = |bucket: &Bucket| {
            let elapsed = now.saturating_duration_since(bucket.updated).as_secs_f64();
            (bucket.tokens + elapsed * rate).min(burst)
        };
        if !buckets.contains_key(&key) && buckets.len() >= tracked_addresses.max(1) {
            // A full budget is the same as none: forget those first.
            buckets.retain(|_, bucket| refilled(bucket) < burst);
            if buckets.len() >= tracked_addresses.max(1)
                && let Some(oldest) = buckets
                    .iter()
                    .min_by_key(|(_, bucket)| bucket.updated)
                    .map(|(key, _)| *key)
            {
                buckets.remove(&oldest);
            }
        }
        let bucket = buckets.entry(key).or_insert(Bucket {
            tokens: burst,
            updated: now,
        });
        let tokens = refilled(bucket);
        bucket.updated = now;
        if tokens >= 1.0 {
            bucket.tokens = tokens - 1.0;
            Ok(())
        } else {
            bucket.tokens = tokens;
            Err(Duration::from_secs_f64((1.0 - tokens) / rate))
        }
    }

    #[cfg(test)]
    fn tracked(&self) -> usize {
        self.buckets.lock().map(|b| b.len()).unwrap_or_default()
    }
}

/// What `Join` needs.
pub(super) struct Joiner {
    pub(super) store: Store,
    pub(super) ca: Arc<ClusterCa>,
    pub(super) validity: Duration,
    pub(super) limiter: JoinRateLimiter,
    pub(super) metrics: Arc<JoinMetrics>,
}

impl Joiner {
    /// Serves one `Join` from `remote`.
    pub(super) async fn join(
        &self,
        remote: Option<SocketAddr>,
        request: JoinRequest,
    ) -> Result<JoinResponse, Status> {
        let peer = remote.map_or_else(|| "unknown".to_owned(), |a| a.ip().to_string());
        if let Err(wait) = self.limiter.take(remote.map(|a| a.ip()), Instant::now()) {
            JoinRefused {
                reason: JoinRefusal::RateLimited,
            }
            .emit(&self.metrics);
            tracing::debug!(%peer, "join refused: rate limit");
            return Err(Status::resource_exhausted(format!(
                "too many join attempts from this address; retry in {} s",
                wait.as_secs().max(1)
            )));
        }
        let instance = self.check_fields(&request, &peer)?;
        let csr_hash = csr_sha256(&request.csr_pem);
        let check = self
            .store
            .check_join_token(&request.join_token, &csr_hash, now_ms())
            .await
            .map_err(|error| self.unavailable(error))?;
        let cluster = match check {
            JoinTokenCheck::Redeemable(cluster) => cluster,
            JoinTokenCheck::Answered {
                cluster,
                certificate_pem,
                instance,
                not_after_ms,
            } => {
                tracing::info!(cluster = %cluster.id, instance = %instance, %peer, "join repeated with the same request; answered again");
                return Ok(self.response(cluster, certificate_pem, instance, not_after_ms));
            }
            JoinTokenCheck::Refused(reason) => return Err(self.refused(&reason, &request, &peer)),
        };
        let signed = self
            .ca
            .sign_agent_csr(&cluster.id, &instance, &request.csr_pem, self.validity)
            .map_err(|error| {
                JoinRefused {
                    reason: JoinRefusal::Malformed,
                }
                .emit(&self.metrics);
                Status::invalid_argument(error.to_string())
            })?;
        let certificate = NewAgentCertificate {
            serial_hex: &signed.serial_hex,
            pem: &signed.pem,
            instance: &instance,
            not_after_ms: signed.not_after_ms,
        };
        let redeemed = self
            .store
            .redeem_join_token(&request.join_token, &csr_hash, certificate, now_ms())
            .await
            .map_err(|error| self.unavailable(error))?;
        match redeemed {
            Ok(cluster) => {
                tracing::info!(
                    cluster = %cluster.id,
                    instance = %instance,
                    serial = %signed.serial_hex,
                    agent = %loggable(&request.agent_instance_id),
                    version = %loggable(&request.agent_version),
                    %peer,
                    "agent joined"
                );
                Ok(self.response(cluster, signed.pem, instance, signed.not_after_ms))
            }
            // The same request racing itself (a retry overtaking its original): the
            // winner's answer is the answer.
            Err(RedeemError::AlreadyUsed) => match self
                .store
                .check_join_token(&request.join_token, &csr_hash, now_ms())
                .await
                .map_err(|error| self.unavailable(error))?
            {
                JoinTokenCheck::Answered {
                    cluster,
                    certificate_pem,
                    instance,
                    not_after_ms,
                } => Ok(self.response(cluster, certificate_pem, instance, not_after_ms)),
                _ => Err(self.refused(&RedeemError::AlreadyUsed, &request, &peer)),
            },
            Err(reason) => Err(self.refused(&reason, &request, &peer)),
        }
    }

    /// Checks the sizes of the caller's fields and returns the instance the
    /// certificate is for.
    fn check_fields(&self, request: &JoinRequest, peer: &str) -> Result<String, Status> {
        let too_long = [
            ("join_token", request.join_token.len(), MAX_JOIN_TOKEN_LEN),
            ("csr_pem", request.csr_pem.len(), MAX_CSR_PEM_LEN),
            (
                "agent_instance_id",
                request.agent_instance_id.len(),
                MAX_JOIN_TEXT_FIELD_LEN,
            ),
            (
                "agent_version",
                request.agent_version.len(),
                MAX_JOIN_TEXT_FIELD_LEN,
            ),
        ]
        .into_iter()
        .find(|(_, len, max)| len > max);
        let problem = match too_long {
            Some((field, len, max)) => Some(format!("{field}: {len} bytes, at most {max}")),
            None if request.instance_name.is_empty() => None,
            None => check_instance_name(&request.instance_name)
                .err()
                .map(|reason| format!("instance_name: {reason}")),
        };
        if let Some(problem) = problem {
            JoinRefused {
                reason: JoinRefusal::Malformed,
            }
            .emit(&self.metrics);
            tracing::info!(%peer, problem = %loggable(&problem), "join refused: malformed request");
            return Err(Status::invalid_argument(problem));
        }
        Ok(if request.instance_name.is_empty() {
            DEFAULT_INSTANCE.to_owned()
        } else {
            request.instance_name.clone()
        })
    }

    fn response(
        &self,
        cluster: Cluster,
        certificate_pem: String,
        instance: String,
        not_after_ms: i64,
    ) -> JoinResponse {
        JoinResponse {
            cluster_id: cluster.id,
            certificate_pem,
            ca_bundle_pem: self.ca.bundle_pem(),
            not_after_unix_seconds: not_after_ms / 1000,
            instance_name: instance,
        }
    }

    fn refused(&self, reason: &RedeemError, request: &JoinRequest, peer: &str) -> Status {
        JoinRefused {
            reason: refusal(reason),
        }
        .emit(&self.metrics);
        tracing::warn!(
            %reason,
            agent = %loggable(&request.agent_instance_id),
            %peer,
            "join refused"
        );
        Status::permission_denied(match reason {
            RedeemError::Unknown => "unknown join token",
            RedeemError::Expired => "the join token has expired; mint a new one",
            RedeemError::AlreadyUsed => {
                "the join token was already used; join tokens are single use, mint a new one"
            }
            RedeemError::ClusterGone => "the join token's cluster was deleted",
        })
    }

    fn unavailable(&self, error: StoreError) -> Status {
        JoinRefused {
            reason: JoinRefusal::Unavailable,
        }
        .emit(&self.metrics);
        super::service::unavailable(error)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limiter(rate: f64, burst: u32, tracked: usize) -> JoinRateLimiter {
        JoinRateLimiter::new(JoinLimits {
            rate_per_second: rate,
            burst,
            tracked_addresses: tracked,
        })
    }

    fn v4(last: u8) -> Option<IpAddr> {
        Some(IpAddr::from([127, 0, 0, last]))
    }

    #[test]
    fn an_address_gets_its_burst_then_the_rate() {
        let limiter = limiter(2.0, 3, 10);
        let start = Instant::now();
        for _ in 0..3 {
            limiter.take(v4(1), start).unwrap();
        }
        let wait = limiter.take(v4(1), start).unwrap_err();
        assert!(
            wait > Duration::from_millis(400) && wait <= Duration::from_millis(500),
            "{wait:?}"
        );
        // Another address has its own budget.
        limiter.take(v4(2), start).unwrap();
        // Half a second refills one join at 2 per second.
        limiter
            .take(v4(1), start + Duration::from_millis(500))
            .unwrap();
        assert!(
            limiter
                .take(v4(1), start + Duration::from_millis(500))
                .is_err()
        );
        // A long pause refills up to the burst, not beyond.
        let later = start + Duration::from_secs(60);
        for _ in 0..3 {
            limiter.take(v4(1), later).unwrap();
        }
        assert!(limiter.take(v4(1), later).is_err());
    }

    #[test]
    fn ipv6_addresses_share_the_budget_of_their_64() {
        let limiter = limiter(1.0, 1, 10);
        let now = Instant::now();
        let a: IpAddr = "::1".parse().unwrap();
        let b: IpAddr = "::2".parse().unwrap();
        let mapped: IpAddr = "::ffff:127.0.0.9".parse().unwrap();
        limiter.take(Some(a), now).unwrap();
        assert!(limiter.take(Some(b), now).is_err(), "same /64");
        // An IPv4-mapped address is its IPv4 address.
        limiter.take(Some(mapped), now).unwrap();
        assert!(limiter.take(v4(9), now).is_err());
    }

    #[test]
    fn the_map_of_addresses_stays_bounded() {
        let limiter = limiter(1.0, 2, 4);
        let now = Instant::now();
        for last in 0..=255 {
            let _ = limiter.take(v4(last), now);
            assert!(limiter.tracked() <= 4);
        }
        // Idle (refilled) budgets are forgotten first: the busy ones keep their state.
        let later = now + Duration::from_secs(10);
        limiter.take(v4(255), later).unwrap();
        limiter.take(v4(255), later).unwrap();
        assert!(limiter.take(v4(255), later).is_err());
        assert!(limiter.tracked() <= 4);
    }

    #[test]
    fn a_zero_rate_disables_the_limit() {
        let limiter = limiter(0.0, 1, 1);
        let now = Instant::now();
        for _ in 0..1000 {
            limiter.take(v4(1), now).unwrap();
        }
    }

    #[test]
    fn logged_fields_are_truncated_and_escaped() {
        assert_eq!(loggable("pod-1234"), "pod-1234");
        assert_eq!(
            loggable("a\nfake=line\u{1b}[31m"),
            "a\\nfake=line\\u{1b}[31m"
        );
        let long = "x".repeat(10_000);
        let shown = loggable(&long);
        assert_eq!(shown.chars().count(), MAX_LOGGED_FIELD_CHARS + 1);
        assert!(shown.ends_with('…'));
    }
}
