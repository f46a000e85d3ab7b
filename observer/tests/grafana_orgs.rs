//! Grafana per tenant (issue 15, finding 5) against a recording Grafana API server: an
//! in-process axum server on 127.0.0.1:0 that keeps orgs, data sources, folders and
//! dashboards as Grafana's published HTTP API describes them
//! (`docs/sources/developers/http_api/{org,data_source,folder,dashboard}.md` in
//! grafana/grafana), records every request, and refuses and notes every request that
//! API would not accept (wrong method or path, missing basic authentication or
//! `X-Grafana-Org-Id`, a body without its required fields, a folder or uid that does
//! not exist or already does).
//!
//! Plus the read path no Grafana or Thanos runs here for: the tenant data source's
//! header and URL, the tenancy flags of `deploy/integrations/thanos/query.yaml`, and
//! Thanos' documented enforcement rule applied to queries a tenant could send, run
//! against a real Prometheus holding two tenants' series.

mod postgres_harness;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use kaas_observer::integrations::grafana::{
    self, GrafanaApiSettings, GrafanaError, GrafanaOrgs, GrafanaSettings, GrafanaSync,
    GrafanaSyncError,
};
use kaas_observer::integrations::remote_write::{RemoteWriteSettings, RemoteWriter, Series};
use kaas_observer::integrations::{SeriesSource, WriterSources};
use kaas_observer::secrets::SecretBox;
use kaas_observer::store::{Actor, Store};
use kaas_pipeline::secret::SecretString;
use kaas_test_support::peers::Prometheus;
use serde_json::{Value, json};
use url::Url;

use postgres_harness::TestDatabase;

const ADMIN: &str = "admin";
const PASSWORD: &str = "correct-horse-battery-staple";
/// As the example manifests name them (`deploy/integrations/thanos/query.yaml`).
const GLOBAL_QUERY: &str = "http://thanos-query.kaas-observer-system.svc:10902";
const TENANCY_QUERY: &str = "http://thanos-query-tenancy.kaas-observer-system.svc:10902";
const FOLLOW_DEADLINE: Duration = Duration::from_secs(15);

// ---- the recording Grafana ----

/// One request as the server saw it.
#[derive(Clone, Debug)]
struct Recorded {
    method: Method,
    /// Path and query.
    path: String,
    org: Option<i64>,
    body: Option<Value>,
}

#[derive(Default)]
struct OrgContent {
    /// Data sources by uid, as `GET` shows them (no secure values).
    datasources: BTreeMap<String, Value>,
    /// Their secure values, which Grafana never shows.
    secure: BTreeMap<String, Value>,
    /// Folder uid → title.
    folders: BTreeMap<String, String>,
    /// Dashboards by uid, with their folder uid.
    dashboards: BTreeMap<String, (Value, String)>,
}

#[derive(Default)]
struct FakeGrafana {
    orgs: BTreeMap<i64, String>,
    content: BTreeMap<i64, OrgContent>,
    next_id: i64,
    log: Vec<Recorded>,
    /// Requests Grafana's API would not accept, with why.
    violations: Vec<String>,
}

type Shared = Arc<Mutex<FakeGrafana>>;

fn answer(status: StatusCode, body: Value) -> Response {
    (status, axum::Json(body)).into_response()
}

fn message(status: StatusCode, text: &str) -> Response {
    answer(status, json!({ "message": text }))
}

impl FakeGrafana {
    fn with_orgs(names: &[&str]) -> Self {
        let mut fake = Self {
            next_id: 1,
            ..Self::default()
        };
        for name in names {
            fake.add_org(name);
        }
        fake
    }

    fn add_org(&mut self, name: &str) -> i64 {
        let id = self.next_id;
        self.next_id += 1;
        self.orgs.insert(id, name.to_owned());
        self.content.insert(id, OrgContent::default());
        id
    }

    fn org_id(&self, name: &str) -> Option<i64> {
        self.orgs
            .iter()
            .find(|(_, n)| n.as_str() == name)
            .map(|(id, _)| *id)
    }

    fn refuse(&mut self, status: StatusCode, why: String) -> Response {
        self.violations.push(why.clone());
        message(status, &why)
    }

    fn handle(&mut self, request: Recorded, authorized: bool, json_body: bool) -> Response {
        let what = format!("{} {}", request.method, request.path);
        self.log.push(request.clone());
        if !authorized {
            return self.refuse(
                StatusCode::UNAUTHORIZED,
                format!("{what}: no or wrong basic authentication"),
            );
        }
        if request.body.is_some() && !json_body {
            return self.refuse(
                StatusCode::BAD_REQUEST,
                format!("{what}: a body that is not application/json"),
            );
        }
        let (path, query) = request
            .path
            .split_once('?')
            .unwrap_or((request.path.as_str(), ""));
        let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
        let body = request.body.clone().unwrap_or(Value::Null);
        match (&request.method, segments.as_slice()) {
            (&Method::GET, ["api", "orgs"]) => self.list_orgs(query),
            (&Method::POST, ["api", "orgs"]) => self.create_org(&what, &body),
            (&Method::DELETE, ["api", "orgs", id]) => {
                match id
                    .parse()
                    .ok()
                    .and_then(|id| self.orgs.remove(&id).map(|_| id))
                {
                    Some(id) => {
                        self.content.remove(&id);
                        message(StatusCode::OK, "Organization deleted")
                    }
                    None => message(StatusCode::NOT_FOUND, "Organization not found"),
                }
            }
            (_, ["api", "datasources" | "folders" | "dashboards", ..]) => {
                let Some(org) = request.org.filter(|org| self.orgs.contains_key(org)) else {
                    return self.refuse(
                        StatusCode::UNAUTHORIZED,
                        format!("{what}: no X-Grafana-Org-Id of an existing org"),
                    );
                };
                self.in_org(org, &what, &request.method, &segments, body)
            }
            _ => self.refuse(
                StatusCode::NOT_FOUND,
                format!("{what}: not an API the observer should call"),
            ),
        }
    }

