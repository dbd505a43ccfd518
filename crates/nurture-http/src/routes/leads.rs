//! `/v1/leads` (SPEC section 5): the CRM's leads, mirrored, and the events it reports about
//! them. A write answers the lead and the enrollments it started or ended, because
//! auto-enrollment and the immediate exits happen inside the same request (SPEC section 4).

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use jiff::Timestamp;
use nurture_core::FieldError;
use nurture_core::domain::{EmailAddress, Lead, LeadStatus, Sentiment, TimeZoneName};
use nurture_core::engine::{LeadEvent, LeadInput, LeadPatch, LeadWrite};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use super::enrollments::EnrollmentView;
use crate::error::{ApiError, ApiResult};
use crate::extract::{ApiJson, IdPath, JsonValue, Tenant, double_option, from_json};
use crate::schema;
use crate::state::AppState;

pub(crate) fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::default()
        .routes(routes!(create_lead))
        .routes(routes!(get_lead, patch_lead))
        .routes(routes!(lead_event))
}

/// A lead (SPEC section 2 `leads`), with the engine's bookkeeping of replies, engagement and
/// outbound contact.
#[derive(Serialize, ToSchema)]
#[schema(as = Lead)]
struct LeadView {
    id: Uuid,
    #[schema(value_type = String, format = Email)]
    email: EmailAddress,
    first_name: Option<String>,
    last_name: Option<String>,
    company: Option<String>,
    /// IANA zone name, e.g. `Europe/Paris`; null means the tenant's zone.
    #[schema(schema_with = schema::time_zone_nullable)]
    timezone: Option<TimeZoneName>,
    #[schema(schema_with = schema::lead_status)]
    status: LeadStatus,
    score: i64,
    score_band: Option<String>,
    segments: Vec<String>,
    #[schema(value_type = Object)]
    attributes: serde_json::Map<String, serde_json::Value>,
    owner_id: Option<Uuid>,
    do_not_contact: bool,
    unsubscribed: bool,
    /// A hard bounce was reported: no more email.
    bounced: bool,
    /// The last reply that counts as one (never an out-of-office).
    #[schema(value_type = Option<String>, format = DateTime)]
    last_reply_at: Option<Timestamp>,
    #[schema(schema_with = schema::sentiment_nullable)]
    last_reply_sentiment: Option<Sentiment>,
    /// The last reply, open or click.
    #[schema(value_type = Option<String>, format = DateTime)]
    last_engaged_at: Option<Timestamp>,
    #[schema(value_type = Option<String>, format = DateTime)]
    last_outbound_at: Option<Timestamp>,
    #[schema(value_type = String, format = DateTime)]
    created_at: Timestamp,
    #[schema(value_type = String, format = DateTime)]
    updated_at: Timestamp,
}

impl From<Lead> for LeadView {
    fn from(lead: Lead) -> Self {
        // Destructured field by field: a column added to the core fails the build here
        // instead of silently missing from the API.
        let Lead {
            id,
            tenant_id: _,
            email,
            first_name,
            last_name,
            company,
            timezone,
            status,
            score,
            score_band,
            segments,
            attributes,
            owner_id,
            do_not_contact,
            unsubscribed,
            bounced,
            last_reply_at,
            last_reply_sentiment,
            last_engaged_at,
            last_outbound_at,
            created_at,
            updated_at,
        } = lead;
        LeadView {
            id,
            email,
            first_name,
            last_name,
            company,
            timezone,
            status,
            score,
            score_band,
            segments,
            attributes,
            owner_id,
            do_not_contact,
            unsubscribed,
            bounced,
            last_reply_at,
            last_reply_sentiment,
            last_engaged_at,
            last_outbound_at,
            created_at,
            updated_at,
        }
    }
}

/// A lead after a write, with the enrollments the write started or ended.
#[derive(Serialize, ToSchema)]
#[schema(as = LeadWrite)]
struct LeadWriteView {
    #[serde(flatten)]
    lead: LeadView,
    /// Enrollments this write caused: an auto-enrollment, or an exit it forced.
    enrollments: Vec<EnrollmentView>,
}

impl From<LeadWrite> for LeadWriteView {
    fn from(w: LeadWrite) -> Self {
        LeadWriteView {
            lead: w.lead.into(),
            enrollments: w.enrollments.into_iter().map(Into::into).collect(),
        }
    }
}

