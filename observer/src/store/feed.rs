//! The change feed: what changed, announced after commit on an in-process broadcast
//! channel and, on PostgreSQL, to the other replicas with `pg_notify` (see "Change
//! feed" in the store's documentation).

use std::time::Duration;

use sea_orm::sqlx;
use sea_orm::{
    ConnectionTrait, DatabaseConnection, DatabaseTransaction, DbBackend, DbErr, EntityTrait,
    QuerySelect, Statement,
};
use serde::{Deserialize, Serialize};
use tokio::sync::{broadcast, oneshot};

use super::StoreError;
use super::entities::{clusters, pipelines};

/// How many changes the in-process feed holds for a slow subscriber before it lags. A
/// burst larger than this (a resync after a PostgreSQL reconnect of a big installation)
/// makes subscribers resync fully, which is correct, only slower.
pub(super) const CHANGE_FEED_CAPACITY: usize = 1024;

/// The PostgreSQL NOTIFY channel every replica listens on.
pub const NOTIFY_CHANNEL: &str = "kaas_observer_changes";

/// First wait before reconnecting a dropped PostgreSQL listener; short, because a
/// failover or a restarted PgBouncer is usually back within a second.
pub(super) const LISTENER_BACKOFF_MIN: Duration = Duration::from_millis(100);

/// Longest wait between listener reconnects; keeps a down database from being hammered
/// while still noticing its return within seconds.
pub(super) const LISTENER_BACKOFF_MAX: Duration = Duration::from_secs(5);

/// Something changed; read the current state to see what. Published after commit.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Change {
    /// A tenant was created or deleted.
    Tenant(String),
    /// A cluster's registration, labels, state, certificate or agent changed.
    Cluster {
        /// The cluster's tenant.
        tenant: String,
        /// The cluster's global id (`name` on the wire between replicas, as before).
        #[serde(rename = "name")]
        id: String,
    },
    /// A pipeline was created, changed (spec or metadata) or deleted: desired state
    /// that agent streams render.
    Pipeline {
        /// The pipeline's tenant.
        tenant: String,
        /// The pipeline.
        name: String,
    },
    /// A pipeline's status (computed from agent reports) changed. Nothing an agent runs
    /// depends on it, so it wakes no agent stream.
    PipelineStatus {
        /// The pipeline's tenant.
        tenant: String,
        /// The pipeline.
        name: String,
    },
    /// An observation about a cluster's agent changed: a config report (including the
    /// applied hash), health, (dis)connection, or the agent's version or instance.
    /// Observations are not desired state: they wake no agent stream and do not change
    /// probe targets.
    ClusterReport(String),
    /// A tenant's probe endpoint was created, changed or deleted.
    ProbeEndpoint {
        /// The endpoint's tenant.
        tenant: String,
        /// The endpoint.
        name: String,
    },
}

/// The payload of a PostgreSQL notification.
#[derive(Serialize, Deserialize)]
pub(super) struct Notification {
    pub(super) origin: String,
    pub(super) change: Change,
}

/// Announces `changes` to the other replicas (PostgreSQL, inside the transaction),
/// commits, then publishes them on this replica's feed. The commit of every
/// [`Mutation`](super::mutation::Mutation) and of the report writer.
pub(super) async fn commit(
    transaction: DatabaseTransaction,
    changes: Vec<Change>,
    origin: &str,
    feed: &broadcast::Sender<Change>,
) -> Result<(), StoreError> {
    if transaction.get_database_backend() == DbBackend::Postgres {
        for change in &changes {
            let payload = serde_json::to_string(&Notification {
                origin: origin.to_owned(),
                change: change.clone(),
            })
            .map_err(|e| StoreError::Corrupt(format!("cannot encode a change: {e}")))?;
            transaction
                .execute_raw(Statement::from_sql_and_values(
                    DbBackend::Postgres,
                    "SELECT pg_notify($1, $2)",
                    [NOTIFY_CHANNEL.into(), payload.into()],
                ))
                .await?;
        }
    }
    transaction.commit().await?;
    for change in changes {
        // No subscriber is fine: nobody is waiting for changes.
        let _ = feed.send(change);
    }
    Ok(())
}

/// Receives other replicas' notifications and republishes them locally, reconnecting
/// with backoff; after a reconnect, republishes every cluster and pipeline because
/// notifications sent in the gap are lost.
pub(super) async fn listen_for_changes(
    db: DatabaseConnection,
    changes: broadcast::Sender<Change>,
    origin: String,
    ready: oneshot::Sender<()>,
) {
    let mut ready = Some(ready);
    let pool = db.get_postgres_connection_pool().clone();
    let mut backoff = LISTENER_BACKOFF_MIN;
    let mut connected_before = false;
    loop {
        let listener = async {
            let mut listener = sqlx::postgres::PgListener::connect_with(&pool).await?;
            listener.listen(NOTIFY_CHANNEL).await?;
            Ok::<_, sqlx::Error>(listener)
        }
        .await;
        match listener {
            Ok(mut listener) => {
                if connected_before {
                    tracing::info!("change listener reconnected to PostgreSQL; resyncing");
                    if let Err(error) = republish_everything(&db, &changes).await {
                        tracing::warn!(%error, "cannot list clusters and pipelines for a resync");
                    }
                }
                connected_before = true;
                backoff = LISTENER_BACKOFF_MIN;
                if let Some(ready) = ready.take() {
                    // `connect` may have stopped waiting; that is fine.
                    let _ = ready.send(());
                }
                loop {
                    match listener.try_recv().await {
                        Ok(Some(notification)) => {
                            match serde_json::from_str::<Notification>(notification.payload()) {
                                Ok(message) if message.origin == origin => {}
                                Ok(message) => {
                                    let _ = changes.send(message.change);
                                }
                                Err(error) => {
                                    tracing::warn!(%error, "ignoring a malformed change notification");
                                }
                            }
                        }
                        Ok(None) => {
                            tracing::warn!("change listener lost its PostgreSQL connection");
                            break;
                        }
                        Err(error) => {
                            tracing::warn!(%error, "change listener failed");
                            break;
                        }
                    }
                }
            }
            Err(error) => {
                tracing::warn!(%error, retry_in = ?backoff, "cannot listen for changes on PostgreSQL");
            }
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(LISTENER_BACKOFF_MAX);
    }
}

pub(super) async fn republish_everything(
    db: &DatabaseConnection,
    changes: &broadcast::Sender<Change>,
) -> Result<(), DbErr> {
    let clusters: Vec<(String, String)> = clusters::Entity::find()
        .select_only()
        .column(clusters::Column::Tenant)
        .column(clusters::Column::Name)
        .into_tuple()
        .all(db)
        .await?;
    for (tenant, name) in clusters {
        let _ = changes.send(Change::Cluster { tenant, id: name });
    }
    let pipelines: Vec<(String, String)> = pipelines::Entity::find()
        .select_only()
        .column(pipelines::Column::Tenant)
        .column(pipelines::Column::Name)
        .into_tuple()
        .all(db)
        .await?;
    for (tenant, name) in pipelines {
        let _ = changes.send(Change::Pipeline { tenant, name });
    }
    Ok(())
}
