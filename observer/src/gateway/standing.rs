//! Whether an agent certificate still stands: revoked, a deleted cluster's, or one of
//! an earlier incarnation of its name are refused at the gateway within
//! [`DEFAULT_CERTIFICATE_RECHECK_INTERVAL`] of the change.
//!
//! # Design note
//!
//! The TLS layer only proves that the observer's CA signed a certificate that has not
//! expired. Revoking a cluster's agent (`observer cluster revoke-certificates`) and
//! deleting the cluster (a tombstone; registering the name again revokes the old
//! incarnation's certificates, so they never pass for the new one) are recorded in the
//! observer's store. The gateway reads that record itself: with `--database-url` it holds a connection of its own to
//! the observer's database (give it a role that may only `SELECT` from
//! `agent_certificates`; `sqlite://…?mode=ro` for SQLite) and asks
//! [`certificate_standing_in`], the query the control service uses, and
//! [`cluster_deleted_in`] for each certificate serial it sees.
//!
//! **Cached.** A verdict is kept for the recheck interval, so the store sees at most one
//! query per certificate and interval per replica, however often an agent sends, and a
//! revocation stops a certificate's writes within that interval. The cache holds at
//! most [`MAX_CACHED_CERTIFICATES`] serials; past that it is emptied (every verdict is
//! asked again), so a flood of distinct certificates cannot grow it.
//!
//! **When the store does not answer**, a certificate whose last verdict was valid keeps
//! being accepted (its verdict is not renewed, so it is asked again on the next
//! request), and one without a verdict is answered 503, which the agent retries from
//! its buffer: a database failover neither drops the fleet's data nor lets a revoked
//! certificate back in. Failures are logged; the refusals are counted with every other
//! answer (`kaas_gateway_requests_total{code="403"|"503"}`).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use sea_orm::{ConnectOptions, Database, DatabaseConnection};

use crate::store::StoreError;
use crate::store::certificates::{
    CertificateStanding, certificate_standing_in, cluster_deleted_in,
};

/// How long a certificate's verdict is trusted: a revoked agent's writes stop within
/// this long, and each replica asks the store about each certificate at most this
/// often (a fleet of 10,000 clusters is about 330 queries a second at most).
pub const DEFAULT_CERTIFICATE_RECHECK_INTERVAL: Duration = Duration::from_secs(30);
/// Certificates one replica keeps a verdict for: every agent of a large fleet, a few
/// instances each. Past it the cache is emptied rather than grown.
pub const MAX_CACHED_CERTIFICATES: usize = 100_000;
/// Connections to the store per replica: one query per certificate and interval needs
/// few.
const STORE_MAX_CONNECTIONS: u32 = 4;
/// How long connecting to the store may take before a check is answered 503.
const STORE_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Why a certificate may not send.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum StandingRefusal {
    /// Revoked: the cluster's agent was revoked or the cluster deleted (403).
    #[error(
        "the client certificate was revoked (the cluster's agent was revoked or the cluster deleted)"
    )]
    Revoked,
    /// Its cluster is deleted (403).
    #[error("the client certificate's cluster was deleted")]
    ClusterDeleted,
    /// The store has no record of it for this cluster (403).
    #[error("the client certificate is not recorded for its cluster")]
    Unknown,
    /// The store did not answer and there is no earlier verdict (503, retried).
    #[error("cannot check the client certificate now; retry")]
    Unavailable,
}

/// A verdict and when it was reached.
#[derive(Clone, Debug)]
struct Verdict {
    at: Instant,
    standing: Result<(), StandingRefusal>,
}

/// The certificate checks of one replica.
pub struct CertificateStandings {
    db: DatabaseConnection,
    recheck: Duration,
    verdicts: Mutex<HashMap<(String, String), Verdict>>,
}

impl std::fmt::Debug for CertificateStandings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CertificateStandings")
            .field("recheck", &self.recheck)
            .finish_non_exhaustive()
    }
}

impl CertificateStandings {
    /// Connects to the store at `url` (never echoed: it may hold a password). Nothing
    /// is written and no migration is run.
    pub async fn connect(url: &str, recheck: Duration) -> Result<Self, StoreError> {
        let mut options = ConnectOptions::new(url);
        options
            .max_connections(STORE_MAX_CONNECTIONS)
            .connect_timeout(STORE_CONNECT_TIMEOUT)
            .acquire_timeout(STORE_CONNECT_TIMEOUT)
            .sqlx_logging(false);
        let db = Database::connect(options).await?;
        Ok(Self {
            db,
            recheck,
            verdicts: Mutex::new(HashMap::new()),
        })
    }

