//! Per-tenant ingest limits: active series and samples per second, kept in memory by
//! each gateway replica (the gateway stores nothing; a restart starts from zero).
//!
//! - **Samples per second**: a token bucket per tenant, refilled at the limit and
//!   holding [`BURST_SECONDS`] of it. A request whose samples the bucket cannot pay is
//!   refused whole with 429, which the agent retries with backoff from its buffer: no
//!   sample is lost while the tenant is over its rate, it arrives later.
//! - **Active series**: the series (by a keyed hash of their labels) each tenant sent
//!   within [`ACTIVE_SERIES_WINDOW`]. A series that would take a tenant past its
//!   limit is dropped and counted; the tenant's known series go on. Retrying would not
//!   help, so the request is not refused for it.
//!
//! - **Log bytes per second** (the Loki route, [`LogRateLimiter`]): a token bucket per
//!   tenant over the bytes of its entries (lines and structured metadata, what Loki's
//!   own `ingestion_rate_mb` counts), refusing a push whole with 429 and `Retry-After`
//!   the same way; the node agents keep the lines in their buffers meanwhile.
//!
//! The maps are bounded: at most `max_tenants` tenants (idle ones are forgotten first;
//! when every slot is busy a new tenant is refused) and at most `max_tracked_series`
//! series in all, whatever each tenant's limit says. Limits are per replica: with `n`
//! replicas behind a Service a tenant can send up to `n` times a limit; set the flags
//! to the share of one replica.

use std::collections::HashMap;
use std::collections::hash_map::RandomState;
use std::hash::BuildHasher as _;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use kaas_series::PushedSeries;

/// How long a series counts as active after its last sample: longer than any scrape
/// interval and the agent's longest retry backoff, so a live series is never counted
/// twice, short enough that a tenant's churned series free their slots within the hour.
pub const ACTIVE_SERIES_WINDOW: Duration = Duration::from_secs(15 * 60);
/// How many seconds of its rate a tenant's bucket holds: agents send a batch every
/// few seconds (and catch up after a pause), so a few seconds of burst keep a tenant
/// at its rate from being refused for the shape of its traffic.
pub const BURST_SECONDS: u64 = 5;
/// How long a tenant of the log limiter may stay idle before its slot can go to
/// another tenant when the table is full: long past any agent's retry backoff, so a
/// tenant being refused keeps its (empty) bucket rather than getting a full one back.
pub const LOG_TENANT_IDLE_AFTER: Duration = Duration::from_secs(5 * 60);
/// How often at most a tenant's stale series are swept (sweeping is linear in them).
const SWEEP_INTERVAL: Duration = Duration::from_secs(60);
/// How often at most a tenant at its series limit is swept: often enough that a slot
/// freed by a stale series is found quickly, rarely enough that a tenant sitting at its
/// limit does not make every request linear in its series.
const SWEEP_AT_LIMIT_INTERVAL: Duration = Duration::from_secs(1);

/// The limits every tenant gets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TenantLimits {
    /// Most series a tenant may have active.
    pub max_active_series: usize,
    /// Most samples per second a tenant may send (sustained).
    pub max_samples_per_second: u64,
}

/// Why a request or a series was refused; the `limit` label of the refusal counter.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum LimitKind {
    /// The tenant is over its samples per second.
    SamplesPerSecond,
    /// The series would take the tenant over its active series.
    ActiveSeries,
    /// The gateway tracks `max_tracked_series` already.
    TrackedSeries,
    /// The gateway tracks `max_tenants` busy tenants already.
    Tenants,
    /// The tenant is over its log bytes per second (the Loki route).
    LogBytesPerSecond,
}

impl LimitKind {
    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::SamplesPerSecond => "samples_per_second",
            Self::ActiveSeries => "active_series",
            Self::TrackedSeries => "tracked_series",
            Self::Tenants => "tenants",
            Self::LogBytesPerSecond => "log_bytes_per_second",
        }
    }
}

/// A request refused whole, with how long to wait before retrying.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Refused {
    /// Which limit.
    pub limit: LimitKind,
    /// When retrying can succeed.
    pub retry_after: Duration,
}

/// What passed the limits.
#[derive(Debug, Default, PartialEq)]
pub struct Admitted {
    /// The series to forward.
    pub series: Vec<PushedSeries>,
    /// Series dropped, by the limit that dropped them.
    pub dropped: Vec<(LimitKind, usize)>,
}

