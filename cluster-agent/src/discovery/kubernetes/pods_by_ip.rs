//! The cluster's pods by IP address, for `k8sattributes`-style enrichment of pushed
//! spans and log records: the pod a connection comes from, found by the connection's
//! peer address, gives the resource `k8s.namespace.name`, `k8s.pod.name`, `k8s.pod.uid`,
//! `k8s.deployment.name`, `k8s.node.name` (and the agent adds `k8s.cluster.name`).
//!
//! # Where the pods come from
//!
//! A cluster-wide pod watch ([`super::watch::watch_shaped`]: kube-runtime's watcher
//! and reflector, re-listing after errors so deleted pods cannot linger) that keeps of
//! each pod only what the lookup needs ([`strip`]: name, namespace, uid, the
//! controller's owner reference, node name, host networking, IPs, phase and start
//! time) and at most [`MAX_PODS`] pods. The index is rebuilt from each published
//! snapshot (at most once per [`super::watch::PUBLISH_INTERVAL`]) and read without
//! locking the writer out ([`PodsByIp::lookup`]).
//!
//! Nothing is allocated until a pipeline taking enriched pushes exists (a trace
//! pipeline, a log pipeline with an `otlp` input): the push receivers' enrichment
//! ([`crate::push::enrichment`]) asks [`PodsByIpStarter::get_or_start`] when the
//! agent's first such pipeline starts, and drops its handle with the last one; the
//! watch ends when the last [`PodsByIp`] handle is dropped.
//!
//! # Which pod an address is
//!
//! - Pods on the host network share the node's address, which every such pod, the
//!   kubelet and the node's own processes send from: they are never matched.
//! - Pods that have finished (`Succeeded`, `Failed`) have released their address to
//!   the next pod: they are not matched.
//! - Two live pods with one address (the old one still terminating when its address
//!   is reused): the one started last wins, as the Collector's `k8sattributes`
//!   processor decides.
//! - `k8s.deployment.name` is the controlling ReplicaSet's name without its last
//!   `-<hash>` segment (the naming convention `k8sattributes` relies on: a
//!   Deployment's ReplicaSets are `<deployment>-<pod-template-hash>`).
//!
//! # What a span's claims are worth ([`PodsByIp::enrich`])
//!
//! The pod found by the connection's address is authenticated by the network, the
//! resource attributes a sender writes are not. So:
//! - `k8s.namespace.name` is always the pod's: tenancy is by namespace, and a claimed
//!   namespace must not move spans into another tenant's view.
//! - `k8s.cluster.name` is always the agent's cluster.
//! - `k8s.pod.name`, `k8s.pod.uid`, `k8s.deployment.name`, `k8s.node.name` are filled
//!   where absent and a claim is kept when it names the pod's own namespace (an OTel
//!   Collector or a sidecar forwarding its namespace's spans knows better which pod
//!   made them, as `k8sattributes` assumes); when the claimed namespace was another
//!   one, all four claims are replaced (or removed), since they described a pod of a
//!   namespace the sender does not belong to.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};

use k8s_openapi::api::core::v1::{Pod, PodSpec, PodStatus};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use kaas_proto::otlp::{KeyValue, Resource};
use kube::runtime::watcher;
use kube::{Api, Client};
use tokio::sync::watch as channel;
use tokio::task::JoinHandle;

use super::watch::{PodSnapshot, ShapedWatch, Shaping, watch_shaped};
use crate::processing::logs::attributes::{find, string_attribute};
use crate::processing::logs::json::{OnConflict, upsert_all};

/// Most pods kept. Sized for a 5,000-pod cluster with room for as many again being
/// replaced (a rolling update of every workload doubles the pods for a while): a
/// stripped pod is about 1 KiB in the store and the index together, so the cache stays
/// near 10 MiB whatever the cluster holds. Beyond it, new pods are left out (counted in
/// [`PodsByIp::left_out`] and logged) and what they push is not enriched.
pub const MAX_PODS: usize = 10_000;

