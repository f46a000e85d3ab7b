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
//! by the series text as written (`name{labels}`). The first time a series is seen,
//! its labels are merged with the target's, relabeled, filtered, checked against the
//! label limits, given the external labels and encoded for remote-write, once; every
//! later scrape costs one hash lookup and appends the value to an encoded request.
//! Each entry records the last scrape that contained it, which is all the staleness
//! tracking needs, and entries gone for two scrapes are evicted. A changed
//! configuration restarts the loop with an empty cache.
//!
//! The cache is most of the agent's memory, so an entry is small:
//! - the text is not kept. The entry holds two independent 64-bit hashes of it (keyed
//!   with random seeds per cache), and the index, a hash table of 4-byte entry numbers,
//!   finds it by the first and compares both. Texts whose first hashes collide simply
//!   share a probe sequence; two texts are only confused if both hashes collide, about
//!   2^-64 per pair of a target's series with seeds an exposition cannot know;
//! - the labels are stored as a template over a per-target dictionary of label fields
//!   ([`wire::SharedLabels`]: the target's own and the external labels, then the first
//!   distinct labels its series bring, up to 255), each encoded once per target, so a
//!   label found there costs two bytes in a series' template; the templates of a target's series lie back to
//!   back in one buffer (compacted when evicted series make up half of it), so an entry
//!   is 32 bytes plus its template, with no allocation of its own.

use std::cell::RefCell;
use std::collections::{HashMap, HashSet};
use std::hash::{BuildHasher, Hash, Hasher};
use std::num::{NonZeroU32, NonZeroU64};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use kaas_pipeline::processors::ValidatedProcessors;
use kaas_proto::remote_write::v1::{self, MetricMetadata};
use kaas_series::clock::now_ms;
use tokio::sync::watch;
use url::Url;

use super::client::ScrapeClient;
use super::exposition::{self, ACCEPT_HEADER, Format, MetricType, ParseError};
use super::limits::{
    DEFAULT_BODY_SIZE_LIMIT, DEFAULT_LABEL_LIMIT, DEFAULT_LABEL_NAME_LENGTH_LIMIT,
    DEFAULT_LABEL_VALUE_LENGTH_LIMIT, DEFAULT_SAMPLE_LIMIT,
};
use super::target::{METRICS_PATH, SCHEME, public_labels};
use crate::batch::wire::{self, RequestWriter, SharedLabels};
use crate::exporters::USER_AGENT;
use crate::labels::{ADDRESS, Labels, LabelsBuilder, METRIC_NAME};
use crate::pipeline::inlet::Inlet;
use crate::processing::process_sample;

/// The NaN Prometheus uses as a staleness marker.
pub use kaas_series::STALE_NAN_BITS;

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
    pub body_size_limit: NonZeroU64,
    /// Most samples written per scrape, after metric relabeling.
    pub sample_limit: NonZeroU32,
    /// Most labels per series.
    pub label_limit: NonZeroU32,
    /// The agent's own credentials, bound to the target discovery produced.
    pub credentials: Option<super::credentials::ScrapeCredentials>,
    /// Longest label name.
    pub label_name_length_limit: NonZeroU32,
    /// Longest label value.
    pub label_value_length_limit: NonZeroU32,
}

impl ScrapeConfig {
    /// Prometheus' defaults for a scrape every `interval` within `timeout`:
    /// `honor_timestamps` on, `honor_labels` off, no bearer token; and the agent's
    /// default limits (body size, samples, labels), which Prometheus leaves unlimited.
    pub fn new(interval: Duration, timeout: Duration) -> Self {
        Self {
            interval,
            timeout,
            honor_labels: false,
            honor_timestamps: true,
            body_size_limit: DEFAULT_BODY_SIZE_LIMIT,
            sample_limit: DEFAULT_SAMPLE_LIMIT,
            label_limit: DEFAULT_LABEL_LIMIT,
            credentials: None,
            label_name_length_limit: DEFAULT_LABEL_NAME_LENGTH_LIMIT,
            label_value_length_limit: DEFAULT_LABEL_VALUE_LENGTH_LIMIT,
        }
    }
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
    /// Too many samples (the scrape stops writing at the first one over the limit).
    #[error("sample_limit exceeded: more than {0} samples after metric relabeling")]
    SampleLimit(u32),
    /// A label limit.
    #[error("{0}")]
    LabelLimit(String),
    /// The target is not where the agent's credentials are bound to.
    #[error("{0}")]
    CredentialsWithheld(String),
    /// The target's TLS certificate is not trusted.
    #[error("the server's certificate is not trusted: {0}")]
    UntrustedCertificate(String),
}

