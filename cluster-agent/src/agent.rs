//! The composition root: the running agent built from plain [`AgentSettings`]
//! ([`ConfiguredAgent::start`]: Kubernetes watches, the HTTP and OTLP/gRPC servers,
//! metrics), and its apply path, turning a validated agent configuration into running
//! pipelines. Standalone mode (a file, see [`crate::cli::run`]) and observer-connected
//! mode (the control stream, see [`crate::control`]) both come through
//! [`ConfiguredAgent::apply`] and so [`Agent::apply`].
//!
//! Applying compares each pipeline with what runs: an unchanged pipeline keeps running
//! untouched (no scrape gap, no reconnect), a changed one is stopped and started with
//! the new settings on the same buffer directory (nothing buffered is lost), a removed
//! one is stopped (its buffer directory stays, for an operator or a later re-add).
//!
//! Metric, log and trace pipelines are applied alike ([`reconcile`]), each kind by its
//! names (unique per kind only). Every apply also shares the agent's buffer budget
//! between the pipelines of every kind ([`crate::pipeline::budget`]); a pipeline whose
//! share changes is restarted with its new bound, like a changed one.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use kaas_pipeline::ProviderPolicy;
#[cfg(test)]
use kaas_pipeline::SecretNamespaces;
use kaas_pipeline::agent_config::ValidatedAgentConfig;
use kaas_pipeline::role::PushPlacement;
use kaas_self_telemetry::SelfTelemetry;
use tokio::sync::RwLock;

use crate::discovery::kubernetes::pods_by_ip::PodsByIpStarter;
use crate::discovery::kubernetes::watch;
use crate::files::FileAccess;
use crate::internal_events::ReloadState;
use crate::internal_events::{LogInputStats, PushStats};
use crate::labels::Labels;
use crate::node_certificates::{IssuanceQueue, NodeIssuer, ServiceAccountName, issuance_channel};
use crate::outbound::auth::{NoSecrets, SecretStore};
use crate::pipeline::budget::{BufferGrant, DEFAULT_BUFFER_BUDGET, allocate};
use crate::pipeline::kubelet::SERVICE_ACCOUNT_DIR;
use crate::pipeline::logs::{LogPipelines, RunningLogPipeline};
use crate::pipeline::node_logs::{NodeLogInputs, NodeLogSettings};
use crate::pipeline::runtime::{AgentContext, ClusterView, Pipelines, RunningPipeline};
use crate::pipeline::traces::{RunningTracePipeline, TracePipelines};
use crate::pipeline::{PipelineId, PipelineKind};
use crate::push::enrichment::PushEnrichment;
use crate::telemetry::registry;

mod keys;

use self::keys::WatchedKeys;
#[cfg(test)]
use self::keys::secret_namespaces;

/// The resource attribute naming the agent's cluster in its own telemetry, taken from
/// the `cluster` external label (OpenTelemetry's semantic convention).
pub const CLUSTER_RESOURCE_ATTRIBUTE: &str = "k8s.cluster.name";

/// What the agent is built from: checked values, already parsed from the command line
/// (see [`crate::cli::run`]) or set by a test.
#[derive(Clone, Debug)]
pub struct AgentSettings {
    /// Where buffers and state are kept.
    pub data_dir: PathBuf,
    /// Bytes the buffers of all pipelines may use together.
    pub buffer_budget: u64,
    /// Address for /metrics, /healthz, /readyz and the push receivers.
    pub listen_address: SocketAddr,
    /// Address for OTLP/gRPC pushes.
    pub otlp_grpc_listen_address: SocketAddr,
    /// Address for OTLP/HTTP pushes.
    pub otlp_http_listen_address: SocketAddr,
    /// Address for Zipkin pushes (`POST /api/v2/spans`).
    pub zipkin_listen_address: SocketAddr,
    /// Audiences pushed service-account tokens must be issued for; empty for any.
    pub push_token_audiences: Vec<String>,
    /// Whether to use the Kubernetes API when the agent finds one (in-cluster service
    /// account or `$KUBECONFIG`).
    pub kubernetes: bool,
    /// Accept any kubelet serving certificate.
    pub kubelet_insecure_skip_tls_verify: bool,
    /// The rules every configuration is validated under, and what the agent may read.
    pub policy: ProviderPolicy,
    /// Rules for output URLs read from Secrets: a tenant's, `--central-endpoints` refused.
    pub bound_urls: crate::outbound::destination::BoundUrlRules,
    /// What this instance runs.
    pub role: AgentRole,
    /// Where the kubelet writes container logs (node role).
    pub pod_log_dir: PathBuf,
    /// The journal directory (node role).
    pub journal_dir: PathBuf,
    /// Whose node agents may ask this cluster-level instance for their certificates
    /// ([`crate::node_certificates`]); `None` where there is no control stream to
    /// ask the observer over (standalone mode, the node role).
    pub node_service_account: Option<ServiceAccountName>,
    /// Whose gateway replicas may ask this cluster-level instance for their own pod's
    /// certificate ([`crate::node_certificates`]); `None` likewise.
    pub gateway_service_account: Option<ServiceAccountName>,
    /// How long to keep shipping buffered data after SIGTERM ([`ConfiguredAgent::drain`]).
    pub drain_timeout: std::time::Duration,
}

/// Why the agent cannot start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The listen address is taken.
    #[error("cannot listen on {address}: {source}")]
    Listen {
        /// The address.
        address: SocketAddr,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The OTLP exporter of the agent's own telemetry cannot be built.
    #[error("{0}")]
    SelfTelemetry(#[from] kaas_self_telemetry::BuildError),
}

/// What one apply did, each pipeline named with its kind.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct ApplyReport {
    /// Pipelines started for the first time.
    pub started: Vec<PipelineId>,
    /// Pipelines restarted with changed settings.
    pub restarted: Vec<PipelineId>,
    /// Pipelines left running unchanged.
    pub unchanged: Vec<PipelineId>,
    /// Pipelines stopped because they were removed.
    pub stopped: Vec<PipelineId>,
    /// Pipelines that could not start, with the reason.
    pub failed: Vec<(PipelineId, String)>,
}

