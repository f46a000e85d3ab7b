//! Scrape semantics without a network: bodies go straight into [`Scraper::ingest`] and
//! the buffered batches are read back.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use kaas_pipeline::buffer::WhenFull;
use kaas_pipeline::processors::{RelabelConfig, ValidatedProcessors, compile_rule};
use tokio::sync::Notify;

use super::*;
use crate::internal_events::PipelineStats;
use crate::scrape::target::{METRICS_PATH, SCHEME};
use crate::topology::inlet::Inlet;
use kaas_buffer::{DiskBuffer, Limits};

const T0: i64 = 1_700_000_000_000;

struct Fixture {
    scraper: Scraper,
    inlet: Inlet,
    _dir: tempfile::TempDir,
}

fn config() -> ScrapeConfig {
    ScrapeConfig::new(Duration::from_secs(15), Duration::from_secs(10))
}

fn fixture(config: ScrapeConfig, metric_relabel: &str) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let limits = Limits {
        max_bytes: 16 << 20,
        max_age: Duration::from_secs(365 * 24 * 3600 * 100),
        when_full: WhenFull::DropOldest,
    };
    let (buffer, _) = DiskBuffer::open(dir.path(), limits).unwrap();
    let inlet = Inlet {
        buffer: Arc::new(Mutex::new(buffer)),
        stats: Arc::new(PipelineStats::default()),
        wake: Arc::new(Notify::new()),
    };
    let rules: Vec<RelabelConfig> = serde_yaml::from_str(metric_relabel).unwrap();
    let processors = ValidatedProcessors {
        metric_relabel: rules.iter().map(|r| compile_rule(r).unwrap()).collect(),
        ..Default::default()
    };
    let target = Target::new(Labels::from_pairs([
        (ADDRESS, "web:8080"),
        (SCHEME, "http"),
        (METRICS_PATH, "/metrics"),
        ("job", "nginx"),
        ("instance", "web:8080"),
    ]))
    .unwrap();
    let client = crate::scrape::client::ScrapeClient::new(&Default::default()).unwrap();
    let scraper = Scraper::new(
        target,
        config,
        client,
        Arc::new(processors),
        Arc::new(Labels::from_pairs([("cluster", "c1")])),
        inlet.clone(),
    );
    Fixture {
        scraper,
        inlet,
        _dir: dir,
    }
}

impl Fixture {
    fn scrape(&mut self, body: &str, at: i64) {
        self.scraper.ingest(
            Ok((body.as_bytes().to_vec(), None)),
            at,
            Duration::from_millis(12),
        );
    }

    fn fail(&mut self, at: i64) {
        self.scraper
            .ingest(Err(ScrapeError::Status(503)), at, Duration::from_millis(5));
    }

    /// Everything buffered since the last call, as `name{labels} value @ts` lines.
    fn take(&mut self) -> Vec<String> {
        let mut buffer = self.inlet.buffer.lock().unwrap();
        let mut out = Vec::new();
        while let Some((_, record)) = buffer.read_next(T0).unwrap() {
            for series in crate::record::metrics::Batch::decode(&record.payload)
                .unwrap()
                .series
            {
                let labels: Vec<String> = series
                    .labels
                    .iter()
                    .filter(|l| l.name != "__name__")
                    .map(|l| format!("{}={:?}", l.name, l.value))
                    .collect();
                let name = &series
                    .labels
                    .iter()
                    .find(|l| l.name == "__name__")
                    .unwrap()
                    .value;
                for sample in series.samples {
                    let value = if sample.value.to_bits() == STALE_NAN_BITS {
                        "stale".to_owned()
                    } else {
                        sample.value.to_string()
                    };
                    out.push(format!(
                        "{name}{{{}}} {value} @{}",
                        labels.join(","),
                        sample.timestamp
                    ));
                }
            }
        }
        let position = buffer.read_position();
        buffer.ack(position).unwrap();
        out.sort();
        out
    }
}

fn report(up: &str, scraped: usize, post: usize, added: usize, at: i64) -> Vec<String> {
    let labels = r#"cluster="c1",instance="web:8080",job="nginx""#;
    vec![
        format!("scrape_samples_post_metric_relabeling{{{labels}}} {post} @{at}"),
        format!("scrape_samples_scraped{{{labels}}} {scraped} @{at}"),
        format!("scrape_series_added{{{labels}}} {added} @{at}"),
        format!("up{{{labels}}} {up} @{at}"),
    ]
}

