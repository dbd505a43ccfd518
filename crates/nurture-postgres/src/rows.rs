//! Column encodings and row mapping: uuid, timestamptz (through [`Ts`]), jsonb, text[] and
//! the seed's enums. A value that does not decode is a storage error naming the column, never a
//! panic.
//!
//! Enum columns (PostgreSQL enums and text + CHECK alike) are read as their label: an enum's
//! value on the wire is its label's text, so it is decoded as `&str` without sqlx's type check
//! (which knows only the built-in text types) and parsed by the domain type's `FromStr`.

use std::str::FromStr;

use jiff::Timestamp;
use nurture_core::domain::*;
use nurture_core::error::{Error, Result};
use nurture_core::rules::{Condition, EntryRules, ExitRules};
use nurture_core::settings::TenantSettings;
use sqlx::Row;
use sqlx::postgres::PgRow;
use uuid::Uuid;

use crate::ts::Ts;

pub fn ts(t: Timestamp) -> Ts {
    Ts(t)
}

pub fn opt_ts(t: Option<Timestamp>) -> Option<Ts> {
    t.map(Ts)
}

fn bad(column: &str, why: impl std::fmt::Display) -> Error {
    Error::store(format!("column {column}: {why}"))
}

pub fn get<'r, T>(row: &'r PgRow, column: &str) -> Result<T>
where
    T: sqlx::Decode<'r, sqlx::Postgres> + sqlx::Type<sqlx::Postgres>,
{
    row.try_get(column).map_err(|e| bad(column, e))
}

pub fn get_ts(row: &PgRow, column: &str) -> Result<Timestamp> {
    get::<Ts>(row, column).map(|t| t.0)
}

pub fn get_opt_ts(row: &PgRow, column: &str) -> Result<Option<Timestamp>> {
    Ok(get::<Option<Ts>>(row, column)?.map(|t| t.0))
}

fn label<'r>(row: &'r PgRow, column: &str) -> Result<Option<&'r str>> {
    row.try_get_unchecked(column).map_err(|e| bad(column, e))
}

pub fn get_enum<T: FromStr<Err = ParseError>>(row: &PgRow, column: &str) -> Result<T> {
    let s = label(row, column)?.ok_or_else(|| bad(column, "unexpected NULL"))?;
    s.parse().map_err(|e: ParseError| bad(column, e))
}

pub fn get_opt_enum<T: FromStr<Err = ParseError>>(row: &PgRow, column: &str) -> Result<Option<T>> {
    label(row, column)?
        .map(|s| s.parse().map_err(|e: ParseError| bad(column, e)))
        .transpose()
}

/// An enum-typed column as plain text (for grouping in SQL results).
pub fn get_label(row: &PgRow, column: &str) -> Result<String> {
    label(row, column)?
        .map(str::to_string)
        .ok_or_else(|| bad(column, "unexpected NULL"))
}

fn get_step_order(row: &PgRow, column: &str) -> Result<StepOrder> {
    let v: i32 = get(row, column)?;
    StepOrder::parse(v.into()).map_err(|e| bad(column, e))
}

fn get_opt_step_order(row: &PgRow, column: &str) -> Result<Option<StepOrder>> {
    let v: Option<i32> = get(row, column)?;
    v.map(|v| StepOrder::parse(v.into()).map_err(|e| bad(column, e)))
        .transpose()
}

fn get_template_id(row: &PgRow, column: &str) -> Result<Option<TemplateId>> {
    let v: Option<&str> = get(row, column)?;
    v.map(|t| TemplateId::parse(t).map_err(|e| bad(column, e)))
        .transpose()
}

fn object(
    v: serde_json::Value,
    column: &str,
) -> Result<serde_json::Map<String, serde_json::Value>> {
    match v {
        serde_json::Value::Object(m) => Ok(m),
        _ => Err(bad(column, "expected a JSON object")),
    }
}

/// A step order as the `integer` it is stored as (1..=1000, so it always fits).
pub fn step_int(s: StepOrder) -> i32 {
    s.get() as i32
}

pub fn tenant(row: &PgRow) -> Result<Tenant> {
    let settings: serde_json::Value = get(row, "settings")?;
    Ok(Tenant {
        id: get(row, "id")?,
        name: get(row, "name")?,
        settings: TenantSettings::from_json(&settings).map_err(|e| bad("settings", e))?,
        created_at: get_ts(row, "created_at")?,
    })
}

