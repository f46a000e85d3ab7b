//! [`ApiError`]: every way a request can fail, and the one place that turns a failure
//! into an HTTP response.
//!
//! 4xx answers carry their reason (and, for 422, every field error with its path) as
//! `{"error": "...", "fields": [{"path": "...", "message": "..."}]}`. 5xx answers say
//! only "internal error": the cause goes to the log, never to the client, because it may
//! name database details or, worse, data of another tenant.

use axum::Json;
use axum::extract::rejection::{BytesRejection, PathRejection, QueryRejection};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use kaas_pipeline::ValidationErrors;

use super::model::{ErrorBody, FieldProblem};
use crate::store::StoreError;

/// What 5xx responses say; the cause is only logged.
pub const INTERNAL_ERROR_MESSAGE: &str = "internal error";

/// Set on the response of a refused request (a 4xx): why, as the `reason` label of
/// `kaas_observer_api_refusals_total` ([`super::metrics`]). One fixed word per error
/// kind, so the label's values are bounded by this enum.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Refusal(pub &'static str);

/// A failed request.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// 422: the request was understood but its content is invalid; every problem is
    /// listed with its field path.
    #[error("{message}")]
    Invalid {
        /// A summary, e.g. "the pipeline is invalid".
        message: String,
        /// Every field error.
        fields: Vec<FieldProblem>,
    },
    /// 400: the request cannot be read (malformed JSON, bad query parameter).
    #[error("{0}")]
    BadRequest(String),
    /// 401: no token, or one the observer does not know.
    #[error("{0}")]
    Unauthorized(String),
    /// 403: a valid token that may not do this.
    #[error("{0}")]
    Forbidden(String),
    /// 404: no such object, or one of another tenant.
    #[error("{0}")]
    NotFound(String),
    /// 409: the object exists already, or its state forbids the change.
    #[error("{0}")]
    Conflict(String),
    /// 413: the body is larger than the observer accepts.
    #[error("{0}")]
    PayloadTooLarge(String),
    /// 415: a body in a format the endpoint does not read.
    #[error("{0}")]
    UnsupportedMediaType(String),
    /// 503: a dependency (the database) does not answer; the cause is logged.
    #[error("service unavailable")]
    Unavailable(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// 500: a bug or a broken dependency; the cause is logged.
    #[error("internal error")]
    Internal(#[source] Box<dyn std::error::Error + Send + Sync>),
}

impl ApiError {
    /// A 422 with one field error.
    pub fn invalid_field(
        message: impl Into<String>,
        path: impl Into<String>,
        reason: impl Into<String>,
    ) -> Self {
        Self::Invalid {
            message: message.into(),
            fields: vec![FieldProblem {
                path: path.into(),
                message: reason.into(),
            }],
        }
    }

    /// A 500 for an unexpected failure.
    pub fn internal(error: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> Self {
        Self::Internal(error.into())
    }

    /// Why the request was refused, for the refusal counter; `None` for server errors,
    /// which are not the caller's doing.
    pub fn refusal(&self) -> Option<Refusal> {
        let reason = match self {
            Self::Invalid { .. } => "invalid",
            Self::BadRequest(_) => "bad_request",
            Self::Unauthorized(_) => "unauthorized",
            Self::Forbidden(_) => "forbidden",
            Self::NotFound(_) => "not_found",
            Self::Conflict(_) => "conflict",
            Self::PayloadTooLarge(_) => "payload_too_large",
            Self::UnsupportedMediaType(_) => "unsupported_media_type",
            Self::Unavailable(_) | Self::Internal(_) => return None,
        };
        Some(Refusal(reason))
    }

    /// The HTTP status of this error.
    pub fn status(&self) -> StatusCode {
        match self {
            Self::Invalid { .. } => StatusCode::UNPROCESSABLE_ENTITY,
            Self::BadRequest(_) => StatusCode::BAD_REQUEST,
            Self::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            Self::Forbidden(_) => StatusCode::FORBIDDEN,
            Self::NotFound(_) => StatusCode::NOT_FOUND,
            Self::Conflict(_) => StatusCode::CONFLICT,
            Self::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            Self::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Self::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        let refusal = self.refusal();
        let (error, fields) = match self {
            Self::Invalid { message, fields } => (message, fields),
            Self::Internal(cause) => {
                tracing::error!(error = %kaas_self_telemetry::error_chain(cause.as_ref()), "request failed");
                (INTERNAL_ERROR_MESSAGE.to_owned(), Vec::new())
            }
            Self::Unavailable(cause) => {
                tracing::warn!(error = %kaas_self_telemetry::error_chain(cause.as_ref()), "not ready");
                ("service unavailable".to_owned(), Vec::new())
            }
            other => (other.to_string(), Vec::new()),
        };
        let mut response = (status, Json(ErrorBody { error, fields })).into_response();
        if let Some(refusal) = refusal {
            response.extensions_mut().insert(refusal);
        }
        if status == StatusCode::UNAUTHORIZED {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        response
    }
}

impl From<StoreError> for ApiError {
    fn from(error: StoreError) -> Self {
        match error {
            StoreError::NotFound { .. } => Self::NotFound(error.to_string()),
            StoreError::AlreadyExists { .. } => Self::Conflict(error.to_string()),
            StoreError::Conflict(reason) => Self::Conflict(reason),
            StoreError::QuotaExceeded { .. } => Self::Conflict(error.to_string()),
            StoreError::Invalid { message, errors } => Self::Invalid {
                message,
                fields: errors
                    .0
                    .into_iter()
                    .map(|e| FieldProblem {
                        path: e.path,
                        message: e.reason,
                    })
                    .collect(),
            },
            other => Self::internal(other),
        }
    }
}

impl From<ValidationErrors> for ApiError {
    fn from(errors: ValidationErrors) -> Self {
        Self::Invalid {
            message: "the pipeline is invalid".to_owned(),
            fields: errors
                .0
                .into_iter()
                .map(|e| FieldProblem {
                    path: e.path,
                    message: e.reason,
                })
                .collect(),
        }
    }
}

impl From<QueryRejection> for ApiError {
    fn from(rejection: QueryRejection) -> Self {
        Self::BadRequest(format!("bad query parameter: {}", rejection.body_text()))
    }
}

impl From<PathRejection> for ApiError {
    fn from(rejection: PathRejection) -> Self {
        Self::BadRequest(format!("bad path: {}", rejection.body_text()))
    }
}

impl From<BytesRejection> for ApiError {
    fn from(rejection: BytesRejection) -> Self {
        if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            Self::PayloadTooLarge("the request body is too large".to_owned())
        } else {
            Self::BadRequest(format!(
                "cannot read the request body: {}",
                rejection.body_text()
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn internal_errors_hide_their_cause() {
        let response =
            ApiError::internal(std::io::Error::other("password=hunter2 at db")).into_response();
        assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
        let text = format!("{:?}", response.body());
        assert!(!text.contains("hunter2"), "{text}");
    }

    #[test]
    fn unauthorized_names_the_scheme() {
        let response = ApiError::Unauthorized("no token".into()).into_response();
        assert_eq!(
            response.headers().get(header::WWW_AUTHENTICATE),
            Some(&HeaderValue::from_static("Bearer"))
        );
    }
}
