//! The streaming pass over the body: serde visitors that read the span list into
//! [`ZipkinSpan`]s, counting and bounding as they go (the module's documentation says
//! what is bounded and how).

use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;

use kaas_proto::otlp::span::{Event, Link};
use kaas_proto::otlp::{KeyValue, SpanKind, any_value::Value};
use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};

use super::convert::key_value;
use super::{
    Endpoint, FLAG_SAMPLED, FLAGS_PARENT_IS_REMOTE, MAX_ANNOTATIONS_PER_SPAN, MAX_ID_TEXT_BYTES,
    MAX_IP_TEXT_BYTES, MAX_LINKS, MAX_TAGS_PER_SPAN, MAX_VALUE_BYTES, ZipkinSpan,
};
use crate::otlp_json::{FieldName, MAX_PARSER_MESSAGE_BYTES, cut};
use crate::{DecodeError, PushLimits, quoted};

/// The spans of `raw`, read under `limits`.
pub(super) fn spans(raw: &[u8], limits: &PushLimits) -> Result<Vec<ZipkinSpan>, DecodeError> {
    let mut reader = Reader {
        limits,
        messages: 0,
        span: 0,
        refusal: None,
    };
    let mut parser = serde_json::Deserializer::from_slice(raw);
    let spans = SpanList(&mut reader)
        .deserialize(&mut parser)
        .and_then(|spans| parser.end().map(|()| spans));
    spans.map_err(|error| {
        reader.refusal.take().unwrap_or_else(|| {
            DecodeError::Malformed(format!(
                "the body is not a Zipkin v2 JSON list of spans: {}",
                cut(&error.to_string(), MAX_PARSER_MESSAGE_BYTES)
            ))
        })
    })
}

/// Where the pass is, what it has cost, and why it was refused when it was.
struct Reader<'l> {
    limits: &'l PushLimits,
    messages: usize,
    /// The index of the span being read.
    span: usize,
    /// The limit a refusal hit, reported instead of the parser's error it aborts with.
    refusal: Option<DecodeError>,
}

impl Reader<'_> {
    /// Counts one message of the OTLP request.
    fn count<E: de::Error>(&mut self) -> Result<(), E> {
        self.messages += 1;
        if self.messages > self.limits.max_otlp_messages {
            let limit = self.limits.max_otlp_messages;
            return Err(self.refuse(DecodeError::TooManyMessages { limit }));
        }
        Ok(())
    }

    fn refuse<E: de::Error>(&mut self, refusal: DecodeError) -> E {
        let error = E::custom(&refusal);
        self.refusal = Some(refusal);
        error
    }

    /// A malformed field of the current span, for the parser's error (which adds the
    /// line and column).
    fn malformed<E: de::Error>(&self, what: fmt::Arguments) -> E {
        E::custom(format!("the span at index {}: {what}", self.span))
    }
}

/// The body: an array of spans.
struct SpanList<'r, 'l>(&'r mut Reader<'l>);

impl<'de> DeserializeSeed<'de> for SpanList<'_, '_> {
    type Value = Vec<ZipkinSpan>;

    fn deserialize<D: Deserializer<'de>>(self, json: D) -> Result<Self::Value, D::Error> {
        json.deserialize_seq(self)
    }
}

impl<'de> Visitor<'de> for SpanList<'_, '_> {
    type Value = Vec<ZipkinSpan>;

    fn expecting(&self, formatter: &mut fmt::Formatter) -> fmt::Result {
        formatter.write_str("a JSON array of Zipkin v2 spans")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut spans = Vec::new();
        while let Some(span) = seq.next_element_seed(SpanSeed(&mut *self.0))? {
            spans.push(span);
            self.0.span += 1;
        }
        Ok(spans)
    }
}

/// The fields of a span, as `zipkin2-api.yaml` names them.
const SPAN_FIELDS: &[&str] = &[
    "traceId",
    "id",
    "parentId",
    "name",
    "kind",
    "timestamp",
    "duration",
    "debug",
    "shared",
    "localEndpoint",
    "remoteEndpoint",
    "annotations",
    "tags",
];

struct SpanSeed<'r, 'l>(&'r mut Reader<'l>);

impl<'de> DeserializeSeed<'de> for SpanSeed<'_, '_> {
    type Value = ZipkinSpan;

    fn deserialize<D: Deserializer<'de>>(self, json: D) -> Result<ZipkinSpan, D::Error> {
        json.deserialize_map(self)
    }
}

