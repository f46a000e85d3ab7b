//! Per-pipeline and per-namespace rate limits: token buckets counted in records.
//!
//! A bucket holds up to `burst` tokens and gains `records_per_second` tokens a second;
//! each record takes one. Tokens are kept in billionths (one record = 10⁹) and refilled
//! from elapsed nanoseconds, so the arithmetic is exact integer arithmetic: under a
//! fake clock the number of records let through is exactly
//! `burst + ⌊elapsed × rate⌋` (capped at `burst` in reserve), and tests can assert it.
//! Time comes from the caller (`now`), never read here.
//!
//! A record is checked against its namespace's bucket first (a noisy namespace is cut
//! by its own limit before it eats the pipeline's), then the pipeline's; it takes a
//! token from each only when both have one, so a record dropped by one limit never
//! uses up the other's budget. Records without a namespace only meet the pipeline's
//! limit.
//!
//! **Bounded map.** Namespaces get buckets on first sight, up to
//! [`MAX_RATE_LIMITED_NAMESPACES`]. When the map is full, buckets that have refilled
//! completely are removed first (a full bucket is the same as a new one, so nothing is
//! forgotten); that sweep runs at most once per [`NAMESPACE_SWEEP_INTERVAL`], so a
//! flood of new names costs one pass over the map per interval. Namespaces that still
//! find no room share one overflow bucket with the same limit.

use std::hash::RandomState;
use std::num::NonZeroU32;
use std::time::{Duration, Instant};

use crate::internal_events::LogProcessingOutcome;

/// Namespaces with their own bucket at most: Kubernetes' tested scalability limit is
/// 10,000 namespaces per cluster, so every real namespace gets its own; at about 100
/// bytes a bucket the map stays near 1 MiB.
pub const MAX_RATE_LIMITED_NAMESPACES: usize = 10_000;

/// The full map is swept for refilled buckets at most this often: a sweep is a pass
/// over up to [`MAX_RATE_LIMITED_NAMESPACES`] buckets, and a second is long enough for
/// idle buckets to refill at any sensible rate.
pub const NAMESPACE_SWEEP_INTERVAL: Duration = Duration::from_secs(1);

/// Billionths of a token per record.
const SCALE: u64 = 1_000_000_000;

/// A configured limit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RateLimit {
    /// Records a second, sustained.
    pub records_per_second: NonZeroU32,
    /// Records let through at once after a quiet period.
    pub burst: NonZeroU32,
}

/// One token bucket.
#[derive(Clone, Debug)]
struct TokenBucket {
    limit: RateLimit,
    /// Billionths of a token.
    tokens: u64,
    refilled_at: Instant,
}

impl TokenBucket {
    fn full(limit: RateLimit, now: Instant) -> Self {
        Self {
            limit,
            tokens: Self::capacity(limit),
            refilled_at: now,
        }
    }

    fn capacity(limit: RateLimit) -> u64 {
        u64::from(limit.burst.get()) * SCALE
    }

    fn refill(&mut self, now: Instant) {
        let elapsed = now.saturating_duration_since(self.refilled_at);
        if elapsed.is_zero() {
            return;
        }
        self.refilled_at = now;
        // Nanoseconds times records per second is billionths of a record.
        let gained = elapsed
            .as_nanos()
            .saturating_mul(u128::from(self.limit.records_per_second.get()));
        let tokens = u128::from(self.tokens).saturating_add(gained);
        self.tokens = tokens.min(u128::from(Self::capacity(self.limit))) as u64;
    }

    fn has_token(&self) -> bool {
        self.tokens >= SCALE
    }

    fn take(&mut self) {
        self.tokens -= SCALE;
    }

    fn is_full(&self) -> bool {
        self.tokens >= Self::capacity(self.limit)
    }
}

/// The rate limits of one pipeline and their state.
#[derive(Debug)]
pub struct RateLimiter {
    pipeline: Option<TokenBucket>,
    namespaces: Option<NamespaceBuckets>,
}

/// The per-namespace buckets, bounded.
#[derive(Debug)]
struct NamespaceBuckets {
    limit: RateLimit,
    /// Keyed by namespace names, which pushers influence: std's randomly seeded hasher.
    map: hashbrown::HashMap<String, TokenBucket, RandomState>,
    overflow: TokenBucket,
    max: usize,
    swept_at: Option<Instant>,
}

