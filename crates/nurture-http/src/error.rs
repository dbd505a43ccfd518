//! The API's one error type and its wire form, RFC 9457 `application/problem+json`
//! (SPEC section 5 "HTTP API v1": errors carry `status`, `title`, `detail`, and
//! `errors: [{path, message}]` for validation).
//!
//! Every variant names its status, so a handler never picks a status by hand. Unexpected
//! failures (storage, a panic, a bug) are logged once, here, with the request id, and the client
//! gets a generic 500 that carries the same id, never the internal message.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use nurture_core::FieldError;
use serde::Serialize;
use utoipa::ToSchema;

/// The media type of every error body (RFC 9457 section 3).
pub(crate) const PROBLEM_JSON: &str = "application/problem+json";

/// Stable problem types for the errors a client may want to tell apart by machine; the rest
/// are `about:blank`, whose title is the status phrase (RFC 9457 section 4.2.1).
pub(crate) mod problem_type {
    pub const VALIDATION: &str = "urn:nurture:problem:validation";
    pub const CONFLICT: &str = "urn:nurture:problem:conflict";
    pub const IDEMPOTENCY_KEY_REUSED: &str = "urn:nurture:problem:idempotency-key-reused";
    pub const BLANK: &str = "about:blank";
}

tokio::task_local! {
    /// The current request's id (the `x-request-id` header), for error bodies and logs. Set by
    /// the request-id middleware around the whole handling of one request.
    pub(crate) static REQUEST_ID: String;
}

/// The request id of the request being handled, if any.
pub(crate) fn current_request_id() -> Option<String> {
    REQUEST_ID.try_with(Clone::clone).ok()
}

/// One problem in the input, located by its JSON path, query parameter or header name.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub(crate) struct ProblemFieldError {
    /// Where: `email`, `steps[1].delay_hours`, `entry_rules.when.all[1].op`, `limit`,
    /// `Idempotency-Key`.
    pub path: String,
    pub message: String,
}

impl From<FieldError> for ProblemFieldError {
    fn from(e: FieldError) -> Self {
        ProblemFieldError {
            path: e.path,
            message: e.message,
        }
    }
}

/// An RFC 9457 problem: the body of every 4xx and 5xx answer.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub(crate) struct Problem {
    /// `about:blank`, or a `urn:nurture:problem:*` URI for validation, conflict and idempotency
    /// errors.
    #[serde(rename = "type")]
    pub problem_type: String,
    pub title: String,
    pub status: u16,
    pub detail: String,
    /// Each problem with the input (validation errors only).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<ProblemFieldError>,
    /// The object in the way (409 only), e.g. `{"enrollment_id": "..."}`.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub conflicting: Option<serde_json::Value>,
    /// The `x-request-id` of the request, to find it in the logs.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
}

impl Problem {
    pub(crate) fn new(status: StatusCode, detail: impl Into<String>) -> Problem {
        Problem {
            problem_type: problem_type::BLANK.into(),
            title: status.canonical_reason().unwrap_or("Error").into(),
            status: status.as_u16(),
            detail: detail.into(),
            errors: Vec::new(),
            conflicting: None,
            request_id: current_request_id(),
        }
    }

    pub(crate) fn into_response_with(self, status: StatusCode) -> Response {
        let body = serde_json::to_vec(&self).unwrap_or_else(|_| b"{}".to_vec());
        let mut response = (status, body).into_response();
        response
            .headers_mut()
            .insert(header::CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON));
        response
    }
}

/// Everything a handler or middleware can answer instead of success.
#[derive(Debug)]
pub(crate) enum ApiError {
    /// 400: the body is not JSON at all, or cannot be read.
    BadRequest(String),
    /// 401: no or a wrong `Authorization: Bearer` key.
    Unauthorized,
    /// 404: no such object in this tenant (another tenant's included), or no such route.
    NotFound(String),
    /// 409: the object's state forbids the change; `conflicting` names what is in the way.
    Conflict {
        message: String,
        conflicting: Option<serde_json::Value>,
    },
    /// 413: the body is over the configured limit.
    PayloadTooLarge { limit: usize },
    /// 415: a body without a JSON `Content-Type`.
    UnsupportedMediaType,
    /// 422 with paths: the input was understood but is wrong.
    Invalid(Vec<FieldError>),
    /// 422 without paths: the request is fine but the state of things forbids it.
    Unprocessable(String),
    /// 422: an `Idempotency-Key` reused with a different request.
    IdempotencyKeyReused,
    /// 503: the database is not reachable (`/readyz`).
    Unavailable(String),
    /// 500: logged with the request id; the client sees only a generic message.
    Internal(String),
}

