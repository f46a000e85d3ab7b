//! The one way a decision is written: a [`Mutation`] begins a transaction on the write
//! connection, records who decided what in the audit trail inside it
//! ([`Mutation::audit`]), and commits, announcing what changed on the change feed
//! ([`Mutation::commit`], see [`feed`](super::feed)). Dropping a mutation without
//! committing rolls it back, audit entries included, so an error on the way (`?`)
//! leaves nothing behind; a mutation that finds nothing to change simply returns.
//!
//! Agent reports are observations, not decisions: they take the report writer's path
//! ([`reports`](super::reports)), unaudited, and share only the commit
//! ([`feed::commit`](super::feed::commit)).

use sea_orm::{DatabaseTransaction, TransactionTrait};

use super::{Actor, Change, Store, StoreError, audit, feed};

/// A write in progress: begin → audit → commit.
pub(super) struct Mutation<'s> {
    store: &'s Store,
    transaction: DatabaseTransaction,
}

impl Store {
    /// Begins a mutation.
    pub(super) async fn mutation(&self) -> Result<Mutation<'_>, StoreError> {
        Ok(Mutation {
            store: self,
            transaction: self.db().begin().await?,
        })
    }
}

impl Mutation<'_> {
    /// The open transaction, for the reads and writes of the mutation.
    pub(super) fn transaction(&self) -> &DatabaseTransaction {
        &self.transaction
    }

    /// Adds an audit entry: `actor` did `action` to the `kind` named `name` (of
    /// `tenant`). Written with the rest, or not at all.
    pub(super) async fn audit(
        &self,
        actor: &Actor,
        action: &str,
        kind: &str,
        tenant: Option<&str>,
        name: &str,
    ) -> Result<(), StoreError> {
        audit::record(&self.transaction, actor, action, kind, tenant, name).await
    }

    /// Commits, then publishes `changes` (on PostgreSQL announced to the other replicas
    /// inside the transaction, so they hear of them exactly when they are visible).
    pub(super) async fn commit(self, changes: Vec<Change>) -> Result<(), StoreError> {
        let inner = &self.store.inner;
        feed::commit(self.transaction, changes, &inner.origin, &inner.changes).await
    }
}
