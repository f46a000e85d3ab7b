//! The integrations with the central stack against real stores and real peers:
//!
//! * the integration files (Thanos hashring, Grafana provisioning, Alertmanager routes)
//!   written from a real store on SQLite, checked by format (JSON, YAML, Debian's
//!   `amtool check-config` and `amtool config routes test`), and following tenants and
//!   clusters as they come and go;
//! * the fleet series remote-written to a real Prometheus receiver with the right
//!   labels, and a state change marking the old series stale;
//! * the protocol and tenant headers, and results by status, against the recording
//!   receiver;
//! * the central pipeline run by a real `cluster-agent`: its own `up{job="kaas-agent"}`
//!   arrives with `cluster` and `tenant`;
//! * the probe series and the pipelines' per-cluster configuration states
//!   remote-written to a real Prometheus receiver (and the states on `/metrics`);
//! * the writer lease on PostgreSQL, of two replicas only one writing the fleet series
//!   while each writes its own probe series (`KAAS_SKIP_POSTGRES=1` skips these).
//!
//! Needs `prometheus` and `prometheus-alertmanager` (amtool), which scripts/test.sh
//! installs, and the `cluster-agent` binary, which it builds with the workspace.

mod postgres_harness;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use kaas_observer::egress::EgressPolicy;
use kaas_observer::fleet::{ClusterLifecycle, LifecycleSettings};
use kaas_observer::integrations::config_state::ConfigStateSettings;
use kaas_observer::integrations::files::{self, paths};
use kaas_observer::integrations::remote_write::{
    RemoteWriteSettings, RemoteWriter, Series, WriterSources, fleet_series, fleet_source,
    probe_source,
};
use kaas_observer::integrations::{ConfigStates, FilesSettings, HashringSettings};
use kaas_observer::probes::{
    HttpMethod, HttpProbe, ProbeModule, ProbeOrigin, ProbeTarget, Prober, ProberSettings, TcpProbe,
};
use kaas_observer::secrets::SecretBox;
use kaas_observer::store::{Actor, ConfigReport, NewCluster, ReportWrite, Store, now_ms};
use kaas_pipeline::status::AgentConfigState;
use kaas_test_support::peers::{Prometheus, binary};
use kaas_test_support::remote_write_receiver::{Answer, RemoteWriteReceiver};
use prometheus_client::registry::Registry;
use url::Url;

use postgres_harness::TestDatabase;

/// How long generated files or written series may take to follow a change; generous,
/// the actual time is a few hundred milliseconds.
const FOLLOW_DEADLINE: Duration = Duration::from_secs(15);
const HOUR: Duration = Duration::from_secs(3600);

async fn sqlite_store(dir: &Path) -> Store {
    let secrets = SecretBox::generate().expect("a secrets key");
    Store::open_sqlite(&dir.join("observer.db"), secrets)
        .await
        .expect("a SQLite store")
}

async fn add_cluster(store: &Store, name: &str, tenant: &str) {
    store
        .create_cluster(
            NewCluster {
                name: name.into(),
                tenant: tenant.into(),
                labels: BTreeMap::new(),
                api_endpoint: None,
            },
            HOUR,
            &Actor::admin(),
        )
        .await
        .expect("a new cluster");
}

