//! The OTLP/JSON decoder shared by the signals ([`crate::otlp_logs_json`],
//! [`crate::otlp_traces_json`]): a body (the OTLP/HTTP `application/json` encoding)
//! decoded under the same [`PushLimits`] as the protobuf decoders, the body's size
//! first, then one streaming pass of `serde_json` straight into the prost structs, so
//! the request is never held twice (no `serde_json::Value` tree in between). While it
//! reads, the pass counts every message it builds against
//! [`PushLimits::max_otlp_messages`] (an empty `{}` is two bytes in the body and a
//! struct in memory, as on the protobuf wire) and the nesting of attribute and body
//! values against [`MAX_VALUE_DEPTH`]; a refusal stops the pass where the limit is
//! crossed, so a hostile body costs at most the limits' worth of work and memory.
//! Everything is linear in the body: fields are found by name in a fixed list,
//! repeated fields are appended, unknown fields are skipped without allocating.
//! `serde_json`'s own bound of 128 nested arrays and objects stops nesting that no
//! OTLP field allows (deep unknown fields) before it can exhaust the stack.
//!
//! A message is read through [`JsonMessage`]: its OTLP/JSON field names and how each
//! field's value is read, declared as a table ([`json_messages!`]) except for
//! `AnyValue`'s one-of. This module holds the messages every signal shares
//! (resource, scope, attributes and their values) and the readers of each kind of
//! field; each signal's module adds its own messages.
//!
//! The encoding is the one the OTLP specification gives for OTLP/HTTP JSON, which is
//! protobuf's JSON mapping with these rules:
//! - field names in lowerCamelCase (`timeUnixNano`); the protobuf names
//!   (`time_unix_nano`) are not OTLP/JSON and are skipped as unknown fields, as the
//!   specification asks of receivers;
//! - trace and span ids (`traceId`, `spanId`, `parentSpanId`) as hex (not base64), 32
//!   and 16 digits, or empty;
//! - enums (`severityNumber`, `kind`, `code`) as integers; protobuf's enum names are
//!   also read;
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
    AnyValue, ArrayValue, EntityRef, InstrumentationScope, KeyValue, KeyValueList, Resource,
    any_value,
};
use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};

use crate::otlp_logs::MAX_VALUE_DEPTH;
use crate::{DecodeError, PushLimits};

/// Most bytes of a JSON parser's message a refusal repeats: its messages can quote a
/// whole string of the body (`invalid type: string "…"`), which must not come back
/// whole to the pusher or into the agent's log.
pub(crate) const MAX_PARSER_MESSAGE_BYTES: usize = 200;

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