fn without_duration(lines: Vec<String>) -> Vec<String> {
    lines
        .into_iter()
        .filter(|l| !l.starts_with("scrape_duration_seconds"))
        .collect()
}

#[test]
fn target_labels_win_and_clashing_exposed_labels_are_exported() {
    let mut f = fixture(config(), "[]");
    f.scrape("a{job=\"app\",exported_job=\"x\",code=\"200\"} 1\n", T0);
    let lines = without_duration(f.take());
    assert_eq!(
        lines[0],
        format!(
            "a{{cluster=\"c1\",code=\"200\",exported_exported_job=\"app\",exported_job=\"x\",instance=\"web:8080\",job=\"nginx\"}} 1 @{T0}"
        )
    );
}

#[test]
fn honor_labels_keeps_exposed_labels() {
    let mut config = config();
    config.honor_labels = true;
    let mut f = fixture(config, "[]");
    f.scrape("a{job=\"app\"} 1\n", T0);
    assert_eq!(
        without_duration(f.take())[0],
        format!("a{{cluster=\"c1\",instance=\"web:8080\",job=\"app\"}} 1 @{T0}")
    );
}

#[test]
fn honor_timestamps_decides_whose_timestamp_counts() {
    let mut f = fixture(config(), "[]");
    f.scrape("a 1 1234\n", T0);
    assert!(
        f.take()
            .iter()
            .any(|l| l.starts_with("a{") && l.ends_with("@1234"))
    );
    let mut config = config();
    config.honor_timestamps = false;
    let mut f = fixture(config, "[]");
    f.scrape("a 1 1234\n", T0);
    assert!(
        f.take()
            .iter()
            .any(|l| l.starts_with("a{") && l.ends_with(&format!("@{T0}")))
    );
}

#[test]
fn report_series_and_staleness_follow_prometheus() {
    let mut f = fixture(
        config(),
        "- {action: drop, source_labels: [__name__], regex: dropped}",
    );
    f.scrape("a 1\nb 2\ndropped 3\n", T0);
    let mut expected = vec![
        format!("a{{cluster=\"c1\",instance=\"web:8080\",job=\"nginx\"}} 1 @{T0}"),
        format!("b{{cluster=\"c1\",instance=\"web:8080\",job=\"nginx\"}} 2 @{T0}"),
    ];
    expected.extend(report("1", 3, 2, 2, T0));
    expected.sort();
    assert_eq!(without_duration(f.take()), expected);

    // b disappears: it gets a staleness marker; a is not new.
    let t1 = T0 + 15_000;
    f.scrape("a 5\n", t1);
    let mut expected = vec![
        format!("a{{cluster=\"c1\",instance=\"web:8080\",job=\"nginx\"}} 5 @{t1}"),
        format!("b{{cluster=\"c1\",instance=\"web:8080\",job=\"nginx\"}} stale @{t1}"),
    ];
    expected.extend(report("1", 1, 1, 0, t1));
    expected.sort();
    assert_eq!(without_duration(f.take()), expected);

    // A failed scrape marks everything stale and reports up=0.
    let t2 = t1 + 15_000;
    f.fail(t2);
    let mut expected = vec![format!(
        "a{{cluster=\"c1\",instance=\"web:8080\",job=\"nginx\"}} stale @{t2}"
    )];
    expected.extend(report("0", 0, 0, 0, t2));
    expected.sort();
    assert_eq!(without_duration(f.take()), expected);
    let health = f.scraper.health.lock().unwrap().clone();
    assert!(!health.up);
    assert_eq!(
        health.last_error.as_deref(),
        Some("server returned HTTP status 503")
    );

    // Stopping marks the report series stale too.
    f.scraper.mark_all_stale(t2 + 1);
    assert!(f.take().iter().all(|l| l.contains(" stale @")));
}

