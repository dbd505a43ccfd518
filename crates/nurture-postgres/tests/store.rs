//! What the PostgreSQL store promises beyond the behaviour suite (issue #4): isolation in the
//! database, the role it runs as, disjoint claims between workers, exact instants, and a clear
//! error when the server is not there. Each test runs on a database of its own
//! (`NURTURE_TEST_PG`, default `postgres://postgres@127.0.0.1:5432`), dropped afterwards.

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use jiff::{SignedDuration, Timestamp};
use nurture_core::clock::ManualClock;
use nurture_core::domain::*;
use nurture_core::engine::*;
use nurture_core::error::Error;
use nurture_core::rules::ExitRules;
use nurture_core::store::{
    Effects, EnrollmentFilter, EnrollmentUpdate, Page, SavedResponse, Scope, Store,
};
use nurture_core::{Engine, Principal};
use nurture_postgres::testing::TestDatabase;
use nurture_postgres::{PgStore, Ts};
use sqlx::postgres::PgConnectOptions;
use sqlx::{AssertSqlSafe, Connection, PgConnection, Row};
use uuid::Uuid;

/// Every table that holds a tenant's rows (`tenants` itself by its id).
const TENANT_TABLES: &[&str] = &[
    "tenants",
    "users",
    "api_keys",
    "idempotency_keys",
    "leads",
    "templates",
    "lead_nurture_sequences",
    "lead_nurture_sequence_steps",
    "lead_nurture_enrollments",
    "approvals",
    "tasks",
    "messages",
    "activities",
];

const START: &str = "2026-01-05T09:00:00Z";

fn start() -> Timestamp {
    START.parse().unwrap()
}

struct Fixture {
    db: TestDatabase,
    store: Arc<PgStore>,
    engine: Engine,
}

async fn fixture() -> Fixture {
    let db = TestDatabase::create().await.expect("test database");
    let store = Arc::new(db.store().await.expect("store"));
    let engine = Engine::with_manual_clock(store.clone(), Arc::new(ManualClock::new(start())));
    Fixture { db, store, engine }
}

/// A connection as the test server's user (a superuser), as a raw client would open one.
async fn raw(db: &TestDatabase) -> PgConnection {
    PgConnection::connect_with(&db.options())
        .await
        .expect("raw connection")
}

async fn tenant(engine: &Engine, name: &str) -> Principal {
    let (_, key) = engine.create_tenant(name).await.unwrap();
    engine
        .authenticate(&key)
        .await
        .unwrap()
        .expect("the key authenticates")
}

fn lead_input() -> LeadInput {
    LeadInput {
        id: None,
        email: EmailAddress::parse(&format!("{}@example.com", Uuid::now_v7().simple())).unwrap(),
        first_name: Some("Ada".into()),
        last_name: None,
        company: None,
        timezone: None,
        status: LeadStatus::Qualified,
        score: 60,
        score_band: Some("warm".into()),
        segments: vec!["a".into(), "b".into()],
        attributes: serde_json::Map::new(),
        owner_id: None,
        do_not_contact: false,
        unsubscribed: false,
    }
}

fn step(order: i64, channel: Channel, template: Option<&str>, reviewed: bool) -> Step {
    Step {
        step_order: StepOrder::parse(order).unwrap(),
        channel,
        delay_hours: DelayHours::parse(0).unwrap(),
        template_id: template.map(|t| TemplateId::parse(t).unwrap()),
        requires_human_approval: reviewed,
        conditions: None,
    }
}

async fn active_sequence(engine: &Engine, p: Principal, name: &str, steps: Vec<Step>) -> Sequence {
    let input = SequenceInput {
        name: name.into(),
        priority: 0,
        entry_rules: None,
        exit_rules: ExitRules::default(),
        steps,
    };
    let s = engine.create_sequence(p, input).await.unwrap();
    engine.activate_sequence(p, s.id).await.unwrap()
}

