//! Step execution (SPEC section 4, "Step execution" 1–6, and "HITL"): pure functions from an
//! enrollment and what it needs to the rows that record the outcome. No I/O here: the
//! scheduler loads a batch, calls [`execute_step`] for each enrollment, and writes the
//! [`Effects`] in one transaction.

use jiff::Timestamp;
use serde_json::json;

use crate::domain::*;
use crate::render::{Rendered, Renderer};
use crate::settings::TenantSettings;
use crate::store::{Effects, EnrollmentUpdate};
use crate::window::{FrequencyCap, earliest_send};

/// Everything one step needs besides the enrollment itself.
pub struct StepInputs<'a> {
    pub settings: &'a TenantSettings,
    pub sequence: &'a Sequence,
    pub lead: &'a Lead,
    pub template: Option<&'a Template>,
    /// Earlier outbound message times of the lead (the frequency cap's input).
    pub sent: &'a [Timestamp],
    /// The approval whose approved content is waiting to be sent (`approved_approval_id`).
    pub approved: Option<&'a Approval>,
}

/// Records an activity.
pub fn log(
    fx: &mut Effects,
    e: &Enrollment,
    activity_type: ActivityType,
    step: Option<StepOrder>,
    at: Timestamp,
    details: serde_json::Value,
) {
    fx.activities.push(Activity {
        id: new_id(),
        tenant_id: e.tenant_id,
        activity_type,
        lead_id: e.lead_id,
        enrollment_id: Some(e.id),
        sequence_id: Some(e.sequence_id),
        step_order: step,
        at,
        details,
    });
}

/// Queues the write of an enrollment's new state, guarded by the version it was read at.
pub fn save(fx: &mut Effects, mut e: Enrollment, now: Timestamp) {
    let expected_version = e.version;
    e.version += 1;
    e.updated_at = now;
    fx.enrollment_updates.push(EnrollmentUpdate {
        enrollment: e,
        expected_version,
    });
}

/// Ends an enrollment early: `exit_reason`, `nurture_exited`, and its pending approvals and open
/// tasks cancelled (nobody should review a message that can no longer be sent).
pub fn exit(
    fx: &mut Effects,
    mut e: Enrollment,
    reason: &str,
    now: Timestamp,
    open_approvals: Vec<Approval>,
    open_tasks: Vec<Task>,
) -> Enrollment {
    let step = e.current_step_order;
    e.status = EnrollmentStatus::Exited;
    e.exit_reason = Some(reason.to_string());
    e.next_step_on = None;
    e.paused_reason = None;
    e.approved_approval_id = None;
    e.ended_at = Some(now);
    for mut a in open_approvals {
        a.status = ApprovalStatus::Cancelled;
        a.decision_reason = Some(format!("enrollment exited: {reason}"));
        a.decided_at = Some(now);
        a.updated_at = now;
        fx.approval_updates.push(a);
    }
    for mut t in open_tasks {
        t.status = TaskStatus::Cancelled;
        t.completed_at = Some(now);
        fx.task_updates.push(t);
    }
    log(
        fx,
        &e,
        ActivityType::NurtureExited,
        Some(step),
        now,
        json!({ "reason": reason }),
    );
    save(fx, e.clone(), now);
    e
}

/// The exits that apply whatever the sequence's rules say (SPEC section 4, step 1), in order.
pub fn mandatory_exit(lead: &Lead) -> Option<&'static str> {
    match lead.status {
        LeadStatus::Converted => return Some(exit_reason::CONVERTED),
        LeadStatus::Disqualified => return Some(exit_reason::DISQUALIFIED),
        _ => {}
    }
    if lead.unsubscribed {
        return Some(exit_reason::UNSUBSCRIBED);
    }
    if lead.do_not_contact {
        return Some(exit_reason::DO_NOT_CONTACT);
    }
    if lead.bounced {
        return Some(exit_reason::BOUNCED);
    }
    None
}

