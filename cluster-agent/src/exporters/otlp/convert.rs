//! Prometheus series to OTLP metrics, following the OpenTelemetry Collector's
//! Prometheus receiver where it matters to users:
//!
//! - `job` and `instance` become the resource attributes `service.name` and
//!   `service.instance.id`; all other labels become data point attributes;
//! - counters become monotonic cumulative sums (named as the series, `_total` kept),
//!   gauges and untyped series gauges, histograms (`_bucket`/`_sum`/`_count`) explicit
//!   bucket histograms, summaries (quantiles/`_sum`/`_count`) summaries; a counter's
//!   `_created` series is not sent as a metric;
//! - a staleness marker becomes a data point flagged `NO_RECORDED_VALUE`.

use std::collections::{BTreeMap, HashMap};

use kaas_proto::otlp::{
    AggregationTemporality, AnyValue, ExportMetricsServiceRequest, FLAG_NO_RECORDED_VALUE, Gauge,
    Histogram, HistogramDataPoint, InstrumentationScope, KeyValue, Metric, NumberDataPoint,
    Resource, ResourceMetrics, ScopeMetrics, Sum, Summary, SummaryDataPoint, ValueAtQuantile,
    any_value, metric, number_data_point,
};
use kaas_proto::remote_write::v1::{MetricMetadata, MetricType, Sample, TimeSeries};

use crate::exporters::remote_write::encode::family_of;
use crate::record::metrics::Batch;
use kaas_series::STALE_NAN_BITS;

type Attributes = BTreeMap<String, String>;
type ResourceKey = (String, String);
/// A histogram's or summary's point: its attributes and timestamp.
type PointKey = (Vec<(String, String)>, i64);

#[derive(Default)]
struct HistogramAcc {
    buckets: Vec<(f64, f64)>,
    sum: Option<f64>,
    count: Option<f64>,
    stale: bool,
}

#[derive(Default)]
struct SummaryAcc {
    quantiles: Vec<(f64, f64)>,
    sum: f64,
    count: f64,
    stale: bool,
}

enum Acc {
    Gauge(Vec<NumberDataPoint>),
    Sum(Vec<NumberDataPoint>),
    Histogram(BTreeMap<PointKey, HistogramAcc>),
    Summary(BTreeMap<PointKey, SummaryAcc>),
}

fn kv(key: &str, value: &str) -> KeyValue {
    KeyValue {
        key: key.to_owned(),
        value: Some(AnyValue {
            value: Some(any_value::Value::StringValue(value.to_owned())),
        }),
    }
}

fn attributes(attrs: &[(String, String)]) -> Vec<KeyValue> {
    attrs.iter().map(|(k, v)| kv(k, v)).collect()
}

fn nanos(ms: i64) -> u64 {
    u64::try_from(ms).unwrap_or(0) * 1_000_000
}

fn is_stale(value: f64) -> bool {
    value.to_bits() == STALE_NAN_BITS
}

fn number_point(attrs: &[(String, String)], timestamp: i64, value: f64) -> NumberDataPoint {
    let stale = is_stale(value);
    NumberDataPoint {
        attributes: attributes(attrs),
        start_time_unix_nano: 0,
        time_unix_nano: nanos(timestamp),
        value: Some(number_data_point::Value::AsDouble(if stale {
            0.0
        } else {
            value
        })),
        flags: if stale { FLAG_NO_RECORDED_VALUE } else { 0 },
    }
}

