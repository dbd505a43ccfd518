//! The scheduler (issue #2, item 4): claims due enrollments in batches and commits each batch's
//! effects in one transaction. One code path serves both clocks: the real clock calls
//! [`Engine::run_due`] with `floor = now`, the manual clock calls it window by window from
//! [`Engine::advance_to`] with `floor` = the instant the advance started, so every item runs at
//! its own due instant (or at the advance's start if that had already passed).

use std::collections::HashMap;
use std::time::Duration;

use jiff::{SignedDuration, Timestamp};

use super::Engine;
use super::steps::{StepInputs, execute_step};
use crate::clock::next_hour_after;
use crate::domain::*;
use crate::error::{Error, Result};
use crate::render::Renderer;
use crate::settings::TenantSettings;
use crate::store::{Effects, Scope};

/// The default of [`SchedulerConfig::max_concurrent_batches`]: a small database server's cores.
pub const DEFAULT_MAX_CONCURRENT_BATCHES: u32 = 4;

#[derive(Debug, Clone)]
pub struct SchedulerConfig {
    /// Enrollments claimed and committed per transaction.
    pub batch_size: u32,
    /// The longest the real-clock loop sleeps without looking (a fallback to wake-ups).
    pub max_idle: Duration,
    /// How many batches may run at once against the database, across all processes
    /// ([`crate::store::Tx::enter_batch_slot`]; SQLite runs one at a time anyway). About the
    /// database server's cores: beyond that, more workers add contention, not throughput.
    pub max_concurrent_batches: u32,
}

impl Default for SchedulerConfig {
    fn default() -> Self {
        SchedulerConfig {
            batch_size: 1000,
            max_idle: Duration::from_secs(60),
            max_concurrent_batches: DEFAULT_MAX_CONCURRENT_BATCHES,
        }
    }
}

/// What one call of [`Engine::run_due`] did.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct BatchReport {
    pub steps: u64,
    pub batches: u64,
    /// (channel or "exit"/"complete", outcome activity type) -> count, for metrics.
    pub outcomes: HashMap<String, u64>,
    /// Due → executed lag of every step, in seconds.
    pub lags: Vec<f64>,
}

impl Engine {
    /// Runs every step due at or before `until`, batch by batch, until none is left. Each item
    /// runs at `max(its due instant, floor)`.
    pub async fn run_due(&self, until: Timestamp, floor: Timestamp) -> Result<BatchReport> {
        let mut report = BatchReport::default();
        loop {
            let n = self.run_batch(until, floor, &mut report).await?;
            if n == 0 {
                return Ok(report);
            }
        }
    }

