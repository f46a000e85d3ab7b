//! Loki push requests (`logproto.PushRequest`, protobuf, snappy block compressed)
//! decoded under [`PushLimits`], for the receive gateway's Loki route: the declared
//! decompressed size first ([`crate::compression::snappy`]), then a scan that counts the
//! messages prost would decode the body into ([`PushLimits::max_otlp_messages`], the
//! same per-request bound as OTLP pushes: an empty entry is two bytes on the wire and a
//! struct in memory), then prost.
//!
//! A stream's labels travel as text in Prometheus notation (`{a="x", b="y"}`);
//! [`parse_stream_labels`] reads it under the label limits of remote-write series
//! (count, name and value length) and [`format_stream_labels`] writes it back, sorted by
//! name, with the escapes Loki's parser reads (`\\`, `\"`, `\n`, `\t`, `\r`).

use kaas_proto::loki::PushRequest;
use prost::Message;

use crate::wire::{MessageShape, scan};
use crate::{DecodeError, PushLimits, quoted};

/// Protobuf messages nest no deeper than this in a push (request, stream, entry,
/// timestamp or metadata pair); values do not nest at all.
const MAX_DEPTH: usize = 0;

/// Decodes a snappy-compressed Loki push body under `limits`.
pub fn decode(body: &[u8], limits: &PushLimits) -> Result<PushRequest, DecodeError> {
    let raw = crate::compression::snappy(body, limits.max_decompressed_bytes)?;
    let mut messages = 0;
    scan(
        &raw,
        Shape::Request,
        0,
        MAX_DEPTH,
        &mut messages,
        limits.max_otlp_messages,
    )?;
    PushRequest::decode(raw.as_slice())
        .map_err(|e| DecodeError::Malformed(format!("the body is not a Loki PushRequest: {e}")))
}

/// The message types of `logproto.PushRequest`.
#[derive(Clone, Copy, Debug)]
enum Shape {
    Request,
    Stream,
    Entry,
    Leaf,
}

impl MessageShape for Shape {
    fn child(self, number: u32) -> Option<Self> {
        Some(match (self, number) {
            (Self::Request, 1) => Self::Stream,
            (Self::Stream, 2) => Self::Entry,
            (Self::Entry, 1 | 3) => Self::Leaf,
            _ => return None,
        })
    }
}

/// Reads a stream's labels, `{name="value", …}`, under the label limits of `limits`.
/// Whitespace between the parts is allowed; names are Prometheus label names.
pub fn parse_stream_labels(
    text: &str,
    limits: &PushLimits,
) -> Result<Vec<(String, String)>, DecodeError> {
    let malformed = |why: &str| {
        DecodeError::Malformed(format!(
            "stream labels {:?}: {why}",
            quoted(text.trim_start())
        ))
    };
    let inner = text
        .trim()
        .strip_prefix('{')
        .and_then(|rest| rest.strip_suffix('}'))
        .ok_or_else(|| malformed("not enclosed in braces"))?;
    let mut labels = Vec::new();
    let mut rest = inner.trim_start();
    while !rest.is_empty() {
        let end = rest
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(rest.len());
        let name = &rest[..end];
        if name.is_empty() || name.starts_with(|c: char| c.is_ascii_digit()) {
            return Err(malformed("a label name is missing or not a label name"));
        }
        if name.len() > limits.max_label_name_bytes {
            return Err(DecodeError::LabelNameTooLong {
                name: quoted(name),
                length: name.len(),
                limit: limits.max_label_name_bytes,
            });
        }
        rest = rest[end..].trim_start();
        rest = rest
            .strip_prefix('=')
            .ok_or_else(|| malformed("a label name is not followed by ="))?
            .trim_start();
        let (value, after) = unquote(rest).ok_or_else(|| malformed("a value is not quoted"))?;
        if value.len() > limits.max_label_value_bytes {
            return Err(DecodeError::LabelValueTooLong {
                name: quoted(name),
                length: value.len(),
                limit: limits.max_label_value_bytes,
            });
        }
        if labels.len() == limits.max_labels_per_series {
            return Err(DecodeError::TooManyLabels {
                metric: quoted(text),
                limit: limits.max_labels_per_series,
            });
        }
        if labels.iter().any(|(n, _)| n == name) {
            return Err(malformed(&format!("label {name:?} is set twice")));
        }
        labels.push((name.to_owned(), value));
        rest = after.trim_start();
        match rest.strip_prefix(',') {
            Some(after_comma) => rest = after_comma.trim_start(),
            None if rest.is_empty() => {}
            None => return Err(malformed("labels are not separated by commas")),
        }
    }
    Ok(labels)
}

/// The quoted value at the start of `text` and what follows it.
fn unquote(text: &str) -> Option<(String, &str)> {
    let body = text.strip_prefix('"')?;
    let mut value = String::new();
    let mut chars = body.char_indices();
    while let Some((at, c)) = chars.next() {
        match c {
            '"' => return Some((value, &body[at + 1..])),
            '\\' => value.push(match chars.next()?.1 {
                '\\' => '\\',
                '"' => '"',
                'n' => '\n',
                't' => '\t',
                'r' => '\r',
                _ => return None,
            }),
            c => value.push(c),
        }
    }
    None
}

