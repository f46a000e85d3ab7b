//! What the Cluster API source does about one `Cluster` object, and which registered
//! clusters a relist shows to be gone: pure functions of the object and the store's
//! record, so every case is a plain unit test.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use kube::core::{ApiResource, DynamicObject, GroupVersionKind};

use super::super::{
    MAX_CONTROL_PLANE_SETTING_BYTES, Source, control_plane_setting, managed_by,
    registration_problems, state_before_deletion, with_source_label,
};
use crate::control_plane::ValidatedControlPlane;
use crate::egress::EgressPolicy;
use crate::store::{Cluster, ClusterState};

/// The Cluster API group.
pub const CAPI_GROUP: &str = "cluster.x-k8s.io";
/// The served version read. `v1beta1` is served by every Cluster API release in use
/// (v1.0 onwards, still alongside `v1beta2`), and has the fields read here.
pub const CAPI_VERSION: &str = "v1beta1";
/// `status.phase` of a cluster whose control plane is up and whose kubeconfig Secret
/// exists.
pub const PHASE_PROVISIONED: &str = "Provisioned";
/// The observer's finalizer on `Cluster` objects it registered: the object cannot
/// disappear before the observer has tombstoned its cluster.
pub const FINALIZER: &str = "kaas-observer.io/cluster";
/// The stored cluster's label recording the namespace of its `Cluster` object: with
/// [`super::super::SOURCE_LABEL`] it says which object a registration belongs to (two
/// namespaces mapped to one tenant may hold `Cluster`s of the same name; cluster names
/// are unique per tenant). Only the
/// observer sets it: the key is reserved ([`crate::labels`]).
pub const NAMESPACE_LABEL: &str = "kaas-observer.io/cluster-api-namespace";
/// The stored cluster's label recording the `metadata.uid` of the `Cluster` object it
/// was registered from: a tombstone whose name a *new* object (another uid) carries
/// again is registered as a new incarnation, while the object an administrator's
/// deletion tombstoned stays left alone. Reserved like [`NAMESPACE_LABEL`].
pub const UID_LABEL: &str = "kaas-observer.io/cluster-api-uid";
/// Set on a `Cluster` once the agent's manifests were applied to it. Delete the
/// annotation to have the agent installed again (with a new join token) while the
/// cluster has not joined yet.
pub const AGENT_INSTALLED_ANNOTATION: &str = "kaas-observer.io/agent-installed";

/// A `Cluster`'s control-plane setting ([`crate::control_plane`]): the JSON object
/// `PUT /api/v1/clusters/{name}/control-plane` takes, checked the same way. The
/// observer stores it whenever it differs from the stored one; a `Cluster` without it
/// leaves the cluster's setting as an administrator set it, and a wrong one is
/// reported (the cluster is registered all the same, its setting left unchanged).
pub const CONTROL_PLANE_ANNOTATION: &str = "kaas-observer.io/control-plane";

/// The `ApiResource` of Cluster API's `Cluster` (no CRD types crate: a
/// [`DynamicObject`] carries it).
pub fn cluster_api_resource() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk(CAPI_GROUP, CAPI_VERSION, "Cluster"),
        "clusters",
    )
}

/// What the source reads from a `Cluster` object.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CapiCluster {
    /// `metadata.name`: the cluster's name in the observer.
    pub name: String,
    /// `metadata.namespace`.
    pub namespace: String,
    /// `metadata.uid`: which object of that name it is.
    pub uid: Option<String>,
    /// The tenant an administrator mapped the namespace to (`observer cluster-api
    /// map`); `None` while it is not mapped. Never read from the object: whoever can
    /// write a `Cluster` could name any tenant.
    pub tenant: Option<String>,
    /// `metadata.labels`.
    pub labels: BTreeMap<String, String>,
    /// `status.phase`.
    pub phase: Option<String>,
    /// Whether `metadata.deletionTimestamp` is set.
    pub deleting: bool,
    /// `metadata.finalizers`.
    pub finalizers: Vec<String>,
    /// `https://<spec.controlPlaneEndpoint.host>:<port>`, once known.
    pub api_endpoint: Option<String>,
    /// Whether [`AGENT_INSTALLED_ANNOTATION`] is set.
    pub agent_installed: bool,
    /// `metadata.resourceVersion`, sent with finalizer changes so that they apply only
    /// to the version read.
    pub resource_version: Option<String>,
    /// [`CONTROL_PLANE_ANNOTATION`], checked: `Err` says what is wrong with it.
    pub control_plane: Option<Result<ValidatedControlPlane, String>>,
}

