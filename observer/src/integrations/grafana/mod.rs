//! Grafana per tenant: the observer keeps one Grafana org per tenant, plus the
//! provider's own, current through Grafana's HTTP API (Grafana OSS provisions data
//! sources and dashboards from files only into orgs that already exist, and cannot
//! create orgs from files).
//!
//! # Design
//! * **What each org holds.** The provider's org ([`PROVIDER_ORG`]) gets the data
//!   source [`DATASOURCE_UID`] on the global Thanos query (`--thanos-query-url`, no
//!   tenancy) and every project dashboard: the fleet view. A tenant's org
//!   (`kaas-tenant-<tenant>`, [`tenant_org_name`]) gets the same data source uid on the
//!   tenancy-enforcing Thanos query (`--thanos-query-tenancy-url`), sending the
//!   tenant's name in the tenant header (`--thanos-query-tenant-header`, set as a
//!   secure header value: write-only through the API), and the tenant's dashboards
//!   ([`dashboards::tenant_dashboards`]), all in the folder [`FOLDER_UID`]. Thanos query
//!   with `--query.enforce-tenancy` injects `<tenant label>="<header value>"` into every
//!   selector of every query, replacing any matcher on that label the query had, so a
//!   tenant's queries only ever select series labelled with its own name
//!   (`deploy/integrations/thanos/query.yaml`; `docs/security.md`).
//! * **Who owns what.** The observer owns the orgs named [`PROVIDER_ORG`] and
//!   `kaas-tenant-*`; an org of that prefix whose tenant is gone is deleted, with its
//!   dashboards and data source. Other orgs (Grafana's `Main Org.`) are never touched.
//!   Users and their roles are the provider's (SSO org mapping): a tenant's users are
//!   Viewers or Editors of its org, never its Admins, since an org Admin can edit the
//!   data source's tenant header.
//! * **Idempotent.** Each pass reads before it writes and writes only what differs: an
//!   org that is missing, a data source whose visible settings differ or that this
//!   process has not written yet (its tenant header value cannot be read back, so it is
//!   written once after every start, and again whenever its version moves under the
//!   observer), a folder that is missing, a dashboard whose content or folder differs.
//!   A second pass over an unchanged Grafana makes no change.
//! * **One writer.** Only the replica holding the store lease [`LEASE_NAME`] runs
//!   passes (as the fleet remote-write, `store/leases.rs`); the others try to take it
//!   every [`DEFAULT_RETRY`]. Two writers would take turns rewriting each data source
//!   (each sees the other's version) and race to create the same org.
//! * **When.** On every tenant change (after [`DEFAULT_DEBOUNCE`]) and every
//!   [`DEFAULT_RESYNC`]; a failed pass is logged and retried after [`DEFAULT_RETRY`].
//!   Each pass is counted ([`GrafanaMetrics`]: `kaas_observer_grafana_syncs_total{result}`,
//!   `kaas_observer_grafana_last_success_timestamp_seconds`).
//! * **Secrets.** The admin password comes from a file (`--grafana-admin-password-file`)
//!   and is never logged ([`api`]).

pub mod api;
pub mod dashboards;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use serde_json::Value;
use tokio::sync::broadcast::error::RecvError;
use tokio::task::JoinHandle;
use url::Url;

pub use api::{GrafanaApi, GrafanaApiSettings, GrafanaError, ORG_HEADER, Org};

use crate::store::leases::Lease;
use crate::store::{Change, Store, StoreError};

/// The store lease that elects the replica keeping Grafana current.
pub const LEASE_NAME: &str = "grafana-orgs";
/// The data source uid in every org; the dashboards are preset to it.
pub const DATASOURCE_UID: &str = "kaas-thanos";
/// The data source's name.
pub const DATASOURCE_NAME: &str = "Thanos (kaas-observer)";
/// The folder the observer's dashboards live in, in every org.
pub const FOLDER_UID: &str = "kaas-observer";
/// Its title.
pub const FOLDER_TITLE: &str = "kaas-observer";
/// The provider's org: the fleet view over every tenant.
pub const PROVIDER_ORG: &str = "kaas-provider";
/// The prefix of a tenant's org name; the observer owns every org with it.
pub const TENANT_ORG_PREFIX: &str = "kaas-tenant-";
/// Thanos query's default tenant header (`--query.tenant-header`).
pub const DEFAULT_TENANT_HEADER: &str = "THANOS-TENANT";
/// Rendering everything again without a change: a safety net against an org or
/// dashboard changed in Grafana behind the observer's back, cheap at a few reads per
/// org every five minutes.
pub const DEFAULT_RESYNC: Duration = Duration::from_secs(300);
/// How long to wait after a tenant change for more: creating tenants is bursty.
pub const DEFAULT_DEBOUNCE: Duration = Duration::from_millis(500);
/// How soon a failed pass is tried again: Grafana restarting takes about this long.
pub const DEFAULT_RETRY: Duration = Duration::from_secs(15);
/// How long one API request may take.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// The default pipeline's scrape interval: Grafana's smallest step.
const TIME_INTERVAL: &str = "30s";

