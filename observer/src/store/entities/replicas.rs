//! `replicas`: one heartbeat row per running observer replica.

use sea_orm::entity::prelude::*;

/// A replica and when it last said it is alive.
#[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
#[sea_orm(table_name = "replicas")]
pub struct Model {
    /// The replica's id (`--replica-id`).
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: String,
    /// Its last heartbeat, Unix milliseconds on the database's clock.
    pub seen_at_ms: i64,
}

/// No relations.
#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
