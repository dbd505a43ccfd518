//! Database faults, seen from the `nurture` binary (issue #4): unreachable at start is a clear
//! error and a non-zero exit; lost while running, the process stays up, `/readyz` says 503,
//! and when the database returns the work that came due meanwhile runs, each step once.

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
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, Command};

/// Generous bounds for events that take milliseconds to a few seconds.
const EVENT: Duration = Duration::from_secs(60);
const POLL: Duration = Duration::from_millis(100);

fn nurture() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_nurture"));
    c.env_remove("NURTURE_DATABASE_URL")
        .stdin(Stdio::null())
        .kill_on_drop(true);
    c
}

#[tokio::test]
async fn an_unreachable_database_at_start_is_a_clear_error_and_a_non_zero_exit() {
    // Nothing listens on port 1; the password must never be printed.
    let url = "postgres://nurture:s3cret@127.0.0.1:1/nurture";
    for args in [
        vec!["worker"],
        vec!["serve", "--listen", "127.0.0.1:0"],
        vec!["serve", "--no-worker", "--listen", "127.0.0.1:0"],
        vec!["migrate"],
    ] {
        let out = tokio::time::timeout(
            EVENT,
            nurture()
                .arg("--database")
                .arg(url)
                .args(&args)
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .output(),
        )
        .await
        .unwrap_or_else(|_| panic!("nurture {args:?} gave up within {EVENT:?}"))
        .expect("run nurture");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "nurture {args:?}: {stderr}");
        assert!(
            stderr.contains(
                "error: cannot open the PostgreSQL database: storage error: cannot connect to \
                 PostgreSQL at postgres://nurture@127.0.0.1:1/nurture"
            ),
            "nurture {args:?} names the server: {stderr}"
        );
        assert!(
            stderr.contains("Connection refused"),
            "and says why: {stderr}"
        );
        assert!(!stderr.contains("s3cret"), "never the password: {stderr}");
        assert_eq!(
            stderr.matches("cannot connect").count(),
            1,
            "says it once: {stderr}"
        );
    }
}

const LEADS: usize = 2_000;

/// A tenant with an email sequence and `LEADS` leads enrolled an hour ago, so every step 1 is
/// due now; the sequence is then paused (directly, as its status row), so nothing runs yet.
async fn paused_due_work(db: &TestDatabase, conn: &mut PgConnection) {
    let store = Arc::new(db.store().await.expect("store"));
    let t0 = Timestamp::now() - SignedDuration::from_hours(1);
    let engine = Engine::with_manual_clock(store.clone(), Arc::new(ManualClock::new(t0)));
    let (_, key) = engine.create_tenant("faults").await.unwrap();
    let p = engine.authenticate(&key).await.unwrap().unwrap();
    let template = TemplateInput {
        id: TemplateId::parse("hello").unwrap(),
        name: "Hello".into(),
        subject: "Hello {{ first_name }}".into(),
        body: "Hi {{ first_name }}.".into(),
        html_body: None,
        pre_approved: false,
    };
    engine.put_template(p, template, false).await.unwrap();
    let input = SequenceInput {
        name: "Welcome".into(),
        priority: 0,
        entry_rules: Some(EntryRules::parse(&serde_json::json!({}), "entry_rules").unwrap()),
        exit_rules: ExitRules::default(),
        steps: vec![Step {
            step_order: StepOrder::parse(1).unwrap(),
            channel: Channel::Email,
            delay_hours: DelayHours::parse(0).unwrap(),
            template_id: Some(TemplateId::parse("hello").unwrap()),
            requires_human_approval: false,
            conditions: None,
        }],
    };
    let s = engine.create_sequence(p, input).await.unwrap();
    engine.activate_sequence(p, s.id).await.unwrap();
    let leads: Vec<Lead> = (0..LEADS)
        .map(|i| Lead {
            first_name: Some(format!("Lead{i}")),
            status: LeadStatus::Qualified,
            score: 60,
            score_band: Some("warm".into()),
            ..Lead::new(
                p.tenant_id,
                EmailAddress::parse(&format!("lead{i}@example.com")).unwrap(),
                t0,
            )
        })
        .collect();
    let mut tx = store.begin(Scope::Tenant(p.tenant_id)).await.unwrap();
    tx.insert_leads(&leads).await.unwrap();
    tx.commit().await.unwrap();
    assert_eq!(engine.sweep(t0).await.unwrap(), LEADS as u64);
    execute(conn, "UPDATE lead_nurture_sequences SET status = 'paused'").await;
}

async fn execute(conn: &mut PgConnection, sql: &str) {
    sqlx::raw_sql(AssertSqlSafe(sql.to_string()))
        .execute(conn)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
}

