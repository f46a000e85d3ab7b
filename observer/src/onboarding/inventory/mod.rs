//! The KaaS inventory source: for providers without Cluster API, the observer polls an
//! HTTP endpoint that lists the provider's clusters, registers the new ones, keeps
//! labels and API endpoints in sync, and notices the ones that disappear.
//!
//! # Design note
//!
//! **The answer.** `GET <url>` must answer 200 with a JSON array of clusters, or an
//! object whose `clusters` field is that array:
//!
//! ```json
//! [{"name": "prod-1", "tenant": "shop", "labels": {"env": "prod"},
//!   "apiEndpoint": "https://prod-1.k8s.example:6443"}]
//! ```
//!
//! `labels`, `apiEndpoint` (also `api_endpoint`), `kubeconfig` and `controlPlane` are optional; other fields are
//! ignored, because the inventory is the provider's API, not ours. Each entry is checked
//! like `POST /api/v1/clusters` ([`super::registration_problems`]). An invalid entry is
//! skipped and reported, but its name still counts as listed, so a typo in one label
//! never deletes a cluster; a name listed twice counts as listed and is not applied.
//!
//! `controlPlane` is the cluster's control-plane setting ([`crate::control_plane`]),
//! the object `PUT /api/v1/clusters/{name}/control-plane` takes, checked the same way:
//! a wrong field makes the entry invalid with its path (`controlPlane.etcd.addresses[0]`).
//! The observer stores it whenever it differs from the stored one; an entry without it
//! leaves the cluster's setting as an administrator set it.
//!
//! An entry may carry `"deleted": true`: the inventory's own word that the cluster is
//! deleted (a provider that keeps deleted clusters in its list with a flag, or lists
//! them for a while after deletion). It counts as listed.
//!
//! **Relist and diff.** Every poll is a full list, so there are no events to lose: each
//! successful poll is compared with the clusters the store holds *from this source*
//! (label [`super::SOURCE_LABEL`]` = inventory`; see [the onboarding module](super)
//! for ownership and tenants):
//! - listed, not stored: registered (tenant created if missing), state `provisioning`;
//!   listed while its name is a tombstone: registered again, as a new incarnation;
//! - listed, stored: labels (plus the source label) and API endpoint replaced if they
//!   differ; a `deleting` cluster returns to [`super::state_before_deletion`];
//! - listed marked deleted, stored: tombstoned at once (through `deleting`): positive
//!   evidence from the source;
//! - stored, not listed: `deleting` at once (reversible: its alerts are quiet, the agent
//!   is expected to go), and `deleted` (the tombstone) only once it has been missing
//!   from [`InventorySettings::delete_after_missing_polls`] successful polls in a row
//!   ([`DEFAULT_DELETE_AFTER_MISSING_POLLS`]) *and* for at least
//!   [`InventorySettings::delete_grace`] ([`DEFAULT_DELETE_GRACE`]): the count rules
//!   out one flapping answer, the time rules out a fast poll interval turning a short
//!   inventory outage into deletions.
//!
//! **What changes nothing.** A poll that fails (connection error, timeout, a status
//! other than 200, a body that is not a cluster list or is larger than
//! [`MAX_INVENTORY_BYTES`]) is logged and counted and changes nothing, missing counts
//! included. An empty list while this source manages live clusters is refused the same
//! way unless [`InventorySettings::allow_empty`] is set: an inventory that answers `[]`
//! because its own database is down or a filter is wrong would otherwise start deleting
//! every cluster; a provider that really can have zero clusters turns the check off.
//! A poll that would take more than the mass-deletion guard's share of the source's
//! clusters out of the fleet ([`crate::lifecycle::guard`]) applies none of those
//! changes: they are held for an administrator's `observer cluster confirm-deletions`,
//! and everything else in the poll is applied.
//!
//! **One replica** polls: the holder of the store lease [`LEASE_NAME`], checked before
//! every poll; a standby takes over within one interval of the holder's death, and
//! starts its missing counts afresh.
//!
//! **Restarts.** Missing counts live in memory. After a restart a missing cluster
//! already `deleting` starts counting again, which only delays its tombstone; the state
//! a reappearing cluster returns to is derived from the store, so it is right after a
//! restart too.
//!
//! **Installing the agent.** An entry may name the cluster's `kubeconfig` (the text of
//! a self-contained kubeconfig): the observer then installs the agent through it, as
//! for Cluster API clusters ([`install`]). Otherwise the observer cannot reach the
//! workload cluster, the token minted at registration is dropped, and the cluster's
//! view in the API names the command that prints its install manifests
//! (`observer cluster join-token NAME --tenant TENANT`, see [`super`]).

mod entries;
mod install;
mod plan;

use std::collections::BTreeMap;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use kaas_pipeline::secret::SecretString;
use kaas_tls::http::HttpClientSettings;
use tokio::task::JoinHandle;
use url::Url;

pub use self::install::{
    AgentInstall, INSTALL_RETRY_INTERVAL, INSTALL_TOKEN_TTL, MAX_KUBECONFIG_BYTES, check_kubeconfig,
};
pub use self::plan::{Missing, PlanRules, PollPlan, Step, plan};
use super::{ClusterAction, OnboardingMetrics, Source, SyncFailure, ensure_tenant};
use crate::egress::EgressPolicy;
use crate::lifecycle::DEFAULT_SILENT_AFTER;
use crate::lifecycle::guard::MassDeletionGuard;
use crate::store::leases::Lease;
use crate::store::{ClusterState, HeldDeletion, NewCluster, Store, StoreError, now_ms};

