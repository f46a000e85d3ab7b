//! What the agent adds to the resources of pushed spans and log records before any
//! pipeline takes its copy: the sending pod's `k8s.namespace.name`, `k8s.pod.name`, `k8s.pod.uid`,
//! `k8s.deployment.name` and `k8s.node.name`, found by the connection's peer address in
//! the pod cache ([`crate::discovery::kubernetes::pods_by_ip`], whose module says what
//! a sender's claims are worth), and `k8s.cluster.name`.
//!
//! # When the pod cache runs
//!
//! Only while a pipeline that takes such pushes does (a trace pipeline, or a log
//! pipeline with an `otlp` input): after every apply the agent tells
//! [`PushEnrichment::follow`] whether any runs; the first one takes a handle from the
//! [`PodsByIpStarter`] (which starts the cluster-wide pod watch), and when the last one
//! goes the handle is dropped, which ends the watch and frees the cache. A log
//! pipeline's namespace selector must not depend on whether a trace pipeline happens to
//! exist, so both kinds hold it. Without the Kubernetes API (standalone, or the node
//! role, which takes no pushes) only `k8s.cluster.name` is added.
//!
//! # The proven namespace wins
//!
//! A service-account token proves its namespace, and the route writes that namespace to
//! every resource after enrichment, whatever the pod lookup or the sender said. A pod
//! found in another namespace than the token's (a token carried out of its namespace,
//! an address behind a node's NAT) does not describe the sender: nothing of it is
//! written.
//!
//! # Which namespace a pipeline's namespace selector judges
//!
//! [`Enrichment::pod_namespace`] is the namespace of the pod the request was enriched
//! from: provider truth (the Kubernetes API's pod, found by the network's address),
//! never a namespace the sender wrote. The trace and log routes judge a request by the
//! token's namespace when a service-account token proves one, else by this one (a
//! push token or an unauthenticated input proves none); with neither, the request is
//! taken whole, as before enrichment ([`super::otlp_traces`], [`super::otlp_logs`]).
//! Pushed series are not enriched: a Prometheus remote-writes the series of every
//! namespace it scrapes, so the sender's pod says nothing about a series.

use std::net::IpAddr;
use std::sync::{PoisonError, RwLock};

use kaas_proto::otlp::Resource;

use crate::discovery::kubernetes::pods_by_ip::{PodsByIp, PodsByIpStarter, enrich_resource};
use crate::internal_events::EnrichmentOutcome;

/// What enriching one request found.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Enrichment {
    /// What the pod lookup found; `None` when no pod cache runs (nothing was looked up).
    pub outcome: Option<EnrichmentOutcome>,
    /// The namespace of the pod the request was enriched from (found by the peer
    /// address, and the token's namespace when a token proved one).
    pub pod_namespace: Option<String>,
}

/// The enrichment of pushed spans and log records, shared by the agent (which starts
/// and stops the pod cache with the pipelines that take them) and the push receivers
/// (which apply it).
pub struct PushEnrichment {
    /// Starts the pod cache; `None` without the Kubernetes API.
    starter: Option<PodsByIpStarter>,
    current: RwLock<Current>,
}

/// What is added now.
#[derive(Default)]
struct Current {
    /// The running pod cache, while a pipeline that takes enriched pushes runs.
    pods: Option<PodsByIp>,
    /// The agent's cluster (the `cluster` external label), empty when it has none.
    cluster_name: String,
}

impl Default for PushEnrichment {
    fn default() -> Self {
        Self::new(None)
    }
}

impl PushEnrichment {
    /// An enrichment that starts its pod cache with `starter` when a pipeline taking
    /// enriched pushes runs (`None`: only the cluster's name is added).
    pub fn new(starter: Option<PodsByIpStarter>) -> Self {
        Self {
            starter,
            current: RwLock::default(),
        }
    }

    /// Follows an applied configuration: the pod cache runs while `takers_run` (a
    /// pipeline taking enriched pushes; started in the current Tokio runtime), and
    /// resources are marked with `cluster_name`.
    pub fn follow(&self, takers_run: bool, cluster_name: &str) {
        let mut current = self.current.write().unwrap_or_else(PoisonError::into_inner);
        cluster_name.clone_into(&mut current.cluster_name);
        match (&self.starter, takers_run) {
            (Some(starter), true) => {
                if current.pods.is_none() {
                    current.pods = Some(starter.get_or_start());
                }
            }
            _ => current.pods = None,
        }
    }

    /// Whether the pod cache runs (held for the pipelines taking enriched pushes).
    pub fn watches_pods(&self) -> bool {
        let current = self.current.read().unwrap_or_else(PoisonError::into_inner);
        current.pods.is_some()
    }

    /// Enriches every resource of a request that came from `peer` (when known), whose
    /// sender proved `proven_namespace` (when it did), by the module's rules: what the
    /// lookup found. A resource the request left out is created.
    pub fn enrich<'a>(
        &self,
        resources: impl IntoIterator<Item = &'a mut Option<Resource>>,
        peer: Option<IpAddr>,
        proven_namespace: Option<&str>,
    ) -> Enrichment {
        let current = self.current.read().unwrap_or_else(PoisonError::into_inner);
        let found = (current.pods.as_ref()).map(|pods| peer.and_then(|peer| pods.lookup(peer)));
        let (outcome, pod) = match found {
            None => (None, None),
            Some(None) => (Some(EnrichmentOutcome::NotMatched), None),
            Some(Some(pod)) => {
                if proven_namespace.is_none_or(|namespace| namespace == pod.namespace) {
                    (Some(EnrichmentOutcome::Enriched), Some(pod))
                } else {
                    tracing::debug!(
                        pod = %pod.name,
                        pod_namespace = %pod.namespace,
                        "a push with another namespace's service-account token is not enriched from the sending pod"
                    );
                    (Some(EnrichmentOutcome::OtherNamespace), None)
                }
            }
        };
        if pod.is_some() || !current.cluster_name.is_empty() {
            for resource in resources {
                let resource = resource.get_or_insert_with(Default::default);
                enrich_resource(resource, pod.as_deref(), &current.cluster_name);
            }
        }
        Enrichment {
            outcome,
            pod_namespace: pod.map(|pod| pod.namespace.clone()),
        }
    }
}
