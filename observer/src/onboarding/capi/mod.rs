//! The Cluster API source: a kube-runtime `Controller` over
//! `clusters.cluster.x-k8s.io` in the management cluster registers every Provisioned
//! cluster, installs its agent, and follows its deletion.
//!
//! # Design note
//!
//! **Objects.** `Cluster` is read as a [`DynamicObject`] of `cluster.x-k8s.io/v1beta1`
//! ([`cluster_api_resource`]; no CRD types crate): `metadata.name` is the cluster's
//! name within its tenant (names are per tenant; the store calls take the cluster's
//! global id, `<tenant>.<name>` for a cluster registered here), the labels are `metadata.labels` (plus the source and
//! namespace labels, [`decide::NAMESPACE_LABEL`]; keys under `kaas-observer.io` on the
//! object are refused, [`crate::labels`]), the API endpoint is
//! `spec.controlPlaneEndpoint`, readiness is `status.phase == Provisioned`.
//!
//! **Tenants come from an administrator.** Whoever may write `Cluster` objects in a
//! namespace (in self-service Cluster API, the tenant) could put any label on them, so
//! nothing on the object names the tenant. An administrator maps each namespace to a
//! tenant (`observer cluster-api map NAMESPACE --tenant TENANT`, table
//! `cluster_api_namespaces`, audited); a `Cluster` in an unmapped namespace is skipped
//! (and looked at again after [`UNMAPPED_REQUEUE`]). A stored cluster is adopted only if
//! its tenant is the namespace's ([`decide::registered_from`]): issue 13, finding 1 was a
//! tenant registering a cluster with the source's labels for another tenant's namespace
//! and a tenant label on that tenant's `Cluster`, after which the other tenant's
//! cluster was adopted under the attacker's tenant and the agent installed with the
//! attacker's join token.
//!
//! **Thin Kubernetes code.** [`decide::decide`] turns an object and the store's record
//! into [`decide::Step`]s; [`reconcile`] only carries them out, in order:
//! 1. Provisioned and not yet ours: add the finalizer [`decide::FINALIZER`] first, so
//!    the object cannot vanish without the observer seeing its deletion; then register
//!    the cluster (tenant created if missing) and keep the join token; then install the
//!    agent ([`install`]): the `<name>-kubeconfig` Secret, a client from it, and a
//!    server-side apply of the same manifests `observer cluster add` prints, with the
//!    join token in their Secret. On success the object gets the annotation
//!    [`decide::AGENT_INSTALLED_ANNOTATION`], so the agent is installed once. A failed
//!    install is retried after [`ERROR_REQUEUE`] with a freshly minted token (the
//!    unused ones expire).
//! 2. `deletionTimestamp` set: the cluster goes to `deleting` at once (its agent is
//!    expected to fall silent, and no alert should fire), and to `deleted` once no
//!    other finalizer is left, that is when Cluster API has removed the infrastructure
//!    and the object is about to go; then the finalizer is removed. Nothing is
//!    uninstalled: the workload cluster is going away.
//!
//! Finalizer changes are merge patches carrying the `resourceVersion` read, so they
//! apply only to that version (409 otherwise, and the reconcile is retried).
//!
//! **Deletion only on positive evidence.** With the finalizer the controller sees every
//! deletion of a registered cluster: a `deletionTimestamp` on an object carrying it is
//! the only evidence that makes a cluster `deleting`, then `deleted`. The [`relist()`]
//! every [`DEFAULT_RELIST_INTERVAL`] (and at start) catches what the watch cannot: an
//! object that vanished although it carried the finalizer (someone removed the
//! finalizer by hand, the object was moved or restored from a backup, the observer was
//! down). A complete list is compared with the clusters registered from Cluster API,
//! and a registered cluster whose object is not listed becomes `lost`, which alerts
//! (`KaasClusterLost`), never `deleted`: nothing said it was deleted. Only a cluster
//! already `deleting` (its deletion was seen) is tombstoned when its object is gone
//! ([`decide::when_gone`]). A lost cluster whose object is listed again returns to its
//! earlier state; an operator deletes one that is really gone (`observer cluster
//! delete`).
//!
//! What a relist never does: act on a failed list, or on an empty one while this
//! source manages live clusters (an RBAC or cache glitch answers exactly that;
//! [`CapiError::EmptyList`], counted as `empty_refused`); or take more than the
//! mass-deletion guard's share of the source's clusters out of the fleet in one pass
//! ([`crate::lifecycle::guard`]): those changes are held for an administrator's
//! `observer cluster confirm-deletions`. Clusters registered after the list was taken
//! are left for the next one.
//!
//! **Incarnations.** A `Cluster` deleted and created again under the same name (another
//! `metadata.uid`, recorded in [`decide::UID_LABEL`]) is registered again as a new
//! incarnation of the tombstone's global id; the object whose cluster an
//! administrator deleted in the observer stays skipped.
//!
//! **One replica.** The source runs on the replica that holds the store lease
//! [`LEASE_NAME`] (a PostgreSQL advisory lock; always granted on SQLite), checked every
//! [`LEASE_CHECK_INTERVAL`]; a standby takes over when the holder dies. In the short gap
//! after a lost lease two replicas may both act, which the idempotent steps tolerate.
//!
//! **Errors** are returned to the controller, whose `error_policy` logs and counts them
//! and retries the object after [`ERROR_REQUEUE`]; successful reconciles are repeated
//! every [`RESYNC_INTERVAL`] to catch anything a watch missed.

