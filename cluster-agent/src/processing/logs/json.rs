//! A bounded JSON parser for log bodies: it turns a JSON object into OTLP attributes
//! (nested objects as key-value lists, arrays as array values, `null` as an empty
//! value, integers that fit `i64` as integers, other numbers as doubles).
//!
//! Bodies come from workloads, so the parser is built for hostile input: it reads the
//! text once, front to back, and gives up the moment a limit is passed, so time is
//! linear in the bytes read and memory linear in the bytes kept. The limits are
//! [`MAX_JSON_DEPTH`] nested containers, [`MAX_JSON_KEYS`] object members and
//! [`MAX_JSON_ARRAY_ELEMENTS`] array elements over the whole document; recursion is
//! bounded by the depth limit. Duplicate keys in an object keep the last value, as
//! most JSON readers do, resolved through a hash index so that 10,000 keys cost
//! 10,000 lookups, not 10,000².

use std::collections::HashMap;

use kaas_proto::otlp::{AnyValue, ArrayValue, KeyValue, KeyValueList, any_value::Value};

use crate::internal_events::LogProcessingOutcome;

/// Containers (objects and arrays) nested deeper than this make the body stay raw:
/// no structured log nests this deep, and it bounds the parser's recursion.
pub const MAX_JSON_DEPTH: usize = 64;

/// Object members over the whole document beyond which the body stays raw: each
/// becomes an attribute, and backends refuse or choke on documents with more fields
/// (Elasticsearch's default `index.mapping.total_fields.limit` is 1,000).
pub const MAX_JSON_KEYS: usize = 10_000;

/// Array elements over the whole document beyond which the body stays raw: an element
/// of two input bytes (`0,`) costs dozens of bytes parsed, so this caps the
/// amplification of a body of small elements.
pub const MAX_JSON_ARRAY_ELEMENTS: usize = 10_000;

/// Objects up to this many members are de-duplicated by a linear scan; larger ones
/// through a hash index (a scan over at most this many keys is cheaper than hashing).
const LINEAR_DEDUP_MAX: usize = 8;

/// Why a body did not parse; `offset` is the byte at which the parser stopped.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum JsonError {
    /// Not JSON, or not a JSON object.
    #[error("invalid JSON at byte {offset}: {what}")]
    Invalid {
        /// Where the parser stopped.
        offset: usize,
        /// What it expected or found.
        what: &'static str,
    },
    /// Containers nested deeper than [`MAX_JSON_DEPTH`].
    #[error("JSON nested deeper than {MAX_JSON_DEPTH} levels at byte {offset}")]
    TooDeep {
        /// Where the parser stopped.
        offset: usize,
    },
    /// More than [`MAX_JSON_KEYS`] object members.
    #[error("JSON with more than {MAX_JSON_KEYS} keys at byte {offset}")]
    TooManyKeys {
        /// Where the parser stopped.
        offset: usize,
    },
    /// More than [`MAX_JSON_ARRAY_ELEMENTS`] array elements.
    #[error("JSON with more than {MAX_JSON_ARRAY_ELEMENTS} array elements at byte {offset}")]
    TooManyElements {
        /// Where the parser stopped.
        offset: usize,
    },
}

impl JsonError {
    /// The byte at which the parser stopped.
    pub fn offset(&self) -> usize {
        match self {
            Self::Invalid { offset, .. }
            | Self::TooDeep { offset }
            | Self::TooManyKeys { offset }
            | Self::TooManyElements { offset } => *offset,
        }
    }

    /// How the failure is counted.
    pub fn outcome(&self) -> LogProcessingOutcome {
        match self {
            Self::Invalid { .. } => LogProcessingOutcome::JsonInvalid,
            Self::TooDeep { .. } => LogProcessingOutcome::JsonTooDeep,
            Self::TooManyKeys { .. } | Self::TooManyElements { .. } => {
                LogProcessingOutcome::JsonTooLarge
            }
        }
    }
}

/// Whether `text` should be tried as JSON: its first non-blank character is `{`.
/// Other bodies are plain text and are not parsed (nor counted as failures).
pub fn looks_like_object(text: &str) -> bool {
    text.trim_start().starts_with('{')
}

