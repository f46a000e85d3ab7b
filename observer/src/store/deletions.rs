//! Deletion on positive evidence, the store's part (issue 15, finding 4): cluster
//! incarnations with the history of the tombstones they replaced (table
//! `cluster_tombstones`), and the changes the mass-deletion guard
//! ([`crate::lifecycle::guard`]) holds for an administrator (table
//! `pending_deletions`).
//!
//! # Incarnations
//! A tombstone keeps its name, but not forever against its tenant's will: registering
//! the name again ([`Store::create_cluster`]) makes a new incarnation of the same
//! global id in one transaction. The tombstone's registration is copied to
//! `cluster_tombstones` (its incarnation, labels, creation and deletion times, and when
//! it was superseded), and everything that could let the old incarnation's agent speak
//! for the new one goes: its certificates are revoked (so they stay refused although
//! the cluster is live again), its join tokens deleted, its last reports and any held
//! deletion dropped. The `clusters` row then holds the new incarnation, so everything
//! keyed by the global id (the `cluster` label, the fleet series, probes, budgets)
//! describes the current incarnation only, and the alert guards, which key on the
//! `cluster` label, follow it.
//!
//! # Pending deletions
//! One row per cluster a source wants to take out of the live fleet and the guard
//! holds. Each pass of a source replaces its set ([`Store::hold_deletions`]): changes
//! it no longer wants (the cluster was listed again, or the change was applied) go,
//! new ones are added (audited), kept ones keep their confirmation unless the change
//! itself changed. [`Store::confirm_deletions`] confirms every pending change
//! (audited); the source applies confirmed changes at its next pass if its evidence
//! still holds.

use std::collections::BTreeSet;

use sea_orm::sea_query::Expr;
use sea_orm::{
    ActiveModelTrait, ColumnTrait, DatabaseTransaction, EntityTrait, IntoActiveModel, QueryFilter,
    QueryOrder, Set,
};
use serde::{Deserialize, Serialize};

use super::entities::{
    agent_certificates, cluster_reports, cluster_tombstones, clusters, join_tokens,
    pending_deletions,
};
use super::{Actor, ClusterState, Store, StoreError, kinds, parse_state};

/// An earlier incarnation of a cluster, kept when its name was registered again.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ClusterTombstone {
    /// The global id it shares with the current incarnation.
    pub cluster: String,
    /// Which incarnation it was.
    pub incarnation: String,
    /// The tenant.
    pub tenant: String,
    /// The tenant's name for it.
    pub name: String,
    /// When it was registered, Unix milliseconds.
    pub created_at_ms: i64,
    /// When it was deleted.
    pub deleted_at_ms: Option<i64>,
    /// When the name was registered again.
    pub superseded_at_ms: i64,
}

/// A change a source wants and the mass-deletion guard holds.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PendingDeletion {
    /// The cluster's global id.
    pub cluster: String,
    /// Its tenant.
    pub tenant: String,
    /// The source (`inventory`, `cluster-api`).
    pub source: String,
    /// The state the change moves the cluster to.
    pub to_state: ClusterState,
    /// The source's evidence.
    pub reason: String,
    /// When the guard first held it, Unix milliseconds.
    pub held_at_ms: i64,
    /// When an administrator confirmed it.
    pub confirmed_at_ms: Option<i64>,
}

/// What a source asks the store to hold.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HeldDeletion {
    /// The cluster's global id.
    pub cluster: String,
    /// Its tenant.
    pub tenant: String,
    /// The state the change moves it to.
    pub to_state: ClusterState,
    /// The source's evidence.
    pub reason: String,
}

impl Store {
    /// The earlier incarnations of the cluster `id`, by the time they were superseded.
    pub async fn cluster_tombstones(&self, id: &str) -> Result<Vec<ClusterTombstone>, StoreError> {
        self.tombstones_where(Some(id)).await
    }

    /// Every earlier incarnation of every cluster (the fleet's history series), by
    /// cluster and the time they were superseded.
    pub async fn list_cluster_tombstones(&self) -> Result<Vec<ClusterTombstone>, StoreError> {
        self.tombstones_where(None).await
    }

