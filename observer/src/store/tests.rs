//! Store tests, run against SQLite and PostgreSQL.
//!
//! Each scenario is an `async fn(&TestDb)` written once; [`store_tests!`] turns it into
//! `store::tests::sqlite::<scenario>` (a temporary file) and
//! `store::tests::postgres::<scenario>` (a fresh database `kaas_store_<random>` on the
//! server at `KAAS_TEST_POSTGRES_URL`, default `postgres://postgres@127.0.0.1:5432/test`,
//! dropped afterwards even if the test fails). An unreachable PostgreSQL fails the
//! PostgreSQL tests, unless `KAAS_SKIP_POSTGRES=1`.

use std::collections::BTreeMap;
use std::time::Duration;

use kaas_pipeline::status::{AgentConfigState, Condition, ConditionStatus, MetricPipelineStatus};
use kaas_pipeline::{MetricPipeline, ValidatedPipeline};
use sea_orm::{ConnectOptions, ConnectionTrait, Database, DbBackend, EntityTrait, Statement};
use tokio::sync::broadcast;

use super::certificates::{CertificateStanding, NewAgentCertificate, csr_sha256};
use super::entities::{
    api_tokens, audit_log, cluster_reports, clusters, join_tokens, pipelines, tenants,
};
use kaas_pipeline::secret::SecretString;

use super::feed::Notification;
use super::*;
use crate::identity::DEFAULT_INSTANCE;
use crate::secrets::SecretBox;

/// The PostgreSQL server tests use unless `KAAS_TEST_POSTGRES_URL` says otherwise.
const DEFAULT_POSTGRES_URL: &str = "postgres://postgres@127.0.0.1:5432/test";
/// How long a change may take to reach another replica (the issue's HA requirement).
const CROSS_REPLICA_DEADLINE: Duration = Duration::from_secs(2);
const HOUR: Duration = Duration::from_secs(3600);

/// Where a test's database lives.
struct TestDb {
    url: String,
    secrets: SecretBox,
    backend: DbBackend,
    _sqlite_dir: Option<tempfile::TempDir>,
    _postgres: Option<PostgresDatabase>,
}

impl TestDb {
    async fn sqlite() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("observer.db");
        Self {
            url: format!("sqlite://{}", path.display()),
            secrets: SecretBox::generate().unwrap(),
            backend: DbBackend::Sqlite,
            _sqlite_dir: Some(dir),
            _postgres: None,
        }
    }

    /// `None` when `KAAS_SKIP_POSTGRES=1`; panics with the reason when the server
    /// cannot be reached.
    async fn postgres() -> Option<Self> {
        if std::env::var("KAAS_SKIP_POSTGRES").as_deref() == Ok("1") {
            eprintln!("KAAS_SKIP_POSTGRES=1: skipping a PostgreSQL store test");
            return None;
        }
        let admin_url = std::env::var("KAAS_TEST_POSTGRES_URL")
            .unwrap_or_else(|_| DEFAULT_POSTGRES_URL.to_owned());
        let name = format!("kaas_store_{}", random_hex(8).unwrap());
        let admin = admin_connection(&admin_url).await;
        admin
            .execute_unprepared(&format!("CREATE DATABASE {name}"))
            .await
            .unwrap_or_else(|e| panic!("cannot create the test database {name}: {e}"));
        let (base, _) = admin_url.rsplit_once('/').unwrap();
        Some(Self {
            url: format!("{base}/{name}"),
            secrets: SecretBox::generate().unwrap(),
            backend: DbBackend::Postgres,
            _sqlite_dir: None,
            _postgres: Some(PostgresDatabase { admin_url, name }),
        })
    }

    /// A new store on this database (a second replica when called twice).
    async fn store(&self) -> Store {
        Store::connect(&self.url, self.secrets.clone())
            .await
            .unwrap_or_else(|e| panic!("cannot open the store at {}: {e}", self.url))
    }

    /// Every row of every table, as text, plus on SQLite the raw database files: what
    /// someone with a copy of the database would see.
    async fn raw_contents(&self, store: &Store) -> String {
        let mut dump = String::new();
        let db = store.db();
        dump += &format!("{:?}\n", tenants::Entity::find().all(db).await.unwrap());
        dump += &format!("{:?}\n", api_tokens::Entity::find().all(db).await.unwrap());
        dump += &format!("{:?}\n", clusters::Entity::find().all(db).await.unwrap());
        dump += &format!("{:?}\n", join_tokens::Entity::find().all(db).await.unwrap());
        dump += &format!("{:?}\n", pipelines::Entity::find().all(db).await.unwrap());
        dump += &format!(
            "{:?}\n",
            cluster_reports::Entity::find().all(db).await.unwrap()
        );
        dump += &format!("{:?}\n", audit_log::Entity::find().all(db).await.unwrap());
        match self.backend {
            DbBackend::Postgres => {
                for table in [
                    "tenants",
                    "api_tokens",
                    "clusters",
                    "join_tokens",
                    "pipelines",
                    "cluster_reports",
                    "audit_log",
                ] {
                    let rows = db
                        .query_all_raw(Statement::from_string(
                            DbBackend::Postgres,
                            format!("SELECT row_to_json(t)::text AS row FROM {table} t"),
                        ))
                        .await
                        .unwrap();
                    for row in rows {
                        dump += &row.try_get::<String>("", "row").unwrap();
                        dump.push('\n');
                    }
                }
            }
            _ => {
                let path = self.url.trim_start_matches("sqlite://");
                let main = std::fs::read(path).unwrap();
                assert!(!main.is_empty(), "{path} is empty");
                dump += &String::from_utf8_lossy(&main);
                // Recent writes live in the write-ahead log until a checkpoint.
                if let Ok(wal) = std::fs::read(format!("{path}-wal")) {
                    dump += &String::from_utf8_lossy(&wal);
                }
            }
        }
        dump
    }
}

/// Drops the test's PostgreSQL database when the test ends, passed or failed.
struct PostgresDatabase {
    admin_url: String,
    name: String,
}

impl Drop for PostgresDatabase {
    fn drop(&mut self) {
        let admin_url = self.admin_url.clone();
        let sql = format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name);
        // Drop cannot await, and the test's runtime may be shutting down: use a
        // thread with its own runtime.
        let dropped = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async {
                let admin = admin_connection(&admin_url).await;
                admin.execute_unprepared(&sql).await
            })
        })
        .join();
        if let Ok(Err(error)) = dropped {
            eprintln!("cannot drop the test database {}: {error}", self.name);
        }
    }
}

async fn admin_connection(url: &str) -> DatabaseConnection {
    let mut options = ConnectOptions::new(url);
    options
        .max_connections(1)
        .connect_timeout(Duration::from_secs(5))
        .sqlx_logging(false);
    Database::connect(options).await.unwrap_or_else(|e| {
        panic!(
            "PostgreSQL is not reachable at {url}: {e}\nThe store tests need it (CI runs it on \
             127.0.0.1:5432, trust auth, database `test`); set KAAS_TEST_POSTGRES_URL to use \
             another server, or KAAS_SKIP_POSTGRES=1 to skip these tests."
        )
    })
}

/// Runs each scenario on SQLite and on PostgreSQL.
macro_rules! store_tests {
    ($($scenario:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $scenario() {
                    let db = super::TestDb::sqlite().await;
                    super::$scenario(&db).await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $scenario() {
                    let Some(db) = super::TestDb::postgres().await else { return };
                    super::$scenario(&db).await;
                }
            )*
        }
    };
}

store_tests!(
    tenants_are_created_listed_and_deleted,
    api_tokens_are_hashed_authenticated_and_revoked,
    bootstrap_admin_token_is_ensured_and_rotated,
    cluster_creation_returns_a_join_token_that_redeems_once,
    expired_and_unknown_join_tokens_are_refused,
    concurrent_redeemers_of_one_token_have_one_winner,
    tombstoned_cluster_refuses_redemption,
    pipeline_generation_grows_only_when_the_spec_changes,
    masked_secret_keeps_the_stored_value,
    inline_secrets_are_never_stored_in_plaintext,
    pipelines_for_cluster_honour_tenant_and_selector,
    agent_reports_update_the_cluster,
    a_late_disconnect_does_not_clear_another_replicas_connection,
    audit_trail_records_mutations_without_secrets,
    change_feed_delivers_changes,
    reopening_runs_migrations_once,
    observations_are_published_as_reports_not_desired_state,
    concurrent_reports_end_as_if_written_one_by_one,
    a_bad_report_in_a_batch_fails_alone,
    reads_see_every_committed_write,
    clusters_are_listed_with_their_reports_in_pages,
    reports_of_reads_reports_with_tenant_and_state,
);

/// The probes' parts of the store (replica heartbeats, probe endpoint changes).
#[path = "tests_probes.rs"]
mod probes;

/// Tenant quotas.
#[path = "tests_quotas.rs"]
mod quotas;

/// Pipelines of every kind: names per kind, secrets bound to their kind, quotas.
#[path = "tests_kinds.rs"]
mod kinds;

/// The tenancy boundary's parts of the store (namespace mapping, audit pages, secrets
/// bound to their owner and re-keyed, unreadable pipeline rows).
#[path = "tests_tenancy.rs"]
mod tenancy;

/// Cluster names and global ids, agent certificates, and their migration.
#[path = "tests_identity.rs"]
mod identity;

/// Incarnations of re-registered names and the deletions the mass-deletion guard holds.
#[path = "tests_deletions.rs"]
mod deletions;

/// Health per agent instance: worst-of, time-to-live, pruning, bounds.
#[path = "tests_instances.rs"]
mod instances;

