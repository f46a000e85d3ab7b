//! The audit trail (table `audit_log`): who decided what, written by a
//! [`Mutation`](super::mutation::Mutation) in the transaction of the change itself.
//! Observations reported by agents are not audited.

use std::fmt;

use sea_orm::{DatabaseTransaction, EntityTrait, QueryOrder, QuerySelect, Set};
use serde::{Deserialize, Serialize};

use super::entities::audit_log;
use super::{Principal, Store, StoreError, now_ms};

/// Who made a change, for the audit trail: `admin`, `tenant:shop`, `agent:c1`, `system`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Actor(pub String);

impl Actor {
    /// An administrator.
    pub fn admin() -> Self {
        Self("admin".into())
    }

    /// A tenant's token.
    pub fn tenant(name: &str) -> Self {
        Self(format!("tenant:{name}"))
    }

    /// A cluster's agent.
    pub fn agent(cluster: &str) -> Self {
        Self(format!("agent:{cluster}"))
    }

    /// The observer itself (lifecycle, bootstrap).
    pub fn system() -> Self {
        Self("system".into())
    }
}

impl From<&Principal> for Actor {
    fn from(principal: &Principal) -> Self {
        match principal {
            Principal::Admin => Self::admin(),
            Principal::Tenant(name) => Self::tenant(name),
        }
    }
}

impl fmt::Display for Actor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// One entry of the audit trail.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AuditEntry {
    /// Unix milliseconds.
    pub at_ms: i64,
    /// Who.
    pub actor: String,
    /// What was done: `create`, `update`, `delete`, `apply`, `revoke`, ...
    pub action: String,
    /// To which kind of object: `tenant`, `api-token`, `cluster`, `join-token`, `pipeline`.
    pub kind: String,
    /// The object's name (an API token's id).
    pub name: String,
    /// The tenant concerned, if any.
    pub tenant: Option<String>,
}

impl Store {
    /// The newest `limit` audit entries, newest first.
    #[tracing::instrument(level = "debug", skip_all, err(level = "debug"), fields(otel.kind = "client"))]
    pub async fn audit_entries(&self, limit: u64) -> Result<Vec<AuditEntry>, StoreError> {
        Ok(audit_log::Entity::find()
            .order_by_desc(audit_log::Column::Id)
            .limit(limit)
            .all(self.reader())
            .await?
            .into_iter()
            .map(|row| AuditEntry {
                at_ms: row.at_ms,
                actor: row.actor,
                action: row.action,
                kind: row.kind,
                name: row.name,
                tenant: row.tenant,
            })
            .collect())
    }
}

/// Writes one audit entry inside `transaction` (see [`Mutation::audit`](super::mutation::Mutation::audit)).
pub(super) async fn record(
    transaction: &DatabaseTransaction,
    actor: &Actor,
    action: &str,
    kind: &str,
    tenant: Option<&str>,
    name: &str,
) -> Result<(), StoreError> {
    let row = audit_log::ActiveModel {
        at_ms: Set(now_ms()),
        actor: Set(actor.0.clone()),
        action: Set(action.to_owned()),
        kind: Set(kind.to_owned()),
        tenant: Set(tenant.map(str::to_owned)),
        name: Set(name.to_owned()),
        ..Default::default()
    };
    audit_log::Entity::insert(row)
        .exec_without_returning(transaction)
        .await?;
    Ok(())
}