/// Decodes an OTLP/JSON body (already decompressed) into the request `T` under
/// `limits`; `signal` names what the body should hold in the refusal of one that is not
/// OTLP/JSON.
pub(crate) fn decode<T: Read>(
    raw: &[u8],
    limits: &PushLimits,
    signal: &str,
) -> Result<T, DecodeError> {
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
    let decoded =
        T::read(&mut parser, &mut budget).and_then(|request| parser.end().map(|()| request));
    decoded.map_err(|error| {
        budget.refusal.take().unwrap_or_else(|| {
            DecodeError::Malformed(format!(
                "the body is not OTLP/JSON {signal}: {}",
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
pub(crate) struct Budget {
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
pub(crate) trait Read: Sized {
    fn read<'de, D: Deserializer<'de>>(json: D, budget: &mut Budget) -> Result<Self, D::Error>;
}

/// An OTLP message read from a JSON object, field by field.
pub(crate) trait JsonMessage: Default {
    /// The message's name, for errors.
    const NAME: &'static str;
    /// Whether the message is one level of value nesting (`AnyValue`).
    const NESTS: bool = false;
    /// Its fields' OTLP/JSON names; other keys are skipped unread.
    const FIELDS: &'static [&'static str];

    /// Reads the value of field `name`, one of [`JsonMessage::FIELDS`], from `map`.
    fn field<'de, A>(
        &mut self,
        name: &'static str,
        map: &mut A,
        budget: &mut Budget,
    ) -> Result<(), A::Error>
    where
        A: MapAccess<'de>;
}

/// Implements [`JsonMessage`] for OTLP messages from their field tables: each field's
/// OTLP/JSON name, the struct's field and how its value is read — `optional` (a
/// message, or `null`), `repeated` (an array of messages or strings), `string`,
/// `integer` (with protobuf's enum names when given) or `id(bytes)` (hex).
macro_rules! json_messages {
    ($($message:ty {
        $($name:literal => $field:ident: $kind:ident $(($argument:expr))?),+ $(,)?
    })+) => {$(
        impl $crate::otlp_json::JsonMessage for $message {
            const NAME: &'static str = stringify!($message);
            const FIELDS: &'static [&'static str] = &[$($name),+];

            fn field<'de, A: serde::de::MapAccess<'de>>(
                &mut self,
                name: &'static str,
                map: &mut A,
                budget: &mut $crate::otlp_json::Budget,
            ) -> Result<(), A::Error> {
                // Not every message has a field that counts against the budget.
                let _ = &budget;
                match name {
                    $($name => $crate::otlp_json::json_messages!(
                        @read $kind self.$field, map, budget, $name $(, $argument)?
                    ),)+
                    _ => {}
                }
                Ok(())
            }
        }
    )+};
    (@read optional $place:expr, $map:ident, $budget:ident, $name:literal) => {
        $place = $crate::otlp_json::optional($map, $budget)?
    };
    (@read repeated $place:expr, $map:ident, $budget:ident, $name:literal) => {
        $crate::otlp_json::repeated($map, $budget, &mut $place)?
    };
    (@read string $place:expr, $map:ident, $budget:ident, $name:literal) => {
        $place = $crate::otlp_json::string($map)?
    };
    (@read integer $place:expr, $map:ident, $budget:ident, $name:literal) => {
        $place = $crate::otlp_json::integer($map, &[])?
    };
    (@read integer $place:expr, $map:ident, $budget:ident, $name:literal, $names:expr) => {
        $place = $crate::otlp_json::integer($map, $names)?
    };
    (@read id $place:expr, $map:ident, $budget:ident, $name:literal, $bytes:expr) => {
        $place = $crate::otlp_json::id($map, $bytes, $name)?
    };
}
pub(crate) use json_messages;

/// Every message is read as a JSON object, field by field.
impl<T: JsonMessage> Read for T {
    fn read<'de, D: Deserializer<'de>>(json: D, budget: &mut Budget) -> Result<Self, D::Error> {
        json.deserialize_map(MessageVisitor {
            budget,
            message: PhantomData::<T>,
        })
    }
}

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
                Some(name) => message.field(name, &mut map, self.budget)?,
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

/// A key of a JSON object: the field it names, `None` if unknown.
pub(crate) struct FieldName(pub(crate) &'static [&'static str]);

impl<'de> DeserializeSeed<'de> for FieldName {
    type Value = Option<&'static str>;

    fn deserialize<D: Deserializer<'de>>(self, json: D) -> Result<Option<&'static str>, D::Error> {
        json.deserialize_str(self)
    }
}

impl Visitor<'_> for FieldName {
    type Value = Option<&'static str>;

    fn expecting(&self, formatter: &mut fmt::Formatter) -> fmt::Result {
        formatter.write_str("a field name")
    }

    fn visit_str<E: de::Error>(self, name: &str) -> Result<Option<&'static str>, E> {
        Ok(self.0.iter().find(|field| **field == name).copied())
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

/// A number as protobuf's JSON mapping writes it: a JSON number or a string, `null`
/// being `None`. [`Integer`] and [`Double`] say what a number of their kind is.
trait JsonNumber: Sized {
    /// What is expected, for errors.
    const EXPECTED: &'static str;
    /// A JSON integer.
    fn from_integer<E: de::Error>(value: i128) -> Result<Self, E>;
    /// A JSON number with a fraction or an exponent.
    fn from_float<E: de::Error>(value: f64) -> Result<Self, E>;
    /// A string, with protobuf's enum names when `names` lists them.
    fn from_text<E: de::Error>(text: &str, names: &'static [&'static str]) -> Result<Self, E>;
}

/// An integer: a JSON number without a fraction, a decimal string, or one of the
/// enum's names (its index).
struct Integer(i128);

impl JsonNumber for Integer {
    const EXPECTED: &'static str = "an integer, as a number or a decimal string";

    fn from_integer<E: de::Error>(value: i128) -> Result<Self, E> {
        Ok(Self(value))
    }

    fn from_float<E: de::Error>(value: f64) -> Result<Self, E> {
        // `1e3` and `5.0` are integers in protobuf's JSON mapping; `1.5` is not.
        if value.fract() == 0.0 && value.abs() < 2f64.powi(64) {
            #[allow(clippy::cast_possible_truncation)]
            return Ok(Self(value as i128));
        }
        Err(E::custom("a number that is not an integer"))
    }

    fn from_text<E: de::Error>(text: &str, names: &'static [&'static str]) -> Result<Self, E> {
        if let Ok(value) = text.parse::<i128>() {
            return Ok(Self(value));
        }
        match names.iter().position(|name| *name == text) {
            Some(index) => Ok(Self(index as i128)),
            None => Err(E::custom(format!(
                "{:?} is not an integer",
                cut(text, crate::limits::MAX_QUOTED_BYTES)
            ))),
        }
    }
}

/// A double: any JSON number, a decimal string, or `"NaN"`, `"Infinity"`,
/// `"-Infinity"`.
struct Double(f64);

impl JsonNumber for Double {
    const EXPECTED: &'static str = "a number";

    #[allow(clippy::cast_precision_loss)]
    fn from_integer<E: de::Error>(value: i128) -> Result<Self, E> {
        Ok(Self(value as f64))
    }

    fn from_float<E: de::Error>(value: f64) -> Result<Self, E> {
        Ok(Self(value))
    }

    fn from_text<E: de::Error>(text: &str, _: &'static [&'static str]) -> Result<Self, E> {
        match text {
            "NaN" => Ok(Self(f64::NAN)),
            "Infinity" => Ok(Self(f64::INFINITY)),
            "-Infinity" => Ok(Self(f64::NEG_INFINITY)),
            _ => text.parse().map(Self).map_err(|_| {
                E::custom(format!(
                    "{:?} is not a number",
                    cut(text, crate::limits::MAX_QUOTED_BYTES)
                ))
            }),
        }
    }
}

/// Reads a [`JsonNumber`]; `null` is `None`.
struct Number<T> {
    names: &'static [&'static str],
    number: PhantomData<T>,
}