/// The running agent.
pub struct Agent {
    base: AgentContext,
    external_labels: Arc<Labels>,
    /// Bytes all pipelines' buffers may use together.
    buffer_budget: u64,
    /// The running metric pipelines, readable by reporters.
    pub pipelines: Arc<RwLock<Pipelines>>,
    /// The running log pipelines, readable by reporters.
    pub log_pipelines: Arc<RwLock<LogPipelines>>,
    /// The running trace pipelines, readable by reporters and the push receivers.
    pub trace_pipelines: Arc<RwLock<TracePipelines>>,
    /// What pushed spans are enriched with; its pod cache runs while a trace pipeline
    /// does ([`Agent::apply`]).
    pub push_enrichment: Arc<PushEnrichment>,
    /// What the agent runs ([`AgentRole`]).
    role: AgentRole,
    /// The node's log inputs, on the node role.
    node_logs: Option<NodeLogInputs>,
    /// What the node's log inputs read, for `/metrics`.
    pub log_inputs: Arc<LogInputStats>,
}

/// Which part of a cluster's telemetry an agent instance runs (`--role`): the cluster
/// instance runs metric pipelines and the push receivers (OTLP logs included), a node
/// instance only the log pipelines' `runtime` and `node` inputs.
pub use kaas_pipeline::role::AgentRole;

/// A running pipeline of either kind, as [`Agent::apply`] reconciles it.
trait Reconciled: Sized {
    /// Its validated configuration.
    type Config;
    /// The kind.
    const KIND: PipelineKind;
    /// The name of a configuration.
    fn name_of(config: &Self::Config) -> &str;
    /// Whether it runs `config` with `grant` already.
    fn runs(&self, config: &Self::Config, grant: &BufferGrant) -> bool;
    /// Starts `config`.
    fn start(
        config: Self::Config,
        context: &AgentContext,
        grant: BufferGrant,
    ) -> Result<Self, crate::pipeline::runtime::StartError>;
    /// Stops it.
    fn stop(self) -> impl std::future::Future<Output = ()>;
}

impl Reconciled for RunningPipeline {
    type Config = kaas_pipeline::ValidatedPipeline;
    const KIND: PipelineKind = PipelineKind::Metric;
    fn name_of(config: &Self::Config) -> &str {
        config.name()
    }
    fn runs(&self, config: &Self::Config, grant: &BufferGrant) -> bool {
        self.data_path.buffer_grant == *grant
            && self.pipeline.resource().spec == config.resource().spec
    }
    fn start(
        config: Self::Config,
        context: &AgentContext,
        grant: BufferGrant,
    ) -> Result<Self, crate::pipeline::runtime::StartError> {
        RunningPipeline::start(config, context, grant)
    }
    async fn stop(self) {
        RunningPipeline::stop(self).await;
    }
}

impl Reconciled for RunningLogPipeline {
    type Config = kaas_pipeline::logs::ValidatedLogPipeline;
    const KIND: PipelineKind = PipelineKind::Log;
    fn name_of(config: &Self::Config) -> &str {
        config.name()
    }
    fn runs(&self, config: &Self::Config, grant: &BufferGrant) -> bool {
        self.data_path.buffer_grant == *grant && self.pipeline.spec() == config.spec()
    }
    fn start(
        config: Self::Config,
        context: &AgentContext,
        grant: BufferGrant,
    ) -> Result<Self, crate::pipeline::runtime::StartError> {
        RunningLogPipeline::start(config, context, grant)
    }
    async fn stop(self) {
        RunningLogPipeline::stop(self).await;
    }
}

impl Reconciled for RunningTracePipeline {
    type Config = kaas_pipeline::traces::ValidatedTracePipeline;
    const KIND: PipelineKind = PipelineKind::Trace;
    fn name_of(config: &Self::Config) -> &str {
        config.name()
    }
    fn runs(&self, config: &Self::Config, grant: &BufferGrant) -> bool {
        self.data_path.buffer_grant == *grant && self.pipeline.spec() == config.spec()
    }
    fn start(
        config: Self::Config,
        context: &AgentContext,
        grant: BufferGrant,
    ) -> Result<Self, crate::pipeline::runtime::StartError> {
        RunningTracePipeline::start(config, context, grant)
    }
    async fn stop(self) {
        RunningTracePipeline::stop(self).await;
    }
}

/// Makes the pipelines of one kind in `running` match `wanted` (see the module
/// documentation); `restart_all` restarts even unchanged ones (the external labels
/// changed).
async fn reconcile<P: Reconciled>(
    running: &mut BTreeMap<String, P>,
    wanted: Vec<P::Config>,
    grants: &mut BTreeMap<PipelineId, BufferGrant>,
    context: &AgentContext,
    restart_all: bool,
    report: &mut ApplyReport,
) {
    let id = |name: &str| PipelineId {
        kind: P::KIND,
        name: name.to_owned(),
    };
    let names: BTreeSet<&str> = wanted.iter().map(P::name_of).collect();
    let removed: Vec<String> = running
        .keys()
        .filter(|name| !names.contains(name.as_str()))
        .cloned()
        .collect();
    for name in removed {
        if let Some(pipeline) = running.remove(&name) {
            pipeline.stop().await;
            report.stopped.push(id(&name));
        }
    }
    for config in wanted {
        let name = P::name_of(&config).to_owned();
        let Some(grant) = grants.remove(&id(&name)) else {
            // Every wanted pipeline was granted a share; one without is a bug, and
            // running it unbounded would break the budget.
            report
                .failed
                .push((id(&name), "no buffer share was granted".to_owned()));
            continue;
        };
        let previous = running.remove(&name);
        let restart = match previous {
            Some(current) if !restart_all && current.runs(&config, &grant) => {
                running.insert(name.clone(), current);
                report.unchanged.push(id(&name));
                continue;
            }
            Some(current) => {
                current.stop().await;
                true
            }
            None => false,
        };
        match P::start(config, context, grant) {
            Ok(started) => {
                running.insert(name.clone(), started);
                if restart {
                    report.restarted.push(id(&name));
                } else {
                    report.started.push(id(&name));
                }
            }
            Err(error) => report.failed.push((id(&name), error.to_string())),
        }
    }
}