    /// Whether the certificate `serial` of `cluster` may send at `now`.
    pub async fn check(
        &self,
        cluster: &str,
        serial: &str,
        now: Instant,
    ) -> Result<(), StandingRefusal> {
        let key = (cluster.to_owned(), serial.to_owned());
        let cached = self.verdicts().get(&key).cloned();
        if let Some(verdict) = &cached
            && now.saturating_duration_since(verdict.at) < self.recheck
        {
            return verdict.standing.clone();
        }
        let standing = match self.ask(cluster, serial).await {
            Ok(standing) => standing,
            Err(error) => {
                tracing::warn!(%error, cluster, "cannot check an agent certificate in the store");
                // The last verdict stands, unrenewed; without one, retry later.
                return match cached {
                    Some(Verdict { standing, .. }) => standing,
                    None => Err(StandingRefusal::Unavailable),
                };
            }
        };
        let mut verdicts = self.verdicts();
        if verdicts.len() >= MAX_CACHED_CERTIFICATES {
            verdicts.clear();
        }
        verdicts.insert(
            key,
            Verdict {
                at: now,
                standing: standing.clone(),
            },
        );
        standing
    }

    /// The store's verdict on the certificate `serial` of `cluster`.
    async fn ask(
        &self,
        cluster: &str,
        serial: &str,
    ) -> Result<Result<(), StandingRefusal>, StoreError> {
        Ok(
            match certificate_standing_in(&self.db, cluster, serial).await? {
                CertificateStanding::Valid { .. }
                    if cluster_deleted_in(&self.db, cluster).await? =>
                {
                    Err(StandingRefusal::ClusterDeleted)
                }
                CertificateStanding::Valid { .. } => Ok(()),
                CertificateStanding::Revoked => Err(StandingRefusal::Revoked),
                CertificateStanding::Unknown => Err(StandingRefusal::Unknown),
            },
        )
    }

    fn verdicts(&self) -> std::sync::MutexGuard<'_, HashMap<(String, String), Verdict>> {
        self.verdicts.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::certificates::NewAgentCertificate;
    use crate::store::{Actor, NewCluster, Store};

    /// A verdict holds for the recheck interval and is asked again after it: an
    /// unknown certificate recorded later, then its cluster deleted, each take effect
    /// at the next check after the interval, never before. Times are passed in, so
    /// nothing waits.
    #[tokio::test]
    async fn verdicts_are_cached_for_the_recheck_interval_and_follow_the_store() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("observer.db");
        let store = Store::open_sqlite(&db, crate::secrets::SecretBox::generate().unwrap())
            .await
            .unwrap();
        store.create_tenant("shop", &Actor::admin()).await.unwrap();
        store
            .create_cluster(
                NewCluster {
                    name: "edge".into(),
                    tenant: "shop".into(),
                    labels: Default::default(),
                    api_endpoint: None,
                },
                Duration::from_secs(60),
                &Actor::admin(),
            )
            .await
            .unwrap();
        let recheck = Duration::from_secs(30);
        let standings =
            CertificateStandings::connect(&format!("sqlite://{}?mode=ro", db.display()), recheck)
                .await
                .unwrap();
        let start = Instant::now();
        let check = |at: Instant| standings.check("shop.edge", "0a1b", at);
        assert_eq!(check(start).await, Err(StandingRefusal::Unknown));
        store
            .record_agent_certificate(
                "shop.edge",
                NewAgentCertificate {
                    serial_hex: "0a1b",
                    pem: "-----BEGIN CERTIFICATE-----",
                    instance: "default",
                    not_after_ms: i64::MAX,
                },
                None,
                crate::store::now_ms(),
            )
            .await
            .unwrap();
        assert_eq!(
            check(start + recheck / 2).await,
            Err(StandingRefusal::Unknown),
            "cached"
        );
        let later = start + recheck;
        assert_eq!(check(later).await, Ok(()));
        store
            .delete_cluster("shop.edge", &Actor::admin())
            .await
            .unwrap();
        assert_eq!(check(later).await, Ok(()), "cached");
        assert_eq!(
            check(later + recheck).await,
            Err(StandingRefusal::ClusterDeleted)
        );
        // Another certificate of the same cluster is asked on its own.
        assert_eq!(
            standings.check("shop.edge", "ffff", later).await,
            Err(StandingRefusal::Unknown)
        );
    }
}
