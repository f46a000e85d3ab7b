//! Agent certificates and join-token redemption (table `agent_certificates`, created by
//! `migrations/identity.rs`).
//!
//! # The lifecycle of a certificate
//!
//! Every client certificate issued to an agent is a row: its serial, the cluster's
//! global id, the agent instance it names, its expiry and, once it stops being
//! accepted, `revoked_at_ms`. The control service accepts a stream only with a recorded,
//! unrevoked serial of a live cluster ([`Store::certificate_standing`]), and every
//! revocation publishes a [`Change::Cluster`](super::Change::Cluster), which makes the cluster's open streams
//! check their own serial again and end with `PERMISSION_DENIED` if it was revoked.
//!
//! - **Join** ([`Store::redeem_join_token`]): the token is used up and the new
//!   certificate recorded in one transaction, which revokes every earlier certificate of
//!   the same instance (re-joining replaces the identity); other instances of the
//!   cluster keep theirs.
//! - **Renewal** over the stream ([`Store::record_agent_certificate`] with the stream's
//!   own serial kept): the new certificate is recorded beside the one in use, which
//!   stays valid until the instance connects with the new one
//!   ([`Store::activate_certificate`] then revokes every older certificate of the
//!   instance). A renewal asked again before the switch supersedes (revokes) the
//!   previous pending one, so an instance never holds more than two valid certificates.
//! - **A new instance** issued over the cluster's stream (sponsored by its default
//!   instance): like a join of that instance. At most [`MAX_INSTANCES_PER_CLUSTER`]
//!   instances of a cluster hold valid certificates.
//! - **Deletion** of the cluster refuses all of its certificates (the tombstone), and
//!   **expiry** is enforced by TLS at the handshake and by the stream's own deadline.
//!
//! Rows revoked or expired longer than [`CERTIFICATE_ROW_RETENTION`] ago are pruned when
//! their instance gets a new certificate, so an instance keeps a handful of rows.
//!
//! # Idempotent joins
//!
//! A redemption records the SHA-256 of the CSR it signed and the certificate's serial
//! on the token. A `Join` that arrives again with the same token and the same CSR
//! within [`JOIN_RETRY_WINDOW`] (its answer was lost on the way, or the agent could not
//! save it) gets the same certificate again instead of "already used"
//! ([`Store::check_join_token`]). Only the holder of the CSR's private key can use that
//! certificate, so replaying a captured CSR gains nothing.
//!
//! # Cost for unauthenticated callers
//!
//! [`Store::check_join_token`] only reads (on SQLite: the read-only pool), so unknown,
//! expired and used tokens never reach the single writer; the writer is taken only by
//! the short conditional redemption of a valid token, after the certificate was signed.

use std::time::Duration;

use sea_orm::sea_query::Expr;
use sea_orm::{
    ActiveModelTrait, ColumnTrait, Condition, ConnectionTrait, DatabaseTransaction, EntityTrait,
    IntoActiveModel, PaginatorTrait, QueryFilter, QuerySelect, Set,
};

use super::entities::{agent_certificates, clusters, join_tokens};
use super::{
    Actor, Cluster, RedeemError, Store, StoreError, audit, cluster_change, cluster_from_row,
    find_cluster, kinds, token_hash,
};

/// How long after a successful join the same token and CSR get the same answer again:
/// long enough for an agent to time out, back off and retry (its join timeout is 30 s
/// and its backoff grows to a minute), short enough that a token stays single use for
/// every other purpose.
pub const JOIN_RETRY_WINDOW: Duration = Duration::from_secs(10 * 60);
/// How long revoked or expired certificate rows are kept before they are pruned: well
/// beyond [`JOIN_RETRY_WINDOW`], long enough to look at after an incident.
pub const CERTIFICATE_ROW_RETENTION: Duration = Duration::from_secs(24 * 3600);
/// Most agent instances of one cluster that may hold valid certificates: the largest
/// Kubernetes cluster (5,000 nodes) with a node instance each, its gateway and cluster
/// instances, and room to spare, while a misbehaving agent cannot grow the table
/// without bound.
pub const MAX_INSTANCES_PER_CLUSTER: u64 = 10_000;

