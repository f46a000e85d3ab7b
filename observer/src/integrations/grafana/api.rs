//! The slice of Grafana's HTTP API the observer uses (docs/sources/developers/http_api
//! in grafana/grafana: `org.md`, `data_source.md`, `folder.md`, `dashboard.md`), as
//! the server's admin over basic authentication (the admin organisations API accepts
//! nothing else), acting inside one org with the `X-Grafana-Org-Id` header.
//!
//! Layers of a request, outermost first: the whole request's timeout and the connect
//! timeout (the client), basic authentication and the org header (each request), and
//! the answer's classification: 404 is "absent" for the reads that expect it, every
//! other non-2xx an error naming method, path and status with the start of Grafana's
//! message. The password is only ever handed to reqwest; it is never in an error, a log
//! line or a `Debug` output.

use std::time::Duration;

use kaas_pipeline::secret::SecretString;
use kaas_tls::http::{HttpClientSettings, http_client};
use reqwest::{Method, StatusCode};
use serde_json::Value;
use url::Url;

/// The header that selects the org a request acts in.
pub const ORG_HEADER: &str = "X-Grafana-Org-Id";
/// Orgs asked for per page when listing them (Grafana's default page size too).
const ORGS_PER_PAGE: usize = 1000;
/// More orgs than this many pages is not a Grafana the observer should be changing.
const MAX_ORG_PAGES: usize = 100;
/// Longest Grafana message quoted in an error.
const MAX_QUOTED_BODY: usize = 256;

/// Why a Grafana request failed.
#[derive(Debug, thiserror::Error)]
pub enum GrafanaError {
    /// The client could not be built (the CA file).
    #[error("cannot build the Grafana client: {0}")]
    Client(String),
    /// Grafana could not be reached or did not answer in time; retried next pass.
    #[error("{method} {path}: {reason}")]
    Transport {
        /// The method.
        method: Method,
        /// The API path.
        path: String,
        /// What went wrong.
        reason: String,
    },
    /// Grafana refused the request.
    #[error("{method} {path}: HTTP {status}: {message}")]
    Status {
        /// The method.
        method: Method,
        /// The API path.
        path: String,
        /// The status.
        status: StatusCode,
        /// The start of Grafana's answer.
        message: String,
    },
    /// Grafana's answer is not what its API documents.
    #[error("{method} {path}: unexpected answer: {reason}")]
    Answer {
        /// The method.
        method: Method,
        /// The API path.
        path: String,
        /// What is missing or wrong.
        reason: String,
    },
}

/// An org as Grafana lists it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Org {
    /// Its id, the value of [`ORG_HEADER`].
    pub id: i64,
    /// Its unique name.
    pub name: String,
}

/// How the observer reaches Grafana.
#[derive(Clone)]
pub struct GrafanaApiSettings {
    /// Grafana's base URL (may carry a sub-path).
    pub url: Url,
    /// A Grafana server admin's login.
    pub admin_user: String,
    /// Its password.
    pub admin_password: SecretString,
    /// Extra CA certificates (PEM) for an https URL.
    pub ca_pem: Option<Vec<u8>>,
    /// How long one request may take.
    pub timeout: Duration,
}

impl std::fmt::Debug for GrafanaApiSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GrafanaApiSettings")
            .field("url", &self.url.as_str())
            .field("admin_user", &self.admin_user)
            .field("admin_password", &self.admin_password)
            .field("ca_pem", &self.ca_pem.as_ref().map(|_| "<PEM>"))
            .field("timeout", &self.timeout)
            .finish()
    }
}

/// Grafana's API as the observer uses it.
pub struct GrafanaApi {
    http: reqwest::Client,
    settings: GrafanaApiSettings,
}

