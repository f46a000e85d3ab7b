//! Tokens: API bearer tokens (table `api_tokens`: who is calling the API) and the
//! single-use join tokens a cluster's agent redeems for its certificate (table
//! `join_tokens`; redemption is in [`certificates`](super::certificates)). Both are
//! returned once and stored only as their SHA-256 (see "Hashed and encrypted" in the
//! store's documentation).

use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ring::rand::{SecureRandom, SystemRandom};
use sea_orm::{
    ActiveModelTrait, ColumnTrait, DatabaseTransaction, DbErr, EntityTrait, IntoActiveModel,
    QueryFilter, QueryOrder, QuerySelect, Set,
};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::entities::{api_tokens, join_tokens, tenants};
use super::{
    Actor, Change, Store, StoreError, find_cluster, insert_error, kinds, not_found, now_ms,
    parse_state,
};
use crate::secrets::SecretError;

/// Prefix of API bearer tokens, so leaked tokens are recognisable by secret scanners.
pub const API_TOKEN_PREFIX: &str = "kot_";

/// Prefix of join tokens.
pub const JOIN_TOKEN_PREFIX: &str = "kjt_";

/// Random bytes in a token: 256 bits, beyond guessing.
pub(super) const TOKEN_RANDOM_BYTES: usize = 32;

/// Random bytes in an API token's public id.
pub(super) const TOKEN_ID_RANDOM_BYTES: usize = 8;

/// Id of the bootstrap administrator token set by [`Store::ensure_admin_token`].
pub const BOOTSTRAP_ADMIN_TOKEN_ID: &str = "bootstrap-admin";

/// Who is calling the API.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Principal {
    /// May do everything.
    Admin,
    /// May act within this tenant only.
    Tenant(String),
}

/// An API token as listed; the plaintext is only returned by
/// [`Store::create_api_token`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ApiTokenInfo {
    /// Public id, used to revoke.
    pub id: String,
    /// Human name.
    pub name: String,
    /// The tenant it acts for; `None` for administrators.
    pub tenant: Option<String>,
    /// Unix milliseconds.
    pub created_at_ms: i64,
}

impl Store {
    /// Creates an API token for a tenant (or an administrator token for `None`).
    /// Returns its description and the plaintext, which is not stored and cannot be
    /// shown again.
    #[tracing::instrument(level = "debug", skip_all, err(level = "debug"), fields(otel.kind = "client"))]
    pub async fn create_api_token(
        &self,
        tenant: Option<&str>,
        name: &str,
        actor: &Actor,
    ) -> Result<(ApiTokenInfo, String), StoreError> {
        let plaintext = random_token(API_TOKEN_PREFIX)?;
        let id = random_hex(TOKEN_ID_RANDOM_BYTES)?;
        let mutation = self.mutation().await?;
        let transaction = mutation.transaction();
        if let Some(tenant) = tenant
            && tenants::Entity::find_by_id(tenant)
                .one(transaction)
                .await?
                .is_none()
        {
            return Err(not_found(kinds::TENANT, tenant));
        }
        let now = now_ms();
        let row = api_tokens::ActiveModel {
            id: Set(id.clone()),
            name: Set(name.to_owned()),
            token_hash: Set(token_hash(&plaintext)),
            tenant: Set(tenant.map(str::to_owned)),
            created_at_ms: Set(now),
            revoked_at_ms: Set(None),
        };
        api_tokens::Entity::insert(row)
            .exec_without_returning(transaction)
            .await
            .map_err(|e| insert_error(e, kinds::API_TOKEN, &id))?;
        mutation
            .audit(actor, "create", kinds::API_TOKEN, tenant, &id)
            .await?;
        mutation.commit(Vec::new()).await?;
        let info = ApiTokenInfo {
            id,
            name: name.to_owned(),
            tenant: tenant.map(str::to_owned),
            created_at_ms: now,
        };
        Ok((info, plaintext))
    }

