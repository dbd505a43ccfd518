//! The product's commands, one transaction each: leads and their events, templates, sequences
//! and their lifecycle, enrollments by hand, approvals (HITL), tasks, and the reads.

use jiff::Timestamp;
use serde_json::json;

use super::steps::{
    self, advance, exit, log, mandatory_exit, pause, resume_and_advance, save, send, send_time,
};
use super::{Engine, Principal};
use crate::domain::*;
use crate::error::{Error, FieldError, Result};
use crate::render::{Rendered, check_template};
use crate::rules::{EntryRules, ExitRules};
use crate::settings::TenantSettings;
use crate::store::*;

/// A lead as the CRM sends it (create, or upsert when `id` is given).
#[derive(Debug, Clone)]
pub struct LeadInput {
    pub id: Option<LeadId>,
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
}

/// A partial update: `None` leaves a field alone; `Some(None)` clears a nullable one.
#[derive(Debug, Clone, Default)]
pub struct LeadPatch {
    pub email: Option<EmailAddress>,
    pub first_name: Option<Option<String>>,
    pub last_name: Option<Option<String>>,
    pub company: Option<Option<String>>,
    pub timezone: Option<Option<TimeZoneName>>,
    pub status: Option<LeadStatus>,
    pub score: Option<i64>,
    pub score_band: Option<Option<String>>,
    pub segments: Option<Vec<String>>,
    pub attributes: Option<serde_json::Map<String, serde_json::Value>>,
    pub owner_id: Option<Option<UserId>>,
    pub do_not_contact: Option<bool>,
    pub unsubscribed: Option<bool>,
}

impl LeadPatch {
    fn apply_to(self, lead: &mut Lead) {
        macro_rules! set {
            ($($f:ident),*) => { $( if let Some(v) = self.$f { lead.$f = v; } )* };
        }
        set!(
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
            unsubscribed
        );
    }
}

/// A lead after a write, and the enrollments the write started or ended.
#[derive(Debug, Clone)]
pub struct LeadWrite {
    pub lead: Lead,
    pub created: bool,
    pub enrollments: Vec<Enrollment>,
}

/// `POST /v1/leads/{id}/events` (SPEC section 5).
#[derive(Debug, Clone, PartialEq)]
pub enum LeadEvent {
    /// `until` only matters for an out-of-office reply: the next step waits for it.
    Reply {
        sentiment: Sentiment,
        until: Option<Timestamp>,
    },
    Converted,
    Disqualified,
    Unsubscribed,
    Bounced {
        hard: bool,
    },
    EmailOpened,
    EmailClicked,
    /// A message sent outside Nurture: it counts toward the frequency cap.
    OutboundMessage {
        subject: Option<String>,
    },
}

impl LeadEvent {
    pub fn type_name(&self) -> &'static str {
        match self {
            LeadEvent::Reply { .. } => "reply",
            LeadEvent::Converted => "converted",
            LeadEvent::Disqualified => "disqualified",
            LeadEvent::Unsubscribed => "unsubscribed",
            LeadEvent::Bounced { .. } => "bounced",
            LeadEvent::EmailOpened => "email_opened",
            LeadEvent::EmailClicked => "email_clicked",
            LeadEvent::OutboundMessage { .. } => "outbound_message",
        }
    }
}

#[derive(Debug, Clone)]
pub struct TemplateInput {
    pub id: TemplateId,
    pub name: String,
    pub subject: String,
    pub body: String,
    pub html_body: Option<String>,
    pub pre_approved: bool,
}

#[derive(Debug, Clone)]
pub struct SequenceInput {
    pub name: String,
    pub priority: i32,
    pub entry_rules: Option<EntryRules>,
    pub exit_rules: ExitRules,
    pub steps: Vec<Step>,
}

#[derive(Debug, Clone, Default)]
pub struct SequencePatch {
    pub name: Option<String>,
    pub priority: Option<i32>,
    pub entry_rules: Option<Option<EntryRules>>,
    pub exit_rules: Option<ExitRules>,
    pub steps: Option<Vec<Step>>,
}

/// A reviewer's (or an agent's) changes to an approval's content.
#[derive(Debug, Clone, Default)]
pub struct ApprovalEdit {
    pub subject: Option<String>,
    pub body: Option<String>,
    pub html_body: Option<Option<String>>,
}

/// Checks steps that need no database: orders 1..N without gaps, templates where a channel
/// needs one. Errors name `steps[i].field`.
pub fn validate_steps(steps: &[Step]) -> Vec<FieldError> {
    let mut errors = Vec::new();
    for (i, s) in steps.iter().enumerate() {
        let expected = i as i64 + 1;
        if s.step_order.get() != expected {
            errors.push(FieldError::new(
                format!("steps[{i}].step_order"),
                format!(
                    "step orders run 1..N without gaps in array order: expected {expected}, got {}",
                    s.step_order.get()
                ),
            ));
        }
        match s.channel {
            Channel::Email if s.template_id.is_none() => errors.push(FieldError::new(
                format!("steps[{i}].template_id"),
                "an email step needs a template_id",
            )),
            Channel::Wait if s.template_id.is_some() => errors.push(FieldError::new(
                format!("steps[{i}].template_id"),
                "a wait step sends nothing and takes no template",
            )),
            _ => {}
        }
        if s.requires_human_approval && s.channel != Channel::Email {
            errors.push(FieldError::new(
                format!("steps[{i}].requires_human_approval"),
                "only email steps send a message that can be reviewed",
            ));
        }
    }
    errors
}

