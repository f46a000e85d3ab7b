//! The pipeline models shared by the observer, the cluster-agent and the CRDs:
//! `MetricPipeline`, `LogPipeline` ([`logs`]) and `TracePipeline` ([`traces`]).
//!
//! A pipeline is read in three steps, each with its own type:
//! 1. **parse** ([`document::parse_pipelines`], or serde directly): shape only, unknown
//!    fields refused;
//! 2. **validate** ([`validate`]): pure, complete, every error with its field path
//!    ([`ValidationErrors`]), in a [`ValidationContext`] saying where the pipeline comes
//!    from and what the provider allows ([`policy`], [`paths`]);
//! 3. **use** a [`ValidatedPipeline`], which holds compiled regexes, parsed URLs and
//!    durations. Nothing unvalidated can be stored, rendered or applied.
//!
//! The sections of a pipeline each live in their own module with their validation:
//! [`input`], [`processors`], [`output`] (its URLs in [`output_url`]), [`buffer`],
//! [`selector`]; credentials are
//! [`secret`] references; [`status`] holds the conditions the observer reports.
//! [`input::unsupported`] checks the raw Prometheus scrape configurations of a pipeline
//! in unsupported mode. [`templates`] holds `PipelineTemplate`s and the instances made from them.
//! [`agent_config`] is what an agent runs, [`crd`] renders the CRD. Targets carrying the
//! agent's credentials are [`sealed`] against relabeling. [`yaml`] reads documents
//! others wrote with their aliases' expansion bounded.

#![warn(missing_docs)]

pub mod agent_config;
pub mod buffer;
pub mod crd;
pub mod document;
pub mod errors;
pub mod input;
pub mod logs;
pub mod names;
pub mod output;
pub mod output_url;
pub mod paths;
pub mod pipeline;
pub mod policy;
pub mod processors;
pub mod role;
pub mod sealed;
pub mod secret;
pub mod selector;
pub mod status;
pub mod templates;
pub mod traces;
pub mod units;
pub mod yaml;

pub use errors::{FieldError, ValidationErrors};
pub use logs::{
    LOG_KIND, LogPipeline, LogPipelineSpec, ValidatedLogPipeline, validate_log_pipeline,
};
pub use pipeline::{
    API_GROUP, API_GROUP_VERSION, API_VERSION, KIND, MetricPipeline, MetricPipelineSpec,
    ValidatedPipeline, validate,
};
pub use policy::{Origin, ProviderPolicy, SecretNamespaces, ValidationContext};
pub use traces::{
    TRACE_KIND, TracePipeline, TracePipelineSpec, ValidatedTracePipeline, validate_trace_pipeline,
};