/// Converts a batch to one export request.
pub fn to_request(batch: &Batch) -> ExportMetricsServiceRequest {
    let families: HashMap<&str, &MetricMetadata> = batch
        .metadata
        .iter()
        .map(|m| (m.metric_family_name.as_str(), m))
        .collect();
    let mut resources: BTreeMap<ResourceKey, BTreeMap<String, Acc>> = BTreeMap::new();
    for series in &batch.series {
        add_series(&mut resources, series, &families);
    }
    let scope = InstrumentationScope {
        name: "kaas-observer-agent".into(),
        version: env!("CARGO_PKG_VERSION").into(),
        ..InstrumentationScope::default()
    };
    ExportMetricsServiceRequest {
        resource_metrics: resources
            .into_iter()
            .map(|((job, instance), metrics)| {
                let mut resource = Vec::new();
                if !job.is_empty() {
                    resource.push(kv("service.name", &job));
                }
                if !instance.is_empty() {
                    resource.push(kv("service.instance.id", &instance));
                }
                ResourceMetrics {
                    resource: Some(Resource {
                        attributes: resource,
                        ..Resource::default()
                    }),
                    scope_metrics: vec![ScopeMetrics {
                        scope: Some(scope.clone()),
                        metrics: metrics
                            .into_iter()
                            .map(|(name, acc)| finish(name, acc))
                            .collect(),
                    }],
                }
            })
            .collect(),
    }
}