/// The store lease whose holder polls the inventory: one replica is enough, and two
/// would count every change twice. Always granted on SQLite.
pub const LEASE_NAME: &str = "onboarding-inventory";
/// How often the inventory is polled: a new cluster is registered within a minute,
/// well inside the creation grace the silent-cluster alert gives a new cluster, and an
/// inventory sees one request a minute per observer.
pub const DEFAULT_INVENTORY_INTERVAL: Duration = Duration::from_secs(60);
/// Successful polls a cluster must be missing from before it is tombstoned. One
/// flapping inventory response (a replica with a stale cache, a partial page) must not
/// delete a cluster: `deleting` is reversible and silences nothing wrongly for long,
/// `deleted` is final (the name stays taken and the agent's certificate is refused).
/// Three polls at the default interval means gone for over two minutes.
pub const DEFAULT_DELETE_AFTER_MISSING_POLLS: NonZeroU32 = NonZeroU32::new(3).expect("3 > 0");
/// How long a cluster must have been missing before it is tombstoned, besides the
/// missing polls: longer than an inventory's own failover or cache rebuild (minutes),
/// and short enough that a deleted cluster's tombstone comes before anyone looks for
/// it. Meanwhile the cluster is `deleting`, so its alerts are quiet.
pub const DEFAULT_DELETE_GRACE: Duration = Duration::from_secs(300);
/// Longest a poll may take: below the default interval, so polls do not pile up
/// behind a hanging inventory.
pub const INVENTORY_REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// How long connecting to the inventory may take.
pub const INVENTORY_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest answer read: about 100,000 clusters of a few hundred bytes each. A larger
/// answer is refused instead of exhausting the observer's memory.
pub const MAX_INVENTORY_BYTES: usize = 32 * 1024 * 1024;
/// The join token minted at registration is dropped (see the module note), so its
/// lifetime hardly matters; keep it short.
pub const REGISTRATION_TOKEN_TTL: Duration = Duration::from_secs(3600);

/// How the inventory is polled and its answers applied.
#[derive(Clone, Debug)]
pub struct InventorySettings {
    /// The inventory endpoint (`http` or `https`).
    pub url: Url,
    /// Time between polls.
    pub interval: Duration,
    /// Successful polls a cluster must be missing from before it is tombstoned.
    pub delete_after_missing_polls: NonZeroU32,
    /// How long it must have been missing, too (`--inventory-delete-grace`).
    pub delete_grace: Duration,
    /// How many clusters one poll may take out of the fleet without an administrator's
    /// confirmation (`--mass-deletion-percent`).
    pub guard: MassDeletionGuard,
    /// Accept an empty list as "no clusters" (see the module note).
    pub allow_empty: bool,
    /// Sent as `Authorization: Bearer …`.
    pub bearer_token: Option<SecretString>,
    /// Extra CA certificates (PEM) to trust for an `https` inventory.
    pub ca_pem: Option<String>,
    /// The `--silent-after` of the lifecycle, to restore a reappearing cluster's state.
    pub silent_after: Duration,
    /// Which API endpoints may be registered (`--egress-allow-cidr`).
    pub egress: EgressPolicy,
    /// How agents are installed into listed clusters that name a kubeconfig; `None`
    /// checks kubeconfigs but installs nothing.
    pub install: Option<AgentInstall>,
    /// The namespaces agents may read Secrets in (`--agent-secret-namespaces`): an
    /// entry's `controlPlane.etcd.clientCertificateSecret` must name one.
    pub secret_namespaces: Vec<String>,
}

impl InventorySettings {
    /// The defaults, polling `url`.
    pub fn new(url: Url) -> Self {
        Self {
            url,
            interval: DEFAULT_INVENTORY_INTERVAL,
            delete_after_missing_polls: DEFAULT_DELETE_AFTER_MISSING_POLLS,
            delete_grace: DEFAULT_DELETE_GRACE,
            guard: MassDeletionGuard::default(),
            allow_empty: false,
            bearer_token: None,
            ca_pem: None,
            silent_after: DEFAULT_SILENT_AFTER,
            egress: EgressPolicy::default(),
            install: None,
            secret_namespaces: vec![crate::api::manifest::AGENT_NAMESPACE.to_owned()],
        }
    }

    /// Checks the URL's scheme and host and that the CA bundle holds certificates,
    /// without I/O: what [`InventorySource::new`] would refuse, found while flags are
    /// checked.
    pub fn check(&self) -> Result<(), InventoryError> {
        if !matches!(self.url.scheme(), "http" | "https") || !self.url.has_host() {
            return Err(InventoryError::BadUrl(self.url.to_string()));
        }
        if let Some(pem) = &self.ca_pem {
            kaas_tls::system_roots_and(pem.as_bytes(), "--inventory-ca-file")
                .map_err(|e| InventoryError::Ca(e.to_string()))?;
        }
        Ok(())
    }
}

