//! Parsing what a target exposes: the Prometheus text format 0.0.4 and OpenMetrics
//! 1.0, chosen by the response's content type as Prometheus chooses.
//!
//! The parser borrows from the response body: names, label names and the series key are
//! slices of it, and a label value is copied only when it contains an escape. The body
//! is checked for UTF-8 once, up front. Every problem is an error for the whole scrape
//! with its line number and a reason: an agent must not guess at half a sample.
//!
//! Handled as Prometheus handles them: `# HELP`/`# TYPE` (and OpenMetrics `# UNIT`),
//! escaped label values (`\\`, `\"`, `\n`), trailing commas in label sets, `NaN` and
//! `±Inf`, optional timestamps (milliseconds in text, seconds in OpenMetrics),
//! OpenMetrics exemplars (parsed and skipped) and the mandatory `# EOF`.
//!
//! The work is linear in the body: each line is scanned a bounded number of times, no
//! line may exceed [`MAX_LINE_BYTES`], and a label set is checked for duplicate names
//! through a hash set once it has more than a few labels. The parser lives in its own
//! crate so that it can be fuzzed without the agent around it.

use std::borrow::Cow;

/// The Accept header Prometheus sends: OpenMetrics preferred, then text 0.0.4.
pub const ACCEPT_HEADER: &str = "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1";

/// The longest line accepted. Real expositions stay far below; a longer line is a
/// broken or hostile target, and refusing it bounds the work one line can cause.
pub const MAX_LINE_BYTES: usize = 256 * 1024;

/// Which format a body is in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// `text/plain; version=0.0.4` (and anything unrecognised, as Prometheus does).
    PrometheusText,
    /// `application/openmetrics-text`.
    OpenMetrics,
}

impl Format {
    /// Picks the parser for a response's `Content-Type`.
    pub fn from_content_type(content_type: Option<&str>) -> Self {
        match content_type {
            Some(ct) if ct.trim_start().starts_with("application/openmetrics-text") => {
                Self::OpenMetrics
            }
            _ => Self::PrometheusText,
        }
    }
}

/// A metric family's type, from `# TYPE`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum MetricType {
    /// A monotonic counter.
    Counter,
    /// A gauge.
    Gauge,
    /// A histogram (`_bucket`, `_sum`, `_count`).
    Histogram,
    /// An OpenMetrics gauge histogram.
    GaugeHistogram,
    /// A summary (quantiles, `_sum`, `_count`).
    Summary,
    /// An OpenMetrics info metric.
    Info,
    /// An OpenMetrics state set.
    StateSet,
    /// No or unknown type.
    #[default]
    Unknown,
}

impl MetricType {
    fn parse(text: &str) -> Option<Self> {
        Some(match text {
            "counter" => Self::Counter,
            "gauge" => Self::Gauge,
            "histogram" => Self::Histogram,
            "gaugehistogram" => Self::GaugeHistogram,
            "summary" => Self::Summary,
            "info" => Self::Info,
            "stateset" => Self::StateSet,
            "untyped" | "unknown" => Self::Unknown,
            _ => return None,
        })
    }

    /// The sample-name suffixes that belong to a family of this type.
    fn suffixes(self) -> &'static [&'static str] {
        match self {
            Self::Counter => &["_total", "_created"],
            Self::Histogram => &["_bucket", "_sum", "_count", "_created"],
            Self::GaugeHistogram => &["_bucket", "_gsum", "_gcount"],
            Self::Summary => &["_sum", "_count", "_created"],
            Self::Info => &["_info"],
            _ => &[],
        }
    }
}

/// One sample, borrowing from the body. Its labels are parsed only when asked for
/// ([`Sample::labels`]): a scraper that already knows the series (by its text) never
/// needs them.
#[derive(Debug, PartialEq)]
pub struct Sample<'a> {
    /// The series as written (`name{labels}`), unique per series within one scrape
    /// when targets write their label sets consistently; used as the cache key.
    pub series: &'a str,
    /// The metric name.
    pub name: &'a str,
    /// The text between the braces, empty when there are none.
    pub label_text: &'a str,
    /// The value.
    pub value: f64,
    /// The exposed timestamp in milliseconds, if any.
    pub timestamp_ms: Option<i64>,
    /// The type of the family the sample belongs to.
    pub metric_type: MetricType,
}

