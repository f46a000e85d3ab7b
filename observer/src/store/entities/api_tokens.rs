//! `api_tokens`: bearer tokens for the REST API, stored only as SHA-256 hashes.

use sea_orm::entity::prelude::*;

/// An API token. The plaintext is shown once at creation and never stored.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "api_tokens")]
pub struct Model {
    /// Random public id, used to list and revoke the token.
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: String,
    /// A human name, e.g. `ci-deploy`.
    pub name: String,
    /// Lower-case hex SHA-256 of the plaintext token; unique.
    #[sea_orm(unique)]
    pub token_hash: String,
    /// The tenant the token acts for; `None` is an administrator token.
    pub tenant: Option<String>,
    /// Unix milliseconds.
    pub created_at_ms: i64,
    /// When the token was revoked; a revoked token authenticates nobody.
    pub revoked_at_ms: Option<i64>,
}

/// No relations are navigated through sea-orm; foreign keys live in the migration.
#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
