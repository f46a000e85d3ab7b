//! Onboarding sources: Cluster API clusters in the management cluster ([`capi`]), and a
//! KaaS inventory polled over HTTP ([`inventory`]). Both turn "a cluster exists" into a
//! registered cluster in the store, and "it was deleted" into `deleting`, then
//! `deleted`.
//!
//! # Design note
//!
//! **Who owns a cluster.** A source manages only clusters it registered itself. It
//! records that in the cluster's labels: [`SOURCE_LABEL`]` = inventory | cluster-api`
//! (a label rather than a column: it is visible in `observer cluster list`, selectable
//! by pipelines, and needs no migration). Its key is reserved ([`crate::labels`]): the
//! API, the inventory's entries and the `Cluster` objects cannot set any key under
//! `kaas-observer.io`, so clusters registered through the API or CLI carry no such
//! label and are never touched by a source; a name a source lists that belongs to
//! someone else is skipped and reported. A source also adopts a stored cluster only if
//! its tenant is the one the source gives it (the inventory entry's `tenant`, the
//! tenant an administrator mapped the `Cluster`'s namespace to), so a record another
//! tenant planted with the source's labels before they were reserved is left alone
//! (issue 13, finding 1). An operator who removes the label takes the cluster away from
//! its source.
//!
//! **Tenants.** The inventory's clusters name their tenant (`tenant`); if that tenant
//! does not exist yet it is created (audited as the source), because the point of a
//! source is that a new customer's first cluster is watched from its first minute,
//! without waiting for an operator. The tenant name is validated like the API's
//! (DNS-1123 label); an invalid one skips the cluster and is reported. A Cluster API
//! `Cluster` is registered for the tenant an administrator mapped its namespace to
//! (`observer cluster-api map`), which exists; nothing on the object names a tenant.
//!
//! **Deletion only on positive evidence.** A failed, broken or suspiciously empty
//! answer changes nothing and is logged and counted. What moves a cluster towards its
//! tombstone is the source's word: a `Cluster` carrying the observer's finalizer
//! observed with a `deletionTimestamp` ([`capi`]), an inventory entry marked deleted, or
//! an inventory cluster absent from several successful lists over a grace period
//! ([`inventory`]). A `Cluster` that vanished with the finalizer on, unseen, makes its
//! cluster `lost` (it alerts), never `deleted`. Every change a pass makes out of the live
//! fleet goes through the mass-deletion guard ([`crate::lifecycle::guard`]): above its
//! share of the source's clusters, nothing is applied until an administrator confirms.
//! A cluster listed again while `deleting` or `lost` returns to the state it would have
//! without the interruption ([`state_before_deletion`]); a tombstone's name listed again
//! by a new object or entry is registered as a new incarnation (the tombstone is kept in
//! the store's history, its certificates refused).
//!
//! **Join tokens.** Registering mints a single-use join token (the store always does).
//! The Cluster API source uses it at once to install the agent through the cluster's
//! kubeconfig Secret. The inventory source cannot reach the workload cluster, so it does
//! not keep the token (tokens are stored hashed and shown once): the operator, or the
//! provider's automation, gets a fresh token and the install manifests with
//! `observer cluster join-token NAME` (`POST /api/v1/clusters/{name}/join-token`); the
//! registration is logged with that hint.
//!
//! **Several replicas.** Each source runs on one replica at a time, the holder of its
//! store lease ([`inventory::LEASE_NAME`], [`capi::LEASE_NAME`]; a PostgreSQL advisory
//! lock, always granted on SQLite). Every store write a source makes is idempotent (an
//! existing name is re-read, a state already reached is a no-op), so the short overlap
//! after a lost lease is harmless.
//!
//! Events are logged and counted in one place, [`OnboardingMetrics`].

pub mod capi;
mod events;
pub mod inventory;

use std::collections::BTreeMap;
use std::time::Duration;

use kaas_pipeline::names::{check_dns1123_label, check_label_key, check_label_value};

