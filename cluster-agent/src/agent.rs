//! The agent's apply path: turning a validated agent configuration into running
//! pipelines. Standalone mode (a file) and observer-connected mode (the control
//! stream) both come through [`Agent::apply`].
//!
//! Applying compares each pipeline with what runs: an unchanged pipeline keeps running
//! untouched (no scrape gap, no reconnect), a changed one is stopped and started with
//! the new settings on the same buffer directory (nothing buffered is lost), a removed
//! one is stopped (its buffer directory stays, for an operator or a later re-add).
//!
//! Every apply also shares the agent's buffer budget between the pipelines
//! ([`crate::buffer::budget`]); a pipeline whose share changes is restarted with its new
//! bound, like a changed one.

use std::sync::Arc;

use kaas_pipeline::agent_config::ValidatedAgentConfig;
use tokio::sync::RwLock;

use crate::buffer::budget::{BufferGrant, DEFAULT_BUFFER_BUDGET, allocate};
use crate::labels::Labels;
use crate::pipeline::runtime::{AgentContext, Pipelines, RunningPipeline};

/// What one apply did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct ApplyReport {
    /// Pipelines started for the first time.
    pub started: Vec<String>,
    /// Pipelines restarted with changed settings.
    pub restarted: Vec<String>,
    /// Pipelines left running unchanged.
    pub unchanged: Vec<String>,
    /// Pipelines stopped because they were removed.
    pub stopped: Vec<String>,
    /// Pipelines that could not start, with the reason.
    pub failed: Vec<(String, String)>,
}

/// The running agent.
pub struct Agent {
    base: AgentContext,
    external_labels: Arc<Labels>,
    /// Bytes all pipelines' buffers may use together.
    buffer_budget: u64,
    /// The running pipelines, readable by reporters.
    pub pipelines: Arc<RwLock<Pipelines>>,
}

impl Agent {
    /// An agent with no pipelines yet.
    pub fn new(base: AgentContext) -> Self {
        Self {
            external_labels: base.external_labels.clone(),
            base,
            buffer_budget: DEFAULT_BUFFER_BUDGET,
            pipelines: Arc::new(RwLock::new(Pipelines::new())),
        }
    }

    /// Shares `bytes` between the buffers of the pipelines applied from now on (the
    /// default is [`DEFAULT_BUFFER_BUDGET`]).
    pub fn set_buffer_budget(&mut self, bytes: u64) {
        self.buffer_budget = bytes;
    }

    /// Uses `secrets` for pipelines started from now on (running pipelines keep the
    /// store they started with, which still serves their namespaces).
    pub fn set_secret_store(
        &mut self,
        secrets: std::sync::Arc<dyn crate::outbound::auth::SecretStore>,
    ) {
        self.base.secrets = secrets;
    }

    /// Makes the running pipelines match `config`.
    pub async fn apply(&mut self, config: ValidatedAgentConfig) -> ApplyReport {
        let external_labels = Arc::new(Labels::from_pairs(config.external_labels.clone()));
        let labels_changed = external_labels != self.external_labels;
        self.external_labels = external_labels.clone();
        let context = AgentContext {
            external_labels,
            ..self.base.clone()
        };
        let mut report = ApplyReport::default();
        let mut running = self.pipelines.write().await;
        let wanted: Vec<String> = config
            .pipelines
            .iter()
            .map(|p| p.name().to_owned())
            .collect();
        let removed: Vec<String> = running
            .keys()
            .filter(|name| !wanted.contains(name))
            .cloned()
            .collect();
        for name in removed {
            if let Some(pipeline) = running.remove(&name) {
                pipeline.stop().await;
                report.stopped.push(name);
            }
        }
        let mut grants = allocate(
            self.buffer_budget,
            config
                .pipelines
                .iter()
                .map(|p| (p.name(), p.buffer.max_bytes.get())),
        );
        for pipeline in config.pipelines {
            let name = pipeline.name().to_owned();
            let grant = grants.remove(&name).unwrap_or(BufferGrant {
                max_bytes: pipeline.buffer.max_bytes.get(),
                reduced: None,
            });
            let previous = running.remove(&name);
            let restart = match &previous {
                Some(current)
                    if !labels_changed
                        && current.buffer_grant == grant
                        && current.pipeline.resource().spec == pipeline.resource().spec =>
                {
                    if let Some(current) = previous {
                        running.insert(name.clone(), current);
                    }
                    report.unchanged.push(name);
                    continue;
                }
                Some(_) => true,
                None => false,
            };
            if let Some(current) = previous {
                current.stop().await;
            }
            match RunningPipeline::start(pipeline, &context, grant) {
                Ok(started) => {
                    running.insert(name.clone(), started);
                    if restart {
                        report.restarted.push(name);
                    } else {
                        report.started.push(name);
                    }
                }
                Err(error) => report.failed.push((name, error.to_string())),
            }
        }
        report
    }

    /// Stops every pipeline.
    pub async fn shutdown(&mut self) {
        let mut running = self.pipelines.write().await;
        let all = std::mem::take(&mut *running);
        for (_, pipeline) in all {
            pipeline.stop().await;
        }
    }
}
