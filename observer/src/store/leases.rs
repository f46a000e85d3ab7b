//! Leases: work that only one observer replica may do at a time (remote-writing the
//! fleet series), decided by the database the replicas share.
//!
//! # Design
//! * **PostgreSQL**: a lease is a session-level advisory lock,
//!   `pg_try_advisory_lock(key)`, with `key` the first 8 bytes of SHA-256 of
//!   `kaas-observer/lease/<name>`. Session locks belong to one connection, and a pooled
//!   connection goes back to the pool and may serve anyone, so the lock is taken on a
//!   connection *detached* from the pool that the [`Lease`] owns for as long as it
//!   lives. The lease ends when it is released, dropped (the connection closes), or its
//!   replica dies (PostgreSQL ends the session when the connection breaks): then another
//!   replica's next `try_lease` gets it. [`Lease::is_held`] asks the lease's own
//!   connection; while that session answers, the lock is still its own, because nothing
//!   but a release or the end of the session frees it.
//! * **SQLite** is embedded in one process, so the lease is always granted.
//!
//! A replica that loses its connection notices at its next [`Lease::is_held`]; in the
//! gap (at most one round of work) two replicas may both act, which is why leased work
//! must be idempotent (the remote writer sends the same series twice at worst).

use std::time::Duration;

use sea_orm::sqlx::{self, Connection as _};
use sea_orm::{DbBackend, DbErr, RuntimeErr};
use sha2::{Digest, Sha256};

use super::{Store, StoreError};

/// How long [`Lease::is_held`] waits for the holding session to answer: a connection
/// that takes longer is as good as lost (a partition), and the leased work must stop.
const LEASE_CHECK_TIMEOUT: Duration = Duration::from_secs(5);

/// The advisory lock key of lease `name`.
fn lease_key(name: &str) -> i64 {
    let digest = Sha256::digest(format!("kaas-observer/lease/{name}").as_bytes());
    let mut bytes = [0u8; 8];
    bytes.copy_from_slice(&digest[..8]);
    i64::from_be_bytes(bytes)
}

fn database_error(error: sqlx::Error) -> StoreError {
    StoreError::Database(DbErr::Conn(RuntimeErr::SqlxError(error.into())))
}

/// A held lease; the work it guards may run while it is held. Dropping it releases it.
#[derive(Debug)]
pub struct Lease {
    name: String,
    holder: Holder,
}

#[derive(Debug)]
enum Holder {
    /// SQLite: one process, nothing to hold.
    Embedded,
    /// The detached connection whose session holds the advisory lock.
    Postgres {
        connection: sqlx::PgConnection,
        key: i64,
    },
}

impl Lease {
    /// The lease's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Whether the lease is still held: on PostgreSQL, whether the session holding the
    /// lock still answers (within [`LEASE_CHECK_TIMEOUT`]). A `false` lease is lost for
    /// good; drop it and try again.
    pub async fn is_held(&mut self) -> bool {
        match &mut self.holder {
            Holder::Embedded => true,
            Holder::Postgres { connection, .. } => {
                tokio::time::timeout(LEASE_CHECK_TIMEOUT, connection.ping())
                    .await
                    .is_ok_and(|answered| answered.is_ok())
            }
        }
    }

    /// Gives the lease up at once (dropping it does too, when the connection closes).
    pub async fn release(self) {
        if let Holder::Postgres {
            mut connection,
            key,
        } = self.holder
        {
            let _ = sqlx::query("SELECT pg_advisory_unlock($1)")
                .bind(key)
                .execute(&mut connection)
                .await;
            let _ = connection.close().await;
        }
    }
}

impl Store {
    /// Takes lease `name` if no other replica holds it: `Some` while this replica may
    /// do the leased work, `None` when another one does. Never waits for the lease.
    pub async fn try_lease(&self, name: &str) -> Result<Option<Lease>, StoreError> {
        if self.db().get_database_backend() != DbBackend::Postgres {
            return Ok(Some(Lease {
                name: name.to_owned(),
                holder: Holder::Embedded,
            }));
        }
        let key = lease_key(name);
        let mut connection = self
            .db()
            .get_postgres_connection_pool()
            .acquire()
            .await
            .map_err(database_error)?
            .detach();
        let acquired: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock($1)")
            .bind(key)
            .fetch_one(&mut connection)
            .await
            .map_err(database_error)?;
        if acquired {
            Ok(Some(Lease {
                name: name.to_owned(),
                holder: Holder::Postgres { connection, key },
            }))
        } else {
            let _ = connection.close().await;
            Ok(None)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lease_keys_are_stable_and_differ_by_name() {
        assert_eq!(lease_key("remote-write"), lease_key("remote-write"));
        assert_ne!(lease_key("remote-write"), lease_key("probes"));
    }
}
