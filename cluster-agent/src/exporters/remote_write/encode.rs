//! Request bodies for remote-write 1.0 and 2.0, snappy-compressed.

use std::collections::HashMap;

use kaas_proto::remote_write::{v1, v2};
use prost::Message;

use crate::record::metrics::{Batch, compress};

/// Suffixes by which a series name extends its metric family's name.
const FAMILY_SUFFIXES: &[&str] = &[
    "_total", "_bucket", "_sum", "_count", "_created", "_info", "_gsum", "_gcount",
];

/// A 1.0 body: the batch as a `WriteRequest`.
pub fn encode_v1(batch: &Batch) -> Vec<u8> {
    let request = v1::WriteRequest {
        timeseries: batch.series.clone(),
        metadata: batch.metadata.clone(),
    };
    compress(&request.encode_to_vec())
}

/// A 2.0 body: strings interned into the symbol table, metadata attached per series.
pub fn encode_v2(batch: &Batch) -> Vec<u8> {
    let families: HashMap<&str, &v1::MetricMetadata> = batch
        .metadata
        .iter()
        .map(|m| (m.metric_family_name.as_str(), m))
        .collect();
    let mut symbols = Symbols::default();
    let mut timeseries = Vec::with_capacity(batch.series.len());
    for series in &batch.series {
        let mut labels_refs = Vec::with_capacity(series.labels.len() * 2);
        let mut name = "";
        for label in &series.labels {
            if label.name == "__name__" {
                name = &label.value;
            }
            labels_refs.push(symbols.intern(&label.name));
            labels_refs.push(symbols.intern(&label.value));
        }
        let metadata = family_of(name, &families).map(|m| v2::Metadata {
            r#type: m.r#type,
            help_ref: symbols.intern(&m.help),
            unit_ref: symbols.intern(&m.unit),
        });
        timeseries.push(v2::TimeSeries {
            labels_refs,
            samples: series
                .samples
                .iter()
                .map(|s| v2::Sample {
                    value: s.value,
                    timestamp: s.timestamp,
                })
                .collect(),
            metadata,
        });
    }
    let request = v2::Request {
        symbols: symbols.table,
        timeseries,
    };
    compress(&request.encode_to_vec())
}

/// The metadata of the family a series belongs to.
pub fn family_of<'a>(
    name: &str,
    families: &HashMap<&str, &'a v1::MetricMetadata>,
) -> Option<&'a v1::MetricMetadata> {
    if let Some(found) = families.get(name) {
        return Some(found);
    }
    FAMILY_SUFFIXES
        .iter()
        .find_map(|suffix| families.get(name.strip_suffix(suffix)?).copied())
}

/// The 2.0 symbol table; index 0 is the empty string, as the specification requires.
struct Symbols {
    table: Vec<String>,
    index: HashMap<String, u32>,
}

impl Default for Symbols {
    fn default() -> Self {
        Self {
            table: vec![String::new()],
            index: HashMap::from([(String::new(), 0)]),
        }
    }
}

impl Symbols {
    fn intern(&mut self, text: &str) -> u32 {
        if let Some(i) = self.index.get(text) {
            return *i;
        }
        let i = u32::try_from(self.table.len()).unwrap_or(u32::MAX);
        self.table.push(text.to_owned());
        self.index.insert(text.to_owned(), i);
        i
    }
}

#[cfg(test)]
mod tests {
    use kaas_proto::remote_write::v1::{Label, MetricMetadata, MetricType, Sample, TimeSeries};

    use super::*;

    fn batch() -> Batch {
        let series = |name: &str, le: Option<&str>| TimeSeries {
            labels: std::iter::once(("__name__", name))
                .chain(le.map(|le| ("le", le)))
                .chain([("job", "api")])
                .map(|(n, v)| Label {
                    name: n.into(),
                    value: v.into(),
                })
                .collect(),
            samples: vec![Sample {
                value: 1.5,
                timestamp: 1000,
            }],
        };
        Batch {
            series: vec![series("latency_bucket", Some("0.1")), series("up", None)],
            metadata: vec![MetricMetadata {
                r#type: MetricType::Histogram as i32,
                metric_family_name: "latency".into(),
                help: "Latency.".into(),
                unit: "seconds".into(),
            }],
        }
    }

    fn decompress(body: &[u8]) -> Vec<u8> {
        snap::raw::Decoder::new().decompress_vec(body).unwrap()
    }

    #[test]
    fn v1_round_trips() {
        let decoded =
            v1::WriteRequest::decode(decompress(&encode_v1(&batch())).as_slice()).unwrap();
        assert_eq!(decoded.timeseries, batch().series);
        assert_eq!(decoded.metadata, batch().metadata);
    }

    #[test]
    fn v2_interns_strings_and_attaches_family_metadata() {
        let request = v2::Request::decode(decompress(&encode_v2(&batch())).as_slice()).unwrap();
        assert_eq!(request.symbols[0], "");
        let symbol = |i: u32| request.symbols[i as usize].as_str();
        let first = &request.timeseries[0];
        let labels: Vec<(&str, &str)> = first
            .labels_refs
            .chunks(2)
            .map(|pair| (symbol(pair[0]), symbol(pair[1])))
            .collect();
        assert_eq!(
            labels,
            [
                ("__name__", "latency_bucket"),
                ("le", "0.1"),
                ("job", "api")
            ]
        );
        let metadata = first.metadata.unwrap();
        assert_eq!(metadata.r#type, v2::MetricType::Histogram as i32);
        assert_eq!(symbol(metadata.help_ref), "Latency.");
        assert_eq!(symbol(metadata.unit_ref), "seconds");
        assert_eq!(request.timeseries[1].metadata, None, "up has no metadata");
        // "job" and "api" are stored once although both series use them.
        assert_eq!(request.symbols.iter().filter(|s| *s == "job").count(), 1);
    }
}
