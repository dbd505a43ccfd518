//! Scale-out on PostgreSQL (issue #4): four `nurture worker` processes share one database of
//! 20,000 due enrollments, and every step runs exactly once — also when one worker is killed
//! with SIGKILL halfway, its claimed batch going back to the others when its session ends.
//!
//! The workers run on the real clock, so the enrollments are made due in real time: they are
//! enrolled by a sweep on a manual clock one hour in the past. The test waits for outcomes by
//! polling the database (bounded); it never sleeps for a fixed time to let work happen.

use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use jiff::{SignedDuration, Timestamp};
use nurture_core::clock::ManualClock;
use nurture_core::domain::*;
use nurture_core::engine::*;
use nurture_core::rules::{EntryRules, ExitRules};
use nurture_core::store::{Scope, Store};
use nurture_postgres::testing::TestDatabase;
use sqlx::{AssertSqlSafe, Connection, PgConnection};
use tokio::process::{Child, Command};

const LEADS: usize = 20_000;
const WORKERS: usize = 4;
/// Small batches, so that a worker killed halfway is holding a claim.
const BATCH_SIZE: &str = "200";
/// The longest the workers may take; they need a few seconds.
const DEADLINE: Duration = Duration::from_secs(120);
const POLL: Duration = Duration::from_millis(100);

/// A fresh database with one tenant, an active sequence (email now, email in 48 h) and
/// `LEADS` leads enrolled an hour ago, so every step 1 is due now.
async fn due_database() -> TestDatabase {
    let db = TestDatabase::create().await.expect("test database");
    let store = Arc::new(db.store().await.expect("store"));
    let t0 = Timestamp::now() - SignedDuration::from_hours(1);
    let engine = Engine::with_manual_clock(store.clone(), Arc::new(ManualClock::new(t0)));
    let (_, key) = engine.create_tenant("workers").await.unwrap();
    let p = engine.authenticate(&key).await.unwrap().unwrap();
    let template = TemplateInput {
        id: TemplateId::parse("hello").unwrap(),
        name: "Hello".into(),
        subject: "Hello {{ first_name }}".into(),
        body: "Hi {{ first_name }}, a note for {{ company }}.".into(),
        html_body: None,
        pre_approved: false,
    };
    engine.put_template(p, template, false).await.unwrap();
    let step = |order: i64, delay: i64| Step {
        step_order: StepOrder::parse(order).unwrap(),
        channel: Channel::Email,
        delay_hours: DelayHours::parse(delay).unwrap(),
        template_id: Some(TemplateId::parse("hello").unwrap()),
        requires_human_approval: false,
        conditions: None,
    };
    let input = SequenceInput {
        name: "Welcome".into(),
        priority: 0,
        entry_rules: Some(
            EntryRules::parse(&serde_json::json!({"segments_any": ["w"]}), "entry_rules").unwrap(),
        ),
        exit_rules: ExitRules::default(),
        steps: vec![step(1, 0), step(2, 48)],
    };
    let s = engine.create_sequence(p, input).await.unwrap();
    engine.activate_sequence(p, s.id).await.unwrap();

    let leads: Vec<Lead> = (0..LEADS)
        .map(|i| Lead {
            first_name: Some(format!("Lead{i}")),
            company: Some(format!("Company {}", i % 97)),
            status: LeadStatus::Qualified,
            score: 60,
            score_band: Some("warm".into()),
            segments: vec!["w".into()],
            ..Lead::new(
                p.tenant_id,
                EmailAddress::parse(&format!("lead{i}@example.com")).unwrap(),
                t0,
            )
        })
        .collect();
    for chunk in leads.chunks(5_000) {
        let mut tx = store.begin(Scope::Tenant(p.tenant_id)).await.unwrap();
        tx.insert_leads(chunk).await.unwrap();
        tx.commit().await.unwrap();
    }
    assert_eq!(engine.sweep(t0).await.unwrap(), LEADS as u64);
    db
}

fn worker(url: &str) -> Child {
    Command::new(env!("CARGO_BIN_EXE_nurture"))
        .args(["--database", url, "worker"])
        .env("NURTURE_BATCH_SIZE", BATCH_SIZE)
        .env("RUST_LOG", "warn")
        .env_remove("NURTURE_DATABASE_URL")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn nurture worker")
}

