//! The harness of the behaviour suite: a fresh database per test on the backend the test names,
//! the engine on a manual clock, and short helpers for the objects every test builds.
//!
//! The suite itself is `tests/behaviour/`. Each test is written once with [`behaviour_test!`]
//! and runs once per backend (river's `riverdrivertest`, atuin's `tests-database`): on SQLite in
//! a temporary directory, and on PostgreSQL in a database of its own created on the server
//! named by `NURTURE_TEST_PG` (default `postgres://postgres@127.0.0.1:5432`) and dropped with
//! the harness, also when the test fails.

use std::sync::Arc;

use jiff::{SignedDuration, Timestamp};
use nurture_core::clock::ManualClock;
use nurture_core::domain::*;
use nurture_core::engine::*;
use nurture_core::rules::{EntryRules, ExitRules};
use nurture_core::store::{ActivityFilter, EnrollmentFilter, MessageFilter, Page, Store};
use nurture_core::{Engine, Principal};

/// A Monday, 09:00 UTC: where every test's clock starts.
pub const START: &str = "2026-01-05T09:00:00Z";

pub struct Harness {
    pub engine: Arc<Engine>,
    pub clock: Arc<ManualClock>,
    pub p: Principal,
    pub store: Arc<dyn Store>,
    /// What the database lives in, released after everything above (fields drop in order).
    _backing: Backing,
}