pub fn api_key(row: &PgRow) -> Result<ApiKeyRecord> {
    Ok(ApiKeyRecord {
        id: get(row, "id")?,
        tenant_id: get(row, "tenant_id")?,
        user_id: get(row, "user_id")?,
        prefix: get(row, "prefix")?,
        hash: get(row, "hash")?,
        created_at: get_ts(row, "created_at")?,
    })
}

pub const LEAD_COLUMNS: &str = "tenant_id, id, email, first_name, last_name, company, timezone, status, score, \
    score_band, segments, attributes, owner_id, do_not_contact, unsubscribed, bounced, last_reply_at, \
    last_reply_sentiment, last_engaged_at, last_outbound_at, created_at, updated_at";

pub fn lead(row: &PgRow) -> Result<Lead> {
    let email: &str = get(row, "email")?;
    let tz: Option<&str> = get(row, "timezone")?;
    let attributes: serde_json::Value = get(row, "attributes")?;
    Ok(Lead {
        id: get(row, "id")?,
        tenant_id: get(row, "tenant_id")?,
        email: EmailAddress::parse(email).map_err(|e| bad("email", e))?,
        first_name: get(row, "first_name")?,
        last_name: get(row, "last_name")?,
        company: get(row, "company")?,
        timezone: tz
            .map(|t| TimeZoneName::parse(t).map_err(|e| bad("timezone", e)))
            .transpose()?,
        status: get_enum(row, "status")?,
        score: get(row, "score")?,
        score_band: get(row, "score_band")?,
        segments: get(row, "segments")?,
        attributes: object(attributes, "attributes")?,
        owner_id: get(row, "owner_id")?,
        do_not_contact: get(row, "do_not_contact")?,
        unsubscribed: get(row, "unsubscribed")?,
        bounced: get(row, "bounced")?,
        last_reply_at: get_opt_ts(row, "last_reply_at")?,
        last_reply_sentiment: get_opt_enum(row, "last_reply_sentiment")?,
        last_engaged_at: get_opt_ts(row, "last_engaged_at")?,
        last_outbound_at: get_opt_ts(row, "last_outbound_at")?,
        created_at: get_ts(row, "created_at")?,
        updated_at: get_ts(row, "updated_at")?,
    })
}

pub fn template(row: &PgRow) -> Result<Template> {
    Ok(Template {
        tenant_id: get(row, "tenant_id")?,
        id: get_template_id(row, "id")?.ok_or_else(|| bad("id", "unexpected NULL"))?,
        name: get(row, "name")?,
        subject: get(row, "subject")?,
        body: get(row, "body")?,
        html_body: get(row, "html_body")?,
        pre_approved: get(row, "pre_approved")?,
        created_at: get_ts(row, "created_at")?,
        updated_at: get_ts(row, "updated_at")?,
    })
}

/// A sequence without its steps (they come from their own table).
pub fn sequence(row: &PgRow) -> Result<Sequence> {
    let entry: Option<serde_json::Value> = get(row, "entry_rules")?;
    let exit: serde_json::Value = get(row, "exit_rules")?;
    Ok(Sequence {
        id: get(row, "id")?,
        tenant_id: get(row, "tenant_id")?,
        name: get(row, "name")?,
        status: get_enum(row, "status")?,
        priority: get(row, "priority")?,
        entry_rules: entry
            .map(|v| {
                EntryRules::parse(&v, "entry_rules")
                    .map_err(|e| bad("entry_rules", format!("{e:?}")))
            })
            .transpose()?,
        exit_rules: ExitRules::parse(&exit, "exit_rules")
            .map_err(|e| bad("exit_rules", format!("{e:?}")))?,
        created_by: get(row, "created_by")?,
        version: get(row, "version")?,
        created_at: get_ts(row, "created_at")?,
        updated_at: get_ts(row, "updated_at")?,
        steps: Vec::new(),
    })
}

/// (sequence id, step).
pub fn step(row: &PgRow) -> Result<(Uuid, Step)> {
    let conditions: Option<serde_json::Value> = get(row, "conditions")?;
    let delay: i32 = get(row, "delay_hours")?;
    Ok((
        get(row, "sequence_id")?,
        Step {
            step_order: get_step_order(row, "step_order")?,
            channel: get_enum(row, "channel")?,
            delay_hours: DelayHours::parse(delay.into()).map_err(|e| bad("delay_hours", e))?,
            template_id: get_template_id(row, "template_id")?,
            requires_human_approval: get(row, "requires_human_approval")?,
            conditions: conditions
                .map(|v| {
                    Condition::parse(&v, "conditions")
                        .map_err(|e| bad("conditions", format!("{e:?}")))
                })
                .transpose()?,
        },
    ))
}

