//! OTLP logs as OTLP/JSON (`ExportLogsServiceRequest`, the OTLP/HTTP `application/json`
//! encoding) decoded under the same [`PushLimits`] as the protobuf decoder
//! ([`crate::otlp_logs`]): the body's size first, then one streaming pass of
//! `serde_json` straight into the prost structs, so the request is never held twice
//! (no `serde_json::Value` tree in between). While it reads, the pass counts every
//! message it builds against [`PushLimits::max_otlp_messages`] (an empty `{}` is two
//! bytes in the body and a struct in memory, as on the protobuf wire) and the nesting
//! of attribute and body values against [`MAX_VALUE_DEPTH`]; a refusal stops the pass
//! where the limit is crossed, so a hostile body costs at most the limits' worth of
//! work and memory. Everything is linear in the body: fields are found by name in a
//! fixed list, repeated fields are appended, unknown fields are skipped without
//! allocating. `serde_json`'s own bound of 128 nested arrays and objects stops nesting
//! that no OTLP field allows (deep unknown fields) before it can exhaust the stack.
//!
//! The encoding is the one the OTLP specification gives for OTLP/HTTP JSON, which is
//! protobuf's JSON mapping with these rules:
//! - field names in lowerCamelCase (`timeUnixNano`); the protobuf names
//!   (`time_unix_nano`) are not OTLP/JSON and are skipped as unknown fields, as the
//!   specification asks of receivers;
//! - `traceId` and `spanId` as hex (not base64), 32 and 16 digits, or empty;
//! - enums (`severityNumber`) as integers; protobuf's enum names are also read;
//! - 64-bit integers as decimal strings or as numbers, 32-bit integers as numbers or
//!   strings; `doubleValue` as a number or `"NaN"`, `"Infinity"`, `"-Infinity"`;
//! - `bytesValue` as base64 (standard or URL-safe, padded or not);
//! - `null` for any field is its default.

use std::fmt;
use std::marker::PhantomData;

use base64::Engine;
use base64::alphabet;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use kaas_proto::otlp::{
    AnyValue, ArrayValue, EntityRef, ExportLogsServiceRequest, InstrumentationScope, KeyValue,
    KeyValueList, LogRecord, Resource, ResourceLogs, ScopeLogs, any_value,
};
use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};

use crate::otlp_logs::MAX_VALUE_DEPTH;
use crate::{DecodeError, PushLimits};

/// Most bytes of a JSON parser's message a refusal repeats: its messages can quote a
/// whole string of the body (`invalid type: string "…"`), which must not come back
/// whole to the pusher or into the agent's log.
pub(crate) const MAX_PARSER_MESSAGE_BYTES: usize = 200;

/// Protobuf's names of `SeverityNumber`, by value.
const SEVERITY_NAMES: &[&str] = &[
    "SEVERITY_NUMBER_UNSPECIFIED",
    "SEVERITY_NUMBER_TRACE",
    "SEVERITY_NUMBER_TRACE2",
    "SEVERITY_NUMBER_TRACE3",
    "SEVERITY_NUMBER_TRACE4",
    "SEVERITY_NUMBER_DEBUG",
    "SEVERITY_NUMBER_DEBUG2",
    "SEVERITY_NUMBER_DEBUG3",
    "SEVERITY_NUMBER_DEBUG4",
    "SEVERITY_NUMBER_INFO",
    "SEVERITY_NUMBER_INFO2",
    "SEVERITY_NUMBER_INFO3",
    "SEVERITY_NUMBER_INFO4",
    "SEVERITY_NUMBER_WARN",
    "SEVERITY_NUMBER_WARN2",
    "SEVERITY_NUMBER_WARN3",
    "SEVERITY_NUMBER_WARN4",
    "SEVERITY_NUMBER_ERROR",
    "SEVERITY_NUMBER_ERROR2",
    "SEVERITY_NUMBER_ERROR3",
    "SEVERITY_NUMBER_ERROR4",
    "SEVERITY_NUMBER_FATAL",
    "SEVERITY_NUMBER_FATAL2",
    "SEVERITY_NUMBER_FATAL3",
    "SEVERITY_NUMBER_FATAL4",
];

/// Base64 as protobuf's JSON parsers read it: padding optional.
const BASE64_STANDARD: GeneralPurpose = GeneralPurpose::new(
    &alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);