/// The org of `tenant`.
pub fn tenant_org_name(tenant: &str) -> String {
    format!("{TENANT_ORG_PREFIX}{tenant}")
}

/// Everything the Grafana sync needs.
#[derive(Clone, Debug)]
pub struct GrafanaSettings {
    /// How to reach Grafana.
    pub api: GrafanaApiSettings,
    /// The global Thanos query, as Grafana reaches it: the provider's data source.
    pub provider_query_url: Url,
    /// The tenancy-enforcing Thanos query, as Grafana reaches it: every tenant's data
    /// source.
    pub tenant_query_url: Url,
    /// The header carrying the tenant to the tenancy-enforcing query.
    pub tenant_header: String,
    /// Render everything again this often.
    pub resync: Duration,
    /// Wait this long after a change for more.
    pub debounce: Duration,
    /// Try a failed pass again after this long.
    pub retry: Duration,
}

/// What one org should hold.
#[derive(Clone, Debug, PartialEq)]
pub struct DesiredOrg {
    /// The org's name.
    pub name: String,
    /// The data source, as the create/update body of Grafana's data source API.
    pub datasource: Value,
    /// The dashboards, in [`FOLDER_UID`].
    pub dashboards: Vec<Value>,
}

/// The data source body: Prometheus flavour Thanos on `url`, sending `tenant` in
/// `header` when given.
pub fn datasource_body(url: &Url, tenant: Option<(&str, &str)>) -> Value {
    let mut body = serde_json::json!({
        "uid": DATASOURCE_UID,
        "name": DATASOURCE_NAME,
        "type": "prometheus",
        "access": "proxy",
        "url": url.as_str(),
        "basicAuth": false,
        "isDefault": true,
        "jsonData": {
            // Long PromQL (the fleet overview's) does not fit in a GET URL.
            "httpMethod": "POST",
            "prometheusType": "Thanos",
            "timeInterval": TIME_INTERVAL,
        },
    });
    if let Some((header, tenant)) = tenant {
        body["jsonData"]["httpHeaderName1"] = header.into();
        body["secureJsonData"] = serde_json::json!({ "httpHeaderValue1": tenant });
    }
    body
}

/// Every org the observer wants, by name: the provider's and one per tenant. Pure.
pub fn desired_orgs(
    settings: &GrafanaSettings,
    tenants: &[String],
) -> Result<BTreeMap<String, DesiredOrg>, dashboards::DashboardError> {
    let mut orgs = BTreeMap::new();
    orgs.insert(
        PROVIDER_ORG.to_owned(),
        DesiredOrg {
            name: PROVIDER_ORG.to_owned(),
            datasource: datasource_body(&settings.provider_query_url, None),
            dashboards: dashboards::provider_dashboards()?,
        },
    );
    for tenant in tenants {
        let name = tenant_org_name(tenant);
        orgs.insert(
            name.clone(),
            DesiredOrg {
                name,
                datasource: datasource_body(
                    &settings.tenant_query_url,
                    Some((&settings.tenant_header, tenant)),
                ),
                dashboards: dashboards::tenant_dashboards(tenant)?,
            },
        );
    }
    Ok(orgs)
}

/// Whether Grafana's stored data source (`GET` answer) has what `desired` sets, except
/// the write-only secure values, of which only the presence can be seen.
fn datasource_matches(stored: &Value, desired: &Value) -> bool {
    let same = |key: &str| stored[key] == desired[key];
    let fields = ["name", "type", "access", "url", "basicAuth", "isDefault"];
    let json_data = desired["jsonData"]
        .as_object()
        .is_some_and(|wanted| wanted.iter().all(|(k, v)| stored["jsonData"][k] == *v));
    let secure = desired["secureJsonData"].as_object().is_none_or(|wanted| {
        wanted
            .keys()
            .all(|k| stored["secureJsonFields"][k] == Value::Bool(true))
    });
    fields.iter().all(|k| same(k)) && json_data && secure
}