/// `POST /v1/leads`: a lead as the CRM has it; with the `id` of an existing lead it replaces
/// that lead's fields (upsert).
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct CreateLead {
    /// Give the CRM's own UUID to upsert; leave out to let Nurture choose one.
    #[serde(default)]
    id: Option<Uuid>,
    #[schema(format = Email)]
    email: String,
    #[serde(default)]
    first_name: Option<String>,
    #[serde(default)]
    last_name: Option<String>,
    #[serde(default)]
    company: Option<String>,
    /// IANA zone name; null means the tenant's zone.
    #[serde(default)]
    #[schema(schema_with = schema::time_zone_nullable)]
    timezone: Option<String>,
    /// Default `new`.
    #[serde(default)]
    #[schema(schema_with = schema::lead_status)]
    status: Option<LeadStatus>,
    #[serde(default)]
    score: i64,
    #[serde(default)]
    score_band: Option<String>,
    #[serde(default)]
    segments: Vec<String>,
    #[serde(default)]
    #[schema(value_type = Object)]
    attributes: serde_json::Map<String, serde_json::Value>,
    #[serde(default)]
    owner_id: Option<Uuid>,
    #[serde(default)]
    do_not_contact: bool,
    #[serde(default)]
    unsubscribed: bool,
}

/// `PATCH /v1/leads/{id}`: only the fields given change; `null` clears a nullable one and is
/// refused for the others.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct PatchLead {
    #[serde(default, deserialize_with = "double_option")]
    #[schema(value_type = String, format = Email, required = false)]
    email: Option<Option<String>>,
    #[serde(default, deserialize_with = "double_option")]
    #[schema(value_type = Option<String>)]
    first_name: Option<Option<String>>,
    #[serde(default, deserialize_with = "double_option")]
    #[schema(value_type = Option<String>)]
    last_name: Option<Option<String>>,
    #[serde(default, deserialize_with = "double_option")]
    #[schema(value_type = Option<String>)]
    company: Option<Option<String>>,
    #[serde(default, deserialize_with = "double_option")]
    #[schema(schema_with = schema::time_zone_nullable)]
    timezone: Option<Option<String>>,
    #[serde(default, deserialize_with = "double_option")]
    #[schema(schema_with = schema::lead_status, required = false)]
    status: Option<Option<LeadStatus>>,
    #[serde(default, deserialize_with = "double_option")]
    #[schema(value_type = i64, required = false)]
    score: Option<Option<i64>>,
    #[serde(default, deserialize_with = "double_option")]
    #[schema(value_type = Option<String>)]
    score_band: Option<Option<String>>,
    #[serde(default, deserialize_with = "double_option")]
    #[schema(value_type = Vec<String>, required = false)]
    segments: Option<Option<Vec<String>>>,
    #[serde(default, deserialize_with = "double_option")]
    #[schema(value_type = Object, required = false)]
    attributes: Option<Option<serde_json::Map<String, serde_json::Value>>>,
    #[serde(default, deserialize_with = "double_option")]
    #[schema(value_type = Option<Uuid>)]
    owner_id: Option<Option<Uuid>>,
    #[serde(default, deserialize_with = "double_option")]
    #[schema(value_type = bool, required = false)]
    do_not_contact: Option<Option<bool>>,
    #[serde(default, deserialize_with = "double_option")]
    #[schema(value_type = bool, required = false)]
    unsubscribed: Option<Option<bool>>,
}

/// A field that may be left out but not set to null.
fn not_null<T>(value: Option<Option<T>>, path: &str, errors: &mut Vec<FieldError>) -> Option<T> {
    match value {
        Some(None) => {
            errors.push(FieldError::new(
                path,
                "cannot be null; leave it out to keep the current value",
            ));
            None
        }
        Some(Some(v)) => Some(v),
        None => None,
    }
}

fn email(raw: &str, errors: &mut Vec<FieldError>) -> Option<EmailAddress> {
    EmailAddress::parse(raw)
        .map_err(|e| errors.push(FieldError::new("email", e.0)))
        .ok()
}

fn timezone(raw: Option<String>, errors: &mut Vec<FieldError>) -> Option<TimeZoneName> {
    raw.and_then(|tz| {
        TimeZoneName::parse(&tz)
            .map_err(|e| errors.push(FieldError::new("timezone", e.0)))
            .ok()
    })
}

impl CreateLead {
    fn into_input(self) -> ApiResult<LeadInput> {
        let mut errors = Vec::new();
        let email = email(&self.email, &mut errors);
        let tz = timezone(self.timezone, &mut errors);
        match email {
            Some(email) if errors.is_empty() => Ok(LeadInput {
                id: self.id,
                email,
                first_name: self.first_name,
                last_name: self.last_name,
                company: self.company,
                timezone: tz,
                status: self.status.unwrap_or(LeadStatus::New),
                score: self.score,
                score_band: self.score_band,
                segments: self.segments,
                attributes: self.attributes,
                owner_id: self.owner_id,
                do_not_contact: self.do_not_contact,
                unsubscribed: self.unsubscribed,
            }),
            _ => Err(ApiError::Invalid(errors)),
        }
    }
}