/// Why the inventory source cannot start.
#[derive(Debug, thiserror::Error)]
pub enum InventoryError {
    /// The URL is not `http` or `https`.
    #[error("inventory URL {0:?}: expected http:// or https:// with a host")]
    BadUrl(String),
    /// The CA bundle cannot be read.
    #[error("inventory CA certificates: {0}")]
    Ca(String),
    /// The HTTP client cannot be built.
    #[error("cannot build the inventory HTTP client: {0}")]
    Client(#[source] kaas_tls::http::HttpClientError),
}

/// Why a poll changed nothing.
#[derive(Debug, thiserror::Error)]
pub enum PollError {
    /// No answer (connection refused, timeout, TLS).
    #[error("GET {url}: {reason}")]
    Unreachable {
        /// The inventory URL.
        url: String,
        /// What failed.
        reason: String,
    },
    /// An answer other than 200.
    #[error("GET {url}: HTTP {status}")]
    BadStatus {
        /// The inventory URL.
        url: String,
        /// The status.
        status: u16,
    },
    /// The body is not a cluster list.
    #[error("the inventory's answer is not a cluster list: {0}")]
    InvalidResponse(String),
    /// An empty list while the source manages clusters, refused.
    #[error(
        "the inventory lists no clusters while {managed} cluster(s) registered from it \
         exist; refused as a probable inventory fault (allow empty lists to accept it)"
    )]
    EmptyRefused {
        /// Live clusters registered from the inventory.
        managed: usize,
    },
    /// The store failed (reading clusters, or while applying; the steps before the
    /// failure were applied).
    #[error("store: {0}")]
    Store(#[from] StoreError),
}

impl PollError {
    /// The `result` it is counted under.
    pub fn failure(&self) -> SyncFailure {
        match self {
            Self::Unreachable { .. } => SyncFailure::Unreachable,
            Self::BadStatus { .. } => SyncFailure::BadStatus,
            Self::InvalidResponse(_) => SyncFailure::InvalidResponse,
            Self::EmptyRefused { .. } => SyncFailure::EmptyRefused,
            Self::Store(_) => SyncFailure::Store,
        }
    }
}

pub use entries::{InvalidEntry, Inventory, InventoryCluster, parse_inventory};

/// What a successful poll changed, by cluster name.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PollReport {
    /// Newly registered clusters (global ids, as in every list but `skipped`).
    pub registered: Vec<String>,
    /// Clusters whose labels or endpoint were replaced.
    pub updated: Vec<String>,
    /// Clusters back from `deleting`.
    pub restored: Vec<String>,
    /// Clusters moved to `deleting`.
    pub deleting: Vec<String>,
    /// Clusters tombstoned.
    pub deleted: Vec<String>,
    /// Changes the mass-deletion guard holds (global ids).
    pub held: Vec<String>,
    /// Listed names left alone, with the reason.
    pub skipped: Vec<(String, String)>,
    /// Clusters whose agent was installed through their kubeconfig.
    pub installed: Vec<String>,
}

/// The inventory poller. Drive it with [`InventorySource::poll_once`] (tests) or
/// [`InventorySource::start`] (the observer).
pub struct InventorySource {
    store: Store,
    settings: InventorySettings,
    http: reqwest::Client,
    metrics: Arc<OnboardingMetrics>,
    /// Missing counts after the last successful poll.
    missing: BTreeMap<String, Missing>,
    /// Skips already logged and counted, by name, so a standing problem is reported
    /// once, not every poll.
    reported_skips: BTreeMap<String, String>,
    /// Installs agents through listed kubeconfigs, with `settings.install`.
    installer: Option<install::Installer>,
}

impl std::fmt::Debug for InventorySource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InventorySource")
            .field("url", &self.settings.url.as_str())
            .field("missing", &self.missing)
            .finish_non_exhaustive()
    }
}

impl InventorySource {
    /// A poller for `settings.url`; checks the URL and builds the HTTP client.
    pub fn new(
        store: Store,
        settings: InventorySettings,
        metrics: Arc<OnboardingMetrics>,
    ) -> Result<Self, InventoryError> {
        settings.check()?;
        let trust = match &settings.ca_pem {
            Some(pem) => kaas_tls::system_roots_and(pem.as_bytes(), "--inventory-ca-file")
                .map_err(|e| InventoryError::Ca(e.to_string()))?,
            None => kaas_tls::Trust::System,
        };
        let http = kaas_tls::http::http_client(HttpClientSettings {
            timeout: Some(INVENTORY_REQUEST_TIMEOUT),
            connect_timeout: Some(INVENTORY_CONNECT_TIMEOUT),
            ..HttpClientSettings::new(
                kaas_tls::ClientTls {
                    trust,
                    ..kaas_tls::ClientTls::default()
                },
                concat!("kaas-observer/", env!("CARGO_PKG_VERSION")),
            )
        })
        .map_err(InventoryError::Client)?;
        Ok(Self {
            installer: settings.install.clone().map(install::Installer::new),
            store,
            settings,
            http,
            metrics,
            missing: BTreeMap::new(),
            reported_skips: BTreeMap::new(),
        })
    }

    /// Polls every [`InventorySettings::interval`], the first time at once, while this
    /// replica holds the store lease [`LEASE_NAME`], until the task is aborted.
    pub fn start(mut self) -> JoinHandle<()> {
        tokio::spawn(async move {
            let mut ticks = tokio::time::interval(self.settings.interval);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut lease: Option<Lease> = None;
            loop {
                ticks.tick().await;
                if let Some(held) = &mut lease
                    && !held.is_held().await
                {
                    tracing::warn!(lease = LEASE_NAME, "lost the inventory lease");
                    lease = None;
                    // The held changes are the new holder's to report now.
                    self.metrics.deletions_pending(Source::Inventory, 0);
                }
                if lease.is_none() {
                    match self.store.try_lease(LEASE_NAME).await {
                        Ok(Some(taken)) => {
                            tracing::info!(lease = LEASE_NAME, "this replica polls the inventory");
                            // Another replica's missing counts are unknown: start over.
                            self.missing.clear();
                            lease = Some(taken);
                        }
                        Ok(None) => {
                            tracing::debug!(
                                lease = LEASE_NAME,
                                "another replica polls the inventory"
                            );
                            continue;
                        }
                        Err(error) => {
                            tracing::warn!(%error, lease = LEASE_NAME, "cannot take the inventory lease");
                            continue;
                        }
                    }
                }
                // Logged and counted inside.
                let _ = self.poll_once().await;
            }
        })
    }