/// A tenant with a row in every table: a message, an approval, a task, activities, an
/// idempotency key (users and keys come with the tenant).
async fn busy_tenant(engine: &Engine, name: &str) -> Principal {
    let p = tenant(engine, name).await;
    let template = TemplateInput {
        id: TemplateId::parse("hello").unwrap(),
        name: "Hello".into(),
        subject: "Hello {{ first_name }}".into(),
        body: "Hi".into(),
        html_body: None,
        pre_approved: false,
    };
    engine.put_template(p, template, false).await.unwrap();
    let mail = active_sequence(
        engine,
        p,
        "mail",
        vec![step(1, Channel::Email, Some("hello"), false)],
    )
    .await;
    let review = active_sequence(
        engine,
        p,
        "review",
        vec![step(1, Channel::Email, Some("hello"), true)],
    )
    .await;
    let call = active_sequence(engine, p, "call", vec![step(1, Channel::Task, None, false)]).await;
    for s in [&mail, &review, &call] {
        let lead = engine.upsert_lead(p, lead_input()).await.unwrap().lead;
        engine.enroll(p, lead.id, s.id).await.unwrap();
    }
    let saved = SavedResponse {
        request_hash: vec![1, 2, 3],
        status: 201,
        body: b"{}".to_vec(),
    };
    engine
        .reserve_idempotency_key(p, "key-1", &saved.request_hash)
        .await
        .unwrap();
    engine.save_response(p, "key-1", &saved).await.unwrap();
    p
}

async fn count(conn: &mut PgConnection, sql: &str) -> i64 {
    sqlx::query_scalar::<_, i64>(AssertSqlSafe(sql.to_string()))
        .fetch_one(conn)
        .await
        .unwrap()
}

fn tenant_column(table: &str) -> &'static str {
    if table == "tenants" {
        "id"
    } else {
        "tenant_id"
    }
}

#[tokio::test]
async fn without_the_tenant_set_a_query_sees_no_rows_and_with_it_only_its_own() {
    let f = fixture().await;
    let a = busy_tenant(&f.engine, "a").await;
    let b = busy_tenant(&f.engine, "b").await;
    f.engine
        .advance_to(start() + SignedDuration::from_hours(1))
        .await
        .unwrap();

    let mut conn = raw(&f.db).await;
    sqlx::raw_sql("SET ROLE nurture_app")
        .execute(&mut conn)
        .await
        .unwrap();

    // The rows are there: system work sees both tenants in every table.
    let mut tx = conn.begin().await.unwrap();
    sqlx::query("SELECT set_config('nurture.scope', 'system', true)")
        .execute(&mut *tx)
        .await
        .unwrap();
    for table in TENANT_TABLES {
        let col = tenant_column(table);
        let tenants = count(
            &mut tx,
            &format!("SELECT count(DISTINCT {col}) FROM {table}"),
        )
        .await;
        assert_eq!(tenants, 2, "{table} has rows of both tenants");
    }
    tx.commit().await.unwrap();

    // Nothing set (and the system scope above was transaction-local): no rows at all.
    for table in TENANT_TABLES {
        assert_eq!(
            count(&mut conn, &format!("SELECT count(*) FROM {table}")).await,
            0,
            "{table} without a tenant"
        );
    }

    // Tenant A set: only A's rows, and nothing can be written for B.
    let mut tx = conn.begin().await.unwrap();
    sqlx::query("SELECT set_config('nurture.tenant_id', $1, true)")
        .bind(a.tenant_id.to_string())
        .execute(&mut *tx)
        .await
        .unwrap();
    for table in TENANT_TABLES {
        let col = tenant_column(table);
        let all = count(&mut tx, &format!("SELECT count(*) FROM {table}")).await;
        let own = count(
            &mut tx,
            &format!(
                "SELECT count(*) FROM {table} WHERE {col} = '{}'",
                a.tenant_id
            ),
        )
        .await;
        assert!(all > 0, "{table}: A sees its own rows");
        assert_eq!(all, own, "{table}: A sees only its own rows");
    }
    let touched = sqlx::query("UPDATE leads SET score = 0 WHERE tenant_id = $1")
        .bind(b.tenant_id)
        .execute(&mut *tx)
        .await
        .unwrap()
        .rows_affected();
    assert_eq!(touched, 0, "B's leads are invisible to an update");
    let err = sqlx::query(
        "INSERT INTO idempotency_keys (tenant_id, key, request_hash, status, body, created_at)
         VALUES ($1, 'forged', '\\x00', 200, '\\x00', now())",
    )
    .bind(b.tenant_id)
    .execute(&mut *tx)
    .await
    .unwrap_err();
    let code = err
        .as_database_error()
        .and_then(|d| d.code())
        .map(|c| c.to_string());
    assert_eq!(
        code.as_deref(),
        Some("42501"),
        "row-level security refuses the row: {err}"
    );
    drop(tx);

    // Through the store: B's lead is "not found" in A's transaction.
    let b_lead = f
        .engine
        .list_enrollments(b, &EnrollmentFilter::default(), &Page::first(1))
        .await
        .unwrap()
        .items[0]
        .lead_id;
    let mut tx = f.store.begin(Scope::Tenant(a.tenant_id)).await.unwrap();
    assert!(tx.get_lead(b.tenant_id, b_lead).await.unwrap().is_none());
}

