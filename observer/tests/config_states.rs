//! `kaas_pipeline_cluster_config_state` compares an agent's report with the
//! configuration its cluster-level instance is actually sent: the one the status task
//! compares too. A cluster whose pushes go to its gateway is sent its pipelines without
//! their pushed inputs, and its agent reports on that configuration; the series must
//! say `applied` for it, not `pending` forever.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use kaas_observer::integrations::ConfigStates;
use kaas_observer::integrations::config_state::{APPLIED, ConfigStateSettings, PENDING};
use kaas_observer::rendering::{AgentFeatures, TenantPipelines};
use kaas_observer::secrets::SecretBox;
use kaas_observer::store::instances::{InstanceHealthReport, InstancePipelineHealth};
use kaas_observer::store::{Actor, ConfigReport, NewCluster, ReportWrite, Store, now_ms};
use kaas_pipeline::role::{AgentRole, PushPlacement};
use kaas_pipeline::status::AgentConfigState;

const HOUR: Duration = Duration::from_secs(3600);

/// A metric pipeline that scrapes and takes OTLP pushes: the cluster instance runs
/// only its scraping while the cluster's gateway takes the pushes.
const PIPELINE: &str = r#"
apiVersion: telemetry.kaas-observer.io/v1alpha1
kind: MetricPipeline
metadata: {name: scraped-and-pushed}
spec:
  input:
    prometheus: {enabled: true}
    otlp: {enabled: true}
  output: {prometheusRemoteWrite: {url: "https://backend.example/write"}}
"#;

async fn cluster(store: &Store, name: &str) -> kaas_observer::store::Cluster {
    let new = NewCluster {
        name: name.into(),
        tenant: "shop".into(),
        labels: BTreeMap::new(),
        api_endpoint: None,
    };
    let (cluster, _) = store
        .create_cluster(new, HOUR, &Actor::admin())
        .await
        .expect("the test step succeeds");
    cluster
}

/// Reports that `cluster`'s agent applied the configuration its cluster instance is
/// sent with its pushes placed as `placement` says.
async fn applied(store: &Store, cluster: &kaas_observer::store::Cluster, placement: PushPlacement) {
    let configs = TenantPipelines::new(None)
        .get(store, "shop")
        .await
        .expect("the test step succeeds");
    let sent =
        configs.render_for_agent(cluster, (AgentRole::Cluster, placement), AgentFeatures::ALL);
    let report = ConfigReport {
        config_hash: sent.hash_hex(),
        state: AgentConfigState::Applied,
        errors: Vec::new(),
        running_config_hash: sent.hash_hex(),
        at_ms: now_ms(),
        without_trace_pipelines: false,
        without_template_instances: false,
    };
    let cluster = cluster.id.clone();
    store
        .report(ReportWrite::Config { cluster, report })
        .await
        .expect("the test step succeeds");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_whose_pushes_go_to_its_gateway_is_judged_by_what_its_instance_is_sent() {
    let dir = tempfile::tempdir().expect("the test step succeeds");
    let store = Store::open_sqlite(
        &dir.path().join("observer.db"),
        SecretBox::generate().expect("a secrets key"),
    )
    .await
    .expect("the test step succeeds");
    store
        .create_tenant("shop", &Actor::admin())
        .await
        .expect("the test step succeeds");
    let pipeline = kaas_pipeline::document::parse_pipelines(
        PIPELINE,
        &kaas_pipeline::ValidationContext::tenant_default(),
    )
    .into_iter()
    .next()
    .expect("a pipeline fixture")
    .outcome
    .expect("a valid pipeline fixture");
    store
        .apply_pipeline("shop", pipeline, &Actor::admin())
        .await
        .expect("the test step succeeds");
    let plain = cluster(&store, "plain").await;
    let with_gateway = cluster(&store, "with-gateway").await;
    // A gateway replica of `with-gateway` reported on the pipeline's pushed part.
    let gateway = InstanceHealthReport {
        cluster: with_gateway.id.clone(),
        instance: "cluster-agent-gateway-0".into(),
        agent_instance_id: "gateway-process".into(),
        role: AgentRole::Gateway,
        reported_at_ms: now_ms(),
        received_at_ms: now_ms(),
        pipelines: vec![InstancePipelineHealth {
            kind: "MetricPipeline".into(),
            pipeline: "scraped-and-pushed".into(),
            entry: serde_json::json!({"pipeline": "scraped-and-pushed"}),
            problems: Vec::new(),
        }],
    };
    store
        .report(ReportWrite::InstanceHealth(Box::new(gateway)))
        .await
        .expect("the test step succeeds");
    applied(&store, &plain, PushPlacement::ClusterInstance).await;
    applied(&store, &with_gateway, PushPlacement::Gateway).await;

    let states = ConfigStates::start(
        store.clone(),
        None,
        ConfigStateSettings {
            refresh: HOUR,
            min_gap: Duration::from_millis(50),
        },
    );
    let until = Instant::now() + Duration::from_secs(15);
    let by_cluster = loop {
        let by_cluster: BTreeMap<String, &str> = (states.states().into_iter())
            .map(|state| (state.cluster, state.state))
            .collect();
        if by_cluster.len() == 2 && by_cluster.values().all(|state| *state != PENDING) {
            break by_cluster;
        }
        assert!(Instant::now() < until, "still pending: {by_cluster:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(
        by_cluster,
        BTreeMap::from([
            (plain.id.clone(), APPLIED),
            (with_gateway.id.clone(), APPLIED)
        ])
    );
    states.stop();
}
