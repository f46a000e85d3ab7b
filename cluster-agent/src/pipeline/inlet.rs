//! Where processed samples enter a pipeline: each batch becomes one buffer record, the
//! sender is woken, and whatever the buffer drops is counted.

use std::sync::{Arc, Mutex};

use tokio::sync::Notify;

use super::stats::{DropReason, PipelineStats};
use crate::batch::Batch;
use crate::buffer::{BufferError, DiskBuffer, Record, Stream};

/// The entry of one pipeline.
#[derive(Clone, Debug)]
pub struct Inlet {
    /// The pipeline's buffer.
    pub buffer: Arc<Mutex<DiskBuffer>>,
    /// Counters.
    pub stats: Arc<PipelineStats>,
    /// Wakes the sender.
    pub wake: Arc<Notify>,
}

impl Inlet {
    /// Buffers an encoded, uncompressed remote-write `WriteRequest` of `samples`
    /// samples (the scrapers' fast path), as a record of `stream` when it holds only
    /// that producer's series (see [`Stream`]).
    pub fn push_encoded(
        &self,
        request: &[u8],
        samples: usize,
        oldest_ms: i64,
        stream: Option<Stream>,
    ) -> Result<(), BufferError> {
        if samples == 0 {
            return Ok(());
        }
        self.push_record(
            Record {
                timestamp_ms: oldest_ms,
                items: u32::try_from(samples).unwrap_or(u32::MAX),
                payload: crate::batch::compress(request),
            },
            samples,
            stream,
        )
    }

    /// Buffers a batch. A full buffer drops (and counts) according to its policy; only
    /// I/O errors are returned.
    pub fn push(&self, batch: &Batch, now_ms: i64) -> Result<(), BufferError> {
        let samples = batch.samples();
        if samples == 0 {
            return Ok(());
        }
        let record = Record {
            timestamp_ms: batch.oldest_timestamp_ms().unwrap_or(now_ms),
            items: u32::try_from(samples).unwrap_or(u32::MAX),
            payload: batch.encode(),
        };
        self.push_record(record, samples, None)
    }

    fn push_record(
        &self,
        record: Record,
        samples: usize,
        stream: Option<Stream>,
    ) -> Result<(), BufferError> {
        let mut buffer = self.buffer.lock().unwrap_or_else(|e| e.into_inner());
        let outcome = buffer.push_in_stream(record, stream)?;
        let dropped = buffer.take_dropped();
        drop(buffer);
        PipelineStats::add(&self.stats.samples_in, samples as u64);
        self.stats.dropped(DropReason::BufferFull, dropped.full);
        self.stats
            .dropped(DropReason::MaxAgeExceeded, dropped.expired);
        if outcome.is_err() {
            self.stats.dropped(DropReason::BufferFull, samples as u64);
            self.stats
                .error("BufferFull", "the buffer is full; new samples are dropped");
        } else if dropped.full > 0 {
            self.stats.error(
                "BufferFull",
                "the buffer is full; the oldest samples were dropped",
            );
        }
        self.wake.notify_one();
        Ok(())
    }
}
