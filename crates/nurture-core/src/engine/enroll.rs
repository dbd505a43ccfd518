//! Enrollment (SPEC section 4, "Enrollment"; seed "Enrollment rules"): automatic, inside the
//! write that changes a lead and by the hourly sweep, and manual with the same safety checks.

use std::collections::HashSet;

use jiff::{SignedDuration, Timestamp};
use serde_json::json;

use super::steps::log;
use super::{Engine, Principal};
use crate::domain::*;
use crate::error::{Error, Result};
use crate::settings::TenantSettings;
use crate::store::{Effects, Scope, Tx};

/// How many leads the sweep reads and enrolls per transaction: large enough for set-at-a-time
/// writes, small enough that API writes wait at most a moment for the write lock.
pub const SWEEP_PAGE: u32 = 5_000;

/// A new enrollment at step 1 and its `nurture_enrolled` activity.
pub(crate) fn new_enrollment(
    fx: &mut Effects,
    lead: &Lead,
    sequence: &Sequence,
    source: EnrollmentSource,
    now: Timestamp,
) -> Enrollment {
    let first_delay = sequence
        .steps
        .first()
        .map(|s| s.delay_hours.span())
        .unwrap_or(SignedDuration::ZERO);
    let due = now + first_delay;
    let e = Enrollment {
        id: new_id(),
        tenant_id: lead.tenant_id,
        lead_id: lead.id,
        sequence_id: sequence.id,
        current_step_order: StepOrder::FIRST,
        status: EnrollmentStatus::Active,
        source,
        enrolled_on: now,
        next_step_on: Some(due),
        paused_reason: None,
        exit_reason: None,
        approved_approval_id: None,
        ended_at: None,
        updated_at: now,
        version: 0,
    };
    // One activity says both that the lead was enrolled and when step 1 runs.
    log(
        fx,
        &e,
        ActivityType::NurtureEnrolled,
        Some(StepOrder::FIRST),
        now,
        json!({ "source": source.as_str(), "sequence_name": sequence.name, "next_step_on": due.to_string() }),
    );
    fx.new_enrollments.push(e.clone());
    e
}

/// The lead-side conditions of auto-enrollment that no rule can override.
fn lead_may_be_auto_enrolled(lead: &Lead) -> bool {
    lead.contact_forbidden().is_none() && !lead.bounced
}

/// The first sequence (they come highest priority first, then oldest) whose entry rules the
/// lead matches and whose cooldown has passed.
pub(crate) fn choose_sequence<'a>(
    lead: &Lead,
    sequences: &'a [Sequence],
    settings: &TenantSettings,
    now: Timestamp,
    cooling: impl Fn(SequenceId) -> bool,
) -> Option<&'a Sequence> {
    if !lead_may_be_auto_enrolled(lead) {
        return None;
    }
    sequences.iter().find(|s| {
        s.status == SequenceStatus::Active
            && s.entry_rules
                .as_ref()
                .is_some_and(|r| r.matches(lead, settings, now))
            && !cooling(s.id)
    })
}

pub(crate) fn cooldown(settings: &TenantSettings) -> SignedDuration {
    SignedDuration::from_hours(settings.reenrollment_cooldown_days as i64 * 24)
}

impl Engine {
    /// Auto-enrolls one lead inside the caller's transaction (the write that changed it).
    pub(crate) async fn auto_enroll_lead(
        &self,
        tx: &mut dyn Tx,
        fx: &mut Effects,
        settings: &TenantSettings,
        lead: &Lead,
        now: Timestamp,
    ) -> Result<Option<Enrollment>> {
        if !lead_may_be_auto_enrolled(lead) {
            return Ok(None);
        }
        if tx.live_enrollment(lead.tenant_id, lead.id).await?.is_some() {
            return Ok(None);
        }
        let sequences = tx.auto_enroll_sequences(lead.tenant_id).await?;
        let since = now - cooldown(settings);
        let mut cooling = HashSet::new();
        for s in &sequences {
            if tx
                .ended_since(lead.tenant_id, lead.id, s.id, since)
                .await?
                .is_some()
            {
                cooling.insert(s.id);
            }
        }
        Ok(
            choose_sequence(lead, &sequences, settings, now, |id| cooling.contains(&id))
                .map(|s| new_enrollment(fx, lead, s, EnrollmentSource::Auto, now)),
        )
    }

