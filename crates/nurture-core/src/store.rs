//! The storage boundary: one trait, one implementation per backend crate (`nurture-sqlite`,
//! later `nurture-postgres`), picked from the database URL's scheme.
//!
//! The engine does all of its work inside a [`Tx`]: one transaction per command, and one per
//! scheduler batch, so writes that belong together commit together. Reads of one row are plain
//! methods; the scheduler's writes go through [`Effects`], a batch of rows that each backend
//! writes with a handful of multi-row statements (SPEC section 7: the speed comes from
//! set-at-a-time work).

use std::collections::HashMap;

use async_trait::async_trait;
use jiff::Timestamp;

use crate::domain::*;
use crate::error::Result;
use crate::settings::TenantSettings;

/// Whose rows a transaction may touch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    Tenant(TenantId),
    /// Work that spans tenants by nature: the scheduler's claim, the sweep's tenant list, the
    /// API-key lookup that finds the tenant.
    System,
}

/// A page request: at most `limit` items after the opaque key `after` (a key the store handed
/// out as `Listed::next`).
#[derive(Debug, Clone, Default)]
pub struct Page {
    pub limit: u32,
    pub after: Option<String>,
}

impl Page {
    pub const DEFAULT_LIMIT: u32 = 50;
    pub const MAX_LIMIT: u32 = 1000;
    pub fn first(limit: u32) -> Self {
        Page { limit, after: None }
    }
}

/// One page of a list and the key to the next page (`None` on the last).
#[derive(Debug, Clone)]
pub struct Listed<T> {
    pub items: Vec<T>,
    pub next: Option<String>,
}

#[derive(Debug, Clone, Default)]
pub struct EnrollmentFilter {
    pub lead_id: Option<LeadId>,
    pub sequence_id: Option<SequenceId>,
    pub status: Option<EnrollmentStatus>,
}

#[derive(Debug, Clone, Default)]
pub struct ActivityFilter {
    pub lead_id: Option<LeadId>,
    pub enrollment_id: Option<EnrollmentId>,
    pub activity_type: Option<ActivityType>,
}

#[derive(Debug, Clone, Default)]
pub struct MessageFilter {
    pub lead_id: Option<LeadId>,
    pub status: Option<MessageStatus>,
}

/// An enrollment as it should be after the write, and the version it had when read: the write
/// happens only if the row still has that version (river's completer), otherwise the whole
/// transaction fails and nothing of the batch is written.
#[derive(Debug, Clone)]
pub struct EnrollmentUpdate {
    pub enrollment: Enrollment,
    pub expected_version: i64,
}

/// The version guard's verdict on a batch of [`EnrollmentUpdate`]s, of which `done` found their
/// row at the version they were read at: any fewer than all is a conflict, and the caller's
/// transaction (which the error rolls back) writes nothing.
pub fn all_updated(done: u64, updates: usize) -> Result<()> {
    if done == updates as u64 {
        return Ok(());
    }
    Err(crate::error::Error::conflict(format!(
        "{} of {updates} enrollments changed while this write was prepared; retry",
        (updates as u64).saturating_sub(done)
    )))
}

/// Rows to write in one go. Every command and every scheduler batch ends in one `apply`.
#[derive(Debug, Clone, Default)]
pub struct Effects {
    pub new_enrollments: Vec<Enrollment>,
    pub enrollment_updates: Vec<EnrollmentUpdate>,
    /// (tenant, lead, instant): the lead's `last_outbound_at` moves to the instant.
    pub lead_outbound: Vec<(TenantId, LeadId, Timestamp)>,
    pub messages: Vec<Message>,
    pub new_tasks: Vec<Task>,
    pub task_updates: Vec<Task>,
    pub new_approvals: Vec<Approval>,
    pub approval_updates: Vec<Approval>,
    pub activities: Vec<Activity>,
}

impl Effects {
    pub fn is_empty(&self) -> bool {
        self.new_enrollments.is_empty()
            && self.enrollment_updates.is_empty()
            && self.lead_outbound.is_empty()
            && self.messages.is_empty()
            && self.new_tasks.is_empty()
            && self.task_updates.is_empty()
            && self.new_approvals.is_empty()
            && self.approval_updates.is_empty()
            && self.activities.is_empty()
    }
}