fn validate_name(name: &str, errors: &mut Vec<FieldError>) {
    if name.trim().is_empty() || name.len() > 255 {
        errors.push(FieldError::new("name", "a name has 1 to 255 characters"));
    }
}

fn invalid_unless_empty(errors: Vec<FieldError>) -> Result<()> {
    if errors.is_empty() {
        Ok(())
    } else {
        Err(Error::Invalid(errors))
    }
}

impl Engine {
    // -- leads ------------------------------------------------------------------------------------

    /// Creates a lead, or updates it when `id` names an existing one; auto-enrolls it in the
    /// same transaction (SPEC section 4).
    pub async fn upsert_lead(&self, p: Principal, input: LeadInput) -> Result<LeadWrite> {
        let now = self.now();
        let mut tx = self.begin(Scope::Tenant(p.tenant_id)).await?;
        if let Some(id) = input.id
            && let Some(existing) = tx.get_lead(p.tenant_id, id).await?
        {
            let patch = LeadPatch {
                email: Some(input.email),
                first_name: Some(input.first_name),
                last_name: Some(input.last_name),
                company: Some(input.company),
                timezone: Some(input.timezone),
                status: Some(input.status),
                score: Some(input.score),
                score_band: Some(input.score_band),
                segments: Some(input.segments),
                attributes: Some(input.attributes),
                owner_id: Some(input.owner_id),
                do_not_contact: Some(input.do_not_contact),
                unsubscribed: Some(input.unsubscribed),
            };
            let out = self.change_lead(tx.as_mut(), existing, patch, now).await?;
            tx.commit().await?;
            self.wake_schedulers().await;
            return Ok(out);
        }
        let lead = Lead {
            id: input.id.unwrap_or_else(new_id),
            first_name: input.first_name,
            last_name: input.last_name,
            company: input.company,
            timezone: input.timezone,
            status: input.status,
            score: input.score,
            score_band: input.score_band,
            segments: input.segments,
            attributes: input.attributes,
            owner_id: input.owner_id,
            do_not_contact: input.do_not_contact,
            unsubscribed: input.unsubscribed,
            ..Lead::new(p.tenant_id, input.email, now)
        };
        tx.insert_lead(&lead).await?;
        let settings = self.settings(tx.as_mut(), p.tenant_id).await?;
        let mut fx = Effects::default();
        let enrolled = self
            .auto_enroll_lead(tx.as_mut(), &mut fx, &settings, &lead, now)
            .await?;
        tx.apply(&fx).await?;
        tx.commit().await?;
        self.wake_schedulers().await;
        Ok(LeadWrite {
            lead,
            created: true,
            enrollments: enrolled.into_iter().collect(),
        })
    }

    pub async fn patch_lead(
        &self,
        p: Principal,
        id: LeadId,
        patch: LeadPatch,
    ) -> Result<LeadWrite> {
        let now = self.now();
        let mut tx = self.begin(Scope::Tenant(p.tenant_id)).await?;
        let lead = tx
            .get_lead(p.tenant_id, id)
            .await?
            .ok_or(Error::NotFound("lead"))?;
        let out = self.change_lead(tx.as_mut(), lead, patch, now).await?;
        tx.commit().await?;
        self.wake_schedulers().await;
        Ok(out)
    }

    /// A change to a lead takes effect at once: a status, do-not-contact or opt-out change ends
    /// its live enrollment in the same transaction; otherwise the change may enroll it.
    async fn change_lead(
        &self,
        tx: &mut dyn Tx,
        mut lead: Lead,
        patch: LeadPatch,
        now: Timestamp,
    ) -> Result<LeadWrite> {
        patch.apply_to(&mut lead);
        lead.updated_at = now;
        tx.update_lead(&lead).await?;
        let mut fx = Effects::default();
        let mut touched = Vec::new();
        match self
            .exit_if(tx, &mut fx, &lead, mandatory_exit(&lead), now)
            .await?
        {
            Some(exited) => touched.push(exited),
            None => {
                let settings = self.settings(tx, lead.tenant_id).await?;
                touched.extend(
                    self.auto_enroll_lead(tx, &mut fx, &settings, &lead, now)
                        .await?,
                );
            }
        }
        tx.apply(&fx).await?;
        Ok(LeadWrite {
            lead,
            created: false,
            enrollments: touched,
        })
    }

    /// Ends the lead's live enrollment for `reason`, if it has one and there is a reason.
    async fn exit_if(
        &self,
        tx: &mut dyn Tx,
        fx: &mut Effects,
        lead: &Lead,
        reason: Option<&str>,
        now: Timestamp,
    ) -> Result<Option<Enrollment>> {
        let Some(reason) = reason else {
            return Ok(None);
        };
        let Some(live) = tx.live_enrollment(lead.tenant_id, lead.id).await? else {
            return Ok(None);
        };
        let (approvals, tasks) = tx.open_work(lead.tenant_id, live.id).await?;
        Ok(Some(exit(fx, live, reason, now, approvals, tasks)))
    }