impl RateLimiter {
    /// Limits as configured (none: no limit), starting with full buckets at `now`.
    pub fn new(pipeline: Option<RateLimit>, namespace: Option<RateLimit>, now: Instant) -> Self {
        Self::with_max_namespaces(pipeline, namespace, now, MAX_RATE_LIMITED_NAMESPACES)
    }

    /// As [`RateLimiter::new`] with another namespace cap (tests use a small one).
    pub fn with_max_namespaces(
        pipeline: Option<RateLimit>,
        namespace: Option<RateLimit>,
        now: Instant,
        max_namespaces: usize,
    ) -> Self {
        Self {
            pipeline: pipeline.map(|limit| TokenBucket::full(limit, now)),
            namespaces: namespace.map(|limit| NamespaceBuckets {
                limit,
                map: hashbrown::HashMap::with_hasher(RandomState::new()),
                overflow: TokenBucket::full(limit, now),
                max: max_namespaces,
                swept_at: None,
            }),
        }
    }

    /// Namespaces that have their own bucket now.
    pub fn tracked_namespaces(&self) -> usize {
        self.namespaces.as_ref().map_or(0, |n| n.map.len())
    }

    /// Lets a record of `namespace` through at `now`, or says which limit dropped it.
    pub fn admit(
        &mut self,
        namespace: Option<&str>,
        now: Instant,
    ) -> Result<(), LogProcessingOutcome> {
        let mut namespace_bucket = match (namespace, self.namespaces.as_mut()) {
            (Some(name), Some(buckets)) => Some(buckets.bucket(name, now)),
            _ => None,
        };
        if namespace_bucket.as_ref().is_some_and(|b| !b.has_token()) {
            return Err(LogProcessingOutcome::NamespaceRateLimited);
        }
        if let Some(pipeline) = self.pipeline.as_mut() {
            pipeline.refill(now);
            if !pipeline.has_token() {
                return Err(LogProcessingOutcome::PipelineRateLimited);
            }
            pipeline.take();
        }
        if let Some(bucket) = namespace_bucket.as_mut() {
            bucket.take();
        }
        Ok(())
    }
}

impl NamespaceBuckets {
    /// The refilled bucket of `name`, created when there is room, else the overflow
    /// bucket.
    fn bucket(&mut self, name: &str, now: Instant) -> &mut TokenBucket {
        let known = self.map.contains_key(name);
        if !known && self.map.len() >= self.max {
            self.sweep(now);
        }
        let bucket = if known || self.map.len() < self.max {
            let limit = self.limit;
            // `entry_ref` allocates the key only when the namespace is new.
            self.map
                .entry_ref(name)
                .or_insert_with(|| TokenBucket::full(limit, now))
        } else {
            &mut self.overflow
        };
        bucket.refill(now);
        bucket
    }

