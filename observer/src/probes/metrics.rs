//! The probe series, blackbox-exporter compatible, read from the last result of each
//! target this replica probes (`docs/metrics.md`, "Probes"):
//!
//! | series | for |
//! |---|---|
//! | `probe_success` | every target with a result |
//! | `probe_duration_seconds` | every target with a result |
//! | `probe_http_status_code` | `http` targets (0 when no answer arrived) |
//! | `probe_ssl_earliest_cert_expiry` | `http` over TLS and `tls` targets whose handshake completed |
//! | `probe_dns_lookup_time_seconds` | targets that resolved a name (`dns`: the query) |
//!
//! Every series carries `cluster`, `tenant`, `target` and `module`. A target's series
//! appear after its first probe and disappear when it is removed or moves to another
//! replica.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::gauge::ConstGauge;

use super::ProbeOutcome;
use super::config::SeriesKey;

/// The last result of one target, as exported.
#[derive(Clone, Debug, PartialEq)]
pub struct ProbeSample {
    /// `probe_success`.
    pub success: bool,
    /// `probe_duration_seconds`.
    pub duration_seconds: f64,
    /// `probe_http_status_code` (http only).
    pub http_status_code: Option<u16>,
    /// `probe_ssl_earliest_cert_expiry`, Unix seconds.
    pub earliest_cert_expiry: Option<i64>,
    /// `probe_dns_lookup_time_seconds`.
    pub dns_lookup_seconds: Option<f64>,
}

impl From<&ProbeOutcome> for ProbeSample {
    fn from(outcome: &ProbeOutcome) -> Self {
        Self {
            success: outcome.success(),
            duration_seconds: outcome.duration.as_secs_f64(),
            http_status_code: outcome.http_status_code,
            earliest_cert_expiry: outcome.earliest_cert_expiry,
            dns_lookup_seconds: outcome.dns_lookup.map(|d| d.as_secs_f64()),
        }
    }
}

/// The last sample of every target this replica probes.
#[derive(Debug, Default)]
pub(crate) struct ProbeResults {
    samples: Mutex<BTreeMap<SeriesKey, ProbeSample>>,
}

impl ProbeResults {
    pub(crate) fn record(&self, key: &SeriesKey, sample: ProbeSample) {
        let mut samples = self.samples.lock().unwrap_or_else(|e| e.into_inner());
        match samples.get_mut(key) {
            Some(slot) => *slot = sample,
            None => {
                samples.insert(key.clone(), sample);
            }
        }
    }

    pub(crate) fn remove(&self, key: &SeriesKey) {
        self.samples
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(key);
    }

    pub(crate) fn clear(&self) {
        self.samples
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
    }

