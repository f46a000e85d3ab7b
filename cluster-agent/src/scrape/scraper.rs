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
//!
//! # The series cache
//!
//! Like Prometheus' scrape cache, each loop remembers every series its target exposed,
//! keyed by the series text as written (`name{labels}`). The first time a series is
//! seen, its labels are merged with the target's, relabeled, filtered, checked against
//! the label limits, given the external labels and encoded for remote-write, once;
//! every later scrape costs one hash lookup and appends the value to an encoded
//! request. Each entry records the last scrape that contained it, which is all the
//! staleness tracking needs, and entries gone for two scrapes are evicted. A changed
//! configuration restarts the loop with an empty cache.

use std::collections::{HashMap, HashSet};
use std::hash::{BuildHasher, Hash, Hasher};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use kaas_pipeline::processors::ValidatedProcessors;
use kaas_proto::remote_write::v1::{self, MetricMetadata};
use tokio::sync::watch;
use url::Url;

use super::exposition::{self, ACCEPT_HEADER, Format, MetricType, ParseError};
use super::target::{METRICS_PATH, SCHEME, public_labels};
use crate::batch::wire::{self, RequestWriter};
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
    /// A file holding a bearer token, read for every scrape so rotated (projected)
    /// service-account tokens are picked up.
    pub bearer_token_file: Option<std::path::PathBuf>,
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
    cache: SeriesCache,
    /// Encoded labels of the five report series.
    report: Vec<Box<[u8]>>,
    /// Counts scrapes; the cache's notion of time.
    generation: u64,
    /// Bytes of the last request, to size the next one. (Buffers are not kept between
    /// scrapes: with one loop per target that would hold a body and a request per
    /// target for good, which measured as more memory for no CPU gained.)
    last_request_bytes: usize,
}

/// A copy of a scrape error (the owned-body `ingest` borrows its input).
fn clone_error(error: &ScrapeError) -> ScrapeError {
    match error {
        ScrapeError::Status(status) => ScrapeError::Status(*status),
        ScrapeError::BodyTooLarge(limit) => ScrapeError::BodyTooLarge(*limit),
        other => ScrapeError::Request(other.to_string()),
    }
}

/// The names of the report series, in the order they are written.
const REPORT_SERIES: [&str; 5] = [
    "up",
    "scrape_duration_seconds",
    "scrape_samples_scraped",
    "scrape_samples_post_metric_relabeling",
    "scrape_series_added",
];

/// One series a target exposed (its text is the key in the cache's index).
struct CachedSeries {
    /// The final labels, encoded; `None` when the pipeline drops the series.
    encoded: Option<Box<[u8]>>,
    /// Hash of `encoded`, to drop series that relabeling made identical.
    hash: u64,
    /// The label limit the series breaks, if any.
    limit_error: Option<Box<str>>,
    /// The last generation whose (successful) scrape contained it.
    last_success: u64,
    /// The generation of the scrape reading it now; a second read is a duplicate.
    pending: u64,
}

/// The series cache (see the module documentation).
struct SeriesCache {
    index: HashMap<Box<str>, usize, foldhash::fast::FixedState>,
    entries: Vec<Option<CachedSeries>>,
    free: Vec<usize>,
    /// Entries read by the current scrape.
    current: Vec<usize>,
    /// Hashes of the encoded series written by the current scrape.
    written: HashSet<u64, foldhash::fast::FixedState>,
    families: HashMap<String, MetricType>,
    /// `families` encoded as metadata frames; rebuilt when a family appears.
    metadata: Vec<Vec<u8>>,
    families_changed: bool,
}

impl Default for SeriesCache {
    fn default() -> Self {
        Self {
            index: HashMap::with_hasher(foldhash::fast::FixedState::with_seed(0)),
            entries: Vec::new(),
            free: Vec::new(),
            current: Vec::new(),
            written: HashSet::with_hasher(foldhash::fast::FixedState::with_seed(0)),
            families: HashMap::new(),
            metadata: Vec::new(),
            families_changed: false,
        }
    }
}

