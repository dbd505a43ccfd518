//! `GET /v1/activities` (SPEC section 5): the activity log, in time order, so "why did (or
//! didn't) this lead get that email?" always has an answer.

use axum::Json;
use axum::extract::State;
use jiff::Timestamp;
use nurture_core::domain::{Activity, ActivityType, StepOrder};
use nurture_core::store::ActivityFilter;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use crate::error::ApiResult;
use crate::extract::{ApiQuery, List, Tenant, page};
use crate::schema;
use crate::state::AppState;

pub(crate) fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::default().routes(routes!(list_activities))
}

#[derive(Serialize, ToSchema)]
#[schema(as = Activity)]
struct ActivityView {
    id: Uuid,
    #[serde(rename = "type")]
    #[schema(schema_with = schema::activity_type)]
    activity_type: ActivityType,
    lead_id: Uuid,
    enrollment_id: Option<Uuid>,
    sequence_id: Option<Uuid>,
    #[schema(value_type = Option<i64>)]
    step_order: Option<StepOrder>,
    #[schema(value_type = String, format = DateTime)]
    at: Timestamp,
    /// What happened and why; `reason` where there is one.
    #[schema(value_type = Object)]
    details: serde_json::Value,
}

impl From<Activity> for ActivityView {
    fn from(a: Activity) -> Self {
        let Activity {
            id,
            tenant_id: _,
            activity_type,
            lead_id,
            enrollment_id,
            sequence_id,
            step_order,
            at,
            details,
        } = a;
        ActivityView {
            id,
            activity_type,
            lead_id,
            enrollment_id,
            sequence_id,
            step_order,
            at,
            details,
        }
    }
}

#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct ListQuery {
    lead_id: Option<Uuid>,
    enrollment_id: Option<Uuid>,
    #[serde(rename = "type")]
    #[param(rename = "type", schema_with = schema::activity_type)]
    activity_type: Option<ActivityType>,
    /// Page size, 1 to 1000.
    #[param(minimum = 1, maximum = 1000, default = 50)]
    limit: Option<i64>,
    /// `next_cursor` of the previous page.
    #[param(min_length = 1)]
    cursor: Option<String>,
}

/// The log in time order, filtered by lead, enrollment and type.
#[utoipa::path(get, path = "/v1/activities", tag = "activities", params(ListQuery),
    responses((status = 200, description = "A page of activities", body = List<ActivityView>)))]
async fn list_activities(
    State(state): State<AppState>,
    Tenant(p): Tenant,
    ApiQuery(q): ApiQuery<ListQuery>,
) -> ApiResult<Json<List<ActivityView>>> {
    let filter = ActivityFilter {
        lead_id: q.lead_id,
        enrollment_id: q.enrollment_id,
        activity_type: q.activity_type,
    };
    let listed = state
        .engine
        .list_activities(p, &filter, &page(q.limit, q.cursor)?)
        .await?;
    Ok(Json(List::of(listed, ActivityView::from)))
}