    pub(crate) fn snapshot(&self) -> BTreeMap<SeriesKey, ProbeSample> {
        self.samples
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

/// The collector registered by [`super::Prober::register`].
#[derive(Debug)]
pub(crate) struct ProbeMetrics {
    pub(crate) results: Arc<ProbeResults>,
}

type Field = fn(&ProbeSample) -> Option<f64>;

/// Each family: name, help, and the value of a sample (`None`: no series).
const FAMILIES: [(&str, &str, Field); 5] = [
    (
        "probe_success",
        "1 if the last probe succeeded, else 0.",
        |s| Some(if s.success { 1.0 } else { 0.0 }),
    ),
    (
        "probe_duration_seconds",
        "How long the last probe took.",
        |s| Some(s.duration_seconds),
    ),
    (
        "probe_http_status_code",
        "HTTP status code of the last http probe (0 if no response).",
        |s| s.http_status_code.map(f64::from),
    ),
    (
        "probe_ssl_earliest_cert_expiry",
        "notAfter of the earliest-expiring certificate in the served chain, Unix seconds.",
        |s| s.earliest_cert_expiry.map(|t| t as f64),
    ),
    (
        "probe_dns_lookup_time_seconds",
        "Time spent resolving the target's name.",
        |s| s.dns_lookup_seconds,
    ),
];

/// One exported series and its value.
#[derive(Clone, Debug, PartialEq)]
pub struct ProbeSeries {
    /// The metric name, e.g. `probe_success`.
    pub name: &'static str,
    /// Its `cluster`, `tenant`, `target` and `module` labels.
    pub key: SeriesKey,
    /// The value.
    pub value: f64,
}

impl ProbeSeries {
    /// The labels as name/value pairs, `__name__` excluded, in the order exported.
    pub fn labels(&self) -> [(&'static str, &str); 4] {
        [
            ("cluster", self.key.cluster.as_str()),
            ("tenant", self.key.tenant.as_str()),
            ("target", self.key.target.as_str()),
            ("module", self.key.module),
        ]
    }
}

/// Every series of `samples`, family by family (what the collector encodes).
pub(crate) fn series(samples: &BTreeMap<SeriesKey, ProbeSample>) -> Vec<ProbeSeries> {
    let mut out = Vec::with_capacity(samples.len() * 3);
    for (name, _, field) in FAMILIES {
        for (key, sample) in samples {
            if let Some(value) = field(sample) {
                out.push(ProbeSeries {
                    name,
                    key: key.clone(),
                    value,
                });
            }
        }
    }
    out
}

impl Collector for ProbeMetrics {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let samples = self
            .results
            .samples
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        for (name, help, field) in FAMILIES {
            let mut family = encoder.encode_descriptor(name, help, None, MetricType::Gauge)?;
            for (key, sample) in samples.iter() {
                let Some(value) = field(sample) else {
                    continue;
                };
                let labels = [
                    ("cluster", key.cluster.as_str()),
                    ("tenant", key.tenant.as_str()),
                    ("target", key.target.as_str()),
                    ("module", key.module),
                ];
                ConstGauge::new(value).encode(family.encode_family(&labels)?)?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use prometheus_client::registry::Registry;

    use super::*;

    #[test]
    fn series_carry_the_four_labels_and_only_what_the_module_measured() {
        let results = Arc::new(ProbeResults::default());
        let http = SeriesKey {
            cluster: "edge-1".into(),
            tenant: "shop".into(),
            target: "https://a.example/livez".into(),
            module: "http",
        };
        let tcp = SeriesKey {
            cluster: String::new(),
            tenant: "shop".into(),
            target: "db.example:5432".into(),
            module: "tcp",
        };
        results.record(
            &http,
            ProbeSample {
                success: false,
                duration_seconds: 0.25,
                http_status_code: Some(503),
                earliest_cert_expiry: Some(1_900_000_000),
                dns_lookup_seconds: Some(0.001),
            },
        );
        results.record(
            &tcp,
            ProbeSample {
                success: true,
                duration_seconds: 0.5,
                http_status_code: None,
                earliest_cert_expiry: None,
                dns_lookup_seconds: None,
            },
        );
        let mut registry = Registry::default();
        registry.register_collector(Box::new(ProbeMetrics {
            results: results.clone(),
        }));
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        let labels =
            r#"cluster="edge-1",tenant="shop",target="https://a.example/livez",module="http""#;
        for line in [
            format!("probe_success{{{labels}}} 0.0"),
            format!("probe_duration_seconds{{{labels}}} 0.25"),
            format!("probe_http_status_code{{{labels}}} 503.0"),
            format!("probe_ssl_earliest_cert_expiry{{{labels}}} 1900000000.0"),
            format!("probe_dns_lookup_time_seconds{{{labels}}} 0.001"),
            r#"probe_success{cluster="",tenant="shop",target="db.example:5432",module="tcp"} 1.0"#
                .to_owned(),
        ] {
            assert!(text.contains(&line), "{line} missing from\n{text}");
        }
        assert!(!text.contains(
            r#"probe_http_status_code{cluster="",tenant="shop",target="db.example:5432""#
        ));
        // The same series as values, for a remote writer.
        let values = series(&results.snapshot());
        assert_eq!(values.len(), 5 + 2, "{values:#?}");
        let status = values
            .iter()
            .find(|s| s.name == "probe_http_status_code")
            .unwrap();
        assert_eq!(
            (status.value, status.labels()[0]),
            (503.0, ("cluster", "edge-1"))
        );
        results.remove(&http);
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        assert!(!text.contains("edge-1"), "{text}");
    }
}