/// The per-sequence funnel (`GET /v1/sequences/{id}/stats`).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SequenceStats {
    pub enrolled: i64,
    pub active: i64,
    pub paused: i64,
    pub completed: i64,
    /// step_order -> enrollments that reached (executed or skipped) the step.
    pub reached_step: Vec<(i64, i64)>,
    pub replied: i64,
    pub converted: i64,
    pub exited_by_reason: Vec<(String, i64)>,
}

/// A stored `Idempotency-Key`.
#[derive(Debug, Clone, PartialEq)]
pub struct IdempotencyKey {
    /// The hash of the request that holds the key.
    pub request_hash: Vec<u8>,
    /// Its answer, once it finished.
    pub saved: Option<SavedResponse>,
    /// Until when its request may run before a retry takes the key over (`None` once saved).
    pub locked_until: Option<Timestamp>,
}

/// What an `Idempotency-Key` holds when a request arrives.
#[derive(Debug, Clone, PartialEq)]
pub enum KeyState {
    /// The key is this request's now: run it, then save or release.
    Reserved,
    /// A request with the key finished; its answer.
    Saved(SavedResponse),
    /// A request with the key is running (in this or another process).
    InFlight { request_hash: Vec<u8> },
}

/// The first answer to a request with an `Idempotency-Key`, replayed to its retries.
#[derive(Debug, Clone, PartialEq)]
pub struct SavedResponse {
    pub request_hash: Vec<u8>,
    pub status: u16,
    pub body: Vec<u8>,
}

#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// `sqlite` or `postgres`.
    fn backend(&self) -> &'static str;
    /// Apply the versioned migrations that are not applied yet.
    async fn migrate(&self) -> Result<()>;
    /// Begin a transaction that may write, for one tenant or (scheduler, sweep worklist, key
    /// lookup) for the system. A backend with row-level security sets the tenant per
    /// transaction from `scope`; the engine passes the tenant even where a backend ignores it.
    async fn begin(&self, scope: Scope) -> Result<Box<dyn Tx>>;
    /// Begin a transaction that only reads: one consistent view of the database that never
    /// waits for, nor holds up, a writer (SQLite: a deferred `BEGIN`, where `begin` takes the
    /// one write lock at once; PostgreSQL: `BEGIN READ ONLY`). Writing through it fails.
    async fn begin_read(&self, scope: Scope) -> Result<Box<dyn Tx>> {
        self.begin(scope).await
    }
    /// Is the database reachable? (`/readyz`)
    async fn ping(&self) -> Result<()>;

    /// Tells every process on this database that work may have come due sooner than it
    /// planned (PostgreSQL: `NOTIFY`). A hint only: schedulers also wake on a timer. The
    /// embedded backend has one process, whose in-process wake-up is enough.
    async fn announce_due(&self) -> Result<()> {
        Ok(())
    }

    /// Starts a background listener that wakes `wake` whenever another process announces due
    /// work, until the store is dropped (PostgreSQL: `LISTEN`, reconnecting with backoff), and
    /// returns once it listens. Does nothing by default.
    async fn listen_due(&self, wake: std::sync::Arc<tokio::sync::Notify>) -> Result<()> {
        let _ = wake;
        Ok(())
    }
}

/// One database transaction. Dropping it without `commit` rolls back.
#[async_trait]
pub trait Tx: Send {
    async fn commit(self: Box<Self>) -> Result<()>;