/// A span's fields as they came, before they are checked together.
#[derive(Default)]
struct SpanFields {
    trace_id: Option<String>,
    id: Option<String>,
    parent_id: Option<String>,
    name: Option<String>,
    kind: Option<String>,
    timestamp: Option<u64>,
    duration: Option<u64>,
    debug: Option<bool>,
    shared: Option<bool>,
    local: Option<Endpoint>,
    remote: Option<Endpoint>,
    events: Vec<Event>,
    tags: BTreeMap<String, String>,
}

impl<'de> Visitor<'de> for SpanSeed<'_, '_> {
    type Value = ZipkinSpan;

    fn expecting(&self, formatter: &mut fmt::Formatter) -> fmt::Result {
        formatter.write_str("a Zipkin v2 span object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<ZipkinSpan, A::Error> {
        let reader = self.0;
        reader.count()?;
        let name_limit = reader.limits.max_label_value_bytes;
        let mut fields = SpanFields::default();
        while let Some(field) = map.next_key_seed(FieldName(SPAN_FIELDS))? {
            let Some(field) = field else {
                map.next_value::<IgnoredAny>()?;
                continue;
            };
            match field {
                "traceId" => {
                    fields.trace_id =
                        map.next_value_seed(text(reader, "the traceId", MAX_ID_TEXT_BYTES))?;
                }
                "id" => {
                    fields.id = map.next_value_seed(text(reader, "the id", MAX_ID_TEXT_BYTES))?
                }
                "parentId" => {
                    fields.parent_id =
                        map.next_value_seed(text(reader, "the parentId", MAX_ID_TEXT_BYTES))?;
                }
                "name" => {
                    fields.name = map.next_value_seed(text(reader, "the name", name_limit))?
                }
                "kind" => {
                    fields.kind = map.next_value_seed(text(reader, "the kind", name_limit))?
                }
                "timestamp" => fields.timestamp = map.next_value()?,
                "duration" => fields.duration = map.next_value()?,
                "debug" => fields.debug = map.next_value()?,
                "shared" => fields.shared = map.next_value()?,
                "localEndpoint" => {
                    fields.local = map.next_value_seed(EndpointSeed {
                        reader: &mut *reader,
                        which: "localEndpoint",
                    })?;
                }
                "remoteEndpoint" => {
                    fields.remote = map.next_value_seed(EndpointSeed {
                        reader: &mut *reader,
                        which: "remoteEndpoint",
                    })?;
                }
                "annotations" => map.next_value_seed(Annotations {
                    reader: &mut *reader,
                    into: &mut fields.events,
                })?,
                _ => map.next_value_seed(Tags {
                    reader: &mut *reader,
                    into: &mut fields.tags,
                })?,
            }
        }
        checked(fields, reader)
    }
}

/// The span from its fields: required ids present and valid, times in range.
fn checked<E: de::Error>(mut fields: SpanFields, reader: &mut Reader) -> Result<ZipkinSpan, E> {
    let trace_id = fields
        .trace_id
        .ok_or_else(|| reader.malformed::<E>(format_args!("traceId is missing")))?;
    let trace_id = hex_id::<16, E>(&trace_id, "traceId", reader)?;
    let id = fields
        .id
        .ok_or_else(|| reader.malformed::<E>(format_args!("id is missing")))?;
    let id = hex_id::<8, E>(&id, "id", reader)?;
    let parent_id = match fields.parent_id.as_deref() {
        None | Some("") => None,
        Some(parent) => match hex_id::<8, E>(parent, "parentId", reader) {
            Ok(parent) if parent != id => Some(parent),
            Ok(_) => None,
            // All zeros is "no parent" (zipkin-go reads it so).
            Err(_) if parent.bytes().all(|b| b == b'0') && parent.len() <= 16 => None,
            Err(error) => return Err(error),
        },
    };
    let nanos = |micros: u64, what: &str| {
        micros.checked_mul(1000).ok_or_else(|| {
            reader.malformed::<E>(format_args!(
                "the {what} {micros} µs is past the latest time OTLP holds (year 2554)"
            ))
        })
    };
    let duration = nanos(fields.duration.unwrap_or(0), "duration")?;
    let timestamp = fields.timestamp.unwrap_or(0);
    let (start, start_absent) = if timestamp == 0 {
        (0, true)
    } else {
        (nanos(timestamp, "timestamp")?, false)
    };
    let end = start.checked_add(duration).ok_or_else(|| {
        reader.malformed::<E>(format_args!(
            "the timestamp plus the duration is past the latest time OTLP holds (year 2554)"
        ))
    })?;
    let mut flags = 0;
    if fields.debug == Some(true) {
        flags |= FLAG_SAMPLED;
    }
    if fields.shared == Some(true) {
        flags |= FLAGS_PARENT_IS_REMOTE;
    }
    let kind = match fields.kind.as_deref() {
        Some("CLIENT") => Some(SpanKind::Client),
        Some("SERVER") => Some(SpanKind::Server),
        Some("PRODUCER") => Some(SpanKind::Producer),
        Some("CONSUMER") => Some(SpanKind::Consumer),
        _ => None,
    };
    let links = links_of(&mut fields.tags, reader)?;
    Ok(ZipkinSpan {
        trace_id,
        id,
        parent_id,
        name: fields.name.unwrap_or_default(),
        kind,
        start,
        end,
        start_absent,
        flags,
        local: fields.local,
        remote: fields.remote,
        events: fields.events,
        links,
        tags: fields.tags,
    })
}

/// The links in the tags `otlp.link.0`, `otlp.link.1`, … up to the first missing
/// index: each tag in the Collector's exporter form
/// (`traceId|spanId|traceState|{json attributes}|dropped`) becomes a link and leaves
/// the tags; one in another form stays a tag.
fn links_of<E: de::Error>(
    tags: &mut BTreeMap<String, String>,
    reader: &mut Reader,
) -> Result<Vec<Link>, E> {
    let mut links = Vec::new();
    for index in 0..MAX_LINKS {
        let key = format!("otlp.link.{index}");
        let Some(value) = tags.get(&key) else {
            break;
        };
        if let Some(link) = link_of(value, reader)? {
            tags.remove(&key);
            links.push(link);
        }
    }
    Ok(links)
}

/// A link in the Collector's exporter form; `None` when `value` is in another.
fn link_of<E: de::Error>(value: &str, reader: &mut Reader) -> Result<Option<Link>, E> {
    let mut parts = value.splitn(4, '|');
    let (Some(trace_id), Some(span_id), Some(trace_state), Some(rest)) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Ok(None);
    };
    let Some((json, dropped)) = rest.rsplit_once('|') else {
        return Ok(None);
    };
    let (Some(trace_id), Some(span_id), Ok(dropped)) = (
        link_id::<16>(trace_id),
        link_id::<8>(span_id),
        dropped.parse::<u32>(),
    ) else {
        return Ok(None);
    };
    let Some(attributes) = attributes_of(json, reader)? else {
        return Ok(None);
    };
    Ok(Some(Link {
        trace_id: trace_id.to_vec(),
        span_id: span_id.to_vec(),
        trace_state: trace_state.to_owned(),
        attributes,
        dropped_attributes_count: dropped,
        flags: 0,
    }))
}