    /// Makes `plaintext` the bootstrap administrator token (id
    /// [`BOOTSTRAP_ADMIN_TOKEN_ID`]), replacing a previous bootstrap token. Idempotent.
    ///
    /// A revocation is never lifted: if `plaintext` is the bootstrap token that was
    /// revoked, this fails with [`StoreError::BootstrapTokenRevoked`] (issue 13, finding
    /// 10: a revoked bootstrap token worked again after a restart, so revoking a leaked
    /// one achieved nothing). A different token replaces the revoked one: that is how an
    /// operator gives the observer a new bootstrap token.
    #[tracing::instrument(level = "debug", skip_all, err(level = "debug"), fields(otel.kind = "client"))]
    pub async fn ensure_admin_token(&self, plaintext: &str) -> Result<(), StoreError> {
        let hash = token_hash(plaintext);
        let mutation = self.mutation().await?;
        let transaction = mutation.transaction();
        let existing = api_tokens::Entity::find_by_id(BOOTSTRAP_ADMIN_TOKEN_ID)
            .one(transaction)
            .await?;
        match existing {
            Some(row) if row.token_hash == hash => {
                return match row.revoked_at_ms {
                    None => Ok(()),
                    Some(revoked_at_ms) => Err(StoreError::BootstrapTokenRevoked { revoked_at_ms }),
                };
            }
            Some(row) => {
                let mut row = row.into_active_model();
                row.token_hash = Set(hash);
                row.tenant = Set(None);
                row.revoked_at_ms = Set(None);
                row.update(transaction)
                    .await
                    .map_err(bootstrap_token_error)?;
            }
            None => {
                let row = api_tokens::ActiveModel {
                    id: Set(BOOTSTRAP_ADMIN_TOKEN_ID.to_owned()),
                    name: Set(BOOTSTRAP_ADMIN_TOKEN_ID.to_owned()),
                    token_hash: Set(hash),
                    tenant: Set(None),
                    created_at_ms: Set(now_ms()),
                    revoked_at_ms: Set(None),
                };
                api_tokens::Entity::insert(row)
                    .exec_without_returning(transaction)
                    .await
                    .map_err(bootstrap_token_error)?;
            }
        }
        mutation
            .audit(
                &Actor::system(),
                "ensure",
                kinds::API_TOKEN,
                None,
                BOOTSTRAP_ADMIN_TOKEN_ID,
            )
            .await?;
        mutation.commit(Vec::new()).await
    }

    /// Who a bearer token belongs to; `None` for unknown or revoked tokens.
    #[tracing::instrument(level = "debug", skip_all, err(level = "debug"), fields(otel.kind = "client"))]
    pub async fn authenticate(&self, plaintext: &str) -> Result<Option<Principal>, StoreError> {
        if plaintext.is_empty() {
            return Ok(None);
        }
        let row = api_tokens::Entity::find()
            .filter(api_tokens::Column::TokenHash.eq(token_hash(plaintext)))
            .filter(api_tokens::Column::RevokedAtMs.is_null())
            .one(self.reader())
            .await?;
        Ok(row.map(|row| match row.tenant {
            None => Principal::Admin,
            Some(tenant) => Principal::Tenant(tenant),
        }))
    }

    /// Tokens that are not revoked: of one tenant, or all of them for `None`.
    #[tracing::instrument(level = "debug", skip_all, err(level = "debug"), fields(otel.kind = "client"))]
    pub async fn list_api_tokens(
        &self,
        tenant: Option<&str>,
    ) -> Result<Vec<ApiTokenInfo>, StoreError> {
        let mut query = api_tokens::Entity::find()
            .filter(api_tokens::Column::RevokedAtMs.is_null())
            .order_by_asc(api_tokens::Column::CreatedAtMs)
            .order_by_asc(api_tokens::Column::Id);
        if let Some(tenant) = tenant {
            query = query.filter(api_tokens::Column::Tenant.eq(tenant));
        }
        Ok(query
            .all(self.reader())
            .await?
            .into_iter()
            .map(token_info_from_row)
            .collect())
    }

    /// One token that is not revoked, by id (to check who may revoke it).
    #[tracing::instrument(level = "debug", skip_all, err(level = "debug"), fields(otel.kind = "client"))]
    pub async fn get_api_token(&self, id: &str) -> Result<Option<ApiTokenInfo>, StoreError> {
        Ok(api_tokens::Entity::find_by_id(id)
            .filter(api_tokens::Column::RevokedAtMs.is_null())
            .one(self.reader())
            .await?
            .map(token_info_from_row))
    }

    /// Revokes a token; it authenticates nobody from now on. Revoking twice is fine.
    #[tracing::instrument(level = "debug", skip_all, err(level = "debug"), fields(otel.kind = "client"))]
    pub async fn revoke_api_token(&self, id: &str, actor: &Actor) -> Result<(), StoreError> {
        let mutation = self.mutation().await?;
        let transaction = mutation.transaction();
        let row = api_tokens::Entity::find_by_id(id)
            .one(transaction)
            .await?
            .ok_or_else(|| not_found(kinds::API_TOKEN, id))?;
        if row.revoked_at_ms.is_some() {
            return Ok(());
        }
        let tenant = row.tenant.clone();
        let mut row = row.into_active_model();
        row.revoked_at_ms = Set(Some(now_ms()));
        row.update(transaction).await?;
        mutation
            .audit(actor, "revoke", kinds::API_TOKEN, tenant.as_deref(), id)
            .await?;
        mutation.commit(Vec::new()).await
    }

