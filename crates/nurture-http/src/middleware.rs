//! Cross-cutting request handling: authentication, `Idempotency-Key`, the request id in
//! errors and logs, problem bodies for errors no handler wrote, and request metrics.

use std::time::Instant;

use axum::body::Body;
use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderName, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use nurture_core::Principal;
use nurture_core::store::{KeyState, SavedResponse};
use sha2::{Digest, Sha256};

use crate::error::{ApiError, PROBLEM_JSON, Problem, REQUEST_ID};
use crate::extract::read_body;
use crate::state::AppState;

pub(crate) const IDEMPOTENCY_KEY: HeaderName = HeaderName::from_static("idempotency-key");
pub(crate) const IDEMPOTENT_REPLAYED: HeaderName = HeaderName::from_static("idempotent-replayed");
pub(crate) const REQUEST_ID_HEADER: HeaderName = HeaderName::from_static("x-request-id");

/// `Authorization: Bearer <key>` (SPEC section 5): the key's tenant scopes everything the
/// request does. A missing, malformed or unknown key is 401.
pub(crate) async fn authenticate(
    State(state): State<AppState>,
    mut req: Request,
    next: Next,
) -> Response {
    let key = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, key)| key.trim().to_string())
        .filter(|key| !key.is_empty());
    let Some(key) = key else {
        return ApiError::Unauthorized.into_response();
    };
    match state.engine.authenticate(&key).await {
        Ok(Some(principal)) => {
            tracing::Span::current()
                .record("tenant_id", tracing::field::display(principal.tenant_id));
            req.extensions_mut().insert(principal);
            next.run(req).await
        }
        Ok(None) => ApiError::Unauthorized.into_response(),
        Err(e) => ApiError::from(e).into_response(),
    }
}

/// What an `Idempotency-Key` is compared by: the method, the path and the body, hashed.
fn request_hash(method: &Method, path: &str, body: &[u8]) -> Vec<u8> {
    let mut h = Sha256::new();
    h.update(method.as_str().as_bytes());
    h.update(b"\n");
    h.update(path.as_bytes());
    h.update(b"\n");
    h.update(body);
    h.finalize().to_vec()
}

/// A saved answer as it was first given. The API answers JSON on success and problem+json on
/// error, so the status says which.
fn replay(saved: SavedResponse) -> Response {
    let status = StatusCode::from_u16(saved.status).unwrap_or(StatusCode::OK);
    let content_type = if status.is_success() {
        "application/json"
    } else {
        PROBLEM_JSON
    };
    let mut response = (status, saved.body).into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(IDEMPOTENT_REPLAYED, HeaderValue::from_static("true"));
    response
}

/// `Idempotency-Key` on POST (SPEC section 5, issue #3). The key is reserved in the database
/// when the request starts and the first answer below 500 is saved under (tenant, key): the
/// same request again replays it exactly, the same key with a different request is 422, and a
/// retry that arrives while the first attempt still runs in another process is 409. In one
/// process such retries wait for the first (a striped lock) and replay its answer. Runs after
/// authentication, which it needs for the tenant.
pub(crate) async fn idempotency(
    State(state): State<AppState>,
    req: Request,
    next: Next,
) -> Response {
    if req.method() != Method::POST {
        return next.run(req).await;
    }
    let Some(raw_key) = req.headers().get(IDEMPOTENCY_KEY).cloned() else {
        return next.run(req).await;
    };
    let Some(principal) = req.extensions().get::<Principal>().copied() else {
        return next.run(req).await;
    };
    let key = match raw_key.to_str() {
        Ok(k) if !k.trim().is_empty() && k.len() <= 255 => k.trim().to_string(),
        _ => {
            return ApiError::invalid(
                "Idempotency-Key",
                "an idempotency key is 1 to 255 visible ASCII characters",
            )
            .into_response();
        }
    };
    let (parts, body) = req.into_parts();
    let body = match read_body(body, state.body_limit).await {
        Ok(b) => b,
        Err(e) => return e.into_response(),
    };
    let hash = request_hash(&parts.method, parts.uri.path(), &body);

    let mut lock_key = principal.tenant_id.as_bytes().to_vec();
    lock_key.extend_from_slice(&Sha256::digest(key.as_bytes()));
    let lock_key = Sha256::digest(&lock_key);
    let _serialized = state.idempotency_lock(&lock_key).lock().await;

    match state
        .engine
        .reserve_idempotency_key(principal, &key, &hash)
        .await
    {
        Ok(KeyState::Reserved) => {}
        Ok(KeyState::Saved(saved)) if saved.request_hash == hash => return replay(saved),
        Ok(KeyState::Saved(_)) => return ApiError::IdempotencyKeyReused.into_response(),
        Ok(KeyState::InFlight { request_hash }) if request_hash != hash => {
            return ApiError::IdempotencyKeyReused.into_response();
        }
        Ok(KeyState::InFlight { .. }) => {
            // The first attempt is running in another process: running this one too is the
            // double execution the key exists to prevent.
            return ApiError::Conflict {
                message: "a request with this Idempotency-Key is still running; retry it later"
                    .into(),
                conflicting: None,
            }
            .into_response();
        }
        Err(e) => return ApiError::from(e).into_response(),
    }
    let response = next.run(Request::from_parts(parts, Body::from(body))).await;
    if response.status().is_server_error() {
        // Nothing was done (every command is one transaction): let a retry run it.
        if let Err(e) = state.engine.release_idempotency_key(principal, &key).await {
            tracing::warn!(error = %e, "could not release an idempotency key; a retry waits for its lease");
        }
        return response;
    }
    let (parts, body) = response.into_parts();
    let bytes = match read_body(body, usize::MAX).await {
        Ok(b) => b,
        Err(e) => return e.into_response(),
    };
    let saved = SavedResponse {
        request_hash: hash,
        status: parts.status.as_u16(),
        body: bytes.to_vec(),
    };
    if let Err(e) = state.engine.save_response(principal, &key, &saved).await {
        // The work is done and committed: answer it, and say in the log that a retry with
        // this key would run it again.
        tracing::warn!(error = %e, "could not save the response of an idempotent request");
    }
    Response::from_parts(parts, Body::from(bytes))
}