/// The URL-safe alphabet, which protobuf's JSON parsers also accept.
const BASE64_URL_SAFE: GeneralPurpose = GeneralPurpose::new(
    &alphabet::URL_SAFE,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// Decodes an OTLP/JSON logs body (already decompressed) under `limits`.
pub fn decode(raw: &[u8], limits: &PushLimits) -> Result<ExportLogsServiceRequest, DecodeError> {
    if raw.len() > limits.max_decompressed_bytes {
        return Err(DecodeError::DecompressedTooLarge {
            limit: limits.max_decompressed_bytes,
            size: Some(raw.len() as u64),
        });
    }
    let mut budget = Budget {
        messages: 0,
        limit: limits.max_otlp_messages,
        depth: 0,
        refusal: None,
    };
    let mut parser = serde_json::Deserializer::from_slice(raw);
    let decoded = ExportLogsServiceRequest::read(&mut parser, &mut budget)
        .and_then(|request| parser.end().map(|()| request));
    decoded.map_err(|error| {
        budget.refusal.take().unwrap_or_else(|| {
            DecodeError::Malformed(format!(
                "the body is not OTLP/JSON logs: {}",
                cut(&error.to_string(), MAX_PARSER_MESSAGE_BYTES)
            ))
        })
    })
}

/// The start of `text`, at most `limit` bytes, cut at a character boundary.
pub(crate) fn cut(text: &str, limit: usize) -> &str {
    let mut end = text.len().min(limit);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

/// What one request may still cost, and why it was refused when it was.
struct Budget {
    messages: usize,
    limit: usize,
    depth: usize,
    /// The limit a refusal hit, reported instead of the parser's error it aborts with.
    refusal: Option<DecodeError>,
}

impl Budget {
    /// Counts one message about to be built.
    fn count<E: de::Error>(&mut self) -> Result<(), E> {
        self.messages += 1;
        if self.messages > self.limit {
            return Err(self.refuse(DecodeError::TooManyMessages { limit: self.limit }));
        }
        Ok(())
    }

    /// Enters one level of value nesting.
    fn enter<E: de::Error>(&mut self) -> Result<(), E> {
        self.depth += 1;
        if self.depth > MAX_VALUE_DEPTH {
            return Err(self.refuse(DecodeError::Malformed(format!(
                "an attribute or body value is nested more than {MAX_VALUE_DEPTH} deep"
            ))));
        }
        Ok(())
    }

    fn refuse<E: de::Error>(&mut self, refusal: DecodeError) -> E {
        let error = E::custom(&refusal);
        self.refusal = Some(refusal);
        error
    }
}

/// A value read from JSON within a [`Budget`].
trait Read: Sized {
    fn read<'de, D: Deserializer<'de>>(json: D, budget: &mut Budget) -> Result<Self, D::Error>;
}

/// An OTLP message read from a JSON object, field by field.
trait JsonMessage: Default {
    /// The message's name, for errors.
    const NAME: &'static str;
    /// Its fields' OTLP/JSON names; [`JsonMessage::field`] gets the index.
    const FIELDS: &'static [&'static str];
    /// Whether the message is one level of value nesting (`AnyValue`).
    const NESTS: bool = false;

    /// Reads the value of field `FIELDS[field]` from `map`.
    fn field<'de, A: MapAccess<'de>>(
        &mut self,
        field: usize,
        map: &mut A,
        budget: &mut Budget,
    ) -> Result<(), A::Error>;
}

macro_rules! read_as_message {
    ($($message:ty),*) => {$(
        impl Read for $message {
            fn read<'de, D: Deserializer<'de>>(
                json: D,
                budget: &mut Budget,
            ) -> Result<Self, D::Error> {
                json.deserialize_map(MessageVisitor {
                    budget,
                    message: PhantomData::<$message>,
                })
            }
        }
    )*};
}

read_as_message!(
    ExportLogsServiceRequest,
    ResourceLogs,
    Resource,
    EntityRef,
    ScopeLogs,
    InstrumentationScope,
    LogRecord,
    KeyValue,
    AnyValue,
    ArrayValue,
    KeyValueList
);

/// A string in a repeated field: counted like a message, since an empty one is three
/// bytes in the body and a `String` in memory.
impl Read for String {
    fn read<'de, D: Deserializer<'de>>(json: D, budget: &mut Budget) -> Result<Self, D::Error> {
        budget.count()?;
        de::Deserialize::deserialize(json)
    }
}

struct MessageVisitor<'b, T> {
    budget: &'b mut Budget,
    message: PhantomData<T>,
}

