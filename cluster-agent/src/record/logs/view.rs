//! Reading an encoded `ExportLogsServiceRequest` in place: borrowed views of its
//! resources, scopes, records, attributes and values, whose strings and bytes are
//! slices of the request's bytes. An exporter that writes another format (the bulk
//! API's JSON documents) reads a request once through these views instead of
//! decoding every record into owned `String`s and `Vec`s and freeing them again: in
//! log-bench the owned decode and its drop were over a quarter of the agent's
//! instructions.
//!
//! **What is checked.** Every field a view walks is checked as `prost` checks it:
//! keys, wire types of known fields, lengths within their message, UTF-8 of every
//! string read (once, where it is read), so a damaged request is refused with an
//! error, never read past its end. Fields the exporters never read (`schema_url`,
//! entity references, dropped counts of resources and scopes) are skipped unread.
//!
//! **Repeated singular fields.** The agent's buffer holds requests its own `prost`
//! encoder wrote, where a singular field appears at most once. Were one repeated, the
//! last occurrence is read (`prost`'s rule for scalars and strings; for a repeated
//! message field `prost` would merge the occurrences).

use prost::bytes::Buf;
use prost::encoding::{WireType, check_wire_type, decode_key, decode_varint};

use crate::record::otlp::OtlpBatchError;

/// `ExportLogsServiceRequest.resource_logs`.
const REQUEST_RESOURCE_LOGS: u32 = 1;
/// `ResourceLogs.resource`.
const RESOURCE_LOGS_RESOURCE: u32 = 1;
/// `ResourceLogs.scope_logs`.
const RESOURCE_LOGS_SCOPE_LOGS: u32 = 2;
/// `Resource.attributes`.
const RESOURCE_ATTRIBUTES: u32 = 1;
/// `ScopeLogs.scope`.
const SCOPE_LOGS_SCOPE: u32 = 1;
/// `ScopeLogs.log_records`.
const SCOPE_LOGS_RECORDS: u32 = 2;
/// `InstrumentationScope.attributes`.
const SCOPE_ATTRIBUTES: u32 = 3;
/// `KeyValueList.values` and `ArrayValue.values`.
const LIST_VALUES: u32 = 1;
/// `LogRecord.attributes`.
const RECORD_ATTRIBUTES: u32 = 6;

/// One field of a message: its number and its value, undecoded beyond the wire.
#[derive(Clone, Copy, Debug)]
enum Wire<'a> {
    Varint(u64),
    Fixed64(u64),
    Fixed32(u32),
    Bytes(&'a [u8]),
}

impl<'a> Wire<'a> {
    fn wire_type(&self) -> WireType {
        match self {
            Self::Varint(_) => WireType::Varint,
            Self::Fixed64(_) => WireType::SixtyFourBit,
            Self::Fixed32(_) => WireType::ThirtyTwoBit,
            Self::Bytes(_) => WireType::LengthDelimited,
        }
    }

    fn varint(self) -> Result<u64, OtlpBatchError> {
        match self {
            Self::Varint(value) => Ok(value),
            other => Err(wrong_type(WireType::Varint, &other)),
        }
    }

    fn fixed64(self) -> Result<u64, OtlpBatchError> {
        match self {
            Self::Fixed64(value) => Ok(value),
            other => Err(wrong_type(WireType::SixtyFourBit, &other)),
        }
    }

    fn fixed32(self) -> Result<u32, OtlpBatchError> {
        match self {
            Self::Fixed32(value) => Ok(value),
            other => Err(wrong_type(WireType::ThirtyTwoBit, &other)),
        }
    }

    fn bytes(self) -> Result<&'a [u8], OtlpBatchError> {
        match self {
            Self::Bytes(value) => Ok(value),
            other => Err(wrong_type(WireType::LengthDelimited, &other)),
        }
    }

    fn text(self) -> Result<&'a str, OtlpBatchError> {
        std::str::from_utf8(self.bytes()?)
            .map_err(|_| OtlpBatchError::Damaged("a string is not UTF-8"))
    }
}

fn wrong_type(expected: WireType, actual: &Wire<'_>) -> OtlpBatchError {
    match check_wire_type(expected, actual.wire_type()) {
        Err(e) => OtlpBatchError::Decode(e),
        Ok(()) => OtlpBatchError::Damaged("a field has the wrong wire type"),
    }
}