/// Pipeline templates, their generations and instances.
#[path = "tests_templates.rs"]
mod templates;

/// Scenarios that need two replicas on one database: PostgreSQL only.
mod postgres_replicas {
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn change_through_one_replica_reaches_the_other() {
        let Some(db) = super::TestDb::postgres().await else {
            return;
        };
        super::change_through_one_replica_reaches_the_other(&db).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn listener_reconnects_after_losing_its_connection() {
        let Some(db) = super::TestDb::postgres().await else {
            return;
        };
        super::listener_reconnects_after_losing_its_connection(&db).await;
    }
}

// ---- fixtures ----

fn admin() -> Actor {
    Actor::admin()
}

fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

fn new_cluster(name: &str, tenant: &str, pairs: &[(&str, &str)]) -> NewCluster {
    NewCluster {
        name: name.to_owned(),
        tenant: tenant.to_owned(),
        labels: labels(pairs),
        api_endpoint: Some(format!("https://{name}.example:6443")),
    }
}

/// Serials for [`redeem`]: unique within the test process.
static NEXT_SERIAL: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

/// Redeems `token` as `Join` does after signing: for a certificate of the default
/// instance with a fresh serial, returned with the outcome.
async fn redeem_with_serial(
    store: &Store,
    token: &str,
    now: i64,
) -> (Result<Cluster, RedeemError>, String) {
    let serial = format!(
        "{:04x}",
        NEXT_SERIAL.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    );
    let certificate = NewAgentCertificate {
        serial_hex: &serial,
        pem: "-----BEGIN CERTIFICATE-----\n-----END CERTIFICATE-----\n",
        instance: DEFAULT_INSTANCE,
        not_after_ms: now + 3_600_000,
    };
    let outcome = store
        .redeem_join_token(token, &csr_sha256(&serial), certificate, now)
        .await
        .unwrap();
    (outcome, serial)
}

/// [`redeem_with_serial`] without the serial.
async fn redeem(store: &Store, token: &str, now: i64) -> Result<Cluster, RedeemError> {
    redeem_with_serial(store, token, now).await.0
}

fn parse_pipeline(yaml: &str) -> MetricPipeline {
    serde_yaml::from_str(yaml).unwrap()
}

fn validated(resource: &MetricPipeline) -> ValidatedPipeline {
    kaas_pipeline::validate(
        resource,
        &kaas_pipeline::ValidationContext::tenant_default(),
    )
    .unwrap()
}

/// A remote-write pipeline with basic authentication and an inline header value.
fn pipeline_with_secrets(name: &str, password: &str, header: &str) -> MetricPipeline {
    parse_pipeline(&format!(
        r#"
apiVersion: telemetry.kaas-observer.io/v1alpha1
kind: MetricPipeline
metadata:
  name: {name}
spec:
  input:
    runtime:
      enabled: true
  output:
    prometheusRemoteWrite:
      url: https://thanos.example/api/v1/receive
      headers:
        - name: X-Scope-OrgID
          value: "{header}"
      authentication:
        basic:
          user: {{value: agent}}
          password: {{value: "{password}"}}
"#
    ))
}

/// A pipeline without secrets selecting clusters with `env=<env>` (all for `None`).
fn pipeline_selecting(name: &str, env: Option<&str>) -> ValidatedPipeline {
    let selector = env
        .map(|env| format!("  clusterSelector:\n    matchLabels:\n      env: {env}\n"))
        .unwrap_or_default();
    validated(&parse_pipeline(&format!(
        r#"
apiVersion: telemetry.kaas-observer.io/v1alpha1
kind: MetricPipeline
metadata:
  name: {name}
spec:
  input:
    runtime:
      enabled: true
  output:
    otlp:
      endpoint: http://collector.example:4317
{selector}"#
    )))
}

fn password_of(stored: &StoredPipeline) -> String {
    let output = &stored.pipeline.spec().output;
    let basic = output
        .prometheus_remote_write
        .as_ref()
        .unwrap()
        .authentication
        .as_ref()
        .unwrap()
        .basic
        .as_ref()
        .unwrap();
    basic.password.value.as_ref().unwrap().expose().to_owned()
}

/// The agent was heard from, as its stream reports it.
fn seen(cluster: &str, instance: &str, version: &str, at_ms: i64) -> ReportWrite {
    ReportWrite::Seen {
        cluster: cluster.to_owned(),
        instance_id: instance.to_owned(),
        version: version.to_owned(),
        at_ms,
        connection: None,
    }
}

/// The agent's stream opened through `connection`.
fn connected(
    cluster: &str,
    instance: &str,
    version: &str,
    at_ms: i64,
    connection: &str,
) -> ReportWrite {
    ReportWrite::Seen {
        cluster: cluster.to_owned(),
        instance_id: instance.to_owned(),
        version: version.to_owned(),
        at_ms,
        connection: Some(connection.to_owned()),
    }
}

/// An agent of version 0.1.0 opened a stream through `connection` just now.
fn stream_opened(cluster: &str, connection: &str) -> ReportWrite {
    connected(cluster, "instance-1", "0.1.0", now_ms(), connection)
}

/// A configuration report.
fn config_write(cluster: &str, report: ConfigReport) -> ReportWrite {
    ReportWrite::Config {
        cluster: cluster.to_owned(),
        report,
    }
}

/// A health report.
fn health_write(cluster: &str, health: serde_json::Value, at_ms: i64) -> ReportWrite {
    ReportWrite::Health {
        cluster: cluster.to_owned(),
        health,
        at_ms,
    }
}

async fn next_change(feed: &mut broadcast::Receiver<Change>) -> Change {
    tokio::time::timeout(Duration::from_secs(5), feed.recv())
        .await
        .expect("no change arrived within 5s")
        .unwrap()
}

/// Waits until `expected` arrives on `feed`, skipping other changes.
async fn wait_for(feed: &mut broadcast::Receiver<Change>, expected: &Change, within: Duration) {
    tokio::time::timeout(within, async {
        loop {
            match feed.recv().await {
                Ok(change) if &change == expected => return,
                Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => {}
                Err(broadcast::error::RecvError::Closed) => panic!("the change feed closed"),
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("{expected:?} did not arrive within {within:?}"));
}

// ---- scenarios ----

async fn tenants_are_created_listed_and_deleted(db: &TestDb) {
    let store = db.store().await;
    let shop = store.create_tenant("shop", &admin()).await.unwrap();
    assert_eq!(shop.name, "shop");
    store.create_tenant("bank", &admin()).await.unwrap();
    assert!(matches!(
        store.create_tenant("shop", &admin()).await,
        Err(StoreError::AlreadyExists { kind: "tenant", .. })
    ));
    let names: Vec<String> = store
        .list_tenants()
        .await
        .unwrap()
        .into_iter()
        .map(|t| t.name)
        .collect();
    assert_eq!(names, ["bank", "shop"]);
    assert_eq!(store.get_tenant("shop").await.unwrap(), Some(shop));
    assert_eq!(store.get_tenant("nobody").await.unwrap(), None);

    // A live cluster blocks deletion; its tombstone does not.
    store
        .create_cluster(new_cluster("c1", "shop", &[]), HOUR, &admin())
        .await
        .unwrap();
    let error = store.delete_tenant("shop", &admin()).await.unwrap_err();
    assert!(
        matches!(&error, StoreError::Conflict(message) if message.contains("1 cluster")),
        "{error}"
    );
    store.delete_cluster("shop.c1", &admin()).await.unwrap();

    // A pipeline blocks deletion.
    store
        .apply_pipeline("shop", pipeline_selecting("p1", None), &admin())
        .await
        .unwrap();
    let error = store.delete_tenant("shop", &admin()).await.unwrap_err();
    assert!(
        matches!(&error, StoreError::Conflict(message) if message.contains("1 pipeline")),
        "{error}"
    );
    store.delete_pipeline("shop", "p1", &admin()).await.unwrap();

    let (_, token) = store
        .create_api_token(Some("shop"), "ci", &admin())
        .await
        .unwrap();
    store.delete_tenant("shop", &admin()).await.unwrap();
    assert_eq!(store.get_tenant("shop").await.unwrap(), None);
    assert_eq!(
        store.get_cluster("shop.c1").await.unwrap(),
        None,
        "tombstone removed"
    );
    assert_eq!(
        store.authenticate(&token).await.unwrap(),
        None,
        "token removed"
    );
    assert!(matches!(
        store.delete_tenant("shop", &admin()).await,
        Err(StoreError::NotFound { kind: "tenant", .. })
    ));
    // The name is free again.
    store.create_tenant("shop", &admin()).await.unwrap();
}

async fn api_tokens_are_hashed_authenticated_and_revoked(db: &TestDb) {
    let store = db.store().await;
    store.create_tenant("shop", &admin()).await.unwrap();
    let (admin_info, admin_token) = store.create_api_token(None, "ops", &admin()).await.unwrap();
    let (shop_info, shop_token) = store
        .create_api_token(Some("shop"), "ci", &admin())
        .await
        .unwrap();
    assert!(admin_token.starts_with(API_TOKEN_PREFIX), "{admin_token}");
    assert!(shop_token.len() > 40, "{shop_token}");
    assert_ne!(admin_token, shop_token);
    assert_eq!(admin_info.tenant, None);
    assert_eq!(shop_info.tenant.as_deref(), Some("shop"));
    assert!(matches!(
        store.create_api_token(Some("nobody"), "x", &admin()).await,
        Err(StoreError::NotFound { kind: "tenant", .. })
    ));

    assert_eq!(
        store.authenticate(&admin_token).await.unwrap(),
        Some(Principal::Admin)
    );
    assert_eq!(
        store.authenticate(&shop_token).await.unwrap(),
        Some(Principal::Tenant("shop".into()))
    );
    assert_eq!(store.authenticate("kot_wrong").await.unwrap(), None);
    assert_eq!(store.authenticate("").await.unwrap(), None);

    // Only hashes are stored.
    let rows = api_tokens::Entity::find().all(store.db()).await.unwrap();
    assert_eq!(rows.len(), 2);
    for row in &rows {
        assert_eq!(row.token_hash.len(), 64);
        assert!(row.token_hash.bytes().all(|b| b.is_ascii_hexdigit()));
    }
    let raw = db.raw_contents(&store).await;
    for token in [&admin_token, &shop_token] {
        let random_part = token.trim_start_matches(API_TOKEN_PREFIX);
        assert!(!raw.contains(random_part), "a plaintext token is stored");
    }
    assert!(raw.contains(&token_hash(&shop_token)));

    assert_eq!(store.list_api_tokens(None).await.unwrap().len(), 2);
    assert_eq!(
        store.list_api_tokens(Some("shop")).await.unwrap(),
        std::slice::from_ref(&shop_info)
    );
    assert_eq!(
        store.get_api_token(&shop_info.id).await.unwrap(),
        Some(shop_info.clone())
    );

    store
        .revoke_api_token(&shop_info.id, &Actor::tenant("shop"))
        .await
        .unwrap();
    assert_eq!(store.authenticate(&shop_token).await.unwrap(), None);
    assert!(
        store
            .list_api_tokens(Some("shop"))
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(store.get_api_token(&shop_info.id).await.unwrap(), None);
    store
        .revoke_api_token(&shop_info.id, &admin())
        .await
        .unwrap();
    assert!(matches!(
        store.revoke_api_token("no-such-id", &admin()).await,
        Err(StoreError::NotFound {
            kind: "api-token",
            ..
        })
    ));
    assert_eq!(
        store.authenticate(&admin_token).await.unwrap(),
        Some(Principal::Admin)
    );
}

/// Issue 13, finding 10: a revoked bootstrap admin token worked again after a restart
/// (ensuring it at start lifted the revocation). Ensuring the revoked token now fails and
/// it stays revoked; a new token replaces it.
async fn bootstrap_admin_token_is_ensured_and_rotated(db: &TestDb) {
    let store = db.store().await;
    store.ensure_admin_token("first-secret").await.unwrap();
    store.ensure_admin_token("first-secret").await.unwrap();
    assert_eq!(
        store.authenticate("first-secret").await.unwrap(),
        Some(Principal::Admin)
    );
    let bootstrap_audits = |entries: Vec<AuditEntry>| {
        entries
            .into_iter()
            .filter(|e| e.name == BOOTSTRAP_ADMIN_TOKEN_ID)
            .count()
    };
    assert_eq!(bootstrap_audits(store.audit_entries(100).await.unwrap()), 1);

    store
        .revoke_api_token(BOOTSTRAP_ADMIN_TOKEN_ID, &admin())
        .await
        .unwrap();
    assert_eq!(store.authenticate("first-secret").await.unwrap(), None);
    let refused = store.ensure_admin_token("first-secret").await;
    assert!(
        matches!(refused, Err(StoreError::BootstrapTokenRevoked { .. })),
        "{refused:?}"
    );
    let restarted = db.store().await;
    assert!(restarted.ensure_admin_token("first-secret").await.is_err());
    assert_eq!(
        store.authenticate("first-secret").await.unwrap(),
        None,
        "a restart does not lift a revocation"
    );

    store.ensure_admin_token("second-secret").await.unwrap();
    assert_eq!(store.authenticate("first-secret").await.unwrap(), None);
    assert_eq!(
        store.authenticate("second-secret").await.unwrap(),
        Some(Principal::Admin)
    );
    assert_eq!(store.list_api_tokens(None).await.unwrap().len(), 1);
    assert!(!db.raw_contents(&store).await.contains("second-secret"));
}

async fn cluster_creation_returns_a_join_token_that_redeems_once(db: &TestDb) {
    let store = db.store().await;
    store.create_tenant("shop", &admin()).await.unwrap();
    assert!(matches!(
        store
            .create_cluster(new_cluster("c1", "nobody", &[]), HOUR, &admin())
            .await,
        Err(StoreError::NotFound { kind: "tenant", .. })
    ));
    let (cluster, token) = store
        .create_cluster(
            new_cluster("c1", "shop", &[("env", "prod")]),
            HOUR,
            &admin(),
        )
        .await
        .unwrap();
    assert!(token.starts_with(JOIN_TOKEN_PREFIX), "{token}");
    assert_eq!(cluster.state, ClusterState::Provisioning);
    assert_eq!(cluster.labels, labels(&[("env", "prod")]));
    assert_eq!(
        store.get_cluster("shop.c1").await.unwrap(),
        Some(cluster.clone())
    );
    assert!(matches!(
        store
            .create_cluster(new_cluster("c1", "shop", &[]), HOUR, &admin())
            .await,
        Err(StoreError::AlreadyExists {
            kind: "cluster",
            ..
        })
    ));

    let raw = db.raw_contents(&store).await;
    assert!(!raw.contains(token.trim_start_matches(JOIN_TOKEN_PREFIX)));

    let now = now_ms();
    let (redeemed, serial) = redeem_with_serial(&store, &token, now).await;
    assert_eq!(redeemed.map(|c| c.id), Ok(cluster.id.clone()));
    assert_eq!(
        redeem(&store, &token, now + 1).await,
        Err(RedeemError::AlreadyUsed)
    );

    // A second token for the same cluster works independently.
    let again = store
        .mint_join_token("shop.c1", HOUR, &admin())
        .await
        .unwrap();
    assert_ne!(again, token);
    assert!(redeem(&store, &again, now).await.is_ok());
    assert!(matches!(
        store.mint_join_token("nope", HOUR, &admin()).await,
        Err(StoreError::NotFound {
            kind: "cluster",
            ..
        })
    ));

    // The redemption recorded its certificate, which the cluster row shows for the
    // default instance... until the second token's redemption replaced it.
    assert_eq!(
        store
            .certificate_standing("shop.c1", &serial)
            .await
            .unwrap(),
        CertificateStanding::Revoked
    );
    let cluster = store.get_cluster("shop.c1").await.unwrap().unwrap();
    assert!(cluster.certificate_serial.is_some());
    assert_ne!(cluster.certificate_serial.as_deref(), Some(serial.as_str()));
    assert_eq!(cluster.certificate_not_after_ms, Some(now + 3_600_000));

    let updated = store
        .update_cluster_labels("shop.c1", labels(&[("env", "dev")]), &admin())
        .await
        .unwrap();
    assert_eq!(updated.labels, labels(&[("env", "dev")]));
    assert_eq!(store.list_clusters(Some("shop")).await.unwrap(), [updated]);
    assert!(store.list_clusters(Some("bank")).await.unwrap().is_empty());
    assert_eq!(store.list_clusters(None).await.unwrap().len(), 1);
}

async fn expired_and_unknown_join_tokens_are_refused(db: &TestDb) {
    let store = db.store().await;
    store.create_tenant("shop", &admin()).await.unwrap();
    let (_, token) = store
        .create_cluster(
            new_cluster("c1", "shop", &[]),
            Duration::from_secs(60),
            &admin(),
        )
        .await
        .unwrap();
    let later = now_ms() + 61_000;
    assert_eq!(
        redeem(&store, &token, later).await,
        Err(RedeemError::Expired)
    );
    assert_eq!(
        redeem(&store, "kjt_not-a-token", now_ms()).await,
        Err(RedeemError::Unknown)
    );
    // Refusals do not use the token up.
    let rows = join_tokens::Entity::find().all(store.db()).await.unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].used_at_ms, None);
    assert!(redeem(&store, &token, now_ms()).await.is_ok());
}

async fn concurrent_redeemers_of_one_token_have_one_winner(db: &TestDb) {
    let first = db.store().await;
    let second = db.store().await;
    first.create_tenant("shop", &admin()).await.unwrap();
    for round in 0..5 {
        let name = format!("c{round}");
        let (_, token) = first
            .create_cluster(new_cluster(&name, "shop", &[]), HOUR, &admin())
            .await
            .unwrap();
        let now = now_ms();
        let redeemers: Vec<_> = (0..8)
            .map(|i| {
                let store = if i % 2 == 0 {
                    first.clone()
                } else {
                    second.clone()
                };
                let token = token.clone();
                tokio::spawn(async move { Ok::<_, StoreError>(redeem(&store, &token, now).await) })
            })
            .collect();
        let mut wins = 0;
        for redeemer in redeemers {
            match redeemer.await.unwrap().unwrap() {
                Ok(cluster) => {
                    assert_eq!(cluster.name, name);
                    wins += 1;
                }
                Err(reason) => assert_eq!(reason, RedeemError::AlreadyUsed),
            }
        }
        assert_eq!(wins, 1, "round {round}: {wins} redeemers won");
    }
}

async fn tombstoned_cluster_refuses_redemption(db: &TestDb) {
    let store = db.store().await;
    store.create_tenant("shop", &admin()).await.unwrap();
    let (_, token) = store
        .create_cluster(new_cluster("c1", "shop", &[]), HOUR, &admin())
        .await
        .unwrap();
    store
        .report(stream_opened("shop.c1", "replica-a/1"))
        .await
        .unwrap();
    store.delete_cluster("shop.c1", &admin()).await.unwrap();
    store.delete_cluster("shop.c1", &admin()).await.unwrap();

    let tombstone = store.get_cluster("shop.c1").await.unwrap().unwrap();
    assert_eq!(tombstone.state, ClusterState::Deleted);
    assert!(tombstone.deleted_at_ms.is_some());
    assert!(
        !store
            .cluster_report("shop.c1")
            .await
            .unwrap()
            .unwrap()
            .connected
    );

    assert_eq!(
        redeem(&store, &token, now_ms()).await,
        Err(RedeemError::ClusterGone)
    );
    assert!(matches!(
        store.mint_join_token("shop.c1", HOUR, &admin()).await,
        Err(StoreError::Conflict(_))
    ));
    let certificate = NewAgentCertificate {
        serial_hex: "ff",
        pem: "",
        instance: DEFAULT_INSTANCE,
        not_after_ms: now_ms() + 1000,
    };
    assert!(matches!(
        store
            .record_agent_certificate("shop.c1", certificate, None, now_ms())
            .await,
        Err(StoreError::Conflict(_))
    ));
    assert!(matches!(
        store
            .update_cluster_labels("shop.c1", labels(&[("a", "b")]), &admin())
            .await,
        Err(StoreError::Conflict(_))
    ));
    assert!(matches!(
        store.delete_cluster("nope", &admin()).await,
        Err(StoreError::NotFound {
            kind: "cluster",
            ..
        })
    ));
}

async fn pipeline_generation_grows_only_when_the_spec_changes(db: &TestDb) {
    let store = db.store().await;
    store.create_tenant("shop", &admin()).await.unwrap();
    assert!(matches!(
        store
            .apply_pipeline("nobody", pipeline_selecting("p1", None), &admin())
            .await,
        Err(StoreError::NotFound { kind: "tenant", .. })
    ));

    let (stored, created) = store
        .apply_pipeline("shop", pipeline_selecting("p1", None), &admin())
        .await
        .unwrap();
    assert!(created);
    assert_eq!(stored.generation, 1);
    assert_eq!(stored.name(), "p1");
    assert_eq!(stored.tenant, "shop");

    let (same, created) = store
        .apply_pipeline("shop", pipeline_selecting("p1", None), &admin())
        .await
        .unwrap();
    assert!(!created);
    assert_eq!(same.generation, 1);
    assert_eq!(same.updated_at_ms, stored.updated_at_ms, "nothing written");

    let (changed, _) = store
        .apply_pipeline("shop", pipeline_selecting("p1", Some("prod")), &admin())
        .await
        .unwrap();
    assert_eq!(changed.generation, 2);

    // Metadata only: written, same generation.
    let mut labelled = changed.pipeline.resource().clone();
    labelled.metadata.labels = Some(labels(&[("team", "a")]));
    let (labelled, _) = store
        .apply_pipeline("shop", validated(&labelled), &admin())
        .await
        .unwrap();
    assert_eq!(labelled.generation, 2);
    assert_eq!(
        labelled.pipeline.resource().metadata.labels,
        Some(labels(&[("team", "a")]))
    );

    // Server-set metadata and status in the input are not stored.
    let mut noisy = labelled.pipeline.resource().clone();
    noisy.metadata.resource_version = Some("42".into());
    noisy.metadata.generation = Some(7);
    noisy.status = Some(MetricPipelineStatus {
        observed_generation: Some(9),
        conditions: Vec::new(),
        unsupported_mode: false,
    });
    let (quiet, _) = store
        .apply_pipeline("shop", validated(&noisy), &admin())
        .await
        .unwrap();
    assert_eq!(quiet.generation, 2);
    assert_eq!(quiet.pipeline.resource().metadata.resource_version, None);
    assert_eq!(quiet.pipeline.resource().status, None);

    let fetched = store.get_pipeline("shop", "p1").await.unwrap().unwrap();
    assert_eq!(fetched.generation, 2);
    assert_eq!(
        fetched.pipeline.spec(),
        pipeline_selecting("p1", Some("prod")).spec()
    );
    assert!(store.get_pipeline("shop", "p2").await.unwrap().is_none());

    let status = MetricPipelineStatus {
        observed_generation: Some(2),
        conditions: vec![Condition {
            type_: kaas_pipeline::status::CONDITION_CONFIGURATION_APPLIED.into(),
            status: ConditionStatus::True,
            reason: kaas_pipeline::status::reasons::APPLIED.into(),
            message: String::new(),
            last_transition_time: "2025-01-01T00:00:00Z".into(),
            observed_generation: Some(2),
        }],
        unsupported_mode: false,
    };
    store
        .set_pipeline_status("shop", "p1", status.clone())
        .await
        .unwrap();
    let fetched = store.get_pipeline("shop", "p1").await.unwrap().unwrap();
    assert_eq!(fetched.status, status);
    assert_eq!(fetched.generation, 2, "status does not bump the generation");
    assert_eq!(fetched.masked_resource().metadata.generation, Some(2));
    assert!(matches!(
        store
            .set_pipeline_status("shop", "p2", MetricPipelineStatus::default())
            .await,
        Err(StoreError::NotFound {
            kind: "pipeline",
            ..
        })
    ));

    store
        .apply_pipeline("shop", pipeline_selecting("p0", None), &admin())
        .await
        .unwrap();
    let names: Vec<String> = store
        .list_pipelines(Some("shop"))
        .await
        .unwrap()
        .iter()
        .map(|p| p.name().to_owned())
        .collect();
    assert_eq!(names, ["p0", "p1"]);
    assert_eq!(store.list_pipelines(None).await.unwrap().len(), 2);
    assert_eq!(
        store.pipeline_summaries().await.unwrap(),
        [
            PipelineSummary {
                tenant: "shop".into(),
                kind: "MetricPipeline".into(),
                name: "p0".into(),
                generation: 1,
                status: MetricPipelineStatus::default(),
            },
            PipelineSummary {
                tenant: "shop".into(),
                kind: "MetricPipeline".into(),
                name: "p1".into(),
                generation: 2,
                status,
            },
        ]
    );

    store.delete_pipeline("shop", "p1", &admin()).await.unwrap();
    assert!(store.get_pipeline("shop", "p1").await.unwrap().is_none());
    assert!(matches!(
        store.delete_pipeline("shop", "p1", &admin()).await,
        Err(StoreError::NotFound {
            kind: "pipeline",
            ..
        })
    ));
    let (recreated, created) = store
        .apply_pipeline("shop", pipeline_selecting("p1", None), &admin())
        .await
        .unwrap();
    assert!(created);
    assert_eq!(recreated.generation, 1);
}

async fn masked_secret_keeps_the_stored_value(db: &TestDb) {
    let store = db.store().await;
    store.create_tenant("shop", &admin()).await.unwrap();

    // "***" for a field without a stored value is refused, naming the field.
    let error = store
        .apply_pipeline(
            "shop",
            validated(&pipeline_with_secrets("p1", MASKED_SECRET, "tenant-a")),
            &admin(),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(&error, StoreError::Conflict(message)
            if message.contains("spec.output.prometheusRemoteWrite.authentication.basic.password.value")),
        "{error}"
    );

    let (stored, _) = store
        .apply_pipeline(
            "shop",
            validated(&pipeline_with_secrets("p1", "hunter2", "tenant-a")),
            &admin(),
        )
        .await
        .unwrap();
    assert_eq!(password_of(&stored), "hunter2");

    // The API shows "***"; sending that back keeps the value and the generation.
    let masked = stored.masked_resource();
    let shown = serde_json::to_string(&masked).unwrap();
    assert!(!shown.contains("hunter2"), "{shown}");
    assert!(!shown.contains("tenant-a"), "{shown}");
    let (kept, _) = store
        .apply_pipeline("shop", validated(&masked), &admin())
        .await
        .unwrap();
    assert_eq!(password_of(&kept), "hunter2");
    assert_eq!(kept.generation, 1);

    // Changing one field while the other stays masked.
    let mut edited = masked.clone();
    edited
        .spec
        .output
        .prometheus_remote_write
        .as_mut()
        .unwrap()
        .headers[0]
        .value = Some(SecretString::new("tenant-b"));
    let (edited, _) = store
        .apply_pipeline("shop", validated(&edited), &admin())
        .await
        .unwrap();
    assert_eq!(edited.generation, 2);
    assert_eq!(password_of(&edited), "hunter2");
    let header = edited
        .pipeline
        .spec()
        .output
        .prometheus_remote_write
        .as_ref()
        .unwrap()
        .headers[0]
        .value
        .as_ref()
        .unwrap()
        .expose()
        .to_owned();
    assert_eq!(header, "tenant-b");

    // A new real value replaces the stored one.
    let (rotated, _) = store
        .apply_pipeline(
            "shop",
            validated(&pipeline_with_secrets("p1", "correct-horse", "tenant-b")),
            &admin(),
        )
        .await
        .unwrap();
    assert_eq!(password_of(&rotated), "correct-horse");
    assert_eq!(rotated.generation, 3);

    // The API may restore before validating.
    let mut restored = rotated.masked_resource();
    store
        .restore_masked_secrets::<ValidatedPipeline>("shop", &mut restored)
        .await
        .unwrap();
    assert!(
        serde_json::to_string(&restored.spec)
            .unwrap()
            .contains("correct-horse")
    );
    let mut fresh = pipeline_with_secrets("p9", MASKED_SECRET, "x");
    assert!(matches!(
        store
            .restore_masked_secrets::<ValidatedPipeline>("shop", &mut fresh)
            .await,
        Err(StoreError::Conflict(_))
    ));
}

async fn inline_secrets_are_never_stored_in_plaintext(db: &TestDb) {
    const PASSWORD: &str = "pw-8e1f0c2d-never-in-the-database";
    const HEADER: &str = "hdr-54b1a9-never-in-the-database";
    let store = db.store().await;
    store.create_tenant("shop", &admin()).await.unwrap();
    store
        .apply_pipeline(
            "shop",
            validated(&pipeline_with_secrets("p1", PASSWORD, HEADER)),
            &admin(),
        )
        .await
        .unwrap();
    // Update it too, so old row versions exist (WAL on SQLite, dead tuples on PostgreSQL).
    store
        .apply_pipeline(
            "shop",
            validated(&pipeline_with_secrets(
                "p1",
                PASSWORD,
                &format!("{HEADER}-2"),
            )),
            &admin(),
        )
        .await
        .unwrap();
    let raw = db.raw_contents(&store).await;
    assert!(
        !raw.contains(PASSWORD),
        "the password is stored in plaintext"
    );
    assert!(
        !raw.contains(HEADER),
        "the header value is stored in plaintext"
    );
    assert!(raw.contains(crate::secrets::SEALED_PREFIX));
    assert!(raw.contains("thanos.example"), "the dump is incomplete");

    let row = pipelines::Entity::find()
        .one(store.db())
        .await
        .unwrap()
        .unwrap();
    let sealed =
        row.spec["spec"]["output"]["prometheusRemoteWrite"]["authentication"]["basic"]["password"]
            ["value"]
            .as_str()
            .unwrap()
            .to_owned();
    assert!(SecretBox::is_sealed(&sealed), "{sealed}");
    let owner = crate::secrets::SecretOwner {
        tenant: "shop",
        kind: "pipeline",
        name: "p1",
        field: "spec.output.prometheusRemoteWrite.authentication.basic.password.value",
    };
    assert_eq!(db.secrets.open(&sealed, &owner).unwrap(), PASSWORD);

    // Another key cannot read the pipeline.
    let wrong_key = Store::connect(&db.url, SecretBox::generate().unwrap())
        .await
        .unwrap();
    let error = wrong_key.get_pipeline("shop", "p1").await.unwrap_err();
    assert!(
        matches!(error, StoreError::SecretUnreadable { .. }),
        "{error}"
    );
    assert!(!error.to_string().contains(PASSWORD));
}

async fn pipelines_for_cluster_honour_tenant_and_selector(db: &TestDb) {
    let store = db.store().await;
    store.create_tenant("shop", &admin()).await.unwrap();
    store.create_tenant("bank", &admin()).await.unwrap();
    for (name, env) in [
        ("all", None),
        ("prod-only", Some("prod")),
        ("dev-only", Some("dev")),
    ] {
        store
            .apply_pipeline("shop", pipeline_selecting(name, env), &admin())
            .await
            .unwrap();
    }
    store
        .apply_pipeline("bank", pipeline_selecting("bank-all", None), &admin())
        .await
        .unwrap();
    let (cluster, _) = store
        .create_cluster(
            new_cluster("c1", "shop", &[("env", "prod")]),
            HOUR,
            &admin(),
        )
        .await
        .unwrap();
    let names = |pipelines: Vec<ValidatedPipeline>| -> Vec<String> {
        pipelines.iter().map(|p| p.name().to_owned()).collect()
    };
    assert_eq!(
        names(store.pipelines_for_cluster(&cluster).await.unwrap()),
        ["all", "prod-only"]
    );
    let cluster = store
        .update_cluster_labels("shop.c1", labels(&[("env", "dev")]), &admin())
        .await
        .unwrap();
    assert_eq!(
        names(store.pipelines_for_cluster(&cluster).await.unwrap()),
        ["all", "dev-only"]
    );
    let (bank_cluster, _) = store
        .create_cluster(
            new_cluster("b1", "bank", &[("env", "prod")]),
            HOUR,
            &admin(),
        )
        .await
        .unwrap();
    assert_eq!(
        names(store.pipelines_for_cluster(&bank_cluster).await.unwrap()),
        ["bank-all"]
    );
}

async fn agent_reports_update_the_cluster(db: &TestDb) {
    let store = db.store().await;
    store.create_tenant("shop", &admin()).await.unwrap();
    store
        .create_cluster(new_cluster("c1", "shop", &[]), HOUR, &admin())
        .await
        .unwrap();
    let empty = store.cluster_report("shop.c1").await.unwrap().unwrap();
    assert_eq!(empty.config, None);
    assert_eq!(empty.health, None);
    assert!(!empty.connected);
    assert_eq!(store.cluster_report("nope").await.unwrap(), None);

    store
        .report(seen("shop.c1", "instance-1", "0.1.0", 1_000))
        .await
        .unwrap();
    let cluster = store.get_cluster("shop.c1").await.unwrap().unwrap();
    assert_eq!(cluster.state, ClusterState::Active);
    assert_eq!(cluster.agent_instance_id.as_deref(), Some("instance-1"));
    assert_eq!(cluster.agent_version.as_deref(), Some("0.1.0"));
    assert_eq!(cluster.last_seen_ms, Some(1_000));

    store
        .set_cluster_state("shop.c1", ClusterState::Silent, 2_000, &Actor::system())
        .await
        .unwrap();
    assert_eq!(
        store.get_cluster("shop.c1").await.unwrap().unwrap().state,
        ClusterState::Silent
    );
    store
        .report(seen("shop.c1", "instance-2", "0.1.1", 3_000))
        .await
        .unwrap();
    let cluster = store.get_cluster("shop.c1").await.unwrap().unwrap();
    assert_eq!(cluster.state, ClusterState::Active);
    assert_eq!(cluster.last_seen_ms, Some(3_000));
    // A late, older heartbeat does not move last_seen back.
    store
        .report(seen("shop.c1", "instance-2", "0.1.1", 2_500))
        .await
        .unwrap();
    assert_eq!(
        store
            .get_cluster("shop.c1")
            .await
            .unwrap()
            .unwrap()
            .last_seen_ms,
        Some(3_000)
    );

    let report = |state: AgentConfigState, hash: &str| ConfigReport {
        config_hash: hash.into(),
        state,
        errors: Vec::new(),
        running_config_hash: hash.into(),
        at_ms: 4_000,
        without_trace_pipelines: false,
        without_template_instances: false,
    };
    store
        .report(config_write(
            "shop.c1",
            report(AgentConfigState::Applying, "aa"),
        ))
        .await
        .unwrap();
    assert_eq!(
        store
            .get_cluster("shop.c1")
            .await
            .unwrap()
            .unwrap()
            .applied_config_hash,
        None
    );
    store
        .report(config_write(
            "shop.c1",
            report(AgentConfigState::Applied, "aa"),
        ))
        .await
        .unwrap();
    assert_eq!(
        store
            .get_cluster("shop.c1")
            .await
            .unwrap()
            .unwrap()
            .applied_config_hash
            .as_deref(),
        Some("aa")
    );
    let mut failed = report(AgentConfigState::Failed, "bb");
    failed.running_config_hash = "aa".into();
    failed.errors = vec![ConfigErrorRecord {
        pipeline: "p1".into(),
        field_path: "spec.output".into(),
        message: "refused".into(),
    }];
    store
        .report(config_write("shop.c1", failed.clone()))
        .await
        .unwrap();
    assert_eq!(
        store
            .get_cluster("shop.c1")
            .await
            .unwrap()
            .unwrap()
            .applied_config_hash
            .as_deref(),
        Some("aa"),
        "a failed configuration is not applied"
    );

    let health = serde_json::json!({"pipelines": {"p1": {"bufferBytes": 12}}});
    store
        .report(health_write("shop.c1", health.clone(), 5_000))
        .await
        .unwrap();
    store
        .report(stream_opened("shop.c1", "replica-a/1"))
        .await
        .unwrap();
    let report = store.cluster_report("shop.c1").await.unwrap().unwrap();
    assert_eq!(report.cluster, "shop.c1");
    assert_eq!(report.config, Some(failed.clone()));
    assert_eq!(report.health, Some(health));
    assert!(report.connected);

    // A config report after health keeps the health.
    store
        .report(config_write("shop.c1", report_applied("cc")))
        .await
        .unwrap();
    let report = store.cluster_report("shop.c1").await.unwrap().unwrap();
    assert!(report.health.is_some());
    assert_eq!(report.config.unwrap().config_hash, "cc");

    assert!(
        store
            .release_connection("shop.c1", "replica-a/1")
            .await
            .unwrap()
    );
    assert!(
        !store
            .cluster_report("shop.c1")
            .await
            .unwrap()
            .unwrap()
            .connected
    );
    assert!(matches!(
        store
            .report(health_write("nope", serde_json::json!({}), 1))
            .await,
        Err(StoreError::NotFound { .. })
    ));
    assert!(matches!(
        store.report(seen("nope", "i", "v", 1)).await,
        Err(StoreError::NotFound { .. })
    ));
}

/// An agent moves from replica A to replica B; A notices that its stream broke only
/// after B recorded the new one. A's release must not mark the cluster disconnected.
async fn a_late_disconnect_does_not_clear_another_replicas_connection(db: &TestDb) {
    let replica_a = db.store().await;
    // SQLite serves one observer process; two pools on one file would fight over its
    // lock, so there the "replicas" share a store (the connection ids still differ).
    let replica_b = match db.backend {
        DbBackend::Postgres => db.store().await,
        _ => replica_a.clone(),
    };
    replica_a.create_tenant("shop", &admin()).await.unwrap();
    replica_a
        .create_cluster(new_cluster("c1", "shop", &[]), HOUR, &admin())
        .await
        .unwrap();
    let connected = |store: Store| async move {
        let cluster = store.get_cluster("shop.c1").await.unwrap().unwrap();
        let report = store.cluster_report("shop.c1").await.unwrap().unwrap();
        assert_eq!(cluster.connected, report.connected);
        let listed = store.list_clusters(Some("shop")).await.unwrap();
        assert_eq!(listed[0].connected, cluster.connected);
        cluster.connected
    };
    assert!(!connected(replica_a.clone()).await);

    // In order: A connects, B takes over, A's late release changes nothing.
    replica_a
        .report(stream_opened("shop.c1", "a/1"))
        .await
        .unwrap();
    assert!(connected(replica_b.clone()).await);
    replica_b
        .report(stream_opened("shop.c1", "b/7"))
        .await
        .unwrap();
    assert!(
        !replica_a
            .release_connection("shop.c1", "a/1")
            .await
            .unwrap()
    );
    assert!(connected(replica_a.clone()).await, "A's late release won");
    // Releasing twice, or an id never recorded, is harmless.
    assert!(
        !replica_a
            .release_connection("shop.c1", "a/1")
            .await
            .unwrap()
    );
    assert!(
        !replica_a
            .release_connection("shop.c1", "a/99")
            .await
            .unwrap()
    );
    assert!(connected(replica_b.clone()).await);
    // The connection that set the flag clears it.
    assert!(
        replica_b
            .release_connection("shop.c1", "b/7")
            .await
            .unwrap()
    );
    assert!(!connected(replica_a.clone()).await);

    // Racing: B's connect and A's release run concurrently, many times; whichever
    // commits first, the agent ends up connected through B.
    for round in 0..20 {
        let a = format!("a/{round}");
        let b = format!("b/{round}");
        replica_a
            .report(stream_opened("shop.c1", &a))
            .await
            .unwrap();
        let (connect, release) = tokio::join!(
            replica_b.report(stream_opened("shop.c1", &b)),
            replica_a.release_connection("shop.c1", &a),
        );
        connect.unwrap();
        release.unwrap();
        assert!(
            connected(replica_a.clone()).await,
            "round {round}: A's release cleared B's connection"
        );
        assert!(replica_b.release_connection("shop.c1", &b).await.unwrap());
    }

    // Deleting the cluster disconnects it whoever holds the connection.
    replica_b
        .report(stream_opened("shop.c1", "b/8"))
        .await
        .unwrap();
    replica_a.delete_cluster("shop.c1", &admin()).await.unwrap();
    assert!(!connected(replica_b.clone()).await);
    assert!(
        !replica_b
            .release_connection("shop.c1", "b/8")
            .await
            .unwrap()
    );
}

fn report_applied(hash: &str) -> ConfigReport {
    ConfigReport {
        config_hash: hash.into(),
        state: AgentConfigState::Applied,
        errors: Vec::new(),
        running_config_hash: hash.into(),
        at_ms: 6_000,
        without_trace_pipelines: false,
        without_template_instances: false,
    }
}

async fn audit_trail_records_mutations_without_secrets(db: &TestDb) {
    const PASSWORD: &str = "audit-pw-3c9d";
    let store = db.store().await;
    let shop_admin = Actor::tenant("shop");
    store.create_tenant("shop", &admin()).await.unwrap();
    let (token, _) = store
        .create_api_token(Some("shop"), "ci", &admin())
        .await
        .unwrap();
    store
        .create_cluster(new_cluster("c1", "shop", &[]), HOUR, &admin())
        .await
        .unwrap();
    let join = store
        .mint_join_token("shop.c1", HOUR, &admin())
        .await
        .unwrap();
    // Redeeming also issues (and audits) the certificate.
    redeem(&store, &join, now_ms()).await.unwrap();
    store
        .update_cluster_labels("shop.c1", labels(&[("env", "prod")]), &admin())
        .await
        .unwrap();
    store
        .report(seen("shop.c1", "i1", "0.1.0", now_ms()))
        .await
        .unwrap();
    store
        .apply_pipeline(
            "shop",
            validated(&pipeline_with_secrets("p1", PASSWORD, "h")),
            &shop_admin,
        )
        .await
        .unwrap();
    store
        .apply_pipeline(
            "shop",
            validated(&pipeline_with_secrets("p1", PASSWORD, "h2")),
            &shop_admin,
        )
        .await
        .unwrap();
    store
        .delete_pipeline("shop", "p1", &shop_admin)
        .await
        .unwrap();
    store
        .revoke_api_token(&token.id, &shop_admin)
        .await
        .unwrap();
    store
        .set_cluster_state("shop.c1", ClusterState::Silent, now_ms(), &Actor::system())
        .await
        .unwrap();
    store.delete_cluster("shop.c1", &admin()).await.unwrap();
    store.delete_tenant("shop", &admin()).await.unwrap();

    let entries = store.audit_entries(100).await.unwrap();
    let summary: Vec<(String, String, String, String)> = entries
        .iter()
        .rev()
        .map(|e| {
            (
                e.actor.clone(),
                e.action.clone(),
                e.kind.clone(),
                e.name.clone(),
            )
        })
        .collect();
    let expected = [
        ("admin", "create", "tenant", "shop"),
        ("admin", "create", "api-token", token.id.as_str()),
        ("admin", "create", "cluster", "shop.c1"),
        ("admin", "mint", "join-token", "shop.c1"),
        ("admin", "mint", "join-token", "shop.c1"),
        ("agent:shop.c1", "redeem", "join-token", "shop.c1"),
        ("system", "issue-certificate", "cluster", "shop.c1"),
        ("admin", "update-labels", "cluster", "shop.c1"),
        ("agent:shop.c1", "set-state:active", "cluster", "shop.c1"),
        ("tenant:shop", "create", "pipeline", "p1"),
        ("tenant:shop", "update", "pipeline", "p1"),
        ("tenant:shop", "delete", "pipeline", "p1"),
        ("tenant:shop", "revoke", "api-token", token.id.as_str()),
        ("system", "set-state:silent", "cluster", "shop.c1"),
        ("admin", "delete", "cluster", "shop.c1"),
        ("admin", "delete", "tenant", "shop"),
    ];
    let expected: Vec<(String, String, String, String)> = expected
        .iter()
        .map(|(a, b, c, d)| ((*a).into(), (*b).into(), (*c).into(), (*d).into()))
        .collect();
    assert_eq!(summary, expected);
    assert!(entries.iter().all(|e| e.tenant.as_deref() == Some("shop")));
    assert!(
        entries.windows(2).all(|w| w[0].at_ms >= w[1].at_ms),
        "newest first"
    );
    assert_eq!(store.audit_entries(3).await.unwrap().len(), 3);
    let shown = format!("{entries:?}");
    assert!(!shown.contains(PASSWORD), "{shown}");
}

async fn change_feed_delivers_changes(db: &TestDb) {
    let store = db.store().await;
    let mut feed = store.subscribe();
    store.create_tenant("shop", &admin()).await.unwrap();
    assert_eq!(next_change(&mut feed).await, Change::Tenant("shop".into()));

    store
        .apply_pipeline("shop", pipeline_selecting("p1", None), &admin())
        .await
        .unwrap();
    let p1 = Change::Pipeline {
        tenant: "shop".into(),
        name: "p1".into(),
    };
    assert_eq!(next_change(&mut feed).await, p1);
    // An identical apply changes nothing and publishes nothing.
    store
        .apply_pipeline("shop", pipeline_selecting("p1", None), &admin())
        .await
        .unwrap();
    store
        .apply_pipeline("shop", pipeline_selecting("p1", Some("prod")), &admin())
        .await
        .unwrap();
    assert_eq!(next_change(&mut feed).await, p1);

    store
        .create_cluster(new_cluster("c1", "shop", &[]), HOUR, &admin())
        .await
        .unwrap();
    let c1 = Change::Cluster {
        tenant: "shop".into(),
        id: "shop.c1".into(),
    };
    assert_eq!(next_change(&mut feed).await, c1);
    store
        .report(health_write("shop.c1", serde_json::json!({"ok": true}), 1))
        .await
        .unwrap();
    assert_eq!(
        next_change(&mut feed).await,
        Change::ClusterReport("shop.c1".into())
    );
    store.delete_pipeline("shop", "p1", &admin()).await.unwrap();
    assert_eq!(next_change(&mut feed).await, p1);
    assert!(matches!(
        feed.try_recv(),
        Err(broadcast::error::TryRecvError::Empty)
    ));
}

async fn reopening_runs_migrations_once(db: &TestDb) {
    let first = db.store().await;
    first.create_tenant("shop", &admin()).await.unwrap();
    drop(first);
    let second = db.store().await;
    assert_eq!(second.list_tenants().await.unwrap().len(), 1);
    let applied = Migrator::get_applied_migrations(second.db()).await.unwrap();
    assert_eq!(applied.len(), Migrator::migrations().len());
}

/// Everything waiting on `feed` now, after the writes that caused it returned.
fn drain_feed(feed: &mut broadcast::Receiver<Change>) -> Vec<Change> {
    let mut changes = Vec::new();
    while let Ok(change) = feed.try_recv() {
        changes.push(change);
    }
    changes
}

fn config_report(state: AgentConfigState, hash: &str) -> ConfigReport {
    ConfigReport {
        config_hash: hash.into(),
        state,
        errors: Vec::new(),
        running_config_hash: hash.into(),
        at_ms: 1,
        without_trace_pipelines: false,
        without_template_instances: false,
    }
}

async fn observations_are_published_as_reports_not_desired_state(db: &TestDb) {
    let store = db.store().await;
    store.create_tenant("shop", &admin()).await.unwrap();
    store
        .create_cluster(new_cluster("c1", "shop", &[]), HOUR, &admin())
        .await
        .unwrap();
    store
        .apply_pipeline("shop", pipeline_selecting("p1", None), &admin())
        .await
        .unwrap();
    let mut feed = store.subscribe();
    let c1_report = Change::ClusterReport("shop.c1".into());
    let c1 = Change::Cluster {
        tenant: "shop".into(),
        id: "shop.c1".into(),
    };

    // The first connection makes the cluster active (desired state: probe targets
    // follow states) and connects it (an observation).
    store
        .report(connected("shop.c1", "i1", "0.1.0", 1_000, "r/1"))
        .await
        .unwrap();
    assert_eq!(drain_feed(&mut feed), [c1.clone(), c1_report.clone()]);
    let cluster = store.get_cluster("shop.c1").await.unwrap().unwrap();
    assert_eq!(
        (cluster.state, cluster.connected, cluster.last_seen_ms),
        (ClusterState::Active, true, Some(1_000))
    );
    assert_eq!(
        store.audit_entries(1).await.unwrap()[0].action,
        "set-state:active"
    );
    // The same agent on the same connection again: nothing to announce.
    store
        .report(connected("shop.c1", "i1", "0.1.0", 2_000, "r/1"))
        .await
        .unwrap();
    assert_eq!(drain_feed(&mut feed), []);
    // A new agent version is an observation.
    store
        .report(seen("shop.c1", "i1", "0.2.0", 3_000))
        .await
        .unwrap();
    assert_eq!(drain_feed(&mut feed), std::slice::from_ref(&c1_report));

    // The applied hash is an observation too: no `Cluster` change.
    store
        .report(config_write(
            "shop.c1",
            config_report(AgentConfigState::Applied, "aa"),
        ))
        .await
        .unwrap();
    assert_eq!(drain_feed(&mut feed), std::slice::from_ref(&c1_report));
    assert_eq!(
        store
            .get_cluster("shop.c1")
            .await
            .unwrap()
            .unwrap()
            .applied_config_hash
            .as_deref(),
        Some("aa")
    );

    // A status write is not a pipeline change.
    let status = MetricPipelineStatus {
        observed_generation: Some(1),
        conditions: Vec::new(),
        unsupported_mode: false,
    };
    store
        .set_pipeline_status("shop", "p1", status.clone())
        .await
        .unwrap();
    assert_eq!(
        drain_feed(&mut feed),
        [Change::PipelineStatus {
            tenant: "shop".into(),
            name: "p1".into()
        }]
    );
    store
        .set_pipeline_status("shop", "p1", status)
        .await
        .unwrap();
    assert_eq!(
        drain_feed(&mut feed),
        [],
        "an unchanged status publishes nothing"
    );
}

/// Many streams report at once, as after a pipeline change: the writer batches them,
/// and what is stored is what writing them in order gives.
async fn concurrent_reports_end_as_if_written_one_by_one(db: &TestDb) {
    const CLUSTERS: usize = 40;
    let store = db.store().await;
    store.create_tenant("shop", &admin()).await.unwrap();
    for i in 0..CLUSTERS {
        store
            .create_cluster(new_cluster(&format!("c{i}"), "shop", &[]), HOUR, &admin())
            .await
            .unwrap();
    }
    let mut feed = store.subscribe();
    // Each cluster's agent: connect, APPLYING, APPLIED, health, then APPLYING of a
    // newer configuration; all agents at once.
    let agents = (0..CLUSTERS).map(|i| {
        let store = store.clone();
        async move {
            let name = format!("shop.c{i}");
            store
                .report(connected(&name, "i1", "0.1.0", 10, &format!("r/{i}")))
                .await?;
            store
                .report(config_write(
                    &name,
                    config_report(AgentConfigState::Applying, "aa"),
                ))
                .await?;
            store
                .report(config_write(
                    &name,
                    config_report(AgentConfigState::Applied, "aa"),
                ))
                .await?;
            store
                .report(health_write(&name, serde_json::json!({ "n": i }), 20))
                .await?;
            store
                .report(config_write(
                    &name,
                    config_report(AgentConfigState::Applying, "bb"),
                ))
                .await
        }
    });
    for result in futures_util::future::join_all(agents).await {
        result.unwrap();
    }
    // Several agents' reports in one transaction, APPLYING and APPLIED of one
    // agent in another: whatever the batches were, the end state is the same.
    let rows = store
        .list_clusters_with_reports(Some("shop"), None, None)
        .await
        .unwrap();
    assert_eq!(rows.len(), CLUSTERS);
    for (cluster, report) in rows {
        let i: usize = cluster.name[1..].parse().unwrap();
        assert_eq!(cluster.state, ClusterState::Active, "{}", cluster.id);
        assert!(cluster.connected);
        assert_eq!(cluster.applied_config_hash.as_deref(), Some("aa"));
        let config = report.config.unwrap();
        assert_eq!(
            (config.state.as_str(), config.config_hash.as_str()),
            (AgentConfigState::Applying.as_str(), "bb")
        );
        assert_eq!(report.health, Some(serde_json::json!({ "n": i })));
    }
    // Every cluster announced: its state change and its reports.
    let changes = drain_feed(&mut feed);
    for i in 0..CLUSTERS {
        let name = format!("shop.c{i}");
        assert!(changes.contains(&Change::ClusterReport(name.clone())));
        assert!(changes.contains(&Change::Cluster {
            tenant: "shop".into(),
            id: name,
        }));
    }
}

/// A report about a cluster that does not exist, among good ones: it fails with its
/// own error, the others are stored.
async fn a_bad_report_in_a_batch_fails_alone(db: &TestDb) {
    let store = db.store().await;
    store.create_tenant("shop", &admin()).await.unwrap();
    for name in ["c1", "c2", "c3"] {
        store
            .create_cluster(new_cluster(name, "shop", &[]), HOUR, &admin())
            .await
            .unwrap();
    }
    // Enough rounds that some surely share a batch with the bad one.
    for round in 0..20 {
        let hash = format!("h{round}");
        let reports = ["shop.c1", "nope", "shop.c2", "shop.c3"].map(|name| {
            let store = store.clone();
            let report = config_report(AgentConfigState::Applied, &hash);
            async move { (name, store.report(config_write(name, report)).await) }
        });
        let health = ["shop.c1", "nope"].map(|name| {
            let store = store.clone();
            async move {
                (
                    name,
                    store
                        .report(health_write(name, serde_json::json!({}), 1))
                        .await,
                )
            }
        });
        let (reports, health) = futures_util::future::join(
            futures_util::future::join_all(reports),
            futures_util::future::join_all(health),
        )
        .await;
        for (name, result) in reports.into_iter().chain(health) {
            if name == "nope" {
                assert!(
                    matches!(result, Err(StoreError::NotFound { .. })),
                    "{result:?}"
                );
            } else {
                result.unwrap();
            }
        }
        for name in ["shop.c1", "shop.c2", "shop.c3"] {
            let cluster = store.get_cluster(name).await.unwrap().unwrap();
            assert_eq!(cluster.applied_config_hash.as_deref(), Some(hash.as_str()));
        }
    }
    assert_eq!(store.get_cluster("nope").await.unwrap(), None);
}

/// Reads (on SQLite: the read-only connections) see every write that returned before
/// them.
async fn reads_see_every_committed_write(db: &TestDb) {
    let store = db.store().await;
    store.create_tenant("shop", &admin()).await.unwrap();
    for round in 0..50_i64 {
        let name = format!("c{round}");
        store
            .create_cluster(new_cluster(&name, "shop", &[]), HOUR, &admin())
            .await
            .unwrap();
        let name = format!("shop.{name}");
        assert!(store.get_cluster(&name).await.unwrap().is_some());
        store
            .report(config_write(
                &name,
                config_report(AgentConfigState::Applied, "aa"),
            ))
            .await
            .unwrap();
        assert_eq!(
            store
                .cluster_report(&name)
                .await
                .unwrap()
                .unwrap()
                .config
                .map(|c| c.config_hash),
            Some("aa".to_owned())
        );
        store
            .apply_pipeline(
                "shop",
                pipeline_selecting("p1", Some(&format!("e{round}"))),
                &admin(),
            )
            .await
            .unwrap();
        assert_eq!(
            store
                .get_pipeline("shop", "p1")
                .await
                .unwrap()
                .unwrap()
                .generation,
            round + 1
        );
    }
    store.ping().await.unwrap();
}

async fn clusters_are_listed_with_their_reports_in_pages(db: &TestDb) {
    let store = db.store().await;
    store.create_tenant("shop", &admin()).await.unwrap();
    store.create_tenant("bank", &admin()).await.unwrap();
    for (name, tenant) in [
        ("a1", "shop"),
        ("a2", "bank"),
        ("a3", "shop"),
        ("a4", "shop"),
    ] {
        store
            .create_cluster(new_cluster(name, tenant, &[]), HOUR, &admin())
            .await
            .unwrap();
    }
    store
        .report(config_write(
            "shop.a3",
            config_report(AgentConfigState::Applied, "cc"),
        ))
        .await
        .unwrap();
    store
        .report(health_write("shop.a3", serde_json::json!({"ok": true}), 1))
        .await
        .unwrap();
    store.report(stream_opened("shop.a4", "r/1")).await.unwrap();
    let names = |rows: &[(Cluster, ClusterReport)]| {
        rows.iter()
            .map(|(cluster, report)| {
                assert_eq!(cluster.id, report.cluster);
                cluster.id.clone()
            })
            .collect::<Vec<_>>()
    };

    let all = store
        .list_clusters_with_reports(None, None, None)
        .await
        .unwrap();
    assert_eq!(names(&all), ["bank.a2", "shop.a1", "shop.a3", "shop.a4"]);
    let shop = store
        .list_clusters_with_reports(Some("shop"), None, None)
        .await
        .unwrap();
    assert_eq!(names(&shop), ["shop.a1", "shop.a3", "shop.a4"]);
    // The joined rows carry the same as reading each cluster's report.
    for (cluster, report) in &shop {
        assert_eq!(
            Some(report),
            store.cluster_report(&cluster.id).await.unwrap().as_ref()
        );
        assert_eq!(
            Some(cluster),
            store.get_cluster(&cluster.id).await.unwrap().as_ref()
        );
    }
    assert_eq!(
        shop[1].1.config.as_ref().map(|c| c.config_hash.as_str()),
        Some("cc")
    );
    assert!(shop[2].1.connected && shop[2].0.connected);

    let first = store
        .list_clusters_with_reports(Some("shop"), None, Some(2))
        .await
        .unwrap();
    assert_eq!(names(&first), ["shop.a1", "shop.a3"]);
    let rest = store
        .list_clusters_with_reports(Some("shop"), Some("shop.a3"), Some(2))
        .await
        .unwrap();
    assert_eq!(names(&rest), ["shop.a4"]);

    let picked = store
        .clusters_with_reports(&["shop.a4".into(), "nope".into(), "bank.a2".into()])
        .await
        .unwrap();
    assert_eq!(names(&picked), ["bank.a2", "shop.a4"]);
    assert!(store.clusters_with_reports(&[]).await.unwrap().is_empty());
}

// ---- PostgreSQL replicas ----

async fn change_through_one_replica_reaches_the_other(db: &TestDb) {
    let one = db.store().await;
    let other = db.store().await;
    let mut one_feed = one.subscribe();
    let mut other_feed = other.subscribe();

    one.create_tenant("shop", &admin()).await.unwrap();
    wait_for(
        &mut other_feed,
        &Change::Tenant("shop".into()),
        CROSS_REPLICA_DEADLINE,
    )
    .await;

    let started = std::time::Instant::now();
    one.apply_pipeline("shop", pipeline_selecting("p1", None), &admin())
        .await
        .unwrap();
    let p1 = Change::Pipeline {
        tenant: "shop".into(),
        name: "p1".into(),
    };
    wait_for(&mut other_feed, &p1, CROSS_REPLICA_DEADLINE).await;
    assert!(started.elapsed() < CROSS_REPLICA_DEADLINE);
    assert_eq!(
        other
            .get_pipeline("shop", "p1")
            .await
            .unwrap()
            .unwrap()
            .generation,
        1,
        "the change is visible when it arrives"
    );

    // And back the other way.
    other
        .create_cluster(new_cluster("c1", "shop", &[]), HOUR, &admin())
        .await
        .unwrap();
    wait_for(
        &mut one_feed,
        &Change::Cluster {
            tenant: "shop".into(),
            id: "shop.c1".into(),
        },
        CROSS_REPLICA_DEADLINE,
    )
    .await;

    // A replica sees its own changes once, not again through PostgreSQL.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut own = Vec::new();
    while let Ok(change) = one_feed.try_recv() {
        own.push(change);
    }
    assert!(own.is_empty(), "duplicates: {own:?}");
}

async fn listener_reconnects_after_losing_its_connection(db: &TestDb) {
    let one = db.store().await;
    let other = db.store().await;
    let mut other_feed = other.subscribe();
    one.create_tenant("shop", &admin()).await.unwrap();
    wait_for(
        &mut other_feed,
        &Change::Tenant("shop".into()),
        CROSS_REPLICA_DEADLINE,
    )
    .await;

    // Kill every listening connection on this database (both replicas').
    let killed = one
        .db()
        .query_all_raw(Statement::from_string(
            DbBackend::Postgres,
            "SELECT pg_terminate_backend(pid) AS killed FROM pg_stat_activity \
             WHERE datname = current_database() AND query ILIKE 'LISTEN%'"
                .to_owned(),
        ))
        .await
        .unwrap();
    assert!(!killed.is_empty(), "no listener connection found");

    one.apply_pipeline("shop", pipeline_selecting("p1", None), &admin())
        .await
        .unwrap();
    // Either the notification itself (if the listener was back in time) or the
    // resync after the reconnect brings the change.
    wait_for(
        &mut other_feed,
        &Change::Pipeline {
            tenant: "shop".into(),
            name: "p1".into(),
        },
        Duration::from_secs(10),
    )
    .await;

    // And live notifications flow again.
    one.apply_pipeline("shop", pipeline_selecting("p2", None), &admin())
        .await
        .unwrap();
    wait_for(
        &mut other_feed,
        &Change::Pipeline {
            tenant: "shop".into(),
            name: "p2".into(),
        },
        CROSS_REPLICA_DEADLINE,
    )
    .await;
}

// ---- backend-independent ----

#[tokio::test]
async fn sqlite_open_creates_the_database_in_a_new_directory() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("data").join("observer.db");
    let secrets = SecretBox::generate().unwrap();
    let store = Store::open_sqlite(&path, secrets.clone()).await.unwrap();
    store.create_tenant("shop", &admin()).await.unwrap();
    store.ping().await.unwrap();
    drop(store);
    assert!(path.exists());
    let reopened = Store::open_sqlite(&path, secrets).await.unwrap();
    assert_eq!(reopened.list_tenants().await.unwrap().len(), 1);
}

#[tokio::test]
async fn unsupported_database_urls_are_refused_without_echoing_them() {
    let error = Store::connect(
        "mysql://user:hunter2@db.example/observer",
        SecretBox::generate().unwrap(),
    )
    .await
    .unwrap_err();
    let message = error.to_string();
    assert!(message.contains("\"mysql\""), "{message}");
    assert!(!message.contains("hunter2"), "{message}");
}

#[test]
fn cluster_states_round_trip_through_their_names() {
    for state in [
        ClusterState::Provisioning,
        ClusterState::Active,
        ClusterState::Silent,
        ClusterState::Deleting,
        ClusterState::Deleted,
    ] {
        assert_eq!(state.to_string().parse::<ClusterState>(), Ok(state));
        assert_eq!(
            serde_json::to_string(&state).unwrap(),
            format!("\"{state}\"")
        );
    }
    assert!("gone".parse::<ClusterState>().is_err());
}

#[test]
fn store_changes_survive_the_notification_payload() {
    for change in [
        Change::Tenant("shop".into()),
        Change::Cluster {
            tenant: "shop".into(),
            id: "shop.c1".into(),
        },
        Change::Pipeline {
            tenant: "shop".into(),
            name: "p1".into(),
        },
        Change::PipelineStatus {
            tenant: "shop".into(),
            name: "p1".into(),
        },
        Change::ClusterReport("shop.c1".into()),
    ] {
        let payload = serde_json::to_string(&Notification {
            origin: "o".into(),
            change: change.clone(),
        })
        .unwrap();
        let back: Notification = serde_json::from_str(&payload).unwrap();
        assert_eq!(back.change, change);
    }
}

#[test]
fn store_masks_every_inline_secret() {
    let mut resource = pipeline_with_secrets("p1", "hunter2", "tenant-a");
    mask_secrets::<ValidatedPipeline>(&mut resource);
    let shown = serde_json::to_string(&resource).unwrap();
    assert!(
        !shown.contains("hunter2") && !shown.contains("tenant-a"),
        "{shown}"
    );
    assert_eq!(shown.matches(MASKED_SECRET).count(), 3, "{shown}");
}

/// What the status task reads after a report: each named cluster that exists, with its
/// tenant, state, connection and reports; by name, whichever tenant.
async fn reports_of_reads_reports_with_tenant_and_state(db: &TestDb) {
    let store = db.store().await;
    store.create_tenant("shop", &admin()).await.unwrap();
    store.create_tenant("bank", &admin()).await.unwrap();
    for (name, tenant) in [("c1", "shop"), ("c2", "bank"), ("c3", "shop")] {
        store
            .create_cluster(new_cluster(name, tenant, &[]), HOUR, &admin())
            .await
            .unwrap();
    }
    store
        .report(connected("bank.c2", "i2", "0.1.0", 1_000, "r/1"))
        .await
        .unwrap();
    let report = ConfigReport {
        config_hash: "aa".into(),
        state: AgentConfigState::Applied,
        errors: Vec::new(),
        running_config_hash: "aa".into(),
        at_ms: 2_000,
        without_trace_pipelines: false,
        without_template_instances: false,
    };
    store
        .report(config_write("bank.c2", report.clone()))
        .await
        .unwrap();
    store
        .report(health_write("bank.c2", serde_json::json!({"n": 1}), 3_000))
        .await
        .unwrap();
    let names = ["bank.c2", "nope", "shop.c1"].map(String::from);
    let read = store.reports_of(&names).await.unwrap();
    assert_eq!(
        read,
        [
            ReportedCluster {
                tenant: "bank".into(),
                state: ClusterState::Active,
                report: ClusterReport {
                    cluster: "bank.c2".into(),
                    config: Some(report),
                    health: Some(serde_json::json!({"n": 1})),
                    connected: true,
                },
            },
            ReportedCluster {
                tenant: "shop".into(),
                state: ClusterState::Provisioning,
                report: ClusterReport {
                    cluster: "shop.c1".into(),
                    config: None,
                    health: None,
                    connected: false,
                },
            },
        ]
    );
    assert_eq!(store.reports_of(&[]).await.unwrap(), []);
}
