//! Desired state: what each cluster's agent should run, rendered from the store.
//!
//! * [`cluster`]: one cluster's configuration, the tenant pipelines its labels select
//!   plus the provider's central pipeline, with the cluster's `cluster` external label
//!   ([`render_for_cluster`]);
//! * [`tenant_cache`]: each tenant's pipelines as last read, with the templates rendered
//!   from them, shared by every agent stream of the tenant and by the status task;
//! * [`central`]: the provider's central pipeline every cluster runs, with each
//!   cluster's control-plane setting ([`crate::control_plane`]);
//! * [`central_logs`]: the provider's central log pipeline every node runs with
//!   `--central-logs`.
//!
//! Rendering is a pure function of stored data: the control service
//! ([`crate::control`]) renders to push a configuration, its status task and the
//! configuration-state series ([`crate::integrations::config_state`]) render to know
//! the desired hash, and all of them get the same bytes. This module reads the store
//! and nothing else of the observer.

pub mod central;
pub mod central_logs;
pub mod cluster;
pub mod tenant_cache;
#[cfg(test)]
mod tests_roles;

pub use central::{
    CENTRAL_AGENT_PIPELINE_NAME, CENTRAL_PIPELINE_NAME, CentralPipelineSettings, CentralScrape,
    DEFAULT_TENANT_HEADER, central_pipelines, central_pipelines_with, is_reserved_pipeline_name,
};
pub use central_logs::{CENTRAL_LOGS_PIPELINE_NAME, central_log_pipeline};
pub use cluster::render_for_cluster;
pub use tenant_cache::{
    AgentFeatures, Pipelines, TenantConfigs, TenantPipelines, is_pending_rendering,
};
