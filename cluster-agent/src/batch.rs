//! The unit a pipeline buffers and sends: a set of series with their samples and the
//! metadata of their metric families, stored in a buffer record as a snappy-compressed
//! remote-write 1.0 `WriteRequest`. Remote-write is the richest format the agent
//! speaks, so every exporter can be fed from it without loss; storing it compressed
//! keeps disk traffic near what goes over the wire.

use kaas_proto::remote_write::v1::{Label, MetricMetadata, Sample, TimeSeries, WriteRequest};
use prost::Message;

use crate::labels::{Labels, LabelsBuilder};

/// A batch of series.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Batch {
    /// The series, labels sorted by name.
    pub series: Vec<TimeSeries>,
    /// Metadata per metric family.
    pub metadata: Vec<MetricMetadata>,
}

/// A record payload that is not a batch.
#[derive(Debug, thiserror::Error)]
pub enum BatchError {
    /// Not snappy.
    #[error("cannot decompress a buffered batch: {0}")]
    Snappy(#[from] snap::Error),
    /// Not a `WriteRequest`.
    #[error("cannot decode a buffered batch: {0}")]
    Decode(#[from] prost::DecodeError),
}

impl Batch {
    /// Series with their samples; `external` labels are added to series that lack them,
    /// as Prometheus adds `external_labels` when it sends.
    pub fn from_series(
        series: Vec<(Labels, Vec<(i64, f64)>)>,
        metadata: Vec<MetricMetadata>,
        external: &Labels,
    ) -> Self {
        let series = series
            .into_iter()
            .map(|(labels, samples)| {
                let labels = if external.is_empty() {
                    labels
                } else {
                    let mut builder = LabelsBuilder::new(&labels);
                    for label in external.iter() {
                        if labels.get(&label.name).is_empty() {
                            builder.set(&label.name, &label.value);
                        }
                    }
                    builder.labels()
                };
                TimeSeries {
                    labels: labels
                        .iter()
                        .map(|l| Label {
                            name: l.name.clone(),
                            value: l.value.clone(),
                        })
                        .collect(),
                    samples: samples
                        .into_iter()
                        .map(|(timestamp, value)| Sample { value, timestamp })
                        .collect(),
                }
            })
            .collect();
        Self { series, metadata }
    }

    /// Number of samples.
    pub fn samples(&self) -> usize {
        self.series.iter().map(|s| s.samples.len()).sum()
    }

    /// The oldest sample timestamp, Unix milliseconds.
    pub fn oldest_timestamp_ms(&self) -> Option<i64> {
        self.series
            .iter()
            .flat_map(|s| s.samples.iter().map(|x| x.timestamp))
            .min()
    }

    /// The record payload: snappy(protobuf(WriteRequest)).
    pub fn encode(&self) -> Vec<u8> {
        let request = WriteRequest {
            timeseries: self.series.clone(),
            metadata: self.metadata.clone(),
        };
        compress(&request.encode_to_vec())
    }

    /// Reads a record payload.
    pub fn decode(payload: &[u8]) -> Result<Self, BatchError> {
        let raw = snap::raw::Decoder::new().decompress_vec(payload)?;
        Self::from_request_bytes(&raw)
    }

    /// Reads an uncompressed `WriteRequest`.
    pub fn from_request_bytes(raw: &[u8]) -> Result<Self, BatchError> {
        let request = WriteRequest::decode(raw)?;
        Ok(Self {
            series: request.timeseries,
            metadata: request.metadata,
        })
    }
}

/// A request as the sender hands it to an exporter: an encoded remote-write 1.0
/// `WriteRequest`, which each exporter sends as it is or converts.
#[derive(Clone, Debug)]
pub struct EncodedRequest {
    /// The encoded `WriteRequest`, snappy-compressed when `snappy` is set.
    pub body: Vec<u8>,
    /// Whether `body` is snappy-compressed (a buffered record sent as it is).
    pub snappy: bool,
    /// Samples in it.
    pub samples: u64,
    /// Its oldest sample, Unix milliseconds.
    pub oldest_ms: i64,
}

impl EncodedRequest {
    /// Encodes a decoded batch (tests, and exporters fed by structs).
    pub fn from_batch(batch: &Batch, now_ms: i64) -> Self {
        let request = WriteRequest {
            timeseries: batch.series.clone(),
            metadata: batch.metadata.clone(),
        };
        Self {
            body: request.encode_to_vec(),
            snappy: false,
            samples: batch.samples() as u64,
            oldest_ms: batch.oldest_timestamp_ms().unwrap_or(now_ms),
        }
    }

    /// The uncompressed `WriteRequest`, decompressing if needed.
    pub fn raw(&self) -> Result<std::borrow::Cow<'_, [u8]>, BatchError> {
        if self.snappy {
            Ok(std::borrow::Cow::Owned(
                snap::raw::Decoder::new().decompress_vec(&self.body)?,
            ))
        } else {
            Ok(std::borrow::Cow::Borrowed(&self.body))
        }
    }
}

/// Snappy block compression, as remote-write requires.
pub fn compress(bytes: &[u8]) -> Vec<u8> {
    // Compressing into a buffer of the maximum compressed size cannot fail.
    snap::raw::Encoder::new()
        .compress_vec(bytes)
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_through_a_record_payload() {
        let batch = Batch {
            series: vec![TimeSeries {
                labels: vec![Label {
                    name: "__name__".into(),
                    value: "up".into(),
                }],
                samples: vec![
                    Sample {
                        value: 1.0,
                        timestamp: 20,
                    },
                    Sample {
                        value: f64::NAN,
                        timestamp: 10,
                    },
                ],
            }],
            metadata: vec![],
        };
        let decoded = Batch::decode(&batch.encode()).unwrap();
        assert_eq!(decoded.samples(), 2);
        assert_eq!(decoded.oldest_timestamp_ms(), Some(10));
        assert!(decoded.series[0].samples[1].value.is_nan());
        assert!(Batch::decode(b"not snappy").is_err());
    }
}

/// Remote-write 1.0 on the wire, hand-rolled for the hot path: series labels are
/// encoded once (and cached by the scraper), samples are appended to an encoded
/// request without building message structs, and the sender regroups encoded frames
/// without decoding them. Bytes written here decode with `prost` like any other
/// `WriteRequest` (tests check that).
pub mod wire {
    use kaas_proto::remote_write::v1::MetricMetadata;
    use prost::Message;