pub fn enrollment(row: &PgRow) -> Result<Enrollment> {
    Ok(Enrollment {
        id: get(row, "id")?,
        tenant_id: get(row, "tenant_id")?,
        lead_id: get(row, "lead_id")?,
        sequence_id: get(row, "sequence_id")?,
        current_step_order: get_step_order(row, "current_step_order")?,
        status: get_enum(row, "status")?,
        source: get_enum(row, "source")?,
        enrolled_on: get_ts(row, "enrolled_on")?,
        next_step_on: get_opt_ts(row, "next_step_on")?,
        paused_reason: get_opt_enum(row, "paused_reason")?,
        exit_reason: get(row, "exit_reason")?,
        approved_approval_id: get(row, "approved_approval_id")?,
        ended_at: get_opt_ts(row, "ended_at")?,
        updated_at: get_ts(row, "updated_at")?,
        version: get(row, "version")?,
    })
}

pub fn approval(row: &PgRow) -> Result<Approval> {
    Ok(Approval {
        id: get(row, "id")?,
        tenant_id: get(row, "tenant_id")?,
        enrollment_id: get(row, "enrollment_id")?,
        lead_id: get(row, "lead_id")?,
        sequence_id: get(row, "sequence_id")?,
        step_order: get_step_order(row, "step_order")?,
        template_id: get_template_id(row, "template_id")?,
        subject: get(row, "subject")?,
        body: get(row, "body")?,
        html_body: get(row, "html_body")?,
        author: get_enum(row, "author")?,
        status: get_enum(row, "status")?,
        decided_by: get(row, "decided_by")?,
        decided_at: get_opt_ts(row, "decided_at")?,
        decision_reason: get(row, "decision_reason")?,
        created_at: get_ts(row, "created_at")?,
        updated_at: get_ts(row, "updated_at")?,
    })
}

pub fn task(row: &PgRow) -> Result<Task> {
    Ok(Task {
        id: get(row, "id")?,
        tenant_id: get(row, "tenant_id")?,
        enrollment_id: get(row, "enrollment_id")?,
        lead_id: get(row, "lead_id")?,
        sequence_id: get(row, "sequence_id")?,
        step_order: get_step_order(row, "step_order")?,
        channel: get_enum(row, "channel")?,
        assignee_id: get(row, "assignee_id")?,
        title: get(row, "title")?,
        status: get_enum(row, "status")?,
        due_at: get_ts(row, "due_at")?,
        completed_at: get_opt_ts(row, "completed_at")?,
        created_at: get_ts(row, "created_at")?,
    })
}

pub fn message(row: &PgRow) -> Result<Message> {
    let headers: serde_json::Value = get(row, "headers")?;
    Ok(Message {
        id: get(row, "id")?,
        tenant_id: get(row, "tenant_id")?,
        enrollment_id: get(row, "enrollment_id")?,
        lead_id: get(row, "lead_id")?,
        sequence_id: get(row, "sequence_id")?,
        step_order: get_opt_step_order(row, "step_order")?,
        to: get(row, "to_address")?,
        subject: get(row, "subject")?,
        body: get(row, "body")?,
        html_body: get(row, "html_body")?,
        headers: object(headers, "headers")?,
        status: get_enum(row, "status")?,
        attempts: get(row, "attempts")?,
        idempotency_key: get(row, "idempotency_key")?,
        created_at: get_ts(row, "created_at")?,
        sent_at: get_opt_ts(row, "sent_at")?,
    })
}

pub fn activity(row: &PgRow) -> Result<Activity> {
    Ok(Activity {
        id: get(row, "id")?,
        tenant_id: get(row, "tenant_id")?,
        activity_type: get_enum(row, "type")?,
        lead_id: get(row, "lead_id")?,
        enrollment_id: get(row, "enrollment_id")?,
        sequence_id: get(row, "sequence_id")?,
        step_order: get_opt_step_order(row, "step_order")?,
        at: get_ts(row, "at")?,
        details: get(row, "details")?,
    })
}