/// A certificate just signed, to record.
#[derive(Clone, Copy, Debug)]
pub struct NewAgentCertificate<'a> {
    /// Lower-case hex serial.
    pub serial_hex: &'a str,
    /// The certificate, PEM.
    pub pem: &'a str,
    /// The agent instance it names.
    pub instance: &'a str,
    /// Its expiry, Unix milliseconds.
    pub not_after_ms: i64,
}

/// What a join token allows, read without writing ([`Store::check_join_token`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum JoinTokenCheck {
    /// Valid and unused: sign the CSR, then [`Store::redeem_join_token`].
    Redeemable(Cluster),
    /// This CSR redeemed the token within [`JOIN_RETRY_WINDOW`]: answer again with the
    /// certificate it got.
    Answered {
        /// The cluster.
        cluster: Cluster,
        /// The certificate issued then, PEM.
        certificate_pem: String,
        /// Its instance.
        instance: String,
        /// Its expiry, Unix milliseconds.
        not_after_ms: i64,
    },
    /// Refused, and why.
    Refused(RedeemError),
}

/// Whether a certificate is accepted ([`Store::certificate_standing`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CertificateStanding {
    /// Recorded for the cluster and not revoked; the instance it was recorded for.
    Valid {
        /// The agent instance.
        instance: String,
    },
    /// Recorded and revoked (its instance joined again or switched to a newer one).
    Revoked,
    /// Not recorded for this cluster.
    Unknown,
}

/// Lower-case hex SHA-256 of a CSR, as the redemption records it.
pub fn csr_sha256(csr_pem: &str) -> String {
    token_hash(csr_pem)
}

impl Store {
    /// What `plaintext` allows for a `Join` with the CSR hashing to `csr_sha256`, read
    /// without writing (see the module documentation).
    #[tracing::instrument(level = "debug", skip_all, err(level = "debug"), fields(otel.kind = "client"))]
    pub async fn check_join_token(
        &self,
        plaintext: &str,
        csr_sha256: &str,
        now_ms: i64,
    ) -> Result<JoinTokenCheck, StoreError> {
        let reader = self.reader();
        let Some(token) = join_tokens::Entity::find_by_id(token_hash(plaintext))
            .one(reader)
            .await?
        else {
            return Ok(JoinTokenCheck::Refused(RedeemError::Unknown));
        };
        let Some(row) = clusters::Entity::find_by_id(&token.cluster)
            .one(reader)
            .await?
        else {
            return Ok(JoinTokenCheck::Refused(RedeemError::ClusterGone));
        };
        let cluster = cluster_from_row(row)?;
        if cluster.state.is_tombstone() {
            return Ok(JoinTokenCheck::Refused(RedeemError::ClusterGone));
        }
        let Some(used_at_ms) = token.used_at_ms else {
            return Ok(if token.expires_at_ms > now_ms {
                JoinTokenCheck::Redeemable(cluster)
            } else {
                JoinTokenCheck::Refused(RedeemError::Expired)
            });
        };
        let window_ms = i64::try_from(JOIN_RETRY_WINDOW.as_millis()).unwrap_or(i64::MAX);
        let same_request = token.csr_sha256.as_deref() == Some(csr_sha256)
            && now_ms < used_at_ms.saturating_add(window_ms);
        if let (true, Some(serial)) = (same_request, &token.certificate_serial)
            && let Some(issued) = agent_certificates::Entity::find_by_id(serial)
                .one(reader)
                .await?
            && issued.revoked_at_ms.is_none()
            && let Some(certificate_pem) = issued.certificate_pem
        {
            return Ok(JoinTokenCheck::Answered {
                cluster,
                certificate_pem,
                instance: issued.instance,
                not_after_ms: issued.not_after_ms,
            });
        }
        Ok(JoinTokenCheck::Refused(RedeemError::AlreadyUsed))
    }

