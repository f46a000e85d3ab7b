//! Each tenant's pipelines of every kind as last read from the store, with the
//! configurations rendered from them, shared by every agent stream of the tenant and by
//! the status task. A cluster's configuration carries the metric, log and trace
//! pipelines its labels select.
//!
//! A pipeline change wakes every stream of its tenant at once; without this cache each
//! of them would read and decrypt the tenant's pipelines, N reads of the same rows for
//! N clusters. With it the first stream to ask reads them and the others wait for that
//! one read ([`OnceCell`]).
//!
//! # Rendering
//! Clusters whose labels select the same pipelines get the same configuration but for
//! their `cluster` external label. [`TenantConfigs::render`] keeps one
//! [`ConfigTemplate`] per distinct selection (the pipelines copied and serialised once),
//! so a stream, and the status task computing the cluster's desired hash, pay only for
//! the label and the SHA-256 of the body, not for copying and serialising the pipelines
//! again for every cluster. The templates live as long as the pipelines they were
//! rendered from: the same invalidation drops both.
//!
//! # Staying current
//! The dispatcher calls [`TenantPipelines::invalidate`] for every `Change::Pipeline` or
//! `Change::Tenant` of the tenant (on PostgreSQL also those of other replicas) *before*
//! it wakes the tenant's streams, and [`TenantPipelines::clear`] when the change feed
//! lagged. Invalidating replaces the tenant's cell, so:
//! * a read that starts after the invalidation sees the change (it was committed before
//!   it was published);
//! * a read that started before may fill the old cell with the old pipelines, but only
//!   callers that took that cell before the invalidation see them, and each of those is
//!   a stream that is woken again by the invalidating change, or the status task, which
//!   is sent the change as work too.
//!
//! The cache holds the pipelines with their inline secrets in plaintext, as a render
//! needs them; they never leave the process except in an agent's configuration.
//!
//! # Control-plane settings
//! The central pipeline of a cluster depends on the cluster's control-plane setting
//! ([`crate::control_plane`]), read with the tenant's pipelines; a cluster with its own
//! setting gets its own template, the others share theirs. Setting one publishes
//! `Change::Tenant`, which invalidates the tenant's entry like a pipeline change.
//!
//! # Unreadable pipelines
//! A stored pipeline the observer cannot read (a secret sealed with a key it was not
//! given, or for another object; see `store::pipeline_rows`) is kept apart in
//! [`TenantConfigs::unreadable`]: renders leave it out and carry the tenant's other
//! pipelines, and the status task writes its condition. Before, one such row failed
//! every render of its tenant's clusters (issue 13, finding 10).

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use kaas_pipeline::agent_config::{ConfigTemplate, RenderedConfig};
use kaas_pipeline::document::ValidatedResource;
use kaas_pipeline::role::{AgentRole, PushPlacement};
use kaas_pipeline::templates::{PENDING_BINDINGS_ANNOTATION, ValidatedPendingInstance};
use kaas_pipeline::{ValidatedLogPipeline, ValidatedTracePipeline};
use tokio::sync::OnceCell;

use super::central::CentralPipelineSettings;
use super::cluster::{config_template, external_labels};
use crate::control_plane::ValidatedControlPlane;
use crate::store::pipeline_rows::{PipelineRow, UnreadablePipeline};
use crate::store::{Cluster, PipelineKind, Store, StoreError, StoredPipeline};

/// One tenant's pipelines as read once, and the configurations rendered from them.
pub struct TenantConfigs {
    pipelines: Vec<StoredPipeline>,
    unreadable: Vec<UnreadablePipeline>,
    log_pipelines: Vec<StoredPipeline<ValidatedLogPipeline>>,
    unreadable_logs: Vec<UnreadablePipeline<kaas_pipeline::LogPipeline>>,
    trace_pipelines: Vec<StoredPipeline<ValidatedTracePipeline>>,
    unreadable_traces: Vec<UnreadablePipeline<kaas_pipeline::TracePipeline>>,
    central: Option<Arc<CentralPipelineSettings>>,
    /// The control-plane settings of the tenant's clusters that have one, by global id.
    control_planes: BTreeMap<String, ValidatedControlPlane>,
    /// The instances the agents render themselves ([`Self::pending_instances`]).
    instances: Vec<ValidatedPendingInstance>,
    /// By the indexes (into `pipelines`, `log_pipelines` and `trace_pipelines`) of the
    /// pipelines a cluster's labels select, and the cluster's id if it has its own
    /// control-plane setting.
    templates: Mutex<HashMap<TemplateKey, Arc<ConfigTemplate>>>,
}