/// Parses and checks the [`CONTROL_PLANE_ANNOTATION`] value.
fn control_plane_annotation(text: &str) -> Result<ValidatedControlPlane, String> {
    if text.len() > MAX_CONTROL_PLANE_SETTING_BYTES {
        return Err(format!(
            "larger than {MAX_CONTROL_PLANE_SETTING_BYTES} bytes"
        ));
    }
    let value: serde_json::Value =
        serde_json::from_str(text).map_err(|e| format!("not a JSON object: {e}"))?;
    control_plane_setting(value)
}

impl CapiCluster {
    /// Reads an object, with `tenant` the tenant its namespace is mapped to; `Err`
    /// names what is missing.
    pub fn from_object(object: &DynamicObject, tenant: Option<String>) -> Result<Self, String> {
        let meta = &object.metadata;
        let name = meta.name.clone().ok_or("metadata.name")?;
        let namespace = meta.namespace.clone().ok_or("metadata.namespace")?;
        let labels = meta.labels.clone().unwrap_or_default();
        let endpoint = &object.data["spec"]["controlPlaneEndpoint"];
        let api_endpoint = match (endpoint["host"].as_str(), endpoint["port"].as_u64()) {
            (Some(host), Some(port)) if !host.is_empty() && port > 0 => {
                Some(if host.contains(':') {
                    format!("https://[{host}]:{port}")
                } else {
                    format!("https://{host}:{port}")
                })
            }
            _ => None,
        };
        let control_plane = meta
            .annotations
            .as_ref()
            .and_then(|a| a.get(CONTROL_PLANE_ANNOTATION))
            .map(|text| control_plane_annotation(text));
        Ok(Self {
            control_plane,
            tenant,
            phase: object.data["status"]["phase"].as_str().map(str::to_owned),
            deleting: meta.deletion_timestamp.is_some(),
            finalizers: meta.finalizers.clone().unwrap_or_default(),
            api_endpoint,
            agent_installed: meta
                .annotations
                .as_ref()
                .is_some_and(|a| a.contains_key(AGENT_INSTALLED_ANNOTATION)),
            resource_version: meta.resource_version.clone(),
            uid: meta.uid.clone(),
            name,
            namespace,
            labels,
        })
    }

    /// Whether Cluster API says it is provisioned.
    pub fn is_provisioned(&self) -> bool {
        self.phase.as_deref() == Some(PHASE_PROVISIONED)
    }

    /// Whether the observer's finalizer is set.
    pub fn has_finalizer(&self) -> bool {
        self.finalizers.iter().any(|f| f == FINALIZER)
    }

    /// Whether no other controller's finalizer is left: Cluster API is done deleting
    /// the cluster's infrastructure, and only the observer holds the object.
    pub fn others_done(&self) -> bool {
        self.finalizers.iter().all(|f| f == FINALIZER)
    }

    /// The labels to store: the object's labels, the source label, the namespace and
    /// the object's uid.
    pub fn stored_labels(&self) -> BTreeMap<String, String> {
        let mut labels = with_source_label(self.labels.clone(), Source::ClusterApi);
        labels.insert(NAMESPACE_LABEL.to_owned(), self.namespace.clone());
        if let Some(uid) = &self.uid {
            labels.insert(UID_LABEL.to_owned(), uid.clone());
        }
        labels
    }

    /// Whether this object is another one than the one `tombstone` was registered from
    /// (both uids known and different): a `Cluster` deleted and created again.
    pub fn replaces(&self, tombstone: &Cluster) -> bool {
        match (tombstone.labels.get(UID_LABEL), &self.uid) {
            (Some(old), Some(new)) => old != new,
            _ => false,
        }
    }
}

/// Whether `stored` was registered from the `Cluster` object in `namespace`, whose
/// tenant is `tenant` (the namespace's mapping). The labels say which object a record
/// came from; the tenant check makes sure the record is one this source may adopt: a
/// record of another tenant carrying the source's labels (set by a tenant before such
/// labels were reserved) is never taken over (issue 13, finding 1).
pub fn registered_from(stored: &Cluster, namespace: &str, tenant: Option<&str>) -> bool {
    managed_by(stored, Source::ClusterApi)
        && stored.labels.get(NAMESPACE_LABEL).map(String::as_str) == Some(namespace)
        && tenant == Some(stored.tenant.as_str())
}