    /// Claims one batch, executes it and commits it. Returns how many steps ran.
    async fn run_batch(
        &self,
        until: Timestamp,
        floor: Timestamp,
        report: &mut BatchReport,
    ) -> Result<usize> {
        let t0 = std::time::Instant::now(); // phase timings for the debug log
        let mut tx = self.begin(Scope::System).await?;
        tx.enter_batch_slot(self.config.max_concurrent_batches)
            .await?;
        let claimed = tx.claim_due(until, self.config.batch_size).await?;
        let t_claim = t0.elapsed();
        if claimed.is_empty() {
            tx.commit().await?;
            return Ok(0);
        }

        // Load what the batch needs, set at a time.
        let lead_ids: Vec<(TenantId, LeadId)> =
            claimed.iter().map(|e| (e.tenant_id, e.lead_id)).collect();
        let mut seq_ids: Vec<(TenantId, SequenceId)> = claimed
            .iter()
            .map(|e| (e.tenant_id, e.sequence_id))
            .collect();
        seq_ids.sort();
        seq_ids.dedup();
        let mut tenant_ids: Vec<TenantId> = claimed.iter().map(|e| e.tenant_id).collect();
        tenant_ids.sort();
        tenant_ids.dedup();
        let leads = tx.leads_by_id(&lead_ids).await?;
        let sequences = tx.sequences_by_id(&seq_ids).await?;
        let mut settings: HashMap<TenantId, TenantSettings> = HashMap::new();
        for t in &tenant_ids {
            let s = tx
                .get_tenant(*t)
                .await?
                .ok_or(Error::NotFound("tenant"))?
                .settings;
            settings.insert(*t, s);
        }
        let needs_templates = claimed.iter().any(|e| {
            sequences
                .get(&e.sequence_id)
                .and_then(|s| s.step(e.current_step_order))
                .is_some_and(|st| st.template_id.is_some())
        });
        let templates = if needs_templates {
            tx.templates_of(&tenant_ids).await?
        } else {
            HashMap::new()
        };
        let max_window = settings
            .values()
            .map(|s| s.message_window_hours)
            .max()
            .unwrap_or(0);
        let since = floor.min(
            claimed
                .iter()
                .filter_map(|e| e.next_step_on)
                .min()
                .unwrap_or(floor),
        ) - SignedDuration::from_hours(max_window as i64);
        let emailing: Vec<(TenantId, LeadId)> = claimed
            .iter()
            .filter(|e| {
                sequences
                    .get(&e.sequence_id)
                    .and_then(|s| s.step(e.current_step_order))
                    .is_some_and(|st| st.channel == Channel::Email)
            })
            .map(|e| (e.tenant_id, e.lead_id))
            .collect();
        let sent = if emailing.is_empty() {
            HashMap::new()
        } else {
            tx.outbound_since(&emailing, since).await?
        };
        let approval_ids: Vec<(TenantId, ApprovalId)> = claimed
            .iter()
            .filter_map(|e| e.approved_approval_id.map(|a| (e.tenant_id, a)))
            .collect();
        let approvals = if approval_ids.is_empty() {
            HashMap::new()
        } else {
            tx.approvals_by_id(&approval_ids).await?
        };

        let t_load = t0.elapsed();
        let mut fx = Effects::default();
        let mut renderer = Renderer::default();
        let no_sends: Vec<Timestamp> = Vec::new();
        let n = claimed.len();
        for e in claimed {
            let due = e.next_step_on.unwrap_or(floor);
            let now = due.max(floor);
            let (Some(lead), Some(sequence), Some(settings)) = (
                leads.get(&e.lead_id),
                sequences.get(&e.sequence_id),
                settings.get(&e.tenant_id),
            ) else {
                return Err(Error::store(format!(
                    "enrollment {} refers to a missing lead or sequence",
                    e.id
                )));
            };
            let template = sequence
                .step(e.current_step_order)
                .and_then(|s| s.template_id.as_ref())
                .and_then(|id| templates.get(&(e.tenant_id, id.clone())));
            let inputs = StepInputs {
                settings,
                sequence,
                lead,
                template,
                sent: sent.get(&e.lead_id).map(Vec::as_slice).unwrap_or(&no_sends),
                approved: e.approved_approval_id.and_then(|id| approvals.get(&id)),
            };
            let channel = sequence
                .step(e.current_step_order)
                .map(|s| s.channel.as_str())
                .unwrap_or("none");
            let before = fx.activities.len();
            execute_step(&mut fx, &mut renderer, e, &inputs, now);
            let outcome = fx.activities[before..]
                .iter()
                .map(|a| a.activity_type)
                .find(|t| {
                    matches!(
                        t,
                        ActivityType::NurtureStepExecuted
                            | ActivityType::NurtureStepSkipped
                            | ActivityType::NurtureExited
                            | ActivityType::NurtureCompleted
                            | ActivityType::NurtureStepScheduled
                            | ActivityType::NurturePaused
                    )
                })
                .map(|t| t.as_str())
                .unwrap_or("none");
            *report
                .outcomes
                .entry(format!("{channel}:{outcome}"))
                .or_default() += 1;
            report.lags.push((now - due).as_secs_f64());
        }
        let t_plan = t0.elapsed();
        tx.apply(&fx).await?;
        let t_apply = t0.elapsed();
        tx.commit().await?;
        tracing::debug!(
            steps = n,
            claim_ms = t_claim.as_secs_f64() * 1e3,
            load_ms = (t_load - t_claim).as_secs_f64() * 1e3,
            plan_ms = (t_plan - t_load).as_secs_f64() * 1e3,
            write_ms = (t_apply - t_plan).as_secs_f64() * 1e3,
            commit_ms = (t0.elapsed() - t_apply).as_secs_f64() * 1e3,
            "batch committed"
        );
        report.steps += n as u64;
        report.batches += 1;
        Ok(n)
    }

