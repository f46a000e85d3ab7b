//! Pipelines at run time. Each has a data path ([`data_path`]: its disk buffer, the
//! topology's inlet and sender ([`crate::topology`]) and its exporter), shared by
//! every signal; a metric pipeline ([`runtime`]) adds the scrape targets it follows
//! ([`targets`], [`kubelet`], and in unsupported mode its raw scrape jobs'
//! [`scrape_jobs`]), a log pipeline ([`logs`]) its log processing and the
//! consumer its inputs feed; the node's log inputs ([`node_logs`]) read once for every
//! log pipeline; a trace pipeline ([`traces`]) adds its span processing, fed by the
//! push receivers. The pipelines of every kind share one disk budget ([`budget`]).
//! Template instances bound to this cluster's Secret or ConfigMap keys are rendered
//! into pipelines before a configuration is applied ([`instances`]).
//!
//! Names are unique per kind only, so a metric and a log pipeline may share one:
//! everything keyed by name (buffer directories, budget grants, reports) says the kind
//! too ([`PipelineKind`], [`PipelineId`]).

pub mod budget;
pub mod data_path;
pub mod instances;
pub mod kubelet;
pub mod logs;
pub mod node_logs;
pub mod runtime;
pub mod scrape_jobs;
pub mod targets;
pub mod traces;

/// The kinds of pipeline an agent runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum PipelineKind {
    /// A `MetricPipeline`.
    Metric,
    /// A `LogPipeline`.
    Log,
    /// A `TracePipeline`.
    Trace,
}

impl PipelineKind {
    /// The resource kind, as the model, the API and health reports spell it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Metric => kaas_pipeline::KIND,
            Self::Log => kaas_pipeline::logs::LOG_KIND,
            Self::Trace => kaas_pipeline::traces::TRACE_KIND,
        }
    }
}

impl std::fmt::Display for PipelineKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A pipeline as the agent knows it: its kind and its name.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PipelineId {
    /// The kind.
    pub kind: PipelineKind,
    /// The name, unique within the kind.
    pub name: String,
}

impl PipelineId {
    /// The metric pipeline `name`.
    pub fn metric(name: &str) -> Self {
        Self {
            kind: PipelineKind::Metric,
            name: name.to_owned(),
        }
    }

    /// The log pipeline `name`.
    pub fn log(name: &str) -> Self {
        Self {
            kind: PipelineKind::Log,
            name: name.to_owned(),
        }
    }

    /// The trace pipeline `name`.
    pub fn trace(name: &str) -> Self {
        Self {
            kind: PipelineKind::Trace,
            name: name.to_owned(),
        }
    }
}

impl std::fmt::Display for PipelineId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.kind, self.name)
    }
}
