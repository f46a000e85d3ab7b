//! Drains a pipeline's buffer to its exporter.
//!
//! The sender works in rounds. A round reads buffered batches until it holds enough
//! samples to fill every shard, splits the series by a hash of their labels into
//! shards, and sends all shards concurrently, each shard's requests in order. Since a
//! series always lands in the same shard and rounds follow one another, every series'
//! samples reach the backend in order, while up to `shards` requests are in flight.
//! Only when every request of a round has ended (delivered, or dropped for good) is the
//! round acknowledged in the buffer; a crash before that sends the round again
//! (at-least-once).
//!
//! Failures are retried with backoff (see [`crate::exporters::retry`]) until the data
//! is older than the buffer's maximum age; permanent refusals drop the request and
//! count it. While a round retries, new data keeps flowing into the buffer, which is
//! bounded on its own, so a dead backend costs disk, never memory or other pipelines.

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use kaas_proto::remote_write::v1::{MetricMetadata, TimeSeries};
use tokio::sync::{Notify, watch};

use super::stats::{DropReason, PipelineStats};
use crate::batch::Batch;
use crate::buffer::{DiskBuffer, Position};
use crate::exporters::Exporter;
use crate::exporters::retry::{Backoff, SendError};

/// Requests in flight per pipeline. Prometheus starts with 1 and scales up to 200
/// shards; a fixed handful keeps one agent's cost predictable and already hides the
/// round-trip time of a remote backend.
pub const DEFAULT_SHARDS: usize = 4;
/// Samples per request; Prometheus' `max_samples_per_send` default.
pub const DEFAULT_MAX_SAMPLES_PER_REQUEST: usize = 2000;
/// How often the ack position is written to disk while data flows. At most this much
/// delivered data is sent again after a crash.
pub const ACK_PERSIST_INTERVAL: Duration = Duration::from_secs(1);
/// How long an idle sender sleeps when nobody wakes it.
const IDLE_POLL: Duration = Duration::from_secs(1);

/// Sender settings.
#[derive(Clone, Debug)]
pub struct SenderConfig {
    /// Concurrent requests per round.
    pub shards: usize,
    /// Samples per request.
    pub max_samples_per_request: usize,
    /// Data older than this is dropped instead of retried.
    pub max_age: Duration,
}

impl SenderConfig {
    /// Defaults with the buffer's maximum age.
    pub fn with_max_age(max_age: Duration) -> Self {
        Self {
            shards: DEFAULT_SHARDS,
            max_samples_per_request: DEFAULT_MAX_SAMPLES_PER_REQUEST,
            max_age,
        }
    }
}

/// Drains one pipeline's buffer.
pub struct Sender {
    /// The pipeline's buffer, shared with whoever pushes into it.
    pub buffer: Arc<Mutex<DiskBuffer>>,
    /// Where batches go.
    pub exporter: Arc<Exporter>,
    /// Settings.
    pub config: SenderConfig,
    /// Counters.
    pub stats: Arc<PipelineStats>,
    /// Notified when data is pushed.
    pub wake: Arc<Notify>,
}

/// One request's data.
struct Request {
    batch: Batch,
    samples: u64,
    oldest_ms: i64,
}

/// What became of a round.
enum RoundEnd {
    /// Every request was delivered or dropped: acknowledge.
    Done,
    /// Shutdown interrupted it: leave it unacknowledged.
    Interrupted,
    /// A shard failed unexpectedly (a bug, not a backend error): send the round again.
    Failed,
}

/// Wait before repeating a round whose shard failed unexpectedly.
const FAILED_ROUND_PAUSE: Duration = Duration::from_secs(1);

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