pub use events::{ClusterAction, OnboardingMetrics, Source, SyncFailure};

use crate::egress::EgressPolicy;
use crate::lifecycle;
use crate::store::{Cluster, ClusterState, HeldDeletion, Store, StoreError, now_ms};

pub use crate::labels::{AGENT_INSTALLED_BY_OBSERVER, AGENT_INSTALLER_LABEL, SOURCE_LABEL};

/// Whether `cluster` was registered by `source`.
pub fn managed_by(cluster: &Cluster, source: Source) -> bool {
    cluster.labels.get(SOURCE_LABEL).map(String::as_str) == Some(source.as_str())
}

/// The labels a source stores for a cluster: the source's own labels with
/// [`SOURCE_LABEL`] set (overriding a label of that key).
pub fn with_source_label(
    mut labels: BTreeMap<String, String>,
    source: Source,
) -> BTreeMap<String, String> {
    labels.insert(SOURCE_LABEL.to_owned(), source.as_str().to_owned());
    labels
}

/// The largest control-plane setting a source may give (the inventory's
/// `controlPlane`, the `Cluster` annotation [`capi::CONTROL_PLANE_ANNOTATION`]): a
/// few components with a handful of addresses each are well under 1 KiB; the bound
/// keeps a hostile setting from costing anything to parse.
pub const MAX_CONTROL_PLANE_SETTING_BYTES: usize = 16 * 1024;

/// A control-plane setting a source gives, parsed and checked as the API checks it;
/// `Err` names the wrong field (`controlPlane.etcd.addresses[0]: ...`).
pub fn control_plane_setting(
    value: serde_json::Value,
) -> Result<crate::control_plane::ValidatedControlPlane, String> {
    let size = serde_json::to_vec(&value).map_or(usize::MAX, |bytes| bytes.len());
    if size > MAX_CONTROL_PLANE_SETTING_BYTES {
        return Err(format!(
            "controlPlane: larger than {MAX_CONTROL_PLANE_SETTING_BYTES} bytes"
        ));
    }
    let setting: crate::control_plane::ControlPlaneScrape =
        serde_json::from_value(value).map_err(|e| format!("controlPlane: {e}"))?;
    setting.validate().map_err(|error| {
        error
            .errors
            .iter()
            .map(|e| format!("{}: {}", e.field, e.message))
            .collect::<Vec<_>>()
            .join("; ")
    })
}

/// Stores `setting` as the control-plane setting of `cluster` (global id) of `tenant`
/// unless `current` is the same, audited as `source`.
pub async fn sync_control_plane(
    store: &Store,
    source: Source,
    (tenant, cluster): (&str, &str),
    setting: &crate::control_plane::ValidatedControlPlane,
    current: Option<&crate::control_plane::ValidatedControlPlane>,
) -> Result<(), StoreError> {
    if current.is_some_and(|c| c.spec() == setting.spec()) {
        return Ok(());
    }
    store
        .set_cluster_control_plane(tenant, cluster, Some(setting), &source.actor())
        .await?;
    tracing::info!(
        %source,
        %cluster,
        "stored the control-plane setting the source gives"
    );
    Ok(())
}

/// The state a `deleting` or `lost` cluster returns to when its source lists it again:
/// what the lifecycle would say had it never left. `provisioning` if no agent was ever
/// heard, else `active`, or `silent` if the agent has been quiet for longer than
/// `silent_after`. Derived from the stored `last_seen`, so it is the same after an
/// observer restart.
pub fn state_before_deletion(
    cluster: &Cluster,
    now_ms: i64,
    silent_after: Duration,
) -> ClusterState {
    if cluster.last_seen_ms.is_none() {
        return ClusterState::Provisioning;
    }
    let mut active = cluster.clone();
    active.state = ClusterState::Active;
    lifecycle::next_state(&active, now_ms, silent_after).unwrap_or(ClusterState::Active)
}

