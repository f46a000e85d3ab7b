//! `POST /api/v1/secrets/rekey`: seals every stored secret again with the observer's
//! current key (see `store::pipeline_rows`), for administrators only. Run it once every
//! replica has the new key as `--secrets-key-file` and the old one as
//! `--previous-secrets-key-file`; afterwards the old key can be dropped.

use axum::Json;
use axum::extract::State;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::auth::Caller;
use super::{ApiError, ApiState};
use crate::store::pipeline_rows::RekeyReport;

/// What a rekey did.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RekeyResult {
    /// The id of the key every value is sealed with now.
    pub key_id: String,
    /// Pipelines whose values were sealed again.
    pub pipelines_rekeyed: u64,
    /// Secret values sealed again.
    pub values_rekeyed: u64,
    /// Pipelines that were sealed with the current key already.
    pub pipelines_current: u64,
    /// Pipelines that could not be opened (`tenant/name: reason`), left as they were:
    /// give the observer their key and run the rekey again.
    pub unreadable: Vec<String>,
}

impl From<RekeyReport> for RekeyResult {
    fn from(report: RekeyReport) -> Self {
        Self {
            key_id: report.key_id,
            pipelines_rekeyed: report.pipelines_rekeyed,
            values_rekeyed: report.values_rekeyed,
            pipelines_current: report.pipelines_current,
            unreadable: report.unreadable,
        }
    }
}

/// `POST /api/v1/secrets/rekey`.
pub async fn rekey(
    caller: Caller,
    State(state): State<ApiState>,
) -> Result<Json<RekeyResult>, ApiError> {
    caller.require_admin()?;
    let report = state.store.rekey_secrets(&caller.actor()).await?;
    Ok(Json(report.into()))
}