    use crate::labels::Labels;

    /// `WriteRequest.timeseries` (field 1, length-delimited).
    const TIMESERIES_TAG: u8 = 0x0a;
    /// `WriteRequest.metadata` (field 3, length-delimited).
    const METADATA_TAG: u8 = 0x1a;
    /// `TimeSeries.labels` (field 1) and `Label.name` (field 1).
    const FIELD_1_BYTES: u8 = 0x0a;
    /// `TimeSeries.samples` (field 2) and `Label.value` (field 2).
    const FIELD_2_BYTES: u8 = 0x12;
    /// `Sample.value` (field 1, 64-bit).
    const SAMPLE_VALUE_TAG: u8 = 0x09;
    /// `Sample.timestamp` (field 2, varint).
    const SAMPLE_TIMESTAMP_TAG: u8 = 0x10;

    /// Appends a protobuf varint.
    pub fn put_varint(buf: &mut Vec<u8>, mut value: u64) {
        while value >= 0x80 {
            buf.push((value as u8) | 0x80);
            value >>= 7;
        }
        buf.push(value as u8);
    }

    fn varint_len(mut value: u64) -> usize {
        let mut len = 1;
        while value >= 0x80 {
            value >>= 7;
            len += 1;
        }
        len
    }

    /// Reads a varint at `*pos`.
    pub fn get_varint(bytes: &[u8], pos: &mut usize) -> Option<u64> {
        let mut value = 0u64;
        for shift in (0..64).step_by(7) {
            let byte = *bytes.get(*pos)?;
            *pos += 1;
            value |= u64::from(byte & 0x7f) << shift;
            if byte < 0x80 {
                return Some(value);
            }
        }
        None
    }

    fn put_bytes_field(buf: &mut Vec<u8>, tag: u8, bytes: &[u8]) {
        buf.push(tag);
        put_varint(buf, bytes.len() as u64);
        buf.extend_from_slice(bytes);
    }