    /// One poll: fetch, parse, compare, apply. Every outcome is logged and counted.
    pub async fn poll_once(&mut self) -> Result<PollReport, PollError> {
        let result = self.poll().await;
        match &result {
            Ok(_) => self.metrics.sync_succeeded(Source::Inventory),
            Err(error) => self
                .metrics
                .sync_failed(Source::Inventory, error.failure(), error),
        }
        result
    }

    async fn poll(&mut self) -> Result<PollReport, PollError> {
        let body = self.fetch().await?;
        let inventory =
            parse_inventory(&body, &self.settings.egress).map_err(PollError::InvalidResponse)?;
        let stored = self.store.list_clusters(None).await?;
        let rules = PlanRules {
            delete_after_missing_polls: self.settings.delete_after_missing_polls,
            delete_grace: self.settings.delete_grace,
            allow_empty: self.settings.allow_empty,
            silent_after: self.settings.silent_after,
        };
        let plan = plan(&inventory, &stored, &self.missing, rules, now_ms())?;
        self.missing = plan.missing;
        let fleet = stored
            .iter()
            .filter(|c| super::managed_by(c, Source::Inventory) && !c.state.is_tombstone())
            .count();
        let (leaving, others): (Vec<Step>, Vec<Step>) =
            plan.steps.into_iter().partition(|s| s.leaving().is_some());
        let confirmed = self
            .store
            .confirmed_deletions(Source::Inventory.as_str())
            .await?;
        let verdict = self.settings.guard.split(leaving, fleet, &confirmed, |s| {
            s.leaving().map_or("", |(id, _, _)| id)
        });
        let mut report = PollReport::default();
        let mut failed = None;
        let mut skipped_now = BTreeMap::new();
        for step in others.into_iter().chain(verdict.proceed) {
            if let Step::Skip { name, reason } = &step {
                skipped_now.insert(name.clone(), reason.clone());
            }
            if let Err(error) = self.apply(step, &mut report).await {
                failed.get_or_insert(error);
            }
        }
        self.reported_skips = skipped_now;
        self.hold(&verdict.held, &mut report).await?;
        if let Err(error) = self.sync_control_planes(&inventory).await {
            failed.get_or_insert(error);
        }
        // Only entries with a kubeconfig are installed: without one, no second listing.
        if let Some(installer) = &mut self.installer
            && inventory.clusters.values().any(|c| c.kubeconfig.is_some())
        {
            let stored = self.store.list_clusters(None).await?;
            report.installed = installer
                .install_awaiting(&self.store, &self.metrics, &inventory, &stored, now_ms())
                .await;
        }
        match failed {
            Some(error) => Err(PollError::Store(error)),
            None => Ok(report),
        }
    }

    /// Stores the control-plane setting of every listed entry that has one and whose
    /// live cluster (registered from the inventory) holds another.
    async fn sync_control_planes(&self, inventory: &Inventory) -> Result<(), StoreError> {
        if inventory
            .clusters
            .values()
            .all(|c| c.control_plane.is_none())
        {
            return Ok(());
        }
        let stored = self.store.list_clusters(None).await?;
        let current = self.store.cluster_control_planes(None).await?;
        let allowed =
            kaas_pipeline::SecretNamespaces::only(self.settings.secret_namespaces.iter().cloned());
        for listed in inventory.clusters.values() {
            let Some(setting) = &listed.control_plane else {
                continue;
            };
            if let Err(error) = setting.check_secret_namespaces(&allowed) {
                self.report_skip(
                    &listed.name,
                    &listed.tenant,
                    format!("controlPlane not applied: {error}"),
                );
                continue;
            }
            let Some(cluster) = stored.iter().find(|c| {
                c.tenant == listed.tenant
                    && c.name == listed.name
                    && super::managed_by(c, Source::Inventory)
                    && !c.state.is_leaving()
            }) else {
                continue;
            };
            super::sync_control_plane(
                &self.store,
                Source::Inventory,
                (&cluster.tenant, &cluster.id),
                setting,
                current.get(&cluster.id),
            )
            .await?;
        }
        Ok(())
    }

    /// Stores the changes the mass-deletion guard held (replacing the ones it held
    /// before), and logs and counts them.
    async fn hold(&self, held: &[Step], report: &mut PollReport) -> Result<(), StoreError> {
        let held: Vec<HeldDeletion> = held
            .iter()
            .filter_map(|step| {
                let (id, tenant, to_state) = step.leaving()?;
                Some(HeldDeletion {
                    cluster: id.to_owned(),
                    tenant: tenant.to_owned(),
                    to_state,
                    reason: step.evidence(),
                })
            })
            .collect();
        report.held =
            super::hold_deletions(&self.store, &self.metrics, Source::Inventory, &held).await?;
        Ok(())
    }

