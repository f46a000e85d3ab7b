//! `pending_deletions`: cluster changes the mass-deletion guard holds for an
//! administrator's confirmation (see [`crate::store::deletions`]).

use sea_orm::entity::prelude::*;

/// One held change.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "pending_deletions")]
pub struct Model {
    /// The cluster's global id.
    #[sea_orm(primary_key, auto_increment = false)]
    pub cluster: String,
    /// Its tenant.
    pub tenant: String,
    /// The onboarding source that wants the change (`inventory`, `cluster-api`).
    pub source: String,
    /// The state the change moves the cluster to.
    pub to_state: String,
    /// The source's evidence.
    pub reason: String,
    /// When the guard first held it, Unix milliseconds.
    pub held_at_ms: i64,
    /// When an administrator confirmed it.
    pub confirmed_at_ms: Option<i64>,
    /// Who confirmed it (the audit actor).
    pub confirmed_by: Option<String>,
}

/// No relations are navigated through sea-orm; foreign keys live in the migration.
#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
