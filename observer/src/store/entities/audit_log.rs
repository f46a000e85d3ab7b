//! `audit_log`: who changed what, and when. Names only, never values.

use sea_orm::entity::prelude::*;

/// One change.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "audit_log")]
pub struct Model {
    /// Increasing id; orders entries made in the same millisecond.
    #[sea_orm(primary_key)]
    pub id: i64,
    /// Unix milliseconds.
    #[sea_orm(indexed)]
    pub at_ms: i64,
    /// Who: `admin`, `tenant:<name>`, `agent:<cluster>`, `system`.
    pub actor: String,
    /// What: `create`, `apply`, `delete`, `revoke`, ...
    pub action: String,
    /// Of which kind of object: `tenant`, `api-token`, `cluster`, `join-token`, `pipeline`.
    pub kind: String,
    /// The tenant concerned, if any.
    pub tenant: Option<String>,
    /// The object's name (an API token's id).
    pub name: String,
}

/// No relations are navigated through sea-orm; foreign keys live in the migration.
#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