impl<'de, T: JsonMessage> Visitor<'de> for MessageVisitor<'_, T> {
    type Value = T;

    fn expecting(&self, formatter: &mut fmt::Formatter) -> fmt::Result {
        write!(formatter, "an OTLP {} object", T::NAME)
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<T, A::Error> {
        self.budget.count()?;
        if T::NESTS {
            self.budget.enter()?;
        }
        let mut message = T::default();
        while let Some(field) = map.next_key_seed(FieldName(T::FIELDS))? {
            match field {
                Some(index) => message.field(index, &mut map, self.budget)?,
                None => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        if T::NESTS {
            self.budget.depth -= 1;
        }
        Ok(message)
    }
}

/// A key of a JSON object: the index of the field it names, `None` if unknown.
pub(crate) struct FieldName(pub(crate) &'static [&'static str]);

impl<'de> DeserializeSeed<'de> for FieldName {
    type Value = Option<usize>;

    fn deserialize<D: Deserializer<'de>>(self, json: D) -> Result<Option<usize>, D::Error> {
        json.deserialize_str(self)
    }
}

impl Visitor<'_> for FieldName {
    type Value = Option<usize>;

    fn expecting(&self, formatter: &mut fmt::Formatter) -> fmt::Result {
        formatter.write_str("a field name")
    }

    fn visit_str<E: de::Error>(self, name: &str) -> Result<Option<usize>, E> {
        Ok(self.0.iter().position(|field| *field == name))
    }
}

/// A value of type `T`, read within the budget.
struct Within<'b, T> {
    budget: &'b mut Budget,
    value: PhantomData<T>,
}

impl<'b, T> Within<'b, T> {
    fn new(budget: &'b mut Budget) -> Self {
        Self {
            budget,
            value: PhantomData,
        }
    }
}

impl<'de, T: Read> DeserializeSeed<'de> for Within<'_, T> {
    type Value = T;

    fn deserialize<D: Deserializer<'de>>(self, json: D) -> Result<T, D::Error> {
        T::read(json, self.budget)
    }
}

/// An optional message: `null` or absent is `None`.
struct Optional<'b, T>(Within<'b, T>);

impl<'de, T: Read> DeserializeSeed<'de> for Optional<'_, T> {
    type Value = Option<T>;

    fn deserialize<D: Deserializer<'de>>(self, json: D) -> Result<Option<T>, D::Error> {
        json.deserialize_option(self)
    }
}

impl<'de, T: Read> Visitor<'de> for Optional<'_, T> {
    type Value = Option<T>;

    fn expecting(&self, formatter: &mut fmt::Formatter) -> fmt::Result {
        formatter.write_str("an object or null")
    }

    fn visit_none<E: de::Error>(self) -> Result<Option<T>, E> {
        Ok(None)
    }

    fn visit_unit<E: de::Error>(self) -> Result<Option<T>, E> {
        Ok(None)
    }

    fn visit_some<D: Deserializer<'de>>(self, json: D) -> Result<Option<T>, D::Error> {
        T::read(json, self.0.budget).map(Some)
    }
}

/// A repeated field, appended to `into` (a field given twice is concatenated, as
/// protobuf merges repeated fields); `null` adds nothing.
struct Repeated<'b, T> {
    budget: &'b mut Budget,
    into: &'b mut Vec<T>,
}

impl<'de, T: Read> DeserializeSeed<'de> for Repeated<'_, T> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, json: D) -> Result<(), D::Error> {
        json.deserialize_any(self)
    }
}

impl<'de, T: Read> Visitor<'de> for Repeated<'_, T> {
    type Value = ();

    fn expecting(&self, formatter: &mut fmt::Formatter) -> fmt::Result {
        formatter.write_str("an array or null")
    }

    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        Ok(())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        while let Some(element) = seq.next_element_seed(Within::<T>::new(self.budget))? {
            self.into.push(element);
        }
        Ok(())
    }
}

/// An integer as a JSON number or a decimal string (protobuf's enum names too, when
/// `names` lists them); `null` is `None`.
struct Integer {
    names: &'static [&'static str],
}

impl<'de> DeserializeSeed<'de> for Integer {
    type Value = Option<i128>;

    fn deserialize<D: Deserializer<'de>>(self, json: D) -> Result<Option<i128>, D::Error> {
        json.deserialize_any(self)
    }
}

