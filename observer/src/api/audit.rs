//! `GET /api/v1/audit`: the audit trail, for administrators only (a tenant token gets
//! 403: the trail names every tenant's objects). Newest first, filtered by tenant,
//! actor and time, one bounded page at a time: `limit` (default [`DEFAULT_AUDIT_PAGE`],
//! at most [`MAX_AUDIT_PAGE`]) and `continue`, as `GET /api/v1/clusters` pages.

use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::auth::Caller;
use super::{ApiError, ApiState};
pub use crate::store::tenancy::MAX_AUDIT_PAGE;
use crate::store::tenancy::{AuditQuery, AuditRecord};

/// Entries in a page when `limit` is not given: a screenful for `observer audit`.
pub const DEFAULT_AUDIT_PAGE: u64 = 100;

/// Query of `GET /api/v1/audit`.
#[derive(Debug, Default, Deserialize)]
pub struct AuditListQuery {
    /// Only entries about this tenant.
    pub tenant: Option<String>,
    /// Only entries by this actor: `admin`, `tenant:<name>`, `agent:<cluster>`,
    /// `system`, `onboarding:<source>`.
    pub actor: Option<String>,
    /// Only entries at or after this time (Unix milliseconds).
    pub since: Option<i64>,
    /// Only entries before this time (Unix milliseconds).
    pub until: Option<i64>,
    /// At most this many entries (1 to [`MAX_AUDIT_PAGE`]).
    pub limit: Option<u64>,
    /// Where the previous page ended (its `continue`).
    #[serde(rename = "continue")]
    pub continue_token: Option<String>,
}

/// One entry of the audit trail.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AuditEntryView {
    /// Orders the trail; grows with time.
    pub id: i64,
    /// When.
    pub at_ms: i64,
    /// Who: `admin`, `tenant:<name>`, `agent:<cluster>`, `system`, `onboarding:<source>`.
    pub actor: String,
    /// What: `create`, `update`, `delete`, `revoke`, `map`, `rekey`, ...
    pub action: String,
    /// Of which kind of object: `tenant`, `api-token`, `cluster`, `pipeline`, ...
    pub kind: String,
    /// The object's name (an API token's id).
    pub name: String,
    /// The tenant concerned, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant: Option<String>,
}

impl From<AuditRecord> for AuditEntryView {
    fn from(record: AuditRecord) -> Self {
        let entry = record.entry;
        Self {
            id: record.id,
            at_ms: entry.at_ms,
            actor: entry.actor,
            action: entry.action,
            kind: entry.kind,
            name: entry.name,
            tenant: entry.tenant,
        }
    }
}

/// `GET /api/v1/audit`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AuditList {
    /// The page, newest first.
    pub items: Vec<AuditEntryView>,
    /// Present when older entries follow: pass it as `continue` for the next page.
    #[serde(default, rename = "continue", skip_serializing_if = "Option::is_none")]
    pub continue_token: Option<String>,
}

/// `GET /api/v1/audit`.
pub async fn list(
    caller: Caller,
    State(state): State<ApiState>,
    query: Result<Query<AuditListQuery>, QueryRejection>,
) -> Result<Json<AuditList>, ApiError> {
    caller.require_admin()?;
    let Query(query) = query?;
    let limit = query.limit.unwrap_or(DEFAULT_AUDIT_PAGE);
    if !(1..=MAX_AUDIT_PAGE).contains(&limit) {
        return Err(ApiError::BadRequest(format!(
            "limit: must be between 1 and {MAX_AUDIT_PAGE}, got {limit}"
        )));
    }
    let before_id = query
        .continue_token
        .as_deref()
        .map(decode_continue)
        .transpose()?;
    // One more than asked tells whether another page follows.
    let mut records = state
        .store
        .audit_page(&AuditQuery {
            tenant: query.tenant,
            actor: query.actor,
            since_ms: query.since,
            until_ms: query.until,
            before_id,
            limit: limit + 1,
        })
        .await?;
    let continue_token = if records.len() as u64 > limit {
        records.truncate(limit as usize);
        records.last().map(|last| encode_continue(last.id))
    } else {
        None
    };
    Ok(Json(AuditList {
        items: records.into_iter().map(Into::into).collect(),
        continue_token,
    }))
}

/// The `continue` token after a page ending with entry `id`: opaque to clients.
fn encode_continue(id: i64) -> String {
    URL_SAFE_NO_PAD.encode(id.to_string())
}

/// The entry id a `continue` token stands for.
fn decode_continue(token: &str) -> Result<i64, ApiError> {
    let invalid = || {
        ApiError::BadRequest(
            "continue: not a token from a previous page of this list; start without it".to_owned(),
        )
    };
    let bytes = URL_SAFE_NO_PAD.decode(token).map_err(|_| invalid())?;
    std::str::from_utf8(&bytes)
        .ok()
        .and_then(|text| text.parse().ok())
        .ok_or_else(invalid)
}
