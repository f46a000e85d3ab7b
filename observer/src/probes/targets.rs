//! Where targets come from: every live cluster's Kubernetes API endpoint, and the
//! endpoints tenants stored through the API (`/api/v1/probes`); [`follow_store`] keeps a
//! [`Prober`] current with both, reacting to the store's change feed (debounced: a
//! burst of changes costs one re-read) and re-reading periodically as a safety net.
//!
//! A cluster's API server is probed while the cluster is provisioning, active or silent
//! (a silent cluster whose API still answers tells an operator the agent, not the
//! cluster, is broken); deleting and deleted clusters are not probed, nor are stored
//! endpoints that name them. The API server presents a certificate of the cluster's own
//! CA, which the observer does not hold, so both probes skip verification: they measure
//! availability and certificate expiry, not identity. `401` and `403` count as up: an
//! API server that refuses an anonymous request is running.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::sync::broadcast::{self, error::RecvError};
use tokio::task::JoinHandle;
use url::Url;

use super::Prober;
use super::config::{
    HttpMethod, HttpProbe, ProbeModule, ProbeOrigin, ProbeTarget, TlsProbe, TlsSettings,
};
use crate::store::{Change, Cluster, Store, StoreError};

/// Name of the probe of a cluster's API server health endpoint.
pub const CLUSTER_API_PROBE: &str = "kubernetes-api";
/// Name of the TLS probe of a cluster's API server.
pub const CLUSTER_API_CERTIFICATE_PROBE: &str = "kubernetes-api-certificate";
/// The health endpoint probed: `livez` says whether the API server process is alive,
/// without the readiness checks of its dependencies (etcd) that `readyz` adds.
const CLUSTER_API_HEALTH_PATH: &str = "livez";
/// Statuses of the health endpoint that mean "up": 200, and the refusals of an API
/// server that does not allow anonymous health checks.
const CLUSTER_API_UP_STATUSES: [u16; 3] = [200, 401, 403];
/// How often [`follow_store`] re-reads the targets besides reacting to changes: a
/// safety net for a change notification lost between replicas (a PostgreSQL listener
/// reconnect republishes clusters, not probe endpoints), cheap at one read per 15 s.
pub const DEFAULT_TARGET_REFRESH: Duration = Duration::from_secs(15);

/// The probes of every provisioning, active or silent cluster that has an API endpoint:
/// `GET <endpoint>/livez` (200, 401 or 403 is up) and, for https, a TLS handshake for
/// the certificate's expiry. Endpoints that are not URLs (a bare `host:port` is read as
/// https) are skipped.
pub fn targets_from_clusters(clusters: &[Cluster]) -> Vec<ProbeTarget> {
    let mut targets = Vec::new();
    for cluster in clusters {
        if !cluster.state.is_probed() {
            continue;
        }
        let Some(endpoint) = cluster.api_endpoint.as_deref() else {
            continue;
        };
        let Some(url) = api_url(endpoint) else {
            tracing::debug!(
                cluster = %cluster.id,
                "the cluster's API endpoint is not a URL; not probed"
            );
            continue;
        };
        let https = url.scheme() == "https";
        let insecure = TlsSettings {
            insecure_skip_verify: true,
            ..TlsSettings::default()
        };
        targets.push(ProbeTarget {
            name: CLUSTER_API_PROBE.to_owned(),
            tenant: cluster.tenant.clone(),
            cluster: Some(cluster.id.clone()),
            origin: ProbeOrigin::Provider,
            module: ProbeModule::Http(HttpProbe {
                url: health_url(&url),
                method: HttpMethod::Get,
                expected_status: CLUSTER_API_UP_STATUSES.to_vec(),
                tls: https.then(|| insecure.clone()),
            }),
        });
        if https && let (Some(host), Some(port)) = (url.host_str(), url.port_or_known_default()) {
            targets.push(ProbeTarget {
                name: CLUSTER_API_CERTIFICATE_PROBE.to_owned(),
                tenant: cluster.tenant.clone(),
                cluster: Some(cluster.id.clone()),
                origin: ProbeOrigin::Provider,
                module: ProbeModule::Tls(TlsProbe {
                    address: format!("{host}:{port}"),
                    server_name: None,
                    ca: None,
                    insecure_skip_verify: true,
                }),
            });
        }
    }
    targets
}

