//! Shared labels: a per-target dictionary of encoded label fields, and series label
//! templates that refer to it, so a cached series stores little more than one-byte
//! references (see [`SharedLabels`]).

use super::wire::{FIELD_1_BYTES, FIELD_2_BYTES, put_bytes_field, put_varint, varint_len};
use crate::labels::{Label, Labels};

/// Marks the end of a template run without a shared label after it.
const NO_SHARED: u8 = u8::MAX;

/// Most label fields a dictionary holds: indexes are one byte, and [`NO_SHARED`]
/// is taken. Also what bounds a dictionary's memory (a few KiB) however many
/// distinct labels a target exposes.
pub const MAX_SHARED_LABELS: usize = NO_SHARED as usize;

/// A per-target dictionary of label fields, each encoded once as a
/// `TimeSeries.labels` field, that [`encode_template`] refers to by a one-byte
/// index. It starts with the target's and the external labels and takes every
/// further distinct label it is given until it holds [`MAX_SHARED_LABELS`]; later
/// labels are written as literals. On a typical exposition (metric names, `code`,
/// `method`, `le`, … repeat across series) a series' own labels then cost about two
/// bytes each instead of their text. Fields are never removed: a dictionary lives as
/// long as its target's series cache.
#[derive(Clone, Debug, Default)]
pub struct SharedLabels {
    /// The encoded fields, back to back.
    bytes: Vec<u8>,
    /// Where each field ends in `bytes`.
    ends: Vec<u32>,
    /// Field indexes by the hash of the field's bytes, to intern in constant time
    /// (a million-series first scrape interns tens of millions of labels).
    index: hashbrown::HashTable<u8>,
}

/// The field at `index` of a dictionary's `bytes` and `ends`.
fn field_of<'a>(bytes: &'a [u8], ends: &[u32], index: u8) -> Option<&'a [u8]> {
    let index = usize::from(index);
    let end = *ends.get(index)? as usize;
    let start = index.checked_sub(1).map_or(0, |i| ends[i] as usize);
    bytes.get(start..end)
}

/// Hashes dictionary fields (not attacker-sensitive: a collision costs one more
/// comparison, and a dictionary holds at most 255 fields).
fn field_hash(field: &[u8]) -> u64 {
    use std::hash::BuildHasher;
    foldhash::fast::FixedState::with_seed(0).hash_one(field)
}

impl SharedLabels {
    /// A dictionary starting with `labels` (up to [`MAX_SHARED_LABELS`]).
    pub fn new<'a>(labels: impl IntoIterator<Item = &'a Label>) -> Self {
        let mut shared = Self::default();
        for label in labels {
            shared.intern(&label.name, &label.value);
        }
        shared
    }

    /// The encoded field at `index`.
    pub(super) fn field(&self, index: u8) -> Option<&[u8]> {
        field_of(&self.bytes, &self.ends, index)
    }

    /// The index of a label's field, added when it is new and there is room.
    fn intern(&mut self, name: &str, value: &str) -> Option<u8> {
        let mut field = Vec::with_capacity(name.len() + value.len() + 6);
        put_label_field(&mut field, name, value);
        let hash = field_hash(&field);
        let (bytes, ends) = (&self.bytes, &self.ends);
        if let Some(&found) = self
            .index
            .find(hash, |&i| field_of(bytes, ends, i) == Some(&field[..]))
        {
            return Some(found);
        }
        if self.ends.len() >= MAX_SHARED_LABELS {
            return None;
        }
        let index = u8::try_from(self.ends.len()).ok()?;
        self.bytes.extend_from_slice(&field);
        self.ends
            .push(u32::try_from(self.bytes.len()).unwrap_or(u32::MAX));
        let (bytes, ends) = (&self.bytes, &self.ends);
        self.index.insert_unique(hash, index, |&i| {
            field_of(bytes, ends, i).map_or(0, field_hash)
        });
        Some(index)
    }

    /// How many fields it holds.
    pub fn len(&self) -> usize {
        self.ends.len()
    }

    /// Whether it holds none.
    pub fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }
}

fn put_label_field(buf: &mut Vec<u8>, name: &str, value: &str) {
    // A Label message: name (field 1), value (field 2).
    let len = 1
        + varint_len(name.len() as u64)
        + name.len()
        + 1
        + varint_len(value.len() as u64)
        + value.len();
    buf.push(FIELD_1_BYTES);
    put_varint(buf, len as u64);
    put_bytes_field(buf, FIELD_1_BYTES, name.as_bytes());
    put_bytes_field(buf, FIELD_2_BYTES, value.as_bytes());
}