impl Agent {
    /// An agent with no pipelines yet.
    pub fn new(base: AgentContext) -> Self {
        Self {
            external_labels: base.external_labels.clone(),
            base,
            buffer_budget: DEFAULT_BUFFER_BUDGET,
            pipelines: Arc::new(RwLock::new(Pipelines::new())),
            log_pipelines: Arc::new(RwLock::new(LogPipelines::new())),
            trace_pipelines: Arc::new(RwLock::new(TracePipelines::new())),
            push_enrichment: Arc::default(),
            role: AgentRole::Cluster,
            node_logs: None,
            log_inputs: Arc::default(),
        }
    }

    /// Runs as the node role: only log pipelines, fed by the node's log inputs read
    /// with `settings`.
    pub fn run_as_node(&mut self, settings: NodeLogSettings) {
        self.role = AgentRole::Node;
        self.node_logs = Some(NodeLogInputs::new(settings, self.log_inputs.clone()));
    }

    /// Enriches pushed spans and log records from the sending pod, through a pod cache
    /// `starter` starts while a pipeline taking them runs. Called before the push
    /// receivers are built: they share [`Agent::push_enrichment`] as it is then.
    pub fn enrich_pushes_from_pods(&mut self, starter: PodsByIpStarter) {
        self.push_enrichment = Arc::new(PushEnrichment::new(Some(starter)));
    }

    /// Runs as a gateway replica: only the pushed inputs of the pipelines applied from
    /// now on.
    pub fn run_as_gateway(&mut self) {
        self.role = AgentRole::Gateway;
    }

    /// Shares `bytes` between the buffers of the pipelines applied from now on (the
    /// default is [`DEFAULT_BUFFER_BUDGET`]).
    pub fn set_buffer_budget(&mut self, bytes: u64) {
        self.buffer_budget = bytes;
    }

    /// Uses `secrets` for pipelines started from now on (running pipelines keep the
    /// store they started with, which still serves their namespaces).
    pub fn set_secret_store(&mut self, secrets: Arc<dyn SecretStore>) {
        self.base.secrets = secrets;
    }

    /// Makes the running pipelines of every kind match `config`. The external labels
    /// are the metric pipelines' (a change restarts them); log records and spans carry
    /// the cluster in their resource instead.
    pub async fn apply(&mut self, config: ValidatedAgentConfig) -> ApplyReport {
        let external_labels = Arc::new(Labels::from_pairs(config.external_labels.clone()));
        let labels_changed = external_labels != self.external_labels;
        self.external_labels = external_labels.clone();
        let context = AgentContext {
            external_labels,
            ..self.base.clone()
        };
        let mut report = ApplyReport::default();
        let mut config = config;
        if self.role != AgentRole::Cluster || config.pushes_to_gateway {
            // A node runs only its log inputs, a gateway only pushed inputs, a cluster
            // instance whose pushes go to the gateway none: the observer sends each no
            // more, but instances it renders (or a file, an older observer) may hold more.
            cut_to_role(&mut config, self.role);
        }
        let metric_asks = config
            .pipelines
            .iter()
            .map(|p| (PipelineId::metric(p.name()), p.buffer.max_bytes.get()));
        let log_asks = config
            .log_pipelines
            .iter()
            .map(|p| (PipelineId::log(p.name()), p.buffer.max_bytes.get()));
        let trace_asks = config
            .trace_pipelines
            .iter()
            .map(|p| (PipelineId::trace(p.name()), p.buffer.max_bytes.get()));
        let mut grants = allocate(
            self.buffer_budget,
            metric_asks.chain(log_asks).chain(trace_asks),
        );
        let mut traces = self.trace_pipelines.write().await;
        reconcile(
            &mut traces,
            config.trace_pipelines,
            &mut grants,
            &context,
            false,
            &mut report,
        )
        .await;
        let traces_run = !traces.is_empty();
        drop(traces);
        let mut logs = self.log_pipelines.write().await;
        // The inputs stop before any log pipeline does: none may write into a buffer
        // directory a restarted pipeline reopens.
        if let Some(inputs) = self.node_logs.as_mut() {
            inputs.stop().await;
        }
        reconcile(
            &mut logs,
            config.log_pipelines,
            &mut grants,
            &context,
            false,
            &mut report,
        )
        .await;
        if let Some(inputs) = self.node_logs.as_mut() {
            let cluster = config.external_labels.get("cluster").map(String::as_str);
            inputs.start(&logs, cluster).await;
        }
        // The pod cache is held while a pipeline taking enriched pushes runs (a trace
        // pipeline, a log pipeline with an `otlp` input), and freed with the last.
        let otlp_logs_run = logs.values().any(|p| p.pipeline.inputs.otlp.is_some());
        let cluster = config.external_labels.get("cluster");
        (self.push_enrichment).follow(
            traces_run || otlp_logs_run,
            cluster.map_or("", String::as_str),
        );
        drop(logs);
        let mut metrics = self.pipelines.write().await;
        reconcile(
            &mut metrics,
            config.pipelines,
            &mut grants,
            &context,
            labels_changed,
            &mut report,
        )
        .await;
        report
    }

    /// Records not yet delivered by every running pipeline together; a buffer busy
    /// with a write counts as one (not known to be empty).
    pub async fn pending_records(&self) -> u64 {
        let pending = |records: Option<u64>| records.unwrap_or(1);
        let metrics: u64 = (self.pipelines.read().await.values())
            .map(|p| pending(p.data_path.pending_records()))
            .sum();
        let logs: u64 = (self.log_pipelines.read().await.values())
            .map(|p| pending(p.data_path.pending_records()))
            .sum();
        let traces: u64 = (self.trace_pipelines.read().await.values())
            .map(|p| pending(p.data_path.pending_records()))
            .sum();
        metrics + logs + traces
    }

    /// Stops every pipeline.
    pub async fn shutdown(&mut self) {
        if let Some(inputs) = self.node_logs.as_mut() {
            inputs.stop().await;
        }
        let all = std::mem::take(&mut *self.log_pipelines.write().await);
        for (_, pipeline) in all {
            pipeline.stop().await;
        }
        let all = std::mem::take(&mut *self.trace_pipelines.write().await);
        for (_, pipeline) in all {
            pipeline.stop().await;
        }
        let all = std::mem::take(&mut *self.pipelines.write().await);
        for (_, pipeline) in all {
            pipeline.stop().await;
        }
    }
}