/// Where a harness's database lives; dropping it removes the database.
enum Backing {
    Sqlite(#[allow(dead_code)] tempfile::TempDir),
    Postgres(#[allow(dead_code)] Box<nurture_postgres::testing::TestDatabase>),
}

/// Writes a test once and runs it on every backend, each on its own fresh database:
/// `behaviour_test!(name, |h| async move { ... });` gives `name::sqlite` and `name::postgres`.
#[macro_export]
macro_rules! behaviour_test {
    ($name:ident, |$h:ident| $body:expr) => {
        mod $name {
            #[allow(unused_imports)]
            use super::*;
            #[tokio::test]
            async fn sqlite() {
                let $h = $crate::Harness::sqlite().await;
                $body.await;
            }
            #[tokio::test]
            async fn postgres() {
                let $h = $crate::Harness::postgres().await;
                $body.await;
            }
        }
    };
}

impl Harness {
    pub async fn sqlite() -> Harness {
        let dir = tempfile::tempdir().expect("temp dir");
        let url = format!("sqlite://{}/nurture.db", dir.path().display());
        let store: Arc<dyn Store> = Arc::new(
            nurture_sqlite::SqliteStore::connect(&url)
                .await
                .expect("open sqlite"),
        );
        Self::on(store, Backing::Sqlite(dir)).await
    }

    pub async fn postgres() -> Harness {
        let db = nurture_postgres::testing::TestDatabase::create()
            .await
            .expect("create a PostgreSQL test database");
        let store: Arc<dyn Store> = Arc::new(
            nurture_postgres::PgStore::connect_with(db.options())
                .await
                .expect("connect to PostgreSQL"),
        );
        Self::on(store, Backing::Postgres(Box::new(db))).await
    }

    /// A fresh harness on the same backend as `other`, for tests that compare two histories:
    /// each backend's run compares like with like.
    pub async fn same_backend(other: &Harness) -> Harness {
        match other._backing {
            Backing::Sqlite(_) => Harness::sqlite().await,
            Backing::Postgres(_) => Harness::postgres().await,
        }
    }

    async fn on(store: Arc<dyn Store>, backing: Backing) -> Harness {
        store.migrate().await.expect("migrate");
        let clock = Arc::new(ManualClock::new(START.parse().unwrap()));
        let engine = Arc::new(Engine::with_manual_clock(store.clone(), clock.clone()));
        let (tenant, _key) = engine.create_tenant("behaviour").await.expect("tenant");
        let p = engine
            .authenticate(&_key)
            .await
            .unwrap()
            .expect("key authenticates");
        assert_eq!(p.tenant_id, tenant.id);
        Harness {
            engine,
            clock,
            p,
            store,
            _backing: backing,
        }
    }

    /// A second tenant on the same engine.
    pub async fn other_tenant(&self) -> Principal {
        let (_, key) = self.engine.create_tenant("other").await.unwrap();
        self.engine.authenticate(&key).await.unwrap().unwrap()
    }

    pub fn now(&self) -> Timestamp {
        self.engine.now()
    }

    pub fn at(&self, hours_after_start: i64) -> Timestamp {
        START.parse::<Timestamp>().unwrap() + SignedDuration::from_hours(hours_after_start)
    }

    pub async fn advance_hours(&self, hours: i64) {
        let to = self.now() + SignedDuration::from_hours(hours);
        self.engine.advance_to(to).await.expect("advance");
    }

    pub async fn advance_days(&self, days: i64) {
        self.advance_hours(days * 24).await;
    }

    pub async fn settings(&self, patch: serde_json::Value) {
        self.engine
            .patch_settings(self.p, &patch)
            .await
            .expect("settings");
    }

    pub async fn template(
        &self,
        id: &str,
        subject: &str,
        body: &str,
        pre_approved: bool,
    ) -> Template {
        let input = TemplateInput {
            id: TemplateId::parse(id).unwrap(),
            name: id.into(),
            subject: subject.into(),
            body: body.into(),
            html_body: None,
            pre_approved,
        };
        self.engine
            .put_template(self.p, input, false)
            .await
            .expect("template")
            .0
    }

    /// A draft sequence (not activated).
    pub async fn draft(
        &self,
        name: &str,
        steps: Vec<Step>,
        entry_rules: Option<serde_json::Value>,
        exit_rules: Option<serde_json::Value>,
        priority: i32,
    ) -> Sequence {
        let input = SequenceInput {
            name: name.into(),
            priority,
            entry_rules: entry_rules
                .map(|r| EntryRules::parse(&r, "entry_rules").expect("entry rules")),
            exit_rules: exit_rules
                .map(|r| ExitRules::parse(&r, "exit_rules").expect("exit rules"))
                .unwrap_or_default(),
            steps,
        };
        self.engine
            .create_sequence(self.p, input)
            .await
            .expect("sequence")
    }

    /// An active sequence.
    pub async fn sequence(
        &self,
        name: &str,
        steps: Vec<Step>,
        entry_rules: Option<serde_json::Value>,
        exit_rules: Option<serde_json::Value>,
    ) -> Sequence {
        let s = self.draft(name, steps, entry_rules, exit_rules, 0).await;
        self.engine
            .activate_sequence(self.p, s.id)
            .await
            .expect("activate")
    }

    /// A warm, qualified lead named Ada; `change` adjusts it before it is written.
    pub async fn lead_with(&self, change: impl FnOnce(&mut LeadInput)) -> LeadWrite {
        let mut input = LeadInput {
            id: None,
            email: EmailAddress::parse(&format!("{}@example.com", uuid::Uuid::now_v7().simple()))
                .unwrap(),
            first_name: Some("Ada".into()),
            last_name: Some("Lovelace".into()),
            company: Some("Analytical Engines".into()),
            timezone: None,
            status: LeadStatus::Qualified,
            score: 60,
            score_band: Some("warm".into()),
            segments: vec![],
            attributes: serde_json::Map::new(),
            owner_id: None,
            do_not_contact: false,
            unsubscribed: false,
        };
        change(&mut input);
        self.engine.upsert_lead(self.p, input).await.expect("lead")
    }

    pub async fn lead(&self) -> LeadWrite {
        self.lead_with(|_| {}).await
    }

    /// `n` leads written straight to the store, as an import would, so that no write
    /// auto-enrolls them: only the sweep can. Lead `i` is `converted` when `converted(i)`, else
    /// a warm qualified lead like [`Harness::lead`]'s. Returns them in id order.
    pub async fn imported_leads(&self, n: usize, converted: impl Fn(usize) -> bool) -> Vec<Lead> {
        let now = self.now();
        let leads: Vec<Lead> = (0..n)
            .map(|i| Lead {
                first_name: Some(format!("Lead{i}")),
                company: Some("Imported".into()),
                status: if converted(i) {
                    LeadStatus::Converted
                } else {
                    LeadStatus::Qualified
                },
                score: 60,
                score_band: Some("warm".into()),
                ..Lead::new(
                    self.p.tenant_id,
                    EmailAddress::parse(&format!("import{i}@example.com")).unwrap(),
                    now,
                )
            })
            .collect();
        let mut tx = self
            .store
            .begin(nurture_core::store::Scope::Tenant(self.p.tenant_id))
            .await
            .unwrap();
        tx.insert_leads(&leads).await.unwrap();
        tx.commit().await.unwrap();
        leads
    }

    pub async fn event(&self, lead: LeadId, event: LeadEvent) -> LeadWrite {
        self.engine
            .lead_event(self.p, lead, event, None)
            .await
            .expect("event")
    }

    pub async fn patch(&self, lead: LeadId, patch: LeadPatch) -> LeadWrite {
        self.engine
            .patch_lead(self.p, lead, patch)
            .await
            .expect("patch")
    }

    pub async fn enrollments(&self, lead: LeadId) -> Vec<Enrollment> {
        let f = EnrollmentFilter {
            lead_id: Some(lead),
            ..Default::default()
        };
        self.engine
            .list_enrollments(self.p, &f, &Page::first(1000))
            .await
            .unwrap()
            .items
    }

    /// The lead's one enrollment (fails the test if it has another number).
    pub async fn only_enrollment(&self, lead: LeadId) -> Enrollment {
        let mut all = self.enrollments(lead).await;
        assert_eq!(
            all.len(),
            1,
            "expected exactly one enrollment, got {all:#?}"
        );
        all.pop().unwrap()
    }

    pub async fn activities(&self, lead: LeadId) -> Vec<Activity> {
        let f = ActivityFilter {
            lead_id: Some(lead),
            ..Default::default()
        };
        self.engine
            .list_activities(self.p, &f, &Page::first(1000))
            .await
            .unwrap()
            .items
    }

    /// The lead's activity types in order, without `lead_event`.
    pub async fn activity_types(&self, lead: LeadId) -> Vec<&'static str> {
        self.activities(lead)
            .await
            .iter()
            .map(|a| a.activity_type.as_str())
            .filter(|t| *t != "lead_event")
            .collect()
    }

    pub async fn messages(&self, lead: LeadId) -> Vec<Message> {
        let f = MessageFilter {
            lead_id: Some(lead),
            ..Default::default()
        };
        let mut m = self
            .engine
            .list_messages(self.p, &f, &Page::first(1000))
            .await
            .unwrap()
            .items;
        m.sort_by_key(|m| m.created_at);
        m
    }

    /// Hours after START at which the lead's messages were queued.
    pub async fn message_hours(&self, lead: LeadId) -> Vec<i64> {
        let start: Timestamp = START.parse().unwrap();
        self.messages(lead)
            .await
            .iter()
            .map(|m| (m.created_at - start).as_hours())
            .collect()
    }

    pub async fn pending_approvals(&self) -> Vec<Approval> {
        self.engine
            .list_approvals(self.p, Some(ApprovalStatus::Pending), &Page::first(1000))
            .await
            .unwrap()
            .items
    }

    pub async fn open_tasks(&self) -> Vec<Task> {
        self.engine
            .list_tasks(self.p, Some(TaskStatus::Open), &Page::first(1000))
            .await
            .unwrap()
            .items
    }
}

/// An email step.
pub fn email(order: i64, delay_hours: i64, template: &str) -> Step {
    Step {
        step_order: StepOrder::parse(order).unwrap(),
        channel: Channel::Email,
        delay_hours: DelayHours::parse(delay_hours).unwrap(),
        template_id: Some(TemplateId::parse(template).unwrap()),
        requires_human_approval: false,
        conditions: None,
    }
}

/// An email step that needs a reviewer.
pub fn reviewed_email(order: i64, delay_hours: i64, template: &str) -> Step {
    Step {
        requires_human_approval: true,
        ..email(order, delay_hours, template)
    }
}

pub fn step(order: i64, delay_hours: i64, channel: Channel) -> Step {
    Step {
        step_order: StepOrder::parse(order).unwrap(),
        channel,
        delay_hours: DelayHours::parse(delay_hours).unwrap(),
        template_id: None,
        requires_human_approval: false,
        conditions: None,
    }
}
