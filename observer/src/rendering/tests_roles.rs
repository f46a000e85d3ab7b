//! Rendering per role (issue 17, "Where it runs"): a gateway replica gets the pushed
//! inputs of every signal and no scrape, a node instance neither, and the
//! cluster-level instance keeps its scrapes and the central pipelines while it loses
//! the pushed inputs to a gateway in use. What is rendered is what an agent accepts.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use kaas_pipeline::agent_config::{AgentConfig, ValidatedAgentConfig};
use kaas_pipeline::role::{AgentRole, PushPlacement};
use kaas_pipeline::{ProviderPolicy, ValidationContext};

use super::{CentralPipelineSettings, TenantConfigs, TenantPipelines};
use crate::secrets::SecretBox;
use crate::store::{Actor, Cluster, NewCluster, Store};

fn metric(name: &str, input: &str) -> kaas_pipeline::ValidatedPipeline {
    let yaml = format!(
        "apiVersion: telemetry.kaas-observer.io/v1alpha1\nkind: MetricPipeline\n\
         metadata: {{name: {name}}}\nspec:\n  input: {input}\n  \
         output: {{otlp: {{endpoint: \"http://collector.example:4317\"}}}}\n"
    );
    let resource: kaas_pipeline::MetricPipeline = serde_yaml::from_str(&yaml).unwrap();
    kaas_pipeline::validate(&resource, &ValidationContext::tenant_default()).unwrap()
}

fn logs(name: &str, input: &str) -> kaas_pipeline::ValidatedLogPipeline {
    let yaml = format!(
        "apiVersion: telemetry.kaas-observer.io/v1alpha1\nkind: LogPipeline\n\
         metadata: {{name: {name}}}\nspec:\n  input: {input}\n  \
         output: {{loki: {{url: \"https://loki.example\"}}}}\n"
    );
    let resource: kaas_pipeline::LogPipeline = serde_yaml::from_str(&yaml).unwrap();
    kaas_pipeline::validate_log_pipeline(&resource, &ValidationContext::tenant_default()).unwrap()
}

fn traces(name: &str) -> kaas_pipeline::ValidatedTracePipeline {
    let yaml = format!(
        "apiVersion: telemetry.kaas-observer.io/v1alpha1\nkind: TracePipeline\n\
         metadata: {{name: {name}}}\nspec:\n  input: {{zipkin: {{enabled: true}}}}\n  \
         output: {{otlp: {{endpoint: \"https://tempo.example:4317\"}}}}\n"
    );
    let resource: kaas_pipeline::TracePipeline = serde_yaml::from_str(&yaml).unwrap();
    kaas_pipeline::validate_trace_pipeline(&resource, &ValidationContext::tenant_default()).unwrap()
}

/// A tenant `shop` with one cluster and a pipeline of every shape: a metric pipeline
/// that scrapes and takes OTLP and remote-write pushes, one that only scrapes, one
/// that only takes remote-write; a log pipeline with container logs and OTLP; a trace
/// pipeline with OTLP and Zipkin. The provider's central pipelines are on.
async fn tenant() -> (tempfile::TempDir, Arc<TenantConfigs>, Cluster) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open_sqlite(&dir.path().join("o.db"), SecretBox::generate().unwrap())
        .await
        .unwrap();
    let admin = Actor::admin();
    store.create_tenant("shop", &admin).await.unwrap();
    let both = "{prometheus: {enabled: true}, otlp: {enabled: true}, remoteWrite: {enabled: true}}";
    for pipeline in [
        metric("both", both),
        metric("scraped", "{runtime: {enabled: true}}"),
        metric("pushed", "{remoteWrite: {enabled: true}}"),
    ] {
        store
            .apply_pipeline("shop", pipeline, &admin)
            .await
            .unwrap();
    }
    let log = logs("app", "{runtime: {enabled: true}, otlp: {enabled: true}}");
    store.apply_pipeline("shop", log, &admin).await.unwrap();
    store
        .apply_pipeline("shop", traces("spans"), &admin)
        .await
        .unwrap();
    let new = NewCluster {
        name: "edge-1".to_owned(),
        tenant: "shop".to_owned(),
        labels: BTreeMap::new(),
        api_endpoint: None,
    };
    let (cluster, _token) = store
        .create_cluster(new, Duration::from_secs(60), &admin)
        .await
        .unwrap();
    let central = CentralPipelineSettings::new("https://receive-gateway.example:19291");
    let configs = TenantPipelines::new(Some(Arc::new(central)))
        .get(&store, "shop")
        .await
        .unwrap();
    (dir, configs, cluster)
}