/// A token bucket: refilled at `rate` per second up to `capacity`.
struct TokenBucket {
    tokens: f64,
    refilled: Instant,
}

impl TokenBucket {
    /// A full bucket.
    fn full(capacity: f64, now: Instant) -> Self {
        Self {
            tokens: capacity,
            refilled: now,
        }
    }

    /// Takes `amount` at `now`, or says how long until the bucket holds it (at least a
    /// second, at most a minute: `Retry-After` is in whole seconds, and an agent
    /// should look again within a minute).
    fn take(
        &mut self,
        amount: f64,
        rate: f64,
        capacity: f64,
        now: Instant,
    ) -> Result<(), Duration> {
        let elapsed = now.saturating_duration_since(self.refilled).as_secs_f64();
        self.tokens = (self.tokens + elapsed * rate).min(capacity);
        self.refilled = now;
        if amount > self.tokens {
            let missing = amount - self.tokens;
            let wait = if rate > 0.0 { missing / rate } else { 60.0 };
            return Err(Duration::from_secs_f64(wait.clamp(1.0, 60.0)));
        }
        self.tokens -= amount;
        Ok(())
    }
}

struct TenantState {
    /// The bucket of samples.
    bucket: TokenBucket,
    /// Series hash → last seen.
    series: HashMap<u64, Instant>,
    swept: Instant,
    last_active: Instant,
}

struct Tables {
    tenants: HashMap<String, TenantState>,
    tracked: usize,
}

/// The limits of every tenant this replica has seen.
pub struct IngestLimiter {
    limits: TenantLimits,
    max_tenants: usize,
    max_tracked_series: usize,
    hasher: RandomState,
    tables: Mutex<Tables>,
}

impl IngestLimiter {
    /// A limiter with no tenant yet.
    pub fn new(limits: TenantLimits, max_tenants: usize, max_tracked_series: usize) -> Self {
        Self {
            limits,
            max_tenants,
            max_tracked_series,
            hasher: RandomState::new(),
            tables: Mutex::new(Tables {
                tenants: HashMap::new(),
                tracked: 0,
            }),
        }
    }

    /// How many tenants and series are tracked now.
    pub fn tracked(&self) -> (usize, usize) {
        let tables = self.tables.lock().unwrap_or_else(|e| e.into_inner());
        (tables.tenants.len(), tables.tracked)
    }

    /// Applies `tenant`'s limits to a request at `now`.
    pub fn admit(
        &self,
        tenant: &str,
        series: Vec<PushedSeries>,
        now: Instant,
    ) -> Result<Admitted, Refused> {
        let mut guard = self.tables.lock().unwrap_or_else(|e| e.into_inner());
        let tables = &mut *guard;
        if !tables.tenants.contains_key(tenant) {
            self.make_room_for_a_tenant(tables, now)?;
            let capacity = self.bucket_capacity();
            tables.tenants.insert(
                tenant.to_owned(),
                TenantState {
                    bucket: TokenBucket::full(capacity, now),
                    series: HashMap::new(),
                    swept: now,
                    last_active: now,
                },
            );
        }
        let capacity = self.bucket_capacity();
        let rate = self.limits.max_samples_per_second as f64;
        let Some(state) = tables.tenants.get_mut(tenant) else {
            return Err(Refused {
                limit: LimitKind::Tenants,
                retry_after: SWEEP_INTERVAL,
            });
        };
        state.last_active = now;
        let samples: usize = series.iter().map(|s| s.samples.len()).sum();
        (state.bucket)
            .take(samples as f64, rate, capacity, now)
            .map_err(|retry_after| Refused {
                limit: LimitKind::SamplesPerSecond,
                retry_after,
            })?;

        let since_sweep = now.saturating_duration_since(state.swept);
        if since_sweep >= SWEEP_INTERVAL
            || (state.series.len() >= self.limits.max_active_series
                && since_sweep >= SWEEP_AT_LIMIT_INTERVAL)
        {
            let before = state.series.len();
            state
                .series
                .retain(|_, seen| now.saturating_duration_since(*seen) < ACTIVE_SERIES_WINDOW);
            tables.tracked -= before - state.series.len();
            state.swept = now;
        }
        let mut admitted = Admitted::default();
        let (mut over_tenant, mut over_total) = (0, 0);
        for one in series {
            let hash = self.hasher.hash_one(&one.labels);
            if let Some(seen) = state.series.get_mut(&hash) {
                *seen = now;
            } else if state.series.len() >= self.limits.max_active_series {
                over_tenant += 1;
                continue;
            } else if tables.tracked >= self.max_tracked_series {
                over_total += 1;
                continue;
            } else {
                state.series.insert(hash, now);
                tables.tracked += 1;
            }
            admitted.series.push(one);
        }
        for (kind, count) in [
            (LimitKind::ActiveSeries, over_tenant),
            (LimitKind::TrackedSeries, over_total),
        ] {
            if count > 0 {
                admitted.dropped.push((kind, count));
            }
        }
        Ok(admitted)
    }

