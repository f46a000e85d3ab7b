//! A span's W3C `tracestate` as consistent probability sampling reads and writes it:
//! the OpenTelemetry entry `ot` with its `th` (rejection threshold) and `rv` (explicit
//! randomness) sub-keys, and every other vendor's entry carried along untouched.
//!
//! **Reading.** The text is parsed once, borrowing it, in time linear in its length:
//! list members separated by `,` with optional spaces and tabs around them, empty
//! members skipped, each `key=value` by the W3C grammar (Trace Context level 2 keys:
//! a lower-case letter or digit, then up to 255 of `a-z 0-9 _ - * / @`; values of 1 to
//! 256 printable ASCII characters other than `,` and `=`, not ending in a space). A
//! tracestate that breaks that grammar or has more than [`MAX_LIST_MEMBERS`] members is
//! discarded as a whole, as W3C allows, and the span is treated as having none: its
//! content cannot be told apart from garbage, and forwarding it would forward garbage.
//! Inside a valid list, the `ot` value follows OpenTelemetry's grammar (`key:value`
//! pairs separated by `;`, keys `[a-z][a-z0-9]*`, values of `A-Z a-z 0-9 . _ -`, at
//! most [`MAX_OT_VALUE_CHARS`] characters); an `ot` value that breaks it, or an `ot`
//! key given twice, is dropped and only the agent's own `ot` is written. A `th` that is
//! not 1 to 14 hex digits, or an `rv` that is not exactly 14, is dropped on its own (it
//! says nothing usable) and the other sub-keys stay. Nothing here panics on any input.
//!
//! **Writing.** A kept span's tracestate is written as `ot=…` first (W3C: a changed
//! entry moves to the front), then the other members in their order, the right-most
//! dropped when the list would exceed [`MAX_LIST_MEMBERS`]. Inside `ot`, `rv` comes
//! first exactly as received, then `th` (hex, trailing zeros removed, `0` for zero),
//! then the other sub-keys in their order — the order the OpenTelemetry Collector
//! writes, so both write the same bytes for the same input; sub-keys are dropped from
//! the right if the value would exceed [`MAX_OT_VALUE_CHARS`] (`rv` and `th` always
//! fit).

/// Most list members of a tracestate (W3C).
pub const MAX_LIST_MEMBERS: usize = 32;
/// Longest `ot` value (OpenTelemetry's limit, W3C's limit for any value).
pub const MAX_OT_VALUE_CHARS: usize = 256;
/// Longest key and value of a list member (W3C).
const MAX_KEY_CHARS: usize = 256;
const MAX_VALUE_CHARS: usize = 256;
/// The OpenTelemetry entry's key.
const OT_KEY: &str = "ot";
/// Hex digits of a 56-bit threshold or randomness value.
const HEX_DIGITS: usize = 14;
/// The randomness and threshold space: 2^56.
pub const MAX_THRESHOLD: u64 = 1 << 56;

/// A parsed tracestate, borrowing the span's text.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct TraceState<'a> {
    /// The `ot` entry, when present and well-formed.
    pub ot: Option<OtelState<'a>>,
    /// Every other list member (`key=value`, spaces around it trimmed), in order.
    pub others: Vec<&'a str>,
}

/// The OpenTelemetry entry's sampling values.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct OtelState<'a> {
    /// `rv` as received (its text is written back unchanged) and its value.
    pub randomness: Option<(&'a str, u64)>,
    /// `th` as a 56-bit rejection threshold.
    pub threshold: Option<u64>,
    /// The other sub-keys (`key:value`), in order.
    pub extra: Vec<&'a str>,
}

impl<'a> TraceState<'a> {
    /// Parses `text`; a tracestate breaking W3C's grammar reads as empty (see the module
    /// documentation).
    pub fn parse(text: &'a str) -> Self {
        Self::parse_list(text).unwrap_or_default()
    }