    /// A series' labels as repeated `TimeSeries.labels` fields, ready to be reused for
    /// every sample of the series.
    pub fn encode_labels(labels: &Labels) -> Vec<u8> {
        let mut out = Vec::new();
        let mut label = Vec::new();
        for l in labels.iter() {
            label.clear();
            put_bytes_field(&mut label, FIELD_1_BYTES, l.name.as_bytes());
            put_bytes_field(&mut label, FIELD_2_BYTES, l.value.as_bytes());
            put_bytes_field(&mut out, FIELD_1_BYTES, &label);
        }
        out
    }

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
        pub fn new<'a>(labels: impl IntoIterator<Item = &'a crate::labels::Label>) -> Self {
            let mut shared = Self::default();
            for label in labels {
                shared.intern(&label.name, &label.value);
            }
            shared
        }

        /// The encoded field at `index`.
        fn field(&self, index: u8) -> Option<&[u8]> {
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

    /// Builds an encoded `WriteRequest`.
    #[derive(Debug, Default)]
    pub struct RequestWriter {
        buf: Vec<u8>,
        samples: usize,
        oldest_ms: Option<i64>,
    }

    impl RequestWriter {
        /// An empty request with room for about `bytes`.
        pub fn with_capacity(bytes: usize) -> Self {
            Self {
                buf: Vec::with_capacity(bytes),
                ..Self::default()
            }
        }

        /// An empty request writing into `buffer` (cleared), to reuse its allocation.
        pub fn from_buffer(mut buffer: Vec<u8>) -> Self {
            buffer.clear();
            Self {
                buf: buffer,
                ..Self::default()
            }
        }

        /// Appends one series with one sample; `labels` from [`encode_labels`].
        pub fn sample(&mut self, labels: &[u8], timestamp_ms: i64, value: f64) {
            let sample_len = self.series_start(labels.len(), timestamp_ms);
            self.buf.extend_from_slice(labels);
            self.series_end(sample_len, timestamp_ms, value);
        }

        /// Appends one series with one sample; labels from [`encode_template`] with the
        /// same `shared` labels, `labels_len` the length it returned.
        pub fn sample_from_template(
            &mut self,
            template: &[u8],
            labels_len: usize,
            shared: &SharedLabels,
            timestamp_ms: i64,
            value: f64,
        ) {
            let sample_len = self.series_start(labels_len, timestamp_ms);
            let mut pos = 0;
            while pos < template.len() {
                let Some(len) = get_varint(template, &mut pos) else {
                    break;
                };
                let end = (pos + len as usize).min(template.len());
                self.buf.extend_from_slice(&template[pos..end]);
                pos = end;
                let Some(&index) = template.get(pos) else {
                    break;
                };
                pos += 1;
                if let Some(field) = shared.field(index) {
                    self.buf.extend_from_slice(field);
                }
            }
            self.series_end(sample_len, timestamp_ms, value);
        }

        /// Starts a `TimeSeries` whose labels take `labels_len` bytes; returns the
        /// length of its one sample.
        fn series_start(&mut self, labels_len: usize, timestamp_ms: i64) -> usize {
            // Sample: value (1 + 8 bytes) and timestamp (1 + varint).
            let sample_len = 9 + 1 + varint_len(timestamp_ms as u64);
            let body_len = labels_len + 1 + varint_len(sample_len as u64) + sample_len;
            self.buf.push(TIMESERIES_TAG);
            put_varint(&mut self.buf, body_len as u64);
            sample_len
        }

        /// Ends a `TimeSeries` started by [`Self::series_start`] with its sample.
        fn series_end(&mut self, sample_len: usize, timestamp_ms: i64, value: f64) {
            self.buf.push(FIELD_2_BYTES);
            put_varint(&mut self.buf, sample_len as u64);
            self.buf.push(SAMPLE_VALUE_TAG);
            self.buf.extend_from_slice(&value.to_le_bytes());
            self.buf.push(SAMPLE_TIMESTAMP_TAG);
            put_varint(&mut self.buf, timestamp_ms as u64);
            self.samples += 1;
            self.oldest_ms = Some(self.oldest_ms.map_or(timestamp_ms, |o| o.min(timestamp_ms)));
        }

        /// Appends an already encoded frame (a `TimeSeries` body) with its sample count.
        pub fn series_frame(&mut self, body: &[u8], samples: usize) {
            put_bytes_field(&mut self.buf, TIMESERIES_TAG, body);
            self.samples += samples;
        }

        /// Appends metadata of one family.
        pub fn metadata(&mut self, metadata: &MetricMetadata) {
            put_bytes_field(&mut self.buf, METADATA_TAG, &metadata.encode_to_vec());
        }

        /// Appends an already encoded `MetricMetadata`.
        pub fn metadata_frame(&mut self, body: &[u8]) {
            put_bytes_field(&mut self.buf, METADATA_TAG, body);
        }

        /// Samples written.
        pub fn samples(&self) -> usize {
            self.samples
        }

        /// The oldest sample timestamp written.
        pub fn oldest_ms(&self) -> Option<i64> {
            self.oldest_ms
        }

        /// The encoded `WriteRequest`, uncompressed.
        pub fn into_bytes(self) -> Vec<u8> {
            self.buf
        }
    }

    /// One field of an encoded `WriteRequest`, borrowed from it.
    #[derive(Debug, PartialEq, Eq)]
    pub enum Frame<'a> {
        /// A `TimeSeries` body.
        Series {
            /// The whole body.
            body: &'a [u8],
            /// The label fields at its start (what identifies the series).
            labels: &'a [u8],
            /// Number of samples in it.
            samples: usize,
        },
        /// A `MetricMetadata` body.
        Metadata(&'a [u8]),
    }

    /// A hash of a series' encoded labels without `__name__`, `le` and `quantile`: equal
    /// for all series of one histogram or summary point (`_bucket`, `_sum`, `_count`),
    /// so grouping by it keeps a point's series together, and stable per series, so
    /// each series always lands in the same group.
    pub fn group_hash(labels: &[u8], state: &impl std::hash::BuildHasher) -> u64 {
        use std::hash::Hasher;
        let mut hasher = state.build_hasher();
        let mut pos = 0;
        while pos < labels.len() {
            let start = pos;
            // Each label field: tag, length, then the Label message.
            let (Some(_key), Some(len)) =
                (get_varint(labels, &mut pos), get_varint(labels, &mut pos))
            else {
                break;
            };
            let end = (pos + len as usize).min(labels.len());
            let label = &labels[pos..end];
            pos = end;
            // The Label message starts with its name: tag, length, bytes.
            let mut inner = 0;
            let name = match (get_varint(label, &mut inner), get_varint(label, &mut inner)) {
                (Some(_), Some(n)) => label.get(inner..inner + n as usize).unwrap_or(&[]),
                _ => &[][..],
            };
            if matches!(name, b"__name__" | b"le" | b"quantile") {
                continue;
            }
            hasher.write(&labels[start..end]);
        }
        hasher.finish()
    }

    /// Why bytes are not a `WriteRequest`.
    #[derive(Debug, PartialEq, Eq, thiserror::Error)]
    #[error("malformed remote-write request at byte {0}")]
    pub struct WireError(pub usize);

    /// Splits an encoded `WriteRequest` into frames without decoding them.
    pub fn frames(bytes: &[u8]) -> Result<Vec<Frame<'_>>, WireError> {
        let mut out = Vec::new();
        let mut pos = 0;
        while pos < bytes.len() {
            let start = pos;
            let key = get_varint(bytes, &mut pos).ok_or(WireError(start))?;
            let (field, wire_type) = (key >> 3, key & 7);
            let body = match wire_type {
                2 => {
                    let len = get_varint(bytes, &mut pos).ok_or(WireError(pos))? as usize;
                    let end = pos
                        .checked_add(len)
                        .filter(|e| *e <= bytes.len())
                        .ok_or(WireError(pos))?;
                    let body = &bytes[pos..end];
                    pos = end;
                    body
                }
                0 => {
                    get_varint(bytes, &mut pos).ok_or(WireError(pos))?;
                    continue;
                }
                1 => {
                    pos += 8;
                    continue;
                }
                5 => {
                    pos += 4;
                    continue;
                }
                _ => return Err(WireError(start)),
            };
            match field {
                1 => out.push(series_frame(body).map_err(|e| WireError(start + e.0))?),
                3 => out.push(Frame::Metadata(body)),
                _ => {}
            }
        }
        Ok(out)
    }