impl Visitor<'_> for Integer {
    type Value = Option<i128>;

    fn expecting(&self, formatter: &mut fmt::Formatter) -> fmt::Result {
        formatter.write_str("an integer, as a number or a decimal string")
    }

    fn visit_unit<E: de::Error>(self) -> Result<Option<i128>, E> {
        Ok(None)
    }

    fn visit_u64<E: de::Error>(self, value: u64) -> Result<Option<i128>, E> {
        Ok(Some(value.into()))
    }

    fn visit_i64<E: de::Error>(self, value: i64) -> Result<Option<i128>, E> {
        Ok(Some(value.into()))
    }

    fn visit_f64<E: de::Error>(self, value: f64) -> Result<Option<i128>, E> {
        // `1e3` and `5.0` are integers in protobuf's JSON mapping; `1.5` is not.
        if value.fract() == 0.0 && value.abs() < 2f64.powi(64) {
            #[allow(clippy::cast_possible_truncation)]
            return Ok(Some(value as i128));
        }
        Err(E::custom("a number that is not an integer"))
    }

    fn visit_str<E: de::Error>(self, text: &str) -> Result<Option<i128>, E> {
        if let Ok(value) = text.parse::<i128>() {
            return Ok(Some(value));
        }
        match self.names.iter().position(|name| *name == text) {
            Some(index) => Ok(Some(index as i128)),
            None => Err(E::custom(format!(
                "{:?} is not an integer",
                cut(text, crate::limits::MAX_QUOTED_BYTES)
            ))),
        }
    }
}

/// Reads an integer field into `T`, refusing values out of its range.
fn integer<'de, A: MapAccess<'de>, T: TryFrom<i128> + Default>(
    map: &mut A,
    names: &'static [&'static str],
) -> Result<T, A::Error> {
    match map.next_value_seed(Integer { names })? {
        None => Ok(T::default()),
        Some(value) => T::try_from(value)
            .map_err(|_| de::Error::custom(format!("{value} is out of the field's range"))),
    }
}

/// A double as a number, a decimal string or `"NaN"`, `"Infinity"`, `"-Infinity"`.
struct Double;

impl<'de> DeserializeSeed<'de> for Double {
    type Value = Option<f64>;

    fn deserialize<D: Deserializer<'de>>(self, json: D) -> Result<Option<f64>, D::Error> {
        json.deserialize_any(self)
    }
}

impl Visitor<'_> for Double {
    type Value = Option<f64>;

    fn expecting(&self, formatter: &mut fmt::Formatter) -> fmt::Result {
        formatter.write_str("a number")
    }

    fn visit_unit<E: de::Error>(self) -> Result<Option<f64>, E> {
        Ok(None)
    }

    fn visit_f64<E: de::Error>(self, value: f64) -> Result<Option<f64>, E> {
        Ok(Some(value))
    }

    #[allow(clippy::cast_precision_loss)]
    fn visit_u64<E: de::Error>(self, value: u64) -> Result<Option<f64>, E> {
        Ok(Some(value as f64))
    }

    #[allow(clippy::cast_precision_loss)]
    fn visit_i64<E: de::Error>(self, value: i64) -> Result<Option<f64>, E> {
        Ok(Some(value as f64))
    }

    fn visit_str<E: de::Error>(self, text: &str) -> Result<Option<f64>, E> {
        match text {
            "NaN" => Ok(Some(f64::NAN)),
            "Infinity" => Ok(Some(f64::INFINITY)),
            "-Infinity" => Ok(Some(f64::NEG_INFINITY)),
            _ => text.parse().map(Some).map_err(|_| {
                E::custom(format!(
                    "{:?} is not a number",
                    cut(text, crate::limits::MAX_QUOTED_BYTES)
                ))
            }),
        }
    }
}

/// A string field; `null` is empty.
fn string<'de, A: MapAccess<'de>>(map: &mut A) -> Result<String, A::Error> {
    Ok(map.next_value::<Option<String>>()?.unwrap_or_default())
}

/// A `bytes` field in base64; `null` is `None`.
fn bytes<'de, A: MapAccess<'de>>(map: &mut A) -> Result<Option<Vec<u8>>, A::Error> {
    let Some(text) = map.next_value::<Option<String>>()? else {
        return Ok(None);
    };
    let engine = if text.contains(['-', '_']) {
        BASE64_URL_SAFE
    } else {
        BASE64_STANDARD
    };
    engine
        .decode(text.as_bytes())
        .map(Some)
        .map_err(|_| de::Error::custom("bytesValue is not base64"))
}

