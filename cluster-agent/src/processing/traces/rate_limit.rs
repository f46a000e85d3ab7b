//! The pipeline's span rate limit: the log pipelines' token bucket
//! ([`crate::processing::logs::rate_limit`], exact integer arithmetic, time from the
//! caller) counted in spans, one bucket per pipeline and agent replica, and no map, so
//! its memory is one bucket whatever the traffic.
//!
//! Concurrent pushes into one pipeline share the bucket behind a mutex, held only
//! while a batch's spans are counted against it, one token check each (never while
//! spans are parsed, hashed or copied). A batch's spans are admitted in order until
//! the bucket is empty; at the same instant an empty bucket stays empty, so the spans
//! after the first refused one are all refused and the check stops there.
//!
//! The bucket outlives a rebuild of the pipeline's processing (a rotated hash key
//! rebuilds it, [`SpanRateLimit::kept_for`]): handles share one bucket, so rotating
//! the key never refills it, and only a changed rate starts a new one, full.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;

use kaas_pipeline::logs::processors::ValidatedRate;

use crate::processing::logs::{RateLimit, RateLimiter};

/// A pipeline's span rate limit, shared by the tasks processing its batches; clones
/// share its bucket.
#[derive(Clone, Debug, Default)]
pub struct SpanRateLimit {
    limiter: Option<Arc<Bucket>>,
}

/// One token bucket and the rate it was made for.
#[derive(Debug)]
struct Bucket {
    rate: ValidatedRate,
    limiter: Mutex<RateLimiter>,
}

impl SpanRateLimit {
    /// The limit `rate` (none: no limit), its bucket full at `now`.
    pub fn new(rate: Option<&ValidatedRate>, now: Instant) -> Self {
        let limit = rate.map(|rate| RateLimit {
            records_per_second: rate.records_per_second,
            burst: rate.burst,
        });
        Self {
            limiter: rate.zip(limit).map(|(rate, limit)| {
                Arc::new(Bucket {
                    rate: *rate,
                    limiter: Mutex::new(RateLimiter::new(Some(limit), None, now)),
                })
            }),
        }
    }

    /// The limit `rate` for processing rebuilt at `now`: this one, its bucket as it is,
    /// when the rate is the same; otherwise a new one, full (none: no limit).
    pub fn kept_for(&self, rate: Option<&ValidatedRate>, now: Instant) -> Self {
        let same = match (&self.limiter, rate) {
            (Some(bucket), Some(rate)) => bucket.rate == *rate,
            (None, None) => true,
            _ => false,
        };
        if same {
            self.clone()
        } else {
            Self::new(rate, now)
        }
    }

    /// How many of `spans` spans offered at `now` pass, taking a token each; the first
    /// that many pass and the rest are over the limit.
    pub fn admit(&self, spans: u64, now: Instant) -> u64 {
        let Some(bucket) = &self.limiter else {
            return spans;
        };
        // The bucket's arithmetic leaves it consistent at every step, so a panic
        // elsewhere while it was held does not make it unusable.
        let mut limiter = bucket
            .limiter
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let mut admitted = 0;
        while admitted < spans && limiter.admit(None, now).is_ok() {
            admitted += 1;
        }
        admitted
    }
}

/// A rate of `per_second` with `burst`, for tests.
#[cfg(test)]
pub(crate) fn rate(per_second: u32, burst: u32) -> ValidatedRate {
    ValidatedRate {
        records_per_second: std::num::NonZeroU32::new(per_second).expect("a rate"),
        burst: std::num::NonZeroU32::new(burst).expect("a burst"),
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn spans_pass_up_to_the_burst_then_at_the_rate() {
        let start = Instant::now();
        let limit = SpanRateLimit::new(Some(&rate(100, 50)), start);
        assert_eq!(limit.admit(30, start), 30);
        assert_eq!(limit.admit(30, start), 20);
        assert_eq!(limit.admit(30, start), 0);
        // 150 ms at 100/s: 15 tokens.
        assert_eq!(limit.admit(30, start + Duration::from_millis(150)), 15);
        // A long quiet spell refills to the burst only.
        assert_eq!(limit.admit(1000, start + Duration::from_secs(3600)), 50);
    }

    /// Processing rebuilt with the same rate (a rotated hash key) keeps the bucket as
    /// it was, emptied; another rate starts a full one.
    #[test]
    fn the_bucket_is_kept_for_the_same_rate_and_new_for_another() {
        let start = Instant::now();
        let limit = SpanRateLimit::new(Some(&rate(100, 50)), start);
        assert_eq!(limit.admit(50, start), 50);
        let later = start + Duration::from_secs(60);
        let kept = limit.kept_for(Some(&rate(100, 50)), later);
        assert_eq!(kept.admit(1, start), 0, "the same rate refilled the bucket");
        assert_eq!(limit.admit(1, start), 0);
        let changed = limit.kept_for(Some(&rate(100, 60)), later);
        assert_eq!(changed.admit(100, later), 60);
        let unlimited = limit.kept_for(None, later);
        assert_eq!(unlimited.admit(1000, later), 1000);
    }

    #[test]
    fn without_a_limit_everything_passes() {
        let limit = SpanRateLimit::new(None, Instant::now());
        assert_eq!(limit.admit(u64::MAX, Instant::now()), u64::MAX);
    }
}
