//! The signal-generic part of a running pipeline: its disk buffer, the inlet that
//! writes into it and the sender task that drains it to the pipeline's exporter
//! ([`crate::topology`]). A metric pipeline ([`super::runtime`]) and a log pipeline
//! ([`super::logs`]) each own one [`DataPath`] and add only what their signal needs
//! (scrape targets; log processing and inputs).
//!
//! Stopping is orderly: whoever feeds the inlet stops first, then the sender gets
//! [`STOP_GRACE`] to deliver what is buffered (cut short when the backend is
//! unreachable), then it persists its ack position. Whatever is not delivered stays in
//! the buffer for the next start, which reopens the same directory.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kaas_buffer::{BufferError, DiskBuffer, Limits};
use kaas_pipeline::buffer::ValidatedBuffer;
use tokio::sync::{Notify, watch};
use tokio::task::JoinHandle;

use crate::exporters::Export;
use crate::internal_events::{ErrorReason, PipelineFailed, PipelineStats};
use crate::pipeline::budget::BufferGrant;
use crate::topology::inlet::Inlet;
use crate::topology::sender::{Sender, SenderConfig};

/// How long a stopping pipeline may keep sending what it has buffered.
pub const STOP_GRACE: Duration = Duration::from_secs(5);

/// A pipeline's buffer, inlet and sender, for any signal.
pub struct DataPath {
    /// Counters.
    pub stats: Arc<PipelineStats>,
    /// The buffer, for size and age.
    pub buffer: Arc<Mutex<DiskBuffer>>,
    /// The bound the buffer runs with: the pipeline's share of the agent's budget.
    pub buffer_grant: BufferGrant,
    /// Where records enter the pipeline.
    pub inlet: Inlet,
    stop_sender: watch::Sender<bool>,
    sender: JoinHandle<()>,
}

impl DataPath {
    /// Opens the buffer in `dir` with the pipeline's `buffer` settings bounded by
    /// `grant`, and starts the sender to `exporter`. Must be called inside a Tokio
    /// runtime.
    pub fn start<E: Export>(
        dir: PathBuf,
        buffer: &ValidatedBuffer,
        grant: BufferGrant,
        stats: Arc<PipelineStats>,
        exporter: E,
    ) -> Result<Self, BufferError> {
        let limits = Limits {
            max_bytes: grant.max_bytes,
            ..Limits::from(buffer)
        };
        let (disk, _recovery) = DiskBuffer::open(dir, limits)?;
        let disk = Arc::new(Mutex::new(disk));
        if let Some(reason) = &grant.reduced {
            PipelineFailed::new(ErrorReason::BufferBudgetExceeded, reason.clone()).emit(&stats);
        }
        let wake = Arc::new(Notify::new());
        let inlet = Inlet {
            buffer: disk.clone(),
            stats: stats.clone(),
            wake: wake.clone(),
        };
        let sender = Sender {
            buffer: disk.clone(),
            exporter: Arc::new(exporter),
            config: SenderConfig::with_max_age(buffer.max_age),
            stats: stats.clone(),
            wake,
        };
        let (stop_sender, stop) = watch::channel(false);
        let sender = tokio::spawn(sender.run(stop));
        Ok(Self {
            stats,
            buffer: disk,
            buffer_grant: grant,
            inlet,
            stop_sender,
            sender,
        })
    }

    /// Bytes in the buffer and the age of its oldest data in seconds at `now_ms`;
    /// `None` while the buffer is busy with a write (a reader never waits for it).
    pub fn buffer_state(&self, now_ms: i64) -> Option<(u64, f64)> {
        let buffer = self.buffer.try_lock().ok()?;
        let age = buffer
            .oldest_timestamp_ms()
            .map_or(0.0, |ts| now_ms.saturating_sub(ts).max(0) as f64 / 1000.0);
        Some((buffer.bytes(), age))
    }

    /// Records in the buffer not yet delivered (acknowledged); `None` while the buffer
    /// is busy with a write.
    pub fn pending_records(&self) -> Option<u64> {
        self.buffer
            .try_lock()
            .ok()
            .map(|buffer| buffer.pending_records())
    }

    /// Lets the sender deliver what is buffered for up to [`STOP_GRACE`], then stops
    /// it (see the module documentation). Call it once nothing feeds the inlet.
    pub async fn stop(self) {
        let stats = self.stats.clone();
        let buffer = self.buffer.clone();
        let _ = tokio::time::timeout(STOP_GRACE, async {
            loop {
                let pending = buffer.lock().map(|b| b.pending_records()).unwrap_or(0);
                if pending == 0
                    || stats
                        .last_error()
                        .is_some_and(|e| e.reason == ErrorReason::BackendUnreachable)
                {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await;
        self.stop_sender.send_replace(true);
        let _ = self.sender.await;
    }
}
