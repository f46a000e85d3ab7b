//! Replica membership: which observer replicas are running, so work can be split
//! between them (each black-box probe target is probed by exactly one, see
//! `probes::membership`). Table `replicas(id, seen_at_ms)`, created by
//! [`super::migrations_replicas`].
//!
//! # Design
//! * Each replica upserts its own row every few seconds ([`Store::heartbeat_replica`]);
//!   the live replicas are those whose row was written since a given time
//!   ([`Store::live_replicas`]). A replica that stops gracefully deletes its row
//!   ([`Store::remove_replica`]) so the others take its share at once; one that dies
//!   (SIGKILL, lost host) drops out when its row gets too old. Rows of replicas long
//!   gone are deleted by whoever prunes ([`Store::prune_replicas`]).
//! * **One clock.** Times are read from the database ([`Store::database_time_ms`]), not
//!   from each replica's clock, so replicas whose clocks disagree still agree on who is
//!   live. The methods take times as arguments, so tests can place rows anywhere in
//!   time.
//! * Heartbeats are observations, not decisions: they publish nothing on the change
//!   feed and are not audited (every replica polls the table instead).
//! * **SQLite** is one process: the table holds this replica alone, through the same
//!   code path.

use sea_orm::sea_query::OnConflict;
use sea_orm::{
    ColumnTrait, ConnectionTrait, DbBackend, EntityTrait, QueryFilter, QueryOrder, QuerySelect,
    Set, Statement,
};

use super::entities::replicas::{self, Column, Entity};
use super::{Store, StoreError};

impl Store {
    /// The database's current time, Unix milliseconds: the clock every replica's
    /// heartbeats are compared on.
    #[tracing::instrument(level = "debug", skip_all, err(level = "debug"), fields(otel.kind = "client"))]
    pub async fn database_time_ms(&self) -> Result<i64, StoreError> {
        let backend = self.db().get_database_backend();
        let sql = match backend {
            DbBackend::Postgres => {
                "SELECT CAST(EXTRACT(EPOCH FROM clock_timestamp()) * 1000 AS BIGINT) AS now_ms"
            }
            // Julian days since the Unix epoch's Julian day, in milliseconds.
            _ => "SELECT CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER) AS now_ms",
        };
        let row = self
            .db()
            .query_one_raw(Statement::from_string(backend, sql))
            .await?
            .ok_or_else(|| StoreError::Corrupt("the database did not tell its time".into()))?;
        Ok(row.try_get::<i64>("", "now_ms")?)
    }

    /// Records that replica `id` is alive at `at_ms` (creating its row if needed).
    #[tracing::instrument(level = "debug", skip_all, err(level = "debug"), fields(otel.kind = "client"))]
    pub async fn heartbeat_replica(&self, id: &str, at_ms: i64) -> Result<(), StoreError> {
        let row = replicas::ActiveModel {
            id: Set(id.to_owned()),
            seen_at_ms: Set(at_ms),
        };
        Entity::insert(row)
            .on_conflict(
                OnConflict::column(Column::Id)
                    .update_column(Column::SeenAtMs)
                    .to_owned(),
            )
            .exec_without_returning(self.db())
            .await?;
        Ok(())
    }

    /// The ids of the replicas heard from at or after `since_ms`, sorted.
    #[tracing::instrument(level = "debug", skip_all, err(level = "debug"), fields(otel.kind = "client"))]
    pub async fn live_replicas(&self, since_ms: i64) -> Result<Vec<String>, StoreError> {
        Ok(Entity::find()
            .select_only()
            .column(Column::Id)
            .filter(Column::SeenAtMs.gte(since_ms))
            .order_by_asc(Column::Id)
            .into_tuple()
            .all(self.reader())
            .await?)
    }

    /// Deletes replica `id`'s row (a graceful stop); nothing if there is none.
    #[tracing::instrument(level = "debug", skip_all, err(level = "debug"), fields(otel.kind = "client"))]
    pub async fn remove_replica(&self, id: &str) -> Result<(), StoreError> {
        Entity::delete_by_id(id.to_owned()).exec(self.db()).await?;
        Ok(())
    }

    /// Deletes the rows of replicas not heard from since `before_ms`; returns how many.
    #[tracing::instrument(level = "debug", skip_all, err(level = "debug"), fields(otel.kind = "client"))]
    pub async fn prune_replicas(&self, before_ms: i64) -> Result<u64, StoreError> {
        Ok(Entity::delete_many()
            .filter(Column::SeenAtMs.lt(before_ms))
            .exec(self.db())
            .await?
            .rows_affected)
    }
}
