//! A prometheus-client [`Registry`] as OTLP metrics: the registry is encoded with
//! prometheus-client's own OpenMetrics text encoder (the only public way to read every
//! metric and collector it holds) and that well-formed output is read back here.
//!
//! Mapping: counters → cumulative monotonic sums named with `_total` (the name
//! `/metrics` shows, so dashboards and alerts match either way); gauges, info
//! (`_info`, value 1), state sets and unknown metrics → gauges; histograms → cumulative
//! explicit-bucket histograms (per-bucket counts, `+Inf` as the last bucket); summaries
//! → summaries. Labels become attributes. `_created` series and exemplars are left
//! out. Cumulative points start when the process started.
//!
//! This reads only what prometheus-client writes: one sample per line, `# TYPE` before
//! a family's samples, label values quoted with `\\`, `\"` and `\n` escapes. It is not
//! a general exposition-format parser (the agent's scrape parser is that).

use kaas_proto::otlp::{
    AggregationTemporality, Gauge, Histogram, HistogramDataPoint, KeyValue, Metric,
    NumberDataPoint, Sum, Summary, SummaryDataPoint, ValueAtQuantile, metric, number_data_point,
};
use prometheus_client::registry::Registry;

use crate::string_attribute;

/// Why the registry could not be turned into OTLP metrics.
#[derive(Debug, thiserror::Error)]
pub enum ConvertError {
    /// A collector failed to encode.
    #[error("the registry could not be encoded: {0}")]
    Encode(#[from] std::fmt::Error),
    /// A line of the encoder's output could not be read (a bug here, not an input
    /// problem).
    #[error("line {line}: {reason}")]
    Line {
        /// 1-based line number.
        line: usize,
        /// What is wrong.
        reason: String,
    },
}

/// Every metric in `registry`, with cumulative points starting at `start_unix_nano`
/// and stamped `now_unix_nano`.
pub fn registry_to_metrics(
    registry: &Registry,
    start_unix_nano: u64,
    now_unix_nano: u64,
) -> Result<Vec<Metric>, ConvertError> {
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, registry)?;
    openmetrics_to_metrics(&text, start_unix_nano, now_unix_nano)
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Counter,
    Gauge,
    Histogram,
    Summary,
    Info,
    /// Stateset, gaugehistogram and unknown: each sample name becomes a gauge.
    Other,
}

#[derive(Debug)]
struct Family {
    name: String,
    kind: Kind,
    help: String,
    unit: String,
    samples: Vec<Sample>,
}

#[derive(Debug)]
struct Sample {
    /// What follows the family name (`_total`, `_bucket`, …), or empty.
    suffix: String,
    labels: Vec<(String, String)>,
    value: f64,
}

/// Converts prometheus-client's OpenMetrics text.
fn openmetrics_to_metrics(text: &str, start: u64, now: u64) -> Result<Vec<Metric>, ConvertError> {
    let families = parse(text)?;
    Ok(families
        .into_iter()
        .flat_map(|family| convert(family, start, now))
        // A family without series (e.g. a labelled metric nothing has touched yet)
        // has nothing to send.
        .filter(has_points)
        .collect())
}

fn has_points(metric: &Metric) -> bool {
    match &metric.data {
        Some(metric::Data::Gauge(g)) => !g.data_points.is_empty(),
        Some(metric::Data::Sum(s)) => !s.data_points.is_empty(),
        Some(metric::Data::Histogram(h)) => !h.data_points.is_empty(),
        Some(metric::Data::Summary(s)) => !s.data_points.is_empty(),
        None => false,
    }
}

