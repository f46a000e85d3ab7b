//! OTLP metrics (`ExportMetricsServiceRequest`, protobuf) decoded under [`PushLimits`]
//! and turned into Prometheus series the way the OpenTelemetry Collector's Prometheus
//! exporters do it:
//!
//! - metric and attribute names have characters outside `[a-zA-Z0-9_:]` replaced by
//!   `_` (and a leading digit prefixed with `_`);
//! - `service.name` becomes `job`, `service.instance.id` `instance`,
//!   `k8s.namespace.name` `namespace` (so namespace filters work); other resource
//!   attributes are not copied onto every series;
//! - sums and gauges become one series each, histograms `_bucket{le}` (cumulative),
//!   `_sum` and `_count`, summaries `{quantile}`, `_sum` and `_count`;
//! - a point flagged `NO_RECORDED_VALUE` becomes a staleness marker.
//!
//! Decoding is in two steps. A scan walks the body without allocating and counts the
//! messages it would decode into ([`PushLimits::max_otlp_messages`]): an empty message
//! is two bytes on the wire but a struct in memory, so the count bounds what prost then
//! allocates. The conversion checks each series' labels and the request's samples and
//! labels before it builds them: one histogram point with many buckets becomes many
//! series, each with a copy of the point's attributes.

use kaas_proto::otlp::{
    AnyValue, ExportMetricsServiceRequest, FLAG_NO_RECORDED_VALUE, KeyValue, any_value, metric,
    number_data_point,
};
use kaas_proto::remote_write::v1::{MetricMetadata, MetricType};
use prost::Message;

use crate::labels::{Labels, METRIC_NAME};
use crate::wire::{MessageShape, scan};
use crate::{DecodeError, PushLimits, Pushed, PushedSeries, STALE_NAN_BITS, quoted};

/// Decodes an OTLP body (already decompressed) into series.
pub fn decode(raw: &[u8], limits: &PushLimits) -> Result<Pushed, DecodeError> {
    if raw.len() > limits.max_decompressed_bytes {
        return Err(DecodeError::DecompressedTooLarge {
            limit: limits.max_decompressed_bytes,
            size: Some(raw.len() as u64),
        });
    }
    let mut messages = 0;
    // No value nesting is counted: `AnyValue`s are leaves here (prost still decodes
    // them whole).
    scan(
        raw,
        Shape::Request,
        0,
        usize::MAX,
        &mut messages,
        limits.max_otlp_messages,
    )?;
    let request = ExportMetricsServiceRequest::decode(raw).map_err(|e| {
        DecodeError::Malformed(format!(
            "the body is not an ExportMetricsServiceRequest: {e}"
        ))
    })?;
    to_series(&request, limits)
}

/// The message types of the OTLP metrics model the agent decodes.
#[derive(Clone, Copy, Debug)]
enum Shape {
    Request,
    ResourceMetrics,
    Resource,
    ScopeMetrics,
    KeyValue,
    Metric,
    /// A gauge or a sum.
    NumberPoints,
    HistogramPoints,
    SummaryPoints,
    NumberPoint,
    HistogramPoint,
    SummaryPoint,
    /// A message without nested messages that prost decodes (`AnyValue`, the
    /// instrumentation scope, a quantile).
    Leaf,
}

impl MessageShape for Shape {
    fn child(self, number: u32) -> Option<Self> {
        Some(match (self, number) {
            (Self::Request, 1) => Self::ResourceMetrics,
            (Self::ResourceMetrics, 1) => Self::Resource,
            (Self::ResourceMetrics, 2) => Self::ScopeMetrics,
            (Self::Resource, 1)
            | (Self::NumberPoint, 7)
            | (Self::HistogramPoint, 9)
            | (Self::SummaryPoint, 7) => Self::KeyValue,
            (Self::ScopeMetrics, 1) | (Self::KeyValue, 2) | (Self::SummaryPoint, 6) => Self::Leaf,
            (Self::ScopeMetrics, 2) => Self::Metric,
            (Self::Metric, 5 | 7) => Self::NumberPoints,
            (Self::Metric, 9) => Self::HistogramPoints,
            (Self::Metric, 11) => Self::SummaryPoints,
            (Self::NumberPoints, 1) => Self::NumberPoint,
            (Self::HistogramPoints, 1) => Self::HistogramPoint,
            (Self::SummaryPoints, 1) => Self::SummaryPoint,
            _ => return None,
        })
    }
}

