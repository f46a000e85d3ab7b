//! What can go wrong in the store, and why a join token was refused.
//!
//! No message ever carries a secret value, a token or a key: only names, kinds and
//! field paths.

use sea_orm::DbErr;

use crate::secrets::SecretError;

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The named object does not exist.
    #[error("{kind} {name:?} not found")]
    NotFound {
        /// What was looked for: `tenant`, `cluster`, `pipeline`, `api-token`.
        kind: &'static str,
        /// Its name (for a pipeline, `tenant/name`).
        name: String,
    },
    /// An object with this name exists already (for clusters, possibly as a tombstone).
    #[error("{kind} {name:?} already exists")]
    AlreadyExists {
        /// What was created: `tenant`, `cluster`, ...
        kind: &'static str,
        /// Its name.
        name: String,
    },
    /// The request contradicts the stored state; the message says how (for example a
    /// tenant that still has clusters, or `***` for a secret the store does not hold).
    #[error("{0}")]
    Conflict(String),
    /// Creating the object would take the tenant over one of its quotas.
    #[error(
        "tenant {tenant:?} is at its quota {quota:?} of {limit} {counted}: delete one first, \
         or ask the provider to raise the quota"
    )]
    QuotaExceeded {
        /// The tenant.
        tenant: String,
        /// The quota's name (`clusters`, `probes`, `pipelines/<kind>`).
        quota: String,
        /// Its limit for the tenant.
        limit: u64,
        /// What it counts, for the message.
        counted: &'static str,
    },
    /// Validation refuses the change, with every problem at its field path: an instance
    /// its template cannot render, or a template change that would break instances
    /// (each instance's problems under `instances["<name>"]`).
    #[error("{message}: {errors}")]
    Invalid {
        /// What was refused.
        message: String,
        /// Every problem.
        errors: kaas_pipeline::ValidationErrors,
    },
    /// The database failed or could not be reached. Retryable in general.
    #[error("database error: {0}")]
    Database(#[source] DbErr),
    /// A stored row could not be read back (bad JSON, unknown state, invalid pipeline).
    #[error("corrupt store content: {0}")]
    Corrupt(String),
    /// A secret could not be sealed or opened (wrong key, tampered value).
    #[error("secrets: {0}")]
    Secrets(#[from] SecretError),
    /// The bootstrap admin token configured is one that was revoked; it stays revoked,
    /// and the observer needs another.
    #[error(
        "the configured bootstrap admin token was revoked (at {revoked_at_ms} ms since the \
         Unix epoch) and stays revoked"
    )]
    BootstrapTokenRevoked {
        /// When it was revoked, Unix milliseconds.
        revoked_at_ms: i64,
    },
    /// A stored secret value of a pipeline cannot be opened: a key the observer was not
    /// given, a value sealed for another object, or one that was tampered with.
    #[error("pipeline {pipeline}: {field}: {source}")]
    SecretUnreadable {
        /// `tenant/name`.
        pipeline: String,
        /// The secret's field path, e.g. `spec.output.otlp.headers[0].value`.
        field: String,
        /// Why.
        #[source]
        source: SecretError,
    },
}

impl From<DbErr> for StoreError {
    fn from(error: DbErr) -> Self {
        Self::Database(error)
    }
}

impl StoreError {
    /// Whether the database refused a write because of a unique key.
    pub(crate) fn is_unique_violation(error: &DbErr) -> bool {
        matches!(
            error.sql_err(),
            Some(sea_orm::SqlErr::UniqueConstraintViolation(_))
        )
    }
}

/// Why a join token could not be redeemed. The plaintext token is never included.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum RedeemError {
    /// No such token (never minted, mistyped, or its tenant was deleted).
    #[error("unknown join token")]
    Unknown,
    /// The token's time to live has passed; mint a new one.
    #[error("the join token has expired")]
    Expired,
    /// The token was redeemed before; tokens are single use.
    #[error("the join token was already used")]
    AlreadyUsed,
    /// The token's cluster was deleted; a tombstoned cluster cannot join again.
    #[error("the join token's cluster was deleted")]
    ClusterGone,
}