/// Makes the request id (set by tower-http's request-id layer) known to error bodies.
pub(crate) async fn request_id_scope(req: Request, next: Next) -> Response {
    let id = req
        .headers()
        .get(REQUEST_ID_HEADER)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("-")
        .to_string();
    REQUEST_ID.scope(id, next.run(req)).await
}

/// Gives a problem+json body to error answers that no handler wrote: axum's 405, the
/// timeout's 503, a caught panic's 500. Headers such as `Allow` are kept.
pub(crate) async fn problem_for_bare_errors(req: Request, next: Next) -> Response {
    let response = next.run(req).await;
    let status = response.status();
    if !(status.is_client_error() || status.is_server_error()) {
        return response;
    }
    let is_problem = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with(PROBLEM_JSON));
    if is_problem {
        return response;
    }
    let detail = match status {
        StatusCode::NOT_FOUND => "no such route",
        StatusCode::METHOD_NOT_ALLOWED => {
            "this route does not take this method; see the Allow header"
        }
        StatusCode::PAYLOAD_TOO_LARGE => "the request body is too large",
        StatusCode::REQUEST_TIMEOUT | StatusCode::SERVICE_UNAVAILABLE => {
            "the request took longer than the server allows; it may be retried"
        }
        s if s.is_server_error() => {
            "an unexpected error occurred; quote the request_id when reporting it"
        }
        _ => "the request was refused",
    };
    let problem = Problem::new(status, detail);
    if status == StatusCode::INTERNAL_SERVER_ERROR {
        tracing::error!(
            request_id = problem.request_id.as_deref().unwrap_or("-"),
            "unexpected error (panic or bare 500) answered with 500"
        );
    }
    let (mut parts, _) = response.into_parts();
    parts.headers.remove(header::CONTENT_LENGTH);
    let fresh = problem.into_response_with(status);
    let (fresh_parts, body) = fresh.into_parts();
    parts.headers.extend(fresh_parts.headers);
    Response::from_parts(parts, body)
}

/// Request counts and latencies by method, route template and status, for `/metrics`.
/// Unmatched paths share one label so that scanners cannot blow up the series count.
pub(crate) async fn record_metrics(req: Request, next: Next) -> Response {
    let started = Instant::now();
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_string(), |m| m.as_str().to_string());
    let method = match *req.method() {
        Method::GET
        | Method::POST
        | Method::PUT
        | Method::PATCH
        | Method::DELETE
        | Method::HEAD
        | Method::OPTIONS => req.method().as_str().to_string(),
        _ => "other".to_string(),
    };
    let response = next.run(req).await;
    let status = response.status().as_u16().to_string();
    let labels = [("method", method), ("route", route), ("status", status)];
    metrics::counter!("http_requests_total", &labels).increment(1);
    metrics::histogram!("http_request_duration_seconds", &labels)
        .record(started.elapsed().as_secs_f64());
    response
}
