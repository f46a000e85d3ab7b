//! The CRI log format containerd and CRI-O write below `/var/log/pods`:
//! `<RFC 3339 time> <stdout|stderr> <P|F>[:<more tags>] <message>`, where `P` marks a
//! partial line the runtime split (at 16 KiB) and `F` the line's last part.

use std::borrow::Cow;

use crate::record::Stream;
use crate::timestamp::parse_rfc3339_nanos;

/// A container log line after its format's framing was removed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParsedLine<'a> {
    /// The runtime's timestamp.
    pub time_unix_nano: Option<u64>,
    /// stdout or stderr.
    pub stream: Stream,
    /// Whether more of this line follows in the stream's next line.
    pub partial: bool,
    /// The message without framing and without its line end.
    pub message: Cow<'a, [u8]>,
}

/// Parses one CRI line (without its `\n`); `None` when it is not one.
pub fn parse(line: &[u8]) -> Option<ParsedLine<'_>> {
    let mut fields = line.splitn(4, |b| *b == b' ');
    let time = parse_rfc3339_nanos(fields.next()?)?;
    let stream = match fields.next()? {
        b"stdout" => Stream::Stdout,
        b"stderr" => Stream::Stderr,
        _ => return None,
    };
    let tags = fields.next()?;
    let partial = match tags.split(|b| *b == b':').next()? {
        b"P" => true,
        b"F" => false,
        _ => return None,
    };
    let message = fields.next().unwrap_or_default();
    Some(ParsedLine {
        time_unix_nano: Some(time),
        stream,
        partial,
        message: Cow::Borrowed(message),
    })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// The stream, partial flag and message expected of a line, or `None` if refused.
    pub(crate) type Expected = Option<(Stream, bool, &'static str)>;

    /// Checks a table of lines against a parser.
    pub(crate) fn check_table<'l>(
        parse: impl Fn(&'l [u8]) -> Option<ParsedLine<'l>>,
        cases: &[(&'l str, Expected)],
    ) {
        for (line, expected) in cases {
            let parsed = parse(line.as_bytes());
            let got = parsed.as_ref().map(|p| {
                (
                    p.stream,
                    p.partial,
                    std::str::from_utf8(&p.message).unwrap(),
                )
            });
            assert_eq!(got, *expected, "{line}");
        }
    }

    #[test]
    fn cri_lines_parse_into_their_fields() {
        check_table(
            parse,
            &[
                (
                    "2024-01-02T03:04:05.000000001Z stdout F hello world",
                    Some((Stream::Stdout, false, "hello world")),
                ),
                (
                    "2024-01-02T03:04:05.000000001Z stderr P part one ",
                    Some((Stream::Stderr, true, "part one ")),
                ),
                (
                    "2024-01-02T03:04:05Z stdout F:x extra tag",
                    Some((Stream::Stdout, false, "extra tag")),
                ),
                (
                    "2024-01-02T03:04:05Z stdout F ",
                    Some((Stream::Stdout, false, "")),
                ),
                (
                    "2024-01-02T03:04:05Z stdout F",
                    Some((Stream::Stdout, false, "")),
                ),
                ("2024-01-02T03:04:05Z stdin F nope", None),
                ("2024-01-02T03:04:05Z stdout X nope", None),
                ("yesterday stdout F nope", None),
                ("{\"log\":\"docker\"}", None),
            ],
        );
        let parsed = parse(b"2024-01-02T03:04:05.000000001Z stdout F x").unwrap();
        assert_eq!(parsed.time_unix_nano, Some(1_704_164_645_000_000_001));
    }
}