impl PatchLead {
    fn into_patch(self) -> ApiResult<LeadPatch> {
        let mut errors = Vec::new();
        let email =
            not_null(self.email, "email", &mut errors).and_then(|raw| email(&raw, &mut errors));
        let tz = match self.timezone {
            Some(Some(raw)) => Some(timezone(Some(raw), &mut errors)),
            Some(None) => Some(None),
            None => None,
        };
        let patch = LeadPatch {
            email,
            first_name: self.first_name,
            last_name: self.last_name,
            company: self.company,
            timezone: tz,
            status: not_null(self.status, "status", &mut errors),
            score: not_null(self.score, "score", &mut errors),
            score_band: self.score_band,
            segments: not_null(self.segments, "segments", &mut errors),
            attributes: not_null(self.attributes, "attributes", &mut errors),
            owner_id: self.owner_id,
            do_not_contact: not_null(self.do_not_contact, "do_not_contact", &mut errors),
            unsubscribed: not_null(self.unsubscribed, "unsubscribed", &mut errors),
        };
        if errors.is_empty() {
            Ok(patch)
        } else {
            Err(ApiError::Invalid(errors))
        }
    }
}

/// The kinds of lead event (SPEC section 5, `POST /v1/leads/{id}/events`).
#[derive(Deserialize, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
enum EventType {
    Reply,
    Converted,
    Disqualified,
    Unsubscribed,
    Bounced,
    EmailOpened,
    EmailClicked,
    OutboundMessage,
}

#[derive(Deserialize, ToSchema, Clone, Copy)]
#[serde(rename_all = "snake_case")]
enum BounceKind {
    Hard,
    Soft,
}

/// An event as sent: one flat object, read first so that each problem keeps its path, then
/// checked into an [`Event`].
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct EventFields {
    #[serde(rename = "type")]
    event_type: EventType,
    at: Option<Timestamp>,
    sentiment: Option<Sentiment>,
    until: Option<Timestamp>,
    kind: Option<BounceKind>,
    subject: Option<String>,
}

/// `POST /v1/leads/{id}/events`: one shape per `type`. Every event may say when it happened
/// (`at`, default now, never in the future).
#[derive(Deserialize, ToSchema)]
#[serde(tag = "type", rename_all = "snake_case")]
#[schema(as = LeadEvent)]
enum Event {
    /// A reply as the CRM classified it; `until` (only with `out_of_office`) defers the next
    /// step to the lead's return.
    Reply {
        #[schema(value_type = Option<String>, format = DateTime)]
        at: Option<Timestamp>,
        #[schema(schema_with = schema::sentiment)]
        sentiment: Sentiment,
        #[schema(value_type = Option<String>, format = DateTime)]
        until: Option<Timestamp>,
    },
    Converted {
        #[schema(value_type = Option<String>, format = DateTime)]
        at: Option<Timestamp>,
    },
    Disqualified {
        #[schema(value_type = Option<String>, format = DateTime)]
        at: Option<Timestamp>,
    },
    Unsubscribed {
        #[schema(value_type = Option<String>, format = DateTime)]
        at: Option<Timestamp>,
    },
    /// A hard bounce stops all email to the lead and exits it.
    Bounced {
        #[schema(value_type = Option<String>, format = DateTime)]
        at: Option<Timestamp>,
        kind: BounceKind,
    },
    EmailOpened {
        #[schema(value_type = Option<String>, format = DateTime)]
        at: Option<Timestamp>,
    },
    EmailClicked {
        #[schema(value_type = Option<String>, format = DateTime)]
        at: Option<Timestamp>,
    },
    /// A message sent outside Nurture; it counts toward the frequency cap.
    OutboundMessage {
        #[schema(value_type = Option<String>, format = DateTime)]
        at: Option<Timestamp>,
        subject: Option<String>,
    },
}