/// Asks a worker to stop as an orchestrator would (SIGTERM) and expects a clean exit.
async fn stop(mut child: Child) {
    let pid = child.id().expect("a running worker has a pid") as libc::pid_t;
    // SAFETY: kill(2) with a pid this test spawned and has not reaped yet.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0, "SIGTERM");
    let status = tokio::time::timeout(Duration::from_secs(30), child.wait())
        .await
        .expect("the worker stops within 30 s of SIGTERM")
        .expect("wait");
    assert!(status.success(), "a stopped worker exits 0: {status}");
}

async fn count(conn: &mut PgConnection, sql: &str) -> i64 {
    sqlx::query_scalar::<_, i64>(AssertSqlSafe(sql.to_string()))
        .fetch_one(conn)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
}

const MESSAGES: &str = "SELECT count(*) FROM messages";
const DUE: &str = "SELECT count(*) FROM lead_nurture_enrollments
    WHERE status = 'active' AND next_step_on <= now()";

/// Runs `WORKERS` workers until every step 1 has run, killing one with SIGKILL once about half
/// the messages exist when `kill_one`, then checks that each step ran exactly once.
async fn every_step_runs_exactly_once(kill_one: bool) {
    let db = due_database().await;
    let url = db.url();
    // The test server's user (a superuser): sees every tenant's rows, as an operator would.
    let mut conn = PgConnection::connect_with(&db.options()).await.unwrap();
    assert_eq!(count(&mut conn, DUE).await, LEADS as i64);

    let mut workers: Vec<Child> = (0..WORKERS).map(|_| worker(&url)).collect();
    let deadline = tokio::time::Instant::now() + DEADLINE;
    let mut killed_at = None;
    loop {
        let messages = count(&mut conn, MESSAGES).await;
        if kill_one && killed_at.is_none() && messages >= LEADS as i64 / 2 {
            let mut victim = workers.remove(0);
            victim.start_kill().expect("SIGKILL");
            let status = victim.wait().await.unwrap();
            use std::os::unix::process::ExitStatusExt;
            assert_eq!(status.signal(), Some(libc::SIGKILL), "{status}");
            eprintln!("killed one worker at {messages} of {LEADS} messages");
            killed_at = Some(messages);
        }
        if messages == LEADS as i64 && count(&mut conn, DUE).await == 0 {
            break;
        }
        for w in &mut workers {
            if let Some(status) = w.try_wait().unwrap() {
                panic!("a worker exited on its own: {status}");
            }
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "after {DEADLINE:?}: {messages} of {LEADS} messages, {} still due",
            count(&mut conn, DUE).await
        );
        tokio::time::sleep(POLL).await;
    }
    for w in workers {
        stop(w).await;
    }
    if kill_one {
        let at = killed_at.expect("a worker was killed");
        assert!(
            at < LEADS as i64,
            "the kill landed before the end ({at} messages)"
        );
    }

    // Exactly one message per (enrollment, step 1), and nothing else.
    assert_eq!(count(&mut conn, MESSAGES).await, LEADS as i64);
    assert_eq!(
        count(
            &mut conn,
            "SELECT count(*) FROM (SELECT DISTINCT enrollment_id, step_order FROM messages
               WHERE step_order = 1) x"
        )
        .await,
        LEADS as i64
    );
    // Exactly one nurture_step_executed per enrollment for step 1.
    assert_eq!(
        count(
            &mut conn,
            "SELECT count(*) FROM activities WHERE type = 'nurture_step_executed'"
        )
        .await,
        LEADS as i64
    );
    assert_eq!(
        count(
            &mut conn,
            "SELECT count(DISTINCT enrollment_id) FROM activities
             WHERE type = 'nurture_step_executed' AND step_order = 1"
        )
        .await,
        LEADS as i64
    );
    // Every enrollment points at step 2, due in two days, claimed by no one.
    assert_eq!(
        count(
            &mut conn,
            "SELECT count(*) FROM lead_nurture_enrollments
             WHERE status = 'active' AND current_step_order = 2 AND next_step_on > now() + interval '47 hours'
               AND claimed_until IS NULL"
        )
        .await,
        LEADS as i64
    );
    assert_eq!(
        count(&mut conn, "SELECT count(*) FROM lead_nurture_enrollments").await,
        LEADS as i64
    );
    let _ = conn.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn four_worker_processes_run_every_due_step_exactly_once() {
    every_step_runs_exactly_once(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_killed_halfway_loses_no_step_and_doubles_none() {
    every_step_runs_exactly_once(true).await;
}
