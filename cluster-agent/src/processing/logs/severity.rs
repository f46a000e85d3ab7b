//! Severity from the attributes a structured log writes it to ([`SEVERITY_KEYS`]):
//! the first one whose value maps to an OpenTelemetry `SeverityNumber` is moved into
//! the record's `severity_number` and `severity_text` (the text as written; a number
//! as its decimal text). Values that do not map stay attributes, and a record that
//! already has a severity (an OTLP push) keeps it; one with a severity text but no
//! number gets the number its text names.
//!
//! Mapping, case-insensitive:
//!
//! | written | SeverityNumber |
//! |---|---|
//! | `trace`, `trc`, `finest`, `finer` | TRACE |
//! | `debug`, `dbg`, `fine` | DEBUG |
//! | `info`, `inf`, `information`, `informational` | INFO |
//! | `notice` | INFO2 |
//! | `warn`, `wrn`, `warning` | WARN |
//! | `error`, `err`, `eror`, `severe` | ERROR |
//! | `crit`, `critical` | ERROR2 |
//! | `alert` | ERROR3 |
//! | `fatal`, `ftl`, `panic`, `dpanic`, `emerg`, `emergency` | FATAL |
//!
//! Numbers (integers or numeric text) are syslog severities 0–7 as the OpenTelemetry
//! log data model maps them (0 emergency FATAL, 1 alert ERROR3, 2 critical ERROR2,
//! 3 error ERROR, 4 warning WARN, 5 notice INFO2, 6 informational INFO, 7 debug
//! DEBUG), or the Node.js (pino, bunyan) levels 10, 20, 30, 40, 50, 60 (TRACE, DEBUG,
//! INFO, WARN, ERROR, FATAL); the two ranges do not overlap.

use kaas_proto::otlp::{AnyValue, LogRecord, SeverityNumber, any_value::Value};

use super::attributes::{find, take};

/// The attributes severity is read from, in order of preference: the common field
/// name, the Elastic Common Schema's, and the one syslog-style JSON uses.
pub const SEVERITY_KEYS: [&str; 3] = ["level", "log.level", "severity"];

/// Moves the first mappable severity attribute into the record's severity fields; a
/// record with only a severity text (some OTLP senders) gets the number it names.
pub fn apply(record: &mut LogRecord) {
    if record.severity_number != SeverityNumber::Unspecified as i32 {
        return;
    }
    if !record.severity_text.is_empty() {
        if let Some(number) = from_text(&record.severity_text) {
            record.severity_number = number as i32;
        }
        return;
    }
    for key in SEVERITY_KEYS {
        let Some((number, text)) = find(&record.attributes, key).and_then(parse) else {
            continue;
        };
        take(&mut record.attributes, key);
        record.severity_number = number as i32;
        record.severity_text = text;
        return;
    }
}

/// The severity a value names, with its text; `None` when it names none.
pub fn parse(value: &AnyValue) -> Option<(SeverityNumber, String)> {
    match value.value.as_ref()? {
        Value::StringValue(text) => Some((from_text(text)?, text.clone())),
        Value::IntValue(n) => Some((from_number(*n)?, n.to_string())),
        _ => None,
    }
}

/// The severity a spelling or a numeric text names.
pub fn from_text(text: &str) -> Option<SeverityNumber> {
    let text = text.trim();
    if let Ok(n) = text.parse::<i64>() {
        return from_number(n);
    }
    SPELLINGS
        .iter()
        .find(|(spellings, _)| spellings.iter().any(|s| s.eq_ignore_ascii_case(text)))
        .map(|(_, severity)| *severity)
}

/// The spellings of each severity, lowercase (compared ignoring ASCII case, without
/// allocating a lowercase copy per record).
const SPELLINGS: [(&[&str], SeverityNumber); 9] = [
    (&["trace", "trc", "finest", "finer"], SeverityNumber::Trace),
    (&["debug", "dbg", "fine"], SeverityNumber::Debug),
    (
        &["info", "inf", "information", "informational"],
        SeverityNumber::Info,
    ),
    (&["notice"], SeverityNumber::Info2),
    (&["warn", "wrn", "warning"], SeverityNumber::Warn),
    (&["error", "err", "eror", "severe"], SeverityNumber::Error),
    (&["crit", "critical"], SeverityNumber::Error2),
    (&["alert"], SeverityNumber::Error3),
    (
        &["fatal", "ftl", "panic", "dpanic", "emerg", "emergency"],
        SeverityNumber::Fatal,
    ),
];

