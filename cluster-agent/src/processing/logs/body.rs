//! What happens to a record's body: the size cap ([`cap`]), JSON bodies parsed into
//! attributes ([`parse_json`]), and `message`/`msg` moved into an empty body
//! ([`move_message`]).
//!
//! - **Size cap.** A text body longer than the cap is cut at the last character
//!   boundary at or below it, a bytes body at the cap; both counted as
//!   `body_truncated`. A structured body (array or map, only from OTLP pushes) whose
//!   encoding is larger than the cap cannot be cut without changing its meaning: the
//!   record is dropped and counted as `record_too_large`. The cap runs first, so no
//!   later step ever reads more than the cap.
//! - **JSON.** A text body whose first non-blank character is `{` is parsed with the
//!   bounded parser of [`super::json`]. On success its members become attributes
//!   (attributes the record already had, such as `log.file.path` from the input, win
//!   over members of the same name: the agent's facts are not the workload's to
//!   overwrite), the body is emptied (so `message`/`msg` can move in), and the original
//!   text is kept as [`ORIGINAL_BODY_KEY`] unless `keepOriginalBody` is off. On failure
//!   the body stays as it was and [`PARSE_ERROR_KEY`] says why.
//! - **Message.** When the body is empty, the first of [`MESSAGE_KEYS`] present is
//!   moved into it (any value type). A non-empty body is never replaced.

use kaas_proto::otlp::{AnyValue, KeyValue, LogRecord, any_value::Value};
use prost::Message;

use super::attributes::{string_attribute, string_value, take};
use super::json;
use crate::internal_events::LogProcessingOutcome;

/// Records larger than this are cut (the issue's "records up to 1 MiB"): longer than
/// any sane log line, and small enough that a pipeline's batch stays a few MiB.
pub const DEFAULT_MAX_RECORD_BYTES: usize = 1 << 20;

/// Where the original text of a parsed JSON body is kept (Kyma's `keepOriginalBody`).
pub const ORIGINAL_BODY_KEY: &str = "log.original";

/// Why a JSON-looking body was not parsed.
pub const PARSE_ERROR_KEY: &str = "log.parse_error";

/// The attributes moved into an empty body, in order of preference.
pub const MESSAGE_KEYS: [&str; 2] = ["message", "msg"];

/// Enforces the size cap on the body; the outcome when it acted.
/// [`LogProcessingOutcome::RecordTooLarge`] means the caller must drop the record.
pub fn cap(record: &mut LogRecord, max_bytes: usize) -> Option<LogProcessingOutcome> {
    let value = record.body.as_mut()?.value.as_mut()?;
    match value {
        Value::StringValue(text) if text.len() > max_bytes => {
            let mut end = max_bytes;
            while !text.is_char_boundary(end) {
                end -= 1;
            }
            text.truncate(end);
            Some(LogProcessingOutcome::BodyTruncated)
        }
        Value::BytesValue(bytes) if bytes.len() > max_bytes => {
            bytes.truncate(max_bytes);
            Some(LogProcessingOutcome::BodyTruncated)
        }
        Value::ArrayValue(array) if array.encoded_len() > max_bytes => {
            Some(LogProcessingOutcome::RecordTooLarge)
        }
        Value::KvlistValue(map) if map.encoded_len() > max_bytes => {
            Some(LogProcessingOutcome::RecordTooLarge)
        }
        _ => None,
    }
}

/// Parses a JSON-object body into attributes; the outcome when it looked like JSON
/// but did not parse.
pub fn parse_json(record: &mut LogRecord, keep_original: bool) -> Option<LogProcessingOutcome> {
    let Some(Value::StringValue(text)) = record.body.as_ref()?.value.as_ref() else {
        return None;
    };
    if !json::looks_like_object(text) {
        return None;
    }
    match json::parse_object(text) {
        Ok(members) => {
            let original = record.body.take();
            json::upsert_all(
                &mut record.attributes,
                members,
                json::OnConflict::KeepExisting,
            );
            if keep_original && let Some(original) = original {
                put(&mut record.attributes, ORIGINAL_BODY_KEY, original);
            }
            None
        }
        Err(error) => {
            let outcome = error.outcome();
            put(
                &mut record.attributes,
                PARSE_ERROR_KEY,
                string_value(error.to_string()),
            );
            Some(outcome)
        }
    }
}

/// Moves the first message attribute into an empty body; whether it moved one.
pub fn move_message(record: &mut LogRecord) -> bool {
    if !is_empty(record.body.as_ref()) {
        return false;
    }
    for key in MESSAGE_KEYS {
        if let Some(value) = take(&mut record.attributes, key) {
            record.body = Some(value);
            return true;
        }
    }
    false
}

/// Whether a body is missing, has no value or is empty text.
fn is_empty(body: Option<&AnyValue>) -> bool {
    match body.and_then(|body| body.value.as_ref()) {
        None => true,
        Some(Value::StringValue(text)) => text.is_empty(),
        Some(_) => false,
    }
}

/// Sets `key` to `value`, replacing an existing entry.
fn put(attributes: &mut Vec<KeyValue>, key: &str, value: AnyValue) {
    attributes.retain(|kv| kv.key != key);
    let mut entry = string_attribute(key, "");
    entry.value = Some(value);
    attributes.push(entry);
}