impl ApiError {
    pub(crate) fn invalid(path: impl Into<String>, message: impl Into<String>) -> ApiError {
        ApiError::Invalid(vec![FieldError::new(path, message)])
    }

    pub(crate) fn status(&self) -> StatusCode {
        match self {
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::Unauthorized => StatusCode::UNAUTHORIZED,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::Conflict { .. } => StatusCode::CONFLICT,
            ApiError::PayloadTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::Invalid(_) | ApiError::Unprocessable(_) | ApiError::IdempotencyKeyReused => {
                StatusCode::UNPROCESSABLE_ENTITY
            }
            ApiError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    pub(crate) fn into_problem(self) -> Problem {
        let status = self.status();
        match self {
            ApiError::BadRequest(detail) => Problem::new(status, detail),
            ApiError::Unauthorized => Problem::new(
                status,
                "send an API key of this service as `Authorization: Bearer <key>`",
            ),
            ApiError::NotFound(detail) => Problem::new(status, detail),
            ApiError::Conflict {
                message,
                conflicting,
            } => Problem {
                problem_type: problem_type::CONFLICT.into(),
                conflicting,
                ..Problem::new(status, message)
            },
            ApiError::PayloadTooLarge { limit } => Problem::new(
                status,
                format!("the request body is larger than {limit} bytes"),
            ),
            ApiError::UnsupportedMediaType => Problem::new(
                status,
                "a request body must be JSON, sent with `Content-Type: application/json`",
            ),
            ApiError::Invalid(errors) => {
                let detail = match errors.as_slice() {
                    [one] => format!("{}: {}", one.path, one.message),
                    many => format!("{} problems with the input; see `errors`", many.len()),
                };
                Problem {
                    problem_type: problem_type::VALIDATION.into(),
                    errors: errors.into_iter().map(Into::into).collect(),
                    ..Problem::new(status, detail)
                }
            }
            ApiError::Unprocessable(detail) => Problem {
                problem_type: problem_type::VALIDATION.into(),
                ..Problem::new(status, detail)
            },
            ApiError::IdempotencyKeyReused => Problem {
                problem_type: problem_type::IDEMPOTENCY_KEY_REUSED.into(),
                errors: vec![ProblemFieldError {
                    path: "Idempotency-Key".into(),
                    message: "this key was used for a different request; use a new key".into(),
                }],
                ..Problem::new(status, "Idempotency-Key reused with a different request")
            },
            ApiError::Unavailable(detail) => Problem::new(status, detail),
            ApiError::Internal(cause) => {
                let problem = Problem::new(
                    status,
                    "an unexpected error occurred; quote the request_id when reporting it",
                );
                tracing::error!(
                    request_id = problem.request_id.as_deref().unwrap_or("-"),
                    error = %cause,
                    "unexpected error answered with 500"
                );
                problem
            }
        }
    }
}

impl From<nurture_core::Error> for ApiError {
    fn from(e: nurture_core::Error) -> Self {
        use nurture_core::Error;
        match e {
            Error::Invalid(errors) => ApiError::Invalid(errors),
            Error::Unprocessable(message) => ApiError::Unprocessable(message),
            Error::NotFound(what) => ApiError::NotFound(format!("no such {what}")),
            Error::Conflict {
                message,
                conflicting,
            } => ApiError::Conflict {
                message,
                conflicting,
            },
            Error::Store(source) => ApiError::Internal(format!("storage: {source}")),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        let www_authenticate = matches!(self, ApiError::Unauthorized);
        let mut response = self.into_problem().into_response_with(status);
        if www_authenticate {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        response
    }
}

pub(crate) type ApiResult<T> = Result<T, ApiError>;