/// A linked span's id: exactly `2 N` hex digits, or empty for zeros (as the
/// Collector reads it).
fn link_id<const N: usize>(text: &str) -> Option<[u8; N]> {
    let mut id = [0u8; N];
    if !text.is_empty() {
        hex::decode_to_slice(text, &mut id).ok()?;
    }
    Some(id)
}

/// An id of `N` bytes from 1 to `2 N` hex digits, left-padded with zeros (zipkin-go
/// and the Zipkin server read shorter ids so); all zeros is not an id.
fn hex_id<const N: usize, E: de::Error>(
    text: &str,
    what: &str,
    reader: &Reader,
) -> Result<[u8; N], E> {
    let valid =
        !text.is_empty() && text.len() <= 2 * N && text.bytes().all(|b| b.is_ascii_hexdigit());
    if !valid {
        return Err(reader.malformed(format_args!(
            "{what} {:?} is not 1 to {} hex digits",
            quoted(text),
            2 * N
        )));
    }
    let padded = format!("{text:0>width$}", width = 2 * N);
    let mut id = [0u8; N];
    hex::decode_to_slice(padded, &mut id)
        .map_err(|_| reader.malformed::<E>(format_args!("{what} is not hex")))?;
    if id == [0u8; N] {
        return Err(reader.malformed(format_args!("{what} is all zeros")));
    }
    Ok(id)
}

/// A string of at most `limit` bytes; `null` is `None`.
struct Text<'r, 'l, 'k> {
    reader: &'r mut Reader<'l>,
    what: &'static str,
    /// The tag the string belongs to, if any.
    key: &'k str,
    limit: usize,
}

fn text<'r, 'l>(
    reader: &'r mut Reader<'l>,
    what: &'static str,
    limit: usize,
) -> Text<'r, 'l, 'static> {
    Text {
        reader,
        what,
        key: "",
        limit,
    }
}