pub mod decide;
pub mod install;
pub mod relist;
#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::StreamExt;
use kube::api::{Patch, PatchParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::core::DynamicObject;
use kube::runtime::controller::{Action, Controller};
use kube::runtime::watcher;
use kube::{Api, Client, Config};
use serde_json::json;
use tokio::task::JoinHandle;

pub use self::relist::{RelistReport, relist};

use self::decide::{
    AGENT_INSTALLED_ANNOTATION, CONTROL_PLANE_ANNOTATION, CapiCluster, FINALIZER, Step,
    cluster_api_resource, decide,
};
use self::install::{InstallError, WorkloadConnector};
use self::relist::relist_every;
use super::{ClusterAction, OnboardingMetrics, Source, SyncFailure};
use crate::api::manifest::ManifestInput;
use crate::egress::EgressPolicy;
use crate::lifecycle::DEFAULT_SILENT_AFTER;
use crate::lifecycle::guard::MassDeletionGuard;
use crate::store::leases::Lease;
use crate::store::{ClusterState, NewCluster, Store, StoreError, global_cluster_id, now_ms};

/// How often the complete list of `Cluster`s is compared with the registered clusters:
/// it only closes the gaps the finalizer leaves (a finalizer removed by hand, an
/// observer that was down), so minutes are fine, and one list of a few hundred objects
/// every five minutes costs the API server nothing.
pub const DEFAULT_RELIST_INTERVAL: Duration = Duration::from_secs(300);
/// Retry delay after a failed reconcile: a kubeconfig Secret appears, or a new
/// cluster's API server starts answering, within a minute or so of Provisioned.
pub const ERROR_REQUEUE: Duration = Duration::from_secs(30);
/// How often a reconciled object is looked at again without a change, as a safety net
/// for anything a watch missed.
pub const RESYNC_INTERVAL: Duration = Duration::from_secs(600);
/// How soon a `Cluster` in a namespace no tenant is mapped to is looked at again: the
/// mapping lives in the store, which the controller does not watch, and an
/// administrator who just mapped the namespace expects the cluster within a minute.
/// One indexed read per unmapped `Cluster` a minute costs nothing.
pub const UNMAPPED_REQUEUE: Duration = Duration::from_secs(60);

/// What the source needs besides the clients.
#[derive(Clone, Debug)]
pub struct CapiSettings {
    /// Lifetime of the join tokens written into installed agents' Secrets
    /// (`--join-token-ttl`).
    pub join_token_ttl: Duration,
    /// The control endpoint written into the agent's manifests (`--control-endpoint`).
    pub control_endpoint: String,
    /// The observer's CA certificate (PEM), written into the agent's manifests.
    pub ca_pem: String,
    /// The lifecycle's `--silent-after`, to restore a `deleting` record.
    pub silent_after: Duration,
    /// See [`DEFAULT_RELIST_INTERVAL`].
    pub relist_interval: Duration,
    /// Which control plane endpoints may be registered and which kubeconfig servers
    /// contacted (`--egress-allow-cidr`).
    pub egress: EgressPolicy,
    /// The namespaces whose Secrets installed agents may read
    /// (`--agent-secret-namespaces`), rendered into their manifests.
    pub secret_namespaces: Vec<String>,
    /// The provider's central receivers, rendered as the agents' `--central-endpoints`.
    pub central_endpoints: Vec<String>,
    /// How many clusters one relist may take out of the fleet without an
    /// administrator's confirmation (`--mass-deletion-percent`).
    pub guard: MassDeletionGuard,
}

impl CapiSettings {
    /// The defaults, with the observer's control endpoint and CA.
    pub fn new(control_endpoint: String, ca_pem: String, join_token_ttl: Duration) -> Self {
        Self {
            join_token_ttl,
            control_endpoint,
            ca_pem,
            silent_after: DEFAULT_SILENT_AFTER,
            relist_interval: DEFAULT_RELIST_INTERVAL,
            egress: EgressPolicy::default(),
            secret_namespaces: vec![crate::api::manifest::AGENT_NAMESPACE.to_owned()],
            central_endpoints: Vec::new(),
            guard: MassDeletionGuard::default(),
        }
    }
}

/// Why a reconcile or relist failed.
#[derive(Debug, thiserror::Error)]
pub enum CapiError {
    /// The object lacks a field every `Cluster` has.
    #[error("Cluster object without {0}")]
    InvalidObject(String),
    /// The store failed.
    #[error("store: {0}")]
    Store(#[from] StoreError),
    /// A request to the management cluster failed.
    #[error("management cluster: {0}")]
    Kube(#[from] kube::Error),
    /// The agent could not be installed.
    #[error("cluster {cluster}: installing the agent: {source}")]
    Install {
        /// The cluster.
        cluster: String,
        /// Why.
        #[source]
        source: InstallError,
    },
    /// The workload cluster's client could not be built.
    #[error("cluster {cluster}: cannot use its kubeconfig: {reason}")]
    WorkloadClient {
        /// The cluster.
        cluster: String,
        /// Why.
        reason: String,
    },
    /// The management cluster's client could not be built.
    #[error("management cluster configuration: {0}")]
    ManagementConfig(String),
    /// A complete list held no `Cluster` at all while this source manages live
    /// clusters: refused as a probable fault of the list (an RBAC change, a cache),
    /// nothing changed.
    #[error(
        "the list of Cluster objects is empty while {managed} cluster(s) registered from \
         Cluster API exist; refused as a probable fault of the list, nothing changed"
    )]
    EmptyList {
        /// Live clusters registered from Cluster API.
        managed: usize,
    },
}

impl CapiError {
    /// The `result` it is counted under.
    pub fn failure(&self) -> SyncFailure {
        match self {
            Self::InvalidObject(_) => SyncFailure::InvalidResponse,
            Self::EmptyList { .. } => SyncFailure::EmptyRefused,
            Self::Store(_) => SyncFailure::Store,
            Self::Kube(_)
            | Self::Install { .. }
            | Self::WorkloadClient { .. }
            | Self::ManagementConfig(_) => SyncFailure::Kubernetes,
        }
    }
}

/// Where the management cluster's API is found (`observer serve --cluster-api`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ManagementCluster {
    /// kube's `Config::infer`: `$KUBECONFIG` or `~/.kube/config` if present, else the
    /// in-cluster service account.
    Auto,
    /// This kubeconfig file.
    Kubeconfig(std::path::PathBuf),
}

