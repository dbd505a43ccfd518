//! `/v1/approvals` (SPEC section 5, "HITL" in section 4): messages waiting for a human. An
//! agent may replace a pending draft (`PUT`); a reviewer approves it, optionally edited, or
//! rejects it (skipping the step, or exiting the sequence).

use axum::Json;
use axum::extract::State;
use jiff::Timestamp;
use nurture_core::domain::{Approval, ApprovalAuthor, ApprovalStatus, StepOrder, TemplateId};
use nurture_core::engine::ApprovalEdit;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use crate::error::{ApiResult, Problem};
use crate::extract::{ApiJson, ApiQuery, IdPath, List, OptionalJson, Tenant, double_option, page};
use crate::schema;
use crate::state::AppState;

pub(crate) fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::default()
        .routes(routes!(list_approvals))
        .routes(routes!(get_approval, draft_approval))
        .routes(routes!(approve))
        .routes(routes!(reject))
}

/// A message waiting for (or decided by) a human.
#[derive(Serialize, ToSchema)]
#[schema(as = Approval)]
struct ApprovalView {
    id: Uuid,
    enrollment_id: Uuid,
    lead_id: Uuid,
    sequence_id: Uuid,
    #[schema(value_type = i64)]
    step_order: StepOrder,
    #[schema(value_type = Option<String>)]
    template_id: Option<TemplateId>,
    /// The rendered subject, as it will be sent.
    subject: String,
    body: String,
    html_body: Option<String>,
    #[schema(schema_with = schema::approval_author)]
    author: ApprovalAuthor,
    #[schema(schema_with = schema::approval_status)]
    status: ApprovalStatus,
    decided_by: Option<Uuid>,
    #[schema(value_type = Option<String>, format = DateTime)]
    decided_at: Option<Timestamp>,
    decision_reason: Option<String>,
    #[schema(value_type = String, format = DateTime)]
    created_at: Timestamp,
    #[schema(value_type = String, format = DateTime)]
    updated_at: Timestamp,
}

impl From<Approval> for ApprovalView {
    fn from(a: Approval) -> Self {
        let Approval {
            id,
            tenant_id: _,
            enrollment_id,
            lead_id,
            sequence_id,
            step_order,
            template_id,
            subject,
            body,
            html_body,
            author,
            status,
            decided_by,
            decided_at,
            decision_reason,
            created_at,
            updated_at,
        } = a;
        ApprovalView {
            id,
            enrollment_id,
            lead_id,
            sequence_id,
            step_order,
            template_id,
            subject,
            body,
            html_body,
            author,
            status,
            decided_by,
            decided_at,
            decision_reason,
            created_at,
            updated_at,
        }
    }
}

/// New content for a pending approval: the fields given replace the draft's.
#[derive(Deserialize, ToSchema, Default)]
#[serde(deny_unknown_fields)]
struct ContentEdit {
    #[schema(min_length = 1)]
    subject: Option<String>,
    #[schema(min_length = 1)]
    body: Option<String>,
    /// null removes the HTML part.
    #[serde(default, deserialize_with = "double_option")]
    #[schema(value_type = Option<String>)]
    html_body: Option<Option<String>>,
}

impl From<ContentEdit> for ApprovalEdit {
    fn from(e: ContentEdit) -> Self {
        ApprovalEdit {
            subject: e.subject,
            body: e.body,
            html_body: e.html_body,
        }
    }
}

#[derive(Deserialize, ToSchema, Default)]
#[serde(deny_unknown_fields)]
struct RejectBody {
    reason: Option<String>,
    /// true: end the enrollment (`approval_rejected`); false (default): skip the step.
    #[serde(default)]
    exit: bool,
}

#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct ListQuery {
    #[param(schema_with = schema::approval_status)]
    status: Option<ApprovalStatus>,
    /// Page size, 1 to 1000.
    #[param(minimum = 1, maximum = 1000, default = 50)]
    limit: Option<i64>,
    /// `next_cursor` of the previous page.
    #[param(min_length = 1)]
    cursor: Option<String>,
}

