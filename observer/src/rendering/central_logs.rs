//! The provider's central log pipeline (`kaas-central-logs`, `observer serve
//! --central-logs`): on every node of every cluster, the control plane's container logs
//! (the static pods' containers in `kube-system`) and the kubelet's and containerd's
//! journal, pushed to the receive gateway's Loki route ([`crate::gateway::loki`]),
//! which files them in the provider's Loki under the tenant and cluster the agent's
//! certificate names.
//!
//! It follows the central metric pipelines' rules ([`super::central`]): nothing in it
//! chooses a tenant (no `tenantId`, no header, no credential), the agent presents its
//! own certificate (`tls.agentIdentity`), and its name lies in the reserved prefix, which
//! also lets it read the node journal (tenant pipelines may not unless the provider
//! allows it). Only node instances run it ([`kaas_pipeline::role`]: it has only node
//! inputs). Pure: a function of the [`CentralPipelineSettings`].

use kaas_pipeline::input::NamespaceSelector;
use kaas_pipeline::logs::input::{
    ContainerSelector, JournalInput, LogInput, NodeLogInput, RuntimeLogInput,
};
use kaas_pipeline::logs::output::{LOKI_PUSH_PATH, LogOutput, LokiOutput};
use kaas_pipeline::logs::{LogPipeline, LogPipelineSpec, validate_log_pipeline};
use kaas_pipeline::{ValidatedLogPipeline, ValidationErrors};

use super::central::{CentralPipelineSettings, provider_validation};

/// The central log pipeline's name, the same on every node of every cluster.
pub const CENTRAL_LOGS_PIPELINE_NAME: &str = "kaas-central-logs";
/// The gateway's path for the central log pipeline: Loki's own push path, so the
/// gateway's base URL is a Loki URL to the agent.
pub const GATEWAY_LOGS_PATH: &str = LOKI_PUSH_PATH;
/// The namespace of the control plane's static pods.
pub const CONTROL_PLANE_NAMESPACE: &str = "kube-system";
/// The control plane's containers, as kubeadm and most distributions name the static
/// pods' containers; other `kube-system` workloads (CoreDNS, CNI agents, the
/// provider's add-ons) are left out: they are not the control plane, and their
/// volume would crowd it out.
pub const CONTROL_PLANE_CONTAINERS: &[&str] = &[
    "kube-apiserver",
    "kube-controller-manager",
    "kube-scheduler",
    "etcd",
];
/// The journal units read: the kubelet and the container runtime.
pub const NODE_JOURNAL_UNITS: &[&str] = &["kubelet.service", "containerd.service"];
/// The attributes that become Loki stream labels (the gateway adds `cluster` and
/// `tenant`): few values per cluster each, so streams stay few.
pub const CENTRAL_LOG_STREAM_LABELS: &[&str] = &[
    "k8s.namespace.name",
    "k8s.pod.name",
    "k8s.container.name",
    "k8s.node.name",
];

/// The central log pipeline the `settings` make, validated as the provider's own.
pub fn central_log_pipeline(
    settings: &CentralPipelineSettings,
) -> Result<ValidatedLogPipeline, ValidationErrors> {
    validate_log_pipeline(&resource(settings), &provider_validation())
}

/// The pipeline resource.
fn resource(settings: &CentralPipelineSettings) -> LogPipeline {
    let owned = |names: &[&str]| names.iter().map(|n| (*n).to_owned()).collect::<Vec<_>>();
    let input = LogInput {
        runtime: Some(RuntimeLogInput {
            enabled: true,
            namespaces: NamespaceSelector {
                include: owned(&[CONTROL_PLANE_NAMESPACE]),
                ..NamespaceSelector::default()
            },
            containers: ContainerSelector {
                include: owned(CONTROL_PLANE_CONTAINERS),
                ..ContainerSelector::default()
            },
            ..RuntimeLogInput::default()
        }),
        node: Some(NodeLogInput {
            enabled: true,
            journal: Some(JournalInput {
                units: owned(NODE_JOURNAL_UNITS),
            }),
            ..NodeLogInput::default()
        }),
        otlp: None,
    };
    let base = settings.gateway_url.trim_end_matches('/');
    let output = LogOutput {
        loki: Some(LokiOutput {
            url: format!("{base}{GATEWAY_LOGS_PATH}").into(),
            labels: owned(CENTRAL_LOG_STREAM_LABELS),
            tls: Some(settings.gateway_tls()),
            ..LokiOutput::default()
        }),
        ..LogOutput::default()
    };
    LogPipeline::new(
        CENTRAL_LOGS_PIPELINE_NAME,
        LogPipelineSpec {
            input,
            output,
            buffer: settings.buffer.clone(),
            ..LogPipelineSpec::default()
        },
    )
}

