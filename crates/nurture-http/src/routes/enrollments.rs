//! `/v1/enrollments` (SPEC section 5): manual enrollment, reads, and pause / resume / exit by
//! hand. Manual enrollment passes the same safety checks as automatic (SPEC section 4): a
//! do-not-contact or unsubscribed lead or a non-active sequence is 422, a live enrollment or
//! the cooldown 409 naming the conflicting enrollment.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use jiff::Timestamp;
use nurture_core::domain::{
    Enrollment, EnrollmentSource, EnrollmentStatus, PauseReason, StepOrder,
};
use nurture_core::store::EnrollmentFilter;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use crate::error::{ApiResult, Problem};
use crate::extract::{ApiJson, ApiQuery, IdPath, List, OptionalJson, Tenant, page};
use crate::schema;
use crate::state::AppState;

pub(crate) fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::default()
        .routes(routes!(create_enrollment, list_enrollments))
        .routes(routes!(get_enrollment))
        .routes(routes!(pause_enrollment))
        .routes(routes!(resume_enrollment))
        .routes(routes!(exit_enrollment))
}

/// A lead in a sequence (seed table `lead_nurture_enrollments`). Lead writes answer these too.
#[derive(Serialize, ToSchema)]
#[schema(as = Enrollment)]
pub(crate) struct EnrollmentView {
    id: Uuid,
    lead_id: Uuid,
    sequence_id: Uuid,
    /// The step that runs next.
    #[schema(value_type = i64)]
    current_step_order: StepOrder,
    #[schema(schema_with = schema::enrollment_status)]
    status: EnrollmentStatus,
    #[schema(schema_with = schema::enrollment_source)]
    source: EnrollmentSource,
    #[schema(value_type = String, format = DateTime)]
    enrolled_on: Timestamp,
    /// When the next step is due; null unless active.
    #[schema(value_type = Option<String>, format = DateTime)]
    next_step_on: Option<Timestamp>,
    #[schema(schema_with = schema::pause_reason_nullable)]
    paused_reason: Option<PauseReason>,
    /// Why it ended early: `converted`, `positive_reply`, `manual`, ... (SPEC section 5).
    exit_reason: Option<String>,
    #[schema(value_type = Option<String>, format = DateTime)]
    ended_at: Option<Timestamp>,
    #[schema(value_type = String, format = DateTime)]
    updated_at: Timestamp,
    version: i64,
}

impl From<Enrollment> for EnrollmentView {
    fn from(e: Enrollment) -> Self {
        let Enrollment {
            id,
            tenant_id: _,
            lead_id,
            sequence_id,
            current_step_order,
            status,
            source,
            enrolled_on,
            next_step_on,
            paused_reason,
            exit_reason,
            // The engine's own bookkeeping: which approved message a deferred step sends.
            approved_approval_id: _,
            ended_at,
            updated_at,
            version,
        } = e;
        EnrollmentView {
            id,
            lead_id,
            sequence_id,
            current_step_order,
            status,
            source,
            enrolled_on,
            next_step_on,
            paused_reason,
            exit_reason,
            ended_at,
            updated_at,
            version,
        }
    }
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct CreateEnrollment {
    lead_id: Uuid,
    sequence_id: Uuid,
}

#[derive(Deserialize, ToSchema, Default)]
#[serde(deny_unknown_fields)]
struct ExitBody {
    /// Recorded as the `exit_reason`; default `manual`. At most 255 characters.
    reason: Option<String>,
}

#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct ListQuery {
    lead_id: Option<Uuid>,
    sequence_id: Option<Uuid>,
    #[param(schema_with = schema::enrollment_status)]
    status: Option<EnrollmentStatus>,
    /// Page size, 1 to 1000.
    #[param(minimum = 1, maximum = 1000, default = 50)]
    limit: Option<i64>,
    /// `next_cursor` of the previous page.
    #[param(min_length = 1)]
    cursor: Option<String>,
}

/// Enrolls a lead in an active sequence by hand.
#[utoipa::path(post, path = "/v1/enrollments", tag = "enrollments",
    request_body = CreateEnrollment,
    responses(
        (status = 201, description = "Enrolled", body = EnrollmentView),
        (status = 404, description = "No such lead or sequence", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "The lead has a live enrollment, or left this sequence within the cooldown",
            body = Problem, content_type = "application/problem+json"),
    ))]
