//! The roles of an agent's instances within a cluster, and which part of the cluster's
//! configuration each runs.
//!
//! Container and journal logs are node-local, and pushed data scales with the
//! workloads, so a cluster runs up to three kinds of agent instance: one cluster-level
//! instance (a Deployment), one instance per node (a DaemonSet), and, optionally, any
//! number of gateway replicas (a StatefulSet scaled by a HorizontalPodAutoscaler). Each
//! is sent only what it can run ([`PushPlacement`] says where the pushed inputs go):
//!
//! | role | scraped metric inputs | pushed inputs (OTLP metrics/logs/traces, remote-write, Zipkin) | central pipelines | node log inputs |
//! |---|---|---|---|---|
//! | [`AgentRole::Cluster`] | all | without a gateway ([`PushPlacement::ClusterInstance`]) | yes | none |
//! | [`AgentRole::Gateway`] | none | all | none | none |
//! | [`AgentRole::Node`] | none | none | none | `runtime` and `node` inputs of log pipelines |
//!
//! Each instance gets a pipeline cut to the inputs of its part (a metric pipeline with
//! `prometheus` and `otlp` inputs is scraped by the cluster instance and takes pushes on
//! the gateways, each with its own buffer), or not at all when it has none of them. So
//! a node instance never holds a metric or trace pipeline's credentials, a gateway
//! never a pipeline that only scrapes nor the provider's central pipelines, and every
//! record is read once: a scrape by the one cluster instance (scaling the gateways
//! never duplicates a scrape), a push by whichever instance the push Service sends it
//! to, a node's files and journal by that node's instance.
//!
//! # Where pushes go
//! A cluster without a gateway needs none: the cluster instance serves the push ports,
//! as before gateways existed. A cluster whose gateway is in use (the observer decides,
//! see `observer::rendering`) has the pushed inputs rendered to the gateway replicas
//! only, and the cluster instance keeps the scrapes and the central pipelines. Gateway
//! replicas always get the pushed inputs: a replica that runs at all is one the push
//! Service sends to.

use crate::logs::ValidatedLogPipeline;
use crate::pipeline::ValidatedPipeline;
use crate::traces::ValidatedTracePipeline;

/// The part an agent instance plays in its cluster.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum AgentRole {
    /// The cluster-level instance; also every agent that predates roles.
    #[default]
    Cluster,
    /// A node's instance, reading that node's container logs and journal.
    Node,
    /// A gateway replica: pushed data of every signal, nothing scraped.
    Gateway,
}

/// Which instances of a cluster serve its pushed inputs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum PushPlacement {
    /// The cluster-level instance: the cluster has no gateway in use.
    #[default]
    ClusterInstance,
    /// The gateway replicas; the cluster instance serves no push input.
    Gateway,
}

impl AgentRole {
    /// Every role, for tables and tests.
    pub const ALL: [AgentRole; 3] = [AgentRole::Cluster, AgentRole::Node, AgentRole::Gateway];

    /// Whether instances of this role scrape (metric pipelines' pull inputs).
    pub fn scrapes(self) -> bool {
        self == AgentRole::Cluster
    }

    /// Whether instances of this role run the provider's central pipelines.
    pub fn runs_central_pipelines(self) -> bool {
        self == AgentRole::Cluster
    }

    /// Whether instances of this role serve pushed inputs when the cluster's pushes
    /// are placed as `placement` says.
    pub fn serves_pushes(self, placement: PushPlacement) -> bool {
        match self {
            AgentRole::Cluster => placement == PushPlacement::ClusterInstance,
            AgentRole::Gateway => true,
            AgentRole::Node => false,
        }
    }

    /// The name used in flags, logs and statuses.
    pub fn as_str(self) -> &'static str {
        match self {
            AgentRole::Cluster => "cluster",
            AgentRole::Node => "node",
            AgentRole::Gateway => "gateway",
        }
    }

    /// The role named `name` ([`AgentRole::as_str`]).
    pub fn from_name(name: &str) -> Option<AgentRole> {
        AgentRole::ALL
            .into_iter()
            .find(|role| role.as_str() == name)
    }
}