/// The fields of an encoded message, in order.
#[derive(Clone, Copy, Debug, Default)]
struct Fields<'a> {
    rest: &'a [u8],
}

impl<'a> Fields<'a> {
    fn of(bytes: &'a [u8]) -> Self {
        Self { rest: bytes }
    }

    /// `n` bytes of the rest, checked.
    fn take(&mut self, n: usize) -> Result<&'a [u8], OtlpBatchError> {
        if n > self.rest.len() {
            return Err(OtlpBatchError::Damaged("a field runs past its message"));
        }
        let (taken, rest) = self.rest.split_at(n);
        self.rest = rest;
        Ok(taken)
    }

    fn field(&mut self) -> Result<(u32, Wire<'a>), OtlpBatchError> {
        let (number, wire_type) = decode_key(&mut self.rest)?;
        let wire = match wire_type {
            WireType::Varint => Wire::Varint(decode_varint(&mut self.rest)?),
            WireType::SixtyFourBit => Wire::Fixed64({
                let mut bytes = self.take(8)?;
                bytes.get_u64_le()
            }),
            WireType::ThirtyTwoBit => Wire::Fixed32({
                let mut bytes = self.take(4)?;
                bytes.get_u32_le()
            }),
            WireType::LengthDelimited => {
                let len = usize::try_from(decode_varint(&mut self.rest)?).unwrap_or(usize::MAX);
                Wire::Bytes(self.take(len)?)
            }
            WireType::StartGroup | WireType::EndGroup => {
                return Err(OtlpBatchError::Damaged("a message uses protobuf groups"));
            }
        };
        Ok((number, wire))
    }
}

impl<'a> Iterator for Fields<'a> {
    type Item = Result<(u32, Wire<'a>), OtlpBatchError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.rest.is_empty() {
            return None;
        }
        let field = self.field();
        if field.is_err() {
            // Nothing after a damaged field can be read.
            self.rest = &[];
        }
        Some(field)
    }
}

/// The occurrences of one repeated message field of a message, each as its bytes.
#[derive(Clone, Copy, Debug, Default)]
pub struct Repeated<'a> {
    fields: Fields<'a>,
    number: u32,
    /// How many there are.
    count: usize,
}

impl<'a> Repeated<'a> {
    /// Field `number` of `message`, counted (and its wire types checked) at once.
    fn of(message: &'a [u8], number: u32) -> Result<Self, OtlpBatchError> {
        let mut count = 0;
        for field in Fields::of(message) {
            let (n, wire) = field?;
            if n == number {
                wire.bytes()?;
                count += 1;
            }
        }
        Ok(Self::counted(message, number, count))
    }

    fn counted(message: &'a [u8], number: u32, count: usize) -> Self {
        Self {
            fields: Fields::of(message),
            number,
            count,
        }
    }

    /// How many occurrences there are.
    pub fn len(&self) -> usize {
        self.count
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }
}

impl<'a> Iterator for Repeated<'a> {
    type Item = Result<&'a [u8], OtlpBatchError>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            match self.fields.next()? {
                Err(e) => return Some(Err(e)),
                Ok((n, wire)) if n == self.number => return Some(wire.bytes()),
                Ok(_) => {}
            }
        }
    }
}

/// Attributes (`KeyValue`s) of a message, read one by one.
#[derive(Clone, Copy, Debug, Default)]
pub struct KeyValues<'a>(Repeated<'a>);

impl<'a> KeyValues<'a> {
    /// How many there are.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl<'a> Iterator for KeyValues<'a> {
    type Item = Result<KeyValueView<'a>, OtlpBatchError>;

    fn next(&mut self) -> Option<Self::Item> {
        Some(self.0.next()?.and_then(KeyValueView::read))
    }
}

/// The values of an `ArrayValue`, read one by one.
#[derive(Clone, Copy, Debug, Default)]
pub struct Values<'a>(Repeated<'a>);

impl<'a> Iterator for Values<'a> {
    type Item = Result<AnyValueView<'a>, OtlpBatchError>;

    fn next(&mut self) -> Option<Self::Item> {
        Some(self.0.next()?.and_then(AnyValueView::read))
    }
}

