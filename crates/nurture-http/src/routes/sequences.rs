//! `/v1/sequences` (SPEC section 5): sequences with their steps and rules, the lifecycle
//! `draft → active ↔ paused → archived` (SPEC section 4), and the funnel stats.
//!
//! Rules arrive as JSON and are parsed here, at the boundary, by the core's own parsers, which
//! name every problem by its path (`entry_rules.when.all[1].op`, SPEC section 3).

use std::collections::BTreeMap;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use jiff::Timestamp;
use nurture_core::FieldError;
use nurture_core::domain::{
    Channel, DelayHours, Sequence, SequenceStatus, Step, StepOrder, TemplateId,
};
use nurture_core::engine::{SequenceInput, SequencePatch};
use nurture_core::rules::{Condition, EntryRules, ExitRules};
use nurture_core::store::SequenceStats;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use crate::error::{ApiError, ApiResult, Problem};
use crate::extract::{
    ApiJson, ApiQuery, IdPath, JsonValue, List, Tenant, double_option, from_json, page,
};
use crate::schema;
use crate::state::AppState;

pub(crate) fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::default()
        .routes(routes!(create_sequence, list_sequences))
        .routes(routes!(get_sequence, patch_sequence))
        .routes(routes!(replace_steps))
        .routes(routes!(activate_sequence))
        .routes(routes!(pause_sequence))
        .routes(routes!(resume_sequence))
        .routes(routes!(archive_sequence))
        .routes(routes!(sequence_stats))
}

/// A step (seed table `lead_nurture_sequence_steps`).
#[derive(Serialize, ToSchema)]
#[schema(as = Step)]
struct StepView {
    #[schema(value_type = i64)]
    step_order: StepOrder,
    #[schema(schema_with = schema::channel)]
    channel: Channel,
    #[schema(value_type = i64)]
    delay_hours: DelayHours,
    #[schema(value_type = Option<String>)]
    template_id: Option<TemplateId>,
    requires_human_approval: bool,
    /// A condition (SPEC section 3) checked when the step comes due; null: always run.
    #[schema(schema_with = schema::condition_nullable)]
    conditions: Option<serde_json::Value>,
}

impl From<Step> for StepView {
    fn from(s: Step) -> Self {
        let Step {
            step_order,
            channel,
            delay_hours,
            template_id,
            requires_human_approval,
            conditions,
        } = s;
        StepView {
            step_order,
            channel,
            delay_hours,
            template_id,
            requires_human_approval,
            conditions: conditions.map(|c| c.to_json()),
        }
    }
}

/// A sequence (seed table `lead_nurture_sequences`) with its steps.
#[derive(Serialize, ToSchema)]
#[schema(as = Sequence)]
struct SequenceView {
    id: Uuid,
    name: String,
    #[schema(schema_with = schema::sequence_status)]
    status: SequenceStatus,
    /// Where several sequences match a lead, the highest priority wins.
    priority: i32,
    /// null: manual enrollment only (SPEC section 3).
    #[schema(schema_with = schema::entry_rules_nullable)]
    entry_rules: Option<serde_json::Value>,
    #[schema(schema_with = schema::exit_rules_ref)]
    exit_rules: serde_json::Value,
    steps: Vec<StepView>,
    /// The user (or the API key's service user) who created it.
    created_by: Uuid,
    #[schema(value_type = String, format = DateTime)]
    created_at: Timestamp,
    #[schema(value_type = String, format = DateTime)]
    updated_at: Timestamp,
    version: i64,
}

impl From<Sequence> for SequenceView {
    fn from(s: Sequence) -> Self {
        let Sequence {
            id,
            tenant_id: _,
            name,
            status,
            priority,
            entry_rules,
            exit_rules,
            created_by,
            version,
            created_at,
            updated_at,
            steps,
        } = s;
        SequenceView {
            id,
            name,
            status,
            priority,
            entry_rules: entry_rules.map(|r| r.to_json()),
            exit_rules: exit_rules.to_json(),
            steps: steps.into_iter().map(Into::into).collect(),
            created_by,
            created_at,
            updated_at,
            version,
        }
    }
}