/// A dashboard without the fields Grafana assigns (`id`, `version`).
fn comparable(dashboard: &Value) -> Value {
    let mut dashboard = dashboard.clone();
    if let Some(object) = dashboard.as_object_mut() {
        object.remove("id");
        object.remove("version");
    }
    dashboard
}

/// What one pass changed, as `<org>: <change>` lines.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct GrafanaSyncReport {
    /// The changes, in the order made.
    pub changes: Vec<String>,
}

impl GrafanaSyncReport {
    fn note(&mut self, org: &str, change: impl std::fmt::Display) {
        self.changes.push(format!("{org}: {change}"));
    }
}

/// Why a pass failed.
#[derive(Debug, thiserror::Error)]
pub enum GrafanaSyncError {
    /// The tenants could not be read.
    #[error("cannot read the tenants: {0}")]
    Store(#[from] StoreError),
    /// A Grafana request failed.
    #[error(transparent)]
    Grafana(#[from] GrafanaError),
    /// A shipped dashboard is broken.
    #[error(transparent)]
    Dashboard(#[from] dashboards::DashboardError),
}

/// Keeps Grafana's orgs as the tenants say.
pub struct GrafanaOrgs {
    api: GrafanaApi,
    settings: GrafanaSettings,
    /// The data source version this process last wrote, per org id.
    written_datasources: Mutex<HashMap<i64, Option<i64>>>,
}

impl GrafanaOrgs {
    /// A syncer with `settings`; connects lazily.
    pub fn new(settings: GrafanaSettings) -> Result<Self, GrafanaError> {
        Ok(Self {
            api: GrafanaApi::new(settings.api.clone())?,
            settings,
            written_datasources: Mutex::new(HashMap::new()),
        })
    }

    /// One pass for `tenants` (names as the store holds them).
    pub async fn sync(&self, tenants: &[String]) -> Result<GrafanaSyncReport, GrafanaSyncError> {
        let desired = desired_orgs(&self.settings, tenants)?;
        let mut report = GrafanaSyncReport::default();
        let existing: BTreeMap<String, i64> = self
            .api
            .list_orgs()
            .await?
            .into_iter()
            .map(|org| (org.name, org.id))
            .collect();
        for (name, org) in &desired {
            let id = match existing.get(name) {
                Some(id) => *id,
                None => {
                    let id = self.api.create_org(name).await?;
                    report.note(name, format_args!("org created (id {id})"));
                    id
                }
            };
            self.sync_org(id, org, &mut report).await?;
        }
        let owned_and_unwanted = existing.iter().filter(|(name, _)| {
            name.starts_with(TENANT_ORG_PREFIX) && !desired.contains_key(name.as_str())
        });
        for (name, id) in owned_and_unwanted {
            self.api.delete_org(*id).await?;
            self.forget(*id);
            report.note(name, "org deleted: its tenant is gone");
        }
        Ok(report)
    }

    fn forget(&self, org: i64) {
        if let Ok(mut written) = self.written_datasources.lock() {
            written.remove(&org);
        }
    }

    async fn sync_org(
        &self,
        id: i64,
        org: &DesiredOrg,
        report: &mut GrafanaSyncReport,
    ) -> Result<(), GrafanaError> {
        let stored = self.api.datasource(id, DATASOURCE_UID).await?;
        let written_version = self
            .written_datasources
            .lock()
            .ok()
            .and_then(|w| w.get(&id).copied());
        let current = match (&stored, written_version) {
            (Some(stored), Some(version)) => {
                datasource_matches(stored, &org.datasource) && stored["version"].as_i64() == version
            }
            _ => false,
        };
        if !current {
            let version = self
                .api
                .put_datasource(id, DATASOURCE_UID, &org.datasource, stored.is_some())
                .await?;
            if let Ok(mut written) = self.written_datasources.lock() {
                written.insert(id, version);
            }
            let what = if stored.is_some() {
                "written again"
            } else {
                "created"
            };
            report.note(&org.name, format_args!("data source {what}"));
        }
        if self.api.folder(id, FOLDER_UID).await?.is_none() {
            self.api.create_folder(id, FOLDER_UID, FOLDER_TITLE).await?;
            report.note(&org.name, "folder created");
        }
        for dashboard in &org.dashboards {
            let uid = dashboard["uid"].as_str().unwrap_or_default();
            let stored = self.api.dashboard(id, uid).await?;
            let current = stored.as_ref().is_some_and(|stored| {
                comparable(&stored["dashboard"]) == comparable(dashboard)
                    && stored["meta"]["folderUid"] == FOLDER_UID
            });
            if !current {
                self.api.save_dashboard(id, dashboard, FOLDER_UID).await?;
                report.note(&org.name, format_args!("dashboard {uid} written"));
            }
        }
        Ok(())
    }
}

/// Reads the tenants (names the store holds; they are DNS labels).
async fn tenant_names(store: &Store) -> Result<Vec<String>, StoreError> {
    Ok(store
        .list_tenants()
        .await?
        .into_iter()
        .map(|t| t.name)
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect())
}

/// `result` label of `kaas_observer_grafana_syncs_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SyncResult {
    /// `success` or `failure` (tried again after [`DEFAULT_RETRY`]).
    pub result: &'static str,
}

/// The Grafana sync's metrics (names in `docs/metrics.md`).
#[derive(Debug, Default)]
pub struct GrafanaMetrics {
    /// Passes by result.
    pub syncs: Family<SyncResult, Counter>,
    /// Unix seconds of the last successful pass; 0 before the first.
    pub last_success: Gauge<f64, AtomicU64>,
}

impl GrafanaMetrics {
    /// Registers the metrics (counters get their `_total` suffix there).
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "kaas_observer_grafana_syncs",
            "Passes keeping Grafana's orgs current through its API, by result (success, failure: tried again shortly).",
            self.syncs.clone(),
        );
        registry.register(
            "kaas_observer_grafana_last_success_timestamp_seconds",
            "When this replica last brought Grafana's orgs up to date, Unix seconds; 0 if it never did.",
            self.last_success.clone(),
        );
    }