    pub async fn get_lead(&self, p: Principal, id: LeadId) -> Result<Lead> {
        let mut tx = self.begin_read(p.tenant_id).await?;
        let lead = tx
            .get_lead(p.tenant_id, id)
            .await?
            .ok_or(Error::NotFound("lead"))?;
        tx.commit().await?;
        Ok(lead)
    }

    /// Records an event about a lead; exits it from its sequence at once where the event says so
    /// (SPEC section 4: "exits on conversion, disqualification, unsubscribe, do-not-contact and
    /// positive reply are immediate").
    pub async fn lead_event(
        &self,
        p: Principal,
        id: LeadId,
        event: LeadEvent,
        at: Option<Timestamp>,
    ) -> Result<LeadWrite> {
        let now = self.now();
        let at = at.map(crate::clock::truncate_to_micros).unwrap_or(now);
        if at > now {
            return Err(Error::invalid(
                "at",
                format!("an event cannot happen in the future (now is {now})"),
            ));
        }
        let mut tx = self.begin(Scope::Tenant(p.tenant_id)).await?;
        let mut lead = tx
            .get_lead(p.tenant_id, id)
            .await?
            .ok_or(Error::NotFound("lead"))?;
        let mut fx = Effects::default();
        let mut exit_reason: Option<&str> = None;
        let mut details = json!({ "event": event.type_name(), "at": at.to_string() });
        match &event {
            LeadEvent::Reply { sentiment, until } => {
                details["sentiment"] = json!(sentiment.as_str());
                if *sentiment == Sentiment::OutOfOffice {
                    // Never a reply; the next step waits for the lead to be back.
                    if let Some(until) = until {
                        details["until"] = json!(until.to_string());
                        if let Some(mut e) = tx.live_enrollment(p.tenant_id, id).await?
                            && e.status == EnrollmentStatus::Active
                            && e.next_step_on.is_some_and(|d| d < *until)
                        {
                            e.next_step_on = Some(*until);
                            log(
                                &mut fx,
                                &e,
                                ActivityType::NurtureStepScheduled,
                                Some(e.current_step_order),
                                now,
                                json!({ "reason": "out_of_office", "next_step_on": until.to_string() }),
                            );
                            save(&mut fx, e, now);
                        }
                    }
                } else {
                    lead.last_reply_at = Some(at);
                    lead.last_reply_sentiment = Some(*sentiment);
                    lead.last_engaged_at = Some(lead.last_engaged_at.map_or(at, |t| t.max(at)));
                    if let Some(live) = tx.live_enrollment(p.tenant_id, id).await? {
                        let sequence = tx
                            .get_sequence(p.tenant_id, live.sequence_id)
                            .await?
                            .ok_or(Error::NotFound("sequence"))?;
                        exit_reason = sequence.exit_rules.reply_exit(*sentiment);
                    }
                }
            }
            LeadEvent::Converted => lead.status = LeadStatus::Converted,
            LeadEvent::Disqualified => lead.status = LeadStatus::Disqualified,
            LeadEvent::Unsubscribed => lead.unsubscribed = true,
            LeadEvent::Bounced { hard } => {
                details["kind"] = json!(if *hard { "hard" } else { "soft" });
                if *hard {
                    lead.bounced = true;
                }
            }
            LeadEvent::EmailOpened | LeadEvent::EmailClicked => {
                lead.last_engaged_at = Some(lead.last_engaged_at.map_or(at, |t| t.max(at)));
            }
            LeadEvent::OutboundMessage { subject } => {
                lead.last_outbound_at = Some(lead.last_outbound_at.map_or(at, |t| t.max(at)));
                fx.messages.push(Message {
                    id: new_id(),
                    tenant_id: p.tenant_id,
                    enrollment_id: None,
                    lead_id: id,
                    sequence_id: None,
                    step_order: None,
                    to: lead.email.as_str().to_string(),
                    subject: subject.clone().unwrap_or_default(),
                    body: String::new(),
                    html_body: None,
                    headers: serde_json::Map::new(),
                    status: MessageStatus::Sent,
                    attempts: 0,
                    idempotency_key: format!("external-{}", new_id()),
                    created_at: at,
                    sent_at: Some(at),
                });
            }
        }
        let exit_reason = exit_reason.or_else(|| mandatory_exit(&lead));
        lead.updated_at = now;
        tx.update_lead(&lead).await?;
        fx.activities.push(Activity {
            id: new_id(),
            tenant_id: p.tenant_id,
            activity_type: ActivityType::LeadEvent,
            lead_id: id,
            enrollment_id: None,
            sequence_id: None,
            step_order: None,
            at: now,
            details,
        });
        let exited = self
            .exit_if(tx.as_mut(), &mut fx, &lead, exit_reason, now)
            .await?;
        tx.apply(&fx).await?;
        tx.commit().await?;
        self.wake_schedulers().await;
        Ok(LeadWrite {
            lead,
            created: false,
            enrollments: exited.into_iter().collect(),
        })
    }

    // -- templates --------------------------------------------------------------------------------