#[tokio::test]
async fn every_table_forces_rls_and_the_app_role_cannot_bypass_it() {
    let f = fixture().await;
    let mut conn = raw(&f.db).await;

    // Every table in the schema but sqlx's bookkeeping: RLS enabled and forced.
    let rows = sqlx::query(
        "SELECT c.relname::text AS name, c.relrowsecurity, c.relforcerowsecurity FROM pg_class c
         JOIN pg_namespace n ON n.oid = c.relnamespace
         WHERE n.nspname = 'public' AND c.relkind = 'r' AND c.relname <> '_sqlx_migrations' ORDER BY 1",
    )
    .fetch_all(&mut conn)
    .await
    .unwrap();
    let mut names: Vec<String> = Vec::new();
    for r in &rows {
        let name: String = r.get("name");
        assert!(r.get::<bool, _>("relrowsecurity"), "{name}: RLS enabled");
        assert!(
            r.get::<bool, _>("relforcerowsecurity"),
            "{name}: RLS forced"
        );
        names.push(name);
    }
    let mut expected: Vec<String> = TENANT_TABLES.iter().map(|t| t.to_string()).collect();
    expected.sort();
    assert_eq!(names, expected);

    let role = sqlx::query(
        "SELECT rolbypassrls, rolsuper, rolcanlogin FROM pg_roles WHERE rolname = 'nurture_app'",
    )
    .fetch_one(&mut conn)
    .await
    .unwrap();
    assert!(!role.get::<bool, _>("rolbypassrls"));
    assert!(!role.get::<bool, _>("rolsuper"));
    assert!(!role.get::<bool, _>("rolcanlogin"));
    let owned = count(
        &mut conn,
        "SELECT count(*) FROM pg_class c JOIN pg_roles r ON r.oid = c.relowner WHERE r.rolname = 'nurture_app'",
    )
    .await;
    assert_eq!(owned, 0, "the application role owns nothing");

    // The URL names the superuser; the store's queries still run as nurture_app.
    let session_user: String = sqlx::query_scalar("SELECT session_user::text")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    assert_eq!(session_user, f.db.options().get_username());
    let (current, session): (String, String) =
        sqlx::query_as("SELECT current_user::text, session_user::text")
            .fetch_one(f.store.pool())
            .await
            .unwrap();
    assert_eq!(current, "nurture_app");
    assert_eq!(session, f.db.options().get_username());
}