/// Parses `text`, which must be one JSON object (blanks around it allowed), into its
/// members in order, duplicate keys keeping the last value.
pub fn parse_object(text: &str) -> Result<Vec<KeyValue>, JsonError> {
    let mut parser = Parser {
        text,
        bytes: text.as_bytes(),
        pos: 0,
        keys: 0,
        elements: 0,
    };
    parser.skip_blanks();
    if parser.peek() != Some(b'{') {
        return Err(parser.invalid("expected an object"));
    }
    parser.pos += 1;
    let members = parser.object(1)?;
    parser.skip_blanks();
    if parser.pos != parser.bytes.len() {
        return Err(parser.invalid("trailing characters after the object"));
    }
    Ok(members)
}

/// What [`upsert_all`] does with an entry whose key the target already has.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OnConflict {
    /// The entry's value replaces the existing one (the last one wins).
    Replace,
    /// The existing value stays and the entry is dropped.
    KeepExisting,
}

/// Puts `entries` into `target`: an entry whose key `target` has is resolved by
/// `on_conflict`, others are appended in order. Linear in both lengths.
pub fn upsert_all(target: &mut Vec<KeyValue>, entries: Vec<KeyValue>, on_conflict: OnConflict) {
    let resolve = |existing: &mut KeyValue, entry: KeyValue| {
        if on_conflict == OnConflict::Replace {
            existing.value = entry.value;
        }
    };
    if target.len() + entries.len() <= LINEAR_DEDUP_MAX {
        for entry in entries {
            match target.iter_mut().find(|kv| kv.key == entry.key) {
                Some(existing) => resolve(existing, entry),
                None => target.push(entry),
            }
        }
        return;
    }
    let mut index: HashMap<String, usize> = HashMap::with_capacity(target.len() + entries.len());
    for (i, kv) in target.iter().enumerate() {
        index.entry(kv.key.clone()).or_insert(i);
    }
    for entry in entries {
        match index.get(&entry.key) {
            Some(&i) => resolve(&mut target[i], entry),
            None => {
                index.insert(entry.key.clone(), target.len());
                target.push(entry);
            }
        }
    }
}

/// The parser's state: the text, the read position and what the limits have counted.
struct Parser<'a> {
    text: &'a str,
    bytes: &'a [u8],
    pos: usize,
    keys: usize,
    elements: usize,
}

