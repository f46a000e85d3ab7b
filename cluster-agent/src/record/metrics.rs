//! The metric record: the unit a metrics pipeline buffers and sends, a set of series with their samples and the
//! metadata of their metric families, stored in a buffer record as a snappy-compressed
//! remote-write 1.0 `WriteRequest`. Remote-write is the richest format the agent
//! speaks, so every exporter can be fed from it without loss; storing it compressed
//! keeps disk traffic near what goes over the wire.

use kaas_proto::remote_write::v1::{Label, MetricMetadata, Sample, TimeSeries, WriteRequest};
use prost::Message;

use super::signal::{Frame, FrameEncoding, FrameError, Payload, ShardingKey};
use super::wire::{self, RequestWriter};
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
        compress(&self.payload())
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

impl Payload for Batch {
    fn payload(&self) -> Vec<u8> {
        WriteRequest {
            timeseries: self.series.clone(),
            metadata: self.metadata.clone(),
        }
        .encode_to_vec()
    }

    fn items(&self) -> usize {
        self.samples()
    }

    fn oldest_ms(&self) -> Option<i64> {
        self.oldest_timestamp_ms()
    }
}

/// The metric signal: records are remote-write 1.0 `WriteRequest`s; a series is a
/// frame, sharded by its group ([`wire::group_hash`]: all series of a histogram or
/// summary point together), and metadata is shared by every request of a round.
#[derive(Clone, Copy, Debug)]
pub struct Metrics;

impl FrameEncoding for Metrics {
    type Request = EncodedRequest;

    fn frames(payload: &[u8]) -> Result<Vec<Frame<'_>>, FrameError> {
        let frames = wire::frames(payload).map_err(|e| FrameError(e.to_string()))?;
        Ok(frames
            .into_iter()
            .map(|frame| match frame {
                wire::Frame::Series {
                    body,
                    labels,
                    samples,
                } => Frame::Items {
                    body,
                    key: labels,
                    items: samples,
                },
                wire::Frame::Metadata(body) => Frame::Shared(body),
            })
            .collect())
    }

    fn request(frames: &[&[u8]], shared: &[&[u8]], items: u64, oldest_ms: i64) -> EncodedRequest {
        let mut writer = RequestWriter::default();
        for body in frames {
            writer.series_frame(body, 0);
        }
        for body in shared {
            writer.metadata_frame(body);
        }
        EncodedRequest {
            body: writer.into_bytes(),
            snappy: false,
            samples: items,
            oldest_ms,
        }
    }

    fn whole_record(compressed: Vec<u8>, items: u64, oldest_ms: i64) -> EncodedRequest {
        EncodedRequest {
            body: compressed,
            snappy: true,
            samples: items,
            oldest_ms,
        }
    }

    fn items(request: &EncodedRequest) -> u64 {
        request.samples
    }

    fn oldest_ms(request: &EncodedRequest) -> i64 {
        request.oldest_ms
    }
}

impl ShardingKey for Metrics {
    fn shard_key(labels: &[u8]) -> u64 {
        wire::group_hash(labels, &foldhash::fast::FixedState::with_seed(0))
    }
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