    fn list_orgs(&mut self, query: &str) -> Response {
        let parameters: BTreeMap<&str, usize> = query
            .split('&')
            .filter_map(|p| p.split_once('='))
            .filter_map(|(k, v)| v.parse().ok().map(|v| (k, v)))
            .collect();
        let per_page = parameters.get("perpage").copied().unwrap_or(1000);
        let page = parameters.get("page").copied().unwrap_or(1).max(1);
        let orgs: Vec<Value> = self
            .orgs
            .iter()
            .skip((page - 1) * per_page)
            .take(per_page)
            .map(|(id, name)| json!({ "id": id, "name": name }))
            .collect();
        answer(StatusCode::OK, Value::Array(orgs))
    }

    fn create_org(&mut self, what: &str, body: &Value) -> Response {
        let fields: BTreeSet<&str> = body
            .as_object()
            .map(|o| o.keys().map(String::as_str).collect())
            .unwrap_or_default();
        let Some(name) = body["name"].as_str().filter(|n| !n.is_empty()) else {
            return self.refuse(StatusCode::BAD_REQUEST, format!("{what}: no name"));
        };
        if fields != BTreeSet::from(["name"]) {
            return self.refuse(
                StatusCode::BAD_REQUEST,
                format!("{what}: fields {fields:?}"),
            );
        }
        if self.org_id(name).is_some() {
            return self.refuse(
                StatusCode::CONFLICT,
                format!("{what}: organization name taken"),
            );
        }
        let id = self.add_org(name);
        answer(
            StatusCode::OK,
            json!({ "orgId": id, "message": "Organization created" }),
        )
    }

    fn in_org(
        &mut self,
        org: i64,
        what: &str,
        method: &Method,
        segments: &[&str],
        body: Value,
    ) -> Response {
        match (method, segments) {
            (&Method::GET, ["api", "datasources", "uid", uid]) => {
                match self.content[&org].datasources.get(*uid) {
                    Some(stored) => answer(StatusCode::OK, stored.clone()),
                    None => message(StatusCode::NOT_FOUND, "Data source not found"),
                }
            }
            (&Method::POST, ["api", "datasources"]) => self.put_datasource(org, what, None, body),
            (&Method::PUT, ["api", "datasources", "uid", uid]) => {
                self.put_datasource(org, what, Some(uid), body)
            }
            (&Method::GET, ["api", "folders", uid]) => match self.content[&org].folders.get(*uid) {
                Some(title) => answer(StatusCode::OK, json!({ "uid": uid, "title": title })),
                None => message(StatusCode::NOT_FOUND, "folder not found"),
            },
            (&Method::POST, ["api", "folders"]) => {
                let (Some(uid), Some(title)) = (body["uid"].as_str(), body["title"].as_str())
                else {
                    return self.refuse(StatusCode::BAD_REQUEST, format!("{what}: uid and title"));
                };
                let folders = &mut self.content.get_mut(&org).expect("the org").folders;
                if folders.contains_key(uid) {
                    return self.refuse(
                        StatusCode::CONFLICT,
                        format!("{what}: a folder with that uid exists"),
                    );
                }
                folders.insert(uid.to_owned(), title.to_owned());
                answer(StatusCode::OK, json!({ "uid": uid, "title": title }))
            }
            (&Method::GET, ["api", "dashboards", "uid", uid]) => {
                match self.content[&org].dashboards.get(*uid) {
                    Some((dashboard, folder)) => answer(
                        StatusCode::OK,
                        json!({ "dashboard": dashboard, "meta": { "folderUid": folder } }),
                    ),
                    None => message(StatusCode::NOT_FOUND, "Dashboard not found"),
                }
            }
            (&Method::POST, ["api", "dashboards", "db"]) => self.save_dashboard(org, what, body),
            _ => self.refuse(
                StatusCode::NOT_FOUND,
                format!("{what}: not an API the observer should call"),
            ),
        }
    }

    fn put_datasource(
        &mut self,
        org: i64,
        what: &str,
        uid: Option<&str>,
        mut body: Value,
    ) -> Response {
        for field in ["name", "type", "access", "url"] {
            if body[field].as_str().is_none_or(str::is_empty) {
                return self.refuse(StatusCode::BAD_REQUEST, format!("{what}: no {field}"));
            }
        }
        let content = self.content.get_mut(&org).expect("the org");
        let body_uid = body["uid"].as_str().unwrap_or_default().to_owned();
        let previous = match uid {
            Some(uid) => match content.datasources.get(uid) {
                Some(previous) => Some(previous.clone()),
                None => return message(StatusCode::NOT_FOUND, "Data source not found"),
            },
            None if content.datasources.contains_key(&body_uid) => {
                return self.refuse(
                    StatusCode::CONFLICT,
                    format!("{what}: data source with the same uid already exists"),
                );
            }
            None => None,
        };
        let secure = body
            .as_object_mut()
            .and_then(|o| o.remove("secureJsonData"))
            .unwrap_or_else(|| json!({}));
        let stored_secure = content.secure.entry(body_uid.clone()).or_insert(json!({}));
        for (key, value) in secure.as_object().into_iter().flatten() {
            stored_secure[key] = value.clone();
        }
        let fields: serde_json::Map<String, Value> = stored_secure
            .as_object()
            .into_iter()
            .flatten()
            .map(|(k, _)| (k.clone(), Value::Bool(true)))
            .collect();
        let version = previous
            .as_ref()
            .map_or(0, |p| p["version"].as_i64().unwrap_or(0))
            + 1;
        body["id"] = previous
            .as_ref()
            .map_or(json!(self.next_id), |p| p["id"].clone());
        body["orgId"] = org.into();
        body["version"] = version.into();
        body["readOnly"] = false.into();
        body["secureJsonFields"] = Value::Object(fields);
        content.datasources.insert(body_uid, body.clone());
        self.next_id += 1;
        let verb = if previous.is_some() {
            "updated"
        } else {
            "added"
        };
        answer(
            StatusCode::OK,
            json!({ "datasource": body, "id": body["id"], "message": format!("Datasource {verb}"), "name": body["name"] }),
        )
    }