impl GrafanaApi {
    /// A client with `settings`; connects lazily.
    pub fn new(settings: GrafanaApiSettings) -> Result<Self, GrafanaError> {
        let trust = match &settings.ca_pem {
            Some(pem) => kaas_tls::system_roots_and(pem, "--grafana-ca-file")
                .map_err(|e| GrafanaError::Client(e.to_string()))?,
            None => kaas_tls::Trust::System,
        };
        let http = http_client(HttpClientSettings {
            timeout: Some(settings.timeout),
            connect_timeout: Some(settings.timeout),
            ..HttpClientSettings::new(
                kaas_tls::ClientTls {
                    trust,
                    ..kaas_tls::ClientTls::default()
                },
                concat!("kaas-observer/", env!("CARGO_PKG_VERSION")),
            )
        })
        .map_err(|e| GrafanaError::Client(e.to_string()))?;
        Ok(Self { http, settings })
    }

    /// One request: `Ok(None)` when `absent_ok` and Grafana answers 404.
    async fn call(
        &self,
        method: Method,
        path: &str,
        org: Option<i64>,
        body: Option<&Value>,
        absent_ok: bool,
    ) -> Result<Option<Value>, GrafanaError> {
        let url = format!("{}{path}", self.settings.url.as_str().trim_end_matches('/'));
        let mut request = self
            .http
            .request(method.clone(), url)
            .basic_auth(
                &self.settings.admin_user,
                Some(self.settings.admin_password.expose()),
            )
            .header(reqwest::header::ACCEPT, "application/json");
        if let Some(org) = org {
            request = request.header(ORG_HEADER, org.to_string());
        }
        if let Some(body) = body {
            request = request.json(body);
        }
        let transport = |reason: String| GrafanaError::Transport {
            method: method.clone(),
            path: path.to_owned(),
            reason,
        };
        let response = request
            .send()
            .await
            .map_err(|e| transport(kaas_self_telemetry::error_chain(&e)))?;
        let status = response.status();
        if status == StatusCode::NOT_FOUND && absent_ok {
            return Ok(None);
        }
        let text = response
            .text()
            .await
            .map_err(|e| transport(kaas_self_telemetry::error_chain(&e)))?;
        if !status.is_success() {
            let mut message = text;
            if let Some((cut, _)) = message.char_indices().nth(MAX_QUOTED_BODY) {
                message.truncate(cut);
            }
            return Err(GrafanaError::Status {
                method,
                path: path.to_owned(),
                status,
                message,
            });
        }
        let value = serde_json::from_str(&text).map_err(|e| GrafanaError::Answer {
            method: method.clone(),
            path: path.to_owned(),
            reason: e.to_string(),
        })?;
        Ok(Some(value))
    }

    async fn expect(
        &self,
        method: Method,
        path: &str,
        org: Option<i64>,
        body: Option<&Value>,
    ) -> Result<Value, GrafanaError> {
        Ok(self
            .call(method, path, org, body, false)
            .await?
            .unwrap_or(Value::Null))
    }

    /// Every org (`GET /api/orgs`, page by page).
    pub async fn list_orgs(&self) -> Result<Vec<Org>, GrafanaError> {
        let mut orgs = Vec::new();
        for page in 1..=MAX_ORG_PAGES {
            let path = format!("/api/orgs?perpage={ORGS_PER_PAGE}&page={page}");
            let answer = self.expect(Method::GET, &path, None, None).await?;
            let Some(items) = answer.as_array() else {
                return Err(answer_error(Method::GET, &path, "not a list of orgs"));
            };
            for item in items {
                let (Some(id), Some(name)) = (item["id"].as_i64(), item["name"].as_str()) else {
                    return Err(answer_error(
                        Method::GET,
                        &path,
                        "an org without id or name",
                    ));
                };
                orgs.push(Org {
                    id,
                    name: name.to_owned(),
                });
            }
            if items.len() < ORGS_PER_PAGE {
                return Ok(orgs);
            }
        }
        Err(answer_error(
            Method::GET,
            "/api/orgs",
            "more orgs than the observer pages through",
        ))
    }

    /// Creates an org (`POST /api/orgs`); Grafana makes the admin a member of it.
    pub async fn create_org(&self, name: &str) -> Result<i64, GrafanaError> {
        let path = "/api/orgs";
        let answer = self
            .expect(
                Method::POST,
                path,
                None,
                Some(&serde_json::json!({ "name": name })),
            )
            .await?;
        // Older Grafana versions answer the id as a string.
        answer["orgId"]
            .as_i64()
            .or_else(|| answer["orgId"].as_str().and_then(|s| s.parse().ok()))
            .ok_or_else(|| answer_error(Method::POST, path, "no orgId"))
    }