/// A `KeyValue`.
#[derive(Clone, Copy, Debug)]
pub struct KeyValueView<'a> {
    /// The key.
    pub key: &'a str,
    /// The value; `None` when the field is absent.
    pub value: Option<AnyValueView<'a>>,
}

impl<'a> KeyValueView<'a> {
    fn read(bytes: &'a [u8]) -> Result<Self, OtlpBatchError> {
        let mut view = Self {
            key: "",
            value: None,
        };
        for field in Fields::of(bytes) {
            match field? {
                (1, wire) => view.key = wire.text()?,
                (2, wire) => view.value = Some(AnyValueView::read(wire.bytes()?)?),
                _ => {}
            }
        }
        Ok(view)
    }
}

/// An `AnyValue`: the value of its `oneof`.
#[derive(Clone, Copy, Debug)]
pub enum AnyValueView<'a> {
    /// No value set.
    Empty,
    /// `string_value`.
    String(&'a str),
    /// `bool_value`.
    Bool(bool),
    /// `int_value`.
    Int(i64),
    /// `double_value`.
    Double(f64),
    /// `array_value`.
    Array(Values<'a>),
    /// `kvlist_value`.
    Kvlist(KeyValues<'a>),
    /// `bytes_value`.
    Bytes(&'a [u8]),
}

impl<'a> AnyValueView<'a> {
    fn read(bytes: &'a [u8]) -> Result<Self, OtlpBatchError> {
        let mut view = Self::Empty;
        for field in Fields::of(bytes) {
            view = match field? {
                (1, wire) => Self::String(wire.text()?),
                // prost's `as` casts, as its decoders make them.
                (2, wire) => Self::Bool(wire.varint()? != 0),
                (3, wire) => Self::Int(wire.varint()? as i64),
                (4, wire) => Self::Double(f64::from_bits(wire.fixed64()?)),
                (5, wire) => Self::Array(Values(Repeated::of(wire.bytes()?, LIST_VALUES)?)),
                (6, wire) => Self::Kvlist(KeyValues(Repeated::of(wire.bytes()?, LIST_VALUES)?)),
                (7, wire) => Self::Bytes(wire.bytes()?),
                _ => continue,
            };
        }
        Ok(view)
    }
}

/// An `InstrumentationScope`.
#[derive(Clone, Copy, Debug, Default)]
pub struct ScopeView<'a> {
    /// `name`.
    pub name: &'a str,
    /// `version`.
    pub version: &'a str,
    /// `attributes`.
    pub attributes: KeyValues<'a>,
}

impl<'a> ScopeView<'a> {
    fn read(bytes: &'a [u8]) -> Result<Self, OtlpBatchError> {
        let mut view = Self {
            attributes: KeyValues(Repeated::of(bytes, SCOPE_ATTRIBUTES)?),
            ..Self::default()
        };
        for field in Fields::of(bytes) {
            match field? {
                (1, wire) => view.name = wire.text()?,
                (2, wire) => view.version = wire.text()?,
                _ => {}
            }
        }
        Ok(view)
    }
}

/// A `LogRecord`, every field the exporters read.
#[derive(Clone, Copy, Debug, Default)]
pub struct LogRecordView<'a> {
    /// `time_unix_nano`.
    pub time_unix_nano: u64,
    /// `observed_time_unix_nano`.
    pub observed_time_unix_nano: u64,
    /// `severity_number`.
    pub severity_number: i32,
    /// `severity_text`.
    pub severity_text: &'a str,
    /// `body`; `None` when the field is absent.
    pub body: Option<AnyValueView<'a>>,
    /// `attributes`.
    pub attributes: KeyValues<'a>,
    /// `dropped_attributes_count`.
    pub dropped_attributes_count: u32,
    /// `flags`.
    pub flags: u32,
    /// `trace_id`.
    pub trace_id: &'a [u8],
    /// `span_id`.
    pub span_id: &'a [u8],
    /// `event_name`.
    pub event_name: &'a str,
}

impl<'a> LogRecordView<'a> {
    /// Reads an encoded `LogRecord`.
    pub fn read(bytes: &'a [u8]) -> Result<Self, OtlpBatchError> {
        let mut view = Self::default();
        let mut attributes = 0;
        for field in Fields::of(bytes) {
            match field? {
                (1, wire) => view.time_unix_nano = wire.fixed64()?,
                // prost's `as` casts, as its decoders make them.
                (2, wire) => view.severity_number = wire.varint()? as i32,
                (3, wire) => view.severity_text = wire.text()?,
                (5, wire) => view.body = Some(AnyValueView::read(wire.bytes()?)?),
                (RECORD_ATTRIBUTES, wire) => {
                    wire.bytes()?;
                    attributes += 1;
                }
                (7, wire) => view.dropped_attributes_count = wire.varint()? as u32,
                (8, wire) => view.flags = wire.fixed32()?,
                (9, wire) => view.trace_id = wire.bytes()?,
                (10, wire) => view.span_id = wire.bytes()?,
                (11, wire) => view.observed_time_unix_nano = wire.fixed64()?,
                (12, wire) => view.event_name = wire.text()?,
                _ => {}
            }
        }
        view.attributes = KeyValues(Repeated::counted(bytes, RECORD_ATTRIBUTES, attributes));
        Ok(view)
    }

    /// When it happened, Unix nanoseconds: its own time, else when it was observed; 0
    /// when neither is known ([`super::record_time_ns`]).
    pub fn time_ns(&self) -> u64 {
        super::time_or_observed_ns(self.time_unix_nano, self.observed_time_unix_nano)
    }
}

/// A `ScopeLogs`: its scope and its records.
#[derive(Clone, Copy, Debug)]
pub struct ScopeLogsView<'a> {
    /// The scope; `None` when the field is absent.
    pub scope: Option<ScopeView<'a>>,
    records: Repeated<'a>,
}

