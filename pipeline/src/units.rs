//! Prometheus durations (`30s`, `1m30s`, `2h`) and Kubernetes byte quantities
//! (`512Mi`, `1G`, `1048576`), parsed exactly as their home projects parse them.

use std::fmt;
use std::time::Duration;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Prometheus' duration units, largest first, in milliseconds. A year is 365 days.
const DURATION_UNITS: [(&str, u64); 7] = [
    ("y", 365 * 24 * 3600 * 1000),
    ("w", 7 * 24 * 3600 * 1000),
    ("d", 24 * 3600 * 1000),
    ("h", 3600 * 1000),
    ("m", 60 * 1000),
    ("s", 1000),
    ("ms", 1),
];

/// Parses a Prometheus duration: units `y w d h m s ms`, each at most once, largest
/// first, for example `1h30m` or `500ms`. A year is 365 days, as in Prometheus.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let invalid = || {
        format!(
            "{text:?} is not a duration: use a number and a unit (ms, s, m, h, d, w, y), e.g. \"30s\" or \"1h30m\""
        )
    };
    if text == "0" {
        return Ok(Duration::ZERO);
    }
    if text.is_empty() {
        return Err(invalid());
    }
    let mut rest = text;
    let mut next_unit = 0;
    let mut millis: u64 = 0;
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return Err(invalid());
        }
        let number: u64 = rest[..digits].parse().map_err(|_| invalid())?;
        rest = &rest[digits..];
        // "ms" must be tried before "m".
        let unit = DURATION_UNITS[next_unit..]
            .iter()
            .enumerate()
            .filter(|(_, (name, _))| rest.starts_with(name))
            .max_by_key(|(_, (name, _))| name.len())
            .ok_or_else(invalid)?;
        let (position, (name, factor)) = unit;
        millis = number
            .checked_mul(*factor)
            .and_then(|ms| millis.checked_add(ms))
            .ok_or_else(|| format!("{text:?} is too long a duration"))?;
        rest = &rest[name.len()..];
        next_unit += position + 1;
    }
    Ok(Duration::from_millis(millis))
}

/// Formats a duration the way Prometheus prints one (`1h30m`, `500ms`, `0s`).
pub fn format_duration(duration: Duration) -> String {
    let mut ms = u64::try_from(duration.as_millis()).unwrap_or(u64::MAX);
    if ms == 0 {
        return "0s".into();
    }
    let mut out = String::new();
    for (name, factor) in DURATION_UNITS {
        if ms >= factor {
            out.push_str(&format!("{}{name}", ms / factor));
            ms %= factor;
        }
    }
    out
}

/// A size in bytes as Kubernetes writes quantities: a plain integer, or a number with a
/// binary (`Ki Mi Gi Ti Pi Ei`) or decimal (`k M G T P E`) suffix. Accepted in YAML as a
/// number or a string.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum ByteSize {
    /// A plain number of bytes.
    Bytes(u64),
    /// A quantity such as `512Mi`.
    Quantity(String),
}

impl fmt::Debug for ByteSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Bytes(n) => write!(f, "{n}"),
            Self::Quantity(q) => write!(f, "{q:?}"),
        }
    }
}

impl JsonSchema for ByteSize {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "ByteSize".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "description": "A size in bytes: an integer, or a Kubernetes quantity such as 512Mi or 1G.",
            "x-kubernetes-int-or-string": true
        })
    }
}

impl ByteSize {
    /// The number of bytes, or why the quantity is not one.
    pub fn bytes(&self) -> Result<u64, String> {
        match self {
            Self::Bytes(n) => Ok(*n),
            Self::Quantity(text) => parse_byte_quantity(text),
        }
    }
}

/// Parses `512Mi`, `1.5Gi`, `100M` or `1024` into bytes.
pub fn parse_byte_quantity(text: &str) -> Result<u64, String> {
    const SUFFIXES: [(&str, u128); 12] = [
        ("Ki", 1 << 10),
        ("Mi", 1 << 20),
        ("Gi", 1 << 30),
        ("Ti", 1 << 40),
        ("Pi", 1 << 50),
        ("Ei", 1 << 60),
        ("k", 1_000),
        ("M", 1_000_000),
        ("G", 1_000_000_000),
        ("T", 1_000_000_000_000),
        ("P", 1_000_000_000_000_000),
        ("E", 1_000_000_000_000_000_000),
    ];
    let invalid = || {
        format!(
            "{text:?} is not a byte size: use an integer, optionally with a suffix Ki, Mi, Gi, Ti (or k, M, G, T), e.g. \"512Mi\""
        )
    };
    let number_len = text
        .bytes()
        .take_while(|b| b.is_ascii_digit() || *b == b'.')
        .count();
    let (number, suffix) = text.split_at(number_len);
    let factor = if suffix.is_empty() {
        1
    } else {
        SUFFIXES
            .iter()
            .find(|(name, _)| *name == suffix)
            .map(|(_, factor)| *factor)
            .ok_or_else(invalid)?
    };
    let (whole, fraction) = number.split_once('.').unwrap_or((number, ""));
    if whole.is_empty() || fraction.contains('.') || fraction.len() > 18 {
        return Err(invalid());
    }
    let whole: u128 = whole.parse().map_err(|_| invalid())?;
    let fraction_value: u128 = if fraction.is_empty() {
        0
    } else {
        fraction.parse().map_err(|_| invalid())?
    };
    let scale = 10u128.pow(u32::try_from(fraction.len()).map_err(|_| invalid())?);
    let too_large = || format!("{text:?} is too large");
    let fraction_bytes = fraction_value.checked_mul(factor).ok_or_else(too_large)?;
    if fraction_bytes % scale != 0 {
        return Err(format!("{text:?} is not a whole number of bytes"));
    }
    let total = whole
        .checked_mul(factor)
        .and_then(|w| w.checked_add(fraction_bytes / scale))
        .ok_or_else(too_large)?;
    u64::try_from(total).map_err(|_| too_large())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_like_prometheus() {
        let cases = [
            ("0", 0),
            ("30s", 30_000),
            ("1m30s", 90_000),
            ("500ms", 500),
            ("1h", 3_600_000),
            ("1d", 86_400_000),
            ("1w", 604_800_000),
            ("1y", 31_536_000_000),
            ("2m1s500ms", 121_500),
        ];
        for (text, ms) in cases {
            assert_eq!(
                parse_duration(text),
                Ok(Duration::from_millis(ms)),
                "{text}"
            );
        }
        for bad in [
            "", "s", "30", "1.5s", "30 s", "1s1m", "1m1m", "-1s", "1x", "1sms",
        ] {
            assert!(parse_duration(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn durations_format_round_trip() {
        for text in ["0s", "30s", "1m30s", "500ms", "1h", "1d1h1m1s1ms"] {
            assert_eq!(format_duration(parse_duration(text).unwrap()), text);
        }
    }

    #[test]
    fn byte_quantities_parse_like_kubernetes() {
        let cases = [
            ("1024", 1024),
            ("1Ki", 1024),
            ("512Mi", 512 << 20),
            ("1.5Gi", 3 << 29),
            ("1G", 1_000_000_000),
            ("2k", 2000),
        ];
        for (text, bytes) in cases {
            assert_eq!(parse_byte_quantity(text), Ok(bytes), "{text}");
        }
        for bad in [
            "",
            "Mi",
            "1MB",
            "1.2.3Gi",
            "-1",
            "1.0000001Ki",
            "99999999999Ei",
        ] {
            assert!(parse_byte_quantity(bad).is_err(), "{bad:?} accepted");
        }
    }
}
