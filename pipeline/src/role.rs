//! The roles of an agent's instances within a cluster, and which part of the cluster's
//! configuration each runs.
//!
//! Container and journal logs are node-local, so a cluster runs two kinds of agent
//! instance: one cluster-level instance (a Deployment) and one instance per node (a
//! DaemonSet). Each is sent only what it can run:
//!
//! | role | metric pipelines | central pipelines | log pipelines | trace pipelines |
//! |---|---|---|---|---|
//! | [`AgentRole::Cluster`] | all selected | yes | those with an `otlp` input, with only that input | all selected |
//! | [`AgentRole::Node`] | none | none | those with a `runtime` or `node` input, with only those inputs | none |
//!
//! So a node instance never holds a metric or trace pipeline's credentials, and a log
//! pipeline's records are read once per source: pushed records by the cluster
//! instance, a node's files and journal by that node's instance. Spans are only ever
//! pushed, so trace pipelines run where the push receivers do.

use crate::logs::ValidatedLogPipeline;

/// The part an agent instance plays in its cluster.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum AgentRole {
    /// The cluster-level instance; also every agent that predates roles.
    #[default]
    Cluster,
    /// A node's instance, reading that node's container logs and journal.
    Node,
}

impl AgentRole {
    /// Whether instances of this role run metric pipelines (tenant and central).
    pub fn runs_metric_pipelines(self) -> bool {
        self == AgentRole::Cluster
    }

    /// Whether instances of this role run trace pipelines: those serving pushes.
    pub fn runs_trace_pipelines(self) -> bool {
        self == AgentRole::Cluster
    }

    /// The name used in flags, logs and statuses.
    pub fn as_str(self) -> &'static str {
        match self {
            AgentRole::Cluster => "cluster",
            AgentRole::Node => "node",
        }
    }
}

impl ValidatedLogPipeline {
    /// Whether an instance of `role` runs a part of this pipeline (has a buffer for
    /// it): whether [`ValidatedLogPipeline::for_role`] gives a part.
    pub fn runs_on(&self, role: AgentRole) -> bool {
        let inputs = &self.inputs;
        match role {
            AgentRole::Cluster => inputs.otlp.is_some(),
            AgentRole::Node => inputs.runtime.is_some() || inputs.node.is_some(),
        }
    }

    /// The part of this pipeline an instance of `role` runs: the pipeline with only the
    /// inputs of that role, or `None` when it has none of them.
    pub fn for_role(&self, role: AgentRole) -> Option<ValidatedLogPipeline> {
        let mut part = self.clone();
        let (resource, inputs) = (&mut part.resource.spec.input, &mut part.inputs);
        match role {
            AgentRole::Cluster => {
                (resource.runtime, resource.node) = (None, None);
                (inputs.runtime, inputs.node) = (None, None);
            }
            AgentRole::Node => {
                resource.otlp = None;
                inputs.otlp = None;
            }
        }
        let any = inputs.runtime.is_some() || inputs.node.is_some() || inputs.otlp.is_some();
        any.then_some(part)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::logs::{LogPipeline, validate_log_pipeline};
    use crate::policy::ValidationContext;

    fn pipeline(input: &str) -> ValidatedLogPipeline {
        let text = format!(
            "apiVersion: telemetry.kaas-observer.io/v1alpha1\nkind: LogPipeline\n\
             metadata: {{name: p}}\nspec:\n  input: {input}\n  \
             output: {{loki: {{url: \"https://loki.example\"}}}}\n"
        );
        let resource: LogPipeline = serde_yaml::from_str(&text).unwrap();
        validate_log_pipeline(&resource, &ValidationContext::tenant_default()).unwrap()
    }

    #[test]
    fn each_role_gets_only_its_inputs_and_nothing_when_it_has_none() {
        let all = pipeline(
            "{runtime: {enabled: true}, node: {enabled: true, files: {paths: [\"/var/log/nginx/*.log\"]}}, otlp: {enabled: true}}",
        );
        let node = all.for_role(AgentRole::Node).unwrap();
        assert!(node.inputs.runtime.is_some() && node.inputs.node.is_some());
        assert!(node.inputs.otlp.is_none() && node.spec().input.otlp.is_none());
        let cluster = all.for_role(AgentRole::Cluster).unwrap();
        assert!(cluster.inputs.otlp.is_some());
        assert!(cluster.inputs.runtime.is_none() && cluster.inputs.node.is_none());
        assert!(cluster.spec().input.runtime.is_none() && cluster.spec().input.node.is_none());

        for role in [AgentRole::Cluster, AgentRole::Node] {
            assert!(all.runs_on(role));
        }

        let pushed = pipeline("{otlp: {enabled: true}}");
        assert!(pushed.for_role(AgentRole::Node).is_none());
        assert!(!pushed.runs_on(AgentRole::Node) && pushed.runs_on(AgentRole::Cluster));
        assert!(pushed.for_role(AgentRole::Cluster).is_some());
        // A disabled input is not an input of the role.
        let files = pipeline("{runtime: {enabled: true}, otlp: {enabled: false}}");
        assert!(files.for_role(AgentRole::Cluster).is_none());
        assert!(files.for_role(AgentRole::Node).is_some());
        assert!(!files.runs_on(AgentRole::Cluster) && files.runs_on(AgentRole::Node));
    }

    #[test]
    fn the_part_a_role_gets_still_validates() {
        let all = pipeline("{runtime: {enabled: true}, otlp: {enabled: true}}");
        for role in [AgentRole::Cluster, AgentRole::Node] {
            let part = all.for_role(role).unwrap();
            validate_log_pipeline(part.resource(), &ValidationContext::tenant_default())
                .unwrap_or_else(|e| panic!("{role:?}: {e}"));
        }
    }
}