impl<'a> ScopeLogsView<'a> {
    fn read(bytes: &'a [u8]) -> Result<Self, OtlpBatchError> {
        let mut scope = None;
        let mut records = 0;
        for field in Fields::of(bytes) {
            match field? {
                (SCOPE_LOGS_SCOPE, wire) => scope = Some(ScopeView::read(wire.bytes()?)?),
                (SCOPE_LOGS_RECORDS, wire) => {
                    wire.bytes()?;
                    records += 1;
                }
                _ => {}
            }
        }
        Ok(Self {
            scope,
            records: Repeated::counted(bytes, SCOPE_LOGS_RECORDS, records),
        })
    }

    /// Its records, in order.
    pub fn records(&self) -> impl Iterator<Item = Result<LogRecordView<'a>, OtlpBatchError>> {
        self.records
            .map(|bytes| bytes.and_then(LogRecordView::read))
    }
}

/// A `ResourceLogs`: its resource's attributes and its scopes.
#[derive(Clone, Copy, Debug)]
pub struct ResourceLogsView<'a> {
    /// The resource's attributes (none when the resource is absent).
    pub resource: KeyValues<'a>,
    scopes: Repeated<'a>,
}

impl<'a> ResourceLogsView<'a> {
    fn read(bytes: &'a [u8]) -> Result<Self, OtlpBatchError> {
        let mut resource = KeyValues::default();
        let mut scopes = 0;
        for field in Fields::of(bytes) {
            match field? {
                (RESOURCE_LOGS_RESOURCE, wire) => {
                    resource = KeyValues(Repeated::of(wire.bytes()?, RESOURCE_ATTRIBUTES)?);
                }
                (RESOURCE_LOGS_SCOPE_LOGS, wire) => {
                    wire.bytes()?;
                    scopes += 1;
                }
                _ => {}
            }
        }
        Ok(Self {
            resource,
            scopes: Repeated::counted(bytes, RESOURCE_LOGS_SCOPE_LOGS, scopes),
        })
    }

    /// Its scopes, in order.
    pub fn scope_logs(&self) -> impl Iterator<Item = Result<ScopeLogsView<'a>, OtlpBatchError>> {
        self.scopes.map(|bytes| bytes.and_then(ScopeLogsView::read))
    }
}

/// The resources of an encoded `ExportLogsServiceRequest`, in order.
pub fn resource_logs(
    request: &[u8],
) -> impl Iterator<Item = Result<ResourceLogsView<'_>, OtlpBatchError>> {
    // Not counted: the request is read once, in order, and its length never asked.
    Repeated::counted(request, REQUEST_RESOURCE_LOGS, 0)
        .map(|bytes| bytes.and_then(ResourceLogsView::read))
}