    // -- tenants, users, keys, idempotency ------------------------------------------------
    async fn insert_tenant(&mut self, tenant: &Tenant) -> Result<()>;
    async fn get_tenant(&mut self, id: TenantId) -> Result<Option<Tenant>>;
    async fn update_tenant_settings(
        &mut self,
        id: TenantId,
        settings: &TenantSettings,
    ) -> Result<()>;
    async fn insert_user(&mut self, user: &User) -> Result<()>;
    async fn insert_api_key(&mut self, key: &ApiKeyRecord) -> Result<()>;
    async fn find_api_key(&mut self, prefix: &str) -> Result<Option<ApiKeyRecord>>;
    /// Reserves `key` for a request with `request_hash` until `lease_until`; false if the key
    /// is taken (reserved or saved) already. (The `Idempotency-Key` protocol is
    /// [`crate::Engine::reserve_idempotency_key`].)
    async fn insert_idempotency_key(
        &mut self,
        tenant: TenantId,
        key: &str,
        request_hash: &[u8],
        now: Timestamp,
        lease_until: Timestamp,
    ) -> Result<bool>;
    async fn get_idempotency_key(
        &mut self,
        tenant: TenantId,
        key: &str,
    ) -> Result<Option<IdempotencyKey>>;
    /// Extends the lease of a key without an answer to `lease_until`, if it had run out at
    /// `now`; false if it had not (or the key is gone or answered).
    async fn take_over_idempotency_key(
        &mut self,
        tenant: TenantId,
        key: &str,
        now: Timestamp,
        lease_until: Timestamp,
    ) -> Result<bool>;
    /// Completes a reservation with the answer given.
    async fn save_response(
        &mut self,
        tenant: TenantId,
        key: &str,
        saved: &SavedResponse,
    ) -> Result<()>;
    /// Gives up a reservation (the request failed with a server error: a retry may run it).
    async fn release_idempotency_key(&mut self, tenant: TenantId, key: &str) -> Result<()>;

    // -- templates --------------------------------------------------------------------------
    /// Insert, or replace the content of the template with this id.
    async fn upsert_template(&mut self, template: &Template) -> Result<()>;
    async fn get_template(&mut self, tenant: TenantId, id: &TemplateId)
    -> Result<Option<Template>>;
    async fn list_templates(&mut self, tenant: TenantId, page: &Page) -> Result<Listed<Template>>;
    /// Every template of the given tenants, keyed by (tenant, id): what a scheduler batch renders.
    async fn templates_of(
        &mut self,
        tenants: &[TenantId],
    ) -> Result<HashMap<(TenantId, TemplateId), Template>>;

    // -- sequences --------------------------------------------------------------------------
    async fn insert_sequence(&mut self, sequence: &Sequence) -> Result<()>;
    /// Writes name, status, priority, rules and steps (replacing them), if the stored version
    /// is `sequence.version - 1`; the caller bumps `version`.
    async fn update_sequence(&mut self, sequence: &Sequence) -> Result<()>;
    async fn get_sequence(&mut self, tenant: TenantId, id: SequenceId) -> Result<Option<Sequence>>;
    async fn list_sequences(&mut self, tenant: TenantId, page: &Page) -> Result<Listed<Sequence>>;
    /// Sequences by (tenant, id), steps included: what a scheduler batch needs. Every lookup
    /// carries the tenant, so a backend distributed by tenant can route it.
    async fn sequences_by_id(
        &mut self,
        keys: &[(TenantId, SequenceId)],
    ) -> Result<HashMap<SequenceId, Sequence>>;
    /// Active sequences with entry rules, highest priority first, then oldest (SPEC 4 Enrollment).
    async fn auto_enroll_sequences(&mut self, tenant: TenantId) -> Result<Vec<Sequence>>;
    /// Tenants that have at least one active sequence with entry rules (the sweep's worklist).
    async fn tenants_with_auto_enroll(&mut self) -> Result<Vec<TenantId>>;
    async fn sequence_stats(&mut self, tenant: TenantId, id: SequenceId) -> Result<SequenceStats>;

    // -- leads --------------------------------------------------------------------------------
    async fn insert_lead(&mut self, lead: &Lead) -> Result<()>;
    async fn insert_leads(&mut self, leads: &[Lead]) -> Result<()>;
    async fn update_lead(&mut self, lead: &Lead) -> Result<()>;
    async fn get_lead(&mut self, tenant: TenantId, id: LeadId) -> Result<Option<Lead>>;
    async fn leads_by_id(&mut self, keys: &[(TenantId, LeadId)]) -> Result<HashMap<LeadId, Lead>>;
    /// Leads that the sweep may enroll: not do-not-contact, not unsubscribed, not bounced,
    /// with a status in `statuses` and (when given) a score band in `score_bands`, and with no
    /// active or paused enrollment; in id order after
    /// `after`, at most `limit`.
    async fn enrollable_leads(
        &mut self,
        tenant: TenantId,
        statuses: &[LeadStatus],
        score_bands: Option<&[String]>,
        after: Option<LeadId>,
        limit: u32,
    ) -> Result<Vec<Lead>>;
    /// Outbound message times per lead since `since` (the frequency cap's input).
    async fn outbound_since(
        &mut self,
        leads: &[(TenantId, LeadId)],
        since: Timestamp,
    ) -> Result<HashMap<LeadId, Vec<Timestamp>>>;