    #[tracing::instrument(name = "inventory_fetch", level = "debug", skip_all, err(level = "debug"), fields(otel.kind = "client"))]
    async fn fetch(&self) -> Result<Vec<u8>, PollError> {
        let url = self.settings.url.to_string();
        let unreachable = |e: reqwest::Error| PollError::Unreachable {
            url: url.clone(),
            reason: kaas_self_telemetry::error_chain(&e),
        };
        let mut request = self
            .http
            .get(self.settings.url.clone())
            .header(reqwest::header::ACCEPT, "application/json");
        if let Some(token) = &self.settings.bearer_token {
            request = request.bearer_auth(token.expose());
        }
        let mut response = request.send().await.map_err(unreachable)?;
        if response.status() != reqwest::StatusCode::OK {
            return Err(PollError::BadStatus {
                url: url.clone(),
                status: response.status().as_u16(),
            });
        }
        let too_large = || {
            PollError::InvalidResponse(format!("larger than {MAX_INVENTORY_BYTES} bytes; refused"))
        };
        if response
            .content_length()
            .is_some_and(|length| length > MAX_INVENTORY_BYTES as u64)
        {
            return Err(too_large());
        }
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(unreachable)? {
            if body.len() + chunk.len() > MAX_INVENTORY_BYTES {
                return Err(too_large());
            }
            body.extend_from_slice(&chunk);
        }
        Ok(body)
    }

    async fn apply(&mut self, step: Step, report: &mut PollReport) -> Result<(), StoreError> {
        let source = Source::Inventory;
        let actor = source.actor();
        let now = now_ms();
        match step {
            Step::Register(cluster) => {
                let id = match self.register(&cluster).await? {
                    Ok(id) => id,
                    Err(reason) => {
                        self.report_skip(&cluster.name, &cluster.tenant, reason.clone());
                        report.skipped.push((cluster.name, reason));
                        return Ok(());
                    }
                };
                self.metrics.cluster_changed(
                    source,
                    ClusterAction::Registered,
                    &id,
                    &cluster.tenant,
                    &format!(
                        "registered a cluster listed by the inventory; install its agent with the \
                         manifests from `observer cluster join-token {} --tenant {}`",
                        cluster.name, cluster.tenant
                    ),
                );
                report.registered.push(id);
            }
            Step::Update {
                id: name,
                tenant,
                labels,
                api_endpoint,
            } => {
                self.store
                    .update_cluster_registration(&name, labels, api_endpoint, &actor)
                    .await?;
                self.metrics.cluster_changed(
                    source,
                    ClusterAction::Updated,
                    &name,
                    &tenant,
                    "applied the inventory's labels and API endpoint",
                );
                report.updated.push(name);
            }
            Step::Restore {
                id: name,
                tenant,
                to,
            } => {
                self.store.set_cluster_state(&name, to, now, &actor).await?;
                self.metrics.cluster_changed(
                    source,
                    ClusterAction::Restored,
                    &name,
                    &tenant,
                    &format!("the inventory lists the cluster again; back to {to}"),
                );
                report.restored.push(name);
            }
            Step::MarkDeleting {
                id: name,
                tenant,
                missing_polls,
            } => {
                self.mark_deleting(&name, &tenant, missing_polls).await?;
                report.deleting.push(name);
            }
            Step::Tombstone {
                id: name,
                tenant,
                missing_polls,
                marked_deleted,
                via_deleting,
            } => {
                if via_deleting {
                    self.mark_deleting(&name, &tenant, missing_polls).await?;
                    report.deleting.push(name.clone());
                }
                self.store.delete_cluster(&name, &actor).await?;
                let evidence = if marked_deleted {
                    "the inventory lists it as deleted".to_owned()
                } else {
                    format!(
                        "missing from the inventory for {missing_polls} successful polls in a \
                         row and at least {:?}",
                        self.settings.delete_grace
                    )
                };
                self.metrics.cluster_changed(
                    source,
                    ClusterAction::Deleted,
                    &name,
                    &tenant,
                    &format!("{evidence}; tombstoned"),
                );
                report.deleted.push(name);
            }
            Step::Skip { name, reason } => {
                self.report_skip(&name, "", reason.clone());
                report.skipped.push((name, reason));
            }
        }
        Ok(())
    }

    /// Registers a listed cluster and returns its global id; `Ok(Err(reason))` if it
    /// cannot be (a race with the API or another replica took the name, or the tenant is
    /// at its cluster quota).
    async fn register(
        &self,
        cluster: &InventoryCluster,
    ) -> Result<Result<String, String>, StoreError> {
        ensure_tenant(&self.store, &cluster.tenant, Source::Inventory).await?;
        let new = NewCluster {
            name: cluster.name.clone(),
            tenant: cluster.tenant.clone(),
            labels: cluster.stored_labels(),
            api_endpoint: cluster.api_endpoint.clone(),
        };
        match self
            .store
            .create_cluster(new, REGISTRATION_TOKEN_TTL, &Source::Inventory.actor())
            .await
        {
            // The token is dropped: see the module note.
            Ok((created, _)) => Ok(Ok(created.id)),
            Err(StoreError::AlreadyExists { .. }) => Ok(Err(
                "registered concurrently by someone else; compared again next poll".to_owned(),
            )),
            // Reported like any skip, and tried again next poll (the quota may be raised).
            Err(error @ StoreError::QuotaExceeded { .. }) => Ok(Err(error.to_string())),
            Err(error) => Err(error),
        }
    }

    async fn mark_deleting(
        &self,
        name: &str,
        tenant: &str,
        missing_polls: u32,
    ) -> Result<(), StoreError> {
        self.store
            .set_cluster_state(
                name,
                ClusterState::Deleting,
                now_ms(),
                &Source::Inventory.actor(),
            )
            .await?;
        self.metrics.cluster_changed(
            Source::Inventory,
            ClusterAction::Deleting,
            name,
            tenant,
            &format!(
                "missing from the inventory ({missing_polls} of {} polls before it is deleted)",
                self.settings.delete_after_missing_polls
            ),
        );
        Ok(())
    }