    async fn tombstones_where(
        &self,
        id: Option<&str>,
    ) -> Result<Vec<ClusterTombstone>, StoreError> {
        let mut query = cluster_tombstones::Entity::find()
            .order_by_asc(cluster_tombstones::Column::Cluster)
            .order_by_asc(cluster_tombstones::Column::SupersededAtMs);
        if let Some(id) = id {
            query = query.filter(cluster_tombstones::Column::Cluster.eq(id));
        }
        Ok(query
            .all(self.reader())
            .await?
            .into_iter()
            .map(|row| ClusterTombstone {
                cluster: row.cluster,
                incarnation: row.incarnation,
                tenant: row.tenant,
                name: row.local_name,
                created_at_ms: row.created_at_ms,
                deleted_at_ms: row.deleted_at_ms,
                superseded_at_ms: row.superseded_at_ms,
            })
            .collect())
    }

    /// Replaces the changes `source` has held with `held` (see the module note).
    #[tracing::instrument(level = "debug", skip_all, err(level = "debug"), fields(otel.kind = "client"))]
    pub async fn hold_deletions(
        &self,
        source: &str,
        held: &[HeldDeletion],
        actor: &Actor,
        now_ms: i64,
    ) -> Result<(), StoreError> {
        let existing = pending_deletions::Entity::find()
            .filter(pending_deletions::Column::Source.eq(source))
            .all(self.reader())
            .await?;
        let wanted: BTreeSet<&str> = held.iter().map(|h| h.cluster.as_str()).collect();
        let unchanged = held.iter().all(|h| {
            existing
                .iter()
                .any(|row| row.cluster == h.cluster && row.to_state == h.to_state.as_str())
        }) && existing
            .iter()
            .all(|row| wanted.contains(row.cluster.as_str()));
        if unchanged {
            return Ok(());
        }
        let mutation = self.mutation().await?;
        let transaction = mutation.transaction();
        let gone: Vec<&str> = existing
            .iter()
            .filter(|row| !wanted.contains(row.cluster.as_str()))
            .map(|row| row.cluster.as_str())
            .collect();
        if !gone.is_empty() {
            pending_deletions::Entity::delete_many()
                .filter(pending_deletions::Column::Source.eq(source))
                .filter(pending_deletions::Column::Cluster.is_in(gone))
                .exec(transaction)
                .await?;
        }
        for change in held {
            let row = existing.iter().find(|row| row.cluster == change.cluster);
            if row.is_some_and(|row| row.to_state == change.to_state.as_str()) {
                continue;
            }
            // A change of another source for the same cluster, or a different change:
            // replaced, and any confirmation with it (it confirmed something else).
            pending_deletions::Entity::delete_by_id(change.cluster.clone())
                .exec(transaction)
                .await?;
            pending_deletions::ActiveModel {
                cluster: Set(change.cluster.clone()),
                tenant: Set(change.tenant.clone()),
                source: Set(source.to_owned()),
                to_state: Set(change.to_state.as_str().to_owned()),
                reason: Set(change.reason.clone()),
                held_at_ms: Set(now_ms),
                confirmed_at_ms: Set(None),
                confirmed_by: Set(None),
            }
            .insert(transaction)
            .await?;
            mutation
                .audit(
                    actor,
                    &format!("hold-deletion:{}", change.to_state),
                    kinds::CLUSTER,
                    Some(&change.tenant),
                    &change.cluster,
                )
                .await?;
        }
        mutation.commit(Vec::new()).await
    }

    /// The clusters whose change held for `source` an administrator confirmed.
    pub async fn confirmed_deletions(&self, source: &str) -> Result<BTreeSet<String>, StoreError> {
        Ok(pending_deletions::Entity::find()
            .filter(pending_deletions::Column::Source.eq(source))
            .filter(pending_deletions::Column::ConfirmedAtMs.is_not_null())
            .all(self.reader())
            .await?
            .into_iter()
            .map(|row| row.cluster)
            .collect())
    }