    fn parse_list(text: &'a str) -> Option<Self> {
        let mut state = Self::default();
        let mut members = 0;
        let mut ot_seen = false;
        for member in text.split(',') {
            let member = member.trim_matches([' ', '\t']);
            if member.is_empty() {
                continue;
            }
            members += 1;
            if members > MAX_LIST_MEMBERS {
                return None;
            }
            let (key, value) = member.split_once('=')?;
            if !is_key(key) || !is_value(value) {
                return None;
            }
            if key == OT_KEY {
                // A second `ot` makes both ambiguous: neither is believed.
                state.ot = if ot_seen {
                    None
                } else {
                    OtelState::parse(value)
                };
                ot_seen = true;
            } else {
                state.others.push(member);
            }
        }
        Some(state)
    }

    /// The upstream rejection threshold, when the `ot` entry gives one.
    pub fn threshold(&self) -> Option<u64> {
        self.ot.as_ref().and_then(|ot| ot.threshold)
    }

    /// The explicit randomness, when the `ot` entry gives one.
    pub fn randomness(&self) -> Option<u64> {
        self.ot
            .as_ref()
            .and_then(|ot| ot.randomness.map(|(_, value)| value))
    }

    /// This tracestate with `th` set to `threshold`, as text (see the module
    /// documentation for the order and the limits).
    pub fn with_threshold(&self, threshold: u64) -> String {
        let mut out = String::with_capacity(
            32 + self.others.iter().map(|m| m.len() + 1).sum::<usize>()
                + self.ot.as_ref().map_or(0, OtelState::len),
        );
        out.push_str(OT_KEY);
        out.push('=');
        let value_start = out.len();
        if let Some((rv, _)) = self.ot.as_ref().and_then(|ot| ot.randomness) {
            out.push_str("rv:");
            out.push_str(rv);
            out.push(';');
        }
        out.push_str("th:");
        push_threshold(&mut out, threshold);
        for extra in self.ot.iter().flat_map(|ot| &ot.extra) {
            if out.len() - value_start + 1 + extra.len() > MAX_OT_VALUE_CHARS {
                break;
            }
            out.push(';');
            out.push_str(extra);
        }
        for member in self.others.iter().take(MAX_LIST_MEMBERS - 1) {
            out.push(',');
            out.push_str(member);
        }
        out
    }
}

impl<'a> OtelState<'a> {
    /// Parses an `ot` value; `None` when it breaks OpenTelemetry's grammar.
    fn parse(value: &'a str) -> Option<Self> {
        if value.len() > MAX_OT_VALUE_CHARS {
            return None;
        }
        let mut state = Self::default();
        for pair in value.split(';') {
            let (key, sub_value) = pair.split_once(':')?;
            if !is_ot_key(key) || !sub_value.bytes().all(is_ot_value_byte) {
                return None;
            }
            match key {
                // An unusable value is dropped on its own: it says nothing.
                "th" => state.threshold = parse_threshold(sub_value),
                "rv" => state.randomness = parse_randomness(sub_value).map(|r| (sub_value, r)),
                _ => state.extra.push(pair),
            }
        }
        Some(state)
    }

    /// Characters of the parts written back.
    fn len(&self) -> usize {
        self.randomness.map_or(0, |(rv, _)| rv.len() + 4)
            + self.extra.iter().map(|e| e.len() + 1).sum::<usize>()
    }
}

/// A `th` value: 1 to 14 hex digits, extended with zeros to 14.
pub fn parse_threshold(text: &str) -> Option<u64> {
    if text.is_empty() || text.len() > HEX_DIGITS {
        return None;
    }
    let value = parse_hex(text)?;
    Some(value << (4 * (HEX_DIGITS - text.len())))
}

/// An `rv` value: exactly 14 hex digits.
pub fn parse_randomness(text: &str) -> Option<u64> {
    if text.len() != HEX_DIGITS {
        return None;
    }
    parse_hex(text)
}

/// Hex digits (either case, nothing else: no sign, no prefix) as a number; at most 16.
fn parse_hex(text: &str) -> Option<u64> {
    text.bytes().try_fold(0u64, |value, byte| {
        let digit = char::from(byte).to_digit(16)?;
        Some((value << 4) | u64::from(digit))
    })
}