/// A step as written. `step_order` defaults to the step's place in the list (1..N).
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct StepBody {
    #[schema(minimum = 1, maximum = 1000)]
    step_order: Option<i64>,
    #[schema(schema_with = schema::channel)]
    channel: Channel,
    /// Hours after the previous step (after enrolment for step 1). Default 0.
    #[serde(default)]
    #[schema(minimum = 0, maximum = 8784)]
    delay_hours: i64,
    /// Needed by `email` steps; refused on `wait` steps.
    template_id: Option<String>,
    /// Only for `email` steps: the message waits for a human.
    #[serde(default)]
    requires_human_approval: bool,
    /// A condition (SPEC section 3); false when due means the step is skipped.
    #[schema(schema_with = schema::condition_nullable)]
    conditions: Option<serde_json::Value>,
}

/// Parses steps into the core's, every error at `steps[i].field`.
fn parse_steps(steps: Vec<StepBody>, errors: &mut Vec<FieldError>) -> Vec<Step> {
    let mut out = Vec::with_capacity(steps.len());
    for (i, s) in steps.into_iter().enumerate() {
        let at = |field: &str| format!("steps[{i}].{field}");
        let order = StepOrder::parse(s.step_order.unwrap_or(i as i64 + 1))
            .map_err(|e| errors.push(FieldError::new(at("step_order"), e.0)))
            .ok();
        let delay = DelayHours::parse(s.delay_hours)
            .map_err(|e| errors.push(FieldError::new(at("delay_hours"), e.0)))
            .ok();
        let template = match s.template_id {
            None => Some(None),
            Some(raw) => TemplateId::parse(&raw)
                .map(Some)
                .map_err(|e| errors.push(FieldError::new(at("template_id"), e.0)))
                .ok(),
        };
        let conditions = match s.conditions {
            None | Some(serde_json::Value::Null) => Some(None),
            Some(value) => Condition::parse(&value, &at("conditions"))
                .map(Some)
                .map_err(|e| errors.extend(e))
                .ok(),
        };
        if let (Some(step_order), Some(delay_hours), Some(template_id), Some(conditions)) =
            (order, delay, template, conditions)
        {
            out.push(Step {
                step_order,
                channel: s.channel,
                delay_hours,
                template_id,
                requires_human_approval: s.requires_human_approval,
                conditions,
            });
        }
    }
    out
}

/// `entry_rules`: null means manual enrollment only.
fn parse_entry_rules(
    value: Option<serde_json::Value>,
    errors: &mut Vec<FieldError>,
) -> Option<EntryRules> {
    match value {
        None | Some(serde_json::Value::Null) => None,
        Some(v) => EntryRules::parse(&v, "entry_rules")
            .map_err(|e| errors.extend(e))
            .ok(),
    }
}

/// `exit_rules`: null means the defaults (exit on a positive reply).
fn parse_exit_rules(value: Option<serde_json::Value>, errors: &mut Vec<FieldError>) -> ExitRules {
    let value = value.unwrap_or(serde_json::Value::Null);
    ExitRules::parse(&value, "exit_rules").unwrap_or_else(|e| {
        errors.extend(e);
        ExitRules::default()
    })
}

fn invalid_unless_empty(errors: Vec<FieldError>) -> ApiResult<()> {
    if errors.is_empty() {
        Ok(())
    } else {
        Err(ApiError::Invalid(errors))
    }
}