    fn save_dashboard(&mut self, org: i64, what: &str, body: Value) -> Response {
        let dashboard = body["dashboard"].clone();
        let Some(uid) = dashboard["uid"].as_str().map(str::to_owned) else {
            return self.refuse(StatusCode::BAD_REQUEST, format!("{what}: dashboard.uid"));
        };
        if dashboard["title"].as_str().is_none() {
            return self.refuse(StatusCode::BAD_REQUEST, format!("{what}: dashboard.title"));
        }
        let Some(folder) = body["folderUid"].as_str().map(str::to_owned) else {
            return self.refuse(StatusCode::BAD_REQUEST, format!("{what}: folderUid"));
        };
        if !self.content[&org].folders.contains_key(&folder) {
            return self.refuse(
                StatusCode::BAD_REQUEST,
                format!("{what}: folder {folder} does not exist"),
            );
        }
        let existing = self.content[&org].dashboards.get(&uid).cloned();
        if existing.is_some() && body["overwrite"] != Value::Bool(true) {
            return self.refuse(
                StatusCode::PRECONDITION_FAILED,
                format!("{what}: a dashboard with the same uid already exists"),
            );
        }
        if !dashboard["id"].is_null() {
            return self.refuse(
                StatusCode::BAD_REQUEST,
                format!("{what}: dashboard.id must be null to create or overwrite by uid"),
            );
        }
        let version = existing
            .as_ref()
            .map_or(0, |(d, _)| d["version"].as_i64().unwrap_or(0))
            + 1;
        let mut stored = dashboard;
        stored["id"] = existing
            .as_ref()
            .map_or(json!(self.next_id), |(d, _)| d["id"].clone());
        stored["version"] = version.into();
        self.next_id += 1;
        self.content
            .get_mut(&org)
            .expect("the org")
            .dashboards
            .insert(uid.clone(), (stored, folder));
        answer(
            StatusCode::OK,
            json!({ "uid": uid, "status": "success", "version": version }),
        )
    }
}

async fn handle(
    State(fake): State<Shared>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let expected = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{ADMIN}:{PASSWORD}"))
    );
    let authorized = headers
        .get(axum::http::header::AUTHORIZATION)
        .is_some_and(|value| value.as_bytes() == expected.as_bytes());
    let json_body = headers
        .get(axum::http::header::CONTENT_TYPE)
        .is_some_and(|value| value.as_bytes().starts_with(b"application/json"));
    let org = headers
        .get(grafana::ORG_HEADER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok());
    let body = (!body.is_empty()).then(|| serde_json::from_slice(&body).unwrap_or(Value::Null));
    let request = Recorded {
        method,
        path: uri
            .path_and_query()
            .map_or_else(|| uri.path().to_owned(), |p| p.as_str().to_owned()),
        org,
        body,
    };
    fake.lock()
        .expect("the fake")
        .handle(request, authorized, json_body)
}