/// One thing to do about a `Cluster`, in the order [`decide`] lists them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Step {
    /// Add [`FINALIZER`] to the object.
    AddFinalizer,
    /// Register the cluster (tenant created if missing) and keep its join token.
    Register,
    /// Replace the stored labels and API endpoint with the object's.
    UpdateRegistration,
    /// Move the stored cluster from `deleting` or `lost` back to this state.
    Restore(ClusterState),
    /// Apply the agent's manifests through the kubeconfig Secret, then annotate.
    InstallAgent,
    /// Move the stored cluster to `deleting`.
    MarkDeleting,
    /// Tombstone the stored cluster.
    Tombstone,
    /// Store the setting of [`CONTROL_PLANE_ANNOTATION`] unless it is stored already.
    SyncControlPlane(Box<ValidatedControlPlane>),
    /// Remove [`FINALIZER`] from the object.
    RemoveFinalizer,
    /// Leave it, for this reason.
    Skip(String),
}

/// What to do about `cluster`, given the store's record of that name. Pure.
///
/// - Being deleted: a registered cluster goes to `deleting` at once, and is tombstoned
///   when no other finalizer is left (Cluster API has removed the infrastructure); then
///   the finalizer goes. Nothing is uninstalled: the workload cluster is going away.
/// - Not provisioned and not registered: nothing yet.
/// - Provisioned (or registered earlier): finalizer first, so no later deletion can be
///   missed; then register or bring labels and endpoint up to date (a `deleting`
///   record returns to its earlier state); then install the agent while it has not
///   been installed and the cluster has not joined.
/// - A name held by a cluster this object did not register (another source, the API,
///   another namespace, or a tenant other than the one the namespace is mapped to), or
///   by the tombstone of this very object, is skipped (and a leftover finalizer
///   removed); a tombstone's name carried by a new object (another uid) is registered
///   again as a new incarnation.
/// - A `lost` or `deleting` record whose object is listed (and not being deleted)
///   returns to the state it would have had ([`state_before_deletion`]).
/// - An object whose namespace is not mapped to a tenant is skipped the same way, and
///   one whose labels use a reserved prefix is not registered.
pub fn decide(
    cluster: &CapiCluster,
    stored: Option<&Cluster>,
    now_ms: i64,
    silent_after: Duration,
    egress: &EgressPolicy,
) -> Vec<Step> {
    let ours = stored.filter(|s| registered_from(s, &cluster.namespace, cluster.tenant.as_deref()));
    if cluster.deleting {
        return deletion_steps(cluster, ours);
    }
    let mut steps = Vec::new();
    let Some(tenant) = cluster.tenant.as_deref() else {
        steps.push(Step::Skip(format!(
            "namespace {:?} is not mapped to a tenant; an administrator maps it with \
             `observer cluster-api map {} --tenant <tenant>`",
            cluster.namespace, cluster.namespace
        )));
        if cluster.has_finalizer() {
            steps.push(Step::RemoveFinalizer);
        }
        return steps;
    };
    let record = match (stored, ours) {
        (Some(stored), None) => {
            steps.push(Step::Skip(if stored.tenant != tenant {
                format!(
                    "the name belongs to a cluster of tenant {:?}, and namespace {:?} is \
                     mapped to tenant {tenant:?}",
                    stored.tenant, cluster.namespace
                )
            } else {
                "the name belongs to a cluster registered by the API, another source or a \
                 Cluster in another namespace"
                    .to_owned()
            }));
            if cluster.has_finalizer() {
                steps.push(Step::RemoveFinalizer);
            }
            return steps;
        }
        (_, Some(record)) if record.state.is_tombstone() => {
            if cluster.replaces(record) {
                // A new object of a deleted cluster's name: a new incarnation.
                None
            } else {
                steps.push(Step::Skip(
                    "its cluster was deleted in the observer (tombstone) while this `Cluster` \
                     object lives on; a new `Cluster` object of that name is registered as a \
                     new incarnation"
                        .to_owned(),
                ));
                if cluster.has_finalizer() {
                    steps.push(Step::RemoveFinalizer);
                }
                return steps;
            }
        }
        (_, record) => record,
    };
    if record.is_none() && !cluster.is_provisioned() {
        return steps;
    }
    let labels = cluster.stored_labels();
    // The object's own labels are checked, reserved prefixes included; the source's
    // labels are added after the check.
    let problems = registration_problems(
        &cluster.name,
        tenant,
        &cluster.labels,
        cluster.api_endpoint.as_deref(),
        egress,
    );
    if !cluster.has_finalizer() && (record.is_some() || problems.is_empty()) {
        steps.push(Step::AddFinalizer);
    }
    let state = match record {
        None if !problems.is_empty() => {
            steps.push(Step::Skip(format!(
                "cannot be registered: {}",
                problems.join("; ")
            )));
            return steps;
        }
        None => {
            steps.push(Step::Register);
            ClusterState::Provisioning
        }
        Some(record) => {
            let mut state = record.state;
            if state.restored_when_listed() {
                state = state_before_deletion(record, now_ms, silent_after);
                steps.push(Step::Restore(state));
            }
            if !problems.is_empty() {
                steps.push(Step::Skip(format!(
                    "labels or endpoint not updated: {}",
                    problems.join("; ")
                )));
            } else if record.labels != labels || record.api_endpoint != cluster.api_endpoint {
                steps.push(Step::UpdateRegistration);
            }
            state
        }
    };
    match &cluster.control_plane {
        Some(Ok(setting)) => steps.push(Step::SyncControlPlane(Box::new(setting.clone()))),
        Some(Err(reason)) => steps.push(Step::Skip(format!(
            "annotation {CONTROL_PLANE_ANNOTATION} not applied: {reason}"
        ))),
        None => {}
    }
    if cluster.is_provisioned() && !cluster.agent_installed && state == ClusterState::Provisioning {
        steps.push(Step::InstallAgent);
    }
    steps
}