/// `POST /v1/sequences`: a new draft sequence.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct CreateSequence {
    #[schema(min_length = 1, max_length = 255)]
    name: String,
    #[serde(default)]
    priority: i32,
    /// `{"statuses", "score_bands", "segments_any", "min_score", "no_reply_within_days",
    /// "when"}`, every key optional; null: manual enrollment only.
    #[schema(schema_with = schema::entry_rules_nullable)]
    entry_rules: Option<serde_json::Value>,
    /// `{"on_reply": "positive" | "any", "inactivity_days", "when"}`; null: the defaults.
    #[schema(schema_with = schema::exit_rules_nullable)]
    exit_rules: Option<serde_json::Value>,
    #[serde(default)]
    steps: Vec<StepBody>,
}

/// `PATCH /v1/sequences/{id}`: only the fields given change. Steps change only while the
/// sequence is draft or paused (409 otherwise).
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct PatchSequence {
    #[schema(min_length = 1, max_length = 255)]
    name: Option<String>,
    priority: Option<i32>,
    /// null: manual enrollment only.
    #[serde(default, deserialize_with = "double_option")]
    #[schema(schema_with = schema::entry_rules_nullable)]
    entry_rules: Option<Option<serde_json::Value>>,
    /// null: the defaults.
    #[serde(default, deserialize_with = "double_option")]
    #[schema(schema_with = schema::exit_rules_nullable)]
    exit_rules: Option<Option<serde_json::Value>>,
    steps: Option<Vec<StepBody>>,
}

/// `{"steps": [...]}`, the same as the bare list.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct StepsBody {
    steps: Vec<StepBody>,
}

/// `PUT /v1/sequences/{id}/steps`: the new steps, as a list or as `{"steps": [...]}`.
///
/// Built by hand from the JSON (not with `untagged`, whose errors lose the path) so that each
/// error keeps its `steps[i]` path; the serde attribute is for the schema.
#[derive(Deserialize, ToSchema)]
#[serde(untagged)]
enum ReplaceSteps {
    List(Vec<StepBody>),
    Wrapped(StepsBody),
}

impl ReplaceSteps {
    fn from_json(value: serde_json::Value) -> ApiResult<ReplaceSteps> {
        match value {
            serde_json::Value::Array(_) => from_json(value, "steps").map(ReplaceSteps::List),
            serde_json::Value::Object(_) => from_json(value, "").map(ReplaceSteps::Wrapped),
            _ => Err(ApiError::invalid(
                "steps",
                "expected a list of steps or {\"steps\": [...]}",
            )),
        }
    }

    fn into_steps(self) -> Vec<StepBody> {
        match self {
            ReplaceSteps::List(steps) | ReplaceSteps::Wrapped(StepsBody { steps }) => steps,
        }
    }
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

/// How far a step was reached.
#[derive(Serialize, ToSchema)]
struct ReachedStep {
    step_order: i64,
    /// Enrollments that executed or skipped the step.
    count: i64,
}

/// The funnel of a sequence.
#[derive(Serialize, ToSchema)]
#[schema(as = SequenceStats)]
struct StatsView {
    sequence_id: Uuid,
    enrolled: i64,
    active: i64,
    paused: i64,
    completed: i64,
    reached_step: Vec<ReachedStep>,
    replied: i64,
    converted: i64,
    /// Exited enrollments by `exit_reason`.
    exited_by_reason: BTreeMap<String, i64>,
}

impl StatsView {
    fn new(sequence_id: Uuid, stats: SequenceStats) -> Self {
        let SequenceStats {
            enrolled,
            active,
            paused,
            completed,
            reached_step,
            replied,
            converted,
            exited_by_reason,
        } = stats;
        StatsView {
            sequence_id,
            enrolled,
            active,
            paused,
            completed,
            reached_step: reached_step
                .into_iter()
                .map(|(step_order, count)| ReachedStep { step_order, count })
                .collect(),
            replied,
            converted,
            exited_by_reason: exited_by_reason.into_iter().collect(),
        }
    }
}

/// Creates a draft sequence, with its steps if given.
#[utoipa::path(post, path = "/v1/sequences", tag = "sequences",
    request_body = CreateSequence,
    responses((status = 201, description = "Created, as a draft", body = SequenceView)))]