impl Parser<'_> {
    fn peek(&self) -> Option<u8> {
        self.bytes.get(self.pos).copied()
    }

    fn invalid(&self, what: &'static str) -> JsonError {
        JsonError::Invalid {
            offset: self.pos,
            what,
        }
    }

    fn skip_blanks(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t' | b'\n' | b'\r')) {
            self.pos += 1;
        }
    }

    /// Whether a container just opened is empty (`close` follows, maybe after blanks);
    /// reads the `close` when it is.
    fn closes_at_once(&mut self, close: u8) -> bool {
        self.skip_blanks();
        let empty = self.peek() == Some(close);
        if empty {
            self.pos += 1;
        }
        empty
    }

    /// Checks that a container opened inside one at `depth` stays within the limit.
    fn enter(&self, depth: usize) -> Result<usize, JsonError> {
        if depth >= MAX_JSON_DEPTH {
            return Err(JsonError::TooDeep { offset: self.pos });
        }
        Ok(depth + 1)
    }

    /// An object's members; the `{` is read, the object is at `depth`.
    fn object(&mut self, depth: usize) -> Result<Vec<KeyValue>, JsonError> {
        let mut members = Vec::new();
        if self.closes_at_once(b'}') {
            return Ok(members);
        }
        loop {
            self.skip_blanks();
            if self.peek() != Some(b'"') {
                return Err(self.invalid("expected a key"));
            }
            self.keys += 1;
            if self.keys > MAX_JSON_KEYS {
                return Err(JsonError::TooManyKeys { offset: self.pos });
            }
            self.pos += 1;
            let key = self.string()?;
            self.skip_blanks();
            if self.peek() != Some(b':') {
                return Err(self.invalid("expected ':'"));
            }
            self.pos += 1;
            let value = self.value(depth)?;
            members.push(KeyValue {
                key,
                value: Some(value),
            });
            self.skip_blanks();
            match self.peek() {
                Some(b',') => self.pos += 1,
                Some(b'}') => {
                    self.pos += 1;
                    let mut unique = Vec::with_capacity(members.len());
                    upsert_all(&mut unique, members, OnConflict::Replace);
                    return Ok(unique);
                }
                _ => return Err(self.invalid("expected ',' or '}'")),
            }
        }
    }

    /// An array's elements; the `[` is read, the array is at `depth`.
    fn array(&mut self, depth: usize) -> Result<Vec<AnyValue>, JsonError> {
        let mut elements = Vec::new();
        if self.closes_at_once(b']') {
            return Ok(elements);
        }
        loop {
            self.elements += 1;
            if self.elements > MAX_JSON_ARRAY_ELEMENTS {
                return Err(JsonError::TooManyElements { offset: self.pos });
            }
            elements.push(self.value(depth)?);
            self.skip_blanks();
            match self.peek() {
                Some(b',') => self.pos += 1,
                Some(b']') => {
                    self.pos += 1;
                    return Ok(elements);
                }
                _ => return Err(self.invalid("expected ',' or ']'")),
            }
        }
    }

    /// A value inside a container at `depth`.
    fn value(&mut self, depth: usize) -> Result<AnyValue, JsonError> {
        self.skip_blanks();
        let value = match self.peek() {
            Some(b'{') => {
                let inner = self.enter(depth)?;
                self.pos += 1;
                Some(Value::KvlistValue(KeyValueList {
                    values: self.object(inner)?,
                }))
            }
            Some(b'[') => {
                let inner = self.enter(depth)?;
                self.pos += 1;
                Some(Value::ArrayValue(ArrayValue {
                    values: self.array(inner)?,
                }))
            }
            Some(b'"') => {
                self.pos += 1;
                Some(Value::StringValue(self.string()?))
            }
            Some(b't') => Some(Value::BoolValue(self.literal("true", true)?)),
            Some(b'f') => Some(Value::BoolValue(self.literal("false", false)?)),
            Some(b'n') => self.literal("null", None)?,
            Some(b'-' | b'0'..=b'9') => Some(self.number()?),
            None => return Err(self.invalid("unexpected end")),
            Some(_) => return Err(self.invalid("expected a value")),
        };
        Ok(AnyValue { value })
    }

    fn literal<T>(&mut self, word: &'static str, value: T) -> Result<T, JsonError> {
        if self.bytes[self.pos..].starts_with(word.as_bytes()) {
            self.pos += word.len();
            Ok(value)
        } else {
            Err(self.invalid("expected true, false or null"))
        }
    }

    fn digits(&mut self) -> usize {
        let start = self.pos;
        while matches!(self.peek(), Some(b'0'..=b'9')) {
            self.pos += 1;
        }
        self.pos - start
    }

    /// A number: an integer when it has no fraction or exponent and fits `i64`, else a
    /// double.
    fn number(&mut self) -> Result<Value, JsonError> {
        let start = self.pos;
        if self.peek() == Some(b'-') {
            self.pos += 1;
        }
        match self.peek() {
            Some(b'0') => self.pos += 1,
            Some(b'1'..=b'9') => {
                self.digits();
            }
            _ => return Err(self.invalid("expected a digit")),
        }
        let mut integer = true;
        if self.peek() == Some(b'.') {
            self.pos += 1;
            integer = false;
            if self.digits() == 0 {
                return Err(self.invalid("expected a digit after '.'"));
            }
        }
        if matches!(self.peek(), Some(b'e' | b'E')) {
            self.pos += 1;
            integer = false;
            if matches!(self.peek(), Some(b'+' | b'-')) {
                self.pos += 1;
            }
            if self.digits() == 0 {
                return Err(self.invalid("expected a digit in the exponent"));
            }
        }
        let text = &self.text[start..self.pos];
        if integer && let Ok(n) = text.parse::<i64>() {
            return Ok(Value::IntValue(n));
        }
        text.parse::<f64>()
            .map(Value::DoubleValue)
            .map_err(|_| self.invalid("number out of range"))
    }

    /// A string's text; the opening `"` is read. Runs without escapes are copied as
    /// slices (they start and end at ASCII bytes, so at character boundaries).
    fn string(&mut self) -> Result<String, JsonError> {
        let mut out = String::new();
        let mut run = self.pos;
        loop {
            match self.peek() {
                None => return Err(self.invalid("unterminated string")),
                Some(b'"') => {
                    out.push_str(&self.text[run..self.pos]);
                    self.pos += 1;
                    return Ok(out);
                }
                Some(b'\\') => {
                    out.push_str(&self.text[run..self.pos]);
                    self.pos += 1;
                    self.escape(&mut out)?;
                    run = self.pos;
                }
                Some(0..=0x1F) => return Err(self.invalid("control character in a string")),
                Some(_) => self.pos += 1,
            }
        }
    }

    /// One escape after its `\`. A lone UTF-16 surrogate becomes U+FFFD: log lines are
    /// kept, not refused, for a character a buggy logger split.
    fn escape(&mut self, out: &mut String) -> Result<(), JsonError> {
        let Some(byte) = self.peek() else {
            return Err(self.invalid("unterminated escape"));
        };
        self.pos += 1;
        let c = match byte {
            b'"' => '"',
            b'\\' => '\\',
            b'/' => '/',
            b'b' => '\u{8}',
            b'f' => '\u{c}',
            b'n' => '\n',
            b'r' => '\r',
            b't' => '\t',
            b'u' => self.unicode_escape()?,
            _ => return Err(self.invalid("unknown escape")),
        };
        out.push(c);
        Ok(())
    }

    /// The character of a `\uXXXX` escape (after the `u`), with its low surrogate when
    /// it is a high one.
    fn unicode_escape(&mut self) -> Result<char, JsonError> {
        let first = self.hex4()?;
        if !(0xD800..0xDC00).contains(&first) {
            return Ok(char::from_u32(first).unwrap_or(char::REPLACEMENT_CHARACTER));
        }
        if !self.bytes[self.pos..].starts_with(b"\\u") {
            return Ok(char::REPLACEMENT_CHARACTER);
        }
        let rewind = self.pos;
        self.pos += 2;
        let second = self.hex4()?;
        if !(0xDC00..0xE000).contains(&second) {
            // Not a pair: the second escape is read again as its own character.
            self.pos = rewind;
            return Ok(char::REPLACEMENT_CHARACTER);
        }
        let code = 0x10000 + ((first - 0xD800) << 10) + (second - 0xDC00);
        Ok(char::from_u32(code).unwrap_or(char::REPLACEMENT_CHARACTER))
    }

    fn hex4(&mut self) -> Result<u32, JsonError> {
        let digits = self
            .bytes
            .get(self.pos..self.pos + 4)
            .ok_or_else(|| self.invalid("short \\u escape"))?;
        let mut code = 0;
        for digit in digits {
            let value = (*digit as char)
                .to_digit(16)
                .ok_or_else(|| self.invalid("bad \\u escape"))?;
            code = code * 16 + value;
        }
        self.pos += 4;
        Ok(code)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(text: &str) -> AnyValue {
        AnyValue {
            value: Some(Value::StringValue(text.into())),
        }
    }

    fn kv(key: &str, value: AnyValue) -> KeyValue {
        KeyValue {
            key: key.into(),
            value: Some(value),
        }
    }

    #[test]
    fn objects_become_attributes_with_every_json_type() {
        let parsed = parse_object(
            r#" {"s":"a\"b\\\/\n\u00e9\ud83d\ude00","i":-12,"d":1.5e2,"big":123456789012345678901,
                "t":true,"f":false,"n":null,"a":[1,"x",[]],"o":{"k":{}}} "#,
        )
        .unwrap();
        let v = |value| AnyValue { value: Some(value) };
        let array = |values| v(Value::ArrayValue(ArrayValue { values }));
        let map = |values| v(Value::KvlistValue(KeyValueList { values }));
        let expected = vec![
            kv("s", s("a\"b\\/\né😀")),
            kv("i", v(Value::IntValue(-12))),
            kv("d", v(Value::DoubleValue(150.0))),
            kv("big", v(Value::DoubleValue(123456789012345678901.0))),
            kv("t", v(Value::BoolValue(true))),
            kv("f", v(Value::BoolValue(false))),
            kv("n", AnyValue { value: None }),
            kv(
                "a",
                array(vec![v(Value::IntValue(1)), s("x"), array(vec![])]),
            ),
            kv("o", map(vec![kv("k", map(vec![]))])),
        ];
        assert_eq!(parsed, expected);
    }

    #[test]
    fn duplicate_keys_keep_the_last_value_in_the_first_place() {
        assert_eq!(
            parse_object(r#"{"a":"1","b":"2","a":"3"}"#).unwrap(),
            vec![kv("a", s("3")), kv("b", s("2"))]
        );
        let many: String = (0..20)
            .map(|i| format!(r#""k{}":"{i}","#, i % 10))
            .collect();
        let parsed = parse_object(&format!("{{{}\"end\":\"e\"}}", many)).unwrap();
        assert_eq!(parsed.len(), 11);
        assert_eq!(parsed[3], kv("k3", s("13")));
    }

    #[test]
    fn lone_surrogates_become_replacement_characters() {
        assert_eq!(
            parse_object(r#"{"a":"\ud800x\udc00\ud800\u0041"}"#).unwrap(),
            vec![kv("a", s("\u{fffd}x\u{fffd}\u{fffd}A"))]
        );
    }

    #[test]
    fn malformed_documents_are_refused_with_where_and_why() {
        let cases: &[(&str, &str)] = &[
            ("", "expected an object"),
            ("[1]", "expected an object"),
            ("\"text\"", "expected an object"),
            ("{", "expected a key"),
            ("{\"a\"}", "expected ':'"),
            ("{\"a\":}", "expected a value"),
            ("{\"a\":1,}", "expected a key"),
            ("{\"a\":1 \"b\":2}", "expected ',' or '}'"),
            ("{\"a\":[1 2]}", "expected ',' or ']'"),
            ("{\"a\":tru}", "expected true, false or null"),
            ("{\"a\":01}", "expected ',' or '}'"),
            ("{\"a\":-}", "expected a digit"),
            ("{\"a\":1.}", "expected a digit after '.'"),
            ("{\"a\":1e}", "expected a digit in the exponent"),
            ("{\"a\":\"x", "unterminated string"),
            ("{\"a\":\"\\x\"}", "unknown escape"),
            ("{\"a\":\"\\u12\"}", "bad \\u escape"),
            ("{\"a\":\"\\u12", "short \\u escape"),
            ("{\"a\":\"\t\"}", "control character in a string"),
            ("{\"a\":1} x", "trailing characters after the object"),
            ("{\"a\":", "unexpected end"),
        ];
        for (text, what) in cases {
            match parse_object(text) {
                Err(JsonError::Invalid { what: got, .. }) => assert_eq!(got, *what, "{text:?}"),
                other => panic!("{text:?}: {other:?}"),
            }
        }
    }

    #[test]
    fn depth_up_to_the_limit_parses_and_one_more_is_refused() {
        let nested = |depth: usize| {
            // The top-level object is level 1; each `[` adds one.
            format!(
                "{{\"a\":{}{}}}",
                "[".repeat(depth - 1),
                "]".repeat(depth - 1)
            )
        };
        assert!(parse_object(&nested(MAX_JSON_DEPTH)).is_ok());
        let error = parse_object(&nested(MAX_JSON_DEPTH + 1)).unwrap_err();
        assert_eq!(error.outcome(), LogProcessingOutcome::JsonTooDeep);
        assert_eq!(
            error.offset(),
            5 + MAX_JSON_DEPTH - 1,
            "stops at the first [ too many"
        );
    }

    #[test]
    fn keys_and_elements_up_to_the_limits_parse_and_one_more_is_refused() {
        let object = |keys: usize| {
            let members: Vec<String> = (0..keys).map(|i| format!("\"k{i}\":{i}")).collect();
            format!("{{{}}}", members.join(","))
        };
        assert_eq!(
            parse_object(&object(MAX_JSON_KEYS)).unwrap().len(),
            MAX_JSON_KEYS
        );
        assert!(matches!(
            parse_object(&object(MAX_JSON_KEYS + 1)),
            Err(JsonError::TooManyKeys { .. })
        ));
        let array = |n: usize| format!("{{\"a\":[{}]}}", vec!["0"; n].join(","));
        assert!(parse_object(&array(MAX_JSON_ARRAY_ELEMENTS)).is_ok());
        let error = parse_object(&array(MAX_JSON_ARRAY_ELEMENTS + 1)).unwrap_err();
        assert!(matches!(error, JsonError::TooManyElements { .. }));
        assert_eq!(error.outcome(), LogProcessingOutcome::JsonTooLarge);
    }

    #[test]
    fn only_bodies_starting_with_a_brace_look_like_objects() {
        assert!(looks_like_object("  \n{\"a\":1}"));
        assert!(looks_like_object("{not json"));
        assert!(!looks_like_object("plain {text}"));
        assert!(!looks_like_object("[1,2]"));
        assert!(!looks_like_object(""));
    }

    #[test]
    fn upsert_resolves_existing_keys_and_appends_new_ones_at_any_size() {
        for n in [2, 50] {
            let mut target: Vec<KeyValue> =
                (0..n).map(|i| kv(&format!("k{i}"), s("old"))).collect();
            let entries = vec![kv("k1", s("new")), kv("extra", s("x"))];
            let mut kept = target.clone();
            upsert_all(&mut target, entries.clone(), OnConflict::Replace);
            assert_eq!(target.len(), n + 1);
            assert_eq!(target[1], kv("k1", s("new")));
            assert_eq!(target[n], kv("extra", s("x")));
            upsert_all(&mut kept, entries, OnConflict::KeepExisting);
            assert_eq!(kept[1], kv("k1", s("old")));
            assert_eq!(kept[n], kv("extra", s("x")));
        }
    }
}