/// Builds the series of a decoded request, checking each series' labels and the
/// request's totals before a label set is built.
struct Converter<'a> {
    limits: &'a PushLimits,
    samples: usize,
    labels: usize,
    pushed: Pushed,
}

impl Converter<'_> {
    /// Adds one sample of the series `name` with the resource's labels, the point's
    /// attributes and `extra` labels.
    fn sample(
        &mut self,
        resource: &[(String, String)],
        name: &str,
        attributes: &[KeyValue],
        extra: Option<(&str, String)>,
        sample: (i64, f64),
    ) -> Result<(), DecodeError> {
        let limits = self.limits;
        let count = resource.len() + attributes.len() + usize::from(extra.is_some()) + 1;
        if count > limits.max_labels_per_series {
            return Err(DecodeError::TooManyLabels {
                metric: quoted(name),
                limit: limits.max_labels_per_series,
            });
        }
        self.samples += 1;
        if self.samples > limits.max_samples_per_request {
            return Err(DecodeError::TooManySamples {
                limit: limits.max_samples_per_request,
            });
        }
        self.labels += count;
        if self.labels > limits.max_labels_per_request {
            return Err(DecodeError::TooManyLabelsInRequest {
                limit: limits.max_labels_per_request,
            });
        }
        let labels = Labels::from_pairs(
            resource
                .iter()
                .cloned()
                .chain(
                    attributes
                        .iter()
                        .map(|a| (sanitize(&a.key), value_text(a.value.as_ref()))),
                )
                .chain(extra.map(|(n, v)| (n.to_owned(), v)))
                .chain([(METRIC_NAME.to_owned(), name.to_owned())]),
        );
        for label in labels.iter() {
            limits.check_label(&label.name, &label.value)?;
        }
        self.pushed.series.push(PushedSeries {
            labels,
            samples: vec![sample],
        });
        Ok(())
    }
}

/// The series and metadata of a decoded request.
fn to_series(
    request: &ExportMetricsServiceRequest,
    limits: &PushLimits,
) -> Result<Pushed, DecodeError> {
    let mut out = Converter {
        limits,
        samples: 0,
        labels: 0,
        pushed: Pushed::default(),
    };
    for resource_metrics in &request.resource_metrics {
        let mut resource: Vec<(String, String)> = Vec::new();
        for attribute in resource_metrics.resource.iter().flat_map(|r| &r.attributes) {
            let name = match attribute.key.as_str() {
                "service.name" => "job",
                "service.instance.id" => "instance",
                "k8s.namespace.name" => "namespace",
                _ => continue,
            };
            resource.push((name.to_owned(), value_text(attribute.value.as_ref())));
        }
        for scope in &resource_metrics.scope_metrics {
            for metric in &scope.metrics {
                metric_series(&mut out, &resource, metric)?;
            }
        }
    }
    Ok(out.pushed)
}