    /// Manual enrollment (API or console): the same safety checks as auto-enrollment, answered
    /// with 422 for the lead's or sequence's state and 409 naming the enrollment in the way.
    pub async fn enroll(
        &self,
        p: Principal,
        lead_id: LeadId,
        sequence_id: SequenceId,
    ) -> Result<Enrollment> {
        let now = self.now();
        let mut tx = self.begin(Scope::Tenant(p.tenant_id)).await?;
        let lead = tx
            .get_lead(p.tenant_id, lead_id)
            .await?
            .ok_or(Error::NotFound("lead"))?;
        let sequence = tx
            .get_sequence(p.tenant_id, sequence_id)
            .await?
            .ok_or(Error::NotFound("sequence"))?;
        let settings = self.settings(tx.as_mut(), p.tenant_id).await?;
        if sequence.status != SequenceStatus::Active {
            return Err(Error::Unprocessable(format!(
                "sequence {} is {}; only an active sequence takes enrollments",
                sequence.id, sequence.status
            )));
        }
        // The same conditions that end a live enrollment at once forbid starting one.
        if let Some(reason) = super::steps::mandatory_exit(&lead) {
            return Err(Error::Unprocessable(format!(
                "lead {} may not be enrolled: {reason}",
                lead.id
            )));
        }
        if let Some(live) = tx.live_enrollment(p.tenant_id, lead.id).await? {
            return Err(Error::Conflict {
                message: format!(
                    "lead {} is already enrolled (enrollment {}, {})",
                    lead.id, live.id, live.status
                ),
                conflicting: Some(
                    json!({ "enrollment_id": live.id, "sequence_id": live.sequence_id, "status": live.status.as_str() }),
                ),
            });
        }
        if let Some(ended) = tx
            .ended_since(p.tenant_id, lead.id, sequence.id, now - cooldown(&settings))
            .await?
        {
            let until = ended.ended_at.unwrap_or(now) + cooldown(&settings);
            return Err(Error::Conflict {
                message: format!(
                    "lead {} left this sequence (enrollment {}) within the {}-day re-enrollment cooldown; it may enroll again from {until}",
                    lead.id, ended.id, settings.reenrollment_cooldown_days
                ),
                conflicting: Some(
                    json!({ "enrollment_id": ended.id, "cooldown_until": until.to_string() }),
                ),
            });
        }
        let mut fx = Effects::default();
        let e = new_enrollment(&mut fx, &lead, &sequence, EnrollmentSource::Manual, now);
        tx.apply(&fx).await?;
        tx.commit().await?;
        self.wake_schedulers().await;
        Ok(e)
    }

    /// The periodic sweep: enrolls every lead whose entry rules have become true with time.
    /// Returns how many it enrolled.
    pub async fn sweep(&self, now: Timestamp) -> Result<u64> {
        let mut tx = self.store.begin_read(Scope::System).await?;
        let tenants = tx.tenants_with_auto_enroll().await?;
        tx.commit().await?;
        let mut enrolled = 0;
        for tenant in tenants {
            enrolled += self.sweep_tenant(tenant, now).await?;
        }
        if enrolled > 0 {
            self.wake_schedulers().await;
        }
        Ok(enrolled)
    }

    async fn sweep_tenant(&self, tenant: TenantId, now: Timestamp) -> Result<u64> {
        let mut tx = self.begin(Scope::Tenant(tenant)).await?;
        let settings = self.settings(tx.as_mut(), tenant).await?;
        let sequences = tx.auto_enroll_sequences(tenant).await?;
        if sequences.is_empty() {
            return Ok(0);
        }
        let default_statuses = [
            LeadStatus::New,
            LeadStatus::Contacted,
            LeadStatus::Qualified,
        ];
        let mut statuses: Vec<LeadStatus> = Vec::new();
        let mut bands: Option<Vec<String>> = Some(Vec::new());
        for s in &sequences {
            let rules = s
                .entry_rules
                .as_ref()
                .expect("auto-enroll sequences have entry rules");
            for st in rules.statuses.as_deref().unwrap_or(&default_statuses) {
                if !statuses.contains(st) {
                    statuses.push(*st);
                }
            }
            let seq_bands = rules
                .score_bands
                .as_deref()
                .unwrap_or(&settings.warm_score_bands);
            if let Some(b) = bands.as_mut() {
                if seq_bands.is_empty() {
                    // An empty list is read as "any band": no band filter in SQL.
                    bands = None;
                } else {
                    b.extend(seq_bands.iter().cloned());
                }
            }
        }
        let cooling: HashSet<(LeadId, SequenceId)> = tx
            .ended_pairs_since(tenant, now - cooldown(&settings))
            .await?
            .into_iter()
            .collect();
        tx.commit().await?;

        let mut enrolled = 0u64;
        let mut after = None;
        loop {
            let mut tx = self.begin(Scope::Tenant(tenant)).await?;
            let leads = tx
                .enrollable_leads(tenant, &statuses, bands.as_deref(), after, SWEEP_PAGE)
                .await?;
            let Some(last) = leads.last() else {
                tx.commit().await?;
                break;
            };
            after = Some(last.id);
            let mut fx = Effects::default();
            for lead in &leads {
                if let Some(seq) = choose_sequence(lead, &sequences, &settings, now, |s| {
                    cooling.contains(&(lead.id, s))
                }) {
                    new_enrollment(&mut fx, lead, seq, EnrollmentSource::Auto, now);
                    enrolled += 1;
                }
            }
            tx.apply(&fx).await?;
            tx.commit().await?;
            if (leads.len() as u32) < SWEEP_PAGE {
                break;
            }
        }
        Ok(enrolled)
    }
}