async fn count(conn: &mut PgConnection, sql: &str) -> i64 {
    sqlx::query_scalar::<_, i64>(AssertSqlSafe(sql.to_string()))
        .fetch_one(conn)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
}

/// `GET path` on a fresh connection; the status code, or `None` if nothing answered.
async fn get_status(addr: &str, path: &str) -> Option<u16> {
    let mut s = tokio::net::TcpStream::connect(addr).await.ok()?;
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    s.write_all(request.as_bytes()).await.ok()?;
    let mut response = String::new();
    s.read_to_string(&mut response).await.ok()?;
    response.split_whitespace().nth(1)?.parse().ok()
}

/// Polls (bounded by [`EVENT`]) until `/readyz` answers `want`.
async fn until_readyz(addr: &str, want: u16) {
    let deadline = tokio::time::Instant::now() + EVENT;
    loop {
        let got = get_status(addr, "/readyz").await;
        if got == Some(want) {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "/readyz still answers {got:?}, not {want}, after {EVENT:?}"
        );
        tokio::time::sleep(POLL).await;
    }
}

/// Starts `nurture serve` (API and scheduler) on an ephemeral port and returns it with the
/// address it logged.
async fn serve(url: &str) -> (Child, String) {
    let mut child = nurture()
        .args(["--database", url, "--log-format", "json", "serve"])
        .args(["--listen", "127.0.0.1:0"])
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn nurture serve");
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let addr = tokio::time::timeout(EVENT, async {
        while let Some(line) = lines.next_line().await.expect("stderr") {
            let Ok(v) = serde_json::from_str::<serde_json::Value>(&line) else {
                continue;
            };
            if let Some(a) = v["fields"]["address"].as_str() {
                return a.to_string();
            }
        }
        panic!("nurture serve ended before it listened");
    })
    .await
    .expect("nurture serve listens");
    // Keep draining its log so the process never blocks on a full pipe.
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    (child, addr)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_lost_while_serving_makes_readyz_unready_and_no_step_is_lost() {
    let db = TestDatabase::create().await.expect("test database");
    let name = db.name().to_string();
    // The test server's user: it outlives the outage (its session is spared) and sees all.
    let mut admin = PgConnection::connect_with(&db.options()).await.unwrap();
    // ALTER DATABASE runs from another database.
    let mut server_admin = PgConnection::connect_with(&db.server_options())
        .await
        .unwrap();
    paused_due_work(&db, &mut admin).await;
    let (mut server, addr) = serve(&db.url()).await;
    until_readyz(&addr, 200).await;

    // The outage: no new sessions, and every existing one (but this) ended.
    execute(
        &mut server_admin,
        &format!("ALTER DATABASE \"{name}\" WITH ALLOW_CONNECTIONS false"),
    )
    .await;
    execute(
        &mut admin,
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity
         WHERE datname = current_database() AND pid <> pg_backend_pid()",
    )
    .await;
    until_readyz(&addr, 503).await;
    // Work comes due while the database is unreachable for the server.
    execute(
        &mut admin,
        "UPDATE lead_nurture_sequences SET status = 'active'",
    )
    .await;
    assert!(
        server.try_wait().unwrap().is_none(),
        "the server keeps running through the outage"
    );

    execute(
        &mut server_admin,
        &format!("ALTER DATABASE \"{name}\" WITH ALLOW_CONNECTIONS true"),
    )
    .await;
    until_readyz(&addr, 200).await;
    // The scheduler's retry finds the work (no announcement was made: its timer does).
    let deadline = tokio::time::Instant::now() + EVENT;
    loop {
        let sent = count(&mut admin, "SELECT count(*) FROM messages").await;
        if sent == LEADS as i64 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{sent} of {LEADS} messages after {EVENT:?}"
        );
        tokio::time::sleep(POLL).await;
    }

    let pid = server.id().unwrap() as libc::pid_t;
    // SAFETY: kill(2) on the child this test spawned and has not reaped.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0);
    let status = tokio::time::timeout(EVENT, server.wait())
        .await
        .expect("serve stops on SIGTERM")
        .unwrap();
    assert!(status.success(), "{status}");

    assert_eq!(
        count(
            &mut admin,
            "SELECT count(DISTINCT (enrollment_id, step_order)) FROM messages"
        )
        .await,
        LEADS as i64
    );
    assert_eq!(
        count(
            &mut admin,
            "SELECT count(*) FROM activities WHERE type = 'nurture_step_executed'"
        )
        .await,
        LEADS as i64
    );
    assert_eq!(
        count(
            &mut admin,
            "SELECT count(*) FROM lead_nurture_enrollments WHERE status = 'completed'"
        )
        .await,
        LEADS as i64
    );
}
