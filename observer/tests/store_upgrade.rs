//! Upgrade safety of the observer's database: SQLite and PostgreSQL databases written
//! by an earlier build open with this one, migrate, and read back every row as the
//! earlier build read it.
//!
//! `tests/fixtures/upgrade/` holds, per backend, a database made by
//! [`write_upgrade_fixtures`] at commit 303d3e1 (before the store was split by
//! aggregate): `sqlite/observer.db` and `postgres/dump.sql` (`pg_dump --inserts
//! --no-owner --no-privileges`), each with `expected.txt` (every row as that build read
//! it, one line each) and `tokens.json` (the plaintext tokens it handed out, which the
//! database holds only as hashes). Regenerating them with a later build proves
//! nothing: keep them unless the on-disk format deliberately changes.
//!
//! PostgreSQL runs on `KAAS_TEST_POSTGRES_URL` (default
//! `postgres://postgres@127.0.0.1:5432/test`, trust auth); `KAAS_SKIP_POSTGRES=1` skips
//! that half, as in the store tests.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use kaas_observer::probes::{HttpMethod, HttpProbe, ProbeModule, ProbeOrigin, ProbeTarget};
use kaas_observer::secrets::SecretBox;
use kaas_observer::store::certificates::{NewAgentCertificate, csr_sha256};
use kaas_observer::store::{
    Actor, ClusterState, ConfigReport, NewCluster, ReportWrite, Store, now_ms,
};
use kaas_pipeline::status::{AgentConfigState, Condition, ConditionStatus, MetricPipelineStatus};
use sea_orm::{ConnectOptions, ConnectionTrait, Database, DatabaseConnection};
use serde::{Deserialize, Serialize};

/// The sealing key of the fixtures' pipeline secrets.
const FIXTURE_KEY: [u8; 32] = [0x5a; 32];
/// The PostgreSQL server used unless `KAAS_TEST_POSTGRES_URL` says otherwise.
const DEFAULT_POSTGRES_URL: &str = "postgres://postgres@127.0.0.1:5432/test";
/// Long enough that the fixtures' join tokens and certificates never expire.
const TEN_YEARS: Duration = Duration::from_secs(10 * 365 * 24 * 3600);
/// The inline password of the fixture pipeline, sealed in the database.
const PIPELINE_PASSWORD: &str = "fixture-password";

/// What the fixture's database cannot tell: the plaintexts it stores only as hashes.
#[derive(Debug, Serialize, Deserialize)]
struct Tokens {
    /// When the fixture was written, Unix milliseconds: join tokens are checked then.
    written_at_ms: i64,
    /// API token plaintexts (live, revoked, administrator).
    api: Vec<String>,
    /// Join token plaintexts, redeemed or not.
    join: Vec<String>,
    /// (cluster, serial) of each recorded certificate.
    certificates: Vec<(String, String)>,
}

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/upgrade")
}

fn secrets() -> SecretBox {
    SecretBox::from_key_bytes(&FIXTURE_KEY).expect("the fixture key")
}

fn postgres_admin_url() -> String {
    std::env::var("KAAS_TEST_POSTGRES_URL").unwrap_or_else(|_| DEFAULT_POSTGRES_URL.to_owned())
}

async fn admin_connection(url: &str) -> DatabaseConnection {
    let mut options = ConnectOptions::new(url);
    options
        .max_connections(1)
        .connect_timeout(Duration::from_secs(5))
        .sqlx_logging(false);
    Database::connect(options)
        .await
        .unwrap_or_else(|e| panic!("PostgreSQL is not reachable at {url}: {e}"))
}

