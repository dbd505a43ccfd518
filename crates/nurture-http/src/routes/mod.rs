//! The routes of SPEC section 5, one module per resource, each exposing `router()`.

mod activities;
mod approvals;
mod clock;
mod enrollments;
mod leads;
mod messages;
mod ops;
mod sequences;
mod settings;
mod tasks;
mod templates;

use axum::Router;
use axum::middleware::from_fn_with_state;
use utoipa::openapi::OpenApi;
use utoipa_axum::router::OpenApiRouter;

use crate::error::ApiError;
use crate::middleware::{authenticate, idempotency};
use crate::state::AppState;

/// The routes as three parts: everything under the request timeout, the manual clock's
/// routes (present only with the manual clock, and exempt from the timeout because an advance
/// runs all the work it passes), and the OpenAPI document of exactly those routes.
pub(crate) fn routers(state: &AppState) -> (Router<AppState>, Option<Router<AppState>>, OpenApi) {
    let v1 = OpenApiRouter::with_openapi(crate::openapi::base())
        .merge(leads::router())
        .merge(templates::router())
        .merge(sequences::router())
        .merge(enrollments::router())
        .merge(approvals::router())
        .merge(tasks::router())
        .merge(messages::router())
        .merge(activities::router())
        .merge(settings::router());
    let (v1, mut document) = protect(v1, state).split_for_parts();
    let (ops, ops_doc) = ops::router().split_for_parts();
    document.merge(ops_doc);
    let clock = state.engine.is_manual_clock().then(|| {
        let (clock, clock_doc) = protect(clock::router(), state).split_for_parts();
        document.merge(clock_doc);
        clock
    });
    crate::openapi::finish(&mut document);
    (v1.merge(ops), clock, document)
}

/// Authentication, then `Idempotency-Key`, on the routes that exist (`route_layer`), so an
/// unknown path is 404 rather than 401.
fn protect(router: OpenApiRouter<AppState>, state: &AppState) -> OpenApiRouter<AppState> {
    router
        .route_layer(from_fn_with_state(state.clone(), idempotency))
        .route_layer(from_fn_with_state(state.clone(), authenticate))
}

/// No route has this path.
pub(crate) async fn not_found() -> ApiError {
    ApiError::NotFound("no such route".into())
}