/// Step 6: move the pointer on, or complete after the last step. Writes the enrollment.
pub fn advance(
    fx: &mut Effects,
    mut e: Enrollment,
    sequence: &Sequence,
    now: Timestamp,
) -> Enrollment {
    e.paused_reason = None;
    e.approved_approval_id = None;
    let next = e.current_step_order.next();
    match sequence.step(next) {
        Some(step) => {
            let due = now + step.delay_hours.span();
            e.status = EnrollmentStatus::Active;
            e.current_step_order = next;
            e.next_step_on = Some(due);
            log(
                fx,
                &e,
                ActivityType::NurtureStepScheduled,
                Some(next),
                now,
                json!({ "next_step_on": due.to_string(), "delay_hours": step.delay_hours.get() }),
            );
        }
        None => complete(fx, &mut e, now),
    }
    save(fx, e.clone(), now);
    e
}

/// A paused enrollment goes on: `nurture_resumed` with the reason, then step 6.
pub fn resume_and_advance(
    fx: &mut Effects,
    e: Enrollment,
    sequence: &Sequence,
    reason: &str,
    now: Timestamp,
) -> Enrollment {
    log(
        fx,
        &e,
        ActivityType::NurtureResumed,
        Some(e.current_step_order),
        now,
        json!({ "reason": reason }),
    );
    advance(fx, e, sequence, now)
}

fn complete(fx: &mut Effects, e: &mut Enrollment, now: Timestamp) {
    e.status = EnrollmentStatus::Completed;
    e.next_step_on = None;
    e.ended_at = Some(now);
    log(fx, e, ActivityType::NurtureCompleted, None, now, json!({}));
}

/// Runs the step the enrollment points at, as of `now` (SPEC section 4, steps 1–6).
pub fn execute_step(
    fx: &mut Effects,
    renderer: &mut Renderer,
    e: Enrollment,
    inputs: &StepInputs<'_>,
    now: Timestamp,
) {
    let StepInputs { sequence, lead, .. } = *inputs;

    // 1. Re-check the lead: mandatory exits, then the sequence's exit rules.
    let reason =
        mandatory_exit(lead).or_else(|| sequence.exit_rules.check(lead, e.enrolled_on, now));
    if let Some(reason) = reason {
        exit(fx, e, reason, now, Vec::new(), Vec::new());
        return;
    }

    // A pointer past the end (steps removed while the sequence was paused) completes.
    let Some(step) = sequence.step(e.current_step_order) else {
        let mut e = e;
        complete(fx, &mut e, now);
        save(fx, e, now);
        return;
    };

    // 2. Step conditions.
    if let Some(cond) = &step.conditions
        && inputs.approved.is_none()
        && !cond.eval(lead, now)
    {
        log(
            fx,
            &e,
            ActivityType::NurtureStepSkipped,
            Some(step.step_order),
            now,
            json!({ "reason": "conditions", "channel": step.channel.as_str() }),
        );
        advance(fx, e, sequence, now);
        return;
    }

    match step.channel {
        Channel::Email => email_step(fx, renderer, e, step, inputs, now),
        Channel::Task | Channel::CallReminder => {
            task_step(fx, renderer, e, step, inputs, now);
        }
        Channel::Wait => {
            log(
                fx,
                &e,
                ActivityType::NurtureStepExecuted,
                Some(step.step_order),
                now,
                json!({ "channel": "wait" }),
            );
            advance(fx, e, sequence, now);
        }
    }
}

/// When may the lead get an email, counting the cap and the sending window? Returns the
/// instant and, if it is later than `now`, why.
pub fn send_time(
    settings: &TenantSettings,
    lead: &Lead,
    sent: &[Timestamp],
    now: Timestamp,
) -> (Timestamp, Option<crate::window::DeferReason>) {
    let cap = FrequencyCap {
        max: settings.max_messages_per_window,
        window: jiff::SignedDuration::from_hours(settings.message_window_hours as i64),
    };
    let tz = lead.timezone.as_ref().unwrap_or(&settings.timezone).zone();
    earliest_send(now, &cap, sent, settings.sending_window.as_ref(), &tz)
}

