//! Remote-write 1.0 on the wire, hand-rolled for the hot path: series labels are
//! encoded once (and cached by the scraper), samples are appended to an encoded
//! request without building message structs, and the sender regroups encoded frames
//! without decoding them. Bytes written here decode with `prost` like any other
//! `WriteRequest` (tests check that).

use kaas_proto::remote_write::v1::MetricMetadata;
use prost::Message;

use super::shared_labels::SharedLabels;
use crate::labels::Labels;

/// `WriteRequest.timeseries` (field 1, length-delimited).
const TIMESERIES_TAG: u8 = 0x0a;
/// `WriteRequest.metadata` (field 3, length-delimited).
const METADATA_TAG: u8 = 0x1a;
/// `TimeSeries.labels` (field 1) and `Label.name` (field 1).
pub(super) const FIELD_1_BYTES: u8 = 0x0a;
/// `TimeSeries.samples` (field 2) and `Label.value` (field 2).
pub(super) const FIELD_2_BYTES: u8 = 0x12;
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

pub(super) fn varint_len(mut value: u64) -> usize {
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

pub(super) fn put_bytes_field(buf: &mut Vec<u8>, tag: u8, bytes: &[u8]) {
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

    /// Appends one series with one sample; labels from
    /// [`encode_template`](super::shared_labels::encode_template) with the
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
        let (Some(_key), Some(len)) = (get_varint(labels, &mut pos), get_varint(labels, &mut pos))
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
}