impl Sender {
    /// Runs until `shutdown` becomes true, then persists the ack position.
    pub async fn run(self, mut shutdown: watch::Receiver<bool>) {
        let mut last_persist = Instant::now();
        while !*shutdown.borrow() {
            let round = self.read_round();
            let Some((end, shards)) = round else {
                self.persist_ack();
                tokio::select! {
                    () = self.wake.notified() => {}
                    () = tokio::time::sleep(IDLE_POLL) => {}
                    _ = shutdown.changed() => {}
                }
                continue;
            };
            match self.deliver(shards, &shutdown).await {
                RoundEnd::Done => {
                    let mut buffer = self.lock_buffer();
                    if let Err(error) = buffer.ack(end) {
                        self.stats.error("BufferError", error.to_string());
                    }
                }
                RoundEnd::Interrupted => {
                    self.lock_buffer().rewind();
                    break;
                }
                RoundEnd::Failed => {
                    self.lock_buffer().rewind();
                    tokio::select! {
                        () = tokio::time::sleep(FAILED_ROUND_PAUSE) => {}
                        _ = shutdown.changed() => {}
                    }
                    continue;
                }
            }
            if last_persist.elapsed() >= ACK_PERSIST_INTERVAL {
                self.persist_ack();
                last_persist = Instant::now();
            }
        }
        self.persist_ack();
    }

    fn lock_buffer(&self) -> std::sync::MutexGuard<'_, DiskBuffer> {
        self.buffer.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn persist_ack(&self) {
        if let Err(error) = self.lock_buffer().persist_ack() {
            self.stats.error("BufferError", error.to_string());
        }
    }

    /// Reads the next round: the position after it and the requests per shard.
    fn read_round(&self) -> Option<(Position, Vec<Vec<Request>>)> {
        let shards = self.config.shards.max(1);
        let target = shards * self.config.max_samples_per_request;
        let mut series: Vec<TimeSeries> = Vec::new();
        let mut metadata: HashMap<String, MetricMetadata> = HashMap::new();
        let mut samples = 0;
        let mut end = None;
        let mut buffer = self.lock_buffer();
        while samples < target {
            let next = match buffer.read_next(now_ms()) {
                Ok(next) => next,
                Err(error) => {
                    self.stats.error("BufferError", error.to_string());
                    break;
                }
            };
            let Some((position, record)) = next else {
                break;
            };
            end = Some(position);
            match Batch::decode(&record.payload) {
                Ok(batch) => {
                    samples += batch.samples();
                    series.extend(batch.series);
                    for m in batch.metadata {
                        metadata.insert(m.metric_family_name.clone(), m);
                    }
                }
                Err(error) => {
                    self.stats
                        .dropped(DropReason::Corrupt, u64::from(record.items));
                    self.stats.error("BufferCorrupt", error.to_string());
                }
            }
        }
        let expired = buffer.take_dropped().expired;
        self.stats.dropped(DropReason::MaxAgeExceeded, expired);
        // `end` is the start of the last record read; acknowledge past it.
        let after = end.map(|_| buffer.read_position())?;
        drop(buffer);
        Some((after, self.split(series, &metadata, shards)))
    }

    /// Splits series into per-shard requests, keeping each series' samples in order.
    fn split(
        &self,
        series: Vec<TimeSeries>,
        metadata: &HashMap<String, MetricMetadata>,
        shards: usize,
    ) -> Vec<Vec<Request>> {
        let mut per_shard: Vec<Vec<TimeSeries>> = vec![Vec::new(); shards];
        for s in series {
            let mut hasher = std::collections::hash_map::DefaultHasher::new();
            s.labels.hash(&mut hasher);
            let shard = (hasher.finish() % shards as u64) as usize;
            per_shard[shard].push(s);
        }
        per_shard
            .into_iter()
            .map(|list| self.requests(list, metadata))
            .collect()
    }

    fn requests(
        &self,
        series: Vec<TimeSeries>,
        metadata: &HashMap<String, MetricMetadata>,
    ) -> Vec<Request> {
        let limit = self.config.max_samples_per_request.max(1);
        let mut requests = Vec::new();
        let mut current: Vec<TimeSeries> = Vec::new();
        let mut count = 0;
        let finish = |current: &mut Vec<TimeSeries>, requests: &mut Vec<Request>| {
            if current.is_empty() {
                return;
            }
            let batch = Batch {
                series: std::mem::take(current),
                metadata: Vec::new(),
            };
            let batch = with_metadata(batch, metadata);
            requests.push(Request {
                samples: batch.samples() as u64,
                oldest_ms: batch.oldest_timestamp_ms().unwrap_or_else(now_ms),
                batch,
            });
        };
        for mut s in series {
            while !s.samples.is_empty() {
                let room = limit - count;
                if s.samples.len() <= room {
                    count += s.samples.len();
                    current.push(s);
                    break;
                }
                // Split a long series across requests, oldest samples first.
                let rest = s.samples.split_off(room);
                current.push(TimeSeries {
                    labels: s.labels.clone(),
                    samples: std::mem::replace(&mut s.samples, rest),
                });
                finish(&mut current, &mut requests);
                count = 0;
            }
            if count >= limit {
                finish(&mut current, &mut requests);
                count = 0;
            }
        }
        finish(&mut current, &mut requests);
        requests
    }