/// Everything wrong with a cluster a source describes, each with its field path
/// (`name`, `tenant`, `labels["key"]`, `apiEndpoint`); empty if it can be registered.
/// The same rules as `POST /api/v1/clusters`: reserved label prefixes (`labels` are the
/// source's labels before it adds its own) and the egress policy (an endpoint that is a
/// literal address the observer may not contact is refused; a name is checked whenever
/// it is resolved, at probe time).
pub fn registration_problems(
    name: &str,
    tenant: &str,
    labels: &BTreeMap<String, String>,
    api_endpoint: Option<&str>,
    egress: &EgressPolicy,
) -> Vec<String> {
    let mut problems = Vec::new();
    if let Err(reason) = check_dns1123_label(name) {
        problems.push(format!("name: {reason}"));
    }
    if let Err(reason) = check_dns1123_label(tenant) {
        problems.push(format!("tenant: {reason}"));
    }
    for (key, value) in labels {
        if let Err(reason) = check_label_key(key) {
            problems.push(format!("labels[{key:?}]: {reason}"));
        }
        if let Err(reason) = check_label_value(value) {
            problems.push(format!("labels[{key:?}]: {reason}"));
        }
        if let Some(reason) = crate::labels::reserved_label_problem(key) {
            problems.push(format!("labels[{key:?}]: {reason}"));
        }
    }
    if let Some(endpoint) = api_endpoint {
        match url::Url::parse(endpoint) {
            Ok(url) if matches!(url.scheme(), "http" | "https") && url.has_host() => {
                if let Err(refusal) = egress.check_url(endpoint) {
                    problems.push(format!("apiEndpoint: {refusal}"));
                }
            }
            _ => problems.push(format!(
                "apiEndpoint: not an absolute http(s) URL: {endpoint:?}"
            )),
        }
    }
    problems
}

/// Makes sure `tenant` exists, creating it on behalf of `source` (see "Tenants are
/// created on first sight" above). Returns whether it was created. A concurrent
/// creation (another replica) counts as existing.
pub async fn ensure_tenant(
    store: &Store,
    tenant: &str,
    source: Source,
) -> Result<bool, StoreError> {
    if store.get_tenant(tenant).await?.is_some() {
        return Ok(false);
    }
    match store.create_tenant(tenant, &source.actor()).await {
        Ok(_) => {
            tracing::info!(%source, %tenant, "created the tenant of a newly onboarded cluster");
            Ok(true)
        }
        Err(StoreError::AlreadyExists { .. }) => Ok(false),
        Err(error) => Err(error),
    }
}