/// Adds the metadata and the series of one metric.
fn metric_series(
    out: &mut Converter<'_>,
    resource: &[(String, String)],
    metric: &kaas_proto::otlp::Metric,
) -> Result<(), DecodeError> {
    let name = sanitize(&metric.name);
    let kind = match &metric.data {
        Some(metric::Data::Sum(sum)) if sum.is_monotonic => MetricType::Counter,
        Some(metric::Data::Sum(_) | metric::Data::Gauge(_)) => MetricType::Gauge,
        Some(metric::Data::Histogram(_)) => MetricType::Histogram,
        Some(metric::Data::Summary(_)) => MetricType::Summary,
        None => return Ok(()),
    };
    out.limits.check_label(METRIC_NAME, &name)?;
    out.pushed.metadata.push(MetricMetadata {
        r#type: kind as i32,
        metric_family_name: name.clone(),
        help: metric.description.clone(),
        unit: metric.unit.clone(),
    });
    let stale = |flags: u32, v: f64| {
        if flags & FLAG_NO_RECORDED_VALUE != 0 {
            f64::from_bits(STALE_NAN_BITS)
        } else {
            v
        }
    };
    match &metric.data {
        Some(metric::Data::Sum(kaas_proto::otlp::Sum { data_points, .. }))
        | Some(metric::Data::Gauge(kaas_proto::otlp::Gauge { data_points })) => {
            for point in data_points {
                let sample = (ms(point.time_unix_nano), number(point));
                out.sample(resource, &name, &point.attributes, None, sample)?;
            }
        }
        Some(metric::Data::Histogram(histogram)) => {
            for point in &histogram.data_points {
                let ts = ms(point.time_unix_nano);
                let mut cumulative = 0u64;
                for (i, count) in point.bucket_counts.iter().enumerate() {
                    cumulative = cumulative.saturating_add(*count);
                    let le = point
                        .explicit_bounds
                        .get(i)
                        .map_or_else(|| "+Inf".to_owned(), |b| format_bound(*b));
                    let sample = (ts, stale(point.flags, cumulative as f64));
                    let bucket = format!("{name}_bucket");
                    out.sample(
                        resource,
                        &bucket,
                        &point.attributes,
                        Some(("le", le)),
                        sample,
                    )?;
                }
                if let Some(sum) = point.sum {
                    let sample = (ts, stale(point.flags, sum));
                    out.sample(
                        resource,
                        &format!("{name}_sum"),
                        &point.attributes,
                        None,
                        sample,
                    )?;
                }
                let sample = (ts, stale(point.flags, point.count as f64));
                out.sample(
                    resource,
                    &format!("{name}_count"),
                    &point.attributes,
                    None,
                    sample,
                )?;
            }
        }
        Some(metric::Data::Summary(summary)) => {
            for point in &summary.data_points {
                let ts = ms(point.time_unix_nano);
                for q in &point.quantile_values {
                    let quantile = Some(("quantile", format_bound(q.quantile)));
                    let sample = (ts, stale(point.flags, q.value));
                    out.sample(resource, &name, &point.attributes, quantile, sample)?;
                }
                let sample = (ts, stale(point.flags, point.sum));
                out.sample(
                    resource,
                    &format!("{name}_sum"),
                    &point.attributes,
                    None,
                    sample,
                )?;
                let sample = (ts, stale(point.flags, point.count as f64));
                out.sample(
                    resource,
                    &format!("{name}_count"),
                    &point.attributes,
                    None,
                    sample,
                )?;
            }
        }
        None => {}
    }
    Ok(())
}

fn ms(nanos: u64) -> i64 {
    i64::try_from(nanos / 1_000_000).unwrap_or(i64::MAX)
}

fn number(point: &kaas_proto::otlp::NumberDataPoint) -> f64 {
    if point.flags & FLAG_NO_RECORDED_VALUE != 0 {
        return f64::from_bits(STALE_NAN_BITS);
    }
    match point.value {
        Some(number_data_point::Value::AsDouble(v)) => v,
        Some(number_data_point::Value::AsInt(v)) => v as f64,
        None => 0.0,
    }
}

/// Prometheus' way of writing bucket bounds and quantiles.
fn format_bound(value: f64) -> String {
    if value.is_infinite() {
        "+Inf".to_owned()
    } else {
        format!("{value}")
    }
}

fn value_text(value: Option<&AnyValue>) -> String {
    match value.and_then(|v| v.value.as_ref()) {
        Some(any_value::Value::StringValue(s)) => s.clone(),
        Some(any_value::Value::BoolValue(b)) => b.to_string(),
        Some(any_value::Value::IntValue(i)) => i.to_string(),
        Some(any_value::Value::DoubleValue(d)) => d.to_string(),
        // Structured values have no label form; the attribute is left out, as before
        // the protocol's structured values were modelled.
        Some(
            any_value::Value::ArrayValue(_)
            | any_value::Value::KvlistValue(_)
            | any_value::Value::BytesValue(_),
        )
        | None => String::new(),
    }
}