#[cfg(test)]
mod tests {
    use kaas_pipeline::logs::output::ValidatedLogOutput;
    use kaas_pipeline::policy::ValidationContext;
    use kaas_pipeline::role::{AgentRole, PushPlacement};
    use kaas_pipeline::units::ByteSize;

    use super::*;

    fn settings() -> CentralPipelineSettings {
        CentralPipelineSettings {
            logs: true,
            ..CentralPipelineSettings::new("https://receive-gateway.example:19291/")
        }
    }

    #[test]
    fn it_reads_the_control_plane_and_the_node_journal_and_pushes_to_the_gateway() {
        let pipeline = central_log_pipeline(&settings()).unwrap();
        assert_eq!(pipeline.name(), CENTRAL_LOGS_PIPELINE_NAME);
        let runtime = pipeline.inputs.runtime.as_ref().unwrap();
        assert!(runtime.namespaces.admits("kube-system"));
        assert!(!runtime.namespaces.admits("shop"));
        for container in CONTROL_PLANE_CONTAINERS {
            assert!(runtime.containers.admits(container), "{container}");
        }
        assert!(!runtime.containers.admits("coredns"));
        let node = pipeline.inputs.node.as_ref().unwrap();
        assert_eq!(node.journal_units, NODE_JOURNAL_UNITS);
        assert!(node.files.is_empty());
        assert!(pipeline.inputs.otlp.is_none());
        let ValidatedLogOutput::Loki {
            url,
            tenant_id,
            labels,
            settings: loki,
            ..
        } = &pipeline.output
        else {
            panic!("not Loki: {:?}", pipeline.output);
        };
        assert_eq!(
            url.to_string(),
            "https://receive-gateway.example:19291/loki/api/v1/push"
        );
        assert_eq!(labels, CENTRAL_LOG_STREAM_LABELS);
        // Nothing in the workload cluster chooses a tenant.
        assert_eq!(*tenant_id, None);
        assert!(loki.headers.is_empty() && loki.authentication.is_none());
        let tls = loki.tls.as_ref().unwrap();
        assert!(tls.agent_identity && tls.cert.is_none() && tls.key.is_none());
    }

    #[test]
    fn only_node_instances_run_it() {
        let pipeline = central_log_pipeline(&settings()).unwrap();
        for role in [AgentRole::Cluster, AgentRole::Gateway] {
            assert!(
                pipeline
                    .for_role(role, PushPlacement::ClusterInstance)
                    .is_none()
            );
        }
        let node = pipeline
            .for_role(AgentRole::Node, PushPlacement::ClusterInstance)
            .unwrap();
        assert!(node.inputs.runtime.is_some() && node.inputs.node.is_some());
    }

    /// Issue 16: its buffer is reserved in every node's budget, not the cluster's
    /// (only nodes run it), and nothing is reserved without `--central-logs`.
    #[test]
    fn its_buffer_is_reserved_in_each_nodes_budget() {
        let mut settings = settings();
        settings.buffer.max_bytes = Some(ByteSize::Quantity("256Mi".into()));
        let pipeline = central_log_pipeline(&settings).unwrap();
        assert_eq!(settings.node_buffer_max_bytes(), 256 << 20);
        assert_eq!(
            settings.node_buffer_max_bytes(),
            pipeline.buffer.max_bytes.get()
        );
        let without_logs = CentralPipelineSettings {
            logs: false,
            ..settings.clone()
        };
        assert_eq!(without_logs.node_buffer_max_bytes(), 0);
        assert_eq!(
            settings.buffer_max_bytes(),
            without_logs.buffer_max_bytes(),
            "the cluster's reservation leaves the node-only log pipeline out"
        );
    }

    #[test]
    fn a_tenant_pipeline_like_it_is_refused_the_journal_and_the_agents_certificate() {
        let mut resource = resource(&settings());
        resource.metadata.name = Some("shop-logs".into());
        let errors = validate_log_pipeline(&resource, &ValidationContext::tenant_default())
            .unwrap_err()
            .to_string();
        assert!(errors.contains("spec.input.node.journal"), "{errors}");
        assert!(errors.contains("tls.agentIdentity"), "{errors}");
    }

    #[test]
    fn the_gateway_ca_and_the_buffer_settings_are_taken() {
        let mut settings = settings();
        let ca = kaas_test_support::tls::TestPki::generate(&["gateway"]).ca;
        settings.gateway_ca_pem = Some(ca.clone());
        settings.buffer.max_age = Some("2h".into());
        let pipeline = central_log_pipeline(&settings).unwrap();
        let ValidatedLogOutput::Loki { settings: loki, .. } = &pipeline.output else {
            panic!("not Loki");
        };
        let sent = loki.tls.as_ref().unwrap().ca.as_ref().unwrap();
        assert_eq!(sent.value.as_ref().unwrap().expose(), ca);
        assert_eq!(
            pipeline.buffer.max_age,
            std::time::Duration::from_secs(2 * 3600)
        );
    }
}