/// The live clusters registered from `Cluster` objects that a complete list taken at
/// `listed_at_ms` no longer holds. `present` holds the listed objects' (namespace,
/// name); `mapped` each mapped namespace's tenant. Clusters registered after the list
/// was taken are left alone (their object may simply be younger than the list), and so
/// are clusters this source may not adopt ([`registered_from`]).
pub fn gone_clusters<'a>(
    stored: &'a [Cluster],
    present: &BTreeSet<(String, String)>,
    mapped: &BTreeMap<String, String>,
    listed_at_ms: i64,
) -> Vec<&'a Cluster> {
    stored
        .iter()
        .filter(|c| !c.state.is_tombstone() && c.created_at_ms < listed_at_ms)
        .filter(|c| {
            let namespace = c.labels.get(NAMESPACE_LABEL).cloned().unwrap_or_default();
            registered_from(c, &namespace, mapped.get(&namespace).map(String::as_str))
                && !present.contains(&(namespace, c.name.clone()))
        })
        .collect()
}

/// The steps for an object with a `deletionTimestamp`: the positive evidence of a
/// deletion. Our record goes to `deleting` at once and is tombstoned when no other
/// finalizer is left (Cluster API has removed the infrastructure); then the finalizer
/// goes.
fn deletion_steps(cluster: &CapiCluster, ours: Option<&Cluster>) -> Vec<Step> {
    let mut steps = Vec::new();
    if let Some(record) = ours.filter(|s| !s.state.is_tombstone()) {
        if !record.state.is_leaving() {
            steps.push(Step::MarkDeleting);
        }
        if cluster.others_done() {
            steps.push(Step::Tombstone);
        }
    }
    if cluster.has_finalizer() && cluster.others_done() {
        steps.push(Step::RemoveFinalizer);
    }
    steps
}

