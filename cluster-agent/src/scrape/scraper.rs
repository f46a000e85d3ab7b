//! One scrape loop per target: fetch, parse, label, process, buffer — every interval,
//! at an offset derived from the target so that targets are spread over the interval.
//!
//! Follows Prometheus' scrape semantics:
//! - sample labels get the target's labels; with `honor_labels: false` a clashing
//!   exposed label is kept as `exported_<name>` (Prometheus' `mutateSampleLabels`);
//! - timestamps are the scrape's start unless `honor_timestamps` and the target gives
//!   one;
//! - every scrape adds `up`, `scrape_duration_seconds`, `scrape_samples_scraped`,
//!   `scrape_samples_post_metric_relabeling` and `scrape_series_added`, labelled with the
//!   target labels only (never metric-relabeled or filtered);
//! - a series seen in the previous scrape but not in this one gets a staleness marker,
//!   a failed scrape marks every previous series stale, and so does stopping the loop;
//! - limits (`sample_limit`, label limits) fail the whole scrape, as do a non-200
//!   status, a timeout, a body over the size limit, or a malformed exposition; the
//!   reason is kept for health reports and `up` becomes 0.

use std::collections::{HashMap, HashSet};
use std::hash::{Hash, Hasher};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use kaas_pipeline::processors::ValidatedProcessors;
use kaas_proto::remote_write::v1::{self, MetricMetadata};
use tokio::sync::watch;
use url::Url;

use super::exposition::{self, ACCEPT_HEADER, Format, MetricType, ParseError};
use super::target::{METRICS_PATH, SCHEME, public_labels};
use crate::batch::Batch;
use crate::exporters::USER_AGENT;
use crate::labels::{ADDRESS, Labels, LabelsBuilder, METRIC_NAME};
use crate::pipeline::inlet::Inlet;
use crate::processing::process_sample;

/// The NaN Prometheus uses as a staleness marker.
pub const STALE_NAN_BITS: u64 = 0x7ff0_0000_0000_0002;
/// Largest body read from a target. Prometheus has no limit by default; 64 MiB is well
/// above any sane exposition (millions of series) and stops a runaway target from
/// exhausting the agent's memory.
pub const DEFAULT_BODY_SIZE_LIMIT: u64 = 64 << 20;

/// How one target is scraped.
#[derive(Clone, Debug)]
pub struct ScrapeConfig {
    /// Interval.
    pub interval: Duration,
    /// Timeout.
    pub timeout: Duration,
    /// Prometheus `honor_labels`.
    pub honor_labels: bool,
    /// Prometheus `honor_timestamps`.
    pub honor_timestamps: bool,
    /// Largest body accepted.
    pub body_size_limit: u64,
    /// 0 means no limit, as the limits below.
    pub sample_limit: u32,
    /// Most labels per series.
    pub label_limit: u32,
    /// Longest label name.
    pub label_name_length_limit: u32,
    /// Longest label value.
    pub label_value_length_limit: u32,
}

/// A target ready to scrape.
#[derive(Clone, Debug)]
pub struct Target {
    /// All labels, internal ones included.
    pub labels: Labels,
    /// The labels its series carry.
    pub public: Labels,
    /// What to fetch.
    pub url: Url,
}

impl Target {
    /// Builds the URL from `__scheme__`, `__address__`, `__metrics_path__` and
    /// `__param_*`.
    pub fn new(labels: Labels) -> Result<Self, String> {
        let mut url = Url::parse(&format!(
            "{}://{}{}",
            labels.get(SCHEME),
            labels.get(ADDRESS),
            labels.get(METRICS_PATH)
        ))
        .map_err(|e| format!("cannot build the scrape URL: {e}"))?;
        for label in labels.iter() {
            if let Some(param) = label.name.strip_prefix("__param_") {
                url.query_pairs_mut().append_pair(param, &label.value);
            }
        }
        Ok(Self {
            public: public_labels(&labels),
            labels,
            url,
        })
    }
}

/// What the last scrape of a target found, for health reports.
#[derive(Clone, Debug, Default)]
pub struct TargetHealth {
    /// Whether the last scrape succeeded.
    pub up: bool,
    /// Why it failed.
    pub last_error: Option<String>,
    /// When it ran.
    pub last_scrape: Option<SystemTime>,
    /// Failed scrapes so far.
    pub scrape_errors: u64,
}

