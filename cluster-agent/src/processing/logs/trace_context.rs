//! W3C trace context from attributes: a valid `traceparent`
//! (`00-<32 hex>-<16 hex>-<2 hex>`, lowercase as the W3C Trace Context spec writes it)
//! or a valid `trace_id` (32 hex digits) with optional `span_id` (16 hex digits) and
//! `trace_flags` (2 hex digits or an integer 0–255) is moved into the record's
//! `trace_id`, `span_id` and `flags`. Separate ids may be upper or lower case, since
//! loggers print both. An all-zero id is invalid, as the spec says. Invalid values stay
//! attributes, and a record that already has a trace id (an OTLP push) is left alone.

use kaas_proto::otlp::{AnyValue, LOG_RECORD_FLAGS_TRACE_FLAGS_MASK, LogRecord, any_value::Value};

use super::attributes::{find, take};

/// The `traceparent` attribute (W3C Trace Context header).
pub const TRACEPARENT_KEY: &str = "traceparent";
/// The trace id attribute.
pub const TRACE_ID_KEY: &str = "trace_id";
/// The span id attribute.
pub const SPAN_ID_KEY: &str = "span_id";
/// The trace flags attribute.
pub const TRACE_FLAGS_KEY: &str = "trace_flags";

/// Bytes in a trace id.
const TRACE_ID_BYTES: usize = 16;
/// Bytes in a span id.
const SPAN_ID_BYTES: usize = 8;
/// Length of a version-00 `traceparent`.
const TRACEPARENT_V00_LEN: usize = 55;

/// A parsed trace context.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TraceContext {
    /// 16 bytes.
    pub trace_id: Vec<u8>,
    /// 8 bytes, or empty.
    pub span_id: Vec<u8>,
    /// The W3C trace flags.
    pub flags: Option<u8>,
}

/// Moves a valid trace context from the attributes into the record.
pub fn apply(record: &mut LogRecord) {
    if !record.trace_id.is_empty() {
        return;
    }
    let attributes = &mut record.attributes;
    let context = if let Some(context) = find(attributes, TRACEPARENT_KEY)
        .and_then(string)
        .and_then(parse_traceparent)
    {
        take(attributes, TRACEPARENT_KEY);
        context
    } else {
        let Some(trace_id) = find(attributes, TRACE_ID_KEY)
            .and_then(string)
            .and_then(|text| hex_id(text, TRACE_ID_BYTES, false))
        else {
            return;
        };
        take(attributes, TRACE_ID_KEY);
        let mut context = TraceContext {
            trace_id,
            span_id: Vec::new(),
            flags: None,
        };
        if let Some(span_id) = find(attributes, SPAN_ID_KEY)
            .and_then(string)
            .and_then(|text| hex_id(text, SPAN_ID_BYTES, false))
        {
            take(attributes, SPAN_ID_KEY);
            context.span_id = span_id;
        }
        if let Some(flags) = find(attributes, TRACE_FLAGS_KEY).and_then(flags) {
            take(attributes, TRACE_FLAGS_KEY);
            context.flags = Some(flags);
        }
        context
    };
    record.trace_id = context.trace_id;
    record.span_id = context.span_id;
    if let Some(flags) = context.flags {
        record.flags = (record.flags & !LOG_RECORD_FLAGS_TRACE_FLAGS_MASK) | u32::from(flags);
    }
}

fn string(value: &AnyValue) -> Option<&str> {
    match value.value.as_ref()? {
        Value::StringValue(text) => Some(text),
        _ => None,
    }
}

/// Trace flags: two hex digits, or an integer 0–255.
fn flags(value: &AnyValue) -> Option<u8> {
    match value.value.as_ref()? {
        Value::StringValue(text) => hex_id(text, 1, false).map(|bytes| bytes[0]),
        Value::IntValue(n) => u8::try_from(*n).ok(),
        _ => None,
    }
}

/// `text` as exactly `bytes` bytes of hex; all zeros refused for ids longer than a
/// byte (flags may be zero). `lowercase_only` for the `traceparent` header.
pub fn hex_id(text: &str, bytes: usize, lowercase_only: bool) -> Option<Vec<u8>> {
    if text.len() != bytes * 2 {
        return None;
    }
    let valid = text.bytes().all(|b| {
        b.is_ascii_digit()
            || (b'a'..=b'f').contains(&b)
            || (!lowercase_only && (b'A'..=b'F').contains(&b))
    });
    if !valid {
        return None;
    }
    let decoded = hex::decode(text).ok()?;
    if bytes > 1 && decoded.iter().all(|b| *b == 0) {
        return None;
    }
    Some(decoded)
}