#[tokio::test]
async fn concurrent_claims_get_disjoint_batches_and_a_lost_claim_is_claimable_again() {
    let f = fixture().await;
    let p = tenant(&f.engine, "claims").await;
    let template = TemplateInput {
        id: TemplateId::parse("t").unwrap(),
        name: "t".into(),
        subject: "s".into(),
        body: "b".into(),
        html_body: None,
        pre_approved: false,
    };
    f.engine.put_template(p, template, false).await.unwrap();
    let s = active_sequence(
        &f.engine,
        p,
        "s",
        vec![step(1, Channel::Email, Some("t"), false)],
    )
    .await;
    for _ in 0..20 {
        let lead = f.engine.upsert_lead(p, lead_input()).await.unwrap().lead;
        f.engine.enroll(p, lead.id, s.id).await.unwrap();
    }
    let until = start() + SignedDuration::from_hours(1);
    let ids = |es: &[Enrollment]| {
        es.iter()
            .map(|e| e.id)
            .collect::<std::collections::BTreeSet<_>>()
    };

    let mut first = f.store.begin(Scope::System).await.unwrap();
    let a = first.claim_due(until, 8).await.unwrap();
    let mut second = f.store.begin(Scope::System).await.unwrap();
    // SKIP LOCKED: the second worker neither waits for the first nor takes its rows.
    let b = tokio::time::timeout(Duration::from_secs(5), second.claim_due(until, 8))
        .await
        .expect("no waiting")
        .unwrap();
    let mut third = f.store.begin(Scope::System).await.unwrap();
    let c = third.claim_due(until, 100).await.unwrap();
    assert_eq!((a.len(), b.len(), c.len()), (8, 8, 4));
    assert!(
        ids(&a).is_disjoint(&ids(&b))
            && ids(&a).is_disjoint(&ids(&c))
            && ids(&b).is_disjoint(&ids(&c))
    );
    assert!(
        a.windows(2)
            .all(|w| (w[0].next_step_on, w[0].id) <= (w[1].next_step_on, w[1].id)),
        "oldest due first"
    );

    // The first worker dies: its transaction ends, its rows are claimable again.
    drop(first);
    let mut fourth = f.store.begin(Scope::System).await.unwrap();
    let d = fourth.claim_due(until, 100).await.unwrap();
    assert_eq!(ids(&d), ids(&a));

    // An outcome is written only if the row still has the version it was claimed at.
    let mut stale = d[0].clone();
    stale.version += 1;
    let fx = Effects {
        enrollment_updates: vec![EnrollmentUpdate {
            enrollment: stale.clone(),
            expected_version: d[0].version - 1,
        }],
        ..Default::default()
    };
    assert!(matches!(
        fourth.apply(&fx).await.unwrap_err(),
        Error::Conflict { .. }
    ));
}

/// `n` leads enrolled in a one-email sequence of a fresh tenant, all due at the start.
async fn due_emails(f: &Fixture, n: usize) {
    let p = tenant(&f.engine, "workers").await;
    let template = TemplateInput {
        id: TemplateId::parse("t").unwrap(),
        name: "t".into(),
        subject: "s".into(),
        body: "b".into(),
        html_body: None,
        pre_approved: false,
    };
    f.engine.put_template(p, template, false).await.unwrap();
    let s = active_sequence(
        &f.engine,
        p,
        "s",
        vec![step(1, Channel::Email, Some("t"), false)],
    )
    .await;
    for _ in 0..n {
        let lead = f.engine.upsert_lead(p, lead_input()).await.unwrap().lead;
        f.engine.enroll(p, lead.id, s.id).await.unwrap();
    }
}

