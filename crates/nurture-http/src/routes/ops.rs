//! Operations (SPEC section 5): liveness, readiness, Prometheus metrics and the OpenAPI
//! document. None needs an API key: load balancers and scrapers call them.

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::error::{ApiError, ApiResult};
use crate::state::AppState;

pub(crate) fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::default()
        .routes(routes!(healthz))
        .routes(routes!(readyz))
        .routes(routes!(metrics))
        .routes(routes!(openapi_json))
}

#[derive(Serialize, ToSchema)]
struct Health {
    /// `ok` (`/healthz`) or `ready` (`/readyz`).
    status: &'static str,
}

/// The process is up and serving.
#[utoipa::path(get, path = "/healthz", tag = "operations",
    responses((status = 200, description = "Alive", body = Health)))]
async fn healthz() -> Json<Health> {
    Json(Health { status: "ok" })
}

/// The database is reachable (`Store::ping`); 503 otherwise, so a load balancer stops sending
/// traffic here.
#[utoipa::path(get, path = "/readyz", tag = "operations",
    responses(
        (status = 200, description = "Ready", body = Health),
        (status = 503, description = "The database is not reachable", body = crate::error::Problem,
            content_type = "application/problem+json"),
    ))]
async fn readyz(State(state): State<AppState>) -> ApiResult<Json<Health>> {
    match state.engine.store().ping().await {
        Ok(()) => Ok(Json(Health { status: "ready" })),
        Err(e) => {
            tracing::warn!(error = %e, "readiness check failed");
            Err(ApiError::Unavailable(
                "the database is not reachable".into(),
            ))
        }
    }
}

/// Prometheus text: `http_requests_total` and `http_request_duration_seconds` by method, route
/// and status, and the engine's `nurture_step_executions_total`, `nurture_step_lag_seconds`
/// and `nurture_due_backlog`.
#[utoipa::path(get, path = "/metrics", tag = "operations",
    responses((status = 200, description = "Prometheus text exposition format", body = String,
        content_type = "text/plain; version=0.0.4")))]
async fn metrics(State(state): State<AppState>) -> Response {
    state.metrics.run_upkeep();
    let mut response = state.metrics.render().into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    response
}

/// This API's OpenAPI 3.1 document.
#[utoipa::path(get, path = "/openapi.json", tag = "operations",
    responses((status = 200, description = "The OpenAPI document", body = Object)))]
async fn openapi_json(State(state): State<AppState>) -> Response {
    let body = state.openapi.get().cloned().unwrap_or_default();
    let mut response = body.into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}
