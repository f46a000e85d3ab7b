//! `instance_health`: the latest health of each pipeline as each agent instance of a
//! cluster reports it.

use sea_orm::entity::prelude::*;

/// One pipeline in one instance's latest health report.
#[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
#[sea_orm(table_name = "instance_health")]
pub struct Model {
    /// The cluster's global id.
    #[sea_orm(primary_key, auto_increment = false)]
    pub cluster: String,
    /// The agent instance, as its certificate names it (`default` for the cluster
    /// instance, the node's name for a node instance).
    #[sea_orm(primary_key, auto_increment = false)]
    pub instance: String,
    /// The pipeline's kind.
    #[sea_orm(primary_key, auto_increment = false)]
    pub kind: String,
    /// The pipeline's name.
    #[sea_orm(primary_key, auto_increment = false)]
    pub pipeline: String,
    /// The agent process that sent it (its drop counters restart with it).
    pub agent_instance_id: String,
    /// The pipeline's entry as stored (JSON of `PipelineHealthRecord`).
    #[sea_orm(column_type = "JsonBinary")]
    pub entry: Json,
    /// The problems found in it (JSON list of `InstanceProblem`), worst first.
    #[sea_orm(column_type = "JsonBinary")]
    pub problems: Json,
    /// The worst problem's rank, `HEALTHY_RANK` without problems.
    pub worst_rank: i32,
    /// When the agent took the snapshot, Unix milliseconds.
    pub reported_at_ms: i64,
    /// When the observer received it, Unix milliseconds: the time-to-live counts from
    /// here (the observer's clock, not the agent's).
    pub received_at_ms: i64,
    /// The role the instance named in its hello (`cluster`, `node`, `gateway`); empty
    /// in rows written before roles were recorded.
    pub role: String,
}

/// No relations are navigated through sea-orm; foreign keys live in the migration.
#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