/// Polls `check` until it returns `Some`, or panics with `what` after the deadline.
async fn eventually<T>(what: &str, mut check: impl FnMut() -> Option<T>) -> T {
    let until = Instant::now() + FOLLOW_DEADLINE;
    loop {
        if let Some(value) = check() {
            return value;
        }
        assert!(
            Instant::now() < until,
            "{what} did not happen within {FOLLOW_DEADLINE:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

// ---- integration files ----

fn files_settings(dir: &Path) -> FilesSettings {
    FilesSettings {
        dir: dir.to_owned(),
        hashring: Some(HashringSettings {
            name: "kaas".into(),
            endpoints: vec!["thanos-receive-0.thanos:10901".into()],
            provider_tenant: "kaas-provider".into(),
        }),
        alertmanager: true,
        // Long enough that only changes, not the resync, can explain what a test sees.
        resync: HOUR,
        debounce: Duration::from_millis(50),
    }
}

fn read(dir: &Path, relative: &str) -> String {
    std::fs::read_to_string(dir.join(relative)).unwrap_or_default()
}

fn hashring_tenants(dir: &Path) -> Option<Vec<String>> {
    let json: serde_json::Value = serde_json::from_str(&read(dir, paths::HASHRING)).ok()?;
    serde_json::from_value(json[0]["tenants"].clone()).ok()
}

/// A whole Alertmanager configuration around the generated routing tree: a receiver
/// for the operators and one per tenant (the names the routes must use), and the
/// inhibition rules docs/alerts.md recommends.
fn alertmanager_config(routes_yaml: &str, tenants: &[&str]) -> String {
    let routes: serde_yaml::Value = serde_yaml::from_str(routes_yaml).expect("routes.yaml is YAML");
    let mut receivers = vec![serde_json::json!({
        "name": "kaas-operators",
        "webhook_configs": [{"url": "http://127.0.0.1:9/operators"}],
    })];
    for tenant in tenants {
        receivers.push(serde_json::json!({
            "name": format!("tenant-{tenant}"),
            "webhook_configs": [{"url": format!("http://127.0.0.1:9/{tenant}")}],
        }));
    }
    let config = serde_json::json!({
        "global": {"resolve_timeout": "5m"},
        "route": serde_json::to_value(&routes["route"]).expect("the route as JSON"),
        "receivers": receivers,
        "inhibit_rules": [
            {"source_matchers": ["alertname=\"KaasClusterSilent\""],
             "target_matchers": ["alertname!=\"KaasClusterSilent\""],
             "equal": ["cluster"]},
            {"source_matchers": ["severity=\"critical\""],
             "target_matchers": ["severity=\"warning\""],
             "equal": ["alertname", "cluster", "target", "pipeline"]},
        ],
    });
    serde_yaml::to_string(&config).expect("the configuration as YAML")
}

/// Runs amtool: whether it succeeded, its standard output, and its standard error.
fn amtool(args: &[&str]) -> (bool, String, String) {
    let output = Command::new(binary("amtool", "prometheus-alertmanager"))
        .args(args)
        .output()
        .expect("run amtool");
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// The receivers Alertmanager picks for an alert with `labels`.
fn routed_receivers(config: &Path, labels: &[&str]) -> BTreeSet<String> {
    let config_flag = format!("--config.file={}", config.display());
    let mut args = vec!["config", "routes", "test", config_flag.as_str()];
    args.extend_from_slice(labels);
    let (ok, output, errors) = amtool(&args);
    assert!(ok, "amtool config routes test {labels:?}: {output}{errors}");
    output
        .trim()
        .split(',')
        .map(|r| r.trim().to_owned())
        .filter(|r| !r.is_empty())
        .collect()
}

fn set(items: &[&str]) -> BTreeSet<String> {
    items.iter().map(|s| (*s).to_owned()).collect()
}

#[tokio::test]
async fn integration_files_are_valid_and_follow_tenants_and_clusters() {
    let data = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let dir = out.path().join("integrations");
    let store = sqlite_store(data.path()).await;
    for tenant in ["shop", "bank", "idle"] {
        store.create_tenant(tenant, &Actor::admin()).await.unwrap();
    }
    add_cluster(&store, "shop-1", "shop").await;
    add_cluster(&store, "shop-2", "shop").await;
    add_cluster(&store, "bank-1", "bank").await;

    let _writer = files::IntegrationWriter::start(store.clone(), files_settings(&dir)).unwrap();

    // Thanos: every tenant with a cluster, plus the provider's; "idle" has none.
    let tenants = eventually("hashring.json", || hashring_tenants(&dir)).await;
    assert_eq!(tenants, vec!["bank", "kaas-provider", "shop"]);
    let hashring: serde_json::Value = serde_json::from_str(&read(&dir, paths::HASHRING)).unwrap();
    assert_eq!(hashring[0]["hashring"], "kaas");
    assert_eq!(hashring[0]["tenant_matcher_type"], "exact");
    assert_eq!(
        hashring[0]["endpoints"],
        serde_json::json!(["thanos-receive-0.thanos:10901"])
    );

    // Alertmanager: a full configuration around the routes passes amtool, and alerts
    // are routed as designed.
    let routes = read(&dir, paths::ALERTMANAGER_ROUTES);
    let config_path = out.path().join("alertmanager.yml");
    std::fs::write(
        &config_path,
        alertmanager_config(&routes, &["bank", "idle", "shop"]),
    )
    .unwrap();
    let (ok, output, errors) = amtool(&["check-config", config_path.to_str().unwrap()]);
    assert!(ok, "amtool check-config:\n{output}{errors}\n{routes}");
    assert_eq!(
        routed_receivers(
            &config_path,
            &[
                "alertname=KubePodCrashLooping",
                "tenant=shop",
                "cluster=shop-1"
            ]
        ),
        set(&["tenant-shop"])
    );
    assert_eq!(
        routed_receivers(
            &config_path,
            &[
                "alertname=KaasClusterSilent",
                "tenant=bank",
                "cluster=bank-1"
            ]
        ),
        set(&["kaas-operators"])
    );
    assert_eq!(
        routed_receivers(&config_path, &["alertname=KaasObserverDown"]),
        set(&["kaas-operators"])
    );

    // A change rewrites only what changed: note the hashring's modification.
    let hashring_modified = || {
        std::fs::metadata(dir.join(paths::HASHRING))
            .unwrap()
            .modified()
            .unwrap()
    };
    let before_changes = hashring_modified();

    // A new tenant with a cluster appears; the bank's cluster is deleted and the bank
    // goes; the idle tenant gets a cluster.
    store.create_tenant("cafe", &Actor::admin()).await.unwrap();
    add_cluster(&store, "cafe-1", "cafe").await;
    add_cluster(&store, "idle-1", "idle").await;
    store
        .delete_cluster("bank.bank-1", &Actor::admin())
        .await
        .unwrap();
    store.delete_tenant("bank", &Actor::admin()).await.unwrap();

    let want: Vec<String> = ["cafe", "idle", "kaas-provider", "shop"]
        .map(str::to_owned)
        .to_vec();
    eventually("the hashring to follow", || {
        (hashring_tenants(&dir).as_ref() == Some(&want)).then_some(())
    })
    .await;
    let routes = eventually("the routes to follow", || {
        let routes = read(&dir, paths::ALERTMANAGER_ROUTES);
        (routes.contains("tenant-cafe") && !routes.contains("tenant-bank")).then_some(routes)
    })
    .await;
    std::fs::write(
        &config_path,
        alertmanager_config(&routes, &["cafe", "idle", "shop"]),
    )
    .unwrap();
    let (ok, output, errors) = amtool(&["check-config", config_path.to_str().unwrap()]);
    assert!(
        ok,
        "amtool check-config after the change:\n{output}{errors}"
    );
    assert_ne!(hashring_modified(), before_changes, "the hashring changed");
    let routes_modified = std::fs::metadata(dir.join(paths::ALERTMANAGER_ROUTES))
        .unwrap()
        .modified()
        .unwrap();
    // Another pass over the same tenants and clusters rewrites nothing.
    files::sync(&store, &files_settings(&dir)).await.unwrap();
    assert_eq!(
        std::fs::metadata(dir.join(paths::ALERTMANAGER_ROUTES))
            .unwrap()
            .modified()
            .unwrap(),
        routes_modified,
        "an unchanged file was rewritten"
    );
    let leftovers: Vec<String> = walk(&dir)
        .into_iter()
        .filter(|p| p.contains(".tmp-"))
        .collect();
    assert!(leftovers.is_empty(), "temporary files left: {leftovers:?}");
}

/// Issue 15, finding 5: the old routes sent every `Kaas*` alert to the operators and
/// then on (`continue`) to the tenant it named, and had nothing for the control plane,
/// so a tenant received the provider's alerts. Now the observer's own alerts, the
/// control plane's and `kube-system`'s reach only the operators, each tenant receives
/// its own clusters' alerts and nothing else, and a workload's own `tenant` label
/// (which the receive gateway and the central pipeline rename to `exported_tenant`)
/// routes nowhere. Checked with Debian's real `amtool`.
#[test]
fn alertmanager_routes_keep_provider_alerts_from_tenants_and_tenants_apart() {
    let dir = tempfile::tempdir().unwrap();
    let tenants = ["bank", "shop", "shopping"];
    let routes = files::render_alertmanager_routes(&tenants).unwrap();
    let config = dir.path().join("alertmanager.yml");
    std::fs::write(&config, alertmanager_config(&routes, &tenants)).unwrap();
    let (ok, output, errors) = amtool(&["check-config", config.to_str().unwrap()]);
    assert!(ok, "amtool check-config:\n{output}{errors}\n{routes}");

    let cases: [(&str, &[&str], &[&str]); 13] = [
        (
            "a tenant's own workload alert",
            &[
                "alertname=KubePodCrashLooping",
                "tenant=shop",
                "cluster=shop.edge-1",
                "namespace=web",
            ],
            &["tenant-shop"],
        ),
        (
            "a tenant's node alert",
            &[
                "alertname=KubeNodeNotReady",
                "tenant=bank",
                "cluster=bank.core-1",
                "job=kube-state-metrics",
            ],
            &["tenant-bank"],
        ),
        (
            "the observer's alert about a tenant's cluster",
            &[
                "alertname=KaasClusterSilent",
                "tenant=shop",
                "cluster=shop.edge-1",
            ],
            &["kaas-operators"],
        ),
        (
            "the observer's alert about its own pipeline on a tenant's cluster",
            &[
                "alertname=KaasPipelineDroppingData",
                "tenant=shop",
                "cluster=shop.edge-1",
                "pipeline=kaas-central",
            ],
            &["kaas-operators"],
        ),
        (
            "the observer's own health",
            &["alertname=KaasObserverDown"],
            &["kaas-operators"],
        ),
        (
            "a control-plane target down, by job",
            &[
                "alertname=TargetDown",
                "tenant=shop",
                "cluster=shop.edge-1",
                "job=apiserver",
            ],
            &["kaas-operators"],
        ),
        (
            "a control-plane alert, by name",
            &[
                "alertname=KubeSchedulerDown",
                "tenant=shop",
                "cluster=shop.edge-1",
            ],
            &["kaas-operators"],
        ),
        (
            "etcd",
            &[
                "alertname=etcdMembersDown",
                "tenant=bank",
                "cluster=bank.core-1",
                "job=etcd",
            ],
            &["kaas-operators"],
        ),
        (
            "kube-system, collected by the provider's pipeline",
            &[
                "alertname=KubePodCrashLooping",
                "tenant=shop",
                "cluster=shop.edge-1",
                "namespace=kube-system",
            ],
            &["kaas-operators"],
        ),
        (
            "a workload labelling its series tenant=\"bank\": renamed, stays the shop's",
            &[
                "alertname=KubePodCrashLooping",
                "tenant=shop",
                "exported_tenant=bank",
                "cluster=shop.edge-1",
            ],
            &["tenant-shop"],
        ),
        (
            "a tenant whose name starts with another's",
            &[
                "alertname=KubePodCrashLooping",
                "tenant=shopping",
                "cluster=shopping.a",
            ],
            &["tenant-shopping"],
        ),
        (
            "a tenant the routes do not know",
            &[
                "alertname=KubePodCrashLooping",
                "tenant=ghost",
                "cluster=ghost.a",
            ],
            &["kaas-operators"],
        ),
        (
            "no tenant at all",
            &["alertname=KubePodCrashLooping", "cluster=x"],
            &["kaas-operators"],
        ),
    ];
    for (what, labels, want) in cases {
        assert_eq!(
            routed_receivers(&config, labels),
            set(want),
            "{what}: {labels:?}"
        );
    }
}

fn walk(dir: &Path) -> Vec<String> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.is_dir() {
            found.extend(walk(&path));
        } else {
            found.push(path.display().to_string());
        }
    }
    found
}

// ---- remote-write ----

fn fast_lifecycle(store: &Store) -> ClusterLifecycle {
    ClusterLifecycle::start(
        store.clone(),
        LifecycleSettings {
            tick: Duration::from_millis(100),
            ..LifecycleSettings::default()
        },
    )
}

fn write_settings(url: &str) -> RemoteWriteSettings {
    let mut settings = RemoteWriteSettings::new(Url::parse(url).expect("a URL"));
    settings.interval = Duration::from_millis(200);
    settings
}

/// The metric families in `registry`'s text exposition: (name, labels) → value.
fn exposition(registry: &Registry) -> BTreeMap<String, f64> {
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, registry).expect("an exposition");
    text.lines()
        .filter(|line| !line.starts_with('#') && !line.is_empty())
        .map(|line| {
            let (series, value) = line.rsplit_once(' ').expect("a series and a value");
            (series.to_owned(), value.parse().expect("a number"))
        })
        .collect()
}

fn state_of(result: &[serde_json::Value]) -> Vec<String> {
    let mut states: Vec<String> = result
        .iter()
        .map(|r| r["metric"]["state"].as_str().unwrap_or_default().to_owned())
        .collect();
    states.sort();
    states
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fleet_series_reach_prometheus_and_a_state_change_marks_the_old_one_stale() {
    let data = tempfile::tempdir().unwrap();
    let peer = tempfile::tempdir().unwrap();
    let prometheus = Prometheus::receiver(peer.path());
    let store = sqlite_store(data.path()).await;
    store.create_tenant("shop", &Actor::admin()).await.unwrap();
    add_cluster(&store, "edge-1", "shop").await;

    let lifecycle = fast_lifecycle(&store);
    let writer = RemoteWriter::start(
        store.clone(),
        write_settings(&prometheus.write_url()),
        vec![fleet_source(lifecycle.snapshot_reader())],
    )
    .unwrap();

    let result = tokio::task::block_in_place(|| {
        prometheus.wait_for(
            r#"kaas_cluster_info{cluster="shop.edge-1",state="provisioning"}"#,
            FOLLOW_DEADLINE,
        )
    });
    let labels = result[0]["metric"].as_object().unwrap();
    let names: BTreeSet<&str> = labels.keys().map(String::as_str).collect();
    assert_eq!(
        names,
        BTreeSet::from(["__name__", "cluster", "state", "tenant"]),
        "{labels:?}"
    );
    assert_eq!(labels["tenant"], "shop");
    let created = tokio::task::block_in_place(|| {
        prometheus.wait_for(
            r#"kaas_cluster_created_timestamp_seconds{cluster="shop.edge-1"}"#,
            FOLLOW_DEADLINE,
        )
    });
    let created: f64 = created[0]["value"][1].as_str().unwrap().parse().unwrap();
    assert!(
        (created - now_ms() as f64 / 1000.0).abs() < 600.0,
        "{created}"
    );

    // The agent shows up: provisioning gives way to active at once, not after the
    // 5 minute lookback.
    store
        .report(ReportWrite::Seen {
            cluster: String::from("shop.edge-1"),
            instance_id: String::from("instance-1"),
            version: String::from("test"),
            at_ms: now_ms(),
            connection: None,
        })
        .await
        .unwrap();
    let query = r#"kaas_cluster_info{cluster="shop.edge-1"}"#;
    let mut last = Vec::new();
    let until = Instant::now() + FOLLOW_DEADLINE;
    while Instant::now() < until {
        last = state_of(&tokio::task::block_in_place(|| prometheus.query(query)));
        if last == ["active"] {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(last, ["active"], "{}", prometheus.log());

    let mut registry = Registry::default();
    writer.register(&mut registry);
    let metrics = exposition(&registry);
    assert!(
        metrics[r#"kaas_observer_remote_write_samples_total{result="success"}"#] > 0.0,
        "{metrics:?}"
    );
    assert!(metrics["kaas_observer_remote_write_last_success_timestamp_seconds"] > 0.0);
    assert!(
        !metrics.contains_key(r#"kaas_observer_remote_write_samples_total{result="dropped"}"#),
        "{metrics:?}"
    );
}

#[tokio::test]
async fn the_written_series_are_the_ones_the_lifecycle_serves() {
    let data = tempfile::tempdir().unwrap();
    let store = sqlite_store(data.path()).await;
    store.create_tenant("shop", &Actor::admin()).await.unwrap();
    add_cluster(&store, "edge-1", "shop").await;
    add_cluster(&store, "edge-2", "shop").await;
    store
        .report(ReportWrite::Seen {
            cluster: String::from("shop.edge-1"),
            instance_id: String::from("instance-1"),
            version: String::from("test"),
            at_ms: now_ms(),
            connection: None,
        })
        .await
        .unwrap();
    store
        .delete_cluster("shop.edge-2", &Actor::admin())
        .await
        .unwrap();
    let lifecycle = fast_lifecycle(&store);
    let read = lifecycle.snapshot_reader();
    eventually("the first lifecycle tick", || {
        (read().clusters.len() == 2).then_some(())
    })
    .await;

    let mut registry = Registry::default();
    lifecycle.register(&mut registry);
    let served: BTreeSet<String> = exposition(&registry).into_keys().collect();
    let written: BTreeSet<String> = fleet_series(&read()).iter().map(exposition_key).collect();
    assert_eq!(written, served);
}

/// A series as the text exposition names it: `name{a="x",b="y"}` in the collector's
/// label order (cluster, tenant, then the rest), which is the order `fleet_series`
/// does not keep, so compare as sets of labels instead.
fn exposition_key(series: &Series) -> String {
    let name = series
        .labels
        .iter()
        .find(|(n, _)| n == "__name__")
        .map(|(_, v)| v.clone())
        .unwrap_or_default();
    let order = |n: &str| match n {
        "cluster" => 0,
        "tenant" => 1,
        "state" => 2,
        "pipeline" => 3,
        "generation" => 4,
        "type" => 5,
        "status" => 6,
        "reason" => 7,
        _ => 8,
    };
    let mut labels: Vec<&(String, String)> = series
        .labels
        .iter()
        .filter(|(n, _)| n != "__name__")
        .collect();
    labels.sort_by_key(|(n, _)| order(n));
    let inner: Vec<String> = labels.iter().map(|(n, v)| format!("{n}=\"{v}\"")).collect();
    if inner.is_empty() {
        name
    } else {
        format!("{name}{{{}}}", inner.join(","))
    }
}

#[tokio::test]
async fn requests_carry_the_protocol_and_tenant_headers_and_results_are_counted() {
    let data = tempfile::tempdir().unwrap();
    let store = sqlite_store(data.path()).await;
    store.create_tenant("shop", &Actor::admin()).await.unwrap();
    add_cluster(&store, "edge-1", "shop").await;
    let receiver = RemoteWriteReceiver::start().await;
    receiver.script([Answer::status(400), Answer::status(503)]);
    let lifecycle = fast_lifecycle(&store);
    let read = lifecycle.snapshot_reader();
    eventually("the first lifecycle tick", || {
        (!read().clusters.is_empty()).then_some(())
    })
    .await;
    let mut settings = write_settings(&receiver.url());
    settings.tenant = "the-provider".into();
    let writer = RemoteWriter::start(store.clone(), settings, vec![fleet_source(read)]).unwrap();

    receiver.wait_for_samples(1, FOLLOW_DEADLINE).await;
    let received = receiver.received();
    assert!(received.len() >= 3, "{received:?}");
    for request in &received {
        assert_eq!(request.headers["content-encoding"], "snappy");
        assert_eq!(
            request.headers["x-prometheus-remote-write-version"],
            "0.1.0"
        );
        assert_eq!(request.headers["content-type"], "application/x-protobuf");
        assert_eq!(request.headers["thanos-tenant"], "the-provider");
        assert!(!request.v2);
    }
    assert_eq!(received[0].status, 400);
    assert_eq!(received[1].status, 503);
    let accepted = receiver.accepted();
    assert!(
        accepted.keys().any(|labels| labels.contains(&(
            "__name__".to_owned(),
            "kaas_cluster_info".to_owned()
        ))),
        "{accepted:?}"
    );

    let mut registry = Registry::default();
    writer.register(&mut registry);
    // The answer reaches the receiver's log before the writer counts it.
    let metrics = eventually("the success to be counted", || {
        let metrics = exposition(&registry);
        (metrics["kaas_observer_remote_write_last_success_timestamp_seconds"] > 0.0)
            .then_some(metrics)
    })
    .await;
    for result in ["success", "failure", "dropped"] {
        let key = format!(r#"kaas_observer_remote_write_samples_total{{result="{result}"}}"#);
        assert!(
            metrics.get(&key).is_some_and(|v| *v > 0.0),
            "{key}: {metrics:?}"
        );
    }
}

// ---- started from the serve flags ----

#[tokio::test]
async fn the_serve_flags_start_what_they_name() {
    use clap::Parser;
    use kaas_observer::integrations::{IntegrationFlags, Integrations};

    #[derive(Parser)]
    struct Serve {
        #[command(flatten)]
        integrations: IntegrationFlags,
    }

    let data = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let store = sqlite_store(data.path()).await;
    store.create_tenant("shop", &Actor::admin()).await.unwrap();
    add_cluster(&store, "edge-1", "shop").await;
    let receiver = RemoteWriteReceiver::start().await;
    let dir = out.path().join("integrations");
    let serve = Serve::try_parse_from([
        "serve",
        "--thanos-receive-url",
        "https://thanos-receive.example:19291/api/v1/receive",
        "--receive-gateway-url",
        "https://receive-gateway.example:19291",
        "--central-remote-write-url",
        &receiver.url(),
        "--central-remote-write-interval",
        "1s",
        "--integrations-dir",
        dir.to_str().unwrap(),
        "--thanos-receive-endpoint",
        "receive-0:10901",
    ])
    .unwrap();
    let lifecycle = fast_lifecycle(&store);
    let integrations = Integrations::start(
        serve.integrations.check().unwrap(),
        &store,
        &lifecycle,
        Vec::new(),
    )
    .unwrap();

    let central = integrations.central_pipeline().unwrap();
    assert_eq!(central.gateway_url, "https://receive-gateway.example:19291");
    receiver.wait_for_samples(1, FOLLOW_DEADLINE).await;
    assert_eq!(
        receiver.received()[0].headers["thanos-tenant"],
        "kaas-provider"
    );
    let tenants = eventually("hashring.json", || hashring_tenants(&dir)).await;
    assert_eq!(tenants, vec!["kaas-provider", "shop"]);
    assert!(dir.join(paths::ALERTMANAGER_ROUTES).is_file());
    let mut registry = Registry::default();
    integrations.register(&mut registry);
    let metrics = exposition(&registry);
    assert!(
        metrics.contains_key("kaas_observer_remote_write_last_success_timestamp_seconds"),
        "{metrics:?}"
    );
    integrations.stop();
}

// ---- the writer lease on PostgreSQL ----

#[tokio::test]
async fn one_replica_holds_the_lease_until_it_lets_go() {
    let Some(database) = TestDatabase::create("leases").await else {
        return;
    };
    {
        let one = database.store().await;
        let two = database.store().await;

        let mut held = one.try_lease(LEASE).await.unwrap().unwrap();
        assert!(held.is_held().await);
        assert!(two.try_lease(LEASE).await.unwrap().is_none());
        // Another lease name is independent.
        assert!(two.try_lease("another").await.unwrap().is_some());
        // Asking again from the holder's store is refused too: the lock belongs to the
        // lease's own session, not to the store.
        assert!(one.try_lease(LEASE).await.unwrap().is_none());

        held.release().await;
        let taken = take_eventually(&two).await;
        assert_eq!(taken.name(), LEASE);

        // A holder that goes away without releasing (dropped, as a dead replica's
        // connection) frees the lease too.
        drop(taken);
        take_eventually(&one).await;
    }
    database.drop_now().await;
}

#[tokio::test]
async fn of_two_replicas_one_writes_and_the_other_takes_over_when_it_stops() {
    let Some(database) = TestDatabase::create("writers").await else {
        return;
    };
    {
        let one = database.store().await;
        let two = database.store().await;
        one.create_tenant("shop", &Actor::admin()).await.unwrap();
        add_cluster(&one, "edge-1", "shop").await;
        let receivers = [
            RemoteWriteReceiver::start().await,
            RemoteWriteReceiver::start().await,
        ];
        let fleet = || {
            vec![std::sync::Arc::new(|| {
                vec![Series::new(
                    "kaas_cluster_info",
                    [("cluster", "shop.edge-1".to_owned())],
                    1.0,
                )]
            }) as kaas_observer::integrations::SeriesSource]
        };
        let mut writers = vec![
            Some(
                RemoteWriter::start(one.clone(), write_settings(&receivers[0].url()), fleet())
                    .unwrap(),
            ),
            Some(
                RemoteWriter::start(two.clone(), write_settings(&receivers[1].url()), fleet())
                    .unwrap(),
            ),
        ];
        let requests = |i: usize| receivers[i].received().len();
        let writing = eventually("one replica to write", || {
            (0..2).find(|i| requests(*i) >= 3)
        })
        .await;
        let idle = 1 - writing;
        assert_eq!(requests(idle), 0, "both replicas wrote");

        // The writing replica stops (its lease goes with it); the other takes over.
        writers[writing] = None;
        eventually("the other replica to take over", || {
            (requests(idle) >= 1).then_some(())
        })
        .await;
        drop(writers);
    }
    database.drop_now().await;
}

const LEASE: &str = "fleet-remote-write";

/// Tries to take [`LEASE`] until it is free (the server ends a dropped session
/// asynchronously).
async fn take_eventually(store: &Store) -> kaas_observer::store::leases::Lease {
    let until = Instant::now() + FOLLOW_DEADLINE;
    loop {
        if let Some(lease) = store.try_lease(LEASE).await.expect("the database answers") {
            return lease;
        }
        assert!(Instant::now() < until, "the lease stayed taken");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

// ---- probe series and per-cluster configuration states ----

/// A loopback HTTP server answering every request with 200; stops with the runtime.
async fn http_ok_server() -> u16 {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("a loopback port");
    let port = listener.local_addr().expect("its address").port();
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buffer = [0u8; 2048];
                let _ = socket.read(&mut buffer).await;
                let _ = socket
                    .write_all(
                        b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok",
                    )
                    .await;
            });
        }
    });
    port
}

fn validated_pipeline(name: &str, selector: &str) -> kaas_pipeline::ValidatedPipeline {
    let text = format!(
        r#"
apiVersion: telemetry.kaas-observer.io/v1alpha1
kind: MetricPipeline
metadata: {{name: {name}}}
spec:
  input: {{prometheus: {{enabled: true}}}}
  output: {{prometheusRemoteWrite: {{url: "https://backend.example/write"}}}}
  clusterSelector: {{matchLabels: {selector}}}
"#
    );
    kaas_pipeline::document::parse_pipelines(
        &text,
        &kaas_pipeline::ValidationContext::tenant_default(),
    )
    .into_iter()
    .next()
    .expect("a pipeline fixture")
    .outcome
    .expect("a valid pipeline fixture")
}

/// The hash of the configuration the observer wants `cluster` to run (no central
/// pipeline), as its agent would report it.
async fn desired_hash(store: &Store, cluster: &str) -> String {
    let cluster = store
        .get_cluster(cluster)
        .await
        .expect("the store answers")
        .expect("the cluster exists");
    let selected: Vec<kaas_pipeline::ValidatedPipeline> = store
        .list_pipelines(Some(&cluster.tenant))
        .await
        .expect("the store answers")
        .into_iter()
        .filter(|p| p.pipeline.spec().cluster_selector.matches(&cluster.labels))
        .map(|p| p.pipeline)
        .collect();
    kaas_observer::rendering::render_for_cluster(&cluster, &selected, None).hash_hex()
}

fn config_report(hash: &str, state: &str) -> ConfigReport {
    ConfigReport {
        config_hash: hash.to_owned(),
        state: AgentConfigState::parse(state).expect("a configuration state"),
        errors: Vec::new(),
        running_config_hash: hash.to_owned(),
        at_ms: now_ms(),
        without_trace_pipelines: false,
        without_template_instances: false,
    }
}

/// `(label, value)` of each result of a Prometheus query, for one label.
fn label_values(result: &[serde_json::Value], label: &str) -> BTreeSet<String> {
    result
        .iter()
        .map(|r| r["metric"][label].as_str().unwrap_or_default().to_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn probe_series_and_per_cluster_config_states_reach_prometheus() {
    let data = tempfile::tempdir().unwrap();
    let peer = tempfile::tempdir().unwrap();
    let prometheus = Prometheus::receiver(peer.path());
    let store = sqlite_store(data.path()).await;
    store.create_tenant("shop", &Actor::admin()).await.unwrap();
    for (name, env) in [
        ("edge-1", "prod"),
        ("edge-2", "prod"),
        ("edge-3", "prod"),
        ("dev-1", "dev"),
    ] {
        store
            .create_cluster(
                NewCluster {
                    name: name.into(),
                    tenant: "shop".into(),
                    labels: BTreeMap::from([("env".to_owned(), env.to_owned())]),
                    api_endpoint: None,
                },
                HOUR,
                &Actor::admin(),
            )
            .await
            .unwrap();
    }
    store
        .apply_pipeline(
            "shop",
            validated_pipeline("to-vendor", "{env: prod}"),
            &Actor::admin(),
        )
        .await
        .unwrap();
    // edge-1 runs the wanted configuration, edge-2 refused it, edge-3 reported only
    // about an older one; dev-1 is not selected.
    let edge_1 = desired_hash(&store, "shop.edge-1").await;
    store
        .report(ReportWrite::Config {
            cluster: String::from("shop.edge-1"),
            report: config_report(&edge_1, "APPLIED"),
        })
        .await
        .unwrap();
    let edge_2 = desired_hash(&store, "shop.edge-2").await;
    store
        .report(ReportWrite::Config {
            cluster: String::from("shop.edge-2"),
            report: config_report(&edge_2, "FAILED"),
        })
        .await
        .unwrap();
    store
        .report(ReportWrite::Config {
            cluster: String::from("shop.edge-3"),
            report: config_report("0ld", "APPLIED"),
        })
        .await
        .unwrap();

    let port = http_ok_server().await;
    let ok_url = format!("http://127.0.0.1:{port}/ok");
    let closed = {
        let socket = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        socket.local_addr().unwrap().port()
    };
    let prober = Prober::start(ProberSettings {
        interval: Duration::from_secs(1),
        timeout: Duration::from_millis(900),
        egress: EgressPolicy::new(vec!["127.0.0.0/8".parse().unwrap()], Vec::new()),
        ..ProberSettings::default()
    });
    let target = |name: &str, module: ProbeModule| ProbeTarget {
        name: name.into(),
        tenant: "shop".into(),
        // As the prober gets it from the store: the cluster's global id.
        cluster: Some("shop.edge-1".into()),
        origin: ProbeOrigin::Tenant,
        module,
    };
    prober.set_targets(vec![
        target(
            "web",
            ProbeModule::Http(HttpProbe {
                url: ok_url.clone(),
                method: HttpMethod::Get,
                expected_status: Vec::new(),
                tls: None,
            }),
        ),
        target(
            "closed",
            ProbeModule::Tcp(TcpProbe {
                address: format!("127.0.0.1:{closed}"),
            }),
        ),
    ]);
    let states = ConfigStates::start(
        store.clone(),
        None,
        ConfigStateSettings {
            refresh: HOUR,
            min_gap: Duration::from_millis(200),
        },
    );
    let writer = RemoteWriter::start(
        store.clone(),
        write_settings(&prometheus.write_url()),
        WriterSources {
            shared: vec![states.source()],
            per_replica: vec![probe_source(prober.clone())],
        },
    )
    .unwrap();

    // The probe series, with the labels of /metrics and no job or instance.
    let up = tokio::task::block_in_place(|| {
        prometheus.wait_for(
            &format!(r#"probe_success{{target="{ok_url}"}} == 1"#),
            FOLLOW_DEADLINE,
        )
    });
    let names: BTreeSet<&str> = up[0]["metric"]
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(
        names,
        BTreeSet::from(["__name__", "cluster", "module", "target", "tenant"])
    );
    tokio::task::block_in_place(|| {
        prometheus.wait_for(
            r#"probe_success{module="tcp",cluster="shop.edge-1"} == 0"#,
            FOLLOW_DEADLINE,
        );
        prometheus.wait_for(
            &format!(r#"probe_http_status_code{{target="{ok_url}"}} == 200"#),
            FOLLOW_DEADLINE,
        );
    });

    // The states, one per selected cluster.
    let state_of = |cluster: &str| {
        let result = tokio::task::block_in_place(|| {
            prometheus.wait_for(
                &format!(r#"kaas_pipeline_cluster_config_state{{cluster="{cluster}",pipeline="to-vendor",tenant="shop"}} == 1"#),
                FOLLOW_DEADLINE,
            )
        });
        label_values(&result, "state")
    };
    assert_eq!(
        state_of("shop.edge-1"),
        BTreeSet::from(["applied".to_owned()])
    );
    assert_eq!(
        state_of("shop.edge-2"),
        BTreeSet::from(["failed".to_owned()])
    );
    assert_eq!(
        state_of("shop.edge-3"),
        BTreeSet::from(["pending".to_owned()])
    );
    let all =
        tokio::task::block_in_place(|| prometheus.query("kaas_pipeline_cluster_config_state"));
    assert_eq!(
        label_values(&all, "cluster"),
        BTreeSet::from([
            "shop.edge-1".to_owned(),
            "shop.edge-2".to_owned(),
            "shop.edge-3".to_owned()
        ]),
        "dev-1 is not selected"
    );

    // edge-3's agent applies the wanted configuration: the state follows, and the old
    // series is marked stale at once.
    let edge_3 = desired_hash(&store, "shop.edge-3").await;
    store
        .report(ReportWrite::Config {
            cluster: String::from("shop.edge-3"),
            report: config_report(&edge_3, "APPLIED"),
        })
        .await
        .unwrap();
    let until = Instant::now() + FOLLOW_DEADLINE;
    loop {
        let result = tokio::task::block_in_place(|| {
            prometheus.query(r#"kaas_pipeline_cluster_config_state{cluster="shop.edge-3"}"#)
        });
        if label_values(&result, "state") == BTreeSet::from(["applied".to_owned()]) {
            break;
        }
        assert!(Instant::now() < until, "edge-3 stays {result:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // /metrics serves the same states.
    let mut registry = Registry::default();
    states.register(&mut registry);
    let served = exposition(&registry);
    assert_eq!(
        served.get(r#"kaas_pipeline_cluster_config_state{tenant="shop",pipeline="to-vendor",cluster="shop.edge-2",state="failed"}"#),
        Some(&1.0),
        "{served:?}"
    );
    assert_eq!(served.len(), 3, "{served:?}");

    // A removed probe target's series go stale in the receiver, not after 5 minutes.
    prober.set_targets(Vec::new());
    let until = Instant::now() + FOLLOW_DEADLINE;
    while !tokio::task::block_in_place(|| prometheus.query("probe_success")).is_empty() {
        assert!(Instant::now() < until, "the probe series stay");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    drop(writer);
    prober.stop();
}

#[tokio::test]
async fn every_replica_writes_its_own_series_and_only_the_lease_holder_the_fleet() {
    let Some(database) = TestDatabase::create("own_series").await else {
        return;
    };
    {
        let stores = [database.store().await, database.store().await];
        let receivers = [
            RemoteWriteReceiver::start().await,
            RemoteWriteReceiver::start().await,
        ];
        let source = |name: &'static str, replica: usize| {
            std::sync::Arc::new(move || {
                vec![Series::new(name, [("replica", replica.to_string())], 1.0)]
            }) as kaas_observer::integrations::SeriesSource
        };
        let writers: Vec<RemoteWriter> = (0..2)
            .map(|i| {
                RemoteWriter::start(
                    stores[i].clone(),
                    write_settings(&receivers[i].url()),
                    WriterSources {
                        shared: vec![source("kaas_cluster_info", i)],
                        per_replica: vec![source("probe_success", i)],
                    },
                )
                .unwrap()
            })
            .collect();
        let names = |i: usize| -> BTreeSet<String> {
            receivers[i]
                .accepted()
                .keys()
                .filter_map(|labels| {
                    labels
                        .iter()
                        .find(|(n, _)| n == "__name__")
                        .map(|(_, v)| v.clone())
                })
                .collect()
        };
        let leader = eventually("one replica to write the fleet series", || {
            (0..2).find(|i| names(*i).contains("kaas_cluster_info"))
        })
        .await;
        let other = 1 - leader;
        eventually("the other replica to write its own series", || {
            names(other).contains("probe_success").then_some(())
        })
        .await;
        eventually("three rounds of the other replica", || {
            (receivers[other].received().len() >= 3).then_some(())
        })
        .await;
        assert_eq!(
            names(other),
            BTreeSet::from(["probe_success".to_owned()]),
            "only the lease holder writes the fleet series"
        );
        drop(writers);
    }
    database.drop_now().await;
}