/// The configuration an instance of `role` is sent, parsed as the agent parses it.
fn part(
    configs: &TenantConfigs,
    cluster: &Cluster,
    role: AgentRole,
    placement: PushPlacement,
) -> ValidatedAgentConfig {
    let rendered = configs.render_for_agent(cluster, (role, placement), super::AgentFeatures::ALL);
    let text = String::from_utf8(rendered.body).unwrap();
    let context = ValidationContext::observer(ProviderPolicy::agent_default());
    AgentConfig::parse(&text, &context).unwrap_or_else(|e| panic!("{role:?}: {e}\n{text}"))
}

fn metric_names(config: &ValidatedAgentConfig) -> Vec<&str> {
    config.pipelines.iter().map(|p| p.name()).collect()
}

#[tokio::test]
async fn a_gateway_gets_the_pushed_inputs_of_every_signal_and_no_scrape() {
    let (_dir, configs, cluster) = tenant().await;
    for placement in [PushPlacement::ClusterInstance, PushPlacement::Gateway] {
        let gateway = part(&configs, &cluster, AgentRole::Gateway, placement);
        assert_eq!(metric_names(&gateway), ["both", "pushed"], "{placement:?}");
        for pipeline in &gateway.pipelines {
            assert!(pipeline.has_push_inputs(), "{}", pipeline.name());
            assert!(!pipeline.has_scrape_inputs(), "{}", pipeline.name());
        }
        let both = &gateway.pipelines[0];
        assert!(both.inputs.otlp.is_some() && both.inputs.remote_write.is_some());
        // The log pipeline's OTLP input, without its container logs.
        assert_eq!(gateway.log_pipelines.len(), 1);
        let log = &gateway.log_pipelines[0];
        assert!(log.inputs.otlp.is_some() && log.inputs.runtime.is_none());
        // The trace pipeline whole, Zipkin included.
        assert_eq!(gateway.trace_pipelines.len(), 1);
        assert!(gateway.trace_pipelines[0].inputs.zipkin.is_some());
        // Never the provider's central pipelines.
        assert!(
            gateway
                .pipelines
                .iter()
                .all(|p| !super::is_reserved_pipeline_name(p.name()))
        );
    }
}

#[tokio::test]
async fn the_cluster_instance_loses_the_pushed_inputs_to_a_gateway_in_use() {
    let (_dir, configs, cluster) = tenant().await;
    let alone = part(
        &configs,
        &cluster,
        AgentRole::Cluster,
        PushPlacement::ClusterInstance,
    );
    let central = [
        super::CENTRAL_PIPELINE_NAME,
        super::CENTRAL_AGENT_PIPELINE_NAME,
    ];
    // Without a gateway the cluster instance runs everything but the node inputs.
    let mut expected = vec!["both", "pushed", "scraped"];
    expected.extend(central);
    let mut names = metric_names(&alone);
    names.sort_unstable();
    expected.sort_unstable();
    assert_eq!(names, expected);
    assert_eq!(alone.trace_pipelines.len(), 1);
    assert!(alone.log_pipelines[0].inputs.otlp.is_some());
    assert_eq!(
        configs.render(&cluster),
        configs.render_placed(&cluster, PushPlacement::ClusterInstance)
    );

    let with_gateway = part(
        &configs,
        &cluster,
        AgentRole::Cluster,
        PushPlacement::Gateway,
    );
    let mut names = metric_names(&with_gateway);
    names.sort_unstable();
    let mut expected = vec!["both", "scraped"];
    expected.extend(central);
    expected.sort_unstable();
    assert_eq!(
        names, expected,
        "the push-only pipeline is the gateway's alone"
    );
    for pipeline in &with_gateway.pipelines {
        assert!(!pipeline.has_push_inputs(), "{}", pipeline.name());
    }
    assert!(with_gateway.trace_pipelines.is_empty());
    assert!(with_gateway.log_pipelines.is_empty());
    assert_ne!(
        configs.render_placed(&cluster, PushPlacement::Gateway).hash,
        configs.render(&cluster).hash
    );
}

#[tokio::test]
async fn a_node_instance_gets_neither_pushes_nor_scrapes() {
    let (_dir, configs, cluster) = tenant().await;
    for placement in [PushPlacement::ClusterInstance, PushPlacement::Gateway] {
        let node = part(&configs, &cluster, AgentRole::Node, placement);
        assert!(node.pipelines.is_empty() && node.trace_pipelines.is_empty());
        assert_eq!(node.log_pipelines.len(), 1);
        let log = &node.log_pipelines[0];
        assert!(log.inputs.runtime.is_some() && log.inputs.otlp.is_none());
    }
}