/// A client for the cluster's API, when the agent runs in a cluster (or has a kubeconfig).
async fn kubernetes_client(enabled: bool) -> Option<kube::Client> {
    let configured = std::env::var_os("KUBERNETES_SERVICE_HOST").is_some()
        || std::env::var_os("KUBECONFIG").is_some();
    if !enabled || !configured {
        tracing::info!(
            "Kubernetes discovery is off: no in-cluster service account and no KUBECONFIG"
        );
        return None;
    }
    match kube::Client::try_default().await {
        Ok(client) => {
            tracing::info!("using the Kubernetes API for pod discovery and secretKeyRef values");
            Some(client)
        }
        Err(error) => {
            tracing::error!(%error, "cannot reach the Kubernetes API; the prometheus input finds no pods");
            None
        }
    }
}

/// Pipelines as `Kind/name`, comma-separated, for the log.
fn names(ids: &[PipelineId]) -> String {
    ids.iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

fn log_report(report: &ApplyReport) {
    tracing::info!(
        started = %names(&report.started),
        restarted = %names(&report.restarted),
        unchanged = %names(&report.unchanged),
        stopped = %names(&report.stopped),
        "configuration applied"
    );
    for (pipeline, reason) in &report.failed {
        tracing::error!(pipeline = %pipeline.name, kind = %pipeline.kind, %reason, "pipeline could not start");
    }
}

/// Cuts `config` to the part an instance of `role` runs with the pushes at the gateway
/// ([`kaas_pipeline::role`]), saying in the log what it leaves out.
fn cut_to_role(config: &mut ValidatedAgentConfig, role: AgentRole) {
    fn cut<P>(pipelines: &mut Vec<P>, role: AgentRole, kind: &str, part: impl Fn(&P) -> Option<P>)
    where
        P: NamedPipeline,
    {
        *pipelines = std::mem::take(pipelines)
            .into_iter()
            .filter_map(|pipeline| {
                let kept = part(&pipeline);
                if kept.is_none() {
                    tracing::info!(pipeline = %pipeline.pipeline_name(), kind, role = role.as_str(), "pipeline skipped: it has no input this role runs");
                }
                kept
            })
            .collect();
    }
    let placement = PushPlacement::Gateway;
    cut(&mut config.pipelines, role, "metric", |p| {
        p.for_role(role, placement)
    });
    cut(&mut config.log_pipelines, role, "log", |p| {
        p.for_role(role, placement)
    });
    cut(&mut config.trace_pipelines, role, "trace", |p| {
        p.for_role(role, placement)
    });
}

/// A pipeline of any kind, by name, for [`cut_to_role`]'s log lines.
trait NamedPipeline {
    fn pipeline_name(&self) -> &str;
}

impl NamedPipeline for kaas_pipeline::ValidatedPipeline {
    fn pipeline_name(&self) -> &str {
        self.name()
    }
}

impl NamedPipeline for kaas_pipeline::ValidatedLogPipeline {
    fn pipeline_name(&self) -> &str {
        self.name()
    }
}

impl NamedPipeline for kaas_pipeline::ValidatedTracePipeline {
    fn pipeline_name(&self) -> &str {
        self.name()
    }
}

/// The running agent with everything both modes share: the Kubernetes watches, the
/// HTTP and OTLP/gRPC servers and the agent's metrics. Configurations reach its
/// pipelines only through [`ConfiguredAgent::apply`].
pub struct ConfiguredAgent {
    agent: Agent,
    kubernetes: Option<kube::Client>,
    policy: ProviderPolicy,
    /// What applied configurations read from the cluster ([`keys`]).
    keys: WatchedKeys,
    /// Reload outcomes, shown in `/metrics` and `/readyz`.
    pub reloads: Arc<ReloadState>,
    /// The resource of the agent's own telemetry (gains the cluster's name).
    telemetry_resource: kaas_self_telemetry::Resource,
    /// Node certificate requests for the control stream, until it takes them.
    issuance_queue: Option<IssuanceQueue>,
    /// The push receivers (cluster and gateway roles), to refuse pushes while draining.
    push_receiver: Option<crate::push::PushReceiver>,
}

impl ConfiguredAgent {
    /// Connects to Kubernetes (when available), binds the listeners and starts the
    /// servers and the self-telemetry exporter; no pipeline runs yet.
    pub async fn start(
        settings: &AgentSettings,
        telemetry: &mut SelfTelemetry,
    ) -> Result<Self, StartError> {
        let kubernetes = kubernetes_client(settings.kubernetes).await;
        // Discovery is the cluster-level instance's: a node instance watches only its
        // node's pods (below), which is all its RBAC grants (deploy/agent/base/node-agent.yaml).
        let discovery = kubernetes
            .clone()
            .filter(|_| settings.role == AgentRole::Cluster);
        // A gateway watches pods only: the senders of pushed spans and logs, for enrichment.
        let pods = kubernetes
            .clone()
            .filter(|_| settings.role != AgentRole::Node)
            .map(watch::watch_pods);
        let nodes = discovery.clone().map(watch::watch_nodes);
        let services = discovery.clone().map(watch::watch_services);
        let endpoint_slices = discovery.map(watch::watch_endpoint_slices);
        let policy = settings.policy.clone();
        let context = AgentContext {
            data_dir: settings.data_dir.clone(),
            external_labels: Arc::new(Labels::default()),
            secrets: Arc::new(NoSecrets),
            files: Arc::new(FileAccess::new(policy.paths.clone())),
            cluster: ClusterView {
                pods: pods.as_ref().map(|(r, _)| r.clone()),
                nodes: nodes.as_ref().map(|(r, _)| r.clone()),
                services: services.as_ref().map(|(r, _)| r.clone()),
                endpoint_slices: endpoint_slices.as_ref().map(|(r, _)| r.clone()),
            },
            service_account_dir: SERVICE_ACCOUNT_DIR.into(),
            kubelet_insecure_skip_verify: settings.kubelet_insecure_skip_tls_verify,
            bound_urls: settings.bound_urls.clone(),
        };
        let mut agent = Agent::new(context);
        agent.set_buffer_budget(settings.buffer_budget);
        start_role(&mut agent, settings, kubernetes.as_ref());
        let reloads = Arc::new(ReloadState::default());
        let push_stats = Arc::new(PushStats::default());
        let mut registry = registry(
            agent.pipelines.clone(),
            agent.log_pipelines.clone(),
            agent.trace_pipelines.clone(),
            agent.log_inputs.clone(),
            reloads.clone(),
            push_stats.clone(),
            settings.buffer_budget,
        );
        telemetry.register(&mut registry);
        let registry = Arc::new(registry);
        telemetry.start(registry.clone())?;
        let listener = listen(settings.listen_address).await?;
        let push_receiver = match settings.role {
            AgentRole::Cluster | AgentRole::Gateway => {
                Some(serve_push(settings, kubernetes.clone(), &agent, push_stats.clone()).await?)
            }
            // Pushes go to the cluster-level instance's or the gateway's Service.
            AgentRole::Node => None,
        };
        let mut push = push_receiver
            .as_ref()
            .map_or_else(axum::Router::new, crate::push::PushReceiver::routes);
        let mut issuance_queue = None;
        if let (AgentRole::Cluster, Some(account)) =
            (settings.role, settings.node_service_account.clone())
        {
            let (stream, queue) = issuance_channel();
            let issuer = Arc::new(
                NodeIssuer::new(kubernetes.clone(), account, stream, push_stats.clone())
                    .with_gateway_service_account(settings.gateway_service_account.clone()),
            );
            push = push.merge(issuer.routes());
            issuance_queue = Some(queue);
        }
        let app = crate::server::app(registry, reloads.clone(), push);
        tokio::spawn(async move {
            if let Err(error) = axum::serve(listener, app).await {
                tracing::error!(%error, "the HTTP server stopped");
            }
        });
        tracing::info!(
            address = %settings.listen_address,
            role = ?settings.role,
            "serving /metrics, /healthz, /readyz (and on the cluster and gateway roles the push receivers /api/v1/write and /v1/metrics, deprecated: OTLP/HTTP belongs on its own port)"
        );
        Ok(Self {
            agent,
            kubernetes,
            policy,
            keys: WatchedKeys::default(),
            reloads,
            telemetry_resource: telemetry.resource(),
            issuance_queue,
            push_receiver,
        })
    }

    /// The node certificate requests for the control stream to send (once; `None`
    /// when this instance hands out no node certificates).
    pub fn take_issuance_queue(&mut self) -> Option<IssuanceQueue> {
        self.issuance_queue.take()
    }

    /// Whether the agent can reach the Kubernetes API (for discovery and Secrets).
    pub fn has_kubernetes(&self) -> bool {
        self.kubernetes.is_some()
    }

    /// The running metric pipelines, for health reports.
    pub fn pipelines(&self) -> Arc<tokio::sync::RwLock<Pipelines>> {
        self.agent.pipelines.clone()
    }

    /// The running log pipelines, for health reports.
    pub fn log_pipelines(&self) -> Arc<tokio::sync::RwLock<LogPipelines>> {
        self.agent.log_pipelines.clone()
    }

    /// The running trace pipelines, for health reports.
    pub fn trace_pipelines(&self) -> Arc<tokio::sync::RwLock<TracePipelines>> {
        self.agent.trace_pipelines.clone()
    }

    /// Drains before the agent stops (SIGTERM): `/readyz` answers 503 at once, so the
    /// push Service sends no new connection here, and every push is refused with 503
    /// or `UNAVAILABLE` and `Retry-After` (the sender retries, on another replica);
    /// meanwhile the pipelines go on shipping what they hold, until every buffer is
    /// empty or `timeout` has passed. What is left stays on the data volume and is
    /// shipped by the next agent that mounts it (a gateway replica's volume is kept
    /// when the StatefulSet scales in). Returns the records still undelivered.
    pub async fn drain(&self, timeout: Duration) -> u64 {
        self.reloads.draining.store(true, Ordering::Relaxed);
        if let Some(receiver) = &self.push_receiver {
            receiver.drain();
        }
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let left = self.agent.pending_records().await;
            if left == 0 {
                tracing::info!("drained: every buffer is empty");
                return 0;
            }
            if tokio::time::Instant::now() >= deadline {
                if !timeout.is_zero() {
                    tracing::warn!(
                        bytes = left,
                        "drain timed out; what is left stays on the data volume for the next start"
                    );
                }
                return left;
            }
            tokio::time::sleep(DRAIN_CHECK_INTERVAL).await;
        }
    }

    /// Stops every pipeline.
    pub async fn shutdown(&mut self) {
        self.agent.shutdown().await;
    }
}