/// Why a body cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    /// Not UTF-8.
    #[error("the body is not valid UTF-8 (first invalid byte at offset {offset})")]
    InvalidUtf8 {
        /// Byte offset of the first invalid byte.
        offset: usize,
    },
    /// A line over [`MAX_LINE_BYTES`].
    #[error("line {line} is longer than {MAX_LINE_BYTES} bytes")]
    LineTooLong {
        /// 1-based line number.
        line: usize,
    },
    /// A malformed line.
    #[error("line {line}: {reason}")]
    Syntax {
        /// 1-based line number.
        line: usize,
        /// What is wrong.
        reason: String,
    },
    /// OpenMetrics without the closing `# EOF`.
    #[error("OpenMetrics exposition does not end with # EOF (truncated body?)")]
    MissingEof,
}

impl<'a> Sample<'a> {
    /// The labels in the order written, values unescaped; `Err` with the reason when
    /// the label set is malformed.
    pub fn labels(&self) -> Result<Vec<(&'a str, Cow<'a, str>)>, String> {
        let mut labels = Vec::new();
        if !self.label_text.is_empty() || self.series.ends_with('}') {
            // `label_text` excludes the closing brace; parse_labels expects it.
            let with_brace = &self.series[self.name.len() + 1..];
            let rest = parse_labels(with_brace, &mut labels)?;
            if !rest.is_empty() {
                return Err(format!("unexpected {rest:?} after the label set"));
            }
        }
        Ok(labels)
    }
}

/// Parses `body` and hands every sample to `on_sample`, which may refuse a sample with
/// a reason (reported with its line number). Returns the number of samples.
pub fn parse<'a>(
    body: &'a [u8],
    format: Format,
    mut on_sample: impl FnMut(Sample<'a>) -> Result<(), String>,
) -> Result<usize, ParseError> {
    let text = std::str::from_utf8(body).map_err(|e| ParseError::InvalidUtf8 {
        offset: e.valid_up_to(),
    })?;
    let open_metrics = format == Format::OpenMetrics;
    let mut family = ("", MetricType::Unknown);
    let mut count = 0;
    let mut saw_eof = false;
    for (index, line) in lines(text).enumerate() {
        let number = index + 1;
        if line.len() > MAX_LINE_BYTES {
            return Err(ParseError::LineTooLong { line: number });
        }
        let syntax = |reason: String| ParseError::Syntax {
            line: number,
            reason,
        };
        if saw_eof {
            if line.is_empty() {
                continue;
            }
            return Err(syntax("content after # EOF".into()));
        }
        let line = if open_metrics {
            line
        } else {
            trim_blanks(line)
        };
        if line.is_empty() {
            continue;
        }
        if let Some(comment) = line.strip_prefix('#') {
            if open_metrics && comment == " EOF" {
                saw_eof = true;
                continue;
            }
            if let Some((name, kind)) = parse_type_line(comment).map_err(syntax)? {
                family = (name, kind);
            }
            continue;
        }
        let sample = parse_sample(line, open_metrics, family).map_err(syntax)?;
        count += 1;
        on_sample(sample).map_err(syntax)?;
    }
    if open_metrics && !saw_eof {
        return Err(ParseError::MissingEof);
    }
    Ok(count)
}

/// The lines of `text`, split at `\n` exactly as `str::split('\n')` splits them, with
/// the vectorised `memchr` (the standard library's search went byte by byte, a tenth
/// of the scrape path's instructions).
fn lines(text: &str) -> impl Iterator<Item = &str> {
    let mut rest = Some(text);
    std::iter::from_fn(move || {
        let current = rest?;
        match memchr::memchr(b'\n', current.as_bytes()) {
            Some(end) => {
                // `\n` is ASCII, so both sides are char boundaries.
                rest = Some(&current[end + 1..]);
                Some(&current[..end])
            }
            None => {
                rest = None;
                Some(current)
            }
        }
    })
}

/// Which bytes a metric name may hold after its first (letters, digits, `_`, `:`).
const METRIC_NAME_BYTES: [bool; 256] = {
    let mut table = [false; 256];
    let mut byte = 0;
    while byte < 256 {
        let b = byte as u8;
        table[byte] = b.is_ascii_alphanumeric() || b == b'_' || b == b':';
        byte += 1;
    }
    table
};