/// Serves `fake` on 127.0.0.1:0; stops with the runtime.
async fn serve(fake: FakeGrafana) -> (Shared, Url) {
    let shared: Shared = Arc::new(Mutex::new(fake));
    let app = axum::Router::new()
        .fallback(handle)
        .with_state(shared.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("a loopback port");
    let url = Url::parse(&format!(
        "http://{}/",
        listener.local_addr().expect("its address")
    ))
    .expect("a URL");
    tokio::spawn(async move {
        axum::serve(listener, app).await.expect("serve");
    });
    (shared, url)
}

fn settings(url: &Url, password: &str) -> GrafanaSettings {
    GrafanaSettings {
        api: GrafanaApiSettings {
            url: url.clone(),
            admin_user: ADMIN.into(),
            admin_password: SecretString::new(password),
            ca_pem: None,
            timeout: Duration::from_secs(5),
        },
        provider_query_url: Url::parse(GLOBAL_QUERY).expect("a URL"),
        tenant_query_url: Url::parse(TENANCY_QUERY).expect("a URL"),
        tenant_header: grafana::DEFAULT_TENANT_HEADER.into(),
        resync: Duration::from_secs(3600),
        debounce: Duration::from_millis(50),
        retry: Duration::from_millis(200),
    }
}

fn tenants(names: &[&str]) -> Vec<String> {
    names.iter().map(|n| (*n).to_owned()).collect()
}

/// What the fake holds in the org named `name`: (data source, secure values,
/// dashboards by uid with their folder).
fn org_content(fake: &Shared, name: &str) -> (Value, Value, BTreeMap<String, (Value, String)>) {
    let fake = fake.lock().expect("the fake");
    let id = fake.org_id(name).unwrap_or_else(|| panic!("no org {name}"));
    let content = &fake.content[&id];
    (
        content
            .datasources
            .get(grafana::DATASOURCE_UID)
            .cloned()
            .unwrap_or(Value::Null),
        content
            .secure
            .get(grafana::DATASOURCE_UID)
            .cloned()
            .unwrap_or(Value::Null),
        content.dashboards.clone(),
    )
}

fn org_names(fake: &Shared) -> BTreeSet<String> {
    fake.lock()
        .expect("the fake")
        .orgs
        .values()
        .cloned()
        .collect()
}

fn set(items: &[&str]) -> BTreeSet<String> {
    items.iter().map(|s| (*s).to_owned()).collect()
}

/// Issue 15, finding 5: the old code provisioned Grafana from files into one org (the
/// main org, which every new Grafana user joins): one data source on the global
/// Thanos query and a folder per tenant without permissions, so every user could read
/// every tenant. Now each tenant gets its own org, created through the API, whose data
/// source reads the tenancy-enforcing query with the tenant in the tenant header and
/// whose dashboards are the tenant's; the provider gets the fleet view in its own org;
/// orgs the observer does not own are never touched; a second pass changes nothing;
/// a removed tenant's org is deleted; a data source changed behind the observer's back
/// is written again.
#[tokio::test]
async fn each_tenant_gets_an_org_reading_through_tenancy_and_passes_are_idempotent() {
    let (fake, url) = serve(FakeGrafana::with_orgs(&["Main Org.", "ops-team"])).await;
    let orgs = GrafanaOrgs::new(settings(&url, PASSWORD)).expect("a client");

    let report = orgs
        .sync(&tenants(&["bank", "shop"]))
        .await
        .expect("a pass");
    assert!(!report.changes.is_empty());
    assert_eq!(
        org_names(&fake),
        set(&[
            "Main Org.",
            "ops-team",
            "kaas-provider",
            "kaas-tenant-bank",
            "kaas-tenant-shop"
        ])
    );
    for tenant in ["bank", "shop"] {
        let (datasource, secure, dashboards) =
            org_content(&fake, &grafana::tenant_org_name(tenant));
        assert_eq!(datasource["url"], format!("{TENANCY_QUERY}/"));
        assert_eq!(datasource["type"], "prometheus");
        assert_eq!(datasource["jsonData"]["httpHeaderName1"], "THANOS-TENANT");
        assert_eq!(secure["httpHeaderValue1"], tenant, "the tenant's header");
        assert_eq!(
            dashboards
                .keys()
                .map(String::as_str)
                .collect::<BTreeSet<_>>(),
            BTreeSet::from([
                "kaas-cluster-detail",
                "kaas-fleet-overview",
                "kaas-pipelines",
                "kaas-probes"
            ])
        );
        for (dashboard, folder) in dashboards.values() {
            assert_eq!(folder, grafana::FOLDER_UID);
            let variables = dashboard["templating"]["list"]
                .as_array()
                .expect("variables");
            let datasource = variables
                .iter()
                .find(|v| v["type"] == "datasource")
                .expect("a data source variable");
            assert_eq!(datasource["current"]["value"], grafana::DATASOURCE_UID);
        }
        let overview = &dashboards["kaas-fleet-overview"].0;
        let variables = overview["templating"]["list"]
            .as_array()
            .expect("variables");
        let fixed = variables
            .iter()
            .find(|v| v["name"] == "tenant")
            .expect("the tenant variable");
        assert_eq!(fixed["type"], "constant");
        assert_eq!(fixed["query"], tenant);
    }
    let (provider, provider_secure, provider_dashboards) = org_content(&fake, "kaas-provider");
    assert_eq!(provider["url"], format!("{GLOBAL_QUERY}/"));
    assert!(provider["jsonData"].get("httpHeaderName1").is_none());
    assert_eq!(provider_secure, json!({}));
    assert_eq!(provider_dashboards.len(), 5);
    assert!(provider_dashboards.contains_key("kaas-self-health"));
    {
        let fake = fake.lock().expect("the fake");
        assert!(fake.violations.is_empty(), "{:?}", fake.violations);
        // The orgs the observer does not own (ids 1 and 2) were never acted in.
        let foreign: Vec<&Recorded> = fake
            .log
            .iter()
            .filter(|r| {
                matches!(r.org, Some(1 | 2))
                    || r.path.starts_with("/api/orgs/1")
                    || r.path.starts_with("/api/orgs/2")
            })
            .collect();
        assert!(foreign.is_empty(), "{foreign:?}");
    }

    // A second pass over an unchanged Grafana: reads only.
    let before = fake.lock().expect("the fake").log.len();
    let report = orgs
        .sync(&tenants(&["bank", "shop"]))
        .await
        .expect("a pass");
    assert_eq!(report.changes, Vec::<String>::new());
    let writes: Vec<Recorded> = fake.lock().expect("the fake").log[before..]
        .iter()
        .filter(|r| r.method != Method::GET)
        .cloned()
        .collect();
    assert!(writes.is_empty(), "{writes:?}");

    // An org Admin points shop's data source at the bank: written back at once.
    {
        let mut fake = fake.lock().expect("the fake");
        let shop = fake.org_id("kaas-tenant-shop").expect("shop's org");
        let content = fake.content.get_mut(&shop).expect("its content");
        content.secure.insert(
            grafana::DATASOURCE_UID.into(),
            json!({ "httpHeaderValue1": "bank" }),
        );
        let stored = content
            .datasources
            .get_mut(grafana::DATASOURCE_UID)
            .expect("the data source");
        stored["version"] = json!(stored["version"].as_i64().unwrap_or(0) + 1);
    }
    let report = orgs
        .sync(&tenants(&["bank", "shop"]))
        .await
        .expect("a pass");
    assert_eq!(
        report.changes,
        vec!["kaas-tenant-shop: data source written again".to_owned()]
    );
    let (_, secure, _) = org_content(&fake, "kaas-tenant-shop");
    assert_eq!(secure["httpHeaderValue1"], "shop");

    // The bank goes: its org goes with it; the others stay.
    let bank = fake
        .lock()
        .expect("the fake")
        .org_id("kaas-tenant-bank")
        .expect("the bank's org");
    let report = orgs.sync(&tenants(&["shop"])).await.expect("a pass");
    assert_eq!(
        report.changes,
        vec!["kaas-tenant-bank: org deleted: its tenant is gone".to_owned()]
    );
    assert_eq!(
        org_names(&fake),
        set(&["Main Org.", "ops-team", "kaas-provider", "kaas-tenant-shop"])
    );
    let deleted = fake
        .lock()
        .expect("the fake")
        .log
        .iter()
        .any(|r| r.method == Method::DELETE && r.path == format!("/api/orgs/{bank}"));
    assert!(deleted);

    // After a restart the data sources are written once (their secure header cannot
    // be read back), then nothing again.
    let restarted = GrafanaOrgs::new(settings(&url, PASSWORD)).expect("a client");
    let report = restarted.sync(&tenants(&["shop"])).await.expect("a pass");
    assert_eq!(
        report.changes,
        vec![
            "kaas-provider: data source written again".to_owned(),
            "kaas-tenant-shop: data source written again".to_owned()
        ]
    );
    let report = restarted.sync(&tenants(&["shop"])).await.expect("a pass");
    assert_eq!(report.changes, Vec::<String>::new());
    let violations = fake.lock().expect("the fake").violations.clone();
    assert!(violations.is_empty(), "{violations:?}");
}

/// Issue 15, finding 5: a wrong admin password fails the pass with Grafana's 401,
/// changes nothing, and the password is in no error.
#[tokio::test]
async fn a_wrong_password_fails_without_showing_it() {
    let (fake, url) = serve(FakeGrafana::with_orgs(&["Main Org."])).await;
    let wrong = "not-the-password-4711";
    let orgs = GrafanaOrgs::new(settings(&url, wrong)).expect("a client");
    let error = orgs.sync(&tenants(&["shop"])).await.expect_err("refused");
    match &error {
        GrafanaSyncError::Grafana(GrafanaError::Status { status, .. }) => {
            assert_eq!(status.as_u16(), 401);
        }
        other => panic!("{other:?}"),
    }
    let shown = format!("{error} {error:?}");
    assert!(!shown.contains(wrong), "{shown}");
    assert!(!shown.contains(PASSWORD), "{shown}");
    assert_eq!(org_names(&fake), set(&["Main Org."]));
}

async fn sqlite_store(dir: &Path) -> Store {
    let secrets = SecretBox::generate().expect("a secrets key");
    Store::open_sqlite(&dir.join("observer.db"), secrets)
        .await
        .expect("a SQLite store")
}

async fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    let until = Instant::now() + FOLLOW_DEADLINE;
    while !check() {
        assert!(
            Instant::now() < until,
            "{what} did not happen within {FOLLOW_DEADLINE:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Issue 15, finding 5: the running sync follows the store: a new tenant's org
/// appears, a deleted tenant's org goes.
#[tokio::test]
async fn the_running_sync_follows_tenants() {
    let data = tempfile::tempdir().expect("a directory");
    let store = sqlite_store(data.path()).await;
    store
        .create_tenant("shop", &Actor::admin())
        .await
        .expect("a tenant");
    let (fake, url) = serve(FakeGrafana::with_orgs(&["Main Org."])).await;
    let sync = GrafanaSync::start(store.clone(), settings(&url, PASSWORD)).expect("started");
    eventually("the shop's org", || {
        org_names(&fake).contains("kaas-tenant-shop")
    })
    .await;
    store
        .create_tenant("cafe", &Actor::admin())
        .await
        .expect("a tenant");
    eventually("the cafe's org", || {
        org_names(&fake).contains("kaas-tenant-cafe")
    })
    .await;
    store
        .delete_tenant("shop", &Actor::admin())
        .await
        .expect("deleted");
    eventually("the shop's org to go", || {
        !org_names(&fake).contains("kaas-tenant-shop")
    })
    .await;
    assert_eq!(
        org_names(&fake),
        set(&["Main Org.", "kaas-provider", "kaas-tenant-cafe"])
    );
    let violations = fake.lock().expect("the fake").violations.clone();
    assert!(violations.is_empty(), "{violations:?}");
    // Each pass is counted once it ends, and the last success is recent. The third
    // pass's deletion is visible at the fake before that pass counts itself, so the
    // count is awaited like the orgs.
    let mut registry = prometheus_client::registry::Registry::default();
    sync.register(&mut registry);
    let value = |series: &str| -> f64 {
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).expect("an exposition");
        text.lines()
            .find_map(|line| line.strip_prefix(series)?.trim().parse().ok())
            .unwrap_or_else(|| panic!("no {series} in\n{text}"))
    };
    eventually("three successful passes counted", || {
        value(r#"kaas_observer_grafana_syncs_total{result="success"}"#) >= 3.0
    })
    .await;
    assert!(value("kaas_observer_grafana_last_success_timestamp_seconds") > 1.0e9);
}

/// Of two replicas on one PostgreSQL, only the lease holder keeps Grafana current: in
/// steady state no pass writes anything (two writers would take turns rewriting each
/// data source, each seeing the other's version), and when the holder stops the other
/// takes over and follows the next tenant.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn of_two_replicas_one_keeps_grafana_and_the_other_takes_over() {
    let Some(database) = TestDatabase::create("grafana").await else {
        return;
    };
    {
        let stores = [database.store().await, database.store().await];
        stores[0]
            .create_tenant("shop", &Actor::admin())
            .await
            .expect("a tenant");
        let (fake, url) = serve(FakeGrafana::with_orgs(&["Main Org."])).await;
        let fast = || GrafanaSettings {
            resync: Duration::from_millis(100),
            retry: Duration::from_millis(100),
            ..settings(&url, PASSWORD)
        };
        // The first replica starts alone and takes the lease.
        let first = GrafanaSync::start(stores[0].clone(), fast()).expect("started");
        eventually("the shop's org", || {
            org_names(&fake).contains("kaas-tenant-shop")
        })
        .await;
        let second = GrafanaSync::start(stores[1].clone(), fast()).expect("started");
        // Let the replicas make many more passes: every request in them reads.
        let requests = || fake.lock().expect("the fake").log.len();
        eventually("the first dashboards", || {
            fake.lock()
                .expect("the fake")
                .log
                .iter()
                .filter(|r| r.path == "/api/dashboards/db")
                .count()
                >= 9
        })
        .await;
        let settled = requests() + 10;
        eventually("ten more requests", || requests() > settled).await;
        let steady = requests();
        eventually("a hundred more requests", || requests() > steady + 100).await;
        let writes: Vec<Recorded> = fake.lock().expect("the fake").log[steady..]
            .iter()
            .filter(|r| r.method != Method::GET)
            .cloned()
            .collect();
        assert!(writes.is_empty(), "in steady state: {writes:?}");

        // The holder stops (its lease goes with it); the other takes over and follows
        // the next tenant.
        first.stop();
        stores[1]
            .create_tenant("cafe", &Actor::admin())
            .await
            .expect("a tenant");
        eventually("the cafe's org", || {
            org_names(&fake).contains("kaas-tenant-cafe")
        })
        .await;
        let violations = fake.lock().expect("the fake").violations.clone();
        assert!(violations.is_empty(), "{violations:?}");
        drop(second);
    }
    database.drop_now().await;
}

// ---- the read path: the querier's tenancy ----

/// The arguments of the container of the Deployment `name` in
/// `deploy/integrations/thanos/query.yaml`.
fn query_args(name: &str) -> Vec<String> {
    let path =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/integrations/thanos/query.yaml");
    let text = std::fs::read_to_string(&path).expect("query.yaml");
    for document in serde_yaml::Deserializer::from_str(&text) {
        let value: serde_yaml::Value =
            serde::Deserialize::deserialize(document).expect("a YAML document");
        if value["kind"] == "Deployment" && value["metadata"]["name"] == name {
            return serde_yaml::from_value(
                value["spec"]["template"]["spec"]["containers"][0]["args"].clone(),
            )
            .expect("a list of arguments");
        }
    }
    panic!("no Deployment {name} in {}", path.display());
}

/// The value of `--flag=value` in `args`.
fn flag<'a>(args: &'a [String], name: &str) -> Option<&'a str> {
    args.iter()
        .find_map(|a| a.strip_prefix(&format!("--{name}=")))
}