    /// Creates (`create_only`: a taken id is 409) or replaces a template.
    pub async fn put_template(
        &self,
        p: Principal,
        input: TemplateInput,
        create_only: bool,
    ) -> Result<(Template, bool)> {
        let mut errors = Vec::new();
        validate_name(&input.name, &mut errors);
        if input.subject.trim().is_empty() {
            errors.push(FieldError::new("subject", "a subject is required"));
        }
        if input.body.trim().is_empty() {
            errors.push(FieldError::new("body", "a body is required"));
        }
        errors.extend(check_template(
            &input.subject,
            &input.body,
            input.html_body.as_deref(),
        ));
        invalid_unless_empty(errors)?;
        let now = self.now();
        let mut tx = self.begin(Scope::Tenant(p.tenant_id)).await?;
        let existing = tx.get_template(p.tenant_id, &input.id).await?;
        if create_only && existing.is_some() {
            return Err(Error::Conflict {
                message: format!(
                    "a template with id {:?} exists; PUT /v1/templates/{} replaces it",
                    input.id.as_str(),
                    input.id
                ),
                conflicting: Some(json!({ "template_id": input.id.as_str() })),
            });
        }
        let template = Template {
            tenant_id: p.tenant_id,
            id: input.id,
            name: input.name,
            subject: input.subject,
            body: input.body,
            html_body: input.html_body,
            pre_approved: input.pre_approved,
            created_at: existing.as_ref().map_or(now, |t| t.created_at),
            updated_at: now,
        };
        tx.upsert_template(&template).await?;
        tx.commit().await?;
        Ok((template, existing.is_none()))
    }

    pub async fn get_template(&self, p: Principal, id: &TemplateId) -> Result<Template> {
        let mut tx = self.begin_read(p.tenant_id).await?;
        let t = tx
            .get_template(p.tenant_id, id)
            .await?
            .ok_or(Error::NotFound("template"))?;
        tx.commit().await?;
        Ok(t)
    }

    pub async fn list_templates(&self, p: Principal, page: &Page) -> Result<Listed<Template>> {
        let mut tx = self.begin_read(p.tenant_id).await?;
        let out = tx.list_templates(p.tenant_id, page).await?;
        tx.commit().await?;
        Ok(out)
    }

    // -- sequences ---------------------------------------------------------------------------------

    pub async fn create_sequence(&self, p: Principal, input: SequenceInput) -> Result<Sequence> {
        let mut errors = validate_steps(&input.steps);
        validate_name(&input.name, &mut errors);
        invalid_unless_empty(errors)?;
        let now = self.now();
        let sequence = Sequence {
            id: new_id(),
            tenant_id: p.tenant_id,
            name: input.name.trim().to_string(),
            status: SequenceStatus::Draft,
            priority: input.priority,
            entry_rules: input.entry_rules,
            exit_rules: input.exit_rules,
            created_by: p.user_id,
            version: 1,
            created_at: now,
            updated_at: now,
            steps: input.steps,
        };
        let mut tx = self.begin(Scope::Tenant(p.tenant_id)).await?;
        tx.insert_sequence(&sequence).await?;
        tx.commit().await?;
        Ok(sequence)
    }

    pub async fn get_sequence(&self, p: Principal, id: SequenceId) -> Result<Sequence> {
        let mut tx = self.begin_read(p.tenant_id).await?;
        let s = tx
            .get_sequence(p.tenant_id, id)
            .await?
            .ok_or(Error::NotFound("sequence"))?;
        tx.commit().await?;
        Ok(s)
    }

    pub async fn list_sequences(&self, p: Principal, page: &Page) -> Result<Listed<Sequence>> {
        let mut tx = self.begin_read(p.tenant_id).await?;
        let out = tx.list_sequences(p.tenant_id, page).await?;
        tx.commit().await?;
        Ok(out)
    }

    pub async fn sequence_stats(&self, p: Principal, id: SequenceId) -> Result<SequenceStats> {
        let mut tx = self.begin_read(p.tenant_id).await?;
        tx.get_sequence(p.tenant_id, id)
            .await?
            .ok_or(Error::NotFound("sequence"))?;
        let stats = tx.sequence_stats(p.tenant_id, id).await?;
        tx.commit().await?;
        Ok(stats)
    }

    /// Name, priority and rules may change in any state but archived; steps only in draft
    /// and paused (SPEC section 4, "Sequence lifecycle").
    pub async fn patch_sequence(
        &self,
        p: Principal,
        id: SequenceId,
        patch: SequencePatch,
    ) -> Result<Sequence> {
        let mut errors = Vec::new();
        if let Some(name) = &patch.name {
            validate_name(name, &mut errors);
        }
        if let Some(steps) = &patch.steps {
            errors.extend(validate_steps(steps));
        }
        invalid_unless_empty(errors)?;
        let now = self.now();
        let mut tx = self.begin(Scope::Tenant(p.tenant_id)).await?;
        let mut s = tx
            .get_sequence(p.tenant_id, id)
            .await?
            .ok_or(Error::NotFound("sequence"))?;
        if s.status == SequenceStatus::Archived {
            return Err(Error::conflict(format!(
                "sequence {id} is archived and can no longer change"
            )));
        }
        if patch.steps.is_some()
            && !matches!(s.status, SequenceStatus::Draft | SequenceStatus::Paused)
        {
            return Err(Error::conflict(format!(
                "steps can change only while the sequence is draft or paused; it is {}",
                s.status
            )));
        }
        if let Some(name) = patch.name {
            s.name = name.trim().to_string();
        }
        if let Some(priority) = patch.priority {
            s.priority = priority;
        }
        if let Some(rules) = patch.entry_rules {
            s.entry_rules = rules;
        }
        if let Some(rules) = patch.exit_rules {
            s.exit_rules = rules;
        }
        if let Some(steps) = patch.steps {
            s.steps = steps;
        }
        s.version += 1;
        s.updated_at = now;
        tx.update_sequence(&s).await?;
        tx.commit().await?;
        Ok(s)
    }

