//! `/v1/tasks` (SPEC section 5): human work made by `task` and `call_reminder` steps. The
//! enrollment waits (`awaiting_task`) until its task is done.

use axum::Json;
use axum::extract::State;
use jiff::Timestamp;
use nurture_core::domain::{Channel, StepOrder, Task, TaskStatus};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use crate::error::{ApiResult, Problem};
use crate::extract::{ApiQuery, IdPath, List, Tenant, page};
use crate::schema;
use crate::state::AppState;

pub(crate) fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::default()
        .routes(routes!(list_tasks))
        .routes(routes!(complete_task))
}

#[derive(Serialize, ToSchema)]
#[schema(as = Task)]
struct TaskView {
    id: Uuid,
    enrollment_id: Uuid,
    lead_id: Uuid,
    sequence_id: Uuid,
    #[schema(value_type = i64)]
    step_order: StepOrder,
    /// `task` or `call_reminder`.
    #[schema(schema_with = schema::channel)]
    channel: Channel,
    /// The lead's owner, if it has one.
    assignee_id: Option<Uuid>,
    title: String,
    #[schema(schema_with = schema::task_status)]
    status: TaskStatus,
    #[schema(value_type = String, format = DateTime)]
    due_at: Timestamp,
    #[schema(value_type = Option<String>, format = DateTime)]
    completed_at: Option<Timestamp>,
    #[schema(value_type = String, format = DateTime)]
    created_at: Timestamp,
}

impl From<Task> for TaskView {
    fn from(t: Task) -> Self {
        let Task {
            id,
            tenant_id: _,
            enrollment_id,
            lead_id,
            sequence_id,
            step_order,
            channel,
            assignee_id,
            title,
            status,
            due_at,
            completed_at,
            created_at,
        } = t;
        TaskView {
            id,
            enrollment_id,
            lead_id,
            sequence_id,
            step_order,
            channel,
            assignee_id,
            title,
            status,
            due_at,
            completed_at,
            created_at,
        }
    }
}

#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct ListQuery {
    #[param(schema_with = schema::task_status)]
    status: Option<TaskStatus>,
    /// Page size, 1 to 1000.
    #[param(minimum = 1, maximum = 1000, default = 50)]
    limit: Option<i64>,
    /// `next_cursor` of the previous page.
    #[param(min_length = 1)]
    cursor: Option<String>,
}

/// The tenant's tasks, oldest first.
#[utoipa::path(get, path = "/v1/tasks", tag = "tasks", params(ListQuery),
    responses((status = 200, description = "A page of tasks", body = List<TaskView>)))]
async fn list_tasks(
    State(state): State<AppState>,
    Tenant(p): Tenant,
    ApiQuery(q): ApiQuery<ListQuery>,
) -> ApiResult<Json<List<TaskView>>> {
    let listed = state
        .engine
        .list_tasks(p, q.status, &page(q.limit, q.cursor)?)
        .await?;
    Ok(Json(List::of(listed, TaskView::from)))
}

/// Marks a task done; the enrollment it paused goes on with its next step.
#[utoipa::path(post, path = "/v1/tasks/{id}/complete", tag = "tasks",
    params(("id" = Uuid, Path, description = "The task's id")),
    responses(
        (status = 200, description = "Done", body = TaskView),
        (status = 409, description = "Not open", body = Problem, content_type = "application/problem+json"),
    ))]
async fn complete_task(
    State(state): State<AppState>,
    Tenant(p): Tenant,
    IdPath(id): IdPath,
) -> ApiResult<Json<TaskView>> {
    Ok(Json(state.engine.complete_task(p, id).await?.into()))
}