    /// The held changes of `tenant`'s clusters, or of all for `None`, by cluster.
    pub async fn pending_deletions(
        &self,
        tenant: Option<&str>,
    ) -> Result<Vec<PendingDeletion>, StoreError> {
        let mut query =
            pending_deletions::Entity::find().order_by_asc(pending_deletions::Column::Cluster);
        if let Some(tenant) = tenant {
            query = query.filter(pending_deletions::Column::Tenant.eq(tenant));
        }
        query
            .all(self.reader())
            .await?
            .into_iter()
            .map(pending_from_row)
            .collect()
    }

    /// Confirms every held change not confirmed yet, each audited as
    /// `confirm-deletion`; returns them. Their sources apply them at their next pass.
    #[tracing::instrument(level = "debug", skip_all, err(level = "debug"), fields(otel.kind = "client"))]
    pub async fn confirm_deletions(
        &self,
        actor: &Actor,
        now_ms: i64,
    ) -> Result<Vec<PendingDeletion>, StoreError> {
        let mutation = self.mutation().await?;
        let transaction = mutation.transaction();
        let rows = pending_deletions::Entity::find()
            .filter(pending_deletions::Column::ConfirmedAtMs.is_null())
            .order_by_asc(pending_deletions::Column::Cluster)
            .all(transaction)
            .await?;
        let mut confirmed = Vec::with_capacity(rows.len());
        for row in rows {
            mutation
                .audit(
                    actor,
                    &format!("confirm-deletion:{}", row.to_state),
                    kinds::CLUSTER,
                    Some(&row.tenant),
                    &row.cluster,
                )
                .await?;
            let mut active = row.into_active_model();
            active.confirmed_at_ms = Set(Some(now_ms));
            active.confirmed_by = Set(Some(actor.0.clone()));
            confirmed.push(pending_from_row(active.update(transaction).await?)?);
        }
        mutation.commit(Vec::new()).await?;
        Ok(confirmed)
    }
}

fn pending_from_row(row: pending_deletions::Model) -> Result<PendingDeletion, StoreError> {
    Ok(PendingDeletion {
        to_state: parse_state(&row.to_state)?,
        cluster: row.cluster,
        tenant: row.tenant,
        source: row.source,
        reason: row.reason,
        held_at_ms: row.held_at_ms,
        confirmed_at_ms: row.confirmed_at_ms,
    })
}

/// Moves the tombstone `row` into the history before its name is registered again, and
/// retires everything of that incarnation (see "Incarnations" above). The caller then
/// overwrites the row with the new incarnation in the same transaction.
pub(super) async fn supersede_tombstone(
    transaction: &DatabaseTransaction,
    row: clusters::Model,
    now_ms: i64,
) -> Result<(), StoreError> {
    let id = row.name.clone();
    cluster_tombstones::ActiveModel {
        cluster: Set(row.name),
        incarnation: Set(row.incarnation),
        tenant: Set(row.tenant),
        local_name: Set(row.local_name),
        labels: Set(row.labels),
        created_at_ms: Set(row.created_at_ms),
        deleted_at_ms: Set(row.deleted_at_ms),
        superseded_at_ms: Set(now_ms),
    }
    .insert(transaction)
    .await?;
    agent_certificates::Entity::update_many()
        .col_expr(agent_certificates::Column::RevokedAtMs, Expr::value(now_ms))
        .filter(agent_certificates::Column::Cluster.eq(&id))
        .filter(agent_certificates::Column::RevokedAtMs.is_null())
        .exec(transaction)
        .await?;
    join_tokens::Entity::delete_many()
        .filter(join_tokens::Column::Cluster.eq(&id))
        .exec(transaction)
        .await?;
    cluster_reports::Entity::delete_by_id(id.clone())
        .exec(transaction)
        .await?;
    pending_deletions::Entity::delete_by_id(id)
        .exec(transaction)
        .await?;
    Ok(())
}
