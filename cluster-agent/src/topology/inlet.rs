//! Where processed records of any signal enter a pipeline: each becomes one buffer
//! record, the sender is woken, whatever the buffer drops is counted, and a record's
//! [`Ack`] fires once it is durable.
//!
//! A batch the buffer cannot store (full with `dropNewest`, or a failed write on a full
//! or failing disk) is counted as dropped by reason and reported as the pipeline's
//! error (`BufferFull`, [`ErrorReason::BufferWriteFailed`]); a failed write is also returned to
//! the caller, which still holds the batch (it was only borrowed).

use std::sync::{Arc, Mutex};

use tokio::sync::Notify;

use crate::internal_events::{
    BufferDropped, DropReason, ErrorReason, PipelineFailed, PipelineStats, SamplesDropped,
};
use crate::record::signal::Payload;
use kaas_buffer::{BufferError, DiskBuffer, Dropped, HEADER_BYTES, Stream};

/// Fires once its record is durable: written to the pipeline's buffer file, so that
/// it survives the agent being killed. What a receiver waits for before it answers
/// "accepted", and what a file tailer waits for before it commits a read position.
pub struct Ack(Box<dyn FnOnce() + Send>);

impl Ack {
    /// An acknowledgement that calls `on_durable`.
    pub fn new(on_durable: impl FnOnce() + Send + 'static) -> Self {
        Self(Box::new(on_durable))
    }

    fn fire(self) {
        (self.0)();
    }
}

impl std::fmt::Debug for Ack {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Ack")
    }
}

/// What the buffer did with a record it did not fail to write.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stored {
    /// It is in the buffer; its acknowledgement fires once it is durable.
    Kept,
    /// The buffer was full with `dropNewest` (or the record can never fit): it was
    /// dropped and counted, and its acknowledgement never fires.
    Dropped,
}

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
    /// Buffers an encoded, uncompressed record payload of `items` items (the
    /// scrapers' fast path), as a record of `stream` when it holds only that
    /// producer's items (see [`Stream`]). A failed write is counted, reported and
    /// returned (see the module documentation).
    pub fn push_encoded(
        &self,
        payload: &[u8],
        items: usize,
        oldest_ms: i64,
        stream: Option<Stream>,
    ) -> Result<(), BufferError> {
        self.store(payload, items, oldest_ms, stream, None)
            .map(drop)
    }

    /// Buffers a record. A full buffer drops (and counts) according to its policy; a
    /// failed write is counted, reported and returned.
    pub fn push(&self, record: &impl Payload, now_ms: i64) -> Result<(), BufferError> {
        self.store(
            &record.payload(),
            record.items(),
            record.oldest_ms().unwrap_or(now_ms),
            None,
            None,
        )
        .map(drop)
    }

    /// Buffers a record as [`Self::push`] does and fires `ack` once it is durable. A
    /// record the buffer did not store (full, or a failed write) never fires it; the
    /// answer says which of the two (a failed write is the error).
    pub fn push_acked(
        &self,
        record: &impl Payload,
        now_ms: i64,
        ack: Ack,
    ) -> Result<Stored, BufferError> {
        self.store(
            &record.payload(),
            record.items(),
            record.oldest_ms().unwrap_or(now_ms),
            None,
            Some(ack),
        )
    }

    fn store(
        &self,
        payload: &[u8],
        items: usize,
        oldest_ms: i64,
        stream: Option<Stream>,
        ack: Option<Ack>,
    ) -> Result<Stored, BufferError> {
        if items == 0 {
            if let Some(ack) = ack {
                ack.fire();
            }
            return Ok(Stored::Kept);
        }
        let count = u32::try_from(items).unwrap_or(u32::MAX);
        FRAMING.with_borrow_mut(|framing| {
            // Only a payload too large for snappy (4 GiB) does not compress; like a
            // record over the buffer's record limit, it can never be stored.
            let Some(framed) = framing.compress(payload) else {
                self.account(items, false, Dropped::default());
                return Ok(Stored::Dropped);
            };
            let mut buffer = self.buffer.lock().unwrap_or_else(|e| e.into_inner());
            let stored = buffer.push_framed(framed, oldest_ms, count, stream);
            let dropped = buffer.take_dropped();
            drop(buffer);
            match stored {
                Ok(stored) => {
                    self.account(items, stored, dropped);
                    if let Some(ack) = ack.filter(|_| stored) {
                        ack.fire();
                    }
                    Ok(if stored {
                        Stored::Kept
                    } else {
                        Stored::Dropped
                    })
                }
                Err(error) => {
                    self.account(0, true, dropped);
                    self.write_failed(items, &error);
                    Err(error)
                }
            }
        })
    }

    /// Counts a batch the buffer could not write and reports why.
    fn write_failed(&self, items: usize, error: &BufferError) {
        SamplesDropped {
            reason: DropReason::BufferWriteFailed,
            samples: items as u64,
        }
        .emit(&self.stats);
        PipelineFailed::new(ErrorReason::BufferWriteFailed, error.to_string()).emit(&self.stats);
    }

    /// Counts a push and what the buffer dropped for it, and wakes the sender.
    fn account(&self, samples: usize, stored: bool, dropped: Dropped) {
        PipelineStats::add(&self.stats.samples_in, samples as u64);
        BufferDropped(dropped.clone()).emit(&self.stats);
        if !stored {
            SamplesDropped {
                reason: DropReason::BufferFull,
                samples: samples as u64,
            }
            .emit(&self.stats);
            PipelineFailed::new(
                ErrorReason::BufferFull,
                "the buffer is full; new samples are dropped",
            )
            .emit(&self.stats);
        } else if dropped.full > 0 {
            PipelineFailed::new(
                ErrorReason::BufferFull,
                "the buffer is full; the oldest samples were dropped",
            )
            .emit(&self.stats);
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
    /// bytes for [`kaas_buffer::DiskBuffer::push_framed`].
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
