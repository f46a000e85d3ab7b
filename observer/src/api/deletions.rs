//! `POST /api/v1/deletions/confirm`: an administrator releases the cluster changes
//! the mass-deletion guard holds (see `crate::lifecycle::guard`). Admin tokens only
//! (403 otherwise); each confirmation is audited by the store. The pending changes
//! themselves are shown by `GET /api/v1/status`.

use axum::Json;
use axum::extract::State;

use super::auth::Caller;
use super::model::{ConfirmedDeletions, PendingDeletionView};
use super::{ApiError, ApiState, now_ms};
use crate::store::PendingDeletion;

impl From<PendingDeletion> for PendingDeletionView {
    fn from(pending: PendingDeletion) -> Self {
        Self {
            cluster: pending.cluster,
            tenant: pending.tenant,
            source: pending.source,
            to_state: pending.to_state.into(),
            reason: pending.reason,
            held_at_ms: pending.held_at_ms,
            confirmed_at_ms: pending.confirmed_at_ms,
        }
    }
}

/// `POST /api/v1/deletions/confirm`: confirms every held change; their sources apply
/// them at their next pass if the evidence still holds.
pub async fn confirm(
    caller: Caller,
    State(state): State<ApiState>,
) -> Result<Json<ConfirmedDeletions>, ApiError> {
    caller.require_admin()?;
    let confirmed = state
        .store
        .confirm_deletions(&caller.actor(), now_ms())
        .await?
        .into_iter()
        .map(Into::into)
        .collect();
    Ok(Json(ConfirmedDeletions { confirmed }))
}