impl<T> Number<T> {
    fn named(names: &'static [&'static str]) -> Self {
        Self {
            names,
            number: PhantomData,
        }
    }
}

impl<'de, T: JsonNumber> DeserializeSeed<'de> for Number<T> {
    type Value = Option<T>;

    fn deserialize<D: Deserializer<'de>>(self, json: D) -> Result<Option<T>, D::Error> {
        json.deserialize_any(self)
    }
}

impl<T: JsonNumber> Visitor<'_> for Number<T> {
    type Value = Option<T>;

    fn expecting(&self, formatter: &mut fmt::Formatter) -> fmt::Result {
        formatter.write_str(T::EXPECTED)
    }

    fn visit_unit<E: de::Error>(self) -> Result<Option<T>, E> {
        Ok(None)
    }

    fn visit_u64<E: de::Error>(self, value: u64) -> Result<Option<T>, E> {
        T::from_integer(value.into()).map(Some)
    }

    fn visit_i64<E: de::Error>(self, value: i64) -> Result<Option<T>, E> {
        T::from_integer(value.into()).map(Some)
    }

    fn visit_f64<E: de::Error>(self, value: f64) -> Result<Option<T>, E> {
        T::from_float(value).map(Some)
    }

    fn visit_str<E: de::Error>(self, text: &str) -> Result<Option<T>, E> {
        T::from_text(text, self.names).map(Some)
    }
}

/// Reads an integer field into `T`, refusing values out of its range.
pub(crate) fn integer<'de, A: MapAccess<'de>, T: TryFrom<i128> + Default>(
    map: &mut A,
    names: &'static [&'static str],
) -> Result<T, A::Error> {
    match map.next_value_seed(Number::<Integer>::named(names))? {
        None => Ok(T::default()),
        Some(Integer(value)) => T::try_from(value)
            .map_err(|_| de::Error::custom(format!("{value} is out of the field's range"))),
    }
}

/// A string field; `null` is empty.
pub(crate) fn string<'de, A: MapAccess<'de>>(map: &mut A) -> Result<String, A::Error> {
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
pub(crate) fn id<'de, A: MapAccess<'de>>(
    map: &mut A,
    length: usize,
    what: &str,
) -> Result<Vec<u8>, A::Error> {
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

pub(crate) fn optional<'de, A: MapAccess<'de>, T: Read>(
    map: &mut A,
    budget: &mut Budget,
) -> Result<Option<T>, A::Error> {
    map.next_value_seed(Optional(Within::new(budget)))
}

pub(crate) fn repeated<'de, A: MapAccess<'de>, T: Read>(
    map: &mut A,
    budget: &mut Budget,
    into: &mut Vec<T>,
) -> Result<(), A::Error> {
    map.next_value_seed(Repeated { budget, into })
}

json_messages! {
    Resource {
        "attributes" => attributes: repeated,
        "droppedAttributesCount" => dropped_attributes_count: integer,
        "entityRefs" => entity_refs: repeated,
    }
    EntityRef {
        "schemaUrl" => schema_url: string,
        "type" => r#type: string,
        "idKeys" => id_keys: repeated,
        "descriptionKeys" => description_keys: repeated,
    }
    InstrumentationScope {
        "name" => name: string,
        "version" => version: string,
        "attributes" => attributes: repeated,
        "droppedAttributesCount" => dropped_attributes_count: integer,
    }
    KeyValue {
        "key" => key: string,
        "value" => value: optional,
    }
    ArrayValue {
        "values" => values: repeated,
    }
    KeyValueList {
        "values" => values: repeated,
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
        name: &'static str,
        map: &mut A,
        budget: &mut Budget,
    ) -> Result<(), A::Error> {
        use any_value::Value;
        let value = match name {
            "stringValue" => map.next_value::<Option<String>>()?.map(Value::StringValue),
            "boolValue" => map.next_value::<Option<bool>>()?.map(Value::BoolValue),
            "intValue" => match map.next_value_seed(Number::<Integer>::named(&[]))? {
                Some(Integer(value)) => {
                    Some(Value::IntValue(i64::try_from(value).map_err(|_| {
                        de::Error::custom(format!("intValue {value} is out of range"))
                    })?))
                }
                None => None,
            },
            "doubleValue" => map
                .next_value_seed(Number::<Double>::named(&[]))?
                .map(|Double(value)| Value::DoubleValue(value)),
            "arrayValue" => optional(map, budget)?.map(Value::ArrayValue),
            "kvlistValue" => optional(map, budget)?.map(Value::KvlistValue),
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