    fn bucket_capacity(&self) -> f64 {
        (self
            .limits
            .max_samples_per_second
            .saturating_mul(BURST_SECONDS)) as f64
    }

    /// Forgets tenants idle for [`ACTIVE_SERIES_WINDOW`] when the table is full;
    /// refuses when none is.
    fn make_room_for_a_tenant(&self, tables: &mut Tables, now: Instant) -> Result<(), Refused> {
        if tables.tenants.len() < self.max_tenants {
            return Ok(());
        }
        let mut freed = 0;
        tables.tenants.retain(|_, state| {
            let idle = now.saturating_duration_since(state.last_active) >= ACTIVE_SERIES_WINDOW;
            if idle {
                freed += state.series.len();
            }
            !idle
        });
        tables.tracked -= freed;
        if tables.tenants.len() < self.max_tenants {
            Ok(())
        } else {
            Err(Refused {
                limit: LimitKind::Tenants,
                retry_after: SWEEP_INTERVAL,
            })
        }
    }
}

/// Log bytes per second per tenant, for the Loki route (see the module documentation).
pub struct LogRateLimiter {
    /// Bytes per second each tenant may send (sustained).
    bytes_per_second: u64,
    max_tenants: usize,
    tenants: Mutex<HashMap<String, (TokenBucket, Instant)>>,
}

impl LogRateLimiter {
    /// A limiter with no tenant yet: each tenant may send `bytes_per_second`, with
    /// [`BURST_SECONDS`] of it at once; at most `max_tenants` are tracked.
    pub fn new(bytes_per_second: u64, max_tenants: usize) -> Self {
        Self {
            bytes_per_second,
            max_tenants,
            tenants: Mutex::new(HashMap::new()),
        }
    }

    /// How many tenants are tracked now.
    pub fn tracked(&self) -> usize {
        self.tenants.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    /// Takes a push of `bytes` from `tenant` at `now`, or refuses it whole. A push
    /// larger than the burst costs the whole burst: it passes when the bucket is full,
    /// and is never refused for its size alone (the body limits bound it).
    pub fn admit(&self, tenant: &str, bytes: u64, now: Instant) -> Result<(), Refused> {
        let capacity = self.bytes_per_second.saturating_mul(BURST_SECONDS) as f64;
        let rate = self.bytes_per_second as f64;
        let mut tenants = self.tenants.lock().unwrap_or_else(|e| e.into_inner());
        if !tenants.contains_key(tenant) && tenants.len() >= self.max_tenants {
            tenants.retain(|_, (_, last)| {
                now.saturating_duration_since(*last) < LOG_TENANT_IDLE_AFTER
            });
            if tenants.len() >= self.max_tenants {
                return Err(Refused {
                    limit: LimitKind::Tenants,
                    retry_after: SWEEP_INTERVAL,
                });
            }
        }
        let (bucket, last) = tenants
            .entry(tenant.to_owned())
            .or_insert_with(|| (TokenBucket::full(capacity, now), now));
        *last = now;
        let amount = (bytes as f64).min(capacity);
        bucket
            .take(amount, rate, capacity, now)
            .map_err(|retry_after| Refused {
                limit: LimitKind::LogBytesPerSecond,
                retry_after,
            })
    }
}

#[cfg(test)]
mod tests {
    use kaas_series::labels::Labels;

    use super::*;

    fn series(name: &str, samples: usize) -> PushedSeries {
        PushedSeries {
            labels: Labels::from_pairs([("__name__", name)]),
            samples: (0..samples).map(|i| (i as i64, 1.0)).collect(),
        }
    }

    fn limiter(series: usize, rate: u64) -> IngestLimiter {
        IngestLimiter::new(
            TenantLimits {
                max_active_series: series,
                max_samples_per_second: rate,
            },
            2,
            5,
        )
    }