/// Ends a pass of `source` that the mass-deletion guard ([`crate::lifecycle::guard`])
/// cut short: stores the `held` changes (replacing what the source held before; an
/// empty list clears them), logs and counts each, and sets
/// `kaas_observer_deletions_pending`. Returns the held clusters' global ids.
pub async fn hold_deletions(
    store: &Store,
    metrics: &OnboardingMetrics,
    source: Source,
    held: &[HeldDeletion],
) -> Result<Vec<String>, StoreError> {
    for change in held {
        metrics.cluster_changed(
            source,
            ClusterAction::Held,
            &change.cluster,
            &change.tenant,
            &format!(
                "held by the mass-deletion guard (to {}): {}",
                change.to_state, change.reason
            ),
        );
    }
    store
        .hold_deletions(source.as_str(), held, &source.actor(), now_ms())
        .await?;
    metrics.deletions_pending(source, held.len());
    Ok(held.iter().map(|change| change.cluster.clone()).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cluster(state: ClusterState, last_seen_ms: Option<i64>) -> Cluster {
        Cluster {
            id: "c1".into(),
            name: "c1".into(),
            tenant: "shop".into(),
            labels: BTreeMap::new(),
            api_endpoint: None,
            state,
            agent_version: None,
            agent_instance_id: None,
            last_seen_ms,
            certificate_serial: None,
            certificate_not_after_ms: None,
            applied_config_hash: None,
            connected: false,
            created_at_ms: 0,
            deleted_at_ms: None,
            incarnation: String::new(),
        }
    }

    const MINUTE_MS: i64 = 60_000;
    const FIVE_MINUTES: Duration = Duration::from_secs(300);

    #[test]
    fn a_cluster_leaving_deleting_gets_the_state_the_lifecycle_would_give_it() {
        let never_joined = cluster(ClusterState::Deleting, None);
        assert_eq!(
            state_before_deletion(&never_joined, 100 * MINUTE_MS, FIVE_MINUTES),
            ClusterState::Provisioning
        );
        let heard_recently = cluster(ClusterState::Deleting, Some(99 * MINUTE_MS));
        assert_eq!(
            state_before_deletion(&heard_recently, 100 * MINUTE_MS, FIVE_MINUTES),
            ClusterState::Active
        );
        let quiet = cluster(ClusterState::Deleting, Some(10 * MINUTE_MS));
        assert_eq!(
            state_before_deletion(&quiet, 100 * MINUTE_MS, FIVE_MINUTES),
            ClusterState::Silent
        );
    }

    #[test]
    fn the_source_label_marks_ownership_and_overrides_a_listed_label() {
        let listed = BTreeMap::from([
            ("env".to_owned(), "prod".to_owned()),
            (SOURCE_LABEL.to_owned(), "someone-else".to_owned()),
        ]);
        let mut stored = cluster(ClusterState::Active, None);
        stored.labels = with_source_label(listed, Source::Inventory);
        assert_eq!(stored.labels[SOURCE_LABEL], "inventory");
        assert_eq!(stored.labels["env"], "prod");
        assert!(managed_by(&stored, Source::Inventory));
        assert!(!managed_by(&stored, Source::ClusterApi));
        assert!(!managed_by(
            &cluster(ClusterState::Active, None),
            Source::Inventory
        ));
    }

    #[test]
    fn registration_problems_name_every_field() {
        let labels = BTreeMap::from([("bad key!".to_owned(), "ok".to_owned())]);
        let policy = EgressPolicy::default();
        let problems = registration_problems("Bad_Name", "", &labels, Some("not a url"), &policy);
        let fields: Vec<&str> = problems
            .iter()
            .map(|p| p.split(':').next().unwrap_or_default())
            .collect();
        assert_eq!(
            fields,
            ["name", "tenant", "labels[\"bad key!\"]", "apiEndpoint"],
            "{problems:?}"
        );
        assert!(
            registration_problems(
                "prod-1",
                "shop",
                &BTreeMap::new(),
                Some("https://k8s:6443"),
                &policy
            )
            .is_empty()
        );
        let reserved = BTreeMap::from([(SOURCE_LABEL.to_owned(), "cluster-api".to_owned())]);
        let problems = registration_problems("prod-1", "shop", &reserved, None, &policy);
        assert!(
            matches!(&problems[..], [p] if p.starts_with("labels[\"kaas-observer.io/source\"]: the prefix \"kaas-observer.io/\" is reserved")),
            "{problems:?}"
        );
    }

    /// Issue 13, finding 5: a source's endpoint in a refused range is not registered
    /// unless the provider allows the range (the usual setup for cluster networks).
    #[test]
    fn registration_refuses_endpoints_the_egress_policy_refuses() {
        let none = BTreeMap::new();
        let default = EgressPolicy::default();
        let problems = registration_problems(
            "prod-1",
            "shop",
            &none,
            Some("https://169.254.169.254:6443"),
            &default,
        );
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(
            problems[0].starts_with("apiEndpoint: 169.254.169.254 is in 169.254.169.254/32"),
            "{problems:?}"
        );
        let private = Some("https://10.0.0.1:6443");
        assert_eq!(
            registration_problems("prod-1", "shop", &none, private, &default).len(),
            1
        );
        let allowed = EgressPolicy::new(vec!["10.0.0.0/8".parse().unwrap()], Vec::new());
        assert!(registration_problems("prod-1", "shop", &none, private, &allowed).is_empty());
    }
}