/// Reads `# TYPE name type`; `Ok(None)` for other comments.
fn parse_type_line(comment: &str) -> Result<Option<(&str, MetricType)>, String> {
    let mut words = comment.split_ascii_whitespace();
    if words.next() != Some("TYPE") {
        return Ok(None);
    }
    let name = words.next().ok_or("# TYPE without a metric name")?;
    if !is_metric_name(name) {
        return Err(format!("invalid metric name {name:?} in # TYPE"));
    }
    let kind = words.next().ok_or("# TYPE without a type")?;
    let kind = MetricType::parse(kind).ok_or_else(|| format!("unknown metric type {kind:?}"))?;
    Ok(Some((name, kind)))
}

fn parse_sample<'a>(
    line: &'a str,
    open_metrics: bool,
    family: (&str, MetricType),
) -> Result<Sample<'a>, String> {
    // Scanned by bytes: every byte before `name_end` is ASCII, so it is a char
    // boundary, and only the first byte is left to check.
    let name_end = line
        .bytes()
        .position(|b| !METRIC_NAME_BYTES[usize::from(b)])
        .unwrap_or(line.len());
    let name = &line[..name_end];
    if name.is_empty() || name.as_bytes()[0].is_ascii_digit() {
        return Err(format!("invalid metric name at {:?}", excerpt(line)));
    }
    let mut rest = &line[name_end..];
    let mut label_text = "";
    if let Some(after_brace) = rest.strip_prefix('{') {
        let Some(end) = label_set_end(after_brace) else {
            // The full parser names what is wrong more precisely than the scan can.
            parse_labels(after_brace, &mut Vec::new())?;
            return Err("unterminated label set".into());
        };
        label_text = &after_brace[..end];
        rest = &after_brace[end + 1..];
    }
    let series = &line[..line.len() - rest.len()];
    // The value, an optional timestamp and (OpenMetrics only) an exemplar, separated
    // by blanks; scanned by bytes, as these are on every line.
    let rest = skip_blanks(rest);
    if rest.len() == line.len() - series.len() && !rest.is_empty() {
        return Err(format!(
            "expected a space before the value in {:?}",
            excerpt(line)
        ));
    }
    // Split off an OpenMetrics exemplar; it is not ingested. (The text format has
    // none, so its lines are not searched.)
    let values = if open_metrics {
        rest.split_once(" # ")
            .map_or(rest, |(values, _exemplar)| values)
    } else {
        rest
    };
    let (value_text, after) = split_field(values);
    if value_text.is_empty() {
        return Err(format!("missing value in {:?}", excerpt(line)));
    }
    let value = parse_float(value_text).ok_or_else(|| format!("invalid value {value_text:?}"))?;
    let (ts, after) = split_field(skip_blanks(after));
    let timestamp_ms = match ts {
        "" => None,
        ts if open_metrics => {
            let seconds = parse_float(ts).ok_or_else(|| format!("invalid timestamp {ts:?}"))?;
            if !seconds.is_finite() {
                return Err(format!("invalid timestamp {ts:?}"));
            }
            Some((seconds * 1000.0) as i64)
        }
        ts => Some(
            ts.parse::<i64>()
                .map_err(|_| format!("invalid timestamp {ts:?}"))?,
        ),
    };
    let (extra, _) = split_field(skip_blanks(after));
    if !extra.is_empty() {
        return Err(format!("unexpected {extra:?} after the timestamp"));
    }
    let metric_type = if belongs_to(name, family) {
        family.1
    } else {
        MetricType::Unknown
    };
    Ok(Sample {
        series,
        name,
        label_text,
        value,
        timestamp_ms,
        metric_type,
    })
}

/// A text-format line without the spaces, tabs and carriage returns around it.
fn trim_blanks(line: &str) -> &str {
    let is_blank = |b: &u8| matches!(b, b' ' | b'\t' | b'\r');
    let bytes = line.as_bytes();
    let start = bytes
        .iter()
        .position(|b| !is_blank(b))
        .unwrap_or(bytes.len());
    let end = bytes
        .iter()
        .rposition(|b| !is_blank(b))
        .map_or(start, |i| i + 1);
    // Blanks are ASCII, so both ends are char boundaries.
    &line[start..end]
}

/// `text` without its leading spaces and tabs.
fn skip_blanks(text: &str) -> &str {
    let blanks = text
        .bytes()
        .position(|b| b != b' ' && b != b'\t')
        .unwrap_or(text.len());
    // Blanks are ASCII, so `blanks` is a char boundary.
    &text[blanks..]
}