/// How often a draining agent looks whether its buffers are empty.
const DRAIN_CHECK_INTERVAL: Duration = Duration::from_millis(500);
/// Starts what `settings.role` runs beside its pipelines: enrichment of pushes from
/// the sending pod, the gateway's push-only part, a node's log inputs.
fn start_role(agent: &mut Agent, settings: &AgentSettings, kubernetes: Option<&kube::Client>) {
    // Spans and logs are pushed to the cluster instance, or to the gateway replicas
    // while the cluster has them: both enrich them from the sending pod.
    if matches!(settings.role, AgentRole::Cluster | AgentRole::Gateway)
        && let Some(client) = kubernetes.cloned()
    {
        agent.enrich_pushes_from_pods(PodsByIpStarter::new(client));
    }
    if settings.role == AgentRole::Gateway {
        agent.run_as_gateway();
    }
    if settings.role == AgentRole::Node {
        let node = crate::pipeline::node_logs::node_name();
        let pods = kubernetes.cloned().map(|client| {
            crate::log_inputs::PodMetadataCache::new(watch::watch_node_pods(client, &node).0)
        });
        // The tailer takes absolute paths only; relative flags are the working
        // directory's.
        let absolute = |path: PathBuf| std::path::absolute(&path).unwrap_or(path);
        agent.run_as_node(NodeLogSettings {
            pod_log_dir: absolute(settings.pod_log_dir.clone()),
            journal_dir: absolute(settings.journal_dir.clone()),
            state_dir: absolute(settings.data_dir.join("log-inputs")),
            node: crate::log_inputs::NodeIdentity {
                node_name: node,
                cluster_name: String::new(),
            },
            pods,
            files: settings.policy.node_logs.files.clone(),
            reopen_interval: crate::pipeline::node_logs::REOPEN_INTERVAL,
        });
    }
}

