//! A provider's static target scraped with TLS material of its own, as the central
//! pipeline scrapes etcd (issue 15): nginx on loopback requires a client certificate
//! from a test CA; the target group's `tls` names the certificate, key and CA in a
//! Secret (`secretKeyRef`), and only that group presents them. A group of the same
//! pipeline without them is refused by nginx, and the agent's health report names its
//! job with the failure's reason, which the observer shows as an unreachable
//! control-plane component.
//!
//! Needs `nginx` (`scripts/test.sh` installs it).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use kaas_cluster_agent::agent::Agent;
use kaas_cluster_agent::control::health;
use kaas_cluster_agent::labels::Labels;
use kaas_cluster_agent::outbound::auth::SecretStore;
use kaas_cluster_agent::pipeline::PipelineId;
use kaas_cluster_agent::pipeline::runtime::{AgentContext, ClusterView};
use kaas_pipeline::agent_config::AgentConfig;
use kaas_pipeline::secret::SecretString;
use kaas_pipeline::{ProviderPolicy, SecretNamespaces, ValidationContext};
use kaas_test_support::remote_write_receiver::RemoteWriteReceiver;
use kaas_test_support::tls::{MtlsNginx, TestPki};

const DEADLINE: Duration = Duration::from_secs(20);

/// Secrets from a map, keyed by (namespace, name, key).
#[derive(Debug, Default)]
struct MapSecrets(BTreeMap<(String, String, String), String>);

impl SecretStore for MapSecrets {
    fn get(&self, namespace: &str, name: &str, key: &str) -> Option<SecretString> {
        self.0
            .get(&(namespace.to_owned(), name.to_owned(), key.to_owned()))
            .map(|v| SecretString::new(v.clone()))
    }
}

/// An agent in `dir` reading Secrets from `secrets`, outside Kubernetes otherwise.
fn agent(dir: &std::path::Path, secrets: MapSecrets) -> Agent {
    Agent::new(AgentContext {
        data_dir: dir.join("data"),
        external_labels: Arc::new(Labels::default()),
        secrets: Arc::new(secrets),
        files: Arc::default(),
        cluster: ClusterView::default(),
        service_account_dir: dir.join("serviceaccount"),
        kubelet_insecure_skip_verify: false,
        bound_urls: Default::default(),
    })
}

/// `config` as an agent taking its configuration from the observer reads it, with
/// `kube-system` among its Secret namespaces.
fn from_observer(config: &str) -> kaas_pipeline::agent_config::ValidatedAgentConfig {
    let mut policy = ProviderPolicy::unrestricted();
    policy.secret_namespaces = SecretNamespaces::only(["kube-system"]);
    AgentConfig::parse(config, &ValidationContext::observer(policy)).expect("valid config")
}