impl Event {
    fn from_json(value: serde_json::Value) -> ApiResult<Event> {
        use EventType::*;
        let f: EventFields = from_json(value, "")?;
        let mut errors = Vec::new();
        let t = f.event_type;
        let mut only_for = |given: bool, field: &str, allowed: bool, which: &str| {
            if given && !allowed {
                errors.push(FieldError::new(
                    field,
                    format!("only a {which} event takes {field}"),
                ));
            }
        };
        only_for(f.sentiment.is_some(), "sentiment", t == Reply, "reply");
        only_for(
            f.until.is_some(),
            "until",
            t == Reply && f.sentiment == Some(Sentiment::OutOfOffice),
            "reply with sentiment out_of_office",
        );
        only_for(f.kind.is_some(), "kind", t == Bounced, "bounced");
        only_for(
            f.subject.is_some(),
            "subject",
            t == OutboundMessage,
            "outbound_message",
        );
        let at = f.at;
        let event = match t {
            Reply => match f.sentiment {
                Some(sentiment) => Some(Event::Reply {
                    at,
                    sentiment,
                    until: f.until,
                }),
                None => {
                    errors.push(FieldError::new(
                        "sentiment",
                        "a reply needs a sentiment: positive, neutral, negative or out_of_office",
                    ));
                    None
                }
            },
            Converted => Some(Event::Converted { at }),
            Disqualified => Some(Event::Disqualified { at }),
            Unsubscribed => Some(Event::Unsubscribed { at }),
            Bounced => match f.kind {
                Some(kind) => Some(Event::Bounced { at, kind }),
                None => {
                    errors.push(FieldError::new(
                        "kind",
                        "a bounce needs a kind: hard or soft",
                    ));
                    None
                }
            },
            EmailOpened => Some(Event::EmailOpened { at }),
            EmailClicked => Some(Event::EmailClicked { at }),
            OutboundMessage => Some(Event::OutboundMessage {
                at,
                subject: f.subject,
            }),
        };
        match event {
            Some(event) if errors.is_empty() => Ok(event),
            _ => Err(ApiError::Invalid(errors)),
        }
    }

    /// The engine's event and when it happened.
    fn into_core(self) -> (LeadEvent, Option<Timestamp>) {
        match self {
            Event::Reply {
                at,
                sentiment,
                until,
            } => (LeadEvent::Reply { sentiment, until }, at),
            Event::Converted { at } => (LeadEvent::Converted, at),
            Event::Disqualified { at } => (LeadEvent::Disqualified, at),
            Event::Unsubscribed { at } => (LeadEvent::Unsubscribed, at),
            Event::Bounced { at, kind } => (
                LeadEvent::Bounced {
                    hard: matches!(kind, BounceKind::Hard),
                },
                at,
            ),
            Event::EmailOpened { at } => (LeadEvent::EmailOpened, at),
            Event::EmailClicked { at } => (LeadEvent::EmailClicked, at),
            Event::OutboundMessage { at, subject } => (LeadEvent::OutboundMessage { subject }, at),
        }
    }
}

/// Creates a lead (201), or updates the lead with the given `id` (200); either may enroll it.
#[utoipa::path(post, path = "/v1/leads", tag = "leads",
    request_body = CreateLead,
    responses(
        (status = 201, description = "Created", body = LeadWriteView),
        (status = 200, description = "Updated (an upsert by `id`)", body = LeadWriteView),
    ))]
async fn create_lead(
    State(state): State<AppState>,
    Tenant(p): Tenant,
    ApiJson(body): ApiJson<CreateLead>,
) -> ApiResult<(StatusCode, Json<LeadWriteView>)> {
    let write = state.engine.upsert_lead(p, body.into_input()?).await?;
    let status = if write.created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(write.into())))
}

/// One lead.
#[utoipa::path(get, path = "/v1/leads/{id}", tag = "leads",
    params(("id" = Uuid, Path, description = "The lead's id")),
    responses((status = 200, description = "The lead", body = LeadView)))]
async fn get_lead(
    State(state): State<AppState>,
    Tenant(p): Tenant,
    IdPath(id): IdPath,
) -> ApiResult<Json<LeadView>> {
    Ok(Json(state.engine.get_lead(p, id).await?.into()))
}

/// Changes some fields. A status, do-not-contact or opt-out change takes effect at once: it
/// ends the lead's enrollment in the same request.
#[utoipa::path(patch, path = "/v1/leads/{id}", tag = "leads",
    params(("id" = Uuid, Path, description = "The lead's id")),
    request_body = PatchLead,
    responses((status = 200, description = "Updated", body = LeadWriteView)))]
async fn patch_lead(
    State(state): State<AppState>,
    Tenant(p): Tenant,
    IdPath(id): IdPath,
    ApiJson(body): ApiJson<PatchLead>,
) -> ApiResult<Json<LeadWriteView>> {
    Ok(Json(
        state
            .engine
            .patch_lead(p, id, body.into_patch()?)
            .await?
            .into(),
    ))
}

/// Records an event about the lead. Conversion, disqualification, unsubscribe, a hard bounce
/// and a positive reply end its enrollment at once (SPEC section 4).
#[utoipa::path(post, path = "/v1/leads/{id}/events", tag = "leads",
    params(("id" = Uuid, Path, description = "The lead's id")),
    request_body = Event,
    responses((status = 200, description = "Recorded; the lead as it is now and any enrollment the event ended",
        body = LeadWriteView)))]
async fn lead_event(
    State(state): State<AppState>,
    Tenant(p): Tenant,
    IdPath(id): IdPath,
    JsonValue(body): JsonValue,
) -> ApiResult<Json<LeadWriteView>> {
    let (event, at) = Event::from_json(body)?.into_core();
    Ok(Json(
        state.engine.lead_event(p, id, event, at).await?.into(),
    ))
}