/// Every row the store holds, read through its public API, one line each.
async fn snapshot(store: &Store, tokens: &Tokens) -> Vec<String> {
    let mut lines = Vec::new();
    let tenants = store.list_tenants().await.expect("the store reads");
    for tenant in &tenants {
        lines.push(format!("tenant {tenant:?}"));
    }
    for token in store.list_api_tokens(None).await.expect("the store reads") {
        lines.push(format!("api token {token:?}"));
    }
    for plaintext in &tokens.api {
        let principal = store
            .authenticate(plaintext)
            .await
            .expect("the store reads");
        lines.push(format!("authenticated {principal:?}"));
    }
    for (cluster, report) in store
        .list_clusters_with_reports(None, None, None)
        .await
        .expect("the store reads")
    {
        // Incarnations came later: a migrated cluster's first incarnation is named after
        // its global id, and the line is compared without it.
        assert_eq!(cluster.incarnation, cluster.id, "the migrated incarnation");
        lines.push(without_incarnation(format!("cluster {cluster:?}")));
        // The build before kept a report's state as its text and printed it quoted;
        // the typed state prints its variant: compare in the old spelling.
        let mut line = format!("report {report:?}");
        for state in [
            AgentConfigState::Applying,
            AgentConfigState::Applied,
            AgentConfigState::Failed,
        ] {
            line = line.replace(
                &format!("state: {state:?},"),
                &format!("state: {:?},", state.as_str()),
            );
        }
        lines.push(line);
    }
    for plaintext in &tokens.join {
        let check = store
            .check_join_token(plaintext, &csr_sha256("fixture"), tokens.written_at_ms)
            .await;
        lines.push(without_incarnation(format!("join token {check:?}")));
    }
    for (cluster, serial) in &tokens.certificates {
        let standing = store
            .certificate_standing(cluster, serial)
            .await
            .expect("the store reads");
        lines.push(format!("certificate {cluster} {serial} {standing:?}"));
    }
    for stored in store.list_pipelines(None).await.expect("the store reads") {
        let masked = serde_json::to_string(&stored.masked_resource()).expect("the store reads");
        lines.push(format!(
            "pipeline {} {} generation {} created {} updated {} status {:?} {masked}",
            stored.tenant,
            stored.name(),
            stored.generation,
            stored.created_at_ms,
            stored.updated_at_ms,
            stored.status,
        ));
        let password = stored
            .pipeline
            .spec()
            .output
            .prometheus_remote_write
            .as_ref()
            .and_then(|output| output.authentication.as_ref())
            .and_then(|auth| auth.basic.as_ref())
            .and_then(|basic| basic.password.value.as_ref())
            .map(|value| value.expose() == PIPELINE_PASSWORD);
        lines.push(format!("pipeline password opens: {password:?}"));
    }
    for endpoint in store
        .list_probe_endpoints(None)
        .await
        .expect("the store reads")
    {
        lines.push(format!("probe endpoint {endpoint:?}"));
    }
    for tenant in &tenants {
        let quotas = store
            .tenant_quotas(&tenant.name)
            .await
            .expect("the store reads");
        lines.push(format!("quotas {} {quotas:?}", tenant.name));
        let budgets = store
            .cluster_buffer_budgets(&tenant.name)
            .await
            .expect("the store reads");
        lines.push(format!("budgets {} {budgets:?}", tenant.name));
    }
    for mapping in store
        .list_cluster_api_namespaces()
        .await
        .expect("the store reads")
    {
        lines.push(format!("namespace {mapping:?}"));
    }
    for entry in store.audit_entries(10_000).await.expect("the store reads") {
        lines.push(format!("audit {entry:?}"));
    }
    lines.push(format!(
        "replicas {:?}",
        store.live_replicas(0).await.expect("the store reads")
    ));
    lines
}

/// `line` without the `, incarnation: "…"` field of the clusters it prints, which the
/// build before did not have.
fn without_incarnation(line: String) -> String {
    const FIELD: &str = ", incarnation: \"";
    let mut rest = line.as_str();
    let mut out = String::with_capacity(line.len());
    while let Some(at) = rest.find(FIELD) {
        out.push_str(&rest[..at]);
        let value = &rest[at + FIELD.len()..];
        rest = value.find('"').map_or("", |end| &value[end + 1..]);
    }
    out.push_str(rest);
    out
}

fn read_tokens(dir: &Path) -> Tokens {
    serde_json::from_slice(
        &std::fs::read(dir.join("tokens.json")).expect("the fixture tokens.json"),
    )
    .expect("the fixture tokens.json")
}

fn read_expected(dir: &Path) -> Vec<String> {
    std::fs::read_to_string(dir.join("expected.txt"))
        .expect("the fixture expected.txt")
        .lines()
        .map(str::to_owned)
        .collect()
}

