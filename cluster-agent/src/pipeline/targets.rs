//! The scrape targets of one pipeline: a loop per target, started when the target
//! appears in discovery and stopped, with staleness markers for its series, when it
//! disappears. Targets are identified by their complete label set, so a target whose
//! labels change is a new target, as in Prometheus. The loops hand their samples to
//! the pipeline's inlet, which is their [`ScrapeSink`].

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use kaas_pipeline::processors::ValidatedProcessors;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::internal_events::{ErrorReason, PipelineFailed};
use crate::labels::Labels;
use crate::scrape::client::ScrapeClient;
use crate::scrape::config::ScrapeConfig;
use crate::scrape::scraper::{Scraper, TargetHealth};
use crate::scrape::sink::ScrapeSink;
use crate::scrape::target::Target;
use crate::topology::inlet::Inlet;

/// The pipeline's inlet is where its scrape loops hand their samples.
impl ScrapeSink for Inlet {
    fn push_encoded(&self, request: &[u8], samples: usize, oldest_ms: i64, stream: u64) {
        // A failed write is counted and reported by the inlet; the next scrape is the
        // retry.
        let _ = Inlet::push_encoded(self, request, samples, oldest_ms, Some(stream));
    }

    fn report_error(&self, reason: ErrorReason, message: String) {
        PipelineFailed::new(reason, message).emit(&self.stats);
    }
}

/// A target as discovery wants it.
#[derive(Clone, Debug)]
pub struct DesiredTarget {
    /// The target.
    pub target: Target,
    /// How to scrape it.
    pub config: ScrapeConfig,
    /// A client of its own (e.g. the kubelet's TLS settings); the pipeline's otherwise.
    pub client: Option<ScrapeClient>,
    /// Processors of its own (e.g. with a namespace filter); the pipeline's otherwise.
    pub processors: Option<Arc<ValidatedProcessors>>,
}

/// A target's state, for health reports.
#[derive(Clone, Debug)]
pub struct TargetState {
    /// The target's public labels.
    pub labels: Labels,
    /// Its health.
    pub health: Arc<Mutex<TargetHealth>>,
}

struct RunningTarget {
    state: TargetState,
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

/// What one sync changed.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct SyncReport {
    /// Loops started.
    pub started: usize,
    /// Loops stopped.
    pub stopped: usize,
}

/// The running scrape loops of one pipeline.
pub struct TargetSet {
    client: ScrapeClient,
    processors: Arc<ValidatedProcessors>,
    external_labels: Arc<Labels>,
    inlet: Inlet,
    running: HashMap<Labels, RunningTarget>,
    stopping: Vec<JoinHandle<()>>,
}

impl TargetSet {
    /// An empty set whose loops share `client` and feed `inlet`.
    pub fn new(
        client: ScrapeClient,
        processors: Arc<ValidatedProcessors>,
        external_labels: Arc<Labels>,
        inlet: Inlet,
    ) -> Self {
        Self {
            client,
            processors,
            external_labels,
            inlet,
            running: HashMap::new(),
            stopping: Vec::new(),
        }
    }

    /// Takes the loops out (to stop them without holding a lock), leaving an empty set
    /// that shares the client.
    pub fn take(&mut self) -> Self {
        let empty = Self::new(
            self.client.clone(),
            Arc::default(),
            self.external_labels.clone(),
            self.inlet.clone(),
        );
        std::mem::replace(self, empty)
    }

    /// Makes the running loops match `desired`. Must be called inside a Tokio runtime.
    pub fn sync(&mut self, desired: Vec<DesiredTarget>) -> SyncReport {
        let mut report = SyncReport::default();
        let mut wanted: HashMap<Labels, DesiredTarget> = HashMap::new();
        for target in desired {
            wanted.entry(target.target.labels.clone()).or_insert(target);
        }
        let gone: Vec<Labels> = self
            .running
            .keys()
            .filter(|labels| !wanted.contains_key(*labels))
            .cloned()
            .collect();
        for labels in gone {
            if let Some(target) = self.running.remove(&labels) {
                target.stop.send_replace(true);
                self.stopping.push(target.task);
                report.stopped += 1;
            }
        }
        self.stopping.retain(|task| !task.is_finished());
        for (labels, desired) in wanted {
            if self.running.contains_key(&labels) {
                continue;
            }
            let scraper = Scraper::new(
                desired.target.clone(),
                desired.config,
                desired.client.unwrap_or_else(|| self.client.clone()),
                desired
                    .processors
                    .unwrap_or_else(|| self.processors.clone()),
                self.external_labels.clone(),
                self.inlet.clone(),
            );
            let state = TargetState {
                labels: desired.target.public.clone(),
                health: scraper.health.clone(),
            };
            let (stop, stop_rx) = watch::channel(false);
            let task = tokio::spawn(scraper.run(stop_rx));
            self.running
                .insert(labels, RunningTarget { state, stop, task });
            report.started += 1;
        }
        report
    }

    /// The targets and their health.
    pub fn states(&self) -> Vec<TargetState> {
        self.running.values().map(|t| t.state.clone()).collect()
    }

    /// Stops every loop and waits until each has written its staleness markers.
    pub async fn stop_all(&mut self) {
        let mut tasks = std::mem::take(&mut self.stopping);
        for (_, target) in self.running.drain() {
            target.stop.send_replace(true);
            tasks.push(target.task);
        }
        for task in tasks {
            let _ = task.await;
        }
    }
}