/// A threshold as `th` text: 14 hex digits with trailing zeros removed, `0` for zero.
pub fn threshold_text(threshold: u64) -> String {
    let mut out = String::with_capacity(HEX_DIGITS);
    push_threshold(&mut out, threshold);
    out
}

fn push_threshold(out: &mut String, threshold: u64) {
    if threshold == 0 {
        out.push('0');
        return;
    }
    let digits = format!("{:014x}", threshold & (MAX_THRESHOLD - 1));
    out.push_str(digits.trim_end_matches('0'));
}

/// A W3C key (level 2): a lower-case letter or digit, then up to 255 of
/// `a-z 0-9 _ - * / @`.
fn is_key(key: &str) -> bool {
    let bytes = key.as_bytes();
    matches!(bytes.first(), Some(b'a'..=b'z' | b'0'..=b'9'))
        && bytes.len() <= MAX_KEY_CHARS
        && bytes
            .iter()
            .all(|b| matches!(b, b'a'..=b'z' | b'0'..=b'9' | b'_' | b'-' | b'*' | b'/' | b'@'))
}

/// A W3C value: 1 to 256 printable ASCII characters (space included) other than `,`
/// and `=`, the last not a space.
fn is_value(value: &str) -> bool {
    let bytes = value.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= MAX_VALUE_CHARS
        && bytes.last() != Some(&b' ')
        && bytes
            .iter()
            .all(|b| matches!(b, 0x20..=0x7e) && *b != b',' && *b != b'=')
}

/// An `ot` sub-key: a lower-case letter, then lower-case letters and digits.
fn is_ot_key(key: &str) -> bool {
    let bytes = key.as_bytes();
    matches!(bytes.first(), Some(b'a'..=b'z'))
        && bytes
            .iter()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
}