/// The field at the start of `text` (up to the first space or tab) and what follows.
fn split_field(text: &str) -> (&str, &str) {
    let end = text
        .bytes()
        .position(|b| b == b' ' || b == b'\t')
        .unwrap_or(text.len());
    text.split_at(end)
}

/// Where the label set that starts after `{` ends (the index of its `}`), honouring
/// quoted values and escapes; a fast scan, the labels themselves are parsed on demand.
fn label_set_end(text: &str) -> Option<usize> {
    let bytes = text.as_bytes();
    let mut in_quotes = false;
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'\\' if in_quotes => i += 1,
            b'"' => in_quotes = !in_quotes,
            b'}' if !in_quotes => return Some(i),
            _ => {}
        }
        i += 1;
    }
    None
}

/// Parses `name="value",…}` and returns what follows the closing brace.
fn parse_labels<'a>(
    mut rest: &'a str,
    labels: &mut Vec<(&'a str, Cow<'a, str>)>,
) -> Result<&'a str, String> {
    loop {
        rest = rest.trim_start_matches([' ', '\t']);
        if let Some(after) = rest.strip_prefix('}') {
            if labels.len() > DUPLICATE_SCAN_UP_TO {
                check_duplicates(labels)?;
            }
            return Ok(after);
        }
        let name_end = rest
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .ok_or("unterminated label set")?;
        let name = &rest[..name_end];
        if name.is_empty() || name.as_bytes()[0].is_ascii_digit() {
            return Err(format!("invalid label name at {:?}", excerpt(rest)));
        }
        rest = rest[name_end..].trim_start_matches([' ', '\t']);
        rest = rest
            .strip_prefix('=')
            .ok_or_else(|| format!("expected '=' after label {name:?}"))?
            .trim_start_matches([' ', '\t']);
        rest = rest
            .strip_prefix('"')
            .ok_or_else(|| format!("expected '\"' to open the value of label {name:?}"))?;
        let (value, after) =
            parse_quoted(rest).ok_or_else(|| format!("unterminated value of label {name:?}"))?;
        // A scan of the labels so far while they are few; past that, one set built at
        // the end, so that a line of 40,000 labels costs no 40,000 scans.
        if labels.len() < DUPLICATE_SCAN_UP_TO && labels.iter().any(|(n, _)| *n == name) {
            return Err(format!("label {name:?} appears twice in one series"));
        }
        labels.push((name, value));
        rest = after.trim_start_matches([' ', '\t']);
        if let Some(after_comma) = rest.strip_prefix(',') {
            rest = after_comma;
        } else if !rest.starts_with('}') {
            return Err(format!("expected ',' or '}}' after label {name:?}"));
        }
    }
}

/// How many labels [`parse_labels`] checks for duplicates one by one; a longer label
/// set is checked once, through a hash set, when it is complete.
const DUPLICATE_SCAN_UP_TO: usize = 16;

/// Refuses a label set in which a name appears twice: linear in the number of labels.
fn check_duplicates(labels: &[(&str, Cow<'_, str>)]) -> Result<(), String> {
    let mut seen = std::collections::HashSet::with_capacity(labels.len());
    match labels.iter().find(|(name, _)| !seen.insert(*name)) {
        Some((name, _)) => Err(format!("label {name:?} appears twice in one series")),
        None => Ok(()),
    }
}

/// Reads a quoted label value after its opening quote; returns the unescaped value and
/// what follows the closing quote.
fn parse_quoted(text: &str) -> Option<(Cow<'_, str>, &str)> {
    let bytes = text.as_bytes();
    let mut i = 0;
    let mut owned: Option<String> = None;
    let mut start = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'"' => {
                let value = match owned {
                    Some(mut s) => {
                        s.push_str(&text[start..i]);
                        Cow::Owned(s)
                    }
                    None => Cow::Borrowed(&text[..i]),
                };
                return Some((value, &text[i + 1..]));
            }
            b'\\' if i + 1 < bytes.len() => {
                let s = owned.get_or_insert_with(String::new);
                s.push_str(&text[start..i]);
                match bytes[i + 1] {
                    b'\\' => s.push('\\'),
                    b'"' => s.push('"'),
                    b'n' => s.push('\n'),
                    // Prometheus keeps unknown escapes as written.
                    other => {
                        s.push('\\');
                        s.push(char::from(other));
                        if !other.is_ascii() {
                            // Keep multi-byte characters intact: copy from the text.
                            s.pop();
                            let ch_len = text[i + 1..].chars().next().map_or(1, char::len_utf8);
                            s.push_str(&text[i + 1..i + 1 + ch_len]);
                            i += ch_len - 1;
                        }
                    }
                }
                i += 2;
                start = i;
            }
            _ => i += 1,
        }
    }
    None
}