    /// Logs and counts a skip the first time it is seen (and again if its reason
    /// changes), so a standing problem does not flood the log every poll.
    fn report_skip(&self, name: &str, tenant: &str, reason: String) {
        if self.reported_skips.get(name) == Some(&reason) {
            return;
        }
        self.metrics.cluster_changed(
            Source::Inventory,
            ClusterAction::Skipped,
            name,
            tenant,
            &reason,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::onboarding::with_source_label;
    use crate::store::Cluster;
    use serde_json::Value;

    const MINUTE_MS: i64 = 60_000;

    fn rules(delete_after: u32) -> PlanRules {
        PlanRules {
            delete_after_missing_polls: NonZeroU32::new(delete_after).unwrap(),
            delete_grace: Duration::ZERO,
            allow_empty: false,
            silent_after: Duration::from_secs(300),
        }
    }

    fn stored(name: &str, state: ClusterState, source: Option<Source>) -> Cluster {
        let mut labels = BTreeMap::from([("env".to_owned(), "prod".to_owned())]);
        if let Some(source) = source {
            labels = with_source_label(labels, source);
        }
        Cluster {
            id: crate::store::global_cluster_id("shop", name),
            name: name.into(),
            tenant: "shop".into(),
            labels,
            api_endpoint: Some(format!("https://{name}:6443")),
            state,
            agent_version: None,
            agent_instance_id: None,
            last_seen_ms: None,
            certificate_serial: None,
            certificate_not_after_ms: None,
            applied_config_hash: None,
            connected: false,
            created_at_ms: 0,
            deleted_at_ms: None,
            incarnation: String::new(),
        }
    }

    fn listed(names: &[&str]) -> Inventory {
        let items: Vec<Value> = names
            .iter()
            .map(|name| {
                serde_json::json!({"name": name, "tenant": "shop", "labels": {"env": "prod"},
                                   "apiEndpoint": format!("https://{name}:6443")})
            })
            .collect();
        parse_inventory(
            &serde_json::to_vec(&items).unwrap(),
            &EgressPolicy::default(),
        )
        .unwrap()
    }

    #[test]
    fn both_answer_shapes_parse_and_unknown_fields_are_ignored() {
        let array = br#"[{"name": "a", "tenant": "shop", "region": "eu", "api_endpoint": "https://a:6443"}]"#;
        let wrapped = br#"{"clusters": [{"name": "a", "tenant": "shop", "apiEndpoint": "https://a:6443"}], "next": null}"#;
        let a = parse_inventory(array, &EgressPolicy::default()).unwrap();
        assert_eq!(
            a,
            parse_inventory(wrapped, &EgressPolicy::default()).unwrap()
        );
        assert_eq!(
            a.clusters["a"].api_endpoint.as_deref(),
            Some("https://a:6443")
        );
        assert!(a.clusters["a"].labels.is_empty());
    }

    #[test]
    fn a_body_that_is_not_a_cluster_list_is_an_error() {
        for body in [
            &b"<html>502</html>"[..],
            b"{\"items\": []}",
            b"42",
            b"null",
            b"",
        ] {
            assert!(
                parse_inventory(body, &EgressPolicy::default()).is_err(),
                "{body:?}"
            );
        }
    }

    #[test]
    fn invalid_entries_are_kept_apart_and_their_names_still_count_as_listed() {
        let body = br#"[
            {"name": "good", "tenant": "shop"},
            {"name": "bad-label", "tenant": "shop", "labels": {"env": "not valid!"}},
            {"name": "no-tenant"},
            {"tenant": "shop"},
            {"name": "twice", "tenant": "shop"},
            {"name": "twice", "tenant": "shop"}
        ]"#;
        let inventory = parse_inventory(body, &EgressPolicy::default()).unwrap();
        assert_eq!(inventory.clusters.keys().collect::<Vec<_>>(), ["good"]);
        let listed: Vec<&str> = inventory.listed_names().into_iter().collect();
        assert_eq!(listed, ["bad-label", "good", "no-tenant", "twice"]);
        let problems: Vec<&str> = inventory
            .invalid
            .iter()
            .map(|e| e.problem.as_str())
            .collect();
        assert!(
            problems[0].starts_with("clusters[1] (\"bad-label\"): labels[\"env\"]"),
            "{problems:?}"
        );
        assert!(
            problems[1].contains("missing field `tenant`"),
            "{problems:?}"
        );
        assert!(problems[2].starts_with("clusters[3]:"), "{problems:?}");
        assert!(problems[3].contains("listed 2 times"), "{problems:?}");
    }

    /// Issue 13, finding 1 (the inventory's part): an inventory entry may not set the
    /// observer's own labels (`kaas-observer.io/…`, `telemetry.kaas-observer.io/…`): the
    /// entry is refused naming the key and the prefix, and its name still counts as
    /// listed, so the refusal deletes nothing.
    #[test]
    fn an_entry_with_a_reserved_label_is_refused() {
        let body = br#"[
            {"name": "a", "tenant": "shop",
             "labels": {"kaas-observer.io/cluster-api-namespace": "bank"}},
            {"name": "b", "tenant": "shop",
             "labels": {"telemetry.kaas-observer.io/cluster": "x", "env": "prod"}}
        ]"#;
        let inventory = parse_inventory(body, &EgressPolicy::default()).unwrap();
        assert!(inventory.clusters.is_empty(), "{inventory:?}");
        let listed: Vec<&str> = inventory.listed_names().into_iter().collect();
        assert_eq!(listed, ["a", "b"]);
        let problems: Vec<&str> = inventory
            .invalid
            .iter()
            .map(|e| e.problem.as_str())
            .collect();
        assert!(
            problems[0].starts_with(
                "clusters[0] (\"a\"): labels[\"kaas-observer.io/cluster-api-namespace\"]: the \
                 prefix \"kaas-observer.io/\" is reserved"
            ),
            "{problems:?}"
        );
        assert!(
            problems[1].contains("labels[\"telemetry.kaas-observer.io/cluster\"]: the prefix \"telemetry.kaas-observer.io/\""),
            "{problems:?}"
        );
        let stored = [stored("a", ClusterState::Active, Some(Source::Inventory))];
        let result = plan(&inventory, &stored, &BTreeMap::new(), rules(1), 0).unwrap();
        assert!(
            !result.steps.iter().any(|s| matches!(
                s,
                Step::Tombstone { .. } | Step::MarkDeleting { .. } | Step::Update { .. }
            )),
            "{:?}",
            result.steps
        );
    }