/// One target's loop.
pub struct Scraper {
    /// The target.
    pub target: Target,
    /// Settings.
    pub config: ScrapeConfig,
    /// HTTP client (shared by the pipeline's targets).
    pub client: ScrapeClient,
    /// The pipeline's processors.
    pub processors: Arc<ValidatedProcessors>,
    /// Agent-wide labels added to series that lack them.
    pub external_labels: Arc<Labels>,
    /// Where samples go.
    pub inlet: Inlet,
    /// Health, shared with reporters.
    pub health: Arc<Mutex<TargetHealth>>,
    cache: SeriesCache,
    /// The dictionary the cache's label templates refer to: the target's and the
    /// external labels, then the first distinct labels its series bring.
    shared: SharedLabels,
    /// Encoded labels of the five report series.
    report: Vec<Box<[u8]>>,
    /// Counts scrapes; the cache's notion of time.
    generation: u32,
    /// Bytes of the last request, to size the next one. (The request buffer itself is
    /// kept per thread, not per target: one per target would hold a request per target
    /// for good.)
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

/// One series a target exposed (see "The series cache" in the module documentation).
struct CachedSeries {
    /// The first hash of the series text, by which the index finds the entry.
    key: u64,
    /// The second hash of the series text, compared on every lookup.
    fingerprint: u64,
    /// Hash of the final labels, to drop series that relabeling made identical;
    /// [`LIMIT_ERROR`] when `template` is `None` because of a label limit.
    labels_hash: u64,
    /// The final labels, at `template_start` in [`SeriesCache::templates`]:
    /// `encode_template` output after the varint length of the labels it expands to.
    /// `template_len` is 0 when the pipeline drops the series or it breaks a limit.
    template_start: u32,
    /// See `template_start`.
    template_len: u32,
    /// The last generation whose (successful) scrape contained it.
    last_success: u32,
    /// The generation of the scrape reading it now; a second read is a duplicate.
    /// [`VACANT`] for a slot whose series was evicted.
    pending: u32,
}

/// `pending` of an evicted entry's slot (kept for reuse, see [`SeriesCache::free`]).
const VACANT: u32 = u32::MAX;

impl CachedSeries {
    /// Whether the series is written (neither dropped by the pipeline nor over a limit).
    fn has_template(&self) -> bool {
        self.template_len > 0
    }

    /// The template's bytes in `templates`.
    fn template<'a>(&self, templates: &'a [u8]) -> &'a [u8] {
        let start = self.template_start as usize;
        &templates[start..start + self.template_len as usize]
    }
}

/// `labels_hash` of a series without labels because it breaks a label limit (its
/// reason is in [`SeriesCache::limit_errors`]).
const LIMIT_ERROR: u64 = 1;

/// The series cache (see the module documentation).
#[derive(Default)]
struct SeriesCache {
    /// Entry numbers, hashed by their entries' `key`: 4 bytes a slot, where a map from
    /// key to entry number took 16.
    index: hashbrown::HashTable<u32>,
    /// Seeds the first hash.
    key_hasher: foldhash::fast::RandomState,
    /// Seeds the fingerprint.
    fingerprint_hasher: foldhash::fast::RandomState,
    /// Entries by slot; evicted ones are [`VACANT`] until reused.
    entries: Vec<CachedSeries>,
    /// Vacant slots.
    free: Vec<u32>,
    /// Every entry's template, back to back: one allocation per target instead of one
    /// per series (whose allocator header and rounding cost about 20 bytes each).
    templates: Vec<u8>,
    /// Bytes of `templates` that belong to evicted entries; reclaimed by compaction.
    garbage: usize,
    /// Why series break a label limit, by entry.
    limit_errors: HashMap<u32, Box<str>>,
    /// Entries read by the current scrape.
    current: usize,
    families: HashMap<String, MetricType>,
    /// `families` encoded as metadata frames; rebuilt when a family appears.
    metadata: Vec<Vec<u8>>,
    families_changed: bool,
}

thread_local! {
    /// Hashes of the series written by the scrape being read on this thread. Scratch
    /// space reused by every scrape on the thread instead of a set per target.
    static WRITTEN: RefCell<HashSet<u64, foldhash::fast::FixedState>> =
        const { RefCell::new(HashSet::with_hasher(foldhash::fast::FixedState::with_seed(0))) };
}

impl SeriesCache {
    /// The entry of a series text by its two hashes.
    fn find(&self, key: u64, fingerprint: u64) -> Option<u32> {
        let entries = &self.entries;
        self.index
            .find(key, |&index| {
                let entry = &entries[index as usize];
                entry.key == key && entry.fingerprint == fingerprint
            })
            .copied()
    }

