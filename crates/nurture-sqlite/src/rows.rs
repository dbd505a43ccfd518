//! Column encodings and row mapping: UUIDs as text, instants as integer microseconds, JSON as
//! text, enums as their snake_case names. A value that does not decode is a storage error
//! naming the column, never a panic.

use std::str::FromStr;

use jiff::Timestamp;
use nurture_core::domain::*;
use nurture_core::error::{Error, Result};
use nurture_core::rules::{Condition, EntryRules, ExitRules};
use nurture_core::settings::TenantSettings;
use sqlx::Row;
use sqlx::sqlite::SqliteRow;
use uuid::Uuid;

pub fn ts(t: Timestamp) -> i64 {
    t.as_microsecond()
}

pub fn opt_ts(t: Option<Timestamp>) -> Option<i64> {
    t.map(ts)
}

/// Ids are stored as 16-byte BLOBs (sqlx encodes a `Uuid` so): half the size of their text form
/// in every row and index entry, and v7 ids still sort by creation as bytes.
pub fn id(u: Uuid) -> Uuid {
    u
}

pub fn opt_id(u: Option<Uuid>) -> Option<Uuid> {
    u
}

/// An id as the hex text that `unhex()` turns back into the stored BLOB (for `json_each` lists).
pub fn hex_id(u: Uuid) -> String {
    u.simple().to_string()
}

fn bad(column: &str, why: impl std::fmt::Display) -> Error {
    Error::store(format!("column {column}: {why}"))
}

pub fn get<'r, T>(row: &'r SqliteRow, column: &str) -> Result<T>
where
    T: sqlx::Decode<'r, sqlx::Sqlite> + sqlx::Type<sqlx::Sqlite>,
{
    row.try_get(column).map_err(|e| bad(column, e))
}

pub fn get_id(row: &SqliteRow, column: &str) -> Result<Uuid> {
    get(row, column)
}

pub fn get_opt_id(row: &SqliteRow, column: &str) -> Result<Option<Uuid>> {
    get(row, column)
}

pub fn get_ts(row: &SqliteRow, column: &str) -> Result<Timestamp> {
    let v: i64 = get(row, column)?;
    Timestamp::from_microsecond(v).map_err(|e| bad(column, e))
}

pub fn get_opt_ts(row: &SqliteRow, column: &str) -> Result<Option<Timestamp>> {
    let v: Option<i64> = get(row, column)?;
    v.map(|v| Timestamp::from_microsecond(v).map_err(|e| bad(column, e)))
        .transpose()
}

pub fn get_enum<T: FromStr<Err = ParseError>>(row: &SqliteRow, column: &str) -> Result<T> {
    let s: &str = get(row, column)?;
    s.parse().map_err(|e: ParseError| bad(column, e))
}

pub fn get_opt_enum<T: FromStr<Err = ParseError>>(
    row: &SqliteRow,
    column: &str,
) -> Result<Option<T>> {
    let s: Option<&str> = get(row, column)?;
    s.map(|s| s.parse().map_err(|e: ParseError| bad(column, e)))
        .transpose()
}

pub fn get_json(row: &SqliteRow, column: &str) -> Result<serde_json::Value> {
    let s: &str = get(row, column)?;
    serde_json::from_str(s).map_err(|e| bad(column, e))
}

pub fn get_opt_json(row: &SqliteRow, column: &str) -> Result<Option<serde_json::Value>> {
    let s: Option<&str> = get(row, column)?;
    s.map(|s| serde_json::from_str(s).map_err(|e| bad(column, e)))
        .transpose()
}

fn get_step_order(row: &SqliteRow, column: &str) -> Result<StepOrder> {
    let v: i64 = get(row, column)?;
    StepOrder::parse(v).map_err(|e| bad(column, e))
}