    /// Redeems a join token exactly once and records the certificate signed for it, in
    /// one transaction (see the module documentation): earlier certificates of the same
    /// instance are revoked. The outer error is the database; the inner one says why
    /// the token was refused (a concurrent redeemer won, it expired meanwhile, ...).
    #[tracing::instrument(level = "debug", skip_all, err(level = "debug"), fields(otel.kind = "client"))]
    pub async fn redeem_join_token(
        &self,
        plaintext: &str,
        csr_sha256: &str,
        certificate: NewAgentCertificate<'_>,
        now_ms: i64,
    ) -> Result<Result<Cluster, RedeemError>, StoreError> {
        let hash = token_hash(plaintext);
        let mutation = self.mutation().await?;
        let transaction = mutation.transaction();
        let won = join_tokens::Entity::update_many()
            .col_expr(join_tokens::Column::UsedAtMs, Expr::value(now_ms))
            .col_expr(join_tokens::Column::CsrSha256, Expr::value(csr_sha256))
            .col_expr(
                join_tokens::Column::CertificateSerial,
                Expr::value(certificate.serial_hex),
            )
            .filter(join_tokens::Column::TokenHash.eq(&hash))
            .filter(join_tokens::Column::UsedAtMs.is_null())
            .filter(join_tokens::Column::ExpiresAtMs.gt(now_ms))
            .exec(transaction)
            .await?
            .rows_affected
            == 1;
        let Some(token) = join_tokens::Entity::find_by_id(&hash)
            .one(transaction)
            .await?
        else {
            return Ok(Err(RedeemError::Unknown));
        };
        let cluster = cluster_from_row(find_cluster(transaction, &token.cluster).await?)?;
        if cluster.state.is_tombstone() {
            // Roll back: a refused redemption must not use the token up.
            return Ok(Err(RedeemError::ClusterGone));
        }
        if !won {
            return Ok(Err(if token.used_at_ms.is_some() {
                RedeemError::AlreadyUsed
            } else {
                RedeemError::Expired
            }));
        }
        mutation
            .audit(
                &Actor::agent(&cluster.id),
                "redeem",
                kinds::JOIN_TOKEN,
                Some(&cluster.tenant),
                &cluster.id,
            )
            .await?;
        issue(transaction, &cluster, certificate, None, now_ms).await?;
        mutation.commit(vec![cluster_change(&cluster)]).await?;
        Ok(Ok(cluster))
    }

    /// Records a certificate issued over an agent's stream. `keep` is the serial of the
    /// stream's own certificate when this renews it (it stays valid until the switch);
    /// every other valid certificate of the instance is revoked. Refused with
    /// [`StoreError::Conflict`] for a deleted cluster or a new instance beyond
    /// [`MAX_INSTANCES_PER_CLUSTER`].
    #[tracing::instrument(level = "debug", skip_all, err(level = "debug"), fields(otel.kind = "client"))]
    pub async fn record_agent_certificate(
        &self,
        cluster_id: &str,
        certificate: NewAgentCertificate<'_>,
        keep: Option<&str>,
        now_ms: i64,
    ) -> Result<(), StoreError> {
        let mutation = self.mutation().await?;
        let transaction = mutation.transaction();
        let cluster = cluster_from_row(find_cluster(transaction, cluster_id).await?)?;
        if cluster.state.is_tombstone() {
            return Err(StoreError::Conflict(format!(
                "cluster {cluster_id:?} is deleted"
            )));
        }
        let known_instance = valid_certificates(cluster_id, now_ms)
            .filter(agent_certificates::Column::Instance.eq(certificate.instance))
            .count(transaction)
            .await?
            > 0;
        if !known_instance {
            let instances = valid_certificates(cluster_id, now_ms)
                .select_only()
                .column(agent_certificates::Column::Instance)
                .distinct()
                .count(transaction)
                .await?;
            if instances >= MAX_INSTANCES_PER_CLUSTER {
                return Err(StoreError::Conflict(format!(
                    "cluster {cluster_id:?} already has {instances} agent instances with valid certificates (at most {MAX_INSTANCES_PER_CLUSTER})"
                )));
            }
        }
        issue(transaction, &cluster, certificate, keep, now_ms).await?;
        mutation.commit(vec![cluster_change(&cluster)]).await
    }