/// What a template depends on: the selected metric, log and trace pipelines, the
/// cluster whose own control-plane setting shapes its central pipeline (`None`: the
/// defaults), and the role of the instance it is for with where the cluster's pushes
/// go.
type TemplateKey = (
    (Vec<usize>, Vec<usize>, Vec<usize>, Vec<usize>),
    Option<String>,
    (AgentRole, PushPlacement),
);

/// What an agent says in its hello it can run beyond metric and log pipelines.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct AgentFeatures {
    /// Trace pipelines (`CAPABILITY_TRACE_PIPELINES`).
    pub trace_pipelines: bool,
    /// Template instances it renders itself (`CAPABILITY_TEMPLATE_INSTANCES`).
    pub template_instances: bool,
}

impl AgentFeatures {
    /// An agent of this release: everything.
    pub const ALL: Self = Self {
        trace_pipelines: true,
        template_instances: true,
    };
}

/// Whether `pipeline` is an instance's rendering with pending bindings: never sent as
/// it is (its instance is, [`TenantConfigs::pending_instances`]).
pub fn is_pending_rendering<P: PipelineKind>(pipeline: &P) -> bool {
    (P::metadata(pipeline.resource()).annotations.as_ref())
        .is_some_and(|a| a.contains_key(PENDING_BINDINGS_ANNOTATION))
}

/// The indexes of the `pipelines` a cluster with `labels` selects, but for instances'
/// renderings with pending bindings.
fn selected<P: PipelineKind>(
    pipelines: &[StoredPipeline<P>],
    labels: &BTreeMap<String, String>,
) -> Vec<usize> {
    pipelines
        .iter()
        .enumerate()
        .filter(|(_, stored)| stored.pipeline.cluster_selector().matches(labels))
        .filter(|(_, stored)| !is_pending_rendering(&stored.pipeline))
        .map(|(index, _)| index)
        .collect()
}

/// The indexes of the pending `instances` a cluster with `labels` selects.
fn selected_instances(
    instances: &[ValidatedPendingInstance],
    labels: &BTreeMap<String, String>,
) -> Vec<usize> {
    let selector = |instance: &ValidatedPendingInstance| match instance.preview() {
        ValidatedResource::Metric(p) => p.cluster_selector().matches(labels),
        ValidatedResource::Log(p) => p.cluster_selector().matches(labels),
        ValidatedResource::Trace(p) => p.cluster_selector().matches(labels),
    };
    (instances.iter().enumerate())
        .filter(|(_, instance)| selector(instance))
        .map(|(index, _)| index)
        .collect()
}

/// Whether an instance of `role` runs any part of `pipeline` (an instance's rendering
/// with samples: its inputs are the instance's), the agent cutting it to that part.
fn runs_on_role(pipeline: &ValidatedResource, role: AgentRole, placement: PushPlacement) -> bool {
    match pipeline {
        ValidatedResource::Metric(p) => p.for_role(role, placement).is_some(),
        ValidatedResource::Log(p) => p.for_role(role, placement).is_some(),
        ValidatedResource::Trace(p) => p.for_role(role, placement).is_some(),
    }
}

/// The pipelines at `indexes`.
fn picked<P: PipelineKind>(pipelines: &[StoredPipeline<P>], indexes: &[usize]) -> Vec<P> {
    indexes
        .iter()
        .filter_map(|&index| pipelines.get(index))
        .map(|stored| stored.pipeline.clone())
        .collect()
}

