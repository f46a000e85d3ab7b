//! RFC 3339 timestamps with up to nanosecond precision, as CRI and Docker write them,
//! parsed to nanoseconds since the Unix epoch without a date library.

/// Nanoseconds since 1970-01-01T00:00:00Z of `text` (`2024-01-02T03:04:05.123456789Z` or
/// with a `±hh:mm` offset); `None` when it is not such a timestamp or before 1970.
pub fn parse_rfc3339_nanos(text: &[u8]) -> Option<u64> {
    let digits = |range: std::ops::Range<usize>| -> Option<i64> {
        let part = text.get(range)?;
        part.iter()
            .all(u8::is_ascii_digit)
            .then(|| part.iter().fold(0, |n, d| n * 10 + i64::from(d - b'0')))
    };
    if text.len() < 20 || text[4] != b'-' || text[7] != b'-' || !matches!(text[10], b'T' | b't') {
        return None;
    }
    if text[13] != b':' || text[16] != b':' {
        return None;
    }
    let (year, month, day) = (digits(0..4)?, digits(5..7)?, digits(8..10)?);
    let (hour, minute, second) = (digits(11..13)?, digits(14..16)?, digits(17..19)?);
    if !(1..=12).contains(&month)
        || !(1..=31).contains(&day)
        || hour > 23
        || minute > 59
        || second > 60
    {
        return None;
    }
    let mut rest = &text[19..];
    let mut nanos = 0i64;
    if rest.first() == Some(&b'.') {
        let fraction_len = rest[1..].iter().take_while(|b| b.is_ascii_digit()).count();
        if fraction_len == 0 {
            return None;
        }
        for (i, digit) in rest[1..=fraction_len].iter().enumerate().take(9) {
            nanos += i64::from(digit - b'0') * 10i64.pow(8 - i as u32);
        }
        rest = &rest[1 + fraction_len..];
    }
    let offset_seconds = match rest {
        [b'Z' | b'z'] => 0,
        [sign @ (b'+' | b'-'), h1, h2, b':', m1, m2] => {
            let two = |a: u8, b: u8| -> Option<i64> {
                (a.is_ascii_digit() && b.is_ascii_digit())
                    .then(|| i64::from(a - b'0') * 10 + i64::from(b - b'0'))
            };
            let seconds = two(*h1, *h2)? * 3600 + two(*m1, *m2)? * 60;
            if *sign == b'+' { seconds } else { -seconds }
        }
        _ => return None,
    };
    let days = days_from_civil(year, month, day);
    let seconds = days * 86_400 + hour * 3600 + minute * 60 + second - offset_seconds;
    u64::try_from(seconds)
        .ok()?
        .checked_mul(1_000_000_000)?
        .checked_add(nanos as u64)
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let year_of_era = year - era * 400;
    let month_index = (month + 9) % 12;
    let day_of_year = (153 * month_index + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_parse_to_epoch_nanoseconds() {
        for (text, expected) in [
            ("1970-01-01T00:00:00Z", Some(0)),
            (
                "2024-02-29T12:34:56.123456789Z",
                Some(1_709_210_096_123_456_789),
            ),
            ("2024-02-29T12:34:56.1Z", Some(1_709_210_096_100_000_000)),
            (
                "2024-02-29T13:34:56.5+01:00",
                Some(1_709_210_096_500_000_000),
            ),
            ("2024-02-29T11:34:56-01:00", Some(1_709_210_096_000_000_000)),
            (
                "2024-02-29T12:34:56.1234567891Z",
                Some(1_709_210_096_123_456_789),
            ),
            ("1969-12-31T23:59:59Z", None),
            ("2024-13-01T00:00:00Z", None),
            ("2024-02-29 12:34:56Z", None),
            ("2024-02-29T12:34:56", None),
            ("2024-02-29T12:34:56.Z", None),
            ("not a time at all, clearly", None),
        ] {
            assert_eq!(parse_rfc3339_nanos(text.as_bytes()), expected, "{text}");
        }
    }
}
