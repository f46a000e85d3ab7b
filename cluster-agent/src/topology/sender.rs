//! Drains a pipeline's buffer to its exporter, for any signal: what it carries is
//! known only through the signal's [`FrameEncoding`] and [`ShardingKey`], what it
//! sends to through [`Export`].
//!
//! The sender works in rounds. A round reads buffered batches until it holds enough
//! samples to fill every shard and sends all shards concurrently, each shard's requests
//! in order. Since a series always lands in the same shard and rounds follow one
//! another, every series' samples reach the backend in order, while up to `shards`
//! requests are in flight. Only when every request of a round has ended (delivered, or
//! dropped for good) is the round acknowledged in the buffer; a crash before that sends
//! the round again (at-least-once).
//!
//! A round is one of two kinds, never both:
//! - **whole records**: records of a [`Stream`](kaas_buffer::Stream) (one scrape of one target, holding
//!   only that target's series) of at most [`DEFAULT_MAX_WHOLE_RECORD_SAMPLES`]
//!   samples are sent as they are buffered, already compressed, one request each,
//!   sharded by stream. This is the scrapers' path: each sample is encoded and
//!   compressed once, on its way into the buffer.
//! - **split**: other records (pushed data, records found on disk at start, very large
//!   scrapes) are decompressed, split into frames ([`FrameEncoding::frames`]) and the
//!   frames into shards by their [`ShardingKey`] (for metrics a hash of a series'
//!   labels without `__name__`, `le` and `quantile`, so all series of a histogram or
//!   summary point travel together, which OTLP needs), then joined into requests of
//!   about `max_samples_per_request` items. It works on encoded frames and never
//!   decodes them.
//!
//! A round ends where the kind of the next record changes, so the two orders never
//! interleave.
//!
//! Failures are retried with backoff (see [`crate::outbound::retry`]) until the data
//! is older than the buffer's maximum age; permanent refusals drop the request and
//! count it. While a round retries, new data keeps flowing into the buffer, which is
//! bounded on its own, so a dead backend costs disk, never memory or other pipelines.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use kaas_series::clock::now_ms;
use tokio::sync::{Notify, watch};

use crate::exporters::{Export, RequestOf};
use crate::internal_events::{
    BufferDropped, DropReason, ErrorReason, PipelineFailed, PipelineStats, SamplesDropped,
};
use crate::outbound::backoff::Backoff;
use crate::outbound::retry::SendError;
use crate::record::signal::{Frame, FrameEncoding, ShardingKey};
use kaas_buffer::{DiskBuffer, Position};

/// Requests in flight per pipeline. Prometheus starts with 1 and scales up to 200
/// shards; a fixed handful keeps one agent's cost predictable and already hides the
/// round-trip time of a remote backend.
pub const DEFAULT_SHARDS: usize = 4;
/// Samples per request; Prometheus' `max_samples_per_send` default.
pub const DEFAULT_MAX_SAMPLES_PER_REQUEST: usize = 2000;
/// Largest stream record sent whole, as one request. One scrape of a large target;
/// at about 170 bytes per encoded sample that is about 3.5 MB before compression, far
/// below receivers' default limits (VictoriaMetrics 32 MB, Mimir 100 MB), and twice
/// vmagent's 10,000 rows per block. Larger records are split.
pub const DEFAULT_MAX_WHOLE_RECORD_SAMPLES: usize = 20_000;
/// How often the ack position is written to disk while data flows. At most this much
/// delivered data is sent again after a crash; each write costs an fsync, which at once a
/// second showed up in profiles.
pub const ACK_PERSIST_INTERVAL: Duration = Duration::from_secs(5);
/// How long an idle sender sleeps when nobody wakes it.
const IDLE_POLL: Duration = Duration::from_secs(1);

/// Sender settings.
#[derive(Clone, Debug)]
pub struct SenderConfig {
    /// Concurrent requests per round.
    pub shards: usize,
    /// Samples per request: a request is closed at the first series-group boundary
    /// after reaching this many, so it exceeds it by at most one group (a histogram's
    /// or summary's series, or one buffered series' samples).
    pub max_samples_per_request: usize,
    /// Stream records of at most this many samples are sent whole (see the module
    /// documentation).
    pub max_whole_record_samples: usize,
    /// Data older than this is dropped instead of retried.
    pub max_age: Duration,
}

impl SenderConfig {
    /// Defaults with the buffer's maximum age.
    pub fn with_max_age(max_age: Duration) -> Self {
        Self {
            shards: DEFAULT_SHARDS,
            max_samples_per_request: DEFAULT_MAX_SAMPLES_PER_REQUEST,
            max_whole_record_samples: DEFAULT_MAX_WHOLE_RECORD_SAMPLES,
            max_age,
        }
    }
}