impl Text<'_, '_, '_> {
    fn check<E: de::Error>(self, length: usize) -> Result<(), E> {
        if length <= self.limit {
            return Ok(());
        }
        let what = if self.key.is_empty() {
            format!("{} of the span at index {}", self.what, self.reader.span)
        } else {
            format!(
                "{} {:?} of the span at index {}",
                self.what,
                quoted(self.key),
                self.reader.span
            )
        };
        let limit = self.limit;
        Err(self.reader.refuse(DecodeError::StringTooLong {
            what,
            length,
            limit,
        }))
    }
}

impl<'de> DeserializeSeed<'de> for Text<'_, '_, '_> {
    type Value = Option<String>;

    fn deserialize<D: Deserializer<'de>>(self, json: D) -> Result<Option<String>, D::Error> {
        json.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Text<'_, '_, '_> {
    type Value = Option<String>;

    fn expecting(&self, formatter: &mut fmt::Formatter) -> fmt::Result {
        if self.key.is_empty() {
            write!(formatter, "a string for {}", self.what)
        } else {
            write!(
                formatter,
                "a string for {} {:?}",
                self.what,
                quoted(self.key)
            )
        }
    }

    fn visit_unit<E: de::Error>(self) -> Result<Option<String>, E> {
        Ok(None)
    }

    fn visit_str<E: de::Error>(self, value: &str) -> Result<Option<String>, E> {
        self.check(value.len())?;
        Ok(Some(value.to_owned()))
    }

    fn visit_string<E: de::Error>(self, value: String) -> Result<Option<String>, E> {
        self.check(value.len())?;
        Ok(Some(value))
    }
}

/// `tags`: an object of strings, at most [`MAX_TAGS_PER_SPAN`]; a key given twice
/// keeps its last value.
struct Tags<'r, 'l> {
    reader: &'r mut Reader<'l>,
    into: &'r mut BTreeMap<String, String>,
}

impl<'de> DeserializeSeed<'de> for Tags<'_, '_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, json: D) -> Result<(), D::Error> {
        json.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Tags<'_, '_> {
    type Value = ();

    fn expecting(&self, formatter: &mut fmt::Formatter) -> fmt::Result {
        formatter.write_str("an object of string tags")
    }

    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        Ok(())
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let reader = self.reader;
        let key_limit = reader.limits.max_label_name_bytes;
        let mut seen = 0;
        while let Some(key) = map.next_key_seed(text(reader, "a tag key", key_limit))? {
            seen += 1;
            if seen > MAX_TAGS_PER_SPAN {
                let span = reader.span;
                return Err(reader.refuse(DecodeError::TooManyInSpan {
                    span,
                    what: "tags",
                    limit: MAX_TAGS_PER_SPAN,
                }));
            }
            reader.count()?;
            let value = map.next_value_seed(Text {
                reader: &mut *reader,
                what: "the value of tag",
                key: key.as_deref().unwrap_or_default(),
                limit: MAX_VALUE_BYTES,
            })?;
            if let Some(key) = key {
                // A `null` value is the empty string, as Go's JSON reader makes it.
                self.into.insert(key, value.unwrap_or_default());
            }
        }
        Ok(())
    }
}

/// `annotations`: an array of `{timestamp, value}`, at most
/// [`MAX_ANNOTATIONS_PER_SPAN`].
struct Annotations<'r, 'l> {
    reader: &'r mut Reader<'l>,
    into: &'r mut Vec<Event>,
}

impl<'de> DeserializeSeed<'de> for Annotations<'_, '_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, json: D) -> Result<(), D::Error> {
        json.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Annotations<'_, '_> {
    type Value = ();

    fn expecting(&self, formatter: &mut fmt::Formatter) -> fmt::Result {
        formatter.write_str("an array of annotations")
    }

    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        Ok(())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let reader = self.reader;
        while let Some(event) = seq.next_element_seed(AnnotationSeed(&mut *reader))? {
            if self.into.len() == MAX_ANNOTATIONS_PER_SPAN {
                let span = reader.span;
                return Err(reader.refuse(DecodeError::TooManyInSpan {
                    span,
                    what: "annotations",
                    limit: MAX_ANNOTATIONS_PER_SPAN,
                }));
            }
            self.into.push(event);
        }
        Ok(())
    }
}

const ANNOTATION_FIELDS: &[&str] = &["timestamp", "value"];