    /// Deletes an org with everything in it (`DELETE /api/orgs/:orgId`).
    pub async fn delete_org(&self, id: i64) -> Result<(), GrafanaError> {
        self.expect(Method::DELETE, &format!("/api/orgs/{id}"), None, None)
            .await
            .map(drop)
    }

    /// A data source by uid (`GET /api/datasources/uid/:uid`), if there is one.
    pub async fn datasource(&self, org: i64, uid: &str) -> Result<Option<Value>, GrafanaError> {
        let path = format!("/api/datasources/uid/{uid}");
        self.call(Method::GET, &path, Some(org), None, true).await
    }

    /// Creates (`POST /api/datasources`) or replaces (`PUT /api/datasources/uid/:uid`)
    /// a data source; its version as Grafana stored it.
    pub async fn put_datasource(
        &self,
        org: i64,
        uid: &str,
        body: &Value,
        exists: bool,
    ) -> Result<Option<i64>, GrafanaError> {
        let (method, path) = if exists {
            (Method::PUT, format!("/api/datasources/uid/{uid}"))
        } else {
            (Method::POST, "/api/datasources".to_owned())
        };
        let answer = self.expect(method, &path, Some(org), Some(body)).await?;
        Ok(answer["datasource"]["version"].as_i64())
    }

    /// A folder by uid (`GET /api/folders/:uid`), if there is one.
    pub async fn folder(&self, org: i64, uid: &str) -> Result<Option<Value>, GrafanaError> {
        let path = format!("/api/folders/{uid}");
        self.call(Method::GET, &path, Some(org), None, true).await
    }

    /// Creates a folder (`POST /api/folders`).
    pub async fn create_folder(
        &self,
        org: i64,
        uid: &str,
        title: &str,
    ) -> Result<(), GrafanaError> {
        let body = serde_json::json!({ "uid": uid, "title": title });
        self.expect(Method::POST, "/api/folders", Some(org), Some(&body))
            .await
            .map(drop)
    }

    /// A dashboard by uid with its metadata (`GET /api/dashboards/uid/:uid`), if there
    /// is one.
    pub async fn dashboard(&self, org: i64, uid: &str) -> Result<Option<Value>, GrafanaError> {
        let path = format!("/api/dashboards/uid/{uid}");
        self.call(Method::GET, &path, Some(org), None, true).await
    }

    /// Creates or overwrites a dashboard in a folder (`POST /api/dashboards/db`).
    pub async fn save_dashboard(
        &self,
        org: i64,
        dashboard: &Value,
        folder_uid: &str,
    ) -> Result<(), GrafanaError> {
        let mut dashboard = dashboard.clone();
        // A null id with the uid: create, or overwrite the dashboard with that uid.
        dashboard["id"] = Value::Null;
        let body = serde_json::json!({
            "dashboard": dashboard,
            "folderUid": folder_uid,
            "overwrite": true,
            "message": "kaas-observer: kept current from the project's dashboards",
        });
        self.expect(Method::POST, "/api/dashboards/db", Some(org), Some(&body))
            .await
            .map(drop)
    }
}

fn answer_error(method: Method, path: &str, reason: &str) -> GrafanaError {
    GrafanaError::Answer {
        method,
        path: path.to_owned(),
        reason: reason.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_password_is_not_in_debug_output() {
        let settings = GrafanaApiSettings {
            url: Url::parse("http://grafana:3000").unwrap(),
            admin_user: "admin".into(),
            admin_password: SecretString::new("hunter2-very-secret"),
            ca_pem: None,
            timeout: Duration::from_secs(1),
        };
        let debug = format!("{settings:?}");
        assert!(!debug.contains("hunter2"), "{debug}");
        assert!(debug.contains("admin"), "{debug}");
    }
}
