//! A decoded journal entry, its fields, and the unit allow-list applied while reading.
//!
//! Values are bytes: journal fields may be binary, and only the caller knows which ones
//! it wants as text. Field names are checked to be UTF-8 when read. A field longer than
//! [`crate::MAX_FIELD_BYTES`] keeps its first bytes and is marked truncated.

use std::collections::HashSet;

use crate::cursor::Cursor;
use crate::id128::Id128;

/// One `NAME=value` field of an entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Field {
    /// The field name, e.g. `MESSAGE` or `_SYSTEMD_UNIT`.
    pub name: String,
    /// The value as stored (binary fields stay bytes).
    pub value: Vec<u8>,
    /// The value was longer than the reader keeps and was cut.
    pub truncated: bool,
}

/// One journal entry: its metadata and its fields in file order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Where the entry is: seqnum id, seqnum, boot id, timestamps, xor hash. This is
    /// also what a journald cursor holds.
    pub cursor: Cursor,
    /// The fields. A name may appear more than once.
    pub fields: Vec<Field>,
}

impl Entry {
    /// The entry's sequence number.
    pub fn seqnum(&self) -> u64 {
        self.cursor.seqnum
    }

    /// Wall-clock time in microseconds since the epoch (`__REALTIME_TIMESTAMP`).
    pub fn realtime_usec(&self) -> u64 {
        self.cursor.realtime
    }

    /// Monotonic time of the boot in microseconds (`__MONOTONIC_TIMESTAMP`).
    pub fn monotonic_usec(&self) -> u64 {
        self.cursor.monotonic
    }

    /// The boot the entry belongs to.
    pub fn boot_id(&self) -> Id128 {
        self.cursor.boot_id
    }

    /// The first value of field `name`.
    pub fn field(&self, name: &str) -> Option<&[u8]> {
        self.fields
            .iter()
            .find(|field| field.name == name)
            .map(|field| field.value.as_slice())
    }

    /// `MESSAGE`.
    pub fn message(&self) -> Option<&[u8]> {
        self.field("MESSAGE")
    }

    /// `_SYSTEMD_UNIT`, when it is UTF-8.
    pub fn unit(&self) -> Option<&str> {
        self.field("_SYSTEMD_UNIT")
            .and_then(|value| std::str::from_utf8(value).ok())
    }

    /// `_HOSTNAME`, when it is UTF-8.
    pub fn hostname(&self) -> Option<&str> {
        self.field("_HOSTNAME")
            .and_then(|value| std::str::from_utf8(value).ok())
    }

    /// `PRIORITY` (0 emergency ... 7 debug), when it is a single digit as journald
    /// writes it.
    pub fn priority(&self) -> Option<u8> {
        match self.field("PRIORITY") {
            Some([digit @ b'0'..=b'7']) => Some(digit - b'0'),
            _ => None,
        }
    }
}

/// Which entries to read, by `_SYSTEMD_UNIT`.
///
/// The filter is checked before an entry's other fields are decoded: the reader looks
/// only at the start of each data object for `_SYSTEMD_UNIT=`, so the messages of
/// entries it drops are never read or decompressed.
#[derive(Debug, Clone, Default)]
pub enum UnitFilter {
    /// Every entry.
    #[default]
    All,
    /// Entries whose `_SYSTEMD_UNIT` is one of these (e.g. `kubelet.service`); entries
    /// without the field are dropped.
    Units(HashSet<Vec<u8>>),
}

impl UnitFilter {
    /// A filter that keeps the entries of the named units.
    pub fn units<I, S>(units: I) -> UnitFilter
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        UnitFilter::Units(
            units
                .into_iter()
                .map(|unit| unit.as_ref().as_bytes().to_vec())
                .collect(),
        )
    }

    /// Whether a `_SYSTEMD_UNIT` value passes.
    pub(crate) fn allows(&self, unit: &[u8]) -> bool {
        match self {
            UnitFilter::All => true,
            UnitFilter::Units(units) => units.contains(unit),
        }
    }

    /// The longest unit name the filter can match, to bound how much of a data object
    /// the check reads.
    pub(crate) fn longest(&self) -> usize {
        match self {
            UnitFilter::All => 0,
            UnitFilter::Units(units) => units.iter().map(Vec::len).max().unwrap_or(0),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn priority_is_a_single_digit() {
        let entry = |value: &[u8]| Entry {
            cursor: Cursor::default(),
            fields: vec![Field {
                name: "PRIORITY".into(),
                value: value.to_vec(),
                truncated: false,
            }],
        };
        assert_eq!(entry(b"3").priority(), Some(3));
        assert_eq!(entry(b"8").priority(), None);
        assert_eq!(entry(b"33").priority(), None);
    }
}