/// Go's `strconv.ParseFloat` spellings that Prometheus accepts, through Rust's parser,
/// which already takes `NaN`, `Inf`, `+Inf`, `-Inf` and `infinity` in any case. The
/// common short spellings take [`parse_short_decimal`] first.
fn parse_float(text: &str) -> Option<f64> {
    parse_short_decimal(text.as_bytes()).or_else(|| text.parse::<f64>().ok())
}

/// Most significant digits the exact fast path takes: below 2^53, so the digits are
/// an exact `f64`.
const FAST_PATH_MAX_DIGITS: usize = 15;

/// Powers of ten that are exact `f64`s (up to 10^22).
const EXACT_POWERS_OF_TEN: [f64; 23] = [
    1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11, 1e12, 1e13, 1e14, 1e15, 1e16,
    1e17, 1e18, 1e19, 1e20, 1e21, 1e22,
];

/// `[-]digits[.digits]` with at most [`FAST_PATH_MAX_DIGITS`] digits, which is what
/// most exporters write, without the general parser: the digits and the power of ten
/// are both exact `f64`s, so one division is correctly rounded and gives the same
/// value as the general parser (Clinger's fast path). `None` for anything else.
fn parse_short_decimal(bytes: &[u8]) -> Option<f64> {
    let (negative, digits) = match bytes.split_first()? {
        (b'-', rest) => (true, rest),
        _ => (false, bytes),
    };
    if digits.is_empty() || digits.len() > FAST_PATH_MAX_DIGITS + 1 {
        return None;
    }
    let mut mantissa: u64 = 0;
    let mut count = 0;
    let mut point = None;
    for (i, &byte) in digits.iter().enumerate() {
        match byte {
            b'0'..=b'9' => {
                mantissa = mantissa * 10 + u64::from(byte - b'0');
                count += 1;
            }
            b'.' if point.is_none() => point = Some(i),
            _ => return None,
        }
    }
    if count == 0 || count > FAST_PATH_MAX_DIGITS {
        return None;
    }
    let scale = point.map_or(0, |i| digits.len() - i - 1);
    let value = mantissa as f64 / EXACT_POWERS_OF_TEN[scale];
    Some(if negative { -value } else { value })
}

fn belongs_to(name: &str, (family, kind): (&str, MetricType)) -> bool {
    if family.is_empty() {
        return false;
    }
    if name == family {
        return true;
    }
    name.strip_prefix(family)
        .is_some_and(|suffix| kind.suffixes().contains(&suffix))
}

/// Whether `name` is a Prometheus metric name.
pub fn is_metric_name(name: &str) -> bool {
    let mut bytes = name.bytes();
    matches!(bytes.next(), Some(b) if b.is_ascii_alphabetic() || b == b'_' || b == b':')
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b':')
}