/// Why a scrape failed.
#[derive(Debug, thiserror::Error)]
pub enum ScrapeError {
    /// The request failed (connection, timeout).
    #[error("request failed: {0}")]
    Request(String),
    /// Not 200.
    #[error("server returned HTTP status {0}")]
    Status(u16),
    /// Too large.
    #[error("body size limit of {0} bytes exceeded")]
    BodyTooLarge(u64),
    /// Unparsable.
    #[error("{0}")]
    Parse(#[from] ParseError),
    /// A series appears twice.
    #[error("duplicate series {0:?} in one scrape")]
    Duplicate(String),
    /// Too many samples.
    #[error("sample_limit exceeded: {0} samples, limit {1}")]
    SampleLimit(usize, u32),
    /// A label limit.
    #[error("{0}")]
    LabelLimit(String),
}

/// One target's loop.
pub struct Scraper {
    /// The target.
    pub target: Target,
    /// Settings.
    pub config: ScrapeConfig,
    /// HTTP client (shared by the pipeline's targets).
    pub client: reqwest::Client,
    /// The pipeline's processors.
    pub processors: Arc<ValidatedProcessors>,
    /// Agent-wide labels added to series that lack them.
    pub external_labels: Arc<Labels>,
    /// Where samples go.
    pub inlet: Inlet,
    /// Health, shared with reporters.
    pub health: Arc<Mutex<TargetHealth>>,
    previous: HashSet<Labels>,
}

/// One processed scrape.
struct Scraped {
    series: Vec<(Labels, i64, f64)>,
    metadata: HashMap<String, MetricType>,
    scraped: usize,
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

impl Scraper {
    /// A loop for `target`.
    pub fn new(
        target: Target,
        config: ScrapeConfig,
        client: reqwest::Client,
        processors: Arc<ValidatedProcessors>,
        external_labels: Arc<Labels>,
        inlet: Inlet,
    ) -> Self {
        Self {
            target,
            config,
            client,
            processors,
            external_labels,
            inlet,
            health: Arc::new(Mutex::new(TargetHealth::default())),
            previous: HashSet::new(),
        }
    }

    /// The offset within the interval at which this target is scraped, derived from its
    /// labels so restarts keep the spread.
    pub fn offset(&self) -> Duration {
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        self.target.labels.hash(&mut hasher);
        let interval_ms = self.config.interval.as_millis().max(1) as u64;
        Duration::from_millis(hasher.finish() % interval_ms)
    }

    /// Scrapes every interval until `stop` turns true; then marks its series stale.
    pub async fn run(mut self, mut stop: watch::Receiver<bool>) {
        let start = tokio::time::Instant::now() + self.offset();
        let mut ticks = tokio::time::interval_at(start, self.config.interval);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        loop {
            tokio::select! {
                _ = ticks.tick() => self.scrape_once().await,
                _ = stop.changed() => break,
            }
            if *stop.borrow() {
                break;
            }
        }
        self.mark_all_stale(now_ms());
    }

    /// One scrape: fetch, process, buffer.
    pub async fn scrape_once(&mut self) {
        let timestamp = now_ms();
        let started = Instant::now();
        let fetched = self.fetch().await;
        self.ingest(fetched, timestamp, started.elapsed());
    }

    /// Processes what a fetch returned (a body and its content type, or the failure)
    /// and buffers the samples, staleness markers and report series.
    pub fn ingest(
        &mut self,
        fetched: Result<(Vec<u8>, Option<String>), ScrapeError>,
        timestamp: i64,
        duration: Duration,
    ) {
        let result = match fetched {
            Ok((body, content_type)) => self.process(&body, content_type.as_deref(), timestamp),
            Err(error) => Err(error),
        };
        let duration = duration.as_secs_f64();
        let mut series: Vec<(Labels, i64, f64)> = Vec::new();
        let mut metadata = HashMap::new();
        let (up, scraped, post_relabel, added) = match result {
            Ok(scraped) => {
                let current: HashSet<Labels> = scraped.series.iter().map(|s| s.0.clone()).collect();
                let added = current.difference(&self.previous).count();
                for stale in self.previous.difference(&current) {
                    series.push((stale.clone(), timestamp, f64::from_bits(STALE_NAN_BITS)));
                }
                let post = scraped.series.len();
                let total = scraped.scraped;
                series.extend(scraped.series);
                metadata = scraped.metadata;
                self.previous = current;
                self.record_health(None);
                (1.0, total, post, added)
            }
            Err(error) => {
                for stale in std::mem::take(&mut self.previous) {
                    series.push((stale, timestamp, f64::from_bits(STALE_NAN_BITS)));
                }
                self.record_health(Some(error.to_string()));
                (0.0, 0, 0, 0)
            }
        };
        for (name, value) in [
            ("up", up),
            ("scrape_duration_seconds", duration),
            ("scrape_samples_scraped", scraped as f64),
            ("scrape_samples_post_metric_relabeling", post_relabel as f64),
            ("scrape_series_added", added as f64),
        ] {
            series.push((self.report_labels(name), timestamp, value));
        }
        self.push(series, &metadata, timestamp);
    }

