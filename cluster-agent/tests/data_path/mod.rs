//! One pipeline's data path in a test, for any signal: a fresh disk buffer, the inlet
//! into it and a sender draining it to an exporter, with the pipeline's counters.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use kaas_buffer::{DiskBuffer, Limits};
use kaas_cluster_agent::exporters::Export;
use kaas_cluster_agent::internal_events::PipelineStats;
use kaas_cluster_agent::topology::inlet::Inlet;
use kaas_cluster_agent::topology::sender::{Sender, SenderConfig};
use kaas_pipeline::buffer::WhenFull;
use tokio::sync::{Notify, watch};

/// How long a test waits for a buffer to drain before it fails.
const DRAIN_DEADLINE: Duration = Duration::from_secs(30);
/// Longer than any test runs: nothing expires.
pub const NEVER: Duration = Duration::from_secs(100 * 365 * 24 * 3600);

/// A pipeline's buffer with its inlet; [`TestPipeline::start`] adds the sender.
pub struct TestPipeline {
    _dir: tempfile::TempDir,
    /// The inlet (its `buffer` is the pipeline's buffer).
    pub inlet: Inlet,
    /// The pipeline's counters.
    pub stats: Arc<PipelineStats>,
    shutdown: Option<(watch::Sender<bool>, tokio::task::JoinHandle<()>)>,
}

impl TestPipeline {
    /// A pipeline `name` with a 64 MiB buffer in which nothing expires.
    pub fn open(name: &str) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let limits = Limits {
            max_bytes: 64 << 20,
            max_age: NEVER,
            when_full: WhenFull::DropNewest,
        };
        let (buffer, _) = DiskBuffer::open(dir.path(), limits).expect("open buffer");
        let stats = Arc::new(PipelineStats::named(name));
        let inlet = Inlet {
            buffer: Arc::new(Mutex::new(buffer)),
            stats: stats.clone(),
            wake: Arc::new(Notify::new()),
        };
        Self {
            _dir: dir,
            inlet,
            stats,
            shutdown: None,
        }
    }

    /// Starts the sender to `exporter` with `config`.
    pub fn start<E: Export>(&mut self, exporter: Arc<E>, config: SenderConfig) {
        let sender = Sender {
            buffer: self.inlet.buffer.clone(),
            exporter,
            config,
            stats: self.stats.clone(),
            wake: self.inlet.wake.clone(),
        };
        let (shutdown, shutdown_rx) = watch::channel(false);
        self.shutdown = Some((shutdown, tokio::spawn(sender.run(shutdown_rx))));
    }

    /// Records not yet delivered or dropped.
    pub fn pending_records(&self) -> u64 {
        self.inlet.buffer.lock().expect("lock").pending_records()
    }

    /// Waits until every record was delivered or dropped.
    pub async fn drained(&self) {
        tokio::time::timeout(DRAIN_DEADLINE, async {
            while self.pending_records() > 0 {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
        .await
        .unwrap_or_else(|_| {
            panic!(
                "the buffer did not drain; last error: {:?}",
                self.stats.last_error()
            )
        });
    }

    /// Stops the sender; the pipeline's counters.
    pub async fn stop(mut self) -> Arc<PipelineStats> {
        if let Some((shutdown, task)) = self.shutdown.take() {
            shutdown.send_replace(true);
            task.await.expect("sender");
        }
        self.stats
    }
}
