//! `agent_certificates`: every client certificate issued to an agent instance, and
//! whether it was revoked (see [`crate::store::certificates`]).

use sea_orm::entity::prelude::*;

/// One issued agent certificate.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "agent_certificates")]
pub struct Model {
    /// Lower-case hex serial number.
    #[sea_orm(primary_key, auto_increment = false)]
    pub serial: String,
    /// The cluster's global id.
    pub cluster: String,
    /// The agent instance within the cluster the certificate names.
    pub instance: String,
    /// The certificate, PEM; kept so a retried `Join` gets the same answer. NULL for
    /// certificates recorded before it was kept.
    pub certificate_pem: Option<String>,
    /// Unix milliseconds.
    pub issued_at_ms: i64,
    /// Expiry, Unix milliseconds.
    pub not_after_ms: i64,
    /// Set when the certificate stopped being accepted (a re-join of its instance, or
    /// its instance switching to a renewed certificate).
    pub revoked_at_ms: Option<i64>,
}

/// No relations are navigated through sea-orm; foreign keys live in the migration.
#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