async fn create_sequence(
    State(state): State<AppState>,
    Tenant(p): Tenant,
    ApiJson(body): ApiJson<CreateSequence>,
) -> ApiResult<(StatusCode, Json<SequenceView>)> {
    let mut errors = Vec::new();
    let entry_rules = parse_entry_rules(body.entry_rules, &mut errors);
    let exit_rules = parse_exit_rules(body.exit_rules, &mut errors);
    let steps = parse_steps(body.steps, &mut errors);
    invalid_unless_empty(errors)?;
    let input = SequenceInput {
        name: body.name,
        priority: body.priority,
        entry_rules,
        exit_rules,
        steps,
    };
    let sequence = state.engine.create_sequence(p, input).await?;
    Ok((StatusCode::CREATED, Json(sequence.into())))
}

/// The tenant's sequences, oldest first.
#[utoipa::path(get, path = "/v1/sequences", tag = "sequences", params(ListQuery),
    responses((status = 200, description = "A page of sequences", body = List<SequenceView>)))]
async fn list_sequences(
    State(state): State<AppState>,
    Tenant(p): Tenant,
    ApiQuery(q): ApiQuery<ListQuery>,
) -> ApiResult<Json<List<SequenceView>>> {
    let listed = state
        .engine
        .list_sequences(p, &page(q.limit, q.cursor)?)
        .await?;
    Ok(Json(List::of(listed, SequenceView::from)))
}

/// One sequence with its steps.
#[utoipa::path(get, path = "/v1/sequences/{id}", tag = "sequences",
    params(("id" = Uuid, Path, description = "The sequence's id")),
    responses((status = 200, description = "The sequence", body = SequenceView)))]
async fn get_sequence(
    State(state): State<AppState>,
    Tenant(p): Tenant,
    IdPath(id): IdPath,
) -> ApiResult<Json<SequenceView>> {
    Ok(Json(state.engine.get_sequence(p, id).await?.into()))
}

/// Changes name, priority, rules or steps.
#[utoipa::path(patch, path = "/v1/sequences/{id}", tag = "sequences",
    params(("id" = Uuid, Path, description = "The sequence's id")),
    request_body = PatchSequence,
    responses(
        (status = 200, description = "Updated", body = SequenceView),
        (status = 409, description = "Archived, or steps changed while active",
            body = Problem, content_type = "application/problem+json"),
    ))]
async fn patch_sequence(
    State(state): State<AppState>,
    Tenant(p): Tenant,
    IdPath(id): IdPath,
    ApiJson(body): ApiJson<PatchSequence>,
) -> ApiResult<Json<SequenceView>> {
    let mut errors = Vec::new();
    let patch = SequencePatch {
        name: body.name,
        priority: body.priority,
        entry_rules: body.entry_rules.map(|v| parse_entry_rules(v, &mut errors)),
        exit_rules: body.exit_rules.map(|v| parse_exit_rules(v, &mut errors)),
        steps: body.steps.map(|s| parse_steps(s, &mut errors)),
    };
    invalid_unless_empty(errors)?;
    Ok(Json(
        state.engine.patch_sequence(p, id, patch).await?.into(),
    ))
}

/// Replaces the steps (draft or paused only). On resume, enrollments continue at their
/// pointer with the new steps.
#[utoipa::path(put, path = "/v1/sequences/{id}/steps", tag = "sequences",
    params(("id" = Uuid, Path, description = "The sequence's id")),
    request_body = ReplaceSteps,
    responses(
        (status = 200, description = "The sequence with its new steps", body = SequenceView),
        (status = 409, description = "The sequence is active or archived",
            body = Problem, content_type = "application/problem+json"),
    ))]