    /// Removes buckets that have refilled completely, at most once per
    /// [`NAMESPACE_SWEEP_INTERVAL`].
    fn sweep(&mut self, now: Instant) {
        if self
            .swept_at
            .is_some_and(|at| now.saturating_duration_since(at) < NAMESPACE_SWEEP_INTERVAL)
        {
            return;
        }
        self.swept_at = Some(now);
        self.map.retain(|_, bucket| {
            bucket.refill(now);
            !bucket.is_full()
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limit(rate: u32, burst: u32) -> RateLimit {
        RateLimit {
            records_per_second: NonZeroU32::new(rate).unwrap(),
            burst: NonZeroU32::new(burst).unwrap(),
        }
    }

    /// Offers `n` records of `namespace` at `now`; how many were let through, and the
    /// drops by outcome.
    fn offer(
        limiter: &mut RateLimiter,
        namespace: Option<&str>,
        now: Instant,
        n: u32,
    ) -> (u32, u32, u32) {
        let (mut passed, mut by_pipeline, mut by_namespace) = (0, 0, 0);
        for _ in 0..n {
            match limiter.admit(namespace, now) {
                Ok(()) => passed += 1,
                Err(LogProcessingOutcome::PipelineRateLimited) => by_pipeline += 1,
                Err(LogProcessingOutcome::NamespaceRateLimited) => by_namespace += 1,
                Err(other) => panic!("{other}"),
            }
        }
        (passed, by_pipeline, by_namespace)
    }

    #[test]
    fn the_pipeline_bucket_lets_through_burst_plus_rate_times_elapsed_exactly() {
        let start = Instant::now();
        let mut limiter = RateLimiter::new(Some(limit(10, 5)), None, start);
        assert_eq!(offer(&mut limiter, None, start, 8), (5, 3, 0));
        // 250 ms at 10/s: 2.5 tokens, so 2 records, half a token kept.
        let t1 = start + Duration::from_millis(250);
        assert_eq!(offer(&mut limiter, None, t1, 4), (2, 2, 0));
        // Another 50 ms completes the half token.
        let t2 = t1 + Duration::from_millis(50);
        assert_eq!(offer(&mut limiter, None, t2, 2), (1, 1, 0));
        // A long quiet period refills to the burst only.
        let t3 = t2 + Duration::from_secs(3600);
        assert_eq!(offer(&mut limiter, None, t3, 100), (5, 95, 0));
        // A clock that goes back gains nothing.
        assert_eq!(offer(&mut limiter, None, start, 1), (0, 1, 0));
    }

    #[test]
    fn namespaces_have_their_own_buckets_and_drops_never_use_the_other_budget() {
        let start = Instant::now();
        let mut limiter = RateLimiter::new(Some(limit(1, 10)), Some(limit(1, 3)), start);
        assert_eq!(offer(&mut limiter, Some("noisy"), start, 5), (3, 0, 2));
        let pipeline_tokens = |l: &RateLimiter| l.pipeline.as_ref().unwrap().tokens;
        assert_eq!(
            pipeline_tokens(&limiter),
            7 * SCALE,
            "namespace drops took no pipeline token"
        );
        assert_eq!(offer(&mut limiter, Some("quiet"), start, 2), (2, 0, 0));
        assert_eq!(offer(&mut limiter, None, start, 4), (4, 0, 0));
        // The pipeline has 1 token left; "other" has 3.
        assert_eq!(offer(&mut limiter, Some("other"), start, 3), (1, 2, 0));
        let other = &limiter.namespaces.as_ref().unwrap().map["other"];
        assert_eq!(
            other.tokens,
            2 * SCALE,
            "pipeline drops took no namespace token"
        );
        assert_eq!(limiter.tracked_namespaces(), 3);
    }

    #[test]
    fn without_limits_everything_passes() {
        let start = Instant::now();
        let mut limiter = RateLimiter::new(None, None, start);
        assert_eq!(offer(&mut limiter, Some("ns"), start, 1000), (1000, 0, 0));
        assert_eq!(limiter.tracked_namespaces(), 0);
    }

    #[test]
    fn the_namespace_map_is_bounded_and_reclaims_refilled_buckets() {
        let start = Instant::now();
        let mut limiter = RateLimiter::with_max_namespaces(None, Some(limit(1, 2)), start, 2);
        assert_eq!(offer(&mut limiter, Some("a"), start, 2), (2, 0, 0));
        assert_eq!(offer(&mut limiter, Some("b"), start, 1), (1, 0, 0));
        // The map is full and no bucket has refilled: c and d share the overflow bucket.
        assert_eq!(offer(&mut limiter, Some("c"), start, 1), (1, 0, 0));
        assert_eq!(offer(&mut limiter, Some("d"), start, 2), (1, 0, 1));
        assert_eq!(limiter.tracked_namespaces(), 2);
        // One second later "b" (one token short) is full again and makes room; "a"
        // (two short) is not and keeps its bucket and its debt.
        let later = start + NAMESPACE_SWEEP_INTERVAL;
        assert_eq!(offer(&mut limiter, Some("e"), later, 3), (2, 0, 1));
        assert_eq!(offer(&mut limiter, Some("a"), later, 2), (1, 0, 1));
        assert_eq!(limiter.tracked_namespaces(), 2);
        // A flood of new names within the sweep interval stays bounded.
        for i in 0..1000 {
            let _ = limiter.admit(Some(&format!("flood-{i}")), later);
        }
        assert_eq!(limiter.tracked_namespaces(), 2);
    }
}