async fn create_enrollment(
    State(state): State<AppState>,
    Tenant(p): Tenant,
    ApiJson(body): ApiJson<CreateEnrollment>,
) -> ApiResult<(StatusCode, Json<EnrollmentView>)> {
    let e = state
        .engine
        .enroll(p, body.lead_id, body.sequence_id)
        .await?;
    Ok((StatusCode::CREATED, Json(e.into())))
}

/// Enrollments, oldest first, filtered by lead, sequence and status.
#[utoipa::path(get, path = "/v1/enrollments", tag = "enrollments", params(ListQuery),
    responses((status = 200, description = "A page of enrollments", body = List<EnrollmentView>)))]
async fn list_enrollments(
    State(state): State<AppState>,
    Tenant(p): Tenant,
    ApiQuery(q): ApiQuery<ListQuery>,
) -> ApiResult<Json<List<EnrollmentView>>> {
    let filter = EnrollmentFilter {
        lead_id: q.lead_id,
        sequence_id: q.sequence_id,
        status: q.status,
    };
    let listed = state
        .engine
        .list_enrollments(p, &filter, &page(q.limit, q.cursor)?)
        .await?;
    Ok(Json(List::of(listed, EnrollmentView::from)))
}

/// One enrollment.
#[utoipa::path(get, path = "/v1/enrollments/{id}", tag = "enrollments",
    params(("id" = Uuid, Path, description = "The enrollment's id")),
    responses((status = 200, description = "The enrollment", body = EnrollmentView)))]
async fn get_enrollment(
    State(state): State<AppState>,
    Tenant(p): Tenant,
    IdPath(id): IdPath,
) -> ApiResult<Json<EnrollmentView>> {
    Ok(Json(state.engine.get_enrollment(p, id).await?.into()))
}

/// Pauses an active enrollment (`paused_reason: manual`).
#[utoipa::path(post, path = "/v1/enrollments/{id}/pause", tag = "enrollments",
    params(("id" = Uuid, Path, description = "The enrollment's id")),
    responses(
        (status = 200, description = "Paused", body = EnrollmentView),
        (status = 409, description = "Not active", body = Problem, content_type = "application/problem+json"),
    ))]
async fn pause_enrollment(
    State(state): State<AppState>,
    Tenant(p): Tenant,
    IdPath(id): IdPath,
) -> ApiResult<Json<EnrollmentView>> {
    Ok(Json(state.engine.pause_enrollment(p, id).await?.into()))
}

/// Resumes an enrollment paused by hand; its due step runs at once. One waiting for an
/// approval or a task is 409: decide the approval or complete the task instead.
#[utoipa::path(post, path = "/v1/enrollments/{id}/resume", tag = "enrollments",
    params(("id" = Uuid, Path, description = "The enrollment's id")),
    responses(
        (status = 200, description = "Resumed", body = EnrollmentView),
        (status = 409, description = "Not paused by hand", body = Problem, content_type = "application/problem+json"),
    ))]
async fn resume_enrollment(
    State(state): State<AppState>,
    Tenant(p): Tenant,
    IdPath(id): IdPath,
) -> ApiResult<Json<EnrollmentView>> {
    Ok(Json(state.engine.resume_enrollment(p, id).await?.into()))
}

/// Ends a live enrollment by hand, with an optional reason.
#[utoipa::path(post, path = "/v1/enrollments/{id}/exit", tag = "enrollments",
    params(("id" = Uuid, Path, description = "The enrollment's id")),
    request_body = Option<ExitBody>,
    responses(
        (status = 200, description = "Exited", body = EnrollmentView),
        (status = 409, description = "Already ended", body = Problem, content_type = "application/problem+json"),
    ))]
async fn exit_enrollment(
    State(state): State<AppState>,
    Tenant(p): Tenant,
    IdPath(id): IdPath,
    OptionalJson(body): OptionalJson<ExitBody>,
) -> ApiResult<Json<EnrollmentView>> {
    Ok(Json(
        state
            .engine
            .exit_enrollment(p, id, body.reason)
            .await?
            .into(),
    ))
}