    fn record_health(&self, error: Option<String>) {
        let mut health = self.health.lock().unwrap_or_else(|e| e.into_inner());
        health.up = error.is_none();
        health.last_scrape = Some(SystemTime::now());
        if error.is_some() {
            health.scrape_errors += 1;
        }
        health.last_error = error;
    }

    fn mark_all_stale(&mut self, timestamp: i64) {
        let stale = f64::from_bits(STALE_NAN_BITS);
        let mut series: Vec<(Labels, i64, f64)> = std::mem::take(&mut self.previous)
            .into_iter()
            .map(|labels| (labels, timestamp, stale))
            .collect();
        for name in [
            "up",
            "scrape_duration_seconds",
            "scrape_samples_scraped",
            "scrape_samples_post_metric_relabeling",
            "scrape_series_added",
        ] {
            series.push((self.report_labels(name), timestamp, stale));
        }
        self.push(series, &HashMap::new(), timestamp);
    }

    fn push(
        &self,
        series: Vec<(Labels, i64, f64)>,
        metadata: &HashMap<String, MetricType>,
        now: i64,
    ) {
        let metadata = metadata
            .iter()
            .map(|(family, kind)| MetricMetadata {
                r#type: metric_type(*kind) as i32,
                metric_family_name: family.clone(),
                help: String::new(),
                unit: String::new(),
            })
            .collect();
        let batch = Batch::from_samples(series, metadata, &self.external_labels);
        if let Err(error) = self.inlet.push(&batch, now) {
            self.inlet.stats.error("BufferError", error.to_string());
        }
    }

    /// `{__name__=name}` plus the target labels, as Prometheus labels report series.
    fn report_labels(&self, name: &str) -> Labels {
        let base = Labels::from_pairs([(METRIC_NAME, name)]);
        let mut builder = LabelsBuilder::new(&base);
        for label in self.target.public.iter() {
            builder.set(&format!("exported_{}", label.name), base.get(&label.name));
            builder.set(&label.name, &label.value);
        }
        builder.labels()
    }

    async fn fetch(&self) -> Result<(Vec<u8>, Option<String>), ScrapeError> {
        let request = self
            .client
            .get(self.target.url.clone())
            .timeout(self.config.timeout)
            .header(reqwest::header::ACCEPT, ACCEPT_HEADER)
            .header(reqwest::header::USER_AGENT, USER_AGENT)
            .header(
                "X-Prometheus-Scrape-Timeout-Seconds",
                format!("{}", self.config.timeout.as_secs_f64()),
            );
        let mut response = request
            .send()
            .await
            .map_err(|e| ScrapeError::Request(crate::exporters::auth::without_url(&e)))?;
        if response.status().as_u16() != 200 {
            return Err(ScrapeError::Status(response.status().as_u16()));
        }
        let content_type = response
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let mut body = Vec::new();
        while let Some(chunk) = response
            .chunk()
            .await
            .map_err(|e| ScrapeError::Request(crate::exporters::auth::without_url(&e)))?
        {
            if (body.len() + chunk.len()) as u64 > self.config.body_size_limit {
                return Err(ScrapeError::BodyTooLarge(self.config.body_size_limit));
            }
            body.extend_from_slice(&chunk);
        }
        Ok((body, content_type))
    }

    /// Parses and labels a body; applies the pipeline's processors and the limits.
    fn process(
        &self,
        body: &[u8],
        content_type: Option<&str>,
        timestamp: i64,
    ) -> Result<Scraped, ScrapeError> {
        let format = Format::from_content_type(content_type);
        let mut seen_raw: HashSet<&str> = HashSet::new();
        let mut duplicate = None;
        let mut series = Vec::new();
        let mut seen_final: HashSet<Labels> = HashSet::new();
        let mut metadata = HashMap::new();
        let mut label_error = None;
        let scraped = exposition::parse(body, format, |sample| {
            if duplicate.is_some() || label_error.is_some() {
                return;
            }
            // The series key borrows from `body`, which outlives this closure.
            if !seen_raw.insert(sample.series) {
                duplicate = Some(sample.series.to_owned());
                return;
            }
            if sample.metric_type != MetricType::Unknown {
                let family = family_name(sample.name, sample.metric_type);
                metadata
                    .entry(family.to_owned())
                    .or_insert(sample.metric_type);
            }
            let exposed = Labels::from_pairs(
                std::iter::once((METRIC_NAME, sample.name.to_owned()))
                    .chain(sample.labels.iter().map(|(n, v)| (*n, v.to_string()))),
            );
            let merged = self.merge_target_labels(&exposed);
            let Some(labels) = process_sample(&merged, &self.processors) else {
                return;
            };
            if let Err(reason) = self.check_label_limits(&labels) {
                label_error = Some(reason);
                return;
            }
            // Duplicates after relabeling are dropped, as Prometheus drops them.
            if !seen_final.insert(labels.clone()) {
                return;
            }
            let ts = match sample.timestamp_ms {
                Some(ts) if self.config.honor_timestamps => ts,
                _ => timestamp,
            };
            series.push((labels, ts, sample.value));
        })?;
        if let Some(series) = duplicate {
            return Err(ScrapeError::Duplicate(series));
        }
        if let Some(reason) = label_error {
            return Err(ScrapeError::LabelLimit(reason));
        }
        let limit = self.config.sample_limit;
        if limit > 0 && series.len() > limit as usize {
            return Err(ScrapeError::SampleLimit(series.len(), limit));
        }
        Ok(Scraped {
            series,
            metadata,
            scraped,
        })
    }

