//! Who is calling: the bearer token becomes a [`Caller`] (an admin or one tenant) through
//! [`Store::authenticate`](crate::store::Store::authenticate).
//!
//! Tenant isolation rule: a tenant token sees and changes only its own tenant's objects.
//! Reading or changing another tenant's cluster or pipeline answers 404, exactly as if
//! the object did not exist, so names do not leak across tenants. Asking for another
//! tenant explicitly (`?tenant=other`) answers 403, which says nothing about any object.

use std::sync::{Arc, Mutex};

use axum::extract::FromRequestParts;
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;

use super::ApiState;
use super::error::ApiError;
use crate::store::{Actor, Principal};

/// Where the request's authenticated caller is noted for the request metrics
/// ([`super::metrics`]), which see only the response otherwise: the metrics layer puts
/// an empty slot into the request's extensions, [`Caller`]'s extractor fills it.
#[derive(Clone, Debug, Default)]
pub struct CallerSlot(Arc<Mutex<Option<Principal>>>);

impl CallerSlot {
    /// The caller, once authenticated.
    pub fn get(&self) -> Option<Principal> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn set(&self, principal: &Principal) {
        *self.0.lock().unwrap_or_else(|e| e.into_inner()) = Some(principal.clone());
    }
}

/// An authenticated caller.
#[derive(Clone, Debug)]
pub struct Caller {
    /// Who it is.
    pub principal: Principal,
}

impl Caller {
    /// How the caller appears in the audit trail.
    pub fn actor(&self) -> Actor {
        match &self.principal {
            Principal::Admin => Actor("admin".to_owned()),
            Principal::Tenant(tenant) => Actor(format!("tenant:{tenant}")),
        }
    }

    /// Whether the caller is an admin.
    pub fn is_admin(&self) -> bool {
        matches!(self.principal, Principal::Admin)
    }

    /// Refuses tenant tokens.
    pub fn require_admin(&self) -> Result<(), ApiError> {
        if self.is_admin() {
            Ok(())
        } else {
            Err(ApiError::Forbidden("this needs an admin token".to_owned()))
        }
    }

    /// Whether the caller may see objects of `tenant`.
    pub fn may_see(&self, tenant: &str) -> bool {
        match &self.principal {
            Principal::Admin => true,
            Principal::Tenant(own) => own == tenant,
        }
    }

    /// The tenant a list is restricted to: what an admin asks for (`None` = all), and
    /// always the caller's own tenant for a tenant token.
    pub fn list_scope(&self, requested: Option<String>) -> Result<Option<String>, ApiError> {
        match &self.principal {
            Principal::Admin => Ok(requested),
            Principal::Tenant(own) => match requested {
                Some(other) if other != *own => Err(other_tenant()),
                _ => Ok(Some(own.clone())),
            },
        }
    }

    /// The tenant a single-object request acts in: an admin must name it (`what` says
    /// how, for the message); a tenant token acts in its own tenant and may not name
    /// another.
    pub fn target_tenant(&self, requested: Option<String>, what: &str) -> Result<String, ApiError> {
        match &self.principal {
            Principal::Admin => requested.ok_or_else(|| {
                ApiError::BadRequest(format!("an admin token must name the tenant with {what}"))
            }),
            Principal::Tenant(own) => match requested {
                Some(other) if other != *own => Err(other_tenant()),
                _ => Ok(own.clone()),
            },
        }
    }
}

fn other_tenant() -> ApiError {
    ApiError::Forbidden("a tenant token can only act on its own tenant".to_owned())
}

/// The token from `Authorization: Bearer <token>` (scheme case-insensitive).
fn bearer_token(parts: &Parts) -> Result<&str, ApiError> {
    let header = parts
        .headers
        .get(AUTHORIZATION)
        .ok_or_else(|| ApiError::Unauthorized("a bearer token is required".to_owned()))?;
    let value = header
        .to_str()
        .map_err(|_| ApiError::Unauthorized("the token was refused".to_owned()))?;
    let (scheme, token) = value.split_once(' ').ok_or_else(|| {
        ApiError::Unauthorized("expected Authorization: Bearer <token>".to_owned())
    })?;
    let token = token.trim();
    if !scheme.eq_ignore_ascii_case("bearer") || token.is_empty() {
        return Err(ApiError::Unauthorized(
            "expected Authorization: Bearer <token>".to_owned(),
        ));
    }
    Ok(token)
}

impl FromRequestParts<ApiState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &ApiState) -> Result<Self, ApiError> {
        let token = bearer_token(parts)?;
        match state.store.authenticate(token).await? {
            Some(principal) => {
                if let Some(slot) = parts.extensions.get::<CallerSlot>() {
                    slot.set(&principal);
                }
                Ok(Self { principal })
            }
            None => Err(ApiError::Unauthorized("the token was refused".to_owned())),
        }
    }
}