/// The resource attributes enrichment sets.
pub const NAMESPACE: &str = "k8s.namespace.name";
/// See [`NAMESPACE`].
pub const POD_NAME: &str = "k8s.pod.name";
/// See [`NAMESPACE`].
pub const POD_UID: &str = "k8s.pod.uid";
/// See [`NAMESPACE`].
pub const DEPLOYMENT_NAME: &str = "k8s.deployment.name";
/// See [`NAMESPACE`].
pub const NODE_NAME: &str = "k8s.node.name";
/// See [`NAMESPACE`].
pub const CLUSTER_NAME: &str = "k8s.cluster.name";

/// What the lookup knows of one pod.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PodIdentity {
    /// Its namespace.
    pub namespace: String,
    /// Its name.
    pub name: String,
    /// Its uid.
    pub uid: String,
    /// Its node, once scheduled.
    pub node_name: Option<String>,
    /// Its Deployment, when a ReplicaSet controls it.
    pub deployment_name: Option<String>,
    /// When the kubelet started it.
    start_time: Option<Time>,
}

/// Pods by address, built from one snapshot of the watch.
#[derive(Debug, Default)]
pub struct PodIndex {
    by_address: HashMap<IpAddr, Arc<PodIdentity>>,
}

impl PodIndex {
    /// The index of `pods` by the rules of the module's documentation.
    pub fn of(pods: &[Arc<Pod>]) -> Self {
        let mut by_address: HashMap<IpAddr, Arc<PodIdentity>> = HashMap::new();
        for pod in pods {
            let Some((identity, addresses)) = identity_of(pod) else {
                continue;
            };
            let identity = Arc::new(identity);
            for address in addresses {
                match by_address.get(&address) {
                    Some(existing) if !started_later(&identity, existing) => {}
                    _ => {
                        by_address.insert(address, identity.clone());
                    }
                }
            }
        }
        Self { by_address }
    }

    /// The pod with `address`.
    pub fn get(&self, address: IpAddr) -> Option<&Arc<PodIdentity>> {
        self.by_address.get(&address.to_canonical())
    }

    /// How many addresses are indexed.
    pub fn len(&self) -> usize {
        self.by_address.len()
    }

    /// Whether no address is indexed.
    pub fn is_empty(&self) -> bool {
        self.by_address.is_empty()
    }
}

/// Whether `candidate` takes an address from `existing`: it started later (a pod not
/// started yet is older than any started one); on a tie, the later name, so the
/// choice does not depend on the snapshot's order.
fn started_later(candidate: &PodIdentity, existing: &PodIdentity) -> bool {
    let key = |pod: &PodIdentity| {
        (
            pod.start_time.as_ref().map(|time| time.0),
            pod.namespace.clone(),
            pod.name.clone(),
        )
    };
    key(candidate) > key(existing)
}

/// The identity of a pod the lookup may match, and its addresses.
fn identity_of(pod: &Pod) -> Option<(PodIdentity, Vec<IpAddr>)> {
    let spec = pod.spec.as_ref();
    if spec.and_then(|spec| spec.host_network) == Some(true) {
        return None;
    }
    let status = pod.status.as_ref()?;
    if matches!(status.phase.as_deref(), Some("Succeeded" | "Failed")) {
        return None;
    }
    let mut addresses: Vec<IpAddr> = status
        .pod_ips
        .iter()
        .flatten()
        .map(|address| address.ip.as_str())
        .chain(status.pod_ip.as_deref())
        .filter_map(|address| address.parse::<IpAddr>().ok())
        .map(|address| address.to_canonical())
        .collect();
    addresses.sort_unstable();
    addresses.dedup();
    if addresses.is_empty() {
        return None;
    }
    let meta = &pod.metadata;
    let deployment_name = meta
        .owner_references
        .iter()
        .flatten()
        .find(|owner| owner.controller == Some(true) && owner.kind == "ReplicaSet")
        .and_then(|owner| deployment_of_replica_set(&owner.name));
    Some((
        PodIdentity {
            namespace: meta.namespace.clone().unwrap_or_default(),
            name: meta.name.clone().unwrap_or_default(),
            uid: meta.uid.clone().unwrap_or_default(),
            node_name: spec.and_then(|spec| spec.node_name.clone()),
            deployment_name,
            start_time: status.start_time.clone(),
        },
        addresses,
    ))
}