struct AnnotationSeed<'r, 'l>(&'r mut Reader<'l>);

impl<'de> DeserializeSeed<'de> for AnnotationSeed<'_, '_> {
    type Value = Event;

    fn deserialize<D: Deserializer<'de>>(self, json: D) -> Result<Event, D::Error> {
        json.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for AnnotationSeed<'_, '_> {
    type Value = Event;

    fn expecting(&self, formatter: &mut fmt::Formatter) -> fmt::Result {
        formatter.write_str("an annotation object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Event, A::Error> {
        let reader = self.0;
        reader.count()?;
        let mut timestamp: Option<u64> = None;
        let mut value = None;
        while let Some(field) = map.next_key_seed(FieldName(ANNOTATION_FIELDS))? {
            match field {
                Some("timestamp") => timestamp = map.next_value()?,
                Some(_) => {
                    value = map.next_value_seed(text(
                        &mut *reader,
                        "the value of an annotation",
                        MAX_VALUE_BYTES,
                    ))?;
                }
                None => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        let time = match timestamp {
            None | Some(0) => {
                return Err(reader.malformed(format_args!("an annotation has no timestamp")));
            }
            Some(micros) => micros.checked_mul(1000).ok_or_else(|| {
                reader.malformed::<A::Error>(format_args!(
                    "an annotation's timestamp {micros} µs is past the latest time OTLP holds (year 2554)"
                ))
            })?,
        };
        event_of(time, value.unwrap_or_default(), reader)
    }
}

/// An annotation as an event: split when it has the Collector's exporter form
/// `name|{json attributes}|dropped`, whole otherwise.
fn event_of<E: de::Error>(time: u64, value: String, reader: &mut Reader) -> Result<Event, E> {
    let whole = |value: String| Event {
        time_unix_nano: time,
        name: value,
        attributes: Vec::new(),
        dropped_attributes_count: 0,
    };
    let (Some(first), Some(last)) = (value.find('|'), value.rfind('|')) else {
        return Ok(whole(value));
    };
    if first == last {
        return Ok(whole(value));
    }
    let (middle, dropped) = (&value[first + 1..last], &value[last + 1..]);
    let Ok(dropped) = dropped.parse::<u32>() else {
        return Ok(whole(value));
    };
    let Some(attributes) = attributes_of(middle, reader)? else {
        return Ok(whole(value));
    };
    Ok(Event {
        time_unix_nano: time,
        name: value[..first].to_owned(),
        attributes,
        dropped_attributes_count: dropped,
    })
}

/// The attributes in `json` when it is one JSON object; `None` when it is not. A limit
/// crossed inside them refuses the request.
fn attributes_of<E: de::Error>(
    json: &str,
    reader: &mut Reader,
) -> Result<Option<Vec<KeyValue>>, E> {
    if !json.starts_with('{') {
        return Ok(None);
    }
    let mut parser = serde_json::Deserializer::from_str(json);
    let attributes = AttributeObject(&mut *reader)
        .deserialize(&mut parser)
        .and_then(|attributes| parser.end().map(|()| attributes));
    match attributes {
        Ok(attributes) => Ok(Some(attributes)),
        Err(_) if reader.refusal.is_some() => Err(E::custom("refused")),
        Err(_) => Ok(None),
    }
}

/// The attributes of an annotation or link in the Collector's exporter form: a JSON
/// object whose strings, numbers and booleans become attributes (integers as `int`,
/// other numbers as `double`); other values are left out, as the Collector does.
struct AttributeObject<'r, 'l>(&'r mut Reader<'l>);

impl<'de> DeserializeSeed<'de> for AttributeObject<'_, '_> {
    type Value = Vec<KeyValue>;

    fn deserialize<D: Deserializer<'de>>(self, json: D) -> Result<Vec<KeyValue>, D::Error> {
        json.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for AttributeObject<'_, '_> {
    type Value = Vec<KeyValue>;

    fn expecting(&self, formatter: &mut fmt::Formatter) -> fmt::Result {
        formatter.write_str("a JSON object of attributes")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Vec<KeyValue>, A::Error> {
        let mut attributes = BTreeMap::new();
        while let Some(key) = map.next_key::<String>()? {
            self.0.count()?;
            if let Some(value) = map.next_value::<Scalar>()?.0 {
                attributes.insert(key, value);
            }
        }
        Ok(attributes
            .into_iter()
            .map(|(key, value)| key_value(key, value))
            .collect())
    }
}

/// A JSON scalar as an attribute value; `None` for anything else.
struct Scalar(Option<Value>);

impl<'de> de::Deserialize<'de> for Scalar {
    fn deserialize<D: Deserializer<'de>>(json: D) -> Result<Self, D::Error> {
        json.deserialize_any(ScalarVisitor)
    }
}

struct ScalarVisitor;

impl<'de> Visitor<'de> for ScalarVisitor {
    type Value = Scalar;

    fn expecting(&self, formatter: &mut fmt::Formatter) -> fmt::Result {
        formatter.write_str("a JSON value")
    }

    fn visit_str<E: de::Error>(self, value: &str) -> Result<Scalar, E> {
        Ok(Scalar(Some(Value::StringValue(value.to_owned()))))
    }

    fn visit_bool<E: de::Error>(self, value: bool) -> Result<Scalar, E> {
        Ok(Scalar(Some(Value::BoolValue(value))))
    }

    fn visit_i64<E: de::Error>(self, value: i64) -> Result<Scalar, E> {
        Ok(Scalar(Some(Value::IntValue(value))))
    }

    #[allow(clippy::cast_precision_loss)]
    fn visit_u64<E: de::Error>(self, value: u64) -> Result<Scalar, E> {
        Ok(Scalar(Some(i64::try_from(value).map_or(
            Value::DoubleValue(value as f64),
            Value::IntValue,
        ))))
    }

    fn visit_f64<E: de::Error>(self, value: f64) -> Result<Scalar, E> {
        // The Collector reads every number as a double and keeps the integral ones as
        // integers.
        let integral = value.fract() == 0.0 && value.abs() < 2f64.powi(63);
        Ok(Scalar(Some(if integral {
            #[allow(clippy::cast_possible_truncation)]
            Value::IntValue(value as i64)
        } else {
            Value::DoubleValue(value)
        })))
    }

    fn visit_unit<E: de::Error>(self) -> Result<Scalar, E> {
        Ok(Scalar(None))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Scalar, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(Scalar(None))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Scalar, A::Error> {
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        Ok(Scalar(None))
    }
}

const ENDPOINT_FIELDS: &[&str] = &["serviceName", "ipv4", "ipv6", "port"];

/// `localEndpoint` or `remoteEndpoint`; `null` or empty is `None`.
struct EndpointSeed<'r, 'l> {
    reader: &'r mut Reader<'l>,
    which: &'static str,
}

impl<'de> DeserializeSeed<'de> for EndpointSeed<'_, '_> {
    type Value = Option<Endpoint>;

    fn deserialize<D: Deserializer<'de>>(self, json: D) -> Result<Option<Endpoint>, D::Error> {
        json.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for EndpointSeed<'_, '_> {
    type Value = Option<Endpoint>;

    fn expecting(&self, formatter: &mut fmt::Formatter) -> fmt::Result {
        write!(formatter, "an endpoint object for {}", self.which)
    }

    fn visit_unit<E: de::Error>(self) -> Result<Option<Endpoint>, E> {
        Ok(None)
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Option<Endpoint>, A::Error> {
        let reader = self.reader;
        let name_limit = reader.limits.max_label_value_bytes;
        let mut endpoint = Endpoint::default();
        while let Some(field) = map.next_key_seed(FieldName(ENDPOINT_FIELDS))? {
            match field {
                Some("serviceName") => {
                    endpoint.service_name = map
                        .next_value_seed(text(&mut *reader, "the serviceName", name_limit))?
                        .unwrap_or_default();
                }
                Some(what @ ("ipv4" | "ipv6")) => {
                    let address = map
                        .next_value_seed(text(&mut *reader, "an ip address", MAX_IP_TEXT_BYTES))?
                        .filter(|address| !address.is_empty());
                    let address = address
                        .map(|address| {
                            address.parse::<IpAddr>().map_err(|_| {
                                reader.malformed::<A::Error>(format_args!(
                                    "{}.{what} {:?} is not an IP address",
                                    self.which,
                                    quoted(&address)
                                ))
                            })
                        })
                        .transpose()?
                        .map(|address| address.to_canonical());
                    if what == "ipv4" {
                        endpoint.ipv4 = address;
                    } else {
                        endpoint.ipv6 = address;
                    }
                }
                Some(_) => endpoint.port = map.next_value::<Option<u16>>()?.unwrap_or(0),
                None => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        let empty = endpoint.service_name.is_empty()
            && endpoint.ipv4.is_none()
            && endpoint.ipv6.is_none()
            && endpoint.port == 0;
        Ok((!empty).then_some(endpoint))
    }
}