    fn insert(&mut self, entry: CachedSeries) -> u32 {
        let key = entry.key;
        let index = match self.free.pop() {
            Some(index) => {
                self.entries[index as usize] = entry;
                index
            }
            None => {
                self.entries.push(entry);
                u32::try_from(self.entries.len() - 1).unwrap_or(u32::MAX)
            }
        };
        let entries = &self.entries;
        self.index
            .insert_unique(key, index, |&i| entries[i as usize].key);
        index
    }

    /// Removes entries no successful scrape has contained for two generations, and
    /// gives back memory the first scrapes' growth left unused.
    fn evict(&mut self, generation: u32) {
        let slack = self.entries.len() / 8 + 64;
        if self.entries.capacity() > self.entries.len() + slack {
            self.entries.shrink_to(self.entries.len() + slack / 2);
        }
        let template_slack = self.templates.len() / 8 + 1024;
        if self.templates.capacity() > self.templates.len() + template_slack {
            self.templates
                .shrink_to(self.templates.len() + template_slack / 2);
        }
        if self.entries.len() >= 2 * self.current + 64 {
            let (entries, free, limit_errors, garbage) = (
                &mut self.entries,
                &mut self.free,
                &mut self.limit_errors,
                &mut self.garbage,
            );
            let mut retain = |index: &mut u32| {
                let entry = &mut entries[*index as usize];
                let stale = entry.last_success + 1 < generation && entry.pending < generation;
                if stale {
                    *garbage += entry.template_len as usize;
                    entry.template_len = 0;
                    entry.pending = VACANT;
                    entry.last_success = 0;
                    limit_errors.remove(index);
                    free.push(*index);
                }
                !stale
            };
            self.index.retain(|index| retain(index));
        }
        if self.garbage > self.templates.len() / 2 {
            self.compact_templates();
        }
    }