async fn replace_steps(
    State(state): State<AppState>,
    Tenant(p): Tenant,
    IdPath(id): IdPath,
    JsonValue(value): JsonValue,
) -> ApiResult<Json<SequenceView>> {
    let body = ReplaceSteps::from_json(value)?;
    let mut errors = Vec::new();
    let steps = parse_steps(body.into_steps(), &mut errors);
    invalid_unless_empty(errors)?;
    Ok(Json(state.engine.replace_steps(p, id, steps).await?.into()))
}

/// Activates a draft: it must have 1 to max_steps steps within the max span, and every
/// template must exist (422 naming each problem otherwise).
#[utoipa::path(post, path = "/v1/sequences/{id}/activate", tag = "sequences",
    params(("id" = Uuid, Path, description = "The sequence's id")),
    responses(
        (status = 200, description = "Active", body = SequenceView),
        (status = 409, description = "Not a draft", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "The sequence cannot run as it is", body = Problem,
            content_type = "application/problem+json"),
    ))]
async fn activate_sequence(
    State(state): State<AppState>,
    Tenant(p): Tenant,
    IdPath(id): IdPath,
) -> ApiResult<Json<SequenceView>> {
    Ok(Json(state.engine.activate_sequence(p, id).await?.into()))
}

/// Pauses an active sequence: it executes nothing and enrolls no one until resumed.
#[utoipa::path(post, path = "/v1/sequences/{id}/pause", tag = "sequences",
    params(("id" = Uuid, Path, description = "The sequence's id")),
    responses(
        (status = 200, description = "Paused", body = SequenceView),
        (status = 409, description = "Not active", body = Problem, content_type = "application/problem+json"),
    ))]
async fn pause_sequence(
    State(state): State<AppState>,
    Tenant(p): Tenant,
    IdPath(id): IdPath,
) -> ApiResult<Json<SequenceView>> {
    Ok(Json(state.engine.pause_sequence(p, id).await?.into()))
}

/// Resumes a paused sequence (validated again, like activation).
#[utoipa::path(post, path = "/v1/sequences/{id}/resume", tag = "sequences",
    params(("id" = Uuid, Path, description = "The sequence's id")),
    responses(
        (status = 200, description = "Active again", body = SequenceView),
        (status = 409, description = "Not paused", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "The sequence cannot run as it is", body = Problem,
            content_type = "application/problem+json"),
    ))]
async fn resume_sequence(
    State(state): State<AppState>,
    Tenant(p): Tenant,
    IdPath(id): IdPath,
) -> ApiResult<Json<SequenceView>> {
    Ok(Json(state.engine.resume_sequence(p, id).await?.into()))
}

/// Archives a sequence for good; its live enrollments exit with `sequence_archived`.
#[utoipa::path(post, path = "/v1/sequences/{id}/archive", tag = "sequences",
    params(("id" = Uuid, Path, description = "The sequence's id")),
    responses(
        (status = 200, description = "Archived", body = SequenceView),
        (status = 409, description = "Already archived", body = Problem, content_type = "application/problem+json"),
    ))]
async fn archive_sequence(
    State(state): State<AppState>,
    Tenant(p): Tenant,
    IdPath(id): IdPath,
) -> ApiResult<Json<SequenceView>> {
    Ok(Json(state.engine.archive_sequence(p, id).await?.into()))
}

/// The funnel: enrolled, reached each step, replied, converted, exited by reason.
#[utoipa::path(get, path = "/v1/sequences/{id}/stats", tag = "sequences",
    params(("id" = Uuid, Path, description = "The sequence's id")),
    responses((status = 200, description = "The funnel", body = StatsView)))]
async fn sequence_stats(
    State(state): State<AppState>,
    Tenant(p): Tenant,
    IdPath(id): IdPath,
) -> ApiResult<Json<StatsView>> {
    let stats = state.engine.sequence_stats(p, id).await?;
    Ok(Json(StatsView::new(id, stats)))
}
