//! One cluster's configuration: the tenant pipelines of every kind its labels select
//! (metric pipelines in `pipelines`, log pipelines in `logPipelines`, trace pipelines
//! in `tracePipelines`, template instances the agent renders itself in
//! `pipelineInstances`), the provider's central pipelines if the observer has them (the
//! central log pipeline with `--central-logs`), and the cluster's `cluster` external
//! label; each agent instance gets the part for its role ([`kaas_pipeline::role`]).
//!
//! # Where pushes go
//! The pushed inputs of every signal (metric pipelines' `otlp` and `remoteWrite`, log
//! pipelines' `otlp`, trace pipelines) are rendered to the cluster's gateway replicas
//! while the cluster's gateway is in use, and to the cluster-level instance otherwise
//! ([`PushPlacement`]). A gateway is in use while a gateway instance of the cluster has
//! reported health within the instance-health time-to-live
//! (`Store::clusters_with_gateway`, `observer serve --instance-health-ttl`, 5m): a
//! gateway replica always gets the pushed parts, runs them, and so reports them within
//! a health interval of its first configuration. So a small cluster without a gateway
//! needs nothing: its cluster instance serves the pushes as before; installing the
//! gateway moves them within a health interval (the cluster instance's stream checks
//! again every [`crate::control::GATEWAY_CHECK_INTERVAL`]), and removing it moves them
//! back a time-to-live after its last report. While they move, both kinds of instance
//! run the pushed parts (each with its own buffer); the push Service sends to one of
//! them, so nothing is taken twice.

use std::collections::BTreeMap;

use kaas_pipeline::agent_config::{AgentConfig, ConfigTemplate, RenderedConfig};
use kaas_pipeline::role::{AgentRole, PushPlacement};
use kaas_pipeline::templates::ValidatedPendingInstance;
use kaas_pipeline::{ValidatedLogPipeline, ValidatedPipeline, ValidatedTracePipeline};

use super::central::{CentralPipelineSettings, central_pipelines_with};
use super::central_logs::central_log_pipeline;
use crate::control_plane::ValidatedControlPlane;
use crate::store::Cluster;

/// The rendered configuration for `cluster` running `pipelines` (already selected), as
/// its cluster-level instance gets it without a gateway. With `central`, the provider's
/// central pipeline is added (it cannot collide with a tenant pipeline: the `kaas-`
/// prefix is reserved). Streams and the status task render through
/// [`TenantConfigs::render_for_agent`](super::TenantConfigs::render_for_agent), which
/// gives the same configuration from a template shared by the tenant's clusters.
pub fn render_for_cluster(
    cluster: &Cluster,
    pipelines: &[ValidatedPipeline],
    central: Option<&CentralPipelineSettings>,
) -> RenderedConfig {
    config_template(
        cluster,
        (pipelines, &[], &[]),
        &[],
        central,
        None,
        (AgentRole::Cluster, PushPlacement::ClusterInstance),
    )
    .render(&external_labels(cluster))
}

/// The selected pipelines of every kind: metric, log and trace.
type SelectedPipelines<'a> = (
    &'a [ValidatedPipeline],
    &'a [ValidatedLogPipeline],
    &'a [ValidatedTracePipeline],
);

/// The template of the configuration of `cluster`'s tenant running the `selected`
/// pipelines, plus the central pipeline with `central`, scraping the control plane as
/// `control_plane` says (the defaults when `None`), as far as an instance of `role`
/// runs them with the cluster's pushes placed as `placement` says: each pipeline cut
/// to the part of that role, so a node instance never gets a metric or trace
/// pipeline's credentials, a gateway never a pipeline that only scrapes, nor the
/// central ones. The template `instances` the agent renders itself go in whole (the
/// caller picked those with a part for the role); the agent cuts what it rendered to
/// its role, and a cluster instance whose pushes go to the gateway to its part without
/// them (`pushesToGateway`). [`external_labels`] complete it for a cluster.
pub(super) fn config_template(
    cluster: &Cluster,
    (pipelines, log_pipelines, trace_pipelines): SelectedPipelines<'_>,
    instances: &[ValidatedPendingInstance],
    central: Option<&CentralPipelineSettings>,
    control_plane: Option<&ValidatedControlPlane>,
    (role, placement): (AgentRole, PushPlacement),
) -> ConfigTemplate {
    let central_logs = central
        .filter(|settings| settings.logs)
        .and_then(|settings| match central_log_pipeline(settings) {
            Ok(pipeline) => Some(pipeline),
            Err(error) => {
                tracing::error!(cluster = %cluster.id, %error, "the central log pipeline is invalid; left out");
                None
            }
        });
    let log_pipelines: Vec<ValidatedLogPipeline> = log_pipelines
        .iter()
        .chain(&central_logs)
        .filter_map(|pipeline| pipeline.for_role(role, placement))
        .collect();
    let trace_pipelines: Vec<ValidatedTracePipeline> = trace_pipelines
        .iter()
        .filter_map(|pipeline| pipeline.for_role(role, placement))
        .collect();
    let mut all: Vec<ValidatedPipeline> = pipelines
        .iter()
        .filter_map(|pipeline| pipeline.for_role(role, placement))
        .collect();
    if let Some(settings) = central.filter(|_| role.runs_central_pipelines()) {
        let defaults = ValidatedControlPlane::default();
        match central_pipelines_with(settings, control_plane.unwrap_or(&defaults)) {
            Ok(central) => all.extend(central),
            Err(error) => {
                tracing::error!(cluster = %cluster.id, %error, "the central pipelines are invalid for this cluster; left out");
            }
        }
    }
    // The cluster instance cuts the instances it renders as these were cut.
    let pushes_to_gateway = role == AgentRole::Cluster && placement == PushPlacement::Gateway;
    let instances = (instances, pushes_to_gateway);
    AgentConfig::template_with_instances(&all, &log_pipelines, &trace_pipelines, instances)
}

/// The external labels of `cluster`'s configuration: its name as `cluster`.
pub(super) fn external_labels(cluster: &Cluster) -> BTreeMap<String, String> {
    BTreeMap::from([("cluster".to_owned(), cluster.id.clone())])
}
