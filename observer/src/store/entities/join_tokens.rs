//! `join_tokens`: single-use, expiring tokens an agent trades for its certificate.

use sea_orm::entity::prelude::*;

/// A join token, stored only as its SHA-256 hash.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "join_tokens")]
pub struct Model {
    /// Lower-case hex SHA-256 of the plaintext token.
    #[sea_orm(primary_key, auto_increment = false)]
    pub token_hash: String,
    /// The cluster the token joins.
    #[sea_orm(indexed)]
    pub cluster: String,
    /// Unix milliseconds.
    pub created_at_ms: i64,
    /// After this instant the token is refused, Unix milliseconds.
    pub expires_at_ms: i64,
    /// Set by the one successful redemption.
    pub used_at_ms: Option<i64>,
    /// Lower-case hex SHA-256 of the CSR the redemption signed: a retry with the same
    /// CSR within the retry window gets the same certificate.
    pub csr_sha256: Option<String>,
    /// Serial of the certificate the redemption issued.
    pub certificate_serial: Option<String>,
}

/// No relations are navigated through sea-orm; foreign keys live in the migration.
#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