/// Runs `workers` schedulers on `f`'s database at once until nothing is due, and checks that
/// every one of the `n` due emails was sent exactly once.
async fn run_workers_and_check_each_step_ran_once(
    f: &Fixture,
    workers: usize,
    config: SchedulerConfig,
    n: u64,
) {
    let until = start() + SignedDuration::from_hours(1);
    let runs = (0..workers).map(|_| {
        let engine =
            Engine::with_manual_clock(f.store.clone(), Arc::new(ManualClock::new(start())))
                .with_config(config.clone());
        tokio::spawn(async move { engine.run_due(until, start()).await })
    });
    let mut steps = Vec::new();
    for run in runs.collect::<Vec<_>>() {
        steps.push(run.await.unwrap().unwrap().steps);
    }
    assert_eq!(
        steps.iter().sum::<u64>(),
        n,
        "every step ran once: {steps:?}"
    );

    let mut conn = raw(&f.db).await;
    assert_eq!(
        count(&mut conn, "SELECT count(*) FROM messages").await,
        n as i64
    );
    let twice = count(
        &mut conn,
        "SELECT count(*) FROM (SELECT enrollment_id FROM activities WHERE type = 'nurture_step_executed'
           GROUP BY enrollment_id HAVING count(*) > 1) x",
    )
    .await;
    assert_eq!(twice, 0, "no step executed twice");
    assert_eq!(
        count(
            &mut conn,
            "SELECT count(*) FROM lead_nurture_enrollments WHERE status = 'completed'"
        )
        .await,
        n as i64
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_workers_running_at_once_execute_every_step_exactly_once() {
    let f = fixture().await;
    due_emails(&f, 200).await;
    let config = SchedulerConfig {
        batch_size: 7,
        ..Default::default()
    };
    run_workers_and_check_each_step_ran_once(&f, 2, config, 200).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workers_sharing_one_batch_slot_take_turns_and_execute_every_step_once() {
    let f = fixture().await;
    due_emails(&f, 200).await;
    let config = SchedulerConfig {
        batch_size: 7,
        max_concurrent_batches: 1,
        ..Default::default()
    };
    run_workers_and_check_each_step_ran_once(&f, 3, config, 200).await;
}

/// The advisory locks that are batch slots on the test's database: (slot, granted, pid).
async fn batch_slots_held(conn: &mut PgConnection) -> Vec<(i64, bool, i32)> {
    sqlx::query_as(
        "SELECT objid::bigint, granted, pid FROM pg_locks
         WHERE locktype = 'advisory' AND classid::bigint = $1 AND objsubid = 2
           AND database = (SELECT oid FROM pg_database WHERE datname = current_database())
         ORDER BY granted DESC, objid",
    )
    .bind(nurture_postgres::BATCH_SLOT_LOCKS as i64)
    .fetch_all(conn)
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batch_slots_bound_the_batches_at_once_and_a_slot_frees_when_its_transaction_ends() {
    let f = fixture().await;
    let mut conn = raw(&f.db).await;
    let mut first = f.store.begin(Scope::System).await.unwrap();
    first.enter_batch_slot(2).await.unwrap();
    let first_pid = batch_slots_held(&mut conn).await[0].2;
    let mut second = f.store.begin(Scope::System).await.unwrap();
    tokio::time::timeout(Duration::from_secs(5), second.enter_batch_slot(2))
        .await
        .expect("a free slot is entered without waiting")
        .unwrap();
    let held = batch_slots_held(&mut conn).await;
    assert_eq!(
        held.iter()
            .map(|(slot, _, _)| *slot)
            .collect::<std::collections::BTreeSet<_>>(),
        [0, 1].into(),
        "two transactions, two different slots: {held:?}"
    );

    // A third waits, in the server's lock manager, for its own slot to come free.
    let mut third = f.store.begin(Scope::System).await.unwrap();
    let waiting = tokio::spawn(async move { third.enter_batch_slot(2).await.map(|()| third) });
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let awaited = loop {
        let slots = batch_slots_held(&mut conn).await;
        if let Some((slot, _, _)) = slots.iter().find(|(_, granted, _)| !granted) {
            break *slot;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the third never queued"
        );
        assert!(!waiting.is_finished(), "the third entered a third slot");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };

    // The worker holding that slot dies: the server ends its session, the third enters.
    let holder = batch_slots_held(&mut conn)
        .await
        .into_iter()
        .find(|(slot, granted, _)| *slot == awaited && *granted)
        .map(|(_, _, pid)| pid)
        .expect("someone holds the awaited slot");
    let ended: bool = sqlx::query_scalar("SELECT pg_terminate_backend($1)")
        .bind(holder)
        .fetch_one(&mut conn)
        .await
        .unwrap();
    assert!(ended);
    let third = tokio::time::timeout(Duration::from_secs(10), waiting)
        .await
        .expect("the third entered the freed slot")
        .unwrap()
        .unwrap();
    assert_eq!(batch_slots_held(&mut conn).await.len(), 2);
    let (survivor, dead) = if holder == first_pid {
        (second, first)
    } else {
        (first, second)
    };
    survivor.commit().await.unwrap();
    third.commit().await.unwrap();
    assert_eq!(batch_slots_held(&mut conn).await, vec![]);
    drop(dead);
}

#[tokio::test]
async fn instants_round_trip_at_microsecond_precision() {
    let f = fixture().await;
    let mut conn = raw(&f.db).await;
    sqlx::raw_sql("SET TIME ZONE 'UTC'")
        .execute(&mut conn)
        .await
        .unwrap();
    for s in [
        "2026-03-29T01:59:59.999999Z",
        "1999-12-31T23:59:59.000001Z",
        "1969-07-20T20:17:40.123456Z",
        "2262-04-11T23:47:16.854775Z",
    ] {
        let t: Timestamp = s.parse().unwrap();
        // Binary both ways.
        let back: Ts = sqlx::query_scalar("SELECT $1::timestamptz")
            .bind(Ts(t))
            .fetch_one(&mut conn)
            .await
            .unwrap();
        assert_eq!(back.0, t, "{s}");
        // The server holds exactly that instant.
        let text: String = sqlx::query_scalar(
            "SELECT to_char($1::timestamptz, 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')",
        )
        .bind(Ts(t))
        .fetch_one(&mut conn)
        .await
        .unwrap();
        assert_eq!(text, s);
        // The text protocol (simple queries) decodes to the same instant.
        let row = sqlx::raw_sql(AssertSqlSafe(format!("SELECT timestamptz '{s}' AS t")))
            .fetch_one(&mut conn)
            .await
            .unwrap();
        assert_eq!(row.get::<Ts, _>("t").0, t, "{s} as text");
    }
    // Below a microsecond, digits are truncated as on SQLite (`as_microsecond`).
    let t: Timestamp = "2026-01-05T09:00:00.123456789Z".parse().unwrap();
    let back: Ts = sqlx::query_scalar("SELECT $1::timestamptz")
        .bind(Ts(t))
        .fetch_one(&mut conn)
        .await
        .unwrap();
    assert_eq!(
        back.0,
        "2026-01-05T09:00:00.123456Z".parse::<Timestamp>().unwrap()
    );

    // And through a real column and the store.
    let p = tenant(&f.engine, "time").await;
    let mut lead = f.engine.upsert_lead(p, lead_input()).await.unwrap().lead;
    lead.last_reply_at = Some("2026-02-01T10:11:12.131415Z".parse().unwrap());
    let mut tx = f.store.begin(Scope::Tenant(p.tenant_id)).await.unwrap();
    tx.update_lead(&lead).await.unwrap();
    tx.commit().await.unwrap();
    let mut tx = f.store.begin(Scope::Tenant(p.tenant_id)).await.unwrap();
    assert_eq!(
        tx.get_lead(p.tenant_id, lead.id).await.unwrap().unwrap(),
        lead
    );
}

#[tokio::test]
async fn an_unreachable_server_is_an_error_naming_it_without_the_password() {
    let err = PgStore::connect("postgres://nurture:s3cret@127.0.0.1:1/nurture")
        .await
        .unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, Error::Store(_)), "{err:?}");
    assert!(msg.contains("127.0.0.1:1"), "{msg}");
    assert!(!msg.contains("s3cret"), "{msg}");

    let err = PgStore::connect("postgres://nurture:s3cret@127.0.0.1:5432/x?sslmode=bogus")
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Invalid(_)), "{err:?}");
    assert!(!err.to_string().contains("s3cret"), "{err}");
}