#[cfg(test)]
mod tests {
    use kaas_proto::otlp::{ArrayValue, KeyValueList};

    use super::*;

    fn text_body(text: &str) -> LogRecord {
        LogRecord {
            body: Some(string_value(text.into())),
            ..LogRecord::default()
        }
    }

    fn body_text(record: &LogRecord) -> Option<&str> {
        match record.body.as_ref()?.value.as_ref()? {
            Value::StringValue(text) => Some(text),
            _ => None,
        }
    }

    #[test]
    fn the_cap_cuts_text_at_a_character_boundary_and_bytes_at_the_cap() {
        let cases: &[(&str, usize, &str, bool)] = &[
            ("short", 10, "short", false),
            ("exactly", 7, "exactly", false),
            ("abcdef", 3, "abc", true),
            ("aé", 2, "a", true),
            ("ééé", 5, "éé", true),
            ("x", 0, "", true),
        ];
        for (text, cap_bytes, after, truncated) in cases {
            let mut r = text_body(text);
            let outcome = cap(&mut r, *cap_bytes);
            assert_eq!(body_text(&r), Some(*after), "{text:?}");
            assert_eq!(
                outcome,
                truncated.then_some(LogProcessingOutcome::BodyTruncated)
            );
        }
        let mut r = LogRecord {
            body: Some(AnyValue {
                value: Some(Value::BytesValue(vec![1; 10])),
            }),
            ..LogRecord::default()
        };
        assert_eq!(cap(&mut r, 4), Some(LogProcessingOutcome::BodyTruncated));
        assert_eq!(r.body.unwrap().value, Some(Value::BytesValue(vec![1; 4])));
    }

    #[test]
    fn structured_bodies_over_the_cap_drop_the_record() {
        let array = AnyValue {
            value: Some(Value::ArrayValue(ArrayValue {
                values: vec![string_value("x".repeat(100))],
            })),
        };
        let map = AnyValue {
            value: Some(Value::KvlistValue(KeyValueList {
                values: vec![string_attribute("k", &"x".repeat(100))],
            })),
        };
        for body in [array, map] {
            let mut r = LogRecord {
                body: Some(body.clone()),
                ..LogRecord::default()
            };
            assert_eq!(cap(&mut r, 1000), None);
            assert_eq!(cap(&mut r, 50), Some(LogProcessingOutcome::RecordTooLarge));
            assert_eq!(r.body, Some(body), "left for the caller to drop");
        }
        assert_eq!(cap(&mut LogRecord::default(), 0), None);
    }

    #[test]
    fn json_bodies_become_attributes_and_keep_the_original_on_request() {
        let original = r#"{"msg":"hi","user":"u1","log.file.path":"spoofed"}"#;
        for keep in [true, false] {
            let mut r = text_body(original);
            r.attributes = vec![string_attribute("log.file.path", "/var/log/pods/x")];
            assert_eq!(parse_json(&mut r, keep), None);
            assert!(move_message(&mut r));
            assert_eq!(body_text(&r), Some("hi"));
            let mut expected = vec![
                string_attribute("log.file.path", "/var/log/pods/x"),
                string_attribute("user", "u1"),
            ];
            if keep {
                expected.push(string_attribute(ORIGINAL_BODY_KEY, original));
            }
            assert_eq!(r.attributes, expected, "keep={keep}");
        }
    }

    #[test]
    fn json_failures_keep_the_body_and_say_why() {
        let cases: &[(&str, LogProcessingOutcome)] = &[
            ("{\"a\":", LogProcessingOutcome::JsonInvalid),
            (
                &format!("{{\"a\":{}", "[".repeat(100)),
                LogProcessingOutcome::JsonTooDeep,
            ),
        ];
        for (text, outcome) in cases {
            let mut r = text_body(text);
            assert_eq!(parse_json(&mut r, true), Some(*outcome));
            assert_eq!(body_text(&r), Some(*text));
            assert_eq!(r.attributes.len(), 1);
            assert_eq!(r.attributes[0].key, PARSE_ERROR_KEY);
        }
        for plain in ["plain text", "[1,2]", ""] {
            let mut r = text_body(plain);
            assert_eq!(parse_json(&mut r, true), None);
            assert!(r.attributes.is_empty(), "{plain:?} is not tried");
        }
    }

    #[test]
    fn message_moves_only_into_an_empty_body() {
        let mut r = text_body("");
        r.attributes = vec![
            string_attribute("msg", "second"),
            string_attribute("message", "first"),
        ];
        move_message(&mut r);
        assert_eq!(body_text(&r), Some("first"));
        assert_eq!(r.attributes, vec![string_attribute("msg", "second")]);

        let mut r = text_body("kept");
        r.attributes = vec![string_attribute("message", "m")];
        assert!(!move_message(&mut r));
        assert_eq!(body_text(&r), Some("kept"));
        assert_eq!(r.attributes.len(), 1);

        let mut r = LogRecord {
            attributes: vec![string_attribute("msg", "m")],
            ..LogRecord::default()
        };
        move_message(&mut r);
        assert_eq!(body_text(&r), Some("m"));
    }
}