impl std::str::FromStr for ManagementCluster {
    type Err = String;

    /// `auto`, or a kubeconfig path.
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text {
            "" => Err("expected `auto` or a kubeconfig path".to_owned()),
            "auto" => Ok(Self::Auto),
            path => Ok(Self::Kubeconfig(path.into())),
        }
    }
}

impl ManagementCluster {
    /// Reads a named kubeconfig file, so that a missing or unreadable one is found
    /// while flags are checked, before anything starts; `auto` is checked when the
    /// client is made (it may fall back to the in-cluster account).
    pub fn check(&self) -> Result<(), String> {
        match self {
            Self::Auto => Ok(()),
            Self::Kubeconfig(path) => Kubeconfig::read_from(path)
                .map(drop)
                .map_err(|e| format!("{}: {e}", path.display())),
        }
    }

    /// A client for the management cluster.
    pub async fn client(&self) -> Result<Client, CapiError> {
        let config = match self {
            Self::Auto => Config::infer()
                .await
                .map_err(|e| CapiError::ManagementConfig(e.to_string()))?,
            Self::Kubeconfig(path) => management_config(path).await?,
        };
        Client::try_from(config).map_err(|e| CapiError::ManagementConfig(e.to_string()))
    }
}

async fn management_config(path: &Path) -> Result<Config, CapiError> {
    let error =
        |reason: String| CapiError::ManagementConfig(format!("{}: {reason}", path.display()));
    let kubeconfig = Kubeconfig::read_from(path).map_err(|e| error(e.to_string()))?;
    Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .map_err(|e| error(e.to_string()))
}