/// `labels` in Prometheus notation, sorted by name.
pub fn format_stream_labels(labels: &[(String, String)]) -> String {
    let mut sorted: Vec<&(String, String)> = labels.iter().collect();
    sorted.sort();
    let mut out = String::from("{");
    for (i, (name, value)) in sorted.into_iter().enumerate() {
        if i > 0 {
            out.push_str(", ");
        }
        out.push_str(name);
        out.push_str("=\"");
        for c in value.chars() {
            match c {
                '\\' => out.push_str("\\\\"),
                '"' => out.push_str("\\\""),
                '\n' => out.push_str("\\n"),
                '\t' => out.push_str("\\t"),
                '\r' => out.push_str("\\r"),
                c => out.push(c),
            }
        }
        out.push('"');
    }
    out.push('}');
    out
}

#[cfg(test)]
mod tests {
    use kaas_proto::loki::{EntryAdapter, StreamAdapter};

    use super::*;

    fn compressed(request: &PushRequest) -> Vec<u8> {
        snap::raw::Encoder::new()
            .compress_vec(&request.encode_to_vec())
            .unwrap()
    }

    fn pairs(labels: &[(&str, &str)]) -> Vec<(String, String)> {
        labels
            .iter()
            .map(|(n, v)| ((*n).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn labels_round_trip_through_the_notation_with_every_escape() {
        let labels = pairs(&[("pod", "a\"b\\c\nd\te\rf"), ("app", "x, y=z}")]);
        let text = format_stream_labels(&labels);
        assert_eq!(text, r#"{app="x, y=z}", pod="a\"b\\c\nd\te\rf"}"#);
        let mut back = parse_stream_labels(&text, &PushLimits::default()).unwrap();
        back.sort();
        let mut expected = labels;
        expected.sort();
        assert_eq!(back, expected);
        assert_eq!(
            parse_stream_labels(" { a = \"1\" ,b=\"2\", } ", &PushLimits::default()).unwrap(),
            pairs(&[("a", "1"), ("b", "2")])
        );
        assert!(
            parse_stream_labels("{}", &PushLimits::default())
                .unwrap()
                .is_empty()
        );
    }

    #[test]
    fn malformed_labels_are_refused_with_a_reason() {
        for (text, reason) in [
            ("a=\"1\"", "braces"),
            ("{1a=\"1\"}", "not a label name"),
            ("{a.b=\"1\"}", "followed by ="),
            ("{a=1}", "not quoted"),
            ("{a=\"1}", "not quoted"),
            ("{a=\"\\x\"}", "not quoted"),
            ("{a=\"1\" b=\"2\"}", "commas"),
            ("{a=\"1\", a=\"2\"}", "twice"),
        ] {
            let error = parse_stream_labels(text, &PushLimits::default()).unwrap_err();
            assert!(error.to_string().contains(reason), "{text}: {error}");
        }
    }

    #[test]
    fn the_label_limits_hold() {
        let limits = PushLimits {
            max_labels_per_series: 2,
            max_label_name_bytes: 4,
            max_label_value_bytes: 3,
            ..PushLimits::default()
        };
        let refused = |text: &str| parse_stream_labels(text, &limits).unwrap_err().reason();
        assert_eq!(refused("{a=\"1\", b=\"2\", c=\"3\"}"), "too_many_labels");
        assert_eq!(refused("{abcde=\"1\"}"), "label_name_too_long");
        assert_eq!(refused("{a=\"1234\"}"), "label_value_too_long");
        assert!(parse_stream_labels("{abcd=\"123\", b=\"\"}", &limits).is_ok());
    }

    #[test]
    fn a_push_decodes_and_empty_entries_are_refused_by_count() {
        let stream = |entries: usize| StreamAdapter {
            labels: "{a=\"1\"}".into(),
            entries: vec![EntryAdapter::default(); entries],
            hash: 0,
        };
        let sent = PushRequest {
            streams: vec![stream(3)],
        };
        assert_eq!(
            decode(&compressed(&sent), &PushLimits::default()).unwrap(),
            sent
        );
        let limits = PushLimits {
            max_otlp_messages: 100,
            ..PushLimits::default()
        };
        let many = PushRequest {
            streams: vec![stream(200)],
        };
        assert_eq!(
            decode(&compressed(&many), &limits).unwrap_err().reason(),
            "too_many_messages"
        );
        let small = PushLimits {
            max_decompressed_bytes: 4,
            ..PushLimits::default()
        };
        assert_eq!(
            decode(&compressed(&sent), &small).unwrap_err().reason(),
            "decompressed_too_large"
        );
        assert_eq!(
            decode(b"\x05not snappy", &PushLimits::default())
                .unwrap_err()
                .reason(),
            "malformed"
        );
    }
}