    /// Sends every shard's requests; shards run concurrently.
    async fn deliver(
        &self,
        shards: Vec<Vec<Request>>,
        shutdown: &watch::Receiver<bool>,
    ) -> RoundEnd {
        let mut tasks = tokio::task::JoinSet::new();
        for requests in shards.into_iter().filter(|r| !r.is_empty()) {
            let exporter = self.exporter.clone();
            let stats = self.stats.clone();
            let max_age = self.config.max_age;
            let mut shutdown = shutdown.clone();
            tasks.spawn(async move {
                for request in requests {
                    if let RoundEnd::Interrupted =
                        send_with_retry(&exporter, &stats, max_age, request, &mut shutdown).await
                    {
                        return RoundEnd::Interrupted;
                    }
                }
                RoundEnd::Done
            });
        }
        let mut end = RoundEnd::Done;
        while let Some(result) = tasks.join_next().await {
            match result {
                Ok(RoundEnd::Done) => {}
                Ok(RoundEnd::Interrupted) => end = RoundEnd::Interrupted,
                Ok(RoundEnd::Failed) | Err(_) => {
                    self.stats.error(
                        "InternalError",
                        "a send task failed unexpectedly; the data is kept and sent again",
                    );
                    if !matches!(end, RoundEnd::Interrupted) {
                        end = RoundEnd::Failed;
                    }
                }
            }
        }
        end
    }
}

fn with_metadata(mut batch: Batch, metadata: &HashMap<String, MetricMetadata>) -> Batch {
    if metadata.is_empty() {
        return batch;
    }
    let families: HashMap<&str, &MetricMetadata> =
        metadata.iter().map(|(k, v)| (k.as_str(), v)).collect();
    let mut seen = std::collections::BTreeSet::new();
    for series in &batch.series {
        let name = series
            .labels
            .iter()
            .find(|l| l.name == "__name__")
            .map_or("", |l| l.value.as_str());
        if let Some(m) = crate::exporters::remote_write::encode::family_of(name, &families)
            && seen.insert(m.metric_family_name.clone())
        {
            batch.metadata.push(m.clone());
        }
    }
    batch
}

async fn send_with_retry(
    exporter: &Exporter,
    stats: &PipelineStats,
    max_age: Duration,
    request: Request,
    shutdown: &mut watch::Receiver<bool>,
) -> RoundEnd {
    let mut backoff = Backoff::default();
    let max_age_ms = i64::try_from(max_age.as_millis()).unwrap_or(i64::MAX);
    loop {
        PipelineStats::add(&stats.requests, 1);
        match exporter.send(&request.batch).await {
            Ok(()) => {
                PipelineStats::add(&stats.samples_sent, request.samples);
                return RoundEnd::Done;
            }
            Err(SendError::Permanent { reason }) => {
                stats.dropped(DropReason::RejectedByBackend, request.samples);
                stats.error("DataDropped", reason);
                return RoundEnd::Done;
            }
            Err(error @ SendError::Retryable { .. }) => {
                PipelineStats::add(&stats.samples_failed, request.samples);
                stats.error(error.condition_reason(), error.to_string());
                if now_ms().saturating_sub(request.oldest_ms) > max_age_ms {
                    stats.dropped(DropReason::MaxAgeExceeded, request.samples);
                    return RoundEnd::Done;
                }
                let SendError::Retryable { retry_after, .. } = error else {
                    unreachable!("matched above")
                };
                let wait = backoff.wait(retry_after);
                tokio::select! {
                    () = tokio::time::sleep(wait) => {}
                    _ = shutdown.changed() => return RoundEnd::Interrupted,
                }
            }
        }
    }
}