/// Drains one pipeline's buffer.
pub struct Sender<E> {
    /// The pipeline's buffer, shared with whoever pushes into it.
    pub buffer: Arc<Mutex<DiskBuffer>>,
    /// Where requests go.
    pub exporter: Arc<E>,
    /// Settings.
    pub config: SenderConfig,
    /// Counters.
    pub stats: Arc<PipelineStats>,
    /// Notified when data is pushed.
    pub wake: Arc<Notify>,
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

impl<E: Export> Sender<E> {
    /// Runs until `shutdown` becomes true, then persists the ack position.
    pub async fn run(self, mut shutdown: watch::Receiver<bool>) {
        let mut last_persist = Instant::now();
        while !*shutdown.borrow() {
            let round = self.read_round();
            let Some((end, shards)) = round else {
                // Idle between scrapes is the usual state, so persisting on every idle
                // turn would cost an fsync per scrape (15% of the agent's CPU in a
                // profile); the interval bounds what a crash sends again either way.
                if last_persist.elapsed() >= ACK_PERSIST_INTERVAL {
                    self.persist_ack();
                    last_persist = Instant::now();
                }
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
                        PipelineFailed::new(ErrorReason::BufferError, error.to_string())
                            .emit(&self.stats);
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
            PipelineFailed::new(ErrorReason::BufferError, error.to_string()).emit(&self.stats);
        }
    }

    /// Reads the next round (see the module documentation): the position after it and
    /// the requests per shard.
    fn read_round(&self) -> Option<(Position, Vec<Vec<RequestOf<E>>>)> {
        let shards = self.config.shards.max(1);
        let split_target = (shards * self.config.max_samples_per_request) as u64;
        let whole_target = (shards * self.config.max_whole_record_samples) as u64;
        let mut whole: Vec<Vec<RequestOf<E>>> = (0..shards).map(|_| Vec::new()).collect();
        let mut payloads: Vec<(Vec<u8>, i64)> = Vec::new();
        let mut kind: Option<bool> = None;
        let mut samples = 0u64;
        let mut end = None;
        let mut buffer = self.lock_buffer();
        loop {
            let now = now_ms();
            let Some((items, stream)) = buffer.peek_next(now) else {
                break;
            };
            let stream = stream.filter(|_| items as usize <= self.config.max_whole_record_samples);
            let is_whole = stream.is_some();
            if kind.is_some_and(|k| k != is_whole) {
                break;
            }
            kind = Some(is_whole);
            let next = match buffer.read_next(now) {
                Ok(next) => next,
                Err(error) => {
                    // The damaged record was skipped (and counted): read on after it.
                    PipelineFailed::new(ErrorReason::BufferCorrupt, error.to_string())
                        .emit(&self.stats);
                    continue;
                }
            };
            let Some((position, record)) = next else {
                break;
            };
            end = Some(position);
            samples += u64::from(record.items);
            if let Some(stream) = stream {
                whole[(stream % shards as u64) as usize].push(E::Signal::whole_record(
                    record.payload,
                    u64::from(record.items),
                    record.timestamp_ms,
                ));
                if samples >= whole_target {
                    break;
                }
                continue;
            }
            match snap::raw::Decoder::new().decompress_vec(&record.payload) {
                Ok(raw) => payloads.push((raw, record.timestamp_ms)),
                Err(error) => {
                    samples -= u64::from(record.items);
                    SamplesDropped {
                        reason: DropReason::Corrupt,
                        samples: u64::from(record.items),
                    }
                    .emit(&self.stats);
                    PipelineFailed::new(ErrorReason::BufferCorrupt, error.to_string())
                        .emit(&self.stats);
                }
            }
            if samples >= split_target {
                break;
            }
        }
        let dropped = buffer.take_dropped();
        BufferDropped(dropped).emit(&self.stats);
        // `end` is the start of the last record read; acknowledge past it.
        let after = end.map(|_| buffer.read_position())?;
        drop(buffer);
        if kind == Some(true) {
            return Some((after, whole));
        }
        Some((after, self.split(&payloads, shards)))
    }

    /// Shards the frames of the round's payloads into requests.
    fn split(&self, payloads: &[(Vec<u8>, i64)], shards: usize) -> Vec<Vec<RequestOf<E>>> {
        let mut per_shard: Vec<Vec<ShardFrame<'_>>> = vec![Vec::new(); shards];
        let mut shared: Vec<&[u8]> = Vec::new();
        for (raw, timestamp) in payloads {
            let frames = match E::Signal::frames(raw) {
                Ok(frames) => frames,
                Err(error) => {
                    PipelineFailed::new(ErrorReason::BufferCorrupt, error.to_string())
                        .emit(&self.stats);
                    continue;
                }
            };
            for frame in frames {
                match frame {
                    Frame::Items { body, key, items } => {
                        let key = E::Signal::shard_key(key);
                        per_shard[(key % shards as u64) as usize]
                            .push((body, items, *timestamp, key));
                    }
                    Frame::Shared(body) => {
                        if !shared.contains(&body) {
                            shared.push(body);
                        }
                    }
                }
            }
        }
        let limit = self.config.max_samples_per_request.max(1) as u64;
        per_shard
            .into_iter()
            .map(|frames| {
                let mut requests = Vec::new();
                let mut request = OpenRequest::default();
                let mut last_key = None;
                for (body, items, timestamp, key) in frames {
                    // Cut only between keys, so frames that belong together (a
                    // histogram or summary point's series) stay in one request.
                    if request.items >= limit && last_key != Some(key) {
                        requests.push(std::mem::take(&mut request).finish::<E::Signal>(&shared));
                    }
                    request.frames.push(body);
                    request.items += items as u64;
                    request.oldest = request.oldest.min(timestamp);
                    last_key = Some(key);
                }
                if request.items > 0 {
                    requests.push(request.finish::<E::Signal>(&shared));
                }
                requests
            })
            .collect()
    }

    /// Sends every shard's requests; shards run concurrently.
    async fn deliver(
        &self,
        shards: Vec<Vec<RequestOf<E>>>,
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
                        send_with_retry(exporter.as_ref(), &stats, max_age, request, &mut shutdown)
                            .await
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
                    PipelineFailed::new(
                        ErrorReason::InternalError,
                        "a send task failed unexpectedly; the data is kept and sent again",
                    )
                    .emit(&self.stats);
                    if !matches!(end, RoundEnd::Interrupted) {
                        end = RoundEnd::Failed;
                    }
                }
            }
        }
        end
    }
}

