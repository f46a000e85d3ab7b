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
//! Each loop remembers its target's series in a cache ([`super::cache`]), so a series
//! is labelled, relabeled and encoded once, not on every scrape.

use std::cell::RefCell;
use std::collections::HashSet;
use std::hash::{BuildHasher, Hash, Hasher};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use kaas_pipeline::processors::ValidatedProcessors;
use kaas_series::STALE_NAN_BITS;
use kaas_series::clock::now_ms;
use tokio::sync::watch;

use super::cache::{LIMIT_ERROR, NewEntry, SeriesCache, family_name, new_entry, write_sample};
use super::client::ScrapeClient;
use super::config::ScrapeConfig;
use super::error::ScrapeError;
use super::exposition::{self, ACCEPT_HEADER, Format, MetricType};
use super::series_labels::{report_labels, with_external};
use super::sink::ScrapeSink;
use super::target::Target;
use crate::labels::{ADDRESS, Labels};
use crate::outbound::USER_AGENT;
use crate::record::shared_labels::SharedLabels;
use crate::record::wire::{self, RequestWriter};

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
    /// Where samples go: the pipeline's inlet.
    sink: Box<dyn ScrapeSink>,
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

thread_local! {
    /// Hashes of the series written by the scrape being read on this thread. Scratch
    /// space reused by every scrape on the thread instead of a set per target.
    static WRITTEN: RefCell<HashSet<u64, foldhash::fast::FixedState>> =
        const { RefCell::new(HashSet::with_hasher(foldhash::fast::FixedState::with_seed(0))) };
}

impl Scraper {
    /// A loop for `target`.
    pub fn new(
        target: Target,
        config: ScrapeConfig,
        client: ScrapeClient,
        processors: Arc<ValidatedProcessors>,
        external_labels: Arc<Labels>,
        sink: impl ScrapeSink + 'static,
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
            sink: Box::new(sink),
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
                    self.sink.report_error(
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
        self.sink
            .push_encoded(&body, samples, oldest, self.stream());
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

#[cfg(test)]
mod tests;