impl TenantConfigs {
    /// The tenant's metric pipelines, by name.
    pub fn pipelines(&self) -> &[StoredPipeline] {
        &self.pipelines
    }

    /// The tenant's metric pipelines the observer cannot read, by name; no render has
    /// them.
    pub fn unreadable(&self) -> &[UnreadablePipeline] {
        &self.unreadable
    }

    /// The tenant's log pipelines, by name.
    pub fn log_pipelines(&self) -> &[StoredPipeline<ValidatedLogPipeline>] {
        &self.log_pipelines
    }

    /// The tenant's log pipelines the observer cannot read, by name.
    pub fn unreadable_logs(&self) -> &[UnreadablePipeline<kaas_pipeline::LogPipeline>] {
        &self.unreadable_logs
    }

    /// The tenant's trace pipelines, by name.
    pub fn trace_pipelines(&self) -> &[StoredPipeline<ValidatedTracePipeline>] {
        &self.trace_pipelines
    }

    /// The tenant's trace pipelines the observer cannot read, by name.
    pub fn unreadable_traces(&self) -> &[UnreadablePipeline<kaas_pipeline::TracePipeline>] {
        &self.unreadable_traces
    }

    /// The tenant's instances its agents render themselves, by name: each stands
    /// for the rendering of the same name marked [`is_pending_rendering`].
    pub fn pending_instances(&self) -> &[ValidatedPendingInstance] {
        &self.instances
    }

    /// Whether the tenant has no pipeline of any kind at all, readable or not.
    pub fn is_empty(&self) -> bool {
        self.pipelines.is_empty()
            && self.unreadable.is_empty()
            && self.log_pipelines.is_empty()
            && self.unreadable_logs.is_empty()
            && self.trace_pipelines.is_empty()
            && self.unreadable_traces.is_empty()
    }

    /// The configuration `cluster`'s (of this tenant) cluster-level instance runs
    /// while the cluster has no gateway in use: the pipelines its labels select, the
    /// central pipeline if the observer has one, and its `cluster` label. The same as
    /// [`render_for_cluster`](super::render_for_cluster) with the selected pipelines.
    pub fn render(&self, cluster: &Cluster) -> RenderedConfig {
        self.render_placed(cluster, PushPlacement::ClusterInstance)
    }

    /// The configuration `cluster`'s cluster-level instance runs with the cluster's
    /// pushes placed as `placement` says (the status task's desired configuration).
    pub fn render_placed(&self, cluster: &Cluster, placement: PushPlacement) -> RenderedConfig {
        self.render_for_agent(cluster, (AgentRole::Cluster, placement), AgentFeatures::ALL)
    }

    /// The part of [`render`](Self::render)'s configuration an instance of `role`
    /// runs ([`kaas_pipeline::role`]) in a cluster without a gateway in use.
    pub fn render_for_role(&self, cluster: &Cluster, role: AgentRole) -> RenderedConfig {
        self.render_for_agent(
            cluster,
            (role, PushPlacement::ClusterInstance),
            AgentFeatures::ALL,
        )
    }