/// Starts the OTLP/gRPC, OTLP/HTTP and Zipkin push receivers (cluster and gateway
/// roles) and returns the receiver, whose routes go on the agent's HTTP port.
async fn serve_push(
    settings: &AgentSettings,
    kubernetes: Option<kube::Client>,
    agent: &Agent,
    push_stats: Arc<PushStats>,
) -> Result<crate::push::PushReceiver, StartError> {
    let grpc_listener = listen(settings.otlp_grpc_listen_address).await?;
    let otlp_http_listener = listen(settings.otlp_http_listen_address).await?;
    let zipkin_listener = listen(settings.zipkin_listen_address).await?;
    let reviewer =
        crate::push::auth::TokenReviewer::new(kubernetes, settings.push_token_audiences.clone());
    let receiver = crate::push::PushReceiver::new(
        agent.pipelines.clone(),
        agent.log_pipelines.clone(),
        push_stats,
        kaas_series::PushLimits::default(),
        reviewer,
    )
    .with_trace_pipelines(agent.trace_pipelines.clone())
    .with_enrichment(agent.push_enrichment.clone());
    let grpc = crate::push::otlp_grpc::OtlpGrpc::new(receiver.clone());
    let grpc_logs = crate::push::otlp_grpc::OtlpLogsGrpc::new(receiver.clone());
    let grpc_traces = crate::push::otlp_grpc::OtlpTracesGrpc::new(receiver.clone());
    tokio::spawn(async move {
        let served =
            crate::push::otlp_grpc::serve(grpc_listener, grpc, grpc_logs, grpc_traces).await;
        if let Err(error) = served {
            tracing::error!(%error, "the OTLP/gRPC receiver stopped");
        }
    });
    // With the connection's address, which finds the pod that pushed spans.
    let otlp_http =
        (receiver.otlp_http_routes()).into_make_service_with_connect_info::<SocketAddr>();
    tokio::spawn(async move {
        if let Err(error) = axum::serve(otlp_http_listener, otlp_http).await {
            tracing::error!(%error, "the OTLP/HTTP receiver stopped");
        }
    });
    tracing::info!(
        address = %settings.otlp_http_listen_address,
        "serving the OTLP/HTTP push receivers /v1/metrics, /v1/logs and /v1/traces"
    );
    let zipkin = (receiver.zipkin_routes()).into_make_service_with_connect_info::<SocketAddr>();
    tokio::spawn(async move {
        if let Err(error) = axum::serve(zipkin_listener, zipkin).await {
            tracing::error!(%error, "the Zipkin receiver stopped");
        }
    });
    tracing::info!(
        address = %settings.zipkin_listen_address,
        "serving the Zipkin push receiver /api/v2/spans"
    );
    Ok(receiver)
}

/// Binds one of the agent's listeners.
async fn listen(address: SocketAddr) -> Result<tokio::net::TcpListener, StartError> {
    tokio::net::TcpListener::bind(address)
        .await
        .map_err(|source| StartError::Listen { address, source })
}

#[cfg(test)]
mod tests {
    use kaas_pipeline::ValidationContext;
    use kaas_pipeline::agent_config::{AgentConfig, AgentConfigError};

    use super::*;
    use crate::internal_events::ReloadState;

    /// The namespaces watched for Secrets come from every reference the validated
    /// pipeline names, the push inputs' bearer tokens included (read from the
    /// `ValidatedPipeline`, not from the raw spec).
    #[test]
    fn push_bearer_token_secrets_are_watched_with_the_outputs() {
        let text = r#"
apiVersion: telemetry.kaas-observer.io/v1alpha1
kind: AgentConfig
pipelines:
  - metadata: {name: p}
    spec:
      input:
        otlp:
          enabled: true
          authentication:
            mode: bearerToken
            bearerToken: {valueFrom: {secretKeyRef: {name: t, namespace: pushers, key: k}}}
      output:
        prometheusRemoteWrite:
          url: https://r.example/write
          headers:
            - {name: X-A, valueFrom: {secretKeyRef: {name: a, namespace: writers, key: k}}}
"#;
        let context = ValidationContext::observer(ProviderPolicy::unrestricted());
        let config = AgentConfig::parse(text, &context).unwrap();
        let all = SecretNamespaces::only(["pushers", "writers"]);
        let watched = secret_namespaces(&config, &all);
        assert_eq!(watched, ["pushers".to_owned(), "writers".to_owned()].into());
        let watched = secret_namespaces(&config, &SecretNamespaces::only(["pushers"]));
        assert_eq!(watched, ["pushers".to_owned()].into());
    }

    /// Issue 13, finding 9: the Secret watcher never watches a namespace outside
    /// --secret-namespaces, even for a configuration that never passed the allow-list
    /// (here validated without it). On 552c13e it watched every namespace pipelines
    /// named.
    #[test]
    fn secrets_are_watched_only_in_allowed_namespaces() {
        let text = r#"
apiVersion: telemetry.kaas-observer.io/v1alpha1
kind: AgentConfig
pipelines:
  - metadata: {name: p}
    spec:
      input: {prometheus: {enabled: true}}
      output:
        prometheusRemoteWrite:
          url: https://r.example/write
          headers:
            - {name: X-A, valueFrom: {secretKeyRef: {name: a, namespace: kaas-observer, key: k}}}
            - {name: X-B, valueFrom: {secretKeyRef: {name: b, namespace: kube-system, key: k}}}
"#;
        let unchecked = ValidationContext::observer(ProviderPolicy::unrestricted());
        let config = AgentConfig::parse(text, &unchecked).unwrap();
        let watched = secret_namespaces(&config, &SecretNamespaces::only(["kaas-observer"]));
        assert_eq!(watched, ["kaas-observer".to_owned()].into());
        // Validated as the agent validates, the configuration is refused outright.
        let checked = ValidationContext::observer(ProviderPolicy::agent_default());
        let Err(AgentConfigError::Invalid(errors)) = AgentConfig::parse(text, &checked) else {
            panic!("accepted");
        };
        assert_eq!(
            errors.errors()[0].path,
            "pipelines[0].spec.output.prometheusRemoteWrite.headers[1].valueFrom.secretKeyRef.namespace"
        );
    }