    // -- enrollments --------------------------------------------------------------------------
    async fn get_enrollment(
        &mut self,
        tenant: TenantId,
        id: EnrollmentId,
    ) -> Result<Option<Enrollment>>;
    async fn live_enrollment(
        &mut self,
        tenant: TenantId,
        lead: LeadId,
    ) -> Result<Option<Enrollment>>;
    /// The most recent enrollment of the lead in the sequence that ended after `since`
    /// (the re-enrollment cooldown).
    async fn ended_since(
        &mut self,
        tenant: TenantId,
        lead: LeadId,
        sequence: SequenceId,
        since: Timestamp,
    ) -> Result<Option<Enrollment>>;
    /// (lead, sequence) pairs of the tenant whose enrollment ended after `since`.
    async fn ended_pairs_since(
        &mut self,
        tenant: TenantId,
        since: Timestamp,
    ) -> Result<Vec<(LeadId, SequenceId)>>;
    async fn list_enrollments(
        &mut self,
        tenant: TenantId,
        filter: &EnrollmentFilter,
        page: &Page,
    ) -> Result<Listed<Enrollment>>;
    async fn live_enrollments_of_sequence(
        &mut self,
        tenant: TenantId,
        sequence: SequenceId,
    ) -> Result<Vec<Enrollment>>;
    /// Claims up to `limit` active enrollments of active sequences due at or before `until`,
    /// oldest due first, across tenants. The claim holds until the transaction ends.
    async fn claim_due(&mut self, until: Timestamp, limit: u32) -> Result<Vec<Enrollment>>;
    /// Waits until fewer than `slots` scheduler batches are running against this database, in
    /// every process on it, then holds a slot until this transaction ends (or its session
    /// does). More batches at once than the database has cores only contend (for the WAL,
    /// for buffers, for the CPU): a slot bounds how many run, however many workers there are.
    async fn enter_batch_slot(&mut self, slots: u32) -> Result<()>;
    /// When the earliest active enrollment of an active sequence comes due.
    async fn next_due_at(&mut self) -> Result<Option<Timestamp>>;
    /// Active enrollments of active sequences due at or before `at` (the due backlog).
    async fn due_count(&mut self, at: Timestamp) -> Result<i64>;

    // -- approvals, tasks, messages, activities ------------------------------------------------
    async fn get_approval(&mut self, tenant: TenantId, id: ApprovalId) -> Result<Option<Approval>>;
    async fn list_approvals(
        &mut self,
        tenant: TenantId,
        status: Option<ApprovalStatus>,
        page: &Page,
    ) -> Result<Listed<Approval>>;
    async fn approvals_by_id(
        &mut self,
        keys: &[(TenantId, ApprovalId)],
    ) -> Result<HashMap<ApprovalId, Approval>>;
    async fn get_task(&mut self, tenant: TenantId, id: TaskId) -> Result<Option<Task>>;
    async fn list_tasks(
        &mut self,
        tenant: TenantId,
        status: Option<TaskStatus>,
        page: &Page,
    ) -> Result<Listed<Task>>;
    /// Pending approvals and open tasks of an enrollment (cancelled when it ends).
    async fn open_work(
        &mut self,
        tenant: TenantId,
        enrollment: EnrollmentId,
    ) -> Result<(Vec<Approval>, Vec<Task>)>;
    async fn get_message(&mut self, tenant: TenantId, id: MessageId) -> Result<Option<Message>>;
    async fn list_messages(
        &mut self,
        tenant: TenantId,
        filter: &MessageFilter,
        page: &Page,
    ) -> Result<Listed<Message>>;
    /// Activities in time order (`at`, then id).
    async fn list_activities(
        &mut self,
        tenant: TenantId,
        filter: &ActivityFilter,
        page: &Page,
    ) -> Result<Listed<Activity>>;

    // -- the batch writer -------------------------------------------------------------------------
    async fn apply(&mut self, effects: &Effects) -> Result<()>;
}