    /// Revokes every certificate of the cluster, of every instance (an incident: an
    /// agent's key leaked, or the cluster must be cut off). The cluster's open streams
    /// are told and end with `PERMISSION_DENIED`; its record and pipelines stay, and a
    /// new join token brings an agent back with a fresh identity. Returns how many
    /// certificates were revoked.
    #[tracing::instrument(level = "debug", skip_all, err(level = "debug"), fields(otel.kind = "client"))]
    pub async fn revoke_cluster_certificates(
        &self,
        cluster_id: &str,
        actor: &Actor,
        now_ms: i64,
    ) -> Result<u64, StoreError> {
        let mutation = self.mutation().await?;
        let transaction = mutation.transaction();
        let cluster = cluster_from_row(find_cluster(transaction, cluster_id).await?)?;
        let revoked = agent_certificates::Entity::update_many()
            .col_expr(agent_certificates::Column::RevokedAtMs, Expr::value(now_ms))
            .filter(agent_certificates::Column::Cluster.eq(cluster_id))
            .filter(agent_certificates::Column::RevokedAtMs.is_null())
            .exec(transaction)
            .await?
            .rows_affected;
        mutation
            .audit(
                actor,
                "revoke-certificates",
                kinds::CLUSTER,
                Some(&cluster.tenant),
                cluster_id,
            )
            .await?;
        mutation.commit(vec![cluster_change(&cluster)]).await?;
        Ok(revoked)
    }

    /// Whether the certificate `serial` of `cluster_id` is accepted. Read only.
    #[tracing::instrument(level = "debug", skip_all, err(level = "debug"), fields(otel.kind = "client"))]
    pub async fn certificate_standing(
        &self,
        cluster_id: &str,
        serial: &str,
    ) -> Result<CertificateStanding, StoreError> {
        certificate_standing_in(self.reader(), cluster_id, serial).await
    }

    /// The instance connected with the certificate `serial`: every valid certificate of
    /// the same instance issued before it is revoked (the switch after a renewal), and
    /// the cluster's streams are told. Returns how many were revoked; writes nothing
    /// when there are none (the usual reconnect).
    #[tracing::instrument(level = "debug", skip_all, err(level = "debug"), fields(otel.kind = "client"))]
    pub async fn activate_certificate(
        &self,
        cluster_id: &str,
        serial: &str,
        now_ms: i64,
    ) -> Result<u64, StoreError> {
        let Some(current) = agent_certificates::Entity::find_by_id(serial)
            .one(self.reader())
            .await?
            .filter(|row| row.cluster == cluster_id)
        else {
            return Ok(0);
        };
        let older = |query: sea_orm::Select<agent_certificates::Entity>| {
            query
                .filter(agent_certificates::Column::Cluster.eq(cluster_id))
                .filter(agent_certificates::Column::Instance.eq(&current.instance))
                .filter(agent_certificates::Column::Serial.ne(serial))
                .filter(agent_certificates::Column::RevokedAtMs.is_null())
                .filter(agent_certificates::Column::IssuedAtMs.lte(current.issued_at_ms))
        };
        if older(agent_certificates::Entity::find())
            .count(self.reader())
            .await?
            == 0
        {
            return Ok(0);
        }
        let mutation = self.mutation().await?;
        let transaction = mutation.transaction();
        let cluster = cluster_from_row(find_cluster(transaction, cluster_id).await?)?;
        let revoked = agent_certificates::Entity::update_many()
            .col_expr(agent_certificates::Column::RevokedAtMs, Expr::value(now_ms))
            .filter(agent_certificates::Column::Cluster.eq(cluster_id))
            .filter(agent_certificates::Column::Instance.eq(&current.instance))
            .filter(agent_certificates::Column::Serial.ne(serial))
            .filter(agent_certificates::Column::RevokedAtMs.is_null())
            .filter(agent_certificates::Column::IssuedAtMs.lte(current.issued_at_ms))
            .exec(transaction)
            .await?
            .rows_affected;
        if revoked > 0 {
            mutation
                .audit(
                    &Actor::agent(cluster_id),
                    "activate-certificate",
                    kinds::CLUSTER,
                    Some(&cluster.tenant),
                    cluster_id,
                )
                .await?;
        }
        mutation.commit(vec![cluster_change(&cluster)]).await?;
        Ok(revoked)
    }
}

/// Whether the certificate `serial` of `cluster_id` is accepted, read from `db`: the
/// one query the control service ([`Store::certificate_standing`]) and the receive
/// gateway (which holds a read-only connection, no [`Store`]) share. Tombstoning a
/// cluster revokes its certificates, so a deleted cluster's, and an earlier
/// incarnation's, are `Revoked`.
pub async fn certificate_standing_in(
    db: &impl ConnectionTrait,
    cluster_id: &str,
    serial: &str,
) -> Result<CertificateStanding, StoreError> {
    let row = agent_certificates::Entity::find_by_id(serial)
        .one(db)
        .await?;
    Ok(match row {
        Some(row) if row.cluster == cluster_id && row.revoked_at_ms.is_none() => {
            CertificateStanding::Valid {
                instance: row.instance,
            }
        }
        Some(row) if row.cluster == cluster_id => CertificateStanding::Revoked,
        _ => CertificateStanding::Unknown,
    })
}