    fn series_frame(body: &[u8]) -> Result<Frame<'_>, WireError> {
        let mut pos = 0;
        let mut labels_end = 0;
        let mut in_labels = true;
        let mut samples = 0;
        while pos < body.len() {
            let start = pos;
            let key = get_varint(body, &mut pos).ok_or(WireError(start))?;
            let (field, wire_type) = (key >> 3, key & 7);
            match wire_type {
                2 => {
                    let len = get_varint(body, &mut pos).ok_or(WireError(pos))? as usize;
                    pos = pos
                        .checked_add(len)
                        .filter(|e| *e <= body.len())
                        .ok_or(WireError(pos))?;
                }
                0 => {
                    get_varint(body, &mut pos).ok_or(WireError(pos))?;
                }
                1 => pos += 8,
                5 => pos += 4,
                _ => return Err(WireError(start)),
            }
            if field == 1 && in_labels {
                labels_end = pos;
            } else {
                in_labels = false;
            }
            if field == 2 {
                samples += 1;
            }
        }
        Ok(Frame::Series {
            body,
            labels: &body[..labels_end],
            samples,
        })
    }

    #[cfg(test)]
    mod tests {
        use kaas_proto::remote_write::v1::{MetricType, WriteRequest};

        use super::*;

        #[test]
        fn hand_encoded_requests_decode_with_prost_and_split_into_frames() {
            let labels = Labels::from_pairs([("__name__", "up"), ("job", "api")]);
            let encoded = encode_labels(&labels);
            let mut writer = RequestWriter::default();
            writer.sample(&encoded, 1_700_000_000_123, 1.0);
            writer.sample(&encoded, -5, f64::NAN);
            writer.metadata(&MetricMetadata {
                r#type: MetricType::Gauge as i32,
                metric_family_name: "up".into(),
                help: String::new(),
                unit: String::new(),
            });
            assert_eq!(writer.samples(), 2);
            assert_eq!(writer.oldest_ms(), Some(-5));
            let bytes = writer.into_bytes();
            let decoded = WriteRequest::decode(bytes.as_slice()).unwrap();
            assert_eq!(decoded.timeseries.len(), 2);
            assert_eq!(decoded.timeseries[0].labels[1].value, "api");
            assert_eq!(
                decoded.timeseries[0].samples[0].timestamp,
                1_700_000_000_123
            );
            assert_eq!(decoded.timeseries[1].samples[0].timestamp, -5);
            assert!(decoded.timeseries[1].samples[0].value.is_nan());
            assert_eq!(decoded.metadata[0].metric_family_name, "up");

            let frames = frames(&bytes).unwrap();
            assert_eq!(frames.len(), 3);
            let Frame::Series {
                labels, samples, ..
            } = &frames[0]
            else {
                panic!("series first");
            };
            assert_eq!(*labels, encoded.as_slice());
            assert_eq!(*samples, 1);
            assert!(matches!(frames[2], Frame::Metadata(_)));
            // The group hash ignores the name, so a histogram's series group together.
            let state = foldhash::fast::FixedState::with_seed(1);
            let bucket = encode_labels(&Labels::from_pairs([
                ("__name__", "x_bucket"),
                ("le", "1"),
                ("job", "a"),
            ]));
            let count = encode_labels(&Labels::from_pairs([("__name__", "x_count"), ("job", "a")]));
            let other = encode_labels(&Labels::from_pairs([("__name__", "x_count"), ("job", "b")]));
            assert_eq!(group_hash(&bucket, &state), group_hash(&count, &state));
            assert_ne!(group_hash(&count, &state), group_hash(&other, &state));
            // Prost-encoded requests split the same way.
            let prost_bytes = decoded.encode_to_vec();
            assert_eq!(super::frames(&prost_bytes).unwrap().len(), 3);
            assert!(super::frames(&[0x0a, 0x05, 0x01]).is_err());
        }

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
}