/// The Deployment of a ReplicaSet named `<deployment>-<pod-template-hash>`: the name
/// without its last `-` and the letters and digits after it.
fn deployment_of_replica_set(replica_set: &str) -> Option<String> {
    let (deployment, hash) = replica_set.rsplit_once('-')?;
    let is_hash = !hash.is_empty() && hash.bytes().all(|b| b.is_ascii_alphanumeric());
    (is_hash && !deployment.is_empty()).then(|| deployment.to_owned())
}

/// Cuts a pod to what [`PodIndex::of`] reads, before the watch's store keeps it.
pub fn strip(pod: &mut Pod) {
    let meta = std::mem::take(&mut pod.metadata);
    pod.metadata = ObjectMeta {
        name: meta.name,
        namespace: meta.namespace,
        uid: meta.uid,
        resource_version: meta.resource_version,
        owner_references: meta.owner_references.map(|owners| {
            owners
                .into_iter()
                .filter(|owner| owner.controller == Some(true))
                .collect()
        }),
        ..ObjectMeta::default()
    };
    pod.spec = pod.spec.take().map(|spec| PodSpec {
        node_name: spec.node_name,
        host_network: spec.host_network,
        ..PodSpec::default()
    });
    pod.status = pod.status.take().map(|status| PodStatus {
        phase: status.phase,
        pod_ip: status.pod_ip,
        pod_ips: status.pod_ips,
        start_time: status.start_time,
        ..PodStatus::default()
    });
}

/// A handle on the pods by address; clones share one watch, which ends when the last
/// handle is dropped.
#[derive(Clone)]
pub struct PodsByIp {
    index: channel::Receiver<Arc<PodIndex>>,
    running: Arc<Running>,
}

/// The tasks behind a [`PodsByIp`], stopped when the last handle goes.
struct Running {
    tasks: Vec<JoinHandle<()>>,
    left_out: Arc<AtomicU64>,
}

impl Drop for Running {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

impl PodsByIp {
    /// Starts the cluster-wide pod watch and its index (in the current Tokio runtime).
    pub fn start(client: Client) -> Self {
        Self::start_bounded(client, MAX_PODS)
    }

    fn start_bounded(client: Client, max_pods: usize) -> Self {
        let ShapedWatch {
            snapshots,
            task,
            left_out,
        } = watch_shaped(
            Api::<Pod>::all(client),
            watcher::Config::default(),
            Shaping {
                strip,
                max_objects: max_pods,
            },
        );
        let (index, indexer) = index_snapshots(snapshots, left_out.clone());
        Self {
            index,
            running: Arc::new(Running {
                tasks: vec![task, indexer],
                left_out,
            }),
        }
    }

    /// The pod sending from `peer`, if the index has one (an IPv4 address mapped into
    /// IPv6, as a dual-stack listener reports it, is looked up as IPv4).
    pub fn lookup(&self, peer: IpAddr) -> Option<Arc<PodIdentity>> {
        self.index.borrow().get(peer).cloned()
    }

    /// Pods the bound has left out since the watch started.
    pub fn left_out(&self) -> u64 {
        self.running.left_out.load(Ordering::Relaxed)
    }

