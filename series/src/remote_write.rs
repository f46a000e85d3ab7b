//! Prometheus remote-write 1.0 requests (`prometheus.WriteRequest`, snappy-compressed)
//! decoded under [`PushLimits`]: the body is walked field by field with label names and
//! values borrowed from it, and every limit is checked before a label set is built, so
//! a request costs memory in proportion to what it is allowed to hold, not to what it
//! claims. Exemplars and native histograms (fields the agent does not forward) are
//! skipped.

use kaas_proto::remote_write::v1::MetricMetadata;
use prost::Message;

use crate::labels::{Labels, METRIC_NAME};
use crate::wire::{Fields, Value, malformed, message, text};
use crate::{DecodeError, PushLimits, Pushed, PushedSeries, compression, quoted};

/// Decompresses and decodes a remote-write 1.0 body.
pub fn decode(body: &[u8], limits: &PushLimits) -> Result<Pushed, DecodeError> {
    if body.len() > limits.max_body_bytes {
        return Err(DecodeError::BodyTooLarge {
            limit: limits.max_body_bytes,
        });
    }
    let raw = compression::snappy(body, limits.max_decompressed_bytes)?;
    decode_request(&raw, limits)
}

/// Decodes an uncompressed `WriteRequest`.
pub fn decode_request(raw: &[u8], limits: &PushLimits) -> Result<Pushed, DecodeError> {
    let mut budget = Budget {
        samples: 0,
        labels: 0,
        limits,
    };
    let mut pushed = Pushed::default();
    // Label slices of the series being read; reused, never longer than the limit.
    let mut scratch: Vec<(&str, &str)> = Vec::new();
    let mut fields = Fields::new(raw);
    while let Some((number, value)) = fields.next_field()? {
        match number {
            1 => {
                let series =
                    read_series(message(value, "a time series")?, &mut scratch, &mut budget)?;
                pushed.series.push(series);
            }
            3 => {
                budget.add_labels(1)?;
                let metadata = MetricMetadata::decode(message(value, "metric metadata")?)
                    .map_err(|e| DecodeError::Malformed(format!("invalid metric metadata: {e}")))?;
                limits.check_label(METRIC_NAME, &metadata.metric_family_name)?;
                pushed.metadata.push(metadata);
            }
            _ => {}
        }
    }
    Ok(pushed)
}

/// What a request has used of its limits so far.
struct Budget<'a> {
    samples: usize,
    labels: usize,
    limits: &'a PushLimits,
}

impl Budget<'_> {
    fn add_labels(&mut self, count: usize) -> Result<(), DecodeError> {
        self.labels += count;
        if self.labels > self.limits.max_labels_per_request {
            return Err(DecodeError::TooManyLabelsInRequest {
                limit: self.limits.max_labels_per_request,
            });
        }
        Ok(())
    }

    fn add_sample(&mut self) -> Result<(), DecodeError> {
        self.samples += 1;
        if self.samples > self.limits.max_samples_per_request {
            return Err(DecodeError::TooManySamples {
                limit: self.limits.max_samples_per_request,
            });
        }
        Ok(())
    }
}

/// Reads one `TimeSeries`: labels checked as they come (count first, then each name and
/// value), the label set built only once all of them passed.
fn read_series<'a>(
    series: &'a [u8],
    scratch: &mut Vec<(&'a str, &'a str)>,
    budget: &mut Budget<'_>,
) -> Result<PushedSeries, DecodeError> {
    let limits = budget.limits;
    scratch.clear();
    let mut samples = Vec::new();
    let mut fields = Fields::new(series);
    while let Some((number, value)) = fields.next_field()? {
        match number {
            1 => {
                if scratch.len() == limits.max_labels_per_series {
                    let metric = scratch
                        .iter()
                        .find(|(n, _)| *n == METRIC_NAME)
                        .map_or_else(String::new, |(_, v)| quoted(v));
                    return Err(DecodeError::TooManyLabels {
                        metric,
                        limit: limits.max_labels_per_series,
                    });
                }
                let (name, value) = read_label(message(value, "a label")?)?;
                limits.check_label(name, value)?;
                scratch.push((name, value));
            }
            2 => {
                budget.add_sample()?;
                samples.push(read_sample(message(value, "a sample")?)?);
            }
            _ => {}
        }
    }
    budget.add_labels(scratch.len())?;
    Ok(PushedSeries {
        labels: Labels::from_pairs(scratch.iter().copied()),
        samples,
    })
}

fn read_label(label: &[u8]) -> Result<(&str, &str), DecodeError> {
    let (mut name, mut value) = ("", "");
    let mut fields = Fields::new(label);
    while let Some((number, field)) = fields.next_field()? {
        match number {
            1 => name = text(field, "a label name")?,
            2 => value = text(field, "a label value")?,
            _ => {}
        }
    }
    Ok((name, value))
}

fn read_sample(sample: &[u8]) -> Result<(i64, f64), DecodeError> {
    let (mut timestamp, mut value) = (0i64, 0f64);
    let mut fields = Fields::new(sample);
    while let Some((number, field)) = fields.next_field()? {
        match (number, field) {
            (1, Value::Fixed64(bits)) => value = f64::from_bits(bits),
            // int64 on the wire: the two's complement of the varint.
            (2, Value::Varint(raw)) => timestamp = raw as i64,
            (1 | 2, _) => return Err(malformed("a sample field has the wrong wire type")),
            _ => {}
        }
    }
    Ok((timestamp, value))
}

#[cfg(test)]
mod tests {
    use kaas_proto::remote_write::v1::{Label, MetricType, Sample, TimeSeries, WriteRequest};

    use super::*;