/// The endpoint as an http(s) URL; a bare `host:port` is taken as https.
fn api_url(endpoint: &str) -> Option<Url> {
    let endpoint = endpoint.trim();
    let text = if endpoint.contains("://") {
        endpoint.to_owned()
    } else {
        format!("https://{endpoint}")
    };
    Url::parse(&text).ok().filter(|url| {
        matches!(url.scheme(), "http" | "https")
            && url.has_host()
            && url.username().is_empty()
            && url.password().is_none()
    })
}

/// `<endpoint>/livez`, keeping a path prefix (API servers behind a proxy).
fn health_url(url: &Url) -> String {
    let mut url = url.clone();
    let path = format!(
        "{}/{CLUSTER_API_HEALTH_PATH}",
        url.path().trim_end_matches('/')
    );
    url.set_path(&path);
    url.set_query(None);
    url.set_fragment(None);
    url.to_string()
}

/// Everything to probe now: the clusters' API endpoints, then every stored endpoint
/// whose cluster (if it names one) is live. A stored endpoint names its tenant's
/// cluster by name; its target carries the cluster's global id, like every other
/// series about the cluster.
pub async fn desired_targets(store: &Store) -> Result<Vec<ProbeTarget>, StoreError> {
    let clusters = store.list_clusters(None).await?;
    let mut targets = targets_from_clusters(&clusters);
    let live: HashMap<(&str, &str), &str> = clusters
        .iter()
        .filter(|c| c.state.is_probed())
        .map(|c| ((c.tenant.as_str(), c.name.as_str()), c.id.as_str()))
        .collect();
    for endpoint in store.list_probe_endpoints(None).await? {
        let mut target = endpoint.target;
        match target.cluster.as_deref() {
            None => targets.push(target),
            Some(name) => {
                if let Some(id) = live.get(&(target.tenant.as_str(), name)) {
                    target.cluster = Some((*id).to_owned());
                    targets.push(target);
                }
            }
        }
    }
    Ok(targets)
}

/// How long [`follow_store`] waits after a relevant change before re-reading the
/// targets, absorbing the changes that follow: creating 10,000 clusters then costs a
/// handful of re-reads instead of 10,000 (each reads every cluster), and a single API
/// change is probed one second later, still far inside a probe interval.
pub const DEFAULT_DEBOUNCE: Duration = Duration::from_secs(1);

/// Tunables of [`follow_store`].
#[derive(Clone, Copy, Debug)]
pub struct FollowSettings {
    /// Time between re-reads without any change ([`DEFAULT_TARGET_REFRESH`]).
    pub refresh: Duration,
    /// Quiet time after a change before re-reading ([`DEFAULT_DEBOUNCE`]).
    pub debounce: Duration,
}

impl Default for FollowSettings {
    fn default() -> Self {
        Self {
            refresh: DEFAULT_TARGET_REFRESH,
            debounce: DEFAULT_DEBOUNCE,
        }
    }
}

/// Whether `change` can move probe targets: a cluster (its API endpoint or state), a
/// tenant (its endpoints go with it) or a probe endpoint. Pipelines and agents'
/// reports (`ClusterReport`, the bulk of the feed with many agents) cannot.
pub fn moves_targets(change: &Change) -> bool {
    match change {
        Change::Cluster { .. } | Change::Tenant(_) | Change::ProbeEndpoint { .. } => true,
        Change::Pipeline { .. } | Change::PipelineStatus { .. } | Change::ClusterReport(_) => false,
    }
}

/// The running [`follow_store`] task.
#[derive(Debug)]
pub struct TargetFollower {
    task: JoinHandle<()>,
    reads: Arc<AtomicU64>,
}

impl TargetFollower {
    /// How many times the targets were read from the store so far.
    pub fn reads(&self) -> u64 {
        self.reads.load(Ordering::Relaxed)
    }

    /// Stops following.
    pub fn abort(&self) {
        self.task.abort();
    }
}