    /// Issue 16: a node instance never starts a log pipeline that only takes OTLP
    /// pushes (the cluster-level instance's), even when a configuration holds one;
    /// a pipeline that also reads the node's files runs without its push input.
    #[tokio::test]
    async fn a_node_instance_skips_log_pipelines_that_only_take_pushes() {
        let dir = tempfile::tempdir().unwrap();
        let mut agent = plain_agent(dir.path());
        agent.run_as_node(node_settings(dir.path(), "node-1.example"));
        let report = agent.apply(config(LOGS, true)).await;
        assert_eq!(report, ApplyReport::default(), "nothing runs on the node");
        assert!(!dir.path().join("log-buffers/shop").exists());
        let both = "      input: {runtime: {enabled: true}, otlp: {enabled: true}}\n      output: {otlp: {endpoint: 'http://127.0.0.1:9'}}\n";
        let report = agent.apply(config(both, false)).await;
        assert_eq!(report.started, [PipelineId::log("shop")], "{report:?}");
        let running = agent.log_pipelines.read().await;
        let inputs = &running["shop"].pipeline.inputs;
        assert!(inputs.runtime.is_some() && inputs.otlp.is_none());
        drop(running);
        agent.shutdown().await;
    }

    /// Issue 16: a journal that is missing when the node's inputs start makes its
    /// pipeline report `InputNotRead`, again while it stays missing; once the
    /// directory appears the input opens and the error is withdrawn.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_journal_that_appears_later_is_read_and_its_error_withdrawn() {
        use std::time::Duration;