    /// The part of the configuration an instance of `role` runs with the cluster's
    /// pushes placed as `placement` says, for an agent with `features`: an agent older
    /// than trace pipelines refuses a configuration holding `tracePipelines` (its
    /// configuration denies unknown fields), so it is sent the configuration without
    /// them, and keeps running its metric and log pipelines; likewise an agent that does
    /// not render template instances is sent none (their renderings with samples are
    /// never sent to anyone).
    pub fn render_for_agent(
        &self,
        cluster: &Cluster,
        (role, placement): (AgentRole, PushPlacement),
        features: AgentFeatures,
    ) -> RenderedConfig {
        // Only the cluster instance's part depends on the placement: a gateway always
        // serves pushes, a node never; one template serves either placement.
        let placement = match role {
            AgentRole::Cluster => placement,
            AgentRole::Node | AgentRole::Gateway => PushPlacement::Gateway,
        };
        let control_plane = self.control_planes.get(&cluster.id);
        let traces = if features.trace_pipelines {
            selected(&self.trace_pipelines, &cluster.labels)
        } else {
            Vec::new()
        };
        let instances = if features.template_instances {
            let mut indexes = selected_instances(&self.instances, &cluster.labels);
            indexes.retain(|&i| {
                let instance = &self.instances[i];
                (features.trace_pipelines || instance.kind() != kaas_pipeline::TRACE_KIND)
                    && runs_on_role(instance.preview(), role, placement)
            });
            indexes
        } else {
            Vec::new()
        };
        let key = (
            (
                selected(&self.pipelines, &cluster.labels),
                selected(&self.log_pipelines, &cluster.labels),
                traces,
                instances,
            ),
            control_plane.map(|_| cluster.id.clone()),
            (role, placement),
        );
        let known = self.lock().get(&key).cloned();
        let template = known.unwrap_or_else(|| {
            let selection = &key.0;
            let pipelines = picked(&self.pipelines, &selection.0);
            let log_pipelines = picked(&self.log_pipelines, &selection.1);
            let trace_pipelines = picked(&self.trace_pipelines, &selection.2);
            let instances: Vec<ValidatedPendingInstance> = (selection.3.iter())
                .filter_map(|&i| self.instances.get(i).cloned())
                .collect();
            // Rendered outside the lock; two streams racing for a new selection both
            // render it, and the first one stored is kept.
            let template = Arc::new(config_template(
                cluster,
                (&pipelines, &log_pipelines, &trace_pipelines),
                &instances,
                self.central.as_deref(),
                control_plane,
                (role, placement),
            ));
            self.lock().entry(key).or_insert(template).clone()
        });
        template.render(&external_labels(cluster))
    }