    pub async fn replace_steps(
        &self,
        p: Principal,
        id: SequenceId,
        steps: Vec<Step>,
    ) -> Result<Sequence> {
        self.patch_sequence(
            p,
            id,
            SequencePatch {
                steps: Some(steps),
                ..Default::default()
            },
        )
        .await
    }

    /// What activation checks (SPEC section 4): at least one step, no more than the tenant's
    /// max steps and span, every template present and naming only lead fields.
    async fn validate_for_activation(
        &self,
        tx: &mut dyn Tx,
        s: &Sequence,
        settings: &TenantSettings,
    ) -> Result<()> {
        let mut errors = Vec::new();
        if s.steps.is_empty() {
            errors.push(FieldError::new(
                "steps",
                "an active sequence needs at least one step",
            ));
        }
        if s.steps.len() > settings.max_steps as usize {
            errors.push(FieldError::new(
                "steps",
                format!(
                    "{} steps is more than the tenant's maximum of {}",
                    s.steps.len(),
                    settings.max_steps
                ),
            ));
        }
        let span: i64 = s.steps.iter().map(|st| st.delay_hours.get()).sum();
        let max_span = settings.max_span_days as i64 * 24;
        if span > max_span {
            errors.push(FieldError::new(
                "steps",
                format!("the steps span {span} hours, more than the tenant's maximum of {} days ({max_span} hours)", settings.max_span_days),
            ));
        }
        for (i, st) in s.steps.iter().enumerate() {
            let Some(tid) = &st.template_id else { continue };
            match tx.get_template(s.tenant_id, tid).await? {
                None => errors.push(FieldError::new(
                    format!("steps[{i}].template_id"),
                    format!("no template with id {:?}", tid.as_str()),
                )),
                Some(t) => {
                    for e in check_template(&t.subject, &t.body, t.html_body.as_deref()) {
                        errors.push(FieldError::new(
                            format!("steps[{i}].template_id"),
                            format!("template {:?} {}: {}", tid.as_str(), e.path, e.message),
                        ));
                    }
                }
            }
        }
        errors.extend(validate_steps(&s.steps));
        invalid_unless_empty(errors)
    }

    /// Lifecycle transitions: `draft → active ↔ paused → archived`, and `draft → archived`.
    async fn transition(
        &self,
        p: Principal,
        id: SequenceId,
        to: SequenceStatus,
    ) -> Result<Sequence> {
        use SequenceStatus::*;
        let now = self.now();
        let mut tx = self.begin(Scope::Tenant(p.tenant_id)).await?;
        let mut s = tx
            .get_sequence(p.tenant_id, id)
            .await?
            .ok_or(Error::NotFound("sequence"))?;
        let allowed = matches!(
            (s.status, to),
            (Draft, Active)
                | (Paused, Active)
                | (Active, Paused)
                | (Draft | Active | Paused, Archived)
        );
        if !allowed {
            return Err(Error::Conflict {
                message: format!("a {} sequence cannot become {to}", s.status),
                conflicting: Some(json!({ "status": s.status.as_str() })),
            });
        }
        if to == Active {
            let settings = self.settings(tx.as_mut(), p.tenant_id).await?;
            self.validate_for_activation(tx.as_mut(), &s, &settings)
                .await?;
        }
        let mut fx = Effects::default();
        if to == Archived {
            for e in tx.live_enrollments_of_sequence(p.tenant_id, id).await? {
                let (approvals, tasks) = tx.open_work(p.tenant_id, e.id).await?;
                exit(
                    &mut fx,
                    e,
                    exit_reason::SEQUENCE_ARCHIVED,
                    now,
                    approvals,
                    tasks,
                );
            }
        }
        s.status = to;
        s.version += 1;
        s.updated_at = now;
        tx.update_sequence(&s).await?;
        tx.apply(&fx).await?;
        tx.commit().await?;
        self.wake_schedulers().await;
        Ok(s)
    }

    pub async fn activate_sequence(&self, p: Principal, id: SequenceId) -> Result<Sequence> {
        let s = self.get_sequence(p, id).await?;
        if s.status == SequenceStatus::Paused {
            return Err(Error::conflict("the sequence is paused: resume it instead"));
        }
        self.transition(p, id, SequenceStatus::Active).await
    }

    pub async fn pause_sequence(&self, p: Principal, id: SequenceId) -> Result<Sequence> {
        self.transition(p, id, SequenceStatus::Paused).await
    }

    pub async fn resume_sequence(&self, p: Principal, id: SequenceId) -> Result<Sequence> {
        let s = self.get_sequence(p, id).await?;
        if s.status != SequenceStatus::Paused {
            return Err(Error::Conflict {
                message: format!("only a paused sequence can be resumed; it is {}", s.status),
                conflicting: Some(json!({ "status": s.status.as_str() })),
            });
        }
        self.transition(p, id, SequenceStatus::Active).await
    }