/// The severity a syslog (0–7) or Node.js (10–60) level number names.
pub fn from_number(n: i64) -> Option<SeverityNumber> {
    let severity = match n {
        0 => SeverityNumber::Fatal,
        1 => SeverityNumber::Error3,
        2 => SeverityNumber::Error2,
        3 => SeverityNumber::Error,
        4 => SeverityNumber::Warn,
        5 => SeverityNumber::Info2,
        6 => SeverityNumber::Info,
        7 => SeverityNumber::Debug,
        10 => SeverityNumber::Trace,
        20 => SeverityNumber::Debug,
        30 => SeverityNumber::Info,
        40 => SeverityNumber::Warn,
        50 => SeverityNumber::Error,
        60 => SeverityNumber::Fatal,
        _ => return None,
    };
    Some(severity)
}

#[cfg(test)]
mod tests {
    use kaas_proto::otlp::KeyValue;

    use super::*;
    use crate::processing::logs::attributes::{record_with as record, string_attribute};

    #[test]
    fn spellings_and_numbers_map_to_severity_numbers() {
        use SeverityNumber as S;
        let cases: &[(&str, Option<S>)] = &[
            ("TRACE", Some(S::Trace)),
            ("finest", Some(S::Trace)),
            ("Debug", Some(S::Debug)),
            ("dbg", Some(S::Debug)),
            ("info", Some(S::Info)),
            ("INFORMATIONAL", Some(S::Info)),
            ("notice", Some(S::Info2)),
            ("warn", Some(S::Warn)),
            ("Warning", Some(S::Warn)),
            ("err", Some(S::Error)),
            ("ERROR", Some(S::Error)),
            ("severe", Some(S::Error)),
            ("crit", Some(S::Error2)),
            ("alert", Some(S::Error3)),
            ("fatal", Some(S::Fatal)),
            ("panic", Some(S::Fatal)),
            ("emerg", Some(S::Fatal)),
            (" info ", Some(S::Info)),
            ("0", Some(S::Fatal)),
            ("1", Some(S::Error3)),
            ("2", Some(S::Error2)),
            ("3", Some(S::Error)),
            ("4", Some(S::Warn)),
            ("5", Some(S::Info2)),
            ("6", Some(S::Info)),
            ("7", Some(S::Debug)),
            ("8", None),
            ("10", Some(S::Trace)),
            ("30", Some(S::Info)),
            ("60", Some(S::Fatal)),
            ("-1", None),
            ("verbose", None),
            ("", None),
        ];
        for (text, expected) in cases {
            assert_eq!(from_text(text), *expected, "{text:?}");
        }
    }

    #[test]
    fn the_first_mappable_key_moves_into_the_severity_fields() {
        let mut r = record(vec![
            string_attribute("severity", "error"),
            string_attribute("level", "WARN"),
        ]);
        apply(&mut r);
        assert_eq!(r.severity_number, SeverityNumber::Warn as i32);
        assert_eq!(r.severity_text, "WARN");
        assert_eq!(r.attributes, vec![string_attribute("severity", "error")]);

        let mut r = record(vec![
            string_attribute("level", "chatty"),
            string_attribute("log.level", "debug"),
        ]);
        apply(&mut r);
        assert_eq!(r.severity_number, SeverityNumber::Debug as i32);
        assert_eq!(
            r.attributes,
            vec![string_attribute("level", "chatty")],
            "unmapped stays"
        );

        let mut r = record(vec![KeyValue {
            key: "level".into(),
            value: Some(AnyValue {
                value: Some(Value::IntValue(50)),
            }),
        }]);
        apply(&mut r);
        assert_eq!((r.severity_number, r.severity_text.as_str()), (17, "50"));
        assert!(r.attributes.is_empty());
    }

    #[test]
    fn a_record_with_a_severity_keeps_it_and_its_attributes() {
        let mut r = record(vec![string_attribute("level", "error")]);
        r.severity_number = SeverityNumber::Info as i32;
        apply(&mut r);
        assert_eq!(r.severity_number, SeverityNumber::Info as i32);
        assert_eq!(r.attributes.len(), 1);

        for (text, number) in [("custom", 0), ("Warning", SeverityNumber::Warn as i32)] {
            let mut r = record(vec![string_attribute("level", "error")]);
            r.severity_text = text.into();
            apply(&mut r);
            assert_eq!(
                (r.severity_number, r.severity_text.as_str()),
                (number, text)
            );
            assert_eq!(r.attributes.len(), 1, "the text's own severity wins");
        }
    }
}
