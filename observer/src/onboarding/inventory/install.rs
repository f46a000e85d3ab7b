//! Installing the agent into inventory clusters whose entry names a kubeconfig, as the
//! Cluster API source does for its clusters (`capi::install`: the same checks, the same
//! manifests, the same server-side apply).
//!
//! # Design note
//! **What the inventory gives.** An entry's `kubeconfig` is the cluster's kubeconfig as
//! text. It is checked when the answer is read ([`check_kubeconfig`]): only
//! self-contained kubeconfigs are used (one that runs a command or reads a file is
//! refused with the entry, like any invalid field), and it is bounded in size
//! ([`MAX_KUBECONFIG_BYTES`]). It is held as a secret: never logged, never stored, never
//! returned; the observer reads it again from the next answer.
//!
//! **When.** After each successful poll, every listed cluster with a kubeconfig whose
//! agent has never joined (state `provisioning`, no agent instance) gets the agent's
//! manifests applied with a fresh join token; the state decides, so a restarted
//! observer or a new lease holder carries on where the last one stopped, and a cluster
//! whose agent joined is never touched again. A cluster is tried at most once per
//! [`INSTALL_RETRY_INTERVAL`], so a broken kubeconfig or an unreachable API server costs
//! one attempt per interval, not one per poll; attempts are remembered for listed
//! clusters only, so the memory is bounded by the inventory.
//!
//! **Where to.** The kubeconfig's server is checked by the egress policy and the client
//! pinned to the checked address (`capi::install::WorkloadConnector`), so an inventory
//! entry cannot make the observer contact an address the provider did not allow.
//!
//! Without a kubeconfig nothing is installed: the cluster's view in the API names the
//! command that prints its install manifests (`api::model::ClusterView::install_command`).

use std::collections::BTreeMap;
use std::time::Duration;

use kaas_pipeline::secret::SecretString;

use super::{Inventory, InventoryCluster};
use crate::api::manifest::ManifestInput;
use crate::onboarding::capi::install::{self, InstallError, WorkloadConnector};
use crate::onboarding::{ClusterAction, OnboardingMetrics, Source};
use crate::store::{Cluster, Store};

/// Largest kubeconfig an entry may carry: a kubeconfig with an embedded CA, client
/// certificate and key is a few kilobytes; anything near this is not one.
pub const MAX_KUBECONFIG_BYTES: usize = 64 * 1024;
/// Least time between two install attempts for one cluster: a new cluster's API server
/// usually answers within minutes, and a broken kubeconfig is fixed by a person, so
/// trying more often only adds load on both sides.
pub const INSTALL_RETRY_INTERVAL: Duration = Duration::from_secs(300);
/// How long the join token of an install stays valid: the agent joins within seconds
/// of starting; a token left unused (the pod never started) expires the same day.
pub const INSTALL_TOKEN_TTL: Duration = Duration::from_secs(3600);

/// What the inventory source needs to install agents; without it (no control endpoint
/// known, as in tests of the listing alone) kubeconfigs are checked but not used.
#[derive(Clone, Debug)]
pub struct AgentInstall {
    /// The control endpoint agents join, e.g. `https://observer.example:8443`.
    pub control_endpoint: String,
    /// The CA bundle (PEM) agents trust for it.
    pub ca_pem: String,
    /// The namespaces whose Secrets pipelines may reference (`--agent-secret-namespaces`).
    pub secret_namespaces: Vec<String>,
    /// The provider's central receivers, the agents' `--central-endpoints`.
    pub central_endpoints: Vec<String>,
    /// How workload clusters are reached: through their kubeconfig under the egress
    /// policy, or a fixed client in tests.
    pub workload: WorkloadConnector,
}

/// Checks an entry's kubeconfig: bounded and self-contained. Pure.
pub fn check_kubeconfig(text: &str) -> Result<SecretString, String> {
    if text.len() > MAX_KUBECONFIG_BYTES {
        return Err(format!(
            "{} bytes, more than the {MAX_KUBECONFIG_BYTES} a kubeconfig may have",
            text.len()
        ));
    }
    install::parse_kubeconfig(text)?;
    Ok(SecretString::new(text))
}

/// The installs of one inventory source, with the time of each listed cluster's last
/// attempt.
#[derive(Debug)]
pub(super) struct Installer {
    settings: AgentInstall,
    attempts: BTreeMap<String, i64>,
}

impl Installer {
    pub(super) fn new(settings: AgentInstall) -> Self {
        Self {
            settings,
            attempts: BTreeMap::new(),
        }
    }

    /// Installs the agent of every cluster of `inventory` that carries a kubeconfig and
    /// awaits its agent, among `stored` (the store's clusters after the poll was
    /// applied); each outcome is logged and counted. Returns the ids installed.
    pub(super) async fn install_awaiting(
        &mut self,
        store: &Store,
        metrics: &OnboardingMetrics,
        inventory: &Inventory,
        stored: &[Cluster],
        now_ms: i64,
    ) -> Vec<String> {
        self.attempts
            .retain(|name, _| inventory.clusters.contains_key(name));
        let retry_ms = i64::try_from(INSTALL_RETRY_INTERVAL.as_millis()).unwrap_or(i64::MAX);
        let mut installed = Vec::new();
        for listed in inventory.clusters.values() {
            let Some(kubeconfig) = &listed.kubeconfig else {
                continue;
            };
            let Some(cluster) = stored.iter().find(|c| {
                c.name == listed.name
                    && c.tenant == listed.tenant
                    && super::super::managed_by(c, Source::Inventory)
            }) else {
                continue;
            };
            if !cluster.awaits_agent()
                || self
                    .attempts
                    .get(&listed.name)
                    .is_some_and(|at| now_ms.saturating_sub(*at) < retry_ms)
            {
                continue;
            }
            self.attempts.insert(listed.name.clone(), now_ms);
            match self.install(store, listed, cluster, kubeconfig).await {
                Ok(()) => {
                    metrics.cluster_changed(
                        Source::Inventory,
                        ClusterAction::AgentInstalled,
                        &cluster.id,
                        &cluster.tenant,
                        "applied the agent's manifests through the kubeconfig the inventory lists",
                    );
                    installed.push(cluster.id.clone());
                }
                Err(reason) => metrics.cluster_changed(
                    Source::Inventory,
                    ClusterAction::AgentInstallFailed,
                    &cluster.id,
                    &cluster.tenant,
                    &format!(
                        "installing the agent failed ({reason}); tried again in {INSTALL_RETRY_INTERVAL:?}"
                    ),
                ),
            }
        }
        installed
    }

    async fn install(
        &self,
        store: &Store,
        listed: &InventoryCluster,
        cluster: &Cluster,
        kubeconfig: &SecretString,
    ) -> Result<(), String> {
        let kubeconfig = install::parse_kubeconfig(kubeconfig.expose())?;
        let workload = self.settings.workload.connect(kubeconfig).await?;
        let token = store
            .mint_join_token(&cluster.id, INSTALL_TOKEN_TTL, &Source::Inventory.actor())
            .await
            .map_err(|e| e.to_string())?;
        let documents = install::agent_documents(&ManifestInput {
            cluster: &listed.name,
            control_endpoint: &self.settings.control_endpoint,
            ca_pem: &self.settings.ca_pem,
            join_token: &token,
            secret_namespaces: &self.settings.secret_namespaces,
            central_endpoints: &self.settings.central_endpoints,
        })
        .map_err(|e: InstallError| e.to_string())?;
        install::apply_documents(&workload, &documents)
            .await
            .map_err(|e| e.to_string())
    }
}