fn parse(text: &str) -> Result<Vec<Family>, ConvertError> {
    let mut families: Vec<Family> = Vec::new();
    for (index, line) in text.lines().enumerate() {
        let error = |reason: String| ConvertError::Line {
            line: index + 1,
            reason,
        };
        if line.is_empty() {
            continue;
        }
        if let Some(comment) = line.strip_prefix("# ") {
            if comment == "EOF" {
                break;
            }
            let mut parts = comment.splitn(3, ' ');
            let (keyword, name, rest) = (
                parts.next().unwrap_or_default(),
                parts.next().unwrap_or_default(),
                parts.next().unwrap_or_default(),
            );
            let family = family_named(&mut families, name);
            match keyword {
                "TYPE" => family.kind = kind(rest),
                "HELP" => family.help = unescape(rest),
                "UNIT" => family.unit = rest.to_owned(),
                _ => return Err(error(format!("unknown comment {keyword:?}"))),
            }
            continue;
        }
        let (name, labels, rest) = split_sample(line).map_err(error)?;
        let value = rest
            .split(' ')
            .next()
            .and_then(parse_value)
            .ok_or_else(|| error(format!("sample {name} has no number")))?;
        let family = match families.last_mut() {
            Some(f) if name.starts_with(f.name.as_str()) => f,
            _ => family_named(&mut families, name),
        };
        family.samples.push(Sample {
            suffix: name[family.name.len()..].to_owned(),
            labels,
            value,
        });
    }
    Ok(families)
}

fn family_named<'a>(families: &'a mut Vec<Family>, name: &str) -> &'a mut Family {
    let known = families.last().is_some_and(|f| f.name == name);
    if !known {
        families.push(Family {
            name: name.to_owned(),
            kind: Kind::Other,
            help: String::new(),
            unit: String::new(),
            samples: Vec::new(),
        });
    }
    let last = families.len() - 1;
    &mut families[last]
}

fn kind(text: &str) -> Kind {
    match text {
        "counter" => Kind::Counter,
        "gauge" => Kind::Gauge,
        "histogram" => Kind::Histogram,
        "summary" => Kind::Summary,
        "info" => Kind::Info,
        _ => Kind::Other,
    }
}

fn parse_value(text: &str) -> Option<f64> {
    match text {
        "+Inf" => Some(f64::INFINITY),
        "-Inf" => Some(f64::NEG_INFINITY),
        "NaN" => Some(f64::NAN),
        _ => text.parse().ok(),
    }
}

type Labels = Vec<(String, String)>;

/// `name{a="x",b="y"} rest` → (name, labels, rest).
fn split_sample(line: &str) -> Result<(&str, Labels, &str), String> {
    let name_end = line.find(['{', ' ']).ok_or("a sample without a value")?;
    let name = &line[..name_end];
    let mut labels = Vec::new();
    let mut rest = &line[name_end..];
    if let Some(mut inner) = rest.strip_prefix('{') {
        loop {
            if let Some(after) = inner.strip_prefix('}') {
                rest = after;
                break;
            }
            let eq = inner.find("=\"").ok_or("a label without a quoted value")?;
            let label = inner[..eq].trim_start_matches(',').to_owned();
            let (value, after) = quoted(&inner[eq + 2..])?;
            labels.push((label, value));
            inner = after;
        }
    }
    Ok((name, labels, rest.trim_start()))
}

/// Reads an escaped label value up to its closing quote; returns it and what follows.
fn quoted(text: &str) -> Result<(String, &str), String> {
    let mut value = String::new();
    let mut chars = text.char_indices();
    while let Some((i, c)) = chars.next() {
        match c {
            '"' => return Ok((value, &text[i + 1..])),
            '\\' => match chars.next() {
                Some((_, 'n')) => value.push('\n'),
                Some((_, other)) => value.push(other),
                None => break,
            },
            c => value.push(c),
        }
    }
    Err("an unterminated label value".into())
}

fn unescape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        match (c, c == '\\') {
            (_, true) => match chars.next() {
                Some('n') => out.push('\n'),
                Some(other) => out.push(other),
                None => {}
            },
            (c, false) => out.push(c),
        }
    }
    out
}

/// OTLP units are UCUM; OpenMetrics units are words.
fn ucum(unit: &str) -> String {
    match unit {
        "seconds" => "s".into(),
        "bytes" => "By".into(),
        "ratio" => "1".into(),
        other => other.to_owned(),
    }
}

fn attributes(labels: &[(String, String)]) -> Vec<KeyValue> {
    labels.iter().map(|(k, v)| string_attribute(k, v)).collect()
}

fn number(labels: &[(String, String)], value: f64, start: u64, now: u64) -> NumberDataPoint {
    NumberDataPoint {
        attributes: attributes(labels),
        start_time_unix_nano: start,
        time_unix_nano: now,
        value: Some(number_data_point::Value::AsDouble(value)),
        flags: 0,
    }
}