    /// Logs and counts one pass.
    fn record(&self, outcome: &Result<GrafanaSyncReport, GrafanaSyncError>) {
        let result = match outcome {
            Ok(report) => {
                for change in &report.changes {
                    tracing::info!(change = %change, "grafana org kept current");
                }
                let now = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap_or_default();
                self.last_success.set(now.as_secs_f64());
                "success"
            }
            Err(error) => {
                tracing::error!(%error, "cannot bring Grafana's orgs up to date; retrying");
                "failure"
            }
        };
        self.syncs.get_or_create(&SyncResult { result }).inc();
    }
}

/// The running Grafana sync.
pub struct GrafanaSync {
    task: JoinHandle<()>,
    metrics: Arc<GrafanaMetrics>,
}

impl GrafanaSync {
    /// Starts following the store: a first pass at once, then on tenant changes and
    /// every resync. Must be called inside a Tokio runtime.
    pub fn start(store: Store, settings: GrafanaSettings) -> Result<Self, GrafanaError> {
        let orgs = GrafanaOrgs::new(settings)?;
        let metrics = Arc::new(GrafanaMetrics::default());
        let changes = store.subscribe();
        let task = tokio::spawn(run(store, orgs, changes, metrics.clone()));
        Ok(Self { task, metrics })
    }

    /// Registers the sync's metrics.
    pub fn register(&self, registry: &mut Registry) {
        self.metrics.register(registry);
    }

    /// Stops following the store.
    pub fn stop(&self) {
        self.task.abort();
    }
}

impl Drop for GrafanaSync {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Takes or keeps [`LEASE_NAME`]; `true` while this replica holds it. A replica that
/// takes it over forgets which data sources it wrote: the previous holder's writes
/// are not its own.
async fn hold_lease(store: &Store, lease: &mut Option<Lease>, orgs: &GrafanaOrgs) -> bool {
    if let Some(held) = lease
        && !held.is_held().await
    {
        tracing::warn!(lease = LEASE_NAME, "lost the Grafana lease");
        *lease = None;
    }
    if lease.is_some() {
        return true;
    }
    match store.try_lease(LEASE_NAME).await {
        Ok(Some(taken)) => {
            tracing::info!(
                lease = LEASE_NAME,
                "this replica keeps Grafana's orgs current"
            );
            if let Ok(mut written) = orgs.written_datasources.lock() {
                written.clear();
            }
            *lease = Some(taken);
            true
        }
        Ok(None) => false,
        Err(error) => {
            tracing::warn!(%error, lease = LEASE_NAME, "cannot take the Grafana lease");
            false
        }
    }
}

async fn run(
    store: Store,
    orgs: GrafanaOrgs,
    mut changes: tokio::sync::broadcast::Receiver<Change>,
    metrics: Arc<GrafanaMetrics>,
) {
    let settings = orgs.settings.clone();
    let mut wait = Duration::ZERO;
    let mut lease = None;
    loop {
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            change = changes.recv() => match change {
                Ok(Change::Tenant(_)) => {
                    tokio::time::sleep(settings.debounce).await;
                    while let Ok(_) | Err(tokio::sync::broadcast::error::TryRecvError::Lagged(_)) = changes.try_recv() {}
                }
                Ok(_) => continue,
                Err(RecvError::Lagged(_)) => {}
                Err(RecvError::Closed) => return,
            },
        }
        if !hold_lease(&store, &mut lease, &orgs).await {
            wait = settings.retry;
            continue;
        }
        let outcome = match tenant_names(&store).await {
            Ok(tenants) => orgs.sync(&tenants).await,
            Err(error) => Err(error.into()),
        };
        metrics.record(&outcome);
        wait = if outcome.is_ok() {
            settings.resync
        } else {
            settings.retry
        };
    }
}