/// What [`reconcile`] and [`relist()`] work with.
pub struct Context {
    /// The management cluster.
    pub client: Client,
    /// The observer's store.
    pub store: Store,
    /// Settings.
    pub settings: CapiSettings,
    /// How workload clusters are reached.
    pub workload: WorkloadConnector,
    /// Where events are counted.
    pub metrics: Arc<OnboardingMetrics>,
    /// Skips already reported, by `namespace/name`, so a standing problem is logged
    /// once rather than every resync.
    reported_skips: Mutex<BTreeMap<String, String>>,
}

impl std::fmt::Debug for Context {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Context")
            .field("settings", &self.settings)
            .field("workload", &self.workload)
            .finish_non_exhaustive()
    }
}

impl Context {
    /// A context.
    pub fn new(
        client: Client,
        store: Store,
        settings: CapiSettings,
        workload: WorkloadConnector,
        metrics: Arc<OnboardingMetrics>,
    ) -> Self {
        Self {
            client,
            store,
            settings,
            workload,
            metrics,
            reported_skips: Mutex::new(BTreeMap::new()),
        }
    }

    fn clusters_api(&self, namespace: &str) -> Api<DynamicObject> {
        Api::namespaced_with(self.client.clone(), namespace, &cluster_api_resource())
    }

    fn report_skip(&self, cluster: &CapiCluster, reason: &str) {
        let key = format!("{}/{}", cluster.namespace, cluster.name);
        let mut reported = self
            .reported_skips
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if reported.get(&key).map(String::as_str) == Some(reason) {
            return;
        }
        reported.insert(key, reason.to_owned());
        drop(reported);
        self.metrics.cluster_changed(
            Source::ClusterApi,
            ClusterAction::Skipped,
            &cluster.name,
            cluster.tenant.as_deref().unwrap_or_default(),
            &format!(
                "Cluster {}/{} left alone: {reason}",
                cluster.namespace, cluster.name
            ),
        );
    }

    fn forget_skip(&self, cluster: &CapiCluster) {
        self.reported_skips
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&format!("{}/{}", cluster.namespace, cluster.name));
    }
}

/// The store lease whose holder runs the Cluster API source: one replica watches and
/// installs agents (two would mint two tokens and apply twice). Always granted on
/// SQLite.
pub const LEASE_NAME: &str = "onboarding-cluster-api";
/// How often the holder checks it still holds the lease, and a standby tries to take
/// it: a standby takes over within this long of the holder's death.
pub const LEASE_CHECK_INTERVAL: Duration = Duration::from_secs(15);

/// The running Cluster API source: while this replica holds [`LEASE_NAME`], the
/// controller and the periodic relist.
#[derive(Debug)]
pub struct ClusterApiSource {
    task: JoinHandle<()>,
}

impl ClusterApiSource {
    /// Starts the source against the management cluster `client`; agents are installed
    /// through each cluster's kubeconfig.
    pub fn start(
        client: Client,
        store: Store,
        settings: CapiSettings,
        metrics: Arc<OnboardingMetrics>,
    ) -> Self {
        let workload = WorkloadConnector::Kubeconfig(settings.egress.clone());
        Self::start_with(Arc::new(Context::new(
            client, store, settings, workload, metrics,
        )))
    }