/// A PromQL vector selector: `{name op "value", ...}`.
#[derive(Clone, Debug)]
struct Selector(Vec<(String, &'static str, String)>);

impl Selector {
    fn new(matchers: &[(&str, &'static str, &str)]) -> Self {
        Self(
            matchers
                .iter()
                .map(|(n, op, v)| ((*n).to_owned(), *op, (*v).to_owned()))
                .collect(),
        )
    }

    fn promql(&self) -> String {
        let matchers: Vec<String> = self
            .0
            .iter()
            .map(|(n, op, v)| format!("{n}{op}{v:?}"))
            .collect();
        format!("{{{}}}", matchers.join(","))
    }

    /// Thanos query's enforcement (`pkg/tenancy`, `EnforceQueryTenancy` and
    /// `getLabelMatchers`, through prom-label-proxy's enforcer without
    /// `errorOnReplace`): every matcher on the tenant label is dropped and
    /// `<label>="<tenant>"` appended, in every selector of the query.
    fn enforced(&self, label: &str, tenant: &str) -> Self {
        let mut matchers: Vec<_> = self
            .0
            .iter()
            .filter(|(n, _, _)| n != label)
            .cloned()
            .collect();
        matchers.push((label.to_owned(), "=", tenant.to_owned()));
        Self(matchers)
    }
}

/// Issue 15, finding 5: the old Thanos query enforced no tenancy on reads, and the
/// one data source read it. Now a tenant's data source (as the observer writes it into
/// the tenant's org) names the query Deployment that runs `--query.enforce-tenancy`
/// and sends the tenant in the header that query reads; applying Thanos' documented
/// rule with that Deployment's flags to the queries a tenant could send for another
/// tenant's series, against a real Prometheus holding both tenants' series, returns
/// nothing of the other tenant, while the same queries unenforced do (so the test can
/// fail). A request without the header gets the default tenant, which selects nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_data_source_never_selects_another_tenants_series() {
    // The querier: the tenancy Deployment enforces; the global one does not.
    let tenancy = query_args("thanos-query-tenancy");
    assert!(
        tenancy.iter().any(|a| a == "--query.enforce-tenancy"),
        "{tenancy:?}"
    );
    let header = flag(&tenancy, "query.tenant-header").expect("--query.tenant-header");
    let label = flag(&tenancy, "query.tenant-label-name").expect("--query.tenant-label-name");
    let default_tenant =
        flag(&tenancy, "query.default-tenant-id").expect("--query.default-tenant-id");
    assert_eq!(
        label, "tenant",
        "the label the gateway sets and the fleet series carry"
    );
    assert!(
        kaas_pipeline::names::check_dns1123_label(default_tenant).is_err(),
        "the default tenant {default_tenant:?} must be a name no tenant can have"
    );
    let global = query_args("thanos-query");
    assert!(
        !global
            .iter()
            .any(|a| a.starts_with("--query.enforce-tenancy"))
    );

    // The data source the observer writes into the shop's org.
    let (fake, url) = serve(FakeGrafana::with_orgs(&["Main Org."])).await;
    let orgs = GrafanaOrgs::new(settings(&url, PASSWORD)).expect("a client");
    orgs.sync(&tenants(&["bank", "shop"]))
        .await
        .expect("a pass");
    let (datasource, secure, _) = org_content(&fake, "kaas-tenant-shop");
    let datasource_url = Url::parse(datasource["url"].as_str().expect("a URL")).expect("a URL");
    assert_eq!(
        datasource_url.host_str().and_then(|h| h.split('.').next()),
        Some("thanos-query-tenancy"),
        "the tenant's data source reads the Service of the enforcing Deployment"
    );
    assert_eq!(datasource["jsonData"]["httpHeaderName1"], header);
    let tenant = secure["httpHeaderValue1"]
        .as_str()
        .expect("the tenant header's value");
    assert_eq!(tenant, "shop");

    // Both tenants' series in a real Prometheus, as the gateway and the observer
    // label them; the bank's workload also claims the shop in its own label.
    let data = tempfile::tempdir().expect("a directory");
    let peer = tempfile::tempdir().expect("a directory");
    let prometheus = Prometheus::receiver(peer.path());
    let store = sqlite_store(data.path()).await;
    let source: SeriesSource = Arc::new(|| {
        vec![
            Series::new(
                "kaas_cluster_info",
                [
                    ("tenant", "shop".to_owned()),
                    ("cluster", "shop.edge-1".to_owned()),
                ],
                1.0,
            ),
            Series::new(
                "kaas_cluster_info",
                [
                    ("tenant", "bank".to_owned()),
                    ("cluster", "bank.core-1".to_owned()),
                ],
                1.0,
            ),
            Series::new(
                "up",
                [
                    ("tenant", "shop".to_owned()),
                    ("cluster", "shop.edge-1".to_owned()),
                    ("job", "web".to_owned()),
                ],
                1.0,
            ),
            Series::new(
                "up",
                [
                    ("tenant", "bank".to_owned()),
                    ("cluster", "bank.core-1".to_owned()),
                    ("job", "web".to_owned()),
                    ("exported_tenant", "shop".to_owned()),
                ],
                1.0,
            ),
        ]
    });
    let mut write = RemoteWriteSettings::new(Url::parse(&prometheus.write_url()).expect("a URL"));
    write.interval = Duration::from_millis(200);
    let _writer = RemoteWriter::start(
        store,
        write,
        WriterSources {
            shared: vec![source],
            per_replica: Vec::new(),
        },
    )
    .expect("a writer");
    tokio::task::block_in_place(|| {
        prometheus.wait_for(
            r#"count(up) == 2 and count(kaas_cluster_info) == 2"#,
            FOLLOW_DEADLINE,
        )
    });

    let attempts = [
        Selector::new(&[
            ("__name__", "=", "kaas_cluster_info"),
            ("tenant", "=", "bank"),
        ]),
        Selector::new(&[("__name__", "=~", ".+")]),
        Selector::new(&[("__name__", "=", "up"), ("tenant", "!=", "shop")]),
        Selector::new(&[("__name__", "=", "up"), ("tenant", "=~", "bank|shop")]),
        Selector::new(&[("cluster", "=", "bank.core-1")]),
        Selector::new(&[("__name__", "=", "up"), ("exported_tenant", "=", "shop")]),
    ];
    let query =
        |selector: &Selector| tokio::task::block_in_place(|| prometheus.query(&selector.promql()));
    let mut unenforced_bank = 0;
    for attempt in &attempts {
        unenforced_bank += query(attempt)
            .iter()
            .filter(|s| s["metric"]["tenant"] == "bank")
            .count();
        let enforced = attempt.enforced(label, tenant);
        for series in query(&enforced) {
            assert_eq!(
                series["metric"]["tenant"],
                "shop",
                "{} enforced as {} returned {series}",
                attempt.promql(),
                enforced.promql()
            );
        }
        // Without the header: the default tenant.
        let anonymous = attempt.enforced(label, default_tenant);
        assert!(query(&anonymous).is_empty(), "{}", anonymous.promql());
    }
    assert!(
        unenforced_bank >= 4,
        "the attempts do reach the bank's series unenforced"
    );
    // The shop still sees its own.
    let own = query(&Selector::new(&[("__name__", "=~", ".+")]).enforced(label, tenant));
    assert_eq!(own.len(), 2, "{own:?}");
    // Asking for the bank's cluster by name returns nothing at all; asking for the
    // bank's tenant is rewritten to the shop's own (the rule replaces the matcher).
    assert!(query(&attempts[4].enforced(label, tenant)).is_empty());
    let rewritten = query(&attempts[0].enforced(label, tenant));
    assert_eq!(rewritten.len(), 1, "{rewritten:?}");
    assert_eq!(rewritten[0]["metric"]["cluster"], "shop.edge-1");
}

/// The nginx allow-list of `thanos-query-tenancy` (`deploy/integrations/thanos/query.yaml`),
/// with this test's ports.
fn allow_list(listen: u16, upstream: u16) -> String {
    let path =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/integrations/thanos/query.yaml");
    let text = std::fs::read_to_string(&path).expect("query.yaml");
    for document in serde_yaml::Deserializer::from_str(&text) {
        let value: serde_yaml::Value =
            serde::Deserialize::deserialize(document).expect("a YAML document");
        if value["kind"] == "ConfigMap"
            && value["metadata"]["name"] == "thanos-query-tenancy-allow-list"
        {
            let conf = value["data"]["default.conf"]
                .as_str()
                .expect("default.conf");
            assert!(conf.contains("listen 10902;") && conf.contains("127.0.0.1:10904"));
            return conf
                .replace("listen 10902;", &format!("listen 127.0.0.1:{listen};"))
                .replace("127.0.0.1:10904", &format!("127.0.0.1:{upstream}"));
        }
    }
    panic!("no allow-list ConfigMap in {}", path.display());
}

/// What reached the upstream: path and query, and the tenant header.
type Forwarded = (String, Option<String>);

/// Sends `request_line` and `headers` as written (no client normalising the path) to
/// 127.0.0.1:`port`; the status code.
async fn raw_request(port: u16, request_line: &str, headers: &str) -> u16 {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("nginx answers");
    stream
        .write_all(
            format!("{request_line}\r\nHost: q\r\n{headers}Connection: close\r\n\r\n").as_bytes(),
        )
        .await
        .expect("a request");
    let mut answer = String::new();
    stream.read_to_string(&mut answer).await.expect("an answer");
    answer
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("no status in {answer:?}"))
}

/// Issue 15, finding 5: Thanos enforces tenancy only on its query, series and label
/// APIs; its rules, alerts, stores, targets, metadata and exemplars APIs answer for
/// every tenant. The allow-list in front of the tenancy query, run by a real nginx,
/// passes exactly the enforced APIs to Thanos, with the tenant header and the
/// arguments, at the path it names (never the client's spelling), and refuses
/// everything else, including dot-segment and encoded-slash spellings of the refused
/// paths.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_tenancy_enforced_apis_reach_the_tenancy_query() {
    // The upstream: records what reaches "Thanos".
    let seen: Arc<Mutex<Vec<Forwarded>>> = Arc::default();
    let recorder = seen.clone();
    let app = axum::Router::new().fallback(move |uri: Uri, headers: HeaderMap| {
        let recorder = recorder.clone();
        async move {
            let tenant = headers
                .get("thanos-tenant")
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned);
            recorder
                .lock()
                .expect("the record")
                .push((uri.to_string(), tenant));
            answer(StatusCode::OK, json!({"status": "success", "data": []}))
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("a loopback port");
    let upstream = listener.local_addr().expect("its address").port();
    tokio::spawn(async move {
        axum::serve(listener, app).await.expect("serve");
    });
    let dir = tempfile::tempdir().expect("a directory");
    let port = kaas_test_support::process::free_port();
    let _nginx = tokio::task::block_in_place(|| {
        kaas_test_support::peers::run_nginx(dir.path(), &allow_list(port, upstream), &[port])
    });

    let tenant = "THANOS-TENANT: shop\r\n";
    let allowed = [
        (
            "GET /api/v1/query?query=up HTTP/1.1",
            "/api/v1/query?query=up",
        ),
        (
            "GET /api/v1/query_range?query=up&start=1&end=2&step=1 HTTP/1.1",
            "/api/v1/query_range?query=up&start=1&end=2&step=1",
        ),
        (
            "GET /api/v1/series?match[]=up HTTP/1.1",
            "/api/v1/series?match[]=up",
        ),
        ("GET /api/v1/labels HTTP/1.1", "/api/v1/labels"),
        (
            "GET /api/v1/label/job/values?match[]=up HTTP/1.1",
            "/api/v1/label/job/values?match[]=up",
        ),
        (
            "GET /api/v1/status/buildinfo HTTP/1.1",
            "/api/v1/status/buildinfo",
        ),
        (
            "GET /api/v1/labels/../query?query=up HTTP/1.1",
            "/api/v1/query?query=up",
        ),
        (
            "GET /api/v1//query?query=up HTTP/1.1",
            "/api/v1/query?query=up",
        ),
        ("GET /-/ready HTTP/1.1", "/-/ready"),
    ];
    for (request, forwarded) in allowed {
        assert_eq!(raw_request(port, request, tenant).await, 200, "{request}");
        let last = seen.lock().expect("the record").last().cloned();
        assert_eq!(
            last,
            Some((forwarded.to_owned(), Some("shop".to_owned()))),
            "{request}"
        );
    }
    let before = seen.lock().expect("the record").len();
    let refused = [
        "GET /api/v1/rules HTTP/1.1",
        "GET /api/v1/alerts HTTP/1.1",
        "GET /api/v1/stores HTTP/1.1",
        "GET /api/v1/targets HTTP/1.1",
        "GET /api/v1/metadata HTTP/1.1",
        "GET /api/v1/query_exemplars?query=up HTTP/1.1",
        "GET /api/v1/query_explain?query=up HTTP/1.1",
        "GET /api/v1/query/../rules HTTP/1.1",
        "GET /api/v1/query%2F..%2Frules HTTP/1.1",
        "GET /api/v1/label/job/../../rules HTTP/1.1",
        "GET /api/v1/label/a%2Fb/values HTTP/1.1",
        "GET / HTTP/1.1",
        "GET /graph HTTP/1.1",
    ];
    for request in refused {
        let status = raw_request(port, request, tenant).await;
        assert!(status == 403 || status == 400, "{request}: {status}");
    }
    let reached: Vec<_> = seen.lock().expect("the record")[before..].to_vec();
    assert!(
        reached.is_empty(),
        "refused requests reached Thanos: {reached:?}"
    );
}