/// Replaces characters a Prometheus name cannot hold with `_`.
pub fn sanitize(name: &str) -> String {
    let mut out: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == ':' {
                c
            } else {
                '_'
            }
        })
        .collect();
    if out.starts_with(|c: char| c.is_ascii_digit()) {
        out.insert(0, '_');
    }
    out
}

#[cfg(test)]
mod tests {
    use kaas_proto::otlp::{
        Gauge, Histogram, HistogramDataPoint, Metric, NumberDataPoint, Resource, ResourceMetrics,
        ScopeMetrics, Sum,
    };

    use super::*;

    fn kv(key: &str, value: any_value::Value) -> KeyValue {
        KeyValue {
            key: key.into(),
            value: Some(AnyValue { value: Some(value) }),
        }
    }

    fn request(resource: Vec<KeyValue>, metrics: Vec<Metric>) -> ExportMetricsServiceRequest {
        ExportMetricsServiceRequest {
            resource_metrics: vec![ResourceMetrics {
                resource: Some(Resource {
                    attributes: resource,
                    ..Resource::default()
                }),
                scope_metrics: vec![ScopeMetrics {
                    scope: None,
                    metrics,
                }],
            }],
        }
    }

    fn histogram(name: &str, attributes: Vec<KeyValue>, buckets: usize) -> Metric {
        Metric {
            name: name.into(),
            description: String::new(),
            unit: String::new(),
            data: Some(metric::Data::Histogram(Histogram {
                aggregation_temporality: 2,
                data_points: vec![HistogramDataPoint {
                    attributes,
                    start_time_unix_nano: 0,
                    time_unix_nano: 5_000_000,
                    count: 4,
                    sum: Some(2.5),
                    bucket_counts: vec![1; buckets],
                    explicit_bounds: (1..buckets).map(|b| b as f64 / 10.0).collect(),
                    flags: 0,
                }],
            })),
        }
    }

