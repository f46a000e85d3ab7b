//! The one wall clock samples are stamped with: milliseconds since the Unix epoch, as
//! remote-write and Prometheus count them. A clock set before 1970 reads 0; one past
//! the year 292 million reads `i64::MAX`.

use std::time::{SystemTime, UNIX_EPOCH};

/// Milliseconds since the Unix epoch at `at`.
pub fn unix_ms(at: SystemTime) -> i64 {
    at.duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// Milliseconds since the Unix epoch now.
pub fn now_ms() -> i64 {
    unix_ms(SystemTime::now())
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn milliseconds_since_the_epoch_saturate_at_both_ends() {
        assert_eq!(unix_ms(UNIX_EPOCH + Duration::from_millis(1_700)), 1_700);
        assert_eq!(unix_ms(UNIX_EPOCH - Duration::from_secs(1)), 0);
        assert!(now_ms() > 1_600_000_000_000);
    }
}