/// Adds one series to the metrics of its resource (`job`, `instance`), by the type of
/// its family.
fn add_series(
    resources: &mut BTreeMap<ResourceKey, BTreeMap<String, Acc>>,
    series: &TimeSeries,
    families: &HashMap<&str, &MetricMetadata>,
) {
    let mut attrs: Attributes = series
        .labels
        .iter()
        .map(|l| (l.name.clone(), l.value.clone()))
        .collect();
    let name = attrs.remove("__name__").unwrap_or_default();
    let job = attrs.remove("job").unwrap_or_default();
    let instance = attrs.remove("instance").unwrap_or_default();
    let metrics = resources.entry((job, instance)).or_default();
    let family = family_of(&name, families);
    let kind = family.map_or(MetricType::Unknown, |m| {
        MetricType::try_from(m.r#type).unwrap_or(MetricType::Unknown)
    });
    let family_name = family.map_or(name.as_str(), |m| m.metric_family_name.as_str());
    let suffix = name.strip_prefix(family_name).unwrap_or("");
    match kind {
        MetricType::Counter if name.ends_with("_created") => {}
        MetricType::Counter => {
            if let Acc::Sum(points) = metrics.entry(name.clone()).or_insert(Acc::Sum(Vec::new())) {
                add_numbers(points, attrs, &series.samples);
            }
        }
        MetricType::Histogram => {
            let acc = metrics
                .entry(family_name.to_owned())
                .or_insert_with(|| Acc::Histogram(BTreeMap::new()));
            if let Acc::Histogram(points) = acc {
                add_histogram(points, suffix, attrs, &series.samples);
            }
        }
        MetricType::Summary => {
            let acc = metrics
                .entry(family_name.to_owned())
                .or_insert_with(|| Acc::Summary(BTreeMap::new()));
            if let Acc::Summary(points) = acc {
                add_summary(points, suffix, attrs, &series.samples);
            }
        }
        _ => {
            if let Acc::Gauge(points) = metrics
                .entry(name.clone())
                .or_insert(Acc::Gauge(Vec::new()))
            {
                add_numbers(points, attrs, &series.samples);
            }
        }
    }
}

/// A counter's or gauge's samples as number points.
fn add_numbers(points: &mut Vec<NumberDataPoint>, attrs: Attributes, samples: &[Sample]) {
    let attrs: Vec<_> = attrs.into_iter().collect();
    points.extend(
        samples
            .iter()
            .map(|s| number_point(&attrs, s.timestamp, s.value)),
    );
}

/// One series of a histogram (`_bucket`, `_sum` or `_count`, told by `suffix`) into
/// the points it belongs to.
fn add_histogram(
    points: &mut BTreeMap<PointKey, HistogramAcc>,
    suffix: &str,
    mut attrs: Attributes,
    samples: &[Sample],
) {
    let le = attrs.remove("le");
    let key_attrs: Vec<_> = attrs.into_iter().collect();
    for sample in samples {
        let point = points
            .entry((key_attrs.clone(), sample.timestamp))
            .or_default();
        point.stale |= is_stale(sample.value);
        match suffix {
            "_bucket" => {
                let bound = le.as_deref().and_then(parse_bound).unwrap_or(f64::INFINITY);
                point.buckets.push((bound, sample.value));
            }
            "_sum" => point.sum = Some(sample.value),
            "_count" => point.count = Some(sample.value),
            _ => {}
        }
    }
}

/// One series of a summary (a quantile, `_sum` or `_count`, told by `suffix`) into
/// the points it belongs to.
fn add_summary(
    points: &mut BTreeMap<PointKey, SummaryAcc>,
    suffix: &str,
    mut attrs: Attributes,
    samples: &[Sample],
) {
    let quantile = attrs.remove("quantile");
    let key_attrs: Vec<_> = attrs.into_iter().collect();
    for sample in samples {
        let point = points
            .entry((key_attrs.clone(), sample.timestamp))
            .or_default();
        point.stale |= is_stale(sample.value);
        match suffix {
            "" => {
                if let Some(q) = quantile.as_deref().and_then(|q| q.parse().ok()) {
                    point.quantiles.push((q, sample.value));
                }
            }
            "_sum" => point.sum = sample.value,
            "_count" => point.count = sample.value,
            _ => {}
        }
    }
}

fn parse_bound(text: &str) -> Option<f64> {
    match text {
        "+Inf" | "Inf" => Some(f64::INFINITY),
        _ => text.parse().ok(),
    }
}

fn finish(name: String, acc: Acc) -> Metric {
    let data = match acc {
        Acc::Gauge(data_points) => metric::Data::Gauge(Gauge { data_points }),
        Acc::Sum(data_points) => metric::Data::Sum(Sum {
            data_points,
            aggregation_temporality: AggregationTemporality::Cumulative as i32,
            is_monotonic: true,
        }),
        Acc::Histogram(points) => metric::Data::Histogram(Histogram {
            aggregation_temporality: AggregationTemporality::Cumulative as i32,
            data_points: points
                .into_iter()
                .map(|((attrs, timestamp), mut point)| {
                    point.buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
                    let count = point
                        .count
                        .or_else(|| point.buckets.last().map(|b| b.1))
                        .unwrap_or(0.0);
                    let mut explicit_bounds = Vec::new();
                    let mut bucket_counts = Vec::new();
                    let mut previous = 0.0;
                    for (bound, cumulative) in &point.buckets {
                        if bound.is_infinite() {
                            continue;
                        }
                        explicit_bounds.push(*bound);
                        bucket_counts.push((cumulative - previous).max(0.0) as u64);
                        previous = *cumulative;
                    }
                    bucket_counts.push((count - previous).max(0.0) as u64);
                    HistogramDataPoint {
                        attributes: attributes(&attrs),
                        start_time_unix_nano: 0,
                        time_unix_nano: nanos(timestamp),
                        count: if point.stale { 0 } else { count as u64 },
                        sum: point.sum.filter(|s| !is_stale(*s)),
                        bucket_counts,
                        explicit_bounds,
                        flags: if point.stale {
                            FLAG_NO_RECORDED_VALUE
                        } else {
                            0
                        },
                    }
                })
                .collect(),
        }),
        Acc::Summary(points) => metric::Data::Summary(Summary {
            data_points: points
                .into_iter()
                .map(|((attrs, timestamp), mut point)| {
                    point.quantiles.sort_by(|a, b| a.0.total_cmp(&b.0));
                    SummaryDataPoint {
                        attributes: attributes(&attrs),
                        start_time_unix_nano: 0,
                        time_unix_nano: nanos(timestamp),
                        count: if point.stale { 0 } else { point.count as u64 },
                        sum: if point.stale { 0.0 } else { point.sum },
                        quantile_values: point
                            .quantiles
                            .iter()
                            .filter(|(_, v)| !is_stale(*v))
                            .map(|(quantile, value)| ValueAtQuantile {
                                quantile: *quantile,
                                value: *value,
                            })
                            .collect(),
                        flags: if point.stale {
                            FLAG_NO_RECORDED_VALUE
                        } else {
                            0
                        },
                    }
                })
                .collect(),
        }),
    };
    Metric {
        name,
        description: String::new(),
        unit: String::new(),
        data: Some(data),
    }
}

#[cfg(test)]
mod tests {
    use kaas_proto::remote_write::v1::{Label, Sample, TimeSeries};

    use super::*;

    fn series(name: &str, extra: &[(&str, &str)], value: f64) -> TimeSeries {
        let mut labels: Vec<Label> = [
            ("__name__", name),
            ("job", "api"),
            ("instance", "pod-1:9090"),
        ]
        .iter()
        .chain(extra)
        .map(|(n, v)| Label {
            name: (*n).into(),
            value: (*v).into(),
        })
        .collect();
        labels.sort_by(|a, b| a.name.cmp(&b.name));
        TimeSeries {
            labels,
            samples: vec![Sample {
                value,
                timestamp: 1_000,
            }],
        }
    }

    fn meta(family: &str, kind: MetricType) -> MetricMetadata {
        MetricMetadata {
            r#type: kind as i32,
            metric_family_name: family.into(),
            help: String::new(),
            unit: String::new(),
        }
    }

    #[test]
    fn prometheus_types_map_to_otlp_types() {
        let batch = Batch {
            series: vec![
                series("http_requests_total", &[("code", "200")], 5.0),
                series("http_requests_created", &[("code", "200")], 1.0),
                series("temperature", &[], 21.5),
                series("latency_bucket", &[("le", "0.1")], 2.0),
                series("latency_bucket", &[("le", "1")], 5.0),
                series("latency_bucket", &[("le", "+Inf")], 7.0),
                series("latency_sum", &[], 3.5),
                series("latency_count", &[], 7.0),
                series("rpc", &[("quantile", "0.5")], 0.2),
                series("rpc_sum", &[], 9.0),
                series("rpc_count", &[], 30.0),
                series("gone", &[], f64::from_bits(STALE_NAN_BITS)),
            ],
            metadata: vec![
                meta("http_requests", MetricType::Counter),
                meta("temperature", MetricType::Gauge),
                meta("latency", MetricType::Histogram),
                meta("rpc", MetricType::Summary),
            ],
        };
        let request = to_request(&batch);
        assert_eq!(request.resource_metrics.len(), 1);
        let resource = &request.resource_metrics[0];
        assert_eq!(
            resource.resource.as_ref().unwrap().attributes,
            vec![
                kv("service.name", "api"),
                kv("service.instance.id", "pod-1:9090")
            ]
        );
        let metrics: BTreeMap<&str, &Metric> = resource.scope_metrics[0]
            .metrics
            .iter()
            .map(|m| (m.name.as_str(), m))
            .collect();
        assert_eq!(
            metrics.keys().copied().collect::<Vec<_>>(),
            [
                "gone",
                "http_requests_total",
                "latency",
                "rpc",
                "temperature"
            ],
            "_created is not a metric; histogram and summary series are grouped"
        );
        let Some(metric::Data::Sum(sum)) = &metrics["http_requests_total"].data else {
            panic!("counter must be a sum");
        };
        assert!(sum.is_monotonic);
        assert_eq!(
            sum.aggregation_temporality,
            AggregationTemporality::Cumulative as i32
        );
        assert_eq!(sum.data_points[0].attributes, vec![kv("code", "200")]);
        assert_eq!(sum.data_points[0].time_unix_nano, 1_000_000_000);
        let Some(metric::Data::Histogram(histogram)) = &metrics["latency"].data else {
            panic!("histogram");
        };
        let point = &histogram.data_points[0];
        assert_eq!(point.explicit_bounds, vec![0.1, 1.0]);
        assert_eq!(
            point.bucket_counts,
            vec![2, 3, 2],
            "per-bucket, not cumulative"
        );
        assert_eq!((point.count, point.sum), (7, Some(3.5)));
        let Some(metric::Data::Summary(summary)) = &metrics["rpc"].data else {
            panic!("summary");
        };
        let point = &summary.data_points[0];
        assert_eq!((point.count, point.sum), (30, 9.0));
        assert_eq!(
            point.quantile_values,
            vec![ValueAtQuantile {
                quantile: 0.5,
                value: 0.2
            }]
        );
        let Some(metric::Data::Gauge(gone)) = &metrics["gone"].data else {
            panic!("untyped is a gauge");
        };
        assert_eq!(gone.data_points[0].flags, FLAG_NO_RECORDED_VALUE);
    }
}
