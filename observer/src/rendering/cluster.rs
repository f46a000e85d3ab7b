//! One cluster's configuration: the tenant pipelines its labels select, the provider's
//! central pipeline if the observer has one, and the cluster's `cluster` external label.

use std::collections::BTreeMap;

use kaas_pipeline::ValidatedPipeline;
use kaas_pipeline::agent_config::{AgentConfig, ConfigTemplate, RenderedConfig};

use super::central::{CentralPipelineSettings, central_pipelines};
use crate::store::Cluster;

/// The rendered configuration for `cluster` running `pipelines` (already selected).
/// With `central`, the provider's central pipeline is added (it cannot collide with a
/// tenant pipeline: the `kaas-` prefix is reserved). Streams and the status task render
/// through [`TenantConfigs::render`](super::TenantConfigs::render), which gives the
/// same configuration from a template shared by the tenant's clusters.
pub fn render_for_cluster(
    cluster: &Cluster,
    pipelines: &[ValidatedPipeline],
    central: Option<&CentralPipelineSettings>,
) -> RenderedConfig {
    config_template(cluster, pipelines, central).render(&external_labels(cluster))
}

/// The template of the configuration of `cluster`'s tenant running `pipelines`, plus
/// the central pipeline with `central`; [`external_labels`] complete it for a cluster.
pub(super) fn config_template(
    cluster: &Cluster,
    pipelines: &[ValidatedPipeline],
    central: Option<&CentralPipelineSettings>,
) -> ConfigTemplate {
    let Some(settings) = central else {
        return AgentConfig::template(pipelines);
    };
    let mut all = pipelines.to_vec();
    match central_pipelines(settings) {
        Ok(central) => all.extend(central),
        Err(error) => {
            tracing::error!(cluster = %cluster.id, %error, "the central pipelines are invalid for this cluster; left out");
        }
    }
    AgentConfig::template(&all)
}

/// The external labels of `cluster`'s configuration: its name as `cluster`.
pub(super) fn external_labels(cluster: &Cluster) -> BTreeMap<String, String> {
    BTreeMap::from([("cluster".to_owned(), cluster.id.clone())])
}