    pub async fn archive_sequence(&self, p: Principal, id: SequenceId) -> Result<Sequence> {
        self.transition(p, id, SequenceStatus::Archived).await
    }

    // -- enrollments by hand -----------------------------------------------------------------------

    pub async fn get_enrollment(&self, p: Principal, id: EnrollmentId) -> Result<Enrollment> {
        let mut tx = self.begin_read(p.tenant_id).await?;
        let e = tx
            .get_enrollment(p.tenant_id, id)
            .await?
            .ok_or(Error::NotFound("enrollment"))?;
        tx.commit().await?;
        Ok(e)
    }

    pub async fn list_enrollments(
        &self,
        p: Principal,
        filter: &EnrollmentFilter,
        page: &Page,
    ) -> Result<Listed<Enrollment>> {
        let mut tx = self.begin_read(p.tenant_id).await?;
        let out = tx.list_enrollments(p.tenant_id, filter, page).await?;
        tx.commit().await?;
        Ok(out)
    }

    pub async fn pause_enrollment(&self, p: Principal, id: EnrollmentId) -> Result<Enrollment> {
        let now = self.now();
        let mut tx = self.begin(Scope::Tenant(p.tenant_id)).await?;
        let mut e = tx
            .get_enrollment(p.tenant_id, id)
            .await?
            .ok_or(Error::NotFound("enrollment"))?;
        if e.status != EnrollmentStatus::Active {
            return Err(Error::conflict(format!(
                "only an active enrollment can be paused; it is {}",
                e.status
            )));
        }
        let mut fx = Effects::default();
        pause(&mut fx, &mut e, PauseReason::Manual, now);
        save(&mut fx, e.clone(), now);
        tx.apply(&fx).await?;
        tx.commit().await?;
        Ok(bumped(e, now))
    }

    /// Resumes an enrollment paused by hand. Its step was due (or came due) while it was paused,
    /// so it runs at once.
    pub async fn resume_enrollment(&self, p: Principal, id: EnrollmentId) -> Result<Enrollment> {
        let now = self.now();
        let mut tx = self.begin(Scope::Tenant(p.tenant_id)).await?;
        let mut e = tx
            .get_enrollment(p.tenant_id, id)
            .await?
            .ok_or(Error::NotFound("enrollment"))?;
        match (e.status, e.paused_reason) {
            (EnrollmentStatus::Paused, Some(PauseReason::Manual)) => {}
            (EnrollmentStatus::Paused, Some(reason)) => {
                return Err(Error::conflict(format!(
                    "the enrollment waits for {}: {}",
                    reason.as_str(),
                    if reason == PauseReason::AwaitingTask {
                        "complete the task"
                    } else {
                        "approve or reject the message"
                    }
                )));
            }
            _ => {
                return Err(Error::conflict(format!(
                    "only a paused enrollment can be resumed; it is {}",
                    e.status
                )));
            }
        }
        let mut fx = Effects::default();
        e.status = EnrollmentStatus::Active;
        e.paused_reason = None;
        e.next_step_on = Some(now);
        log(
            &mut fx,
            &e,
            ActivityType::NurtureResumed,
            Some(e.current_step_order),
            now,
            json!({ "reason": "manual" }),
        );
        save(&mut fx, e.clone(), now);
        tx.apply(&fx).await?;
        tx.commit().await?;
        self.wake_schedulers().await;
        Ok(bumped(e, now))
    }

    pub async fn exit_enrollment(
        &self,
        p: Principal,
        id: EnrollmentId,
        reason: Option<String>,
    ) -> Result<Enrollment> {
        let reason = reason
            .map(|r| r.trim().to_string())
            .filter(|r| !r.is_empty())
            .unwrap_or_else(|| exit_reason::MANUAL.to_string());
        if reason.len() > 255 {
            return Err(Error::invalid(
                "reason",
                "a reason has at most 255 characters",
            ));
        }
        let now = self.now();
        let mut tx = self.begin(Scope::Tenant(p.tenant_id)).await?;
        let e = tx
            .get_enrollment(p.tenant_id, id)
            .await?
            .ok_or(Error::NotFound("enrollment"))?;
        if !e.is_live() {
            return Err(Error::conflict(format!(
                "the enrollment has already ended ({})",
                e.status
            )));
        }
        let (approvals, tasks) = tx.open_work(p.tenant_id, e.id).await?;
        let mut fx = Effects::default();
        let e = exit(&mut fx, e, &reason, now, approvals, tasks);
        tx.apply(&fx).await?;
        tx.commit().await?;
        Ok(bumped(e, now))
    }

    // -- approvals (HITL) -------------------------------------------------------------------------

    pub async fn list_approvals(
        &self,
        p: Principal,
        status: Option<ApprovalStatus>,
        page: &Page,
    ) -> Result<Listed<Approval>> {
        let mut tx = self.begin_read(p.tenant_id).await?;
        let out = tx.list_approvals(p.tenant_id, status, page).await?;
        tx.commit().await?;
        Ok(out)
    }

    pub async fn get_approval(&self, p: Principal, id: ApprovalId) -> Result<Approval> {
        let mut tx = self.begin_read(p.tenant_id).await?;
        let a = tx
            .get_approval(p.tenant_id, id)
            .await?
            .ok_or(Error::NotFound("approval"))?;
        tx.commit().await?;
        Ok(a)
    }