#[tokio::test]
async fn store_errors_map_like_sqlite() {
    let f = fixture().await;
    let p = tenant(&f.engine, "errors").await;

    // A duplicate lead id is a conflict naming the lead.
    let lead = f.engine.upsert_lead(p, lead_input()).await.unwrap().lead;
    let mut tx = f.store.begin(Scope::Tenant(p.tenant_id)).await.unwrap();
    match tx.insert_lead(&lead).await.unwrap_err() {
        Error::Conflict { conflicting, .. } => {
            assert_eq!(conflicting.unwrap()["lead_id"], serde_json::json!(lead.id))
        }
        other => panic!("{other:?}"),
    }
    drop(tx);

    // A cursor the list did not hand out.
    let mut tx = f.store.begin(Scope::Tenant(p.tenant_id)).await.unwrap();
    let page = Page {
        limit: 10,
        after: Some("nope".into()),
    };
    match tx
        .list_enrollments(p.tenant_id, &EnrollmentFilter::default(), &page)
        .await
        .unwrap_err()
    {
        Error::Invalid(errors) => assert_eq!(errors[0].path, "cursor"),
        other => panic!("{other:?}"),
    }
    let page = Page {
        limit: 10,
        after: Some("12:nope".into()),
    };
    let err = tx
        .list_activities(p.tenant_id, &Default::default(), &page)
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Invalid(_)), "{err:?}");
    drop(tx);

    // Steps with a gap are refused by the database itself (at commit: the check is deferred).
    let mut s = active_sequence(
        &f.engine,
        p,
        "gappy",
        vec![step(1, Channel::Wait, None, false)],
    )
    .await;
    s.id = Uuid::now_v7();
    s.steps = vec![
        step(1, Channel::Wait, None, false),
        step(3, Channel::Wait, None, false),
    ];
    let mut tx = f.store.begin(Scope::Tenant(p.tenant_id)).await.unwrap();
    tx.insert_sequence(&s).await.unwrap();
    match tx.commit().await.unwrap_err() {
        Error::Invalid(errors) => assert_eq!(errors[0].path, "steps"),
        other => panic!("{other:?}"),
    }

    // Text PostgreSQL cannot store is refused as input, not a storage failure.
    let mut input = lead_input();
    input.first_name = Some("nul\u{0}".into());
    let err = f.engine.upsert_lead(p, input).await.unwrap_err();
    assert!(matches!(err, Error::Unprocessable(_)), "{err:?}");
}