impl SeriesCache {
    fn insert(&mut self, key: &str, entry: CachedSeries) -> usize {
        let index = match self.free.pop() {
            Some(index) => {
                self.entries[index] = Some(entry);
                index
            }
            None => {
                self.entries.push(Some(entry));
                self.entries.len() - 1
            }
        };
        self.index.insert(key.into(), index);
        index
    }

    /// Removes entries no successful scrape has contained for two generations.
    fn evict(&mut self, generation: u64) {
        if self.entries.len() < 2 * self.current.len() + 64 {
            return;
        }
        let (entries, free) = (&mut self.entries, &mut self.free);
        self.index.retain(|_, index| {
            let stale = entries[*index]
                .as_ref()
                .is_some_and(|e| e.last_success + 1 < generation && e.pending < generation);
            if stale {
                entries[*index] = None;
                free.push(*index);
            }
            !stale
        });
    }

    fn metadata_frames(&mut self) -> &[Vec<u8>] {
        use prost::Message;
        if self.families_changed {
            self.metadata = self
                .families
                .iter()
                .map(|(family, kind)| {
                    MetricMetadata {
                        r#type: metric_type(*kind) as i32,
                        metric_family_name: family.clone(),
                        help: String::new(),
                        unit: String::new(),
                    }
                    .encode_to_vec()
                })
                .collect();
            self.families_changed = false;
        }
        &self.metadata
    }
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
        let report = REPORT_SERIES
            .iter()
            .map(|name| {
                let labels = with_external(report_labels(&target, name), &external_labels);
                wire::encode_labels(&labels).into_boxed_slice()
            })
            .collect();
        Self {
            target,
            config,
            client,
            processors,
            external_labels,
            inlet,
            health: Arc::new(Mutex::new(TargetHealth::default())),
            cache: SeriesCache::default(),
            report,
            // Entries start with `last_success` 0, meaning never; the first scrape is
            // generation 2, so 0 is never mistaken for "the previous scrape".
            generation: 1,
            last_request_bytes: 4096,
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

    /// The buffer stream of this target's records: a hash of its labels, so a
    /// restarted loop of the same target continues the same stream.
    fn stream(&self) -> u64 {
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        self.target.labels.hash(&mut hasher);
        hasher.finish()
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
        let mut body = Vec::new();
        let fetched = self.fetch(&mut body).await;
        let elapsed = started.elapsed();
        self.ingest_slice(
            fetched.map(|content_type| (&body[..], content_type)),
            timestamp,
            elapsed,
        );
    }

    /// Processes what a fetch returned (a body and its content type, or the failure)
    /// and buffers the samples, staleness markers and report series.
    pub fn ingest(
        &mut self,
        fetched: Result<(Vec<u8>, Option<String>), ScrapeError>,
        timestamp: i64,
        duration: Duration,
    ) {
        let fetched = fetched
            .as_ref()
            .map(|(body, content_type)| (&body[..], content_type.clone()))
            .map_err(clone_error);
        self.ingest_slice(fetched, timestamp, duration);
    }

    fn ingest_slice(
        &mut self,
        fetched: Result<(&[u8], Option<String>), ScrapeError>,
        timestamp: i64,
        duration: Duration,
    ) {
        self.generation += 1;
        let generation = self.generation;
        let mut writer = RequestWriter::with_capacity(self.last_request_bytes);
        let result = match fetched {
            Ok((body, content_type)) => self.read_body(
                body,
                content_type.as_deref(),
                timestamp,
                generation,
                &mut writer,
            ),
            Err(error) => Err(error),
        };
        let stale = f64::from_bits(STALE_NAN_BITS);
        let (up, scraped, post_relabel, added) = match result {
            Ok((scraped, post)) => {
                let mut added = 0;
                for &index in &self.cache.current {
                    if let Some(entry) = self.cache.entries[index].as_mut() {
                        if entry.last_success + 1 != generation {
                            added += usize::from(entry.encoded.is_some());
                        }
                        entry.last_success = generation;
                    }
                }
                self.record_health(None);
                (1.0, scraped, post, added)
            }
            Err(error) => {
                // Nothing of a failed scrape is kept.
                writer = RequestWriter::from_buffer(writer.into_bytes());
                self.record_health(Some(error.to_string()));
                (0.0, 0, 0, 0)
            }
        };
        // Series the previous successful scrape had and this one has not.
        for entry in self.cache.entries.iter().flatten() {
            if entry.last_success + 1 == generation
                && let Some(encoded) = &entry.encoded
            {
                writer.sample(encoded, timestamp, stale);
            }
        }
        let values = [
            up,
            duration.as_secs_f64(),
            scraped as f64,
            post_relabel as f64,
            added as f64,
        ];
        for (labels, value) in self.report.iter().zip(values) {
            writer.sample(labels, timestamp, value);
        }
        for frame in self.cache.metadata_frames() {
            writer.metadata_frame(frame);
        }
        self.cache.evict(generation);
        self.push(writer, timestamp);
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

    /// Marks every series of the last successful scrape, and the report series, stale.
    pub fn mark_all_stale(&mut self, timestamp: i64) {
        let stale = f64::from_bits(STALE_NAN_BITS);
        let mut writer = RequestWriter::default();
        for entry in self.cache.entries.iter().flatten() {
            if entry.last_success == self.generation
                && let Some(encoded) = &entry.encoded
            {
                writer.sample(encoded, timestamp, stale);
            }
        }
        for labels in &self.report {
            writer.sample(labels, timestamp, stale);
        }
        self.cache = SeriesCache::default();
        self.push(writer, timestamp);
    }

    fn push(&mut self, writer: RequestWriter, now: i64) {
        let samples = writer.samples();
        let oldest = writer.oldest_ms().unwrap_or(now);
        let body = writer.into_bytes();
        self.last_request_bytes = body.len() + body.len() / 8;
        // Every series of this request is the target's own, so it is one stream.
        let stream = Some(self.stream());
        if let Err(error) = self.inlet.push_encoded(&body, samples, oldest, stream) {
            self.inlet.stats.error("BufferError", error.to_string());
        }
    }

    /// Fetches the target into `body`; returns the content type.
    async fn fetch(&self, body: &mut Vec<u8>) -> Result<Option<String>, ScrapeError> {
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
        let request = match &self.config.bearer_token_file {
            Some(path) => {
                let token = std::fs::read_to_string(path).map_err(|e| {
                    ScrapeError::Request(format!(
                        "cannot read the bearer token file {}: {}",
                        path.display(),
                        e.kind()
                    ))
                })?;
                let mut value =
                    reqwest::header::HeaderValue::from_str(&format!("Bearer {}", token.trim()))
                        .map_err(|_| {
                            ScrapeError::Request(
                                "the bearer token file holds an invalid token".into(),
                            )
                        })?;
                value.set_sensitive(true);
                request.header(reqwest::header::AUTHORIZATION, value)
            }
            None => request,
        };
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
        if let Some(length) = response.content_length() {
            body.reserve((length as usize).min(self.config.body_size_limit as usize));
        }
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
        Ok(content_type)
    }

    /// Reads a body through the series cache into `writer`; returns the samples
    /// scraped and written.
    fn read_body(
        &mut self,
        body: &[u8],
        content_type: Option<&str>,
        timestamp: i64,
        generation: u64,
        writer: &mut RequestWriter,
    ) -> Result<(usize, usize), ScrapeError> {
        let format = Format::from_content_type(content_type);
        let cache = &mut self.cache;
        cache.current.clear();
        cache.written.clear();
        let (target, config) = (&self.target, &self.config);
        let (processors, external) = (&self.processors, &self.external_labels);
        let hasher = foldhash::fast::FixedState::with_seed(0);
        let mut error = None;
        let mut written = 0;
        let scraped = exposition::parse(body, format, |sample| {
            if error.is_some() {
                return Ok(());
            }
            let index = match cache.index.get(sample.series) {
                Some(index) => *index,
                None => {
                    if sample.metric_type != MetricType::Unknown {
                        let family = family_name(sample.name, sample.metric_type);
                        if !cache.families.contains_key(family) {
                            cache.families.insert(family.to_owned(), sample.metric_type);
                            cache.families_changed = true;
                        }
                    }
                    let labels = sample.labels()?;
                    let entry = new_entry(
                        &sample, &labels, target, config, processors, external, &hasher,
                    );
                    cache.insert(sample.series, entry)
                }
            };
            let Some(entry) = cache.entries[index].as_mut() else {
                return Ok(());
            };
            if entry.pending == generation {
                error = Some(ScrapeError::Duplicate(sample.series.to_owned()));
                return Ok(());
            }
            entry.pending = generation;
            cache.current.push(index);
            if let Some(limit) = &entry.limit_error {
                error = Some(ScrapeError::LabelLimit(limit.to_string()));
                return Ok(());
            }
            let Some(encoded) = &entry.encoded else {
                return Ok(());
            };
            // Series that relabeling made identical: the first one wins, as in Prometheus.
            if !cache.written.insert(entry.hash) {
                return Ok(());
            }
            let ts = match sample.timestamp_ms {
                Some(ts) if config.honor_timestamps => ts,
                _ => timestamp,
            };
            writer.sample(encoded, ts, sample.value);
            written += 1;
            Ok(())
        })?;
        if let Some(error) = error {
            return Err(error);
        }
        let limit = config.sample_limit;
        if limit > 0 && written > limit as usize {
            return Err(ScrapeError::SampleLimit(written, limit));
        }
        Ok((scraped, written))
    }
}

/// Builds the cache entry of a series seen for the first time.
fn new_entry(
    sample: &exposition::Sample<'_>,
    labels: &[(&str, std::borrow::Cow<'_, str>)],
    target: &Target,
    config: &ScrapeConfig,
    processors: &ValidatedProcessors,
    external: &Labels,
    hasher: &foldhash::fast::FixedState,
) -> CachedSeries {
    let exposed = Labels::from_pairs(
        std::iter::once((METRIC_NAME, sample.name.to_owned()))
            .chain(labels.iter().map(|(n, v)| (*n, v.to_string()))),
    );
    let merged = merge_target_labels(&exposed, target, config.honor_labels);
    let mut entry = CachedSeries {
        encoded: None,
        hash: 0,
        limit_error: None,
        last_success: 0,
        pending: 0,
    };
    let Some(labels) = process_sample(&merged, processors) else {
        return entry;
    };
    if let Err(reason) = check_label_limits(&labels, config) {
        entry.limit_error = Some(reason.into());
        return entry;
    }
    let encoded = wire::encode_labels(&with_external(labels, external));
    entry.hash = hasher.hash_one(&encoded);
    entry.encoded = Some(encoded.into_boxed_slice());
    entry
}

/// Adds external labels a series lacks.
fn with_external(labels: Labels, external: &Labels) -> Labels {
    if external.is_empty() {
        return labels;
    }
    let mut builder = LabelsBuilder::new(&labels);
    for label in external.iter() {
        if labels.get(&label.name).is_empty() {
            builder.set(&label.name, &label.value);
        }
    }
    builder.labels()
}

/// `{__name__=name}` plus the target labels, as Prometheus labels report series.
fn report_labels(target: &Target, name: &str) -> Labels {
    let base = Labels::from_pairs([(METRIC_NAME, name)]);
    let mut builder = LabelsBuilder::new(&base);
    for label in target.public.iter() {
        builder.set(&format!("exported_{}", label.name), base.get(&label.name));
        builder.set(&label.name, &label.value);
    }
    builder.labels()
}

/// Prometheus' `mutateSampleLabels` without the relabeling step.
fn merge_target_labels(exposed: &Labels, target: &Target, honor_labels: bool) -> Labels {
    {
        let mut builder = LabelsBuilder::new(exposed);
        if honor_labels {
            for label in target.public.iter() {
                if exposed.get(&label.name).is_empty() {
                    builder.set(&label.name, &label.value);
                }
            }
            return builder.labels();
        }
        let mut conflicts = Vec::new();
        for label in target.public.iter() {
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
}

fn check_label_limits(labels: &Labels, config: &ScrapeConfig) -> Result<(), String> {
    {
        let name = labels.get(METRIC_NAME);
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