/// The start of a line, for error messages.
fn excerpt(line: &str) -> &str {
    let mut end = line.len().min(60);
    while !line.is_char_boundary(end) {
        end -= 1;
    }
    &line[..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn collect(body: &str, format: Format) -> Result<Vec<String>, ParseError> {
        let mut out = Vec::new();
        parse(body.as_bytes(), format, |s| {
            let labels: Vec<String> = s
                .labels()?
                .iter()
                .map(|(n, v)| format!("{n}={v:?}"))
                .collect();
            out.push(format!(
                "{} {} {:?} {:?} {:?}",
                s.name,
                labels.join(","),
                s.value,
                s.timestamp_ms,
                s.metric_type
            ));
            Ok(())
        })?;
        Ok(out)
    }

    #[test]
    fn text_format_with_types_escapes_and_special_values() {
        let body = "# HELP http_requests_total Requests.\n\
                    # TYPE http_requests_total counter\n\
                    http_requests_total{method=\"post\",code=\"200\"} 1027 1395066363000\n\
                    http_requests_total{method=\"post\",code=\"400\",} 3\n\
                    \n\
                    # A plain comment\n\
                    msg{path=\"C:\\\\dir\",q=\"say \\\"hi\\\"\",nl=\"a\\nb\"} +Inf\n\
                    nan_metric NaN\n\
                    neg -Inf\n\
                    sci 1.5e-3\n\
                    # TYPE rpc_duration_seconds summary\n\
                    rpc_duration_seconds{quantile=\"0.5\"} 4773\n\
                    rpc_duration_seconds_sum 1.7560473e+07\n\
                    rpc_duration_seconds_count 2693\n\
                    # TYPE latency histogram\n\
                    latency_bucket{le=\"0.1\"} 33444\n\
                    latency_bucket{le=\"+Inf\"} 144320\n\
                    latency_count 144320\n\
                    empty_labels{} 1\n";
        let got = collect(body, Format::PrometheusText).unwrap();
        let expected = [
            r#"http_requests_total method="post",code="200" 1027.0 Some(1395066363000) Counter"#,
            r#"http_requests_total method="post",code="400" 3.0 None Counter"#,
            r#"msg path="C:\\dir",q="say \"hi\"",nl="a\nb" inf None Unknown"#,
            "nan_metric  NaN None Unknown",
            "neg  -inf None Unknown",
            "sci  0.0015 None Unknown",
            r#"rpc_duration_seconds quantile="0.5" 4773.0 None Summary"#,
            "rpc_duration_seconds_sum  17560473.0 None Summary",
            "rpc_duration_seconds_count  2693.0 None Summary",
            r#"latency_bucket le="0.1" 33444.0 None Histogram"#,
            r#"latency_bucket le="+Inf" 144320.0 None Histogram"#,
            "latency_count  144320.0 None Histogram",
            "empty_labels  1.0 None Unknown",
        ];
        assert_eq!(got, expected);
    }

    #[test]
    fn series_key_is_the_text_before_the_value() {
        let mut keys = Vec::new();
        parse(b"a{x=\"1\"} 1\nb 2 3\n", Format::PrometheusText, |s| {
            keys.push(s.series.to_owned());
            Ok(())
        })
        .unwrap();
        assert_eq!(keys, ["a{x=\"1\"}", "b"]);
    }

    #[test]
    fn openmetrics_with_seconds_exemplars_and_eof() {
        let body = "# TYPE foo counter\n\
                    # UNIT foo seconds\n\
                    foo_total{a=\"b\"} 17.0 1520879607.789 # {trace_id=\"KOO5S4vxi0o\"} 0.67\n\
                    foo_created 1520430000.123\n\
                    # TYPE bar info\n\
                    bar_info{version=\"1.2\"} 1\n\
                    # EOF\n";
        let got = collect(body, Format::OpenMetrics).unwrap();
        assert_eq!(
            got,
            [
                r#"foo_total a="b" 17.0 Some(1520879607789) Counter"#,
                "foo_created  1520430000.123 None Counter",
                r#"bar_info version="1.2" 1.0 None Info"#,
            ]
        );
    }

    #[test]
    fn openmetrics_needs_eof_and_nothing_after() {
        assert_eq!(
            collect("a 1\n", Format::OpenMetrics),
            Err(ParseError::MissingEof)
        );
        assert!(matches!(
            collect("a 1\n# EOF\nb 2\n", Format::OpenMetrics),
            Err(ParseError::Syntax { line: 3, .. })
        ));
    }

    #[test]
    fn content_negotiation() {
        assert_eq!(
            Format::from_content_type(Some(
                "application/openmetrics-text; version=1.0.0; charset=utf-8"
            )),
            Format::OpenMetrics
        );
        assert_eq!(
            Format::from_content_type(Some("text/plain; version=0.0.4")),
            Format::PrometheusText
        );
        assert_eq!(Format::from_content_type(None), Format::PrometheusText);
    }

    #[test]
    fn hostile_and_broken_input_fails_with_a_reason() {
        let cases: &[(&[u8], &str)] = &[
            (
                b"ok 1\nbad\xff 1\n",
                "the body is not valid UTF-8 (first invalid byte at offset 8)",
            ),
            (b"a{b=\"c} 1\n", "line 1: unterminated value of label \"b\""),
            (
                b"a{b=c} 1\n",
                "line 1: expected '\"' to open the value of label \"b\"",
            ),
            (
                b"a{b=\"1\",b=\"2\"} 1\n",
                "line 1: label \"b\" appears twice in one series",
            ),
            (
                b"a{1b=\"1\"} 1\n",
                "line 1: invalid label name at \"1b=\\\"1\\\"}\"",
            ),
            (b"a one\n", "line 1: invalid value \"one\""),
            (b"a 1 2 3\n", "line 1: unexpected \"3\" after the timestamp"),
            (b"a 1 1.5\n", "line 1: invalid timestamp \"1.5\""),
            (b"a\n", "line 1: missing value in \"a\""),
            (b"9a 1\n", "line 1: invalid metric name at \"9a 1\""),
            (
                b"# TYPE a teapot\n",
                "line 1: unknown metric type \"teapot\"",
            ),
            (
                b"a{b=\"1\"}1\n",
                "line 1: expected a space before the value in \"a{b=\\\"1\\\"}1\"",
            ),
        ];
        for (body, expected) in cases {
            let error =
                parse(body, Format::PrometheusText, |s| s.labels().map(|_| ())).unwrap_err();
            assert_eq!(
                error.to_string(),
                *expected,
                "{:?}",
                String::from_utf8_lossy(body)
            );
        }
        let huge = format!("a{{b=\"{}\"}} 1\n", "x".repeat(MAX_LINE_BYTES));
        assert_eq!(
            parse(huge.as_bytes(), Format::PrometheusText, |_| Ok(())),
            Err(ParseError::LineTooLong { line: 1 })
        );
    }

    /// Issue 13, finding 10 (scrape): a line of 20,000 labels is parsed in one pass
    /// (each name is looked up once in a set), and a duplicate among many labels is
    /// still refused.
    #[test]
    fn many_labels_are_checked_for_duplicates_in_one_pass() {
        let labels: Vec<String> = (0..20_000).map(|i| format!("l{i}=\"v\"")).collect();
        let line = format!("m{{{}}} 1\n", labels.join(","));
        let mut count = 0;
        parse(line.as_bytes(), Format::PrometheusText, |s| {
            count = s.labels()?.len();
            Ok(())
        })
        .unwrap();
        assert_eq!(count, 20_000);
        let duplicate = format!("m{{{},l7=\"again\"}} 1\n", labels[..100].join(","));
        let error = parse(duplicate.as_bytes(), Format::PrometheusText, |s| {
            s.labels().map(drop)
        })
        .unwrap_err();
        assert_eq!(
            error.to_string(),
            "line 1: label \"l7\" appears twice in one series"
        );
    }

    #[test]
    fn unknown_escapes_and_unicode_are_kept() {
        let got = collect("a{b=\"x\\ty\\ä\"} 1\n", Format::PrometheusText).unwrap();
        assert_eq!(got, [r#"a b="x\\ty\\ä" 1.0 None Unknown"#]);
    }

    #[test]
    fn short_decimals_take_the_fast_path_and_others_do_not() {
        for (text, expected) in [
            ("0", Some(0.0)),
            ("-0", Some(-0.0)),
            ("42", Some(42.0)),
            ("12.5", Some(12.5)),
            ("0.005", Some(0.005)),
            ("-3.", Some(-3.0)),
            (".5", Some(0.5)),
            ("999999999999999", Some(999_999_999_999_999.0)),
        ] {
            let got = parse_short_decimal(text.as_bytes());
            assert_eq!(got.map(f64::to_bits), expected.map(f64::to_bits), "{text}");
        }
        for text in [
            "",
            "-",
            ".",
            "1e3",
            "+1",
            "NaN",
            "+Inf",
            "1.2.3",
            "1_0",
            "9999999999999999",
        ] {
            assert_eq!(parse_short_decimal(text.as_bytes()), None, "{text:?}");
        }
    }

    proptest::proptest! {
        /// The fast path gives bit for bit what the general parser gives, for every
        /// spelling it takes.
        #[test]
        fn the_fast_path_agrees_with_the_general_parser(
            text in "-?[0-9]{0,17}(\\.[0-9]{0,17})?",
        ) {
            if let Some(fast) = parse_short_decimal(text.as_bytes()) {
                let general = text.parse::<f64>().map(f64::to_bits);
                proptest::prop_assert_eq!(Ok(fast.to_bits()), general);
            }
            proptest::prop_assert_eq!(
                parse_float(&text).map(f64::to_bits),
                text.parse::<f64>().ok().map(f64::to_bits)
            );
        }
    }
}
