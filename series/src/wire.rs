//! A protobuf wire-format reader over a borrowed buffer: fields one by one, nested
//! messages and strings as slices of the input, nothing allocated. Groups (wire types 3
//! and 4, unused by remote-write and OTLP) and field number 0 are refused. [`scan`]
//! walks a schema's nested messages with it, so each decoder can count what prost would
//! allocate before it does.

use crate::DecodeError;

/// One field's value.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) enum Value<'a> {
    /// Wire type 0.
    Varint(u64),
    /// Wire type 1.
    Fixed64(u64),
    /// Wire type 2: a nested message, a string, bytes or a packed repeated field.
    Bytes(&'a [u8]),
    /// Wire type 5.
    Fixed32(u32),
}

/// Reads the fields of one message.
pub(crate) struct Fields<'a> {
    rest: &'a [u8],
}

impl<'a> Fields<'a> {
    pub(crate) fn new(message: &'a [u8]) -> Self {
        Self { rest: message }
    }

    /// The next field, `None` at the end of the message.
    pub(crate) fn next_field(&mut self) -> Result<Option<(u32, Value<'a>)>, DecodeError> {
        if self.rest.is_empty() {
            return Ok(None);
        }
        let key = self.varint()?;
        let number =
            u32::try_from(key >> 3).map_err(|_| malformed("a field number is too large"))?;
        if number == 0 {
            return Err(malformed("field number 0"));
        }
        let value = match key & 7 {
            0 => Value::Varint(self.varint()?),
            1 => Value::Fixed64(u64::from_le_bytes(self.take_array()?)),
            2 => {
                let length = usize::try_from(self.varint()?)
                    .map_err(|_| malformed("a length does not fit in memory"))?;
                if length > self.rest.len() {
                    return Err(malformed("a field is longer than the message holding it"));
                }
                let (bytes, rest) = self.rest.split_at(length);
                self.rest = rest;
                Value::Bytes(bytes)
            }
            5 => Value::Fixed32(u32::from_le_bytes(self.take_array()?)),
            other => return Err(malformed(&format!("unsupported wire type {other}"))),
        };
        Ok(Some((number, value)))
    }

    fn take_array<const N: usize>(&mut self) -> Result<[u8; N], DecodeError> {
        let (bytes, rest) = self
            .rest
            .split_first_chunk::<N>()
            .ok_or_else(|| malformed("the message ends inside a field"))?;
        self.rest = rest;
        Ok(*bytes)
    }

    fn varint(&mut self) -> Result<u64, DecodeError> {
        let mut value = 0u64;
        for (i, &byte) in self.rest.iter().enumerate().take(10) {
            value |= u64::from(byte & 0x7f) << (7 * i);
            if byte & 0x80 == 0 {
                self.rest = &self.rest[i + 1..];
                return Ok(value);
            }
        }
        Err(malformed("a varint is truncated or longer than 10 bytes"))
    }
}

pub(crate) fn malformed(reason: &str) -> DecodeError {
    DecodeError::Malformed(format!("the body is not valid protobuf: {reason}"))
}

/// A string field's text.
pub(crate) fn text<'a>(value: Value<'a>, what: &str) -> Result<&'a str, DecodeError> {
    match value {
        Value::Bytes(bytes) => std::str::from_utf8(bytes)
            .map_err(|_| DecodeError::Malformed(format!("{what} is not UTF-8"))),
        _ => Err(DecodeError::Malformed(format!("{what} is not a string"))),
    }
}

/// A nested message's bytes.
pub(crate) fn message<'a>(value: Value<'a>, what: &str) -> Result<&'a [u8], DecodeError> {
    match value {
        Value::Bytes(bytes) => Ok(bytes),
        _ => Err(DecodeError::Malformed(format!("{what} is not a message"))),
    }
}

/// A message type of a schema [`scan`] walks: which of its fields hold nested
/// messages, and which of them are values that nest (OTLP's `AnyValue`).
pub(crate) trait MessageShape: Copy + std::fmt::Debug {
    /// The type of a nested message in field `number`, `None` for other fields (which
    /// prost skips or decodes without allocating per element).
    fn child(self, number: u32) -> Option<Self>;

    /// Whether a message of this type is one level of value nesting.
    fn nests_values(self) -> bool {
        false
    }
}

/// Counts the messages `message` (of type `shape`, `depth` values deep) decodes into,
/// before prost allocates them: refused past `limit` messages, or past `max_depth`
/// nested values.
pub(crate) fn scan<S: MessageShape>(
    message: &[u8],
    shape: S,
    depth: usize,
    max_depth: usize,
    count: &mut usize,
    limit: usize,
) -> Result<(), DecodeError> {
    *count += 1;
    if *count > limit {
        return Err(DecodeError::TooManyMessages { limit });
    }
    let depth = depth + usize::from(shape.nests_values());
    if depth > max_depth {
        return Err(DecodeError::Malformed(format!(
            "an attribute or body value is nested more than {max_depth} deep"
        )));
    }
    let mut fields = Fields::new(message);
    while let Some((number, value)) = fields.next_field()? {
        let Some(child) = shape.child(number) else {
            continue;
        };
        let Value::Bytes(bytes) = value else {
            return Err(DecodeError::Malformed(format!(
                "field {number} of {shape:?} is not a message"
            )));
        };
        scan(bytes, child, depth, max_depth, count, limit)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_every_wire_type_and_refuses_broken_input() {
        // field 1 varint 150, field 2 fixed64, field 3 bytes "hi", field 4 fixed32.
        let mut message = vec![0x08, 0x96, 0x01, 0x11];
        message.extend_from_slice(&7u64.to_le_bytes());
        message.extend_from_slice(&[0x1a, 2, b'h', b'i', 0x25]);
        message.extend_from_slice(&9u32.to_le_bytes());
        let mut fields = Fields::new(&message);
        let mut got = Vec::new();
        while let Some(field) = fields.next_field().unwrap() {
            got.push(field);
        }
        assert_eq!(
            got,
            [
                (1, Value::Varint(150)),
                (2, Value::Fixed64(7)),
                (3, Value::Bytes(b"hi")),
                (4, Value::Fixed32(9)),
            ]
        );
        for broken in [
            &[0x1a, 5, b'h'][..],
            &[0x08, 0x80],
            &[0x0b],
            &[0x00, 0x01],
            &[0x09, 1, 2],
            &[
                0x08, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01,
            ],
        ] {
            let mut fields = Fields::new(broken);
            let result = std::iter::from_fn(|| fields.next_field().transpose())
                .collect::<Result<Vec<_>, _>>();
            assert!(result.is_err(), "{broken:?}");
        }
    }
}