/// Defers the step to `at`, with the reason (`nurture_step_scheduled`).
pub fn defer(fx: &mut Effects, mut e: Enrollment, at: Timestamp, reason: &str, now: Timestamp) {
    e.status = EnrollmentStatus::Active;
    e.paused_reason = None;
    e.next_step_on = Some(at);
    log(
        fx,
        &e,
        ActivityType::NurtureStepScheduled,
        Some(e.current_step_order),
        now,
        json!({ "reason": reason, "next_step_on": at.to_string() }),
    );
    save(fx, e, now);
}

fn email_step(
    fx: &mut Effects,
    renderer: &mut Renderer,
    e: Enrollment,
    step: &Step,
    inputs: &StepInputs<'_>,
    now: Timestamp,
) {
    let StepInputs {
        settings,
        sequence,
        lead,
        template,
        sent,
        approved,
    } = *inputs;

    // 3a. The cap and the sending window come first: nothing is rendered or reviewed for a
    // message that may not go out yet.
    let (at, deferred) = send_time(settings, lead, sent, now);
    if let Some(reason) = deferred {
        defer(fx, e, at, reason.as_str(), now);
        return;
    }

    // Content approved by a reviewer earlier and held back by the cap or window.
    if let Some(approval) = approved {
        let content = Rendered {
            subject: approval.subject.clone(),
            body: approval.body.clone(),
            html_body: approval.html_body.clone(),
        };
        send(fx, e, sequence, lead, step, content, Some(approval.id), now);
        return;
    }

    let Some(template) = template else {
        skip(fx, e, sequence, step, "template_missing", None, now);
        return;
    };
    let content = match renderer.render(template, lead) {
        Ok(c) => c,
        Err(err) => {
            skip(fx, e, sequence, step, "template_error", Some(err), now);
            return;
        }
    };

    // HITL: SPEC section 4. Pre-approved templates skip review only when the tenant allows it.
    let needs_review = step.requires_human_approval
        && !(template.pre_approved && settings.preapproved_skip_review);
    if needs_review {
        request_approval(fx, e, step, template, content, now);
    } else {
        send(fx, e, sequence, lead, step, content, None, now);
    }
}

fn skip(
    fx: &mut Effects,
    e: Enrollment,
    sequence: &Sequence,
    step: &Step,
    reason: &str,
    error: Option<String>,
    now: Timestamp,
) {
    log(
        fx,
        &e,
        ActivityType::NurtureStepSkipped,
        Some(step.step_order),
        now,
        json!({ "reason": reason, "channel": step.channel.as_str(), "error": error,
                "template_id": step.template_id.as_ref().map(|t| t.as_str()) }),
    );
    advance(fx, e, sequence, now);
}

fn request_approval(
    fx: &mut Effects,
    mut e: Enrollment,
    step: &Step,
    template: &Template,
    content: Rendered,
    now: Timestamp,
) {
    let approval = Approval {
        id: new_id(),
        tenant_id: e.tenant_id,
        enrollment_id: e.id,
        lead_id: e.lead_id,
        sequence_id: e.sequence_id,
        step_order: step.step_order,
        template_id: Some(template.id.clone()),
        subject: content.subject,
        body: content.body,
        html_body: content.html_body,
        author: ApprovalAuthor::Template,
        status: ApprovalStatus::Pending,
        decided_by: None,
        decided_at: None,
        decision_reason: None,
        created_at: now,
        updated_at: now,
    };
    log(
        fx,
        &e,
        ActivityType::ApprovalRequested,
        Some(step.step_order),
        now,
        json!({ "approval_id": approval.id }),
    );
    fx.new_approvals.push(approval);
    pause(fx, &mut e, PauseReason::AwaitingApproval, now);
    save(fx, e, now);
}