fn convert(family: Family, start: u64, now: u64) -> Vec<Metric> {
    let metric = |name: String, data| Metric {
        name,
        description: family.help.clone(),
        unit: ucum(&family.unit),
        data: Some(data),
    };
    let with_suffix = |suffix: &str| {
        family
            .samples
            .iter()
            .filter(move |s| s.suffix == suffix)
            .collect::<Vec<_>>()
    };
    match family.kind {
        Kind::Counter => {
            let points = with_suffix("_total")
                .into_iter()
                .map(|s| number(&s.labels, s.value, start, now))
                .collect();
            vec![metric(
                format!("{}_total", family.name),
                metric::Data::Sum(Sum {
                    data_points: points,
                    aggregation_temporality: AggregationTemporality::Cumulative as i32,
                    is_monotonic: true,
                }),
            )]
        }
        Kind::Gauge | Kind::Info => {
            let suffix = if family.kind == Kind::Info {
                "_info"
            } else {
                ""
            };
            let points = with_suffix(suffix)
                .into_iter()
                .map(|s| number(&s.labels, s.value, 0, now))
                .collect();
            vec![metric(
                format!("{}{suffix}", family.name),
                metric::Data::Gauge(Gauge {
                    data_points: points,
                }),
            )]
        }
        Kind::Histogram => vec![metric(
            family.name.clone(),
            metric::Data::Histogram(Histogram {
                data_points: histogram_points(&family.samples, start, now),
                aggregation_temporality: AggregationTemporality::Cumulative as i32,
            }),
        )],
        Kind::Summary => vec![metric(
            family.name.clone(),
            metric::Data::Summary(Summary {
                data_points: summary_points(&family.samples, start, now),
            }),
        )],
        Kind::Other => {
            let mut by_name: Vec<(String, Vec<NumberDataPoint>)> = Vec::new();
            for s in &family.samples {
                let name = format!("{}{}", family.name, s.suffix);
                let point = number(&s.labels, s.value, 0, now);
                match by_name.iter_mut().find(|(n, _)| *n == name) {
                    Some((_, points)) => points.push(point),
                    None => by_name.push((name, vec![point])),
                }
            }
            by_name
                .into_iter()
                .map(|(name, data_points)| metric(name, metric::Data::Gauge(Gauge { data_points })))
                .collect()
        }
    }
}

/// Samples grouped by their labels without `le`/`quantile`, in first-seen order.
fn series<'a>(samples: &'a [Sample], special: &str) -> Vec<(Labels, Vec<&'a Sample>)> {
    let mut groups: Vec<(Labels, Vec<&Sample>)> = Vec::new();
    for sample in samples.iter().filter(|s| s.suffix != "_created") {
        let key: Labels = sample
            .labels
            .iter()
            .filter(|(k, _)| k != special)
            .cloned()
            .collect();
        match groups.iter_mut().find(|(k, _)| *k == key) {
            Some((_, members)) => members.push(sample),
            None => groups.push((key, vec![sample])),
        }
    }
    groups
}

fn label<'a>(sample: &'a Sample, name: &str) -> Option<&'a str> {
    sample
        .labels
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

fn histogram_points(samples: &[Sample], start: u64, now: u64) -> Vec<HistogramDataPoint> {
    series(samples, "le")
        .into_iter()
        .map(|(labels, members)| {
            let mut buckets: Vec<(f64, f64)> = members
                .iter()
                .filter(|s| s.suffix == "_bucket")
                .filter_map(|s| Some((parse_value(label(s, "le")?)?, s.value)))
                .collect();
            buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
            let value_of =
                |suffix: &str| members.iter().find(|s| s.suffix == suffix).map(|s| s.value);
            let mut previous = 0.0;
            let mut bucket_counts = Vec::with_capacity(buckets.len());
            for (_, cumulative) in &buckets {
                bucket_counts.push((cumulative - previous).max(0.0) as u64);
                previous = *cumulative;
            }
            HistogramDataPoint {
                attributes: attributes(&labels),
                start_time_unix_nano: start,
                time_unix_nano: now,
                count: value_of("_count").unwrap_or(previous) as u64,
                sum: value_of("_sum"),
                bucket_counts,
                explicit_bounds: buckets
                    .iter()
                    .map(|(le, _)| *le)
                    .filter(|le| le.is_finite())
                    .collect(),
                flags: 0,
            }
        })
        .collect()
}