/// A trace or span id: `length` bytes in hex, or empty.
fn id<'de, A: MapAccess<'de>>(map: &mut A, length: usize, what: &str) -> Result<Vec<u8>, A::Error> {
    let text = string(map)?;
    if text.is_empty() {
        return Ok(Vec::new());
    }
    match hex::decode(&text) {
        Ok(id) if id.len() == length => Ok(id),
        _ => Err(de::Error::custom(format!(
            "{what} is not {} hex digits: {:?}",
            length * 2,
            cut(&text, crate::limits::MAX_QUOTED_BYTES)
        ))),
    }
}

fn optional<'de, A: MapAccess<'de>, T: Read>(
    map: &mut A,
    budget: &mut Budget,
) -> Result<Option<T>, A::Error> {
    map.next_value_seed(Optional(Within::new(budget)))
}

fn repeated<'de, A: MapAccess<'de>, T: Read>(
    map: &mut A,
    budget: &mut Budget,
    into: &mut Vec<T>,
) -> Result<(), A::Error> {
    map.next_value_seed(Repeated { budget, into })
}

impl JsonMessage for ExportLogsServiceRequest {
    const NAME: &'static str = "ExportLogsServiceRequest";
    const FIELDS: &'static [&'static str] = &["resourceLogs"];

    fn field<'de, A: MapAccess<'de>>(
        &mut self,
        _: usize,
        map: &mut A,
        budget: &mut Budget,
    ) -> Result<(), A::Error> {
        repeated(map, budget, &mut self.resource_logs)
    }
}

impl JsonMessage for ResourceLogs {
    const NAME: &'static str = "ResourceLogs";
    const FIELDS: &'static [&'static str] = &["resource", "scopeLogs", "schemaUrl"];

    fn field<'de, A: MapAccess<'de>>(
        &mut self,
        field: usize,
        map: &mut A,
        budget: &mut Budget,
    ) -> Result<(), A::Error> {
        match field {
            0 => self.resource = optional(map, budget)?,
            1 => repeated(map, budget, &mut self.scope_logs)?,
            _ => self.schema_url = string(map)?,
        }
        Ok(())
    }
}

impl JsonMessage for Resource {
    const NAME: &'static str = "Resource";
    const FIELDS: &'static [&'static str] = &["attributes", "droppedAttributesCount", "entityRefs"];

    fn field<'de, A: MapAccess<'de>>(
        &mut self,
        field: usize,
        map: &mut A,
        budget: &mut Budget,
    ) -> Result<(), A::Error> {
        match field {
            0 => repeated(map, budget, &mut self.attributes)?,
            1 => self.dropped_attributes_count = integer(map, &[])?,
            _ => repeated(map, budget, &mut self.entity_refs)?,
        }
        Ok(())
    }
}

impl JsonMessage for EntityRef {
    const NAME: &'static str = "EntityRef";
    const FIELDS: &'static [&'static str] = &["schemaUrl", "type", "idKeys", "descriptionKeys"];

    fn field<'de, A: MapAccess<'de>>(
        &mut self,
        field: usize,
        map: &mut A,
        budget: &mut Budget,
    ) -> Result<(), A::Error> {
        match field {
            0 => self.schema_url = string(map)?,
            1 => self.r#type = string(map)?,
            2 => repeated(map, budget, &mut self.id_keys)?,
            _ => repeated(map, budget, &mut self.description_keys)?,
        }
        Ok(())
    }
}

impl JsonMessage for ScopeLogs {
    const NAME: &'static str = "ScopeLogs";
    const FIELDS: &'static [&'static str] = &["scope", "logRecords", "schemaUrl"];

    fn field<'de, A: MapAccess<'de>>(
        &mut self,
        field: usize,
        map: &mut A,
        budget: &mut Budget,
    ) -> Result<(), A::Error> {
        match field {
            0 => self.scope = optional(map, budget)?,
            1 => repeated(map, budget, &mut self.log_records)?,
            _ => self.schema_url = string(map)?,
        }
        Ok(())
    }
}

