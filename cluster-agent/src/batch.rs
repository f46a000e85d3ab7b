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
    /// One sample per series; `external` labels are added to series that lack them, as
    /// Prometheus adds `external_labels` when it sends.
    pub fn from_samples(
        samples: Vec<(Labels, i64, f64)>,
        metadata: Vec<MetricMetadata>,
        external: &Labels,
    ) -> Self {
        let series = samples
            .into_iter()
            .map(|(labels, timestamp, value)| {
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
                    samples: vec![Sample { value, timestamp }],
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
        let request = WriteRequest::decode(raw.as_slice())?;
        Ok(Self {
            series: request.timeseries,
            metadata: request.metadata,
        })
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