    /// An agent's draft replaces a pending approval's content; it still needs a human.
    pub async fn draft_approval(
        &self,
        p: Principal,
        id: ApprovalId,
        edit: ApprovalEdit,
    ) -> Result<Approval> {
        let now = self.now();
        let mut tx = self.begin(Scope::Tenant(p.tenant_id)).await?;
        let mut a = self.pending_approval(tx.as_mut(), p, id).await?;
        edit_content(&mut a, edit)?;
        a.author = ApprovalAuthor::Agent;
        a.updated_at = now;
        let fx = Effects {
            approval_updates: vec![a.clone()],
            ..Default::default()
        };
        tx.apply(&fx).await?;
        tx.commit().await?;
        Ok(a)
    }

    async fn pending_approval(
        &self,
        tx: &mut dyn Tx,
        p: Principal,
        id: ApprovalId,
    ) -> Result<Approval> {
        let a = tx
            .get_approval(p.tenant_id, id)
            .await?
            .ok_or(Error::NotFound("approval"))?;
        if a.status != ApprovalStatus::Pending {
            return Err(Error::Conflict {
                message: format!("the approval is already {}", a.status),
                conflicting: Some(json!({ "status": a.status.as_str() })),
            });
        }
        Ok(a)
    }

    /// The enrollment an approval pauses, which must still be waiting for it.
    async fn waiting_enrollment(&self, tx: &mut dyn Tx, a: &Approval) -> Result<Enrollment> {
        let e = tx
            .get_enrollment(a.tenant_id, a.enrollment_id)
            .await?
            .ok_or(Error::NotFound("enrollment"))?;
        if e.status != EnrollmentStatus::Paused
            || e.paused_reason != Some(PauseReason::AwaitingApproval)
            || e.current_step_order != a.step_order
        {
            return Err(Error::conflict(format!(
                "enrollment {} no longer waits for this approval ({})",
                e.id, e.status
            )));
        }
        Ok(e)
    }

    /// Approves (optionally with edits) and sends through the same checks as a due step: the
    /// cap or the window may defer it, and the approved content is what goes out then.
    pub async fn approve(
        &self,
        p: Principal,
        id: ApprovalId,
        edit: ApprovalEdit,
    ) -> Result<Approval> {
        let now = self.now();
        let mut tx = self.begin(Scope::Tenant(p.tenant_id)).await?;
        let mut a = self.pending_approval(tx.as_mut(), p, id).await?;
        let edited = edit.subject.is_some() || edit.body.is_some() || edit.html_body.is_some();
        edit_content(&mut a, edit)?;
        let e = self.waiting_enrollment(tx.as_mut(), &a).await?;
        let lead = tx
            .get_lead(p.tenant_id, e.lead_id)
            .await?
            .ok_or(Error::NotFound("lead"))?;
        let sequence = tx
            .get_sequence(p.tenant_id, e.sequence_id)
            .await?
            .ok_or(Error::NotFound("sequence"))?;
        let settings = self.settings(tx.as_mut(), p.tenant_id).await?;
        a.status = ApprovalStatus::Approved;
        a.decided_by = Some(p.user_id);
        a.decided_at = Some(now);
        a.updated_at = now;
        let mut fx = Effects::default();
        log(
            &mut fx,
            &e,
            ActivityType::ApprovalDecided,
            Some(a.step_order),
            now,
            json!({ "approval_id": a.id, "decision": "approved", "edited": edited }),
        );
        fx.approval_updates.push(a.clone());
        let mut e = e;
        e.status = EnrollmentStatus::Active;
        e.paused_reason = None;
        log(
            &mut fx,
            &e,
            ActivityType::NurtureResumed,
            Some(e.current_step_order),
            now,
            json!({ "reason": "approved" }),
        );

        let exit_reason =
            mandatory_exit(&lead).or_else(|| sequence.exit_rules.check(&lead, e.enrolled_on, now));
        if let Some(reason) = exit_reason {
            exit(&mut fx, e, reason, now, Vec::new(), Vec::new());
        } else {
            let sent = tx
                .outbound_since(
                    &[(lead.tenant_id, lead.id)],
                    now - jiff::SignedDuration::from_hours(settings.message_window_hours as i64),
                )
                .await?;
            let sent = sent.get(&lead.id).cloned().unwrap_or_default();
            let (at, deferred) = send_time(&settings, &lead, &sent, now);
            match (deferred, sequence.step(a.step_order)) {
                (Some(reason), _) => {
                    e.approved_approval_id = Some(a.id);
                    steps::defer(&mut fx, e, at, reason.as_str(), now);
                }
                (None, Some(step)) => {
                    let content = Rendered {
                        subject: a.subject.clone(),
                        body: a.body.clone(),
                        html_body: a.html_body.clone(),
                    };
                    send(&mut fx, e, &sequence, &lead, step, content, Some(a.id), now);
                }
                // The step was removed while the sequence was paused: nothing to send.
                (None, None) => {
                    advance(&mut fx, e, &sequence, now);
                }
            }
        }
        tx.apply(&fx).await?;
        tx.commit().await?;
        self.wake_schedulers().await;
        Ok(a)
    }