impl JsonMessage for InstrumentationScope {
    const NAME: &'static str = "InstrumentationScope";
    const FIELDS: &'static [&'static str] =
        &["name", "version", "attributes", "droppedAttributesCount"];

    fn field<'de, A: MapAccess<'de>>(
        &mut self,
        field: usize,
        map: &mut A,
        budget: &mut Budget,
    ) -> Result<(), A::Error> {
        match field {
            0 => self.name = string(map)?,
            1 => self.version = string(map)?,
            2 => repeated(map, budget, &mut self.attributes)?,
            _ => self.dropped_attributes_count = integer(map, &[])?,
        }
        Ok(())
    }
}

impl JsonMessage for LogRecord {
    const NAME: &'static str = "LogRecord";
    const FIELDS: &'static [&'static str] = &[
        "timeUnixNano",
        "observedTimeUnixNano",
        "severityNumber",
        "severityText",
        "body",
        "attributes",
        "droppedAttributesCount",
        "flags",
        "traceId",
        "spanId",
        "eventName",
    ];

    fn field<'de, A: MapAccess<'de>>(
        &mut self,
        field: usize,
        map: &mut A,
        budget: &mut Budget,
    ) -> Result<(), A::Error> {
        match field {
            0 => self.time_unix_nano = integer(map, &[])?,
            1 => self.observed_time_unix_nano = integer(map, &[])?,
            2 => self.severity_number = integer(map, SEVERITY_NAMES)?,
            3 => self.severity_text = string(map)?,
            4 => self.body = optional(map, budget)?,
            5 => repeated(map, budget, &mut self.attributes)?,
            6 => self.dropped_attributes_count = integer(map, &[])?,
            7 => self.flags = integer(map, &[])?,
            8 => self.trace_id = id(map, 16, "traceId")?,
            9 => self.span_id = id(map, 8, "spanId")?,
            _ => self.event_name = string(map)?,
        }
        Ok(())
    }
}

impl JsonMessage for KeyValue {
    const NAME: &'static str = "KeyValue";
    const FIELDS: &'static [&'static str] = &["key", "value"];

    fn field<'de, A: MapAccess<'de>>(
        &mut self,
        field: usize,
        map: &mut A,
        budget: &mut Budget,
    ) -> Result<(), A::Error> {
        match field {
            0 => self.key = string(map)?,
            _ => self.value = optional(map, budget)?,
        }
        Ok(())
    }
}

impl JsonMessage for AnyValue {
    const NAME: &'static str = "AnyValue";
    const FIELDS: &'static [&'static str] = &[
        "stringValue",
        "boolValue",
        "intValue",
        "doubleValue",
        "arrayValue",
        "kvlistValue",
        "bytesValue",
    ];
    const NESTS: bool = true;

    fn field<'de, A: MapAccess<'de>>(
        &mut self,
        field: usize,
        map: &mut A,
        budget: &mut Budget,
    ) -> Result<(), A::Error> {
        use any_value::Value;
        let value = match field {
            0 => map.next_value::<Option<String>>()?.map(Value::StringValue),
            1 => map.next_value::<Option<bool>>()?.map(Value::BoolValue),
            2 => match map.next_value_seed(Integer { names: &[] })? {
                Some(value) => Some(Value::IntValue(i64::try_from(value).map_err(|_| {
                    de::Error::custom(format!("intValue {value} is out of range"))
                })?)),
                None => None,
            },
            3 => map.next_value_seed(Double)?.map(Value::DoubleValue),
            4 => optional(map, budget)?.map(Value::ArrayValue),
            5 => optional(map, budget)?.map(Value::KvlistValue),
            _ => bytes(map)?.map(Value::BytesValue),
        };
        if value.is_some() {
            if self.value.is_some() {
                return Err(de::Error::custom("an AnyValue holds more than one value"));
            }
            self.value = value;
        }
        Ok(())
    }
}

impl JsonMessage for ArrayValue {
    const NAME: &'static str = "ArrayValue";
    const FIELDS: &'static [&'static str] = &["values"];

    fn field<'de, A: MapAccess<'de>>(
        &mut self,
        _: usize,
        map: &mut A,
        budget: &mut Budget,
    ) -> Result<(), A::Error> {
        repeated(map, budget, &mut self.values)
    }
}

impl JsonMessage for KeyValueList {
    const NAME: &'static str = "KeyValueList";
    const FIELDS: &'static [&'static str] = &["values"];

    fn field<'de, A: MapAccess<'de>>(
        &mut self,
        _: usize,
        map: &mut A,
        budget: &mut Budget,
    ) -> Result<(), A::Error> {
        repeated(map, budget, &mut self.values)
    }
}

#[cfg(test)]
mod tests;
