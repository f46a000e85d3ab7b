//! Where processed samples enter a pipeline: each batch becomes one buffer record, the
//! sender is woken, and whatever the buffer drops is counted.
//!
//! A batch the buffer cannot store (full with `dropNewest`, or a failed write on a full
//! or failing disk) is counted as dropped by reason and reported as the pipeline's
//! error (`BufferFull`, [`BUFFER_WRITE_FAILED`]); a failed write is also returned to
//! the caller, which still holds the batch (it was only borrowed).

use std::sync::{Arc, Mutex};

use tokio::sync::Notify;

use super::stats::{DropReason, PipelineStats};
use crate::batch::Batch;
use crate::buffer::{BufferError, DiskBuffer, Dropped, HEADER_BYTES, PushError, Record, Stream};

/// The pipeline error reason for a batch the buffer could not write (a full disk, an
/// I/O error); the observer shows it as the pipeline's `FlowHealthy` reason.
pub use kaas_pipeline::status::reasons::BUFFER_WRITE_FAILED;
/// The pipeline error reason for a buffered record that was damaged when read back.
pub const BUFFER_CORRUPT: &str = "BufferCorrupt";

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
    /// that producer's series (see [`Stream`]). A failed write is counted, reported
    /// and returned (see the module documentation).
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
        let items = u32::try_from(samples).unwrap_or(u32::MAX);
        FRAMING.with_borrow_mut(|framing| {
            // Only a request too large for snappy (4 GiB) does not compress; like a
            // record over the buffer's record limit, it can never be stored.
            let Some(framed) = framing.compress(request) else {
                self.account(samples, false, Dropped::default());
                return Ok(());
            };
            let mut buffer = self.buffer.lock().unwrap_or_else(|e| e.into_inner());
            let stored = buffer.push_framed(framed, oldest_ms, items, stream);
            let dropped = buffer.take_dropped();
            drop(buffer);
            match stored {
                Ok(stored) => {
                    self.account(samples, stored, dropped);
                    Ok(())
                }
                Err(error) => {
                    self.account(0, true, dropped);
                    self.write_failed(samples, &error);
                    Err(error)
                }
            }
        })
    }

    /// Buffers a batch. A full buffer drops (and counts) according to its policy; a
    /// failed write is counted, reported and returned.
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
        let outcome = buffer.push_in_stream(record, stream);
        let dropped = buffer.take_dropped();
        drop(buffer);
        match outcome {
            Ok(()) => self.account(samples, true, dropped),
            Err(PushError::Full(_)) => self.account(samples, false, dropped),
            Err(PushError::Failed { source, .. }) => {
                self.account(0, true, dropped);
                self.write_failed(samples, &source);
                return Err(source);
            }
        }
        Ok(())
    }

    /// Counts a batch the buffer could not write and reports why.
    fn write_failed(&self, samples: usize, error: &BufferError) {
        self.stats
            .dropped(DropReason::BufferWriteFailed, samples as u64);
        self.stats.error(BUFFER_WRITE_FAILED, error.to_string());
    }

    /// Counts a push and what the buffer dropped for it, and wakes the sender.
    fn account(&self, samples: usize, stored: bool, dropped: Dropped) {
        PipelineStats::add(&self.stats.samples_in, samples as u64);
        self.stats.dropped(DropReason::BufferFull, dropped.full);
        self.stats
            .dropped(DropReason::MaxAgeExceeded, dropped.expired);
        self.stats.dropped(DropReason::Corrupt, dropped.corrupt);
        if !stored {
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
    }
}

/// Largest framing buffer kept per thread between pushes (a few large scrapes' worth);
/// a larger one is freed after use.
const MAX_KEPT_FRAMING_BYTES: usize = 8 << 20;

thread_local! {
    /// Where the scrapers on this thread compress their requests into records.
    static FRAMING: std::cell::RefCell<Framing> = std::cell::RefCell::default();
}

/// A snappy encoder and the buffer it compresses into, kept per thread: compressing
/// into a fresh `Vec` allocated and zeroed the maximum compressed size on every
/// scrape (6% of the scrape path under callgrind), and framing it as a record copied
/// it once more.
struct Framing {
    encoder: snap::raw::Encoder,
    buffer: Vec<u8>,
}

impl Default for Framing {
    fn default() -> Self {
        Self {
            encoder: snap::raw::Encoder::new(),
            buffer: Vec::new(),
        }
    }
}

impl Framing {
    /// `request` compressed after [`HEADER_BYTES`] of room for the record header: the
    /// bytes for [`crate::buffer::DiskBuffer::push_framed`].
    fn compress(&mut self, request: &[u8]) -> Option<&mut [u8]> {
        let header = HEADER_BYTES as usize;
        let max_len = snap::raw::max_compress_len(request.len());
        if max_len == 0 && !request.is_empty() {
            return None;
        }
        let needed = header + max_len;
        if self.buffer.capacity() > MAX_KEPT_FRAMING_BYTES.max(needed) {
            self.buffer = Vec::new();
        }
        // Only growth is zeroed; the bytes past the compressed length are never read.
        if self.buffer.len() < needed {
            self.buffer.resize(needed, 0);
        }
        let compressed = self
            .encoder
            .compress(request, &mut self.buffer[header..needed])
            .ok()?;
        Some(&mut self.buffer[..header + compressed])
    }
}