fn secret_ref(key: &str) -> String {
    format!(
        "{{valueFrom: {{secretKeyRef: {{namespace: kube-system, name: etcd-client, key: {key}}}}}}}"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_group_with_the_client_certificate_scrapes_etcd_and_the_other_is_reported_down() {
    let dir = tempfile::tempdir().unwrap();
    let pki = TestPki::generate(&["127.0.0.1", "localhost"]);
    let etcd = MtlsNginx::start(
        dir.path(),
        &pki,
        "$request_uri $status $ssl_client_verify",
        "default_type \"text/plain; version=0.0.4\"; return 200 \"etcd_server_has_leader 1\\n\";",
    );
    let receiver = RemoteWriteReceiver::start().await;
    let secrets = MapSecrets(
        [
            ("tls.crt", pki.client_cert.clone()),
            ("tls.key", pki.client_key.clone()),
            ("ca.crt", pki.ca.clone()),
        ]
        .into_iter()
        .map(|(key, value)| {
            (
                (
                    "kube-system".to_owned(),
                    "etcd-client".to_owned(),
                    key.to_owned(),
                ),
                value,
            )
        })
        .collect(),
    );
    let mut agent = agent(dir.path(), secrets);
    let address = format!("127.0.0.1:{}", etcd.port);
    let config = format!(
        "apiVersion: telemetry.kaas-observer.io/v1alpha1\nkind: AgentConfig\npipelines:\n  - metadata: {{name: kaas-central}}\n    spec:\n      input:\n        scrapeInterval: 1s\n        scrapeTimeout: 1s\n        static:\n          targets:\n            - addresses: ['{address}']\n              scheme: https\n              labels: {{job: etcd}}\n              tls: {{ca: {ca}, cert: {cert}, key: {key}}}\n            - addresses: ['{address}']\n              scheme: https\n              metricsPath: /no-certificate\n              labels: {{job: etcd-without-certificate}}\n              tls: {{ca: {ca}}}\n      output: {{prometheusRemoteWrite: {{url: \"{url}\"}}}}\n",
        ca = secret_ref("ca.crt"),
        cert = secret_ref("tls.crt"),
        key = secret_ref("tls.key"),
        url = receiver.url(),
    );
    let report = agent.apply(from_observer(&config)).await;
    assert_eq!(report.started, [PipelineId::metric("kaas-central")]);

    let until = Instant::now() + DEADLINE;
    let jobs_down = loop {
        let scraped = receiver.accepted().into_iter().any(|(labels, _)| {
            labels
                .iter()
                .any(|(n, v)| n == "__name__" && v == "etcd_server_has_leader")
                && labels.iter().any(|(n, v)| n == "job" && v == "etcd")
        });
        let snapshot = health::snapshot(
            &*agent.pipelines.read().await,
            &*agent.log_pipelines.read().await,
            &*agent.trace_pipelines.read().await,
            SystemTime::now(),
        );
        let jobs_down = snapshot.pipelines[0].targets_down_by_job.clone();
        if scraped && !jobs_down.is_empty() {
            break jobs_down;
        }
        assert!(
            Instant::now() < until,
            "etcd was not scraped with its client certificate (scraped: {scraped}); nginx saw:\n{}",
            etcd.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    // Only the group without the certificate is down, with nginx's refusal as reason.
    assert_eq!(jobs_down.len(), 1, "{jobs_down:?}");
    assert_eq!(jobs_down[0].job, "etcd-without-certificate");
    assert_eq!(jobs_down[0].targets_down, 1);
    assert!(jobs_down[0].reason.contains("400"), "{jobs_down:?}");
    let log = etcd.log();
    assert!(log.contains("/metrics 200 SUCCESS"), "{log}");
    assert!(log.contains("/no-certificate 400 NONE"), "{log}");
    assert!(!log.contains("/metrics 400"), "{log}");
}

/// A Secret the agent cannot read leaves the group unscraped with the reason, never
/// scraped without the certificate.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_client_certificate_secret_leaves_the_group_unscraped_with_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    let pki = TestPki::generate(&["127.0.0.1"]);
    let etcd = MtlsNginx::start(dir.path(), &pki, "$request_uri $status", "return 204;");
    let mut agent = agent(dir.path(), MapSecrets::default());
    let config = format!(
        "apiVersion: telemetry.kaas-observer.io/v1alpha1\nkind: AgentConfig\npipelines:\n  - metadata: {{name: kaas-central}}\n    spec:\n      input:\n        scrapeInterval: 1s\n        static:\n          targets:\n            - addresses: ['127.0.0.1:{port}']\n              scheme: https\n              labels: {{job: etcd}}\n              tls: {{cert: {cert}, key: {key}}}\n      output: {{prometheusRemoteWrite: {{url: 'http://127.0.0.1:1/api/v1/write'}}}}\n",
        port = etcd.port,
        cert = secret_ref("tls.crt"),
        key = secret_ref("tls.key"),
    );
    let report = agent.apply(from_observer(&config)).await;
    assert_eq!(report.started, [PipelineId::metric("kaas-central")]);
    let pipelines = agent.pipelines.read().await;
    let central = &pipelines["kaas-central"];
    let errors = central.target_errors.join("; ");
    assert!(
        errors.contains("TLS settings") && errors.contains("Secret kube-system/etcd-client"),
        "{errors}"
    );
    assert!(central.target_states().is_empty());
    drop(pipelines);
}