    /// Prometheus' `mutateSampleLabels` without the relabeling step.
    fn merge_target_labels(&self, exposed: &Labels) -> Labels {
        let mut builder = LabelsBuilder::new(exposed);
        if self.config.honor_labels {
            for label in self.target.public.iter() {
                if exposed.get(&label.name).is_empty() {
                    builder.set(&label.name, &label.value);
                }
            }
            return builder.labels();
        }
        let mut conflicts = Vec::new();
        for label in self.target.public.iter() {
            let existing = exposed.get(&label.name);
            if !existing.is_empty() {
                conflicts.push((label.name.clone(), existing.to_owned()));
            }
            builder.set(&label.name, &label.value);
        }
        conflicts.sort_by_key(|(name, _)| name.len());
        for (name, value) in conflicts {
            let mut new_name = name;
            loop {
                new_name = format!("exported_{new_name}");
                if builder.get(&new_name).is_empty() {
                    builder.set(&new_name, &value);
                    break;
                }
            }
        }
        builder.labels()
    }

    fn check_label_limits(&self, labels: &Labels) -> Result<(), String> {
        let name = labels.get(METRIC_NAME);
        let config = &self.config;
        if config.label_limit > 0 && labels.len() > config.label_limit as usize {
            return Err(format!(
                "label_limit exceeded (metric: {name:.50}, number of labels: {}, limit: {})",
                labels.len(),
                config.label_limit
            ));
        }
        for label in labels.iter() {
            if config.label_name_length_limit > 0
                && label.name.len() > config.label_name_length_limit as usize
            {
                return Err(format!(
                    "label_name_length_limit exceeded (metric: {name:.50}, label name: {:.50}, length: {}, limit: {})",
                    label.name,
                    label.name.len(),
                    config.label_name_length_limit
                ));
            }
            if config.label_value_length_limit > 0
                && label.value.len() > config.label_value_length_limit as usize
            {
                return Err(format!(
                    "label_value_length_limit exceeded (metric: {name:.50}, label name: {:.50}, value: {:.50}, length: {}, limit: {})",
                    label.name,
                    label.value,
                    label.value.len(),
                    config.label_value_length_limit
                ));
            }
        }
        Ok(())
    }
}

/// The family a sample belongs to: its name without the type's suffix.
fn family_name(name: &str, kind: MetricType) -> &str {
    let suffixes: &[&str] = match kind {
        MetricType::Counter => &["_total", "_created"],
        MetricType::Histogram => &["_bucket", "_sum", "_count", "_created"],
        MetricType::GaugeHistogram => &["_bucket", "_gsum", "_gcount"],
        MetricType::Summary => &["_sum", "_count", "_created"],
        MetricType::Info => &["_info"],
        _ => &[],
    };
    suffixes
        .iter()
        .find_map(|s| name.strip_suffix(s))
        .unwrap_or(name)
}

fn metric_type(kind: MetricType) -> v1::MetricType {
    match kind {
        MetricType::Counter => v1::MetricType::Counter,
        MetricType::Gauge => v1::MetricType::Gauge,
        MetricType::Histogram => v1::MetricType::Histogram,
        MetricType::GaugeHistogram => v1::MetricType::Gaugehistogram,
        MetricType::Summary => v1::MetricType::Summary,
        MetricType::Info => v1::MetricType::Info,
        MetricType::StateSet => v1::MetricType::Stateset,
        MetricType::Unknown => v1::MetricType::Unknown,
    }
}

#[cfg(test)]
mod tests;