    /// Manual clock: moves time to `target`, running everything that falls due on the way in
    /// time order, and the hourly sweep at every whole hour passed (SPEC section 5). Work due
    /// before the next sweep runs before it, so advancing 30 days at once and 30 times one day
    /// give the same history.
    pub async fn advance_to(&self, target: Timestamp) -> Result<Timestamp> {
        let Some(manual) = &self.manual else {
            return Err(Error::Unprocessable("the clock is not manual".into()));
        };
        let _one_at_a_time = self.advancing.lock().await;
        let target = crate::clock::truncate_to_micros(target);
        let start = self.now();
        if target < start {
            return Err(Error::invalid(
                "to",
                format!("the clock cannot go back: it is {start}"),
            ));
        }
        loop {
            let next_sweep = *self.next_sweep.lock().await;
            let window_end = target.min(next_sweep);
            self.run_due(window_end, start).await?;
            if next_sweep > target {
                break;
            }
            let at = next_sweep.max(start);
            manual.set(at);
            self.sweep(at).await?;
            *self.next_sweep.lock().await = next_hour_after(next_sweep);
        }
        manual.set(target);
        Ok(target)
    }

    /// Real clock: runs due work and the hourly sweep until `stop` turns true, sleeping until
    /// the next due instant or a wake-up from a write (never busy-polling). A batch that has
    /// begun is always finished and committed before it returns.
    pub async fn run_scheduler(&self, mut stop: tokio::sync::watch::Receiver<bool>) -> Result<()> {
        if let Err(e) = self.store.listen_due(self.wake.clone()).await {
            // Not fatal: the timer still wakes this scheduler, only later.
            tracing::warn!(error = %e, "cannot listen for due work from other processes");
        }
        let mut failures = 0u32;
        loop {
            if *stop.borrow() {
                return Ok(());
            }
            let sleep_for = match self.scheduler_tick(&stop).await {
                Ok(next) => {
                    failures = 0;
                    next
                }
                Err(e) => {
                    // The database may be gone for a while: back off, keep going.
                    failures = failures.saturating_add(1);
                    let backoff = Duration::from_millis(200 * 2u64.saturating_pow(failures.min(8)));
                    tracing::error!(error = %e, retry_in_ms = backoff.as_millis() as u64, "scheduler tick failed");
                    backoff.min(self.config.max_idle)
                }
            };
            tokio::select! {
                _ = stop.wait_for(|s| *s) => return Ok(()),
                _ = self.wake.notified() => {}
                _ = tokio::time::sleep(sleep_for) => {}
            }
        }
    }

    /// One pass of the real-clock loop: due work batch by batch, each at the current time, then
    /// the sweep if its hour has come. Returns how long to sleep.
    async fn scheduler_tick(&self, stop: &tokio::sync::watch::Receiver<bool>) -> Result<Duration> {
        let mut report = BatchReport::default();
        while !*stop.borrow() {
            let now = self.now();
            if self.run_batch(now, now, &mut report).await? == 0 {
                break;
            }
        }
        if report.steps > 0 {
            tracing::debug!(
                steps = report.steps,
                batches = report.batches,
                "ran due steps"
            );
        }
        crate::telemetry::record_batch(&report);
        let now = self.now();
        let next_sweep = *self.next_sweep.lock().await;
        if now >= next_sweep && !*stop.borrow() {
            let n = self.sweep(now).await?;
            tracing::info!(enrolled = n, "enrollment sweep");
            *self.next_sweep.lock().await = next_hour_after(now);
        }
        let mut tx = self.store.begin_read(Scope::System).await?;
        let next_due = tx.next_due_at().await?;
        let backlog = tx.due_count(self.now()).await?;
        tx.commit().await?;
        crate::telemetry::record_backlog(backlog);
        let next_sweep = *self.next_sweep.lock().await;
        let wake_at = next_due.map_or(next_sweep, |d| d.min(next_sweep));
        let until = (wake_at - self.now()).max(SignedDuration::ZERO);
        let until = Duration::try_from(until).unwrap_or(Duration::ZERO);
        Ok(until.min(self.config.max_idle))
    }
}