/// The approval queue, oldest first.
#[utoipa::path(get, path = "/v1/approvals", tag = "approvals", params(ListQuery),
    responses((status = 200, description = "A page of approvals", body = List<ApprovalView>)))]
async fn list_approvals(
    State(state): State<AppState>,
    Tenant(p): Tenant,
    ApiQuery(q): ApiQuery<ListQuery>,
) -> ApiResult<Json<List<ApprovalView>>> {
    let listed = state
        .engine
        .list_approvals(p, q.status, &page(q.limit, q.cursor)?)
        .await?;
    Ok(Json(List::of(listed, ApprovalView::from)))
}

/// One approval.
#[utoipa::path(get, path = "/v1/approvals/{id}", tag = "approvals",
    params(("id" = Uuid, Path, description = "The approval's id")),
    responses((status = 200, description = "The approval", body = ApprovalView)))]
async fn get_approval(
    State(state): State<AppState>,
    Tenant(p): Tenant,
    IdPath(id): IdPath,
) -> ApiResult<Json<ApprovalView>> {
    Ok(Json(state.engine.get_approval(p, id).await?.into()))
}

/// An agent's draft replaces the pending content (`author` becomes `agent`); a human must
/// still approve it.
#[utoipa::path(put, path = "/v1/approvals/{id}", tag = "approvals",
    params(("id" = Uuid, Path, description = "The approval's id")),
    request_body = ContentEdit,
    responses(
        (status = 200, description = "The draft is saved", body = ApprovalView),
        (status = 409, description = "Already decided", body = Problem, content_type = "application/problem+json"),
    ))]
async fn draft_approval(
    State(state): State<AppState>,
    Tenant(p): Tenant,
    IdPath(id): IdPath,
    ApiJson(body): ApiJson<ContentEdit>,
) -> ApiResult<Json<ApprovalView>> {
    Ok(Json(
        state
            .engine
            .draft_approval(p, id, body.into())
            .await?
            .into(),
    ))
}

/// Approves, optionally with edits, and sends through the same checks as a due step (the
/// frequency cap or sending window may defer it); the enrollment resumes.
#[utoipa::path(post, path = "/v1/approvals/{id}/approve", tag = "approvals",
    params(("id" = Uuid, Path, description = "The approval's id")),
    request_body = Option<ContentEdit>,
    responses(
        (status = 200, description = "Approved", body = ApprovalView),
        (status = 409, description = "Already decided, or the enrollment no longer waits for it",
            body = Problem, content_type = "application/problem+json"),
    ))]
async fn approve(
    State(state): State<AppState>,
    Tenant(p): Tenant,
    IdPath(id): IdPath,
    OptionalJson(body): OptionalJson<ContentEdit>,
) -> ApiResult<Json<ApprovalView>> {
    Ok(Json(state.engine.approve(p, id, body.into()).await?.into()))
}

/// Rejects: the step is skipped and the enrollment goes on, or with `exit` it ends.
#[utoipa::path(post, path = "/v1/approvals/{id}/reject", tag = "approvals",
    params(("id" = Uuid, Path, description = "The approval's id")),
    request_body = Option<RejectBody>,
    responses(
        (status = 200, description = "Rejected", body = ApprovalView),
        (status = 409, description = "Already decided, or the enrollment no longer waits for it",
            body = Problem, content_type = "application/problem+json"),
    ))]
async fn reject(
    State(state): State<AppState>,
    Tenant(p): Tenant,
    IdPath(id): IdPath,
    OptionalJson(body): OptionalJson<RejectBody>,
) -> ApiResult<Json<ApprovalView>> {
    Ok(Json(
        state
            .engine
            .reject(p, id, body.reason, body.exit)
            .await?
            .into(),
    ))
}
