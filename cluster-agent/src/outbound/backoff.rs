//! The agent's one exponential backoff: the wait before a failed send is retried
//! ([`Backoff::default`], Prometheus' remote-write schedule) and before the control
//! stream reconnects ([`Backoff::new`]). The window doubles with every failure from a
//! base up to a cap and starts over after a success; what differs is only how the
//! delay is drawn from the window ([`Jitter`]).

use std::time::Duration;

/// First wait after a failed send; Prometheus' `min_backoff`.
pub const MIN_BACKOFF: Duration = Duration::from_millis(30);
/// Longest wait between send attempts; Prometheus' `max_backoff`. A recovering backend
/// is noticed within this long.
pub const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// How a delay is drawn from the current window.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Jitter {
    /// Uniformly from `[0, window]` ("full jitter"): a fleet reconnecting after an
    /// outage lands all over the window instead of in a burst.
    Full,
    /// The window ±25%: a pipeline's retries stay close to the schedule, and many
    /// agents still do not retry in step.
    Quarter,
}

/// Exponentially growing delays with jitter.
#[derive(Clone, Debug)]
pub struct Backoff {
    base: Duration,
    cap: Duration,
    jitter: Jitter,
    failures: u32,
}

impl Default for Backoff {
    /// The exporters' retry schedule: from [`MIN_BACKOFF`] up to [`MAX_BACKOFF`], each
    /// wait the window ±25%.
    fn default() -> Self {
        Self {
            base: MIN_BACKOFF,
            cap: MAX_BACKOFF,
            jitter: Jitter::Quarter,
            failures: 0,
        }
    }
}

impl Backoff {
    /// Delays with full jitter, the window growing from `base` up to `cap`.
    pub fn new(base: Duration, cap: Duration) -> Self {
        Self {
            base,
            cap,
            jitter: Jitter::Full,
            failures: 0,
        }
    }

    /// The current window: the upper bound of the next delay (before ±25% jitter).
    pub fn ceiling(&self) -> Duration {
        let factor = 1u32.checked_shl(self.failures.min(31)).unwrap_or(u32::MAX);
        self.base.saturating_mul(factor).min(self.cap)
    }

    /// The next delay; each call counts one more failure.
    pub fn next_delay(&mut self) -> Duration {
        let ceiling = self.ceiling();
        self.failures = self.failures.saturating_add(1);
        match self.jitter {
            Jitter::Full => {
                let ceiling_ms = u64::try_from(ceiling.as_millis()).unwrap_or(u64::MAX);
                Duration::from_millis(fastrand::u64(0..=ceiling_ms))
            }
            Jitter::Quarter => ceiling.mul_f64(0.75 + fastrand::f64() * 0.5),
        }
    }

    /// How long to wait after a failed send: what the backend asked for with
    /// `Retry-After` if it did, otherwise [`Backoff::next_delay`]. Either way it counts
    /// one more failure.
    pub fn wait(&mut self, retry_after: Option<Duration>) -> Duration {
        let delay = self.next_delay();
        retry_after.unwrap_or(delay)
    }

    /// Starts over after a success.
    pub fn reset(&mut self) {
        self.failures = 0;
    }

    /// Waits the longest window from now on: for a failure that an immediate retry
    /// would only repeat.
    pub fn at_cap(&mut self) {
        self.failures = u32::MAX;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_cap_and_resets() {
        let mut backoff = Backoff::default();
        let waits: Vec<Duration> = (0..12).map(|_| backoff.wait(None)).collect();
        assert!(waits[0] <= MIN_BACKOFF.mul_f64(1.25));
        assert!(waits[11] >= MAX_BACKOFF.mul_f64(0.75) && waits[11] <= MAX_BACKOFF.mul_f64(1.25));
        assert_eq!(
            backoff.wait(Some(Duration::from_secs(9))),
            Duration::from_secs(9)
        );
        backoff.reset();
        assert!(backoff.wait(None) <= MIN_BACKOFF.mul_f64(1.25));
    }

    #[test]
    fn backoff_windows_double_up_to_the_cap_and_reset() {
        let mut backoff = Backoff::new(Duration::from_secs(1), Duration::from_secs(60));
        let mut ceilings = Vec::new();
        for _ in 0..9 {
            let ceiling = backoff.ceiling();
            let delay = backoff.next_delay();
            assert!(delay <= ceiling, "{delay:?} > {ceiling:?}");
            ceilings.push(ceiling.as_secs());
        }
        assert_eq!(ceilings, [1, 2, 4, 8, 16, 32, 60, 60, 60]);
        for _ in 0..100 {
            backoff.next_delay();
        }
        assert_eq!(backoff.ceiling(), Duration::from_secs(60));
        backoff.reset();
        assert_eq!(backoff.ceiling(), Duration::from_secs(1));
    }

    #[test]
    fn after_an_oversized_message_the_next_delay_may_be_the_longest() {
        let mut backoff = Backoff::new(Duration::from_secs(1), Duration::from_secs(60));
        backoff.at_cap();
        assert_eq!(backoff.ceiling(), Duration::from_secs(60));
        backoff.next_delay();
        assert_eq!(backoff.ceiling(), Duration::from_secs(60), "no overflow");
    }

    #[test]
    fn backoff_delays_are_spread_over_the_whole_window() {
        // Full jitter: 10,000 agents at the cap land all over [0, 60 s], not in a burst.
        let mut backoff = Backoff::new(Duration::from_secs(1), Duration::from_secs(60));
        for _ in 0..10 {
            backoff.next_delay();
        }
        let delays: Vec<u64> = (0..10_000)
            .map(|_| backoff.clone().next_delay().as_millis() as u64)
            .collect();
        let mean = delays.iter().sum::<u64>() / delays.len() as u64;
        assert!((25_000..35_000).contains(&mean), "mean {mean} ms");
        let mut buckets = [0usize; 6];
        for delay in delays {
            buckets[(delay / 10_001) as usize] += 1;
        }
        assert!(buckets.iter().all(|&n| n > 1_000), "{buckets:?}");
    }
}