    fn series(labels: &[(&str, &str)], samples: &[(i64, f64)]) -> TimeSeries {
        TimeSeries {
            labels: labels
                .iter()
                .map(|(n, v)| Label {
                    name: (*n).into(),
                    value: (*v).into(),
                })
                .collect(),
            samples: samples
                .iter()
                .map(|&(timestamp, value)| Sample { value, timestamp })
                .collect(),
        }
    }

    fn body(request: &WriteRequest) -> Vec<u8> {
        snap::raw::Encoder::new()
            .compress_vec(&request.encode_to_vec())
            .unwrap()
    }

    #[test]
    fn decodes_what_prost_encodes() {
        let request = WriteRequest {
            timeseries: vec![
                series(&[("__name__", "up"), ("job", "a")], &[(-5, 1.0), (10, 0.5)]),
                series(&[("job", "b"), ("__name__", "up"), ("job", "c")], &[]),
            ],
            metadata: vec![MetricMetadata {
                r#type: MetricType::Gauge as i32,
                metric_family_name: "up".into(),
                help: "Up.".into(),
                unit: String::new(),
            }],
        };
        let pushed = decode(&body(&request), &PushLimits::default()).unwrap();
        assert_eq!(pushed.series.len(), 2);
        assert_eq!(
            format!("{:?}", pushed.series[0].labels),
            r#"{__name__="up", job="a"}"#
        );
        assert_eq!(pushed.series[0].samples, [(-5, 1.0), (10, 0.5)]);
        assert_eq!(
            format!("{:?}", pushed.series[1].labels),
            r#"{__name__="up", job="c"}"#,
            "the later of two labels with one name wins"
        );
        assert_eq!(pushed.metadata, request.metadata);
        assert_eq!(pushed.samples(), 2);
    }

    /// Issue 13, finding 4: every limit refuses a request just over it, with its
    /// reason; 552c13e decoded all of these.
    #[test]
    fn each_limit_refuses_a_request_just_over_it() {
        let limits = PushLimits {
            max_body_bytes: 1000,
            max_decompressed_bytes: 1000,
            max_labels_per_series: 3,
            max_label_name_bytes: 8,
            max_label_value_bytes: 8,
            max_samples_per_request: 2,
            max_labels_per_request: 5,
            max_otlp_messages: 10,
        };
        let request = |timeseries: Vec<TimeSeries>| WriteRequest {
            timeseries,
            metadata: vec![],
        };
        let cases = [
            (
                request(vec![series(
                    &[("a", "1"), ("b", "2"), ("c", "3"), ("d", "4")],
                    &[],
                )]),
                "too_many_labels",
            ),
            (
                request(vec![series(&[("a_long_name", "1")], &[])]),
                "label_name_too_long",
            ),
            (
                request(vec![series(&[("a", "a long value")], &[])]),
                "label_value_too_long",
            ),
            (
                request(vec![series(&[("a", "1")], &[(1, 1.0), (2, 2.0), (3, 3.0)])]),
                "too_many_samples",
            ),
            (
                request(vec![
                    series(&[("a", "1"), ("b", "2"), ("c", "3")], &[]),
                    series(&[("a", "1"), ("b", "2"), ("c", "3")], &[]),
                ]),
                "too_many_labels_in_request",
            ),
            (
                request(vec![series(&[("a", &"x".repeat(7))], &[]); 200]),
                "decompressed_too_large",
            ),
        ];
        for (request, reason) in cases {
            let error = decode(&body(&request), &limits).unwrap_err();
            assert_eq!(error.reason(), reason, "{error}");
        }
        let big = vec![0u8; 1001];
        assert_eq!(
            decode(&big, &limits).unwrap_err().reason(),
            "body_too_large"
        );
        let ok = request(vec![series(
            &[("a", "1"), ("b", "2"), ("c", "3")],
            &[(1, 1.0), (2, 2.0)],
        )]);
        assert!(decode(&body(&ok), &limits).is_ok());
    }

    /// Issue 13, finding 4: a 200,000-label series is refused at the first label over
    /// the default limit; the labels are never built.
    #[test]
    fn a_series_with_200k_labels_is_refused() {
        let labels: Vec<(String, String)> = (0..200_000)
            .map(|i| (format!("l{i}"), "v".to_owned()))
            .collect();
        let pairs: Vec<(&str, &str)> = labels
            .iter()
            .map(|(n, v)| (n.as_str(), v.as_str()))
            .collect();
        let request = WriteRequest {
            timeseries: vec![series(&pairs, &[(1, 1.0)])],
            metadata: vec![],
        };
        let error = decode(&body(&request), &PushLimits::default()).unwrap_err();
        assert_eq!(
            error,
            DecodeError::TooManyLabels {
                metric: String::new(),
                limit: crate::limits::DEFAULT_MAX_LABELS_PER_SERIES
            }
        );
        assert!(!error.is_too_large(), "a bad series is a 400, not a 413");
    }

    #[test]
    fn broken_bodies_are_malformed() {
        let limits = PushLimits::default();
        let not_protobuf = snap::raw::Encoder::new()
            .compress_vec(&[0x0a, 0x05, 1])
            .unwrap();
        assert_eq!(
            decode(&not_protobuf, &limits).unwrap_err().reason(),
            "malformed"
        );
        let bad_utf8 = WriteRequest {
            timeseries: vec![],
            metadata: vec![],
        };
        let mut raw = bad_utf8.encode_to_vec();
        // One series with one label whose name is not UTF-8.
        raw.extend_from_slice(&[0x0a, 0x05, 0x0a, 0x03, 0x0a, 0x01, 0xff]);
        assert_eq!(
            decode_request(&raw, &limits).unwrap_err().reason(),
            "malformed"
        );
    }
}
