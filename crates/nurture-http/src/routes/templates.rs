//! `/v1/templates` (SPEC section 5): message templates, whose ids the tenant chooses.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use jiff::Timestamp;
use nurture_core::domain::{Template, TemplateId};
use nurture_core::engine::TemplateInput;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::error::{ApiError, ApiResult, Problem};
use crate::extract::{ApiJson, ApiQuery, List, Tenant, TextPath, page};
use crate::state::AppState;

pub(crate) fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::default()
        .routes(routes!(create_template, list_templates))
        .routes(routes!(get_template, put_template))
}

/// A template as the API shows it (SPEC section 5: `id`, `name`, `subject`, `body`,
/// `html_body`, `pre_approved`).
#[derive(Serialize, ToSchema)]
#[schema(as = Template)]
struct TemplateView {
    #[schema(value_type = String)]
    id: TemplateId,
    name: String,
    /// A minijinja template over the lead's fields.
    subject: String,
    body: String,
    html_body: Option<String>,
    pre_approved: bool,
    #[schema(value_type = String, format = DateTime)]
    created_at: Timestamp,
    #[schema(value_type = String, format = DateTime)]
    updated_at: Timestamp,
}

impl From<Template> for TemplateView {
    fn from(t: Template) -> Self {
        TemplateView {
            id: t.id,
            name: t.name,
            subject: t.subject,
            body: t.body,
            html_body: t.html_body,
            pre_approved: t.pre_approved,
            created_at: t.created_at,
            updated_at: t.updated_at,
        }
    }
}

/// `POST /v1/templates`: a new template; its id must be free.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct CreateTemplate {
    /// Letters, digits, `-`, `_` and `.`; 1 to 255 characters.
    #[schema(min_length = 1, max_length = 255, pattern = r"^[A-Za-z0-9._-]+$")]
    id: String,
    #[schema(min_length = 1, max_length = 255, pattern = r"\S")]
    name: String,
    /// Not blank.
    #[schema(pattern = r"\S")]
    subject: String,
    /// Not blank.
    #[schema(pattern = r"\S")]
    body: String,
    #[serde(default)]
    html_body: Option<String>,
    #[serde(default)]
    pre_approved: bool,
}

/// `PUT /v1/templates/{id}`: the template's whole content; `id`, if given, must be the path's.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct ReplaceTemplate {
    #[serde(default)]
    id: Option<String>,
    #[schema(min_length = 1, max_length = 255, pattern = r"\S")]
    name: String,
    /// Not blank.
    #[schema(pattern = r"\S")]
    subject: String,
    /// Not blank.
    #[schema(pattern = r"\S")]
    body: String,
    #[serde(default)]
    html_body: Option<String>,
    #[serde(default)]
    pre_approved: bool,
}

fn template_id(raw: &str, path: &str) -> ApiResult<TemplateId> {
    TemplateId::parse(raw).map_err(|e| ApiError::invalid(path, e.0))
}

#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct ListQuery {
    /// Page size, 1 to 1000.
    #[param(minimum = 1, maximum = 1000, default = 50)]
    limit: Option<i64>,
    /// `next_cursor` of the previous page.
    #[param(min_length = 1)]
    cursor: Option<String>,
}

/// Creates a template; an id already taken is 409 (`PUT` replaces).
#[utoipa::path(post, path = "/v1/templates", tag = "templates",
    request_body = CreateTemplate,
    responses(
        (status = 201, description = "Created", body = TemplateView),
        (status = 409, description = "The id is taken", body = Problem, content_type = "application/problem+json"),
    ))]
async fn create_template(
    State(state): State<AppState>,
    Tenant(p): Tenant,
    ApiJson(body): ApiJson<CreateTemplate>,
) -> ApiResult<(StatusCode, Json<TemplateView>)> {
    let input = TemplateInput {
        id: template_id(&body.id, "id")?,
        name: body.name,
        subject: body.subject,
        body: body.body,
        html_body: body.html_body,
        pre_approved: body.pre_approved,
    };
    let (template, _) = state.engine.put_template(p, input, true).await?;
    Ok((StatusCode::CREATED, Json(template.into())))
}

/// The tenant's templates, by id.
#[utoipa::path(get, path = "/v1/templates", tag = "templates", params(ListQuery),
    responses((status = 200, description = "A page of templates", body = List<TemplateView>)))]
async fn list_templates(
    State(state): State<AppState>,
    Tenant(p): Tenant,
    ApiQuery(q): ApiQuery<ListQuery>,
) -> ApiResult<Json<List<TemplateView>>> {
    let listed = state
        .engine
        .list_templates(p, &page(q.limit, q.cursor)?)
        .await?;
    Ok(Json(List::of(listed, TemplateView::from)))
}

/// One template.
#[utoipa::path(get, path = "/v1/templates/{id}", tag = "templates",
    params(("id" = String, Path, description = "The template's id", min_length = 1, max_length = 255, pattern = r"^[A-Za-z0-9._-]+$")),
    responses((status = 200, description = "The template", body = TemplateView)))]
async fn get_template(
    State(state): State<AppState>,
    Tenant(p): Tenant,
    TextPath(id): TextPath,
) -> ApiResult<Json<TemplateView>> {
    let id = TemplateId::parse(&id).map_err(|_| ApiError::NotFound("no such template".into()))?;
    Ok(Json(state.engine.get_template(p, &id).await?.into()))
}

/// Creates or replaces the template with this id (201 when created, 200 when replaced).
#[utoipa::path(put, path = "/v1/templates/{id}", tag = "templates",
    params(("id" = String, Path, description = "The template's id", min_length = 1, max_length = 255, pattern = r"^[A-Za-z0-9._-]+$")),
    request_body = ReplaceTemplate,
    responses(
        (status = 200, description = "Replaced", body = TemplateView),
        (status = 201, description = "Created", body = TemplateView),
    ))]
async fn put_template(
    State(state): State<AppState>,
    Tenant(p): Tenant,
    TextPath(id): TextPath,
    ApiJson(body): ApiJson<ReplaceTemplate>,
) -> ApiResult<(StatusCode, Json<TemplateView>)> {
    let id = template_id(&id, "id")?;
    if let Some(given) = &body.id
        && given != id.as_str()
    {
        return Err(ApiError::invalid(
            "id",
            "the body's id differs from the path's",
        ));
    }
    let input = TemplateInput {
        id,
        name: body.name,
        subject: body.subject,
        body: body.body,
        html_body: body.html_body,
        pre_approved: body.pre_approved,
    };
    let (template, created) = state.engine.put_template(p, input, false).await?;
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(template.into())))
}