    /// Adds to `resource` what the pod sending from `peer` is, by the rules of the
    /// module's documentation; `k8s.cluster.name` is set in any case (when
    /// `cluster_name` is not empty). Whether the pod was found.
    pub fn enrich(&self, resource: &mut Resource, peer: IpAddr, cluster_name: &str) -> bool {
        let pod = self.lookup(peer);
        enrich_resource(resource, pod.as_deref(), cluster_name);
        pod.is_some()
    }
}

/// Adds to `resource` what `pod` is (the pod already found for a connection), by the
/// rules of the module's documentation, and `k8s.cluster.name` (when `cluster_name` is
/// not empty) whether a pod was found or not.
pub fn enrich_resource(resource: &mut Resource, pod: Option<&PodIdentity>, cluster_name: &str) {
    if !cluster_name.is_empty() {
        upsert_all(
            &mut resource.attributes,
            vec![string_attribute(CLUSTER_NAME, cluster_name)],
            OnConflict::Replace,
        );
    }
    if let Some(pod) = pod {
        enrich_with(&mut resource.attributes, pod);
    }
}

/// Sets the attributes of `pod` on a resource's `attributes`.
fn enrich_with(attributes: &mut Vec<KeyValue>, pod: &PodIdentity) {
    let claims_own_namespace = match find(attributes, NAMESPACE) {
        None => true,
        Some(claimed) => matches!(
            &claimed.value,
            Some(kaas_proto::otlp::any_value::Value::StringValue(namespace)) if *namespace == pod.namespace
        ),
    };
    let described = [
        (POD_NAME, Some(&pod.name)),
        (POD_UID, Some(&pod.uid)),
        (DEPLOYMENT_NAME, pod.deployment_name.as_ref()),
        (NODE_NAME, pod.node_name.as_ref()),
    ];
    if !claims_own_namespace {
        attributes.retain(|attribute| {
            attribute.key != NAMESPACE && !described.iter().any(|(key, _)| attribute.key == *key)
        });
    }
    upsert_all(
        attributes,
        vec![string_attribute(NAMESPACE, &pod.namespace)],
        OnConflict::Replace,
    );
    let known = described.iter().filter_map(|(key, value)| {
        let value = value.filter(|value| !value.is_empty())?;
        Some(string_attribute(key, value))
    });
    upsert_all(attributes, known.collect(), OnConflict::KeepExisting);
}

/// Rebuilds the index from each snapshot the watch publishes.
fn index_snapshots(
    mut snapshots: channel::Receiver<PodSnapshot>,
    left_out: Arc<AtomicU64>,
) -> (channel::Receiver<Arc<PodIndex>>, JoinHandle<()>) {
    let (sender, receiver) = channel::channel(Arc::new(PodIndex::default()));
    let task = tokio::spawn(async move {
        let mut reported = 0;
        while snapshots.changed().await.is_ok() {
            let pods = snapshots.borrow_and_update().clone();
            sender.send_replace(Arc::new(PodIndex::of(&pods)));
            let left = left_out.load(Ordering::Relaxed);
            if left > reported {
                tracing::warn!(
                    left_out = left,
                    limit = MAX_PODS,
                    "pods beyond the bound of the pod cache for pushed spans and logs are left out; what they push is not enriched"
                );
                reported = left;
            }
            if sender.is_closed() {
                break;
            }
        }
    });
    (receiver, task)
}

/// Starts the pod cache the first time a pipeline needs it and hands out the running
/// one while any handle lives, so that nothing is allocated or watched while no
/// pipeline taking enriched pushes exists.
pub struct PodsByIpStarter {
    client: Client,
    running: Mutex<Option<WeakPodsByIp>>,
}

/// A [`PodsByIp`] that does not keep its watch alive.
struct WeakPodsByIp {
    index: channel::Receiver<Arc<PodIndex>>,
    running: Weak<Running>,
}

impl PodsByIpStarter {
    /// A starter that will watch through `client`.
    pub fn new(client: Client) -> Self {
        Self {
            client,
            running: Mutex::new(None),
        }
    }

    /// The running cache, or a new one (in the current Tokio runtime) when none runs.
    pub fn get_or_start(&self) -> PodsByIp {
        let mut running = self
            .running
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(weak) = running.as_ref()
            && let Some(alive) = weak.running.upgrade()
        {
            return PodsByIp {
                index: weak.index.clone(),
                running: alive,
            };
        }
        let started = PodsByIp::start(self.client.clone());
        *running = Some(WeakPodsByIp {
            index: started.index.clone(),
            running: Arc::downgrade(&started.running),
        });
        started
    }
}

#[cfg(test)]
mod tests;