    #[test]
    fn new_clusters_are_registered_and_changes_applied_with_the_source_label() {
        let mut changed = stored("b", ClusterState::Active, Some(Source::Inventory));
        changed.labels.insert("env".into(), "staging".into());
        let unchanged = stored("c", ClusterState::Active, Some(Source::Inventory));
        let result = plan(
            &listed(&["a", "b", "c"]),
            &[changed, unchanged],
            &BTreeMap::new(),
            rules(3),
            0,
        )
        .unwrap();
        assert_eq!(result.steps.len(), 2, "{:?}", result.steps);
        assert!(matches!(&result.steps[0], Step::Register(c) if c.name == "a"));
        let Step::Update { id, labels, .. } = &result.steps[1] else {
            panic!("{:?}", result.steps[1]);
        };
        assert_eq!(id, "shop.b");
        assert_eq!(labels["env"], "prod");
        assert_eq!(labels[super::super::SOURCE_LABEL], "inventory");
        assert!(result.missing.is_empty());
    }

    #[test]
    fn a_missing_cluster_is_deleting_at_once_and_deleted_after_the_grace_polls() {
        let mut clusters = vec![
            stored("keep", ClusterState::Active, Some(Source::Inventory)),
            stored("gone", ClusterState::Active, Some(Source::Inventory)),
        ];
        let inventory = listed(&["keep"]);
        let first = plan(&inventory, &clusters, &BTreeMap::new(), rules(3), 0).unwrap();
        assert_eq!(
            first.steps,
            [Step::MarkDeleting {
                id: "shop.gone".into(),
                tenant: "shop".into(),
                missing_polls: 1
            }]
        );
        clusters[1].state = ClusterState::Deleting;
        let second = plan(&inventory, &clusters, &first.missing, rules(3), 0).unwrap();
        assert!(second.steps.is_empty(), "{:?}", second.steps);
        assert_eq!(second.missing["shop.gone"].polls, 2);
        let third = plan(&inventory, &clusters, &second.missing, rules(3), 0).unwrap();
        assert_eq!(
            third.steps,
            [Step::Tombstone {
                id: "shop.gone".into(),
                tenant: "shop".into(),
                missing_polls: 3,
                marked_deleted: false,
                via_deleting: false
            }]
        );
    }

    #[test]
    fn with_a_grace_of_one_poll_a_missing_cluster_is_tombstoned_through_deleting() {
        let clusters = [stored(
            "gone",
            ClusterState::Active,
            Some(Source::Inventory),
        )];
        let result = plan(
            &listed(&["other"]),
            &clusters,
            &BTreeMap::new(),
            rules(1),
            0,
        )
        .unwrap();
        assert!(result.steps.contains(&Step::Tombstone {
            id: "shop.gone".into(),
            tenant: "shop".into(),
            missing_polls: 1,
            marked_deleted: false,
            via_deleting: true
        }));
    }

    #[test]
    fn a_reappearing_cluster_is_restored_and_its_count_forgotten() {
        let mut back = stored("back", ClusterState::Deleting, Some(Source::Inventory));
        back.last_seen_ms = Some(100 * MINUTE_MS);
        let missing = BTreeMap::from([(
            "shop.back".to_owned(),
            Missing {
                polls: 2,
                since_ms: 0,
            },
        )]);
        let result = plan(
            &listed(&["back"]),
            &[back],
            &missing,
            rules(3),
            101 * MINUTE_MS,
        )
        .unwrap();
        assert_eq!(
            result.steps,
            [Step::Restore {
                id: "shop.back".into(),
                tenant: "shop".into(),
                to: ClusterState::Active
            }]
        );
        assert!(result.missing.is_empty());
    }

    #[test]
    fn clusters_of_others_are_never_touched_and_tombstones_come_back_as_new_incarnations() {
        let clusters = [
            stored("api-made", ClusterState::Active, None),
            stored("capi-made", ClusterState::Active, Some(Source::ClusterApi)),
            stored("old", ClusterState::Deleted, Some(Source::Inventory)),
        ];
        // Listed: the others' are skipped, the tombstone registered again. Not listed:
        // none is marked.
        let result = plan(
            &listed(&["api-made", "capi-made", "old"]),
            &clusters,
            &BTreeMap::new(),
            rules(1),
            0,
        )
        .unwrap();
        assert_eq!(result.steps.len(), 3);
        assert!(matches!(&result.steps[0], Step::Skip { name, .. } if name == "api-made"));
        assert!(matches!(&result.steps[1], Step::Skip { name, .. } if name == "capi-made"));
        assert!(matches!(&result.steps[2], Step::Register(c) if c.name == "old"));
        let result = plan(&listed(&["x"]), &clusters, &BTreeMap::new(), rules(1), 0).unwrap();
        assert_eq!(
            result.steps.len(),
            1,
            "only x is registered: {:?}",
            result.steps
        );
    }

