//! The domain: the seed's three tables, the rest of SPEC section 2, and the newtypes that parse
//! raw input once. Nothing here knows about SQL, HTTP or JSON wire formats beyond serde derives
//! for the few values that are stored as JSON (settings, rules, details).

use std::fmt;
use std::str::FromStr;

use jiff::Timestamp;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::rules::{Condition, EntryRules, ExitRules};

pub type TenantId = Uuid;
pub type UserId = Uuid;
pub type LeadId = Uuid;
pub type SequenceId = Uuid;
pub type EnrollmentId = Uuid;
pub type ApprovalId = Uuid;
pub type TaskId = Uuid;
pub type MessageId = Uuid;
pub type ActivityId = Uuid;

/// Ids are UUID v7: time-ordered, so primary-key indexes stay append-mostly and cursors sort by
/// creation.
pub fn new_id() -> Uuid {
    Uuid::now_v7()
}

/// A value that could not be parsed, with the reason in words.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ParseError(pub String);

/// Declares a closed enum stored and sent as snake_case text, with `as_str` and `FromStr`
/// (whose error lists the allowed values).
macro_rules! text_enum {
    ($(#[$meta:meta])* $name:ident { $($variant:ident = $text:literal),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(rename_all = "snake_case")]
        pub enum $name { $($variant),+ }

        impl $name {
            pub const ALL: &'static [$name] = &[$($name::$variant),+];
            pub fn as_str(self) -> &'static str {
                match self { $($name::$variant => $text),+ }
            }
        }

        impl FromStr for $name {
            type Err = ParseError;
            fn from_str(s: &str) -> Result<Self, ParseError> {
                match s {
                    $($text => Ok($name::$variant),)+
                    other => Err(ParseError(format!(
                        "unknown value {other:?}; expected one of: {}",
                        [$($text),+].join(", ")
                    ))),
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}
pub(crate) use text_enum;

text_enum!(
    /// A lead's place in the funnel (SPEC section 2).
    LeadStatus { New = "new", Contacted = "contacted", Qualified = "qualified", Converted = "converted", Disqualified = "disqualified" }
);
text_enum!(
    /// Seed: `lead_nurture_sequences.status`.
    SequenceStatus { Draft = "draft", Active = "active", Paused = "paused", Archived = "archived" }
);
text_enum!(
    /// Seed: `lead_nurture_sequence_steps.channel`, plus `wait` (SPEC section 2).
    Channel { Email = "email", Task = "task", CallReminder = "call_reminder", Wait = "wait" }
);
text_enum!(
    /// Seed: `lead_nurture_enrollments.status`.
    EnrollmentStatus { Active = "active", Paused = "paused", Completed = "completed", Exited = "exited" }
);
text_enum!(
    EnrollmentSource { Manual = "manual", Auto = "auto" }
);
text_enum!(
    PauseReason { AwaitingApproval = "awaiting_approval", AwaitingTask = "awaiting_task", Manual = "manual" }
);
text_enum!(
    /// `cancelled` is ours: an approval whose enrollment ended before anyone decided.
    ApprovalStatus { Pending = "pending", Approved = "approved", Rejected = "rejected", Cancelled = "cancelled" }
);
text_enum!(
    ApprovalAuthor { Template = "template", Agent = "agent" }
);
text_enum!(
    /// `cancelled` is ours: a task whose enrollment ended before it was done.
    TaskStatus { Open = "open", Done = "done", Cancelled = "cancelled" }
);
text_enum!(
    MessageStatus { Queued = "queued", Sending = "sending", Sent = "sent", Failed = "failed", Unknown = "unknown" }
);
text_enum!(
    /// Reply sentiment as the CRM classifies it. `out_of_office` is never counted as a reply.
    Sentiment { Positive = "positive", Neutral = "neutral", Negative = "negative", OutOfOffice = "out_of_office" }
);
text_enum!(
    UserRole { Admin = "admin", Editor = "editor", Approver = "approver", Viewer = "viewer" }
);
text_enum!(
    /// The activity log's types: the seed's six, and the ones traceability needs besides.
    ActivityType {
        NurtureEnrolled = "nurture_enrolled",
        NurtureStepScheduled = "nurture_step_scheduled",
        NurtureStepExecuted = "nurture_step_executed",
        NurtureStepSkipped = "nurture_step_skipped",
        NurturePaused = "nurture_paused",
        NurtureResumed = "nurture_resumed",
        NurtureExited = "nurture_exited",
        NurtureCompleted = "nurture_completed",
        ApprovalRequested = "approval_requested",
        ApprovalDecided = "approval_decided",
        TaskCreated = "task_created",
        TaskCompleted = "task_completed",
        LeadEvent = "lead_event",
    }
);

/// Why an enrollment ended early (SPEC section 5, `exit_reason` values). A reason typed by a
/// person (`POST /v1/enrollments/{id}/exit`) is kept as given, so the stored column is text.
pub mod exit_reason {
    pub const CONVERTED: &str = "converted";
    pub const DISQUALIFIED: &str = "disqualified";
    pub const UNSUBSCRIBED: &str = "unsubscribed";
    pub const DO_NOT_CONTACT: &str = "do_not_contact";
    pub const BOUNCED: &str = "bounced";
    pub const POSITIVE_REPLY: &str = "positive_reply";
    pub const REPLIED: &str = "replied";
    pub const INACTIVE: &str = "inactive";
    pub const EXIT_RULE: &str = "exit_rule";
    pub const SEQUENCE_ARCHIVED: &str = "sequence_archived";
    pub const APPROVAL_REJECTED: &str = "approval_rejected";
    pub const MANUAL: &str = "manual";
}

/// An email address, checked for the shape `local@domain.tld` and stored trimmed and with a
/// lower-cased domain. Deliverability is the transport's business.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct EmailAddress(String);

impl EmailAddress {
    pub fn parse(raw: &str) -> Result<Self, ParseError> {
        let s = raw.trim();
        let err = |why: &str| ParseError(format!("{raw:?} is not an email address: {why}"));
        if s.len() > 254 {
            return Err(err("longer than 254 characters"));
        }
        let (local, domain) = s.rsplit_once('@').ok_or_else(|| err("no '@'"))?;
        if local.is_empty() || local.len() > 64 {
            return Err(err("the part before '@' must have 1 to 64 characters"));
        }
        if s.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(err("contains whitespace"));
        }
        let labels: Vec<&str> = domain.split('.').collect();
        if labels.len() < 2
            || labels.iter().any(|l| {
                l.is_empty()
                    || l.starts_with('-')
                    || l.ends_with('-')
                    || !l.chars().all(|c| c.is_alphanumeric() || c == '-')
            })
        {
            return Err(err("the domain must look like example.com"));
        }
        Ok(EmailAddress(format!("{local}@{}", domain.to_lowercase())))
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for EmailAddress {
    type Error = ParseError;
    fn try_from(s: String) -> Result<Self, ParseError> {
        EmailAddress::parse(&s)
    }
}
impl From<EmailAddress> for String {
    fn from(e: EmailAddress) -> String {
        e.0
    }
}
impl fmt::Display for EmailAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// An IANA time zone name that jiff's bundled database knows (`Europe/Paris`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct TimeZoneName(String);

impl TimeZoneName {
    pub fn parse(raw: &str) -> Result<Self, ParseError> {
        jiff::tz::TimeZone::get(raw)
            .map(|_| TimeZoneName(raw.to_string()))
            .map_err(|_| ParseError(format!("{raw:?} is not an IANA time zone name")))
    }
    pub fn utc() -> Self {
        TimeZoneName("UTC".into())
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
    /// The zone itself. The name was checked on parse, so this only fails if the bundled
    /// database changed under a stored value; UTC is the safe fallback.
    pub fn zone(&self) -> jiff::tz::TimeZone {
        jiff::tz::TimeZone::get(&self.0).unwrap_or(jiff::tz::TimeZone::UTC)
    }
}
impl TryFrom<String> for TimeZoneName {
    type Error = ParseError;
    fn try_from(s: String) -> Result<Self, ParseError> {
        TimeZoneName::parse(&s)
    }
}
impl From<TimeZoneName> for String {
    fn from(t: TimeZoneName) -> String {
        t.0
    }
}

/// A step's place in its sequence: 1..N.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "i64", into = "i64")]
pub struct StepOrder(u16);

impl StepOrder {
    pub const FIRST: StepOrder = StepOrder(1);
    pub fn parse(n: i64) -> Result<Self, ParseError> {
        if (1..=1000).contains(&n) {
            Ok(StepOrder(n as u16))
        } else {
            Err(ParseError(format!(
                "step_order must be between 1 and 1000, got {n}"
            )))
        }
    }
    pub fn get(self) -> i64 {
        self.0 as i64
    }
    pub fn next(self) -> StepOrder {
        StepOrder(self.0.saturating_add(1))
    }
}
impl TryFrom<i64> for StepOrder {
    type Error = ParseError;
    fn try_from(n: i64) -> Result<Self, ParseError> {
        StepOrder::parse(n)
    }
}
impl From<StepOrder> for i64 {
    fn from(s: StepOrder) -> i64 {
        s.get()
    }
}

/// Hours to wait after the previous step (seed: `delay_hours`). At most a year: a longer delay
/// is a typo, and the sequence span limit would refuse it anyway.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "i64", into = "i64")]
pub struct DelayHours(u32);

impl DelayHours {
    pub const MAX: i64 = 24 * 366;
    pub fn parse(n: i64) -> Result<Self, ParseError> {
        if (0..=Self::MAX).contains(&n) {
            Ok(DelayHours(n as u32))
        } else {
            Err(ParseError(format!(
                "delay_hours must be between 0 and {}, got {n}",
                Self::MAX
            )))
        }
    }
    pub fn get(self) -> i64 {
        self.0 as i64
    }
    pub fn span(self) -> jiff::SignedDuration {
        jiff::SignedDuration::from_hours(self.0 as i64)
    }
}
impl TryFrom<i64> for DelayHours {
    type Error = ParseError;
    fn try_from(n: i64) -> Result<Self, ParseError> {
        DelayHours::parse(n)
    }
}
impl From<DelayHours> for i64 {
    fn from(d: DelayHours) -> i64 {
        d.get()
    }
}

/// A template id chosen by the tenant: 1..255 characters, letters, digits, `-`, `_`, `.`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct TemplateId(String);

impl TemplateId {
    pub fn parse(raw: &str) -> Result<Self, ParseError> {
        if raw.is_empty() || raw.len() > 255 {
            return Err(ParseError("a template id has 1 to 255 characters".into()));
        }
        if !raw
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        {
            return Err(ParseError(format!(
                "{raw:?}: a template id may hold only letters, digits, '-', '_' and '.'"
            )));
        }
        Ok(TemplateId(raw.to_string()))
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}
impl TryFrom<String> for TemplateId {
    type Error = ParseError;
    fn try_from(s: String) -> Result<Self, ParseError> {
        TemplateId::parse(&s)
    }
}
impl From<TemplateId> for String {
    fn from(t: TemplateId) -> String {
        t.0
    }
}
impl fmt::Display for TemplateId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Tenant {
    pub id: TenantId,
    pub name: String,
    pub settings: crate::settings::TenantSettings,
    pub created_at: Timestamp,
}

#[derive(Debug, Clone, PartialEq)]
pub struct User {
    pub id: UserId,
    pub tenant_id: TenantId,
    pub email: String,
    pub role: UserRole,
    pub password_hash: Option<String>,
    pub created_at: Timestamp,
}

/// An API key as stored: the lookup prefix and an HMAC of the secret, never the secret.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiKeyRecord {
    pub id: Uuid,
    pub tenant_id: TenantId,
    /// The user the key acts as (the tenant's service user), so `created_by` always names one.
    pub user_id: UserId,
    pub prefix: String,
    pub hash: Vec<u8>,
    pub created_at: Timestamp,
}

/// A lead as the CRM mirrors it, plus the engine's own bookkeeping of replies, engagement and
/// outbound contact.
#[derive(Debug, Clone, PartialEq)]
pub struct Lead {
    pub id: LeadId,
    pub tenant_id: TenantId,
    pub email: EmailAddress,
    pub first_name: Option<String>,
    pub last_name: Option<String>,
    pub company: Option<String>,
    pub timezone: Option<TimeZoneName>,
    pub status: LeadStatus,
    pub score: i64,
    pub score_band: Option<String>,
    pub segments: Vec<String>,
    pub attributes: serde_json::Map<String, serde_json::Value>,
    pub owner_id: Option<UserId>,
    pub do_not_contact: bool,
    pub unsubscribed: bool,
    /// A hard bounce was reported for this address: no more email, and it exits its sequence.
    pub bounced: bool,
    /// Last reply that counts as a reply (never an out-of-office).
    pub last_reply_at: Option<Timestamp>,
    pub last_reply_sentiment: Option<Sentiment>,
    /// Last reply, open or click: what `exit_rules.inactivity_days` measures from.
    pub last_engaged_at: Option<Timestamp>,
    pub last_outbound_at: Option<Timestamp>,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
}

impl Lead {
    /// A lead of which nothing is known but its address: status `new`, score 0, no band,
    /// segments or attributes, no owner, contact allowed, no history; a fresh v7 id. Callers set
    /// the rest with struct update syntax.
    pub fn new(tenant_id: TenantId, email: EmailAddress, now: Timestamp) -> Lead {
        Lead {
            id: new_id(),
            tenant_id,
            email,
            first_name: None,
            last_name: None,
            company: None,
            timezone: None,
            status: LeadStatus::New,
            score: 0,
            score_band: None,
            segments: Vec::new(),
            attributes: serde_json::Map::new(),
            owner_id: None,
            do_not_contact: false,
            unsubscribed: false,
            bounced: false,
            last_reply_at: None,
            last_reply_sentiment: None,
            last_engaged_at: None,
            last_outbound_at: None,
            created_at: now,
            updated_at: now,
        }
    }

    /// The safety flags that forbid any contact, whatever the sequence says.
    pub fn contact_forbidden(&self) -> Option<&'static str> {
        if self.do_not_contact {
            Some(exit_reason::DO_NOT_CONTACT)
        } else if self.unsubscribed {
            Some(exit_reason::UNSUBSCRIBED)
        } else {
            None
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Template {
    pub tenant_id: TenantId,
    pub id: TemplateId,
    pub name: String,
    pub subject: String,
    pub body: String,
    pub html_body: Option<String>,
    pub pre_approved: bool,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Step {
    pub step_order: StepOrder,
    pub channel: Channel,
    pub delay_hours: DelayHours,
    pub template_id: Option<TemplateId>,
    pub requires_human_approval: bool,
    pub conditions: Option<Condition>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Sequence {
    pub id: SequenceId,
    pub tenant_id: TenantId,
    pub name: String,
    pub status: SequenceStatus,
    pub priority: i32,
    /// `None`: manual enrollment only.
    pub entry_rules: Option<EntryRules>,
    pub exit_rules: ExitRules,
    pub created_by: UserId,
    pub version: i64,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
    /// Ordered by `step_order`, 1..N without gaps.
    pub steps: Vec<Step>,
}

impl Sequence {
    pub fn step(&self, order: StepOrder) -> Option<&Step> {
        self.steps.get(order.get() as usize - 1)
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Enrollment {
    pub id: EnrollmentId,
    pub tenant_id: TenantId,
    pub lead_id: LeadId,
    pub sequence_id: SequenceId,
    /// The step that runs next.
    pub current_step_order: StepOrder,
    pub status: EnrollmentStatus,
    pub source: EnrollmentSource,
    pub enrolled_on: Timestamp,
    /// When the scheduler picks it up; `None` unless active.
    pub next_step_on: Option<Timestamp>,
    pub paused_reason: Option<PauseReason>,
    pub exit_reason: Option<String>,
    /// An approved message waiting for the cap or window: sent as approved when the step runs.
    pub approved_approval_id: Option<ApprovalId>,
    pub ended_at: Option<Timestamp>,
    pub updated_at: Timestamp,
    /// Bumped by every write: an outcome is written only if the row is still as it was read.
    pub version: i64,
}

impl Enrollment {
    pub fn is_live(&self) -> bool {
        matches!(
            self.status,
            EnrollmentStatus::Active | EnrollmentStatus::Paused
        )
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Approval {
    pub id: ApprovalId,
    pub tenant_id: TenantId,
    pub enrollment_id: EnrollmentId,
    pub lead_id: LeadId,
    pub sequence_id: SequenceId,
    pub step_order: StepOrder,
    pub template_id: Option<TemplateId>,
    pub subject: String,
    pub body: String,
    pub html_body: Option<String>,
    pub author: ApprovalAuthor,
    pub status: ApprovalStatus,
    pub decided_by: Option<UserId>,
    pub decided_at: Option<Timestamp>,
    pub decision_reason: Option<String>,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Task {
    pub id: TaskId,
    pub tenant_id: TenantId,
    pub enrollment_id: EnrollmentId,
    pub lead_id: LeadId,
    pub sequence_id: SequenceId,
    pub step_order: StepOrder,
    pub channel: Channel,
    pub assignee_id: Option<UserId>,
    pub title: String,
    pub status: TaskStatus,
    pub due_at: Timestamp,
    pub completed_at: Option<Timestamp>,
    pub created_at: Timestamp,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Message {
    pub id: MessageId,
    pub tenant_id: TenantId,
    /// `None` for an `outbound_message` event: sent elsewhere, recorded for the cap.
    pub enrollment_id: Option<EnrollmentId>,
    pub lead_id: LeadId,
    pub sequence_id: Option<SequenceId>,
    pub step_order: Option<StepOrder>,
    pub to: String,
    pub subject: String,
    pub body: String,
    pub html_body: Option<String>,
    pub headers: serde_json::Map<String, serde_json::Value>,
    pub status: MessageStatus,
    pub attempts: i32,
    /// Stable per (enrollment, step): the transport's dedup key and the Message-ID's local part.
    pub idempotency_key: String,
    pub created_at: Timestamp,
    pub sent_at: Option<Timestamp>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Activity {
    pub id: ActivityId,
    pub tenant_id: TenantId,
    pub activity_type: ActivityType,
    pub lead_id: LeadId,
    pub enrollment_id: Option<EnrollmentId>,
    pub sequence_id: Option<SequenceId>,
    pub step_order: Option<StepOrder>,
    pub at: Timestamp,
    pub details: serde_json::Value,
}