/// An item frame on its way into a request: body, items, record timestamp, shard key.
type ShardFrame<'a> = (&'a [u8], usize, i64, u64);

/// The frames of a request being assembled.
struct OpenRequest<'a> {
    frames: Vec<&'a [u8]>,
    items: u64,
    oldest: i64,
}

impl Default for OpenRequest<'_> {
    fn default() -> Self {
        Self {
            frames: Vec::new(),
            items: 0,
            oldest: i64::MAX,
        }
    }
}

impl OpenRequest<'_> {
    /// Closes a request: the round's shared frames, item count and age.
    fn finish<S: FrameEncoding>(self, shared: &[&[u8]]) -> S::Request {
        let oldest = if self.oldest == i64::MAX {
            now_ms()
        } else {
            self.oldest
        };
        S::request(&self.frames, shared, self.items, oldest)
    }
}

async fn send_with_retry<E: Export>(
    exporter: &E,
    stats: &PipelineStats,
    max_age: Duration,
    request: RequestOf<E>,
    shutdown: &mut watch::Receiver<bool>,
) -> RoundEnd {
    let samples = E::Signal::items(&request);
    let oldest_ms = E::Signal::oldest_ms(&request);
    let mut backoff = Backoff::default();
    let max_age_ms = i64::try_from(max_age.as_millis()).unwrap_or(i64::MAX);
    loop {
        PipelineStats::add(&stats.requests, 1);
        let started = Instant::now();
        let result = exporter.send(&request).await;
        stats
            .send_latency
            .0
            .observe(started.elapsed().as_secs_f64());
        // Items a backend answered for one by one (stored, or refused and counted as
        // dropped where the answer was read) are counted by that outcome, the rest by
        // the request's.
        let settled = E::Signal::settled(&request);
        let pending = settled.pending(samples);
        match result {
            Ok(()) => {
                PipelineStats::add(&stats.samples_sent, samples - settled.refused.min(samples));
                return RoundEnd::Done;
            }
            Err(SendError::Permanent { reason }) => {
                PipelineStats::add(&stats.samples_sent, settled.stored);
                SamplesDropped {
                    reason: DropReason::RejectedByBackend,
                    samples: pending,
                }
                .emit(stats);
                PipelineFailed::new(ErrorReason::DataDropped, reason).emit(stats);
                return RoundEnd::Done;
            }
            Err(error @ SendError::Retryable { .. }) => {
                PipelineStats::add(&stats.samples_failed, pending);
                PipelineFailed::new(error.condition_reason(), error.to_string()).emit(stats);
                if now_ms().saturating_sub(oldest_ms) > max_age_ms {
                    PipelineStats::add(&stats.samples_sent, settled.stored);
                    SamplesDropped {
                        reason: DropReason::MaxAgeExceeded,
                        samples: pending,
                    }
                    .emit(stats);
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