fn get_opt_step_order(row: &SqliteRow, column: &str) -> Result<Option<StepOrder>> {
    let v: Option<i64> = get(row, column)?;
    v.map(|v| StepOrder::parse(v).map_err(|e| bad(column, e)))
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

pub fn tenant(row: &SqliteRow) -> Result<Tenant> {
    let settings = get_json(row, "settings")?;
    Ok(Tenant {
        id: get_id(row, "id")?,
        name: get(row, "name")?,
        settings: TenantSettings::from_json(&settings).map_err(|e| bad("settings", e))?,
        created_at: get_ts(row, "created_at")?,
    })
}

pub fn api_key(row: &SqliteRow) -> Result<ApiKeyRecord> {
    Ok(ApiKeyRecord {
        id: get_id(row, "id")?,
        tenant_id: get_id(row, "tenant_id")?,
        user_id: get_id(row, "user_id")?,
        prefix: get(row, "prefix")?,
        hash: get(row, "hash")?,
        created_at: get_ts(row, "created_at")?,
    })
}

pub const LEAD_COLUMNS: &str = "tenant_id, id, email, first_name, last_name, company, timezone, status, score, \
    score_band, segments, attributes, owner_id, do_not_contact, unsubscribed, bounced, last_reply_at, \
    last_reply_sentiment, last_engaged_at, last_outbound_at, created_at, updated_at";

pub fn lead(row: &SqliteRow) -> Result<Lead> {
    let email: &str = get(row, "email")?;
    let tz: Option<&str> = get(row, "timezone")?;
    let segments: Vec<String> =
        serde_json::from_value(get_json(row, "segments")?).map_err(|e| bad("segments", e))?;
    Ok(Lead {
        id: get_id(row, "id")?,
        tenant_id: get_id(row, "tenant_id")?,
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
        segments,
        attributes: object(get_json(row, "attributes")?, "attributes")?,
        owner_id: get_opt_id(row, "owner_id")?,
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

pub fn template(row: &SqliteRow) -> Result<Template> {
    let id: &str = get(row, "id")?;
    Ok(Template {
        tenant_id: get_id(row, "tenant_id")?,
        id: TemplateId::parse(id).map_err(|e| bad("id", e))?,
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
pub fn sequence(row: &SqliteRow) -> Result<Sequence> {
    let entry = get_opt_json(row, "entry_rules")?;
    let exit = get_json(row, "exit_rules")?;
    Ok(Sequence {
        id: get_id(row, "id")?,
        tenant_id: get_id(row, "tenant_id")?,
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
        created_by: get_id(row, "created_by")?,
        version: get(row, "version")?,
        created_at: get_ts(row, "created_at")?,
        updated_at: get_ts(row, "updated_at")?,
        steps: Vec::new(),
    })
}

/// (sequence id, step).
pub fn step(row: &SqliteRow) -> Result<(Uuid, Step)> {
    let template: Option<&str> = get(row, "template_id")?;
    let conditions = get_opt_json(row, "conditions")?;
    let delay: i64 = get(row, "delay_hours")?;
    Ok((
        get_id(row, "sequence_id")?,
        Step {
            step_order: get_step_order(row, "step_order")?,
            channel: get_enum(row, "channel")?,
            delay_hours: DelayHours::parse(delay).map_err(|e| bad("delay_hours", e))?,
            template_id: template
                .map(|t| TemplateId::parse(t).map_err(|e| bad("template_id", e)))
                .transpose()?,
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

pub const ENROLLMENT_COLUMNS: &str = "tenant_id, id, lead_id, sequence_id, current_step_order, status, source, \
    enrolled_on, next_step_on, exit_reason, paused_reason, approved_approval_id, ended_at, updated_at, version";

pub fn enrollment(row: &SqliteRow) -> Result<Enrollment> {
    Ok(Enrollment {
        id: get_id(row, "id")?,
        tenant_id: get_id(row, "tenant_id")?,
        lead_id: get_id(row, "lead_id")?,
        sequence_id: get_id(row, "sequence_id")?,
        current_step_order: get_step_order(row, "current_step_order")?,
        status: get_enum(row, "status")?,
        source: get_enum(row, "source")?,
        enrolled_on: get_ts(row, "enrolled_on")?,
        next_step_on: get_opt_ts(row, "next_step_on")?,
        paused_reason: get_opt_enum(row, "paused_reason")?,
        exit_reason: get(row, "exit_reason")?,
        approved_approval_id: get_opt_id(row, "approved_approval_id")?,
        ended_at: get_opt_ts(row, "ended_at")?,
        updated_at: get_ts(row, "updated_at")?,
        version: get(row, "version")?,
    })
}

pub fn approval(row: &SqliteRow) -> Result<Approval> {
    let template: Option<&str> = get(row, "template_id")?;
    Ok(Approval {
        id: get_id(row, "id")?,
        tenant_id: get_id(row, "tenant_id")?,
        enrollment_id: get_id(row, "enrollment_id")?,
        lead_id: get_id(row, "lead_id")?,
        sequence_id: get_id(row, "sequence_id")?,
        step_order: get_step_order(row, "step_order")?,
        template_id: template
            .map(|t| TemplateId::parse(t).map_err(|e| bad("template_id", e)))
            .transpose()?,
        subject: get(row, "subject")?,
        body: get(row, "body")?,
        html_body: get(row, "html_body")?,
        author: get_enum(row, "author")?,
        status: get_enum(row, "status")?,
        decided_by: get_opt_id(row, "decided_by")?,
        decided_at: get_opt_ts(row, "decided_at")?,
        decision_reason: get(row, "decision_reason")?,
        created_at: get_ts(row, "created_at")?,
        updated_at: get_ts(row, "updated_at")?,
    })
}

pub fn task(row: &SqliteRow) -> Result<Task> {
    Ok(Task {
        id: get_id(row, "id")?,
        tenant_id: get_id(row, "tenant_id")?,
        enrollment_id: get_id(row, "enrollment_id")?,
        lead_id: get_id(row, "lead_id")?,
        sequence_id: get_id(row, "sequence_id")?,
        step_order: get_step_order(row, "step_order")?,
        channel: get_enum(row, "channel")?,
        assignee_id: get_opt_id(row, "assignee_id")?,
        title: get(row, "title")?,
        status: get_enum(row, "status")?,
        due_at: get_ts(row, "due_at")?,
        completed_at: get_opt_ts(row, "completed_at")?,
        created_at: get_ts(row, "created_at")?,
    })
}

pub fn message(row: &SqliteRow) -> Result<Message> {
    Ok(Message {
        id: get_id(row, "id")?,
        tenant_id: get_id(row, "tenant_id")?,
        enrollment_id: get_opt_id(row, "enrollment_id")?,
        lead_id: get_id(row, "lead_id")?,
        sequence_id: get_opt_id(row, "sequence_id")?,
        step_order: get_opt_step_order(row, "step_order")?,
        to: get(row, "to_address")?,
        subject: get(row, "subject")?,
        body: get(row, "body")?,
        html_body: get(row, "html_body")?,
        headers: object(get_json(row, "headers")?, "headers")?,
        status: get_enum(row, "status")?,
        attempts: get(row, "attempts")?,
        idempotency_key: get(row, "idempotency_key")?,
        created_at: get_ts(row, "created_at")?,
        sent_at: get_opt_ts(row, "sent_at")?,
    })
}

pub fn activity(row: &SqliteRow) -> Result<Activity> {
    Ok(Activity {
        id: get_id(row, "id")?,
        tenant_id: get_id(row, "tenant_id")?,
        activity_type: get_enum(row, "type")?,
        lead_id: get_id(row, "lead_id")?,
        enrollment_id: get_opt_id(row, "enrollment_id")?,
        sequence_id: get_opt_id(row, "sequence_id")?,
        step_order: get_opt_step_order(row, "step_order")?,
        at: get_ts(row, "at")?,
        details: get_json(row, "details")?,
    })
}

/// Rules and conditions as stored JSON text.
pub fn entry_rules_json(r: &Option<EntryRules>) -> Option<String> {
    r.as_ref().map(|r| r.to_json().to_string())
}