#[test]
fn broken_and_hostile_bodies_fail_the_scrape_with_a_reason() {
    let cases: &[(&str, &str)] = &[
        ("a 1\na 2\n", "duplicate series \"a\" in one scrape"),
        (
            "a{b=\"1\" 1\n",
            "line 1: expected ',' or '}' after label \"b\"",
        ),
        (
            "\u{0}bad 1\n",
            "line 1: invalid metric name at \"\\0bad 1\"",
        ),
    ];
    for (body, reason) in cases {
        let mut f = fixture(config(), "[]");
        f.scrape(body, T0);
        let lines = without_duration(f.take());
        assert_eq!(lines, report("0", 0, 0, 0, T0), "{body:?}");
        let health = f.scraper.health.lock().unwrap().clone();
        assert_eq!(health.last_error.as_deref(), Some(*reason), "{body:?}");
    }
    let mut f = fixture(config(), "[]");
    f.scraper.ingest(
        Ok((vec![b'a', b' ', 0xff, b'\n'], None)),
        T0,
        Duration::ZERO,
    );
    let health = f.scraper.health.lock().unwrap().clone();
    assert!(health.last_error.unwrap().contains("not valid UTF-8"));
}

#[test]
fn limits_fail_the_whole_scrape() {
    let mut config = config();
    config.sample_limit = std::num::NonZeroU32::new(2).unwrap();
    let mut f = fixture(config, "[]");
    f.scrape("a 1\nb 1\nc 1\n", T0);
    assert_eq!(without_duration(f.take()), report("0", 0, 0, 0, T0));
    let error = f.scraper.health.lock().unwrap().last_error.clone().unwrap();
    assert_eq!(
        error,
        "sample_limit exceeded: more than 2 samples after metric relabeling"
    );

    let mut config = self::config();
    // Target labels count too: "web:8080" has 8 characters.
    config.label_value_length_limit = std::num::NonZeroU32::new(8).unwrap();
    let mut f = fixture(config, "[]");
    f.scrape("a{x=\"nine-char\"} 1\n", T0);
    let error = f.scraper.health.lock().unwrap().last_error.clone().unwrap();
    assert!(
        error.starts_with("label_value_length_limit exceeded (metric: a, label name: x"),
        "{error}"
    );
}

#[test]
fn duplicates_created_by_relabeling_are_dropped_not_fatal() {
    let mut f = fixture(config(), "- {action: labeldrop, regex: code}");
    f.scrape("a{code=\"1\"} 1\na{code=\"2\"} 2\n", T0);
    let lines = without_duration(f.take());
    assert_eq!(lines.iter().filter(|l| l.starts_with("a{")).count(), 1);
    assert!(lines.contains(&format!(
        "up{{cluster=\"c1\",instance=\"web:8080\",job=\"nginx\"}} 1 @{T0}"
    )));
}

#[test]
fn targets_build_their_url_from_labels() {
    let target = Target::new(Labels::from_pairs([
        (ADDRESS, "10.0.0.1:9100"),
        (SCHEME, "https"),
        (METRICS_PATH, "/probe"),
        ("__param_module", "http_2xx"),
        ("job", "x"),
    ]))
    .unwrap();
    assert_eq!(
        target.url.as_str(),
        "https://10.0.0.1:9100/probe?module=http_2xx"
    );
    assert_eq!(format!("{:?}", target.public), r#"{job="x"}"#);
}

#[test]
fn series_that_stay_keep_their_labels_when_the_templates_are_compacted() {
    let mut f = fixture(config(), "[]");
    let many: String = (0..200)
        .map(|i| format!("gone{{i=\"{i}\"}} 1\nkept{{i=\"{i}\"}} {i}\n"))
        .collect();
    let kept: String = (0..200)
        .filter(|i| i % 20 == 0)
        .map(|i| format!("kept{{i=\"{i}\"}} {i}\n"))
        .collect();
    f.scrape(&many, T0);
    f.take();
    let before = f.scraper.cache.templates.len();
    // Evicted after two scrapes without them; then most of the buffer is garbage.
    for n in 1..=3 {
        f.scrape(&kept, T0 + n * 15_000);
        f.take();
    }
    assert!(
        f.scraper.cache.templates.len() < before / 4,
        "compacted: {} of {before} bytes left",
        f.scraper.cache.templates.len()
    );
    f.scrape(&kept, T0 + 60_000);
    let lines: Vec<String> = f
        .take()
        .into_iter()
        .filter(|l| l.starts_with("kept"))
        .collect();
    let expected: Vec<String> = {
        let mut lines: Vec<String> = (0..200)
            .filter(|i| i % 20 == 0)
            .map(|i| {
                format!(
                    r#"kept{{cluster="c1",i="{i}",instance="web:8080",job="nginx"}} {i} @{}"#,
                    T0 + 60_000
                )
            })
            .collect();
        lines.sort();
        lines
    };
    assert_eq!(lines, expected);
}