impl Drop for TargetFollower {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// What ended a wait on the feed.
enum Wake {
    /// A change that can move targets, or a lag (changes were missed).
    Relevant,
    /// The periodic refresh.
    Tick,
}

/// Keeps `prober`'s targets equal to [`desired_targets`]: at once, then after every
/// burst of changes that can move targets ([`moves_targets`], or a lag), once the feed
/// has been quiet for `settings.debounce` (the burst's changes are drained meanwhile),
/// and every `settings.refresh` regardless. A failed read is logged and retried at the
/// next trigger; the prober keeps its previous targets meanwhile. Runs until aborted
/// or dropped.
pub fn follow_store(store: Store, prober: Prober, settings: FollowSettings) -> TargetFollower {
    let reads = Arc::new(AtomicU64::new(0));
    let counter = reads.clone();
    let task = tokio::spawn(async move {
        let mut changes = Some(store.subscribe());
        let mut ticks = tokio::time::interval(settings.refresh);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        ticks.reset(); // the first read happens below, not at the first tick
        loop {
            counter.fetch_add(1, Ordering::Relaxed);
            match desired_targets(&store).await {
                Ok(targets) => prober.set_targets(targets),
                Err(error) => {
                    tracing::warn!(%error, "cannot read the probe targets; keeping the current ones");
                }
            }
            let wake = loop {
                let change = next_change(&mut changes);
                tokio::select! {
                    _ = ticks.tick() => break Wake::Tick,
                    relevant = change => if relevant { break Wake::Relevant },
                }
            };
            if matches!(wake, Wake::Relevant) {
                // Drain the burst: wait until nothing relevant arrived for `debounce`.
                loop {
                    let quiet = tokio::time::sleep(settings.debounce);
                    tokio::pin!(quiet);
                    let more = loop {
                        tokio::select! {
                            _ = &mut quiet => break false,
                            relevant = next_change(&mut changes) => if relevant { break true },
                        }
                    };
                    if !more {
                        break;
                    }
                }
                ticks.reset();
            }
        }
    });
    TargetFollower { task, reads }
}

/// Waits for the next change: `true` if it can move targets (or changes were missed),
/// `false` otherwise. Once the feed is closed (the store is gone) it never returns, and
/// only the refresh ticks go on.
async fn next_change(changes: &mut Option<broadcast::Receiver<Change>>) -> bool {
    let Some(feed) = changes.as_mut() else {
        return std::future::pending().await;
    };
    match feed.recv().await {
        Ok(change) => moves_targets(&change),
        Err(RecvError::Lagged(_)) => true,
        Err(RecvError::Closed) => {
            *changes = None;
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::store::ClusterState;

    fn cluster(name: &str, state: ClusterState, endpoint: Option<&str>) -> Cluster {
        Cluster {
            id: name.into(),
            name: name.into(),
            tenant: "shop".into(),
            labels: BTreeMap::new(),
            api_endpoint: endpoint.map(str::to_owned),
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

    #[test]
    fn live_clusters_get_an_http_and_a_tls_probe() {
        let targets = targets_from_clusters(&[
            cluster("c1", ClusterState::Active, Some("https://10.0.0.1:6443")),
            cluster("c2", ClusterState::Silent, Some("api.c2.example:6443")),
            cluster(
                "c3",
                ClusterState::Provisioning,
                Some("https://proxy.example/k8s/c3/"),
            ),
            cluster("gone", ClusterState::Deleted, Some("https://10.0.0.9:6443")),
            cluster(
                "going",
                ClusterState::Deleting,
                Some("https://10.0.0.8:6443"),
            ),
            cluster("none", ClusterState::Active, None),
            cluster(
                "bad",
                ClusterState::Active,
                Some("https://user:pw@10.0.0.7"),
            ),
            cluster("plain", ClusterState::Active, Some("http://10.0.0.6:8080")),
        ]);
        let summary: Vec<(String, String, String)> = targets
            .iter()
            .map(|t| {
                (
                    t.cluster.clone().unwrap(),
                    t.module.kind().to_owned(),
                    t.module.target_label().to_owned(),
                )
            })
            .collect();
        let expected = [
            ("c1", "http", "https://10.0.0.1:6443/livez"),
            ("c1", "tls", "10.0.0.1:6443"),
            ("c2", "http", "https://api.c2.example:6443/livez"),
            ("c2", "tls", "api.c2.example:6443"),
            ("c3", "http", "https://proxy.example/k8s/c3/livez"),
            ("c3", "tls", "proxy.example:443"),
            ("plain", "http", "http://10.0.0.6:8080/livez"),
        ]
        .map(|(a, b, c)| (a.to_owned(), b.to_owned(), c.to_owned()));
        assert_eq!(summary, expected);
        for target in targets {
            assert_eq!(target.tenant, "shop");
            assert_eq!(target.origin, ProbeOrigin::Provider);
            target
                .clone()
                .validate()
                .expect("cluster targets are valid");
            if let ProbeModule::Http(http) = &target.module {
                assert_eq!(http.expected_status, [200, 401, 403]);
                let insecure = http.tls.as_ref().is_none_or(|t| t.insecure_skip_verify);
                assert!(insecure);
            }
        }
    }
}