fn summary_points(samples: &[Sample], start: u64, now: u64) -> Vec<SummaryDataPoint> {
    series(samples, "quantile")
        .into_iter()
        .map(|(labels, members)| {
            let value_of = |suffix: &str| {
                members
                    .iter()
                    .find(|s| s.suffix == suffix)
                    .map_or(0.0, |s| s.value)
            };
            SummaryDataPoint {
                attributes: attributes(&labels),
                start_time_unix_nano: start,
                time_unix_nano: now,
                count: value_of("_count") as u64,
                sum: value_of("_sum"),
                quantile_values: members
                    .iter()
                    .filter(|s| s.suffix.is_empty())
                    .filter_map(|s| {
                        Some(ValueAtQuantile {
                            quantile: parse_value(label(s, "quantile")?)?,
                            value: s.value,
                        })
                    })
                    .collect(),
                flags: 0,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use kaas_proto::otlp::any_value::Value;
    use prometheus_client::metrics::counter::Counter;
    use prometheus_client::metrics::family::Family as MetricFamily;
    use prometheus_client::metrics::gauge::Gauge as PromGauge;
    use prometheus_client::metrics::histogram::Histogram as PromHistogram;
    use prometheus_client::metrics::info::Info;

    use super::*;

    fn attrs(point: &[KeyValue]) -> Vec<(String, String)> {
        point
            .iter()
            .map(
                |kv| match kv.value.as_ref().and_then(|v| v.value.as_ref()) {
                    Some(Value::StringValue(s)) => (kv.key.clone(), s.clone()),
                    other => panic!("not a string: {other:?}"),
                },
            )
            .collect()
    }

    fn find<'a>(metrics: &'a [Metric], name: &str) -> &'a metric::Data {
        metrics
            .iter()
            .find(|m| m.name == name)
            .and_then(|m| m.data.as_ref())
            .unwrap_or_else(|| {
                panic!(
                    "{name} missing from {:?}",
                    metrics.iter().map(|m| &m.name).collect::<Vec<_>>()
                )
            })
    }

    fn double(point: &NumberDataPoint) -> f64 {
        match point.value {
            Some(number_data_point::Value::AsDouble(v)) => v,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_real_registry_becomes_sums_gauges_and_histograms() {
        let mut registry = Registry::default();
        let requests = MetricFamily::<Vec<(String, String)>, Counter>::default();
        registry.register("demo_requests", "Requests \"served\".", requests.clone());
        requests
            .get_or_create(&vec![("route".into(), "/a \"b\"\\c\nd".into())])
            .inc_by(3);
        requests
            .get_or_create(&vec![("route".into(), "/x".into())])
            .inc();
        let depth = PromGauge::<i64>::default();
        registry.register("demo_queue_depth", "Queue depth.", depth.clone());
        depth.set(-4);
        let latency = PromHistogram::new([0.1, 1.0]);
        registry.register_with_unit(
            "demo_latency",
            "Latency.",
            prometheus_client::registry::Unit::Seconds,
            latency.clone(),
        );
        for v in [0.05, 0.5, 0.7, 5.0] {
            latency.observe(v);
        }
        registry.register(
            "demo_build",
            "Build.",
            Info::new(vec![("version".to_owned(), "1.2".to_owned())]),
        );

        let metrics = registry_to_metrics(&registry, 10, 20).unwrap();

        let metric::Data::Sum(sum) = find(&metrics, "demo_requests_total") else {
            panic!("not a sum")
        };
        assert!(sum.is_monotonic);
        assert_eq!(
            sum.aggregation_temporality,
            AggregationTemporality::Cumulative as i32
        );
        let mut points: Vec<_> = sum
            .data_points
            .iter()
            .map(|p| (attrs(&p.attributes), double(p), p.start_time_unix_nano))
            .collect();
        points.sort_by(|a, b| a.0.cmp(&b.0));
        assert_eq!(
            points,
            [
                (vec![("route".into(), "/a \"b\"\\c\nd".into())], 3.0, 10),
                (vec![("route".into(), "/x".into())], 1.0, 10),
            ]
        );
        let description = &metrics
            .iter()
            .find(|m| m.name == "demo_requests_total")
            .unwrap()
            .description;
        // prometheus-client ends every help text with a full stop of its own.
        assert_eq!(description, "Requests \"served\"..");

        let metric::Data::Gauge(gauge) = find(&metrics, "demo_queue_depth") else {
            panic!("not a gauge")
        };
        assert_eq!(double(&gauge.data_points[0]), -4.0);
        assert_eq!(gauge.data_points[0].time_unix_nano, 20);

        let metric::Data::Histogram(histogram) = find(&metrics, "demo_latency_seconds") else {
            panic!("not a histogram")
        };
        let unit = &metrics
            .iter()
            .find(|m| m.name == "demo_latency_seconds")
            .unwrap()
            .unit;
        assert_eq!(unit, "s");
        let point = &histogram.data_points[0];
        assert_eq!(point.explicit_bounds, [0.1, 1.0]);
        assert_eq!(point.bucket_counts, [1, 2, 1], "per bucket, +Inf last");
        assert_eq!(point.count, 4);
        assert_eq!(point.sum, Some(6.25));
        assert!(point.attributes.is_empty());

        let metric::Data::Gauge(info) = find(&metrics, "demo_build_info") else {
            panic!("info is a gauge")
        };
        assert_eq!(
            attrs(&info.data_points[0].attributes),
            [("version".to_owned(), "1.2".to_owned())]
        );
        assert_eq!(double(&info.data_points[0]), 1.0);
    }

    #[test]
    fn labelled_histograms_and_summaries_keep_one_point_per_series() {
        let text = "# HELP h Help.\n# TYPE h histogram\n\
            h_bucket{path=\"a\",le=\"1.0\"} 2\nh_bucket{path=\"a\",le=\"+Inf\"} 3\n\
            h_sum{path=\"a\"} 4.5\nh_count{path=\"a\"} 3\n\
            h_bucket{path=\"b\",le=\"1.0\"} 0\nh_bucket{path=\"b\",le=\"+Inf\"} 1\n\
            h_sum{path=\"b\"} 9.0\nh_count{path=\"b\"} 1\nh_created{path=\"b\"} 1.0\n\
            # TYPE s summary\ns{quantile=\"0.5\"} 0.2\ns_sum 3.0\ns_count 7\n\
            # TYPE u unknown\nu 1 # {trace_id=\"x\"} 1.0\n\
            # HELP empty Nothing yet.\n# TYPE empty counter\n# EOF\n";
        let metrics = openmetrics_to_metrics(text, 1, 2).unwrap();
        let metric::Data::Histogram(h) = find(&metrics, "h") else {
            panic!()
        };
        assert_eq!(h.data_points.len(), 2);
        assert_eq!(
            attrs(&h.data_points[1].attributes),
            [("path".to_owned(), "b".to_owned())]
        );
        assert_eq!(h.data_points[1].bucket_counts, [0, 1]);
        let metric::Data::Summary(s) = find(&metrics, "s") else {
            panic!()
        };
        assert_eq!(s.data_points[0].count, 7);
        assert_eq!(s.data_points[0].quantile_values[0].quantile, 0.5);
        let metric::Data::Gauge(u) = find(&metrics, "u") else {
            panic!()
        };
        assert_eq!(double(&u.data_points[0]), 1.0, "exemplar ignored");
        assert!(
            !metrics.iter().any(|m| m.name.starts_with("empty")),
            "families without series are left out"
        );
    }

    #[test]
    fn broken_lines_are_errors_not_panics() {
        for text in [
            "x{a=\"1} 2\n",
            "x{a} 2\n",
            "x\n",
            "x{a=\"1\"} notanumber\n",
            "# WHAT x y\n",
        ] {
            assert!(openmetrics_to_metrics(text, 0, 0).is_err(), "{text:?}");
        }
    }
}