    #[test]
    fn a_tenant_over_its_rate_is_refused_and_served_again_once_the_bucket_refills() {
        let limiter = limiter(100, 10);
        let start = Instant::now();
        // The bucket holds five seconds: 50 samples.
        assert!(limiter.admit("shop", vec![series("a", 50)], start).is_ok());
        let refused = limiter
            .admit("shop", vec![series("a", 20)], start)
            .unwrap_err();
        assert_eq!(refused.limit, LimitKind::SamplesPerSecond);
        assert_eq!(refused.retry_after, Duration::from_secs(2));
        // Another tenant has a bucket of its own.
        assert!(limiter.admit("bank", vec![series("a", 50)], start).is_ok());
        let later = start + Duration::from_secs(2);
        assert!(limiter.admit("shop", vec![series("a", 20)], later).is_ok());
    }

    #[test]
    fn new_series_past_the_limit_are_dropped_and_known_ones_go_on() {
        let limiter = limiter(2, 1000);
        let now = Instant::now();
        let first = limiter
            .admit("shop", vec![series("a", 1), series("b", 1)], now)
            .unwrap();
        assert_eq!(first.series.len(), 2);
        let second = limiter
            .admit("shop", vec![series("a", 1), series("c", 1)], now)
            .unwrap();
        assert_eq!(second.series, vec![series("a", 1)]);
        assert_eq!(second.dropped, vec![(LimitKind::ActiveSeries, 1)]);
        // Once the old series are stale, the slot is free again.
        let later = now + ACTIVE_SERIES_WINDOW;
        let third = limiter.admit("shop", vec![series("c", 1)], later).unwrap();
        assert_eq!(third.series.len(), 1);
        assert_eq!(limiter.tracked(), (1, 1));
    }

    #[test]
    fn the_total_of_tracked_series_and_tenants_is_bounded() {
        let limiter = limiter(4, 1000);
        let now = Instant::now();
        let batch = |prefix: &str| (0..4).map(|i| series(&format!("{prefix}{i}"), 1)).collect();
        assert!(
            limiter
                .admit("shop", batch("s"), now)
                .unwrap()
                .dropped
                .is_empty()
        );
        let bank = limiter.admit("bank", batch("b"), now).unwrap();
        assert_eq!(bank.series.len(), 1);
        assert_eq!(bank.dropped, vec![(LimitKind::TrackedSeries, 3)]);
        let refused = limiter
            .admit("cafe", vec![series("x", 1)], now)
            .unwrap_err();
        assert_eq!(refused.limit, LimitKind::Tenants);
        // Idle tenants are forgotten to make room, their series with them.
        let later = now + ACTIVE_SERIES_WINDOW;
        assert!(limiter.admit("cafe", vec![series("x", 1)], later).is_ok());
        assert_eq!(limiter.tracked(), (1, 1));
    }

    /// Issue 16: log pushes are limited per tenant in bytes per second, refused whole
    /// with when to retry; another tenant has its own bucket, and the tenants tracked
    /// are bounded, idle ones giving their slot up.
    #[test]
    fn log_bytes_are_limited_per_tenant_and_the_tenants_are_bounded() {
        let limiter = LogRateLimiter::new(100, 2);
        let start = Instant::now();
        // The bucket holds five seconds: 500 bytes.
        assert!(limiter.admit("shop", 400, start).is_ok());
        let refused = limiter.admit("shop", 300, start).unwrap_err();
        assert_eq!(refused.limit, LimitKind::LogBytesPerSecond);
        assert_eq!(refused.retry_after, Duration::from_secs(2));
        assert!(limiter.admit("bank", 500, start).is_ok());
        assert!(
            limiter
                .admit("shop", 300, start + Duration::from_secs(2))
                .is_ok()
        );
        // A push above the burst passes on a full bucket, and empties it.
        let rested = start + Duration::from_secs(60);
        assert!(limiter.admit("bank", 10_000, rested).is_ok());
        assert!(limiter.admit("bank", 1, rested).is_err());
        // A third tenant finds no slot while the two are busy, and takes an idle one.
        let refused = limiter.admit("cafe", 1, rested).unwrap_err();
        assert_eq!(refused.limit, LimitKind::Tenants);
        let later = rested + LOG_TENANT_IDLE_AFTER;
        assert!(limiter.admit("cafe", 1, later).is_ok());
        assert_eq!(limiter.tracked(), 1);
    }
}