impl ValidatedPipeline {
    /// Whether the pipeline has a pushed input (`otlp`, `remoteWrite`).
    pub fn has_push_inputs(&self) -> bool {
        self.inputs.otlp.is_some() || self.inputs.remote_write.is_some()
    }

    /// Whether the pipeline has a scraped input (`prometheus`, `istio`, `runtime`,
    /// `static`, or the raw scrape jobs of `unsupported`).
    pub fn has_scrape_inputs(&self) -> bool {
        let inputs = &self.inputs;
        inputs.prometheus.is_some()
            || inputs.istio.is_some()
            || inputs.runtime.is_some()
            || !inputs.static_targets.is_empty()
            || !self.unsupported.is_empty()
    }

    /// Whether an instance of `role` runs a part of this pipeline (has a buffer for
    /// it) in a cluster whose pushes are placed as `placement` says.
    pub fn runs_on(&self, role: AgentRole, placement: PushPlacement) -> bool {
        (role.scrapes() && self.has_scrape_inputs())
            || (role.serves_pushes(placement) && self.has_push_inputs())
    }

    /// The part of this pipeline an instance of `role` runs with pushes placed as
    /// `placement` says: the pipeline with only the inputs of that part, or `None`
    /// when it has none of them.
    pub fn for_role(&self, role: AgentRole, placement: PushPlacement) -> Option<ValidatedPipeline> {
        if !self.runs_on(role, placement) {
            return None;
        }
        let scrapes = role.scrapes() && self.has_scrape_inputs();
        let pushes = role.serves_pushes(placement) && self.has_push_inputs();
        let mut part = self.clone();
        let (resource, inputs) = (&mut part.resource.spec.input, &mut part.inputs);
        if !scrapes {
            (resource.prometheus, resource.istio, resource.runtime) = (None, None, None);
            (resource.static_targets, resource.unsupported) = (None, None);
            (inputs.prometheus, inputs.istio, inputs.runtime) = (None, None, None);
            inputs.static_targets.clear();
            part.unsupported.clear();
        }
        if !pushes {
            (resource.otlp, resource.remote_write) = (None, None);
            (inputs.otlp, inputs.remote_write) = (None, None);
        }
        Some(part)
    }
}

impl ValidatedTracePipeline {
    /// Whether an instance of `role` runs this pipeline in a cluster whose pushes are
    /// placed as `placement` says.
    pub fn runs_on(&self, role: AgentRole, placement: PushPlacement) -> bool {
        role.serves_pushes(placement)
    }

    /// The part of this pipeline an instance of `role` runs: all of it where pushes
    /// are served (spans are only ever pushed), else nothing.
    pub fn for_role(
        &self,
        role: AgentRole,
        placement: PushPlacement,
    ) -> Option<ValidatedTracePipeline> {
        self.runs_on(role, placement).then(|| self.clone())
    }
}

impl ValidatedLogPipeline {
    /// Whether an instance of `role` runs a part of this pipeline (has a buffer for
    /// it) in a cluster whose pushes are placed as `placement` says: whether
    /// [`ValidatedLogPipeline::for_role`] gives a part.
    pub fn runs_on(&self, role: AgentRole, placement: PushPlacement) -> bool {
        let inputs = &self.inputs;
        let pushed = role.serves_pushes(placement) && inputs.otlp.is_some();
        let node = role == AgentRole::Node && (inputs.runtime.is_some() || inputs.node.is_some());
        pushed || node
    }