/// A series' labels as a template: the label fields of [`encode_labels`] with each
/// label found in (or added to) `shared` replaced by a one-byte reference to it.
/// A series then stores little more than the references; the fields are stored
/// once per target.
///
/// Format: runs of `literal length (varint), literal label fields, shared index
/// (one byte; 255 for none)`. Returns the template and the length of the labels it
/// expands to.
pub fn encode_template(labels: &Labels, shared: &mut SharedLabels) -> (Vec<u8>, usize) {
    let mut out = Vec::new();
    let mut literal = Vec::new();
    let mut expanded = 0;
    for l in labels.iter() {
        match shared.intern(&l.name, &l.value) {
            Some(index) => {
                put_bytes_run(&mut out, &literal, index);
                expanded += literal.len() + shared.field(index).map_or(0, <[u8]>::len);
                literal.clear();
            }
            None => put_label_field(&mut literal, &l.name, &l.value),
        }
    }
    if !literal.is_empty() || out.is_empty() {
        put_bytes_run(&mut out, &literal, NO_SHARED);
        expanded += literal.len();
    }
    (out, expanded)
}

fn put_bytes_run(out: &mut Vec<u8>, literal: &[u8], shared: u8) {
    put_varint(out, literal.len() as u64);
    out.extend_from_slice(literal);
    out.push(shared);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::wire::{RequestWriter, encode_labels};

    #[test]
    fn templates_expand_to_the_plain_encoding() {
        let target = Labels::from_pairs([("instance", "a:80"), ("job", "api"), ("zone", "z")]);
        let mut shared = SharedLabels::new(target.iter());
        let cases = [
            Labels::from_pairs([
                ("__name__", "x"),
                ("code", "200"),
                ("instance", "a:80"),
                ("job", "api"),
                ("path", "/"),
                ("zone", "z"),
            ]),
            // A relabeled value is not the shared one: a literal.
            Labels::from_pairs([("__name__", "x"), ("instance", "b:80"), ("job", "api")]),
            Labels::from_pairs([("job", "api"), ("zone", "z")]),
            Labels::from_pairs([("__name__", "only_literals")]),
            Labels::default(),
            Labels::from_pairs([
                ("__name__", "long"),
                ("v", "x".repeat(300).as_str()),
                ("zone", "z"),
            ]),
        ];
        for labels in cases {
            let plain = encode_labels(&labels);
            let (template, len) = encode_template(&labels, &mut shared);
            assert_eq!(len, plain.len(), "{labels:?}");
            let mut a = RequestWriter::default();
            a.sample(&plain, 7, 1.5);
            let mut b = RequestWriter::default();
            b.sample_from_template(&template, len, &shared, 7, 1.5);
            assert_eq!(a.into_bytes(), b.into_bytes(), "{labels:?}");
        }
    }

    #[test]
    fn the_dictionary_shares_repeated_labels_and_stops_at_its_bound() {
        let mut shared =
            SharedLabels::new(Labels::from_pairs([("job", "api"), ("job", "api")]).iter());
        assert_eq!(shared.len(), 1, "a repeated label is stored once");
        let series = |i: usize| {
            Labels::from_pairs([
                ("__name__", "requests_total".to_owned()),
                ("id", format!("{i}")),
                ("job", "api".to_owned()),
            ])
        };
        let (first, _) = encode_template(&series(0), &mut shared);
        let (second, _) = encode_template(&series(1), &mut shared);
        // Three references each (two bytes a run): the name and `job` are shared.
        assert_eq!((first.len(), second.len()), (6, 6));
        assert_eq!(shared.len(), 4);
        // Past the bound, new labels are literals, and everything still expands to
        // the plain encoding.
        for i in 2..400 {
            let labels = series(i);
            let (template, len) = encode_template(&labels, &mut shared);
            let plain = encode_labels(&labels);
            assert_eq!(len, plain.len());
            let mut a = RequestWriter::default();
            a.sample(&plain, 7, 1.5);
            let mut b = RequestWriter::default();
            b.sample_from_template(&template, len, &shared, 7, 1.5);
            assert_eq!(a.into_bytes(), b.into_bytes(), "{labels:?}");
        }
        assert_eq!(shared.len(), MAX_SHARED_LABELS);
        let (late, _) = encode_template(&series(399), &mut shared);
        assert!(late.len() > 6, "a label past the bound is a literal");
    }
}