/// A copy of the fixture SQLite database opens, migrates and reads as before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_database_of_the_build_before_migrates_and_reads() {
    let fixture = fixtures().join("sqlite");
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("observer.db");
    std::fs::copy(fixture.join("observer.db"), &path).unwrap();
    let store = Store::open_sqlite(&path, secrets()).await.unwrap();
    let tokens = read_tokens(&fixture);
    let lines = snapshot(&store, &tokens).await;
    assert_eq!(lines, read_expected(&fixture));
    // A second open finds nothing left to migrate and reads the same.
    drop(store);
    let store = Store::open_sqlite(&path, secrets()).await.unwrap();
    assert_eq!(snapshot(&store, &tokens).await, read_expected(&fixture));
}

/// The fixture dump restored into a fresh PostgreSQL database migrates and reads as
/// before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_database_of_the_build_before_migrates_and_reads() {
    if std::env::var("KAAS_SKIP_POSTGRES").as_deref() == Ok("1") {
        eprintln!("KAAS_SKIP_POSTGRES=1: skipping the PostgreSQL upgrade test");
        return;
    }
    let fixture = fixtures().join("postgres");
    let admin_url = postgres_admin_url();
    let name = format!("kaas_upgrade_{}", std::process::id());
    let admin = admin_connection(&admin_url).await;
    admin
        .execute_unprepared(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
        .await
        .unwrap();
    admin
        .execute_unprepared(&format!("CREATE DATABASE {name}"))
        .await
        .unwrap();
    let (base, _) = admin_url.rsplit_once('/').unwrap();
    let url = format!("{base}/{name}");
    let dump = std::fs::read_to_string(fixture.join("dump.sql")).unwrap();
    // psql meta-commands (`\restrict`) are not SQL.
    let sql: String = dump
        .lines()
        .filter(|line| !line.starts_with('\\'))
        .map(|line| format!("{line}\n"))
        .collect();
    admin_connection(&url)
        .await
        .execute_unprepared(&sql)
        .await
        .unwrap();
    let store = Store::connect(&url, secrets()).await.unwrap();
    let lines = snapshot(&store, &read_tokens(&fixture)).await;
    drop(store);
    admin
        .execute_unprepared(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
        .await
        .unwrap();
    assert_eq!(lines, read_expected(&fixture));
}

/// Fills `store` with one of everything the store keeps: tenants, API tokens (live,
/// revoked, administrator, bootstrap), clusters in every state with reports and
/// certificates, join tokens, pipelines with sealed secrets and status, probe
/// endpoints, quotas, budgets, a namespace mapping, a replica heartbeat, and the audit
/// rows all of these write.
async fn populate(store: &Store) -> Tokens {
    let admin = Actor::admin();
    let written_at_ms = now_ms();
    let mut tokens = Tokens {
        written_at_ms,
        api: Vec::new(),
        join: Vec::new(),
        certificates: Vec::new(),
    };
    store
        .ensure_admin_token("kot_fixture-bootstrap")
        .await
        .expect("the store writes the fixture");
    tokens.api.push("kot_fixture-bootstrap".to_owned());
    for tenant in ["shop", "bank"] {
        store
            .create_tenant(tenant, &admin)
            .await
            .expect("the store writes the fixture");
    }
    let (_, plaintext) = store
        .create_api_token(Some("shop"), "ci", &admin)
        .await
        .expect("the store writes the fixture");
    tokens.api.push(plaintext);
    let (_, plaintext) = store
        .create_api_token(None, "ops", &admin)
        .await
        .expect("the store writes the fixture");
    tokens.api.push(plaintext);
    let (revoked, plaintext) = store
        .create_api_token(Some("bank"), "old", &admin)
        .await
        .expect("the store writes the fixture");
    store
        .revoke_api_token(&revoked.id, &admin)
        .await
        .expect("the store writes the fixture");
    tokens.api.push(plaintext);

    let cluster = |name: &str, tenant: &str, env: &str| NewCluster {
        name: name.to_owned(),
        tenant: tenant.to_owned(),
        labels: BTreeMap::from([("env".to_owned(), env.to_owned())]),
        api_endpoint: Some(format!("https://{name}.example:6443")),
    };
    // shop.edge-1: joined, connected, reporting.
    let (_, join) = store
        .create_cluster(cluster("edge-1", "shop", "prod"), TEN_YEARS, &admin)
        .await
        .expect("the store writes the fixture");
    let serial = "0a1b2c";
    let certificate = NewAgentCertificate {
        serial_hex: serial,
        pem: "-----BEGIN CERTIFICATE-----\nfixture\n-----END CERTIFICATE-----\n",
        instance: "default",
        not_after_ms: written_at_ms + TEN_YEARS.as_millis() as i64,
    };
    store
        .redeem_join_token(&join, &csr_sha256(serial), certificate, written_at_ms)
        .await
        .expect("the store writes the fixture")
        .expect("the store writes the fixture");
    tokens.join.push(join);
    tokens
        .certificates
        .push(("shop.edge-1".to_owned(), serial.to_owned()));
    store
        .report(ReportWrite::Seen {
            cluster: "shop.edge-1".to_owned(),
            instance_id: "agent-1".to_owned(),
            version: "0.9.0".to_owned(),
            at_ms: written_at_ms,
            connection: Some("r1/1".to_owned()),
        })
        .await
        .expect("the store writes the fixture");
    store
        .report(ReportWrite::Config {
            cluster: String::from("shop.edge-1"),
            report: ConfigReport {
                config_hash: "c0ffee".to_owned(),
                state: AgentConfigState::Applied,
                errors: Vec::new(),
                running_config_hash: "c0ffee".to_owned(),
                at_ms: written_at_ms,
                without_trace_pipelines: false,
                without_template_instances: false,
            },
        })
        .await
        .expect("the store writes the fixture");
    store
        .report(ReportWrite::Health {
            cluster: String::from("shop.edge-1"),
            health: serde_json::json!({ "pipelines": { "shop-rw": "ok" } }),
            at_ms: written_at_ms,
        })
        .await
        .expect("the store writes the fixture");
    // shop.edge-2: registered, never joined, a second join token.
    let (_, join) = store
        .create_cluster(cluster("edge-2", "shop", "dev"), TEN_YEARS, &admin)
        .await
        .expect("the store writes the fixture");
    tokens.join.push(join);
    let join = store
        .mint_join_token("shop.edge-2", TEN_YEARS, &admin)
        .await
        .expect("the store writes the fixture");
    tokens.join.push(join);
    // Clusters in the other states.
    for (name, state) in [
        ("quiet", ClusterState::Silent),
        ("leaving", ClusterState::Deleting),
    ] {
        let (_, join) = store
            .create_cluster(cluster(name, "bank", "prod"), TEN_YEARS, &admin)
            .await
            .expect("the store writes the fixture");
        tokens.join.push(join);
        store
            .set_cluster_state(&format!("bank.{name}"), state, written_at_ms, &admin)
            .await
            .expect("the store writes the fixture");
    }
    let (_, join) = store
        .create_cluster(cluster("gone", "bank", "prod"), TEN_YEARS, &admin)
        .await
        .expect("the store writes the fixture");
    tokens.join.push(join);
    store
        .delete_cluster("bank.gone", &admin)
        .await
        .expect("the store writes the fixture");

    let pipeline: kaas_pipeline::MetricPipeline = serde_yaml::from_str(&format!(
        r#"
apiVersion: telemetry.kaas-observer.io/v1alpha1
kind: MetricPipeline
metadata:
  name: shop-rw
  labels: {{team: web}}
spec:
  clusterSelector:
    matchLabels:
      env: prod
  input:
    runtime:
      enabled: true
  output:
    prometheusRemoteWrite:
      url: https://thanos.example/api/v1/receive
      headers:
        - name: X-Scope-OrgID
          value: "shop"
      authentication:
        basic:
          user: {{value: agent}}
          password: {{value: "{PIPELINE_PASSWORD}"}}
"#
    ))
    .expect("the store writes the fixture");
    let context = kaas_pipeline::ValidationContext::tenant_default();
    store
        .apply_pipeline(
            "shop",
            kaas_pipeline::validate(&pipeline, &context).expect("the store writes the fixture"),
            &admin,
        )
        .await
        .expect("the store writes the fixture");
    let otlp: kaas_pipeline::MetricPipeline = serde_yaml::from_str(
        r#"
apiVersion: telemetry.kaas-observer.io/v1alpha1
kind: MetricPipeline
metadata:
  name: bank-otlp
spec:
  input:
    runtime:
      enabled: true
  output:
    otlp:
      endpoint: http://collector.example:4317
"#,
    )
    .expect("the store writes the fixture");
    store
        .apply_pipeline(
            "bank",
            kaas_pipeline::validate(&otlp, &context).expect("the store writes the fixture"),
            &admin,
        )
        .await
        .expect("the store writes the fixture");
    store
        .set_pipeline_status(
            "shop",
            "shop-rw",
            MetricPipelineStatus {
                observed_generation: Some(1),
                conditions: vec![Condition {
                    type_: "ConfigurationApplied".to_owned(),
                    status: ConditionStatus::True,
                    reason: "AppliedOnAllClusters".to_owned(),
                    message: "1 of 1 clusters".to_owned(),
                    last_transition_time: "2026-12-07T00:00:00Z".to_owned(),
                    observed_generation: Some(1),
                }],
                unsupported_mode: false,
            },
        )
        .await
        .expect("the store writes the fixture");

    for (name, cluster) in [("web", None), ("api", Some("edge-1"))] {
        let target = ProbeTarget {
            name: name.to_owned(),
            tenant: "shop".to_owned(),
            cluster: cluster.map(str::to_owned),
            origin: ProbeOrigin::Tenant,
            module: ProbeModule::Http(HttpProbe {
                url: format!("https://{name}.shop.example/healthz"),
                method: HttpMethod::Get,
                expected_status: vec![200],
                tls: None,
            }),
        };
        store
            .apply_probe_endpoint(
                target.validate().expect("the store writes the fixture"),
                &admin,
            )
            .await
            .expect("the store writes the fixture");
    }
    store
        .set_tenant_quotas(
            "shop",
            &BTreeMap::from([("clusters".to_owned(), 20)]),
            &admin,
        )
        .await
        .expect("the store writes the fixture");
    store
        .set_cluster_buffer_budget("shop", "shop.edge-1", Some(64 << 20), &admin)
        .await
        .expect("the store writes the fixture");
    store
        .map_cluster_api_namespace("capi-shop", "shop", &admin)
        .await
        .expect("the store writes the fixture");
    store
        .heartbeat_replica("observer-fixture", written_at_ms)
        .await
        .expect("the store writes the fixture");
    tokens
}

fn write_expected(dir: &Path, lines: &[String], tokens: &Tokens) {
    std::fs::write(dir.join("expected.txt"), lines.join("\n") + "\n")
        .expect("the fixture files are written");
    std::fs::write(
        dir.join("tokens.json"),
        serde_json::to_string_pretty(tokens).expect("the fixture files are written") + "\n",
    )
    .expect("the fixture files are written");
}

/// Writes the fixtures (run by hand, at the build whose format they record):
/// `cargo nextest run -p kaas-observer --run-ignored only -E 'test(write_upgrade_fixtures)'`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "writes the upgrade fixtures; run by hand at the build they record"]
async fn write_upgrade_fixtures() {
    let sqlite_dir = fixtures().join("sqlite");
    std::fs::create_dir_all(&sqlite_dir).unwrap();
    let path = sqlite_dir.join("observer.db");
    for file in ["observer.db", "observer.db-wal", "observer.db-shm"] {
        let _ = std::fs::remove_file(sqlite_dir.join(file));
    }
    let store = Store::open_sqlite(&path, secrets()).await.unwrap();
    let tokens = populate(&store).await;
    let lines = snapshot(&store, &tokens).await;
    write_expected(&sqlite_dir, &lines, &tokens);
    drop(store);

    let postgres_dir = fixtures().join("postgres");
    std::fs::create_dir_all(&postgres_dir).unwrap();
    let admin_url = postgres_admin_url();
    let name = "kaas_upgrade_fixture";
    let admin = admin_connection(&admin_url).await;
    admin
        .execute_unprepared(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
        .await
        .unwrap();
    admin
        .execute_unprepared(&format!("CREATE DATABASE {name}"))
        .await
        .unwrap();
    let (base, _) = admin_url.rsplit_once('/').unwrap();
    let url = format!("{base}/{name}");
    let store = Store::connect(&url, secrets()).await.unwrap();
    let tokens = populate(&store).await;
    let lines = snapshot(&store, &tokens).await;
    write_expected(&postgres_dir, &lines, &tokens);
    drop(store);
    let dump = std::process::Command::new("pg_dump")
        .args([
            "--inserts",
            "--no-owner",
            "--no-privileges",
            "--dbname",
            &url,
        ])
        .output()
        .unwrap();
    assert!(
        dump.status.success(),
        "{}",
        String::from_utf8_lossy(&dump.stderr)
    );
    std::fs::write(postgres_dir.join("dump.sql"), dump.stdout).unwrap();
    admin
        .execute_unprepared(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
        .await
        .unwrap();
}