    /// Revokes every token of `tenant` that is not revoked yet, at once (an incident:
    /// a tenant's tokens leaked, or the tenant must be locked out). Each gets its audit
    /// entry; returns how many were revoked. Requests with them are refused from the
    /// commit on, by every replica, since every request looks its token up.
    #[tracing::instrument(level = "debug", skip_all, err(level = "debug"), fields(otel.kind = "client"))]
    pub async fn revoke_tenant_api_tokens(
        &self,
        tenant: &str,
        actor: &Actor,
    ) -> Result<u64, StoreError> {
        let mutation = self.mutation().await?;
        let transaction = mutation.transaction();
        let ids: Vec<String> = api_tokens::Entity::find()
            .filter(api_tokens::Column::Tenant.eq(tenant))
            .filter(api_tokens::Column::RevokedAtMs.is_null())
            .select_only()
            .column(api_tokens::Column::Id)
            .into_tuple()
            .all(transaction)
            .await?;
        if ids.is_empty() {
            return Ok(0);
        }
        let revoked = api_tokens::Entity::update_many()
            .col_expr(
                api_tokens::Column::RevokedAtMs,
                sea_orm::sea_query::Expr::value(now_ms()),
            )
            .filter(api_tokens::Column::Id.is_in(ids.iter().map(String::as_str)))
            .filter(api_tokens::Column::RevokedAtMs.is_null())
            .exec(transaction)
            .await?
            .rows_affected;
        for id in &ids {
            mutation
                .audit(actor, "revoke", kinds::API_TOKEN, Some(tenant), id)
                .await?;
        }
        mutation.commit(Vec::new()).await?;
        Ok(revoked)
    }

    /// A new single-use join token for an existing cluster (for example to re-join
    /// after losing the agent's certificate). Earlier unused tokens stay valid until
    /// they expire.
    #[tracing::instrument(level = "debug", skip_all, err(level = "debug"), fields(otel.kind = "client"))]
    pub async fn mint_join_token(
        &self,
        cluster: &str,
        ttl: Duration,
        actor: &Actor,
    ) -> Result<String, StoreError> {
        let mutation = self.mutation().await?;
        let transaction = mutation.transaction();
        let row = find_cluster(transaction, cluster).await?;
        if parse_state(&row.state)?.is_tombstone() {
            return Err(StoreError::Conflict(format!(
                "cluster {cluster:?} is deleted; register a new cluster instead"
            )));
        }
        let token = insert_join_token(transaction, cluster, ttl, now_ms()).await?;
        mutation
            .audit(actor, "mint", kinds::JOIN_TOKEN, Some(&row.tenant), cluster)
            .await?;
        mutation
            .commit(vec![Change::Cluster {
                tenant: row.tenant,
                id: cluster.to_owned(),
            }])
            .await?;
        Ok(token)
    }
}

pub(super) async fn insert_join_token(
    transaction: &DatabaseTransaction,
    cluster: &str,
    ttl: Duration,
    now: i64,
) -> Result<String, StoreError> {
    let plaintext = random_token(JOIN_TOKEN_PREFIX)?;
    let ttl_ms = i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX);
    let row = join_tokens::ActiveModel {
        token_hash: Set(token_hash(&plaintext)),
        cluster: Set(cluster.to_owned()),
        created_at_ms: Set(now),
        expires_at_ms: Set(now.saturating_add(ttl_ms)),
        used_at_ms: Set(None),
        csr_sha256: Set(None),
        certificate_serial: Set(None),
    };
    join_tokens::Entity::insert(row)
        .exec_without_returning(transaction)
        .await?;
    Ok(plaintext)
}

pub(super) fn token_info_from_row(row: api_tokens::Model) -> ApiTokenInfo {
    ApiTokenInfo {
        id: row.id,
        name: row.name,
        tenant: row.tenant,
        created_at_ms: row.created_at_ms,
    }
}

pub(super) fn bootstrap_token_error(error: DbErr) -> StoreError {
    if StoreError::is_unique_violation(&error) {
        StoreError::Conflict(
            "the bootstrap admin token is already in use as another API token; choose another"
                .into(),
        )
    } else {
        StoreError::Database(error)
    }
}

/// Lower-case hex SHA-256: how tokens are stored and looked up.
pub(super) fn token_hash(plaintext: &str) -> String {
    hex::encode(Sha256::digest(plaintext.as_bytes()))
}

pub(super) fn random_bytes(count: usize) -> Result<Vec<u8>, StoreError> {
    let mut bytes = vec![0u8; count];
    SystemRandom::new()
        .fill(&mut bytes)
        .map_err(|_| StoreError::Secrets(SecretError::Random))?;
    Ok(bytes)
}

pub(super) fn random_hex(count: usize) -> Result<String, StoreError> {
    Ok(hex::encode(random_bytes(count)?))
}

/// `<prefix><base64url of 32 random bytes>`.
pub(super) fn random_token(prefix: &str) -> Result<String, StoreError> {
    Ok(format!(
        "{prefix}{}",
        URL_SAFE_NO_PAD.encode(random_bytes(TOKEN_RANDOM_BYTES)?)
    ))
}