    #[test]
    fn otlp_points_become_prometheus_series() {
        let request = request(
            vec![
                kv(
                    "service.name",
                    any_value::Value::StringValue("checkout".into()),
                ),
                kv(
                    "k8s.namespace.name",
                    any_value::Value::StringValue("shop".into()),
                ),
                kv("host.arch", any_value::Value::StringValue("amd64".into())),
            ],
            vec![
                Metric {
                    name: "http.server.requests".into(),
                    description: "Requests".into(),
                    unit: "1".into(),
                    data: Some(metric::Data::Sum(Sum {
                        data_points: vec![NumberDataPoint {
                            attributes: vec![kv(
                                "http.status_code",
                                any_value::Value::IntValue(200),
                            )],
                            start_time_unix_nano: 0,
                            time_unix_nano: 5_000_000,
                            value: Some(number_data_point::Value::AsInt(12)),
                            flags: 0,
                        }],
                        aggregation_temporality: 2,
                        is_monotonic: true,
                    })),
                },
                Metric {
                    name: "queue".into(),
                    description: String::new(),
                    unit: String::new(),
                    data: Some(metric::Data::Gauge(Gauge {
                        data_points: vec![NumberDataPoint {
                            attributes: vec![],
                            start_time_unix_nano: 0,
                            time_unix_nano: 5_000_000,
                            value: Some(number_data_point::Value::AsDouble(1.0)),
                            flags: FLAG_NO_RECORDED_VALUE,
                        }],
                    })),
                },
                histogram("latency", vec![], 3),
            ],
        );
        let pushed = decode(&request.encode_to_vec(), &PushLimits::default()).unwrap();
        let shown: Vec<String> = pushed
            .series
            .iter()
            .map(|series| {
                let (ts, value) = series.samples[0];
                let value = if value.to_bits() == STALE_NAN_BITS {
                    "stale".into()
                } else {
                    value.to_string()
                };
                format!("{:?} {value} @{ts}", series.labels)
            })
            .collect();
        assert_eq!(
            shown,
            [
                r#"{__name__="http_server_requests", http_status_code="200", job="checkout", namespace="shop"} 12 @5"#,
                r#"{__name__="queue", job="checkout", namespace="shop"} stale @5"#,
                r#"{__name__="latency_bucket", job="checkout", le="0.1", namespace="shop"} 1 @5"#,
                r#"{__name__="latency_bucket", job="checkout", le="0.2", namespace="shop"} 2 @5"#,
                r#"{__name__="latency_bucket", job="checkout", le="+Inf", namespace="shop"} 3 @5"#,
                r#"{__name__="latency_sum", job="checkout", namespace="shop"} 2.5 @5"#,
                r#"{__name__="latency_count", job="checkout", namespace="shop"} 4 @5"#,
            ]
        );
        assert_eq!(pushed.metadata[0].r#type, MetricType::Counter as i32);
        assert_eq!(pushed.metadata[2].r#type, MetricType::Histogram as i32);
    }

    #[test]
    fn names_are_sanitized_like_the_collector_does() {
        assert_eq!(sanitize("http.server.duration"), "http_server_duration");
        assert_eq!(sanitize("2xx-count"), "_2xx_count");
        assert_eq!(sanitize("ok_name:sub"), "ok_name:sub");
    }

    /// Issue 13, finding 4: each OTLP limit refuses a request just over it before the
    /// series are built; 552c13e converted all of these.
    #[test]
    fn each_limit_refuses_a_request_just_over_it() {
        let limits = PushLimits {
            max_labels_per_series: 4,
            max_label_name_bytes: 8,
            max_label_value_bytes: 8,
            max_samples_per_request: 10,
            max_labels_per_request: 30,
            max_otlp_messages: 40,
            ..PushLimits::default()
        };
        let attribute = |k: &str, v: &str| kv(k, any_value::Value::StringValue(v.into()));
        let cases = [
            (
                request(
                    vec![],
                    vec![histogram("h", vec![attribute("a", "1"); 4], 1)],
                ),
                "too_many_labels",
            ),
            (
                request(
                    vec![],
                    vec![histogram("h", vec![attribute("long_name", "1")], 1)],
                ),
                "label_name_too_long",
            ),
            (
                request(
                    vec![],
                    vec![histogram("h", vec![attribute("a", "long value")], 1)],
                ),
                "label_value_too_long",
            ),
            (
                request(vec![], vec![histogram("a_long_metric_name", vec![], 1)]),
                "label_value_too_long",
            ),
            (
                request(vec![], vec![histogram("h", vec![], 9)]),
                "too_many_samples",
            ),
            (
                request(
                    vec![],
                    vec![histogram(
                        "h",
                        vec![attribute("a", "1"), attribute("b", "1")],
                        8,
                    )],
                ),
                "too_many_labels_in_request",
            ),
            (
                request(vec![KeyValue::default(); 40], vec![]),
                "too_many_messages",
            ),
        ];
        for (request, reason) in cases {
            let error = decode(&request.encode_to_vec(), &limits).unwrap_err();
            assert_eq!(error.reason(), reason, "{error}");
        }
        let ok = request(vec![], vec![histogram("h", vec![attribute("a", "1")], 7)]);
        assert_eq!(decode(&ok.encode_to_vec(), &limits).unwrap().samples(), 9);
    }

    /// Issue 13, finding 4: empty messages cost two bytes each on the wire; 100,000 of
    /// them (200 KB) are refused by the message count before prost allocates a struct
    /// for each.
    #[test]
    fn many_empty_messages_are_refused_before_decoding() {
        let request = request(vec![KeyValue::default(); 300_000], vec![]);
        let raw = request.encode_to_vec();
        assert!(raw.len() < 1 << 20);
        assert_eq!(
            decode(&raw, &PushLimits::default()),
            Err(DecodeError::TooManyMessages {
                limit: crate::limits::DEFAULT_MAX_OTLP_MESSAGES
            })
        );
    }

    #[test]
    fn a_histogram_with_huge_bucket_counts_saturates() {
        let mut metric = histogram("h", vec![], 2);
        if let Some(metric::Data::Histogram(h)) = &mut metric.data {
            h.data_points[0].bucket_counts = vec![u64::MAX, u64::MAX];
        }
        let pushed = decode(
            &request(vec![], vec![metric]).encode_to_vec(),
            &PushLimits::default(),
        )
        .unwrap();
        assert_eq!(pushed.series[1].samples[0].1, u64::MAX as f64);
    }
}