/// Pauses an enrollment with the reason (`nurture_paused`); the caller saves it.
pub fn pause(fx: &mut Effects, e: &mut Enrollment, reason: PauseReason, now: Timestamp) {
    e.status = EnrollmentStatus::Paused;
    e.paused_reason = Some(reason);
    e.next_step_on = None;
    log(
        fx,
        e,
        ActivityType::NurturePaused,
        Some(e.current_step_order),
        now,
        json!({ "reason": reason.as_str() }),
    );
}

/// Puts the message in the outbox and moves on, in the same set of effects (SPEC section 4,
/// step 3: "in the same transaction that advances the enrollment").
#[allow(clippy::too_many_arguments)]
pub fn send(
    fx: &mut Effects,
    e: Enrollment,
    sequence: &Sequence,
    lead: &Lead,
    step: &Step,
    content: Rendered,
    approval: Option<ApprovalId>,
    now: Timestamp,
) {
    let message_id = new_id();
    // Stable per (enrollment, step): a retried delivery can never become a second email.
    let idempotency_key = format!("{}-{}", e.id, step.step_order.get());
    fx.messages.push(Message {
        id: message_id,
        tenant_id: e.tenant_id,
        enrollment_id: Some(e.id),
        lead_id: e.lead_id,
        sequence_id: Some(e.sequence_id),
        step_order: Some(step.step_order),
        to: lead.email.as_str().to_string(),
        subject: content.subject,
        body: content.body,
        html_body: content.html_body,
        headers: serde_json::Map::new(),
        status: MessageStatus::Queued,
        attempts: 0,
        idempotency_key,
        created_at: now,
        sent_at: None,
    });
    fx.lead_outbound.push((e.tenant_id, e.lead_id, now));
    log(
        fx,
        &e,
        ActivityType::NurtureStepExecuted,
        Some(step.step_order),
        now,
        json!({ "channel": "email", "message_id": message_id, "approval_id": approval,
                "template_id": step.template_id.as_ref().map(|t| t.as_str()) }),
    );
    advance(fx, e, sequence, now);
}

fn task_step(
    fx: &mut Effects,
    renderer: &mut Renderer,
    mut e: Enrollment,
    step: &Step,
    inputs: &StepInputs<'_>,
    now: Timestamp,
) {
    let lead = inputs.lead;
    let who = match (&lead.first_name, &lead.last_name) {
        (Some(f), Some(l)) => format!("{f} {l}"),
        (Some(f), None) => f.clone(),
        _ => lead.email.as_str().to_string(),
    };
    let default_title = match step.channel {
        Channel::CallReminder => format!("Call {who}"),
        _ => format!("Follow up with {who}"),
    };
    // A task step may name a template: its rendered subject becomes the task's title.
    let title = inputs
        .template
        .and_then(|t| renderer.render(t, lead).ok())
        .map(|r| r.subject)
        .unwrap_or(default_title);
    let task = Task {
        id: new_id(),
        tenant_id: e.tenant_id,
        enrollment_id: e.id,
        lead_id: e.lead_id,
        sequence_id: e.sequence_id,
        step_order: step.step_order,
        channel: step.channel,
        assignee_id: lead.owner_id,
        title,
        status: TaskStatus::Open,
        due_at: now,
        completed_at: None,
        created_at: now,
    };
    log(
        fx,
        &e,
        ActivityType::NurtureStepExecuted,
        Some(step.step_order),
        now,
        json!({ "channel": step.channel.as_str(), "task_id": task.id }),
    );
    log(
        fx,
        &e,
        ActivityType::TaskCreated,
        Some(step.step_order),
        now,
        json!({ "task_id": task.id, "assignee_id": task.assignee_id }),
    );
    fx.new_tasks.push(task);
    pause(fx, &mut e, PauseReason::AwaitingTask, now);
    save(fx, e, now);
}