/// What a complete relist that no longer holds a registered cluster's object makes of
/// it, by its state (its object carried the observer's finalizer, so it cannot have
/// gone through a normal deletion unseen): a cluster whose deletion the observer saw
/// (`deleting`) is tombstoned; any other live cluster is `lost` (which alerts), never
/// deleted; a lost cluster or a tombstone stays as it is.
pub fn when_gone(state: ClusterState) -> Option<ClusterState> {
    match state {
        ClusterState::Deleting => Some(ClusterState::Deleted),
        ClusterState::Provisioning | ClusterState::Active | ClusterState::Silent => {
            Some(ClusterState::Lost)
        }
        ClusterState::Lost | ClusterState::Deleted => None,
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    const FIVE_MINUTES: Duration = Duration::from_secs(300);

    fn object(value: serde_json::Value) -> CapiCluster {
        CapiCluster::from_object(&serde_json::from_value(value).unwrap(), Some("shop".into()))
            .unwrap()
    }

    fn capi(phase: &str) -> CapiCluster {
        object(json!({
            "apiVersion": "cluster.x-k8s.io/v1beta1", "kind": "Cluster",
            "metadata": {"name": "prod-1", "namespace": "shop", "resourceVersion": "7",
                         "labels": {"env": "prod"}},
            "spec": {"controlPlaneEndpoint": {"host": "10.0.0.1", "port": 6443}},
            "status": {"phase": phase}
        }))
    }

    fn record(cluster: &CapiCluster, state: ClusterState) -> Cluster {
        Cluster {
            id: cluster.name.clone(),
            name: cluster.name.clone(),
            tenant: cluster.tenant.clone().unwrap(),
            labels: cluster.stored_labels(),
            api_endpoint: cluster.api_endpoint.clone(),
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

    /// The normal setup: the provider allows its cluster networks.
    fn cluster_networks() -> EgressPolicy {
        EgressPolicy::new(
            vec!["10.0.0.0/8".parse().unwrap(), "fd00::/8".parse().unwrap()],
            Vec::new(),
        )
    }

    fn steps(cluster: &CapiCluster, stored: Option<&Cluster>) -> Vec<Step> {
        decide(cluster, stored, 0, FIVE_MINUTES, &cluster_networks())
    }

    /// Issue 15: the control-plane annotation is the cluster's setting, checked as the
    /// API checks it; a wrong one is reported with its field path and the cluster is
    /// registered all the same.
    #[test]
    fn the_control_plane_annotation_is_synced_and_a_wrong_one_reported_with_its_path() {
        let annotated = |value: &str| {
            let mut cluster = capi(PHASE_PROVISIONED);
            cluster.control_plane = object(json!({
                "metadata": {"name": "prod-1", "namespace": "shop",
                             "annotations": {CONTROL_PLANE_ANNOTATION: value}}
            }))
            .control_plane;
            cluster
        };
        let good = annotated(r#"{"etcd": {"addresses": ["10.0.0.10:2381"]}}"#);
        let expected: crate::control_plane::ControlPlaneScrape =
            serde_json::from_str(r#"{"etcd": {"addresses": ["10.0.0.10:2381"]}}"#).unwrap();
        let decided = steps(&good, None);
        assert!(decided.contains(&Step::Register), "{decided:?}");
        assert!(
            decided.contains(&Step::SyncControlPlane(Box::new(
                expected.validate().unwrap()
            ))),
            "{decided:?}"
        );
        let too_large = format!(
            r#"{{"etcd": {{"notScraped": "{}"}}}}"#,
            "x".repeat(MAX_CONTROL_PLANE_SETTING_BYTES)
        );
        for (value, needle) in [
            (
                r#"{"etcd": {"addresses": ["127.0.0.1:2381"]}}"#,
                "controlPlane.etcd.addresses[0]",
            ),
            (r#"{"kubeProxy": {}}"#, "unknown field"),
            ("etcd: {}", "not a JSON object"),
            (too_large.as_str(), "larger than"),
        ] {
            let bad = annotated(value);
            let decided = steps(&bad, None);
            assert!(decided.contains(&Step::Register), "{value}: {decided:?}");
            assert!(
                decided.iter().any(|s| matches!(s, Step::Skip(reason)
                    if reason.contains(CONTROL_PLANE_ANNOTATION) && reason.contains(needle))),
                "{value}: {decided:?}"
            );
            assert!(
                !decided
                    .iter()
                    .any(|s| matches!(s, Step::SyncControlPlane(_))),
                "{decided:?}"
            );
        }
    }

    #[test]
    fn an_object_is_read_with_tenant_endpoint_and_labels() {
        let cluster = capi(PHASE_PROVISIONED);
        assert_eq!(cluster.tenant.as_deref(), Some("shop"), "the mapped tenant");
        assert_eq!(
            cluster.api_endpoint.as_deref(),
            Some("https://10.0.0.1:6443")
        );
        assert!(cluster.is_provisioned());
        let labels = cluster.stored_labels();
        assert_eq!(labels["env"], "prod");
        assert_eq!(labels["kaas-observer.io/source"], "cluster-api");
        assert_eq!(labels[NAMESPACE_LABEL], "shop");
        let labelled = object(json!({
            "metadata": {"name": "a", "namespace": "capi-system",
                         "labels": {"kaas-observer.io/tenant": "bank"}, "finalizers": [FINALIZER],
                         "annotations": {AGENT_INSTALLED_ANNOTATION: "x"},
                         "deletionTimestamp": "2025-01-01T00:00:00Z"},
            "spec": {"controlPlaneEndpoint": {"host": "fd00::1", "port": 443}}
        }));
        assert_eq!(
            labelled.tenant.as_deref(),
            Some("shop"),
            "a tenant label on the object is never read"
        );
        assert_eq!(
            labelled.api_endpoint.as_deref(),
            Some("https://[fd00::1]:443")
        );
        assert!(labelled.deleting && labelled.has_finalizer() && labelled.agent_installed);
        assert!(
            CapiCluster::from_object(
                &serde_json::from_value(json!({"metadata": {"name": "a"}})).unwrap(),
                None
            )
            .is_err()
        );
    }

    #[test]
    fn a_provisioned_cluster_gets_a_finalizer_a_registration_and_an_agent() {
        assert_eq!(
            steps(&capi(PHASE_PROVISIONED), None),
            [Step::AddFinalizer, Step::Register, Step::InstallAgent]
        );
    }

    /// Issue 13, finding 5: a `Cluster` whose control plane endpoint is the metadata
    /// service (or loopback) is not registered, so the observer never probes it;
    /// private endpoints need the provider's allow list.
    #[test]
    fn a_control_plane_endpoint_the_egress_policy_refuses_is_not_registered() {
        for host in ["169.254.169.254", "127.0.0.1", "::1"] {
            let mut cluster = capi(PHASE_PROVISIONED);
            cluster.api_endpoint = Some(format!(
                "https://{}:6443",
                if host.contains(':') {
                    format!("[{host}]")
                } else {
                    host.to_owned()
                }
            ));
            let steps = steps(&cluster, None);
            assert!(
                matches!(&steps[..], [Step::Skip(reason)] if reason.contains("apiEndpoint: ") && reason.contains("egress policy")),
                "{host}: {steps:?}"
            );
        }
        let shipped = decide(
            &capi(PHASE_PROVISIONED),
            None,
            0,
            FIVE_MINUTES,
            &EgressPolicy::default(),
        );
        assert!(
            matches!(&shipped[..], [Step::Skip(reason)] if reason.contains("10.0.0.0/8 (private (RFC 1918))")),
            "{shipped:?}"
        );
    }

    #[test]
    fn a_cluster_that_is_not_provisioned_yet_is_left_alone() {
        for phase in ["Pending", "Provisioning", "Failed"] {
            assert!(steps(&capi(phase), None).is_empty(), "{phase}");
        }
    }

    #[test]
    fn a_registered_cluster_is_only_updated_and_installed_once() {
        let mut cluster = capi(PHASE_PROVISIONED);
        cluster.finalizers = vec![FINALIZER.to_owned()];
        let mut stored = record(&cluster, ClusterState::Provisioning);
        assert_eq!(
            steps(&cluster, Some(&stored)),
            [Step::InstallAgent],
            "not installed yet"
        );
        cluster.agent_installed = true;
        assert!(steps(&cluster, Some(&stored)).is_empty());
        cluster.labels.insert("env".into(), "staging".into());
        assert_eq!(steps(&cluster, Some(&stored)), [Step::UpdateRegistration]);
        cluster.agent_installed = false;
        stored.state = ClusterState::Active;
        assert!(
            !steps(&cluster, Some(&stored)).contains(&Step::InstallAgent),
            "an agent that joined is not installed again"
        );
    }

    #[test]
    fn deletion_marks_deleting_and_tombstones_when_only_our_finalizer_is_left() {
        let mut cluster = capi(PHASE_PROVISIONED);
        cluster.deleting = true;
        cluster.finalizers = vec!["cluster.cluster.x-k8s.io".to_owned(), FINALIZER.to_owned()];
        let stored = record(&cluster, ClusterState::Active);
        assert_eq!(steps(&cluster, Some(&stored)), [Step::MarkDeleting]);
        let deleting = record(&cluster, ClusterState::Deleting);
        assert!(steps(&cluster, Some(&deleting)).is_empty());
        cluster.finalizers = vec![FINALIZER.to_owned()];
        assert_eq!(
            steps(&cluster, Some(&deleting)),
            [Step::Tombstone, Step::RemoveFinalizer]
        );
        assert_eq!(
            steps(&cluster, Some(&stored)),
            [Step::MarkDeleting, Step::Tombstone, Step::RemoveFinalizer]
        );
        let deleted = record(&cluster, ClusterState::Deleted);
        assert_eq!(steps(&cluster, Some(&deleted)), [Step::RemoveFinalizer]);
    }

    #[test]
    fn names_of_others_are_skipped_and_our_finalizer_released() {
        let mut cluster = capi(PHASE_PROVISIONED);
        let mut foreign = record(&cluster, ClusterState::Active);
        foreign.labels.clear();
        assert!(matches!(
            &steps(&cluster, Some(&foreign))[..],
            [Step::Skip(_)]
        ));
        let mut other_namespace = record(&cluster, ClusterState::Active);
        other_namespace
            .labels
            .insert(NAMESPACE_LABEL.into(), "elsewhere".into());
        assert!(matches!(
            &steps(&cluster, Some(&other_namespace))[..],
            [Step::Skip(_)]
        ));
        cluster.finalizers = vec![FINALIZER.to_owned()];
        let tombstone = record(&cluster, ClusterState::Deleted);
        assert!(matches!(
            &steps(&cluster, Some(&tombstone))[..],
            [Step::Skip(_), Step::RemoveFinalizer]
        ));
    }

    #[test]
    fn a_deleting_record_of_a_live_object_is_restored() {
        let mut cluster = capi(PHASE_PROVISIONED);
        cluster.finalizers = vec![FINALIZER.to_owned()];
        cluster.agent_installed = true;
        let stored = record(&cluster, ClusterState::Deleting);
        assert_eq!(
            steps(&cluster, Some(&stored)),
            [Step::Restore(ClusterState::Provisioning)]
        );
    }

    #[test]
    fn an_invalid_cluster_is_skipped_without_a_finalizer() {
        let mut cluster = capi(PHASE_PROVISIONED);
        cluster.tenant = Some("Not_A_Tenant".into());
        assert!(
            matches!(&steps(&cluster, None)[..], [Step::Skip(reason)] if reason.contains("tenant"))
        );
    }

    #[test]
    fn a_relist_finds_registered_clusters_whose_object_is_gone() {
        let cluster = capi(PHASE_PROVISIONED);
        let mut kept = record(&cluster, ClusterState::Active);
        kept.name = "kept".into();
        let mut gone = record(&cluster, ClusterState::Active);
        gone.name = "gone".into();
        let mut young = record(&cluster, ClusterState::Provisioning);
        young.name = "young".into();
        young.created_at_ms = 2_000;
        let mut tombstone = record(&cluster, ClusterState::Deleted);
        tombstone.name = "old".into();
        let mut manual = record(&cluster, ClusterState::Active);
        manual.name = "manual".into();
        manual.labels.clear();
        let stored = [kept, gone, young, tombstone, manual];
        let mut foreign = record(&cluster, ClusterState::Active);
        foreign.name = "foreign".into();
        foreign.tenant = "bank".into();
        let stored = [stored.to_vec(), vec![foreign]].concat();
        let present = BTreeSet::from([("shop".to_owned(), "kept".to_owned())]);
        let mapped = BTreeMap::from([("shop".to_owned(), "shop".to_owned())]);
        let names: Vec<&str> = gone_clusters(&stored, &present, &mapped, 1_000)
            .into_iter()
            .map(|c| c.name.as_str())
            .collect();
        assert_eq!(
            names,
            ["gone"],
            "a record of another tenant is never touched"
        );
        assert!(gone_clusters(&stored, &present, &BTreeMap::new(), 1_000).is_empty());
    }

    #[test]
    fn a_cluster_in_an_unmapped_namespace_is_skipped_and_released() {
        let mut cluster = capi(PHASE_PROVISIONED);
        cluster.tenant = None;
        assert!(matches!(
            &steps(&cluster, None)[..],
            [Step::Skip(reason)] if reason.contains("not mapped") && reason.contains("cluster-api map shop")
        ));
        cluster.finalizers = vec![FINALIZER.to_owned()];
        let stored = record(&capi(PHASE_PROVISIONED), ClusterState::Active);
        assert!(matches!(
            &steps(&cluster, Some(&stored))[..],
            [Step::Skip(_), Step::RemoveFinalizer]
        ));
        cluster.deleting = true;
        assert_eq!(
            steps(&cluster, Some(&stored)),
            [Step::RemoveFinalizer],
            "no longer ours: neither marked deleting nor tombstoned"
        );
    }

    /// Issue 13, finding 1: a record of tenant A carrying the Cluster API labels of a
    /// namespace mapped to tenant B is not adopted: nothing is updated or installed.
    #[test]
    fn a_record_of_another_tenant_with_our_labels_is_not_adopted() {
        let cluster = capi(PHASE_PROVISIONED);
        let mut planted = record(&cluster, ClusterState::Provisioning);
        planted.tenant = "attacker".into();
        assert!(matches!(
            &steps(&cluster, Some(&planted))[..],
            [Step::Skip(reason)] if reason.contains("\"attacker\"") && reason.contains("\"shop\"")
        ));
        let mut deleting = cluster.clone();
        deleting.deleting = true;
        assert!(
            steps(&deleting, Some(&planted)).is_empty(),
            "not ours to delete"
        );
    }

    #[test]
    fn a_cluster_with_a_reserved_label_is_not_registered() {
        let mut cluster = capi(PHASE_PROVISIONED);
        cluster
            .labels
            .insert("kaas-observer.io/tenant".into(), "attacker".into());
        assert!(matches!(
            &steps(&cluster, None)[..],
            [Step::Skip(reason)] if reason.contains("labels[\"kaas-observer.io/tenant\"]") && reason.contains("reserved")
        ));
    }

    /// Issue 15, finding 4: a tombstone's name was never registered again, whatever
    /// object carried it (the old code skipped it for good). Now a new `Cluster` object
    /// (another uid) of a deleted cluster's name is registered as a new incarnation,
    /// while the very object whose cluster was deleted stays skipped.
    #[test]
    fn a_new_object_of_a_tombstones_name_is_registered_again() {
        let mut old = capi(PHASE_PROVISIONED);
        old.uid = Some("uid-1".into());
        let tombstone = record(&old, ClusterState::Deleted);
        assert!(matches!(
            &steps(&old, Some(&tombstone))[..],
            [Step::Skip(reason)] if reason.contains("tombstone")
        ));
        let mut new = capi(PHASE_PROVISIONED);
        new.uid = Some("uid-2".into());
        assert_eq!(
            steps(&new, Some(&tombstone)),
            [Step::AddFinalizer, Step::Register, Step::InstallAgent]
        );
        let mut unknown = record(&old, ClusterState::Deleted);
        unknown.labels.remove(UID_LABEL);
        assert!(
            matches!(&steps(&new, Some(&unknown))[..], [Step::Skip(_)]),
            "a tombstone that does not say its object is never taken for another one"
        );
    }

    #[test]
    fn a_lost_record_whose_object_is_listed_again_is_restored() {
        let mut cluster = capi(PHASE_PROVISIONED);
        cluster.finalizers = vec![FINALIZER.to_owned()];
        cluster.agent_installed = true;
        let mut lost = record(&cluster, ClusterState::Lost);
        lost.last_seen_ms = Some(0);
        assert_eq!(
            steps(&cluster, Some(&lost)),
            [Step::Restore(ClusterState::Active)]
        );
    }

    /// Issue 15, finding 4: the old relist tombstoned every registered cluster its list
    /// lacked. Now only a cluster whose deletion the observer saw is tombstoned; any
    /// other becomes `lost`.
    #[test]
    fn a_relist_tombstones_only_what_it_saw_being_deleted() {
        let gone: Vec<Option<ClusterState>> =
            ClusterState::ALL.into_iter().map(when_gone).collect();
        assert_eq!(
            gone,
            [
                Some(ClusterState::Lost),
                Some(ClusterState::Lost),
                Some(ClusterState::Lost),
                None,
                Some(ClusterState::Deleted),
                None,
            ]
        );
    }
}