#[tokio::test]
async fn an_owner_that_is_not_a_superuser_migrates_and_runs_as_the_app_role() {
    let admin = TestDatabase::create().await.unwrap();
    let owner = format!("nurture_owner_{}", Uuid::now_v7().simple());
    let mut conn = raw(&admin).await;
    sqlx::raw_sql(AssertSqlSafe(format!(
        "CREATE ROLE {owner} LOGIN NOSUPERUSER CREATEROLE"
    )))
    .execute(&mut conn)
    .await
    .unwrap();
    sqlx::raw_sql(AssertSqlSafe(format!(
        "ALTER DATABASE \"{}\" OWNER TO {owner}",
        admin.name()
    )))
    .execute(&mut conn)
    .await
    .unwrap();
    let outcome = async {
        let options: PgConnectOptions = admin.options().username(&owner);
        let store = PgStore::connect_with(options).await?;
        store.migrate().await?;
        store.migrate().await?; // idempotent
        let engine =
            Engine::with_manual_clock(Arc::new(store), Arc::new(ManualClock::new(start())));
        let p = tenant(&engine, "owned").await;
        engine.upsert_lead(p, lead_input()).await?;
        Ok::<_, Error>(())
    }
    .await;
    // Clean up the role whatever happened: the database goes with `admin`, the role here.
    drop(conn);
    let name = admin.name().to_string();
    drop(admin);
    let mut conn = PgConnection::connect_with(&PgConnectOptions::from_str(&test_url()).unwrap())
        .await
        .unwrap();
    sqlx::raw_sql(AssertSqlSafe(format!("DROP ROLE IF EXISTS {owner}")))
        .execute(&mut conn)
        .await
        .unwrap();
    outcome.unwrap_or_else(|e| panic!("owner {owner} on {name}: {e}"));
}

fn test_url() -> String {
    std::env::var(nurture_postgres::testing::TEST_URL_VAR)
        .unwrap_or_else(|_| nurture_postgres::testing::DEFAULT_TEST_URL.into())
}