#[cfg(test)]
mod tests {
    use kaas_pipeline::secret::SecretString;

    use super::*;

    fn settings() -> GrafanaSettings {
        GrafanaSettings {
            api: GrafanaApiSettings {
                url: Url::parse("http://grafana:3000").unwrap(),
                admin_user: "admin".into(),
                admin_password: SecretString::new("secret"),
                ca_pem: None,
                timeout: DEFAULT_REQUEST_TIMEOUT,
            },
            provider_query_url: Url::parse("http://thanos-query:10902").unwrap(),
            tenant_query_url: Url::parse("http://thanos-query-tenancy:10902").unwrap(),
            tenant_header: DEFAULT_TENANT_HEADER.into(),
            resync: DEFAULT_RESYNC,
            debounce: DEFAULT_DEBOUNCE,
            retry: DEFAULT_RETRY,
        }
    }

    /// Issue 15, finding 5: the old files gave Grafana one org (the main org) with one
    /// data source on the global query and a folder per tenant without permissions.
    /// Now each tenant's org has its own data source on the tenancy-enforcing query,
    /// sending the tenant, and only the provider's reads the global query.
    #[test]
    fn each_tenant_org_reads_through_the_tenancy_enforcing_query_with_its_tenant() {
        let orgs = desired_orgs(&settings(), &["bank".into(), "shop".into()]).unwrap();
        assert_eq!(
            orgs.keys().collect::<Vec<_>>(),
            ["kaas-provider", "kaas-tenant-bank", "kaas-tenant-shop"]
        );
        let provider = &orgs["kaas-provider"].datasource;
        assert_eq!(provider["url"], "http://thanos-query:10902/");
        assert!(provider["jsonData"].get("httpHeaderName1").is_none());
        assert!(provider.get("secureJsonData").is_none());
        for tenant in ["bank", "shop"] {
            let datasource = &orgs[&tenant_org_name(tenant)].datasource;
            assert_eq!(datasource["url"], "http://thanos-query-tenancy:10902/");
            assert_eq!(datasource["jsonData"]["httpHeaderName1"], "THANOS-TENANT");
            assert_eq!(datasource["secureJsonData"]["httpHeaderValue1"], tenant);
        }
        assert_eq!(orgs["kaas-provider"].dashboards.len(), 5);
        assert_eq!(orgs["kaas-tenant-shop"].dashboards.len(), 4);
    }

    #[test]
    fn a_stored_data_source_matches_unless_a_visible_setting_differs() {
        let desired = datasource_body(
            &Url::parse("http://q:1").unwrap(),
            Some(("THANOS-TENANT", "shop")),
        );
        let mut stored = desired.clone();
        stored.as_object_mut().unwrap().remove("secureJsonData");
        stored["id"] = 7.into();
        stored["version"] = 3.into();
        stored["jsonData"]["extra"] = "grafana's own".into();
        stored["secureJsonFields"] = serde_json::json!({"httpHeaderValue1": true});
        assert!(datasource_matches(&stored, &desired));
        let mut no_header = stored.clone();
        no_header["secureJsonFields"] = serde_json::json!({});
        assert!(!datasource_matches(&no_header, &desired));
        let mut other_url = stored.clone();
        other_url["url"] = "http://thanos-query:10902/".into();
        assert!(!datasource_matches(&other_url, &desired));
        let mut other_header = stored;
        other_header["jsonData"]["httpHeaderName1"] = "X-Other".into();
        assert!(!datasource_matches(&other_header, &desired));
    }
}