/// A W3C `traceparent`: version (two lowercase hex digits, not `ff`), trace id,
/// parent (span) id and flags separated by `-`. Version 00 is exactly 55 characters;
/// a later version may append fields after a `-`, as the spec allows.
pub fn parse_traceparent(text: &str) -> Option<TraceContext> {
    let bytes = text.as_bytes();
    if bytes.len() < TRACEPARENT_V00_LEN
        || bytes[2] != b'-'
        || bytes[35] != b'-'
        || bytes[52] != b'-'
    {
        return None;
    }
    let version = text.get(0..2)?;
    hex_id(version, 1, true)?;
    if version == "ff"
        || (version == "00" && bytes.len() != TRACEPARENT_V00_LEN)
        || (bytes.len() > TRACEPARENT_V00_LEN && bytes[TRACEPARENT_V00_LEN] != b'-')
    {
        return None;
    }
    Some(TraceContext {
        trace_id: hex_id(text.get(3..35)?, TRACE_ID_BYTES, true)?,
        span_id: hex_id(text.get(36..52)?, SPAN_ID_BYTES, true)?,
        flags: Some(hex_id(text.get(53..55)?, 1, true)?[0]),
    })
}

#[cfg(test)]
mod tests {
    use kaas_proto::otlp::KeyValue;

    use super::*;
    use crate::processing::logs::attributes::{record_with as record, string_attribute};

    const TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
    const SPAN: &str = "00f067aa0ba902b7";

    #[test]
    fn traceparent_validation() {
        let valid = format!("00-{TRACE}-{SPAN}-01");
        let parsed = parse_traceparent(&valid).unwrap();
        assert_eq!(hex::encode(&parsed.trace_id), TRACE);
        assert_eq!(hex::encode(&parsed.span_id), SPAN);
        assert_eq!(parsed.flags, Some(1));
        let zero_trace = "0".repeat(32);
        let invalid = [
            format!("00-{TRACE}-{SPAN}-0"),
            format!("00-{TRACE}-{SPAN}-01-extra"),
            format!("ff-{TRACE}-{SPAN}-01"),
            format!("00-{}-{SPAN}-01", TRACE.to_uppercase()),
            format!("00-{zero_trace}-{SPAN}-01"),
            format!("00-{TRACE}-0000000000000000-01"),
            format!("00_{TRACE}-{SPAN}-01"),
            format!("0g-{TRACE}-{SPAN}-01"),
            format!("01-{TRACE}-{SPAN}-01x"),
            "é".repeat(28),
            String::new(),
        ];
        for text in &invalid {
            assert_eq!(parse_traceparent(text), None, "{text:?}");
        }
        assert!(parse_traceparent(&format!("01-{TRACE}-{SPAN}-01-future")).is_some());
    }

    #[test]
    fn separate_fields_move_when_valid_and_stay_when_not() {
        let mut r = record(vec![
            string_attribute(TRACE_ID_KEY, &TRACE.to_uppercase()),
            string_attribute(SPAN_ID_KEY, SPAN),
            string_attribute(TRACE_FLAGS_KEY, "01"),
            string_attribute("other", "x"),
        ]);
        r.flags = 0x100;
        apply(&mut r);
        assert_eq!(hex::encode(&r.trace_id), TRACE);
        assert_eq!(hex::encode(&r.span_id), SPAN);
        assert_eq!(r.flags, 0x101, "the trace flags byte only");
        assert_eq!(r.attributes, vec![string_attribute("other", "x")]);

        let mut r = record(vec![
            string_attribute(TRACE_ID_KEY, TRACE),
            string_attribute(SPAN_ID_KEY, "short"),
            KeyValue {
                key: TRACE_FLAGS_KEY.into(),
                value: Some(AnyValue {
                    value: Some(Value::IntValue(256)),
                }),
            },
        ]);
        apply(&mut r);
        assert_eq!(hex::encode(&r.trace_id), TRACE);
        assert!(r.span_id.is_empty());
        assert_eq!(r.flags, 0);
        assert_eq!(r.attributes.len(), 2, "invalid span id and flags stay");

        for bad in ["xyz", &TRACE[..30], &"0".repeat(32)] {
            let mut r = record(vec![
                string_attribute(TRACE_ID_KEY, bad),
                string_attribute(SPAN_ID_KEY, SPAN),
            ]);
            apply(&mut r);
            assert!(r.trace_id.is_empty() && r.span_id.is_empty(), "{bad}");
            assert_eq!(r.attributes.len(), 2);
        }
    }

    #[test]
    fn traceparent_wins_and_existing_context_is_kept() {
        let mut r = record(vec![
            string_attribute(TRACE_ID_KEY, &"1".repeat(32)),
            string_attribute(TRACEPARENT_KEY, &format!("00-{TRACE}-{SPAN}-00")),
        ]);
        apply(&mut r);
        assert_eq!(hex::encode(&r.trace_id), TRACE);
        assert_eq!(
            r.attributes,
            vec![string_attribute(TRACE_ID_KEY, &"1".repeat(32))]
        );

        let mut r = record(vec![string_attribute(TRACE_ID_KEY, TRACE)]);
        r.trace_id = vec![7; 16];
        apply(&mut r);
        assert_eq!(r.trace_id, vec![7; 16]);
        assert_eq!(r.attributes.len(), 1);
    }
}