    #[test]
    fn an_empty_list_is_refused_while_clusters_are_managed_unless_allowed() {
        let clusters = [stored("a", ClusterState::Active, Some(Source::Inventory))];
        let empty = Inventory::default();
        assert!(matches!(
            plan(&empty, &clusters, &BTreeMap::new(), rules(3), 0),
            Err(PollError::EmptyRefused { managed: 1 })
        ));
        let allowed = PlanRules {
            allow_empty: true,
            ..rules(3)
        };
        let result = plan(&empty, &clusters, &BTreeMap::new(), allowed, 0).unwrap();
        assert_eq!(result.missing["shop.a"].polls, 1);
        // Nothing managed: an empty list is just an empty list.
        let unmanaged = [stored("a", ClusterState::Active, None)];
        assert!(
            plan(&empty, &unmanaged, &BTreeMap::new(), rules(3), 0)
                .unwrap()
                .steps
                .is_empty()
        );
    }

    #[test]
    fn an_invalid_entry_protects_its_cluster_from_deletion() {
        let clusters = [stored(
            "typo",
            ClusterState::Deleting,
            Some(Source::Inventory),
        )];
        let inventory = parse_inventory(
            br#"[{"name": "typo", "tenant": "shop", "labels": {"x": "bad value!"}}]"#,
            &EgressPolicy::default(),
        )
        .unwrap();
        let result = plan(&inventory, &clusters, &BTreeMap::new(), rules(1), 0).unwrap();
        assert!(result.missing.is_empty());
        assert!(matches!(
            &result.steps[0],
            Step::Restore {
                to: ClusterState::Provisioning,
                ..
            }
        ));
        assert!(
            matches!(&result.steps[1], Step::Skip { reason, .. } if reason.contains("invalid inventory entry"))
        );
    }

    #[test]
    fn a_tenant_change_is_refused_but_keeps_the_cluster() {
        let clusters = [stored("a", ClusterState::Active, Some(Source::Inventory))];
        let inventory = parse_inventory(
            br#"[{"name": "a", "tenant": "other", "labels": {"env": "prod"}}]"#,
            &EgressPolicy::default(),
        )
        .unwrap();
        let result = plan(&inventory, &clusters, &BTreeMap::new(), rules(1), 0).unwrap();
        assert!(
            matches!(&result.steps[..], [Step::Skip { reason, .. }] if reason.contains("cannot change tenants"))
        );
        assert!(result.missing.is_empty());
    }

    /// Issue 15, finding 4: the old plan tombstoned a cluster after its missing polls
    /// however short the time (three polls at a 5 s interval are 10 s of an inventory
    /// outage). Now it also waits out the grace period, `deleting` meanwhile.
    #[test]
    fn a_missing_cluster_is_tombstoned_only_after_the_polls_and_the_grace_period() {
        let mut clusters = vec![
            stored("keep", ClusterState::Active, Some(Source::Inventory)),
            stored("gone", ClusterState::Active, Some(Source::Inventory)),
        ];
        let inventory = listed(&["keep"]);
        let rules = PlanRules {
            delete_grace: Duration::from_secs(300),
            ..rules(3)
        };
        let mut missing = BTreeMap::new();
        for (poll, at) in [
            (1, 0),
            (2, MINUTE_MS),
            (3, 2 * MINUTE_MS),
            (4, 4 * MINUTE_MS),
        ] {
            let result = plan(&inventory, &clusters, &missing, rules, at).unwrap();
            assert!(
                !result
                    .steps
                    .iter()
                    .any(|s| matches!(s, Step::Tombstone { .. })),
                "poll {poll} at {at} ms: {:?}",
                result.steps
            );
            assert_eq!(result.missing["shop.gone"].polls, poll);
            assert_eq!(result.missing["shop.gone"].since_ms, 0);
            missing = result.missing;
            clusters[1].state = ClusterState::Deleting;
        }
        let result = plan(&inventory, &clusters, &missing, rules, 5 * MINUTE_MS).unwrap();
        assert_eq!(
            result.steps,
            [Step::Tombstone {
                id: "shop.gone".into(),
                tenant: "shop".into(),
                missing_polls: 5,
                marked_deleted: false,
                via_deleting: false
            }]
        );
    }

    /// Positive evidence: an entry marked `"deleted": true` tombstones its cluster at
    /// once (through `deleting`); it is not registered if unknown, and counts as
    /// listed, so nothing else happens to it.
    #[test]
    fn an_entry_marked_deleted_tombstones_its_cluster() {
        let inventory = parse_inventory(
            br#"[{"name": "a", "tenant": "shop", "deleted": true},
                 {"name": "b", "tenant": "shop", "deleted": true}]"#,
            &EgressPolicy::default(),
        )
        .unwrap();
        let clusters = [stored("a", ClusterState::Active, Some(Source::Inventory))];
        let result = plan(&inventory, &clusters, &BTreeMap::new(), rules(3), 0).unwrap();
        assert_eq!(
            result.steps,
            [Step::Tombstone {
                id: "shop.a".into(),
                tenant: "shop".into(),
                missing_polls: 0,
                marked_deleted: true,
                via_deleting: true
            }]
        );
        assert!(result.missing.is_empty());
        assert_eq!(
            result.steps[0].leaving(),
            Some(("shop.a", "shop", ClusterState::Deleted)),
            "weighed by the mass-deletion guard"
        );
    }
}