/// A character of an `ot` sub-value.
fn is_ot_value_byte(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || matches!(byte, b'.' | b'_' | b'-')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ot(text: &str) -> Option<OtelState<'_>> {
        OtelState::parse(text)
    }

    #[test]
    fn thresholds_read_as_fourteen_digits_and_write_without_trailing_zeros() {
        // The specification's and the Collector's examples.
        for (text, value) in [
            ("0", 0),
            ("8", 0x80000000000000),
            ("c", 0xc0000000000000),
            ("2", 0x20000000000000),
            ("ab", 0xab000000000000),
            ("fd70a4", 0xfd70a400000000),
            ("abcdefabcdefab", 0xabcdefabcdefab),
            ("1000", 0x10000000000000),
            ("80000000000000", 0x80000000000000),
            ("ABC", 0xabc00000000000),
        ] {
            assert_eq!(parse_threshold(text), Some(value), "{text}");
        }
        assert_eq!(threshold_text(0x80000000000000), "8");
        assert_eq!(threshold_text(0xfd70a400000000), "fd70a4");
        assert_eq!(threshold_text(0), "0");
        assert_eq!(threshold_text(0xffffffffffffff), "ffffffffffffff");
        assert_eq!(threshold_text(0x00000cccccccd0), "00000cccccccd");
        for bad in [
            "",
            "ffffffffffffffff",
            "100000000000000",
            "$",
            "0x1p+3",
            "14.5",
            "-1",
            "+1",
        ] {
            assert_eq!(parse_threshold(bad), None, "{bad:?}");
        }
        assert_eq!(parse_randomness("ffffffffffffff"), Some(0xffffffffffffff));
        assert_eq!(parse_randomness("FD70A3D70A3D71"), Some(0xfd70a3d70a3d71));
        for bad in [
            "3",
            "100000000000000",
            "fffffffffffffffff",
            "+fffffffffffff",
        ] {
            assert_eq!(parse_randomness(bad), None, "{bad:?}");
        }
    }

    /// The Collector's `pkg/sampling` parse cases for the `ot` value, as this module
    /// reads them: a syntax error drops the whole `ot` value, an unusable `th` or `rv`
    /// only itself.
    #[test]
    fn ot_values_parse_like_the_reference_implementation() {
        let parsed = |text| {
            let state = ot(text)?;
            Some((
                state.randomness.map(|(rv, _)| rv),
                state.threshold.map(threshold_text),
                state.extra,
            ))
        };
        let long = format!("x:{}", "_".repeat(254));
        type Parsed<'a> = Option<(Option<&'a str>, Option<String>, Vec<&'a str>)>;
        let cases: Vec<(&str, Parsed)> = vec![
            ("th:2", Some((None, Some("2".into()), vec![]))),
            ("th:ab", Some((None, Some("ab".into()), vec![]))),
            ("th:1000", Some((None, Some("1".into()), vec![]))),
            ("th:1;", None),
            ("th:1=p:2", None),
            (":1;p:2=s:3", None),
            (":", None),
            ("th:;p=1", None),
            ("th:$", None),
            ("th:0x1p+3", None),
            ("", None),
            ("th:14.5", Some((None, None, vec![]))),
            ("th:-1", Some((None, None, vec![]))),
            ("th:ffffffffffffffff", Some((None, None, vec![]))),
            ("e100:1", Some((None, None, vec!["e100:1"]))),
            (
                "e100:100;th:1;e101:101",
                Some((None, Some("1".into()), vec!["e100:100", "e101:101"])),
            ),
            ("1:1;u:V", None),
            ("X:1;u:V", None),
            ("x:1;u:V", Some((None, None, vec!["x:1", "u:V"]))),
            (
                "rv:22222222222222;extra:stuff",
                Some((Some("22222222222222"), None, vec!["extra:stuff"])),
            ),
            ("rv:3;p:2", Some((None, None, vec!["p:2"]))),
            ("rv:100000000000000", Some((None, None, vec![]))),
            ("x:1;", None),
            ("x:", Some((None, None, vec!["x:"]))),
            (
                "x:0X1FFF;y:.-_-.;z:",
                Some((None, None, vec!["x:0X1FFF", "y:.-_-.", "z:"])),
            ),
            (&long, Some((None, None, vec![long.as_str()]))),
        ];
        for (text, expected) in cases {
            assert_eq!(parsed(text), expected, "{text:?}");
        }
        let too_long = format!("x:{}", "_".repeat(255));
        assert_eq!(parsed(&too_long), None);
    }

    #[test]
    fn the_ot_entry_is_written_first_with_rv_then_th_then_the_rest() {
        let cases = [
            ("", 0xf0000000000000, "ot=th:f"),
            ("ot=th:8", 0xc0000000000000, "ot=th:c"),
            (
                "ot=rv:FD70A3D70A3D71",
                0xfd70a000000000,
                "ot=rv:FD70A3D70A3D71;th:fd70a",
            ),
            (
                "ot=rv:90000000000000;th:80000000000000",
                0x80000000000000,
                "ot=rv:90000000000000;th:8",
            ),
            ("ot=a:b", 0x30000000000000, "ot=th:3;a:b"),
            (
                "vendor=x, ot=p:8;th:1 ,other=y y",
                0,
                "ot=th:0;p:8,vendor=x,other=y y",
            ),
            // Empty members are skipped; tabs around members are spaces.
            (",, a=1 ,\t,b=2", 0x80000000000000, "ot=th:8,a=1,b=2"),
            // A second `ot` makes both unusable.
            ("ot=th:f,x=1,ot=th:0", 0x80000000000000, "ot=th:8,x=1"),
            // An `ot` value breaking its grammar is replaced.
            ("ot=th:1;,x=1", 0x80000000000000, "ot=th:8,x=1"),
            // Multi-tenant keys and values with spaces inside are carried along.
            (
                "t1@vendor=a b,1x=y",
                0x80000000000000,
                "ot=th:8,t1@vendor=a b,1x=y",
            ),
        ];
        for (input, threshold, expected) in cases {
            assert_eq!(
                TraceState::parse(input).with_threshold(threshold),
                expected,
                "{input:?}"
            );
        }
    }

    #[test]
    fn a_tracestate_breaking_the_w3c_grammar_is_discarded() {
        let long_value = format!("a={}", "x".repeat(257));
        let long_key = format!("{}=1", "k".repeat(257));
        let many: String = (0..33).map(|i| format!("k{i}=v,")).collect();
        for bad in [
            "a",
            "=1",
            "A=1",
            "_a=1",
            "a=",
            "a=1=2",
            "a=\u{e9}",
            "a=\x01",
            "ot=th:8,a=1 2 ,b",
            "a = 1",
            long_value.as_str(),
            long_key.as_str(),
            many.as_str(),
        ] {
            let state = TraceState::parse(bad);
            assert_eq!(state, TraceState::default(), "{bad:?}");
            assert_eq!(state.with_threshold(0x80000000000000), "ot=th:8");
        }
        // 32 members are fine.
        let most: String = (0..32).map(|i| format!("k{i}=v,")).collect();
        assert_eq!(TraceState::parse(&most).others.len(), 32);
    }

    /// A pushed tracestate may be as large as the push limits allow: reading it is one
    /// pass, stopping at the 33rd member, and nothing of an invalid one is kept.
    #[test]
    fn huge_tracestates_are_read_in_one_pass_and_bounded() {
        let commas = ",".repeat(1 << 20);
        assert_eq!(TraceState::parse(&commas), TraceState::default());
        let members = "a=b,".repeat(1 << 18);
        assert_eq!(TraceState::parse(&members), TraceState::default());
        let value = format!("a={}", "v".repeat(1 << 20));
        assert_eq!(TraceState::parse(&value), TraceState::default());
        let ot = format!("ot=th:8;{}", "x:1;".repeat(1 << 18));
        let state = TraceState::parse(&ot);
        assert_eq!(
            state.ot, None,
            "a value over 256 characters makes the whole tracestate invalid"
        );
        assert_eq!(state.with_threshold(0xc0000000000000), "ot=th:c");
    }

    #[test]
    fn writing_keeps_the_w3c_and_opentelemetry_limits() {
        // 32 other members: adding `ot` drops the right-most.
        let most: String = (0..32).map(|i| format!("k{i}=v,")).collect();
        let written = TraceState::parse(&most).with_threshold(0x80000000000000);
        let members: Vec<&str> = written.split(',').collect();
        assert_eq!(members.len(), MAX_LIST_MEMBERS);
        assert_eq!(members[0], "ot=th:8");
        assert_eq!(members[31], "k30=v");
        // An `ot` value near the limit loses extra sub-keys from the right, never rv
        // or th.
        let input = format!("ot=rv:abcdefabcdefab;a:{};b:x", "y".repeat(200));
        let written = TraceState::parse(&input).with_threshold(0xabcdefabcdefab);
        let value = written.strip_prefix("ot=").unwrap();
        assert!(value.len() <= MAX_OT_VALUE_CHARS, "{}", value.len());
        assert!(value.starts_with("rv:abcdefabcdefab;th:abcdefabcdefab;a:yyy"));
        assert!(value.ends_with(";b:x"), "b still fits");
        let input = format!("ot=rv:abcdefabcdefab;a:{};b:x", "y".repeat(225));
        assert!(input.len() - 3 <= MAX_OT_VALUE_CHARS, "a valid input");
        let written = TraceState::parse(&input).with_threshold(0xabcdefabcdefab);
        assert_eq!(
            written, "ot=rv:abcdefabcdefab;th:abcdefabcdefab",
            "the extra that does not fit goes, and everything right of it"
        );
        // What is written parses back to what was meant.
        let again = TraceState::parse(&written);
        assert_eq!(again.threshold(), Some(0xabcdefabcdefab));
        assert_eq!(again.randomness(), Some(0xabcdefabcdefab));
    }
}