        use crate::internal_events::ErrorReason;
        let dir = tempfile::tempdir().unwrap();
        let journal = dir.path().join("journal");
        let mut agent = plain_agent(dir.path());
        agent.run_as_node(NodeLogSettings {
            reopen_interval: Duration::from_millis(50),
            ..node_settings(dir.path(), "node-1")
        });
        let kubelet = "      input: {node: {enabled: true, journal: {units: [kubelet.service]}}}\n      output: {otlp: {endpoint: 'http://127.0.0.1:9'}}\n";
        let report = agent.apply(config(kubelet, false)).await;
        assert_eq!(report.started, [PipelineId::log("shop")], "{report:?}");
        let stats = agent.log_pipelines.read().await["shop"]
            .data_path
            .stats
            .clone();
        let error = stats.last_error().expect("the journal is not read");
        assert_eq!(error.reason, ErrorReason::InputNotRead);
        // Still missing: the error is repeated (counted again), not left to age.
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        let not_read = |stats: &crate::internal_events::PipelineStats| {
            (stats.errors_by_reason().into_iter())
                .find(|(reason, _)| *reason == ErrorReason::InputNotRead)
                .map_or(0, |(_, n)| n)
        };
        while not_read(&stats) < 2 {
            assert!(std::time::Instant::now() < deadline, "never tried again");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        std::fs::create_dir_all(&journal).unwrap();
        while stats.last_error().is_some() {
            assert!(
                std::time::Instant::now() < deadline,
                "the error stayed: {:?}",
                stats.last_error()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(dir.path().join("log-inputs/journal.position").exists());
        agent.shutdown().await;
    }

    /// The node inputs of node `node` with everything below `dir` (the journal in
    /// `dir/journal`).
    fn node_settings(dir: &std::path::Path, node: &str) -> NodeLogSettings {
        NodeLogSettings {
            pod_log_dir: dir.join("pods"),
            journal_dir: dir.join("journal"),
            state_dir: dir.join("log-inputs"),
            node: crate::log_inputs::NodeIdentity {
                node_name: node.into(),
                cluster_name: String::new(),
            },
            pods: None,
            files: kaas_pipeline::paths::PathPolicy::for_agent(dir),
            reopen_interval: crate::pipeline::node_logs::REOPEN_INTERVAL,
        }
    }

    /// An agent with no Kubernetes access, keeping its data in `dir`.
    fn plain_agent(dir: &std::path::Path) -> Agent {
        Agent::new(AgentContext {
            data_dir: dir.to_owned(),
            external_labels: Arc::new(Labels::default()),
            secrets: Arc::new(NoSecrets),
            files: Arc::default(),
            cluster: ClusterView::default(),
            service_account_dir: dir.join("no-service-account"),
            kubelet_insecure_skip_verify: false,
            bound_urls: Default::default(),
        })
    }

    fn config(log_spec: &str, with_metric: bool) -> ValidatedAgentConfig {
        let metric = if with_metric {
            "pipelines:\n  - metadata: {name: shop}\n    spec:\n      input: {static: {targets: [{addresses: ['127.0.0.1:9']}]}}\n      output: {prometheusRemoteWrite: {url: 'http://127.0.0.1:9/write'}}\n"
        } else {
            ""
        };
        let text = format!(
            "apiVersion: telemetry.kaas-observer.io/v1alpha1\nkind: AgentConfig\n{metric}logPipelines:\n  - metadata: {{name: shop}}\n    spec:\n{log_spec}"
        );
        AgentConfig::parse(&text, &ValidationContext::standalone()).unwrap()
    }

    const LOGS: &str = "      input: {otlp: {enabled: true}}\n      output: {otlp: {endpoint: 'http://127.0.0.1:9'}}\n";
    const CHANGED_LOGS: &str = "      input: {otlp: {enabled: true}}\n      output: {otlp: {endpoint: 'http://127.0.0.1:10'}}\n";

    /// A cluster instance whose pushes go to the gateway (`pushesToGateway`, sent with
    /// the instances it renders) runs only the scraped part of what it is given: the
    /// metric pipeline's scraping, not the log pipeline that only takes pushes.
    #[tokio::test]
    async fn a_cluster_instance_whose_pushes_go_to_the_gateway_runs_no_pushed_input() {
        let dir = tempfile::tempdir().unwrap();
        let mut agent = plain_agent(dir.path());
        let mut cut = config(LOGS, true);
        cut.pushes_to_gateway = true;
        let report = agent.apply(cut).await;
        assert_eq!(report.started, [PipelineId::metric("shop")], "{report:?}");
        assert!(agent.log_pipelines.read().await.is_empty());
        let report = agent.apply(config(LOGS, true)).await;
        assert_eq!(report.started, [PipelineId::log("shop")], "{report:?}");
        agent.shutdown().await;
    }

    /// Issue 16: log pipelines start, restart and stop like metric ones, each kind by
    /// its own names (a metric and a log pipeline named alike are two pipelines with
    /// two buffers), and the report names the kind; health reports carry both with
    /// their kinds, and `/metrics` shows the log pipeline in the log families only.
    #[tokio::test]
    async fn log_pipelines_are_applied_beside_metric_pipelines_of_the_same_name() {
        let dir = tempfile::tempdir().unwrap();
        let mut agent = plain_agent(dir.path());
        let report = agent.apply(config(LOGS, true)).await;
        assert_eq!(
            report.started,
            [PipelineId::log("shop"), PipelineId::metric("shop")],
            "{report:?}"
        );
        assert!(report.failed.is_empty(), "{report:?}");
        assert!(dir.path().join("buffers/shop").is_dir());
        assert!(dir.path().join("log-buffers/shop").is_dir());

        let health = crate::control::health::snapshot(
            &*agent.pipelines.read().await,
            &*agent.log_pipelines.read().await,
            &*agent.trace_pipelines.read().await,
            std::time::SystemTime::now(),
        );
        let kinds: Vec<(&str, &str)> = health
            .pipelines
            .iter()
            .map(|p| (p.pipeline.as_str(), p.kind.as_str()))
            .collect();
        assert_eq!(kinds, [("shop", "MetricPipeline"), ("shop", "LogPipeline")]);

        let registry = registry(
            agent.pipelines.clone(),
            agent.log_pipelines.clone(),
            agent.trace_pipelines.clone(),
            agent.log_inputs.clone(),
            Arc::new(ReloadState::default()),
            Arc::new(PushStats::default()),
            1 << 30,
        );
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        assert!(
            text.contains("kaas_agent_log_pipeline_records_in_total{pipeline=\"shop\"} 0"),
            "{text}"
        );
        assert!(
            text.contains("kaas_agent_log_pipeline_buffer_max_bytes{pipeline=\"shop\"}"),
            "{text}"
        );
        assert!(
            text.contains(
                "kaas_agent_log_processing_total{pipeline=\"shop\",outcome=\"filtered\"} 0"
            ),
            "{text}"
        );
        assert_eq!(
            text.matches("kaas_agent_pipeline_samples_in_total{pipeline=\"shop\"}")
                .count(),
            1,
            "the metric pipeline only: {text}"
        );

        let report = agent.apply(config(CHANGED_LOGS, true)).await;
        assert_eq!(report.restarted, [PipelineId::log("shop")], "{report:?}");
        assert_eq!(report.unchanged, [PipelineId::metric("shop")], "{report:?}");

        let report = agent.apply(config(CHANGED_LOGS, false)).await;
        assert_eq!(report.stopped, [PipelineId::metric("shop")], "{report:?}");
        assert_eq!(report.unchanged, [PipelineId::log("shop")], "{report:?}");
        assert!(dir.path().join("buffers/shop").is_dir(), "the buffer stays");
        agent.shutdown().await;
        assert!(agent.log_pipelines.read().await.is_empty());
    }

    /// The configuration of a log pipeline `shop` and a trace pipeline `shop` sending
    /// to `trace_endpoint`.
    fn with_traces(trace_endpoint: &str) -> ValidatedAgentConfig {
        let text = format!(
            "apiVersion: telemetry.kaas-observer.io/v1alpha1\nkind: AgentConfig\nlogPipelines:\n  - metadata: {{name: shop}}\n    spec:\n{LOGS}tracePipelines:\n  - metadata: {{name: shop}}\n    spec:\n      output: {{otlp: {{endpoint: '{trace_endpoint}'}}}}\n"
        );
        AgentConfig::parse(&text, &ValidationContext::standalone()).unwrap()
    }

    /// Issue 17: trace pipelines start, restart and stop like the other kinds, under
    /// their own names and buffer directory, share the budget, and are reported with
    /// their kind; a node instance runs none.
    #[tokio::test]
    async fn trace_pipelines_are_applied_beside_other_kinds_of_the_same_name() {
        let dir = tempfile::tempdir().unwrap();
        let mut agent = plain_agent(dir.path());
        let report = agent.apply(with_traces("http://127.0.0.1:9")).await;
        assert_eq!(
            report.started,
            [PipelineId::trace("shop"), PipelineId::log("shop")],
            "{report:?}"
        );
        assert!(dir.path().join("trace-buffers/shop").is_dir());
        let health = crate::control::health::snapshot(
            &*agent.pipelines.read().await,
            &*agent.log_pipelines.read().await,
            &*agent.trace_pipelines.read().await,
            std::time::SystemTime::now(),
        );
        let kinds: Vec<(&str, &str)> = health
            .pipelines
            .iter()
            .map(|p| (p.pipeline.as_str(), p.kind.as_str()))
            .collect();
        assert_eq!(kinds, [("shop", "LogPipeline"), ("shop", "TracePipeline")]);
        let registry = registry(
            agent.pipelines.clone(),
            agent.log_pipelines.clone(),
            agent.trace_pipelines.clone(),
            agent.log_inputs.clone(),
            Arc::new(ReloadState::default()),
            Arc::new(PushStats::default()),
            1 << 30,
        );
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        assert!(
            text.contains("kaas_agent_trace_pipeline_spans_in_total{pipeline=\"shop\"} 0"),
            "{text}"
        );

        let report = agent.apply(with_traces("http://127.0.0.1:10")).await;
        assert_eq!(report.restarted, [PipelineId::trace("shop")], "{report:?}");
        assert_eq!(report.unchanged, [PipelineId::log("shop")], "{report:?}");
        let report = agent.apply(config(LOGS, false)).await;
        assert_eq!(report.stopped, [PipelineId::trace("shop")], "{report:?}");
        assert!(
            dir.path().join("trace-buffers/shop").is_dir(),
            "the buffer stays"
        );
        agent.shutdown().await;

        let node_dir = tempfile::tempdir().unwrap();
        let mut node = plain_agent(node_dir.path());
        node.role = AgentRole::Node;
        let report = node.apply(with_traces("http://127.0.0.1:9")).await;
        assert!(node.trace_pipelines.read().await.is_empty(), "{report:?}");
        node.shutdown().await;
    }
}