    /// The part of this pipeline an instance of `role` runs: the pipeline with only
    /// the inputs of that role (with pushes placed as `placement` says), or `None` when
    /// it has none of them.
    pub fn for_role(
        &self,
        role: AgentRole,
        placement: PushPlacement,
    ) -> Option<ValidatedLogPipeline> {
        if !self.runs_on(role, placement) {
            return None;
        }
        let mut part = self.clone();
        let (resource, inputs) = (&mut part.resource.spec.input, &mut part.inputs);
        if role != AgentRole::Node {
            (resource.runtime, resource.node) = (None, None);
            (inputs.runtime, inputs.node) = (None, None);
        }
        if !role.serves_pushes(placement) {
            resource.otlp = None;
            inputs.otlp = None;
        }
        Some(part)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::logs::{LogPipeline, validate_log_pipeline};
    use crate::policy::ValidationContext;
    use crate::{MetricPipeline, validate as validate_pipeline};

    const NO_GATEWAY: PushPlacement = PushPlacement::ClusterInstance;
    const GATEWAY: PushPlacement = PushPlacement::Gateway;

    fn pipeline(input: &str) -> ValidatedLogPipeline {
        let text = format!(
            "apiVersion: telemetry.kaas-observer.io/v1alpha1\nkind: LogPipeline\n\
             metadata: {{name: p}}\nspec:\n  input: {input}\n  \
             output: {{loki: {{url: \"https://loki.example\"}}}}\n"
        );
        let resource: LogPipeline = serde_yaml::from_str(&text).unwrap();
        validate_log_pipeline(&resource, &ValidationContext::tenant_default()).unwrap()
    }

    fn metric_pipeline(input: &str) -> ValidatedPipeline {
        let text = format!(
            "apiVersion: telemetry.kaas-observer.io/v1alpha1\nkind: MetricPipeline\n\
             metadata: {{name: m}}\nspec:\n  input: {input}\n  \
             output: {{prometheusRemoteWrite: {{url: \"https://rw.example/api/v1/write\"}}}}\n"
        );
        let resource: MetricPipeline = serde_yaml::from_str(&text).unwrap();
        validate_pipeline(&resource, &ValidationContext::tenant_default()).unwrap()
    }

    #[test]
    fn each_role_gets_only_its_inputs_and_nothing_when_it_has_none() {
        let all = pipeline(
            "{runtime: {enabled: true}, node: {enabled: true, files: {paths: [\"/var/log/nginx/*.log\"]}}, otlp: {enabled: true}}",
        );
        for placement in [NO_GATEWAY, GATEWAY] {
            let node = all.for_role(AgentRole::Node, placement).unwrap();
            assert!(node.inputs.runtime.is_some() && node.inputs.node.is_some());
            assert!(node.inputs.otlp.is_none() && node.spec().input.otlp.is_none());
        }
        let cluster = all.for_role(AgentRole::Cluster, NO_GATEWAY).unwrap();
        assert!(cluster.inputs.otlp.is_some());
        assert!(cluster.inputs.runtime.is_none() && cluster.inputs.node.is_none());
        assert!(cluster.spec().input.runtime.is_none() && cluster.spec().input.node.is_none());
        // With a gateway in use the pushed input is the gateway's alone.
        assert!(all.for_role(AgentRole::Cluster, GATEWAY).is_none());
        let gateway = all.for_role(AgentRole::Gateway, GATEWAY).unwrap();
        assert!(gateway.inputs.otlp.is_some() && gateway.spec().input.otlp.is_some());
        assert!(gateway.inputs.runtime.is_none() && gateway.spec().input.node.is_none());

        for role in AgentRole::ALL {
            assert!(all.runs_on(role, NO_GATEWAY) || role == AgentRole::Gateway);
        }

        let pushed = pipeline("{otlp: {enabled: true}}");
        assert!(pushed.for_role(AgentRole::Node, NO_GATEWAY).is_none());
        assert!(!pushed.runs_on(AgentRole::Node, NO_GATEWAY));
        assert!(pushed.runs_on(AgentRole::Cluster, NO_GATEWAY));
        assert!(pushed.for_role(AgentRole::Cluster, NO_GATEWAY).is_some());
        assert!(!pushed.runs_on(AgentRole::Cluster, GATEWAY));
        assert!(pushed.runs_on(AgentRole::Gateway, GATEWAY));
        // A disabled input is not an input of the role.
        let files = pipeline("{runtime: {enabled: true}, otlp: {enabled: false}}");
        assert!(files.for_role(AgentRole::Cluster, NO_GATEWAY).is_none());
        assert!(files.for_role(AgentRole::Gateway, GATEWAY).is_none());
        assert!(files.for_role(AgentRole::Node, NO_GATEWAY).is_some());
        assert!(!files.runs_on(AgentRole::Cluster, NO_GATEWAY));
        assert!(files.runs_on(AgentRole::Node, NO_GATEWAY));
    }

    /// A metric pipeline that scrapes and takes pushes is split: the cluster instance
    /// scrapes, the gateway takes the pushes; without a gateway the cluster instance
    /// runs both, as before gateways existed.
    #[test]
    fn a_metric_pipeline_is_split_into_its_scraped_and_pushed_parts() {
        let both = metric_pipeline(
            "{prometheus: {enabled: true}, static: {targets: [{addresses: [\"db:9187\"]}]}, otlp: {enabled: true}, remoteWrite: {enabled: true}}",
        );
        let whole = both.for_role(AgentRole::Cluster, NO_GATEWAY).unwrap();
        assert_eq!(whole.inputs, both.inputs);

        let scraped = both.for_role(AgentRole::Cluster, GATEWAY).unwrap();
        assert!(scraped.has_scrape_inputs() && !scraped.has_push_inputs());
        let input = &scraped.spec().input;
        assert!(input.otlp.is_none() && input.remote_write.is_none());
        assert!(input.prometheus.is_some() && input.static_targets.is_some());

        for placement in [NO_GATEWAY, GATEWAY] {
            let pushed = both.for_role(AgentRole::Gateway, placement).unwrap();
            assert!(pushed.has_push_inputs() && !pushed.has_scrape_inputs());
            let input = &pushed.spec().input;
            assert!(input.prometheus.is_none() && input.static_targets.is_none());
            assert!(input.otlp.is_some() && input.remote_write.is_some());
            assert!(both.for_role(AgentRole::Node, placement).is_none());
        }

        // Issue 18: raw scrape jobs are scraped, by the cluster-level instance only.
        let raw = metric_pipeline(
            "{unsupported: {scrapeConfigs: [{job_name: a, static_configs: [{targets: [\"db:9187\"]}]}]}, otlp: {enabled: true}}",
        );
        let scraped = raw.for_role(AgentRole::Cluster, GATEWAY).unwrap();
        assert_eq!(scraped.unsupported.len(), 1);
        assert!(scraped.spec().input.unsupported.is_some());
        let pushed = raw.for_role(AgentRole::Gateway, GATEWAY).unwrap();
        assert!(pushed.unsupported.is_empty() && pushed.spec().input.unsupported.is_none());
        assert!(
            !pushed.unsupported_mode(),
            "the gateway's part scrapes nothing raw"
        );

        let scrape_only = metric_pipeline("{runtime: {enabled: true}}");
        assert!(scrape_only.for_role(AgentRole::Gateway, GATEWAY).is_none());
        assert!(scrape_only.for_role(AgentRole::Cluster, GATEWAY).is_some());
        let push_only = metric_pipeline("{remoteWrite: {enabled: true}}");
        assert!(push_only.for_role(AgentRole::Cluster, GATEWAY).is_none());
        assert!(push_only.for_role(AgentRole::Cluster, NO_GATEWAY).is_some());
        assert!(push_only.for_role(AgentRole::Gateway, GATEWAY).is_some());
    }

    #[test]
    fn the_part_a_role_gets_still_validates() {
        let all = pipeline("{runtime: {enabled: true}, otlp: {enabled: true}}");
        for (role, placement) in [
            (AgentRole::Cluster, NO_GATEWAY),
            (AgentRole::Node, GATEWAY),
            (AgentRole::Gateway, GATEWAY),
        ] {
            let part = all.for_role(role, placement).unwrap();
            validate_log_pipeline(part.resource(), &ValidationContext::tenant_default())
                .unwrap_or_else(|e| panic!("{role:?}: {e}"));
        }
        let metrics = metric_pipeline("{prometheus: {enabled: true}, otlp: {enabled: true}}");
        for role in [AgentRole::Cluster, AgentRole::Gateway] {
            let part = metrics.for_role(role, GATEWAY).unwrap();
            validate_pipeline(part.resource(), &ValidationContext::tenant_default())
                .unwrap_or_else(|e| panic!("{role:?}: {e}"));
        }
    }

    #[test]
    fn role_names_round_trip() {
        for role in AgentRole::ALL {
            assert_eq!(AgentRole::from_name(role.as_str()), Some(role));
        }
        assert_eq!(AgentRole::from_name("everything"), None);
    }
}