    /// Copies the live entries' templates into a new arena without the evicted ones.
    fn compact_templates(&mut self) {
        let mut templates = Vec::with_capacity(self.templates.len() - self.garbage);
        for entry in self.entries.iter_mut().filter(|e| e.has_template()) {
            let start = templates.len();
            templates.extend_from_slice(entry.template(&self.templates));
            entry.template_start = u32::try_from(start).unwrap_or(u32::MAX);
        }
        self.templates = templates;
        self.garbage = 0;
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

/// Appends a cached series' sample.
fn write_sample(
    writer: &mut RequestWriter,
    template: &[u8],
    shared: &SharedLabels,
    timestamp: i64,
    value: f64,
) {
    let mut pos = 0;
    let Some(labels_len) = wire::get_varint(template, &mut pos) else {
        return;
    };
    writer.sample_from_template(
        &template[pos..],
        labels_len as usize,
        shared,
        timestamp,
        value,
    );
}

impl Scraper {
    /// A loop for `target`.
    pub fn new(
        target: Target,
        config: ScrapeConfig,
        client: ScrapeClient,
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
        let shared = SharedLabels::new(target.public.iter().chain(external_labels.iter()));
        Self {
            target,
            config,
            client,
            processors,
            external_labels,
            inlet,
            health: Arc::new(Mutex::new(TargetHealth::default())),
            cache: SeriesCache::default(),
            shared,
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
        let mut buffer = REQUEST.take();
        buffer.clear();
        buffer.reserve(self.last_request_bytes);
        let mut writer = RequestWriter::from_buffer(buffer);
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
        let succeeded = result.is_ok();
        let (up, scraped, post_relabel) = match result {
            Ok((scraped, post)) => {
                self.record_health(None);
                (1.0, scraped, post)
            }
            Err(error) => {
                // Nothing of a failed scrape is kept.
                writer = RequestWriter::from_buffer(writer.into_bytes());
                if let (ScrapeError::UntrustedCertificate(_), Some(credentials)) =
                    (&error, &self.config.credentials)
                {
                    self.inlet.stats.error(
                        credentials.untrusted_certificate_reason,
                        format!(
                            "{}: {error}; {}",
                            self.target.labels.get(ADDRESS),
                            credentials.untrusted_certificate_advice
                        ),
                    );
                }
                self.record_health(Some(error.to_string()));
                (0.0, 0, 0)
            }
        };
        // One pass: series of this scrape become current (and count as added when the
        // previous scrape did not have them); series the previous successful scrape had
        // and this one has not get a staleness marker.
        let mut added = 0;
        let templates = &self.cache.templates;
        for entry in &mut self.cache.entries {
            let previous = entry.last_success + 1 == generation;
            if succeeded && entry.pending == generation {
                if !previous {
                    added += usize::from(entry.has_template());
                }
                entry.last_success = generation;
            } else if previous && entry.has_template() {
                let template = entry.template(templates);
                write_sample(&mut writer, template, &self.shared, timestamp, stale);
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
        for entry in &self.cache.entries {
            if entry.last_success == self.generation && entry.has_template() {
                let template = entry.template(&self.cache.templates);
                write_sample(&mut writer, template, &self.shared, timestamp, stale);
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
        // A failed write is counted and reported by the inlet; the next scrape is the
        // retry.
        let _ = self.inlet.push_encoded(&body, samples, oldest, stream);
        keep_request_buffer(body);
    }

    /// Fetches the target into `body`; returns the content type.
    async fn fetch(&self, body: &mut Vec<u8>) -> Result<Option<String>, ScrapeError> {
        use reqwest::header::{self, HeaderMap, HeaderValue};
        let mut headers = HeaderMap::new();
        headers.insert(header::ACCEPT, HeaderValue::from_static(ACCEPT_HEADER));
        headers.insert(header::USER_AGENT, HeaderValue::from_static(USER_AGENT));
        if let Ok(value) = HeaderValue::from_str(&self.config.timeout.as_secs_f64().to_string()) {
            headers.insert("X-Prometheus-Scrape-Timeout-Seconds", value);
        }
        if let Some(credentials) = &self.config.credentials {
            let value = credentials.authorization(&self.target.url)?;
            headers.insert(header::AUTHORIZATION, value);
        }
        let fetched = self.client.fetch(
            &self.target.url,
            headers,
            self.config.body_size_limit.get(),
            body,
        );
        match tokio::time::timeout(self.config.timeout, fetched).await {
            Ok(result) => result,
            Err(_) => Err(ScrapeError::Request(format!(
                "timeout after {:?}",
                self.config.timeout
            ))),
        }
    }

    /// Reads a body through the series cache into `writer`; returns the samples
    /// scraped and written.
    fn read_body(
        &mut self,
        body: &[u8],
        content_type: Option<&str>,
        timestamp: i64,
        generation: u32,
        writer: &mut RequestWriter,
    ) -> Result<(usize, usize), ScrapeError> {
        WRITTEN.with_borrow_mut(|written| {
            written.clear();
            let result =
                self.read_body_with(body, content_type, timestamp, generation, writer, written);
            // Keep the scratch set from holding on to a huge target's worth.
            written.shrink_to(MAX_KEPT_WRITTEN);
            result
        })
    }

    fn read_body_with(
        &mut self,
        body: &[u8],
        content_type: Option<&str>,
        timestamp: i64,
        generation: u32,
        writer: &mut RequestWriter,
        written: &mut HashSet<u64, foldhash::fast::FixedState>,
    ) -> Result<(usize, usize), ScrapeError> {
        let format = Format::from_content_type(content_type);
        let cache = &mut self.cache;
        cache.current = 0;
        let (target, config, shared) = (&self.target, &self.config, &mut self.shared);
        let (processors, external) = (&self.processors, &self.external_labels);
        let hasher = foldhash::fast::FixedState::with_seed(0);
        let mut error = None;
        let mut count = 0;
        let sample_limit = config.sample_limit.get() as usize;
        // The first error ends the parse: a failed scrape keeps nothing, so reading on
        // would only cost a hostile target's remaining lines.
        let scraped = exposition::parse(body, format, |sample| {
            let key = cache.key_hasher.hash_one(sample.series);
            let fingerprint = cache.fingerprint_hasher.hash_one(sample.series);
            let index = match cache.find(key, fingerprint) {
                Some(index) => index,
                None => {
                    if sample.metric_type != MetricType::Unknown {
                        let family = family_name(sample.name, sample.metric_type);
                        if !cache.families.contains_key(family) {
                            cache.families.insert(family.to_owned(), sample.metric_type);
                            cache.families_changed = true;
                        }
                    }
                    let labels = sample.labels()?;
                    let (entry, limit_error) = new_entry(
                        &sample,
                        &labels,
                        (key, fingerprint),
                        &mut cache.templates,
                        NewEntry {
                            target,
                            config,
                            processors,
                            external,
                            shared: &mut *shared,
                            hasher: &hasher,
                        },
                    );
                    let index = cache.insert(entry);
                    if let Some(reason) = limit_error {
                        cache.limit_errors.insert(index, reason.into());
                    }
                    index
                }
            };
            let entry = &mut cache.entries[index as usize];
            if entry.pending == generation {
                error = Some(ScrapeError::Duplicate(sample.series.to_owned()));
                return Err(String::new());
            }
            entry.pending = generation;
            cache.current += 1;
            if !entry.has_template() {
                if entry.labels_hash == LIMIT_ERROR {
                    let reason = cache.limit_errors.get(&index).map_or("", |r| &**r);
                    error = Some(ScrapeError::LabelLimit(reason.to_owned()));
                    return Err(String::new());
                }
                return Ok(());
            }
            // Series that relabeling made identical: the first one wins, as in Prometheus.
            if !written.insert(entry.labels_hash) {
                return Ok(());
            }
            let ts = match sample.timestamp_ms {
                Some(ts) if config.honor_timestamps => ts,
                _ => timestamp,
            };
            count += 1;
            if count > sample_limit {
                // Stop here: neither the request nor the cache grows past the limit.
                error = Some(ScrapeError::SampleLimit(config.sample_limit.get()));
                return Err(String::new());
            }
            write_sample(
                writer,
                entry.template(&cache.templates),
                &*shared,
                ts,
                sample.value,
            );
            Ok(())
        });
        if let Some(error) = error {
            return Err(error);
        }
        Ok((scraped?, count))
    }
}

/// Largest request buffer kept per thread between scrapes (a few large targets'
/// worth); larger ones are freed after use.
const MAX_KEPT_REQUEST_BYTES: usize = 8 << 20;

thread_local! {
    /// The request buffer of the last scrape read on this thread, reused by the next.
    static REQUEST: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// Gives a request buffer back to [`REQUEST`] for the next scrape on this thread.
fn keep_request_buffer(buffer: Vec<u8>) {
    if buffer.capacity() <= MAX_KEPT_REQUEST_BYTES {
        REQUEST.set(buffer);
    }
}

/// Most entries the per-thread scratch set keeps between scrapes.
const MAX_KEPT_WRITTEN: usize = 16_384;

/// What building a cache entry needs besides the sample.
struct NewEntry<'a> {
    target: &'a Target,
    config: &'a ScrapeConfig,
    processors: &'a ValidatedProcessors,
    external: &'a Labels,
    shared: &'a mut SharedLabels,
    hasher: &'a foldhash::fast::FixedState,
}

/// Builds the cache entry of a series seen for the first time, its template appended
/// to `templates`, and the label limit it breaks, if any.
fn new_entry(
    sample: &exposition::Sample<'_>,
    labels: &[(&str, std::borrow::Cow<'_, str>)],
    (key, fingerprint): (u64, u64),
    templates: &mut Vec<u8>,
    with: NewEntry<'_>,
) -> (CachedSeries, Option<String>) {
    let exposed = Labels::from_pairs(
        std::iter::once((METRIC_NAME, sample.name.to_owned()))
            .chain(labels.iter().map(|(n, v)| (*n, v.to_string()))),
    );
    let merged = merge_target_labels(&exposed, with.target, with.config.honor_labels);
    let mut entry = CachedSeries {
        key,
        fingerprint,
        labels_hash: 0,
        template_start: 0,
        template_len: 0,
        last_success: 0,
        pending: 0,
    };
    let Some(labels) = process_sample(&merged, with.processors) else {
        return (entry, None);
    };
    if let Err(reason) = check_label_limits(&labels, with.config) {
        entry.labels_hash = LIMIT_ERROR;
        return (entry, Some(reason));
    }
    let labels = with_external(labels, with.external);
    entry.labels_hash = with.hasher.hash_one(wire::encode_labels(&labels));
    let (template, expanded_len) = wire::encode_template(&labels, with.shared);
    let start = templates.len();
    wire::put_varint(templates, expanded_len as u64);
    templates.extend_from_slice(&template);
    entry.template_start = u32::try_from(start).unwrap_or(u32::MAX);
    entry.template_len = u32::try_from(templates.len() - start).unwrap_or(0);
    (entry, None)
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
        if labels.len() > config.label_limit.get() as usize {
            return Err(format!(
                "label_limit exceeded (metric: {name:.50}, number of labels: {}, limit: {})",
                labels.len(),
                config.label_limit
            ));
        }
        for label in labels.iter() {
            if label.name.len() > config.label_name_length_limit.get() as usize {
                return Err(format!(
                    "label_name_length_limit exceeded (metric: {name:.50}, label name: {:.50}, length: {}, limit: {})",
                    label.name,
                    label.name.len(),
                    config.label_name_length_limit
                ));
            }
            if label.value.len() > config.label_value_length_limit.get() as usize {
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