    /// The control-plane setting of `cluster` (global id), the defaults if it has none.
    pub fn control_plane(&self, cluster: &str) -> ValidatedControlPlane {
        self.control_planes
            .get(cluster)
            .cloned()
            .unwrap_or_default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<TemplateKey, Arc<ConfigTemplate>>> {
        self.templates.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// One tenant's pipelines and their configurations.
pub type Pipelines = Arc<TenantConfigs>;

/// The pipelines of one kind a tenant has: those the observer reads, and those it
/// cannot.
type Rows<P> = (
    Vec<StoredPipeline<P>>,
    Vec<UnreadablePipeline<<P as PipelineKind>::Resource>>,
);

/// The rows of one kind split into the readable pipelines and the unreadable ones,
/// each of those logged.
fn read_rows<P: PipelineKind>(rows: Vec<PipelineRow<P>>) -> Rows<P> {
    let mut readable = Vec::new();
    let mut unreadable = Vec::new();
    for row in rows {
        match row {
            PipelineRow::Readable(stored) => readable.push(*stored),
            PipelineRow::Unreadable(row) => {
                tracing::warn!(
                    tenant = %row.tenant,
                    kind = P::KIND,
                    pipeline = %row.name,
                    reason = %row.reason,
                    "a stored pipeline cannot be read; it is left out of every \
                     configuration of its tenant's clusters"
                );
                unreadable.push(row);
            }
        }
    }
    (readable, unreadable)
}

type Cell = Arc<OnceCell<Pipelines>>;

/// See the module documentation.
#[derive(Default)]
pub struct TenantPipelines {
    tenants: Mutex<HashMap<String, Cell>>,
    /// The provider's central pipeline, added to every configuration rendered.
    central: Option<Arc<CentralPipelineSettings>>,
}

impl TenantPipelines {
    /// An empty cache whose configurations include the `central` pipeline if any.
    pub fn new(central: Option<Arc<CentralPipelineSettings>>) -> Self {
        Self {
            tenants: Mutex::default(),
            central,
        }
    }

    /// The tenant's pipelines: from the cache, or read once for every concurrent caller.
    pub async fn get(&self, store: &Store, tenant: &str) -> Result<Pipelines, StoreError> {
        let cell = self.lock().entry(tenant.to_owned()).or_default().clone();
        cell.get_or_try_init(|| async {
            let (pipelines, unreadable) = read_rows(store.list_pipeline_rows(Some(tenant)).await?);
            let (log_pipelines, unreadable_logs) = read_rows(
                store
                    .list_pipeline_rows_of::<ValidatedLogPipeline>(Some(tenant))
                    .await?,
            );
            let (trace_pipelines, unreadable_traces) = read_rows(
                store
                    .list_pipeline_rows_of::<ValidatedTracePipeline>(Some(tenant))
                    .await?,
            );
            let control_planes = store.cluster_control_planes(Some(tenant)).await?;
            let instances = store.pending_instances(tenant).await?;
            Ok::<_, StoreError>(Arc::new(TenantConfigs {
                pipelines,
                unreadable,
                log_pipelines,
                unreadable_logs,
                trace_pipelines,
                unreadable_traces,
                central: self.central.clone(),
                control_planes,
                instances,
                templates: Mutex::default(),
            }))
        })
        .await
        .cloned()
    }

    /// Forgets the tenant's pipelines: they changed.
    pub fn invalidate(&self, tenant: &str) {
        self.lock().remove(tenant);
    }

    /// Forgets every tenant's pipelines (the change feed lagged: anything may have
    /// changed).
    pub fn clear(&self) {
        self.lock().clear();
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Cell>> {
        self.tenants.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::time::Duration;

    use kaas_pipeline::agent_config::AgentConfig;

    use super::*;
    use crate::rendering::central::central_pipelines;
    use crate::secrets::SecretBox;
    use crate::store::{Actor, NewCluster};

    fn pipeline(name: &str) -> kaas_pipeline::ValidatedPipeline {
        selecting(name, None)
    }

    /// A pipeline, selecting the clusters labelled `env: <env>` if `env` is given.
    fn selecting(name: &str, env: Option<&str>) -> kaas_pipeline::ValidatedPipeline {
        let selector = env.map_or_else(String::new, |env| {
            format!("  clusterSelector:\n    matchLabels:\n      env: {env}\n")
        });
        let yaml = format!(
            "apiVersion: telemetry.kaas-observer.io/v1alpha1\nkind: MetricPipeline\n\
             metadata:\n  name: {name}\nspec:\n  input:\n    runtime:\n      enabled: true\n  \
             output:\n    otlp:\n      endpoint: http://collector.example:4317\n{selector}"
        );
        let resource: kaas_pipeline::MetricPipeline = serde_yaml::from_str(&yaml).unwrap();
        kaas_pipeline::validate(
            &resource,
            &kaas_pipeline::ValidationContext::tenant_default(),
        )
        .unwrap()
    }

    /// A store holding the tenant `shop`.
    async fn shop_store() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open_sqlite(&dir.path().join("o.db"), SecretBox::generate().unwrap())
            .await
            .unwrap();
        store.create_tenant("shop", &Actor::admin()).await.unwrap();
        (dir, store)
    }

    /// A cluster of `shop` labelled `env: <env>`.
    async fn shop_cluster(store: &Store, name: &str, env: &str) -> Cluster {
        let new = NewCluster {
            name: name.to_owned(),
            tenant: "shop".to_owned(),
            labels: BTreeMap::from([("env".to_owned(), env.to_owned())]),
            api_endpoint: None,
        };
        let (cluster, _token) = store
            .create_cluster(new, Duration::from_secs(60), &Actor::admin())
            .await
            .unwrap();
        cluster
    }

    fn names(pipelines: &Pipelines) -> Vec<&str> {
        pipelines
            .pipelines()
            .iter()
            .map(StoredPipeline::name)
            .collect()
    }

    #[tokio::test]
    async fn serves_the_cached_read_until_invalidated() {
        let (_dir, store) = shop_store().await;
        store
            .apply_pipeline("shop", pipeline("p1"), &Actor::admin())
            .await
            .unwrap();
        let cache = TenantPipelines::default();
        assert_eq!(names(&cache.get(&store, "shop").await.unwrap()), ["p1"]);

        store
            .apply_pipeline("shop", pipeline("p2"), &Actor::admin())
            .await
            .unwrap();
        // Not invalidated: the cached read stands (the dispatcher invalidates on the
        // change it publishes).
        assert_eq!(names(&cache.get(&store, "shop").await.unwrap()), ["p1"]);
        cache.invalidate("shop");
        assert_eq!(
            names(&cache.get(&store, "shop").await.unwrap()),
            ["p1", "p2"]
        );

        store
            .delete_pipeline("shop", "p1", &Actor::admin())
            .await
            .unwrap();
        cache.clear();
        assert_eq!(names(&cache.get(&store, "shop").await.unwrap()), ["p2"]);
        assert!(names(&cache.get(&store, "nobody").await.unwrap()).is_empty());
        // Concurrent callers share one read and get the same pipelines.
        cache.invalidate("shop");
        let (a, b) = tokio::time::timeout(
            Duration::from_secs(5),
            futures_util::future::join(cache.get(&store, "shop"), cache.get(&store, "shop")),
        )
        .await
        .unwrap();
        assert!(Arc::ptr_eq(&a.unwrap(), &b.unwrap()));
    }

    #[tokio::test]
    async fn renders_each_cluster_what_rendering_from_scratch_renders() {
        let (_dir, store) = shop_store().await;
        let all = [
            selecting("prod-a", Some("prod")),
            selecting("prod-b", Some("prod")),
            selecting("dev", Some("dev")),
        ];
        for pipeline in &all {
            store
                .apply_pipeline("shop", pipeline.clone(), &Actor::admin())
                .await
                .unwrap();
        }
        // Two clusters per selection (sharing its template), and one selecting none.
        let mut clusters = Vec::new();
        for (name, env) in [
            ("p1", "prod"),
            ("d1", "dev"),
            ("p2", "prod"),
            ("d2", "dev"),
            ("x1", "test"),
        ] {
            clusters.push(shop_cluster(&store, name, env).await);
        }
        let central = Arc::new(CentralPipelineSettings::new(
            "https://receive-gateway.example:19291",
        ));
        for settings in [None, Some(central)] {
            let cache = TenantPipelines::new(settings.clone());
            let configs = cache.get(&store, "shop").await.unwrap();
            for cluster in &clusters {
                // What rendering the cluster's own configuration from scratch gives.
                let mut selected: Vec<_> = all
                    .iter()
                    .filter(|p| p.spec().cluster_selector.matches(&cluster.labels))
                    .cloned()
                    .collect();
                if let Some(settings) = &settings {
                    selected.extend(central_pipelines(settings).unwrap());
                }
                let labels = BTreeMap::from([("cluster".to_owned(), cluster.id.clone())]);
                assert_eq!(
                    configs.render(cluster),
                    AgentConfig::from_validated(labels, &selected).render(),
                    "{} with central {}",
                    cluster.id,
                    settings.is_some()
                );
            }
            assert_eq!(configs.lock().len(), 3, "one template per selection");
        }
    }

    /// A log pipeline selecting `env: <env>`.
    fn log_selecting(name: &str, env: &str) -> ValidatedLogPipeline {
        let yaml = format!(
            "apiVersion: telemetry.kaas-observer.io/v1alpha1\nkind: LogPipeline\n\
             metadata:\n  name: {name}\nspec:\n  input:\n    runtime:\n      enabled: true\n  \
             output:\n    loki:\n      url: https://loki.example\n  \
             clusterSelector:\n    matchLabels:\n      env: {env}\n"
        );
        let resource: kaas_pipeline::LogPipeline = serde_yaml::from_str(&yaml).unwrap();
        kaas_pipeline::validate_log_pipeline(
            &resource,
            &kaas_pipeline::ValidationContext::tenant_default(),
        )
        .unwrap()
    }

    /// A trace pipeline selecting `env: <env>`.
    fn trace_selecting(name: &str, env: &str) -> ValidatedTracePipeline {
        let yaml = format!(
            "apiVersion: telemetry.kaas-observer.io/v1alpha1\nkind: TracePipeline\n\
             metadata:\n  name: {name}\nspec:\n  sampling:\n    ratio: 0.5\n  \
             output:\n    otlp:\n      endpoint: https://tempo.example:4317\n  \
             clusterSelector:\n    matchLabels:\n      env: {env}\n"
        );
        let resource: kaas_pipeline::TracePipeline = serde_yaml::from_str(&yaml).unwrap();
        kaas_pipeline::validate_trace_pipeline(
            &resource,
            &kaas_pipeline::ValidationContext::tenant_default(),
        )
        .unwrap()
    }

    /// Issue 17: a trace pipeline reaches the cluster-level instance of the clusters it
    /// selects, in `tracePipelines`, beside a log pipeline of the same name; node
    /// instances, which serve no pushes, never get it, nor do other clusters, nor agents
    /// that do not say they run trace pipelines.
    #[tokio::test]
    async fn a_trace_pipeline_reaches_only_the_cluster_instances_it_selects() {
        let (_dir, store) = shop_store().await;
        store
            .apply_pipeline("shop", trace_selecting("shop", "prod"), &Actor::admin())
            .await
            .unwrap();
        store
            .apply_pipeline("shop", log_selecting("shop", "prod"), &Actor::admin())
            .await
            .unwrap();
        let mut clusters = BTreeMap::new();
        for env in ["prod", "dev"] {
            let cluster = shop_cluster(&store, &format!("{env}-1"), env).await;
            clusters.insert(env, cluster);
        }
        let configs = TenantPipelines::default()
            .get(&store, "shop")
            .await
            .unwrap();
        assert_eq!(configs.trace_pipelines().len(), 1);
        let context = kaas_pipeline::ValidationContext::observer(
            kaas_pipeline::ProviderPolicy::unrestricted(),
        );
        let parse = |cluster: &Cluster, role: AgentRole| {
            let rendered = configs.render_for_role(cluster, role);
            let text = String::from_utf8(rendered.body).unwrap();
            AgentConfig::parse(&text, &context).unwrap()
        };
        let prod = parse(&clusters["prod"], AgentRole::Cluster);
        let traces: Vec<&str> = prod.trace_pipelines.iter().map(|p| p.name()).collect();
        assert_eq!(traces, ["shop"]);
        assert_eq!(prod.trace_pipelines[0].sampling.ratio, 0.5);
        let node = parse(&clusters["prod"], AgentRole::Node);
        assert!(node.trace_pipelines.is_empty());
        assert_eq!(
            node.log_pipelines.len(),
            1,
            "the log pipeline's runtime part"
        );
        let dev = parse(&clusters["dev"], AgentRole::Cluster);
        assert!(dev.trace_pipelines.is_empty());
        // An agent that does not announce CAPABILITY_TRACE_PIPELINES predates them and
        // would refuse the field: it gets the configuration without them, its log
        // pipeline still there.
        let older = configs.render_for_agent(
            &clusters["prod"],
            (AgentRole::Cluster, PushPlacement::ClusterInstance),
            AgentFeatures {
                trace_pipelines: false,
                template_instances: true,
            },
        );
        let text = String::from_utf8(older.body).unwrap();
        assert!(!text.contains("tracePipelines"), "{text}");
        let older = AgentConfig::parse(&text, &context).unwrap();
        assert!(older.trace_pipelines.is_empty());
        assert_eq!(older.log_pipelines.len(), prod.log_pipelines.len());
    }

    /// Issue 16: a log pipeline reaches the clusters it selects, in their
    /// configuration's `logPipelines`, and no other cluster; a metric pipeline of the
    /// same name is a pipeline of its own in `pipelines`. What is rendered is what an
    /// agent accepts.
    #[tokio::test]
    async fn a_log_pipeline_reaches_only_the_clusters_it_selects() {
        let (_dir, store) = shop_store().await;
        store
            .apply_pipeline("shop", log_selecting("shop", "prod"), &Actor::admin())
            .await
            .unwrap();
        store
            .apply_pipeline("shop", selecting("shop", None), &Actor::admin())
            .await
            .unwrap();
        let mut clusters = BTreeMap::new();
        for env in ["prod", "dev"] {
            let cluster = shop_cluster(&store, &format!("{env}-1"), env).await;
            clusters.insert(env, cluster);
        }
        let configs = TenantPipelines::default()
            .get(&store, "shop")
            .await
            .unwrap();
        let context = kaas_pipeline::ValidationContext::observer(
            kaas_pipeline::ProviderPolicy::unrestricted(),
        );
        let parse = |cluster: &Cluster, role: AgentRole| {
            let rendered = configs.render_for_role(cluster, role);
            let text = String::from_utf8(rendered.body).unwrap();
            AgentConfig::parse(&text, &context).unwrap()
        };
        // The runtime input is the node instances' part; the metric pipeline the
        // cluster instance's.
        let prod = parse(&clusters["prod"], AgentRole::Node);
        let logs: Vec<&str> = prod.log_pipelines.iter().map(|p| p.name()).collect();
        assert_eq!(logs, ["shop"]);
        assert!(prod.pipelines.is_empty());
        let prod = parse(&clusters["prod"], AgentRole::Cluster);
        assert!(prod.log_pipelines.is_empty());
        let metrics: Vec<&str> = prod.pipelines.iter().map(|p| p.name()).collect();
        assert_eq!(metrics, ["shop"]);
        let dev = parse(&clusters["dev"], AgentRole::Node);
        assert!(dev.log_pipelines.is_empty(), "{:?}", dev.log_pipelines);
        assert_eq!(
            parse(&clusters["dev"], AgentRole::Cluster).pipelines.len(),
            1
        );
        assert_ne!(
            configs
                .render_for_role(&clusters["prod"], AgentRole::Node)
                .hash,
            configs
                .render_for_role(&clusters["dev"], AgentRole::Node)
                .hash
        );
    }

    /// Issue 16, "Central": with `--central-logs` every node instance of every cluster
    /// gets `kaas-central-logs` beside the tenant's log pipelines, as the agent accepts
    /// it (journal and agent certificate included); the cluster instance never does,
    /// and without the setting nobody does.
    #[tokio::test]
    async fn the_central_log_pipeline_reaches_every_node_instance_only_when_asked_for() {
        let (_dir, store) = shop_store().await;
        store
            .apply_pipeline("shop", log_selecting("shop", "prod"), &Actor::admin())
            .await
            .unwrap();
        let prod = shop_cluster(&store, "prod-1", "prod").await;
        let dev = shop_cluster(&store, "dev-1", "dev").await;
        // As an agent in observer mode reads its configuration.
        let context = kaas_pipeline::ValidationContext::observer(
            kaas_pipeline::ProviderPolicy::agent_default(),
        );
        let mut settings = CentralPipelineSettings::new("https://receive-gateway.example:19291");
        for logs in [true, false] {
            settings.logs = logs;
            let configs = TenantPipelines::new(Some(Arc::new(settings.clone())))
                .get(&store, "shop")
                .await
                .unwrap();
            let names = |cluster: &Cluster, role: AgentRole| -> Vec<String> {
                let rendered = configs.render_for_role(cluster, role);
                let text = String::from_utf8(rendered.body).unwrap();
                let parsed = AgentConfig::parse(&text, &context).unwrap();
                parsed
                    .log_pipelines
                    .iter()
                    .map(|p| p.name().to_owned())
                    .collect()
            };
            let central = crate::rendering::CENTRAL_LOGS_PIPELINE_NAME;
            let expected_prod: Vec<&str> = if logs {
                vec![central, "shop"]
            } else {
                vec!["shop"]
            };
            let expected_dev: Vec<&str> = if logs { vec![central] } else { vec![] };
            assert_eq!(names(&prod, AgentRole::Node), expected_prod, "logs {logs}");
            assert_eq!(names(&dev, AgentRole::Node), expected_dev, "logs {logs}");
            assert!(names(&prod, AgentRole::Cluster).is_empty(), "logs {logs}");
        }
    }
}
