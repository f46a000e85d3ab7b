//! Docker's json-file log format: one JSON object per line,
//! `{"log":"<message>\n","stream":"stdout","time":"<RFC 3339>"}`, where a `log` without
//! its trailing `\n` is a partial line Docker split (at 16 KiB).

use std::borrow::Cow;

use serde::Deserialize;

use crate::cri::ParsedLine;
use crate::record::Stream;
use crate::timestamp::parse_rfc3339_nanos;

#[derive(Deserialize)]
struct DockerLine {
    log: String,
    stream: String,
    #[serde(default)]
    time: String,
}

/// Parses one json-file line (without its `\n`); `None` when it is not one.
pub fn parse(line: &[u8]) -> Option<ParsedLine<'static>> {
    if line.first() != Some(&b'{') {
        return None;
    }
    let parsed: DockerLine = serde_json::from_slice(line).ok()?;
    let stream = match parsed.stream.as_str() {
        "stdout" => Stream::Stdout,
        "stderr" => Stream::Stderr,
        _ => return None,
    };
    let mut message = parsed.log.into_bytes();
    let partial = message.last() != Some(&b'\n');
    if !partial {
        message.pop();
    }
    Some(ParsedLine {
        time_unix_nano: parse_rfc3339_nanos(parsed.time.as_bytes()),
        stream,
        partial,
        message: Cow::Owned(message),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cri::tests::check_table;

    #[test]
    fn docker_lines_parse_into_their_fields() {
        check_table(
            parse,
            &[
                (
                    r#"{"log":"hello\n","stream":"stdout","time":"2024-01-02T03:04:05.5Z"}"#,
                    Some((Stream::Stdout, false, "hello")),
                ),
                (
                    r#"{"log":"part","stream":"stderr","time":"2024-01-02T03:04:05Z"}"#,
                    Some((Stream::Stderr, true, "part")),
                ),
                (
                    r#"{"log":"tab\t\u00e9\n","stream":"stdout","time":"x","attrs":{"a":"b"}}"#,
                    Some((Stream::Stdout, false, "tab\té")),
                ),
                (
                    r#"{"log":"x\n","stream":"stdin","time":"2024-01-02T03:04:05Z"}"#,
                    None,
                ),
                (r#"{"stream":"stdout","time":"2024-01-02T03:04:05Z"}"#, None),
                (r#"{"log":"unterminated"#, None),
                ("2024-01-02T03:04:05Z stdout F cri", None),
            ],
        );
        let parsed =
            parse(br#"{"log":"a\n","stream":"stdout","time":"2024-01-02T03:04:05.5Z"}"#).unwrap();
        assert_eq!(parsed.time_unix_nano, Some(1_704_164_645_500_000_000));
    }
}
