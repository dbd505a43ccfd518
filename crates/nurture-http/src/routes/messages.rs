//! `GET /v1/messages` (SPEC section 5): the outbox.

use axum::Json;
use axum::extract::State;
use jiff::Timestamp;
use nurture_core::domain::{Message, MessageStatus, StepOrder};
use nurture_core::store::MessageFilter;
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
    OpenApiRouter::default().routes(routes!(list_messages))
}

/// An outbound message. One sent outside Nurture (an `outbound_message` event) has no
/// enrollment, sequence or step.
#[derive(Serialize, ToSchema)]
#[schema(as = Message)]
struct MessageView {
    id: Uuid,
    enrollment_id: Option<Uuid>,
    lead_id: Uuid,
    sequence_id: Option<Uuid>,
    #[schema(value_type = Option<i64>)]
    step_order: Option<StepOrder>,
    /// The recipient's address.
    to: String,
    subject: String,
    body: String,
    html_body: Option<String>,
    #[schema(value_type = Object)]
    headers: serde_json::Map<String, serde_json::Value>,
    #[schema(schema_with = schema::message_status)]
    status: MessageStatus,
    attempts: i32,
    /// Stable per (enrollment, step): the transport deduplicates by it.
    idempotency_key: String,
    #[schema(value_type = String, format = DateTime)]
    created_at: Timestamp,
    #[schema(value_type = Option<String>, format = DateTime)]
    sent_at: Option<Timestamp>,
}

impl From<Message> for MessageView {
    fn from(m: Message) -> Self {
        let Message {
            id,
            tenant_id: _,
            enrollment_id,
            lead_id,
            sequence_id,
            step_order,
            to,
            subject,
            body,
            html_body,
            headers,
            status,
            attempts,
            idempotency_key,
            created_at,
            sent_at,
        } = m;
        MessageView {
            id,
            enrollment_id,
            lead_id,
            sequence_id,
            step_order,
            to,
            subject,
            body,
            html_body,
            headers,
            status,
            attempts,
            idempotency_key,
            created_at,
            sent_at,
        }
    }
}

#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct ListQuery {
    lead_id: Option<Uuid>,
    #[param(schema_with = schema::message_status)]
    status: Option<MessageStatus>,
    /// Page size, 1 to 1000.
    #[param(minimum = 1, maximum = 1000, default = 50)]
    limit: Option<i64>,
    /// `next_cursor` of the previous page.
    #[param(min_length = 1)]
    cursor: Option<String>,
}

/// The outbox, oldest first, filtered by lead and status.
#[utoipa::path(get, path = "/v1/messages", tag = "messages", params(ListQuery),
    responses((status = 200, description = "A page of messages", body = List<MessageView>)))]
async fn list_messages(
    State(state): State<AppState>,
    Tenant(p): Tenant,
    ApiQuery(q): ApiQuery<ListQuery>,
) -> ApiResult<Json<List<MessageView>>> {
    let filter = MessageFilter {
        lead_id: q.lead_id,
        status: q.status,
    };
    let listed = state
        .engine
        .list_messages(p, &filter, &page(q.limit, q.cursor)?)
        .await?;
    Ok(Json(List::of(listed, MessageView::from)))
}