    /// Starts with a prepared context.
    pub fn start_with(context: Arc<Context>) -> Self {
        Self {
            task: tokio::spawn(run_while_leased(context)),
        }
    }

    /// Stops the source (and gives the lease up).
    pub fn stop(&self) {
        self.task.abort();
    }
}

impl Drop for ClusterApiSource {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The controller and the relist, aborted when dropped.
struct Running {
    tasks: Vec<JoinHandle<()>>,
}

impl Running {
    fn start(context: Arc<Context>) -> Self {
        let resource = cluster_api_resource();
        let api: Api<DynamicObject> = Api::all_with(context.client.clone(), &resource);
        let controller = Controller::new_with(api, watcher::Config::default(), resource)
            .run(reconcile, error_policy, context.clone())
            .for_each(|result| async move {
                match result {
                    Ok(_) => {}
                    // Reconcile errors were logged and counted by `error_policy`.
                    Err(kube::runtime::controller::Error::ReconcilerFailed(..)) => {}
                    // A queued object was deleted meanwhile; its deletion was (or will
                    // be) reconciled through the finalizer or the relist.
                    Err(kube::runtime::controller::Error::ObjectNotFound(object)) => {
                        tracing::debug!(%object, "Cluster API controller: queued object is gone");
                    }
                    Err(error) => {
                        tracing::warn!(%error, "Cluster API controller: watching or queueing failed; it retries");
                    }
                }
            });
        Self {
            tasks: vec![
                tokio::spawn(controller),
                tokio::spawn(relist_every(context)),
            ],
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

/// Runs the source while this replica holds [`LEASE_NAME`]; checks every
/// [`LEASE_CHECK_INTERVAL`].
async fn run_while_leased(context: Arc<Context>) {
    let mut ticks = tokio::time::interval(LEASE_CHECK_INTERVAL);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut running: Option<(Lease, Running)> = None;
    loop {
        ticks.tick().await;
        if let Some((lease, _)) = &mut running
            && !lease.is_held().await
        {
            tracing::warn!(
                lease = LEASE_NAME,
                "lost the Cluster API lease; stopping the controller"
            );
            running = None;
            // The held changes are the new holder's to report now.
            context.metrics.deletions_pending(Source::ClusterApi, 0);
        }
        if running.is_none() {
            match context.store.try_lease(LEASE_NAME).await {
                Ok(Some(lease)) => {
                    tracing::info!(
                        lease = LEASE_NAME,
                        "this replica runs Cluster API onboarding"
                    );
                    running = Some((lease, Running::start(context.clone())));
                }
                Ok(None) => {
                    tracing::debug!(
                        lease = LEASE_NAME,
                        "another replica runs Cluster API onboarding"
                    );
                }
                Err(error) => {
                    tracing::warn!(%error, lease = LEASE_NAME, "cannot take the Cluster API lease");
                }
            }
        }
    }
}

/// Brings one `Cluster` object's registration in line with it (see the module note).
pub async fn reconcile(
    object: Arc<DynamicObject>,
    context: Arc<Context>,
) -> Result<Action, CapiError> {
    let namespace = object.metadata.namespace.as_deref().unwrap_or_default();
    let tenant = context
        .store
        .cluster_api_namespace_tenant(namespace)
        .await?;
    let mut cluster =
        CapiCluster::from_object(&object, tenant).map_err(CapiError::InvalidObject)?;
    // Names are unique per tenant: the Cluster object's name within the tenant its
    // namespace is mapped to. An unmapped namespace has no tenant to look in (and
    // `decide` only skips it).
    let stored = match &cluster.tenant {
        Some(tenant) => {
            context
                .store
                .get_cluster_named(tenant, &cluster.name)
                .await?
        }
        None => None,
    };
    let steps = decide(
        &cluster,
        stored.as_ref(),
        now_ms(),
        context.settings.silent_after,
        &context.settings.egress,
    );
    if !steps.iter().any(|step| matches!(step, Step::Skip(_))) {
        context.forget_skip(&cluster);
    }
    // Every step below is only decided for a mapped namespace.
    let tenant = cluster.tenant.clone().unwrap_or_default();
    let mut applying = Applying {
        context: &context,
        // The store calls below name the cluster by its global id.
        id: stored.as_ref().map_or_else(
            || global_cluster_id(&tenant, &cluster.name),
            |stored| stored.id.clone(),
        ),
        tenant,
        token: None,
    };
    for step in steps {
        applying.apply(&mut cluster, step).await?;
    }
    context.metrics.sync_succeeded(Source::ClusterApi);
    if cluster.tenant.is_none() {
        return Ok(Action::requeue(UNMAPPED_REQUEUE));
    }
    Ok(Action::requeue(RESYNC_INTERVAL))
}

/// The steps [`decide`] chose for one `Cluster` object, applied in order.
struct Applying<'a> {
    context: &'a Context,
    /// The cluster's global id (known once registered).
    id: String,
    /// The tenant its namespace is mapped to.
    tenant: String,
    /// The join token registering minted, used by the agent's install.
    token: Option<String>,
}

impl Applying<'_> {
    async fn apply(&mut self, cluster: &mut CapiCluster, step: Step) -> Result<(), CapiError> {
        let context = self.context;
        let actor = Source::ClusterApi.actor();
        match step {
            Step::AddFinalizer => {
                let mut finalizers = cluster.finalizers.clone();
                finalizers.push(FINALIZER.to_owned());
                set_finalizers(context, cluster, finalizers).await?;
            }
            Step::Register => self.register(cluster).await?,
            Step::UpdateRegistration => {
                context
                    .store
                    .update_cluster_registration(
                        &self.id,
                        cluster.stored_labels(),
                        cluster.api_endpoint.clone(),
                        &actor,
                    )
                    .await?;
                self.changed(
                    ClusterAction::Updated,
                    "applied the Cluster's labels and control plane endpoint",
                );
            }
            Step::Restore(state) => {
                context
                    .store
                    .set_cluster_state(&self.id, state, now_ms(), &actor)
                    .await?;
                self.changed(
                    ClusterAction::Restored,
                    &format!("the Cluster exists and is not being deleted; back to {state}"),
                );
            }
            Step::InstallAgent => self.install_agent(cluster).await?,
            Step::MarkDeleting => {
                context
                    .store
                    .set_cluster_state(&self.id, ClusterState::Deleting, now_ms(), &actor)
                    .await?;
                self.changed(ClusterAction::Deleting, "the Cluster is being deleted");
            }
            Step::Tombstone => {
                context.store.delete_cluster(&self.id, &actor).await?;
                self.changed(
                    ClusterAction::Deleted,
                    "Cluster API finished deleting the cluster; tombstoned",
                );
            }
            Step::RemoveFinalizer => {
                let finalizers = cluster
                    .finalizers
                    .iter()
                    .filter(|f| *f != FINALIZER)
                    .cloned()
                    .collect();
                set_finalizers(context, cluster, finalizers).await?;
            }
            Step::SyncControlPlane(setting) => {
                let allowed = kaas_pipeline::SecretNamespaces::only(
                    context.settings.secret_namespaces.iter().cloned(),
                );
                if let Err(error) = setting.check_secret_namespaces(&allowed) {
                    context.report_skip(
                        cluster,
                        &format!("annotation {CONTROL_PLANE_ANNOTATION} not applied: {error}"),
                    );
                    return Ok(());
                }
                let current = context
                    .store
                    .cluster_control_planes(Some(&self.tenant))
                    .await?
                    .remove(&self.id);
                crate::onboarding::sync_control_plane(
                    &context.store,
                    Source::ClusterApi,
                    (&self.tenant, &self.id),
                    &setting,
                    current.as_ref(),
                )
                .await?;
            }
            Step::Skip(reason) => context.report_skip(cluster, &reason),
        }
        Ok(())
    }

    /// Registers the cluster; its first join token is kept for the agent's install.
    async fn register(&mut self, cluster: &CapiCluster) -> Result<(), CapiError> {
        let new = NewCluster {
            name: cluster.name.clone(),
            tenant: self.tenant.clone(),
            labels: cluster.stored_labels(),
            api_endpoint: cluster.api_endpoint.clone(),
        };
        let (created, minted) = self
            .context
            .store
            .create_cluster(
                new,
                self.context.settings.join_token_ttl,
                &Source::ClusterApi.actor(),
            )
            .await?;
        self.id = created.id;
        self.token = Some(minted);
        self.changed(
            ClusterAction::Registered,
            &format!(
                "registered the Provisioned Cluster {}/{}",
                cluster.namespace, cluster.name
            ),
        );
        Ok(())
    }

    /// Installs the agent with the token registering minted, or a new one.
    async fn install_agent(&mut self, cluster: &CapiCluster) -> Result<(), CapiError> {
        let context = self.context;
        let token = match self.token.take() {
            Some(token) => token,
            None => {
                context
                    .store
                    .mint_join_token(
                        &self.id,
                        context.settings.join_token_ttl,
                        &Source::ClusterApi.actor(),
                    )
                    .await?
            }
        };
        if let Err(error) = install_agent(context, cluster, &token).await {
            self.changed(
                ClusterAction::AgentInstallFailed,
                &format!("installing the agent failed; retrying: {error}"),
            );
            return Err(error);
        }
        self.changed(
            ClusterAction::AgentInstalled,
            "applied the agent's manifests to the workload cluster",
        );
        Ok(())
    }

    /// Logs and counts a change of the cluster.
    fn changed(&self, action: ClusterAction, detail: &str) {
        self.context.metrics.cluster_changed(
            Source::ClusterApi,
            action,
            &self.id,
            &self.tenant,
            detail,
        );
    }
}

/// Logs and counts a failed reconcile; the object is retried after [`ERROR_REQUEUE`].
pub fn error_policy(
    object: Arc<DynamicObject>,
    error: &CapiError,
    context: Arc<Context>,
) -> Action {
    let name = format!(
        "{}/{}",
        object.metadata.namespace.as_deref().unwrap_or_default(),
        object.metadata.name.as_deref().unwrap_or_default()
    );
    context.metrics.sync_failed(
        Source::ClusterApi,
        error.failure(),
        &format!("Cluster {name}: {error}"),
    );
    Action::requeue(ERROR_REQUEUE)
}

/// Replaces the object's finalizers with a merge patch that carries the
/// `resourceVersion` read (409 if the object changed meanwhile), and remembers the
/// result.
async fn set_finalizers(
    context: &Context,
    cluster: &mut CapiCluster,
    finalizers: Vec<String>,
) -> Result<(), CapiError> {
    let patch = json!({
        "metadata": {
            "finalizers": finalizers,
            "resourceVersion": cluster.resource_version,
        }
    });
    let updated = context
        .clusters_api(&cluster.namespace)
        .patch(
            &cluster.name,
            &PatchParams::default(),
            &Patch::Merge(&patch),
        )
        .await?;
    cluster.finalizers = finalizers;
    cluster.resource_version = updated.metadata.resource_version;
    Ok(())
}

/// Reads the kubeconfig, applies the manifests with `token`, then annotates the object.
async fn install_agent(
    context: &Context,
    cluster: &CapiCluster,
    token: &str,
) -> Result<(), CapiError> {
    let failed = |source: InstallError| CapiError::Install {
        cluster: cluster.name.clone(),
        source,
    };
    let kubeconfig = install::read_kubeconfig(&context.client, &cluster.namespace, &cluster.name)
        .await
        .map_err(failed)?;
    let workload = context
        .workload
        .connect(kubeconfig)
        .await
        .map_err(|reason| CapiError::WorkloadClient {
            cluster: cluster.name.clone(),
            reason,
        })?;
    let documents = install::agent_documents(&ManifestInput {
        cluster: &cluster.name,
        control_endpoint: &context.settings.control_endpoint,
        ca_pem: &context.settings.ca_pem,
        join_token: token,
        secret_namespaces: &context.settings.secret_namespaces,
        central_endpoints: &context.settings.central_endpoints,
    })
    .map_err(failed)?;
    install::apply_documents(&workload, &documents)
        .await
        .map_err(failed)?;
    let patch = json!({
        "metadata": {"annotations": {AGENT_INSTALLED_ANNOTATION: context.settings.control_endpoint}}
    });
    context
        .clusters_api(&cluster.namespace)
        .patch(
            &cluster.name,
            &PatchParams::default(),
            &Patch::Merge(&patch),
        )
        .await?;
    Ok(())
}