    /// Rejects: the step is skipped and the enrollment goes on, or (`exit`) it ends with
    /// `approval_rejected`.
    pub async fn reject(
        &self,
        p: Principal,
        id: ApprovalId,
        reason: Option<String>,
        exit_sequence: bool,
    ) -> Result<Approval> {
        let now = self.now();
        let mut tx = self.begin(Scope::Tenant(p.tenant_id)).await?;
        let mut a = self.pending_approval(tx.as_mut(), p, id).await?;
        let e = self.waiting_enrollment(tx.as_mut(), &a).await?;
        let sequence = tx
            .get_sequence(p.tenant_id, e.sequence_id)
            .await?
            .ok_or(Error::NotFound("sequence"))?;
        a.status = ApprovalStatus::Rejected;
        a.decided_by = Some(p.user_id);
        a.decided_at = Some(now);
        a.decision_reason = reason.clone();
        a.updated_at = now;
        let mut fx = Effects::default();
        log(
            &mut fx,
            &e,
            ActivityType::ApprovalDecided,
            Some(a.step_order),
            now,
            json!({ "approval_id": a.id, "decision": "rejected", "reason": reason, "exit": exit_sequence }),
        );
        fx.approval_updates.push(a.clone());
        if exit_sequence {
            exit(
                &mut fx,
                e,
                exit_reason::APPROVAL_REJECTED,
                now,
                Vec::new(),
                Vec::new(),
            );
        } else {
            log(
                &mut fx,
                &e,
                ActivityType::NurtureStepSkipped,
                Some(a.step_order),
                now,
                json!({ "reason": "approval_rejected", "channel": "email" }),
            );
            resume_and_advance(&mut fx, e, &sequence, "rejected", now);
        }
        tx.apply(&fx).await?;
        tx.commit().await?;
        self.wake_schedulers().await;
        Ok(a)
    }

    // -- tasks ----------------------------------------------------------------------------------

    pub async fn list_tasks(
        &self,
        p: Principal,
        status: Option<TaskStatus>,
        page: &Page,
    ) -> Result<Listed<Task>> {
        let mut tx = self.begin_read(p.tenant_id).await?;
        let out = tx.list_tasks(p.tenant_id, status, page).await?;
        tx.commit().await?;
        Ok(out)
    }

    /// Completing a task resumes the enrollment it paused, from the next step.
    pub async fn complete_task(&self, p: Principal, id: TaskId) -> Result<Task> {
        let now = self.now();
        let mut tx = self.begin(Scope::Tenant(p.tenant_id)).await?;
        let mut task = tx
            .get_task(p.tenant_id, id)
            .await?
            .ok_or(Error::NotFound("task"))?;
        if task.status != TaskStatus::Open {
            return Err(Error::conflict(format!(
                "the task is already {}",
                task.status
            )));
        }
        task.status = TaskStatus::Done;
        task.completed_at = Some(now);
        let mut fx = Effects {
            task_updates: vec![task.clone()],
            ..Default::default()
        };
        let e = tx
            .get_enrollment(p.tenant_id, task.enrollment_id)
            .await?
            .ok_or(Error::NotFound("enrollment"))?;
        log(
            &mut fx,
            &e,
            ActivityType::TaskCompleted,
            Some(task.step_order),
            now,
            json!({ "task_id": task.id }),
        );
        if e.status == EnrollmentStatus::Paused
            && e.paused_reason == Some(PauseReason::AwaitingTask)
            && e.current_step_order == task.step_order
        {
            let sequence = tx
                .get_sequence(p.tenant_id, e.sequence_id)
                .await?
                .ok_or(Error::NotFound("sequence"))?;
            resume_and_advance(&mut fx, e, &sequence, "task_done", now);
        }
        tx.apply(&fx).await?;
        tx.commit().await?;
        self.wake_schedulers().await;
        Ok(task)
    }

    // -- reads ----------------------------------------------------------------------------------

    pub async fn list_messages(
        &self,
        p: Principal,
        filter: &MessageFilter,
        page: &Page,
    ) -> Result<Listed<Message>> {
        let mut tx = self.begin_read(p.tenant_id).await?;
        let out = tx.list_messages(p.tenant_id, filter, page).await?;
        tx.commit().await?;
        Ok(out)
    }

    pub async fn list_activities(
        &self,
        p: Principal,
        filter: &ActivityFilter,
        page: &Page,
    ) -> Result<Listed<Activity>> {
        let mut tx = self.begin_read(p.tenant_id).await?;
        let out = tx.list_activities(p.tenant_id, filter, page).await?;
        tx.commit().await?;
        Ok(out)
    }
}

/// The enrollment as `save` wrote it (version bumped), for answers.
fn bumped(mut e: Enrollment, now: Timestamp) -> Enrollment {
    e.version += 1;
    e.updated_at = now;
    e
}

fn edit_content(a: &mut Approval, edit: ApprovalEdit) -> Result<()> {
    let mut errors = Vec::new();
    if let Some(subject) = edit.subject {
        if subject.trim().is_empty() {
            errors.push(FieldError::new("subject", "a subject cannot be empty"));
        }
        a.subject = subject;
    }
    if let Some(body) = edit.body {
        if body.trim().is_empty() {
            errors.push(FieldError::new("body", "a body cannot be empty"));
        }
        a.body = body;
    }
    if let Some(html) = edit.html_body {
        a.html_body = html;
    }
    invalid_unless_empty(errors)
}
