//! OTLP metrics pushed to the agent, turned into Prometheus samples the way the
//! OpenTelemetry Collector's Prometheus exporters do it:
//!
//! - metric and attribute names have characters outside `[a-zA-Z0-9_:]` replaced by
//!   `_` (and a leading digit prefixed with `_`);
//! - `service.name` becomes `job`, `service.instance.id` `instance`,
//!   `k8s.namespace.name` `namespace` (so namespace filters work); other resource
//!   attributes are not copied onto every series;
//! - sums and gauges become one series each, histograms `_bucket{le}` (cumulative),
//!   `_sum` and `_count`, summaries `{quantile}`, `_sum` and `_count`;
//! - a point flagged `NO_RECORDED_VALUE` becomes a staleness marker.

use kaas_proto::otlp::{
    AnyValue, ExportMetricsServiceRequest, FLAG_NO_RECORDED_VALUE, KeyValue, any_value, metric,
    number_data_point,
};
use kaas_proto::remote_write::v1::{MetricMetadata, MetricType};

use crate::labels::{Labels, METRIC_NAME};
use crate::scrape::scraper::STALE_NAN_BITS;

/// Samples and metadata from an export request.
pub fn to_samples(
    request: &ExportMetricsServiceRequest,
) -> (Vec<(Labels, i64, f64)>, Vec<MetricMetadata>) {
    let mut samples = Vec::new();
    let mut metadata = Vec::new();
    for resource_metrics in &request.resource_metrics {
        let mut resource_labels: Vec<(String, String)> = Vec::new();
        for attribute in resource_metrics.resource.iter().flat_map(|r| &r.attributes) {
            let name = match attribute.key.as_str() {
                "service.name" => "job",
                "service.instance.id" => "instance",
                "k8s.namespace.name" => "namespace",
                _ => continue,
            };
            resource_labels.push((name.to_owned(), value_text(attribute.value.as_ref())));
        }
        for scope in &resource_metrics.scope_metrics {
            for metric in &scope.metrics {
                let name = sanitize(&metric.name);
                let kind = match &metric.data {
                    Some(metric::Data::Sum(sum)) if sum.is_monotonic => MetricType::Counter,
                    Some(metric::Data::Sum(_) | metric::Data::Gauge(_)) => MetricType::Gauge,
                    Some(metric::Data::Histogram(_)) => MetricType::Histogram,
                    Some(metric::Data::Summary(_)) => MetricType::Summary,
                    None => continue,
                };
                metadata.push(MetricMetadata {
                    r#type: kind as i32,
                    metric_family_name: name.clone(),
                    help: metric.description.clone(),
                    unit: metric.unit.clone(),
                });
                let labels = |series: &str, attributes: &[KeyValue], extra: &[(&str, String)]| {
                    Labels::from_pairs(
                        resource_labels
                            .iter()
                            .cloned()
                            .chain(
                                attributes
                                    .iter()
                                    .map(|a| (sanitize(&a.key), value_text(a.value.as_ref()))),
                            )
                            .chain(extra.iter().map(|(n, v)| ((*n).to_owned(), v.clone())))
                            .chain([(METRIC_NAME.to_owned(), series.to_owned())]),
                    )
                };
                match &metric.data {
                    Some(metric::Data::Sum(sum)) => {
                        for point in &sum.data_points {
                            samples.push((
                                labels(&name, &point.attributes, &[]),
                                ms(point.time_unix_nano),
                                number(point),
                            ));
                        }
                    }
                    Some(metric::Data::Gauge(gauge)) => {
                        for point in &gauge.data_points {
                            samples.push((
                                labels(&name, &point.attributes, &[]),
                                ms(point.time_unix_nano),
                                number(point),
                            ));
                        }
                    }
                    Some(metric::Data::Histogram(histogram)) => {
                        for point in &histogram.data_points {
                            let ts = ms(point.time_unix_nano);
                            let stale = point.flags & FLAG_NO_RECORDED_VALUE != 0;
                            let value = |v: f64| {
                                if stale {
                                    f64::from_bits(STALE_NAN_BITS)
                                } else {
                                    v
                                }
                            };
                            let mut cumulative = 0u64;
                            for (i, count) in point.bucket_counts.iter().enumerate() {
                                // The pusher chooses the counts: saturate, never wrap.
                                cumulative = cumulative.saturating_add(*count);
                                let le = point
                                    .explicit_bounds
                                    .get(i)
                                    .map_or_else(|| "+Inf".to_owned(), |b| format_bound(*b));
                                samples.push((
                                    labels(
                                        &format!("{name}_bucket"),
                                        &point.attributes,
                                        &[("le", le)],
                                    ),
                                    ts,
                                    value(cumulative as f64),
                                ));
                            }
                            if let Some(sum) = point.sum {
                                samples.push((
                                    labels(&format!("{name}_sum"), &point.attributes, &[]),
                                    ts,
                                    value(sum),
                                ));
                            }
                            samples.push((
                                labels(&format!("{name}_count"), &point.attributes, &[]),
                                ts,
                                value(point.count as f64),
                            ));
                        }
                    }
                    Some(metric::Data::Summary(summary)) => {
                        for point in &summary.data_points {
                            let ts = ms(point.time_unix_nano);
                            let stale = point.flags & FLAG_NO_RECORDED_VALUE != 0;
                            let value = |v: f64| {
                                if stale {
                                    f64::from_bits(STALE_NAN_BITS)
                                } else {
                                    v
                                }
                            };
                            for q in &point.quantile_values {
                                samples.push((
                                    labels(
                                        &name,
                                        &point.attributes,
                                        &[("quantile", format_bound(q.quantile))],
                                    ),
                                    ts,
                                    value(q.value),
                                ));
                            }
                            samples.push((
                                labels(&format!("{name}_sum"), &point.attributes, &[]),
                                ts,
                                value(point.sum),
                            ));
                            samples.push((
                                labels(&format!("{name}_count"), &point.attributes, &[]),
                                ts,
                                value(point.count as f64),
                            ));
                        }
                    }
                    None => {}
                }
            }
        }
    }
    (samples, metadata)
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
        None => String::new(),
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
    use crate::exporters::otlp::convert::to_request;

    fn kv(key: &str, value: any_value::Value) -> KeyValue {
        KeyValue {
            key: key.into(),
            value: Some(AnyValue { value: Some(value) }),
        }
    }

    #[test]
    fn otlp_points_become_prometheus_series() {
        let request = ExportMetricsServiceRequest {
            resource_metrics: vec![ResourceMetrics {
                resource: Some(Resource {
                    attributes: vec![
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
                }),
                scope_metrics: vec![ScopeMetrics {
                    scope: None,
                    metrics: vec![
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
                        Metric {
                            name: "latency".into(),
                            description: String::new(),
                            unit: String::new(),
                            data: Some(metric::Data::Histogram(Histogram {
                                aggregation_temporality: 2,
                                data_points: vec![HistogramDataPoint {
                                    attributes: vec![],
                                    start_time_unix_nano: 0,
                                    time_unix_nano: 5_000_000,
                                    count: 4,
                                    sum: Some(2.5),
                                    bucket_counts: vec![1, 2, 1],
                                    explicit_bounds: vec![0.1, 1.0],
                                    flags: 0,
                                }],
                            })),
                        },
                    ],
                }],
            }],
        };
        let (samples, metadata) = to_samples(&request);
        let shown: Vec<String> = samples
            .iter()
            .map(|(labels, ts, value)| {
                let value = if value.to_bits() == STALE_NAN_BITS {
                    "stale".into()
                } else {
                    value.to_string()
                };
                format!("{labels:?} {value} @{ts}")
            })
            .collect();
        assert_eq!(
            shown,
            [
                r#"{__name__="http_server_requests", http_status_code="200", job="checkout", namespace="shop"} 12 @5"#,
                r#"{__name__="queue", job="checkout", namespace="shop"} stale @5"#,
                r#"{__name__="latency_bucket", job="checkout", le="0.1", namespace="shop"} 1 @5"#,
                r#"{__name__="latency_bucket", job="checkout", le="1", namespace="shop"} 3 @5"#,
                r#"{__name__="latency_bucket", job="checkout", le="+Inf", namespace="shop"} 4 @5"#,
                r#"{__name__="latency_sum", job="checkout", namespace="shop"} 2.5 @5"#,
                r#"{__name__="latency_count", job="checkout", namespace="shop"} 4 @5"#,
            ]
        );
        assert_eq!(metadata[0].r#type, MetricType::Counter as i32);
        assert_eq!(metadata[2].r#type, MetricType::Histogram as i32);
        // Back through our own exporter: the histogram survives the round trip.
        let batch = crate::batch::Batch::from_samples(samples, metadata, &Labels::default());
        let again = to_request(&batch);
        let metrics = &again.resource_metrics[0].scope_metrics[0].metrics;
        assert!(
            metrics
                .iter()
                .any(|m| m.name == "latency" && matches!(m.data, Some(metric::Data::Histogram(_))))
        );
    }

    /// Issue 13, finding 10 (counters saturate): bucket counts are the pusher's to
    /// choose; buckets summing past `u64::MAX` give a saturated cumulative count. On
    /// 552c13e the sum overflowed: a panic of the request in debug builds, a bucket
    /// that wrapped below its predecessors in release builds.
    #[test]
    fn histogram_bucket_counts_saturate() {
        let request = ExportMetricsServiceRequest {
            resource_metrics: vec![ResourceMetrics {
                resource: None,
                scope_metrics: vec![ScopeMetrics {
                    scope: None,
                    metrics: vec![Metric {
                        name: "huge".into(),
                        description: String::new(),
                        unit: String::new(),
                        data: Some(metric::Data::Histogram(Histogram {
                            aggregation_temporality: 2,
                            data_points: vec![HistogramDataPoint {
                                attributes: vec![],
                                start_time_unix_nano: 0,
                                time_unix_nano: 5_000_000,
                                count: u64::MAX,
                                sum: None,
                                bucket_counts: vec![u64::MAX, u64::MAX, 3],
                                explicit_bounds: vec![0.1, 1.0],
                                flags: 0,
                            }],
                        })),
                    }],
                }],
            }],
        };
        let (samples, _) = to_samples(&request);
        let buckets: Vec<f64> = samples
            .iter()
            .filter(|(labels, _, _)| labels.get(METRIC_NAME) == "huge_bucket")
            .map(|(_, _, value)| *value)
            .collect();
        assert_eq!(buckets, [u64::MAX as f64; 3]);
    }

    #[test]
    fn names_are_sanitized_like_the_collector_does() {
        assert_eq!(sanitize("http.server.duration"), "http_server_duration");
        assert_eq!(sanitize("2xx-count"), "_2xx_count");
        assert_eq!(sanitize("ok_name:sub"), "ok_name:sub");
    }
}