/// Whether `cluster_id` is deleted (a tombstone, or no record at all), read from `db`:
/// a deleted cluster's certificates are revoked only when its name is registered
/// again, so the receive gateway asks this besides [`certificate_standing_in`].
pub async fn cluster_deleted_in(
    db: &impl ConnectionTrait,
    cluster_id: &str,
) -> Result<bool, StoreError> {
    match clusters::Entity::find_by_id(cluster_id).one(db).await? {
        Some(row) => Ok(super::clusters::parse_state(&row.state)?.is_tombstone()),
        None => Ok(true),
    }
}

/// The certificates of `cluster_id` that are neither revoked nor expired at `now_ms`.
fn valid_certificates(
    cluster_id: &str,
    now_ms: i64,
) -> sea_orm::Select<agent_certificates::Entity> {
    agent_certificates::Entity::find()
        .filter(agent_certificates::Column::Cluster.eq(cluster_id))
        .filter(agent_certificates::Column::RevokedAtMs.is_null())
        .filter(agent_certificates::Column::NotAfterMs.gt(now_ms))
}

/// Records `certificate` for `cluster`: revokes the instance's other valid certificates
/// (all of them, or all but `keep`), prunes its long-dead rows, inserts the new one, and
/// keeps the cluster row's certificate columns on the default instance's newest.
async fn issue(
    transaction: &DatabaseTransaction,
    cluster: &Cluster,
    certificate: NewAgentCertificate<'_>,
    keep: Option<&str>,
    now_ms: i64,
) -> Result<(), StoreError> {
    let of_instance = |query: sea_orm::UpdateMany<agent_certificates::Entity>| {
        query
            .filter(agent_certificates::Column::Cluster.eq(&cluster.id))
            .filter(agent_certificates::Column::Instance.eq(certificate.instance))
    };
    let mut revoke = of_instance(agent_certificates::Entity::update_many())
        .col_expr(agent_certificates::Column::RevokedAtMs, Expr::value(now_ms))
        .filter(agent_certificates::Column::RevokedAtMs.is_null());
    if let Some(keep) = keep {
        revoke = revoke.filter(agent_certificates::Column::Serial.ne(keep));
    }
    revoke.exec(transaction).await?;
    let retention_ms = i64::try_from(CERTIFICATE_ROW_RETENTION.as_millis()).unwrap_or(i64::MAX);
    let dead_before = now_ms.saturating_sub(retention_ms);
    agent_certificates::Entity::delete_many()
        .filter(agent_certificates::Column::Cluster.eq(&cluster.id))
        .filter(agent_certificates::Column::Instance.eq(certificate.instance))
        .filter(
            Condition::any()
                .add(agent_certificates::Column::RevokedAtMs.lt(dead_before))
                .add(agent_certificates::Column::NotAfterMs.lt(dead_before)),
        )
        .exec(transaction)
        .await?;
    agent_certificates::ActiveModel {
        serial: Set(certificate.serial_hex.to_owned()),
        cluster: Set(cluster.id.clone()),
        instance: Set(certificate.instance.to_owned()),
        certificate_pem: Set(Some(certificate.pem.to_owned())),
        issued_at_ms: Set(now_ms),
        not_after_ms: Set(certificate.not_after_ms),
        revoked_at_ms: Set(None),
    }
    .insert(transaction)
    .await?;
    if certificate.instance == crate::identity::DEFAULT_INSTANCE {
        let mut row = find_cluster(transaction, &cluster.id)
            .await?
            .into_active_model();
        row.certificate_serial = Set(Some(certificate.serial_hex.to_owned()));
        row.certificate_not_after_ms = Set(Some(certificate.not_after_ms));
        row.update(transaction).await?;
    }
    audit::record(
        transaction,
        &Actor::system(),
        "issue-certificate",
        kinds::CLUSTER,
        Some(&cluster.tenant),
        &cluster.id,
    )
    .await
}
